//! Walking the netlink messages packed in one datagram read from the socket.
//!
//! Each message starts with a 16-byte `nlmsghdr` (length, type, flags, seq, pid) in host byte
//! order and is padded to 4 bytes. The walk stops at the first header that is short, claims
//! less than a header, or runs past the datagram: nothing after a bad length can be trusted.

/// Size of `struct nlmsghdr`.
pub const HDR_LEN: usize = 16;

/// One message of a datagram: its type, sequence number and bytes (header included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msg<'a> {
    pub ty: u16,
    pub seq: u32,
    pub bytes: &'a [u8],
}

impl Msg<'_> {
    /// The host-order u32 at byte `i` of the message, 0 when the message is too short.
    pub fn u32_at(&self, i: usize) -> u32 {
        u32_at(self.bytes, i)
    }
}

fn u32_at(buf: &[u8], i: usize) -> u32 {
    buf.get(i..i.saturating_add(4))
        .and_then(|b| b.try_into().ok())
        .map(u32::from_ne_bytes)
        .unwrap_or(0)
}

/// The messages of `buf`, in order.
pub fn messages(buf: &[u8]) -> Messages<'_> {
    Messages { buf, at: 0 }
}

/// Iterator returned by [`messages`].
pub struct Messages<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Messages<'a> {
    type Item = Msg<'a>;

    fn next(&mut self) -> Option<Msg<'a>> {
        let rest = self.buf.get(self.at..)?;
        if rest.len() < HDR_LEN {
            return None;
        }
        let len = u32_at(rest, 0) as usize;
        if len < HDR_LEN || len > rest.len() {
            self.at = self.buf.len();
            return None;
        }
        let bytes = &rest[..len];
        self.at = self.at.saturating_add((len + 3) & !3);
        Some(Msg {
            ty: u16::from_ne_bytes([bytes[4], bytes[5]]),
            seq: u32_at(bytes, 8),
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(len: u32, ty: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend(len.to_ne_bytes());
        m.extend(ty.to_ne_bytes());
        m.extend(0u16.to_ne_bytes());
        m.extend(seq.to_ne_bytes());
        m.extend(0u32.to_ne_bytes());
        m.extend(body);
        m
    }

    #[test]
    fn walks_padded_messages_in_order() {
        let mut buf = msg(18, 2, 7, &[1, 2]);
        buf.extend([0, 0]); // padding to 20
        buf.extend(msg(16, 3, 8, &[]));
        let got: Vec<_> = messages(&buf)
            .map(|m| (m.ty, m.seq, m.bytes.len()))
            .collect();
        assert_eq!(got, vec![(2, 7, 18), (3, 8, 16)]);
    }

    #[test]
    fn short_buffer_yields_nothing() {
        assert_eq!(messages(&[]).count(), 0);
        assert_eq!(messages(&msg(16, 2, 1, &[])[..15]).count(), 0);
    }

    #[test]
    fn length_below_header_stops_the_walk() {
        let mut buf = msg(15, 2, 1, &[]);
        buf.extend(msg(16, 3, 2, &[]));
        assert_eq!(messages(&buf).count(), 0);
        assert_eq!(messages(&msg(0, 2, 1, &[])).count(), 0);
    }

    #[test]
    fn truncated_or_oversized_length_stops_the_walk() {
        let mut buf = msg(16, 3, 1, &[]);
        buf.extend(msg(40, 2, 2, &[0; 8])); // claims 40, has 24
        let got: Vec<_> = messages(&buf).map(|m| m.seq).collect();
        assert_eq!(got, vec![1]);
        assert_eq!(messages(&msg(u32::MAX, 2, 1, &[])).count(), 0);
    }

    #[test]
    fn padding_past_the_end_ends_cleanly() {
        let buf = msg(17, 2, 1, &[9]); // padded length 20 > 17 bytes present
        let got: Vec<_> = messages(&buf).map(|m| m.bytes.len()).collect();
        assert_eq!(got, vec![17]);
    }

    #[test]
    fn u32_at_past_the_message_is_zero() {
        let buf = msg(20, 2, 1, &[5, 0, 0, 0]);
        let m = messages(&buf).next().expect("one message");
        assert_eq!(m.u32_at(16), u32::from_ne_bytes([5, 0, 0, 0]));
        assert_eq!(m.u32_at(18), 0);
        assert_eq!(m.u32_at(usize::MAX), 0);
    }
}
