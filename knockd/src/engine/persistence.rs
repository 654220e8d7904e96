//! Persistence: the state file's writer and what the engine must not forget across restarts
//! besides its grants — one-time sequences used but not yet recorded in their file, and
//! (through their owners) the replay memories of TOTP doors (the matcher) and of SPA clients
//! (the gate).
//!
//! The ledger's changes are handed to the writer's thread after each turn of the engine loop
//! ([`Persistence::persist`], O(changes)); the writer coalesces them and writes the file
//! atomically a few milliseconds later (3 ms later for a changed memory; see
//! [`crate::statewriter`]). A start waits for its record to be on disk ([`Persistence::barrier`]).

use super::events::Events;
use super::runner::Barrier;
use super::totp::saved_replay;
use crate::config::{self, Config};
use crate::grants::{Grant, Ledger};
use crate::knocklog::LogSink;
use crate::matcher::Matcher;
use crate::spa::Gate;
use crate::state::{self, SavedGrant, SavedOneTime};
use crate::statewriter::{Change, StateWriter};
use std::path::PathBuf;
use std::time::{Instant, SystemTime};
use tokio::sync::mpsc;

pub(crate) struct Persistence {
    /// None: no state file (tests).
    path: Option<PathBuf>,
    /// Started on first use, on the engine's runtime.
    writer: Option<StateWriter>,
    errors_tx: mpsc::UnboundedSender<String>,
    errors_rx: mpsc::UnboundedReceiver<String>,
    /// One-time sequences used but not yet recorded in their file (the rewrite failed): never
    /// accepted again, recorded at the next reload that can.
    used_otp: Vec<(PathBuf, Vec<config::Step>)>,
    /// Whether `used_otp` changed since it was last sent to the writer.
    otp_dirty: bool,
    /// The replay memory's generation (the matcher's) the writer was last sent.
    replay_sent: u64,
}

/// The saved form of a grant (wall-clock deadline).
pub(crate) fn saved(g: &Grant, now: Instant, wall: SystemTime) -> SavedGrant {
    SavedGrant {
        door: g.door.clone(),
        addr: g.addr,
        opened: g.opened.clone(),
        opened_at_unix_ms: state::unix_ms(g.opened_at),
        expires_at_unix_ms: g
            .expires
            .map(|t| state::unix_ms(wall + t.saturating_duration_since(now))),
        close: g.close.clone(),
        refreshes: g.refreshes,
        closing: g.closing.is_some(),
        close_error: g.closing.as_ref().and_then(|c| c.last_error.clone()),
        client: g.client.clone(),
    }
}

impl Default for Persistence {
    fn default() -> Self {
        let (errors_tx, errors_rx) = mpsc::unbounded_channel();
        Persistence {
            path: None,
            writer: None,
            errors_tx,
            errors_rx,
            used_otp: Vec::new(),
            otp_dirty: false,
            replay_sent: 0,
        }
    }
}

impl Persistence {
    /// Persist to this file (the writer starts with the first change).
    pub fn set_path(&mut self, path: PathBuf) {
        self.path = Some(path);
        self.writer = None;
    }

    fn writer(&mut self) -> Option<&StateWriter> {
        if self.writer.is_none() {
            let path = self.path.clone()?;
            self.writer = Some(StateWriter::start(path, self.errors_tx.clone()));
        }
        self.writer.as_ref()
    }

    /// Log the write errors the writer reported since the last call.
    fn log_errors<L: LogSink>(&mut self, events: &mut Events<L>) {
        while let Ok(e) = self.errors_rx.try_recv() {
            events.line(&format!("error: {e}"));
        }
    }

    /// Hand what changed in the ledger and the memories to the state writer (O(changes); the
    /// writer coalesces and writes off this task). Write errors it reported are logged here.
    pub fn persist<L: LogSink>(
        &mut self,
        ledger: &mut Ledger,
        config: &Config,
        matcher: &Matcher,
        spa: &mut Gate,
        events: &mut Events<L>,
    ) {
        self.log_errors(events);
        let dirty = ledger.take_dirty();
        if self.writer().is_none() {
            return;
        }
        // The memories go in the same send as the grants: an open that waits for its record
        // (write-ahead) also waits for the replay memory of the step or packet that opened it.
        let mut changes = self.memory_changes(false, config, matcher, spa);
        if dirty.is_empty() && changes.is_empty() {
            return;
        }
        // A memory that changed is on disk within a few ms (not the coalescing window), so a
        // crash right after an open does not forget what it opened for.
        let hurry = !changes.is_empty();
        let now = super::now();
        let wall = SystemTime::now();
        changes.extend(dirty.into_iter().map(|id| match ledger.get(id) {
            Some(g) => Change::Upsert(id, Box::new(saved(g, now, wall))),
            None => Change::Remove(id),
        }));
        if let Some(w) = &self.writer {
            w.send(changes);
            if hurry {
                w.hurry();
            }
        }
    }

    /// The file now holds exactly `ledger` and the memories (after taking over a previous
    /// run's state: grants dropped then leave it).
    pub fn reset(
        &mut self,
        ledger: &mut Ledger,
        config: &Config,
        matcher: &Matcher,
        spa: &mut Gate,
    ) {
        ledger.take_dirty();
        let now = super::now();
        let wall = SystemTime::now();
        let all = ledger
            .list()
            .into_iter()
            .map(|g| (g.id, saved(g, now, wall)))
            .collect();
        if self.writer().is_none() {
            return;
        }
        let mut changes = vec![Change::Reset(all)];
        changes.extend(self.memory_changes(true, config, matcher, spa));
        if let Some(w) = &self.writer {
            w.send(changes);
        }
    }

    /// The memory sections that changed since they were last sent (all of them when `all`).
    fn memory_changes(
        &mut self,
        all: bool,
        config: &Config,
        matcher: &Matcher,
        spa: &mut Gate,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        if let Some(entries) = spa.take_replay(all) {
            changes.push(Change::SpaReplay { all, entries });
        }
        let generation = matcher.replay_generation();
        if all || generation != self.replay_sent {
            self.replay_sent = generation;
            changes.push(Change::Replay(saved_replay(config, matcher)));
        }
        if all || self.otp_dirty {
            self.otp_dirty = false;
            changes.push(Change::OneTime(self.saved_one_time()));
        }
        changes
    }

    /// One-time sequences used but not recorded, as the state file holds them.
    fn saved_one_time(&self) -> Vec<SavedOneTime> {
        self.used_otp
            .iter()
            .take(state::MAX_MEMORY_ENTRIES)
            .map(|(file, seq)| SavedOneTime {
                file: file.clone(),
                sequence: seq
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            })
            .collect()
    }

    /// The state file's write failure, while writes fail (`knockctl status`).
    pub fn failing(&self) -> Option<crate::statewriter::Failing> {
        self.writer.as_ref().and_then(|w| w.failing())
    }

    /// What resolves once everything handed over so far is on disk (`true`) or its write
    /// failed (`false`: the open that waits is refused). None: no state file. Call after
    /// [`Self::persist`].
    pub fn barrier(&self) -> Option<Barrier> {
        self.writer
            .as_ref()
            .map(|w| Box::pin(w.barrier()) as Barrier)
    }

    /// Wait until the state file is written (clean shutdown). Call after [`Self::persist`].
    pub async fn flush<L: LogSink>(&mut self, events: &mut Events<L>) {
        if let Some(w) = self.writer() {
            w.flush().await;
        }
        self.log_errors(events);
    }

    /// One-time sequence `seq` of `file` was used, and its file could not be rewritten.
    pub fn used_unrecorded(&mut self, file: PathBuf, seq: Vec<config::Step>) {
        self.used_otp.push((file, seq));
        self.otp_dirty = true;
    }

    /// Are used one-time sequences waiting to be recorded?
    pub fn has_unrecorded(&self) -> bool {
        !self.used_otp.is_empty()
    }

    /// At reload (and start): a door of `new` whose current one-time sequence was used but
    /// could not be recorded gets it recorded now, or stays disabled. Fail closed: a used
    /// sequence never opens again.
    pub fn record_used<L: LogSink>(&mut self, new: &mut Config, events: &mut Events<L>) {
        for door in &mut new.doors {
            let Some(path) = door.one_time_sequences.clone() else {
                continue;
            };
            while !door.sequence.is_empty() {
                let Some(i) = self
                    .used_otp
                    .iter()
                    .position(|(p, s)| *p == path && *s == door.sequence)
                else {
                    break;
                };
                match config::otp::consume(&path, &door.sequence) {
                    Ok(next) => {
                        self.used_otp.swap_remove(i);
                        self.otp_dirty = true;
                        door.sequence = next.unwrap_or_default();
                    }
                    Err(e) => {
                        let msg = format!(
                            "door {}: a used one time sequence still cannot be recorded --> door stays disabled ({e})",
                            door.name
                        );
                        events.line(&msg);
                        door.sequence.clear();
                    }
                }
            }
        }
    }

    /// At start: one-time sequences a previous run used but could not record in their file
    /// (from the state file). Each one whose file still lists it unused is remembered (a
    /// file that cannot be read keeps the entry: fail closed); entries already recorded (or
    /// removed from their file) are forgotten.
    pub fn restore_unrecorded<L: LogSink>(
        &mut self,
        saved: Vec<SavedOneTime>,
        events: &mut Events<L>,
    ) {
        for s in saved {
            let Ok(seq) = config::parse_sequence(&s.sequence) else {
                let msg = format!(
                    "warning: state file: ignoring one-time sequence entry '{}' for {} (not a sequence)",
                    s.sequence,
                    s.file.display()
                );
                events.line(&msg);
                continue;
            };
            if std::fs::read(&s.file).is_ok_and(|b| !config::otp::is_unused_in(&b, &seq)) {
                continue;
            }
            if !self.used_otp.iter().any(|(p, q)| *p == s.file && *q == seq) {
                self.used_otp.push((s.file, seq));
            }
        }
        self.otp_dirty = true;
    }
}
