//! The command runner: runs actions off the engine task and hands their results back as
//! [`Done`] messages.
//!
//! Door commands go through a bounded pool: at most [`POOL_SIZE`] run at once (closes have
//! [`CLOSE_POOL_SIZE`] more of their own), at most [`POOL_QUEUE`] starts and checks are admitted
//! at once; beyond that a start is refused and counted, never queued without limit. Native
//! doors' rules go to a firewall queue, which batches them. Either way, the tasks of one
//! [`Chain`] run in order, across grant ids: a re-knock right after an expiry waits for the old
//! close.

use super::messages::{Done, Job, TaskKind};
use crate::action::{Action, Executor, Outcome};
use crate::firewall::{Firewall, FirewallQueue, Op, OpOutcome};
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{mpsc, watch, Semaphore};

/// Commands (door commands, derived checks) running at once.
pub const POOL_SIZE: usize = 4;
/// Close commands running at once, besides the pool: a flood of starts never delays a close.
pub const CLOSE_POOL_SIZE: usize = 2;
/// Command tasks admitted at once (running or waiting for the pool); more are refused.
pub const POOL_QUEUE: usize = 64;

/// Resolves once the state file records what a start opens (write-ahead): `true`, or `false`
/// when that write failed (the start is then not made: fail closed).
pub(crate) type Barrier = Pin<Box<dyn Future<Output = bool> + Send>>;

/// What a task is ordered behind: the tasks before it with the same key run first.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Chain {
    /// The actions of one door for one source.
    Door(String, IpAddr),
    /// Every nftables element change of one source: doors that open the same port share its
    /// element, so their changes reach the kernel in the order they were decided.
    NftElems(IpAddr),
}

impl Chain {
    pub fn door(door: &str, addr: IpAddr) -> Chain {
        Chain::Door(door.to_string(), addr)
    }
}

/// The command pool, the close pool, the iptables queue and the per-[`Chain`] order.
pub(crate) struct Runner<E: Executor> {
    exec: E,
    firewall: Arc<dyn Firewall>,
    /// Started on first use, on the engine's runtime.
    fw_queue: Option<FirewallQueue>,
    /// Commands running at once, for starts and for closes (closes never wait behind starts).
    pool: Arc<Semaphore>,
    close_pool: Arc<Semaphore>,
    /// Command tasks admitted and not finished (starts, checks, free commands).
    pooled: usize,
    /// Tasks handed out and not finished (commands and firewall batches).
    inflight: usize,
    /// The last task of each chain: done when it holds true.
    chains: HashMap<Chain, watch::Receiver<bool>>,
    chains_gc_at: usize,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
}

impl<E: Executor> Runner<E> {
    /// `firewall` applies native doors' rules (`IptablesRestore` in the daemon, a
    /// `RecordingFirewall` in tests); `exec` runs door commands.
    pub fn new(exec: E, firewall: Arc<dyn Firewall>) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Runner {
            exec,
            firewall,
            fw_queue: None,
            pool: Arc::new(Semaphore::new(POOL_SIZE)),
            close_pool: Arc::new(Semaphore::new(CLOSE_POOL_SIZE)),
            pooled: 0,
            inflight: 0,
            chains: HashMap::new(),
            chains_gc_at: 64,
            done_tx,
            done_rx,
        }
    }

    #[cfg(test)]
    pub fn exec(&self) -> &E {
        &self.exec
    }

    #[cfg(test)]
    pub fn set_firewall(&mut self, fw: Arc<dyn Firewall>) {
        self.firewall = fw;
        self.fw_queue = None;
    }

    /// The iptables backend itself (for the start-up listing of knockd's marked rules).
    pub fn firewall(&self) -> Arc<dyn Firewall> {
        self.firewall.clone()
    }
    /// The iptables queue (started on first use, on the engine's runtime).
    pub fn fw(&mut self) -> FirewallQueue {
        let fw = &self.firewall;
        self.fw_queue
            .get_or_insert_with(|| FirewallQueue::start(fw.clone()))
            .clone()
    }

    /// Room in the pool for one more start or check?
    pub fn has_room(&self) -> bool {
        self.pooled < POOL_QUEUE
    }

    /// Tasks not finished yet.
    pub fn inflight(&self) -> usize {
        self.inflight
    }

    /// Is a task of `chain` still waiting or running?
    pub fn pending(&self, chain: &Chain) -> bool {
        self.chains.get(chain).is_some_and(|rx| !*rx.borrow())
    }

    /// The next finished task.
    pub async fn recv(&mut self) -> Option<Done> {
        self.done_rx.recv().await
    }

    /// A finished task, if one is there (tests).
    #[cfg(test)]
    pub fn try_recv(&mut self) -> Option<Done> {
        self.done_rx.try_recv().ok()
    }

    /// Book a finished task off (call once per [`Done`], before acting on it).
    pub fn finished(&mut self, d: &Done) {
        self.inflight = self.inflight.saturating_sub(1);
        if d.pooled {
            self.pooled = self.pooled.saturating_sub(1);
        }
        // Forget finished chains. Amortised: only when the map doubled since the last sweep.
        if self.chains.len() >= self.chains_gc_at || self.inflight == 0 {
            self.chains.retain(|_, rx| !*rx.borrow());
            self.chains_gc_at = (2 * self.chains.len()).max(64);
        }
    }

    /// Hand `ops` to `queue` (the iptables or the nftables one), after the tasks of `chain`
    /// and, when given, once `barrier` resolves. The outcome comes back as a [`Done`].
    pub fn submit(
        &mut self,
        queue: FirewallQueue,
        chain: Chain,
        job: Job,
        ops: Vec<Op>,
        barrier: Option<Barrier>,
    ) {
        let done_tx = self.done_tx.clone();
        self.inflight += 1;
        let refused = Done {
            job: job.clone(),
            pooled: false,
            reinserted: false,
            total: 0,
            absent: 0,
            outcome: Outcome::NotRecorded,
        };
        let refuse_tx = done_tx.clone();
        // Nothing overtakes an op of the same chain that is still waiting.
        let prev = self.chains.get(&chain).filter(|rx| !*rx.borrow()).cloned();
        let reply: crate::firewall::Reply = Box::new(move |outcomes: Vec<OpOutcome>| {
            let total = outcomes.len();
            let absent = outcomes.iter().filter(|o| **o == OpOutcome::Absent).count();
            let reinserted = job.kind == TaskKind::Ensure && absent > 0;
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
                job,
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
        self.chains.insert(chain, rx);
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

    /// Run door command `actions` (through the pool; closes through the close pool) after
    /// the tasks of `chain` and, when given, once `barrier` resolves. Callers check
    /// [`Self::has_room`] for starts first.
    pub fn spawn(
        &mut self,
        chain: Chain,
        job: Job,
        actions: Vec<Action>,
        barrier: Option<Barrier>,
    ) {
        let (tx, rx) = watch::channel(false);
        let after = self.chains.insert(chain, rx);
        let exec = self.exec.clone();
        let kind = job.kind;
        let pooled = kind != TaskKind::Close;
        let pool = if pooled {
            self.pool.clone()
        } else {
            self.close_pool.clone()
        };
        let done_tx = self.done_tx.clone();
        self.inflight += 1;
        if pooled {
            self.pooled += 1;
        }
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
                job,
                pooled,
                reinserted,
                total: 0,
                absent: 0,
                outcome,
            });
        });
    }
}
