//! The nftables side of the engine (`Firewall = nftables`): one owner, [`NftSide`], holding
//! the backend, its queue and the answers coming back from the kernel, and the pure decisions
//! over the grant ledger that keep table `inet knockd` in step with it: the elements a grant
//! puts and deletes, the table update at reload, taking over the kernel's elements at start
//! (the kernel is the truth), and `knockctl list` with the kernel's time left.
//!
//! Two doors that open the same port for the same source share one set element (the set is
//! keyed by address, protocol and port). The ledger models that honestly: an element is put
//! with the longest time any open grant that holds it has left, and closing one grant deletes
//! only the elements no other open grant holds (the others are put again with what the
//! remaining grants have left). The engine orders all element changes of one address, so they
//! reach the kernel in the order they were decided.

use super::listing::KernelElem;
use super::script::TableSpec;
use super::Elem;
use crate::config::{Config, Door, FirewallKind, MAX_TIMEOUT_SECS};
use crate::firewall::{Firewall, FirewallQueue, Op};
use crate::grants::{Close, Grant, GrantId, Ledger};
use crate::state::{self, SavedGrant};
use knock_ipc as ipc;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
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
}

/// A `knockctl list` waiting for the kernel's listing.
#[derive(Debug)]
pub struct KernelView {
    listed: Result<Vec<KernelElem>, String>,
    /// Grants with a higher id were opened after the listing was asked for.
    last_id: GrantId,
    asked_at: Instant,
    reply: oneshot::Sender<ipc::Response>,
}

/// The owner of everything nftables in the engine: the backend, its queue (started on first
/// use, on the engine's runtime), and the channel its tasks answer on.
pub struct NftSide {
    firewall: Arc<dyn Firewall>,
    queue: Option<FirewallQueue>,
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
            tx,
            rx,
        }
    }

    /// The element queue (started on first use).
    pub fn queue(&mut self) -> FirewallQueue {
        let fw = &self.firewall;
        self.queue
            .get_or_insert_with(|| FirewallQueue::start(fw.clone()))
            .clone()
    }

    /// The next answer of one of this side's tasks.
    pub async fn recv(&mut self) -> Option<NftEvent> {
        self.rx.recv().await
    }

    /// Bring the table in line with `script` (one transaction), after every element change
    /// already queued; [`NftEvent::TableUpdated`] says how it went.
    pub fn update_table(&mut self, script: String) {
        let queue = self.queue();
        let fw = self.firewall.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let (flushed, done) = oneshot::channel();
            queue.flush(Box::new(move |_| {
                let _ = flushed.send(());
            }));
            let _ = done.await;
            let r = fw.set_up(script).await;
            let _ = tx.send(NftEvent::TableUpdated(r));
        });
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
            let (flushed, done) = oneshot::channel();
            queue.flush(Box::new(move |_| {
                let _ = flushed.send(());
            }));
            let _ = done.await;
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

/// A reload cannot switch the backend of native doors: open grants live in the old one, and a
/// knock during the switch would race it. A restart does it.
pub fn switch_refused(old: FirewallKind, new: FirewallKind, config: &Path) -> Result<(), String> {
    if new == old {
        return Ok(());
    }
    let after = if old == FirewallKind::Nftables {
        " (table inet knockd is removed at that start)"
    } else {
        ""
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

/// The kernel's listing, followed by the ledger.
pub struct Followed {
    /// Grants whose elements are all gone from the kernel: removed from the ledger.
    pub forgotten: Vec<Grant>,
    /// The kernel's time left per element; None: no listing (answer from the ledger).
    left: Option<HashMap<Elem, Duration>>,
    pub reply: oneshot::Sender<ipc::Response>,
}

impl Followed {
    /// Whether the kernel's listing came in.
    pub fn listed(&self) -> bool {
        self.left.is_some()
    }

    /// The kernel's time left on a grant holding `elems` (the longest of its elements).
    pub fn kernel_left(&self, elems: &[Elem]) -> Option<Duration> {
        let left = self.left.as_ref()?;
        elems.iter().filter_map(|e| left.get(e)).max().copied()
    }

    /// The grant as `knockctl list` shows it, with the kernel's time left.
    pub fn info(&self, g: &Grant, mut info: ipc::GrantInfo) -> ipc::GrantInfo {
        if let (Close::Nft { elems }, false) = (&g.close, g.closing.is_some()) {
            info.kernel_expires_in_ms = Some(
                self.kernel_left(elems)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            );
        }
        info
    }
}

/// The kernel's listing is in: the ledger follows it (a grant whose elements are all gone is
/// forgotten; a deadline the kernel has shortened moves). `pending(addr)`: an element change
/// of that address is decided and not yet applied (the listing cannot speak for it).
pub fn follow(
    ledger: &mut Ledger,
    v: KernelView,
    pending: impl Fn(IpAddr) -> bool,
    now: Instant,
) -> Result<Followed, (String, oneshot::Sender<ipc::Response>)> {
    let listed = match v.listed {
        Ok(l) => l,
        Err(e) => return Err((e, v.reply)),
    };
    let elapsed = now.saturating_duration_since(v.asked_at);
    let left: HashMap<Elem, Duration> = listed
        .into_iter()
        .map(|k| {
            let l = k.expires.unwrap_or(Duration::from_secs(MAX_TIMEOUT_SECS));
            (k.elem, l.saturating_sub(elapsed))
        })
        .collect();
    let mut f = Followed {
        forgotten: Vec::new(),
        left: Some(left),
        reply: v.reply,
    };
    for id in ledger.ids() {
        let Some(g) = ledger.get(id) else {
            continue;
        };
        let Close::Nft { elems } = &g.close else {
            continue;
        };
        // Only grants the listing can speak for: open before it was asked, and with no element
        // change decided since (a re-knock's put may still be on its way).
        if id > v.last_id
            || g.closing.is_some()
            || pending(g.addr)
            || g.recheck.is_some()
            || g.last_check.is_some_and(|t| t >= v.asked_at)
        {
            continue;
        }
        let ledger_left = g.expires.map(|t| t.saturating_duration_since(now));
        match f.kernel_left(elems) {
            None => {
                if let Some(g) = ledger.remove(id) {
                    f.forgotten.push(g);
                }
            }
            Some(k) if ledger_left.is_some_and(|l| k + Duration::from_secs(1) < l) => {
                ledger.follow_kernel(id, now + k);
            }
            Some(_) => {}
        }
    }
    Ok(f)
}

impl KernelView {
    /// Hand the reply back (the listing is not used).
    pub fn into_reply(self) -> oneshot::Sender<ipc::Response> {
        self.reply
    }
}

/// A saved nftables grant at start: it keeps the elements the kernel still holds (taken out
/// of `kernel`), with the time the kernel has left. Returns the line to log.
pub fn restore(
    ledger: &mut Ledger,
    g: SavedGrant,
    elems: &[Elem],
    kernel: &mut Vec<KernelElem>,
    now: Instant,
) -> String {
    let (present, rest): (Vec<_>, Vec<_>) = std::mem::take(kernel)
        .into_iter()
        .partition(|k| elems.contains(&k.elem));
    *kernel = rest;
    let Some(left) = present.iter().map(|k| k.expires.unwrap_or_default()).max() else {
        return format!(
            "{}: {}: grant no longer in the kernel (expired or removed), forgotten",
            g.addr, g.door
        );
    };
    ledger.insert(
        &g.door,
        g.addr,
        g.opened,
        state::from_unix_ms(g.opened_at_unix_ms),
        Some(now + left),
        Close::Nft {
            elems: present.iter().map(|k| k.elem).collect(),
        },
    );
    format!(
        "{}: {}: grant restored from the kernel (closes in {}s)",
        g.addr,
        g.door,
        left.as_secs()
    )
}

/// Grants for kernel elements the state file does not know (state file lost or older than the
/// kernel): each element is given to the first nftables door that opens its port. Returns the
/// lines to log.
pub fn adopt(
    ledger: &mut Ledger,
    config: &Config,
    orphans: Vec<KernelElem>,
    now: Instant,
) -> Vec<String> {
    let by_port: HashMap<(crate::config::Proto, u16), &Door> = config
        .doors
        .iter()
        .rev()
        .flat_map(|d| d.open.iter().map(move |o| ((o.proto, o.port), d)))
        .collect();
    let mut groups: Vec<(String, IpAddr, Vec<Elem>, Duration)> = Vec::new();
    let mut index: HashMap<(String, IpAddr), usize> = HashMap::new();
    for k in orphans {
        let Some(door) = by_port.get(&(k.elem.proto, k.elem.port)) else {
            continue;
        };
        let left = k.expires.unwrap_or(Duration::ZERO);
        match index.get(&(door.name.clone(), k.elem.addr)) {
            Some(&i) => {
                let (_, _, elems, l) = &mut groups[i];
                elems.push(k.elem);
                *l = (*l).max(left);
            }
            None => {
                index.insert((door.name.clone(), k.elem.addr), groups.len());
                groups.push((door.name.clone(), k.elem.addr, vec![k.elem], left));
            }
        }
    }
    let mut lines = Vec::new();
    for (door, addr, elems, left) in groups {
        if ledger.find(&door, addr).is_some() {
            continue;
        }
        let opened = elems
            .iter()
            .map(|e| format!("{}/{}", e.port, e.proto))
            .collect::<Vec<_>>()
            .join(",");
        ledger.insert(
            &door,
            addr,
            format!("{opened} (nftables)"),
            SystemTime::now(),
            Some(now + left),
            Close::Nft { elems },
        );
        lines.push(format!(
            "{addr}: {door}: grant found in the kernel (closes in {}s)",
            left.as_secs()
        ));
    }
    lines
}
