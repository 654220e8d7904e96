//! Eviction that protects progress: attempts are grouped by source network (an IPv4 /24 and
//! an IPv6 /64 by default). One network holds at most a bounded share of the table; when the
//! table or a network's share is full, a first knock may only displace an attempt still at
//! stage 1, taken from the network holding the most stage-1 attempts (its oldest one; of
//! several holding as many, the one that has held that many longest). When
//! no network holds more than one, the oldest stage-1 attempt of the whole table goes: a
//! flood from many networks (one forged first knock each) then turns the table over oldest
//! first, whatever the addresses (not the highest network first, which let a slow flood of
//! low forged addresses evict every client with a higher one at once).
//! Attempts that advanced are never evicted: they end by completing, a wrong knock, or their
//! own timeout. So that one door's advanced attempts (a forger who knows a public door's
//! first knocks) cannot fill the table and starve the other doors' first knocks, a door may
//! hold at most half of what the other doors' advanced attempts leave of the table
//! ([`door_share`]): k doors flooded that way leave each other door 1/(k+1) of it.

use std::net::IpAddr;

/// A source network: the masked address, IPv4 tagged apart from IPv6.
pub type NetId = u128;

const V4_TAG: u128 = 1 << 127;

/// The network of `ip` with `/v4` and `/v6` prefix lengths.
pub fn network(ip: IpAddr, v4: u8, v6: u8) -> NetId {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let masked = match v4 {
                0 => 0,
                n if n >= 32 => bits,
                n => bits & (u32::MAX << (32 - n)),
            };
            V4_TAG | u128::from(masked)
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let masked = match v6 {
                0 => 0,
                n if n >= 128 => bits,
                n => bits & (u128::MAX << (128 - n)),
            };
            // Clear the tag bit so that no IPv6 network can collide with an IPv4 one
            // (only a /128 of 8000::/1 would need it; it then shares with its neighbour).
            masked & !V4_TAG
        }
    }
}

/// Where a first knock that needs room takes it from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Victim<N = NetId> {
    /// The oldest stage-1 attempt of this network.
    Net(N),
    /// The oldest stage-1 attempt of the table (no network holds more than one).
    Oldest,
}

/// How many advanced attempts one door may hold in a table of `cap` where the other doors
/// hold `others` (at least 1): half of what they leave.
pub fn door_share(cap: usize, others: usize) -> usize {
    (cap.saturating_sub(others) / 2).max(1)
}

/// Where a first knock from network `own` (holding `own_stage1` stage-1 attempts) takes room
/// from in a full table whose heaviest network is `heaviest`, with `most` stage-1 attempts
/// (on a tie, the one that has held that many longest: time decides, not the addresses a
/// forger picks): its own network when that holds as many; the whole table
/// (its oldest stage-1 attempt) when no network holds more than one; else the heaviest.
pub fn victim<N>(own_stage1: u32, most: u32, own: N, heaviest: N) -> Victim<N> {
    if own_stage1 >= most {
        Victim::Net(own)
    } else if most == 1 {
        Victim::Oldest
    } else {
        Victim::Net(heaviest)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn networks_by_prefix() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.200".parse().unwrap();
        let c: IpAddr = "192.0.3.1".parse().unwrap();
        assert_eq!(network(a, 24, 64), network(b, 24, 64));
        assert_ne!(network(a, 24, 64), network(c, 24, 64));
        assert_eq!(network(a, 16, 64), network(c, 16, 64));
        assert_ne!(network(a, 32, 64), network(b, 32, 64));
        let x: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let y: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let z: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(network(x, 24, 64), network(y, 24, 64));
        assert_ne!(network(x, 24, 64), network(z, 24, 64));
        assert_eq!(network(x, 24, 48), network(z, 24, 48));
        // IPv4 and IPv6 never share a network.
        let v6_zero: IpAddr = "::".parse().unwrap();
        let v4_zero: IpAddr = "0.0.0.0".parse().unwrap();
        assert_ne!(network(v6_zero, 0, 0), network(v4_zero, 0, 0));
    }

    #[test]
    fn door_share_is_half_of_what_the_others_leave() {
        assert_eq!(door_share(100, 0), 50);
        assert_eq!(door_share(100, 50), 25);
        assert_eq!(door_share(100, 100), 1);
        assert_eq!(door_share(1, 0), 1);
        // Two doors flooded alike settle at a third each, leaving a third.
        let (mut a, mut b) = (0, 0);
        for _ in 0..200 {
            if a < door_share(99, b) {
                a += 1;
            }
            if b < door_share(99, a) {
                b += 1;
            }
        }
        assert_eq!((a, b), (33, 33));
    }

    #[test]
    fn victim_is_the_heaviest_network_or_own_on_tie() {
        assert_eq!(victim(1, 3, 2, 1), Victim::Net(1));
        assert_eq!(victim(0, 3, 3, 1), Victim::Net(1));
        assert_eq!(victim(1, 1, 2, 1), Victim::Net(2), "tie: own network");
        assert_eq!(
            victim(0, 1, 3, 1),
            Victim::Oldest,
            "one each: the table's oldest, not the highest network"
        );
    }
}
