//! The kernel is the truth for nftables grants: at start, saved grants keep the elements the
//! kernel still holds and elements nobody saved are adopted; for `knockctl list`, the ledger
//! follows the kernel's listing. Part of the nftables side ([`super::side`]).

use super::listing::KernelElem;
use super::side::KernelView;
use super::Elem;
use crate::config::{Config, Door, MAX_TIMEOUT_SECS};
use crate::grants::{Close, Grant, Ledger};
use crate::state::{self, SavedGrant};
use knock_ipc as ipc;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::oneshot;

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
