//! The flood generator: spoofed TCP SYNs from a raw socket in the client namespace, sent to
//! the server address only, at a fixed rate, bounded in count and in time.
//!
//! Spoofed sources come from [`SPOOF_NET`] (10.192.0.0/12), a private range that exists only
//! inside the lab: the server namespace has no route back to it, so its replies die there.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::netns::create_in;
use super::wire::syn;

/// The spoofed source range, 10.192.0.0/12: 1,048,574 usable addresses.
pub const SPOOF_NET: Ipv4Addr = Ipv4Addr::new(10, 192, 0, 0);
const SPOOF_HOSTS: u32 = (1 << 20) - 2;
/// How long a flood may overrun its duration before it stops anyway.
const SLACK: Duration = Duration::from_secs(2);
/// Packets sent back to back before the clock is checked again.
const MAX_BURST: u64 = 64;

/// What the flood sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// SYNs to one port; packet `i` comes from spoofed source `i`, so every packet is the
    /// first knock of a new source (up to 1,048,574 packets).
    Door { port: u16 },
    /// SYNs to random ports 1-65535 from random spoofed sources.
    Scan,
    /// Whole knocks: spoofed source `n` sends one SYN to each of `ports`, in order and back to
    /// back (packets `3n`, `3n+1`, `3n+2`), so every source completes the sequence. Sources
    /// are sequential, so they fill one /24 after the other (256 sources each).
    Completing { ports: [u16; 3] },
    /// Whole knocks like [`Pattern::Completing`], from `sources` spoofed sources spread over
    /// `nets` /24 networks (source `k` is host `k / nets + 1` of network `k % nets`); source
    /// `n % sources` sends the `n`-th sequence, so each source knocks again and again.
    CompletingOver {
        ports: [u16; 3],
        sources: u32,
        nets: u32,
    },
    /// SYNs to one of `ports` at random from one of `sources` sequential spoofed sources at
    /// random: a spoofed flood on a door's ports in random order, where some sources complete
    /// the sequence by chance.
    Shuffled { ports: [u16; 3], sources: u32 },
}

impl Pattern {
    /// Source and destination port of packet `i` (`rng` only for [`Pattern::Scan`]).
    fn packet(&self, i: u64, rng: &mut XorShift) -> (Ipv4Addr, u16) {
        match *self {
            Pattern::Door { port } => (spoofed(i as u32), port),
            Pattern::Scan => {
                let r = rng.next();
                (spoofed(r as u32), (r >> 32) as u16 % 65535 + 1)
            }
            Pattern::Completing { ports } => {
                let n = ports.len() as u64;
                (spoofed((i / n) as u32), ports[(i % n) as usize])
            }
            Pattern::CompletingOver {
                ports,
                sources,
                nets,
            } => {
                let n = ports.len() as u64;
                let k = ((i / n) % u64::from(sources.max(1))) as u32;
                (spread(k, nets), ports[(i % n) as usize])
            }
            Pattern::Shuffled { ports, sources } => {
                let r = rng.next();
                let src = (r as u32) % sources.max(1);
                let port = ports[((r >> 32) % ports.len() as u64) as usize];
                (spoofed(src), port)
            }
        }
    }
}

/// Source `k` spread over `nets` /24 networks of [`SPOOF_NET`]: host `k / nets + 1` of
/// network `k % nets` (hosts past 254 wrap into the next /24s' range of networks).
pub fn spread(k: u32, nets: u32) -> Ipv4Addr {
    let nets = nets.max(1);
    let (net, host) = (k % nets, k / nets);
    let (net, host) = (net + nets * (host / 254), host % 254 + 1);
    Ipv4Addr::from(u32::from(SPOOF_NET) + ((net * 256) % (SPOOF_HOSTS + 2)) + host)
}

/// One flood: `pattern` at `rate_pps` for `duration` (at most `rate_pps × duration` packets).
#[derive(Debug, Clone, Copy)]
pub struct FloodSpec {
    pub pattern: Pattern,
    pub rate_pps: u64,
    pub duration: Duration,
}

impl FloodSpec {
    /// The number of packets this flood sends.
    pub fn total(&self) -> u64 {
        (self.rate_pps as f64 * self.duration.as_secs_f64()) as u64
    }
}

/// What a flood did.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct FloodStats {
    pub sent: u64,
    /// sendto() failures (e.g. ENOBUFS), not counted in `sent`.
    pub send_errors: u64,
    pub elapsed_s: f64,
    pub achieved_pps: f64,
}

/// A raw IPv4 socket (`IPPROTO_RAW`, so `IP_HDRINCL`) in the client namespace.
pub struct Flooder {
    sock: Socket,
    dst: Ipv4Addr,
}

impl Flooder {
    /// Opens the raw socket inside network namespace `ns`; packets go to `dst` only.
    pub fn new(ns: &str, dst: Ipv4Addr) -> Result<Flooder> {
        let sock = create_in(ns, raw_socket)?;
        Ok(Flooder { sock, dst })
    }

    /// Sends `spec`'s packets, paced to its rate, until done, `spec.duration` + 2 s have
    /// passed, or `stop` is set. `progress` counts packets sent so far.
    pub fn run(&self, spec: &FloodSpec, progress: &AtomicU64, stop: &AtomicBool) -> FloodStats {
        let total = spec.total();
        let dst = SockAddr::from(SocketAddrV4::new(self.dst, 0));
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let (mut attempted, mut errors) = (0u64, 0u64);
        let start = Instant::now();
        let deadline = spec.duration + SLACK;
        while attempted < total && !stop.load(Ordering::Relaxed) {
            let elapsed = start.elapsed();
            if elapsed > deadline {
                break;
            }
            let due = ((elapsed.as_secs_f64() * spec.rate_pps as f64) as u64).min(total);
            if attempted >= due {
                std::thread::sleep(Duration::from_micros(100));
                continue;
            }
            for _ in 0..(due - attempted).min(MAX_BURST) {
                let (src, dport) = spec.pattern.packet(attempted, &mut rng);
                let sport = 1024 + (attempted % 60000) as u16;
                let pkt = syn(src, self.dst, sport, dport, attempted as u32);
                if self.sock.send_to(&pkt, &dst).is_err() {
                    errors += 1;
                }
                attempted += 1;
                progress.fetch_add(1, Ordering::Relaxed);
            }
        }
        let elapsed_s = start.elapsed().as_secs_f64();
        let sent = attempted - errors;
        FloodStats {
            sent,
            send_errors: errors,
            elapsed_s,
            achieved_pps: if elapsed_s > 0.0 {
                sent as f64 / elapsed_s
            } else {
                0.0
            },
        }
    }
}

/// A raw IPv4 socket with a header-included packet format, created in the current thread's
/// network namespace.
pub fn raw_socket() -> Result<Socket> {
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(IPPROTO_RAW)))
        .context("cannot open a raw socket (needs root or CAP_NET_RAW)")?;
    // Deep send buffer: bursts must not fail with ENOBUFS in our own socket.
    let _ = sock.set_send_buffer_size(4 << 20);
    Ok(sock)
}

/// The protocol number that implies IP_HDRINCL: we write the IP header ourselves.
const IPPROTO_RAW: i32 = 255;

/// Spoofed source number `n` (wrapping) in [`SPOOF_NET`], never its network or broadcast
/// address.
pub fn spoofed(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(SPOOF_NET) + 1 + n % SPOOF_HOSTS)
}

/// xorshift64: fast, deterministic, good enough for scan ports and sources.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spoofed_sources_stay_inside_10_192_0_0_slash_12() {
        assert_eq!(spoofed(0), Ipv4Addr::new(10, 192, 0, 1));
        assert_eq!(spoofed(SPOOF_HOSTS - 1), Ipv4Addr::new(10, 207, 255, 254));
        assert_eq!(spoofed(SPOOF_HOSTS), spoofed(0));
        for n in [0, 1, 1_000_000, u32::MAX] {
            let o = spoofed(n).octets();
            assert_eq!(o[0], 10);
            assert!((192..=207).contains(&o[1]), "{n}: {o:?}");
        }
    }

    #[test]
    fn a_million_door_knocks_come_from_a_million_sources() {
        let mut seen = std::collections::HashSet::new();
        for n in 0..1_000_000 {
            assert!(seen.insert(spoofed(n)));
        }
    }

    #[test]
    fn completing_sources_send_the_whole_sequence_in_order() {
        let p = Pattern::Completing {
            ports: [7000, 8000, 9000],
        };
        let mut rng = XorShift(1);
        let pkts: Vec<_> = (0..6).map(|i| p.packet(i, &mut rng)).collect();
        let a = spoofed(0);
        let b = spoofed(1);
        assert_eq!(
            pkts,
            vec![
                (a, 7000),
                (a, 8000),
                (a, 9000),
                (b, 7000),
                (b, 8000),
                (b, 9000)
            ]
        );
        // 200,000 packets: 66,667 sources over 261 /24 networks.
        let (last, _) = p.packet(199_999, &mut rng);
        assert_eq!(last, spoofed(66_666));
        assert_eq!(last.octets()[..3], [10, 193, 4]);
    }

    #[test]
    fn completing_over_127_networks() {
        let p = Pattern::CompletingOver {
            ports: [7000, 8000, 9000],
            sources: 30_000,
            nets: 127,
        };
        let mut rng = XorShift(1);
        let mut nets = std::collections::HashSet::new();
        let mut srcs = std::collections::HashSet::new();
        for i in 0..200_000u64 {
            let (src, port) = p.packet(i, &mut rng);
            assert_eq!(port, [7000, 8000, 9000][(i % 3) as usize]);
            let o = src.octets();
            assert_eq!(o[0], 10);
            assert!((1..=254).contains(&o[3]), "{src}");
            nets.insert([o[1], o[2]]);
            srcs.insert(src);
        }
        assert_eq!(nets.len(), 127);
        assert_eq!(srcs.len(), 30_000);
        // Each source sends its three knocks back to back.
        let (a, _) = p.packet(3, &mut rng);
        assert_eq!(p.packet(4, &mut rng).0, a);
        assert_eq!(p.packet(5, &mut rng).0, a);
    }

    #[test]
    fn shuffled_hits_the_three_ports_from_the_sources() {
        let p = Pattern::Shuffled {
            ports: [7000, 8000, 9000],
            sources: 30_000,
        };
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut ports = std::collections::HashMap::new();
        let mut srcs = std::collections::HashSet::new();
        for i in 0..200_000u64 {
            let (src, port) = p.packet(i, &mut rng);
            *ports.entry(port).or_insert(0u32) += 1;
            srcs.insert(src);
        }
        assert_eq!(ports.len(), 3);
        assert!(ports.values().all(|&n| n > 60_000), "{ports:?}");
        assert!(
            srcs.len() > 29_000 && srcs.len() <= 30_000,
            "{}",
            srcs.len()
        );
        assert!(srcs.iter().all(|s| s.octets()[..2] == [10, 192]));
    }

    #[test]
    fn total_is_rate_times_duration() {
        let spec = FloodSpec {
            pattern: Pattern::Scan,
            rate_pps: 20_000,
            duration: Duration::from_millis(2500),
        };
        assert_eq!(spec.total(), 50_000);
    }
}
