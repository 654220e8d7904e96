//! The nftables side of the engine (`Firewall = nftables`): one owner, [`NftSide`], holding
//! the backend, its queue and the answers coming back from the kernel, and the pure decisions
//! over the grant ledger that keep table `inet knockd` in step with it: the elements a grant
//! puts and deletes, the table update at reload, taking over the kernel's elements at start
//! (the kernel is the truth), and `knockctl list` with the kernel's time left (those two in
//! [`super::kernel`], re-exported here).
//!
//! Two doors that open the same port for the same source share one set element (the set is
//! keyed by address, protocol and port). The ledger models that honestly: an element is put
//! with the longest time any open grant that holds it has left, and closing one grant deletes
//! only the elements no other open grant holds (the others are put again with what the
//! remaining grants have left). The engine orders all element changes of one address, so they
//! reach the kernel in the order they were decided.

pub use super::kernel::{adopt, follow, restore, Followed};
use super::listing::KernelElem;
use super::script::TableSpec;
use super::Elem;
use crate::config::{Config, Door, FirewallKind, Options, MAX_TIMEOUT_SECS};
use crate::firewall::{BoxFuture, Firewall, FirewallQueue, Op, OpOutcome};
use crate::grants::{Close, Grant, GrantId, Ledger};
use knock_ipc as ipc;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// How long `knockctl list` waits for the kernel's listing before answering from the ledger.
const LIST_TIMEOUT: Duration = Duration::from_secs(2);

/// What comes back to the engine from the nftables side's own tasks.
#[derive(Debug)]
pub enum NftEvent {
    /// The kernel's listing for a `knockctl list` is in.
    Listed(KernelView),
    /// A table update (reload) ran.
    TableUpdated(Result<(), String>),
    /// Another program deleted something of the table (nf_tables notification), or an
    /// element change failed: check the table.
    Touched,
    /// A check asked for by [`NftSide::check`] is done: Ok(true) when the table had to be
    /// re-created (its elements may be gone: put back those of every open grant).
    Checked(Result<bool, String>),
    /// A failed element change found the table removed and re-created it (put back the
    /// elements of every open grant).
    Recreated,
}

/// A `knockctl list` waiting for the kernel's listing.
#[derive(Debug)]
pub struct KernelView {
    pub(super) listed: Result<Vec<KernelElem>, String>,
    /// Grants with a higher id were opened after the listing was asked for.
    pub(super) last_id: GrantId,
    pub(super) asked_at: Instant,
    pub(super) reply: oneshot::Sender<ipc::Response>,
}

/// The reply of a reload, held until its table update ran.
pub type ReloadReply = (
    oneshot::Sender<Result<Vec<String>, Vec<String>>>,
    Vec<String>,
);

/// The owner of everything nftables in the engine: the backend, its queue (started on first
/// use, on the engine's runtime), the table's definition (what a repair re-creates), reload
/// replies waiting for their table update, and the channel its tasks answer on.
pub struct NftSide {
    firewall: Arc<dyn Firewall>,
    queue: Option<FirewallQueue>,
    /// The table's script for the config in force (no stale elements): what a repair applies.
    script: Arc<std::sync::Mutex<String>>,
    /// Table updates started and not yet done, and the reload replies waiting for them.
    updating: usize,
    waiting: Vec<ReloadReply>,
    /// A check of the table is running (further notifications wait for it).
    checking: bool,
    recheck: bool,
    tx: mpsc::UnboundedSender<NftEvent>,
    rx: mpsc::UnboundedReceiver<NftEvent>,
}

impl Default for NftSide {
    fn default() -> Self {
        NftSide::new(Arc::new(super::backend::NftFirewall))
    }
}

impl NftSide {
    /// The side with `firewall` as its backend ([`super::backend::NftFirewall`] in the
    /// daemon, a `RecordingFirewall` in tests).
    pub fn new(firewall: Arc<dyn Firewall>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        NftSide {
            firewall,
            queue: None,
            script: Arc::default(),
            updating: 0,
            waiting: Vec::new(),
            checking: false,
            recheck: false,
            tx,
            rx,
        }
    }

    /// Another backend (before the queue started).
    pub fn set_firewall(&mut self, firewall: Arc<dyn Firewall>) {
        self.firewall = firewall;
        self.queue = None;
    }

    /// The table `config` wants (what a repair re-creates).
    pub fn set_spec(&mut self, config: &Config) {
        if config.options.firewall != FirewallKind::Nftables {
            return;
        }
        let script = TableSpec::from_config(config).script(&[]);
        if let Ok(mut s) = self.script.lock() {
            *s = script;
        }
    }

    /// The element queue (started on first use). A failed batch has the table checked (and
    /// re-created when another program removed it) before its failed ops are tried once more.
    pub fn queue(&mut self) -> FirewallQueue {
        let watched = Watched {
            inner: self.firewall.clone(),
            script: self.script.clone(),
            tx: self.tx.clone(),
        };
        self.queue
            .get_or_insert_with(|| FirewallQueue::start(Arc::new(watched)))
            .clone()
    }

    /// The next answer of one of this side's tasks.
    pub async fn recv(&mut self) -> Option<NftEvent> {
        self.rx.recv().await
    }

    /// Tell the engine ([`NftEvent::Touched`]) whenever another program deletes something of
    /// the table (a thread listening to the kernel's nf_tables notifications).
    pub fn watch(&self) -> Result<(), String> {
        let tx = self.tx.clone();
        super::watch::spawn(super::table().to_string(), move || {
            tx.send(NftEvent::Touched).is_ok()
        })
    }

    /// Check the table (after every element change already queued) and re-create it when it
    /// is not whole; [`NftEvent::Checked`] says how it went. One check at a time: a check
    /// asked for while one runs runs after it.
    pub fn check(&mut self) {
        if self.checking {
            self.recheck = true;
            return;
        }
        self.checking = true;
        let queue = self.queue();
        let fw = self.firewall.clone();
        let script = self.script.lock().map(|s| s.clone()).unwrap_or_default();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            flushed(&queue).await;
            let r = fw.repair(script).await;
            let _ = tx.send(NftEvent::Checked(r));
        });
    }

    /// A check is done: run the one asked for meanwhile, if any.
    pub fn checked(&mut self) {
        self.checking = false;
        if std::mem::take(&mut self.recheck) {
            self.check();
        }
    }

    /// Bring the table in line with `script` (one transaction), after every element change
    /// already queued; [`NftEvent::TableUpdated`] says how it went.
    pub fn update_table(&mut self, script: String) {
        self.updating += 1;
        let queue = self.queue();
        let fw = self.firewall.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            flushed(&queue).await;
            let r = fw.set_up(script).await;
            let _ = tx.send(NftEvent::TableUpdated(r));
        });
    }

    /// Hold a reload's reply until its table update ran; None when no update is running.
    pub fn hold_reply(&mut self, reply: ReloadReply) -> Option<ReloadReply> {
        if self.updating == 0 {
            return Some(reply);
        }
        self.waiting.push(reply);
        None
    }

    /// A table update is done: the reload replies it held, once no update is running.
    pub fn updated(&mut self) -> Vec<ReloadReply> {
        self.updating = self.updating.saturating_sub(1);
        if self.updating == 0 {
            std::mem::take(&mut self.waiting)
        } else {
            Vec::new()
        }
    }

    /// Read the kernel's elements off the engine task (after every element change already
    /// queued); [`NftEvent::Listed`] brings them back. `Err(reply)`: the backend cannot list,
    /// answer from the ledger.
    pub fn list(
        &mut self,
        last_id: GrantId,
        asked_at: Instant,
        reply: oneshot::Sender<ipc::Response>,
    ) -> Result<(), oneshot::Sender<ipc::Response>> {
        let Some(list) = self.firewall.list() else {
            return Err(reply);
        };
        let queue = self.queue();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            // Behind the element changes already handed to the queue.
            flushed(&queue).await;
            let listed = match tokio::time::timeout(LIST_TIMEOUT, list).await {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "no listing from the kernel within {}s",
                    LIST_TIMEOUT.as_secs()
                )),
            };
            let _ = tx.send(NftEvent::Listed(KernelView {
                listed,
                last_id,
                asked_at,
                reply,
            }));
        });
        Ok(())
    }
}

/// Wait until everything submitted to `queue` before has been applied.
async fn flushed(queue: &FirewallQueue) {
    let (tx, rx) = oneshot::channel();
    queue.flush(Box::new(move |_| {
        let _ = tx.send(());
    }));
    let _ = rx.await;
}

/// The backend as the queue sees it: when a batch fails, the table is checked first (another
/// program may have removed it: `nft flush ruleset`); when it had to be re-created, the engine
/// is told (it puts back every open grant's elements) and the failed ops are tried once more.
struct Watched {
    inner: Arc<dyn Firewall>,
    script: Arc<std::sync::Mutex<String>>,
    tx: mpsc::UnboundedSender<NftEvent>,
}

impl Firewall for Watched {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn list(&self) -> Option<BoxFuture<Result<Vec<KernelElem>, String>>> {
        self.inner.list()
    }

    fn set_up(&self, script: String) -> BoxFuture<Result<(), String>> {
        self.inner.set_up(script)
    }

    fn repair(&self, script: String) -> BoxFuture<Result<bool, String>> {
        self.inner.repair(script)
    }

    /// A failed direct apply changed nothing: the ops then go through `apply`, which checks
    /// the table.
    fn apply_now(&self, ops: &[Op]) -> bool {
        self.inner.apply_now(ops)
    }

    fn apply(&self, ops: Vec<Op>) -> BoxFuture<Vec<OpOutcome>> {
        let inner = self.inner.clone();
        let script = self.script.lock().map(|s| s.clone()).unwrap_or_default();
        let tx = self.tx.clone();
        Box::pin(async move {
            let mut out = inner.apply(ops.clone()).await;
            if !out.iter().any(OpOutcome::is_failed) || script.is_empty() {
                return out;
            }
            match inner.repair(script).await {
                Ok(true) => {
                    let _ = tx.send(NftEvent::Recreated);
                }
                Ok(false) => return out,
                Err(e) => {
                    tracing::warn!("nftables: cannot check table inet {}: {e}", super::table());
                    return out;
                }
            }
            let failed: Vec<usize> = (0..out.len()).filter(|&i| out[i].is_failed()).collect();
            let retry: Vec<Op> = failed.iter().filter_map(|&i| ops.get(i).cloned()).collect();
            let second = inner.apply(retry).await;
            for (i, o) in failed.into_iter().zip(second) {
                out[i] = o;
            }
            out
        })
    }
}

/// A reload cannot switch the backend of native doors (open grants live in the old one, and a
/// knock during the switch would race it) nor move to another nftables table. A restart does.
pub fn switch_refused(old: &Options, new: &Options, config: &Path) -> Result<(), String> {
    if new.firewall == old.firewall && new.nft_table() != old.nft_table() {
        return Err(format!(
            "{}: NftTable changed from {} to {}: a reload cannot move knockd to another table (its grants live in table inet {}); restart knockd to switch (systemctl restart knockd)",
            config.display(),
            old.nft_table(),
            new.nft_table(),
            old.nft_table()
        ));
    }
    let (old, new) = (old.firewall, new.firewall);
    if new == old {
        return Ok(());
    }
    let after = if old == FirewallKind::Nftables {
        format!(" (table inet {} is removed at that start)", super::table())
    } else {
        String::new()
    };
    Err(format!(
        "{}: Firewall changed from {} to {}: a reload cannot switch the firewall backend (open grants live in the old one); restart knockd to switch (systemctl restart knockd){after}",
        config.display(),
        old.as_str(),
        new.as_str()
    ))
}

/// The elements `door` opens for `addr`: one per port.
pub fn elems_of(door: &Door, addr: IpAddr) -> Vec<Elem> {
    door.open
        .iter()
        .map(|o| Elem {
            addr,
            proto: o.proto,
            port: o.port,
        })
        .collect()
}

/// `knockctl list` goes to the kernel (nftables with grants open).
pub fn lists_kernel(config: &Config, ledger: &Ledger) -> bool {
    config.options.firewall == FirewallKind::Nftables && !ledger.is_empty()
}

/// The longest time left among the open nftables grants of `elem`'s address that hold it,
/// `except` one. None: no other open grant holds it.
pub fn shared_left(
    ledger: &Ledger,
    elem: &Elem,
    except: GrantId,
    now: Instant,
) -> Option<Duration> {
    ledger
        .of_addr(elem.addr)
        .filter(|g| g.id != except && g.closing.is_none())
        .filter(|g| matches!(&g.close, Close::Nft { elems } if elems.contains(elem)))
        .map(|g| {
            g.expires
                .map_or(Duration::from_secs(MAX_TIMEOUT_SECS), |t| {
                    t.saturating_duration_since(now)
                })
        })
        .max()
}

/// Put `elems` of grant `id` with `own` time left, or longer where another open grant holds
/// the same element (it must not be cut short). `add`: a new grant (else a refresh).
pub fn put_ops(
    ledger: &Ledger,
    id: GrantId,
    door: &str,
    elems: &[Elem],
    own: Duration,
    now: Instant,
    add: bool,
) -> Vec<Op> {
    elems
        .iter()
        .map(|e| {
            let rule = super::fw_rule(e, door);
            let timeout = Some(shared_left(ledger, e, id, now).map_or(own, |o| o.max(own)));
            if add {
                Op::Add { rule, timeout }
            } else {
                Op::Refresh { rule, timeout }
            }
        })
        .collect()
}

/// Close grant `g`: delete the elements no other open grant holds; put the shared ones again
/// with what the other grants have left (this grant may have had the longest).
pub fn close_ops(ledger: &Ledger, g: &Grant, elems: &[Elem], now: Instant) -> Vec<Op> {
    elems
        .iter()
        .map(|e| {
            let rule = super::fw_rule(e, &g.door);
            match shared_left(ledger, e, g.id, now) {
                Some(left) => Op::Refresh {
                    rule,
                    timeout: Some(left),
                },
                None => Op::Delete { rule },
            }
        })
        .collect()
}

/// After the table was re-created: every open nftables grant's elements, put again with the
/// time the grant has left (a shared element with the longest), as (door, address, ops).
/// Grants with less than a second left are left to expire.
pub fn put_back(ledger: &Ledger, now: Instant) -> Vec<(String, IpAddr, Vec<Op>)> {
    ledger
        .oldest()
        .filter(|g| g.closing.is_none())
        .filter_map(|g| {
            let Close::Nft { elems } = &g.close else {
                return None;
            };
            let own = g
                .expires
                .map_or(Duration::from_secs(MAX_TIMEOUT_SECS), |t| {
                    t.saturating_duration_since(now)
                });
            if own < Duration::from_secs(1) {
                return None;
            }
            let ops = put_ops(ledger, g.id, &g.door, elems, own, now, false);
            Some((g.door.clone(), g.addr, ops))
        })
        .collect()
}

/// What a reload does to the nftables grants and table.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// Grants of doors that are gone or whose ports changed: removed from the ledger.
    pub gone: Vec<Grant>,
    /// Elements of removed grants that other open grants hold: put again with what those have
    /// left, as (door, address, ops).
    pub keep: Vec<(String, IpAddr, Vec<Op>)>,
    /// The table update (protected ports of the new config, stale elements removed).
    pub script: String,
}

/// After a reload with nftables: the grants of doors that are gone or whose ports changed
/// leave the ledger; their elements go with the table update, unless a remaining grant holds
/// them too. Doors are looked up by name through one map (many grants, many doors).
pub fn reload(ledger: &mut Ledger, config: &Config, now: Instant) -> Reloaded {
    let doors: HashMap<&str, &Door> = config.doors.iter().map(|d| (d.name.as_str(), d)).collect();
    let mut gone: Vec<Grant> = Vec::new();
    for id in ledger.ids() {
        let Some(g) = ledger.get(id) else {
            continue;
        };
        let Close::Nft { elems } = &g.close else {
            continue;
        };
        let wanted = doors
            .get(g.door.as_str())
            .map(|d| elems_of(d, g.addr))
            .unwrap_or_default();
        if !wanted.is_empty() && wanted == *elems {
            continue;
        }
        if let Some(g) = ledger.remove(id) {
            gone.push(g);
        }
    }
    let mut stale: Vec<Elem> = Vec::new();
    let mut keep = Vec::new();
    for g in &gone {
        let Close::Nft { elems } = &g.close else {
            continue;
        };
        let mut ops = Vec::new();
        for e in elems {
            match shared_left(ledger, e, g.id, now) {
                Some(left) => ops.push(Op::Refresh {
                    rule: super::fw_rule(e, &g.door),
                    timeout: Some(left),
                }),
                None => stale.push(*e),
            }
        }
        if !ops.is_empty() {
            keep.push((g.door.clone(), g.addr, ops));
        }
    }
    let script = TableSpec::from_config(config).script(&stale);
    Reloaded { gone, keep, script }
}
