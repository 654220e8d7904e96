//! The SPA port's DROP rule (`Firewall = iptables`) follows the config: asked for at start,
//! swapped or removed by a reload that applied, untouched by one that failed, removed at a
//! clean exit after the changes still running; never with nftables, never without a door
//! that takes SPA or opens natively.

use super::Engine;
use crate::action::RecordingExecutor;
use crate::config;
use crate::firewall::fake::RecordingFirewall;
use crate::knocklog::MemoryLog;
use std::path::PathBuf;
use std::sync::Arc;

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
        logged(&t, "SPA port 62201/udp: recording"),
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
    assert_eq!(logged(&t, "SPA port 40000/udp: recording"), 1);
    assert_eq!(logged(&t, "SPA port 62201/udp: recording"), 2);
    assert_eq!(logged(&t, "none (knockd stops)"), 1);
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
