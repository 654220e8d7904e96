//! Table tests for the matcher under attack: sweeps, NAT neighbours, floods of first knocks.
//! Time is an input throughout.

use super::tests::{door, ip, syn, Run, DST};
use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};

fn udp(src: IpAddr, sport: u16, dport: u16) -> Packet {
    Packet {
        src,
        dst: DST,
        proto: Proto::Udp,
        sport,
        dport,
        tcp_flags: 0,
        tcp_seq: 0,
    }
}

/// Every order of `ports`.
fn permutations(ports: &[u16]) -> Vec<Vec<u16>> {
    if ports.len() <= 1 {
        return vec![ports.to_vec()];
    }
    let mut out = Vec::new();
    for i in 0..ports.len() {
        let mut rest = ports.to_vec();
        let first = rest.remove(i);
        for mut p in permutations(&rest) {
            p.insert(0, first);
            out.push(p);
        }
    }
    out
}

/// A deterministic shuffle (xorshift), so failures reproduce.
fn shuffled(mut v: Vec<u16>, seed: u64) -> Vec<u16> {
    let mut x = seed | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

#[derive(Debug, Clone, Copy)]
enum Order {
    Up,
    Down,
    Shuffled(u64),
}

/// Sends `passes` sweeps of `lo..=hi` from one source, one SYN every `gap`, each from a new
/// source port; returns whether any door opened.
fn sweep_opens(
    doors: Vec<DoorRule>,
    lo: u16,
    hi: u16,
    order: Order,
    passes: usize,
    gap: Duration,
) -> bool {
    let mut m = Matcher::new(doors, 1000);
    let src = ip(66);
    let t0 = Instant::now();
    let mut t = t0;
    let mut out = Vec::new();
    let mut sport: u16 = 1024;
    for pass in 0..passes {
        let ports: Vec<u16> = match order {
            Order::Up => (lo..=hi).collect(),
            Order::Down => (lo..=hi).rev().collect(),
            Order::Shuffled(seed) => shuffled((lo..=hi).collect(), seed + pass as u64),
        };
        for port in ports {
            sport = sport.wrapping_add(1).max(1024);
            m.expire(t, &mut out);
            m.on_packet(&syn(src, sport, port), t, &mut out);
            t += gap;
        }
    }
    out.iter().any(|e| matches!(e, MatchEvent::Open { .. }))
}

/// Sweeps in every order and up to three passes never open a door of 3 to 5 knocks, in any
/// order of its ports. Ports are 100 apart (the lint asks for spread-out ports).
#[test]
fn sweeps_never_open_doors_of_three_to_five_knocks_in_any_order() {
    let base = [7000u16, 7100, 7200, 7300, 7400];
    let mut runs = 0;
    for k in 3..=5 {
        for perm in permutations(&base[..k]) {
            let lo = *perm.iter().min().unwrap_or(&0);
            let hi = *perm.iter().max().unwrap_or(&0);
            for (lo, hi) in [(lo, hi), (lo - 10, hi + 10)] {
                for order in [Order::Up, Order::Down, Order::Shuffled(u64::from(perm[0]))] {
                    for passes in [2, 3] {
                        let d = door(&perm, 25);
                        assert!(
                            !sweep_opens(vec![d], lo, hi, order, passes, Duration::from_micros(50)),
                            "door {perm:?} opened by {passes} {order:?} sweeps of {lo}..={hi}"
                        );
                        runs += 1;
                    }
                }
            }
        }
    }
    assert_eq!(runs, (6 + 24 + 120) * 2 * 3 * 2);
}

/// The attacks: two ascending sweeps over 6990..9010 or every port, at any speed,
/// against the seed door and a shuffled one.
#[test]
fn full_range_sweeps_at_any_speed_do_not_open_the_seed_doors() {
    for seq in [[7000, 8000, 9000], [9000, 7000, 8000]] {
        for (lo, hi) in [(6990, 9010), (1, 65535)] {
            for gap in [
                Duration::from_micros(10),
                Duration::from_millis(1),
                Duration::from_millis(100),
            ] {
                for order in [Order::Up, Order::Down] {
                    assert!(
                        !sweep_opens(vec![door(&seq, 25)], lo, hi, order, 2, gap),
                        "{seq:?} {lo}..={hi} {order:?} {gap:?}"
                    );
                }
            }
        }
    }
}

/// The same sweep opens a door whose guard is off: knockd 0.8's behaviour, on request.
#[test]
fn guard_off_door_falls_to_two_sweeps_like_knockd() {
    let mut d = door(&[9000, 7000, 8000], 25);
    d.sweep_guard = false;
    assert!(sweep_opens(
        vec![d],
        6990,
        9010,
        Order::Up,
        2,
        Duration::from_micros(50)
    ));
}

/// A client behind a NAT whose neighbours open ordinary connections (web, DNS) to the
/// server in the middle of its knock still gets in: under the threshold of distinct ports.
#[test]
fn nat_neighbour_traffic_within_the_threshold_does_not_stop_a_knock() {
    let mut r = Run::new(vec![door(&[7000, 8000, 9000], 25)]);
    let nat = ip(2);
    r.knock(0, nat, 7000);
    for i in 0..20u16 {
        // Browsers open many connections to 80 and 443; a resolver sends UDP to 53; someone
        // uses ssh: 4 distinct ports, the default threshold is 5.
        r.packet(10 + u64::from(i), syn(nat, 50000 + i, 80));
        r.packet(10 + u64::from(i), syn(nat, 51000 + i, 443));
        r.packet(10 + u64::from(i), udp(nat, 52000 + i, 53));
        r.packet(10 + u64::from(i), syn(nat, 53000 + i, 22));
    }
    r.knock(100, nat, 8000);
    r.knock(200, nat, 9000);
    assert_eq!(r.opens(), vec![(nat, 0)]);
    assert!(!r
        .events
        .iter()
        .any(|e| matches!(e, MatchEvent::Scanner { .. })));
}

/// Established traffic never counts: only SYN without ACK, and UDP.
#[test]
fn established_traffic_is_not_a_stray() {
    let mut r = Run::new(vec![door(&[7000, 8000, 9000], 25)]);
    let a = ip(2);
    r.knock(0, a, 7000);
    for port in 1..100u16 {
        let mut p = syn(a, 40000, port);
        p.tcp_flags = flag::ACK | flag::PSH;
        r.packet(1, p);
        p.tcp_flags = flag::SYN | flag::ACK;
        r.packet(1, p);
    }
    r.knock(2, a, 8000);
    r.knock(3, a, 9000);
    assert_eq!(r.opens(), vec![(a, 0)]);
}

/// At the threshold the source is a scanner: its attempts end, it is penalised, and the
/// penalty ends on time. A door with the guard off is not affected.
#[test]
fn scanner_attempts_end_and_the_penalty_refuses_first_knocks_until_it_ends() {
    let mut open = door(&[1000, 2000, 3000], 25);
    open.sweep_guard = false;
    let mut s = Settings::new(1000);
    s.sweep_threshold = 3;
    s.sweep_penalty = Duration::from_secs(60);
    let mut r = Run::with_settings(vec![door(&[7000, 8000, 9000], 25), open], s);
    let a = ip(2);
    r.knock(0, a, 7000);
    r.knock(1, a, 1000);
    r.knock(2, a, 81);
    r.knock(3, a, 82);
    assert!(!r
        .events
        .iter()
        .any(|e| matches!(e, MatchEvent::Scanner { .. })));
    r.knock(4, a, 83);
    assert!(r
        .events
        .contains(&MatchEvent::Scanner { src: a, strays: 3 }));
    assert!(r.events.contains(&MatchEvent::Swept {
        src: a,
        door: 0,
        stage: 1
    }));
    // The unguarded door's attempt lives on and completes.
    r.knock(5, a, 2000);
    r.knock(6, a, 3000);
    assert_eq!(r.opens(), vec![(a, 1)]);
    // Penalised: a correct knock on the guarded door is refused...
    r.events.clear();
    r.knock(59_000, a, 7000);
    assert_eq!(
        r.events,
        vec![MatchEvent::Refused {
            src: a,
            door: 0,
            reason: Refusal::Scanner
        }]
    );
    // ...others are not affected...
    r.knock(59_001, ip(3), 7000);
    assert_eq!(r.m.len(), 1);
    // ...and after the penalty it works again.
    let mut out = Vec::new();
    r.m.expire(r.at(64_004), &mut out);
    r.knock(64_004, a, 7000);
    r.knock(64_005, a, 8000);
    r.knock(64_006, a, 9000);
    assert!(r.opens().contains(&(a, 0)));
}

/// Strays count only while the source has a guarded attempt: a client's ordinary traffic
/// before it knocks does not count.
#[test]
fn strays_before_the_first_knock_do_not_count() {
    let mut r = Run::new(vec![door(&[7000, 8000, 9000], 25)]);
    let a = ip(2);
    for port in 1..1000 {
        r.knock(0, a, port);
    }
    r.knock(1, a, 7000);
    r.knock(2, a, 8000);
    r.knock(3, a, 9000);
    assert_eq!(r.opens(), vec![(a, 0)]);
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// First knocks only displace stage-1 attempts; advanced attempts survive any flood; with
/// nothing at stage 1, first knocks are refused.
#[test]
fn eviction_tiers_protect_advanced_attempts() {
    let mut s = Settings::new(4);
    s.per_network = 4;
    let mut r = Run::with_settings(vec![door(&[7000, 8000, 9000], 25)], s);
    let client = ip(2);
    r.knock(0, client, 7000);
    r.knock(1, client, 8000); // stage 2: protected
    for i in 0..100u8 {
        r.knock(2 + u64::from(i), v4(10, 1, 0, i), 7000);
    }
    assert_eq!(r.m.len(), 4);
    assert!(!r
        .events
        .iter()
        .any(|e| matches!(e, MatchEvent::Evicted { src, .. } if *src == client)));
    r.knock(200, client, 9000);
    assert_eq!(r.opens(), vec![(client, 0)]);
    // A table of advanced attempts refuses first knocks. One door holds at most half of what
    // the others leave (2 of 4 here, then 1 and 1), so it takes three doors to fill it.
    let doors = vec![
        door(&[7000, 8000, 9000], 25),
        door(&[7001, 8001, 9001], 25),
        door(&[7002, 8002, 9002], 25),
    ];
    let mut r = Run::with_settings(doors, s);
    for (i, base) in [7000, 7000, 7000, 7001, 7002].into_iter().enumerate() {
        let src = v4(10, 2, 0, i as u8);
        r.knock(0, src, base);
        r.knock(1, src, base + 1000);
    }
    assert!(r.events.contains(&MatchEvent::Refused {
        src: v4(10, 2, 0, 2),
        door: 0,
        reason: Refusal::DoorShare
    }));
    assert_eq!(r.m.len(), 4);
    r.events.clear();
    r.knock(2, client, 7000);
    assert_eq!(
        r.events,
        vec![MatchEvent::Refused {
            src: client,
            door: 0,
            reason: Refusal::TableFull
        }]
    );
}

/// One network holds at most its share; at its share its own oldest stage-1 attempt goes.
#[test]
fn per_network_share_is_enforced_for_ipv4_and_ipv6() {
    let mut s = Settings::new(100);
    s.per_network = 10;
    let mut r = Run::with_settings(vec![door(&[7000, 8000, 9000], 25)], s);
    for i in 0..50u8 {
        r.knock(u64::from(i), v4(10, 3, 0, i), 7000);
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 7, 0, 0, 0, u16::from(i)));
        let mut p = syn(v6, 1000 + u16::from(i), 7000);
        p.dst = IpAddr::V6(Ipv6Addr::LOCALHOST);
        r.packet(u64::from(i), p);
    }
    assert_eq!(r.m.len(), 20, "10 per network");
    // The /24 next door has its own share.
    r.knock(100, v4(10, 3, 1, 1), 7000);
    assert_eq!(r.m.len(), 21);
    // The last ten of each network survive: the oldest went first.
    let srcs: Vec<IpAddr> = r.m.attempts().iter().map(|a| a.src).collect();
    assert!(srcs.contains(&v4(10, 3, 0, 49)) && !srcs.contains(&v4(10, 3, 0, 39)));
    // A network at its share with nothing at stage 1 refuses.
    let mut s = Settings::new(100);
    s.per_network = 2;
    let mut r = Run::with_settings(vec![door(&[7000, 8000, 9000], 25)], s);
    for i in 0..2u8 {
        r.knock(0, v4(10, 4, 0, i), 7000);
        r.knock(1, v4(10, 4, 0, i), 8000);
    }
    r.events.clear();
    r.knock(2, v4(10, 4, 0, 9), 7000);
    assert!(matches!(
        r.events[..],
        [MatchEvent::Refused {
            reason: Refusal::NetworkFull,
            ..
        }]
    ));
}

/// The property: the table full of first knocks from a flood of ten times its size
/// per second (from several networks); a client knocking with one second between knocks
/// opens, over IPv4 and over IPv6.
#[test]
fn client_opens_through_a_flood_of_ten_times_the_table_per_second() {
    for v6 in [false, true] {
        let cap = 2000;
        let mut m = Matcher::new(vec![door(&[7000, 8000, 9000], 25)], cap);
        let t0 = Instant::now();
        let mut out = Vec::new();
        let client = if v6 {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 1))
        } else {
            v4(198, 51, 100, 7)
        };
        let mut n: u32 = 0;
        // 20,000 first knocks per second for 4 s, from 16 networks (each at its share).
        let per_ms = 20;
        let mut opened = false;
        for ms in 0..4000u64 {
            let now = t0 + Duration::from_millis(ms);
            m.expire(now, &mut out);
            for _ in 0..per_ms {
                n = n.wrapping_add(1);
                let net = (n % 16) as u16;
                let src = if v6 {
                    IpAddr::V6(Ipv6Addr::new(
                        0x2001,
                        0xdb8,
                        0xf,
                        net,
                        0,
                        0,
                        (n >> 16) as u16,
                        n as u16,
                    ))
                } else {
                    v4(203, 0, net as u8, (n >> 4) as u8)
                };
                let mut p = syn(src, (n % 60000) as u16 + 1024, 7000);
                if v6 {
                    p.dst = IpAddr::V6(Ipv6Addr::LOCALHOST);
                }
                m.on_packet(&p, now, &mut out);
            }
            if (200..3000).contains(&ms) {
                assert_eq!(m.len(), cap, "the table stays full");
            }
            if ms % 1000 == 500 && ms < 3000 {
                let port = [7000, 8000, 9000][(ms / 1000) as usize];
                let mut p = syn(client, 40000 + ms as u16, port);
                if v6 {
                    p.dst = IpAddr::V6(Ipv6Addr::LOCALHOST);
                }
                m.on_packet(&p, now, &mut out);
            }
            opened |= out
                .iter()
                .any(|e| matches!(e, MatchEvent::Open { src, .. } if *src == client));
            out.clear();
        }
        assert!(opened, "v6 = {v6}");
    }
}

/// Regression (found by the model test): queue compaction ran before the new attempt was in
/// the table and dropped its entry, so the oldest stage-1 attempt could no longer be evicted
/// and a younger one went instead.
#[test]
fn the_oldest_stage_1_attempt_is_evicted_even_after_queue_compaction() {
    let mut s = Settings::new(3);
    s.per_network = 3;
    let mut r = Run::with_settings(vec![door(&[7000, 8000, 9000], 25)], s);
    let (x, a, b, c) = (ip(5), ip(2), ip(3), ip(4));
    // X advances (keeps the network's accounting alive, never evictable).
    r.knock(0, x, 7000);
    r.knock(1, x, 8000);
    // Restarts of A: each leaves a dead queue entry; the 18th insert finds 19 entries for one
    // live stage-1 attempt (with X's) and compacts.
    for i in 0..18 {
        r.knock(2 + i, a, 7000);
    }
    r.knock(50, b, 7000);
    r.events.clear();
    r.knock(60, c, 7000);
    assert!(
        r.events.contains(&MatchEvent::Evicted {
            src: a,
            door: 0,
            stage: 1
        }),
        "{:?}",
        r.events
    );
}

/// A table full of first knocks from as many networks (one each), then a slow flood of
/// first knocks from more networks with lower addresses than the client's: the client's
/// first knock is not the first to go (it was, when ties went to the highest network); the
/// table turns over oldest first, so a client that knocks again before the flood has
/// replaced the whole table gets in.
#[test]
fn a_slow_flood_from_many_low_networks_turns_the_table_over_oldest_first() {
    let cap = 100;
    let mut s = Settings::new(cap);
    s.per_network = 10;
    let mut r = Run::with_settings(vec![door(&[7000, 8000, 9000], 25)], s);
    for i in 0..99u8 {
        r.knock(u64::from(i), v4(10, 3, i, 1), 7000);
    }
    let client = v4(203, 0, 113, 7);
    r.knock(100, client, 7000);
    assert_eq!(r.m.len(), cap);
    // 50 forged first knocks from new, lower networks: they replace the 50 oldest.
    for i in 0..50u8 {
        r.knock(200 + u64::from(i), v4(10, 4, i, 1), 7000);
    }
    assert!(
        !r.events
            .iter()
            .any(|e| matches!(e, MatchEvent::Evicted { src, .. } if *src == client)),
        "the client's first knock went before older ones"
    );
    let evicted: Vec<IpAddr> = r
        .events
        .iter()
        .filter_map(|e| match e {
            MatchEvent::Evicted { src, .. } => Some(*src),
            _ => None,
        })
        .collect();
    let oldest: Vec<IpAddr> = (0..50u8).map(|i| v4(10, 3, i, 1)).collect();
    assert_eq!(evicted, oldest, "oldest first");
    r.knock(300, client, 8000);
    r.knock(301, client, 9000);
    assert_eq!(r.opens(), vec![(client, 0)]);
}

/// Issue 21 item 4: a forger who knows a public door's first two knocks fills the table with
/// stage-2 attempts from many networks (ten sources in each of 400 /24s, still knocking while
/// the client does); a client still opens another static door and a rotating door. That
/// door holds at most half of the table in advanced attempts: the rest are refused.
#[test]
fn one_doors_advanced_attempts_do_not_starve_another_doors_first_knocks() {
    use crate::config::totp::window;
    let spec = knock_ipc::totp::Spec {
        secret: b"0123456789abcdef0123456789abcdef".to_vec(),
        step_secs: 30,
        knocks: 4,
        lo: 10000,
        hi: 59999,
        exclude: vec![],
    };
    let mut totp = door(&[], 25);
    totp.replay_guard = true;
    totp.replay_key = 1;
    totp.enabled = true;
    let doors = vec![
        door(&[7000, 8000, 9000], 25),
        door(&[1111, 2222, 3333, 4444], 25),
        totp,
    ];
    let mut r = Run::with_settings(doors, Settings::new(1000));
    r.m.set_variants(2, window(&spec, 1000));
    let forged = |i: u32| {
        v4(
            10,
            (i / 2560) as u8,
            ((i / 10) % 256) as u8,
            (i % 10) as u8 + 1,
        )
    };
    // The forger fills the table: first and second knock from 4,000 sources...
    let mut sport = 1024u16;
    let mut forge = |r: &mut Run, from: u32, to: u32, ms: u64| {
        for i in from..to {
            for port in [7000, 8000] {
                sport = sport.wrapping_add(1).max(1024);
                r.packet(ms, syn(forged(i), sport, port));
            }
        }
    };
    forge(&mut r, 0, 4000, 0);
    // And first knocks from 1,000 more.
    for i in 4000..5000 {
        r.knock(1, forged(i), 7000);
    }
    assert_eq!(r.m.len(), 1000, "the table is full");
    let advanced = r.m.attempts().iter().filter(|a| a.stage == 2).count();
    assert_eq!(advanced, 500, "door 0 holds its share of advanced attempts");
    assert!(r.events.contains(&MatchEvent::Refused {
        src: forged(3999),
        door: 0,
        reason: Refusal::DoorShare
    }));
    // The client knocks both doors while the forger keeps going.
    let client = v4(192, 0, 2, 7);
    let ports = spec.ports(1000);
    for (k, port) in [1111, 2222, 3333, 4444].into_iter().enumerate() {
        let ms = 10 + 10 * k as u64;
        r.knock(ms, client, port);
        r.knock(ms, client, ports[k]);
        forge(&mut r, 5000 + 500 * k as u32, 5500 + 500 * k as u32, ms + 1);
    }
    assert_eq!(
        r.opens(),
        vec![(client, 1), (client, 2)],
        "{:?}",
        &r.events[r.events.len() - 20..]
    );
}
