use super::*;
use crate::tui::fixtures::*;
use knock_ipc::{DoorInfo, EventKind, Request, Response};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

fn draw(state: &State, width: u16, height: u16, now: i64) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("backend");
    terminal
        .draw(|frame| render(state, frame, now))
        .expect("draw");
    terminal
}

fn lines(terminal: &Terminal<TestBackend>) -> Vec<String> {
    let buffer = terminal.backend().buffer();
    let width = usize::from(buffer.area.width);
    buffer
        .content()
        .chunks(width)
        .map(|row| row.iter().map(|c| c.symbol()).collect::<String>())
        .collect()
}

fn screen(terminal: &Terminal<TestBackend>) -> String {
    lines(terminal)
        .iter()
        .map(|l| l.trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The lines of the pane whose top border carries `title`.
fn pane<'a>(lines: &'a [String], title: &str) -> &'a [String] {
    let start = lines
        .iter()
        .position(|l| l.contains(title))
        .unwrap_or_else(|| panic!("no pane {title:?}"));
    let len = lines[start + 1..]
        .iter()
        .position(|l| l.starts_with('└') || l.starts_with('┗'))
        .unwrap_or(lines.len() - start - 1);
    &lines[start..start + len + 2]
}

fn line_with<'a>(lines: &'a [String], needle: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.contains(needle))
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no line with {needle:?}"))
}

#[test]
fn nftables_backend_in_the_header_and_kernel_time_in_grants() {
    let mut s = connected();
    let mut status = status();
    status.firewall = "nftables".into();
    s.on_response(&Request::Status, Response::Status { status }, T0);
    let mut g = grant("10.0.0.12", "openSSH", T0 - 2_000, Some(28_000));
    g.closes = "kernel timeout (nftables)".into();
    g.kernel_expires_in_ms = Some(28_000);
    s.on_response(
        &Request::Grants,
        Response::Grants {
            grants: vec![g],
            total: 1,
        },
        T0,
    );
    let t = draw(&s, 120, 24, T0);
    let l = lines(&t);
    assert!(l[0].contains("doors 3  nftables"), "{}", l[0]);
    let row = line_with(pane(&l, "2 Grants"), "10.0.0.12");
    // The kernel closes it when the grant ends: LEFT says when.
    assert!(row.contains(" 28s ") && row.contains("kernel"), "{row}");
    // The default backend goes unsaid.
    let plain = lines(&draw(&connected(), 120, 24, T0));
    assert!(!plain[0].contains("iptables"), "{}", plain[0]);
}

#[test]
fn empty_daemon() {
    let t = draw(&connected(), 80, 24, T0);
    insta::assert_snapshot!(screen(&t));
}

#[test]
fn attempts_in_progress_80x24() {
    let t = draw(&busy(), 80, 24, T0);
    let l = lines(&t);
    // What the end-to-end test greps for: door and n/N on the source's row.
    let attempts = pane(&l, "1 Attempts");
    let row = line_with(attempts, "10.0.0.12");
    assert!(row.contains("openSSH") && row.contains("2/3"), "{row}");
    assert!(line_with(attempts, "192.0.2.7").contains("RESET"));
    assert!(line_with(attempts, "10.0.0.99 ").contains("OPEN"));
    let grants = pane(&l, "2 Grants");
    assert!(line_with(grants, "10.0.0.99 ").contains("openSSH"));
    assert!(line_with(grants, "10.0.0.7 ").contains("vault"));
    insta::assert_snapshot!(screen(&t));
}

#[test]
fn countdowns_move_with_now() {
    let s = busy();
    let a = lines(&draw(&s, 80, 24, T0));
    let b = lines(&draw(&s, 80, 24, T0 + 1_000));
    let grant = |l: &[String]| line_with(pane(l, "2 Grants"), "10.0.0.99 ").to_string();
    assert!(grant(&a).contains(" 30s "), "{}", grant(&a));
    assert!(grant(&b).contains(" 29s "), "{}", grant(&b));
    assert!(line_with(pane(&b, "2 Grants"), "10.0.0.7 ").contains(" never "));
    let attempt = |l: &[String]| line_with(pane(l, "1 Attempts"), "10.0.0.12").to_string();
    assert!(attempt(&a).contains("1.5s  3.5s"), "{}", attempt(&a));
    assert!(attempt(&b).contains("2.5s  2.5s"), "{}", attempt(&b));
}

#[test]
fn grants_focused_with_selection() {
    let mut s = busy();
    s.focus = Pane::Grants;
    s.selected[Pane::Grants.index()] = 1;
    let t = draw(&s, 80, 24, T0 + 5_000);
    let l = lines(&t);
    let row = line_with(&l, "> 10.0.0.99");
    assert!(row.contains("openSSH") && row.contains("25s"), "{row}");
    assert!(line_with(&l, "10.0.0.7 ").contains("vault"));
    insta::assert_snapshot!(screen(&t));
}

#[test]
fn help_overlay() {
    let mut s = busy();
    s.overlay = Some(Overlay::Help);
    let t = draw(&s, 80, 24, T0);
    let text = screen(&t);
    for (keys, what) in KEYS {
        assert!(text.contains(keys) && text.contains(what), "{keys}");
    }
    insta::assert_snapshot!(text);
}

#[test]
fn revoke_confirmation() {
    let mut s = busy();
    s.focus = Pane::Grants;
    s.overlay = Some(Overlay::ConfirmRevoke {
        host: 0,
        addr: ip("10.0.0.12"),
        door: "openSSH".into(),
    });
    let t = draw(&s, 80, 24, T0);
    let text = screen(&t);
    assert!(text.contains("Revoke 10.0.0.12 (openSSH)? y/n"));
    insta::assert_snapshot!(text);
}

#[test]
fn revoke_result_in_the_status_line() {
    let mut s = busy();
    s.on_response(
        &Request::Revoke {
            addr: ip("10.0.0.99"),
            door: Some("openSSH".into()),
        },
        Response::Revoked {
            grants: vec![grant("10.0.0.99", "openSSH", T0, Some(20_000))],
        },
        T0,
    );
    let l = lines(&draw(&s, 80, 24, T0));
    assert!(
        l[23].starts_with("revoked 10.0.0.99 (openSSH)"),
        "{}",
        l[23]
    );
    assert!(line_with(&l, "REVOKED").contains("10.0.0.99"));
}

#[test]
fn reload_errors_popup() {
    let mut s = busy();
    s.on_response(
        &Request::Reload,
        Response::ReloadFailed {
            errors: vec![
                "/etc/knockd.conf:12: unknown protocol 'icmp' in sequence (use tcp or udp)".into(),
                "/etc/knockd.conf:20: door [vault]: seq_timeout missing a number".into(),
            ],
        },
        T0,
    );
    let t = draw(&s, 80, 24, T0);
    let text = screen(&t);
    assert!(text.contains("/etc/knockd.conf:12"));
    assert!(text.contains("/etc/knockd.conf:20"));
    insta::assert_snapshot!(text);
}

#[test]
fn disconnected() {
    let mut s = busy();
    s.on_disconnected(
        "connection to knockd failed: connection closed".into(),
        T0 + 3_000,
        T0,
    );
    let t = draw(&s, 80, 24, T0);
    let text = screen(&t);
    assert!(text.contains("disconnected, retrying in 3s"));
    assert!(text.contains("[DISCONNECTED]"));
    insta::assert_snapshot!(text);
}

#[test]
fn filter_being_typed() {
    let mut s = busy();
    s.filter = "vault".into();
    s.editing_filter = true;
    let t = draw(&s, 80, 24, T0);
    let l = lines(&t);
    assert!(l[23].starts_with("filter: vault_"), "{}", l[23]);
    assert!(!l.iter().any(|row| row.contains("10.0.0.12")));
}

#[test]
fn doors_in_the_bottom_pane() {
    let mut s = busy();
    s.focus = Pane::Doors;
    s.bottom = Pane::Doors;
    let t = draw(&s, 80, 24, T0);
    let l = lines(&t);
    let doors = pane(&l, "4 Doors");
    let row = line_with(doors, "openSSH ");
    // TCP is the default protocol (PROTO says so): the sequence shows ports alone.
    assert!(row.contains("7000 8000 9000  tcp"), "{row}");
    assert!(line_with(doors, "backup").contains("used"));
    insta::assert_snapshot!(screen(&t));
}

/// A rotating door shows its kind and step (its sequence is never sent), not "(used up)".
#[test]
fn a_rotating_door_shows_its_step_not_used_up() {
    let mut s = busy();
    let mut ds = doors();
    let mut rot = ds[0].clone();
    rot.name = "rot".into();
    rot.sequence = Vec::new();
    rot.kind = "totp".into();
    rot.step = Some(58_000_123);
    ds.push(rot);
    s.on_response(&Request::Doors, Response::Doors { doors: ds }, T0);
    s.focus = Pane::Doors;
    s.bottom = Pane::Doors;
    let l = lines(&draw(&s, 120, 30, T0));
    let row = line_with(pane(&l, "4 Doors"), "rot ");
    assert!(row.contains("TOTP step 58000123"), "{row}");
    assert!(!row.contains("used"), "{row}");
    assert!(row.contains("tcp"), "{row}");
}

#[test]
fn tall_screen_shows_all_four_panes() {
    let t = draw(&busy(), 100, 40, T0);
    let text = screen(&t);
    for title in ["1 Attempts", "2 Grants", "3 Events", "4 Doors"] {
        assert!(text.contains(title), "{title}");
    }
    insta::assert_snapshot!(text);
}

#[test]
fn wide_screen_puts_the_log_beside() {
    let t = draw(&busy(), 160, 30, T0);
    let text = screen(&t);
    for title in ["1 Attempts", "2 Grants", "3 Events", "4 Doors"] {
        assert!(text.contains(title), "{title}");
    }
    insta::assert_snapshot!(text);
}

#[test]
fn tiny_screens_do_not_panic() {
    let mut s = busy();
    for overlay in [
        None,
        Some(Overlay::Help),
        Some(Overlay::ConfirmRevoke {
            host: 0,
            addr: ip("fd99:77::2"),
            door: "vault".into(),
        }),
        Some(Overlay::ReloadFailed {
            errors: vec!["x".repeat(300)],
        }),
    ] {
        s.overlay = overlay;
        for (w, h) in [(1, 1), (10, 5), (40, 10), (80, 3), (20, 60)] {
            draw(&s, w, h, T0);
        }
    }
}

#[test]
fn no_color_uses_no_colours_but_keeps_the_markers() {
    let mut s = busy();
    s.color = false;
    s.notice = Some(crate::tui::state::Notice {
        text: "boom".into(),
        error: true,
        at_ms: None,
    });
    let t = draw(&s, 80, 24, T0);
    for cell in t.backend().buffer().content() {
        assert_eq!(cell.fg, Color::Reset, "{:?}", cell.symbol());
        assert_eq!(cell.bg, Color::Reset);
    }
    let l = lines(&t);
    assert!(line_with(&l, "192.0.2.7").contains("RESET"));
    assert!(l[23].starts_with("! boom"));
    assert!(line_with(&l, "stage 3/3").contains("STAGE"));
}

/// knockd lists the oldest LIST_CAP grants and says how many there are: the pane title says
/// how many it left out.
#[test]
fn pane_titles_count_what_knockd_did_not_list() {
    let mut s = connected();
    s.on_response(
        &Request::Grants,
        Response::Grants {
            grants: vec![grant("10.0.0.12", "openSSH", T0, Some(20_000))],
            total: 20_000,
        },
        T0,
    );
    let l = lines(&draw(&s, 120, 30, T0));
    assert!(
        l.iter()
            .any(|l| l.contains("2 Grants (1, 19999 more not listed)")),
        "{l:#?}"
    );
    s.on_response(
        &Request::Grants,
        Response::Grants {
            grants: vec![],
            total: 0,
        },
        T0 + 1_000,
    );
    let l = lines(&draw(&s, 120, 30, T0 + 1_000));
    assert!(!l.iter().any(|l| l.contains("not listed")), "{l:#?}");
}

/// What a newcomer's nftables host showed: a 4-knock door, a TOTP door, a command door,
/// nftables grants with the kernel's time, a revoked and an expired grant, an attempt that
/// timed out, a long IPv6 source and a long event line.
fn newcomer() -> State {
    let mut s = connected();
    let mut status = status();
    status.firewall = "nftables".into();
    s.on_response(&Request::Status, Response::Status { status }, T0 - 1_000);
    let door = |name: &str, seq: &[&str], action: &str, cmd_s: u64| DoorInfo {
        name: name.into(),
        sequence: seq.iter().map(|k| k.to_string()).collect(),
        seq_timeout_ms: 60_000,
        cmd_timeout_ms: cmd_s * 1000,
        tcp_flags: String::new(),
        action: action.into(),
        one_time: false,
        enabled: true,
        target: None,
        kind: "static".into(),
        step: None,
        step_secs: None,
        next_step_in_ms: None,
        knocks: seq.len() as u32,
        sequence_hidden: false,
    };
    let mut rot = door("rot", &[], "open 2222/tcp", 300);
    rot.kind = "totp".into();
    rot.step = Some(59_887_015);
    rot.step_secs = Some(30);
    rot.next_step_in_ms = Some(12_345);
    let doors = vec![
        door(
            "openSSH",
            &["7000:tcp", "8000:tcp", "9000:tcp", "10000:tcp"],
            "open 22/tcp",
            600,
        ),
        door("web", &["7100:udp", "8100:tcp"], "open 8080/tcp", 900),
        rot,
        door(
            "legacy",
            &["6000:tcp", "6001:tcp"],
            "command + stop_command",
            10,
        ),
    ];
    s.on_response(&Request::Doors, Response::Doors { doors }, T0 - 1_000);
    let nft = |addr: &str, door: &str, what: &str, left_ms: u64| {
        let mut g = grant(addr, door, T0 - 60_000, Some(left_ms));
        g.opened = what.into();
        g.closes = "kernel timeout (nftables)".into();
        g.kernel_expires_in_ms = Some(left_ms);
        g
    };
    let v6 = "2001:db8:1234:5678:9abc:def0:1234:5678";
    let grants = vec![
        nft("10.99.77.2", "openSSH", "22/tcp (nftables)", 598_000),
        nft(v6, "web", "8080/tcp (nftables)", 7_000),
        nft("10.99.77.3", "openSSH", "22/tcp (nftables)", 7_000),
        nft("10.99.77.4", "web", "8080/tcp (nftables)", 1_000),
    ];
    s.on_response(
        &Request::Grants,
        Response::Grants {
            total: grants.len() as u64,
            grants: grants.clone(),
        },
        T0 - 1_000,
    );
    let end = |kind| ev(T0 - 500, kind);
    s.on_event(
        end(EventKind::GrantRevoked {
            grant: grants[2].clone(),
        }),
        T0 - 500,
    );
    s.on_event(
        end(EventKind::GrantExpired {
            grant: grants[3].clone(),
        }),
        T0 - 500,
    );
    s.on_event(stage(T0 - 9_000, v6, "openSSH", 1, 4), T0 - 9_000);
    s.on_event(stage(T0 - 2_000, "192.0.2.44", "web", 1, 2), T0 - 2_000);
    s.on_event(
        end(EventKind::Timeout {
            addr: ip("192.0.2.44"),
            door: "web".into(),
            stage: 1,
        }),
        T0 - 500,
    );
    s.on_event(
        end(EventKind::CommandFailed {
            door: "legacy".into(),
            message: "command returned non-zero status code (1): /usr/local/sbin/open-the-gate --for 10.99.77.2 --verbose".into(),
        }),
        T0 - 500,
    );
    s
}

/// Every word on a `width` x `height` screen is whole, or is cut with `…`: the same state drawn
/// on a screen wide enough for everything gives the words; a word that is none of them and
/// does not end with `…` was cut bare. And no text touches a pane's right border.
fn assert_no_bare_cuts(state: &State, width: u16, height: u16, now: i64) -> Vec<String> {
    let small = lines(&draw(state, width, height, now));
    let huge = lines(&draw(state, 400, height.max(60), now));
    let is_box = |c: char| ('\u{2500}'..='\u{257f}').contains(&c) || c == '|';
    let words = |l: &str| -> Vec<String> {
        l.split(|c: char| c.is_whitespace() || is_box(c))
            .filter(|w| !w.is_empty())
            .map(String::from)
            .collect()
    };
    let whole: std::collections::HashSet<String> = huge.iter().flat_map(|l| words(l)).collect();
    for line in &small {
        for word in words(line) {
            let ok = whole.contains(&word)
                || word.strip_suffix('…').is_some_and(|stem| {
                    stem.is_empty() || whole.iter().any(|w| w.starts_with(stem))
                });
            assert!(
                ok,
                "{word:?} is cut without an ellipsis in:\n{line}\n\n{}",
                small.join("\n")
            );
        }
        let chars: Vec<char> = line.chars().collect();
        for pair in chars.windows(2) {
            if matches!(pair[1], '│' | '┃') {
                assert!(
                    pair[0] == ' ' || is_box(pair[0]),
                    "text touches a border:\n{line}\n\n{}",
                    small.join("\n")
                );
            }
        }
    }
    small
}

/// The column of the first character of `header`'s `name` in a pane.
fn column_of(lines: &[String], pane_title: &str, name: &str) -> usize {
    let header = line_with(pane(lines, pane_title), name);
    let byte = header.find(name).expect("column");
    header[..byte].chars().count()
}

#[test]
fn newcomer_80x24_fits_without_bare_cuts() {
    let mut s = newcomer();
    let l = assert_no_bare_cuts(&s, 80, 24, T0);
    let grants = pane(&l, "2 Grants");
    // Closed grants show how they ended, not the kernel's countdown.
    for addr in ["10.99.77.3 ", "10.99.77.4 "] {
        let row = line_with(grants, addr);
        assert!(!row.contains("kernel"), "{row}");
    }
    assert!(line_with(grants, "10.99.77.3 ").contains("REVOKED"));
    assert!(line_with(grants, "10.99.77.4 ").contains("EXPIRED"));
    // The kernel closes it when the grant ends: no second countdown.
    let row = line_with(grants, "10.99.77.2 ");
    assert!(row.contains("9m57s") && row.contains("kernel"), "{row}");
    assert!(line_with(pane(&l, "1 Attempts"), "192.0.2.44").contains("TIMEOUT"));
    insta::assert_snapshot!("newcomer_80x24_events", l.join("\n"));

    // The Doors pane at 80 columns: the whole 4-knock sequence, and the action.
    s.bottom = Pane::Doors;
    let l = assert_no_bare_cuts(&s, 80, 24, T0);
    let doors = pane(&l, "4 Doors");
    let row = line_with(doors, "openSSH");
    assert!(
        row.contains("7000 8000 9000 10000") && row.contains("open 22/tcp"),
        "{row}"
    );
    assert!(
        line_with(doors, "legacy").contains("command + stop_command"),
        "{}",
        l.join("\n")
    );
    assert!(line_with(doors, "rot ").contains("TOTP, next in 12s"));
    assert!(line_with(doors, "ACTION").contains("ONCE"));
    insta::assert_snapshot!("newcomer_80x24_doors", l.join("\n"));
    // Ten seconds later the countdown has moved; past the boundary it starts again.
    let later = lines(&draw(&s, 80, 24, T0 + 10_000));
    assert!(line_with(&later, "rot ").contains("next in 2s"));
    let after = lines(&draw(&s, 80, 24, T0 + 12_000));
    assert!(line_with(&after, "rot ").contains("next in 30s"));
}

#[test]
fn newcomer_200x50_columns_are_as_wide_as_their_content() {
    let s = newcomer();
    let l = assert_no_bare_cuts(&s, 200, 50, T0);
    // SOURCE is as wide as the longest address (39 characters) and two spaces.
    let source = column_of(&l, "1 Attempts", "SOURCE");
    let door = column_of(&l, "1 Attempts", "DOOR");
    assert_eq!(door - source, 38 + 2, "{}", l.join("\n"));
    insta::assert_snapshot!("newcomer_200x50", l.join("\n"));
}

#[test]
fn rows_kept_while_disconnected_are_marked_stale() {
    let mut s = newcomer();
    s.on_disconnected("connection closed".into(), T0 + 3_000, T0);
    let l = assert_no_bare_cuts(&s, 80, 24, T0);
    assert!(line_with(&l, "2 Grants").contains("STALE since 14:59:16"));
    let mut s2 = s.clone();
    s2.bottom = Pane::Doors;
    let l = lines(&draw(&s2, 80, 24, T0));
    assert!(line_with(&l, "4 Doors").contains("STALE since 14:59:16"));
    // A second failed retry keeps the first time; reconnecting clears it.
    s.on_disconnected("connection refused".into(), T0 + 9_000, T0 + 5_000);
    assert_eq!(s.hosts[0].stale_since_ms, Some(T0));
    s.on_connected("0.1.0".into(), T0 + 9_000);
    assert_eq!(s.hosts[0].stale_since_ms, None);
}

#[test]
fn single_packet_grants_show_their_client() {
    let mut s = connected();
    let mut spa = grant("10.0.0.12", "openSSH", T0 - 2_000, Some(28_000));
    spa.client = Some("alice-laptop".into());
    let knocked = grant("10.0.0.13", "vault", T0 - 1_000, None);
    s.on_response(
        &Request::Grants,
        Response::Grants {
            grants: vec![spa, knocked],
            total: 2,
        },
        T0,
    );
    for (w, h) in [(80, 24), (200, 50)] {
        let l = assert_no_bare_cuts(&s, w, h, T0);
        let grants = pane(&l, "2 Grants");
        assert!(
            line_with(grants, "ADDRESS").contains("CLIENT"),
            "{}",
            l.join("\n")
        );
        assert!(line_with(grants, "10.0.0.12 ").contains("alice-laptop"));
        let knocked = line_with(grants, "10.0.0.13 ");
        assert!(knocked.contains(" - "), "{knocked}");
    }
    // The filter finds a grant by its client.
    s.filter = "alice".into();
    assert_eq!(s.visible_grants().len(), 1);
    // No single-packet grant: no CLIENT column.
    let l = lines(&draw(&busy(), 80, 24, T0));
    assert!(l.iter().all(|r| !r.contains("CLIENT")), "{}", l.join("\n"));
}

mod fleet;
mod frame;
