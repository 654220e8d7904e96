//! The engine's few lines for single-packet knocks: hand each SPA datagram to the gate
//! ([`crate::spa::Gate`], the owner of everything SPA) and open what it answers through the
//! grant path every door uses, naming the client in the ledger.

use super::Engine;
use crate::action::Executor;
use crate::capture::SpaDatagram;
use crate::config::Proto;
use crate::knocklog::LogSink;
use crate::spa::Verdict;
use knock_ipc as ipc;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub(super) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl<E: Executor, L: LogSink> Engine<E, L> {
    /// SPA datagrams the capture read together.
    pub fn on_spa(&mut self, datagrams: &[SpaDatagram], at: Instant) {
        let Some(port) = self.spa.port() else {
            return;
        };
        let now_ms = wall_ms();
        for d in datagrams.iter().filter(|d| d.dport == port) {
            self.spa_seen += 1;
            let verdict = self.spa.on_packet(d.src, &d.payload, now_ms);
            self.on_spa_verdict(d.src, verdict, at);
        }
    }

    fn on_spa_verdict(&mut self, src: IpAddr, verdict: Verdict, at: Instant) {
        match verdict {
            Verdict::Open { client, opens, nat } => {
                for (door_idx, addr) in opens {
                    let Some(name) = self.config.doors.get(door_idx).map(|d| d.name.clone()) else {
                        continue;
                    };
                    let how = if nat {
                        format!(" for {addr} (SPA_Address = any)")
                    } else {
                        String::new()
                    };
                    let msg = format!("{src}: {name}: SPA packet of client {client}{how}");
                    self.line(&msg);
                    self.ledger.spa_client(&name, addr, &client);
                    self.open(door_idx, addr, at);
                }
            }
            // Authenticated by the AEAD (a client's key): worth a line, within the budget.
            Verdict::Refused {
                reason,
                client: Some(client),
            } => {
                self.events.knock_line(at, || {
                    format!(
                        "{src}: SPA packet of client {client} refused: {}",
                        reason.name()
                    )
                });
            }
            // Forged or garbled: a counter, nothing else.
            Verdict::Refused { client: None, .. } => {}
        }
    }

    /// A UDP packet to the SPA port reached the engine (every one does, whatever its length):
    /// those that came with no datagram of the right length are refused by length.
    pub(super) fn spa_udp_seen(&mut self, proto: Proto, dport: u16) {
        if proto == Proto::Udp && self.spa.port() == Some(dport) {
            self.spa_udp += 1;
        }
    }

    /// SPA counters with the refusals by length (datagrams of the wrong size) filled in.
    pub(super) fn spa_counters(&self) -> ipc::SpaCounters {
        let mut c = self.spa.counters();
        let short = self.spa_udp.saturating_sub(self.spa_seen);
        for (r, n) in &mut c.refused {
            if *r == knock_ipc::spa::Refusal::Length {
                *n += short;
            }
        }
        c
    }

    /// When the hint window moves next, as an Instant.
    pub(super) fn spa_deadline(&self) -> Option<Instant> {
        let next = self.spa.next_epoch_ms()?;
        let wait = next.saturating_sub(wall_ms());
        Some(super::now() + Duration::from_millis(wait))
    }

    pub(super) fn spa_timer(&mut self) {
        if self.spa.next_epoch_ms().is_some_and(|t| wall_ms() >= t) {
            for l in self.spa.rotate(wall_ms()) {
                self.line(&l);
            }
        }
    }

    pub(super) fn spa_reload(&mut self) {
        let config = self.config.clone();
        for l in self.spa.reload(&config, wall_ms()) {
            self.line(&l);
        }
    }

    pub(super) fn spa_clients(&mut self) -> ipc::Response {
        for l in self.spa.rescan(wall_ms(), false) {
            self.line(&l);
        }
        let clients = self
            .spa
            .enrolled
            .all()
            .iter()
            .map(|c| ipc::ClientInfo {
                name: c.record.name.clone(),
                fingerprint: c.record.fingerprint(),
                doors: self.spa.doors_of(&self.config, &c.record.name),
                last_seen_unix_ms: c.last_seen_ms.and_then(|m| i64::try_from(m).ok()),
                grants: self
                    .ledger
                    .oldest()
                    .filter(|g| g.client.as_deref() == Some(c.record.name.as_str()))
                    .count() as u64,
                revoked: c.revoked,
            })
            .collect();
        ipc::Response::Clients { clients }
    }

    pub(super) fn spa_revoke(&mut self, name: &str, close: bool, now: Instant) -> ipc::Response {
        match self.spa.revoke(name) {
            Ok(lines) => {
                for l in lines {
                    self.line(&l);
                }
                let mut closed = Vec::new();
                if close {
                    let grants: Vec<(IpAddr, String)> = self
                        .ledger
                        .oldest()
                        .filter(|g| g.client.as_deref() == Some(name))
                        .map(|g| (g.addr, g.door.clone()))
                        .collect();
                    for (addr, door) in grants {
                        if let ipc::Response::Revoked { grants } =
                            self.revoke(addr, Some(&door), now)
                        {
                            closed.extend(grants);
                        }
                    }
                }
                ipc::Response::ClientRevoked {
                    name: name.to_string(),
                    closed,
                }
            }
            Err(message) => ipc::Response::Error { message },
        }
    }
}
