//! The engine with `Firewall = nftables` (a recording backend): elements, shared elements,
//! reload, restore from the kernel, and `knockctl list` following the kernel.

use super::*;
use crate::config::{flag, Command6, Config, Door, FirewallKind, OpenPort, Proto, Step, TcpFlags};
use crate::firewall::fake::RecordingFirewall;
use crate::firewall::nftables::listing::KernelElem;
use crate::firewall::nftables::side as nft_side;
use crate::firewall::nftables::Elem;
use crate::firewall::Op;
use crate::grants::{Close, SHARE_BURST};
use crate::knocklog::MemoryLog;
use crate::packet::Packet;
use crate::state::SavedGrant;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

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
        spa: Vec::new(),
        spa_address: Default::default(),
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
    let info = super::events::grant_info(&g, now());
    assert_eq!(info.kernel_expires_in_ms, Some(30_000));
    // A re-knock puts the element again with a fresh timeout; still one grant.
    tokio::time::advance(Duration::from_secs(10)).await;
    knock(&mut e);
    settle(&mut e).await;
    assert_eq!(ops(&exec), [PUT, REFRESH]);
    assert_eq!(e.ledger().len(), 1);
    // A flood of re-knocks every 20 ms: a burst of three writes (with the one above) from
    // the grant's own budget, four from the quick lane (one grant's share), then at most one
    // kernel write a second, with the time left then.
    let burst = 3 + SHARE_BURST as usize;
    for _ in 1..burst {
        tokio::time::advance(Duration::from_millis(20)).await;
        knock(&mut e);
        settle(&mut e).await;
    }
    assert_eq!(ops(&exec)[1..], vec![REFRESH; burst]);
    tokio::time::advance(Duration::from_millis(20)).await;
    knock(&mut e);
    settle(&mut e).await;
    assert_eq!(ops(&exec).len(), 1 + burst);
    // Queued for when the own budget allows one: a second after the first re-knock.
    tokio::time::advance(Duration::from_millis(859)).await;
    e.on_timer(now());
    settle(&mut e).await;
    assert_eq!(ops(&exec).len(), 1 + burst);
    tokio::time::advance(Duration::from_millis(1)).await;
    e.on_timer(now());
    settle(&mut e).await;
    assert_eq!(
        ops(&exec)[1 + burst],
        "refresh inet-knockd 22/tcp from 10.99.77.2 (ssh) 29s"
    );
    // At the deadline the kernel removes it: knockd runs nothing, the ledger follows.
    tokio::time::advance(Duration::from_secs(31)).await;
    e.on_timer(now());
    settle(&mut e).await;
    assert_eq!(ops(&exec).len(), 2 + burst);
    assert!(e.ledger().is_empty());
    assert!(log
        .lines()
        .contains(&"10.99.77.2: ssh: grant expired (removed by the kernel)".to_string()));
}

#[tokio::test(start_paused = true)]
async fn revoke_deletes_and_on_shutdown_means_the_same_as_for_iptables() {
    // close (the default): grants with a deadline are closed at stop; every nftables grant
    // has one.
    let (mut e, fw, _log) = engine();
    knock(&mut e);
    settle(&mut e).await;
    e.revoke(CLI, None, now());
    settle(&mut e).await;
    assert_eq!(ops(&fw), [PUT, REMOVE]);
    knock(&mut e);
    settle(&mut e).await;
    e.shutdown().await;
    assert_eq!(ops(&fw), [PUT, REMOVE, PUT, REMOVE], "OnShutdown = close");
    // close-all: the same.
    let mut c = config();
    c.options.on_shutdown = crate::config::ShutdownPolicy::CloseAll;
    let (mut e, fw, _log) = engine_with(c);
    knock(&mut e);
    settle(&mut e).await;
    e.shutdown().await;
    assert_eq!(ops(&fw), [PUT, REMOVE], "OnShutdown = close-all");
    // keep: left to the kernel, which closes it at its deadline.
    let mut c = config();
    c.options.on_shutdown = crate::config::ShutdownPolicy::Keep;
    let (mut e, fw, log) = engine_with(c);
    knock(&mut e);
    settle(&mut e).await;
    e.shutdown().await;
    assert_eq!(ops(&fw), [PUT], "OnShutdown = keep");
    assert!(log
        .lines()
        .iter()
        .any(|l| l.starts_with("leaving 1 nftables grant(s) to the kernel")));
}

/// The next answer of the nftables side's tasks, handled as the engine's loop would.
async fn next_nft(e: &mut Engine<Exec, MemoryLog>) {
    let ev = e.nft.recv().await.expect("nftables event");
    e.on_nft(ev);
    settle(e).await;
}

#[tokio::test(start_paused = true)]
async fn a_removed_table_is_recreated_and_the_open_grants_put_back() {
    let (mut e, fw, log) = engine();
    knock(&mut e);
    settle(&mut e).await;
    tokio::time::advance(Duration::from_secs(10)).await;
    // `nft flush ruleset`: the kernel says so; knockd checks, re-creates, puts back.
    fw.lose_table();
    e.on_nft(nft_side::NftEvent::Touched);
    next_nft(&mut e).await;
    assert_eq!(fw.scripts().len(), 1, "the table is re-created");
    assert!(
        fw.scripts()[0].contains("counter drop"),
        "{:?}",
        fw.scripts()
    );
    assert_eq!(
        ops(&fw),
        [PUT, "refresh inet-knockd 22/tcp from 10.99.77.2 (ssh) 20s"],
        "the grant's element is back with the time it has left"
    );
    assert_eq!(e.stats().nft_tables_recreated, 1);
    let said = log
        .lines()
        .iter()
        .filter(|l| l.contains("was removed or changed by another program"))
        .count();
    assert_eq!(said, 1, "{:?}", log.lines());
    // A notification about a table that is whole changes nothing.
    e.on_nft(nft_side::NftEvent::Touched);
    next_nft(&mut e).await;
    assert_eq!(fw.scripts().len(), 1);
    assert_eq!(e.stats().nft_tables_recreated, 1);
}

#[tokio::test(start_paused = true)]
async fn an_open_against_a_removed_table_recreates_it_and_opens() {
    let (mut e, fw, _log) = engine();
    fw.lose_table();
    knock(&mut e);
    settle(&mut e).await;
    next_nft(&mut e).await;
    // The failed put had the table checked and re-created, then went in: an open grant,
    // not a closing one retried forever against a missing table.
    let g = e.ledger().find("ssh", CLI).cloned().expect("grant");
    assert!(g.closing.is_none(), "{g:?}");
    assert_eq!(fw.scripts().len(), 1);
    assert!(fw.rules().iter().any(|r| r.src == CLI && r.port == 22));
    assert_eq!(e.stats().nft_tables_recreated, 1);
}

/// A reload request as the control socket sends it: the config read and parsed off the engine.
fn reload_request(
    conf: &std::path::Path,
    tx: oneshot::Sender<crate::reload::ReloadResult>,
) -> Control {
    let prepared = crate::reload::Prepared {
        loaded: config::load(conf),
        work: None,
    };
    Control::ReloadLoaded(Box::new(prepared), Some(tx))
}

#[tokio::test(start_paused = true)]
async fn a_reload_answers_only_after_its_table_update_and_says_why_it_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("knockd.conf");
    std::fs::write(
        &conf,
        "[options]\n Firewall = nftables\n[ssh]\n sequence = 1111,2222,3333\n open = 2222/tcp\n",
    )
    .expect("write");
    let (mut e, fw, _log) = engine();
    e.config_path = conf.clone();
    let (tx, mut rx) = oneshot::channel();
    e.on_control(reload_request(&conf, tx));
    assert!(
        rx.try_recv().is_err(),
        "answered before the table update ran"
    );
    next_nft(&mut e).await;
    assert!(matches!(rx.try_recv(), Ok(Ok(_))));
    assert!(fw
        .scripts()
        .last()
        .is_some_and(|s| s.contains("tcp . 2222")));
    // The update fails: the reload says so, with the reason.
    fw.fail_on("tcp . 2222");
    let (tx, mut rx) = oneshot::channel();
    e.on_control(reload_request(&conf, tx));
    next_nft(&mut e).await;
    match rx.try_recv() {
        Ok(Err(errs)) => assert!(
            errs.iter()
                .any(|m| m.contains("could not be updated") && m.contains("injected failure")),
            "{errs:?}"
        ),
        r => panic!("{r:?}"),
    }
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
            client: None,
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
            client: None,
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
    assert!(log
        .lines()
        .iter()
        .any(|l| l
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
    assert!(log
        .lines()
        .contains(&"10.99.77.2: ssh2: grant closed: the door's ports changed at reload".into()));
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
    e.on_control(Control::Request(ipc::Request::Grants, tx));
    let ev = e.nft.recv().await.expect("kernel view");
    e.on_nft(ev);
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
        &"10.99.77.2: ssh: grant no longer in the kernel (expired or removed), forgotten".into()
    ));
    // A grant whose element is still on its way to the kernel is not forgotten.
    fw.set_delay(Duration::from_millis(50));
    knock(&mut e);
    let grants = list(&mut e).await;
    assert_eq!(grants.len(), 1, "{:?}", log.lines());
}

#[tokio::test(start_paused = true)]
async fn doors_under_nftables_name_no_chain() {
    let (mut e, _fw, _log) = engine();
    match e.on_request(ipc::Request::Doors) {
        ipc::Response::Doors { doors } => assert_eq!(doors[0].action, "open 22/tcp (nftables)"),
        r => panic!("{r:?}"),
    }
}
