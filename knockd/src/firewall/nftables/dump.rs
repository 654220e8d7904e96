//! Reading the allow sets back over netlink: one `NFT_MSG_GETSETELEM` dump per set, answered by
//! `NFT_MSG_NEWSETELEM` messages whose elements carry their key, timeout and the time the
//! kernel has left (`NFTA_SET_ELEM_EXPIRATION`), then `NLMSG_DONE`. Pure encoding and decoding;
//! the socket is in [`super::transport`]. What `knockctl list` shows for nftables grants.

use super::listing::KernelElem;
use super::netlink::{
    cstr, Writer, NFNL_SUBSYS_NFTABLES, NFPROTO_INET, NFTA_DATA_VALUE, NFTA_LIST_ELEM,
    NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_SET_ELEM_LIST_SET,
    NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_TIMEOUT, NFT_MSG_NEWSETELEM, NLMSG_ERROR,
    NLM_F_REQUEST,
};
use super::{table, Elem};
use crate::config::Proto;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

const NLM_F_DUMP: u16 = 0x300;
const NLMSG_DONE: u16 = 3;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
/// Attribute type without the nested / byte-order flags.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// The dump request for the elements of `set` in table `inet knockd`.
pub fn request(set: &str, seq: u32) -> Vec<u8> {
    let mut w = Writer { buf: Vec::new() };
    let m = w.begin_msg(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        NFPROTO_INET,
        0,
    );
    w.attr(NFTA_SET_ELEM_LIST_TABLE, &cstr(table()));
    w.attr(NFTA_SET_ELEM_LIST_SET, &cstr(set));
    w.end(m);
    w.buf
}

/// What one datagram of a dump said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// More datagrams follow.
    More,
    /// `NLMSG_DONE`: the dump is complete.
    Done,
    /// The kernel refused the dump (errno; `ENOENT`: no such table or set).
    Error(i32),
}

/// Attributes `(type, payload)` in `buf`; stops at the first malformed one.
pub(super) fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return None;
        }
        let payload = &buf[4..len];
        buf = &buf[((len + 3) & !3).min(buf.len())..];
        Some((ty, payload))
    })
}

fn be64_ms(b: &[u8]) -> Option<Duration> {
    let ms = u64::from_be_bytes(b.try_into().ok()?);
    Some(Duration::from_millis(ms))
}

/// A set key (`addr . proto . port`, each part padded to 4 bytes) back into an element.
pub fn elem_of_key(k: &[u8]) -> Option<Elem> {
    let (addr, rest): (IpAddr, &[u8]) = match k.len() {
        12 => (
            Ipv4Addr::from(<[u8; 4]>::try_from(&k[..4]).ok()?).into(),
            &k[4..],
        ),
        24 => (
            Ipv6Addr::from(<[u8; 16]>::try_from(&k[..16]).ok()?).into(),
            &k[16..],
        ),
        _ => return None,
    };
    let proto = match rest[0] {
        6 => Proto::Tcp,
        17 => Proto::Udp,
        _ => return None,
    };
    let port = u16::from_be_bytes([rest[4], rest[5]]);
    Some(Elem { addr, proto, port })
}

fn element(list_elem: &[u8]) -> Option<KernelElem> {
    let mut elem = None;
    let mut timeout = None;
    let mut expires = None;
    for (ty, p) in attrs(list_elem) {
        match ty {
            NFTA_SET_ELEM_KEY => {
                elem = attrs(p)
                    .find(|(t, _)| *t == NFTA_DATA_VALUE)
                    .and_then(|(_, v)| elem_of_key(v));
            }
            NFTA_SET_ELEM_TIMEOUT => timeout = be64_ms(p),
            NFTA_SET_ELEM_EXPIRATION => expires = be64_ms(p),
            _ => {}
        }
    }
    Some(KernelElem {
        elem: elem?,
        timeout,
        expires,
    })
}

/// Decode one datagram of the dump sent with sequence number `seq`, appending its elements to
/// `out`. Messages with another sequence number (late acks of element batches) are skipped.
pub fn decode(buf: &[u8], seq: u32, out: &mut Vec<KernelElem>) -> Part {
    for m in super::nlmsg::messages(buf) {
        if m.seq != seq {
            continue;
        }
        let (msg, len) = (m.bytes, m.bytes.len());
        match m.ty {
            NLMSG_DONE => return Part::Done,
            NLMSG_ERROR if len >= 20 => {
                let errno = -(m.u32_at(16) as i32);
                if errno != 0 {
                    return Part::Error(errno);
                }
            }
            t if t == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM && len >= 20 => {
                // nlmsghdr (16) + nfgenmsg (4), then the attributes.
                for (a, list) in attrs(&msg[20..]) {
                    if a != NFTA_SET_ELEM_LIST_ELEMENTS {
                        continue;
                    }
                    for (l, e) in attrs(list) {
                        if l == NFTA_LIST_ELEM {
                            out.extend(element(e));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Part::More
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::nftables::netlink::{key, NLA_F_NESTED};

    fn elem(a: &str, proto: Proto, port: u16) -> Elem {
        Elem {
            addr: a.parse().expect("ip"),
            proto,
            port,
        }
    }

    /// A NEWSETELEM message as the kernel sends it in a dump.
    fn newsetelem(seq: u32, elems: &[(Elem, u64, u64)]) -> Vec<u8> {
        let mut w = Writer { buf: Vec::new() };
        let m = w.begin_msg(
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM,
            0x2, // NLM_F_MULTI
            seq,
            NFPROTO_INET,
            0,
        );
        w.attr(NFTA_SET_ELEM_LIST_TABLE, &cstr(table()));
        w.attr(NFTA_SET_ELEM_LIST_SET, &cstr("allow4"));
        let list = w.nest(NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED);
        for (e, timeout, expires) in elems {
            let item = w.nest(NFTA_LIST_ELEM | NLA_F_NESTED);
            let k = w.nest(NFTA_SET_ELEM_KEY | NLA_F_NESTED);
            w.attr(NFTA_DATA_VALUE, &key(e));
            w.end_attr(k);
            w.attr(NFTA_SET_ELEM_TIMEOUT, &timeout.to_be_bytes());
            w.attr(NFTA_SET_ELEM_EXPIRATION, &expires.to_be_bytes());
            w.attr(3, &0u32.to_be_bytes()); // NFTA_SET_ELEM_FLAGS
            w.end_attr(item);
        }
        w.end_attr(list);
        w.end(m);
        w.buf
    }

    fn control(ty: u16, seq: u32, errno: i32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&20u32.to_ne_bytes());
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(&2u16.to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&errno.to_ne_bytes());
        b
    }

    #[test]
    fn request_layout() {
        let r = request("allow6", 77);
        assert_eq!(r.len(), 16 + 4 + 12 + 12);
        assert_eq!(
            u32::from_ne_bytes(r[..4].try_into().expect("4")) as usize,
            r.len()
        );
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), 0x0a0d);
        assert_eq!(u16::from_ne_bytes([r[6], r[7]]), 0x301);
        assert_eq!(u32::from_ne_bytes(r[8..12].try_into().expect("4")), 77);
        assert_eq!(&r[24..31], b"knockd\0");
        assert_eq!(&r[36..43], b"allow6\0");
    }

    #[test]
    fn decodes_elements_with_the_time_left_and_the_end() {
        let a = elem("10.0.0.12", Proto::Tcp, 22);
        let b = elem("fd99:77::2", Proto::Udp, 443);
        let mut buf = control(NLMSG_ERROR, 5, 0); // a late ack of an earlier batch
        buf.extend(newsetelem(9, &[(a, 30_000, 27_400), (b, 60_000, 59_999)]));
        buf.extend(newsetelem(8, &[(a, 1, 1)])); // another request's answer
        let mut out = Vec::new();
        assert_eq!(decode(&buf, 9, &mut out), Part::More);
        assert_eq!(
            out,
            [
                KernelElem {
                    elem: a,
                    timeout: Some(Duration::from_secs(30)),
                    expires: Some(Duration::from_millis(27_400)),
                },
                KernelElem {
                    elem: b,
                    timeout: Some(Duration::from_secs(60)),
                    expires: Some(Duration::from_millis(59_999)),
                }
            ]
        );
        assert_eq!(decode(&control(NLMSG_DONE, 9, 0), 9, &mut out), Part::Done);
        assert_eq!(
            decode(&control(NLMSG_ERROR, 9, -libc::ENOENT), 9, &mut out),
            Part::Error(libc::ENOENT)
        );
        // Truncated or garbage datagrams decode to nothing, never panic.
        let full = newsetelem(9, &[(a, 30_000, 27_400)]);
        for cut in 0..full.len() {
            let mut v = Vec::new();
            let _ = decode(&full[..cut], 9, &mut v);
        }
        assert_eq!(elem_of_key(&[1, 2, 3]), None);
        assert_eq!(elem_of_key(&[10, 0, 0, 1, 1, 0, 0, 0, 0, 22, 0, 0]), None);
    }
}
