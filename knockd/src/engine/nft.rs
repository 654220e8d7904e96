//! `Firewall = nftables` in the engine: keeping table `inet knockd` in step with the config at
//! reload, and taking over the kernel's elements at start (the kernel is the truth).

use super::{Engine, TaskKind};
use crate::action::{Action, Executor};
use crate::config;
use crate::grants::Close;
use crate::knocklog::LogSink;
use crate::nft::listing::KernelElem;
use crate::nft::script::{cleanup_script, TableSpec};
use crate::nft::Elem;
use knock_ipc as ipc;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

impl<E: Executor, L: LogSink> Engine<E, L> {
    /// After a reload: with nftables, update the table in one transaction (the protected ports
    /// of the new config) and close the grants of doors that are gone or whose ports changed;
    /// when the backend was switched away from nftables, remove the table.
    pub(super) fn sync_nft_table(&mut self, old: config::FirewallKind) {
        use config::FirewallKind::Nftables;
        let now = super::now();
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
        self.spawn(
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
        let log = MemoryLog::default();
        let nft = RecordingFirewall::default();
        let e = Engine::new(
            config(),
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
        for (i, port) in [1111u16, 2222, 3333].into_iter().enumerate() {
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
            while let Ok(d) = e.done_rx.try_recv() {
                e.on_done(d);
            }
            if e.inflight == 0 {
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
        let info = Engine::<Exec, MemoryLog>::grant_info(&g, now());
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
}
