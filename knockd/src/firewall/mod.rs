//! Firewall backends for native doors (`Open = 22/tcp`).
//!
//! The engine never runs a firewall program itself. It hands the rules of a grant, as [`Op`]s,
//! to a [`FirewallQueue`]: one task that owns the backend and applies what is queued as one
//! batch ([`Firewall::apply`]). Ops that arrive while a batch is being applied go into the next
//! batch, so a lone knock pays no batching delay and a flood of grants costs one transaction per
//! batch instead of one process per rule. One batch at a time, in submission order: the ops of
//! one (door, source) can never overtake each other. A backend that can apply a few ops in
//! microseconds without waiting (nftables) lets a small batch that finds the queue empty skip
//! the hand-off to the queue's task ([`direct`] applies: a burst, then a rate).
//!
//! # Plugging in a backend
//!
//! Implement [`Firewall`] (see [`iptables::IptablesRestore`], [`nftables::NftFirewall`] and
//! the recording [`fake::RecordingFirewall`]) and pass it to the daemon as
//! [`crate::serve::Deps`]`::firewall` (`Firewall = iptables`) or `nft_firewall`
//! (`Firewall = nftables`), e.g. `Arc::new(MyBackend::new(...))`:
//!
//! - `apply` receives a non-empty batch and returns **one [`OpOutcome`] per op, in order**.
//!   It runs on the queue's task: it may take as long as it needs (the engine is not waiting),
//!   but it must not block a thread (use `tokio::process`, async netlink...) and it must bound
//!   its own time (see [`crate::proc`]'s limits): the queue waits for it.
//! - Prefer one kernel transaction per batch. When the transaction fails, find out which ops
//!   failed (retry them alone) so that one stale delete does not fail the other grants.
//! - [`Op::Add`] puts the rule first (an `-I`): it must win over later rules of its chain.
//!   Its `timeout` is when the grant ends: a backend whose kernel expires rules on its own
//!   (nftables set elements with a timeout) uses it, so the rule goes even if knockd dies;
//!   iptables ignores it (knockd deletes the rule at the deadline).
//! - [`Op::Delete`] of a rule that is not there is [`OpOutcome::Absent`], not a failure: the
//!   grant is closed either way.
//! - [`Op::Refresh`] (a re-knock of an open grant; a burst of three, then at most one per
//!   grant per second) makes sure the rule is there, re-adding it if someone removed it
//!   ([`OpOutcome::Absent`]), and moves an expiring rule's timeout.
//! - [`Op::Check`] (at start, for grants restored from the state file): [`OpOutcome::Ok`] if
//!   the rule is present, [`OpOutcome::Absent`] if not.
//! - `apply_now` (optional): apply a few ops at once on the caller's thread, all or nothing,
//!   when that takes well under 100 µs and never waits; false hands them to `apply`.
//! - `name` appears in logs and `knockctl status`.
//! - `list` (optional): a backend whose kernel expires rules reads them back, so that
//!   `knockctl list` shows the kernel's time left and the ledger follows the kernel.
//! - `spa_drop` (optional): a backend whose rules share INPUT with the admin's (iptables)
//!   keeps the SPA port silent with a DROP rule of its own (see [`spa_drop`]).
//! - `set_up` and `repair` (optional): a backend that owns a table brings it in line with the
//!   config, and re-creates it when another program removed it.

pub mod direct;
pub mod fake;
pub mod iptables;
pub mod nftables;
pub mod spa_drop;

use crate::config::Proto;
use crate::firewall::nftables::listing::KernelElem;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A boxed future that is `Send` (what [`Firewall::apply`] returns, so backends can be chosen at
/// run time and held as `Arc<dyn Firewall>`).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// One rule of a native door: accept `proto` to `port` from `src`, in `chain`. Recorded in the
/// state file (its fields are data: the backend builds the rule from them, nothing else).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct FwRule {
    pub chain: String,
    pub src: IpAddr,
    pub proto: Proto,
    pub port: u16,
    /// Door name, recorded in a rule comment so admins can see who added the rule.
    pub door: String,
    /// The knockd instance that added it (see [`crate::config::Options::instance_tag`]), in
    /// the comment: `knockd@TAG:door`. None: a rule of an older version (`knockd:door`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

impl FwRule {
    /// The comment tag: `knockd@<instance>:<door>` (`knockd:<door>` without an instance),
    /// with characters firewalls or shells dislike replaced.
    pub fn comment(&self) -> String {
        let name: String = self
            .door
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_.:-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .take(200)
            .collect();
        match &self.instance {
            Some(tag) => format!("knockd@{}:{name}", sanitize_tag(tag)),
            None => format!("knockd:{name}"),
        }
    }

    /// A chain name the backends accept: letters, digits, `_-.`, at most 28 bytes (iptables'
    /// limit). Checked on rules read from the state file before anything runs them.
    pub fn is_valid(&self) -> bool {
        self.instance.as_deref().is_none_or(is_instance_tag) && Self::chain_name_ok(&self.chain)
    }

    /// A chain name the backends accept (see [`Self::is_valid`]).
    pub fn chain_name_ok(chain: &str) -> bool {
        !chain.is_empty()
            && chain.len() <= 28
            && !chain.starts_with('-')
            && chain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    }
}

/// An instance tag as knockd makes them: 8 lowercase hex digits.
pub fn is_instance_tag(t: &str) -> bool {
    t.len() == 8
        && t.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A tag from the state file is data: anything but hex digits goes (checked by `is_valid`
/// before a rule runs; this keeps the comment one word whatever happens).
fn sanitize_tag(t: &str) -> String {
    t.chars().filter(char::is_ascii_hexdigit).take(16).collect()
}

impl std::fmt::Display for FwRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}/{} from {} ({})",
            self.chain, self.port, self.proto, self.src, self.door
        )
    }
}

/// One change to the firewall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Open: the rule goes first in its chain. `timeout`: until the grant's deadline (None: no
    /// deadline), for backends that expire rules in the kernel.
    Add {
        rule: FwRule,
        timeout: Option<Duration>,
    },
    /// Close. A rule already gone is [`OpOutcome::Absent`].
    Delete { rule: FwRule },
    /// Re-knock: ensure the rule is there (re-add when missing), move its timeout.
    Refresh {
        rule: FwRule,
        timeout: Option<Duration>,
    },
    /// Is the rule present?
    Check { rule: FwRule },
}

impl Op {
    pub fn rule(&self) -> &FwRule {
        match self {
            Op::Add { rule, .. }
            | Op::Delete { rule }
            | Op::Refresh { rule, .. }
            | Op::Check { rule } => rule,
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = match self {
            Op::Add { .. } => "add",
            Op::Delete { .. } => "delete",
            Op::Refresh { .. } => "refresh",
            Op::Check { .. } => "check",
        };
        write!(f, "{verb} {}", self.rule())
    }
}

/// What became of one op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpOutcome {
    /// Done (Add, Delete, Refresh of a present rule), or present (Check).
    Ok,
    /// The rule was not there: Delete and Check report it; Refresh has added it again.
    Absent,
    /// Not done; the backend's message (the program's stderr, a time-out...).
    Failed(String),
}

impl OpOutcome {
    pub fn is_failed(&self) -> bool {
        matches!(self, OpOutcome::Failed(_))
    }
}

/// A firewall backend for native doors. See the module documentation for the contract.
pub trait Firewall: Send + Sync + 'static {
    /// Short name for logs (`iptables`, `nftables`).
    fn name(&self) -> &'static str;
    /// Apply `ops` (one transaction when possible); one outcome per op, in order.
    fn apply(&self, ops: Vec<Op>) -> BoxFuture<Vec<OpOutcome>>;
    /// A direct apply (see [`direct`]): a few `ops` here and now, on the caller's
    /// thread, when the backend can do it in well under 100 µs without waiting (nftables'
    /// netlink socket, when nothing of its own is queued). true: every op was applied, as
    /// [`OpOutcome::Ok`]. false: nothing was done (a failed transaction changes nothing), and
    /// the ops go through [`Self::apply`]. Default: never.
    fn apply_now(&self, _ops: &[Op]) -> bool {
        false
    }
    /// The most ops the queue hands `apply` at once (a backend that splits its own
    /// transactions may take more).
    fn max_batch(&self) -> usize {
        MAX_BATCH_OPS
    }
    /// Backends whose kernel expires rules on its own (nftables): the elements the kernel holds
    /// now, with the time it has left on each, read after everything applied before. None: the
    /// backend cannot tell (the ledger is the truth).
    fn list(&self) -> Option<BoxFuture<Result<Vec<KernelElem>, String>>> {
        None
    }
    /// Backends whose rules carry knockd's mark in a chain shared with others (iptables): the
    /// rules of `chains` (both families) that carry a knockd mark, any instance's, in exactly
    /// the shape knockd writes them; one listing per chain and family. None: no such rules.
    fn marked(&self, _chains: Vec<String>) -> Option<BoxFuture<Result<Vec<FwRule>, String>>> {
        None
    }
    /// Backends whose rules share INPUT with the admin's (iptables): make INPUT of both
    /// families hold exactly instance `tag`'s DROP rule for UDP to `port` (the SPA port; None:
    /// no such rule; `unwanted` says why, for the log; `occasion`: start, reload, the periodic
    /// check or stop, for what the lines say), see [`spa_drop`]. Resolves to the lines to log
    /// (failures start with `error: `; a check that finds the rule in place: none). None: the
    /// backend keeps the port silent otherwise (nftables: its table) or not at all.
    fn spa_drop(
        &self,
        _tag: String,
        _port: Option<u16>,
        _unwanted: &'static str,
        _occasion: spa_drop::Occasion,
    ) -> Option<BoxFuture<Vec<String>>> {
        None
    }
    /// Backends that own a table of their own (nftables): bring it in line with `script`, the
    /// table's definition as the backend's own text (one transaction). Default: nothing to do.
    fn set_up(&self, _script: String) -> BoxFuture<Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    /// Backends that own a table: check it against `script` and, when another program removed
    /// or changed it (`nft flush ruleset`), re-create it with `script`. Ok(true): re-created
    /// (the elements it held may be gone). Default: nothing to check.
    fn repair(&self, _script: String) -> BoxFuture<Result<bool, String>> {
        Box::pin(async { Ok(false) })
    }
}

/// Called with the outcomes of one submitted group of ops, on the queue's task.
pub type Reply = Box<dyn FnOnce(Vec<OpOutcome>) + Send>;

struct Job {
    ops: Vec<Op>,
    reply: Reply,
}

/// Largest batch handed to the backend at once.
pub const MAX_BATCH_OPS: usize = 2048;

/// The single owner of a backend: batches what is queued, applies it, answers each submitter.
/// A small batch that finds the queue empty may be applied by the submitter itself (the
/// [`direct`] applies).
#[derive(Clone)]
pub struct FirewallQueue {
    tx: mpsc::UnboundedSender<Job>,
    name: &'static str,
    fw: Arc<dyn Firewall>,
    /// Jobs sent to the task and not yet answered: direct applies only at 0, so a
    /// batch applied at once is always ordered after everything submitted before it.
    queued: Arc<AtomicUsize>,
    direct: Arc<Mutex<direct::Budget>>,
}

impl FirewallQueue {
    /// Start the queue's task on the current runtime.
    pub fn start(fw: Arc<dyn Firewall>) -> FirewallQueue {
        let (tx, rx) = mpsc::unbounded_channel();
        let name = fw.name();
        let queued = Arc::new(AtomicUsize::new(0));
        tokio::spawn(Self::serve(fw.clone(), rx, queued.clone()));
        FirewallQueue {
            tx,
            name,
            fw,
            queued,
            direct: Arc::default(),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Queue `ops` (applied in order, after everything submitted before); `reply` gets their
    /// outcomes. The queue is bounded by what the engine lets in (MaxGrants, one refresh per
    /// grant per second), not here.
    pub fn submit(&self, ops: Vec<Op>, reply: Reply) {
        if ops.is_empty() {
            reply(Vec::new());
            return;
        }
        if self.direct(&ops) {
            reply(vec![OpOutcome::Ok; ops.len()]);
            return;
        }
        self.send(Job { ops, reply });
    }

    /// Apply `ops` at once, directly, when that is allowed: nothing queued, the budget of
    /// budget not spent, and the backend able to (see [`Firewall::apply_now`]).
    fn direct(&self, ops: &[Op]) -> bool {
        if self.queued.load(Ordering::SeqCst) != 0 {
            return false;
        }
        let allowed = match self.direct.lock() {
            Ok(mut budget) => budget.take(ops.len(), Instant::now()),
            Err(_) => false,
        };
        allowed && self.fw.apply_now(ops)
    }

    fn send(&self, job: Job) {
        self.queued.fetch_add(1, Ordering::SeqCst);
        if let Err(mpsc::error::SendError(job)) = self.tx.send(job) {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            let n = job.ops.len();
            (job.reply)(vec![
                OpOutcome::Failed(
                    "the firewall queue has stopped".into()
                );
                n
            ]);
        }
    }

    /// `reply` is called once everything submitted before has been applied.
    pub fn flush(&self, reply: Reply) {
        self.send(Job {
            ops: Vec::new(),
            reply,
        });
    }

    async fn serve(
        fw: Arc<dyn Firewall>,
        mut rx: mpsc::UnboundedReceiver<Job>,
        queued: Arc<AtomicUsize>,
    ) {
        let mut carry: Option<Job> = None;
        loop {
            let first = match carry.take() {
                Some(j) => j,
                None => match rx.recv().await {
                    Some(j) => j,
                    None => return,
                },
            };
            let mut n = first.ops.len();
            let mut jobs = vec![first];
            let max = fw.max_batch();
            while n < max {
                match rx.try_recv() {
                    Ok(j) if n + j.ops.len() > max => {
                        carry = Some(j);
                        break;
                    }
                    Ok(j) => {
                        n += j.ops.len();
                        jobs.push(j);
                    }
                    Err(_) => break,
                }
            }
            let mut ops = Vec::with_capacity(n);
            let mut replies = Vec::with_capacity(jobs.len());
            for j in jobs {
                replies.push((j.ops.len(), j.reply));
                ops.extend(j.ops);
            }
            let mut outcomes = if ops.is_empty() {
                Vec::new()
            } else {
                fw.apply(ops).await
            };
            outcomes.resize(n, OpOutcome::Failed("no outcome from the backend".into()));
            let mut it = outcomes.into_iter();
            let answered = replies.len();
            for (k, reply) in replies {
                reply(it.by_ref().take(k).collect());
            }
            queued.fetch_sub(answered, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::RecordingFirewall;
    use super::*;

    pub(crate) fn rule(src: &str, port: u16) -> FwRule {
        FwRule {
            chain: "INPUT".into(),
            src: src.parse().expect("ip"),
            proto: Proto::Tcp,
            port,
            door: "ssh".into(),
            instance: None,
        }
    }

    #[test]
    fn chain_names_from_the_state_file_are_validated() {
        assert!(rule("10.0.0.1", 22).is_valid());
        for bad in ["", "-F", "IN PUT", "a;b", "x\ny", &"A".repeat(29)] {
            let r = FwRule {
                chain: bad.into(),
                ..rule("10.0.0.1", 22)
            };
            assert!(!r.is_valid(), "{bad:?}");
        }
    }

    fn add(port: u16) -> Op {
        Op::Add {
            rule: rule("10.0.0.1", port),
            timeout: None,
        }
    }

    /// Submit `ops`; the receiver gets their outcomes.
    fn submit(q: &FirewallQueue, ops: Vec<Op>) -> tokio::sync::oneshot::Receiver<Vec<OpOutcome>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        q.submit(
            ops,
            Box::new(move |o| {
                let _ = tx.send(o);
            }),
        );
        rx
    }

    #[tokio::test]
    async fn a_lone_small_batch_is_applied_before_submit_returns() {
        let fw = RecordingFirewall::default();
        fw.set_immediate(true);
        fw.set_delay(Duration::from_secs(3600));
        let q = FirewallQueue::start(Arc::new(fw.clone()));
        let mut rx = submit(&q, vec![add(22)]);
        assert_eq!(
            rx.try_recv().ok(),
            Some(vec![OpOutcome::Ok]),
            "answered at once"
        );
        assert_eq!(fw.rules().len(), 1);
        // A failing op does nothing when applied directly and goes through the queue.
        fw.set_delay(Duration::ZERO);
        fw.fail_on("23/tcp");
        let rx = submit(&q, vec![add(23)]);
        assert!(rx.await.expect("reply")[0].is_failed());
        assert_eq!(fw.batches().len(), 2);
    }

    #[tokio::test]
    async fn a_direct_apply_never_overtakes_a_queued_batch() {
        let fw = RecordingFirewall::default();
        fw.set_immediate(true);
        fw.set_delay(Duration::from_millis(50));
        let q = FirewallQueue::start(Arc::new(fw.clone()));
        // Too large for a direct apply: queued, and slow.
        let big: Vec<Op> = (0..=direct::MAX_OPS as u16)
            .map(|i| add(1000 + i))
            .collect();
        let first = submit(&q, big);
        let second = submit(&q, vec![add(22)]);
        assert!(first.await.is_ok() && second.await.is_ok());
        // Queued behind the large batch (here merged into it), not applied before it.
        let ops = fw.ops();
        assert_eq!(ops.len(), direct::MAX_OPS + 2);
        assert!(ops[direct::MAX_OPS + 1].contains(" 22/tcp"), "{ops:?}");
        // The queue is empty again: direct applies again.
        let mut rx = submit(&q, vec![add(23)]);
        assert!(rx.try_recv().is_ok());
    }

    #[tokio::test]
    async fn a_burst_of_opens_spends_the_direct_budget_and_the_rest_is_batched() {
        let fw = RecordingFirewall::default();
        fw.set_immediate(true);
        fw.set_delay(Duration::from_millis(20));
        let q = FirewallQueue::start(Arc::new(fw.clone()));
        let replies: Vec<_> = (0..40u16)
            .map(|i| submit(&q, vec![add(2000 + i)]))
            .collect();
        for r in replies {
            assert_eq!(r.await.expect("reply"), vec![OpOutcome::Ok]);
        }
        let sizes: Vec<usize> = fw.batches().iter().map(Vec::len).collect();
        let direct_ones = sizes.iter().take_while(|&&n| n == 1).count();
        assert_eq!(direct_ones as u32, direct::BURST, "{sizes:?}");
        assert!(
            sizes.len() < 20,
            "the rest went into few batches: {sizes:?}"
        );
        assert_eq!(sizes.iter().sum::<usize>(), 40);
    }

    #[tokio::test]
    async fn ops_queued_while_a_batch_runs_go_together_into_the_next_one() {
        let fw = RecordingFirewall::default();
        fw.set_delay(Duration::from_millis(50));
        let q = FirewallQueue::start(Arc::new(fw.clone()));
        let (tx, mut rx) = mpsc::unbounded_channel();
        for i in 0..5u16 {
            let tx = tx.clone();
            q.submit(
                vec![Op::Add {
                    rule: rule("10.0.0.1", 1000 + i),
                    timeout: None,
                }],
                Box::new(move |o| {
                    let _ = tx.send((i, o));
                }),
            );
            if i == 0 {
                // Let the first batch start alone.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(rx.recv().await.expect("reply"));
        }
        assert_eq!(
            got.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
        assert!(got.iter().all(|(_, o)| o == &vec![OpOutcome::Ok]));
        let sizes: Vec<usize> = fw.batches().iter().map(Vec::len).collect();
        assert_eq!(
            sizes,
            vec![1, 4],
            "a lone op is not delayed; the rest are batched"
        );
    }
}
