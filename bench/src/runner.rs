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
use std::path::PathBuf;
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
use knock_e2e::traffic::generator::{FloodSpec, FloodStats, Flooder, Pattern};
use knock_e2e::traffic::knocker::Knocker;
use knock_e2e::Lab;

/// What to run, and how long.
#[derive(Debug, Clone)]
pub struct Plan {
    pub smoke: bool,
    pub variants: Vec<Variant>,
    /// Knocks in the quiet scenario, `quiet_gap` apart.
    pub quiet_trials: usize,
    pub quiet_gap: Duration,
    /// Length of each flood.
    pub flood: Duration,
    pub door_rates: Vec<u64>,
    pub scan_rates: Vec<u64>,
    /// Completing floods: every spoofed source sends the whole sequence.
    pub completing_rates: Vec<u64>,
    /// Completing floods from [`NARROW_SOURCES`] sources over [`NARROW_NETS`] /24s.
    pub narrow_rates: Vec<u64>,
    /// Floods on the seed doors' ports in random order from [`NARROW_SOURCES`] sources.
    pub shuffled_rates: Vec<u64>,
    /// Re-knocks after the client's rule was removed by hand (0: none); iptables daemons only.
    pub reknock_rounds: usize,
    /// ...each round starting this long after the last one started (zero: back to back, the
    /// next removal as soon as the rule is back).
    pub reknock_period: Duration,
    /// State growth: this many first knocks from distinct sources at `growth_rate`.
    pub growth_sources: u64,
    pub growth_rate: u64,
    /// During floods the legitimate client knocks this often, from one interval after the
    /// flood started...
    pub legit_interval: Duration,
    /// ...and a knock whose rule is not there after this long is a miss.
    pub legit_timeout: Duration,
    /// Wait after a flood before the last look at the daemon (pcap stats refresh each second).
    pub settle: Duration,
    /// Keep each run's files (daemon logs, config, status, the client's tries) in a folder
    /// of this one ([`crate::keep`]).
    pub keep_logs: Option<PathBuf>,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            smoke: false,
            variants: Variant::ALL.to_vec(),
            quiet_trials: 40,
            quiet_gap: Duration::from_millis(200),
            flood: Duration::from_secs(10),
            // 200k is past what one sender thread reaches here: it shows where the limit is.
            door_rates: vec![20_000, 50_000, 100_000, 200_000],
            scan_rates: vec![50_000, 100_000],
            completing_rates: vec![20_000],
            narrow_rates: vec![20_000],
            shuffled_rates: vec![20_000],
            reknock_rounds: 20,
            reknock_period: Duration::ZERO,
            growth_sources: 1_000_000,
            growth_rate: 100_000,
            legit_interval: Duration::from_millis(500),
            legit_timeout: Duration::from_secs(2),
            settle: Duration::from_millis(1200),
            keep_logs: None,
        }
    }

    /// A few seconds in all: checks that everything runs and reports, not timings.
    pub fn smoke() -> Plan {
        Plan {
            smoke: true,
            variants: Variant::ALL.to_vec(),
            quiet_trials: 3,
            quiet_gap: Duration::from_millis(20),
            flood: Duration::from_millis(400),
            door_rates: vec![2_000],
            scan_rates: vec![2_000],
            // 400 packets: 133 sources completing the sequence.
            completing_rates: vec![1_000],
            narrow_rates: Vec::new(),
            shuffled_rates: Vec::new(),
            reknock_rounds: 0,
            reknock_period: Duration::ZERO,
            growth_sources: 1_000,
            growth_rate: 2_500,
            legit_interval: Duration::from_millis(100),
            legit_timeout: Duration::from_secs(2),
            settle: Duration::from_millis(50),
            keep_logs: None,
        }
    }

    /// Every scenario of the plan, in order.
    pub fn scenarios(&self) -> Vec<Scenario> {
        let mut v = vec![Scenario::Quiet];
        if self.reknock_rounds > 0 {
            v.push(Scenario::Reknock {
                rounds: self.reknock_rounds,
            });
        }
        v.extend(
            self.door_rates
                .iter()
                .map(|&pps| Scenario::DoorFlood { pps }),
        );
        v.extend(
            self.scan_rates
                .iter()
                .map(|&pps| Scenario::ScanFlood { pps }),
        );
        let completing = [
            (&self.completing_rates, Spread::Wide),
            (&self.narrow_rates, Spread::Narrow),
            (&self.shuffled_rates, Spread::Shuffled),
        ];
        for (rates, spread) in completing {
            v.extend(
                rates
                    .iter()
                    .map(|&pps| Scenario::CompletingFlood { pps, spread }),
            );
        }
        if self.growth_sources > 0 {
            v.push(Scenario::StateGrowth {
                sources: self.growth_sources,
                pps: self.growth_rate,
            });
        }
        v
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Knocks and nothing else.
    Quiet,
    /// One knock that opens, then `rounds` times: the client's rule is removed by hand
    /// (`iptables -D`, not through the daemon), and [`REKNOCK_AFTER`] later the client knocks
    /// again; each try's latency is until its rule is back.
    Reknock { rounds: usize },
    /// Spoofed first knocks (port 7000), each from a new source.
    DoorFlood { pps: u64 },
    /// Spoofed SYNs to random ports from random sources.
    ScanFlood { pps: u64 },
    /// `sources` first knocks from distinct spoofed sources; the door's `seq_timeout` is long
    /// enough that none of them expires during the run.
    StateGrowth { sources: u64, pps: u64 },
    /// Spoofed sources that each send the whole sequence, in order, against the seed's
    /// doors (or, [`Spread::Shuffled`], its ports in random order); the legitimate client
    /// connects after each knock.
    CompletingFlood { pps: u64, spread: Spread },
}

/// Where a completing flood comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    /// A new source for every sequence, sequential (a /24 after the other).
    Wide,
    /// [`NARROW_SOURCES`] sources over [`NARROW_NETS`] /24s, each knocking again and again.
    Narrow,
    /// SYNs to the seed's three ports in random order from [`NARROW_SOURCES`] sources: some
    /// complete a sequence (of either door) by chance.
    Shuffled,
}

/// The narrow and shuffled floods' sources...
pub const NARROW_SOURCES: u32 = 30_000;
/// ...and the narrow flood's /24 networks.
pub const NARROW_NETS: u32 = 127;

impl Scenario {
    pub fn name(&self) -> String {
        match *self {
            Scenario::Quiet => "quiet".to_string(),
            Scenario::Reknock { .. } => "reknock-by-hand".to_string(),
            Scenario::DoorFlood { pps } => format!("door-flood-{}", si(pps)),
            Scenario::ScanFlood { pps } => format!("scan-flood-{}", si(pps)),
            Scenario::StateGrowth { sources, .. } => format!("state-growth-{}", si(sources)),
            Scenario::CompletingFlood { pps, spread } => match spread {
                Spread::Wide => format!("completing-flood-{}", si(pps)),
                Spread::Narrow => format!("completing-flood-{NARROW_NETS}nets-{}", si(pps)),
                Spread::Shuffled => format!("completing-flood-shuffled-{}", si(pps)),
            },
        }
    }

    /// The completing flood runs the seed's doors and checks access with a real connection.
    pub fn doors(&self) -> Doors {
        match self {
            Scenario::CompletingFlood { .. } => Doors::Seed,
            _ => Doors::Bench,
        }
    }

    /// Tries of a run without a flood: the quiet knocks, or the opening knock and the
    /// re-knocks.
    fn quiet_tries(&self, plan: &Plan) -> usize {
        match *self {
            Scenario::Reknock { rounds } => rounds + 1,
            _ => plan.quiet_trials,
        }
    }

    fn seq_timeout(&self) -> u32 {
        match self {
            Scenario::StateGrowth { .. } => 120,
            _ => 5,
        }
    }

    fn flood(&self, plan: &Plan) -> Option<FloodSpec> {
        let door = Pattern::Door { port: SEQUENCE[0] };
        match *self {
            Scenario::Quiet | Scenario::Reknock { .. } => None,
            Scenario::DoorFlood { pps } => Some(FloodSpec {
                pattern: door,
                rate_pps: pps,
                duration: plan.flood,
            }),
            Scenario::ScanFlood { pps } => Some(FloodSpec {
                pattern: Pattern::Scan,
                rate_pps: pps,
                duration: plan.flood,
            }),
            Scenario::CompletingFlood { pps, spread } => Some(FloodSpec {
                pattern: match spread {
                    Spread::Wide => Pattern::Completing { ports: SEQUENCE },
                    Spread::Narrow => Pattern::CompletingOver {
                        ports: SEQUENCE,
                        sources: NARROW_SOURCES,
                        nets: NARROW_NETS,
                    },
                    Spread::Shuffled => Pattern::Shuffled {
                        ports: SEQUENCE,
                        sources: NARROW_SOURCES,
                    },
                },
                rate_pps: pps,
                duration: plan.flood,
            }),
            Scenario::StateGrowth { sources, pps } => Some(FloodSpec {
                pattern: door,
                rate_pps: pps,
                duration: Duration::from_secs_f64(sources as f64 / pps.max(1) as f64),
            }),
        }
    }
}

/// `20000` → `20k`, `1000000` → `1M`.
fn si(n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

/// The lab's client and server addresses ([`knock_e2e::CLI_V4`], [`knock_e2e::SRV_V4`]; a test checks they agree).
pub const CLI: Ipv4Addr = Ipv4Addr::new(10, 99, 77, 2);
const SRV: Ipv4Addr = Ipv4Addr::new(10, 99, 77, 1);

/// How long after removing the rule by hand the client knocks again (the issue's figure).
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

    #[test]
    fn scenario_names() {
        assert_eq!(Scenario::Quiet.name(), "quiet");
        assert_eq!(Scenario::DoorFlood { pps: 20_000 }.name(), "door-flood-20k");
        assert_eq!(Scenario::ScanFlood { pps: 2_500 }.name(), "scan-flood-2500");
        let growth = Scenario::StateGrowth {
            sources: 1_000_000,
            pps: 100_000,
        };
        assert_eq!(growth.name(), "state-growth-1M");
    }

    #[test]
    fn completing_flood_sends_whole_sequences_against_the_seed_doors() {
        let s = Scenario::CompletingFlood {
            pps: 20_000,
            spread: Spread::Wide,
        };
        assert_eq!(s.name(), "completing-flood-20k");
        assert_eq!(s.doors(), Doors::Seed);
        assert_eq!(Scenario::DoorFlood { pps: 1 }.doors(), Doors::Bench);
        let spec = s.flood(&Plan::full()).expect("a flood");
        assert_eq!(spec.total(), 200_000);
        assert_eq!(
            spec.pattern,
            Pattern::Completing {
                ports: [7000, 8000, 9000]
            }
        );
        assert!(Plan::smoke()
            .scenarios()
            .iter()
            .any(|s| matches!(s, Scenario::CompletingFlood { .. })));
    }

    #[test]
    fn narrow_and_shuffled_floods_use_30k_sources_on_the_seed_doors() {
        let narrow = Scenario::CompletingFlood {
            pps: 20_000,
            spread: Spread::Narrow,
        };
        assert_eq!(narrow.name(), "completing-flood-127nets-20k");
        assert_eq!(narrow.doors(), Doors::Seed);
        let spec = narrow.flood(&Plan::full()).expect("a flood");
        assert_eq!(spec.total(), 200_000);
        assert_eq!(
            spec.pattern,
            Pattern::CompletingOver {
                ports: SEQUENCE,
                sources: 30_000,
                nets: 127
            }
        );
        let shuffled = Scenario::CompletingFlood {
            pps: 20_000,
            spread: Spread::Shuffled,
        };
        assert_eq!(shuffled.name(), "completing-flood-shuffled-20k");
        assert_eq!(shuffled.doors(), Doors::Seed);
        assert_eq!(
            shuffled.flood(&Plan::full()).expect("a flood").pattern,
            Pattern::Shuffled {
                ports: SEQUENCE,
                sources: 30_000
            }
        );
    }

    #[test]
    fn reknock_runs_the_opening_knock_and_each_round_without_a_flood() {
        let plan = Plan::full();
        let s = Scenario::Reknock { rounds: 20 };
        assert_eq!(s.name(), "reknock-by-hand");
        assert_eq!(s.quiet_tries(&plan), 21);
        assert_eq!(Scenario::Quiet.quiet_tries(&plan), plan.quiet_trials);
        assert!(s.flood(&plan).is_none());
        assert_eq!(s.doors(), Doors::Bench);
        assert!(plan.scenarios().contains(&s));
        assert!(!Plan::smoke()
            .scenarios()
            .iter()
            .any(|s| matches!(s, Scenario::Reknock { .. })));
    }

    #[test]
    fn growth_floods_each_source_once() {
        let growth = Scenario::StateGrowth {
            sources: 1_000_000,
            pps: 100_000,
        };
        let spec = growth.flood(&Plan::full()).expect("a flood");
        assert_eq!(spec.total(), 1_000_000);
        assert_eq!(spec.pattern, Pattern::Door { port: 7000 });
    }

    #[test]
    fn the_full_plan_has_every_scenario_of_the_issue() {
        let names: Vec<String> = Plan::full()
            .scenarios()
            .iter()
            .map(Scenario::name)
            .collect();
        for want in [
            "quiet",
            "door-flood-20k",
            "door-flood-50k",
            "door-flood-100k",
            "scan-flood-50k",
            "state-growth-1M",
            "completing-flood-20k",
            "completing-flood-127nets-20k",
            "completing-flood-shuffled-20k",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing from {names:?}"
            );
        }
        assert!(Plan::full().quiet_trials >= 30);
    }
}
