//! The knock-ipc frame decoder: bytes from a control-socket peer, cut into length-prefixed
//! frames (`knock_ipc::codec::frame_codec`), each decoded (`knock_ipc::codec::decode`) both as
//! the daemon reads it (`ClientMsg`) and as a client reads it (`ServerMsg`).
//!
//! Invariants: no panic; a length header over `MAX_FRAME` is an error, never a buffer; memory
//! bounded by [`memory_limit`] (as documented at `knock_ipc::codec::DECODE_MEMORY_FACTOR`); every message that
//! decodes encodes again, within `MAX_FRAME`, to bytes that decode to the same message.

use bytes::BytesMut;
use knock_ipc::codec::{
    decode, encode, frame_codec, DECODE_MEMORY_FACTOR, DECODE_PREALLOC_LIMIT, MAX_FRAME,
};
use knock_ipc::protocol::{ClientMsg, ServerMsg};
use tokio_util::codec::Decoder;

/// Peak bytes for `len` bytes received: the receive buffer, the body reserved for the
/// announced length (at most `MAX_FRAME`, whatever arrives), plus what knock-ipc documents for
/// decoding one frame of at most `len` bytes (sequence pre-allocation, then the message).
pub fn memory_limit(len: usize) -> usize {
    2 * len + MAX_FRAME + DECODE_PREALLOC_LIMIT + DECODE_MEMORY_FACTOR * len + (64 << 10)
}

pub fn check(data: &[u8]) {
    crate::alloc::within("knock-ipc frame decoding", memory_limit(data.len()), || {
        decode_stream(data)
    });
}

fn decode_stream(data: &[u8]) {
    let mut codec = frame_codec();
    let mut buf = BytesMut::from(data);
    loop {
        let announced = buf
            .get(..4)
            .map(|h| u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize);
        match codec.decode(&mut buf) {
            Ok(Some(frame)) => {
                assert!(frame.len() <= MAX_FRAME, "a frame of {} bytes", frame.len());
                round_trip::<ClientMsg>(&frame);
                round_trip::<ServerMsg>(&frame);
            }
            Ok(None) => {
                if let Some(n) = announced {
                    assert!(n <= MAX_FRAME, "a {n}-byte length header was not refused");
                }
                return;
            }
            Err(_) => {
                let n = announced.unwrap_or(0);
                assert!(n > MAX_FRAME, "refused a {n}-byte frame");
                return;
            }
        }
    }
}

fn round_trip<T>(frame: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let Ok(msg) = decode::<T>(frame) else {
        return;
    };
    let bytes = match encode(&msg) {
        Ok(b) => b,
        Err(e) => panic!("{msg:?} decoded but does not encode: {e}"),
    };
    assert!(bytes.len() <= MAX_FRAME);
    match decode::<T>(&bytes) {
        Ok(again) => assert_eq!(again, msg, "encode/decode changed the message"),
        Err(e) => panic!("{msg:?} encoded to bytes that do not decode: {e}"),
    }
}
