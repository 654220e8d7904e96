//! `Firewall = nftables` in the engine: keeping table `inet knockd` in step with the config at
//! reload, taking over the kernel's elements at start (the kernel is the truth), answering
//! `knockctl list` with the kernel's time left, and elements shared by several grants.
//!
//! Two doors that open the same port for the same source share one set element (the set is
//! keyed by address, protocol and port). The ledger models that honestly: an element is put
//! with the longest time any open grant that holds it has left, and closing one grant deletes
//! only the elements no other open grant holds (the others are put again with what the
//! remaining grants have left). All element changes of one address go through one chain
//! ([`Chain::NftElems`]), so they reach the kernel in the order they were decided.

use super::events::grant_info;
use super::messages::TaskKind;
use super::runner::Chain;
use super::Engine;
use crate::action::{Action, Executor};
use crate::config::{FirewallKind, MAX_TIMEOUT_SECS};
use crate::firewall::Op;
use crate::grants::{Close, Grant, GrantId};
use crate::knocklog::LogSink;
use crate::nft::listing::KernelElem;
use crate::nft::script::TableSpec;
use crate::nft::Elem;
use knock_ipc as ipc;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::oneshot;

/// How long `knockctl list` waits for the kernel's listing before answering from the ledger.
const LIST_TIMEOUT: Duration = Duration::from_secs(2);

/// A `knockctl list` waiting for the kernel's listing.
#[derive(Debug)]
pub struct KernelView {
    listed: Result<Vec<KernelElem>, String>,
    /// Grants with a higher id were opened after the listing was asked for.
    last_id: GrantId,
    asked_at: Instant,
    reply: oneshot::Sender<ipc::Response>,
}

impl<E: Executor, L: LogSink> Engine<E, L> {
    /// A reload cannot switch the backend of native doors: open grants live in the old one,
    /// and a knock during the switch would race it. A restart does it.
    pub(super) fn firewall_switch(&self, new: FirewallKind) -> Result<(), String> {
        let old = self.config.options.firewall;
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
            self.config_path.display(),
            old.as_str(),
            new.as_str()
        ))
    }

    /// After a reload with nftables: update the table in one transaction (the protected ports
    /// of the new config) and close the grants of doors that are gone or whose ports changed.
    pub(super) fn sync_nft_table(&mut self) {
        if self.config.options.firewall != FirewallKind::Nftables {
            return;
        }
        let now = super::now();
        let mut gone: Vec<Grant> = Vec::new();
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
            if !wanted.is_empty() && wanted == *elems {
                continue;
            }
            if let Some(g) = self.ledger.remove(id) {
                let msg = format!(
                    "{}: {}: grant closed: the door's ports changed at reload",
                    g.addr, g.door
                );
                self.line(&msg);
                let info = grant_info(&g, now);
                self.emit(|| ipc::EventKind::GrantRevoked { grant: info });
                gone.push(g);
            }
        }
        // Elements of removed grants go with the table update, unless a remaining grant holds
        // them too: those are put again with what the remaining grants have left.
        let mut stale: Vec<Elem> = Vec::new();
        for g in gone {
            let Close::Nft { elems } = &g.close else {
                continue;
            };
            let mut keep = Vec::new();
            for e in elems {
                match self.shared_left(e, g.id, now) {
                    Some(left) => keep.push(Op::Refresh {
                        rule: crate::nft::fw_rule(e, &g.door),
                        timeout: Some(left),
                    }),
                    None => stale.push(*e),
                }
            }
            if !keep.is_empty() {
                self.submit_nft(None, &g.door, g.addr, TaskKind::Free, keep);
            }
        }
        let script = TableSpec::from_config(&self.config).script(&stale);
        self.spawn_in(
            Chain::NftTable,
            None,
            "nftables",
            IpAddr::from([0, 0, 0, 0]),
            TaskKind::Free,
            vec![Action::NftScript(script)],
        );
    }

    /// The longest time left among the open nftables grants of `elem`'s address that hold
    /// it, `except` one. None: no other open grant holds it.
    pub(super) fn shared_left(
        &self,
        elem: &Elem,
        except: GrantId,
        now: Instant,
    ) -> Option<Duration> {
        self.ledger
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

    /// Put `elems` of grant `id` with `own` time left, or longer where another open grant
    /// holds the same element (it must not be cut short). `add`: a new grant (else a refresh).
    pub(super) fn nft_put_ops(
        &self,
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
                let rule = crate::nft::fw_rule(e, door);
                let timeout = Some(self.shared_left(e, id, now).map_or(own, |o| o.max(own)));
                if add {
                    Op::Add { rule, timeout }
                } else {
                    Op::Refresh { rule, timeout }
                }
            })
            .collect()
    }

    /// Close grant `g`: delete the elements no other open grant holds; put the shared ones
    /// again with what the other grants have left (this grant may have had the longest).
    pub(super) fn nft_close_ops(&self, g: &Grant, elems: &[Elem], now: Instant) -> Vec<Op> {
        elems
            .iter()
            .map(|e| {
                let rule = crate::nft::fw_rule(e, &g.door);
                match self.shared_left(e, g.id, now) {
                    Some(left) => Op::Refresh {
                        rule,
                        timeout: Some(left),
                    },
                    None => Op::Delete { rule },
                }
            })
            .collect()
    }

    /// `knockctl list` goes to the kernel (nftables with grants open).
    pub(super) fn lists_kernel(&self) -> bool {
        self.config.options.firewall == FirewallKind::Nftables && !self.ledger.is_empty()
    }

    /// Read the kernel's elements off the engine task (after every element change already
    /// queued); [`Self::on_kernel_view`] answers `reply` when they are in.
    pub(super) fn list_from_kernel(&mut self, reply: oneshot::Sender<ipc::Response>) {
        let tx = self.kernel_tx.clone();
        let last_id = self.ledger.last_id();
        let asked_at = super::now();
        let Some(list) = self.nft_firewall.list() else {
            let _ = reply.send(self.on_request(ipc::Request::Grants));
            return;
        };
        let queue = self.nft_fw();
        tokio::spawn(async move {
            // Behind the element changes already handed to the firewall queue.
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
            let _ = tx.send(KernelView {
                listed,
                last_id,
                asked_at,
                reply,
            });
        });
    }

    /// The kernel's listing is in: the ledger follows it (a grant whose elements are all gone
    /// is forgotten; a deadline the kernel has shortened moves), then `knockctl list` is
    /// answered with the kernel's time left on each grant.
    pub(super) fn on_kernel_view(&mut self, v: KernelView) {
        let now = super::now();
        let listed = match v.listed {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("cannot read the kernel's nftables elements for knockctl list: {e}");
                let _ = v.reply.send(self.on_request(ipc::Request::Grants));
                return;
            }
        };
        let elapsed = now.saturating_duration_since(v.asked_at);
        let left: HashMap<Elem, Duration> = listed
            .into_iter()
            .map(|k| {
                let l = k.expires.unwrap_or(Duration::from_secs(MAX_TIMEOUT_SECS));
                (k.elem, l.saturating_sub(elapsed))
            })
            .collect();
        let kernel_left = |elems: &[Elem]| elems.iter().filter_map(|e| left.get(e)).max().copied();
        for id in self.ledger.ids() {
            let Some(g) = self.ledger.get(id) else {
                continue;
            };
            let Close::Nft { elems } = &g.close else {
                continue;
            };
            // Only grants the listing can speak for: open before it was asked, and with no
            // element change decided since (a re-knock's put may still be on its way).
            let pending = self.runner.pending(&Chain::NftElems(g.addr));
            if id > v.last_id
                || g.closing.is_some()
                || pending
                || g.recheck.is_some()
                || g.last_check.is_some_and(|t| t >= v.asked_at)
            {
                continue;
            }
            let ledger_left = g.expires.map(|t| t.saturating_duration_since(now));
            match kernel_left(elems) {
                None => {
                    let Some(g) = self.ledger.remove(id) else {
                        continue;
                    };
                    let msg = format!(
                        "{}: {}: grant no longer in the kernel (expired or removed), forgotten",
                        g.addr, g.door
                    );
                    self.line(&msg);
                    let info = grant_info(&g, now);
                    self.emit(|| ipc::EventKind::GrantExpired { grant: info });
                }
                Some(k) if ledger_left.is_some_and(|l| k + Duration::from_secs(1) < l) => {
                    self.ledger.follow_kernel(id, now + k);
                }
                Some(_) => {}
            }
        }
        let grants = self
            .ledger
            .oldest()
            .take(ipc::LIST_CAP)
            .map(|g| {
                let mut info = grant_info(g, now);
                if let (Close::Nft { elems }, false) = (&g.close, g.closing.is_some()) {
                    info.kernel_expires_in_ms = Some(
                        kernel_left(elems)
                            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                    );
                }
                info
            })
            .collect();
        let total = self.ledger.len() as u64;
        let _ = v.reply.send(ipc::Response::Grants { grants, total });
    }

    /// Grants for kernel elements the state file does not know (state file lost or older than
    /// the kernel): each element is given to the first nftables door that opens its port.
    pub(super) fn adopt_kernel_elems(&mut self, orphans: Vec<KernelElem>) {
        let now = super::now();
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
            let opened = crate::config::ports_label(elems.iter().map(|e| (e.port, e.proto)));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        flag, Command6, Config, Door, FirewallKind, OpenPort, Proto, Step, TcpFlags,
    };
    use crate::firewall::fake::RecordingFirewall;
    use crate::firewall::Op;
    use crate::knocklog::MemoryLog;
    use crate::nft::listing::KernelElem;
    use crate::packet::Packet;
    use crate::state::SavedGrant;
    use std::net::Ipv4Addr;
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::Instant;

    const SRV: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 99, 77, 1));
    const CLI: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 99, 77, 2));
    type Exec = crate::action::RecordingExecutor;

    fn config() -> Config {
        let door = Door {
            name: "ssh".into(),
            line: 1,
            sequence: [1111, 2222, 3333]
                .iter()
                .map(|&port| Step {
                    port,
                    proto: Proto::Tcp,
                })
                .collect(),
            one_time_sequences: None,
            seq_timeout: Duration::from_secs(5),
            tcp_flags: TcpFlags {
                set: flag::SYN,
                unset: 0,
            },
            start_command: None,
            start_command_6: Command6::Fallback,
            stop_command: None,
            stop_command_6: Command6::Fallback,
            cmd_timeout: Duration::from_secs(30),
            target: None,
            open: vec![OpenPort {
                port: 22,
                proto: Proto::Tcp,
            }],
            open_chain: "INPUT".into(),
            sweep_guard: true,
            totp_file: None,
            totp: None,
        };
        let mut c = Config {
            doors: vec![door],
            ..Config::default()
        };
        c.options.firewall = FirewallKind::Nftables;
        c
    }

    /// The engine, its nftables backend (recording) and its log.
    fn engine() -> (Engine<Exec, MemoryLog>, RecordingFirewall, MemoryLog) {
        engine_with(config())
    }

    fn engine_with(c: Config) -> (Engine<Exec, MemoryLog>, RecordingFirewall, MemoryLog) {
        let log = MemoryLog::default();
        let nft = RecordingFirewall::default();
        let e = Engine::new(
            c,
            PathBuf::from("/nonexistent/knockd.conf"),
            Exec::default(),
            Arc::new(RecordingFirewall::default()),
            log.clone(),
            Box::new(|_| {}),
        )
        .with_nft_firewall(Arc::new(nft.clone()));
        (e, nft, log)
    }

    /// Every op the nftables backend got, with its timeout in seconds.
    fn ops(fw: &RecordingFirewall) -> Vec<String> {
        fw.batches()
            .into_iter()
            .flatten()
            .map(|op| match &op {
                Op::Add { timeout, .. } | Op::Refresh { timeout, .. } => {
                    format!("{op} {}s", timeout.map_or(0, |t| t.as_secs()))
                }
                _ => op.to_string(),
            })
            .collect()
    }

    fn now() -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn knock(e: &mut Engine<Exec, MemoryLog>) {
        knock_on(e, [1111, 2222, 3333]);
    }

    fn knock_on(e: &mut Engine<Exec, MemoryLog>, ports: [u16; 3]) {
        for (i, port) in ports.into_iter().enumerate() {
            let p = Packet {
                src: CLI,
                dst: SRV,
                proto: Proto::Tcp,
                sport: 40000 + i as u16,
                dport: port,
                tcp_flags: flag::SYN,
                tcp_seq: 1,
            };
            e.on_packet(&p, now());
        }
    }

    async fn settle(e: &mut Engine<Exec, MemoryLog>) {
        for _ in 0..100 {
            tokio::task::yield_now().await;
            while let Some(d) = e.runner.try_recv() {
                e.on_done(d);
            }
            if e.runner.inflight() == 0 {
                return;
            }
        }
    }

    const PUT: &str = "add inet-knockd 22/tcp from 10.99.77.2 (ssh) 30s";
    const REFRESH: &str = "refresh inet-knockd 22/tcp from 10.99.77.2 (ssh) 30s";
    const REMOVE: &str = "delete inet-knockd 22/tcp from 10.99.77.2 (ssh)";

    #[tokio::test(start_paused = true)]
    async fn grant_is_an_element_the_kernel_expires() {
        let (mut e, exec, log) = engine();
        knock(&mut e);
        settle(&mut e).await;
        assert_eq!(ops(&exec), [PUT]);
        let g = e.ledger().find("ssh", CLI).cloned().expect("grant");
        assert!(g.close.kernel_expires());
        let info = super::super::events::grant_info(&g, now());
        assert_eq!(info.kernel_expires_in_ms, Some(30_000));
        // A re-knock puts the element again with a fresh timeout; still one grant.
        tokio::time::advance(Duration::from_secs(10)).await;
        knock(&mut e);
        settle(&mut e).await;
        assert_eq!(ops(&exec), [PUT, REFRESH]);
        assert_eq!(e.ledger().len(), 1);
        // A flood of re-knocks: at most one kernel write a second, with the time left then.
        tokio::time::advance(Duration::from_millis(100)).await;
        knock(&mut e);
        settle(&mut e).await;
        assert_eq!(ops(&exec), [PUT, REFRESH]);
        tokio::time::advance(Duration::from_millis(900)).await;
        e.on_timer(now());
        settle(&mut e).await;
        assert_eq!(
            ops(&exec),
            [
                PUT,
                REFRESH,
                "refresh inet-knockd 22/tcp from 10.99.77.2 (ssh) 29s"
            ]
        );
        // At the deadline the kernel removes it: knockd runs nothing, the ledger follows.
        tokio::time::advance(Duration::from_secs(30)).await;
        e.on_timer(now());
        settle(&mut e).await;
        assert_eq!(ops(&exec).len(), 3);
        assert!(e.ledger().is_empty());
        assert!(log
            .lines()
            .contains(&"10.99.77.2: ssh: grant expired (removed by the kernel)".to_string()));
    }

    #[tokio::test(start_paused = true)]
    async fn revoke_deletes_and_shutdown_leaves_grants_to_the_kernel() {
        let (mut e, exec, log) = engine();
        knock(&mut e);
        settle(&mut e).await;
        e.revoke(CLI, None, now());
        settle(&mut e).await;
        assert_eq!(ops(&exec), [PUT, REMOVE]);
        knock(&mut e);
        settle(&mut e).await;
        e.shutdown().await;
        assert_eq!(ops(&exec), [PUT, REMOVE, PUT], "shutdown must not remove");
        assert!(log
            .lines()
            .iter()
            .any(|l| l.starts_with("leaving 1 nftables grant(s)")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_put_drops_the_grant() {
        let (mut e, exec, _log) = engine();
        exec.fail_on("add inet-knockd");
        knock(&mut e);
        settle(&mut e).await;
        assert!(e.ledger().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn restore_takes_the_kernel_as_the_truth() {
        let (mut e, _exec, log) = engine();
        let elem = |a: &str, port| Elem {
            addr: a.parse().expect("ip"),
            proto: Proto::Tcp,
            port,
        };
        let saved = vec![
            SavedGrant {
                door: "ssh".into(),
                addr: CLI,
                opened: "22/tcp (nftables)".into(),
                opened_at_unix_ms: 1,
                expires_at_unix_ms: Some(i64::MAX / 2),
                close: Close::Nft {
                    elems: vec![elem("10.99.77.2", 22)],
                },
                refreshes: 0,
                closing: false,
                close_error: None,
            },
            SavedGrant {
                door: "ssh".into(),
                addr: "10.99.77.3".parse().expect("ip"),
                opened: "22/tcp (nftables)".into(),
                opened_at_unix_ms: 1,
                expires_at_unix_ms: Some(i64::MAX / 2),
                close: Close::Nft {
                    elems: vec![elem("10.99.77.3", 22)],
                },
                refreshes: 0,
                closing: false,
                close_error: None,
            },
        ];
        let kernel = vec![
            KernelElem {
                elem: elem("10.99.77.2", 22),
                timeout: Some(Duration::from_secs(30)),
                expires: Some(Duration::from_secs(12)),
            },
            // Not in the state file: adopted by the door that opens 22/tcp.
            KernelElem {
                elem: elem("10.99.77.9", 22),
                timeout: Some(Duration::from_secs(30)),
                expires: Some(Duration::from_secs(20)),
            },
        ];
        e.restore_with_kernel(saved, Some(kernel)).await;
        let n = now();
        let left = |a: &str| {
            e.ledger()
                .find("ssh", a.parse().expect("ip"))
                .and_then(|g| g.expires)
                .map(|t| (t.saturating_duration_since(n).as_millis() + 500) / 1000)
        };
        assert_eq!(left("10.99.77.2"), Some(12));
        assert_eq!(left("10.99.77.9"), Some(20));
        assert_eq!(left("10.99.77.3"), None);
        assert!(log.lines().iter().any(|l| l
            == "10.99.77.3: ssh: grant no longer in the kernel (expired or removed), forgotten"));
    }

    /// `ssh` (30 s) and `ssh2` (another sequence, 60 s) both open 22/tcp.
    fn two_doors() -> Config {
        let mut c = config();
        let mut d = c.doors[0].clone();
        d.name = "ssh2".into();
        d.sequence = [4444, 5555, 6666]
            .iter()
            .map(|&port| Step {
                port,
                proto: Proto::Tcp,
            })
            .collect();
        d.cmd_timeout = Duration::from_secs(60);
        c.doors.push(d);
        c
    }

    #[tokio::test(start_paused = true)]
    async fn doors_sharing_a_port_share_one_element_and_never_cut_each_other() {
        let (mut e, fw, _log) = engine_with(two_doors());
        knock(&mut e);
        settle(&mut e).await;
        tokio::time::advance(Duration::from_secs(5)).await;
        knock_on(&mut e, [4444, 5555, 6666]);
        settle(&mut e).await;
        assert_eq!(
            ops(&fw),
            [PUT, "add inet-knockd 22/tcp from 10.99.77.2 (ssh2) 60s"]
        );
        // A re-knock of the shorter grant must not shorten the shared element.
        tokio::time::advance(Duration::from_secs(5)).await;
        knock(&mut e);
        settle(&mut e).await;
        assert_eq!(
            ops(&fw)[2],
            "refresh inet-knockd 22/tcp from 10.99.77.2 (ssh) 55s"
        );
        // Revoking the longer grant keeps the element for the other, with its time left.
        assert!(matches!(
            e.revoke(CLI, Some("ssh2"), now()),
            ipc::Response::Revoked { .. }
        ));
        settle(&mut e).await;
        assert_eq!(
            ops(&fw)[3],
            "refresh inet-knockd 22/tcp from 10.99.77.2 (ssh2) 30s"
        );
        assert_eq!(ops(&fw).len(), 4, "no delete: ssh's access must stay");
        assert_eq!(e.ledger().len(), 1);
        // Revoking the last grant that holds it deletes it.
        e.revoke(CLI, Some("ssh"), now());
        settle(&mut e).await;
        assert_eq!(
            ops(&fw)[4],
            "delete inet-knockd 22/tcp from 10.99.77.2 (ssh)"
        );
        assert!(e.ledger().is_empty());
        // Both at once (knockctl revoke ADDR): the element goes.
        knock(&mut e);
        knock_on(&mut e, [4444, 5555, 6666]);
        settle(&mut e).await;
        e.revoke(CLI, None, now());
        settle(&mut e).await;
        let last = ops(&fw);
        assert!(
            last.last()
                .is_some_and(|o| o.starts_with("delete inet-knockd 22/tcp")),
            "{last:?}"
        );
        assert!(e.ledger().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_that_removes_one_of_two_doors_keeps_the_shared_element() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("knockd.conf");
        let (mut e, fw, log) = engine_with(two_doors());
        e.config_path = conf.clone();
        knock(&mut e);
        knock_on(&mut e, [4444, 5555, 6666]);
        settle(&mut e).await;
        std::fs::write(
            &conf,
            "[options]\n Firewall = nftables\n[ssh]\n sequence = 1111,2222,3333\n open = 22/tcp\n cmd_timeout = 30\n",
        )
        .expect("write");
        e.reload().expect("reload");
        settle(&mut e).await;
        assert!(log.lines().contains(
            &"10.99.77.2: ssh2: grant closed: the door's ports changed at reload".into()
        ));
        // ssh2's element is ssh's too: put again with ssh's time left, not deleted.
        assert_eq!(
            ops(&fw).last().map(String::as_str),
            Some("refresh inet-knockd 22/tcp from 10.99.77.2 (ssh2) 30s")
        );
        assert!(!ops(&fw).iter().any(|o| o.starts_with("delete")));
        assert_eq!(e.ledger().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_cannot_switch_the_backend() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("knockd.conf");
        let (mut e, fw, log) = engine();
        e.config_path = conf.clone();
        std::fs::write(
            &conf,
            "[options]\n Firewall = iptables\n[ssh]\n sequence = 1111,2222,3333\n open = 22/tcp\n",
        )
        .expect("write");
        let errs = e.reload().expect_err("switch refused");
        assert!(
            errs.iter()
                .any(|m| m.contains("Firewall changed from nftables to iptables")
                    && m.contains("restart knockd")),
            "{errs:?}"
        );
        assert!(log
            .lines()
            .contains(&"reload failed: keeping the running configuration".into()));
        assert_eq!(e.config().options.firewall, FirewallKind::Nftables);
        // The first grant after the refused switch goes where it always did.
        knock(&mut e);
        settle(&mut e).await;
        assert_eq!(ops(&fw), [PUT]);
        assert!(
            e.runner.exec().ran().is_empty(),
            "no table clean-up, no iptables"
        );
    }

    /// Ask for the list as the control socket does, and let the kernel's listing come in.
    async fn list(e: &mut Engine<Exec, MemoryLog>) -> Vec<ipc::GrantInfo> {
        let (tx, rx) = oneshot::channel();
        e.on_control(super::super::Control::Request(ipc::Request::Grants, tx));
        let v = e.kernel_rx.recv().await.expect("kernel view");
        e.on_kernel_view(v);
        match rx.await.expect("reply") {
            ipc::Response::Grants { grants, .. } => grants,
            r => panic!("{r:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn list_shows_the_kernels_time_left_and_the_ledger_follows_the_kernel() {
        let (mut e, fw, log) = engine();
        knock(&mut e);
        settle(&mut e).await;
        let elem = Elem {
            addr: CLI,
            proto: Proto::Tcp,
            port: 22,
        };
        // Someone put the element again with 12 s (the ledger thinks 30 s).
        fw.set_listing(vec![KernelElem {
            elem,
            timeout: Some(Duration::from_secs(12)),
            expires: Some(Duration::from_secs(12)),
        }]);
        tokio::time::advance(Duration::from_secs(2)).await;
        let grants = list(&mut e).await;
        assert_eq!(grants.len(), 1);
        assert_eq!(grants[0].kernel_expires_in_ms, Some(12_000));
        let left = e
            .ledger()
            .find("ssh", CLI)
            .and_then(|g| g.expires)
            .map(|t| t.saturating_duration_since(now()));
        assert_eq!(left, Some(Duration::from_secs(12)), "the ledger follows");
        // The kernel no longer has it (expired, or deleted by hand): the grant is gone.
        fw.set_listing(vec![]);
        assert!(list(&mut e).await.is_empty());
        assert!(e.ledger().is_empty());
        assert!(log.lines().contains(
            &"10.99.77.2: ssh: grant no longer in the kernel (expired or removed), forgotten"
                .into()
        ));
        // A grant whose element is still on its way to the kernel is not forgotten.
        fw.set_delay(Duration::from_millis(50));
        knock(&mut e);
        let grants = list(&mut e).await;
        assert_eq!(grants.len(), 1, "{:?}", log.lines());
    }
}
