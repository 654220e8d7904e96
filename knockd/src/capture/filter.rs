//! BPF filter text for the capture, built from the doors and the local addresses.
//!
//! The kernel filter only cuts the packet rate; userspace re-checks everything (destination,
//! ports, flags), so the filter may let too much through but must never drop a knock.
//!
//! One sub-expression per door and address family, in the spirit of knockd 0.8:
//!
//! ```text
//! (ip and (dst host 10.99.77.1) and (((tcp dst port 7000 or tcp dst port 8000) and (tcp[tcpflags] & tcp-syn != 0)) or (udp dst port 9000)))
//! ```
//!
//! On a door the sweep guard watches, only a connection attempt knocks (SYN without ACK, in
//! both families): the sub-filter says so, so other segments to its ports never wake the
//! capture thread.
//!
//! Differences from knockd: libpcap's `tcp[]` only indexes TCP over IPv4, so IPv6 sub-filters
//! carry no tests of the door's own flags (userspace checks them), and IPv6 packets whose next header is an
//! extension header are let through so the decoder can walk the chain. `ip`/`ip6` keep the
//! families apart, every operand is parenthesised (libpcap gives `and` and `or` the same
//! precedence), ports are sorted and identical sub-expressions appear once.

use crate::config::model::{flag, Door, Proto};
use std::fmt::Write as _;
use std::net::IpAddr;

/// A filter that compiles on every link type and matches nothing: used when no door has a
/// sequence.
pub const MATCH_NOTHING: &str = "less 1";

/// IPv6 next-header values the decoder walks: hop-by-hop, routing, fragment, destination
/// options, AH.
const IPV6_EXT_HEADERS: [u8; 5] = [0, 43, 44, 60, 51];

/// libpcap names of the TCP flag bits, as `flag::NAMES` orders them (note `tcp-push`).
const PCAP_FLAGS: [(u8, &str); 6] = [
    (flag::FIN, "tcp-fin"),
    (flag::SYN, "tcp-syn"),
    (flag::RST, "tcp-rst"),
    (flag::PSH, "tcp-push"),
    (flag::ACK, "tcp-ack"),
    (flag::URG, "tcp-urg"),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4 = 0,
    V6 = 1,
}

/// A TCP knock on a guarded door: SYN without ACK, per family (IPv6: after the fixed header;
/// the `tcp` test before it means no extension header, whose packets the decoder sees anyway).
const GUARDED_KNOCK: [&str; 2] = [
    "(tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn)",
    "(ip6[53] & 0x12 == 0x02)",
];

impl Family {
    fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
    fn qualifier(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }
}

/// The libpcap filter expression for `doors` on an interface with addresses `local`.
///
/// For each door and family the destinations are the door's `Target` (its family only) or
/// else the local addresses of that family; a family without destinations is skipped. When
/// `local` is empty (e.g. addresses not known yet) a door without `Target` gets a
/// destination-less sub-filter. Doors without a sequence contribute nothing; with none left
/// the result is [`MATCH_NOTHING`]. Output is deterministic.
pub fn build(doors: &[Door], local: &[IpAddr]) -> String {
    let mut local: Vec<IpAddr> = local.to_vec();
    local.sort();
    local.dedup();

    let mut parts: Vec<String> = Vec::new();
    // Dedup with a set: 10,000 doors make 20,000 sub-expressions (a linear search was quadratic).
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut push = |s: String| {
        if seen.insert(s.clone()) {
            parts.push(s);
        }
    };
    for door in doors {
        let tcp = ports(door, Proto::Tcp);
        let udp = ports(door, Proto::Udp);
        if tcp.is_empty() && udp.is_empty() {
            continue;
        }
        for family in [Family::V4, Family::V6] {
            let dsts: Vec<IpAddr> = match door.target {
                Some(t) if Family::of(&t) == family => vec![t],
                Some(_) => continue,
                None => local
                    .iter()
                    .filter(|a| Family::of(a) == family)
                    .copied()
                    .collect(),
            };
            let dst = if dsts.is_empty() {
                if !local.is_empty() || door.target.is_some() {
                    continue;
                }
                None
            } else {
                Some(alternatives(dsts.iter().map(|a| format!("dst host {a}"))))
            };
            let mut flags = match family {
                Family::V4 => flag_tests(door),
                Family::V6 => Vec::new(),
            };
            if door.sweep_guard {
                // On a guarded door only a connection attempt knocks (the matcher drops the
                // rest): SYN|ACK, ACK, RST... stay in the kernel.
                flags.push(GUARDED_KNOCK[family as usize].to_string());
            }
            let mut l4 = Vec::new();
            if !tcp.is_empty() {
                let p = alternatives(tcp.iter().map(|p| format!("tcp dst port {p}")));
                if flags.is_empty() {
                    l4.push(p);
                } else {
                    l4.push(format!("({p} and {})", flags.join(" and ")));
                }
            }
            if !udp.is_empty() {
                l4.push(alternatives(
                    udp.iter().map(|p| format!("udp dst port {p}")),
                ));
            }
            let q = family.qualifier();
            push(conjunction(q, dst.as_deref(), &alternatives(l4)));
            if family == Family::V6 {
                let ext = alternatives(IPV6_EXT_HEADERS.iter().map(|n| format!("ip6[6] == {n}")));
                push(conjunction(q, dst.as_deref(), &ext));
            }
        }
    }
    if doors
        .iter()
        .any(|d| d.sweep_guard && !d.sequence.is_empty())
    {
        for clause in new_connections(doors, &local) {
            push(clause);
        }
    }
    if parts.is_empty() {
        MATCH_NOTHING.to_string()
    } else {
        parts.join(" or ")
    }
}

/// For the sweep guard: new connections (TCP SYN without ACK, any UDP) to every port of
/// this host's addresses and the doors' targets. Established traffic (every TCP segment with
/// ACK set) stays out. IPv6 TCP flags are read at a fixed offset, so only packets without
/// extension headers are tested (the door sub-filters let those with extension headers in).
fn new_connections(doors: &[Door], local: &[IpAddr]) -> Vec<String> {
    let mut dsts: Vec<IpAddr> = local.to_vec();
    dsts.extend(doors.iter().filter_map(|d| d.target));
    dsts.sort();
    dsts.dedup();
    let mut out = Vec::new();
    for family in [Family::V4, Family::V6] {
        let fam: Vec<IpAddr> = dsts
            .iter()
            .filter(|a| Family::of(a) == family)
            .copied()
            .collect();
        let dst = if fam.is_empty() {
            if !local.is_empty() {
                continue;
            }
            None
        } else {
            Some(alternatives(fam.iter().map(|a| format!("dst host {a}"))))
        };
        let rest = match family {
            Family::V4 => "((tcp and (tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn)) or udp)",
            Family::V6 => "((ip6[6] == 6 and (ip6[53] & 0x12 == 0x02)) or ip6[6] == 17)",
        };
        out.push(conjunction(family.qualifier(), dst.as_deref(), rest));
    }
    out
}

/// `expr` widened to let SPA datagrams to `spa_port` in (when a door takes them).
pub fn with_spa(expr: String, spa_port: Option<u16>) -> String {
    match spa_port {
        None => expr,
        Some(p) if expr == MATCH_NOTHING => format!("udp dst port {p}"),
        Some(p) => format!("(udp dst port {p}) or {expr}"),
    }
}

/// The door's destination ports for `proto`, sorted and deduplicated.
fn ports(door: &Door, proto: Proto) -> Vec<u16> {
    let mut v: Vec<u16> = door
        .sequence
        .iter()
        .filter(|s| s.proto == proto)
        .map(|s| s.port)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// `(tcp[tcpflags] & tcp-syn != 0)` for each required flag, `== 0` for each forbidden one.
fn flag_tests(door: &Door) -> Vec<String> {
    let f = door.tcp_flags;
    let mut out = Vec::new();
    for (bit, name) in PCAP_FLAGS {
        if f.set & bit != 0 {
            out.push(format!("(tcp[tcpflags] & {name} != 0)"));
        }
        if f.unset & bit != 0 {
            out.push(format!("(tcp[tcpflags] & {name} == 0)"));
        }
    }
    out
}

/// `(a or b or c)`; a single operand that is already parenthesised is returned as is.
fn alternatives(items: impl IntoIterator<Item = String>) -> String {
    let items: Vec<String> = items.into_iter().collect();
    match items.as_slice() {
        [one] if one.starts_with('(') => one.clone(),
        _ => format!("({})", items.join(" or ")),
    }
}

/// `(ip and (dst ...) and (rest))`, without the destination when there is none.
fn conjunction(qualifier: &str, dst: Option<&str>, rest: &str) -> String {
    let mut s = format!("({qualifier} and ");
    if let Some(d) = dst {
        let _ = write!(s, "{d} and ");
    }
    s.push_str(rest);
    s.push(')');
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::model::{
        Command6, Step, TcpFlags, DEFAULT_CMD_TIMEOUT, DEFAULT_OPEN_CHAIN, DEFAULT_SEQ_TIMEOUT,
    };
    use crate::packet::testpkt::{self, Ext, TCP, UDP};
    use std::net::{Ipv4Addr, Ipv6Addr};

    const A4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 99, 77, 1));
    const A6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd99, 0x77, 0, 0, 0, 0, 0, 1));
    const LL6: IpAddr = IpAddr::V6(Ipv6Addr::new(
        0xfe80, 0, 0, 0, 0x24fb, 0x10ff, 0xfea1, 0x3b2e,
    ));

    fn door(name: &str, seq: &[(u16, Proto)], flags: TcpFlags, target: Option<IpAddr>) -> Door {
        Door {
            name: name.to_string(),
            line: 1,
            sequence: seq
                .iter()
                .map(|&(port, proto)| Step { port, proto })
                .collect(),
            one_time_sequences: None,
            seq_timeout: DEFAULT_SEQ_TIMEOUT,
            tcp_flags: flags,
            start_command: None,
            start_command_6: Command6::Fallback,
            stop_command: None,
            stop_command_6: Command6::Fallback,
            cmd_timeout: DEFAULT_CMD_TIMEOUT,
            target,
            open: Vec::new(),
            open_chain: DEFAULT_OPEN_CHAIN.to_string(),
            sweep_guard: false,
            totp_file: None,
            totp: None,
            spa: Vec::new(),
            spa_address: Default::default(),
        }
    }

    fn syn() -> TcpFlags {
        TcpFlags {
            set: flag::SYN,
            unset: 0,
        }
    }

    fn tcp_seq(ports: &[u16]) -> Vec<(u16, Proto)> {
        ports.iter().map(|&p| (p, Proto::Tcp)).collect()
    }

    /// The seed config: openSSH 7000,8000,9000 and closeSSH 9000,8000,7000, tcpflags = syn.
    fn seed() -> Vec<Door> {
        vec![
            door("openSSH", &tcp_seq(&[7000, 8000, 9000]), syn(), None),
            door("closeSSH", &tcp_seq(&[9000, 8000, 7000]), syn(), None),
        ]
    }

    const EXT: &str =
        "(ip6[6] == 0 or ip6[6] == 43 or ip6[6] == 44 or ip6[6] == 60 or ip6[6] == 51)";

    /// Compile `expr` on the link types knockd captures on; no root needed.
    fn compile(expr: &str) -> Vec<pcap::BpfProgram> {
        [
            pcap::Linktype::ETHERNET,
            pcap::Linktype::LINUX_SLL,
            pcap::Linktype::LINUX_SLL2,
            // pcap_open_dead takes a DLT, and Linux's DLT_RAW is 12 (LINKTYPE_RAW is 101).
            pcap::Linktype(12),
            pcap::Linktype::NULL,
            pcap::Linktype::LOOP,
        ]
        .into_iter()
        .map(|lt| {
            let cap = pcap::Capture::dead(lt).unwrap();
            cap.compile(expr, true)
                .unwrap_or_else(|e| panic!("{lt:?}: {e}: {expr}"))
        })
        .collect()
    }

    fn check(doors: &[Door], local: &[IpAddr], want: &str) {
        let got = build(doors, local);
        assert_eq!(got, want);
        compile(&got);
    }

    #[test]
    fn seed_config_dedups_the_two_doors() {
        check(
            &seed(),
            &[A6, A4, LL6, A4],
            &[
                "(ip and (dst host 10.99.77.1) and ((tcp dst port 7000 or tcp dst port 8000 \
                 or tcp dst port 9000) and (tcp[tcpflags] & tcp-syn != 0)))",
                "(ip6 and (dst host fd99:77::1 or dst host fe80::24fb:10ff:fea1:3b2e) and \
                 (tcp dst port 7000 or tcp dst port 8000 or tcp dst port 9000))",
                &format!(
                    "(ip6 and (dst host fd99:77::1 or dst host fe80::24fb:10ff:fea1:3b2e) \
                     and {EXT})"
                ),
            ]
            .join(" or "),
        );
    }

    #[test]
    fn udp_and_mixed_ports() {
        let d = door(
            "mixed",
            &[(9000, Proto::Udp), (7000, Proto::Tcp), (8000, Proto::Udp)],
            TcpFlags::default(),
            None,
        );
        check(
            &[d],
            &[A4],
            "(ip and (dst host 10.99.77.1) and ((tcp dst port 7000) or \
             (udp dst port 8000 or udp dst port 9000)))",
        );
        let u = door("udp", &[(9000, Proto::Udp)], syn(), None);
        check(
            &[u],
            &[A6],
            &format!(
                "(ip6 and (dst host fd99:77::1) and (udp dst port 9000)) or \
                 (ip6 and (dst host fd99:77::1) and {EXT})"
            ),
        );
    }

    #[test]
    fn negated_and_all_flags() {
        let f = TcpFlags {
            set: flag::SYN | flag::PSH,
            unset: flag::ACK | flag::FIN | flag::RST | flag::URG,
        };
        check(
            &[door("f", &tcp_seq(&[1]), f, None)],
            &[A4],
            "(ip and (dst host 10.99.77.1) and ((tcp dst port 1) and \
             (tcp[tcpflags] & tcp-fin == 0) and (tcp[tcpflags] & tcp-syn != 0) and \
             (tcp[tcpflags] & tcp-rst == 0) and (tcp[tcpflags] & tcp-push != 0) and \
             (tcp[tcpflags] & tcp-ack == 0) and (tcp[tcpflags] & tcp-urg == 0)))",
        );
    }

    #[test]
    fn target_replaces_local_addresses_of_its_family_only() {
        let t4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let t6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        check(
            &[door("t", &tcp_seq(&[7000]), syn(), Some(t4))],
            &[A4, A6],
            "(ip and (dst host 192.0.2.1) and ((tcp dst port 7000) and \
             (tcp[tcpflags] & tcp-syn != 0)))",
        );
        check(
            &[door("t", &tcp_seq(&[7000]), syn(), Some(t6))],
            &[A4],
            &format!(
                "(ip6 and (dst host 2001:db8::1) and (tcp dst port 7000)) or \
                 (ip6 and (dst host 2001:db8::1) and {EXT})"
            ),
        );
        // A target works without local addresses too.
        assert_eq!(
            build(&[door("t", &tcp_seq(&[7000]), syn(), Some(t4))], &[]),
            build(&[door("t", &tcp_seq(&[7000]), syn(), Some(t4))], &[A4, A6]),
        );
    }

    #[test]
    fn family_without_addresses_is_skipped() {
        check(
            &seed()[..1],
            &[A4],
            "(ip and (dst host 10.99.77.1) and ((tcp dst port 7000 or tcp dst port 8000 \
             or tcp dst port 9000) and (tcp[tcpflags] & tcp-syn != 0)))",
        );
    }

    #[test]
    fn no_addresses_falls_back_to_ports_only() {
        check(
            &seed(),
            &[],
            &format!(
                "(ip and ((tcp dst port 7000 or tcp dst port 8000 or tcp dst port 9000) and \
                 (tcp[tcpflags] & tcp-syn != 0))) or \
                 (ip6 and (tcp dst port 7000 or tcp dst port 8000 or tcp dst port 9000)) or \
                 (ip6 and {EXT})"
            ),
        );
    }

    #[test]
    fn no_doors_matches_nothing() {
        check(&[], &[A4, A6], MATCH_NOTHING);
        check(&[door("empty", &[], syn(), None)], &[A4], MATCH_NOTHING);
        let t6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        // A v6 target on a v4-only host still yields its v6 filter; no v4 part.
        assert!(build(&[door("x", &tcp_seq(&[1]), syn(), Some(t6))], &[A4]).starts_with("(ip6"));
        for prog in compile(MATCH_NOTHING) {
            let frame = testpkt::ether_ip(&testpkt::ipv4(
                Ipv4Addr::new(1, 2, 3, 4),
                Ipv4Addr::new(10, 99, 77, 1),
                TCP,
                &testpkt::tcp(1, 7000, flag::SYN, 0),
            ));
            assert!(!prog.filter(&frame));
        }
    }

    #[test]
    fn output_is_deterministic_and_dedups_across_doors() {
        let mut doors = seed();
        doors.extend(seed());
        doors.push(door("other", &tcp_seq(&[1234]), syn(), None));
        let a = build(&doors, &[A4, A6]);
        let b = build(&doors, &[A6, A4, A6]);
        assert_eq!(a, b);
        assert_eq!(a.matches("tcp dst port 7000").count(), 2, "{a}");
        assert_eq!(a.matches("ip6[6] == 43").count(), 1, "{a}");
        compile(&a);
    }

    #[test]
    fn odd_addresses_compile() {
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        let locals = [
            A4,
            LL6,
            mapped,
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 3, 4, 5, 6)),
        ];
        let d = door("d", &[(65535, Proto::Tcp), (1, Proto::Udp)], syn(), None);
        compile(&build(&[d], &locals));
    }

    /// Run the seed filter, compiled for Ethernet, over hand-built frames.
    #[test]
    fn seed_filter_passes_knocks_and_drops_the_rest() {
        let expr = build(&seed(), &[A4, A6]);
        let cap = pcap::Capture::dead(pcap::Linktype::ETHERNET).unwrap();
        let prog = cap.compile(&expr, true).unwrap();
        let (IpAddr::V4(d4), IpAddr::V6(d6)) = (A4, A6) else {
            unreachable!()
        };
        let s4 = Ipv4Addr::new(192, 0, 2, 7);
        let s6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);
        let v4 = |dst, proto, l4: Vec<u8>| testpkt::ether_ip(&testpkt::ipv4(s4, dst, proto, &l4));
        let v6 = |dst, exts: &[Ext], l4: Vec<u8>| {
            testpkt::ether_ip(&testpkt::ipv6_ext(s6, dst, exts, TCP, &l4))
        };
        let syn_to = |port| testpkt::tcp(40000, port, flag::SYN, 1);
        let cases = [
            ("v4 syn 7000", v4(d4, TCP, syn_to(7000)), true),
            ("v4 syn 9000", v4(d4, TCP, syn_to(9000)), true),
            (
                "v4 syn+ack 9000",
                v4(d4, TCP, testpkt::tcp(1, 9000, 0x12, 1)),
                true,
            ),
            (
                "v4 ack 7000",
                v4(d4, TCP, testpkt::tcp(1, 7000, flag::ACK, 1)),
                false,
            ),
            ("v4 syn 7001", v4(d4, TCP, syn_to(7001)), false),
            (
                "v4 udp 7000",
                v4(d4, UDP, testpkt::udp(1, 7000, b"")),
                false,
            ),
            (
                "v4 other dst",
                v4(Ipv4Addr::new(10, 99, 77, 2), TCP, syn_to(7000)),
                false,
            ),
            ("v6 syn 8000", v6(d6, &[], syn_to(8000)), true),
            // No flag tests for IPv6: userspace checks them.
            (
                "v6 ack 8000",
                v6(d6, &[], testpkt::tcp(1, 8000, flag::ACK, 1)),
                true,
            ),
            ("v6 syn 8001", v6(d6, &[], syn_to(8001)), false),
            (
                "v6 hop-by-hop",
                v6(d6, &[Ext::HopByHop(0)], syn_to(8000)),
                true,
            ),
            ("v6 dstopts", v6(d6, &[Ext::DstOpts(1)], syn_to(1)), true),
            (
                "v6 fragment",
                v6(
                    d6,
                    &[Ext::Fragment {
                        offset: 0,
                        more: true,
                    }],
                    syn_to(8000),
                ),
                true,
            ),
            (
                "v6 other dst",
                v6(Ipv6Addr::LOCALHOST, &[], syn_to(8000)),
                false,
            ),
            (
                "v6 ext other dst",
                v6(Ipv6Addr::LOCALHOST, &[Ext::HopByHop(0)], syn_to(8000)),
                false,
            ),
        ];
        for (name, frame, want) in cases {
            assert_eq!(prog.filter(&frame), want, "{name}: {expr}");
            // Whatever passes must also decode (the filter never passes junk for these).
            if want {
                assert!(crate::packet::decode(crate::packet::LinkType::Ethernet, &frame).is_some());
            }
        }
    }

    /// With the sweep guard on, new connections to any port of this host pass, established
    /// traffic and other hosts' traffic do not.
    #[test]
    fn sweep_guard_sees_new_connections_to_every_port_only() {
        let mut doors = seed();
        doors[0].sweep_guard = true;
        let expr = build(&doors, &[A4, A6]);
        assert!(expr.contains("tcp-syn|tcp-ack"), "{expr}");
        compile(&expr);
        let cap = pcap::Capture::dead(pcap::Linktype::ETHERNET).unwrap();
        let prog = cap.compile(&expr, true).unwrap();
        let (IpAddr::V4(d4), IpAddr::V6(d6)) = (A4, A6) else {
            unreachable!()
        };
        let s4 = Ipv4Addr::new(192, 0, 2, 7);
        let s6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);
        let v4 = |dst, proto, l4: Vec<u8>| testpkt::ether_ip(&testpkt::ipv4(s4, dst, proto, &l4));
        let v6 = |dst, proto, l4: Vec<u8>| {
            testpkt::ether_ip(&testpkt::ipv6_ext(s6, dst, &[], proto, &l4))
        };
        let other4 = Ipv4Addr::new(10, 99, 77, 2);
        let cases = [
            (
                "v4 syn 80",
                v4(d4, TCP, testpkt::tcp(1, 80, flag::SYN, 1)),
                true,
            ),
            (
                "v4 syn 7001",
                v4(d4, TCP, testpkt::tcp(1, 7001, flag::SYN, 1)),
                true,
            ),
            ("v4 udp 53", v4(d4, UDP, testpkt::udp(1, 53, b"")), true),
            (
                "v4 ack 80",
                v4(d4, TCP, testpkt::tcp(1, 80, flag::ACK, 1)),
                false,
            ),
            (
                "v4 psh+ack 22",
                v4(d4, TCP, testpkt::tcp(1, 22, flag::ACK | flag::PSH, 1)),
                false,
            ),
            (
                "v4 syn+ack 80",
                v4(d4, TCP, testpkt::tcp(1, 80, flag::SYN | flag::ACK, 1)),
                false,
            ),
            (
                "v4 syn other host",
                v4(other4, TCP, testpkt::tcp(1, 80, flag::SYN, 1)),
                false,
            ),
            (
                "v6 syn 443",
                v6(d6, TCP, testpkt::tcp(1, 443, flag::SYN, 1)),
                true,
            ),
            ("v6 udp 53", v6(d6, UDP, testpkt::udp(1, 53, b"")), true),
            (
                "v6 ack 443",
                v6(d6, TCP, testpkt::tcp(1, 443, flag::ACK, 1)),
                false,
            ),
            (
                "v6 syn other host",
                v6(Ipv6Addr::LOCALHOST, TCP, testpkt::tcp(1, 443, flag::SYN, 1)),
                false,
            ),
        ];
        for (name, frame, want) in cases {
            assert_eq!(prog.filter(&frame), want, "{name}: {expr}");
        }
        // Every door with the guard off: the filter is the door ports only.
        doors[0].sweep_guard = false;
        assert!(!build(&doors, &[A4]).contains("tcp-ack"));
    }

    /// On guarded doors only a connection attempt (SYN without ACK) knocks, whatever
    /// `TCPFlags` says: SYN|ACK, ACK, FIN, RST, NULL and XMAS to the door's ports stay in the
    /// kernel, over IPv4 and IPv6 (the matcher would discard them). Unguarded, knockd 0.8's
    /// rule holds: the door's flags decide.
    #[test]
    fn guarded_doors_take_only_connection_attempts_as_tcp_knocks() {
        use flag::{ACK, FIN, PSH, RST, SYN, URG};
        let any = TcpFlags { set: 0, unset: 0 };
        let cases: [(u8, bool); 10] = [
            (SYN, true),
            (SYN | ACK, false),
            (ACK, false),
            (FIN, false),
            (RST, false),
            (0, false),
            (FIN | PSH | URG, false),
            (ACK | PSH, false),
            (SYN | FIN, true),
            (SYN | RST, true),
        ];
        let (IpAddr::V4(d4), IpAddr::V6(d6)) = (A4, A6) else {
            unreachable!()
        };
        let s4 = Ipv4Addr::new(192, 0, 2, 7);
        let s6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);
        let v4 =
            |f: u8| testpkt::ether_ip(&testpkt::ipv4(s4, d4, TCP, &testpkt::tcp(1, 8000, f, 1)));
        let v6 = |f: u8| {
            testpkt::ether_ip(&testpkt::ipv6_ext(
                s6,
                d6,
                &[],
                TCP,
                &testpkt::tcp(1, 8000, f, 1),
            ))
        };
        for flags in [syn(), any] {
            let mut doors = vec![door("ssh", &tcp_seq(&[7000, 8000, 9000]), flags, None)];
            doors[0].sweep_guard = true;
            let expr = build(&doors, &[A4, A6]);
            compile(&expr);
            let cap = pcap::Capture::dead(pcap::Linktype::ETHERNET).unwrap();
            let prog = cap.compile(&expr, true).unwrap();
            for (f, want) in cases {
                assert_eq!(prog.filter(&v4(f)), want, "v4 flags {f:#04x}: {expr}");
                assert_eq!(prog.filter(&v6(f)), want, "v6 flags {f:#04x}: {expr}");
            }
            // UDP knocks and IPv6 with extension headers still reach the decoder.
            let mut udp = doors.clone();
            udp[0].sequence[1].proto = Proto::Udp;
            let prog = cap.compile(&build(&udp, &[A4, A6]), true).unwrap();
            let u = testpkt::ether_ip(&testpkt::ipv4(s4, d4, UDP, &testpkt::udp(1, 8000, b"")));
            assert!(prog.filter(&u));
            let ext = testpkt::ether_ip(&testpkt::ipv6_ext(
                s6,
                d6,
                &[Ext::DstOpts(0)],
                TCP,
                &testpkt::tcp(1, 8000, ACK, 1),
            ));
            assert!(prog.filter(&ext), "extension headers go to the decoder");

            // The same door unguarded: its flags decide (knockd 0.8).
            doors[0].sweep_guard = false;
            let prog = cap.compile(&build(&doors, &[A4, A6]), true).unwrap();
            assert!(prog.filter(&v4(SYN | ACK)), "{flags:?}");
            assert_eq!(prog.filter(&v4(ACK)), flags == any);
        }
    }

    #[test]
    fn ports_only_filter_still_checks_flags_on_v4() {
        let expr = build(&seed(), &[]);
        let prog = &compile(&expr)[0];
        let s = Ipv4Addr::new(192, 0, 2, 7);
        let d = Ipv4Addr::new(203, 0, 113, 9);
        let syn = testpkt::ether_ip(&testpkt::ipv4(
            s,
            d,
            TCP,
            &testpkt::tcp(1, 8000, flag::SYN, 0),
        ));
        let ack = testpkt::ether_ip(&testpkt::ipv4(
            s,
            d,
            TCP,
            &testpkt::tcp(1, 8000, flag::ACK, 0),
        ));
        assert!(prog.filter(&syn));
        assert!(!prog.filter(&ack));
    }
}
