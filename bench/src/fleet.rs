//! `knock-bench fleet`: `knockctl list` over many hosts through real ssh, and where its time
//! goes. Each host is a network namespace with its own sshd and knockd on one bridged LAN
//! (`knock_e2e::fleet::Fleet`), knockctl runs in a client namespace; the lab user exists only
//! inside the hosts' private mount namespaces (the host's user database is never touched).
//! Everything is removed, and every process killed by PID, when a fleet is dropped.
//!
//! Per fleet size, `runs` times each:
//! - `root, bash rc`: ssh as root, whose login shell on this machine reads a heavy
//!   `~/.bashrc` (sshd runs the remote command through the user's login shell);
//! - `member, /bin/sh`: ssh as a lab user in group knockd whose shell reads no rc file;
//! - `member, shared, first`: the same with `--ssh-persist 60`, no master yet (it logs in and
//!   leaves one master per host);
//! - `member, shared, warm`: the next commands, on those masters.
//!
//! Each run records the wall time, the client's CPU (knockctl, its ssh children and the ssh
//! masters) and the servers' CPU (every process in the host namespaces: sshd, its
//! per-connection children, the shells, `knockctl dial-stdio`, knockd), and the load average
//! when it started. On a real LAN the servers' CPU is spread over the hosts; here every host
//! shares this machine's cores with the client.
//!
//! Before that, one host alone, one step at a time (`breakdown`): the ssh login and shell,
//! the remote knockctl's start-up, the answer.

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use knock_e2e::bin;
use knock_e2e::fleet::Fleet;

/// One door; no traffic: `list` answers "no open grants" from every host.
const CONF: &str = "[ssh]\n sequence = 2222,1111,3333\n seq_timeout = 60\n open = 22/tcp\n \
                    tcpflags = syn\n";

/// Environment variables for knockctl.
type Env = [(String, String)];

/// What to measure.
#[derive(Debug, Clone)]
pub struct FleetPlan {
    pub sizes: Vec<usize>,
    pub runs: usize,
}

/// One timed command.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub wall_s: f64,
    pub client_cpu_s: f64,
    pub server_cpu_s: f64,
    pub load1: f64,
}

/// A mode's runs at one size.
#[derive(Debug, Clone)]
pub struct Row {
    pub hosts: usize,
    pub mode: &'static str,
    pub runs: Vec<Run>,
}

/// Runs the plan, printing each row as it is measured; returns every row.
pub fn run(plan: &FleetPlan) -> Result<Vec<Row>> {
    if !knock_e2e::require_root() {
        bail!("knock-bench fleet needs root (network and mount namespaces, sshd)");
    }
    // knockctl ends by killing its ssh children without always reaping them: as the
    // subreaper, the bench gets them and their CPU (see `reap_orphans`).
    nix::sys::prctl::set_child_subreaper(true).context("PR_SET_CHILD_SUBREAPER")?;
    let mut rows = Vec::new();
    {
        let fleet = Fleet::with_member(1, CONF);
        breakdown(&fleet, plan.runs.max(3))?;
    }
    println!();
    println!("| hosts | login | load (1 min) | wall, each run (s) | median | client CPU-s | servers' CPU-s |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for &n in &plan.sizes {
        let started = Instant::now();
        let fleet = Fleet::with_member(n, CONF);
        eprintln!(
            "knock-bench fleet: {n} hosts up in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let member = fleet
            .member
            .clone()
            .context("the fleet has no lab member")?;
        let as_root = fleet.hosts_file();
        let as_member = fleet.hosts_file_for(&member);
        let runtime = fleet.runtime_dir();
        let env = vec![("XDG_RUNTIME_DIR".to_string(), path_text(&runtime)?)];
        let list = |file: &Path, share: bool| -> Vec<String> {
            let mut argv = vec![
                "--hosts-file".to_string(),
                file.display().to_string(),
                "--hosts".into(),
                "fleet".into(),
                "--timeout".into(),
                "120".into(),
            ];
            if share {
                argv.extend(["--ssh-persist".into(), "60".into()]);
            }
            argv.push("list".into());
            argv
        };
        // The same ssh with a key exchange that costs less CPU than OpenSSH 9.2's default
        // (sntrup761x25519): what a newer OpenSSH's default (mlkem768x25519) costs about.
        let fast = fleet.ssh_wrapper().with_file_name("ssh-curve25519");
        std::fs::write(
            &fast,
            format!(
                "#!/bin/sh\nexec {} -o KexAlgorithms=curve25519-sha256 \"$@\"\n",
                fleet.ssh_wrapper().display()
            ),
        )?;
        std::fs::set_permissions(&fast, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let mut fast_env = env.clone();
        fast_env.push(("KNOCKCTL_SSH".to_string(), path_text(&fast)?));
        let modes: [(&'static str, Vec<String>, usize, &Env); 5] = [
            ("root, bash rc", list(&as_root, false), plan.runs, &env),
            ("member, /bin/sh", list(&as_member, false), plan.runs, &env),
            (
                "member, /bin/sh, curve25519 kex",
                list(&as_member, false),
                plan.runs,
                &fast_env,
            ),
            ("member, shared, first", list(&as_member, true), 1, &env),
            (
                "member, shared, warm",
                list(&as_member, true),
                plan.runs,
                &env,
            ),
        ];
        for (mode, argv, count, env) in modes {
            let mut runs = Vec::new();
            for _ in 0..count {
                runs.push(timed(&fleet, env, &argv, n)?);
            }
            let row = Row {
                hosts: n,
                mode,
                runs,
            };
            println!("{}", row_line(&row));
            rows.push(row);
        }
    }
    Ok(rows)
}

/// One host, one step at a time: medians of `runs`.
fn breakdown(fleet: &Fleet, runs: usize) -> Result<()> {
    let member = fleet
        .member
        .clone()
        .context("the fleet has no lab member")?;
    let h = &fleet.hosts[0];
    let socket = h.socket.display().to_string();
    let runtime = path_text(&fleet.runtime_dir())?;
    let ssh = fleet.ssh_wrapper().display().to_string();
    let knockctl = bin("knockctl").display().to_string();
    let url = |user: &str| format!("ssh://{user}@{}{socket}", h.name);
    let member_url = url(&member);
    let steps: Vec<(&str, &str, Vec<String>)> = vec![
        (
            "ssh login, root's shell (bash reads ~/.bashrc), `true`",
            "cli",
            vec![
                ssh.clone(),
                "-l".into(),
                "root".into(),
                h.name.clone(),
                "true".into(),
            ],
        ),
        (
            "ssh login, lab user's /bin/sh, `true`",
            "cli",
            vec![
                ssh.clone(),
                "-l".into(),
                member.clone(),
                h.name.clone(),
                "true".into(),
            ],
        ),
        (
            "the same, running `knockctl --version` there",
            "cli",
            vec![
                ssh.clone(),
                "-l".into(),
                member.clone(),
                h.name.clone(),
                "knockctl".into(),
                "--version".into(),
            ],
        ),
        (
            "`knockctl -H ssh://lab-user@h0/... list` (login, dial-stdio, answer)",
            "cli",
            vec![
                knockctl.clone(),
                "-H".into(),
                member_url.clone(),
                "list".into(),
            ],
        ),
        (
            "the same with `--ssh-persist 60`, master already up",
            "cli",
            vec![
                knockctl.clone(),
                "--ssh-persist".into(),
                "60".into(),
                "-H".into(),
                member_url.clone(),
                "list".into(),
            ],
        ),
        (
            "`knockctl --socket ... list` on the host itself (no ssh)",
            "host",
            vec![
                knockctl.clone(),
                "--socket".into(),
                socket.clone(),
                "list".into(),
            ],
        ),
    ];
    println!(
        "One host, one step at a time (median of {runs}, load {:.1}):",
        load1()
    );
    println!();
    println!("| step | wall (ms) | client CPU (ms) | server CPU (ms) |");
    println!("| --- | --- | --- | --- |");
    let servers = inodes([h.ns.as_str()])?;
    let client = inodes([fleet.cli.as_str()])?;
    for (what, place, argv) in steps {
        let ns = if place == "cli" { &fleet.cli } else { &h.ns };
        let (mut times, mut client_cpu, mut server_cpu) = (Vec::new(), Vec::new(), Vec::new());
        // The shared step's first run starts the master; it is not counted.
        let warm_up = usize::from(argv.iter().any(|a| a == "--ssh-persist"));
        for i in 0..runs + warm_up {
            let (s0, c0, k0) = (ns_cpu(&servers), ns_cpu(&client), children_cpu());
            let started = Instant::now();
            let out = exec(
                ns,
                &[("KNOCKCTL_SSH", &ssh), ("XDG_RUNTIME_DIR", &runtime)],
                &argv,
            )?;
            let took = started.elapsed();
            if !out.status.success() {
                bail!("{what}: {}", text(&out));
            }
            std::thread::sleep(Duration::from_millis(200));
            reap_orphans(fleet);
            if i >= warm_up {
                times.push(took.as_secs_f64());
                client_cpu.push(children_cpu() - k0 + ns_cpu(&client) - c0);
                server_cpu.push(ns_cpu(&servers) - s0);
            }
        }
        // On the host itself, knockctl is the bench's child: its CPU shows as the client's.
        println!(
            "| {what} | {:.0} | {:.0} | {:.0} |",
            median(times) * 1e3,
            median(client_cpu) * 1e3,
            median(server_cpu) * 1e3
        );
    }
    Ok(())
}

/// Runs knockctl once in the client namespace: wall time and CPU.
fn timed(fleet: &Fleet, env: &[(String, String)], argv: &[String], n: usize) -> Result<Run> {
    let servers = inodes(fleet.hosts.iter().map(|h| h.ns.as_str()))?;
    let client = inodes([fleet.cli.as_str()])?;
    let load1 = load1();
    let (server0, client0, children0) = (ns_cpu(&servers), ns_cpu(&client), children_cpu());
    let ssh = fleet.ssh_wrapper().display().to_string();
    let mut all_env: Vec<(&str, &str)> = vec![("KNOCKCTL_SSH", &ssh)];
    all_env.extend(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut full = vec![bin("knockctl").display().to_string()];
    full.extend_from_slice(argv);
    let started = Instant::now();
    let out = exec(&fleet.cli, &all_env, &full)?;
    let wall = started.elapsed();
    // Exit 0: every host answered (its empty list).
    if !out.status.success() || String::from_utf8_lossy(&out.stdout) != "no open grants\n" {
        bail!("knockctl over {n} hosts: {}", text(&out));
    }
    // Let the servers reap their sessions' processes (their CPU lands in the parents').
    std::thread::sleep(Duration::from_millis(300));
    reap_orphans(fleet);
    Ok(Run {
        wall_s: wall.as_secs_f64(),
        client_cpu_s: children_cpu() - children0 + ns_cpu(&client) - client0,
        server_cpu_s: ns_cpu(&servers) - server0,
        load1,
    })
}

/// Reaps this process's zombie children other than the fleet's daemons: the ssh clients
/// knockctl killed and left (reparented here, the subreaper), so that their CPU counts in
/// `RUSAGE_CHILDREN`.
fn reap_orphans(fleet: &Fleet) {
    let keep: HashSet<u32> = fleet
        .hosts
        .iter()
        .flat_map(|h| [h.sshd.as_ref(), h.knockd.as_ref()])
        .flatten()
        .map(knock_e2e::Daemon::pid)
        .collect();
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for pid in dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
    {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so read after the last ')'.
        let mut rest = stat
            .rsplit_once(')')
            .map_or("", |(_, r)| r)
            .split_whitespace();
        let (state, ppid) = (rest.next(), rest.next().and_then(|p| p.parse::<u32>().ok()));
        if state == Some("Z") && ppid == Some(me) && !keep.contains(&pid) {
            let Ok(raw) = i32::try_from(pid) else {
                continue;
            };
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(raw), None);
        }
    }
}

/// `ip netns exec NS env K=V... ARGV`.
fn exec(ns: &str, env: &[(&str, &str)], argv: &[String]) -> Result<Output> {
    let mut args: Vec<OsString> = vec!["netns".into(), "exec".into(), ns.into(), "env".into()];
    args.extend(env.iter().map(|(k, v)| OsString::from(format!("{k}={v}"))));
    args.extend(argv.iter().map(OsString::from));
    Command::new("ip")
        .args(&args)
        .output()
        .with_context(|| format!("run {}", argv.join(" ")))
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}: {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn path_text(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_string)
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

/// The network namespaces' inode numbers.
fn inodes<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<HashSet<u64>> {
    names
        .into_iter()
        .map(|name| {
            let path = PathBuf::from("/run/netns").join(name);
            std::fs::metadata(&path)
                .map(|m| m.ino())
                .with_context(|| format!("stat {}", path.display()))
        })
        .collect()
}

/// CPU seconds (their own and their reaped children's) of every process in the network
/// namespaces `inodes`.
fn ns_cpu(inodes: &HashSet<u64>) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| inodes.contains(&m.ino()))
        })
        .filter_map(|pid| crate::procfs::sample(pid).ok())
        .map(|s| s.cpu_s)
        .sum()
}

/// CPU seconds of this process's reaped children (knockctl and its ssh children).
fn children_cpu() -> f64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN);
    usage.map_or(0.0, |u| {
        let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        secs(u.user_time()) + secs(u.system_time())
    })
}

fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A markdown table row.
pub fn row_line(row: &Row) -> String {
    let walls: Vec<String> = row
        .runs
        .iter()
        .map(|r| format!("{:.2}", r.wall_s))
        .collect();
    let loads: Vec<f64> = row.runs.iter().map(|r| r.load1).collect();
    let (lo, hi) = loads
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &l| (lo.min(l), hi.max(l)));
    let med = |f: fn(&Run) -> f64| median(row.runs.iter().map(f).collect());
    format!(
        "| {} | {} | {:.1}–{:.1} | {} | {:.2} | {:.2} | {:.2} |",
        row.hosts,
        row.mode,
        lo,
        hi,
        walls.join(", "),
        med(|r| r.wall_s),
        med(|r| r.client_cpu_s),
        med(|r| r.server_cpu_s),
    )
}
