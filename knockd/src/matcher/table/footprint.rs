//! What the attempt table holds in memory, by capacity (what the allocator handed out, not
//! what is in use), so that a test can bound the bytes one attempt costs.

use std::mem::size_of;

use super::{Attempt, Net, Source, Table};

/// Bytes of a std `HashMap` that can hold `capacity` entries of `entry` bytes: hashbrown
/// keeps a power of two of buckets at most 7/8 full, one control byte each plus a group.
pub fn map_bytes(capacity: usize, entry: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = if capacity < 8 {
        (capacity + 1).next_power_of_two()
    } else {
        (capacity * 8 / 7).next_power_of_two()
    };
    buckets * (entry + 1) + 16
}

impl Table {
    /// Heap bytes the table holds.
    pub fn heap_bytes(&self) -> usize {
        self.slots.capacity() * size_of::<Attempt>()
            + self.free.capacity() * size_of::<u32>()
            + map_bytes(self.sources.capacity(), size_of::<Source>())
            + self.nets.capacity() * size_of::<Net>()
            + self.free_nets.capacity() * size_of::<u32>()
            + map_bytes(self.net_index.capacity(), size_of::<(u128, u32)>())
            + self.buckets.capacity() * size_of::<super::lists::Ends>()
            + self.doors.capacity() * size_of::<super::DoorState>()
    }
}

impl super::super::Matcher {
    /// Heap bytes the matcher's per-attempt and per-source state holds (the attempt table and
    /// the sweep guard; the door tables and the replay memory grow with the config, not with
    /// traffic).
    pub fn heap_bytes(&self) -> usize {
        self.attempts.heap_bytes() + self.guard.heap_bytes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::super::tests::{door, syn};
    use super::super::super::{MatchEvent, Matcher};
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::{Duration, Instant};

    /// Heap bytes per attempt of a table of `cap` after `sources` first knocks, each from a
    /// new source: `next(n)` is source n. Returns the largest figure seen on the way.
    fn per_attempt(cap: usize, sources: u32, next: impl Fn(u32) -> IpAddr) -> usize {
        let mut m = Matcher::new(vec![door(&[7000, 8000, 9000], 120)], cap);
        let now = Instant::now();
        let mut out: Vec<MatchEvent> = Vec::new();
        let mut most = 0;
        for n in 0..sources {
            m.on_packet(
                &syn(next(n), 1024 + (n % 60000) as u16, 7000),
                now,
                &mut out,
            );
            out.clear();
            if n % 1024 == 0 {
                most = most.max(m.heap_bytes());
                assert!(
                    m.attempts.heavy_ok(),
                    "the heaviest-network lists are in order"
                );
            }
        }
        assert_eq!(m.len(), cap);
        most = most.max(m.heap_bytes());
        m.expire(now + Duration::from_secs(121), &mut out);
        assert!(m.is_empty());
        most / cap
    }

    /// Bytes per attempt a full table of the default size may hold (the daemon's peak RSS
    /// after a million spoofed sources is its idle RSS plus about this times `MaxAttempts`).
    const BOUND: usize = 184;

    #[test]
    fn a_flood_of_new_sources_costs_a_bounded_number_of_bytes_per_attempt() {
        assert!(std::mem::size_of::<super::Attempt>() <= 104);
        assert_eq!(std::mem::size_of::<super::Source>(), 8);
        let cap = 50_000;
        // The bench's state-growth run: sources one after the other, /24 after /24.
        let seq = per_attempt(cap, 3 * cap as u32, |n| {
            IpAddr::V4(Ipv4Addr::from(0x0ac0_0001 + n))
        });
        // Sources scattered over a /12 (4,096 networks).
        let scattered = per_attempt(cap, 3 * cap as u32, |n| {
            let mut y = u64::from(n).wrapping_mul(0x2545_f491_4f6c_dd1d);
            y ^= y >> 29;
            IpAddr::V4(Ipv4Addr::from(0x0ac0_0000 | (y as u32 & 0x000f_ffff)))
        });
        assert!(
            seq <= BOUND && scattered <= BOUND,
            "bytes per attempt: {seq} (sequential sources), {scattered} (scattered); bound {BOUND}"
        );
    }
}
