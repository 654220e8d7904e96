//! Many hosts on screen: a HOST column in every pane, a header line per host with its
//! state in words, the reload popup; no bare cuts at 80x24 or 200x50.

use super::*;

/// The screen without trailing blanks (the README shows the 80x24 one).
fn trimmed(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| l.trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn fleet_80x24_has_a_host_column_and_each_hosts_state() {
    let s = fleet();
    let l = assert_no_bare_cuts(&s, 80, 24, T0);
    assert!(l[0].contains("knockd on 3 hosts"), "{}", l[0]);
    assert!(l[0].contains("[2/3 connected]"), "{}", l[0]);
    // 24 rows: three host lines fit.
    assert!(line_with(&l, "bastion1  connected").contains("knockd 0.1.0"));
    assert!(line_with(&l, "node7     connected").contains("doors 3"));
    let down = line_with(&l, "vps-fra   disconnected");
    assert!(
        down.contains("disconnected, retrying in 4s: ssh: connect to host vps-fra"),
        "{down}"
    );
    let grants = pane(&l, "2 Grants");
    assert!(line_with(grants, "HOST").contains("ADDRESS"));
    assert!(line_with(grants, "node7 ").contains("10.0.0.7"));
    assert!(line_with(grants, "bastion1 ").contains("10.0.0.7"));
    let attempts = pane(&l, "1 Attempts");
    assert!(line_with(attempts, "bastion1 ").contains("203.0.113.7"));
    assert!(line_with(attempts, "node7 ").contains("198.51.100.4"));
    let events = pane(&l, "3 Events");
    assert!(line_with(events, "14:59:14 node7").contains("10.0.0.7 openSSH"));
    insta::assert_snapshot!("fleet_80x24", trimmed(&l));
}

#[test]
fn fleet_200x50_columns_fit_their_content() {
    let mut s = fleet();
    s.focus = Pane::Grants;
    let l = assert_no_bare_cuts(&s, 200, 50, T0);
    // The doors of every host, each named.
    let doors = pane(&l, "4 Doors");
    assert_eq!(
        doors.iter().filter(|r| r.contains("openSSH")).count(),
        3,
        "{}",
        l.join("\n")
    );
    // Rows of a host that is down are marked in the title.
    assert!(line_with(&l, "2 Grants").contains("STALE: vps-fra"));
    insta::assert_snapshot!("fleet_200x50", trimmed(&l));
}

#[test]
fn one_host_has_no_host_column_and_todays_header() {
    let l = lines(&draw(&busy(), 80, 24, T0));
    assert!(l.iter().all(|r| !r.contains("HOST")), "{}", l.join("\n"));
    assert!(l[0].starts_with("knockd 0.1.0 on eth0"), "{}", l[0]);
    assert!(l[0].contains("[connected]"));
}

#[test]
fn fifty_hosts_show_the_troubled_ones_and_count_the_rest() {
    let names: Vec<String> = (0..50).map(|i| format!("node{i:02}")).collect();
    let mut s = State::fleet(names, true, chrono::FixedOffset::east_opt(0).expect("utc"));
    for host in 0..50 {
        s.host_connected(host, "0.1.0".into(), T0 - 1_000);
    }
    s.host_disconnected(
        37,
        "ssh: Could not resolve hostname node37: Name or service not known".into(),
        T0 + 2_000,
        T0,
    );
    // (The last header line's count depends on the height: no bare-cut check here.)
    let l = lines(&draw(&s, 80, 24, T0));
    assert!(l[0].contains("[49/50 connected]"), "{}", l[0]);
    // The host in trouble comes first; the last header line counts what did not fit.
    assert!(
        l[1].starts_with("node37  disconnected, retrying in 2s: ssh: Could not"),
        "{}",
        l[1]
    );
    assert!(l[1].trim_end().ends_with('…'), "{}", l[1]);
    assert!(
        l[3].contains("and 48 more hosts, connected"),
        "{}",
        l.join("\n")
    );
    let tall = lines(&draw(&s, 200, 50, T0));
    assert!(
        tall[6].contains("and 45 more hosts, connected"),
        "{}",
        tall.join("\n")
    );
}

#[test]
fn the_reload_popup_lists_every_host_and_marks_the_choice() {
    let mut s = fleet();
    s.overlay = Some(Overlay::ChooseReload { cursor: 2 });
    let l = lines(&draw(&s, 80, 24, T0));
    assert!(line_with(&l, "Reload which?").contains('╔'));
    assert!(line_with(&l, "every host (3)").contains("  every host"));
    assert!(line_with(&l, "> node7").contains("> node7"));
    assert!(line_with(&l, "Enter reloads").contains("Esc cancels"));
    // A revoke names the host.
    s.overlay = Some(Overlay::ConfirmRevoke {
        host: 1,
        addr: ip("10.0.0.7"),
        door: "openSSH".into(),
    });
    let l = lines(&draw(&s, 80, 24, T0));
    assert!(line_with(&l, "Revoke 10.0.0.7 (openSSH) on node7? y/n").contains('║'));
}
