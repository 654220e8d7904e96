//! `knock-bench`: our knockd against Debian's knockd 0.8, side by side, in throwaway network
//! namespaces (see BENCHMARKS.md for the results and how to read them).
//!
//! Every run gets a fresh [`Lab`](knock_e2e::Lab) (the end-to-end tests' namespace helpers,
//! package `knock-e2e`, as are the flood and knock senders in [`knock_e2e::traffic`]); all traffic, spoofed or not, stays inside its
//! two namespaces, spoofed sources come from 10.192.0.0/12 only, floods are bounded in
//! packets and in time, and the lab deletes the namespaces and kills the daemons (by PID) on
//! drop.
//!
//! - [`monitor`]: nftables netlink events from the server namespace, timestamped.
//! - [`daemon`]: the daemons under test and their config; [`floor`]: the firewall command's
//!   own latency, without any daemon.
//! - [`access`]: a listener on the opened port and the client's real connection to it;
//!   [`fwcount`]: rules and set elements left in the firewall.
//! - [`procfs`]: CPU and memory of a daemon.
//! - [`fleet`]: `knock-bench fleet`, knockctl over many hosts through real ssh.
//! - [`spa`]: `knock-bench --spa`, single-packet knocks, ours and [`fwknop`]'s side by side
//!   ([`spa_load`]: the shared scenarios; [`spa_table`]: its table; [`pktstats`]: fwknopd's
//!   capture counters).
//! - [`runner`]: the scenarios; [`legit`]: the legitimate client's tries; [`report`]: table,
//!   JSON and targets; [`stats`]: percentiles; [`keep`]: a run's files kept (`--keep-logs`).

pub mod access;
pub mod daemon;
pub mod fleet;
pub mod floor;
pub mod fwcount;
pub mod fwknop;
pub mod keep;
pub mod legit;
pub mod monitor;
pub mod pktstats;
pub mod plan;
pub mod procfs;
pub mod report;
pub mod runner;
pub mod spa;
pub mod spa_load;
pub mod spa_table;
pub mod stats;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use daemon::Variant;
use knock_e2e::{bin, DEBIAN_KNOCKD};
use report::{check_targets, loadavg, Machine, Report, RunResult};
use runner::{run_plan, Plan};

/// Checks the prerequisites, runs `plan` (reporting each run to `progress`), writes the JSON
/// report to `json` and returns it.
pub fn run(plan: &Plan, json: &Path, progress: impl FnMut(&RunResult)) -> Result<Report> {
    preflight(plan)?;
    let started = Instant::now();
    let mut machine = Machine::probe();
    let versions: BTreeMap<String, String> = plan
        .variants
        .iter()
        .map(|v| (v.label().to_string(), v.version()))
        .collect();
    let floors = floor::measure(plan.quiet_trials.min(20), runner::CLI).unwrap_or_else(|e| {
        eprintln!("knock-bench: cannot measure the firewall command alone: {e:#}");
        Vec::new()
    });
    let runs = run_plan(plan, progress);
    machine.loadavg_after = loadavg();
    let report = Report {
        date: utc_now(),
        smoke: plan.smoke,
        machine,
        versions,
        targets: check_targets(&runs),
        floors,
        runs,
        wall_s: started.elapsed().as_secs_f64(),
    };
    let text = serde_json::to_string_pretty(&report).context("cannot encode the report")?;
    std::fs::write(json, text + "\n")
        .with_context(|| format!("cannot write {}", json.display()))?;
    Ok(report)
}

fn preflight(plan: &Plan) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "knock-bench needs root (network namespaces, raw sockets): sudo bash scripts/bench.sh"
        );
    }
    if plan.variants.contains(&Variant::Debian) && !Path::new(DEBIAN_KNOCKD).is_file() {
        bail!(
            "{DEBIAN_KNOCKD} not found: install Debian's knockd with `sudo bash scripts/setup.sh`"
        );
    }
    if plan.variants.iter().any(|v| v.is_ours()) {
        let exe = std::env::current_exe().context("cannot find knock-bench's own path")?;
        let dir = exe.parent().context("knock-bench has no folder")?;
        for name in ["knockd", "knockctl"] {
            if !dir.join(name).is_file() {
                bail!(
                    "{name} not found next to knock-bench in {}: run `cargo build --release --workspace --bins`",
                    dir.display()
                );
            }
        }
        // bin() finds them the same way.
        let _ = bin("knockd");
    }
    Ok(())
}

/// `date -u +%Y-%m-%dT%H:%M:%SZ`.
fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".to_string(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_string(),
        )
}
