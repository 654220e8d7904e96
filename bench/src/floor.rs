//! The floor under every grant: how long the firewall command alone takes, from spawn to
//! the kernel committing the rule, with no daemon involved. Both daemons' command doors pay
//! `sh -c iptables ...`; our native door pays `iptables ...`.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::monitor::{RuleBook, RuleMonitor};
use super::stats::{ms, percentile};
use knock_e2e::traffic::netns::create_in;
use knock_e2e::Lab;

const IPTABLES: &str = "/usr/sbin/iptables";
const TIMEOUT: Duration = Duration::from_secs(5);

/// Latency of one way of running the firewall command.
#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    pub command: String,
    pub runs: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Measures `iptables -I ...` and `sh -c 'iptables -I ...'`, `runs` times each, in a lab of
/// its own.
pub fn measure(runs: usize, client: Ipv4Addr) -> Result<Vec<Floor>> {
    let lab = Lab::new();
    let monitor = RuleMonitor::start(lab.srv_ns())?;
    let mut book = RuleBook::new(client);
    let rule = format!("INPUT -s {client} -p tcp --dport 22 -j ACCEPT");
    let direct: Vec<String> = format!("{IPTABLES} -w -I {rule}")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let shell = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        format!("{IPTABLES} -I {rule}"),
    ];
    // Creates iptables' tables, so no run pays for that.
    run_in(lab.srv_ns(), &[IPTABLES, "-w", "-S", "INPUT"])?;
    let mut floors = Vec::new();
    for argv in [direct, shell] {
        let mut lat = Vec::new();
        for _ in 0..runs {
            let argv_ref: Vec<&str> = argv.iter().map(String::as_str).collect();
            let started = run_in(lab.srv_ns(), &argv_ref)?;
            let Some(at) = book.wait_added(&monitor, started + TIMEOUT) else {
                bail!("`{}` added no rule within {TIMEOUT:?}", argv.join(" "));
            };
            lat.push(at.saturating_duration_since(started));
            let delete = format!("{IPTABLES} -w -D {rule}");
            let delete: Vec<&str> = delete.split_whitespace().collect();
            run_in(lab.srv_ns(), &delete)?;
            if !book.wait_closed(&monitor, Instant::now() + TIMEOUT) {
                bail!("the rule was not deleted within {TIMEOUT:?}");
            }
        }
        floors.push(Floor {
            command: argv.join(" "),
            runs,
            p50_ms: percentile(&lat, 50.0).map(ms),
            p99_ms: percentile(&lat, 99.0).map(ms),
        });
    }
    Ok(floors)
}

/// Runs `argv` to completion in network namespace `ns`; returns when it was spawned.
fn run_in(ns: &str, argv: &[&str]) -> Result<Instant> {
    let (program, args) = argv.split_first().context("empty command")?;
    create_in(ns, || {
        let started = Instant::now();
        let status = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("cannot run {program}"))?;
        if !status.success() {
            bail!("`{}` failed: {status}", argv.join(" "));
        }
        Ok(started)
    })
}
