//! Persisting the grant ledger, and taking it over at start.

use super::{Engine, TaskKind};
use crate::action::{self, Action, Executor, Outcome};
use crate::config::Command6;
use crate::firewall::nftables::side as nft_side;
use crate::firewall::Op;
use crate::grants::{Close, Grant, GrantId};
use crate::knocklog::LogSink;
use crate::state::{self, SavedGrant, SavedOneTime, SavedReplay};
use crate::statewriter::{Change, StateWriter};
use std::time::{Duration, Instant, SystemTime};

impl<E: Executor, L: LogSink> Engine<E, L> {
    /// The saved form of a grant (wall-clock deadline).
    fn saved(g: &Grant, now: Instant, wall: SystemTime) -> SavedGrant {
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
        }
    }

    fn writer(&mut self) -> Option<StateWriter> {
        let path = self.state_file.clone()?;
        let errors = self.state_errors_tx.clone();
        Some(
            self.state_writer
                .get_or_insert_with(|| StateWriter::start(path, errors))
                .clone(),
        )
    }

    /// Hand what changed in the ledger to the state writer (O(changes); the writer coalesces
    /// and writes off this task). Write errors it reported since are logged here.
    pub fn persist(&mut self) {
        while let Ok(e) = self.state_errors_rx.try_recv() {
            let msg = format!("error: {e}");
            self.line(&msg);
        }
        let dirty = self.ledger.take_dirty();
        let Some(w) = self.writer() else {
            return;
        };
        // The memories go in the same send as the grants: an open that waits for its record
        // (write-ahead) also waits for the replay memory of the step that opened it.
        let mut changes = self.memory_changes(false);
        if dirty.is_empty() && changes.is_empty() {
            return;
        }
        // A memory that changed is on disk within a few ms (not the coalescing window), so a
        // crash right after an open does not forget what it opened for.
        let hurry = !changes.is_empty();
        let now = super::now();
        let wall = SystemTime::now();
        changes.extend(dirty.into_iter().map(|id| match self.ledger.get(id) {
            Some(g) => Change::Upsert(id, Box::new(Self::saved(g, now, wall))),
            None => Change::Remove(id),
        }));
        w.send(changes);
        if hurry {
            w.hurry();
        }
    }

    /// The memory sections that changed since they were last sent (all of them when `all`).
    fn memory_changes(&mut self, all: bool) -> Vec<Change> {
        let mut changes = Vec::new();
        let generation = self.matcher.replay_generation();
        if all || generation != self.replay_sent {
            self.replay_sent = generation;
            changes.push(Change::Replay(self.saved_replay()));
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

    /// Take over a previous run's state file: its memories (replay memory of TOTP doors,
    /// unrecorded one-time sequences), then its grants.
    pub async fn restore_all(
        &mut self,
        saved: state::Saved,
        kernel: Option<Vec<crate::firewall::nftables::listing::KernelElem>>,
    ) {
        self.restore_memory(saved.totp_replay, saved.one_time_used);
        self.restore_with_kernel(saved.grants, kernel).await;
    }

    /// The memories of a state file (call before the grants' restore, which writes the file
    /// back with them). Entries are checked before they count (see `remember_replays` and
    /// `restore_used_otp`).
    pub fn restore_memory(&mut self, replay: Vec<SavedReplay>, one_time: Vec<SavedOneTime>) {
        let offered = replay.len();
        let taken = self.remember_replays(replay);
        if offered > 0 {
            let msg = format!(
                "replay memory: {taken} of {offered} TOTP step(s) from the state file still in their window"
            );
            self.line(&msg);
        }
        self.restore_used_otp(one_time);
    }

    /// Persist now and return what resolves once that is on disk (`true`) or its write failed
    /// (`false`: the open that waits is refused). None: no state file.
    pub(super) fn state_barrier(
        &mut self,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>> {
        self.persist();
        self.state_writer
            .as_ref()
            .map(|w| Box::pin(w.barrier()) as std::pin::Pin<Box<_>>)
    }

    /// Persist and wait until the state file is written (clean shutdown).
    pub async fn flush_state(&mut self) {
        self.persist();
        if let Some(w) = self.writer() {
            w.flush().await;
        }
        while let Ok(e) = self.state_errors_rx.try_recv() {
            let msg = format!("error: {e}");
            self.line(&msg);
        }
    }

    /// Take over the grants of a previous run: close those past their deadline, forget those
    /// whose rule is gone from the firewall (never re-open them), re-arm the rest.
    pub async fn restore(&mut self, saved: Vec<SavedGrant>) {
        self.restore_with_kernel(saved, None).await;
    }

    /// What closes a saved grant, taken from data only: native rules as recorded (their
    /// fields are checked), a stop command from the config's door of that name (never the
    /// command text of the state file), a derived inverse re-derived from the config's door or
    /// checked as one knockd could have written. Err: nothing runs, the admin is told.
    fn vet_close(&self, g: &SavedGrant) -> Result<Close, String> {
        let door = self.config.doors.iter().find(|d| d.name == g.door);
        let v6 = g.addr.is_ipv6();
        let pick = |v4: &Option<String>, c6: &Command6| -> Option<String> {
            if !v6 {
                return v4.clone();
            }
            match c6 {
                Command6::Command(c) => Some(c.clone()),
                Command6::Disabled => None,
                Command6::Fallback => v4.clone(),
            }
        };
        let by_hand = "close it by hand if it is still open";
        match &g.close {
            Close::Rules { rules } => {
                if rules.iter().all(|r| r.src == g.addr && r.is_valid()) {
                    Ok(g.close.clone())
                } else {
                    Err(format!(
                        "state file lists a native rule that is not for this address or has an invalid chain: not run; {by_hand}"
                    ))
                }
            }
            Close::StopCommand { .. } => door
                .and_then(|d| pick(&d.stop_command, &d.stop_command_6))
                .map(|c| Close::StopCommand {
                    command: action::expand(&c, g.addr),
                })
                .ok_or_else(|| {
                    format!(
                        "door '{}' is no longer in the config or has no Stop_Command: the stop command recorded in the state file is not run; {by_hand}",
                        g.door
                    )
                }),
            Close::Derived { delete, check } => {
                let from_config = door
                    .and_then(|d| pick(&d.start_command, &d.start_command_6))
                    .and_then(|c| action::derive_inverse(&action::expand(&c, g.addr)))
                    .filter(|d| d.delete == *delete);
                if let Some(d) = from_config {
                    return Ok(Close::Derived {
                        delete: d.delete,
                        check: d.check,
                    });
                }
                if action::valid_recorded_inverse(delete, check, g.addr) {
                    Ok(g.close.clone())
                } else {
                    Err(format!(
                        "the closing command in the state file is not an iptables -D for this address: not run; {by_hand}"
                    ))
                }
            }
            Close::Nft { .. } => Ok(g.close.clone()),
        }
    }

    /// A restored grant: check that its rules are still there (in the background). All gone:
    /// forgotten (never re-opened); some gone: the rest is closed; all there: kept.
    fn verify(&mut self, id: GrantId) {
        let Some(g) = self.ledger.get(id) else {
            return;
        };
        let (door, addr) = (g.door.clone(), g.addr);
        match &g.close {
            Close::Rules { rules } => {
                let ops = rules
                    .iter()
                    .map(|r| Op::Check { rule: r.clone() })
                    .collect();
                self.submit_fw(Some(id), &door, addr, TaskKind::Verify, ops);
            }
            Close::Derived { check, .. } => {
                let a = vec![Action::Exec(check.clone())];
                self.spawn(Some(id), &door, addr, TaskKind::Verify, a);
            }
            Close::StopCommand { .. } | Close::Nft { .. } => {}
        }
    }

    /// The outcome of [`Self::verify`].
    pub(super) fn on_verified(
        &mut self,
        id: GrantId,
        outcome: &Outcome,
        absent: usize,
        total: usize,
    ) {
        let Some(g) = self.ledger.get(id) else {
            return;
        };
        let (door, addr) = (g.door.clone(), g.addr);
        let absent = match outcome {
            Outcome::Ok => absent,
            // A derived check exits 1 when its rule is missing.
            Outcome::Failed { code: Some(1), .. } if total == 0 => 1,
            _ => {
                let msg = format!("{addr}: {door}: warning: cannot check the restored grant's rules ({outcome:?}): kept");
                self.line(&msg);
                return;
            }
        };
        let total = total.max(1);
        if absent == 0 {
            return;
        }
        if absent >= total {
            self.ledger.remove(id);
            let msg = format!("{addr}: {door}: rule no longer in the firewall, grant dropped");
            self.line(&msg);
        } else {
            let msg = format!(
                "{addr}: {door}: {absent} of {total} rules no longer in the firewall: closing the others"
            );
            self.line(&msg);
            self.close_id(id);
        }
    }

    /// [`restore`](Self::restore), with the elements of table `inet knockd` as the kernel
    /// holds them (`Firewall = nftables`; None: no table). For nftables grants the kernel is
    /// the truth: a grant keeps the elements still there with the time the kernel has left,
    /// and elements the state file does not know become grants of the door that opens them.
    pub async fn restore_with_kernel(
        &mut self,
        saved: Vec<SavedGrant>,
        kernel: Option<Vec<crate::firewall::nftables::listing::KernelElem>>,
    ) {
        let wall = SystemTime::now();
        let now = super::now();
        let mut kernel = kernel.unwrap_or_default();
        for g in saved {
            if let Close::Nft { elems } = &g.close {
                let elems = elems.clone();
                let msg = nft_side::restore(&mut self.ledger, g, &elems, &mut kernel, now);
                self.line(&msg);
                continue;
            }
            let remaining = g.expires_at_unix_ms.map(|ms| {
                state::from_unix_ms(ms)
                    .duration_since(wall)
                    .unwrap_or(Duration::ZERO)
            });
            // The state file is data: what closes the grant comes from the config, or is
            // checked against the little a previous run could have written.
            let close = match self.vet_close(&g) {
                Ok(c) => c,
                Err(why) => {
                    let msg = format!("error: {}: {}: {why}", g.addr, g.door);
                    self.line(&msg);
                    continue;
                }
            };
            let due = g.closing || remaining == Some(Duration::ZERO);
            let (door, addr) = (g.door.clone(), g.addr);
            let id = self.ledger.insert(
                &door,
                addr,
                g.opened,
                state::from_unix_ms(g.opened_at_unix_ms),
                remaining.map(|r| now + r),
                close,
            );
            if due {
                let msg = if g.closing {
                    format!(
                        "{addr}: {door}: grant was still closing when knockd stopped, closing it"
                    )
                } else {
                    format!("{addr}: {door}: grant expired while knockd was down, closing it")
                };
                self.line(&msg);
                // Through the pool and the firewall queue: in parallel, while knocks are served.
                self.close_id(id);
                continue;
            }
            self.verify(id);
            let msg = match remaining {
                Some(r) => format!(
                    "{addr}: {door}: grant restored (closes in {}s)",
                    r.as_secs()
                ),
                None => format!("{addr}: {door}: grant restored (no deadline)"),
            };
            self.line(&msg);
        }
        if self.config.options.firewall == crate::config::FirewallKind::Nftables {
            for msg in nft_side::adopt(&mut self.ledger, &self.config, kernel, now) {
                self.line(&msg);
            }
        }
        // The file now reflects what this run owns (grants dropped above leave it).
        self.ledger.take_dirty();
        let now = super::now();
        let wall = SystemTime::now();
        let all = self
            .ledger
            .list()
            .into_iter()
            .map(|g| (g.id, Self::saved(g, now, wall)))
            .collect();
        if let Some(w) = self.writer() {
            let mut changes = vec![Change::Reset(all)];
            changes.extend(self.memory_changes(true));
            w.send(changes);
        }
    }
}
