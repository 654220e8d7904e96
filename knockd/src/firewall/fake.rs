//! A firewall that keeps its rules in memory and records every batch: for tests and
//! benchmarks without root. It behaves like a real one (a delete of a missing rule is
//! `Absent`, a refresh re-adds a missing rule), can be made to fail ops, and to be slow.

use super::spa_drop::{self, Occasion};
use super::{BoxFuture, Firewall, FwRule, Op, OpOutcome};
use crate::firewall::nftables::listing::KernelElem;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Default)]
struct Inner {
    batches: Vec<Vec<Op>>,
    present: HashSet<FwRule>,
    fail_on: Vec<String>,
    delay: Duration,
    /// What `list` answers (None: the backend cannot list, like iptables).
    listing: Option<Vec<KernelElem>>,
    /// Every table set-up script, in order.
    scripts: Vec<String>,
    /// Someone removed the table: ops fail until a repair re-creates it.
    table_gone: bool,
    /// Every `spa_drop` asked for: the port wanted (None: no rule) and why not.
    spa_drops: Vec<(Option<u16>, &'static str)>,
    /// The occasion of each of them.
    spa_occasions: Vec<Occasion>,
    /// The ports of the SPA drop rules in INPUT, like `iptables -S INPUT` lists them.
    spa_listed: Vec<u16>,
    /// How long each `spa_drop` takes; how many run now, and the most that ever ran at once.
    spa_delay: Duration,
    spa_running: usize,
    spa_most_at_once: usize,
    /// Applies small batches directly (`apply_now`), like nftables' netlink socket.
    immediate: bool,
}

/// Cheap to clone; clones share their rules and records.
#[derive(Debug, Clone, Default)]
pub struct RecordingFirewall(Arc<Mutex<Inner>>);

impl RecordingFirewall {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        match self.0.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// Every batch applied so far.
    pub fn batches(&self) -> Vec<Vec<Op>> {
        self.with(|i| i.batches.clone())
    }

    /// Every op applied so far, as text (`add INPUT 22/tcp from 10.0.0.2 (ssh)`).
    pub fn ops(&self) -> Vec<String> {
        self.with(|i| i.batches.iter().flatten().map(Op::to_string).collect())
    }

    /// The rules in force now.
    pub fn rules(&self) -> Vec<FwRule> {
        self.with(|i| i.present.iter().cloned().collect())
    }

    /// Ops whose text contains `s` fail from now on.
    pub fn fail_on(&self, s: &str) {
        self.with(|i| i.fail_on.push(s.to_string()));
    }

    /// Ops stop failing.
    pub fn heal(&self) {
        self.with(|i| i.fail_on.clear());
    }

    /// Someone else removed (or added) a rule behind knockd's back.
    pub fn remove_rule(&self, r: &FwRule) {
        self.with(|i| i.present.remove(r));
    }
    pub fn add_rule(&self, r: FwRule) {
        self.with(|i| i.present.insert(r));
    }

    /// `list` answers `elems` from now on (a kernel that expires rules).
    pub fn set_listing(&self, elems: Vec<KernelElem>) {
        self.with(|i| i.listing = Some(elems));
    }

    /// Every table set-up script applied so far (a set-up fails like an op: `fail_on` text it
    /// contains).
    pub fn scripts(&self) -> Vec<String> {
        self.with(|i| i.scripts.clone())
    }

    /// Another program removed the table (`nft flush ruleset`): every op fails until a
    /// `repair` re-creates it (empty: the rules in force are gone too).
    pub fn lose_table(&self) {
        self.with(|i| {
            i.table_gone = true;
            i.present.clear();
        });
    }

    /// Every SPA drop rule asked for (`spa_drop`), in order: the port, or None and why.
    pub fn spa_drops(&self) -> Vec<(Option<u16>, &'static str)> {
        self.with(|i| i.spa_drops.clone())
    }

    /// The occasion of every `spa_drop` asked for, in order.
    pub fn spa_occasions(&self) -> Vec<Occasion> {
        self.with(|i| i.spa_occasions.clone())
    }

    /// The ports of the SPA drop rules in INPUT now.
    pub fn spa_listed(&self) -> Vec<u16> {
        self.with(|i| i.spa_listed.clone())
    }

    /// Another program removed the SPA drop rules (`iptables -F INPUT`).
    pub fn lose_spa_drop(&self) {
        self.with(|i| i.spa_listed.clear());
    }

    /// Each `spa_drop` takes this long (tokio time).
    pub fn set_spa_delay(&self, d: Duration) {
        self.with(|i| i.spa_delay = d);
    }

    /// The most `spa_drop`s that ever ran at once.
    pub fn spa_most_at_once(&self) -> usize {
        self.with(|i| i.spa_most_at_once)
    }

    /// Each batch takes this long.
    pub fn set_delay(&self, d: Duration) {
        self.with(|i| i.delay = d);
    }

    /// Small batches may be applied at once on the caller's thread (`apply_now`), the way
    /// nftables' netlink socket takes them; `delay` is then only for batches through `apply`.
    pub fn set_immediate(&self, on: bool) {
        self.with(|i| i.immediate = on);
    }

    fn record(&self, ops: Vec<Op>) -> Vec<OpOutcome> {
        self.with(|i| {
            let out = ops
                .iter()
                .map(|op| {
                    let text = op.to_string();
                    if i.table_gone {
                        return OpOutcome::Failed(format!("table is missing: {text}"));
                    }
                    if i.fail_on.iter().any(|f| text.contains(f.as_str())) {
                        return OpOutcome::Failed(format!("injected failure: {text}"));
                    }
                    let r = op.rule().clone();
                    match op {
                        Op::Add { .. } => {
                            i.present.insert(r);
                            OpOutcome::Ok
                        }
                        Op::Delete { .. } if i.present.remove(&r) => OpOutcome::Ok,
                        Op::Check { .. } if i.present.contains(&r) => OpOutcome::Ok,
                        Op::Delete { .. } | Op::Check { .. } => OpOutcome::Absent,
                        Op::Refresh { .. } if i.present.insert(r) => OpOutcome::Absent,
                        Op::Refresh { .. } => OpOutcome::Ok,
                    }
                })
                .collect();
            i.batches.push(ops);
            out
        })
    }
}

impl Firewall for RecordingFirewall {
    fn name(&self) -> &'static str {
        "recording"
    }

    fn apply(&self, ops: Vec<Op>) -> BoxFuture<Vec<OpOutcome>> {
        let me = self.clone();
        Box::pin(async move {
            let delay = me.with(|i| i.delay);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            me.record(ops)
        })
    }

    /// Like a transaction: all applied (every op Ok), or nothing done.
    fn apply_now(&self, ops: &[Op]) -> bool {
        let ok = |i: &Inner, op: &Op| {
            let text = op.to_string();
            !i.table_gone
                && !i.fail_on.iter().any(|f| text.contains(f.as_str()))
                && match op {
                    Op::Add { .. } => true,
                    Op::Refresh { rule, .. } | Op::Delete { rule } => i.present.contains(rule),
                    Op::Check { .. } => false,
                }
        };
        if !self.with(|i| i.immediate && ops.iter().all(|op| ok(i, op))) {
            return false;
        }
        self.record(ops.to_vec());
        true
    }

    fn list(&self) -> Option<BoxFuture<Result<Vec<KernelElem>, String>>> {
        let listing = self.with(|i| i.listing.clone())?;
        Some(Box::pin(async move { Ok(listing) }))
    }

    /// Like iptables: the rules in force in `chains` (every rule here is one of knockd's).
    fn marked(&self, chains: Vec<String>) -> Option<BoxFuture<Result<Vec<FwRule>, String>>> {
        let mut rules: Vec<FwRule> = self.with(|i| {
            i.present
                .iter()
                .filter(|r| chains.contains(&r.chain))
                .cloned()
                .collect()
        });
        rules.sort_by_key(|r| (r.src, r.port));
        Some(Box::pin(async move { Ok(rules) }))
    }

    /// Like iptables: records what is asked, brings its INPUT listing in line by the same
    /// [`spa_drop::plan`] and answers the lines [`spa_drop::said`] gives (program `fake`),
    /// once its delay is over.
    fn spa_drop(
        &self,
        tag: String,
        port: Option<u16>,
        unwanted: &'static str,
        occasion: Occasion,
    ) -> Option<BoxFuture<Vec<String>>> {
        let delay = self.with(|i| {
            i.spa_drops.push((port, unwanted));
            i.spa_occasions.push(occasion);
            i.spa_delay
        });
        let me = self.clone();
        Some(Box::pin(async move {
            me.with(|i| {
                i.spa_running += 1;
                i.spa_most_at_once = i.spa_most_at_once.max(i.spa_running);
            });
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            me.with(|i| {
                i.spa_running -= 1;
                let steps = spa_drop::plan(port, &i.spa_listed);
                let mut lines = Vec::new();
                for step in steps {
                    match step {
                        spa_drop::Step::Insert(p) => i.spa_listed.insert(0, p),
                        spa_drop::Step::Keep(_) => {}
                        spa_drop::Step::Delete(p, _) => {
                            if let Some(at) = i.spa_listed.iter().position(|&l| l == p) {
                                i.spa_listed.remove(at);
                            }
                        }
                    }
                    lines.extend(spa_drop::said(step, occasion, "fake", &tag, unwanted));
                }
                lines
            })
        }))
    }

    fn repair(&self, script: String) -> BoxFuture<Result<bool, String>> {
        let r = self.with(|i| {
            let gone = std::mem::take(&mut i.table_gone);
            if gone {
                i.scripts.push(script);
            }
            gone
        });
        Box::pin(async move { Ok(r) })
    }

    fn set_up(&self, script: String) -> BoxFuture<Result<(), String>> {
        let r = self.with(|i| {
            if let Some(f) = i.fail_on.iter().find(|f| script.contains(f.as_str())) {
                return Err(format!("injected failure: {f}"));
            }
            i.scripts.push(script);
            Ok(())
        });
        Box::pin(async move { r })
    }
}
