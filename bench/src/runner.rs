//! Runs the scenarios: for each, each daemon in turn, each in a fresh lab.
//!
//! One run: start the daemon, subscribe to the server's firewall events, knock once to warm
//! up (ARP, iptables, page cache), then start the flood (if any) and knock as the legitimate
//! client every `legit_interval` (the first one interval into the flood): the latency of a knock is from the moment its last SYN left
//! to the moment the kernel committed the ACCEPT rule. After each knock the grant is revoked
//! and its deletion awaited, so every knock opens anew.
//!
//! In the completing flood the legitimate client also connects to the opened port (a
//! listener in the server namespace, which drops new connections to it unless a grant lets
//! them in): a knock got access when that connection was made.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};

use super::access::{connect, Listener};
use super::daemon::{open_refusals, Doors, RunningDaemon, Variant, PROTECTED_PORT, SEQUENCE};
use super::fwcount;
use super::keep::keep;
use super::legit::unix_ms;
use super::monitor::{RuleBook, RuleMonitor};
use super::procfs;
use super::report::{Growth, GrowthSample, Legit, RunResult, Try};
use super::stats::ms;
use knock_e2e::traffic::generator::{FloodStats, Flooder};
use knock_e2e::traffic::knocker::Knocker;
use knock_e2e::Lab;

pub use super::plan::{Plan, Scenario, Spread, NARROW_NETS, NARROW_SOURCES};

/// The lab's client and server addresses ([`knock_e2e::CLI_V4`], [`knock_e2e::SRV_V4`]; a test checks they agree).
pub const CLI: Ipv4Addr = Ipv4Addr::new(10, 99, 77, 2);
const SRV: Ipv4Addr = Ipv4Addr::new(10, 99, 77, 1);

/// How long after removing the rule by hand the client knocks again (the figure).
pub const REKNOCK_AFTER: Duration = Duration::from_millis(200);

/// How long the warm-up knock may take (first iptables run in a new namespace).
const WARMUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a revoked grant may take to disappear.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the legitimate client's connection may take once its rule is in.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// ...and when no rule was seen (the monitor can lose events under a rule bomb).
const BLIND_CONNECT_TIMEOUT: Duration = Duration::from_millis(300);

/// Runs one scenario for one daemon in a fresh lab. Errors describe what broke.
pub fn run_one(plan: &Plan, scenario: Scenario, variant: Variant) -> Result<RunResult> {
    let lab = Lab::new();
    let doors = scenario.doors();
    let mut daemon = RunningDaemon::start(&lab, variant, scenario.seq_timeout(), doors)?;
    let access = (doors == Doors::Seed)
        .then(|| Listener::start(lab.srv_ns(), SRV, PROTECTED_PORT))
        .transpose()?
        .map(|l| (l, lab.cli_ns()));
    let monitor = RuleMonitor::start(lab.srv_ns())?;
    let mut book = RuleBook::new(CLI);
    let mut knocker = Knocker::new(lab.cli_ns(), CLI, SRV)?;

    let sent = knocker.knock(&SEQUENCE)?;
    if book.wait_added(&monitor, sent + WARMUP_TIMEOUT).is_none() {
        bail!(
            "{}: the warm-up knock opened nothing within {WARMUP_TIMEOUT:?}; log:\n{}",
            variant.label(),
            daemon.log_text()
        );
    }
    if let Some((_, ns)) = &access {
        if !connect(ns, SRV, PROTECTED_PORT, CONNECT_TIMEOUT)? {
            bail!(
                "{}: the warm-up knock opened a rule but no connection to port {PROTECTED_PORT} got through",
                variant.label()
            );
        }
    }
    close(&daemon, &mut book, &monitor)?;
    if access.is_some() && connect(lab.cli_ns(), SRV, PROTECTED_PORT, BLIND_CONNECT_TIMEOUT)? {
        bail!(
            "{}: port {PROTECTED_PORT} accepts connections without a grant: the guard does not work",
            variant.label()
        );
    }

    let pid = daemon.pid();
    let before = procfs::sample(pid)?;
    let backlog_before = procfs::backlog_drops();
    let processed_before = daemon.processed();
    let drops_before = daemon.status().map(|(c, _)| c.kernel_drops);
    let flood = scenario.flood(plan);
    let flooder = flood.map(|_| Flooder::new(lab.cli_ns(), SRV)).transpose()?;
    let progress = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let start = Instant::now();

    let mut legit = Legit {
        connected: access.as_ref().map(|_| 0),
        ..Legit::default()
    };
    let cli_ns = access.as_ref().map(|(_, ns)| *ns);
    let mut samples = Vec::new();
    let flood_stats: Option<FloodStats> = std::thread::scope(|s| -> Result<_> {
        let flood_thread = match (&flooder, &flood) {
            (Some(f), Some(spec)) => Some(s.spawn(|| f.run(spec, &progress, &stop))),
            _ => None,
        };
        let by_hand = matches!(scenario, Scenario::Reknock { .. });
        let interval = if flood.is_some() {
            plan.legit_interval
        } else if by_hand {
            plan.reknock_period
        } else {
            plan.quiet_gap
        };
        let knocking = (|| -> Result<()> {
            if flood.is_some() {
                // The client's first try is one interval into the flood: at
                // its first instant knockd cannot tell the flood's new networks (each has
                // asked once) from the client (see `knockd::fairstart`, "what it cannot tell
                // apart"), and that instant is a lottery, not a measure of the flood.
                std::thread::sleep(plan.legit_interval);
            }
            loop {
                let done = match &flood_thread {
                    Some(t) => t.is_finished(),
                    None => legit.tried >= scenario.quiet_tries(plan),
                };
                if done {
                    return Ok(());
                }
                let slot = Instant::now();
                samples.push(GrowthSample {
                    t_s: start.elapsed().as_secs_f64(),
                    sent: progress.load(Ordering::Relaxed),
                    processed: daemon.processed().saturating_sub(processed_before),
                    cpu_s: procfs::sample(pid)?.cpu_s - before.cpu_s,
                });
                let mut k = Knock {
                    knocker: &mut knocker,
                    daemon: &daemon,
                    book: &mut book,
                    monitor: &monitor,
                    connect_from: cli_ns,
                    start,
                    by_hand: by_hand.then_some(&lab),
                };
                k.once(plan, &mut legit)?;
                if let Some(rest) = (slot + interval).checked_duration_since(Instant::now()) {
                    std::thread::sleep(rest);
                }
            }
        })();
        stop.store(knocking.is_err(), Ordering::Relaxed);
        let stats = flood_thread
            .map(|t| t.join().map_err(|_| anyhow!("the flood thread panicked")))
            .transpose()?;
        knocking.map(|()| stats)
    })?;

    // Let the daemon finish what is queued and pcap refresh its counters, then look.
    std::thread::sleep(plan.settle);
    book.drain(&monitor);
    if !daemon.is_running() {
        bail!(
            "{} exited during the run; log:\n{}",
            variant.label(),
            daemon.log_text()
        );
    }
    let after = procfs::sample(pid)?;
    let processed = daemon.processed().saturating_sub(processed_before);
    let status = daemon.status();
    let status_json = daemon.status_json();
    let refused = status_json
        .as_deref()
        .map(open_refusals)
        .unwrap_or_default();
    let firewall = access.is_some().then(|| fwcount::count(&lab));
    samples.push(GrowthSample {
        t_s: start.elapsed().as_secs_f64(),
        sent: progress.load(Ordering::Relaxed),
        processed,
        cpu_s: after.cpu_s - before.cpu_s,
    });
    let growth = matches!(scenario, Scenario::StateGrowth { .. })
        .then(|| Growth::from_samples(samples, status.map(|(_, a)| a)));
    let name = format!("{}-{}", scenario.name(), variant.label());
    let kept = plan
        .keep_logs
        .as_deref()
        .map(|dir| keep(dir, &name, lab.tempdir(), &legit, status_json.as_deref()))
        .transpose()?;
    Ok(RunResult {
        kept,
        scenario: scenario.name(),
        variant,
        target_pps: flood.map(|f| f.rate_pps),
        flood: flood_stats,
        legit: legit.finish(),
        cpu_s: after.cpu_s - before.cpu_s,
        peak_rss_kib: after.hwm_kib,
        rss_kib: after.rss_kib,
        processed,
        kernel_drops: status
            .zip(drops_before)
            .map(|((c, _), b)| c.kernel_drops.saturating_sub(b)),
        backlog_drops: procfs::backlog_drops().saturating_sub(backlog_before),
        stray_grants: book.strays,
        firewall,
        refused,
        threads: procfs::threads(pid),
        memory: procfs::memory(pid),
        growth,
        error: None,
    })
}

/// What one legitimate knock needs.
struct Knock<'a, 'lab> {
    knocker: &'a mut Knocker,
    daemon: &'a RunningDaemon<'lab>,
    book: &'a mut RuleBook,
    monitor: &'a RuleMonitor,
    /// Connect to the protected port after the knock, from this namespace.
    connect_from: Option<&'a str>,
    /// When the flood started.
    start: Instant,
    /// Remove the rule by hand in this lab instead of revoking the grant.
    by_hand: Option<&'a Lab>,
}

impl Knock<'_, '_> {
    /// One legitimate knock: send, wait for the rule, connect (if asked), revoke it.
    fn once(&mut self, plan: &Plan, legit: &mut Legit) -> Result<()> {
        self.book.drain(self.monitor);
        if self.book.watched_open() {
            // The previous knock's rule arrived after its timeout.
            legit.late += 1;
            if let Some(last) = legit.tries.last_mut() {
                last.late = true;
            }
            self.close(legit)?;
        }
        let losses = self.monitor.losses();
        let sent = self.knocker.knock(&SEQUENCE)?;
        let mut this = Try {
            sent_unix_ms: unix_ms(SystemTime::now()),
            t_s: sent.saturating_duration_since(self.start).as_secs_f64(),
            ..Try::default()
        };
        legit.tried += 1;
        let added = self
            .book
            .wait_added(self.monitor, sent + plan.legit_timeout);
        if let Some(at) = added {
            let latency = at.saturating_duration_since(sent);
            legit.latencies.push(latency);
            this.rule_ms = Some(ms(latency));
        }
        if let (Some(ns), Some(n)) = (self.connect_from, legit.connected.as_mut()) {
            // No rule seen: try anyway, the event may have been lost.
            let timeout = if added.is_some() {
                CONNECT_TIMEOUT
            } else {
                BLIND_CONNECT_TIMEOUT
            };
            let connected = connect(ns, SRV, PROTECTED_PORT, timeout)?;
            *n += usize::from(connected);
            this.connected = Some(connected);
        }
        this.monitor_losses = self.monitor.losses() - losses;
        let opened = this.opened();
        legit.tries.push(this);
        if let (true, Some(lab)) = (opened, self.by_hand) {
            remove_by_hand(lab, self.book, self.monitor)?;
            std::thread::sleep(REKNOCK_AFTER);
        } else if opened {
            let revoking = Instant::now();
            if self.close(legit)? {
                if let Some(t) = legit.tries.last_mut() {
                    t.revoke_ms = Some(ms(revoking.elapsed()));
                }
            }
        }
        Ok(())
    }

    /// Revokes the grant; under a completing flood a slow revoke is counted (false), not
    /// fatal.
    fn close(&mut self, legit: &mut Legit) -> Result<bool> {
        match close(self.daemon, self.book, self.monitor) {
            Err(_) if self.connect_from.is_some() => {
                legit.slow_revokes += 1;
                Ok(false)
            }
            r => r.map(|()| true),
        }
    }
}

/// Deletes the client's rules from INPUT with iptables itself, as an admin would (the daemon
/// is not told), and waits until they are gone.
fn remove_by_hand(lab: &Lab, book: &mut RuleBook, monitor: &RuleMonitor) -> Result<()> {
    let listing = lab.srv_exec(["iptables", "-w", "-S", "INPUT"]);
    let text = String::from_utf8_lossy(&listing.stdout).into_owned();
    for line in text
        .lines()
        .filter(|l| l.contains(&format!("-s {CLI}/32 ")))
    {
        let mut args = vec!["iptables".to_string(), "-w".to_string()];
        args.extend(
            line.replacen("-A", "-D", 1)
                .replace('"', "")
                .split(' ')
                .map(str::to_string),
        );
        let out = lab.srv_exec(&args);
        if !out.status.success() {
            bail!(
                "{} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    if !book.wait_closed(monitor, Instant::now() + REVOKE_TIMEOUT) {
        bail!("the client's rule was still there {REVOKE_TIMEOUT:?} after deleting it by hand");
    }
    Ok(())
}

/// Revokes the client's grant and waits until its rule is gone.
fn close(daemon: &RunningDaemon<'_>, book: &mut RuleBook, monitor: &RuleMonitor) -> Result<()> {
    daemon.revoke(CLI)?;
    if !book.wait_closed(monitor, Instant::now() + REVOKE_TIMEOUT) {
        bail!(
            "{}: the client's rule was still there {REVOKE_TIMEOUT:?} after revoking it",
            daemon.variant.label()
        );
    }
    Ok(())
}

/// Runs the whole plan; a failed run is recorded with its error, and the others go on.
pub fn run_plan(plan: &Plan, mut progress: impl FnMut(&RunResult)) -> Vec<RunResult> {
    let mut results = Vec::new();
    for scenario in plan.scenarios() {
        for &variant in &plan.variants {
            if matches!(scenario, Scenario::Reknock { .. }) && variant == Variant::OursNft {
                // Its grants are set elements, not rules an admin deletes with iptables.
                continue;
            }
            let result = run_one(plan, scenario, variant)
                .with_context(|| format!("{} / {}", scenario.name(), variant.label()))
                .unwrap_or_else(|e| RunResult::failed(scenario.name(), variant, &e));
            progress(&result);
            results.push(result);
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use knock_e2e::{CLI_V4, SRV_V4};

    #[test]
    fn addresses_are_the_labs() {
        assert_eq!(CLI.to_string(), CLI_V4);
        assert_eq!(SRV.to_string(), SRV_V4);
    }
}
