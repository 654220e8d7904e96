//! Packet decoding: captured bytes in, an optional knock out. Pure; never panics.
//! (Implementation: see `decode`.)

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
