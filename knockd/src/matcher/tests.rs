use super::*;
use crate::config::flag;
use std::net::Ipv4Addr;

pub(super) const DST: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 99, 77, 1));

pub(super) fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 99, 77, last))
}

pub(super) fn seq(ports: &[u16]) -> Vec<Step> {
    ports
        .iter()
        .map(|&port| Step {
            port,
            proto: Proto::Tcp,
        })
        .collect()
}

pub(super) fn door(ports: &[u16], secs: u64) -> DoorRule {
    DoorRule {
        sequence: seq(ports),
        seq_timeout: Duration::from_secs(secs),
        tcp_flags: TcpFlags {
            set: flag::SYN,
            unset: 0,
        },
        target: None,
        enabled: true,
        sweep_guard: true,
        replay_guard: false,
        replay_key: 0,
    }
}

/// A SYN from `src:sport` to `dport`; the sequence number is derived from sport.
pub(super) fn syn(src: IpAddr, sport: u16, dport: u16) -> Packet {
    Packet {
        src,
        dst: DST,
        proto: Proto::Tcp,
        sport,
        dport,
        tcp_flags: flag::SYN,
        tcp_seq: u32::from(sport) * 7919,
    }
}

pub(super) struct Run {
    pub(super) m: Matcher,
    t0: Instant,
    pub(super) events: Vec<MatchEvent>,
    sport: u16,
}

impl Run {
    pub(super) fn new(doors: Vec<DoorRule>) -> Run {
        Run::with_cap(doors, 1000)
    }
    /// A table of `cap` attempts that one network may fill (no per-network share).
    pub(super) fn with_cap(doors: Vec<DoorRule>, cap: usize) -> Run {
        let mut s = Settings::new(cap);
        s.per_network = cap;
        Run::with_settings(doors, s)
    }
    pub(super) fn with_settings(doors: Vec<DoorRule>, settings: Settings) -> Run {
        Run {
            m: Matcher::with_settings(doors, settings),
            t0: Instant::now(),
            events: Vec::new(),
            sport: 40000,
        }
    }
    pub(super) fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }
    /// Knock with a fresh source port (a new connection, like knock(1)).
    pub(super) fn knock(&mut self, ms: u64, src: IpAddr, dport: u16) {
        self.sport += 1;
        let p = syn(src, self.sport, dport);
        self.packet(ms, p);
    }
    pub(super) fn packet(&mut self, ms: u64, p: Packet) {
        let now = self.at(ms);
        self.m.on_packet(&p, now, &mut self.events);
    }
    pub(super) fn opens(&self) -> Vec<(IpAddr, DoorId)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                MatchEvent::Open { src, door } => Some((*src, *door)),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn complete_sequence_opens_with_stages() {
    let mut r = Run::new(vec![door(&[7000, 8000, 9000], 5)]);
    for (i, p) in [7000, 8000, 9000].into_iter().enumerate() {
        r.knock(i as u64 * 10, ip(2), p);
    }
    let a = ip(2);
    assert_eq!(
        r.events,
        vec![
            MatchEvent::Stage {
                src: a,
                door: 0,
                stage: 1,
                of: 3
            },
            MatchEvent::Stage {
                src: a,
                door: 0,
                stage: 2,
                of: 3
            },
            MatchEvent::Stage {
                src: a,
                door: 0,
                stage: 3,
                of: 3
            },
            MatchEvent::Open { src: a, door: 0 },
        ]
    );
    assert!(r.m.is_empty());
}

#[test]
fn wrong_order_stays_closed() {
    let mut r = Run::new(vec![door(&[7000, 8000, 9000], 5)]);
    for p in [7000, 9000, 8000] {
        r.knock(0, ip(2), p);
    }
    assert!(r.opens().is_empty());
}

/// Semantics 1: progress per (source, door); other doors' knocks do not disturb it.
#[test]
fn doors_are_independent() {
    let mut r = Run::new(vec![
        door(&[7000, 8000, 9000], 5),
        door(&[9000, 8000, 7000], 5),
        door(&[1111, 2222, 3333], 5),
    ]);
    let a = ip(2);
    r.knock(0, a, 7000); // door 0 stage 1
    r.knock(1, a, 1111); // door 2 stage 1; must not touch door 0
    r.knock(2, a, 8000); // door 0 stage 2
    r.knock(3, a, 2222);
    r.knock(4, a, 9000); // door 0 opens; door 1 gets a first knock
    r.knock(5, a, 3333); // door 2 opens
    assert_eq!(r.opens(), vec![(a, 0), (a, 2)]);
}

#[test]
fn sources_are_independent() {
    // knockd 0.8 bug: removing the oldest attempt dropped all others (lab E5).
    let mut r = Run::new(vec![door(&[7000, 8000, 9000], 5)]);
    let (a, b) = (ip(2), ip(3));
    r.knock(0, a, 7000);
    r.knock(1, b, 7000);
    r.knock(2, a, 8000);
    r.knock(3, a, 9000);
    r.knock(4, b, 8000);
    r.knock(5, b, 9000);
    assert_eq!(r.opens(), vec![(a, 0), (b, 0)]);
}

/// Semantics 2: an exact retransmission (and later segments of the same connection) is ignored.
#[test]
fn retransmission_is_ignored() {
    let mut r = Run::new(vec![door(&[7000, 8000, 9000], 5)]);
    let a = ip(2);
    let first = syn(a, 5555, 7000);
    r.packet(0, first);
    r.packet(1000, first); // SYN retransmit after 1 s (nc -z against DROP)
    let second = syn(a, 5556, 8000);
    r.packet(1100, second);
    r.packet(2100, second);
    r.packet(2200, first); // a late retransmit of an earlier knock
    r.knock(2300, a, 9000);
    assert_eq!(r.opens(), vec![(a, 0)]);
}

#[test]
fn handshake_segments_of_a_knock_are_ignored_without_tcpflags() {
    let mut d = door(&[7000, 8000, 9000], 5);
    d.tcp_flags = TcpFlags::default();
    let mut r = Run::new(vec![d]);
    let a = ip(2);
    let s = syn(a, 6000, 7000);
    r.packet(0, s);
    let mut ack = s;
    ack.tcp_flags = flag::ACK;
    ack.tcp_seq += 1;
    r.packet(1, ack);
    let mut fin = ack;
    fin.tcp_flags = flag::FIN | flag::ACK;
    r.packet(2, fin);
    r.knock(3, a, 8000);
    r.knock(4, a, 9000);
    assert_eq!(r.opens(), vec![(a, 0)]);
}

#[test]
fn a_new_connection_to_the_same_port_is_a_wrong_knock() {
    let mut r = Run::new(vec![door(&[7000, 8000, 9000], 5)]);
    let a = ip(2);
    r.knock(0, a, 7000);
    r.knock(1, a, 7000); // new source port: a real second knock on 7000, restarts
    r.knock(2, a, 9000); // wrong: expected 8000
    assert!(r.opens().is_empty());
    assert!(r
        .events
        .iter()
        .any(|e| matches!(e, MatchEvent::Reset { stage: 1, .. })));
}

/// Semantics 3: the packet that reset an attempt is tried as a first knock.
#[test]
fn immediate_retry_after_a_typo_works() {
    let mut r = Run::new(vec![door(&[7000, 8000, 9000], 5)]);
    let a = ip(2);
    for p in [7000, 8000, 7000, 8000, 9000] {
        r.knock(0, a, p);
    }
    assert_eq!(r.opens(), vec![(a, 0)]);
    assert!(r.events.contains(&MatchEvent::Reset {
        src: a,
        door: 0,
        stage: 2,
        got: Step {
            port: 7000,
            proto: Proto::Tcp
        },
    }));
}

#[test]
fn tcp_flag_mismatch_is_ignored_not_a_reset() {
    let mut r = Run::new(vec![door(&[7000, 8000, 9000], 5)]);
    let a = ip(2);
    r.knock(0, a, 7000);
    let mut ack = syn(a, 1, 9000);
    ack.tcp_flags = flag::ACK;
    r.packet(1, ack);
    r.knock(2, a, 8000);
    r.knock(3, a, 9000);
    assert_eq!(r.opens(), vec![(a, 0)]);
}

/// Semantics 4: timeout from the first knock, sub-second, expired at the deadline.
#[test]
fn timeout_counts_from_first_knock_with_subsecond_precision() {
    let mut d = door(&[7000, 8000, 9000], 1);
    d.seq_timeout = Duration::from_millis(1500);
    let mut r = Run::new(vec![d]);
    let a = ip(2);
    r.knock(0, a, 7000);
    r.knock(700, a, 8000);
    r.knock(1499, a, 9000);
    assert_eq!(r.opens(), vec![(a, 0)]);

    r.events.clear();
    r.knock(2000, a, 7000);
    r.knock(2800, a, 8000);
    r.knock(3500, a, 9000); // 1500 ms after the first knock: too late
    assert!(r.opens().is_empty());
    assert!(r.events.contains(&MatchEvent::Timeout {
        src: a,
        door: 0,
        stage: 2
    }));
}

#[test]
fn expire_drops_attempts_at_their_deadline_without_traffic() {
    let mut r = Run::new(vec![door(&[7000, 8000, 9000], 5)]);
    let a = ip(2);
    r.knock(0, a, 7000);
    r.knock(10, a, 8000);
    assert_eq!(r.m.next_deadline(), Some(r.at(5000)));
    let mut out = Vec::new();
    r.m.expire(r.at(4999), &mut out);
    assert!(out.is_empty());
    r.m.expire(r.at(5000), &mut out);
    assert_eq!(
        out,
        vec![MatchEvent::Timeout {
            src: a,
            door: 0,
            stage: 2
        }]
    );
    assert!(r.m.is_empty());
    assert_eq!(r.m.next_deadline(), None);
}

#[test]
fn next_deadline_is_the_oldest_live_attempts_after_older_ones_end() {
    let mut r = Run::new(vec![door(&[7000, 8000, 9000], 5)]);
    let (a, b, c) = (ip(2), ip(3), ip(4));
    r.knock(0, a, 7000);
    r.knock(100, b, 7000);
    r.knock(200, c, 7000);
    // a completes, b starts over in place: the oldest live attempt is c's.
    r.knock(300, a, 8000);
    r.knock(310, a, 9000);
    r.knock(400, b, 7000);
    assert_eq!(r.m.next_deadline(), Some(r.at(5200)));
    let mut out = Vec::new();
    r.m.expire(r.at(5200), &mut out);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(r.m.next_deadline(), Some(r.at(5400)));
    // A wrong knock ends b (no first knock): nothing is left to wait for.
    r.knock(500, b, 9000);
    assert_eq!(r.m.next_deadline(), None);
    assert!(r.m.is_empty());
}

#[test]
fn packet_after_timeout_starts_a_new_attempt() {
    let mut r = Run::new(vec![door(&[7000, 8000, 9000], 5)]);
    let a = ip(2);
    r.knock(0, a, 7000);
    r.knock(6500, a, 7000); // like lab E4, but the timeout is reported and the knock counts
    r.knock(6600, a, 8000);
    r.knock(6700, a, 9000);
    assert_eq!(r.opens(), vec![(a, 0)]);
}

/// Semantics 5: bounded state; among stage-1 attempts of one network, the oldest goes first.
#[test]
fn attempts_are_capped_and_the_oldest_is_evicted() {
    let mut r = Run::with_cap(vec![door(&[7000, 8000, 9000], 5)], 3);
    for last in 10..15 {
        r.knock(u64::from(last), ip(last), 7000);
    }
    assert_eq!(r.m.len(), 3);
    let evicted: Vec<IpAddr> = r
        .events
        .iter()
        .filter_map(|e| match e {
            MatchEvent::Evicted { src, .. } => Some(*src),
            _ => None,
        })
        .collect();
    assert_eq!(evicted, vec![ip(10), ip(11)]);
    // The survivors still complete.
    r.knock(20, ip(14), 8000);
    r.knock(21, ip(14), 9000);
    assert_eq!(r.opens(), vec![(ip(14), 0)]);
}

#[test]
fn eviction_picks_the_oldest_across_doors() {
    let mut r = Run::with_cap(
        vec![door(&[7000, 8000, 9000], 5), door(&[1000, 2000, 3000], 60)],
        2,
    );
    r.knock(0, ip(2), 1000); // door 1, oldest
    r.knock(1, ip(3), 7000); // door 0
    r.knock(2, ip(4), 7000); // evicts ip(2) on door 1
    assert!(r.events.contains(&MatchEvent::Evicted {
        src: ip(2),
        door: 1,
        stage: 1
    }));
}

#[test]
fn churn_reuses_the_table() {
    let mut r = Run::with_cap(vec![door(&[7000, 8000, 9000], 30)], 100);
    let a = ip(2);
    for i in 0..10_000 {
        r.knock(i, a, 7000); // each one resets and restarts
    }
    assert_eq!(r.m.len(), 1);
    assert_eq!(r.m.attempts.of_door(0).len(), 1);
    assert!(
        r.m.attempts.slot_count() <= 2,
        "slots of ended attempts are reused"
    );
}

#[test]
fn destination_must_be_local_or_the_target() {
    let mut d = door(&[7000], 5);
    d.target = Some(ip(50));
    let mut r = Run::new(vec![door(&[7000, 8000], 5), d]);
    r.m.set_local_addrs([DST]);
    let mut p = syn(ip(2), 1, 7000);
    p.dst = ip(99); // neither local nor the target
    r.packet(0, p);
    assert!(r.events.is_empty());
    p.dst = ip(50);
    p.sport = 2;
    r.packet(1, p);
    assert_eq!(r.opens(), vec![(ip(2), 1)]);
}

#[test]
fn udp_and_tcp_are_different_knocks() {
    let mut d = door(&[7000, 8000], 5);
    d.sequence[1].proto = Proto::Udp;
    let mut r = Run::new(vec![d]);
    let a = ip(2);
    r.knock(0, a, 7000);
    r.knock(1, a, 8000); // tcp: wrong
    assert!(r.opens().is_empty());
    r.knock(2, a, 7000);
    let mut u = syn(a, 9, 8000);
    u.proto = Proto::Udp;
    u.tcp_flags = 0;
    r.packet(3, u);
    assert_eq!(r.opens(), vec![(a, 0)]);
}

#[test]
fn single_knock_door_opens_without_tracking() {
    let mut r = Run::new(vec![door(&[4444], 5)]);
    r.knock(0, ip(2), 4444);
    assert_eq!(r.opens(), vec![(ip(2), 0)]);
    assert!(r.m.is_empty());
}

#[test]
fn reconfigure_keeps_attempts_of_unchanged_doors() {
    let mut r = Run::new(vec![
        door(&[7000, 8000, 9000], 5),
        door(&[1000, 2000, 3000], 5),
    ]);
    let a = ip(2);
    r.knock(0, a, 7000);
    r.knock(1, a, 1000);
    // New config: door 0 unchanged (moves to index 1), door 1 changed (dropped).
    r.m.reconfigure(
        vec![door(&[1000, 2000, 4000], 5), door(&[7000, 8000, 9000], 5)],
        &[Some(1), None],
    );
    assert_eq!(r.m.len(), 1);
    r.knock(2, a, 8000);
    r.knock(3, a, 9000);
    assert_eq!(r.opens(), vec![(a, 1)]);
}

#[test]
fn set_sequence_moves_a_door_and_disabling_stops_it() {
    let mut r = Run::new(vec![door(&[7000, 8000], 5)]);
    let a = ip(2);
    r.knock(0, a, 7000);
    r.m.set_sequence(0, Some(seq(&[7001, 7002])));
    assert!(r.m.is_empty());
    r.knock(1, a, 7000);
    r.knock(2, a, 8000);
    assert!(r.opens().is_empty());
    r.knock(3, a, 7001);
    r.knock(4, a, 7002);
    assert_eq!(r.opens(), vec![(a, 0)]);
    r.m.set_sequence(0, None);
    r.knock(5, a, 7001);
    r.knock(6, a, 7002);
    assert_eq!(r.opens().len(), 1);
}
