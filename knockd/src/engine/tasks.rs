//! Handing tasks to the command runner, and taking their results back: starts, checks and
//! closes of grants (see `runner` for the pools and the order per (door, source)).

use super::events::OpenRefusal;
use super::messages::{Done, Job, TaskKind};
use super::runner::{Barrier, Chain};
use super::{Engine, CLOSE_RETRY_FIRST, CLOSE_RETRY_MAX};
use crate::action::{Action, Executor, Outcome};
use crate::firewall::nftables::side as nft_side;
use crate::firewall::Op;
use crate::grants::{Close, Grant, GrantId};
use crate::knocklog::LogSink;
use std::net::IpAddr;
use std::time::Instant;

impl<E: Executor, L: LogSink> Engine<E, L> {
    /// Count a refused open and log it, at most one summary line every 10 s.
    pub(super) fn refuse(&mut self, why: OpenRefusal, door: &str, src: IpAddr, now: Instant) {
        self.events.refuse(why, door, src, now, &self.config);
    }

    /// An open whose record could not be written to the state file: nothing ran (fail
    /// closed), the grant is forgotten, the refusal counted and logged.
    fn refuse_unrecorded(&mut self, d: &Done) {
        self.events.stats.refused_state_unwritable += 1;
        if let Some(id) = d.job.grant {
            self.ledger.remove(id);
        }
        let msg = format!(
            "{}: {}: open refused: the state file cannot record it (see knockctl status), so nothing was opened",
            d.job.addr, d.job.door
        );
        self.line(&msg);
        self.persist();
    }

    /// Room in the pool for one more start or check?
    pub(super) fn pool_has_room(&self) -> bool {
        self.runner.has_room()
    }

    /// Write-ahead: a start goes to the firewall or runs only once the state file records it
    /// (not nftables elements: the kernel removes them at their timeout anyway).
    fn start_barrier(&mut self, grant: Option<GrantId>, kind: TaskKind) -> Option<Barrier> {
        let kernel = grant
            .and_then(|id| self.ledger.get(id))
            .is_some_and(|g| g.close.kernel_expires());
        if kind != TaskKind::Start || kernel {
            return None;
        }
        self.persist();
        self.persistence.barrier()
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

    /// Hand native rule ops to the iptables queue, after the tasks of (door, source); the
    /// outcome comes back as a [`Done`].
    pub(super) fn submit_fw(
        &mut self,
        grant: Option<GrantId>,
        door: &str,
        addr: IpAddr,
        kind: TaskKind,
        ops: Vec<Op>,
    ) {
        let queue = self.runner.fw();
        let barrier = self.start_barrier(grant, kind);
        let job = Job::new(grant, door, addr, kind);
        self.runner
            .submit(queue, Chain::door(door, addr), job, ops, barrier);
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
        let queue = self.nft.queue();
        let barrier = self.start_barrier(grant, kind);
        let job = Job::new(grant, door, addr, kind);
        self.runner
            .submit(queue, Chain::NftElems(addr), job, ops, barrier);
    }

    /// Run door command `actions` through the pool, after the tasks of (door, source).
    /// Callers check [`Self::pool_has_room`] for starts first.
    pub(super) fn spawn(
        &mut self,
        grant: Option<GrantId>,
        door: &str,
        addr: IpAddr,
        kind: TaskKind,
        actions: Vec<Action>,
    ) {
        self.spawn_in(Chain::door(door, addr), grant, door, addr, kind, actions);
    }

    /// [`Self::spawn`], ordered after the tasks of `chain`.
    pub(super) fn spawn_in(
        &mut self,
        chain: Chain,
        grant: Option<GrantId>,
        door: &str,
        addr: IpAddr,
        kind: TaskKind,
        actions: Vec<Action>,
    ) {
        let barrier = self.start_barrier(grant, kind);
        let job = Job::new(grant, door, addr, kind);
        self.runner.spawn(chain, job, actions, barrier);
    }

    /// A task finished: log a failure, finish a close, undo a failed start.
    pub(super) fn on_done(&mut self, d: Done) {
        self.runner.finished(&d);
        if d.pooled {
            // Room in the pool: command doors' waiting starts may go.
            self.serve_starts(super::now());
        }
        if d.reinserted && d.outcome.is_ok() {
            let msg = format!(
                "{}: {}: rule was missing, re-inserted",
                d.job.addr, d.job.door
            );
            self.line(&msg);
        }
        if let (TaskKind::Verify, Some(id)) = (d.job.kind, d.job.grant) {
            self.on_verified(id, &d.outcome, d.absent, d.total);
            return;
        }
        let failure = match &d.outcome {
            Outcome::Ok => None,
            Outcome::Failed { code, stderr } => {
                let msg = match code {
                    Some(c) => format!(
                        "{}: command returned non-zero status code ({c})",
                        d.job.door
                    ),
                    None => format!("{}: command killed by a signal", d.job.door),
                };
                if !stderr.is_empty() {
                    tracing::warn!(door = %d.job.door, "command stderr: {stderr}");
                }
                let full = if stderr.is_empty() {
                    msg.clone()
                } else {
                    format!("{msg}: {stderr}")
                };
                Some((msg, full))
            }
            Outcome::SpawnError(e) => {
                let msg = format!("{}: command failed to start: {e}", d.job.door);
                Some((msg.clone(), msg))
            }
            Outcome::TimedOut(limit) => {
                let msg = format!(
                    "{}: command still running after {}s: killed",
                    d.job.door,
                    limit.as_secs()
                );
                Some((msg.clone(), msg))
            }
            Outcome::Firewall(e) => {
                let msg = format!("{}: {}: firewall: {e}", d.job.addr, d.job.door);
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
            self.events.command_failed(&line, &d.job.door, message);
        }
        if let (TaskKind::Close, Some(id)) = (d.job.kind, d.job.grant) {
            self.on_close_done(id, &d.outcome, message.as_deref());
        }
        if d.job.kind == TaskKind::Start && !d.outcome.is_ok() {
            // Undo whatever part did succeed (one of several native rules, half a script):
            // close the grant now instead of forgetting it with a rule possibly left open.
            if let Some(g) = d.job.grant.and_then(|id| self.ledger.begin_close(id)) {
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
