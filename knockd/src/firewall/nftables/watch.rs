//! Noticing that another program changed knockd's table: `nft flush ruleset` (what
//! `systemctl reload nftables` does), `nft delete table inet knockd`, a deleted chain, set or
//! rule. A thread listens to the kernel's nf_tables notifications (netlink multicast group
//! `NFNLGRP_NFTABLES`) and tells the engine when one of them deletes something of the table;
//! the engine then checks the table and re-creates it ([`super::side`]). Element changes are
//! not reported (knockd makes them itself, and the kernel expires them).

use super::dump::attrs;
use super::netlink::{NFNL_SUBSYS_NFTABLES, NFPROTO_INET};
use super::nlmsg;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// `NFNLGRP_NFTABLES` (linux/netfilter/nfnetlink.h).
const NFNLGRP_NFTABLES: u32 = 7;
/// The deletions that can leave the doors' ports unprotected (nf_tables.h message types).
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_DELSET: u16 = 11;
/// The first attribute of a table, chain, rule or set message names its table.
const NFTA_TABLE: u16 = 1;
/// How long a burst of notifications (one transaction sends one per object) is gathered
/// before the engine is told once.
const SETTLE: Duration = Duration::from_millis(50);

/// Does this datagram of nf_tables notifications delete something of table `inet <table>`?
pub fn deletes_from(buf: &[u8], table: &str) -> bool {
    nlmsg::messages(buf).any(|m| {
        let (subsys, msg) = (m.ty >> 8, m.ty & 0xff);
        if subsys != NFNL_SUBSYS_NFTABLES
            || !matches!(
                msg,
                NFT_MSG_DELTABLE | NFT_MSG_DELCHAIN | NFT_MSG_DELRULE | NFT_MSG_DELSET
            )
            || m.bytes.get(nlmsg::HDR_LEN) != Some(&NFPROTO_INET)
        {
            return false;
        }
        let body = m.bytes.get(nlmsg::HDR_LEN + 4..).unwrap_or_default();
        attrs(body).any(|(ty, v)| {
            ty == NFTA_TABLE && v.split(|&b| b == 0).next() == Some(table.as_bytes())
        })
    })
}

/// Listen for deletions in table `inet <table>` on a thread of its own; `touched` is called
/// (once per burst) for each, and when notifications were lost (the socket overflowed). The
/// thread ends when `touched` returns false. Err: the socket cannot be opened (the engine
/// still checks the table after each failed element change).
pub fn spawn(
    table: String,
    mut touched: impl FnMut() -> bool + Send + 'static,
) -> Result<(), String> {
    use nix::sys::socket::{
        bind, recv, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
        SockProtocol, SockType,
    };
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )
    .map_err(|e| format!("socket: {e}"))?;
    bind(
        fd.as_raw_fd(),
        &NetlinkAddr::new(0, 1 << (NFNLGRP_NFTABLES - 1)),
    )
    .map_err(|e| format!("joining the nf_tables notifications: {e}"))?;
    let _ = setsockopt(&fd, sockopt::RcvBuf, &(1 << 20));
    let settle = nix::sys::time::TimeVal::new(0, i64::from(SETTLE.subsec_micros()));
    std::thread::Builder::new()
        .name("knockd-nft-watch".into())
        .spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let hit = match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                    Ok(n) => deletes_from(&buf[..n], &table),
                    // Notifications were lost: whatever they said, check.
                    Err(nix::Error::ENOBUFS) => true,
                    Err(nix::Error::EINTR | nix::Error::EAGAIN) => false,
                    Err(e) => {
                        tracing::warn!("nftables: watching table inet {table}: {e}");
                        std::thread::sleep(Duration::from_secs(1));
                        false
                    }
                };
                if !hit {
                    continue;
                }
                // Gather the rest of the burst, then tell the engine once.
                let _ = setsockopt(&fd, sockopt::ReceiveTimeout, &settle);
                while recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).is_ok() {}
                let _ = setsockopt(
                    &fd,
                    sockopt::ReceiveTimeout,
                    &nix::sys::time::TimeVal::new(0, 0),
                );
                if !touched() {
                    return;
                }
            }
        })
        .map_err(|e| format!("cannot start the nftables watch thread: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A notification: header, nfgenmsg (family), then a table-name attribute.
    fn note(msg: u16, family: u8, table: &str) -> Vec<u8> {
        let mut name = table.as_bytes().to_vec();
        name.push(0);
        let attr_len = 4 + name.len();
        let mut body = vec![family, 0, 0, 0];
        body.extend((attr_len as u16).to_ne_bytes());
        body.extend(NFTA_TABLE.to_ne_bytes());
        body.extend(&name);
        while body.len() % 4 != 0 {
            body.push(0);
        }
        let len = (nlmsg::HDR_LEN + body.len()) as u32;
        let mut m = Vec::new();
        m.extend(len.to_ne_bytes());
        m.extend(((NFNL_SUBSYS_NFTABLES << 8) | msg).to_ne_bytes());
        m.extend(0u16.to_ne_bytes());
        m.extend(0u32.to_ne_bytes());
        m.extend(0u32.to_ne_bytes());
        m.extend(body);
        m
    }

    #[test]
    fn deletions_in_our_table_are_noticed_and_nothing_else() {
        for msg in [
            NFT_MSG_DELTABLE,
            NFT_MSG_DELCHAIN,
            NFT_MSG_DELRULE,
            NFT_MSG_DELSET,
        ] {
            assert!(
                deletes_from(&note(msg, NFPROTO_INET, "knockd"), "knockd"),
                "{msg}"
            );
        }
        // Another table, another family, a new object, an element change: not ours to check.
        assert!(!deletes_from(
            &note(NFT_MSG_DELTABLE, NFPROTO_INET, "knockd-2"),
            "knockd"
        ));
        assert!(!deletes_from(
            &note(NFT_MSG_DELTABLE, NFPROTO_INET, "filter"),
            "knockd"
        ));
        assert!(!deletes_from(
            &note(NFT_MSG_DELTABLE, 2, "knockd"),
            "knockd"
        ));
        assert!(!deletes_from(&note(0, NFPROTO_INET, "knockd"), "knockd"));
        assert!(!deletes_from(&note(14, NFPROTO_INET, "knockd"), "knockd"));
        // `nft flush ruleset`: one datagram, several tables; ours among them.
        let mut burst = note(NFT_MSG_DELTABLE, NFPROTO_INET, "filter");
        burst.extend(note(NFT_MSG_DELTABLE, NFPROTO_INET, "knockd"));
        assert!(deletes_from(&burst, "knockd"));
        // Truncated input is not a notification.
        let full = note(NFT_MSG_DELTABLE, NFPROTO_INET, "knockd");
        for cut in 0..full.len() {
            assert!(!deletes_from(&full[..cut], "knockd"), "cut at {cut}");
        }
    }
}
