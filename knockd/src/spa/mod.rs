//! Single-packet knocks on the daemon side: one owner, [`Gate`], holds the enrolled clients,
//! their hints, their replay memory and the SPA counters. The engine hands it each SPA
//! datagram the capture read and opens what it answers through the grant path every door uses.
//!
//! The packet format is `knock_ipc::spa`; the checks run cheapest first (see there). Before the
//! AEAD has authenticated a packet, a refusal is a counter and nothing else: no log line, no
//! allocation, no public-key operation. The hint lookup is one hash-map probe; the only
//! public-key operation (the Ed25519 signature) runs for packets that passed the AEAD, the
//! clock window and the replay memory, within a per-client and a global budget.

pub mod check;
pub mod clients;
pub mod keycache;
pub mod replay;

#[cfg(test)]
mod tests;

use crate::config::{Config, SpaAddress};
use clients::Enrolled;
use knock_ipc::spa::packet::{self, DoorId, EPOCH_MS, EPOCH_SLACK, HINT_LEN};
use knock_ipc::spa::{Refusal, ServerKey};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

/// Signature checks per second, all clients together, and the burst.
pub const GLOBAL_RATE: f64 = 1000.0;
pub const GLOBAL_BURST: f64 = 2000.0;
/// Signature checks per second for one client, and the burst.
pub const CLIENT_RATE: f64 = 2.0;
pub const CLIENT_BURST: f64 = 10.0;
/// The client directory is looked at again (one stat) at most this often on unknown hints.
const RESCAN_MS: u64 = 250;

/// The hint table's key for `hint`.
fn key_of(hint: &[u8; HINT_LEN]) -> u64 {
    let mut k = [0u8; 8];
    k.copy_from_slice(&hint[..8]);
    u64::from_le_bytes(k)
}

/// Epochs (30 s) fit u32 until the year 6053; the hint table keeps them so.
fn epoch32(e: u64) -> u32 {
    u32::try_from(e).unwrap_or(u32::MAX)
}

/// A token bucket on the wall clock (ms).
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f32,
    last_ms: u64,
}

impl Bucket {
    pub fn full(burst: f64) -> Bucket {
        Bucket {
            tokens: burst as f32,
            last_ms: 0,
        }
    }

    pub fn take(&mut self, now_ms: u64, rate: f64, burst: f64) -> bool {
        let dt = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.last_ms = self.last_ms.max(now_ms);
        let t = (f64::from(self.tokens) + dt * rate).min(burst);
        if t >= 1.0 {
            self.tokens = (t - 1.0) as f32;
            true
        } else {
            self.tokens = t as f32;
            false
        }
    }
}

/// A door that SPA packets may open.
#[derive(Debug, Clone)]
struct SpaDoor {
    idx: usize,
    id: DoorId,
    address: SpaAddress,
    clients: Vec<String>,
}

/// What a packet did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Open these (door index, address) for `client`; `nat`: an address other than the
    /// packet's source.
    Open {
        client: String,
        opens: Vec<(usize, IpAddr)>,
        nat: bool,
    },
    /// Refused; `client` is named only once the AEAD authenticated the packet.
    Refused {
        reason: Refusal,
        client: Option<String>,
    },
}

/// The SPA side of the daemon (see the module docs).
pub struct Gate {
    server: Option<ServerKey>,
    server_pub: [u8; 32],
    key_path: PathBuf,
    pub(crate) enrolled: Enrolled,
    /// Decompressed Ed25519 keys of the clients that sent a valid packet lately.
    pub(crate) keys: keycache::KeyCache,
    /// Hint → (client index, epoch), for epochs `hint_epoch ± EPOCH_SLACK` of every active
    /// client. ahash with random keys: an attacker cannot aim at the table's layout.
    ///
    /// Keyed by the hint's first 8 bytes ([`key_of`]): half the table's memory of the full
    /// 16, and a packet that matches 8 bytes but not 16 is refused by the AEAD (the whole
    /// hint is in its associated data), so nothing is let through by the shorter key; a
    /// random packet matches one of 10,000 clients' 50,000 keys with odds of 3 in 10^15.
    hints: HashMap<u64, (u32, u32), ahash::RandomState>,
    hint_epoch: u64,
    doors: Vec<SpaDoor>,
    port: u16,
    /// Nothing made before this (the start time, ms) is accepted.
    fence_ms: u64,
    global: Bucket,
    accepted: u64,
    refused: [u64; Refusal::ALL.len()],
    last_rescan_ms: u64,
    /// Clients whose replay memory changed since the state writer was last handed it.
    replay_dirty: Vec<u32>,
    /// The client list changed while `replay_dirty` was not empty (its indices are stale):
    /// hand the writer every memory.
    replay_all: bool,
}

impl Gate {
    /// A gate for `config`, fenced at `now_ms`. Reads the server key and the client directory
    /// when a door has `SPA`; problems are returned as lines for the log (the gate then
    /// refuses what it cannot check).
    pub fn new(config: &Config, now_ms: u64) -> (Gate, Vec<String>) {
        let mut g = Gate {
            server: None,
            server_pub: [0; 32],
            key_path: config.options.spa_server_key(),
            enrolled: Enrolled::new(config.options.spa_client_dir()),
            keys: keycache::KeyCache::default(),
            hints: HashMap::default(),
            hint_epoch: 0,
            doors: Vec::new(),
            port: config.options.spa_port(),
            fence_ms: now_ms,
            global: Bucket::full(GLOBAL_BURST),
            accepted: 0,
            refused: [0; Refusal::ALL.len()],
            last_rescan_ms: now_ms,
            replay_dirty: Vec::new(),
            replay_all: false,
        };
        let lines = g.reload(config, now_ms);
        (g, lines)
    }

    /// A gate with this server key and these clients (tests, benchmarks): no files read.
    pub fn from_parts(
        config: &Config,
        server: ServerKey,
        records: &[knock_ipc::spa::ClientRecord],
        now_ms: u64,
    ) -> Gate {
        let (mut g, _) = Gate::new(&Config::default(), now_ms);
        g.server_pub = server.public();
        g.enrolled.insert(&server, records, now_ms);
        g.enrolled.fix();
        g.server = Some(server);
        g.port = config.options.spa_port();
        g.set_doors(config);
        g.rebuild_hints(now_ms);
        g
    }

    fn set_doors(&mut self, config: &Config) {
        self.doors = config
            .doors
            .iter()
            .enumerate()
            .filter(|(_, d)| !d.spa.is_empty())
            .map(|(idx, d)| SpaDoor {
                idx,
                id: DoorId::of(&d.name),
                address: d.spa_address,
                clients: d.spa.clone(),
            })
            .collect();
    }

    /// Bytes the gate holds per enrolled client (its record, keys and replay memory, its
    /// share of the hint table): an estimate from the sizes and capacities in use.
    pub fn bytes_per_client(&self) -> usize {
        let n = self.enrolled.all().len().max(1);
        let clients = self.enrolled.capacity() * std::mem::size_of::<clients::Client>()
            + self
                .enrolled
                .all()
                .iter()
                .map(|c| c.record.name.capacity())
                .sum::<usize>();
        // hashbrown: a power-of-two number of buckets, 7/8 of them usable; one control byte
        // per bucket.
        let buckets = (self.hints.capacity() * 8 / 7).next_power_of_two();
        let hints = buckets * (std::mem::size_of::<(u64, (u32, u32))>() + 1);
        (clients + hints + self.keys.bytes()) / n
    }

    /// Take a new config (SIGHUP): doors, port, key and client directory. The replay memory
    /// of clients that stay enrolled is kept.
    pub fn reload(&mut self, config: &Config, now_ms: u64) -> Vec<String> {
        let mut lines = Vec::new();
        self.port = config.options.spa_port();
        self.set_doors(config);
        if self.doors.is_empty() {
            self.server = None;
            self.enrolled.clear(self.fence_ms);
            self.replay_all |= !self.replay_dirty.is_empty();
            self.hints.clear();
            self.keys.clear();
            return lines;
        }
        let key_path = config.options.spa_server_key();
        if self.server.is_none() || key_path != self.key_path {
            self.key_path = key_path;
            match ServerKey::read(&self.key_path) {
                Ok(k) => {
                    self.server_pub = k.public();
                    self.server = Some(k);
                    self.enrolled.clear(self.fence_ms);
                    self.replay_all |= !self.replay_dirty.is_empty();
                }
                Err(e) => {
                    lines.push(format!("error: SPA disabled: server key: {e} (make it with knockd --new-client NAME --out NAME.knock)"));
                    self.server = None;
                }
            }
        }
        self.enrolled.set_dir(config.options.spa_client_dir());
        lines.extend(self.rescan(now_ms, true));
        let missing = self.missing_clients();
        if self.server.is_some() && !missing.is_empty() {
            lines.push(format!(
                "warning: SPA client(s) named by a door but not enrolled: {} (knockd -t names the doors and the fix)",
                missing.join(", ")
            ));
        }
        lines
    }

    /// The UDP port SPA packets come to, when a door takes them.
    pub fn port(&self) -> Option<u16> {
        (!self.doors.is_empty()).then_some(self.port)
    }

    /// Read the client directory again if it changed (or `force`), and rebuild the hints.
    pub fn rescan(&mut self, now_ms: u64, force: bool) -> Vec<String> {
        self.last_rescan_ms = now_ms;
        let Some(server) = &self.server else {
            return Vec::new();
        };
        let (changed, lines) = self.enrolled.rescan(server, self.fence_ms, force);
        if changed {
            self.replay_all |= !self.replay_dirty.is_empty();
            self.rebuild_hints(now_ms);
        }
        lines
    }

    /// Rebuild the hint table for the epoch of `now_ms` (every active client, e-2..=e+2).
    pub fn rebuild_hints(&mut self, now_ms: u64) {
        self.keys.clear();
        let e = now_ms / EPOCH_MS;
        self.hint_epoch = e;
        self.hints.clear();
        self.hints
            .reserve(self.enrolled.active() * (2 * EPOCH_SLACK as usize + 1));
        for (i, c) in self.enrolled.iter() {
            if c.revoked {
                continue;
            }
            for ep in e.saturating_sub(EPOCH_SLACK)..=e + EPOCH_SLACK {
                self.hints
                    .insert(key_of(&c.keys.hint(ep)), (i, epoch32(ep)));
            }
        }
    }

    /// Move the hint window to the epoch of `now_ms` (drop the oldest epoch, add the newest):
    /// call at each epoch boundary ([`Gate::next_epoch_ms`]).
    pub fn rotate(&mut self, now_ms: u64) -> Vec<String> {
        let e = now_ms / EPOCH_MS;
        if e == self.hint_epoch {
            return Vec::new();
        }
        let lines = self.rescan(now_ms, false);
        if e != self.hint_epoch {
            if e == self.hint_epoch + 1 {
                let old = epoch32(self.hint_epoch.saturating_sub(EPOCH_SLACK));
                self.hints.retain(|_, (_, ep)| *ep != old);
                for (i, c) in self.enrolled.iter() {
                    if !c.revoked {
                        let ep = e + EPOCH_SLACK;
                        self.hints
                            .insert(key_of(&c.keys.hint(ep)), (i, epoch32(ep)));
                    }
                }
                self.hint_epoch = e;
            } else {
                self.rebuild_hints(now_ms);
            }
        }
        lines
    }

    /// When the hint window moves next (unix ms).
    pub fn next_epoch_ms(&self) -> Option<u64> {
        (!self.doors.is_empty() && self.server.is_some())
            .then_some((self.hint_epoch + 1) * EPOCH_MS)
    }

    fn refuse(&mut self, reason: Refusal, client: Option<String>) -> Verdict {
        self.refused[reason.index()] += 1;
        Verdict::Refused { reason, client }
    }

    /// One SPA datagram: `payload` sent from `src`, seen at `now_ms` (unix ms).
    pub fn on_packet(&mut self, src: IpAddr, payload: &[u8], now_ms: u64) -> Verdict {
        let Ok(hint) = packet::hint_of(payload) else {
            return self.refuse(Refusal::Length, None);
        };
        let mut found = self.hints.get(&key_of(hint)).copied();
        if found.is_none() && now_ms.saturating_sub(self.last_rescan_ms) >= RESCAN_MS {
            // A client added a moment ago: one stat of the directory, at most 4 times a second.
            let _ = self.rescan(now_ms, false);
            found = self.hints.get(&key_of(hint)).copied();
        }
        let Some((ci, epoch)) = found else {
            return self.refuse(Refusal::UnknownHint, None);
        };
        self.check(ci, u64::from(epoch), src, payload, now_ms)
    }

    fn check(&mut self, ci: u32, epoch: u64, src: IpAddr, payload: &[u8], now_ms: u64) -> Verdict {
        let Some(c) = self.enrolled.get(ci) else {
            return self.refuse(Refusal::UnknownHint, None);
        };
        let opened = match packet::open(&c.keys, payload) {
            Ok(o) => o,
            Err(r) => return self.refuse(r, None),
        };
        let name = Some(c.record.name.clone());
        let body = opened.body;
        if body.epoch() != epoch {
            return self.refuse(Refusal::Epoch, name);
        }
        if body.ts_ms.abs_diff(now_ms) > packet::CLOCK_WINDOW_MS {
            return self.refuse(Refusal::Clock, name);
        }
        let nonce = packet::nonce_tag(payload);
        if body.ts_ms < self.fence_ms || c.replay.seen(body.ts_ms, nonce) {
            return self.refuse(Refusal::Replay, name);
        }
        let mut bucket = c.budget;
        let client_ok = bucket.take(now_ms, CLIENT_RATE, CLIENT_BURST);
        if let Some(c) = self.enrolled.get_mut(ci) {
            c.budget = bucket;
        }
        if !client_ok || !self.global.take(now_ms, GLOBAL_RATE, GLOBAL_BURST) {
            return self.refuse(Refusal::Busy, name);
        }
        let Some(c) = self.enrolled.get(ci) else {
            return self.refuse(Refusal::UnknownHint, None);
        };
        let key = match self.keys.key(ci, &c.record.verify) {
            Ok(k) => k,
            Err(r) => return self.refuse(r, name),
        };
        if let Err(r) = packet::verify(&opened, payload, &self.server_pub, &key) {
            return self.refuse(r, name);
        }
        self.keys.keep(ci, key);
        let client = c.record.name.clone();
        let mut opens = Vec::new();
        let mut policy_refused = false;
        let mut nat = false;
        for d in &self.doors {
            if !d.clients.contains(&client) || (body.door != DoorId::ANY && body.door != d.id) {
                continue;
            }
            let addr = match (d.address, body.addr) {
                (SpaAddress::Source, None) => Some(src),
                (SpaAddress::Source | SpaAddress::Require, Some(a)) if a == src => Some(src),
                (SpaAddress::Any, a) => Some(a.unwrap_or(src)),
                _ => None,
            };
            match addr {
                Some(a) => {
                    nat |= a != src;
                    opens.push((d.idx, a));
                }
                None => policy_refused = true,
            }
        }
        if opens.is_empty() {
            let reason = if policy_refused {
                Refusal::Address
            } else {
                Refusal::NoDoor
            };
            return self.refuse(reason, Some(client));
        }
        if let Some(c) = self.enrolled.get_mut(ci) {
            c.replay.commit(body.ts_ms, nonce);
            c.last_seen_ms = Some(now_ms);
            self.replay_dirty.push(ci);
        }
        self.accepted += 1;
        Verdict::Open { client, opens, nat }
    }

    /// Take in the SPA replay memories of a state file (at start, after the clients were
    /// read): each merged into its client's (same name and keys), or held until those keys
    /// are enrolled. Returns a line for the log, if there was anything.
    pub fn restore_replay(&mut self, saved: Vec<crate::state::SavedSpaReplay>) -> Option<String> {
        if saved.is_empty() {
            return None;
        }
        let (merged, held) = self.enrolled.restore(saved);
        Some(format!(
            "SPA replay memory: {merged} client(s) from the state file{}",
            if held > 0 {
                format!(", {held} held for keys not enrolled now")
            } else {
                String::new()
            }
        ))
    }

    /// The replay memories the state writer must get: every one worth saving when `all`
    /// (the file is written afresh), else those that changed since the last call. None:
    /// nothing changed.
    pub fn take_replay(&mut self, all: bool) -> Option<Vec<crate::state::SavedSpaReplay>> {
        if all || self.replay_all {
            self.replay_dirty.clear();
            self.replay_all = false;
            return Some(self.enrolled.saved_all(self.fence_ms));
        }
        if self.replay_dirty.is_empty() {
            return None;
        }
        let mut dirty = std::mem::take(&mut self.replay_dirty);
        dirty.sort_unstable();
        dirty.dedup();
        Some(
            dirty
                .into_iter()
                .filter_map(|i| self.enrolled.get(i))
                .map(clients::saved_of)
                .collect(),
        )
    }

    /// Revoke `name`: refused from the next packet. Its record file is renamed `.revoked`
    /// so that a restart keeps it revoked. Err: not enrolled.
    pub fn revoke(&mut self, name: &str) -> Result<Vec<String>, String> {
        let lines = self.enrolled.revoke(name)?;
        self.keys.clear();
        self.hints
            .retain(|_, (i, _)| self.enrolled.get(*i).is_some_and(|c| !c.revoked));
        Ok(lines)
    }

    /// Accepted packets and refusals by reason.
    pub fn counters(&self) -> knock_ipc::SpaCounters {
        knock_ipc::SpaCounters {
            accepted: self.accepted,
            refused: Refusal::ALL
                .iter()
                .map(|r| (*r, self.refused[r.index()]))
                .collect(),
        }
    }

    /// The doors (names) that list `client`.
    pub fn doors_of(&self, config: &Config, client: &str) -> Vec<String> {
        self.doors
            .iter()
            .filter(|d| d.clients.iter().any(|n| n == client))
            .filter_map(|d| config.doors.get(d.idx).map(|door| door.name.clone()))
            .collect()
    }

    /// Door references to clients that are not enrolled (for `knockd -t` and the log).
    pub fn missing_clients(&self) -> Vec<String> {
        let mut missing: Vec<String> = self
            .doors
            .iter()
            .flat_map(|d| d.clients.iter())
            .filter(|n| !self.enrolled.has(n))
            .cloned()
            .collect();
        missing.sort();
        missing.dedup();
        missing
    }

    /// How many hints the table holds (tests, benchmarks).
    pub fn hint_count(&self) -> usize {
        self.hints.len()
    }
}
