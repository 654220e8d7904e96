//! Spoofed IPv6 TCP SYNs for the IPv6 eviction test: a raw IPv6 socket in the client
//! namespace (`IPPROTO_RAW`: we write the IPv6 header ourselves), sending only to the lab's
//! server address. Sources come from `fd00:bad0::/32`, a unique-local range that exists only
//! inside the lab (the server namespace has no route back to it).

use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::traffic::netns::create_in;

/// Length of [`syn6`]'s packet: a 40-byte IPv6 header and a 20-byte TCP header.
pub const SYN6_LEN: usize = 60;

const TCP_SYN: u8 = 0x02;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_RAW: i32 = 255;
/// Packets sent back to back before the clock is checked again.
const MAX_BURST: u64 = 64;

/// A TCP SYN from `[src]:sport` to `[dst]:dport` with sequence number `seq`, checksum set.
pub fn syn6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, seq: u32) -> [u8; SYN6_LEN] {
    let mut p = [0u8; SYN6_LEN];
    // IPv6: version 6, payload length 20, next header TCP, hop limit 64.
    p[0] = 0x60;
    p[4..6].copy_from_slice(&20u16.to_be_bytes());
    p[6] = IPPROTO_TCP;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    // TCP: ports, sequence number, data offset 5 words, SYN, window.
    p[40..42].copy_from_slice(&sport.to_be_bytes());
    p[42..44].copy_from_slice(&dport.to_be_bytes());
    p[44..48].copy_from_slice(&seq.to_be_bytes());
    p[52] = 5 << 4;
    p[53] = TCP_SYN;
    p[54..56].copy_from_slice(&64240u16.to_be_bytes());
    let sum = checksum(pseudo_header_sum(&p[8..40], 20), &p[40..]);
    p[56..58].copy_from_slice(&sum.to_be_bytes());
    p
}

/// Sum of the IPv6 pseudo header (both addresses, TCP length, next header), not yet folded.
fn pseudo_header_sum(addrs: &[u8], tcp_len: u32) -> u32 {
    let words: u32 = addrs
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    words + (tcp_len >> 16) + (tcp_len & 0xffff) + u32::from(IPPROTO_TCP)
}

/// The Internet checksum (RFC 1071) of `data`, starting from a partial sum.
fn checksum(initial: u32, data: &[u8]) -> u16 {
    let mut sum = initial;
    for pair in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([
            pair[0],
            pair.get(1).copied().unwrap_or(0),
        ]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Where the spoofed sources of a flood come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sources {
    /// Packet `i` from `/64` number `i % nets` of `fd00:bad0::/32`, a fresh interface id each
    /// time: many networks, many addresses in each.
    Nets { nets: u32 },
    /// Every packet from a fresh address of one `/64` (`fd00:bad1::/64`): what anyone given
    /// a /64 by their provider can send, without spoofing outside it.
    OneNet,
}

/// Spoofed source number `i` of `sources`.
pub fn spoofed6(sources: Sources, i: u64) -> Ipv6Addr {
    let iid = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let (hi, iid) = match sources {
        Sources::Nets { nets } => {
            let net = (i % u64::from(nets.max(1))) as u32;
            (0xfd00_bad0_0000_0000u64 | u64::from(net), iid)
        }
        Sources::OneNet => (0xfd00_bad1_0000_0000u64, iid),
    };
    Ipv6Addr::from((u128::from(hi) << 64) | u128::from(iid))
}

/// What a flood did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flood6Stats {
    pub sent: u64,
    pub send_errors: u64,
    pub elapsed_s: f64,
}

/// A raw IPv6 socket in the client namespace; packets go to `dst` only.
pub struct Flooder6 {
    sock: Socket,
    dst: Ipv6Addr,
}

impl Flooder6 {
    pub fn new(ns: &str, dst: Ipv6Addr) -> Result<Flooder6> {
        let sock = create_in(ns, || {
            let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::from(IPPROTO_RAW)))
                .context("cannot open a raw IPv6 socket (needs root or CAP_NET_RAW)")?;
            let _ = s.set_send_buffer_size(4 << 20);
            Ok(s)
        })?;
        Ok(Flooder6 { sock, dst })
    }

    /// One SYN from `src` to each of `ports`, in order, in chunks of 200 with a 2 ms pause
    /// so that capture keeps up (a sweep). Returns how many were sent.
    pub fn sweep(&self, src: Ipv6Addr, ports: &[u16]) -> Result<usize> {
        let dst = SockAddr::from(SocketAddrV6::new(self.dst, 0, 0, 0));
        let mut sent = 0;
        for chunk in ports.chunks(200) {
            for &port in chunk {
                let sport = 20000 + (sent % 40000) as u16;
                let pkt = syn6(src, self.dst, sport, port, sent as u32);
                self.sock
                    .send_to(&pkt, &dst)
                    .with_context(|| format!("cannot send a SYN to port {port}"))?;
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(sent)
    }

    /// SYNs to `dport` from `sources` at `rate_pps` for `duration` (or until `stop`).
    pub fn run(
        &self,
        sources: Sources,
        dport: u16,
        rate_pps: u64,
        duration: Duration,
        stop: &AtomicBool,
    ) -> Flood6Stats {
        let total = (rate_pps as f64 * duration.as_secs_f64()) as u64;
        let dst = SockAddr::from(SocketAddrV6::new(self.dst, 0, 0, 0));
        let (mut attempted, mut errors) = (0u64, 0u64);
        let start = Instant::now();
        while attempted < total && !stop.load(Ordering::Relaxed) {
            let elapsed = start.elapsed();
            if elapsed > duration + Duration::from_secs(2) {
                break;
            }
            let due = ((elapsed.as_secs_f64() * rate_pps as f64) as u64).min(total);
            if attempted >= due {
                std::thread::sleep(Duration::from_micros(100));
                continue;
            }
            for _ in 0..(due - attempted).min(MAX_BURST) {
                let src = spoofed6(sources, attempted);
                let sport = 1024 + (attempted % 60000) as u16;
                let pkt = syn6(src, self.dst, sport, dport, attempted as u32);
                if self.sock.send_to(&pkt, &dst).is_err() {
                    errors += 1;
                }
                attempted += 1;
            }
        }
        Flood6Stats {
            sent: attempted - errors,
            send_errors: errors,
            elapsed_s: start.elapsed().as_secs_f64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_verifies_and_headers_carry_what_was_asked() {
        let src: Ipv6Addr = "fd00:bad0::1".parse().expect("src");
        let dst: Ipv6Addr = "fd99:77::1".parse().expect("dst");
        let p = syn6(src, dst, 40000, 7000, 7);
        assert_eq!(p[0] >> 4, 6);
        assert_eq!(p[6], IPPROTO_TCP);
        assert_eq!(&p[8..24], &src.octets());
        assert_eq!(&p[24..40], &dst.octets());
        assert_eq!(u16::from_be_bytes([p[42], p[43]]), 7000);
        assert_eq!(p[53], TCP_SYN);
        // A correct checksum makes the sum over pseudo header and segment all ones.
        assert_eq!(checksum(pseudo_header_sum(&p[8..40], 20), &p[40..]), 0);
    }

    #[test]
    fn sources_stay_in_their_networks() {
        let net = |a: Ipv6Addr| u128::from(a) >> 64;
        let many: std::collections::HashSet<u128> = (0..1000)
            .map(|i| net(spoofed6(Sources::Nets { nets: 64 }, i)))
            .collect();
        assert_eq!(many.len(), 64);
        let one: std::collections::HashSet<u128> = (0..1000)
            .map(|i| net(spoofed6(Sources::OneNet, i)))
            .collect();
        assert_eq!(one.len(), 1);
        let addrs: std::collections::HashSet<Ipv6Addr> =
            (0..1000).map(|i| spoofed6(Sources::OneNet, i)).collect();
        assert_eq!(addrs.len(), 1000, "a fresh address every packet");
        assert!(many.iter().all(|n| n >> 32 == 0xfd00_bad0));
    }
}
