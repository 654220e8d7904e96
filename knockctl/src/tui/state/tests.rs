use super::*;
use crate::tui::fixtures::*;
use knock_ipc::Response;

fn row<'a>(s: &'a State, addr: &str, door: &str) -> &'a Attempt {
    s.attempts
        .iter()
        .find(|a| a.addr == ip(addr) && a.door == door)
        .expect("attempt row")
}

fn grant_row<'a>(s: &'a State, addr: &str, door: &str) -> &'a Grant {
    s.grants
        .iter()
        .find(|g| g.info.addr == ip(addr) && g.info.door == door)
        .expect("grant row")
}

#[test]
fn stages_start_and_advance_an_attempt_with_the_doors_timeout() {
    let mut s = connected();
    s.on_event(stage(T0, "10.0.0.12", "openSSH", 1, 3), T0);
    s.on_event(stage(T0 + 400, "10.0.0.12", "openSSH", 2, 3), T0 + 400);
    let a = row(&s, "10.0.0.12", "openSSH");
    assert_eq!((a.stage, a.of), (2, 3));
    assert_eq!(a.started_ms, T0);
    assert_eq!(
        a.deadline_ms,
        Some(T0 + 5_000),
        "seq_timeout from the first knock"
    );
    assert_eq!(a.ended, None);
    assert_eq!(s.attempts.len(), 1);
}

#[test]
fn a_first_knock_again_restarts_the_attempt() {
    let mut s = connected();
    s.on_event(stage(T0, "10.0.0.12", "openSSH", 1, 3), T0);
    s.on_event(stage(T0 + 400, "10.0.0.12", "openSSH", 2, 3), T0 + 400);
    s.on_event(stage(T0 + 900, "10.0.0.12", "openSSH", 1, 3), T0 + 900);
    let a = row(&s, "10.0.0.12", "openSSH");
    assert_eq!((a.stage, a.started_ms), (1, T0 + 900));
    assert_eq!(s.attempts.len(), 1);
}

#[test]
fn ended_attempts_are_marked_then_dropped_after_the_linger() {
    let table = [
        (
            EventKind::Open {
                addr: ip("10.0.0.12"),
                door: "openSSH".into(),
            },
            AttemptEnd::Open,
            3,
        ),
        (
            EventKind::Reset {
                addr: ip("10.0.0.12"),
                door: "openSSH".into(),
                stage: 2,
            },
            AttemptEnd::Reset,
            2,
        ),
        (
            EventKind::Timeout {
                addr: ip("10.0.0.12"),
                door: "openSSH".into(),
                stage: 2,
            },
            AttemptEnd::Timeout,
            2,
        ),
    ];
    for (kind, how, stage_after) in table {
        let mut s = connected();
        s.on_event(stage(T0, "10.0.0.12", "openSSH", 1, 3), T0);
        s.on_event(stage(T0 + 100, "10.0.0.12", "openSSH", 2, 3), T0 + 100);
        s.on_event(ev(T0 + 200, kind), T0 + 200);
        let a = row(&s, "10.0.0.12", "openSSH");
        assert_eq!(a.ended, Some((how, T0 + 200)), "{how:?}");
        assert_eq!(a.stage, stage_after, "{how:?}");
        s.on_tick(T0 + 200 + LINGER_MS - 1);
        assert_eq!(s.attempts.len(), 1, "{how:?} still shown");
        s.on_tick(T0 + 200 + LINGER_MS);
        assert!(s.attempts.is_empty(), "{how:?} gone");
    }
}

#[test]
fn open_without_a_seen_start_still_flashes() {
    let mut s = connected();
    s.on_event(
        ev(
            T0,
            EventKind::Open {
                addr: ip("10.0.0.5"),
                door: "openSSH".into(),
            },
        ),
        T0,
    );
    let a = row(&s, "10.0.0.5", "openSSH");
    assert_eq!((a.stage, a.of), (3, 3));
    assert_eq!(a.ended, Some((AttemptEnd::Open, T0)));
}

#[test]
fn the_attempt_list_is_authoritative_except_for_fresh_rows() {
    let mut s = connected();
    // Known from a list only.
    s.on_response(
        &Request::Attempts,
        Response::Attempts {
            attempts: vec![
                attempt_info("10.0.0.1", "openSSH", 1, 3, 1_000, 4_000),
                attempt_info("10.0.0.2", "openSSH", 2, 3, 4_900, 100),
            ],
            total: 2,
        },
        T0,
    );
    let a = row(&s, "10.0.0.1", "openSSH");
    assert_eq!(a.started_ms, T0 - 1_000);
    assert_eq!(a.deadline_ms, Some(T0 + 4_000));
    // A stage event just now, then a list that predates it.
    s.on_event(stage(T0 + 900, "10.0.0.3", "vault", 1, 2), T0 + 900);
    s.on_response(
        &Request::Attempts,
        Response::Attempts {
            attempts: vec![attempt_info("10.0.0.1", "openSSH", 1, 3, 2_000, 3_000)],
            total: 1,
        },
        T0 + 1_000,
    );
    assert_eq!(row(&s, "10.0.0.3", "vault").ended, None, "fresh: kept");
    // 10.0.0.2 was past its deadline: timed out. Nothing said so: inferred.
    assert_eq!(
        row(&s, "10.0.0.2", "openSSH").ended,
        Some((AttemptEnd::Timeout, T0 + 1_000))
    );
    // Gone well before its deadline: reset.
    s.on_response(
        &Request::Attempts,
        Response::Attempts {
            attempts: vec![],
            total: 0,
        },
        T0 + 2_000,
    );
    assert_eq!(
        row(&s, "10.0.0.1", "openSSH").ended,
        Some((AttemptEnd::Reset, T0 + 2_000))
    );
    assert_eq!(
        row(&s, "10.0.0.3", "vault").ended,
        Some((AttemptEnd::Reset, T0 + 2_000))
    );
}

#[test]
fn a_list_older_than_an_open_does_not_revive_the_attempt() {
    let mut s = connected();
    s.on_event(stage(T0, "10.0.0.12", "openSSH", 1, 3), T0);
    s.on_event(
        ev(
            T0 + 10,
            EventKind::Open {
                addr: ip("10.0.0.12"),
                door: "openSSH".into(),
            },
        ),
        T0 + 10,
    );
    s.on_response(
        &Request::Attempts,
        Response::Attempts {
            attempts: vec![attempt_info("10.0.0.12", "openSSH", 2, 3, 10, 4_990)],
            total: 1,
        },
        T0 + 20,
    );
    assert_eq!(
        row(&s, "10.0.0.12", "openSSH").ended,
        Some((AttemptEnd::Open, T0 + 10))
    );
}

#[test]
fn grants_count_down_and_linger_when_closed() {
    let mut s = connected();
    s.on_event(
        ev(
            T0,
            EventKind::GrantAdded {
                grant: grant("10.0.0.12", "openSSH", T0, Some(30_000)),
            },
        ),
        T0,
    );
    assert_eq!(
        grant_row(&s, "10.0.0.12", "openSSH").expires_at_ms,
        Some(T0 + 30_000)
    );
    // A later list re-bases the deadline on its own clock reading.
    s.on_response(
        &Request::Grants,
        Response::Grants {
            grants: vec![grant("10.0.0.12", "openSSH", T0, Some(20_000))],
            total: 1,
        },
        T0 + 10_000,
    );
    assert_eq!(
        grant_row(&s, "10.0.0.12", "openSSH").expires_at_ms,
        Some(T0 + 30_000)
    );
    s.on_event(
        ev(
            T0 + 11_000,
            EventKind::GrantRevoked {
                grant: grant("10.0.0.12", "openSSH", T0, Some(19_000)),
            },
        ),
        T0 + 11_000,
    );
    assert_eq!(
        grant_row(&s, "10.0.0.12", "openSSH").ended,
        Some((GrantEnd::Revoked, T0 + 11_000))
    );
    // A list from before the revoke does not bring it back.
    s.on_response(
        &Request::Grants,
        Response::Grants {
            grants: vec![grant("10.0.0.12", "openSSH", T0, Some(19_000))],
            total: 1,
        },
        T0 + 11_100,
    );
    assert!(grant_row(&s, "10.0.0.12", "openSSH").ended.is_some());
    s.on_tick(T0 + 11_000 + LINGER_MS);
    assert!(s.grants.is_empty());
}

#[test]
fn grants_missing_from_a_list_close_as_expired_or_closed() {
    let mut s = connected();
    s.on_response(
        &Request::Grants,
        Response::Grants {
            grants: vec![
                grant("10.0.0.1", "openSSH", T0, Some(1_000)),
                grant("10.0.0.2", "vault", T0, None),
            ],
            total: 2,
        },
        T0,
    );
    s.on_response(
        &Request::Grants,
        Response::Grants {
            grants: vec![],
            total: 0,
        },
        T0 + 1_000,
    );
    assert_eq!(
        grant_row(&s, "10.0.0.1", "openSSH").ended,
        Some((GrantEnd::Expired, T0 + 1_000))
    );
    assert_eq!(
        grant_row(&s, "10.0.0.2", "vault").ended,
        Some((GrantEnd::Closed, T0 + 1_000))
    );
}

#[test]
fn knock_rate_counts_stage_events_in_the_window() {
    let mut s = connected();
    for i in 0..10 {
        s.on_event(
            stage(T0 + i * 100, "10.0.0.1", "openSSH", 1, 3),
            T0 + i * 100,
        );
    }
    assert_eq!(s.knock_rate(T0 + 1_000), 2.0);
    assert_eq!(s.knock_rate(T0 + RATE_WINDOW_MS + 450), 1.0);
    s.on_tick(T0 + RATE_WINDOW_MS + 2_000);
    assert_eq!(s.knock_rate(T0 + RATE_WINDOW_MS + 2_000), 0.0);
    assert!(s.stage_times.is_empty());
}

#[test]
fn log_is_newest_first_and_pause_holds_new_lines() {
    let mut s = connected();
    s.on_event(stage(T0, "10.0.0.1", "openSSH", 1, 3), T0);
    s.on_event(stage(T0 + 1, "10.0.0.1", "openSSH", 2, 3), T0 + 1);
    assert_eq!(s.log[0].text, "10.0.0.1 openSSH stage 2/3");
    assert_eq!(s.log[0].kind, LogKind::Stage);
    let before = s.log.len();
    s.paused = true;
    s.on_event(stage(T0 + 2, "10.0.0.1", "openSSH", 3, 3), T0 + 2);
    s.on_event(
        ev(
            T0 + 2,
            EventKind::Open {
                addr: ip("10.0.0.1"),
                door: "openSSH".into(),
            },
        ),
        T0 + 2,
    );
    assert_eq!(s.log.len(), before, "frozen while paused");
    assert_eq!(s.held.len(), 2);
    s.paused = false;
    s.release_held();
    assert_eq!(s.log[0].text, "10.0.0.1 openSSH OPEN");
    assert_eq!(s.log[1].text, "10.0.0.1 openSSH stage 3/3");
    assert!(s.held.is_empty());
}

#[test]
fn log_is_bounded() {
    let mut s = connected();
    for i in 0..(LOG_CAP as i64 + 50) {
        s.on_event(stage(T0 + i, "10.0.0.1", "openSSH", 1, 3), T0 + i);
    }
    assert_eq!(s.log.len(), LOG_CAP);
}

#[test]
fn every_event_kind_has_a_log_line() {
    let g = grant("10.0.0.12", "openSSH", T0, Some(30_000));
    let table: Vec<(EventKind, LogKind, &str)> = vec![
        (
            EventKind::GrantAdded { grant: g.clone() },
            LogKind::Grant,
            "10.0.0.12 openSSH granted, expires in 30s",
        ),
        (
            EventKind::GrantRefreshed { grant: g.clone() },
            LogKind::Refresh,
            "10.0.0.12 openSSH grant refreshed, expires in 30s",
        ),
        (
            EventKind::GrantExpired { grant: g.clone() },
            LogKind::Expire,
            "10.0.0.12 openSSH grant expired",
        ),
        (
            EventKind::GrantClosed {
                grant: g.clone(),
                by_door: "closeSSH".into(),
            },
            LogKind::Close,
            "10.0.0.12 openSSH grant closed by door closeSSH",
        ),
        (
            EventKind::CommandFailed {
                door: "vault".into(),
                message: "exit status 1".into(),
            },
            LogKind::Error,
            "vault command failed: exit status 1",
        ),
        (
            EventKind::ReloadOk {
                doors: 3,
                warnings: vec![],
            },
            LogKind::Reload,
            "configuration reloaded: 3 doors",
        ),
        (
            EventKind::ReloadFailed {
                errors: vec!["/etc/knockd.conf:12: unknown protocol 'icmp'".into()],
            },
            LogKind::Error,
            "reload failed: /etc/knockd.conf:12: unknown protocol 'icmp'",
        ),
        (
            EventKind::Lagged { missed: 7 },
            LogKind::Error,
            "missed 7 events (the dashboard fell behind)",
        ),
    ];
    for (kind, log_kind, text) in table {
        let mut s = connected();
        s.on_event(ev(T0, kind), T0);
        assert_eq!((s.log[0].kind, s.log[0].text.as_str()), (log_kind, text));
    }
}

#[test]
fn disconnect_clears_attempts_and_logs_each_new_reason_once() {
    let mut s = busy();
    let lines = s.log.len();
    s.on_disconnected("connection closed".into(), T0 + 1_000, T0);
    s.on_disconnected("connection closed".into(), T0 + 3_000, T0 + 1_000);
    assert!(s.attempts.is_empty());
    assert_eq!(s.grants.len(), 2, "grants outlive the link");
    assert_eq!(s.log.len(), lines + 1);
    assert_eq!(
        s.hosts[0].link,
        Link::Disconnected {
            reason: "connection closed".into(),
            retry_at_ms: T0 + 3_000
        }
    );
    s.on_connected("0.1.1".into(), T0 + 3_000);
    assert_eq!(s.hosts[0].link, Link::Connected);
    assert_eq!(s.hosts[0].daemon_version.as_deref(), Some("0.1.1"));
}

#[test]
fn command_answers_become_notices_and_popups() {
    let revoke = Request::Revoke {
        addr: ip("10.0.0.99"),
        door: Some("openSSH".into()),
    };
    let mut s = busy();
    s.on_response(
        &revoke,
        Response::Revoked {
            grants: vec![grant("10.0.0.99", "openSSH", T0, Some(29_000))],
        },
        T0,
    );
    let notice = s.notice.clone().expect("notice");
    assert_eq!(notice.text, "revoked 10.0.0.99 (openSSH)");
    assert!(!notice.error);
    assert_eq!(
        grant_row(&s, "10.0.0.99", "openSSH").ended,
        Some((GrantEnd::Revoked, T0))
    );

    s.on_response(&revoke, Response::Revoked { grants: vec![] }, T0);
    let notice = s.notice.clone().expect("notice");
    assert!(notice.error);
    assert!(notice.text.contains("10.0.0.99"), "{}", notice.text);

    let errors = vec!["/etc/knockd.conf:12: unknown protocol 'icmp' (use tcp or udp)".into()];
    s.on_response(
        &Request::Reload,
        Response::ReloadFailed {
            errors: errors.clone(),
        },
        T0,
    );
    assert_eq!(s.overlay, Some(Overlay::ReloadFailed { errors }));

    s.overlay = None;
    s.on_response(
        &Request::Reload,
        Response::Reloaded { warnings: vec![] },
        T0,
    );
    assert_eq!(s.overlay, None);
    assert_eq!(
        s.notice.as_ref().map(|n| n.text.as_str()),
        Some("configuration reloaded")
    );

    s.on_response(
        &Request::Status,
        Response::Error {
            message: "busy".into(),
        },
        T0,
    );
    assert_eq!(
        s.notice.as_ref().map(|n| n.text.as_str()),
        Some("knockd: busy (status)")
    );
}

#[test]
fn notices_age_out() {
    let mut s = connected();
    s.set_notice("hello".into(), false, None);
    s.on_tick(T0);
    assert_eq!(s.notice.as_ref().and_then(|n| n.at_ms), Some(T0));
    s.on_tick(T0 + NOTICE_MS - 1);
    assert!(s.notice.is_some());
    s.on_tick(T0 + NOTICE_MS);
    assert!(s.notice.is_none());
}

#[test]
fn uptime_keeps_counting_from_the_last_status() {
    let s = connected();
    assert_eq!(s.uptime_secs(T0 - 10_000), Some(7_530));
    assert_eq!(s.uptime_secs(T0), Some(7_540));
}

#[test]
fn filter_matches_address_or_door() {
    let mut s = busy();
    s.filter = "vault".into();
    assert!(s.visible_attempts().iter().all(|a| a.door == "vault"));
    assert_eq!(s.visible_grants().len(), 1);
    s.filter = "10.0.0.1".into();
    let addrs: Vec<String> = s
        .visible_attempts()
        .iter()
        .map(|a| a.addr.to_string())
        .collect();
    assert_eq!(addrs, ["10.0.0.12"]);
    s.filter = "FD99".into();
    assert_eq!(s.visible_attempts().len(), 1, "case-insensitive");
    assert!(s.visible_log().iter().all(|e| e.text.contains("fd99")));
    s.filter = "nothing".into();
    assert_eq!(s.selection(Pane::Attempts), None);
}

#[test]
fn events_name_the_lists_to_refresh() {
    let stage_kind = EventKind::Stage {
        addr: ip("10.0.0.1"),
        door: "d".into(),
        stage: 1,
        of: 2,
    };
    let r = refresh_for(&stage_kind);
    assert!(r.attempts && r.status && !r.grants && !r.doors);
    let r = refresh_for(&EventKind::GrantAdded {
        grant: grant("10.0.0.1", "d", T0, None),
    });
    assert!(r.grants && !r.attempts);
    assert_eq!(
        refresh_for(&EventKind::ReloadOk {
            doors: 1,
            warnings: vec![]
        }),
        Refresh::ALL
    );
    assert_eq!(
        Refresh::ALL.requests(),
        [
            Request::Doors,
            Request::Status,
            Request::Attempts,
            Request::Grants
        ]
    );
    assert!(Refresh::default().is_empty());
    assert_eq!(Refresh::default().union(Refresh::TICK), Refresh::TICK);
}

/// knockd lists the oldest attempts and the total: a row younger than the youngest listed one
/// may just not be listed, so it stays live; an older one missing from the list has ended.
#[test]
fn a_truncated_attempt_list_ends_only_rows_it_would_have_listed() {
    let mut s = connected();
    s.on_response(
        &Request::Attempts,
        Response::Attempts {
            attempts: vec![
                attempt_info("10.0.0.1", "openSSH", 1, 3, 4_000, 1_000),
                attempt_info("10.0.0.2", "openSSH", 1, 3, 3_000, 2_000),
                attempt_info("10.0.0.3", "openSSH", 1, 3, 1_000, 4_000),
            ],
            total: 3,
        },
        T0,
    );
    // Later: knockd has 20,000 attempts and lists the oldest two; 10.0.0.2 is gone.
    s.on_response(
        &Request::Attempts,
        Response::Attempts {
            attempts: vec![
                attempt_info("10.0.0.1", "openSSH", 1, 3, 4_500, 500),
                attempt_info("10.0.0.9", "openSSH", 1, 3, 3_000, 2_000),
            ],
            total: 20_000,
        },
        T0 + 500,
    );
    assert_eq!(row(&s, "10.0.0.1", "openSSH").ended, None);
    assert_eq!(
        row(&s, "10.0.0.2", "openSSH").ended,
        Some((AttemptEnd::Reset, T0 + 500)),
        "older than the youngest listed: it would have been listed"
    );
    assert_eq!(
        row(&s, "10.0.0.3", "openSSH").ended,
        None,
        "younger than every listed attempt: not listed, not ended"
    );
    assert_eq!(s.hosts[0].attempts_unlisted, 19_998);
}

/// The same for grants: knockd lists the oldest; a grant opened after the youngest listed one
/// is not closed by its absence.
#[test]
fn a_truncated_grant_list_closes_only_rows_it_would_have_listed() {
    let mut s = connected();
    let g = |addr: &str, opened: i64| grant(addr, "openSSH", opened, Some(60_000));
    s.on_response(
        &Request::Grants,
        Response::Grants {
            grants: vec![
                g("10.0.0.1", T0 - 3_000),
                g("10.0.0.2", T0 - 2_000),
                g("10.0.0.3", T0),
            ],
            total: 3,
        },
        T0,
    );
    s.on_response(
        &Request::Grants,
        Response::Grants {
            grants: vec![g("10.0.0.1", T0 - 3_000), g("10.0.0.9", T0 - 1_000)],
            total: 20_000,
        },
        T0 + 500,
    );
    let ended = |addr: &str| {
        s.grants
            .iter()
            .find(|r| r.info.addr.to_string() == addr)
            .map(|r| r.ended.is_some())
    };
    assert_eq!(ended("10.0.0.1"), Some(false));
    assert_eq!(ended("10.0.0.2"), Some(true), "would have been listed");
    assert_eq!(ended("10.0.0.3"), Some(false), "younger: just not listed");
    assert_eq!(s.hosts[0].grants_unlisted, 19_998);
}

mod fleet;
