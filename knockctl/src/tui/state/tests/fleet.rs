//! Many hosts in one state: rows keyed by host, lists and links per host, the log merged
//! by time, keys that act on the selected row's host.

use super::*;
use crate::tui::input::Command;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

fn key(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
}

fn code(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

#[test]
fn the_log_merges_hosts_by_time_whatever_the_arrival_order() {
    let s = fleet();
    let times: Vec<i64> = s.log.iter().map(|e| e.at_ms).collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "newest first, by event time");
    // node7's late events sit between bastion1's, each line naming its host.
    let around: Vec<(usize, &str)> = s
        .log
        .iter()
        .take(5)
        .map(|e| (e.host, e.text.as_str()))
        .collect();
    assert_eq!(
        around,
        [
            (0, "10.0.0.7 openSSH granted, expires in 30s"),
            (1, "10.0.0.7 openSSH granted until revoked"),
            (0, "203.0.113.7 openSSH stage 2/3"),
            (1, "198.51.100.4 vault stage 1/2"),
            (0, "203.0.113.7 openSSH stage 1/3"),
        ]
    );
    // One host: arrival order, as before the fleet.
    let mut one = state();
    one.on_event(stage(T0, "10.0.0.1", "openSSH", 1, 3), T0);
    one.on_event(stage(T0 - 5_000, "10.0.0.2", "openSSH", 1, 3), T0);
    assert!(one.log[0].text.starts_with("10.0.0.2"));
}

#[test]
fn a_merge_while_paused_keeps_time_order_on_release() {
    let mut s = fleet();
    s.paused = true;
    s.host_event(1, stage(T0 + 2_000, "10.0.0.50", "vault", 1, 2), T0 + 2_000);
    s.host_event(
        0,
        stage(T0 + 1_000, "10.0.0.51", "openSSH", 1, 3),
        T0 + 2_100,
    );
    assert_eq!(s.held.len(), 2);
    s.release_held();
    let first: Vec<&str> = s.log.iter().take(2).map(|e| e.text.as_str()).collect();
    assert_eq!(
        first,
        ["10.0.0.50 vault stage 1/2", "10.0.0.51 openSSH stage 1/3"]
    );
}

#[test]
fn the_same_grant_on_two_hosts_is_two_rows_and_lists_end_only_their_own() {
    let mut s = fleet();
    let rows: Vec<usize> = s
        .visible_grants()
        .iter()
        .filter(|g| g.info.addr == ip("10.0.0.7"))
        .map(|g| g.host)
        .collect();
    assert_eq!(rows, [1, 0], "node7's opened first");
    // bastion1's list without the grant ends bastion1's row only.
    s.host_response(
        0,
        &Request::Grants,
        Response::Grants {
            grants: vec![],
            total: 0,
        },
        T0 + 1_000,
    );
    let ended: Vec<(usize, bool)> = s
        .grants
        .iter()
        .map(|g| (g.host, g.ended.is_some()))
        .collect();
    assert!(
        ended.contains(&(0, true)) && ended.contains(&(1, false)),
        "{ended:?}"
    );
    // A revoke answered by node7 ends node7's row.
    s.host_response(
        1,
        &Request::Revoke {
            addr: ip("10.0.0.7"),
            door: Some("openSSH".into()),
        },
        Response::Revoked {
            grants: vec![grant("10.0.0.7", "openSSH", T0 - 1_500, None)],
        },
        T0 + 1_000,
    );
    assert!(s.grants.iter().all(|g| g.ended.is_some()));
    let notice = s.notice.as_ref().expect("a notice");
    assert_eq!(notice.text, "node7: revoked 10.0.0.7 (openSSH)");
}

#[test]
fn a_host_going_down_takes_only_its_own_attempts_and_marks_only_its_rows() {
    let mut s = fleet();
    assert_eq!(s.attempts.len(), 2);
    s.host_disconnected(1, "knockd closed the connection".into(), T0 + 1_000, T0);
    let hosts: Vec<usize> = s.attempts.iter().map(|a| a.host).collect();
    assert_eq!(hosts, [0]);
    assert_eq!(s.hosts[1].stale_since_ms, Some(T0));
    assert_eq!(s.hosts[0].stale_since_ms, None);
    assert_eq!(s.hosts[0].link, Link::Connected);
    // Back: connected, not stale; its lists start afresh.
    s.host_connected(1, "0.1.0".into(), T0 + 1_000);
    assert_eq!(s.hosts[1].link, Link::Connected);
    assert_eq!(s.hosts[1].stale_since_ms, None);
}

#[test]
fn r_revokes_on_the_selected_grants_host() {
    let mut s = fleet();
    s.on_key(key('2'));
    // The first row is node7's (opened first).
    assert_eq!(s.on_key(key('r')), None);
    assert_eq!(
        s.overlay,
        Some(Overlay::ConfirmRevoke {
            host: 1,
            addr: ip("10.0.0.7"),
            door: "openSSH".into(),
        })
    );
    assert_eq!(
        s.on_key(key('y')),
        Some(Command::Revoke {
            host: 1,
            addr: ip("10.0.0.7"),
            door: "openSSH".into(),
        })
    );
    s.on_key(key('j'));
    s.on_key(key('r'));
    assert!(matches!(
        s.overlay,
        Some(Overlay::ConfirmRevoke { host: 0, .. })
    ));
}

#[test]
fn shift_r_asks_which_host_then_reloads_it_or_all() {
    let mut s = fleet();
    // Grants pane, node7's row selected: the popup offers node7 first.
    s.on_key(key('2'));
    assert_eq!(s.on_key(key('R')), None);
    assert_eq!(s.overlay, Some(Overlay::ChooseReload { cursor: 2 }));
    assert_eq!(
        s.on_key(code(KeyCode::Enter)),
        Some(Command::Reload { host: Some(1) })
    );
    // Up to "every host".
    s.on_key(key('R'));
    s.on_key(key('k'));
    s.on_key(key('k'));
    s.on_key(key('k'));
    assert_eq!(s.overlay, Some(Overlay::ChooseReload { cursor: 0 }));
    assert_eq!(
        s.on_key(code(KeyCode::Enter)),
        Some(Command::Reload { host: None })
    );
    // Down past the last host stays on it; `a` is every host; Esc cancels.
    s.on_key(key('R'));
    for _ in 0..9 {
        s.on_key(key('j'));
    }
    assert_eq!(s.overlay, Some(Overlay::ChooseReload { cursor: 3 }));
    assert_eq!(s.on_key(key('a')), Some(Command::Reload { host: None }));
    s.on_key(key('R'));
    assert_eq!(s.on_key(code(KeyCode::Esc)), None);
    assert_eq!(s.overlay, None);
    // One host: R reloads at once, as it always did.
    let mut one = connected();
    assert_eq!(one.on_key(key('R')), Some(Command::Reload { host: None }));
}

#[test]
fn reload_answers_name_their_host_and_failures_gather_in_one_popup() {
    let mut s = fleet();
    s.host_response(
        0,
        &Request::Reload,
        Response::ReloadFailed {
            errors: vec!["/etc/knockd.conf:3: unknown key".into()],
        },
        T0,
    );
    s.host_response(
        1,
        &Request::Reload,
        Response::ReloadFailed {
            errors: vec!["/etc/knockd.conf:9: bad port".into()],
        },
        T0,
    );
    assert_eq!(
        s.overlay,
        Some(Overlay::ReloadFailed {
            errors: vec![
                "bastion1: /etc/knockd.conf:3: unknown key".into(),
                "node7: /etc/knockd.conf:9: bad port".into(),
            ]
        })
    );
    s.host_command_failed(2, &Request::Reload, "not connected to knockd", T0);
    let notice = s.notice.as_ref().expect("notice");
    assert_eq!(
        notice.text,
        "vps-fra: reload failed: not connected to knockd"
    );
}

#[test]
fn the_filter_matches_host_names_too() {
    let mut s = fleet();
    s.filter = "node7".into();
    assert!(s.visible_grants().iter().all(|g| g.host == 1));
    assert_eq!(s.visible_grants().len(), 1);
    assert!(s.visible_attempts().iter().all(|a| a.host == 1));
    assert!(s.visible_doors().iter().all(|(h, _)| *h == 1));
    assert!(!s.visible_log().is_empty());
    assert!(s.visible_log().iter().all(|e| e.host == 1));
}

#[test]
fn an_attempt_restarting_on_one_host_leaves_the_others_alone() {
    let mut s = fleet();
    s.host_event(1, stage(T0, "203.0.113.7", "openSSH", 1, 3), T0);
    let bastion = s
        .attempts
        .iter()
        .find(|a| a.host == 0 && a.addr == ip("203.0.113.7"))
        .expect("bastion1's attempt");
    assert_eq!(bastion.stage, 2);
    // The new attempt takes node7's door timeout.
    let node7 = s
        .attempts
        .iter()
        .find(|a| a.host == 1 && a.addr == ip("203.0.113.7"))
        .expect("node7's attempt");
    assert_eq!(node7.deadline_ms, Some(T0 + 5_000));
}
