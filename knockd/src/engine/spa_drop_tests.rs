//! The SPA port's DROP rule (`Firewall = iptables`) follows the config: asked for at start,
//! swapped or removed by a reload that applied, untouched by one that failed, removed at a
//! clean exit after the changes still running; never with nftables, never without a door
//! that takes SPA or opens natively. While a rule is wanted, it is checked every
//! `CHECK_EVERY` through the run loop: quiet when in place, put back (and said so) when
//! another program removed it, never two changes at once.

use super::spa_drop::CHECK_EVERY;
use super::Engine;
use crate::action::RecordingExecutor;
use crate::config;
use crate::firewall::fake::RecordingFirewall;
use crate::firewall::spa_drop::Occasion;
use crate::knocklog::MemoryLog;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

const SPA: &str = "[ssh]\n SPA = alice\n Open = 22/tcp\n";
const MOVED: &str = "[options]\n SPA_Port = 40000\n[ssh]\n SPA = alice\n Open = 22/tcp\n";
const NO_SPA: &str = "[ssh]\n Sequence = 7000,8000\n Open = 22/tcp\n";
const COMMAND_ONLY: &str = "[ssh]\n SPA = alice\n Start_Command = /bin/true %IP%\n";

struct T {
    e: Engine<RecordingExecutor, MemoryLog>,
    fw: RecordingFirewall,
    log: MemoryLog,
}

fn parse(text: &str, firewall: config::FirewallKind) -> config::Loaded {
    let mut p = config::parse(text, "knockd.conf")?;
    p.config.options.firewall = firewall;
    Ok(p)
}

fn engine(text: &str, firewall: config::FirewallKind) -> T {
    let fw = RecordingFirewall::default();
    let log = MemoryLog::default();
    let e = Engine::new(
        parse(text, firewall).expect("config").config,
        PathBuf::from("/nonexistent/knockd.conf"),
        RecordingExecutor::default(),
        Arc::new(fw.clone()),
        log.clone(),
        Box::new(|_| {}),
    );
    T { e, fw, log }
}

fn logged(t: &T, needle: &str) -> usize {
    t.log.lines().iter().filter(|l| l.contains(needle)).count()
}

#[tokio::test]
async fn the_rule_follows_start_reloads_and_a_clean_exit() {
    use config::FirewallKind::Iptables;
    let mut t = engine(SPA, Iptables);
    t.e.restore_all(crate::state::Saved::default(), None).await;
    assert_eq!(t.fw.spa_drops(), [(Some(62201), "no door takes SPA now")]);
    assert_eq!(
        logged(&t, "SPA port 62201/udp: inserted `fake -I INPUT 1"),
        1,
        "{:?}",
        t.log.lines()
    );

    // A reload that fails changes nothing; one that moves the port asks for the new one.
    assert!(t.e.reload_with(parse("[ssh\n", Iptables)).is_err());
    assert_eq!(t.fw.spa_drops().len(), 1);
    t.e.reload_with(parse(MOVED, Iptables)).expect("reload");
    assert_eq!(t.fw.spa_drops()[1].0, Some(40000));
    // No door takes SPA any more: no rule; another reload without SPA asks nothing.
    t.e.reload_with(parse(NO_SPA, Iptables)).expect("reload");
    assert_eq!(t.fw.spa_drops()[2], (None, "no door takes SPA now"));
    t.e.reload_with(parse(NO_SPA, Iptables)).expect("reload");
    assert_eq!(t.fw.spa_drops().len(), 3);
    // Back again, then a clean exit: removed, after the change still running, and every
    // line of the background changes is logged.
    t.e.reload_with(parse(SPA, Iptables)).expect("reload");
    t.e.shutdown().await;
    assert_eq!(
        t.fw.spa_drops()[3..],
        [
            (Some(62201), "no door takes SPA now"),
            (None, "knockd stops")
        ]
    );
    assert_eq!(
        logged(&t, "SPA port 40000/udp: inserted `fake -I INPUT 1"),
        1
    );
    assert_eq!(
        logged(&t, "SPA port 62201/udp: inserted `fake -I INPUT 1"),
        2
    );
    assert_eq!(logged(&t, "(no longer the SPA port)"), 1);
    assert_eq!(logged(&t, "(knockd stops)"), 1);
    assert_eq!(t.fw.spa_listed(), Vec::<u16>::new());
}

#[tokio::test]
async fn a_start_without_spa_removes_a_rule_left_behind_and_an_exit_asks_nothing() {
    let mut t = engine(NO_SPA, config::FirewallKind::Iptables);
    t.e.restore_all(crate::state::Saved::default(), None).await;
    assert_eq!(t.fw.spa_drops(), [(None, "no door takes SPA now")]);
    t.e.shutdown().await;
    assert_eq!(t.fw.spa_drops().len(), 1);
}

#[tokio::test]
async fn nftables_and_command_only_doors_ask_for_no_rule() {
    let mut t = engine(SPA, config::FirewallKind::Nftables);
    t.e.restore_all(crate::state::Saved::default(), None).await;
    t.e.shutdown().await;
    assert_eq!(t.fw.spa_drops(), []);

    // Command-only doors: no firewall program of knockd's; a reload says so again.
    let mut t = engine(COMMAND_ONLY, config::FirewallKind::Iptables);
    t.e.restore_all(crate::state::Saved::default(), None).await;
    t.e.reload_with(parse(COMMAND_ONLY, config::FirewallKind::Iptables))
        .expect("reload");
    t.e.shutdown().await;
    assert_eq!(t.fw.spa_drops(), []);
    assert_eq!(
        logged(&t, "warning: SPA_Port 62201/udp: no door opens natively"),
        1,
        "{:?}",
        t.log.lines()
    );
}

/// The engine's run loop, spawned; send on the sender (or drop it) to stop it cleanly.
fn run(
    e: Engine<RecordingExecutor, MemoryLog>,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (_pkt_tx, pkt_rx) = mpsc::channel(1);
    let (_ctl_tx, ctl_rx) = mpsc::channel(1);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _keep = (_pkt_tx, _ctl_tx);
        let _ = e
            .run(pkt_rx, ctl_rx, async {
                let _ = stopped.await;
            })
            .await;
    });
    (stop, task)
}

fn checks(fw: &RecordingFirewall) -> usize {
    fw.spa_occasions()
        .iter()
        .filter(|o| **o == Occasion::Check)
        .count()
}

#[tokio::test(start_paused = true)]
async fn a_check_every_15_s_is_quiet_and_puts_back_a_rule_another_program_removed() {
    let mut t = engine(SPA, config::FirewallKind::Iptables);
    t.e.restore_all(crate::state::Saved::default(), None).await;
    assert_eq!(CHECK_EVERY, Duration::from_secs(15));
    let (fw, log) = (t.fw.clone(), t.log.clone());
    let (stop, task) = run(t.e);
    tokio::time::sleep(CHECK_EVERY - Duration::from_secs(1)).await;
    assert_eq!(fw.spa_occasions(), [Occasion::Start]);

    // In place: checked, nothing logged.
    let before = log.lines();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fw.spa_occasions(), [Occasion::Start, Occasion::Check]);
    tokio::time::sleep(CHECK_EVERY).await;
    assert_eq!(checks(&fw), 2);
    assert_eq!(log.lines(), before);

    // Removed behind knockd's back (`iptables -F INPUT`): back within one period, and said.
    fw.lose_spa_drop();
    tokio::time::sleep(CHECK_EVERY).await;
    assert_eq!(fw.spa_listed(), [62201]);
    let said: Vec<String> = log
        .lines()
        .into_iter()
        .filter(|l| l.contains("was missing from INPUT (removed by another program"))
        .collect();
    assert_eq!(said.len(), 1, "{:?}", log.lines());
    assert!(
        said[0].starts_with("warning: SPA port 62201/udp: fake: DROP rule knockd@"),
        "{said:?}"
    );
    assert!(!log.lines().iter().any(|l| l.contains("already in INPUT")));

    // A clean exit removes it; no more checks.
    stop.send(()).expect("stop");
    task.await.expect("join");
    assert_eq!(fw.spa_occasions().last(), Some(&Occasion::Stop));
    assert_eq!(fw.spa_listed(), Vec::<u16>::new());
    let n = fw.spa_occasions().len();
    tokio::time::sleep(CHECK_EVERY * 4).await;
    assert_eq!(fw.spa_occasions().len(), n);
}

#[tokio::test(start_paused = true)]
async fn no_check_while_no_rule_is_wanted() {
    // No SPA door from the start, SPA with nftables, and a reload that drops the SPA door.
    let mut none = engine(NO_SPA, config::FirewallKind::Iptables);
    none.e
        .restore_all(crate::state::Saved::default(), None)
        .await;
    let mut nft = engine(SPA, config::FirewallKind::Nftables);
    nft.e
        .restore_all(crate::state::Saved::default(), None)
        .await;
    let mut gone = engine(SPA, config::FirewallKind::Iptables);
    gone.e
        .restore_all(crate::state::Saved::default(), None)
        .await;
    gone.e
        .reload_with(parse(NO_SPA, config::FirewallKind::Iptables))
        .expect("reload");
    let fws = [none.fw.clone(), nft.fw.clone(), gone.fw.clone()];
    let runs = [run(none.e), run(nft.e), run(gone.e)];
    tokio::time::sleep(CHECK_EVERY * 20).await;
    assert_eq!(fws[0].spa_occasions(), [Occasion::Start]);
    assert_eq!(fws[1].spa_occasions(), []);
    assert_eq!(fws[2].spa_occasions(), [Occasion::Start, Occasion::Reload]);
    assert_eq!(fws[2].spa_listed(), Vec::<u16>::new());
    for (stop, task) in runs {
        stop.send(()).expect("stop");
        task.await.expect("join");
    }
}

/// A sync slower than the period (a long chain, a held xtables lock): the ticks while one
/// runs (a reload's or a check's) are skipped, not queued, and two never run at once.
#[tokio::test(start_paused = true)]
async fn a_slow_sync_skips_ticks_and_never_runs_twice_at_once() {
    let mut t = engine(SPA, config::FirewallKind::Iptables);
    t.fw.set_spa_delay(CHECK_EVERY + Duration::from_secs(5));
    let t0 = tokio::time::Instant::now();
    t.e.restore_all(crate::state::Saved::default(), None).await;
    t.e.reload_with(parse(MOVED, config::FirewallKind::Iptables))
        .expect("reload");
    let fw = t.fw.clone();
    let (stop, task) = run(t.e);
    tokio::time::sleep(CHECK_EVERY * 12).await;
    let elapsed = t0.elapsed().as_secs();
    // Each sync takes 20 s: at most one asked per 20 s (one per 15 s tick if they queued).
    let asked = fw.spa_occasions().len() as u64;
    assert!(asked >= 4, "{:?}", fw.spa_occasions());
    assert!(
        asked <= elapsed / 20 + 1,
        "{asked} syncs asked in {elapsed} s: {:?}",
        fw.spa_occasions()
    );
    assert_eq!(fw.spa_most_at_once(), 1);
    assert_eq!(fw.spa_listed(), [40000]);
    stop.send(()).expect("stop");
    task.await.expect("join");
    assert_eq!(fw.spa_most_at_once(), 1);
}

/// A check that fails the same way as the one before (ip6tables missing) is logged once, not
/// every 15 s; a check that found nothing to say lets the next failure be logged again.
#[test]
fn a_check_failing_the_same_way_again_is_quiet() {
    let mut side = super::spa_drop::SpaDropSide::default();
    let err = vec!["error: SPA port 62201/udp: cannot list ip6tables INPUT (x)".to_string()];
    assert_eq!(side.lines(true, err.clone()), Some(err.clone()));
    assert_eq!(side.lines(true, err.clone()), None);
    assert_eq!(side.lines(true, Vec::new()), None);
    assert_eq!(side.lines(true, err.clone()), Some(err.clone()));
    // A reload's lines are always logged, and the next check's failure again.
    assert_eq!(side.lines(false, err.clone()), Some(err.clone()));
    assert_eq!(side.lines(true, err.clone()), Some(err));
}
