//! The packet decoder (`knockd::packet::decode`), on every link type knockd supports.
//!
//! Input: one byte choosing the link type (modulo [`LINKS`]), then the captured frame.
//! Invariants: no panic; no allocation at all (the decoder documents itself as
//! allocation-free); and the link framing does not change the result: decoding the frame
//! equals decoding, as raw IP, the bytes this file's own (independent, naive) reading of the
//! link header says the IP packet starts at.

use knockd::packet::{decode, LinkType, Packet};

/// Link types in the order the first input byte selects them.
pub const LINKS: [LinkType; 5] = [
    LinkType::Ethernet,
    LinkType::LinuxSll,
    LinkType::LinuxSll2,
    LinkType::Raw,
    LinkType::Null,
];

/// The byte a seed file starts with for `link`.
pub fn selector(link: LinkType) -> u8 {
    LINKS.iter().position(|l| *l == link).unwrap_or(0) as u8
}

pub fn check(data: &[u8]) {
    let Some((&sel, frame)) = data.split_first() else {
        return;
    };
    let link = LINKS[usize::from(sel) % LINKS.len()];
    let got = crate::alloc::within("packet::decode", 0, || decode(link, frame));
    assert_eq!(
        got,
        expected(link, frame),
        "{link:?} framing changed the decoded packet"
    );
}

/// What decoding must give: the raw-IP decode of the bytes after the link header, when the
/// link header announces the IP version the packet carries.
fn expected(link: LinkType, frame: &[u8]) -> Option<Packet> {
    let be16 = |at: usize| -> Option<u16> {
        Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]))
    };
    let (version, ip) = match link {
        LinkType::Raw => return decode(LinkType::Raw, frame),
        LinkType::Ethernet => {
            // Up to two 802.1Q / 802.1ad tags.
            let mut at = 12;
            for _ in 0..2 {
                match be16(at)? {
                    0x8100 | 0x88a8 => at += 4,
                    _ => break,
                }
            }
            (ethertype_version(be16(at)?)?, frame.get(at + 2..)?)
        }
        LinkType::LinuxSll => (ethertype_version(be16(14)?)?, frame.get(16..)?),
        LinkType::LinuxSll2 => (ethertype_version(be16(0)?)?, frame.get(20..)?),
        LinkType::Null => {
            let fam = frame.get(..4)?;
            let le = u32::from_le_bytes([fam[0], fam[1], fam[2], fam[3]]);
            let be = u32::from_be_bytes([fam[0], fam[1], fam[2], fam[3]]);
            let version = if le == 2 || be == 2 {
                4
            } else if [10, 24, 28, 30].iter().any(|f| *f == le || *f == be) {
                6
            } else {
                return None;
            };
            (version, frame.get(4..)?)
        }
    };
    if ip.first()? >> 4 != version {
        return None;
    }
    decode(LinkType::Raw, ip)
}

fn ethertype_version(ethertype: u16) -> Option<u8> {
    match ethertype {
        0x0800 => Some(4),
        0x86dd => Some(6),
        _ => None,
    }
}
