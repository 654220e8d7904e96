//! The legitimate client's knocks during a run: the summary the table shows, and each try
//! on its own (when it was sent, what came of it), so that a miss can be matched with the
//! daemon's log (`--keep-logs`).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::stats::{ms, percentile};

/// The legitimate client's knocks during a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Legit {
    pub tried: usize,
    pub opened: usize,
    /// Rules that appeared only after the knock had been counted as a miss.
    pub late: usize,
    /// Knocks after which a TCP connection to the opened port got through (completing
    /// flood only; `None` where the bench does not connect).
    pub connected: Option<usize>,
    /// Revokes whose rule was still there after 5 s (completing flood: counted, not fatal).
    pub slow_revokes: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub latencies_ms: Vec<f64>,
    #[serde(skip)]
    pub latencies: Vec<Duration>,
    /// Every try, in order.
    pub tries: Vec<Try>,
}

/// One knock of the legitimate client.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Try {
    /// Wall clock (ms since the Unix epoch) when its last SYN left: to find it in the log.
    pub sent_unix_ms: i64,
    /// Seconds since the flood started.
    pub t_s: f64,
    /// From the last SYN to the rule's commit, if the rule came within the timeout.
    pub rule_ms: Option<f64>,
    /// Whether the connection to the opened port got through (completing floods).
    pub connected: Option<bool>,
    /// The rule came after the timeout (seen before the next try).
    pub late: bool,
    /// From `revoke` to the rule's deletion; `None` when nothing was revoked or it took
    /// longer than the bench waits.
    pub revoke_ms: Option<f64>,
    /// Times the firewall event monitor lost events (ENOBUFS) while this try waited.
    pub monitor_losses: u64,
}

impl Try {
    /// Opened (the rule was seen, or the connection got through).
    pub fn opened(&self) -> bool {
        self.rule_ms.is_some() || self.connected == Some(true)
    }
}

impl Legit {
    /// Fills in the summary figures from the raw latencies.
    pub fn finish(mut self) -> Legit {
        self.opened = self.latencies.len();
        self.p50_ms = percentile(&self.latencies, 50.0).map(ms);
        self.p99_ms = percentile(&self.latencies, 99.0).map(ms);
        self.max_ms = percentile(&self.latencies, 100.0).map(ms);
        self.latencies_ms = self.latencies.iter().map(|&d| ms(d)).collect();
        self
    }

    /// The tries whose rule was not seen in time or whose connection failed.
    pub fn misses(&self) -> impl Iterator<Item = (usize, &Try)> {
        self.tries
            .iter()
            .enumerate()
            .filter(|(_, t)| t.rule_ms.is_none() || t.connected == Some(false))
    }

    /// The mean time to the rule of the tries after the first (the re-knocks of
    /// `reknock-by-hand`), over those whose rule came; and how many came.
    pub fn mean_after_first_ms(&self) -> Option<(f64, usize)> {
        let v: Vec<f64> = self
            .tries
            .iter()
            .skip(1)
            .filter_map(|t| t.rule_ms)
            .collect();
        (!v.is_empty()).then(|| (v.iter().sum::<f64>() / v.len() as f64, v.len()))
    }

    /// One line per try, tab-separated, with a header: for reading next to the log.
    pub fn tries_tsv(&self) -> String {
        let mut out = String::from(
            "try\tsent_utc\tt_s\trule_ms\tconnected\tlate\trevoke_ms\tmonitor_losses\n",
        );
        let opt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
        for (i, t) in self.tries.iter().enumerate() {
            let _ = writeln!(
                out,
                "{}\t{}\t{:.3}\t{}\t{}\t{}\t{}\t{}",
                i + 1,
                utc_ms(t.sent_unix_ms),
                t.t_s,
                opt(t.rule_ms),
                t.connected.map_or("-", |c| if c { "yes" } else { "NO" }),
                if t.late { "late" } else { "-" },
                opt(t.revoke_ms),
                t.monitor_losses
            );
        }
        out
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `HH:MM:SS.mmm` UTC of a Unix time in milliseconds (the log's own clock is to the minute,
/// knockd's stderr to the microsecond).
pub fn utc_ms(unix_ms: i64) -> String {
    let ms = unix_ms.rem_euclid(86_400_000);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_time_of_day_to_the_millisecond() {
        // 2026-12-07T10:54:20.123Z
        assert_eq!(utc_ms(1_796_640_860_123), "10:54:20.123");
        assert_eq!(utc_ms(0), "00:00:00.000");
    }

    #[test]
    fn misses_are_tries_without_a_rule_or_without_a_connection() {
        let ok = Try {
            rule_ms: Some(3.0),
            connected: Some(true),
            ..Try::default()
        };
        let no_rule = Try {
            connected: Some(true),
            ..Try::default()
        };
        let refused = Try {
            rule_ms: Some(3.0),
            connected: Some(false),
            ..Try::default()
        };
        let legit = Legit {
            tries: vec![ok.clone(), no_rule, refused, ok],
            ..Legit::default()
        };
        let misses: Vec<usize> = legit.misses().map(|(i, _)| i).collect();
        assert_eq!(misses, [1, 2]);
        let tsv = legit.tries_tsv();
        assert_eq!(tsv.lines().count(), 5, "{tsv}");
        assert!(
            tsv.lines().nth(2).expect("a line").contains("\t-\tyes\t"),
            "{tsv}"
        );
        assert!(
            tsv.lines().nth(3).expect("a line").contains("\tNO\t"),
            "{tsv}"
        );
    }
}
