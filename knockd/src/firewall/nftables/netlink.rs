//! Element changes as one nf_tables netlink batch (BATCH_BEGIN, NEWSETELEM/DELSETELEM...,
//! BATCH_END): the kernel applies all of it or none of it. Pure encoding and ack decoding; the
//! socket is in [`super::transport`].
//!
//! Layout (include/uapi/linux/netfilter/nf_tables.h, nfnetlink.h): every message is a
//! `nlmsghdr` + `nfgenmsg` + attributes. A key of type `ipv4_addr . inet_proto . inet_service`
//! is the concatenation of its parts, each padded to 4 bytes (nft's register layout): address,
//! protocol (1 byte + 3 zero), port (2 bytes big-endian + 2 zero).

use super::{table, Elem, ElemOp};
use crate::config::Proto;
use std::net::IpAddr;

pub(super) const NLMSG_ERROR: u16 = 2;
pub(super) const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
pub(super) const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub(super) const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
pub(super) const NFPROTO_INET: u8 = 1;
pub(super) const NLA_F_NESTED: u16 = 0x8000;
pub(super) const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub(super) const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub(super) const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub(super) const NFTA_LIST_ELEM: u16 = 1;
pub(super) const NFTA_SET_ELEM_KEY: u16 = 1;
pub(super) const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
pub(super) const NFTA_DATA_VALUE: u16 = 1;

/// A batch ready to send, with the sequence number whose ack ends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub bytes: Vec<u8>,
    /// Sequence numbers of the messages in the batch (begin and end excluded).
    pub first_seq: u32,
    pub last_seq: u32,
}

/// The set key of an element.
pub fn key(e: &Elem) -> Vec<u8> {
    let mut k = Vec::with_capacity(24);
    match e.addr {
        IpAddr::V4(a) => k.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => k.extend_from_slice(&a.octets()),
    }
    let proto: u8 = match e.proto {
        Proto::Tcp => 6,
        Proto::Udp => 17,
    };
    k.extend_from_slice(&[proto, 0, 0, 0]);
    k.extend_from_slice(&e.port.to_be_bytes());
    k.extend_from_slice(&[0, 0]);
    k
}

pub(super) struct Writer {
    pub(super) buf: Vec<u8>,
}

impl Writer {
    fn align(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }
    /// Start a message; returns its offset for `end_msg`.
    pub(super) fn begin_msg(
        &mut self,
        ty: u16,
        flags: u16,
        seq: u32,
        family: u8,
        res_id: u16,
    ) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        self.buf.push(family);
        self.buf.push(0); // NFNETLINK_V0
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        at
    }
    pub(super) fn end(&mut self, at: usize) {
        let len = u32::try_from(self.buf.len() - at).unwrap_or(u32::MAX);
        self.buf[at..at + 4].copy_from_slice(&len.to_ne_bytes());
    }
    pub(super) fn end_attr(&mut self, at: usize) {
        let len = u16::try_from(self.buf.len() - at).unwrap_or(u16::MAX);
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        self.align();
    }
    pub(super) fn attr(&mut self, ty: u16, data: &[u8]) {
        let at = self.nest(ty & !NLA_F_NESTED);
        self.buf.extend_from_slice(data);
        self.end_attr(at);
    }
    pub(super) fn nest(&mut self, ty: u16) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        at
    }
    fn setelem(&mut self, ty: u16, seq: u32, ack: bool, e: &Elem, timeout_ms: Option<u64>) {
        let mut flags = NLM_F_REQUEST;
        if ty == NFT_MSG_NEWSETELEM {
            flags |= NLM_F_CREATE;
        }
        if ack {
            flags |= NLM_F_ACK;
        }
        let msg = self.begin_msg(
            (NFNL_SUBSYS_NFTABLES << 8) | ty,
            flags,
            seq,
            NFPROTO_INET,
            0,
        );
        self.attr(NFTA_SET_ELEM_LIST_TABLE, &cstr(table()));
        self.attr(NFTA_SET_ELEM_LIST_SET, &cstr(e.set()));
        let list = self.nest(NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED);
        let item = self.nest(NFTA_LIST_ELEM | NLA_F_NESTED);
        let k = self.nest(NFTA_SET_ELEM_KEY | NLA_F_NESTED);
        self.attr(NFTA_DATA_VALUE, &key(e));
        self.end_attr(k);
        if let Some(ms) = timeout_ms {
            self.attr(NFTA_SET_ELEM_TIMEOUT, &ms.to_be_bytes());
        }
        self.end_attr(item);
        self.end_attr(list);
        self.end(msg);
    }
}

pub(super) fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// Encode `ops` as one transaction. Only the last message asks for an ack: the kernel reports
/// every failing message anyway, and on any failure it applies none of the batch.
pub fn encode(ops: &[ElemOp], first_seq: u32) -> Batch {
    let mut w = Writer { buf: Vec::new() };
    let mut seq = first_seq;
    let begin = w.begin_msg(
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
    );
    w.end(begin);
    seq = seq.wrapping_add(1);
    let msg_first = seq;
    let mut msgs: Vec<(u16, Elem, Option<u64>)> = Vec::new();
    for op in ops {
        match op {
            ElemOp::Put { elem, timeout } => {
                let ms = u64::try_from(timeout.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1);
                msgs.push((NFT_MSG_NEWSETELEM, *elem, Some(ms)));
                msgs.push((NFT_MSG_DELSETELEM, *elem, None));
                msgs.push((NFT_MSG_NEWSETELEM, *elem, Some(ms)));
            }
            ElemOp::Remove { elem } => {
                msgs.push((NFT_MSG_NEWSETELEM, *elem, Some(1000)));
                msgs.push((NFT_MSG_DELSETELEM, *elem, None));
            }
        }
    }
    let n = msgs.len();
    for (i, (ty, e, t)) in msgs.into_iter().enumerate() {
        w.setelem(ty, seq, i + 1 == n, &e, t);
        seq = seq.wrapping_add(1);
    }
    let last = seq.wrapping_sub(1);
    let end = w.begin_msg(
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
    );
    w.end(end);
    Batch {
        bytes: w.buf,
        first_seq: msg_first,
        last_seq: last,
    }
}

/// One `NLMSG_ERROR` reply: the sequence number it answers and the errno (0 = ack).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub seq: u32,
    pub errno: i32,
}

/// The acks and errors in a datagram read from the socket.
pub fn decode_acks(buf: &[u8]) -> Vec<Ack> {
    let mut out = Vec::new();
    for m in super::nlmsg::messages(buf) {
        if m.ty == NLMSG_ERROR && m.bytes.len() >= 20 {
            let errno = m.u32_at(16) as i32;
            // The original request's header follows the errno: its seq is what is answered.
            let seq = m.u32_at(20 + 8);
            out.push(Ack { seq, errno: -errno });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn elem(a: &str, proto: Proto, port: u16) -> Elem {
        Elem {
            addr: a.parse().expect("ip"),
            proto,
            port,
        }
    }

    #[test]
    fn keys_are_padded_to_registers() {
        assert_eq!(
            key(&elem("10.0.0.12", Proto::Tcp, 22)),
            [10, 0, 0, 12, 6, 0, 0, 0, 0, 22, 0, 0]
        );
        let k6 = key(&elem("fd99:77::2", Proto::Udp, 443));
        assert_eq!(k6.len(), 24);
        assert_eq!(&k6[16..], &[17, 0, 0, 0, 1, 187, 0, 0]);
    }

    #[test]
    fn batch_layout() {
        let ops = [
            ElemOp::Put {
                elem: elem("10.0.0.12", Proto::Tcp, 22),
                timeout: Duration::from_secs(30),
            },
            ElemOp::Remove {
                elem: elem("10.0.0.13", Proto::Tcp, 22),
            },
        ];
        let b = encode(&ops, 100);
        assert_eq!((b.first_seq, b.last_seq), (101, 105));
        // Walk the messages: begin, 5 set-element messages, end; each 4-byte aligned.
        let mut at = 0;
        let mut types = Vec::new();
        let mut flags = Vec::new();
        while at < b.bytes.len() {
            let len = u32::from_ne_bytes(b.bytes[at..at + 4].try_into().expect("4")) as usize;
            assert_eq!(len % 4, 0);
            types.push(u16::from_ne_bytes([b.bytes[at + 4], b.bytes[at + 5]]));
            flags.push(u16::from_ne_bytes([b.bytes[at + 6], b.bytes[at + 7]]));
            at += len;
        }
        assert_eq!(at, b.bytes.len());
        assert_eq!(types, [0x10, 0x0a0c, 0x0a0e, 0x0a0c, 0x0a0c, 0x0a0e, 0x11]);
        // Only the last element message asks for an ack.
        assert_eq!(flags, [1, 0x401, 1, 0x401, 0x401, 5, 1]);
        // The first element message carries the table, set, key and a 30000 ms timeout.
        let first = &b.bytes[20..];
        let hex: String = first[..96].iter().map(|x| format!("{x:02x}")).collect();
        insta::assert_snapshot!(hex);
    }

    #[test]
    fn decodes_acks_and_errors() {
        let mut buf = Vec::new();
        for (seq, errno) in [(7u32, 0i32), (9, -2)] {
            buf.extend_from_slice(&36u32.to_ne_bytes());
            buf.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            buf.extend_from_slice(&0u16.to_ne_bytes());
            buf.extend_from_slice(&seq.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&errno.to_ne_bytes());
            // echoed request header
            buf.extend_from_slice(&20u32.to_ne_bytes());
            buf.extend_from_slice(&0x0a0cu16.to_ne_bytes());
            buf.extend_from_slice(&0u16.to_ne_bytes());
            buf.extend_from_slice(&seq.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
        }
        assert_eq!(
            decode_acks(&buf),
            [Ack { seq: 7, errno: 0 }, Ack { seq: 9, errno: 2 }]
        );
    }
}
