//! All encoding lives here: bincode 1.3.3 (see deny.toml, RUSTSEC-2025-0141: unmaintained,
//! complete, pinned on purpose) inside length-prefixed frames.
//!
//! Frame: u32 big-endian payload length, then the payload. The length is checked against
//! [`MAX_FRAME`] before any buffer is allocated, on every frame. bincode itself runs with the
//! same limit on the bytes it reads; what a frame can make the receiver allocate is bounded
//! as documented at [`DECODE_PREALLOC_LIMIT`].

use bincode::Options;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Framed, FramedRead, FramedWrite, LengthDelimitedCodec};

/// Largest frame either side accepts (1 MiB: thousands of grants).
pub const MAX_FRAME: usize = 1 << 20;

/// Memory a peer can make the receiver allocate:
/// - as soon as a 4-byte header announcing `n` bytes (at most [`MAX_FRAME`]) arrives, the
///   frame codec reserves `n` bytes for the body;
/// - decoding a frame pre-allocates each sequence for the length it announces, capped by serde
///   at 1 MiB per sequence; our messages nest at most two sequences (doors → their knocks), so
///   at most [`DECODE_PREALLOC_LIMIT`] before the frame runs out of bytes;
/// - a message that does decode takes at most `DECODE_MEMORY_FACTOR * n` bytes (the in-memory form is
///   larger than the varint encoding).
///
/// So one connection costs at most about 3 MiB plus the decoded message, whatever it sends.
/// Checked by the `frame` fuzz target (knock-fuzz/src/frame.rs), which found the first two
/// (inputs kept in fuzz/regressions/frame/).
pub const DECODE_PREALLOC_LIMIT: usize = 2 << 20;

/// A decoded message takes at most this many bytes per byte of its frame (see
/// [`DECODE_PREALLOC_LIMIT`]).
pub const DECODE_MEMORY_FACTOR: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("message too large to send ({0} bytes, max {MAX_FRAME})")]
    TooLarge(usize),
    #[error("connection closed")]
    Closed,
}

fn options() -> impl Options {
    bincode::DefaultOptions::new().with_limit(MAX_FRAME as u64)
}

pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    let bytes = options()
        .serialize(msg)
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if bytes.len() > MAX_FRAME {
        return Err(CodecError::TooLarge(bytes.len()));
    }
    Ok(bytes)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    options()
        .deserialize(bytes)
        .map_err(|e| CodecError::Malformed(e.to_string()))
}

/// The frame codec both sides use.
pub fn frame_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

/// Largest client → daemon message the daemon accepts. Requests are a few dozen bytes; a
/// small limit bounds what a connection can make the daemon buffer (the frame decoder
/// reserves a frame's announced length as soon as it has read the header).
pub const MAX_REQUEST_FRAME: usize = 16 << 10;

/// The reading half of a connection, with its own frame limit.
pub struct Reader<R> {
    framed: FramedRead<R, LengthDelimitedCodec>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// Frames longer than `max_frame` are refused before their body is read.
    pub fn new(read: R, max_frame: usize) -> Self {
        let mut codec = frame_codec();
        codec.set_max_frame_length(max_frame.min(MAX_FRAME));
        Reader {
            framed: FramedRead::new(read, codec),
        }
    }

    /// Next message (cancel-safe: a partial frame stays buffered); `Closed` at a clean end.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<T, CodecError> {
        match self.framed.next().await {
            Some(Ok(frame)) => decode(&frame),
            Some(Err(e)) => Err(CodecError::Io(e)),
            None => Err(CodecError::Closed),
        }
    }

    /// Bytes of a frame received but not complete yet (0 between frames).
    pub fn buffered(&self) -> usize {
        self.framed.read_buffer().len()
    }
}

/// The writing half of a connection.
pub struct Writer<W> {
    framed: FramedWrite<W, LengthDelimitedCodec>,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    pub fn new(write: W) -> Self {
        Writer {
            framed: FramedWrite::new(write, frame_codec()),
        }
    }

    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), CodecError> {
        let bytes = encode(msg)?;
        self.framed.send(Bytes::from(bytes)).await?;
        Ok(())
    }
}

/// One whole frame carrying `msg` (length header included), for a best-effort
/// non-blocking write.
pub fn frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    let body = encode(msg)?;
    let len = u32::try_from(body.len()).map_err(|_| CodecError::TooLarge(body.len()))?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// A framed, typed connection.
pub struct Connection<S> {
    framed: Framed<S, LengthDelimitedCodec>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub fn new(stream: S) -> Self {
        Connection {
            framed: Framed::new(stream, frame_codec()),
        }
    }

    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), CodecError> {
        let bytes = encode(msg)?;
        self.framed.send(Bytes::from(bytes)).await?;
        Ok(())
    }

    /// Next message; `Closed` at a clean end of stream. An oversize length header is an
    /// `Io(InvalidData)` error raised before reading the body.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<T, CodecError> {
        match self.framed.next().await {
            Some(Ok(frame)) => decode(&frame),
            Some(Err(e)) => Err(CodecError::Io(e)),
            None => Err(CodecError::Closed),
        }
    }

    pub fn get_ref(&self) -> &S {
        self.framed.get_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::*;
    use tokio::io::AsyncWriteExt;

    fn samples() -> Vec<ServerMsg> {
        let grant = GrantInfo {
            door: "openSSH".into(),
            addr: "10.0.0.12".parse().expect("ip"),
            opened: "22/tcp (INPUT)".into(),
            opened_at_unix_ms: 1_790_000_000_000,
            expires_in_ms: Some(30_000),
            closes: "native rule delete".into(),
            refreshes: 0,
            kernel_expires_in_ms: Some(29_500),
            closing: true,
            close_error: Some("xtables lock held".into()),
            client: None,
        };
        vec![
            ServerMsg::Hello {
                version: PROTOCOL_VERSION,
                daemon_version: "0.1.0".into(),
            },
            ServerMsg::Rejected {
                reason: "no".into(),
            },
            ServerMsg::Response {
                response: Response::Grants {
                    grants: vec![grant.clone()],
                    total: 20_000,
                },
            },
            ServerMsg::Response {
                response: Response::Status {
                    status: Status::default(),
                },
            },
            ServerMsg::Event {
                event: Event {
                    at_unix_ms: 1,
                    kind: EventKind::GrantAdded { grant },
                },
            },
            ServerMsg::Event {
                event: Event {
                    at_unix_ms: 2,
                    kind: EventKind::Stage {
                        addr: "fd99:77::2".parse().expect("ip"),
                        door: "d".into(),
                        stage: 2,
                        of: 3,
                    },
                },
            },
        ]
    }

    #[test]
    fn round_trips() {
        for m in samples() {
            let b = encode(&m).expect("encode");
            assert_eq!(decode::<ServerMsg>(&b).expect("decode"), m);
        }
        let c = ClientMsg::Request {
            request: Request::Revoke {
                addr: "10.0.0.12".parse().expect("ip"),
                door: Some("x".into()),
            },
        };
        assert_eq!(
            decode::<ClientMsg>(&encode(&c).expect("enc")).expect("dec"),
            c
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            &b""[..],
            b"\xff\xff\xff\xff",
            b"\x07",
            &[0x01, 0xfc, 0xff, 0xff, 0xff, 0x7f],
        ] {
            assert!(decode::<ClientMsg>(bytes).is_err());
        }
        // A Vec length claiming 2^60 elements must not allocate.
        let mut evil = encode(&Response::Grants {
            grants: vec![],
            total: 0,
        })
        .expect("enc");
        evil.truncate(1);
        evil.extend_from_slice(&[0xff, 0, 0, 0, 0, 0, 0, 0, 0x10]);
        assert!(decode::<Response>(&evil).is_err());
    }

    #[tokio::test]
    async fn huge_length_header_is_refused_before_allocating() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut conn = Connection::new(a);
        b.write_all(&u32::MAX.to_be_bytes()).await.expect("write");
        let err = conn.recv::<ClientMsg>().await.expect_err("must refuse");
        assert!(
            matches!(err, CodecError::Io(ref e) if e.kind() == std::io::ErrorKind::InvalidData),
            "{err}"
        );
    }

    #[tokio::test]
    async fn reader_refuses_a_frame_over_its_limit_and_reports_partial_frames() {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let mut rd = Reader::new(a, MAX_REQUEST_FRAME);
        b.write_all(&((MAX_REQUEST_FRAME + 1) as u32).to_be_bytes())
            .await
            .expect("write");
        assert!(rd.recv::<ClientMsg>().await.is_err());

        let (a, mut b) = tokio::io::duplex(1 << 16);
        let mut rd = Reader::new(a, MAX_REQUEST_FRAME);
        let whole = frame(&ClientMsg::Request {
            request: Request::Status,
        })
        .expect("frame");
        b.write_all(&whole[..3]).await.expect("write");
        let pending =
            tokio::time::timeout(std::time::Duration::from_millis(50), rd.recv::<ClientMsg>())
                .await;
        assert!(pending.is_err(), "a partial frame is not a message");
        assert_eq!(rd.buffered(), 3);
        b.write_all(&whole[3..]).await.expect("write");
        assert_eq!(
            rd.recv::<ClientMsg>().await.expect("recv"),
            ClientMsg::Request {
                request: Request::Status
            }
        );
        assert_eq!(rd.buffered(), 0);
    }

    #[tokio::test]
    async fn frames_over_a_stream() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (mut a, mut b) = (Connection::new(a), Connection::new(b));
        for m in samples() {
            a.send(&m).await.expect("send");
            assert_eq!(b.recv::<ServerMsg>().await.expect("recv"), m);
        }
        drop(a);
        assert!(matches!(
            b.recv::<ServerMsg>().await,
            Err(CodecError::Closed)
        ));
    }
}
