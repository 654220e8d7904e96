//! Pure formatting of knockctl's answers: wire values and a clock reading in, text out.
//! Nothing here does I/O or reads the clock; the time zone is whatever `now` carries, so
//! tests pass a fixed offset. Durations, clocks, escaping, labels and the table layout are
//! shared with the TUI and live in [`crate::present`].
//!
//! Tables align their columns. Given a width (the terminal's), they wrap the long free-text
//! columns (what was opened, actions, sequences) onto continuation lines rather than cutting
//! them; without one (output to a pipe or a file) every row is one line, so `grep` sees it
//! whole.

use chrono::{DateTime, TimeZone};
use knock_ipc::{AttemptInfo, DoorInfo, Event, EventKind, GrantInfo, Status};

use crate::present::table::{render_table, Column, GAP};
use crate::present::text::push_line;
use crate::present::{
    closes_by, door_sequence, format_clock, format_duration_ms, format_duration_secs,
    format_remaining, state_file_health, visible,
};

/// Width of a terminal that does not say how wide it is.
pub const WIDTH: usize = 80;

/// `knockctl status`.
pub fn format_status(status: &Status) -> String {
    let c = &status.counters;
    let interfaces = if status.interfaces.is_empty() {
        "none".to_string()
    } else {
        status.interfaces.join(", ")
    };
    let rows: Vec<(&str, String)> = vec![
        ("version", format!("knockd {}", status.daemon_version)),
        ("pid", status.pid.to_string()),
        ("uptime", format_duration_secs(status.uptime_secs)),
        ("interfaces", interfaces),
        ("config", status.config_file.clone()),
        ("doors", status.doors.to_string()),
        (
            "attempts",
            format!("{}/{}", status.attempts, status.max_attempts),
        ),
        ("grants", status.grants.to_string()),
        ("firewall", status.firewall.clone()),
        ("state file", state_file_health(status)),
        (
            "counters",
            format!(
                "packets {}  stages {}  opens {}  resets {}  timeouts {}",
                c.packets, c.stages, c.opens, c.resets, c.timeouts
            ),
        ),
        (
            "",
            format!(
                "evictions {}  failed commands {}  kernel drops {}",
                c.evictions, c.commands_failed, c.kernel_drops
            ),
        ),
        (
            "",
            format!(
                "scanners {}  refused first knocks {}",
                c.scanners, c.refused
            ),
        ),
        (
            "",
            format!(
                "TOTP: replays refused {}  clock skew {}",
                c.refused_replay, c.totp_clock_skew
            ),
        ),
        (
            "",
            format!(
                "opens refused: pool full {}  MaxGrants {}  state file unwritable {}",
                c.refused_pool_full, c.refused_max_grants, c.refused_state_unwritable
            ),
        ),
        (
            "",
            format!(
                "log lines dropped {}  nftables table re-created {}",
                c.log_lines_dropped, c.nft_tables_recreated
            ),
        ),
        (
            "",
            format!(
                "StartRate: busy network {}  queue full {}  displaced {}",
                c.refused_start_network, c.refused_start_queue, c.refused_start_displaced
            ),
        ),
    ];
    let key_width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + GAP;
    let mut out = String::new();
    for (key, value) in rows {
        push_line(&mut out, &format!("{key:key_width$}{value}"));
    }
    out
}

/// `knockctl list`: one row per grant, or `no open grants`.
pub fn format_grants<Tz: TimeZone>(
    grants: &[GrantInfo],
    now: &DateTime<Tz>,
    width: Option<usize>,
) -> String {
    grants_table(grants, None, now, width)
}

/// [`format_grants`], with a HOST column first when `hosts` (one per grant) is given.
pub fn grants_table<Tz: TimeZone>(
    grants: &[GrantInfo],
    hosts: Option<&[String]>,
    now: &DateTime<Tz>,
    width: Option<usize>,
) -> String {
    if grants.is_empty() {
        return "no open grants\n".to_string();
    }
    let columns = [
        Column::fixed("LEFT"),
        Column::fixed("OPENED"),
        Column::fixed("DOOR"),
        Column::fixed("ADDRESS"),
        Column::wrap("WHAT"),
        Column::wrap("CLOSES BY"),
    ];
    let rows: Vec<Vec<String>> = grants
        .iter()
        .map(|g| {
            let mut what = g.opened.clone();
            if g.refreshes > 0 {
                what.push_str(&format!(" (refreshed {}x)", g.refreshes));
            }
            let door = match &g.client {
                Some(c) => format!("{} (SPA {c})", g.door),
                None => g.door.clone(),
            };
            vec![
                format_remaining(g.expires_in_ms),
                format_clock(g.opened_at_unix_ms, now),
                door,
                g.addr.to_string(),
                what,
                closes_by(g),
            ]
        })
        .collect();
    hosted_table(&columns, rows, hosts, width)
}

/// `knockctl clients`: one row per enrolled SPA client.
pub fn format_clients<Tz: TimeZone>(
    clients: &[knock_ipc::ClientInfo],
    now: &DateTime<Tz>,
    width: Option<usize>,
) -> String {
    if clients.is_empty() {
        return "no SPA clients enrolled (knockd --new-client NAME --out NAME.knock)\n".to_string();
    }
    let columns = [
        Column::fixed("CLIENT"),
        Column::fixed("FINGERPRINT"),
        Column::wrap("DOORS"),
        Column::fixed("LAST SEEN"),
        Column::fixed("GRANTS"),
    ];
    let rows: Vec<Vec<String>> = clients
        .iter()
        .map(|c| {
            let name = if c.revoked {
                format!("{} (revoked)", c.name)
            } else {
                c.name.clone()
            };
            vec![
                name,
                c.fingerprint.clone(),
                if c.doors.is_empty() {
                    "-".into()
                } else {
                    c.doors.join(", ")
                },
                c.last_seen_unix_ms
                    .map_or_else(|| "never".to_string(), |ms| format_clock(ms, now)),
                c.grants.to_string(),
            ]
        })
        .collect();
    render_table(&columns, &rows, width)
}

/// `knockctl attempts`: one row per sequence in progress.
pub fn format_attempts(attempts: &[AttemptInfo], width: Option<usize>) -> String {
    attempts_table(attempts, None, width)
}

/// [`format_attempts`], with a HOST column first when `hosts` (one per attempt) is given.
pub fn attempts_table(
    attempts: &[AttemptInfo],
    hosts: Option<&[String]>,
    width: Option<usize>,
) -> String {
    if attempts.is_empty() {
        return "no knock sequences in progress\n".to_string();
    }
    let columns = [
        Column::fixed("ADDRESS"),
        Column::fixed("DOOR"),
        Column::fixed("STAGE"),
        Column::fixed("AGE"),
        Column::fixed("TIMES OUT IN"),
    ];
    let rows: Vec<Vec<String>> = attempts
        .iter()
        .map(|a| {
            vec![
                a.addr.to_string(),
                a.door.clone(),
                format!("{}/{}", a.stage, a.of),
                format_duration_ms(a.age_ms),
                format_duration_ms(a.remaining_ms),
            ]
        })
        .collect();
    hosted_table(&columns, rows, hosts, width)
}

/// `knockctl doors`: one row per door; NOTES gathers what is unusual about it.
pub fn format_doors(doors: &[DoorInfo], width: Option<usize>) -> String {
    doors_table(doors, None, width)
}

/// [`format_doors`], with a HOST column first when `hosts` (one per door) is given.
pub fn doors_table(doors: &[DoorInfo], hosts: Option<&[String]>, width: Option<usize>) -> String {
    if doors.is_empty() {
        return "no doors configured\n".to_string();
    }
    let columns = [
        Column::fixed("DOOR"),
        Column::wrap("SEQUENCE"),
        Column::fixed("WITHIN"),
        Column::wrap("ACTION"),
        Column::wrap("NOTES"),
    ];
    let rows: Vec<Vec<String>> = doors
        .iter()
        .map(|d| {
            let sequence = door_sequence(d);
            let mut notes = Vec::new();
            if !d.enabled {
                notes.push("disabled".to_string());
            }
            if d.one_time {
                notes.push("one-time".to_string());
            }
            if let Some(target) = d.target {
                notes.push(format!("target {target}"));
            }
            if !d.tcp_flags.is_empty() {
                notes.push(format!("flags {}", d.tcp_flags));
            }
            if d.cmd_timeout_ms > 0 {
                notes.push(format!(
                    "closes after {}",
                    format_duration_secs(d.cmd_timeout_ms / 1000)
                ));
            }
            vec![
                d.name.clone(),
                sequence,
                format_duration_secs(d.seq_timeout_ms / 1000),
                d.action.clone(),
                notes.join(", "),
            ]
        })
        .collect();
    hosted_table(&columns, rows, hosts, width)
}

/// What `revoke` closed, one line per grant.
pub fn format_revoked(grants: &[GrantInfo]) -> String {
    let mut out = String::new();
    for g in grants {
        push_line(
            &mut out,
            &format!("revoked {} {} ({})", g.door, g.addr, g.opened),
        );
    }
    out
}

/// A successful `reload`: `configuration reloaded`, then one line per warning.
pub fn format_reloaded(warnings: &[String]) -> String {
    let mut out = String::from("configuration reloaded\n");
    for w in warnings {
        push_line(&mut out, &as_warning(w));
    }
    out
}

/// `warning: {w}`, unless `w` already says it is one (knockd's `file:line: warning: ...`).
fn as_warning(w: &str) -> std::borrow::Cow<'_, str> {
    if w.starts_with("warning: ") || w.contains(": warning: ") {
        w.into()
    } else {
        format!("warning: {w}").into()
    }
}

/// A failed `reload`: a header, then one error (with its file:line) per line.
pub fn format_reload_failed(errors: &[String]) -> String {
    if errors.is_empty() {
        return "reload failed (knockd gave no reason; see its log)".to_string();
    }
    let mut out = String::from("reload failed:");
    for e in errors {
        out.push_str("\n  ");
        out.push_str(e);
    }
    out
}

/// One `tail` line: local time with milliseconds, then what happened.
pub fn format_event<Tz: TimeZone>(event: &Event, tz: &Tz) -> String {
    let at = match DateTime::from_timestamp_millis(event.at_unix_ms) {
        Some(at) => at
            .with_timezone(tz)
            .naive_local()
            .format("%H:%M:%S%.3f")
            .to_string(),
        None => "??:??:??.???".to_string(),
    };
    let what = match &event.kind {
        EventKind::Stage {
            addr,
            door,
            stage,
            of,
        } => format!("{addr} {door} stage {stage}/{of}"),
        EventKind::Reset { addr, door, stage } => {
            format!("{addr} {door} reset at stage {stage} (wrong knock)")
        }
        EventKind::Timeout { addr, door, stage } => {
            format!("{addr} {door} timed out at stage {stage}")
        }
        EventKind::Open { addr, door } => format!("{addr} {door} OPEN"),
        EventKind::GrantAdded { grant } => match grant.expires_in_ms {
            Some(ms) => format!(
                "{} {} grant expires in {}",
                grant.addr,
                grant.door,
                format_duration_secs(ms / 1000)
            ),
            None => format!("{} {} grant open until revoked", grant.addr, grant.door),
        },
        EventKind::GrantRefreshed { grant } => format!(
            "{} {} grant refreshed, expires in {}",
            grant.addr,
            grant.door,
            format_remaining(grant.expires_in_ms)
        ),
        EventKind::GrantRevoked { grant } => {
            format!("{} {} grant revoked", grant.addr, grant.door)
        }
        EventKind::GrantExpired { grant } => {
            format!("{} {} grant expired", grant.addr, grant.door)
        }
        EventKind::GrantClosed { grant, by_door } => format!(
            "{} {} grant closed by door {by_door}",
            grant.addr, grant.door
        ),
        EventKind::CommandFailed { door, message } => {
            format!("{door} command failed: {message}")
        }
        EventKind::ReloadOk { doors, warnings } => {
            let mut s = format!("configuration reloaded: {doors} doors");
            if !warnings.is_empty() {
                s.push_str(&format!(", warnings: {}", warnings.join("; ")));
            }
            s
        }
        EventKind::ReloadFailed { errors } => {
            format!("reload failed: {}", errors.join("; "))
        }
        EventKind::Lagged { missed } => {
            format!("missed {missed} events (knockctl was reading too slowly)")
        }
    };
    format!("{at} {}", visible(&what))
}

/// Lays `rows` out under `columns`, with a HOST column first when `hosts` (one per row) is
/// given: many hosts' lists as one table.
fn hosted_table(
    columns: &[Column],
    rows: Vec<Vec<String>>,
    hosts: Option<&[String]>,
    width: Option<usize>,
) -> String {
    let Some(hosts) = hosts else {
        return render_table(columns, &rows, width);
    };
    let columns: Vec<Column> = std::iter::once(Column::fixed("HOST"))
        .chain(columns.iter().copied())
        .collect();
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .zip(hosts)
        .map(|(row, host)| std::iter::once(host.clone()).chain(row).collect())
        .collect();
    render_table(&columns, &rows, width)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::present::{no_grant_message, text_width};
    use chrono::{FixedOffset, Utc};
    use knock_ipc::Counters;
    use std::net::IpAddr;

    /// 2026-09-22 14:59:16.201 UTC.
    const T0: i64 = 1_790_089_156_201;

    fn now() -> DateTime<FixedOffset> {
        DateTime::from_timestamp_millis(T0 + 10_000)
            .expect("valid")
            .with_timezone(&FixedOffset::east_opt(0).expect("utc"))
    }

    fn grant(door: &str, addr: &str, expires_in_ms: Option<u64>) -> GrantInfo {
        GrantInfo {
            door: door.into(),
            addr: addr.parse().expect("ip"),
            opened: "22/tcp (INPUT)".into(),
            opened_at_unix_ms: T0,
            expires_in_ms,
            closes: "native rule delete".into(),
            refreshes: 0,
            kernel_expires_in_ms: None,
            closing: false,
            close_error: None,
            client: None,
        }
    }

    fn assert_fits(text: &str) {
        assert_fits_in(text, WIDTH);
    }

    fn assert_fits_in(text: &str, width: usize) {
        for line in text.lines() {
            assert!(text_width(line) <= width, "too wide: {line:?}");
            assert_eq!(line, line.trim_end(), "trailing spaces: {line:?}");
        }
    }

    /// A door name with a newline, ESC or a bidi override (from an old state file, say)
    /// cannot add a fake row or recolour the table.
    #[test]
    fn odd_door_names_cannot_spoof_the_list() {
        let evil = "x\n10.6.6.6      admin    14:59:16  never    derived\u{1b}[2J\u{202e}";
        let out = format_grants(
            &[grant(evil, "10.0.0.12", Some(30_000))],
            &now(),
            Some(WIDTH),
        );
        assert_eq!(out.lines().filter(|l| l.contains("10.6.6.6")).count(), 1);
        assert!(
            !out.contains('\u{1b}') && !out.contains('\u{202e}'),
            "{out}"
        );
        assert!(out.contains("\\u{a}") && out.contains("\\u{1b}"), "{out}");
        let ev = Event {
            at_unix_ms: T0,
            kind: EventKind::Open {
                addr: "10.0.0.12".parse().expect("ip"),
                door: evil.into(),
            },
        };
        let line = format_event(&ev, &now().timezone());
        assert_eq!(line.lines().count(), 1, "{line}");
    }

    #[test]
    fn grants_table() {
        let mut web = grant("web", "fd99:77::2", None);
        web.opened = "start_command: /usr/local/bin/open-web --for %IP% --verbose".into();
        web.closes = "stop_command".into();
        web.opened_at_unix_ms = T0 - 86_400_000;
        web.refreshes = 2;
        let grants = [
            grant("openSSH", "10.0.0.12", Some(29_400)),
            grant("openSSH", "192.168.100.200", Some(243_000)),
            web,
        ];
        let text = format_grants(&grants, &now(), Some(WIDTH));
        assert_eq!(
            text,
            "\
LEFT   OPENED        DOOR     ADDRESS          WHAT              CLOSES BY
29s    14:59:16      openSSH  10.0.0.12        22/tcp (INPUT)    native rule
                                                                 delete
4m03s  14:59:16      openSSH  192.168.100.200  22/tcp (INPUT)    native rule
                                                                 delete
never  Sep 21 14:59  web      fd99:77::2       start_command:    stop_command
                                               /usr/local/bin/o
                                               pen-web --for
                                               %IP% --verbose
                                               (refreshed 2x)
"
        );
        assert_fits(&text);
    }

    /// Piped output (no width) and a wide terminal keep every row on one line, so `grep`
    /// finds a grant with all its columns.
    #[test]
    fn without_a_width_or_with_room_every_row_is_one_line() {
        let mut web = grant("web", "fd99:77::2", None);
        web.opened = "start_command: /usr/local/bin/open-web --for %IP% --verbose".into();
        web.closes = "stop_command".into();
        let grants = [grant("openSSH", "10.0.0.12", Some(29_400)), web];
        let piped = format_grants(&grants, &now(), None);
        assert_eq!(
            piped,
            "\
LEFT   OPENED    DOOR     ADDRESS     WHAT                                                         CLOSES BY
29s    14:59:16  openSSH  10.0.0.12   22/tcp (INPUT)                                               native rule delete
never  14:59:16  web      fd99:77::2  start_command: /usr/local/bin/open-web --for %IP% --verbose  stop_command
"
        );
        assert_eq!(format_grants(&grants, &now(), Some(200)), piped);
        let long = DoorInfo {
            name: "long".into(),
            sequence: (1..=8).map(|i| format!("{}:udp", 10_000 + i)).collect(),
            seq_timeout_ms: 15_000,
            cmd_timeout_ms: 30_000,
            tcp_flags: "syn,!ack".into(),
            action: "open 443/tcp (INPUT)".into(),
            one_time: true,
            enabled: true,
            target: None,
            kind: "one-time".into(),
            step: None,
            step_secs: None,
            next_step_in_ms: None,
            knocks: 0,
            sequence_hidden: false,
        };
        let doors = format_doors(&[long], None);
        assert_eq!(doors.lines().count(), 2, "{doors}");
        assert!(doors.contains("10008:udp  15s"), "{doors}");
        // A 100-column terminal wraps only what does not fit.
        let text = format_grants(&grants, &now(), Some(100));
        assert_fits_in(&text, 100);
        assert_eq!(text.lines().count(), 4, "{text}");
    }

    /// The README's `knockctl list` example shows the columns the CLI prints.
    #[test]
    fn readme_list_example_has_the_real_columns() {
        let readme = include_str!("../../../README.md");
        let mut lines = readme
            .lines()
            .skip_while(|l| !l.ends_with("# knockctl list"));
        let header = lines
            .nth(1)
            .expect("a table after `knockctl list` in README.md");
        let ours = format_grants(&[grant("openSSH", "10.0.0.12", None)], &now(), None);
        let words = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(words(header), words(ours.lines().next().expect("header")));
    }

    #[test]
    fn narrow_grants_table_is_not_wrapped() {
        let text = format_grants(
            &[grant("openSSH", "10.0.0.12", Some(30_000))],
            &now(),
            Some(WIDTH),
        );
        assert_eq!(
            text,
            "\
LEFT  OPENED    DOOR     ADDRESS    WHAT            CLOSES BY
30s   14:59:16  openSSH  10.0.0.12  22/tcp (INPUT)  native rule delete
"
        );
    }

    #[test]
    fn wide_characters_are_measured_in_columns() {
        // A door named in CJK takes two columns per character: the columns after it stay
        // aligned, and wrapping never splits a line past the width.
        let grants = [
            grant("門番", "10.0.0.12", Some(30_000)),
            grant("openSSH", "10.0.0.13", Some(30_000)),
        ];
        let text = format_grants(&grants, &now(), Some(WIDTH));
        assert_eq!(
            text,
            "\
LEFT  OPENED    DOOR     ADDRESS    WHAT            CLOSES BY
30s   14:59:16  門番     10.0.0.12  22/tcp (INPUT)  native rule delete
30s   14:59:16  openSSH  10.0.0.13  22/tcp (INPUT)  native rule delete
"
        );
    }

    #[test]
    fn empty_lists_say_so() {
        assert_eq!(format_grants(&[], &now(), Some(WIDTH)), "no open grants\n");
        assert_eq!(
            format_attempts(&[], None),
            "no knock sequences in progress\n"
        );
        assert_eq!(format_doors(&[], None), "no doors configured\n");
    }

    #[test]
    fn status_says_since_when_the_state_file_cannot_be_written() {
        let status = Status {
            state_error: Some("cannot write state file /s.json: No space left on device".into()),
            state_error_since_unix_ms: Some(1_700_000_000_000),
            ..Status::default()
        };
        let text = format_status(&status);
        assert!(
            text.contains("state file  CANNOT BE WRITTEN since 2023-11-14 22:13:20 UTC: cannot write state file /s.json: No space left on device (opens are refused until it is)"),
            "{text}"
        );
    }

    #[test]
    fn status_block() {
        let status = Status {
            daemon_version: "0.1.0".into(),
            pid: 4242,
            uptime_secs: 273_600 + 720,
            interfaces: vec!["eth0".into(), "wg0".into()],
            config_file: "/etc/knockd.conf".into(),
            doors: 3,
            attempts: 2,
            max_attempts: 1000,
            grants: 1,
            counters: Counters {
                packets: 123_456,
                stages: 55,
                opens: 3,
                resets: 4,
                timeouts: 2,
                evictions: 0,
                commands_failed: 1,
                kernel_drops: 0,
                scanners: 0,
                refused: 0,
                refused_pool_full: 7,
                refused_max_grants: 0,
                log_lines_dropped: 12,
                refused_start_network: 12,
                refused_start_queue: 3,
                refused_start_displaced: 5,
                refused_replay: 2,
                totp_clock_skew: 1,
                refused_state_unwritable: 2,
                nft_tables_recreated: 1,
            },
            firewall: "iptables".into(),
            spa: Default::default(),
            state_error: None,
            state_error_since_unix_ms: None,
        };
        let text = format_status(&status);
        assert_eq!(
            text,
            "\
version     knockd 0.1.0
pid         4242
uptime      3d04h
interfaces  eth0, wg0
config      /etc/knockd.conf
doors       3
attempts    2/1000
grants      1
firewall    iptables
state file  ok
counters    packets 123456  stages 55  opens 3  resets 4  timeouts 2
            evictions 0  failed commands 1  kernel drops 0
            scanners 0  refused first knocks 0
            TOTP: replays refused 2  clock skew 1
            opens refused: pool full 7  MaxGrants 0  state file unwritable 2
            log lines dropped 12  nftables table re-created 1
            StartRate: busy network 12  queue full 3  displaced 5
"
        );
        assert_fits(&text);
        let empty = format_status(&Status::default());
        assert!(empty.contains("interfaces  none\n"), "{empty}");
    }

    #[test]
    fn attempts_table() {
        let attempts = [
            AttemptInfo {
                addr: "10.0.0.12".parse().expect("ip"),
                door: "openSSH".into(),
                stage: 2,
                of: 3,
                age_ms: 1_234,
                remaining_ms: 3_766,
            },
            AttemptInfo {
                addr: "2001:db8:1234:5678:9abc:def0:1234:5678"
                    .parse()
                    .expect("ip"),
                door: "web".into(),
                stage: 1,
                of: 4,
                age_ms: 250,
                remaining_ms: 95_000,
            },
        ];
        let text = format_attempts(&attempts, Some(WIDTH));
        assert_eq!(
            text,
            "\
ADDRESS                                 DOOR     STAGE  AGE   TIMES OUT IN
10.0.0.12                               openSSH  2/3    1.2s  3.7s
2001:db8:1234:5678:9abc:def0:1234:5678  web      1/4    0.2s  1m35s
"
        );
        assert_fits(&text);
    }

    #[test]
    fn a_hidden_sequence_shows_its_number_of_knocks() {
        let d = DoorInfo {
            name: "ssh".into(),
            sequence: vec![],
            seq_timeout_ms: 5_000,
            cmd_timeout_ms: 0,
            tcp_flags: String::new(),
            action: "open 22/tcp (INPUT)".into(),
            one_time: true,
            enabled: true,
            target: None,
            kind: "one-time".into(),
            step: None,
            knocks: 4,
            sequence_hidden: true,
            step_secs: None,
            next_step_in_ms: None,
        };
        assert_eq!(door_sequence(&d), "(hidden: 4 knocks)");
    }

    #[test]
    fn doors_table() {
        let doors = [
            DoorInfo {
                name: "openSSH".into(),
                sequence: vec!["7000:tcp".into(), "8000:tcp".into(), "9000:tcp".into()],
                seq_timeout_ms: 5_000,
                cmd_timeout_ms: 30_000,
                tcp_flags: "syn".into(),
                action: "open 22/tcp (INPUT)".into(),
                one_time: false,
                enabled: true,
                target: None,
                kind: "static".into(),
                step: None,
                knocks: 3,
                sequence_hidden: false,
                step_secs: None,
                next_step_in_ms: None,
            },
            DoorInfo {
                name: "oneShot".into(),
                sequence: vec![],
                seq_timeout_ms: 10_000,
                cmd_timeout_ms: 0,
                tcp_flags: String::new(),
                action: "command + stop_command".into(),
                one_time: true,
                enabled: false,
                target: Some("10.0.0.1".parse().expect("ip")),
                kind: "one-time".into(),
                step: None,
                knocks: 0,
                sequence_hidden: false,
                step_secs: None,
                next_step_in_ms: None,
            },
            DoorInfo {
                name: "long".into(),
                sequence: (1..=8).map(|i| format!("{}:udp", 10_000 + i)).collect(),
                seq_timeout_ms: 15_000,
                cmd_timeout_ms: 0,
                tcp_flags: String::new(),
                action: "open 443/tcp (INPUT)".into(),
                one_time: false,
                enabled: true,
                target: None,
                kind: "static".into(),
                step: None,
                knocks: 8,
                sequence_hidden: false,
                step_secs: None,
                next_step_in_ms: None,
            },
            DoorInfo {
                name: "totp".into(),
                sequence: vec![],
                seq_timeout_ms: 5_000,
                cmd_timeout_ms: 0,
                tcp_flags: "syn".into(),
                action: "open 22/tcp (INPUT)".into(),
                one_time: false,
                enabled: true,
                target: None,
                kind: "totp".into(),
                step: Some(58_000_000),
                knocks: 3,
                sequence_hidden: false,
                step_secs: Some(30),
                next_step_in_ms: Some(12_345),
            },
        ];
        let text = format_doors(&doors, Some(WIDTH));
        assert_eq!(
            text,
            "\
DOOR     SEQUENCE              WITHIN  ACTION                NOTES
openSSH  7000:tcp 8000:tcp     5s      open 22/tcp (INPUT)   flags syn, closes
         9000:tcp                                            after 30s
oneShot  (used up)             10s     command +             disabled, one-time,
                                       stop_command          target 10.0.0.1
long     10001:udp 10002:udp   15s     open 443/tcp (INPUT)
         10003:udp 10004:udp
         10005:udp 10006:udp
         10007:udp 10008:udp
totp     (rotating: TOTP step  5s      open 22/tcp (INPUT)   flags syn
         58000000, next in
         13s)
"
        );
        assert_fits(&text);
    }

    #[test]
    fn reload_and_revoke_messages() {
        assert_eq!(format_reloaded(&[]), "configuration reloaded\n");
        assert_eq!(
            format_reload_failed(&[]),
            "reload failed (knockd gave no reason; see its log)"
        );
        assert_eq!(
            format_reloaded(&["knockd.conf:7: door x has no sequence".into()]),
            "configuration reloaded\nwarning: knockd.conf:7: door x has no sequence\n"
        );
        // Never "warning: ...: warning:".
        assert_eq!(
            format_reloaded(&[
                "knockd.conf:5: warning: door 'ssh': sequence has only 3 knocks".into(),
                "warning: the exact capture filter is too large".into()
            ]),
            "configuration reloaded\nknockd.conf:5: warning: door 'ssh': sequence has only 3 knocks\nwarning: the exact capture filter is too large\n"
        );
        assert_eq!(
            format_reload_failed(&[
                "/etc/knockd.conf:12: unknown protocol 'icmp'".into(),
                "/etc/knockd.conf:30: missing sequence".into()
            ]),
            "reload failed:\n  /etc/knockd.conf:12: unknown protocol 'icmp'\n  /etc/knockd.conf:30: missing sequence"
        );
        let addr: IpAddr = "10.0.0.12".parse().expect("ip");
        assert_eq!(no_grant_message(addr, None), "no open grant for 10.0.0.12");
        assert_eq!(
            no_grant_message(addr, Some("openSSH")),
            "no open grant for 10.0.0.12 on door openSSH"
        );
        assert_eq!(
            format_revoked(&[grant("openSSH", "10.0.0.12", None)]),
            "revoked openSSH 10.0.0.12 (22/tcp (INPUT))\n"
        );
    }

    #[test]
    fn event_lines() {
        let addr: IpAddr = "10.0.0.12".parse().expect("ip");
        let door = "openSSH".to_string();
        let g = grant("openSSH", "10.0.0.12", Some(30_000));
        let cases = [
            (
                EventKind::Stage {
                    addr,
                    door: door.clone(),
                    stage: 2,
                    of: 3,
                },
                "10.0.0.12 openSSH stage 2/3",
            ),
            (
                EventKind::Reset {
                    addr,
                    door: door.clone(),
                    stage: 2,
                },
                "10.0.0.12 openSSH reset at stage 2 (wrong knock)",
            ),
            (
                EventKind::Timeout {
                    addr,
                    door: door.clone(),
                    stage: 1,
                },
                "10.0.0.12 openSSH timed out at stage 1",
            ),
            (
                EventKind::Open {
                    addr,
                    door: door.clone(),
                },
                "10.0.0.12 openSSH OPEN",
            ),
            (
                EventKind::GrantAdded { grant: g.clone() },
                "10.0.0.12 openSSH grant expires in 30s",
            ),
            (
                EventKind::GrantAdded {
                    grant: grant("openSSH", "10.0.0.12", None),
                },
                "10.0.0.12 openSSH grant open until revoked",
            ),
            (
                EventKind::GrantRefreshed { grant: g.clone() },
                "10.0.0.12 openSSH grant refreshed, expires in 30s",
            ),
            (
                EventKind::GrantRevoked { grant: g.clone() },
                "10.0.0.12 openSSH grant revoked",
            ),
            (
                EventKind::GrantExpired { grant: g.clone() },
                "10.0.0.12 openSSH grant expired",
            ),
            (
                EventKind::GrantClosed {
                    grant: g,
                    by_door: "closeSSH".into(),
                },
                "10.0.0.12 openSSH grant closed by door closeSSH",
            ),
            (
                EventKind::CommandFailed {
                    door,
                    message: "exit status 1".into(),
                },
                "openSSH command failed: exit status 1",
            ),
            (
                EventKind::ReloadOk {
                    doors: 3,
                    warnings: vec![],
                },
                "configuration reloaded: 3 doors",
            ),
            (
                EventKind::ReloadOk {
                    doors: 2,
                    warnings: vec!["a".into(), "b".into()],
                },
                "configuration reloaded: 2 doors, warnings: a; b",
            ),
            (
                EventKind::ReloadFailed {
                    errors: vec!["f:1: x".into()],
                },
                "reload failed: f:1: x",
            ),
            (
                EventKind::Lagged { missed: 12 },
                "missed 12 events (knockctl was reading too slowly)",
            ),
        ];
        for (kind, want) in cases {
            let event = Event {
                at_unix_ms: T0,
                kind,
            };
            assert_eq!(format_event(&event, &Utc), format!("14:59:16.201 {want}"));
        }
        let event = Event {
            at_unix_ms: T0 + 104,
            kind: EventKind::Open {
                addr: "fd99:77::2".parse().expect("ip"),
                door: "web".into(),
            },
        };
        let tz = FixedOffset::west_opt(5 * 3600).expect("tz");
        assert_eq!(
            format_event(&event, &tz),
            "09:59:16.305 fd99:77::2 web OPEN"
        );
    }
}
