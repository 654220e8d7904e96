//! What a bench run is made of: the [`Plan`] (daemons, scenarios, rates, lengths) and each
//! [`Scenario`] (its name, doors, flood and tries); [`super::runner`] runs them.

use std::path::PathBuf;
use std::time::Duration;

use super::daemon::{Doors, Variant, SEQUENCE};
use knock_e2e::traffic::generator::{FloodSpec, Pattern};

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
    /// (`iptables -D`, not through the daemon), and [`super::runner::REKNOCK_AFTER`] later the client knocks
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
    pub(crate) fn quiet_tries(&self, plan: &Plan) -> usize {
        match *self {
            Scenario::Reknock { rounds } => rounds + 1,
            _ => plan.quiet_trials,
        }
    }

    pub(crate) fn seq_timeout(&self) -> u32 {
        match self {
            Scenario::StateGrowth { .. } => 120,
            _ => 5,
        }
    }

    pub(crate) fn flood(&self, plan: &Plan) -> Option<FloodSpec> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use knock_e2e::traffic::generator::Pattern;

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
