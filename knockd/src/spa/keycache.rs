//! Decompressed Ed25519 keys of the clients that sent a valid packet lately.
//!
//! A client's record keeps its Ed25519 key compressed (32 bytes): decompressed, a key is 192
//! bytes, and every enrolled client holding one would break the memory target (≤ 512 bytes
//! per client). Decompressing costs a field inversion and a square root for every accepted
//! packet, though (about 7 µs, an eighth of the signature check). So the gate keeps the
//! decompressed keys of the clients whose packets verified lately: [`SLOTS`] slots, a
//! client's slot chosen by its index (two clients that share a slot take turns), allocated on
//! the first valid packet (an idle gate holds nothing: ~50 KiB once in use).
//!
//! A slot answers only for exactly the bytes the client's record holds now: a client
//! enrolled again with new keys, or another client moved to the same index by a rescan,
//! never verifies with a key it does not have. The gate also empties the cache whenever
//! its client list changes (rescan, reload, revoke).

use knock_ipc::spa::packet::{self, VerifyingKey};
use knock_ipc::spa::Refusal;

/// Slots in the cache (a power of two).
pub const SLOTS: usize = 256;

#[derive(Default)]
pub struct KeyCache {
    slots: Vec<Option<VerifyingKey>>,
}

impl KeyCache {
    fn slot(ci: u32) -> usize {
        ci as usize & (SLOTS - 1)
    }

    /// Client `ci`'s key, whose record holds `bytes`: the cached one when its slot holds
    /// exactly these bytes, else decompressed now ([`Refusal::Signature`]: not a point).
    /// Nothing is stored here: [`KeyCache::keep`] does, once the key verified a packet.
    pub fn key(&self, ci: u32, bytes: &[u8; 32]) -> Result<VerifyingKey, Refusal> {
        match self.slots.get(Self::slot(ci)) {
            Some(Some(k)) if k.as_bytes() == bytes => Ok(*k),
            _ => packet::verifying_key(bytes),
        }
    }

    /// Keep client `ci`'s `key` (its packet just verified).
    pub fn keep(&mut self, ci: u32, key: VerifyingKey) {
        if self.slots.is_empty() {
            self.slots = vec![None; SLOTS];
        }
        if let Some(s) = self.slots.get_mut(Self::slot(ci)) {
            *s = Some(key);
        }
    }

    /// Forget every key (the client list changed).
    pub fn clear(&mut self) {
        self.slots = Vec::new();
    }

    /// Bytes held (for the gate's memory estimate).
    pub fn bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Option<VerifyingKey>>()
    }

    /// Keys held (tests).
    pub fn held(&self) -> usize {
        self.slots.iter().flatten().count()
    }
}
