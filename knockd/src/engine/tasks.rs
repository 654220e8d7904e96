//! Running actions off the engine task, and taking their results back.
//!
//! Door commands go through a bounded pool: at most [`POOL_SIZE`] run at once (closes have
//! [`CLOSE_POOL_SIZE`] more of their own), at most [`POOL_QUEUE`] starts and checks are admitted
//! at once; beyond that a start is refused and counted, never queued without limit. Native
//! doors' rules go to the firewall queue, which batches them. Either way, the actions of one
//! (door, source) run in order, across grant ids: a re-knock right after an expiry waits for
//! the old close.

use super::{
    Done, Engine, Key, TaskKind, CLOSE_RETRY_FIRST, CLOSE_RETRY_MAX, POOL_QUEUE, POOL_SIZE,
};
use crate::action::{Action, Executor, Outcome};
use crate::firewall::nftables::side as nft_side;
use crate::firewall::{Op, OpOutcome};
use crate::grants::{Close, Grant, GrantId};
use crate::knocklog::LogSink;
use knock_ipc as ipc;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The chain key door of every nftables element change (ordered per address, across doors).
pub(super) const NFT_CHAIN: &str = "\u{0}nftables";

/// Why a start was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    PoolFull,
    MaxGrants,
    /// Its network already has starts waiting for the door's rate (`fairstart::NET_CAP`).
    NetworkBusy,
    /// The door's start queue is full of networks at least as busy as its own.
    StartQueueFull,
    /// It was waiting, and a start from a quieter network took its place.
    Displaced,
}

impl<E: Executor, L: LogSink> Engine<E, L> {
    /// Count a refused open and log it, at most one summary line every 10 s.
    pub(super) fn refuse(&mut self, why: Refusal, door: &str, src: IpAddr, now: Instant) {
        match why {
            Refusal::PoolFull => self.stats.refused_pool_full += 1,
            Refusal::MaxGrants => self.stats.refused_max_grants += 1,
            Refusal::NetworkBusy => self.stats.refused_start_network += 1,
            Refusal::StartQueueFull => self.stats.refused_start_queue += 1,
            Refusal::Displaced => self.stats.refused_start_displaced += 1,
        }
        tracing::debug!(%src, door, ?why, "open refused");
        let s = &self.stats;
        let total = s.refused_pool_full
            + s.refused_max_grants
            + s.refused_start_network
            + s.refused_start_queue
            + s.refused_start_displaced;
        if self
            .last_refusal_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
        {
            let n = total - self.refusals_logged;
            self.refusals_logged = total;
            self.last_refusal_log = Some(now);
            let rate = self.config.start_rate();
            let msg = format!(
                "warning: {n} open(s) refused (latest: {src} on door {door}: {}); totals: command pool full {}, MaxGrants {}, busy network {}, start queue full {}, displaced {}",
                match why {
                    Refusal::PoolFull => format!(
                        "{POOL_QUEUE} commands already waiting for the pool of {POOL_SIZE}"
                    ),
                    Refusal::MaxGrants => format!("{} grants open (MaxGrants)", self.max_grants()),
                    Refusal::NetworkBusy => format!(
                        "its network already has {} opens waiting for the door's StartRate ({rate}/s)",
                        crate::fairstart::NET_CAP
                    ),
                    Refusal::StartQueueFull => format!(
                        "{} opens from busier networks already waiting for the door's StartRate ({rate}/s)",
                        crate::fairstart::QUEUE_CAP
                    ),
                    Refusal::Displaced => "a waiting open dropped for one from a quieter network".to_string(),
                },
                self.stats.refused_pool_full,
                self.stats.refused_max_grants,
                self.stats.refused_start_network,
                self.stats.refused_start_queue,
                self.stats.refused_start_displaced
            );
            self.line(&msg);
        }
    }

    /// An open whose record could not be written to the state file: nothing ran (fail
    /// closed), the grant is forgotten, the refusal counted and logged.
    pub(super) fn refuse_unrecorded(&mut self, d: &Done) {
        self.stats.refused_state_unwritable += 1;
        if let Some(id) = d.grant {
            self.ledger.remove(id);
        }
        let msg = format!(
            "{}: {}: open refused: the state file cannot record it (see knockctl status), so nothing was opened",
            d.addr, d.door
        );
        self.line(&msg);
        self.persist();
    }

    /// Room in the pool for one more start or check?
    pub(super) fn pool_has_room(&self) -> bool {
        self.pooled < POOL_QUEUE
    }

    /// Start closing open grant `id`: it stays in the ledger, as closing, until done.
    pub(super) fn close_id(&mut self, id: GrantId) {
        if let Some(g) = self.ledger.begin_close(id) {
            self.close_grant(g);
        }
    }

    /// Run the close of `g` (a closing grant): its rules through the firewall queue, its
    /// command through the close pool. The outcome removes it, or schedules a retry.
    pub(super) fn close_grant(&mut self, g: Grant) {
        match &g.close {
            Close::Rules { rules } => {
                let ops = rules
                    .iter()
                    .map(|r| Op::Delete { rule: r.clone() })
                    .collect();
                self.submit_fw(Some(g.id), &g.door, g.addr, TaskKind::Close, ops);
            }
            Close::Nft { elems } => {
                let ops = nft_side::close_ops(&self.ledger, &g, elems, super::now());
                self.submit_nft(Some(g.id), &g.door, g.addr, TaskKind::Close, ops);
            }
            close => {
                let actions: Vec<Action> = close.command().into_iter().collect();
                for a in &actions {
                    let msg = format!("{}: running command: {a}", g.door);
                    self.line(&msg);
                }
                self.spawn(Some(g.id), &g.door, g.addr, TaskKind::Close, actions);
            }
        }
    }

    /// A close finished: forget the grant, or keep it closing and retry with backoff.
    fn on_close_done(&mut self, id: GrantId, outcome: &Outcome, failure: Option<&str>) {
        if outcome.is_ok() {
            self.ledger.remove(id);
            return;
        }
        let failures = self
            .ledger
            .get(id)
            .and_then(|g| g.closing.as_ref())
            .map_or(0, |c| c.failures);
        let delay = CLOSE_RETRY_FIRST
            .saturating_mul(1 << failures.min(10))
            .min(CLOSE_RETRY_MAX);
        let error = failure.unwrap_or("close failed").to_string();
        let retry_at = super::now() + delay;
        self.ledger.close_failed(id, error, retry_at);
        if let Some(g) = self.ledger.get(id) {
            let msg = format!(
                "{}: {}: close failed: grant kept as closing, retry in {}s",
                g.addr,
                g.door,
                delay.as_secs()
            );
            self.line(&msg);
        }
    }

    /// Hand native rule ops to the firewall queue; the outcome comes back as a [`Done`].
    pub(super) fn submit_fw(
        &mut self,
        grant: Option<GrantId>,
        door: &str,
        addr: IpAddr,
        kind: TaskKind,
        ops: Vec<Op>,
    ) {
        let q = self.fw();
        let key: Key = (door.to_string(), addr);
        self.submit_keyed(q, key, grant, door, addr, kind, ops);
    }

    /// Hand nftables element ops to the nftables queue, ordered after every element change of
    /// `addr` (doors that open the same port share its element).
    pub(super) fn submit_nft(
        &mut self,
        grant: Option<GrantId>,
        door: &str,
        addr: IpAddr,
        kind: TaskKind,
        ops: Vec<Op>,
    ) {
        let q = self.nft.queue();
        let key: Key = (NFT_CHAIN.to_string(), addr);
        self.submit_keyed(q, key, grant, door, addr, kind, ops);
    }

    /// Hand ops to `queue` (the iptables or the nftables one), after the ops of `key`.
    #[allow(clippy::too_many_arguments)]
    fn submit_keyed(
        &mut self,
        queue: crate::firewall::FirewallQueue,
        key: Key,
        grant: Option<GrantId>,
        door: &str,
        addr: IpAddr,
        kind: TaskKind,
        ops: Vec<Op>,
    ) {
        let done_tx = self.done_tx.clone();
        let door = door.to_string();
        self.inflight += 1;
        // Write-ahead: an open goes to the firewall only once the state file records it; and
        // nothing overtakes an op of the same (door, source) that is still waiting.
        // (Not for nftables elements: the kernel removes them at their timeout anyway.)
        let kernel = grant
            .and_then(|id| self.ledger.get(id))
            .is_some_and(|g| g.close.kernel_expires());
        let barrier = if kind == TaskKind::Start && !kernel {
            self.state_barrier()
        } else {
            None
        };
        let prev = self.chains.get(&key).filter(|rx| !*rx.borrow()).cloned();
        let refused = Done {
            grant,
            door: door.clone(),
            addr,
            kind,
            pooled: false,
            reinserted: false,
            total: 0,
            absent: 0,
            outcome: Outcome::NotRecorded,
        };
        let refuse_tx = done_tx.clone();
        let reply: crate::firewall::Reply = Box::new(move |outcomes: Vec<OpOutcome>| {
            let total = outcomes.len();
            let absent = outcomes.iter().filter(|o| **o == OpOutcome::Absent).count();
            let reinserted = kind == TaskKind::Ensure && absent > 0;
            let failed: Vec<String> = outcomes
                .into_iter()
                .filter_map(|o| match o {
                    OpOutcome::Failed(m) => Some(m),
                    _ => None,
                })
                .collect();
            let outcome = if failed.is_empty() {
                Outcome::Ok
            } else {
                Outcome::Firewall(failed.join("; "))
            };
            let _ = done_tx.send(Done {
                grant,
                door,
                addr,
                kind,
                pooled: false,
                reinserted,
                total,
                absent,
                outcome,
            });
        });
        if barrier.is_none() && prev.is_none() {
            queue.submit(ops, reply);
            return;
        }
        let (tx, rx) = watch::channel(false);
        self.chains.insert(key, rx);
        tokio::spawn(async move {
            if let Some(mut p) = prev {
                let _ = p.wait_for(|d| *d).await;
            }
            // Fail closed: an open whose record did not reach the disk is not made.
            if let Some(b) = barrier {
                if !b.await {
                    let _ = tx.send(true);
                    let _ = refuse_tx.send(refused);
                    return;
                }
            }
            queue.submit(ops, reply);
            let _ = tx.send(true);
        });
    }

    /// Run door command `actions` through the pool, after the previous actions of the same
    /// (door, source) finished. Callers check [`Self::pool_has_room`] for starts first.
    pub(super) fn spawn(
        &mut self,
        grant: Option<GrantId>,
        door: &str,
        addr: IpAddr,
        kind: TaskKind,
        actions: Vec<Action>,
    ) {
        self.spawn_in(door, grant, door, addr, kind, actions);
    }

    /// [`Self::spawn`], ordered after the actions of (`chain_door`, `addr`).
    pub(super) fn spawn_in(
        &mut self,
        chain_door: &str,
        grant: Option<GrantId>,
        door: &str,
        addr: IpAddr,
        kind: TaskKind,
        actions: Vec<Action>,
    ) {
        let key: Key = (chain_door.to_string(), addr);
        let (tx, rx) = watch::channel(false);
        let after = self.chains.insert(key, rx);
        let exec = self.exec.clone();
        let pooled = kind != TaskKind::Close;
        let pool = if pooled {
            self.pool.clone()
        } else {
            self.close_pool.clone()
        };
        let done_tx = self.done_tx.clone();
        let door = door.to_string();
        self.inflight += 1;
        if pooled {
            self.pooled += 1;
        }
        let barrier = if kind == TaskKind::Start {
            self.state_barrier()
        } else {
            None
        };
        tokio::spawn(async move {
            if let Some(mut prev) = after {
                let _ = prev.wait_for(|d| *d).await;
            }
            // Fail closed: an open whose record did not reach the disk is not made.
            let recorded = match barrier {
                Some(b) => b.await,
                None => true,
            };
            let run = |a: Action| {
                let exec = exec.clone();
                let pool = pool.clone();
                async move {
                    let _permit = pool.acquire_owned().await;
                    exec.run(a).await
                }
            };
            let mut reinserted = false;
            let mut outcome = Outcome::Ok;
            if !recorded {
                outcome = Outcome::NotRecorded;
            } else if kind == TaskKind::Ensure {
                // [check, insert]: insert only when the check fails.
                let mut it = actions.into_iter();
                if let (Some(check), Some(insert)) = (it.next(), it.next()) {
                    if !run(check).await.is_ok() {
                        reinserted = true;
                        outcome = run(insert).await;
                    }
                }
            } else {
                for a in actions {
                    let o = run(a).await;
                    if !o.is_ok() {
                        outcome = o;
                    }
                }
            }
            let _ = tx.send(true);
            let _ = done_tx.send(Done {
                grant,
                door,
                addr,
                kind,
                pooled,
                reinserted,
                total: 0,
                absent: 0,
                outcome,
            });
        });
    }

    pub(super) fn on_done(&mut self, d: Done) {
        self.inflight = self.inflight.saturating_sub(1);
        if d.pooled {
            self.pooled = self.pooled.saturating_sub(1);
            // Room in the pool: command doors' waiting starts may go.
            self.serve_starts(super::now());
        }
        // Forget finished chains (whichever door they were keyed by).
        // Amortised: only when the map doubled since the last sweep.
        if self.chains.len() >= self.chains_gc_at || self.inflight == 0 {
            self.chains.retain(|_, rx| !*rx.borrow());
            self.chains_gc_at = (2 * self.chains.len()).max(64);
        }
        if d.reinserted && d.outcome.is_ok() {
            let msg = format!("{}: {}: rule was missing, re-inserted", d.addr, d.door);
            self.line(&msg);
        }
        if let (TaskKind::Verify, Some(id)) = (d.kind, d.grant) {
            self.on_verified(id, &d.outcome, d.absent, d.total);
            return;
        }
        let failure = match &d.outcome {
            Outcome::Ok => None,
            Outcome::Failed { code, stderr } => {
                let msg = match code {
                    Some(c) => format!("{}: command returned non-zero status code ({c})", d.door),
                    None => format!("{}: command killed by a signal", d.door),
                };
                if !stderr.is_empty() {
                    tracing::warn!(door = %d.door, "command stderr: {stderr}");
                }
                let full = if stderr.is_empty() {
                    msg.clone()
                } else {
                    format!("{msg}: {stderr}")
                };
                Some((msg, full))
            }
            Outcome::SpawnError(e) => {
                let msg = format!("{}: command failed to start: {e}", d.door);
                Some((msg.clone(), msg))
            }
            Outcome::TimedOut(limit) => {
                let msg = format!(
                    "{}: command still running after {}s: killed",
                    d.door,
                    limit.as_secs()
                );
                Some((msg.clone(), msg))
            }
            Outcome::Firewall(e) => {
                let msg = format!("{}: {}: firewall: {e}", d.addr, d.door);
                Some((msg.clone(), msg))
            }
            Outcome::NotRecorded => None,
        };
        if d.outcome == Outcome::NotRecorded {
            self.refuse_unrecorded(&d);
            return;
        }
        let message = failure.as_ref().map(|(_, m)| m.clone());
        if let Some((line, message)) = failure {
            self.stats.commands_failed += 1;
            self.line(&line);
            let door = d.door.clone();
            self.emit(|| ipc::EventKind::CommandFailed { door, message });
        }
        if let (TaskKind::Close, Some(id)) = (d.kind, d.grant) {
            self.on_close_done(id, &d.outcome, message.as_deref());
        }
        if d.kind == TaskKind::Start && !d.outcome.is_ok() {
            // Undo whatever part did succeed (one of several native rules, half a script):
            // close the grant now instead of forgetting it with a rule possibly left open.
            if let Some(g) = d.grant.and_then(|id| self.ledger.begin_close(id)) {
                let msg = format!(
                    "{}: {}: the start command failed: closing the grant",
                    g.addr, g.door
                );
                self.line(&msg);
                self.close_grant(g);
            }
        }
    }
}
