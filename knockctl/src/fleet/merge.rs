//! Many hosts' live events as one stream in time order. Events are held briefly after they
//! arrive ([`HOLD`]): an event of a host whose link is a little slower still comes out
//! before later events of the others. Pure: arrival instants are inputs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use knock_ipc::Event;
use tokio::time::Instant;

/// How long an event waits for earlier events of other hosts.
pub const HOLD: Duration = Duration::from_millis(200);

/// Most events held; past it the earliest go out at once (a flood is not buffered).
pub const HELD_CAP: usize = 10_000;

/// Events waiting to go out, ordered by their time, with when they arrived.
#[derive(Default)]
pub struct Merger {
    /// (event time, arrival number) → (host index, event, arrival).
    held: BTreeMap<(i64, u64), (usize, Event, Instant)>,
    /// (arrival, arrival number) of every held event, oldest first.
    arrivals: BTreeSet<(Instant, u64)>,
    next: u64,
}

impl Merger {
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// An event of host `host` arrived at `now`.
    pub fn push(&mut self, host: usize, event: Event, now: Instant) {
        let n = self.next;
        self.next += 1;
        self.arrivals.insert((now, n));
        self.held.insert((event.at_unix_ms, n), (host, event, now));
    }

    /// When the next event is due (None: nothing held). The earliest event waits [`HOLD`]
    /// after its arrival; no event waits more than twice that (a host whose clock runs
    /// behind cannot hold the others back).
    pub fn next_due(&self, _now: Instant) -> Option<Instant> {
        let (_, (_, _, arrived)) = self.held.first_key_value()?;
        let oldest = self.arrivals.first().map_or(*arrived, |(at, _)| *at);
        Some((*arrived + HOLD).min(oldest + 2 * HOLD))
    }

    /// The events due at `now` in time order (all of them with `all`).
    pub fn due(&mut self, now: Instant, all: bool) -> Vec<(usize, Event)> {
        let mut out = Vec::new();
        loop {
            let flood = self.held.len() > HELD_CAP;
            let Some(entry) = self.held.first_entry() else {
                break;
            };
            let (_, _, arrived) = entry.get();
            let oldest = self.arrivals.first().map_or(*arrived, |(at, _)| *at);
            let ripe = *arrived + HOLD <= now || oldest + 2 * HOLD <= now;
            if !(all || ripe || flood) {
                break;
            }
            let ((_, n), (host, event, arrived)) = entry.remove_entry();
            self.arrivals.remove(&(arrived, n));
            out.push((host, event));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use knock_ipc::EventKind;

    fn event(at: i64) -> Event {
        Event {
            at_unix_ms: at,
            kind: EventKind::Lagged { missed: 0 },
        }
    }

    fn times(out: &[(usize, Event)]) -> Vec<(usize, i64)> {
        out.iter().map(|(h, e)| (*h, e.at_unix_ms)).collect()
    }

    #[test]
    fn events_come_out_in_time_order_after_the_hold() {
        let t0 = Instant::now();
        let mut m = Merger::default();
        m.push(0, event(1_000), t0);
        m.push(0, event(1_050), t0);
        // Host 1 is 30 ms behind: its earlier event arrives after host 0's.
        m.push(1, event(1_010), t0 + Duration::from_millis(30));
        assert_eq!(m.next_due(t0), Some(t0 + HOLD));
        assert!(m.due(t0 + Duration::from_millis(100), false).is_empty());
        assert_eq!(times(&m.due(t0 + HOLD, false)), [(0, 1_000)]);
        let rest = m.due(t0 + HOLD + Duration::from_millis(30), false);
        assert_eq!(times(&rest), [(1, 1_010), (0, 1_050)]);
        assert!(m.is_empty());
        assert_eq!(m.next_due(t0), None);
    }

    #[test]
    fn a_host_with_an_early_clock_cannot_hold_the_others_back() {
        let t0 = Instant::now();
        let mut m = Merger::default();
        m.push(0, event(5_000), t0);
        // Host 1's clock is far behind and it keeps sending: each of its events is the
        // earliest, but host 0's event still goes out within twice the hold.
        for k in 0..10 {
            m.push(
                1,
                event(1_000 + k),
                t0 + Duration::from_millis(50 * k as u64),
            );
        }
        let out = m.due(t0 + 2 * HOLD, false);
        assert!(times(&out).contains(&(0, 5_000)), "{:?}", times(&out));
    }

    #[test]
    fn all_flushes_and_a_flood_is_not_buffered() {
        let t0 = Instant::now();
        let mut m = Merger::default();
        for k in 0..(HELD_CAP as i64 + 5) {
            m.push(0, event(k), t0);
        }
        assert_eq!(m.due(t0, false).len(), 5);
        assert_eq!(m.due(t0, true).len(), HELD_CAP);
    }
}
