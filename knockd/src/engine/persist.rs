//! Persisting the grant ledger, and taking it over at start.

use super::Engine;
use crate::action::{Action, Executor};
use crate::firewall::{Op, OpOutcome};
use crate::grants::Close;
use crate::knocklog::LogSink;
use crate::state::{self, SavedGrant};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::oneshot;

impl<E: Executor, L: LogSink> Engine<E, L> {
    /// Write the ledger if it changed since the last save.
    pub fn persist(&mut self) {
        let Some(path) = self.state_file.clone() else {
            return;
        };
        if self.ledger.version() == self.saved_version {
            return;
        }
        let now = Instant::now();
        let wall = SystemTime::now();
        let saved: Vec<SavedGrant> = self
            .ledger
            .list()
            .into_iter()
            .map(|g| SavedGrant {
                door: g.door.clone(),
                addr: g.addr,
                opened: g.opened.clone(),
                opened_at_unix_ms: state::unix_ms(g.opened_at),
                expires_at_unix_ms: g
                    .expires
                    .map(|t| state::unix_ms(wall + t.saturating_duration_since(now))),
                close: g.close.clone(),
                refreshes: g.refreshes,
            })
            .collect();
        match state::save(&path, saved) {
            Ok(()) => self.saved_version = self.ledger.version(),
            Err(e) => {
                let msg = format!("error: {e}");
                self.line(&msg);
                // Do not retry on every packet; the next ledger change tries again.
                self.saved_version = self.ledger.version();
            }
        }
    }

    /// Apply `ops` now and wait for their outcomes (restore, before the engine runs).
    async fn fw_now(&mut self, ops: Vec<Op>) -> Vec<OpOutcome> {
        let n = ops.len();
        let (tx, rx) = oneshot::channel();
        self.fw().submit(
            ops,
            Box::new(move |o| {
                let _ = tx.send(o);
            }),
        );
        rx.await
            .unwrap_or_else(|_| vec![OpOutcome::Failed("firewall queue stopped".into()); n])
    }

    /// Take over the grants of a previous run: close those past their deadline, forget those
    /// whose rule is gone from the firewall (never re-open them), re-arm the rest.
    pub async fn restore(&mut self, saved: Vec<SavedGrant>) {
        self.restore_with_kernel(saved, None).await;
    }

    /// [`restore`](Self::restore), with the elements of table `inet knockd` as the kernel
    /// holds them (`Firewall = nftables`; None: no table). For nftables grants the kernel is
    /// the truth: a grant keeps the elements still there with the time the kernel has left,
    /// and elements the state file does not know become grants of the door that opens them.
    pub async fn restore_with_kernel(
        &mut self,
        saved: Vec<SavedGrant>,
        kernel: Option<Vec<crate::nft::listing::KernelElem>>,
    ) {
        let wall = SystemTime::now();
        let now = Instant::now();
        let mut kernel = kernel.unwrap_or_default();
        for g in saved {
            if let Close::Nft { elems } = &g.close {
                let (present, rest): (Vec<_>, Vec<_>) =
                    kernel.into_iter().partition(|k| elems.contains(&k.elem));
                kernel = rest;
                let Some(left) = present.iter().map(|k| k.expires.unwrap_or_default()).max() else {
                    let msg = format!(
                        "{}: {}: grant no longer in the kernel (expired or removed), forgotten",
                        g.addr, g.door
                    );
                    self.line(&msg);
                    continue;
                };
                self.ledger.insert(
                    &g.door,
                    g.addr,
                    g.opened,
                    state::from_unix_ms(g.opened_at_unix_ms),
                    Some(now + left),
                    Close::Nft {
                        elems: present.iter().map(|k| k.elem).collect(),
                    },
                );
                let msg = format!(
                    "{}: {}: grant restored from the kernel (closes in {}s)",
                    g.addr,
                    g.door,
                    left.as_secs()
                );
                self.line(&msg);
                continue;
            }
            let remaining = g.expires_at_unix_ms.map(|ms| {
                state::from_unix_ms(ms)
                    .duration_since(wall)
                    .unwrap_or(Duration::ZERO)
            });
            if remaining == Some(Duration::ZERO) {
                let msg = format!(
                    "{}: {}: grant expired while knockd was down, closing it",
                    g.addr, g.door
                );
                self.line(&msg);
                if let Close::Rules { rules } = &g.close {
                    let ops = rules
                        .iter()
                        .map(|r| Op::Delete { rule: r.clone() })
                        .collect();
                    for (r, o) in rules.iter().zip(self.fw_now(ops).await) {
                        if let OpOutcome::Failed(e) = o {
                            let msg = format!("{}: cannot delete {r}: {e}", g.door);
                            self.line(&msg);
                        }
                    }
                    continue;
                }
                for a in g.close.actions() {
                    let msg = format!("{}: running command: {a}", g.door);
                    self.line(&msg);
                    let o = self.exec.run(a).await;
                    if !o.is_ok() {
                        let msg = format!("{}: command failed: {o:?}", g.door);
                        self.line(&msg);
                    }
                }
                continue;
            }
            let present = match &g.close {
                Close::Rules { rules } => {
                    let ops = rules
                        .iter()
                        .map(|r| Op::Check { rule: r.clone() })
                        .collect();
                    self.fw_now(ops).await.iter().all(|o| *o == OpOutcome::Ok)
                }
                Close::Derived { check, .. } => {
                    self.exec.run(Action::Exec(check.clone())).await.is_ok()
                }
                Close::StopCommand { .. } | Close::Nft { .. } => true,
            };
            if !present {
                let msg = format!(
                    "{}: {}: rule no longer in the firewall, grant dropped",
                    g.addr, g.door
                );
                self.line(&msg);
                continue;
            }
            let expires = remaining.map(|r| now + r);
            self.ledger.insert(
                &g.door,
                g.addr,
                g.opened,
                state::from_unix_ms(g.opened_at_unix_ms),
                expires,
                g.close,
            );
            let msg = match remaining {
                Some(r) => format!(
                    "{}: {}: grant restored (closes in {}s)",
                    g.addr,
                    g.door,
                    r.as_secs()
                ),
                None => format!("{}: {}: grant restored (no deadline)", g.addr, g.door),
            };
            self.line(&msg);
        }
        if self.config.options.firewall == crate::config::FirewallKind::Nftables {
            self.adopt_kernel_elems(kernel);
        }
        // Force a write: the file now reflects what this run owns.
        self.saved_version = self.ledger.version().wrapping_add(1);
        self.persist();
    }
}
