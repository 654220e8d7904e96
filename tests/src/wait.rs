//! Polling: end-to-end tests wait for an observable effect, never for a fixed time.

use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How often [`wait_until`] checks its condition.
pub const POLL: Duration = Duration::from_millis(20);

/// Checks `cond` every [`POLL`] until it is true (returns `true`) or `timeout` has passed
/// (returns `false`). The condition is always checked at least once, and once more at the
/// deadline.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        sleep(POLL.min(deadline - now));
    }
}

/// The machine's load average, `load 1.23 4.56 7.89` (1, 5 and 15 minutes), for the
/// message of a timing check: a bound missed under a load of 30 on two cores says so.
pub fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let three: Vec<&str> = text.split_whitespace().take(3).collect();
    format!("load {}", three.join(" "))
}

/// The file's text (invalid UTF-8 replaced), or "" if it does not exist (yet).
pub fn read_text(path: impl AsRef<Path>) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// Waits until the file at `path` contains `needle`, e.g. a daemon's `LogFile`.
pub fn wait_for_text(path: impl AsRef<Path>, needle: &str, timeout: Duration) -> bool {
    let path = path.as_ref();
    wait_until(timeout, || read_text(path).contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn true_condition_returns_at_once() {
        let start = Instant::now();
        assert!(wait_until(Duration::from_secs(10), || true));
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn false_condition_times_out_after_a_last_check() {
        let mut calls = 0;
        assert!(!wait_until(Duration::from_millis(50), || {
            calls += 1;
            false
        }));
        assert!(calls >= 2, "checked {calls} times");
    }

    #[test]
    fn condition_becoming_true_is_seen() {
        let mut calls = 0;
        assert!(wait_until(Duration::from_secs(5), || {
            calls += 1;
            calls == 3
        }));
    }

    #[test]
    fn missing_file_reads_as_empty() {
        assert_eq!(read_text("/nonexistent/knock-e2e/file"), "");
    }
}
