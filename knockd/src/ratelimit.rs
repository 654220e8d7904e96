//! Rate limits: a token bucket for per-knock log lines (Stage, reset, timeout: a flood of
//! spoofed knocks must not turn into a flood of log writes; OPEN SESAME, commands and errors
//! are never limited), and [`Gcra`], the budget of re-knock checks, direct firewall applies
//! and the log thread's writes.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct LogBudget {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
    suppressed: u64,
    since: Option<Instant>,
}

/// Lines per second allowed on average, and the burst: far above what real clients knock,
/// and low enough that a flood's lines cost the daemon little (each is a LogFile line, a
/// syslog datagram and a line on stderr).
pub const RATE: f64 = 200.0;
pub const BURST: f64 = 1000.0;
const REPORT_EVERY: Duration = Duration::from_secs(10);

impl Default for LogBudget {
    fn default() -> Self {
        LogBudget::new(RATE, BURST)
    }
}

impl LogBudget {
    pub fn new(rate: f64, burst: f64) -> Self {
        LogBudget {
            rate,
            burst,
            tokens: burst,
            last: None,
            suppressed: 0,
            since: None,
        }
    }

    /// May one more line be written at `now`?
    pub fn allow(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            if self.suppressed == 0 {
                self.since = Some(now);
            }
            self.suppressed += 1;
            false
        }
    }

    /// A summary line when lines were suppressed and the last summary is old enough.
    pub fn report(&mut self, now: Instant) -> Option<String> {
        let since = self.since?;
        if self.suppressed == 0 || now.saturating_duration_since(since) < REPORT_EVERY {
            return None;
        }
        let msg = format!(
            "log rate limit: suppressed {} stage/reset/timeout line(s) in the last {}s (more than {} per second)",
            self.suppressed,
            now.saturating_duration_since(since).as_secs(),
            self.rate
        );
        self.suppressed = 0;
        self.since = None;
        Some(msg)
    }
}

/// A GCRA budget: `burst` at once, then one per `interval`. It holds only the theoretical
/// arrival time: a spend is allowed once `now` is past it minus `burst - 1` intervals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gcra {
    tat: Option<Instant>,
}

impl Gcra {
    /// When the next spend is allowed (None: now). `burst` is at least 1.
    pub fn allowed_at(&self, burst: u32, interval: Duration) -> Option<Instant> {
        self.tat?.checked_sub(interval * burst.saturating_sub(1))
    }

    /// May one be spent at `now`?
    pub fn allows(&self, now: Instant, burst: u32, interval: Duration) -> bool {
        burst > 0 && self.allowed_at(burst, interval).is_none_or(|at| now >= at)
    }

    /// Spend one at `now`.
    pub fn spend(&mut self, now: Instant, interval: Duration) {
        let tat = self.tat.map_or(now, |t| t.max(now));
        self.tat = Some(tat + interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_limits_then_refills_and_reports() {
        let t0 = Instant::now();
        let mut b = LogBudget::new(10.0, 5.0);
        let allowed = (0..20).filter(|_| b.allow(t0)).count();
        assert_eq!(allowed, 5);
        assert_eq!(b.report(t0), None, "too early for a summary");
        assert!(b.allow(t0 + Duration::from_millis(100)));
        let r = b.report(t0 + Duration::from_secs(10)).expect("summary");
        assert!(r.contains("suppressed 15 "), "{r}");
        assert_eq!(b.report(t0 + Duration::from_secs(30)), None);
    }
}
