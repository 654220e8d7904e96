//! The SPA packet decoder (`knock_ipc::spa::packet`) and the SPA key files.
//!
//! Input: one byte choosing the mode (modulo 4), then:
//! - 0, a packet: the server's checks against one enrolled client (hint, AEAD, body, epoch,
//!   signature) never panic and allocate nothing; a packet that passes them all is the fixed
//!   valid packet (only the client's key makes one).
//! - 1, a mask XORed onto a valid packet (cut or extended to the mask's length): refused
//!   unless the mask is all zeros of the packet's length.
//! - 2, a body: decoding never panics; a decoded body encodes to the same bytes.
//! - 3, a key file text: parsing a server key, client record or client key never panics, and
//!   what parses renders back to something that parses to the same keys.

use knock_ipc::spa::keys::{ClientKey, ClientRecord, ServerKey};
use knock_ipc::spa::packet::{
    hint_of, open, verify, Body, DoorId, Op, BODY_LEN, EPOCH_MS, EPOCH_SLACK,
};
use knock_ipc::spa::Refusal;
use std::path::Path;
use std::sync::OnceLock;

const NOW: u64 = 1_800_000_000_000;

struct Fixture {
    server: ServerKey,
    record: ClientRecord,
    keys: knock_ipc::spa::SessionKeys,
    valid: [u8; knock_ipc::spa::PACKET_LEN],
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let server = ServerKey::from_bytes([7; 32]);
        let client = ClientKey::from_bytes("alice", [9; 32], [11; 32], server.public());
        let record = client.record();
        let keys = server.session(&record).expect("fixed keys are valid");
        let body = Body {
            ts_ms: NOW,
            op: Op::Open,
            addr: None,
            timeout_secs: 0,
            door: DoorId::of("ssh"),
        };
        let valid = client
            .packet(&body, &[5; 24])
            .expect("fixed keys are valid");
        Fixture {
            server,
            record,
            keys,
            valid,
        }
    })
}

/// The server's checks up to the signature (what knockd runs after its hint lookup).
pub fn server_check(packet: &[u8]) -> Result<Body, Refusal> {
    let f = fixture();
    let hint = hint_of(packet)?;
    let e = NOW / EPOCH_MS;
    let epoch = (e - EPOCH_SLACK..=e + EPOCH_SLACK)
        .find(|ep| f.keys.hint(*ep) == *hint)
        .ok_or(Refusal::UnknownHint)?;
    let opened = open(&f.keys, packet)?;
    if opened.body.epoch() != epoch {
        return Err(Refusal::Epoch);
    }
    verify(&opened, packet, &f.server.public(), &f.record.verify)?;
    Ok(opened.body)
}

pub fn check(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    match mode % 4 {
        0 => {
            let got = crate::alloc::within("spa::server_check", 0, || server_check(rest));
            if got.is_ok() {
                assert_eq!(rest, &f.valid[..], "a packet not made by the client opened");
            }
        }
        1 => {
            let mut p: Vec<u8> = f
                .valid
                .iter()
                .copied()
                .chain(std::iter::repeat(0))
                .take(rest.len())
                .collect();
            for (b, m) in p.iter_mut().zip(rest) {
                *b ^= m;
            }
            let unchanged = rest.len() == f.valid.len() && rest.iter().all(|m| *m == 0);
            assert_eq!(server_check(&p).is_ok(), unchanged, "mask {rest:?}");
        }
        2 => {
            if let Ok(b) = <[u8; BODY_LEN]>::try_from(rest) {
                if let Ok(body) = Body::decode(&b) {
                    assert_eq!(body.encode(), b, "{body:?} does not encode to its bytes");
                }
            }
        }
        _ => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            let path = Path::new("fuzz");
            if let Ok(k) = ServerKey::parse(text, path) {
                let again = ServerKey::parse(&k.render(), path).expect("rendered server key");
                assert_eq!(again.public(), k.public());
            }
            if let Ok(r) = ClientRecord::parse(text, path) {
                assert_eq!(
                    ClientRecord::parse(&r.render(), path).expect("rendered record"),
                    r
                );
            }
            if let Ok(c) = ClientKey::parse(text, path) {
                let again = ClientKey::parse(&c.render(), path).expect("rendered client key");
                assert_eq!(again.record(), c.record());
            }
        }
    }
}

/// Seed inputs: (file name, bytes).
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let f = fixture();
    let server = ServerKey::from_bytes([7; 32]);
    let client = ClientKey::from_bytes("alice", [9; 32], [11; 32], server.public());
    let with = |mode: u8, b: &[u8]| std::iter::once(mode).chain(b.iter().copied()).collect();
    vec![
        ("valid-packet".into(), with(0, &f.valid)),
        (
            "mask-one-bit".into(),
            with(1, &{
                let mut m = [0u8; knock_ipc::spa::PACKET_LEN];
                m[40] = 1;
                m
            }),
        ),
        ("body".into(), with(2, &f.valid[..BODY_LEN])),
        ("server-key".into(), with(3, server.render().as_bytes())),
        (
            "client-record".into(),
            with(3, f.record.render().as_bytes()),
        ),
        ("client-key".into(), with(3, client.render().as_bytes())),
    ]
}
