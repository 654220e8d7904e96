use super::*;
use crate::tui::fixtures::*;
use knock_ipc::{Request, Response};
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
    assert!(row.contains("kernel, 28s left"), "{row}");
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
    assert!(attempt(&a).contains("1.5s   3.5s"), "{}", attempt(&a));
    assert!(attempt(&b).contains("2.5s   2.5s"), "{}", attempt(&b));
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
    assert!(row.contains("7000:tcp 8000:tcp 9000:tcp"), "{row}");
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
    assert!(row.contains("(rotating: TOTP step 58000123)"), "{row}");
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
