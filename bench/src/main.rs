//! knock-bench: our knockd against Debian's knockd 0.8, side by side, in throwaway network
//! namespaces. Run it through `sudo bash scripts/bench.sh [--smoke] [--out FILE]`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Parser;
use knock_bench::daemon::Variant;
use knock_bench::legit::utc_ms;
use knock_bench::report::table;
use knock_bench::runner::Plan;

#[derive(Debug, Parser)]
#[command(
    name = "knock-bench",
    about = "Benchmark our knockd against Debian's knockd 0.8 in throwaway network namespaces",
    after_help = "Needs root. All traffic stays inside two private network namespaces per run; \
spoofed sources are from 10.192.0.0/12. Prints a side-by-side table and writes a JSON report."
)]
struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    /// A few seconds in all, tiny counts and low rates: checks that it runs and reports
    #[arg(long)]
    smoke: bool,
    /// Where to write the JSON report
    #[arg(long, value_name = "FILE", default_value = "target/knock-bench.json")]
    out: PathBuf,
    /// Daemons to run, comma-separated: debian, ours-cmd, ours-native, ours-nft (with --spa:
    /// ours-nft, ours-native, fwknopd)
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    daemons: Vec<String>,
    /// Length of each flood in seconds
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Knocks in the quiet scenario
    #[arg(long, value_name = "N")]
    trials: Option<usize>,
    /// Door-flood rates in packets per second, comma-separated (empty: none)
    #[arg(long, value_delimiter = ',', value_name = "PPS", num_args = 0..)]
    door_rates: Option<Vec<u64>>,
    /// Scan-flood rates in packets per second, comma-separated (empty: none)
    #[arg(long, value_delimiter = ',', value_name = "PPS", num_args = 0..)]
    scan_rates: Option<Vec<u64>>,
    /// Completing-flood rates (a new source per sequence), comma-separated (empty: none)
    #[arg(long, value_delimiter = ',', value_name = "PPS", num_args = 0..)]
    completing_rates: Option<Vec<u64>>,
    /// Rates of the completing flood from 30k sources over 127 /24s (empty: none)
    #[arg(long, value_delimiter = ',', value_name = "PPS", num_args = 0..)]
    narrow_rates: Option<Vec<u64>>,
    /// Rates of the flood on the seed doors' ports in random order from 30k sources (empty: none)
    #[arg(long, value_delimiter = ',', value_name = "PPS", num_args = 0..)]
    shuffled_rates: Option<Vec<u64>>,
    /// Re-knocks after the client's rule was removed by hand, 0.2 s after each removal
    /// (0: skip; iptables daemons only)
    #[arg(long, value_name = "N")]
    reknock_rounds: Option<usize>,
    /// Start a re-knock round at most every SECS (default 0: the next removal as soon as the
    /// rule is back)
    #[arg(long, value_name = "SECS")]
    reknock_period: Option<f64>,
    /// Keep each run's files in a new folder of DIR: the daemon's log, stdout and stderr
    /// (our knockd's stderr timestamps every line to the microsecond), config, state file,
    /// `knockctl --json status` at the end, and `tries.tsv`, the legitimate client's tries
    /// with the UTC time each was sent, so that a missed knock can be read in the log
    #[arg(long, value_name = "DIR")]
    keep_logs: Option<PathBuf>,
    /// Distinct spoofed sources in the state-growth scenario (0: skip it)
    #[arg(long, value_name = "N")]
    growth_sources: Option<u64>,
    /// Rate of the state-growth scenario in packets per second
    #[arg(long, value_name = "PPS")]
    growth_rate: Option<u64>,
    /// Run only the single-packet knock scenarios, side by side: our knockd with nftables
    /// and with iptables (10,000 enrolled clients; with --smoke, 50 and nftables only) and
    /// Debian's fwknopd 2.6 (package fwknop-server): quiet packet-to-firewall latency, and a
    /// 30k packets/s flood of forged packets with a real client knocking; --duration sets
    /// the flood's length, --trials the quiet knocks
    #[arg(long)]
    spa: bool,
}

/// Benchmarks other than the daemons' side by side.
#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// `knockctl list` over many hosts through real ssh (a namespace per host with its own
    /// sshd and knockd): one host step by step, then each size as root (bash rc), as a lab
    /// user with /bin/sh, and with --ssh-persist (first and warm); wall time, client and
    /// servers' CPU, load average. Prints markdown tables.
    Fleet {
        /// Fleet sizes, comma-separated (0: only the one-host steps)
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "10,25,50",
            value_name = "N"
        )]
        sizes: Vec<usize>,
        /// Runs per size and mode
        #[arg(long, default_value = "5", value_name = "N")]
        runs: usize,
    },
}

impl Args {
    fn plan(&self) -> Result<Plan> {
        let mut plan = if self.smoke {
            Plan::smoke()
        } else {
            Plan::full()
        };
        if !self.daemons.is_empty() {
            plan.variants = Vec::new();
            for name in &self.daemons {
                let Some(v) = Variant::parse(name) else {
                    bail!("unknown daemon '{name}' (use debian, ours-cmd, ours-native, ours-nft)");
                };
                plan.variants.push(v);
            }
        }
        if let Some(secs) = self.duration {
            if !(0.1..=600.0).contains(&secs) {
                bail!("--duration {secs}: use 0.1 to 600 seconds");
            }
            plan.flood = Duration::from_secs_f64(secs);
        }
        if let Some(n) = self.trials {
            plan.quiet_trials = n.max(1);
        }
        if let Some(r) = &self.door_rates {
            plan.door_rates = r.clone();
        }
        if let Some(r) = &self.scan_rates {
            plan.scan_rates = r.clone();
        }
        if let Some(r) = &self.completing_rates {
            plan.completing_rates = r.clone();
        }
        if let Some(r) = &self.narrow_rates {
            plan.narrow_rates = r.clone();
        }
        if let Some(r) = &self.shuffled_rates {
            plan.shuffled_rates = r.clone();
        }
        plan.keep_logs.clone_from(&self.keep_logs);
        if let Some(n) = self.reknock_rounds {
            plan.reknock_rounds = n.min(1000);
        }
        if let Some(secs) = self.reknock_period {
            plan.reknock_period = Duration::from_secs_f64(secs.clamp(0.0, 60.0));
        }
        if let Some(n) = self.growth_sources {
            plan.growth_sources = n.min(1_000_000);
        }
        if let Some(r) = self.growth_rate {
            plan.growth_rate = r.max(1);
        }
        Ok(plan)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Sub::Fleet { sizes, runs }) = &args.command {
        let plan = knock_bench::fleet::FleetPlan {
            sizes: sizes
                .iter()
                .filter(|&&n| n > 0)
                .map(|&n| n.min(200))
                .collect(),
            runs: (*runs).max(1),
        };
        return match knock_bench::fleet::run(&plan) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("knock-bench fleet: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("knock-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// True when every run completed (missed targets are reported, not failures).
fn run(args: &Args) -> Result<bool> {
    if args.spa {
        return run_spa(args);
    }
    let plan = args.plan()?;
    let report = knock_bench::run(&plan, &args.out, |r| {
        let status = match &r.error {
            Some(e) => format!("FAILED: {}", e.lines().next().unwrap_or("")),
            None => format!(
                "opened {}/{}, CPU {:.2} s",
                r.legit.opened, r.legit.tried, r.cpu_s
            ),
        };
        eprintln!(
            "knock-bench: {} / {}: {status}",
            r.scenario,
            r.variant.label()
        );
        if r.scenario.starts_with("reknock") {
            if let Some((mean, n)) = r.legit.mean_after_first_ms() {
                eprintln!("knock-bench:   re-knocks: rule back after {mean:.1} ms on average ({n} re-knocks)");
            }
        }
        for (i, t) in r.legit.misses() {
            eprintln!(
                "knock-bench:   try {} at {} UTC (t = {:.1} s) missed: rule {}, connection {}",
                i + 1,
                utc_ms(t.sent_unix_ms),
                t.t_s,
                t.rule_ms
                    .map_or_else(|| "not seen".to_string(), |m| format!("after {m:.1} ms")),
                match t.connected {
                    Some(true) => "made",
                    Some(false) => "refused",
                    None => "not tried",
                }
            );
        }
        if let Some(dir) = &r.kept {
            eprintln!("knock-bench:   files kept in {}", dir.display());
        }
    })?;
    print!("{}", table(&report));
    println!("\nJSON report: {}", args.out.display());
    let failed = report.runs.iter().filter(|r| r.error.is_some()).count();
    if failed > 0 {
        eprintln!("knock-bench: {failed} run(s) failed");
    }
    Ok(failed == 0)
}

/// `--spa`: the single-packet knock scenarios, ours and fwknopd's, printed and written as
/// JSON. Fails when one of our real knocks did not open, and, under CI=true, when fwknopd is
/// not installed (fwknopd's own results are reported, not judged).
fn run_spa(args: &Args) -> Result<bool> {
    let mut plan = if args.smoke {
        knock_bench::spa::SpaPlan::smoke()
    } else {
        knock_bench::spa::SpaPlan::full()
    };
    if let Some(secs) = args.duration {
        plan.pace.flood = Duration::from_secs_f64(secs.clamp(0.1, 600.0));
    }
    if let Some(n) = args.trials {
        plan.pace.quiet_trials = n.max(1);
    }
    if !args.daemons.is_empty() {
        let has = |name: &str| args.daemons.iter().any(|d| d == name);
        if let Some(d) = args
            .daemons
            .iter()
            .find(|d| !["ours-nft", "ours-native", "fwknopd"].contains(&d.as_str()))
        {
            bail!("--spa --daemons: unknown daemon '{d}' (use ours-nft, ours-native, fwknopd)");
        }
        plan.ours_nftables = has("ours-nft");
        plan.ours_iptables = has("ours-native");
        plan.fwknop = has("fwknopd");
    }
    let r = knock_bench::spa::run(&plan)?;
    print!("{}", knock_bench::spa_table::table(&r));
    std::fs::write(&args.out, serde_json::to_string_pretty(&r)?)?;
    println!("JSON report: {}", args.out.display());
    let ours_ok = r
        .rows
        .iter()
        .filter(|row| row.daemon == "knockd-rs")
        .all(|row| row.real_opened == row.real_knocks);
    if let Some(why) = &r.fwknop_missing {
        eprintln!("knock-bench: ***** fwknopd NOT MEASURED: {why} *****");
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            eprintln!("knock-bench: CI=true: a missing fwknop is a failure");
            return Ok(false);
        }
    }
    Ok(ours_ok)
}
