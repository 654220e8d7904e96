//! `Firewall = nftables` in the engine: keeping table `inet knockd` in step with the config at
//! reload, and taking over the kernel's elements at start (the kernel is the truth).

use super::*;
use crate::nft::listing::KernelElem;
use crate::nft::script::{cleanup_script, TableSpec};
use crate::nft::Elem;

impl<E: Executor, L: LogSink> Engine<E, L> {
    /// After a reload: with nftables, update the table in one transaction (the protected ports
    /// of the new config) and close the grants of doors that are gone or whose ports changed;
    /// when the backend was switched away from nftables, remove the table.
    pub(super) fn sync_nft_table(&mut self, old: config::FirewallKind) {
        use config::FirewallKind::Nftables;
        let now = Instant::now();
        let nft = self.config.options.firewall == Nftables;
        if !nft && old != Nftables {
            return;
        }
        let mut stale: Vec<Elem> = Vec::new();
        for id in self.ledger.ids() {
            let Some(g) = self.ledger.get(id) else {
                continue;
            };
            let Close::Nft { elems } = &g.close else {
                continue;
            };
            let wanted: Vec<Elem> = self
                .config
                .doors
                .iter()
                .find(|d| d.name == g.door)
                .map(|d| {
                    d.open
                        .iter()
                        .map(|o| Elem {
                            addr: g.addr,
                            proto: o.proto,
                            port: o.port,
                        })
                        .collect()
                })
                .unwrap_or_default();
            if nft && !wanted.is_empty() && wanted == *elems {
                continue;
            }
            if let Some(g) = self.ledger.remove(id) {
                let msg = format!(
                    "{}: {}: grant closed: the door's ports or backend changed at reload",
                    g.addr, g.door
                );
                self.line(&msg);
                let info = Self::grant_info(&g, now);
                self.emit(|| ipc::EventKind::GrantRevoked { grant: info });
                self.chains.remove(&g.id);
                if let Close::Nft { elems } = g.close {
                    stale.extend(elems);
                }
            }
        }
        let script = if nft {
            TableSpec::from_config(&self.config).script(&stale)
        } else {
            self.line("Firewall is no longer nftables: removing table inet knockd");
            cleanup_script()
        };
        self.spawn_after(
            None,
            None,
            "nftables",
            IpAddr::from([0, 0, 0, 0]),
            TaskKind::Free,
            vec![Action::NftScript(script)],
        );
    }

    /// Grants for kernel elements the state file does not know (state file lost or older than
    /// the kernel): each element is given to the first nftables door that opens its port.
    pub(super) fn adopt_kernel_elems(&mut self, orphans: Vec<KernelElem>) {
        let now = Instant::now();
        let mut groups: Vec<(String, IpAddr, Vec<Elem>, Duration)> = Vec::new();
        for k in orphans {
            let Some(door) = self.config.doors.iter().find(|d| {
                d.open
                    .iter()
                    .any(|o| o.proto == k.elem.proto && o.port == k.elem.port)
            }) else {
                continue;
            };
            let left = k.expires.unwrap_or(Duration::ZERO);
            match groups
                .iter_mut()
                .find(|(d, a, _, _)| *d == door.name && *a == k.elem.addr)
            {
                Some((_, _, elems, l)) => {
                    elems.push(k.elem);
                    *l = (*l).max(left);
                }
                None => groups.push((door.name.clone(), k.elem.addr, vec![k.elem], left)),
            }
        }
        for (door, addr, elems, left) in groups {
            if self.ledger.find(&door, addr).is_some() {
                continue;
            }
            let opened = elems
                .iter()
                .map(|e| format!("{}/{}", e.port, e.proto))
                .collect::<Vec<_>>()
                .join(",");
            self.ledger.insert(
                &door,
                addr,
                format!("{opened} (nftables)"),
                SystemTime::now(),
                Some(now + left),
                Close::Nft { elems },
            );
            let msg = format!(
                "{addr}: {door}: grant found in the kernel (closes in {}s)",
                left.as_secs()
            );
            self.line(&msg);
        }
    }
}
