//! Packet decoding: captured bytes in, an optional knock out. Pure; never panics.
//!
//! Link layers: Ethernet (up to two VLAN tags), Linux cooked v1/v2, raw IP, BSD null/loop.
//! IPv6 extension headers are walked (up to eight), so a knock behind a hop-by-hop or
//! destination-options header still counts; non-first fragments are dropped.

use crate::config::model::Proto;
use std::net::IpAddr;

/// Link-layer framing of the capture, from the pcap datalink type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// DLT_EN10MB (also Linux loopback); 802.1Q/802.1ad VLAN tags are skipped.
    Ethernet,
    /// DLT_LINUX_SLL (`-i any` on most libpcap versions).
    LinuxSll,
    /// DLT_LINUX_SLL2.
    LinuxSll2,
    /// DLT_RAW / LINKTYPE_RAW, DLT_IPV4, DLT_IPV6: the packet starts at the IP header (tun, WireGuard).
    Raw,
    /// DLT_NULL / DLT_LOOP: 4-byte address family header.
    Null,
}

impl LinkType {
    /// Map a pcap datalink number; None for link types we cannot decode.
    pub fn from_dlt(dlt: i32) -> Option<LinkType> {
        match dlt {
            1 => Some(LinkType::Ethernet),
            113 => Some(LinkType::LinuxSll),
            276 => Some(LinkType::LinuxSll2),
            12 | 14 | 101 | 228 | 229 => Some(LinkType::Raw),
            0 | 108 => Some(LinkType::Null),
            _ => None,
        }
    }
}

/// A TCP or UDP packet, reduced to what the matcher needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: Proto,
    pub sport: u16,
    pub dport: u16,
    /// TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
    /// TCP sequence number (0 for UDP).
    pub tcp_seq: u32,
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
/// VLAN tags skipped on Ethernet (802.1ad outer + 802.1Q inner).
const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers walked before giving up.
const MAX_EXT_HEADERS: usize = 8;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_NONE: u8 = 59;
const IPPROTO_DSTOPTS: u8 = 60;

/// Decode one captured frame into a TCP/UDP [`Packet`]. Returns `None` for anything else:
/// other link or network protocols, non-first fragments, truncated or malformed headers.
/// Pure, allocation-free and panic-free on any input.
pub fn decode(link: LinkType, data: &[u8]) -> Option<Packet> {
    decode_l4(link, data).map(|(p, _)| p)
}

/// [`decode`], and the transport header with what follows it (cut at the IP length, or
/// where the capture ended): what the SPA reader takes a UDP payload from.
pub fn decode_l4(link: LinkType, data: &[u8]) -> Option<(Packet, &[u8])> {
    match link {
        LinkType::Ethernet => {
            let mut off = 12;
            let mut ethertype = be16(data, off)?;
            for _ in 0..MAX_VLAN_TAGS {
                if ethertype != ETHERTYPE_VLAN && ethertype != ETHERTYPE_QINQ {
                    break;
                }
                off += 4;
                ethertype = be16(data, off)?;
            }
            by_ethertype(ethertype, data.get(off + 2..)?)
        }
        LinkType::LinuxSll => by_ethertype(be16(data, 14)?, data.get(16..)?),
        LinkType::LinuxSll2 => by_ethertype(be16(data, 0)?, data.get(20..)?),
        LinkType::Raw => match data.first()? >> 4 {
            4 => ipv4(data),
            6 => ipv6(data),
            _ => None,
        },
        LinkType::Null => {
            let fam: [u8; 4] = data.get(..4)?.try_into().ok()?;
            let (le, be) = (u32::from_le_bytes(fam), u32::from_be_bytes(fam));
            let ip = data.get(4..)?;
            let is = |f: &[u32]| f.contains(&le) || f.contains(&be);
            if is(&[2]) {
                ipv4(ip)
            } else if is(&[10, 24, 28, 30]) {
                ipv6(ip)
            } else {
                None
            }
        }
    }
}

fn by_ethertype(ethertype: u16, ip: &[u8]) -> Option<(Packet, &[u8])> {
    match ethertype {
        ETHERTYPE_IPV4 => ipv4(ip),
        ETHERTYPE_IPV6 => ipv6(ip),
        _ => None,
    }
}

fn be16(data: &[u8], off: usize) -> Option<u16> {
    let b: [u8; 2] = data.get(off..off.checked_add(2)?)?.try_into().ok()?;
    Some(u16::from_be_bytes(b))
}

fn be32(data: &[u8], off: usize) -> Option<u32> {
    let b: [u8; 4] = data.get(off..off.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}

fn array<const N: usize>(data: &[u8], off: usize) -> Option<[u8; N]> {
    data.get(off..off.checked_add(N)?)?.try_into().ok()
}

fn ipv4(data: &[u8]) -> Option<(Packet, &[u8])> {
    let vihl = *data.first()?;
    if vihl >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    let total = usize::from(be16(data, 2)?);
    if ihl < 20 || total < ihl || data.len() < ihl {
        return None;
    }
    // Non-first fragments carry no transport header.
    if be16(data, 6)? & 0x1fff != 0 {
        return None;
    }
    let src = IpAddr::from(array::<4>(data, 12)?);
    let dst = IpAddr::from(array::<4>(data, 16)?);
    // Trim Ethernet padding; a capture cut by the snaplen keeps what it has.
    let end = total.min(data.len());
    transport(data[9], data.get(ihl..end)?, src, dst)
}

fn ipv6(data: &[u8]) -> Option<(Packet, &[u8])> {
    if data.first()? >> 4 != 6 || data.len() < 40 {
        return None;
    }
    let payload = usize::from(be16(data, 4)?);
    let src = IpAddr::from(array::<16>(data, 8)?);
    let dst = IpAddr::from(array::<16>(data, 24)?);
    // Payload length 0 means a jumbogram: take what was captured.
    let end = if payload == 0 {
        data.len()
    } else {
        (40 + payload).min(data.len())
    };
    let data = data.get(..end)?;
    let mut next = data[6];
    let mut off = 40;
    for _ in 0..=MAX_EXT_HEADERS {
        let len = match next {
            IPPROTO_TCP | IPPROTO_UDP => return transport(next, data.get(off..)?, src, dst),
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                (usize::from(*data.get(off + 1)?) + 1) * 8
            }
            IPPROTO_FRAGMENT => {
                if be16(data, off + 2)? >> 3 != 0 {
                    return None;
                }
                8
            }
            IPPROTO_AH => (usize::from(*data.get(off + 1)?) + 2) * 4,
            IPPROTO_NONE => return None,
            // ICMPv6, ESP and everything else.
            _ => return None,
        };
        if off + len > data.len() {
            return None;
        }
        next = data[off];
        off += len;
    }
    // More than MAX_EXT_HEADERS extension headers.
    None
}

fn transport(proto: u8, l4: &[u8], src: IpAddr, dst: IpAddr) -> Option<(Packet, &[u8])> {
    let (proto, tcp_flags, tcp_seq) = match proto {
        IPPROTO_TCP => {
            if l4.len() < 20 || l4[12] >> 4 < 5 {
                return None;
            }
            (Proto::Tcp, l4[13], be32(l4, 4)?)
        }
        IPPROTO_UDP if l4.len() >= 8 => (Proto::Udp, 0, 0),
        _ => return None,
    };
    let p = Packet {
        src,
        dst,
        proto,
        sport: be16(l4, 0)?,
        dport: be16(l4, 2)?,
        tcp_flags,
        tcp_seq,
    };
    Some((p, l4))
}

/// The payload of a UDP datagram whose transport header and what follows is `l4` (from
/// [`decode_l4`]): None when the UDP length does not match what was captured (cut by the
/// snaplen, or a lying header).
pub fn udp_payload(l4: &[u8]) -> Option<&[u8]> {
    let len = usize::from(be16(l4, 4)?);
    if len != l4.len() || len < 8 {
        return None;
    }
    l4.get(8..)
}

/// Hand-built frames for the decoder and filter tests.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod testpkt {
    use std::net::{Ipv4Addr, Ipv6Addr};

    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;

    /// 20-byte TCP header.
    pub fn tcp(sport: u16, dport: u16, flags: u8, seq: u32) -> Vec<u8> {
        let mut h = Vec::with_capacity(20);
        h.extend_from_slice(&sport.to_be_bytes());
        h.extend_from_slice(&dport.to_be_bytes());
        h.extend_from_slice(&seq.to_be_bytes());
        h.extend_from_slice(&0u32.to_be_bytes()); // ack
        h.push(5 << 4); // data offset
        h.push(flags);
        h.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]); // window, checksum, urgent
        h
    }

    /// 8-byte UDP header followed by `payload`.
    pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&sport.to_be_bytes());
        h.extend_from_slice(&dport.to_be_bytes());
        h.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
        h.extend_from_slice(&[0, 0]);
        h.extend_from_slice(payload);
        h
    }

    /// IPv4 header (with `options`, a multiple of 4 bytes) followed by `payload`.
    pub fn ipv4_opts(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        proto: u8,
        frag: u16,
        options: &[u8],
        payload: &[u8],
    ) -> Vec<u8> {
        assert_eq!(options.len() % 4, 0);
        let ihl = 20 + options.len();
        let total = u16::try_from(ihl + payload.len()).unwrap();
        let mut h = vec![0x40 | u8::try_from(ihl / 4).unwrap(), 0];
        h.extend_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&[0x12, 0x34]); // id
        h.extend_from_slice(&frag.to_be_bytes());
        h.push(64);
        h.push(proto);
        h.extend_from_slice(&[0, 0]);
        h.extend_from_slice(&src.octets());
        h.extend_from_slice(&dst.octets());
        h.extend_from_slice(options);
        h.extend_from_slice(payload);
        h
    }

    pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
        ipv4_opts(src, dst, proto, 0, &[], payload)
    }

    /// An IPv6 extension header, chained in front of the transport header.
    #[derive(Clone, Copy)]
    pub enum Ext {
        HopByHop(u8),
        Routing(u8),
        DstOpts(u8),
        Fragment { offset: u16, more: bool },
        Ah(u8),
    }

    impl Ext {
        fn kind(self) -> u8 {
            match self {
                Ext::HopByHop(_) => 0,
                Ext::Routing(_) => 43,
                Ext::DstOpts(_) => 60,
                Ext::Fragment { .. } => 44,
                Ext::Ah(_) => 51,
            }
        }
        fn bytes(self, next: u8) -> Vec<u8> {
            let (len_field, size) = match self {
                Ext::HopByHop(n) | Ext::Routing(n) | Ext::DstOpts(n) => {
                    (n, (usize::from(n) + 1) * 8)
                }
                Ext::Fragment { .. } => (0, 8),
                Ext::Ah(n) => (n, (usize::from(n) + 2) * 4),
            };
            let mut h = vec![0u8; size];
            h[0] = next;
            h[1] = len_field;
            if let Ext::Fragment { offset, more } = self {
                h[2..4].copy_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
            }
            h
        }
    }

    /// IPv6 header, extension headers `exts` in order, then `proto` with `payload`.
    pub fn ipv6_ext(
        src: Ipv6Addr,
        dst: Ipv6Addr,
        exts: &[Ext],
        proto: u8,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut chain = Vec::new();
        for (i, e) in exts.iter().enumerate() {
            let next = exts.get(i + 1).map_or(proto, |n| n.kind());
            chain.extend_from_slice(&e.bytes(next));
        }
        chain.extend_from_slice(payload);
        let first = exts.first().map_or(proto, |e| e.kind());
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&u16::try_from(chain.len()).unwrap().to_be_bytes());
        h.push(first);
        h.push(64);
        h.extend_from_slice(&src.octets());
        h.extend_from_slice(&dst.octets());
        h.extend_from_slice(&chain);
        h
    }

    pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
        ipv6_ext(src, dst, &[], proto, payload)
    }

    /// Ethernet II frame; `tags` are VLAN TPIDs (0x8100, 0x88a8), outermost first.
    pub fn ether(tags: &[u16], ethertype: u16, ip: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        for (i, t) in tags.iter().enumerate() {
            f.extend_from_slice(&t.to_be_bytes());
            f.extend_from_slice(&(100 + u16::try_from(i).unwrap()).to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(ip);
        f
    }

    /// Ethernet frame for an IP packet, ethertype from the version nibble.
    pub fn ether_ip(ip: &[u8]) -> Vec<u8> {
        ether(&[], ethertype_of(ip), ip)
    }

    pub fn ethertype_of(ip: &[u8]) -> u16 {
        if ip[0] >> 4 == 6 {
            0x86dd
        } else {
            0x0800
        }
    }

    /// Linux cooked capture v1 (DLT_LINUX_SLL).
    pub fn sll(ip: &[u8]) -> Vec<u8> {
        let mut f = vec![0, 0, 0, 1, 0, 6, 0x02, 0, 0, 0, 0, 2, 0, 0];
        f.extend_from_slice(&ethertype_of(ip).to_be_bytes());
        f.extend_from_slice(ip);
        f
    }

    /// Linux cooked capture v2 (DLT_LINUX_SLL2).
    pub fn sll2(ip: &[u8]) -> Vec<u8> {
        let mut f = ethertype_of(ip).to_be_bytes().to_vec();
        f.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 0, 6]);
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0, 0]);
        f.extend_from_slice(ip);
        f
    }

    /// BSD null/loop header with address family `family`, in either byte order.
    pub fn null(family: u32, little_endian: bool, ip: &[u8]) -> Vec<u8> {
        let mut f = if little_endian {
            family.to_le_bytes().to_vec()
        } else {
            family.to_be_bytes().to_vec()
        };
        f.extend_from_slice(ip);
        f
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::testpkt::*;
    use super::{decode, IpAddr, LinkType, Packet, Proto};
    use crate::config::model::flag;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const S4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
    const D4: Ipv4Addr = Ipv4Addr::new(10, 99, 77, 1);
    const S6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);
    const D6: Ipv6Addr = Ipv6Addr::new(0xfd99, 0x77, 0, 0, 0, 0, 0, 1);

    fn tcp_pkt(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: u8, seq: u32) -> Packet {
        Packet {
            src,
            dst,
            proto: Proto::Tcp,
            sport,
            dport,
            tcp_flags: flags,
            tcp_seq: seq,
        }
    }

    fn udp_pkt(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Packet {
        Packet {
            src,
            dst,
            proto: Proto::Udp,
            sport,
            dport,
            tcp_flags: 0,
            tcp_seq: 0,
        }
    }

    fn v4_syn() -> Vec<u8> {
        ipv4(S4, D4, TCP, &tcp(40000, 7000, flag::SYN, 0xdead_beef))
    }
    fn v4_udp() -> Vec<u8> {
        ipv4(S4, D4, UDP, &udp(40001, 9000, b"knock"))
    }
    fn v6_syn() -> Vec<u8> {
        ipv6(S6, D6, TCP, &tcp(40002, 8000, flag::SYN | flag::ACK, 7))
    }
    fn v6_udp() -> Vec<u8> {
        ipv6(S6, D6, UDP, &udp(40003, 9000, b""))
    }

    fn expected() -> [(Vec<u8>, Packet); 4] {
        [
            (
                v4_syn(),
                tcp_pkt(S4.into(), D4.into(), 40000, 7000, flag::SYN, 0xdead_beef),
            ),
            (v4_udp(), udp_pkt(S4.into(), D4.into(), 40001, 9000)),
            (
                v6_syn(),
                tcp_pkt(S6.into(), D6.into(), 40002, 8000, flag::SYN | flag::ACK, 7),
            ),
            (v6_udp(), udp_pkt(S6.into(), D6.into(), 40003, 9000)),
        ]
    }

    /// Every valid frame of the tests, framed for every link type.
    fn all_frames() -> Vec<(LinkType, Vec<u8>, Packet)> {
        let mut out = Vec::new();
        for (ip, want) in expected() {
            let fam6 = ip[0] >> 4 == 6;
            out.push((LinkType::Ethernet, ether_ip(&ip), want));
            for tags in [&[0x8100][..], &[0x88a8, 0x8100], &[0x8100, 0x8100]] {
                out.push((
                    LinkType::Ethernet,
                    ether(tags, ethertype_of(&ip), &ip),
                    want,
                ));
            }
            out.push((LinkType::LinuxSll, sll(&ip), want));
            out.push((LinkType::LinuxSll2, sll2(&ip), want));
            out.push((LinkType::Raw, ip.clone(), want));
            let fams: &[u32] = if fam6 { &[10, 24, 28, 30] } else { &[2] };
            for &fam in fams {
                for le in [true, false] {
                    out.push((LinkType::Null, null(fam, le, &ip), want));
                }
            }
        }
        out
    }

    #[test]
    fn every_link_type_v4_v6_tcp_udp() {
        for (link, frame, want) in all_frames() {
            assert_eq!(decode(link, &frame), Some(want), "{link:?} {frame:02x?}");
        }
    }

    #[test]
    fn tcp_flags_and_seq_are_reported() {
        for (name, bit) in flag::NAMES {
            let ip = ipv4(S4, D4, TCP, &tcp(1, 2, bit, 42));
            let p = decode(LinkType::Raw, &ip).unwrap();
            assert_eq!((p.tcp_flags, p.tcp_seq), (bit, 42), "{name}");
        }
        let ip = ipv4(S4, D4, TCP, &tcp(1, 2, 0xff, u32::MAX));
        let p = decode(LinkType::Raw, &ip).unwrap();
        assert_eq!((p.tcp_flags, p.tcp_seq), (0xff, u32::MAX));
    }

    #[test]
    fn ethernet_other_protocols_are_ignored() {
        let ip = v4_syn();
        // ARP, a third VLAN tag, a VLAN tag announcing ARP, IPv4 ethertype with an IPv6 body.
        assert_eq!(decode(LinkType::Ethernet, &ether(&[], 0x0806, &ip)), None);
        let three = ether(&[0x88a8, 0x8100, 0x8100], 0x0800, &ip);
        assert_eq!(decode(LinkType::Ethernet, &three), None);
        assert_eq!(
            decode(LinkType::Ethernet, &ether(&[0x8100], 0x0806, &ip)),
            None
        );
        assert_eq!(
            decode(LinkType::Ethernet, &ether(&[], 0x0800, &v6_syn())),
            None
        );
        assert_eq!(decode(LinkType::Ethernet, &ether(&[], 0x86dd, &ip)), None);
        // SLL with a non-IP protocol, Null with an unknown family, Raw with version 5.
        let mut f = sll(&ip);
        f[14..16].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(decode(LinkType::LinuxSll, &f), None);
        assert_eq!(decode(LinkType::Null, &null(7, true, &ip)), None);
        assert_eq!(decode(LinkType::Null, &null(10, true, &ip)), None);
        let mut r = ip.clone();
        r[0] = 0x55;
        assert_eq!(decode(LinkType::Raw, &r), None);
    }

    #[test]
    fn ipv4_options_and_padding() {
        let opts = [1u8, 1, 1, 0, 1, 1, 1, 0]; // NOPs + EOL
        let ip = ipv4_opts(S4, D4, TCP, 0, &opts, &tcp(5, 6, flag::SYN, 1));
        let p = decode(LinkType::Raw, &ip).unwrap();
        assert_eq!((p.sport, p.dport, p.tcp_flags), (5, 6, flag::SYN));
        // Ethernet pads short frames: bytes beyond the IP total length are ignored.
        let mut padded = v4_udp();
        padded.extend_from_slice(&[0; 10]);
        assert_eq!(
            decode(LinkType::Raw, &padded),
            decode(LinkType::Raw, &v4_udp())
        );
    }

    #[test]
    fn ipv4_malformed() {
        let good = v4_syn();
        let bad = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut v = good.clone();
            f(&mut v);
            decode(LinkType::Raw, &v)
        };
        assert_eq!(bad(&|v| v[0] = 0x44), None, "IHL 4");
        assert_eq!(bad(&|v| v[0] = 0x4f), None, "IHL beyond data");
        assert_eq!(
            bad(&|v| v[2..4].copy_from_slice(&[0, 19])),
            None,
            "total < IHL"
        );
        assert_eq!(
            bad(&|v| v[2..4].copy_from_slice(&[0, 30])),
            None,
            "total cuts TCP"
        );
        assert_eq!(bad(&|v| v[9] = 1), None, "ICMP");
        assert_eq!(bad(&|v| v[32] = 0x40), None, "TCP data offset 4");
        // Total length larger than captured (snaplen): the headers are there, so decode.
        assert!(bad(&|v| v[2..4].copy_from_slice(&[5, 0])).is_some());
    }

    #[test]
    fn ipv4_fragments() {
        let l4 = tcp(1, 7000, flag::SYN, 1);
        // First fragment (MF set, offset 0) and DF are fine.
        for frag in [0x2000, 0x4000] {
            let ip = ipv4_opts(S4, D4, TCP, frag, &[], &l4);
            assert!(decode(LinkType::Raw, &ip).is_some(), "{frag:#x}");
        }
        // Any non-zero offset is dropped, MF or not.
        for frag in [0x0001, 0x2001, 0x1fff, 0x0100] {
            let ip = ipv4_opts(S4, D4, TCP, frag, &[], &l4);
            assert_eq!(decode(LinkType::Raw, &ip), None, "{frag:#x}");
        }
    }

    #[test]
    fn ipv6_extension_headers() {
        let l4 = tcp(3, 8000, flag::SYN, 9);
        let want = tcp_pkt(S6.into(), D6.into(), 3, 8000, flag::SYN, 9);
        let chains: &[&[Ext]] = &[
            &[Ext::HopByHop(0)],
            &[Ext::DstOpts(1)],
            &[Ext::Routing(2)],
            &[Ext::Fragment {
                offset: 0,
                more: true,
            }],
            &[Ext::Ah(4)],
            &[
                Ext::HopByHop(0),
                Ext::DstOpts(0),
                Ext::Routing(0),
                Ext::Fragment {
                    offset: 0,
                    more: false,
                },
                Ext::Ah(1),
                Ext::DstOpts(3),
            ],
            &[Ext::DstOpts(0); 8],
        ];
        for chain in chains {
            let ip = ipv6_ext(S6, D6, chain, TCP, &l4);
            assert_eq!(decode(LinkType::Raw, &ip), Some(want), "{ip:02x?}");
            let ip = ipv6_ext(S6, D6, chain, UDP, &udp(3, 8000, b"x"));
            assert_eq!(
                decode(LinkType::Raw, &ip).map(|p| p.proto),
                Some(Proto::Udp)
            );
        }
        // Too many headers, a non-first fragment, no next header, ICMPv6, ESP.
        let too_many = ipv6_ext(S6, D6, &[Ext::DstOpts(0); 9], TCP, &l4);
        assert_eq!(decode(LinkType::Raw, &too_many), None);
        for offset in [1, 0x1fff] {
            for more in [false, true] {
                let frag = ipv6_ext(S6, D6, &[Ext::Fragment { offset, more }], TCP, &l4);
                assert_eq!(decode(LinkType::Raw, &frag), None);
            }
        }
        for proto in [59, 58, 50] {
            let ip = ipv6_ext(S6, D6, &[Ext::HopByHop(0)], proto, &l4);
            assert_eq!(decode(LinkType::Raw, &ip), None, "{proto}");
        }
    }

    #[test]
    fn ipv6_malformed() {
        let good = v6_syn();
        let bad = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut v = good.clone();
            f(&mut v);
            decode(LinkType::Raw, &v)
        };
        assert_eq!(bad(&|v| v[0] = 0x40), None, "version 4 in a v6 frame");
        assert_eq!(
            bad(&|v| v[4..6].copy_from_slice(&[0, 8])),
            None,
            "payload cuts TCP"
        );
        // An extension header whose length runs past the payload.
        let mut v = ipv6_ext(S6, D6, &[Ext::DstOpts(0)], TCP, &tcp(1, 2, 0, 0));
        v[41] = 200;
        assert_eq!(decode(LinkType::Raw, &v), None);
        // Jumbogram-style payload length 0: use the captured bytes.
        assert!(bad(&|v| v[4..6].copy_from_slice(&[0, 0])).is_some());
    }

    #[test]
    fn every_truncation_is_safe_and_full_headers_are_needed() {
        for (link, frame, want) in all_frames() {
            for cut in 0..frame.len() {
                // Must not panic; a truncated frame never yields a different packet.
                if let Some(p) = decode(link, &frame[..cut]) {
                    assert_eq!(p, want, "{link:?} cut at {cut}");
                }
            }
        }
        // Transport headers are required in full.
        let tcp_full = v4_syn();
        assert_eq!(decode(LinkType::Raw, &tcp_full[..39]), None);
        let udp_full = ipv4(S4, D4, UDP, &udp(1, 2, b""));
        assert_eq!(decode(LinkType::Raw, &udp_full[..27]), None);
        assert!(decode(LinkType::Raw, &udp_full).is_some());
    }

    #[test]
    fn random_buffers_never_panic() {
        // Tiny LCG (Numerical Recipes constants); deterministic, no dependencies.
        let mut state: u32 = 0x1234_5678;
        let mut next = move || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as u8
        };
        let links = [
            LinkType::Ethernet,
            LinkType::LinuxSll,
            LinkType::LinuxSll2,
            LinkType::Raw,
            LinkType::Null,
        ];
        let templates: Vec<Vec<u8>> = all_frames().into_iter().map(|(_, f, _)| f).collect();
        for i in 0..5000usize {
            let len = usize::from(next()) % 128;
            let mut buf: Vec<u8> = (0..len).map(|_| next()).collect();
            for link in links {
                let _ = decode(link, &buf);
            }
            // Mutate real frames too, so the random bytes get past the link layer.
            let t = &templates[i % templates.len()];
            buf.clone_from(t);
            for _ in 0..1 + usize::from(next()) % 4 {
                let at = usize::from(next()) % buf.len();
                buf[at] = next();
            }
            for link in links {
                let _ = decode(link, &buf);
            }
        }
    }
}
