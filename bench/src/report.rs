//! Results: what one run measured, the side-by-side table, the JSON file, and the verdict on
//! the targets. Pure apart from the machine facts gathered in [`Machine::probe`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use super::daemon::Variant;
use super::floor::Floor;
use super::fwcount::FirewallCount;
pub use super::legit::{Legit, Try};
use super::procfs::{MemPart, ThreadCpu};
use knock_e2e::traffic::generator::FloodStats;

/// One look at the daemon during a flood.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct GrowthSample {
    pub t_s: f64,
    /// Flood packets sent so far.
    pub sent: u64,
    /// Packets the daemon has taken in so far.
    pub processed: u64,
    /// Daemon CPU seconds so far.
    pub cpu_s: f64,
}

/// State growth: how the cost of a packet changes as attempts pile up.
#[derive(Debug, Clone, Serialize)]
pub struct Growth {
    /// CPU per packet taken in while the first 20 % of the packets were taken in.
    pub early_us_per_packet: Option<f64>,
    /// CPU per packet over the last 20 %.
    pub late_us_per_packet: Option<f64>,
    /// Our daemon's live attempts at the end (Debian's cannot tell).
    pub attempts_at_end: Option<u64>,
    pub samples: Vec<GrowthSample>,
}

impl Growth {
    pub fn from_samples(samples: Vec<GrowthSample>, attempts_at_end: Option<u64>) -> Growth {
        let total = samples.last().map_or(0, |s| s.processed);
        let cost = |a: &GrowthSample, b: &GrowthSample| {
            let n = b.processed.checked_sub(a.processed).filter(|&n| n > 0)?;
            Some((b.cpu_s - a.cpu_s).max(0.0) * 1e6 / n as f64)
        };
        let first_past = |share: f64| {
            samples
                .iter()
                .find(|s| s.processed as f64 >= share * total as f64)
        };
        let early = samples
            .first()
            .zip(first_past(0.2))
            .and_then(|(a, b)| cost(a, b));
        let late = first_past(0.8)
            .zip(samples.last())
            .and_then(|(a, b)| cost(a, b));
        Growth {
            early_us_per_packet: early,
            late_us_per_packet: late,
            attempts_at_end,
            samples,
        }
    }
}

/// What one (scenario, daemon) run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub scenario: String,
    pub variant: Variant,
    pub target_pps: Option<u64>,
    pub flood: Option<FloodStats>,
    pub legit: Legit,
    /// Daemon CPU (utime + stime + reaped children) from the end of warm-up to the end.
    pub cpu_s: f64,
    /// VmHWM at the end.
    pub peak_rss_kib: u64,
    pub rss_kib: u64,
    /// Packets the daemon took in (ours: its counter; Debian: `Stage 1` log lines).
    pub processed: u64,
    /// Packets the kernel dropped before our daemon read them (pcap stats); Debian: none.
    pub kernel_drops: Option<u64>,
    /// Host-wide input backlog drops (`/proc/net/softnet_stat`) during the run.
    pub backlog_drops: u64,
    /// ACCEPT rules for sources other than the legitimate client.
    pub stray_grants: u64,
    /// What the firewall holds at the end (completing flood only).
    pub firewall: Option<FirewallCount>,
    /// Our daemon's opens refused, by reason (`knockctl status`: `refused_<reason>`).
    pub refused: BTreeMap<String, u64>,
    pub threads: Vec<ThreadCpu>,
    /// Resident memory at the end, by kind of mapping.
    pub memory: Vec<MemPart>,
    pub growth: Option<Growth>,
    pub error: Option<String>,
    /// Where its files were kept (`--keep-logs`).
    pub kept: Option<PathBuf>,
}

impl RunResult {
    pub fn failed(scenario: String, variant: Variant, err: &anyhow::Error) -> RunResult {
        RunResult {
            scenario,
            variant,
            target_pps: None,
            flood: None,
            legit: Legit::default(),
            cpu_s: 0.0,
            peak_rss_kib: 0,
            rss_kib: 0,
            processed: 0,
            kernel_drops: None,
            backlog_drops: 0,
            stray_grants: 0,
            firewall: None,
            refused: BTreeMap::new(),
            threads: Vec::new(),
            memory: Vec::new(),
            growth: None,
            error: Some(format!("{err:#}")),
            kept: None,
        }
    }
}

/// The machine the bench ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub kernel: String,
    /// /proc/loadavg before and after: other work on the machine shows up here.
    pub loadavg_before: String,
    pub loadavg_after: String,
}

impl Machine {
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map_or_else(|| "unknown".to_string(), |s| s.trim().to_string());
        Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu,
            kernel: read_trim("/proc/sys/kernel/osrelease"),
            loadavg_before: loadavg(),
            loadavg_after: String::new(),
        }
    }
}

pub fn loadavg() -> String {
    read_trim("/proc/loadavg")
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Everything the bench writes to its JSON file.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// UTC, RFC 3339.
    pub date: String,
    pub smoke: bool,
    pub machine: Machine,
    pub versions: BTreeMap<String, String>,
    pub runs: Vec<RunResult>,
    pub targets: Vec<TargetCheck>,
    /// The firewall command's own latency, without a daemon.
    pub floors: Vec<Floor>,
    pub wall_s: f64,
}

/// One of the targets, for one of our variants.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    pub target: String,
    pub variant: Variant,
    pub met: bool,
    pub detail: String,
}

fn find<'a>(runs: &'a [RunResult], scenario: &str, v: Variant) -> Option<&'a RunResult> {
    runs.iter()
        .find(|r| r.scenario == scenario && r.variant == v && r.error.is_none())
}

fn opened_all(r: &RunResult) -> bool {
    r.legit.tried > 0 && r.legit.opened == r.legit.tried
}

fn opened(r: &RunResult) -> String {
    format!("{}/{}", r.legit.opened, r.legit.tried)
}

fn f(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_string(), |x| format!("{x:.2}"))
}

/// Judges the targets for each of our variants against Debian's knockd. A target
/// whose scenarios were not in the plan is left out; one whose runs failed is not met.
pub fn check_targets(runs: &[RunResult]) -> Vec<TargetCheck> {
    let mut out = Vec::new();
    let deb = |s: &str| find(runs, s, Variant::Debian);
    let planned = |target: &str| {
        let scenario = target.split(':').next().unwrap_or(target);
        runs.iter().any(|r| r.scenario == scenario)
    };
    for v in [Variant::OursCmd, Variant::OursNative, Variant::OursNft] {
        if !runs.iter().any(|r| r.variant == v) {
            continue;
        }
        let ours = |s: &str| find(runs, s, v);
        let mut push = |target: &str, verdict: Option<(bool, String)>| {
            if !planned(target) {
                return;
            }
            let (met, detail) = verdict.unwrap_or((false, "no result".to_string()));
            out.push(TargetCheck {
                target: target.to_string(),
                variant: v,
                met,
                detail,
            });
        };
        push(
            "quiet: p50 <= 1/5 of knockd's, no misses",
            ours("quiet").zip(deb("quiet")).and_then(|(o, d)| {
                let (op, dp) = (o.legit.p50_ms?, d.legit.p50_ms?);
                Some((
                    opened_all(o) && op * 5.0 <= dp,
                    format!("p50 {op:.2} ms vs knockd {dp:.2} ms, opened {}", opened(o)),
                ))
            }),
        );
        if v == Variant::OursNft {
            push(
                "quiet: p50 <= 1 ms (nftables)",
                ours("quiet").and_then(|o| {
                    let p = o.legit.p50_ms?;
                    Some((
                        opened_all(o) && p <= 1.0,
                        format!("p50 {p:.2} ms, opened {}", opened(o)),
                    ))
                }),
            );
        }
        push(
            "door-flood-20k: every knock opens, p99 <= 2x quiet p99, CPU <= 1/5 of knockd's",
            ours("door-flood-20k")
                .zip(ours("quiet"))
                .zip(deb("door-flood-20k"))
                .map(|((o, q), d)| {
                    let p99_ok = matches!((o.legit.p99_ms, q.legit.p99_ms), (Some(a), Some(b)) if a <= 2.0 * b);
                    let cpu_ok = o.cpu_s * 5.0 <= d.cpu_s;
                    (
                        opened_all(o) && p99_ok && cpu_ok,
                        format!(
                            "opened {}, p99 {} ms vs quiet p99 {} ms, CPU {:.2} s vs knockd {:.2} s",
                            opened(o),
                            f(o.legit.p99_ms),
                            f(q.legit.p99_ms),
                            o.cpu_s,
                            d.cpu_s
                        ),
                    )
                }),
        );
        for scenario in runs
            .iter()
            .filter(|r| r.variant == v)
            .map(|r| r.scenario.as_str())
            .filter(|s| *s == "door-flood-100k" || s.starts_with("scan-flood"))
        {
            push(
                &format!("{scenario}: every knock opens"),
                ours(scenario).map(|o| (opened_all(o), format!("opened {}", opened(o)))),
            );
        }
        for scenario in completing_scenarios(runs, v) {
            for (target, verdict) in
                completing_targets(&scenario, ours(&scenario), deb(&scenario), v)
            {
                push(&target, verdict);
            }
        }
        push(
            "state-growth-1M: peak RSS <= 64 MiB",
            ours("state-growth-1M").map(|o| {
                let kib = o.peak_rss_kib;
                (
                    kib <= 64 * 1024,
                    format!(
                        "peak RSS (VmHWM) {kib} KiB = {:.2} MiB; RSS at the end {:.2} MiB",
                        kib as f64 / 1024.0,
                        o.rss_kib as f64 / 1024.0
                    ),
                )
            }),
        );
    }
    out
}

/// The completing-flood scenarios `v` ran, in order.
fn completing_scenarios(runs: &[RunResult], v: Variant) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in runs.iter().filter(|r| r.variant == v) {
        if r.scenario.starts_with("completing-flood") && !out.contains(&r.scenario) {
            out.push(r.scenario.clone());
        }
    }
    out
}

/// The flood kept its rate: at least 95 % of the target achieved.
pub const FLOOD_RATE_SHARE: f64 = 0.95;

/// The completing flood's targets for `v`: every legit knock got access (a connection);
/// CPU at most 2 s (`ours-native`), 1 s (`ours-nft`) or a fifth of knockd's (`ours-cmd`,
/// the seed's command doors); the flood generator kept its rate. Pure.
pub fn completing_targets(
    scenario: &str,
    ours: Option<&RunResult>,
    debian: Option<&RunResult>,
    v: Variant,
) -> Vec<(String, Option<(bool, String)>)> {
    let access = ours.map(|o| {
        let connected = o.legit.connected.unwrap_or(0);
        (
            o.legit.tried > 0 && connected == o.legit.tried,
            format!(
                "connected {connected}/{} (rule seen {})",
                o.legit.tried,
                opened(o)
            ),
        )
    });
    let cpu = match v {
        Variant::OursNative | Variant::OursNft => {
            let limit = if v == Variant::OursNft { 1.0 } else { 2.0 };
            let verdict = ours.map(|o| {
                (
                    o.cpu_s <= limit,
                    format!("CPU {:.2} s (children included)", o.cpu_s),
                )
            });
            (format!("CPU <= {limit:.0} s"), verdict)
        }
        _ => {
            let verdict = ours.zip(debian).map(|(o, d)| {
                (
                    o.cpu_s * 5.0 <= d.cpu_s,
                    format!("CPU {:.2} s vs knockd {:.2} s", o.cpu_s, d.cpu_s),
                )
            });
            ("CPU <= 1/5 of knockd's".to_string(), verdict)
        }
    };
    let rate = ours.map(|o| match (o.target_pps, o.flood) {
        (Some(t), Some(f)) => (
            f.achieved_pps >= FLOOD_RATE_SHARE * t as f64,
            format!("{:.0} of {t} packets/s", f.achieved_pps),
        ),
        _ => (false, "no flood".to_string()),
    });
    vec![
        (format!("{scenario}: every legit knock connects"), access),
        (format!("{scenario}: {}", cpu.0), cpu.1),
        (
            format!(
                "{scenario}: flood keeps >= {:.0} % of its rate",
                FLOOD_RATE_SHARE * 100.0
            ),
            rate,
        ),
    ]
}

/// The side-by-side table: one block per scenario, one column per daemon.
pub fn table(report: &Report) -> String {
    let mut variants: Vec<Variant> = Vec::new();
    let mut scenarios: Vec<&str> = Vec::new();
    for r in &report.runs {
        if !variants.contains(&r.variant) {
            variants.push(r.variant);
        }
        if !scenarios.contains(&r.scenario.as_str()) {
            scenarios.push(&r.scenario);
        }
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "knock-bench {}{} on {} cores ({}), kernel {}",
        report.date,
        if report.smoke {
            " (SMOKE: not timings)"
        } else {
            ""
        },
        report.machine.cores,
        report.machine.cpu,
        report.machine.kernel
    );
    for (k, v) in &report.versions {
        let _ = writeln!(s, "  {k}: {v}");
    }
    let _ = writeln!(
        s,
        "  loadavg before: {}  after: {}",
        report.machine.loadavg_before, report.machine.loadavg_after
    );
    for fl in &report.floors {
        let _ = writeln!(
            s,
            "  firewall command alone, p50/p99 {} / {} ms: {}",
            f(fl.p50_ms),
            f(fl.p99_ms),
            fl.command
        );
    }
    for scenario in scenarios {
        let runs: Vec<Option<&RunResult>> = variants
            .iter()
            .map(|&v| {
                report
                    .runs
                    .iter()
                    .find(|r| r.scenario == scenario && r.variant == v)
            })
            .collect();
        let _ = writeln!(s);
        let mut header = format!("{scenario:<30}");
        for v in &variants {
            let _ = write!(header, "{:>14}", v.label());
        }
        let _ = writeln!(s, "{header}");
        let mut reasons: Vec<&str> = Vec::new();
        for r in runs.iter().flatten() {
            for k in r.refused.keys() {
                if !reasons.contains(&k.as_str()) {
                    reasons.push(k);
                }
            }
        }
        let mut lines: Vec<(String, DynCell)> = rows()
            .into_iter()
            .map(|(label, cell)| (label.to_string(), Box::new(cell) as Box<_>))
            .collect();
        for reason in reasons {
            let key = reason.to_string();
            lines.push((
                format!("refused opens: {reason}"),
                Box::new(move |r: &RunResult| {
                    r.variant
                        .is_ours()
                        .then(|| r.refused.get(&key).copied().unwrap_or(0).to_string())
                }),
            ));
        }
        for (label, cell) in &lines {
            if runs.iter().flatten().all(|r| cell(r).is_none()) {
                continue;
            }
            let mut line = format!("  {label:<28}");
            for r in &runs {
                let text = match r {
                    Some(r) if r.error.is_some() => "FAILED".to_string(),
                    Some(r) => cell(r).unwrap_or_else(|| "n/a".to_string()),
                    None => "-".to_string(),
                };
                let _ = write!(line, "{text:>14}");
            }
            let _ = writeln!(s, "{line}");
        }
        for r in runs.iter().flatten() {
            if let Some(e) = &r.error {
                let first = e.lines().next().unwrap_or("");
                let _ = writeln!(s, "  {} FAILED: {first}", r.variant.label());
            }
        }
    }
    if !report.targets.is_empty() {
        let _ = writeln!(s, "\ntargets (ours vs Debian's knockd 0.8)");
        for t in &report.targets {
            let _ = writeln!(
                s,
                "  [{}] {:<11} {}\n         {}",
                if t.met { " met " } else { "MISSED" },
                t.variant.label(),
                t.target,
                t.detail
            );
        }
    }
    s
}

type Cell = fn(&RunResult) -> Option<String>;
type DynCell = Box<dyn Fn(&RunResult) -> Option<String>>;

fn rows() -> Vec<(&'static str, Cell)> {
    vec![
        ("flood target pps", |r| r.target_pps.map(|p| p.to_string())),
        ("flood sent pps (achieved)", |r| {
            r.flood.map(|f| format!("{:.0}", f.achieved_pps))
        }),
        ("flood packets sent", |r| {
            r.flood.map(|f| f.sent.to_string())
        }),
        ("legit opened/tried", |r| Some(opened(r))),
        ("legit connected/tried", |r| {
            r.legit.connected.map(|c| format!("{c}/{}", r.legit.tried))
        }),
        ("legit slow revokes", |r| {
            (r.legit.slow_revokes > 0).then(|| r.legit.slow_revokes.to_string())
        }),
        ("legit late", |r| {
            (r.legit.late > 0).then(|| r.legit.late.to_string())
        }),
        ("latency p50 ms", |r| Some(f(r.legit.p50_ms))),
        ("latency p99 ms", |r| Some(f(r.legit.p99_ms))),
        ("latency max ms", |r| Some(f(r.legit.max_ms))),
        ("daemon CPU s", |r| Some(format!("{:.2}", r.cpu_s))),
        ("peak RSS MiB", |r| {
            Some(format!("{:.2}", r.peak_rss_kib as f64 / 1024.0))
        }),
        ("RSS at end MiB", |r| {
            Some(format!("{:.2}", r.rss_kib as f64 / 1024.0))
        }),
        ("packets taken in", |r| Some(r.processed.to_string())),
        ("kernel drops (pcap)", |r| {
            r.kernel_drops.map(|d| d.to_string())
        }),
        ("backlog drops (host)", |r| {
            r.flood.map(|_| r.backlog_drops.to_string())
        }),
        ("stray grants", |r| Some(r.stray_grants.to_string())),
        ("rules in INPUT at end", |r| {
            r.firewall.map(|f| f.rules.to_string())
        }),
        ("nft set elements at end", |r| {
            r.firewall
                .and_then(|f| f.set_elements)
                .map(|n| n.to_string())
        }),
        ("CPU us/packet early", |r| {
            r.growth.as_ref().map(|g| f(g.early_us_per_packet))
        }),
        ("CPU us/packet late", |r| {
            r.growth.as_ref().map(|g| f(g.late_us_per_packet))
        }),
        ("attempts at end", |r| {
            r.growth.as_ref().map(|g| {
                g.attempts_at_end
                    .map_or_else(|| "n/a".to_string(), |a| a.to_string())
            })
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn run(scenario: &str, v: Variant, lat_ms: &[u64], tried: usize, cpu: f64) -> RunResult {
        let legit = Legit {
            tried,
            latencies: lat_ms.iter().map(|&m| Duration::from_millis(m)).collect(),
            ..Legit::default()
        }
        .finish();
        RunResult {
            legit,
            cpu_s: cpu,
            ..RunResult::failed(scenario.to_string(), v, &anyhow::anyhow!("x"))
        }
        .ok()
    }

    impl RunResult {
        fn ok(mut self) -> RunResult {
            self.error = None;
            self
        }
    }

    fn sample(processed: u64, cpu_s: f64) -> GrowthSample {
        GrowthSample {
            t_s: 0.0,
            sent: 0,
            processed,
            cpu_s,
        }
    }

    #[test]
    fn growth_cost_early_and_late() {
        let g = Growth::from_samples(
            vec![
                sample(0, 0.0),
                sample(200, 0.001),
                sample(800, 0.1),
                sample(1000, 0.3),
            ],
            Some(5),
        );
        assert_eq!(g.early_us_per_packet.map(|x| x.round()), Some(5.0));
        assert_eq!(g.late_us_per_packet.map(|x| x.round()), Some(1000.0));
    }

    #[test]
    fn growth_without_packets_has_no_cost() {
        let g = Growth::from_samples(vec![sample(0, 0.0), sample(0, 1.0)], None);
        assert_eq!(g.early_us_per_packet, None);
        assert_eq!(g.late_us_per_packet, None);
    }

    #[test]
    fn quiet_target_needs_a_fifth_of_the_latency_and_no_misses() {
        let runs = vec![
            run("quiet", Variant::Debian, &[10, 10, 10], 3, 0.1),
            run("quiet", Variant::OursCmd, &[2, 2, 2], 3, 0.1),
            run("quiet", Variant::OursNative, &[2, 2], 3, 0.1),
        ];
        let t = check_targets(&runs);
        let quiet = |v| {
            t.iter()
                .find(|t| t.variant == v && t.target.starts_with("quiet"))
                .map(|t| t.met)
        };
        assert_eq!(quiet(Variant::OursCmd), Some(true));
        assert_eq!(quiet(Variant::OursNative), Some(false), "one miss");
    }

    fn completing(v: Variant, tried: usize, connected: usize, cpu: f64, pps: f64) -> RunResult {
        let mut r = run("completing-flood-20k", v, &[3; 1], tried, cpu);
        r.legit.connected = Some(connected);
        r.target_pps = Some(20_000);
        r.flood = Some(FloodStats {
            sent: 200_000,
            send_errors: 0,
            elapsed_s: 10.0,
            achieved_pps: pps,
        });
        r
    }

    fn verdicts(runs: &[RunResult], v: Variant) -> Vec<(String, bool)> {
        check_targets(runs)
            .into_iter()
            .filter(|t| t.variant == v && t.target.starts_with("completing"))
            .map(|t| (t.target, t.met))
            .collect()
    }

    #[test]
    fn completing_flood_targets_per_daemon() {
        let runs = vec![
            completing(Variant::Debian, 5, 2, 11.0, 20_000.0),
            completing(Variant::OursCmd, 20, 20, 2.0, 19_990.0),
            completing(Variant::OursNative, 20, 20, 2.5, 19_000.0),
            completing(Variant::OursNft, 20, 19, 0.5, 20_000.0),
        ];
        assert_eq!(
            verdicts(&runs, Variant::OursCmd),
            [
                (
                    "completing-flood-20k: every legit knock connects".to_string(),
                    true
                ),
                (
                    "completing-flood-20k: CPU <= 1/5 of knockd's".to_string(),
                    true
                ),
                (
                    "completing-flood-20k: flood keeps >= 95 % of its rate".to_string(),
                    true
                ),
            ]
        );
        assert_eq!(
            verdicts(&runs, Variant::OursNative),
            [
                (
                    "completing-flood-20k: every legit knock connects".to_string(),
                    true
                ),
                ("completing-flood-20k: CPU <= 2 s".to_string(), false),
                (
                    "completing-flood-20k: flood keeps >= 95 % of its rate".to_string(),
                    true
                ),
            ]
        );
        assert_eq!(
            verdicts(&runs, Variant::OursNft),
            [
                (
                    "completing-flood-20k: every legit knock connects".to_string(),
                    false
                ),
                ("completing-flood-20k: CPU <= 1 s".to_string(), true),
                (
                    "completing-flood-20k: flood keeps >= 95 % of its rate".to_string(),
                    true
                ),
            ]
        );
        // A slow generator misses; Debian's own run is not judged.
        let slow = vec![
            completing(Variant::Debian, 5, 2, 11.0, 20_000.0),
            completing(Variant::OursCmd, 20, 20, 3.0, 8_700.0),
        ];
        let v = verdicts(&slow, Variant::OursCmd);
        assert_eq!(
            v.iter().map(|(_, m)| *m).collect::<Vec<_>>(),
            [true, false, false]
        );
        assert!(verdicts(&slow, Variant::Debian).is_empty());
    }

    #[test]
    fn completing_flood_needs_a_connection_not_just_a_rule() {
        let mut r = completing(Variant::OursNative, 4, 0, 0.1, 20_000.0);
        r.legit.connected = None;
        let t = completing_targets("completing-flood-20k", Some(&r), None, Variant::OursNative);
        assert_eq!(t[0].1.as_ref().map(|v| v.0), Some(false));
        let t = completing_targets("completing-flood-20k", None, None, Variant::OursCmd);
        assert!(t.iter().all(|(_, v)| v.is_none()), "no run, no verdict");
    }

    #[test]
    fn table_shows_access_firewall_and_refusals_by_reason() {
        let mut ours = completing(Variant::OursCmd, 4, 3, 0.5, 20_000.0);
        ours.firewall = Some(FirewallCount {
            rules: 64,
            set_elements: None,
        });
        ours.refused = [("pool_full".to_string(), 7), ("door_rate".to_string(), 9)]
            .into_iter()
            .collect();
        let mut nft = completing(Variant::OursNft, 4, 4, 0.5, 20_000.0);
        nft.firewall = Some(FirewallCount {
            rules: 0,
            set_elements: Some(1000),
        });
        let mut deb = completing(Variant::Debian, 4, 1, 5.0, 20_000.0);
        deb.firewall = Some(FirewallCount {
            rules: 471,
            set_elements: None,
        });
        let report = Report {
            date: "d".to_string(),
            smoke: false,
            machine: Machine {
                cores: 2,
                cpu: "x".to_string(),
                kernel: "6".to_string(),
                loadavg_before: String::new(),
                loadavg_after: String::new(),
            },
            versions: BTreeMap::new(),
            runs: vec![deb, ours, nft],
            targets: Vec::new(),
            floors: Vec::new(),
            wall_s: 1.0,
        };
        let text = table(&report);
        let row = |label: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(label))
                .map(|l| l.split_whitespace().rev().take(3).collect::<Vec<_>>())
                .unwrap_or_else(|| panic!("no row {label} in {text}"))
        };
        assert_eq!(row("legit connected/tried"), ["4/4", "3/4", "1/4"]);
        assert_eq!(row("rules in INPUT at end"), ["0", "64", "471"]);
        assert_eq!(row("nft set elements at end"), ["1000", "n/a", "n/a"]);
        assert_eq!(row("refused opens: pool_full"), ["0", "7", "n/a"]);
        assert_eq!(row("refused opens: door_rate"), ["0", "9", "n/a"]);
    }

    #[test]
    fn failed_runs_are_not_met_and_unplanned_targets_are_left_out() {
        let runs = vec![
            run("quiet", Variant::Debian, &[10], 1, 0.1),
            RunResult::failed("quiet".to_string(), Variant::OursCmd, &anyhow::anyhow!("x")),
        ];
        let t = check_targets(&runs);
        assert_eq!(t.len(), 1, "{t:?}");
        assert!(!t[0].met);
        assert_eq!(t[0].detail, "no result");
        assert!(check_targets(&[]).is_empty());
    }

    #[test]
    fn table_has_a_column_per_daemon_and_marks_failures() {
        let mut failed = run("quiet", Variant::OursNative, &[], 0, 0.0);
        failed.error = Some("boom\nmore".to_string());
        let report = Report {
            date: "2026-01-01T00:00:00Z".to_string(),
            smoke: true,
            machine: Machine {
                cores: 2,
                cpu: "x".to_string(),
                kernel: "6".to_string(),
                loadavg_before: String::new(),
                loadavg_after: String::new(),
            },
            versions: BTreeMap::new(),
            runs: vec![
                run("quiet", Variant::Debian, &[10], 1, 0.5),
                run("quiet", Variant::OursCmd, &[2], 1, 0.1),
                failed,
            ],
            targets: Vec::new(),
            floors: Vec::new(),
            wall_s: 1.0,
        };
        let text = table(&report);
        assert!(text.contains("debian"), "{text}");
        assert!(text.contains("ours-cmd"), "{text}");
        assert!(text.contains("FAILED"), "{text}");
        assert!(text.contains("ours-native FAILED: boom"), "{text}");
        assert!(text.contains("legit opened/tried"), "{text}");
        assert!(
            !text.contains("flood target pps"),
            "no flood in quiet: {text}"
        );
    }
}
