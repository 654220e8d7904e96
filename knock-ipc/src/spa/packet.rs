//! The SPA packet: pure functions from keys and fields to bytes and back. No clock, no
//! randomness, no I/O: the caller passes the time and the nonce, so fixed vectors pin it.
//!
//! ```text
//! packet (166 bytes) = hint (16) ‖ nonce (24) ‖ XChaCha20-Poly1305(K_aead, nonce, aad = hint,
//!                                                 body (46) ‖ signature (64)) ‖ tag (16)
//! hint      = HMAC-SHA256(K_hint, "knockd-spa-v1 epoch" ‖ epoch as u64 BE)[..16]
//!             epoch = body timestamp (ms) / 30,000
//! signature = Ed25519(client signing key,
//!                     "knockd-spa-v1 sig" ‖ server X25519 public ‖ hint ‖ nonce ‖ body)
//! body      = ts_ms u64 BE ‖ op u8 (1 = open) ‖ addr kind u8 (0 = packet source, 4, 6)
//!           ‖ addr 16 bytes (IPv4 in the first 4, the rest zero) ‖ timeout s u32 BE
//!           ‖ door id 8 bytes (0 = every door that lists the client) ‖ 8 reserved zero bytes
//! K_hint, K_aead = HKDF-SHA256(salt "knockd-spa-v1",
//!                              X25519(server, client) ‖ client X25519 public ‖ server public)
//!                  expanded with "knockd-spa-v1 hint" / "knockd-spa-v1 aead"
//! ```
//! The version lives in the labels: a future format changes them, so an old packet can never
//! be read as a new one.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
pub use ed25519_dalek::VerifyingKey;
use ed25519_dalek::{Signature, Signer, SigningKey};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::Refusal;

pub const HINT_LEN: usize = 16;
pub const NONCE_LEN: usize = 24;
pub const BODY_LEN: usize = 46;
pub const SIG_LEN: usize = 64;
pub const TAG_LEN: usize = 16;
/// Every SPA packet is exactly this long (UDP payload).
pub const PACKET_LEN: usize = HINT_LEN + NONCE_LEN + BODY_LEN + SIG_LEN + TAG_LEN;
/// One hint epoch.
pub const EPOCH_MS: u64 = 30_000;
/// The server accepts hints of epochs e-2..=e+2 around its own epoch e.
pub const EPOCH_SLACK: u64 = 2;
/// A packet whose timestamp is further than this from the server's clock is refused.
pub const CLOCK_WINDOW_MS: u64 = 60_000;

const SALT: &[u8] = b"knockd-spa-v1";
const HINT_LABEL: &[u8] = b"knockd-spa-v1 hint";
const AEAD_LABEL: &[u8] = b"knockd-spa-v1 aead";
const EPOCH_LABEL: &[u8] = b"knockd-spa-v1 epoch";
const SIG_LABEL: &[u8] = b"knockd-spa-v1 sig";
const DOOR_LABEL: &[u8] = b"knockd-spa-v1 door";

const OP_OPEN: u8 = 1;

/// What a packet asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Open the door(s) for the address.
    Open,
}

/// A door as the packet names it: the first 8 bytes of SHA-256("knockd-spa-v1 door" ‖ name).
/// All zeros ([`DoorId::ANY`]) = every door that lists the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DoorId(pub [u8; 8]);

impl DoorId {
    pub const ANY: DoorId = DoorId([0; 8]);

    pub fn of(name: &str) -> DoorId {
        let digest = Sha256::new()
            .chain_update(DOOR_LABEL)
            .chain_update(name.as_bytes())
            .finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        if id == [0; 8] {
            id[7] = 1; // never ANY by accident
        }
        DoorId(id)
    }
}

/// The signed, encrypted fields of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Body {
    /// The client's clock when it made the packet, unix milliseconds.
    pub ts_ms: u64,
    pub op: Op,
    /// None = open the packet's source address.
    pub addr: Option<IpAddr>,
    /// Requested grant length in seconds; 0 = the door's default (a door caps it).
    pub timeout_secs: u32,
    pub door: DoorId,
}

impl Body {
    pub fn encode(&self) -> [u8; BODY_LEN] {
        let mut b = [0u8; BODY_LEN];
        b[..8].copy_from_slice(&self.ts_ms.to_be_bytes());
        b[8] = match self.op {
            Op::Open => OP_OPEN,
        };
        match self.addr {
            None => {}
            Some(IpAddr::V4(a)) => {
                b[9] = 4;
                b[10..14].copy_from_slice(&a.octets());
            }
            Some(IpAddr::V6(a)) => {
                b[9] = 6;
                b[10..26].copy_from_slice(&a.octets());
            }
        }
        b[26..30].copy_from_slice(&self.timeout_secs.to_be_bytes());
        b[30..38].copy_from_slice(&self.door.0);
        b
    }

    /// Reads the fields; every byte has exactly one valid meaning (unknown op or address
    /// kind, bytes outside the address, non-zero reserved bytes: [`Refusal::Malformed`]).
    pub fn decode(b: &[u8; BODY_LEN]) -> Result<Body, Refusal> {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[..8]);
        let op = match b[8] {
            OP_OPEN => Op::Open,
            _ => return Err(Refusal::Malformed),
        };
        let zero = |r: &[u8]| r.iter().all(|x| *x == 0);
        let addr = match b[9] {
            0 if zero(&b[10..26]) => None,
            4 if zero(&b[14..26]) => Some(IpAddr::V4(Ipv4Addr::new(b[10], b[11], b[12], b[13]))),
            6 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(&b[10..26]);
                Some(IpAddr::V6(Ipv6Addr::from(o)))
            }
            _ => return Err(Refusal::Malformed),
        };
        if !zero(&b[38..46]) {
            return Err(Refusal::Malformed);
        }
        let mut to = [0u8; 4];
        to.copy_from_slice(&b[26..30]);
        let mut door = [0u8; 8];
        door.copy_from_slice(&b[30..38]);
        Ok(Body {
            ts_ms: u64::from_be_bytes(ts),
            op,
            addr,
            timeout_secs: u32::from_be_bytes(to),
            door: DoorId(door),
        })
    }

    /// The hint epoch this body's timestamp falls in.
    pub fn epoch(&self) -> u64 {
        self.ts_ms / EPOCH_MS
    }
}

/// The two keys one client and the server share, derived from the X25519 exchange.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SessionKeys {
    hint: [u8; 32],
    aead: [u8; 32],
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys(<hidden>)")
    }
}

impl SessionKeys {
    /// `shared` = X25519(server secret, client public) = X25519(client secret, server public).
    pub fn derive(shared: &[u8; 32], client_x: &[u8; 32], server_x: &[u8; 32]) -> SessionKeys {
        let mut ikm = [0u8; 96];
        ikm[..32].copy_from_slice(shared);
        ikm[32..64].copy_from_slice(client_x);
        ikm[64..].copy_from_slice(server_x);
        let hk = Hkdf::<Sha256>::new(Some(SALT), &ikm);
        ikm.zeroize();
        let mut keys = SessionKeys {
            hint: [0; 32],
            aead: [0; 32],
        };
        // 32 bytes is far below HKDF-SHA256's 8,160-byte limit: expand cannot fail.
        let _ = hk.expand(HINT_LABEL, &mut keys.hint);
        let _ = hk.expand(AEAD_LABEL, &mut keys.aead);
        keys
    }

    /// The 16-byte hint of `epoch`: what the server looks up before any costly check.
    pub fn hint(&self, epoch: u64) -> [u8; HINT_LEN] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.hint)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(EPOCH_LABEL);
        mac.update(&epoch.to_be_bytes());
        let full = mac.finalize().into_bytes();
        let mut h = [0u8; HINT_LEN];
        h.copy_from_slice(&full[..HINT_LEN]);
        h
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.aead).into())
    }
}

fn signed_message(
    server_x: &[u8; 32],
    hint: &[u8; HINT_LEN],
    nonce: &[u8; NONCE_LEN],
    body: &[u8; BODY_LEN],
) -> [u8; 17 + 32 + HINT_LEN + NONCE_LEN + BODY_LEN] {
    let mut m = [0u8; 17 + 32 + HINT_LEN + NONCE_LEN + BODY_LEN];
    let mut at = 0;
    for part in [SIG_LABEL, server_x, hint, nonce, body] {
        m[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    m
}

/// Makes a packet. The hint's epoch is the body's timestamp's.
pub fn seal(
    keys: &SessionKeys,
    signer: &SigningKey,
    server_x: &[u8; 32],
    body: &Body,
    nonce: &[u8; NONCE_LEN],
) -> [u8; PACKET_LEN] {
    let hint = keys.hint(body.epoch());
    let body_bytes = body.encode();
    let sig = signer.sign(&signed_message(server_x, &hint, nonce, &body_bytes));
    let mut out = [0u8; PACKET_LEN];
    out[..HINT_LEN].copy_from_slice(&hint);
    out[HINT_LEN..HINT_LEN + NONCE_LEN].copy_from_slice(nonce);
    let ct = &mut out[HINT_LEN + NONCE_LEN..PACKET_LEN - TAG_LEN];
    ct[..BODY_LEN].copy_from_slice(&body_bytes);
    ct[BODY_LEN..].copy_from_slice(&sig.to_bytes());
    let tag = keys
        .cipher()
        .encrypt_in_place_detached(XNonce::from_slice(nonce), &hint, ct)
        .unwrap_or_else(|_| unreachable!("XChaCha20 encrypts any length below 256 GiB"));
    out[PACKET_LEN - TAG_LEN..].copy_from_slice(&tag);
    out
}

/// The packet's hint, when it has the one valid length ([`Refusal::Length`] otherwise).
pub fn hint_of(packet: &[u8]) -> Result<&[u8; HINT_LEN], Refusal> {
    if packet.len() != PACKET_LEN {
        return Err(Refusal::Length);
    }
    packet[..HINT_LEN].try_into().map_err(|_| Refusal::Length)
}

/// A packet decrypted and authenticated by the shared key, not yet by the client's signature.
#[derive(Debug, Clone)]
pub struct Opened {
    pub body: Body,
    body_bytes: [u8; BODY_LEN],
    sig: [u8; SIG_LEN],
}

/// Decrypts (no allocation). [`Refusal::Length`], [`Refusal::Aead`] (not made with these
/// keys, or changed), [`Refusal::Malformed`] (a field with no meaning).
pub fn open(keys: &SessionKeys, packet: &[u8]) -> Result<Opened, Refusal> {
    let hint = hint_of(packet)?;
    let nonce = XNonce::from_slice(&packet[HINT_LEN..HINT_LEN + NONCE_LEN]);
    let mut plain = [0u8; BODY_LEN + SIG_LEN];
    plain.copy_from_slice(&packet[HINT_LEN + NONCE_LEN..PACKET_LEN - TAG_LEN]);
    let tag = Tag::from_slice(&packet[PACKET_LEN - TAG_LEN..]);
    keys.cipher()
        .decrypt_in_place_detached(nonce, hint, &mut plain, tag)
        .map_err(|_| Refusal::Aead)?;
    let mut body_bytes = [0u8; BODY_LEN];
    body_bytes.copy_from_slice(&plain[..BODY_LEN]);
    let mut sig = [0u8; SIG_LEN];
    sig.copy_from_slice(&plain[BODY_LEN..]);
    let body = Body::decode(&body_bytes)?;
    Ok(Opened {
        body,
        body_bytes,
        sig,
    })
}

/// Checks the client's signature (strict Ed25519: no malleable or small-order encodings).
pub fn verify(
    opened: &Opened,
    packet: &[u8],
    server_x: &[u8; 32],
    client: &VerifyingKey,
) -> Result<(), Refusal> {
    let hint = hint_of(packet)?;
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&packet[HINT_LEN..HINT_LEN + NONCE_LEN]);
    let msg = signed_message(server_x, hint, &nonce, &opened.body_bytes);
    client
        .verify_strict(&msg, &Signature::from_bytes(&opened.sig))
        .map_err(|_| Refusal::Signature)
}

/// A client's Ed25519 key decompressed from its 32 bytes ([`Refusal::Signature`]: not a
/// point of the curve), for [`verify`]. The server keeps keys compressed until a packet
/// passed every cheaper check (and then only for clients that sent a valid packet lately).
pub fn verifying_key(client: &[u8; 32]) -> Result<VerifyingKey, Refusal> {
    VerifyingKey::from_bytes(client).map_err(|_| Refusal::Signature)
}

/// The nonce, as the replay memory keeps it (its first 8 bytes).
pub fn nonce_tag(packet: &[u8]) -> u64 {
    let mut n = [0u8; 8];
    if let Some(s) = packet.get(HINT_LEN..HINT_LEN + 8) {
        n.copy_from_slice(s);
    }
    u64::from_be_bytes(n)
}
