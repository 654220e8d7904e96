//! The kernel's counters of another process's packet capture, for a daemon that reports none
//! (fwknopd): its `AF_PACKET` socket is found through `/proc/<pid>/net/packet` and
//! `/proc/<pid>/fd`, duplicated with `pidfd_getfd(2)` and asked `PACKET_STATISTICS`, the
//! counters libpcap's `pcap_stats` reads (our knockd reports the same ones as
//! `knockd_kernel_drops`). The kernel resets them on every read, so [`PacketCounter`] keeps
//! the running sum; the daemon itself is not disturbed (its libpcap never reads them).

// Neither pidfd_getfd(2) nor PACKET_STATISTICS has a safe wrapper in nix 0.29: three
// syscalls, each result owned at once.
#![allow(unsafe_code)]

use std::os::fd::{FromRawFd, OwnedFd};

use anyhow::{bail, Context, Result};

const SOL_PACKET: libc::c_int = 263;
const PACKET_STATISTICS: libc::c_int = 6;

/// Packets that reached the socket (delivered or dropped) and those the kernel dropped
/// because the capture ring was full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketStats {
    pub packets: u64,
    pub drops: u64,
}

/// The inodes of the packet sockets listed in a `/proc/<pid>/net/packet` text (the last
/// column; the first line is the header).
pub fn packet_inodes(proc_net_packet: &str) -> Vec<u64> {
    proc_net_packet
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().last()?.parse().ok())
        .collect()
}

/// `socket:[123]` → 123.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The fd number of `pid`'s first packet socket.
fn packet_fd(pid: u32) -> Result<i32> {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/packet"))
        .with_context(|| format!("cannot read /proc/{pid}/net/packet"))?;
    let inodes = packet_inodes(&table);
    let dir = format!("/proc/{pid}/fd");
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot list {dir}"))? {
        let entry = entry?;
        let Ok(link) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let Some(ino) = socket_inode(&link.to_string_lossy()) else {
            continue;
        };
        if inodes.contains(&ino) {
            if let Some(fd) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
                return Ok(fd);
            }
        }
    }
    bail!("process {pid} has no packet socket")
}

/// Reads (and so resets) the counters of `pid`'s packet socket.
fn read_and_reset(pid: u32) -> Result<PacketStats> {
    let target = packet_fd(pid)?;
    // SAFETY: plain syscalls; every returned fd is owned (closed on drop) at once.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if pidfd < 0 {
        bail!("pidfd_open({pid}): {}", std::io::Error::last_os_error());
    }
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    let fd = unsafe {
        libc::syscall(
            libc::SYS_pidfd_getfd,
            std::os::fd::AsRawFd::as_raw_fd(&pidfd),
            target,
            0,
        )
    };
    if fd < 0 {
        bail!(
            "pidfd_getfd({pid}, {target}): {}",
            std::io::Error::last_os_error()
        );
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // struct tpacket_stats_v3 (the v1/v2 struct is its first two fields).
    let mut st = [0u32; 3];
    let mut len = std::mem::size_of_val(&st) as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            SOL_PACKET,
            PACKET_STATISTICS,
            st.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        bail!("PACKET_STATISTICS: {}", std::io::Error::last_os_error());
    }
    Ok(PacketStats {
        packets: u64::from(st[0]),
        drops: u64::from(st[1]),
    })
}

/// Running totals of one process's capture counters since [`PacketCounter::new`].
#[derive(Debug)]
pub struct PacketCounter {
    pid: u32,
    total: PacketStats,
}

impl PacketCounter {
    /// Zeroes the kernel's counters of `pid`'s capture and starts counting.
    pub fn new(pid: u32) -> Result<PacketCounter> {
        read_and_reset(pid)?;
        Ok(PacketCounter {
            pid,
            total: PacketStats::default(),
        })
    }

    /// The totals so far.
    pub fn read(&mut self) -> Result<PacketStats> {
        let s = read_and_reset(self.pid)?;
        self.total.packets += s.packets;
        self.total.drops += s.drops;
        Ok(self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inodes_are_the_last_column_after_the_header() {
        let t = "sk               RefCnt Type Proto  Iface R Rmem   User   Inode\n\
                 ffff8f0c3a1b2000 3      3    0003   2     1 0      0      6130771\n\
                 ffff8f0c3a1b4000 3      2    0800   0     1 0      0      42\n";
        assert_eq!(packet_inodes(t), vec![6_130_771, 42]);
        assert!(packet_inodes("sk RefCnt Type Proto Iface R Rmem User Inode\n").is_empty());
    }

    #[test]
    fn socket_links_give_their_inode() {
        assert_eq!(socket_inode("socket:[6130771]"), Some(6_130_771));
        assert_eq!(socket_inode("pipe:[12]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }
}
