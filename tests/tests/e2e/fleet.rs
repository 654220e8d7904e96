//! `knockctl` over many hosts through real ssh: each host a network namespace with its own
//! sshd and knockd (see `knock_e2e::fleet`), knockctl in a client namespace on their LAN.

use std::process::Output;
use std::time::{Duration, Instant};

use knock_e2e::fleet::{Fleet, CLIENT_V4};
use knock_e2e::{require_root, wait_until};

/// A native door; attempts and grants last long enough to look at them.
const CONF: &str = "[ssh]\n sequence = 2222,1111,3333\n seq_timeout = 60\n open = 22/tcp\n \
                    cmd_timeout = 600\n tcpflags = syn\n";

const WAIT: Duration = Duration::from_secs(15);

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `knockctl --hosts-file F ARGS`.
fn ctl(fleet: &Fleet, args: &[&str]) -> Output {
    let file = fleet.hosts_file();
    let mut argv = vec!["--hosts-file", file.to_str().expect("utf-8 path")];
    argv.extend_from_slice(args);
    fleet.knockctl(&argv)
}

/// The lines of `out` that start with `host`.
fn rows<'a>(out: &'a str, host: &str) -> Vec<&'a str> {
    out.lines()
        .filter(|l| l.split_whitespace().next() == Some(host))
        .collect()
}

fn has_grant(fleet: &Fleet, i: usize) -> bool {
    fleet
        .iptables_rules(i)
        .contains(&format!("-s {CLIENT_V4}/32 -p tcp -m tcp --dport 22"))
}

#[test]
fn list_attempts_revoke_reload_and_tail_across_hosts() {
    if !require_root() {
        return;
    }
    let fleet = Fleet::new(3, CONF);

    // tail over two hosts: wait until both have a relay running, then knock.
    let tail = fleet.spawn_knockctl(&[
        "--hosts-file",
        fleet.hosts_file().to_str().expect("utf-8"),
        "--hosts",
        "h0,h1",
        "tail",
    ]);
    let relays = |i: usize| {
        let out = std::process::Command::new("ip")
            .args(["netns", "pids", &fleet.hosts[i].ns])
            .output()
            .expect("ip netns pids");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("dial-stdio"))
            })
            .count()
    };
    assert!(
        wait_until(WAIT, || relays(0) == 1 && relays(1) == 1),
        "tail did not reach both hosts:\n{}",
        tail.log_text()
    );
    // The subscriptions may still be on their way when the relays run: knock until tail
    // shows both hosts (h0: a first knock, then a wrong one, which resets it; h1: a grant).
    let lines = |host: &str, what: &str| {
        rows(&tail.stdout_text(), host)
            .iter()
            .any(|l| l.contains(CLIENT_V4) && l.contains(what))
    };
    let seen = wait_until(WAIT, || {
        fleet.knock(0, &["2222", "3333"]);
        fleet.knock(1, &["2222", "1111", "3333"]);
        wait_until(Duration::from_secs(2), || {
            lines("h0", "ssh stage 1/3") && lines("h1", "ssh OPEN")
        })
    });
    assert!(seen, "tail:\n{}", tail.log_text());
    // h0: an attempt in progress; h1 and h2: a grant.
    fleet.knock(0, &["2222", "1111"]);
    assert!(
        wait_until(WAIT, || lines("h0", "ssh stage 2/3")),
        "tail:\n{}",
        tail.log_text()
    );
    fleet.knock(2, &["2222", "1111", "3333"]);
    for i in [1, 2] {
        assert!(wait_until(WAIT, || has_grant(&fleet, i)), "h{i}: no grant");
    }
    assert!(!tail.stdout_text().contains("h2"), "h2 was not asked");

    // list: one table, a HOST column; grants on h1 and h2 only.
    let list = ctl(&fleet, &["--hosts", "fleet", "list"]);
    assert_eq!(list.status.code(), Some(0), "{}", text(&list));
    let out = stdout(&list);
    assert!(out.starts_with("HOST"), "{}", text(&list));
    for (host, grants) in [("h0", 0), ("h1", 1), ("h2", 1)] {
        let found = rows(&out, host)
            .iter()
            .filter(|l| l.contains(CLIENT_V4))
            .count();
        assert_eq!(found, grants, "{host}:\n{out}");
    }

    // attempts: h0's sequence in progress.
    let attempts = ctl(&fleet, &["--hosts", "fleet", "attempts"]);
    assert_eq!(attempts.status.code(), Some(0), "{}", text(&attempts));
    let out = stdout(&attempts);
    assert!(
        rows(&out, "h0")
            .iter()
            .any(|l| l.contains(CLIENT_V4) && l.contains("2/3")),
        "{out}"
    );

    // --json: every object carries its host.
    let json = ctl(&fleet, &["--hosts", "fleet", "--json", "list"]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    let hosts: Vec<&str> = value
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|g| g["host"].as_str())
        .collect();
    assert_eq!(hosts, ["h1", "h2"], "{}", text(&json));

    // revoke --on: only that host; without it: every host that holds a grant.
    let on = ctl(
        &fleet,
        &["--hosts", "fleet", "revoke", CLIENT_V4, "--on", "h2"],
    );
    assert_eq!(on.status.code(), Some(0), "{}", text(&on));
    assert!(wait_until(WAIT, || !has_grant(&fleet, 2)), "h2 still open");
    assert!(has_grant(&fleet, 1), "h1 was not to be revoked");
    let all = ctl(&fleet, &["--hosts", "fleet", "revoke", CLIENT_V4]);
    assert_eq!(all.status.code(), Some(0), "{}", text(&all));
    let out = stdout(&all);
    assert_eq!(rows(&out, "h1").len(), 1, "{out}");
    assert!(
        rows(&out, "h0").is_empty() && rows(&out, "h2").is_empty(),
        "{out}"
    );
    assert!(wait_until(WAIT, || !has_grant(&fleet, 1)), "h1 still open");
    let again = ctl(&fleet, &["--hosts", "fleet", "revoke", CLIENT_V4]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(text(&again).contains("no open grant"), "{}", text(&again));

    // reload: each host with its own result; a broken config fails only there.
    std::fs::write(&fleet.hosts[0].conf, "[ssh]\n sequence = 2222,nope\n").expect("write");
    let reload = ctl(&fleet, &["--hosts", "fleet", "reload"]);
    assert_eq!(reload.status.code(), Some(1), "{}", text(&reload));
    let out = stdout(&reload);
    assert!(
        rows(&out, "h0").iter().any(|l| l.contains("reload failed")),
        "{out}"
    );
    for host in ["h1", "h2"] {
        assert!(
            rows(&out, host)
                .iter()
                .any(|l| l.contains("configuration reloaded")),
            "{out}"
        );
    }

    // metrics: a host label on every sample.
    let metrics = ctl(&fleet, &["--hosts", "fleet", "metrics"]);
    let out = stdout(&metrics);
    for host in ["h0", "h1", "h2"] {
        assert!(
            out.contains(&format!("knockd_up{{host=\"{host}\"}} 1")),
            "{out}"
        );
    }
}

#[test]
fn a_host_whose_sshd_is_stopped_is_reported_while_the_others_answer() {
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new(2, CONF);
    fleet.stop_sshd(1);
    let started = Instant::now();
    let list = ctl(&fleet, &["--hosts", "fleet", "status"]);
    assert_eq!(list.status.code(), Some(1), "{}", text(&list));
    let all = text(&list);
    assert!(stdout(&list).contains("== h0 =="), "{all}");
    assert!(
        all.contains(&format!(
            "knockctl: h1: ssh: connect to host {} port 22: Connection refused",
            fleet.hosts[1].addr
        )),
        "ssh's own words for h1:\n{all}"
    );
    assert!(all.contains("1 of 2 hosts did not answer"), "{all}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // Nobody answers: exit 3.
    fleet.stop_sshd(0);
    let none = ctl(&fleet, &["--hosts", "fleet", "list"]);
    assert_eq!(none.status.code(), Some(3), "{}", text(&none));
}

#[test]
fn a_user_not_in_group_knockd_is_refused_by_knockd_on_the_remote() {
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new(1, CONF);
    let user = fleet.add_user();
    let url = format!("ssh://{user}@h0{}", fleet.hosts[0].socket.display());
    let out = fleet.knockctl(&["-H", &url, "list"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(
            "knockctl: h0: knockd refused the connection: permission denied: run as root or \
             join group knockd"
        ),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("h0: knockctl:"), "{}", text(&out));
    // root on the same host, with the same socket: exactly the local output.
    let url = format!("ssh://root@h0{}", fleet.hosts[0].socket.display());
    let out = fleet.knockctl(&["-H", &url, "list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!stdout(&out).contains("HOST"), "{}", text(&out));
}

/// `--ssh-persist`: the first command logs in once per host and leaves ssh's master; the
/// next ones reuse it (no new login). A host whose own ssh config chooses its ControlPath
/// keeps it: knockctl adds nothing there, and every command logs in again.
#[test]
fn ssh_persist_shares_one_login_per_host_unless_the_ssh_config_says_otherwise() {
    if !require_root() {
        return;
    }
    let fleet = Fleet::new(2, CONF);
    let run = fleet.runtime_dir();
    let own = run.join("own");
    std::fs::create_dir(&own).expect("own dir");
    fleet.add_ssh_config(&format!(
        "Host h1\n  ControlMaster no\n  ControlPath {}/%C\n",
        own.display()
    ));
    let env = [("XDG_RUNTIME_DIR", run.to_str().expect("utf-8"))];
    let list = |extra: &[&str]| {
        let file = fleet.hosts_file();
        let mut argv = vec!["--hosts-file", file.to_str().expect("utf-8")];
        argv.extend_from_slice(extra);
        argv.extend_from_slice(&["--hosts", "fleet", "list"]);
        let out = fleet.knockctl_env(&env, &argv);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(stdout(&out).contains("no open grants"), "{}", text(&out));
    };
    for _ in 0..3 {
        list(&["--ssh-persist", "60"]);
    }
    let sockets = |dir: &std::path::Path| {
        std::fs::read_dir(dir).map_or(0, |d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
                .count()
        })
    };
    assert_eq!(sockets(&run.join("knockctl-ssh")), 1, "h0's master only");
    assert_eq!(sockets(&own), 0, "h1: ControlMaster no, nothing made");
    let logins = |i: usize| fleet.logins(i);
    assert!(
        wait_until(WAIT, || logins(1) == 3),
        "h1 logs in every time: {}",
        logins(1)
    );
    assert_eq!(logins(0), 1, "h0 logged in once");
    // Without sharing (the default), h0 logs in again.
    list(&[]);
    assert!(wait_until(WAIT, || logins(0) == 2), "h0: {}", logins(0));
    // A control directory others could enter is refused, with the reason.
    let dir = run.join("knockctl-ssh");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let file = fleet.hosts_file();
    let out = fleet.knockctl_env(
        &env,
        &[
            "--hosts-file",
            file.to_str().expect("utf-8"),
            "--ssh-persist",
            "60",
            "--hosts",
            "fleet",
            "list",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("mode 0755"), "{}", text(&out));
}
