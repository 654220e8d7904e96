//! Table tests for the sweep guard's rules 6 and 7: sweeps made of any TCP flags (or UDP)
//! open no guarded door, and a burst forged from a client's address does not keep the client
//! out of a rotating (TOTP) door. Time is an input throughout.

use super::tests::{door, ip, syn, Run, DST};
use super::*;
use crate::config::totp::window;
use knock_ipc::totp::Spec;

const SYN: u8 = flag::SYN;
const ACK: u8 = flag::ACK;
const FIN: u8 = flag::FIN;
const RST: u8 = flag::RST;
const PSH: u8 = flag::PSH;
const URG: u8 = flag::URG;

/// What a sweep's packets carry: TCP with these flags, or UDP.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Tcp(u8),
    Udp,
    /// Every packet with the next flags of [`FLAGS`] in turn.
    Mixed,
}

/// SYN, SYN|ACK, ACK, FIN, RST, NULL, XMAS and SYN with FIN or RST.
const FLAGS: [u8; 9] = [
    SYN,
    SYN | ACK,
    ACK,
    FIN,
    RST,
    0,
    FIN | PSH | URG,
    SYN | FIN,
    SYN | RST,
];

fn kinds() -> Vec<Kind> {
    let mut v: Vec<Kind> = FLAGS.iter().map(|&f| Kind::Tcp(f)).collect();
    v.push(Kind::Udp);
    v.push(Kind::Mixed);
    v
}

fn packet(kind: Kind, i: usize, src: IpAddr, sport: u16, dport: u16) -> Packet {
    let mut p = syn(src, sport, dport);
    match kind {
        Kind::Tcp(f) => p.tcp_flags = f,
        Kind::Mixed => p.tcp_flags = FLAGS[i % FLAGS.len()],
        Kind::Udp => {
            p.proto = Proto::Udp;
            p.tcp_flags = 0;
        }
    }
    p
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

/// Sends `passes` sweeps over `ports` (in that order, then reversed, then shuffled, in turn)
/// from one source, each packet from a new source port, 50 µs apart; returns the opens.
fn sweep(r: &mut Run, kind: Kind, ports: &[u16], passes: usize) -> Vec<(IpAddr, DoorId)> {
    let src = ip(66);
    let mut sport: u16 = 1024;
    let mut t = r.at(0);
    let mut i = 0;
    for pass in 0..passes {
        let order: Vec<u16> = match pass % 3 {
            0 => ports.to_vec(),
            1 => ports.iter().rev().copied().collect(),
            _ => shuffled(ports.to_vec(), pass as u64),
        };
        for port in order {
            sport = sport.wrapping_add(1).max(1024);
            r.m.expire(t, &mut r.events);
            r.m.on_packet(&packet(kind, i, src, sport, port), t, &mut r.events);
            t += Duration::from_micros(50);
            i += 1;
        }
    }
    r.opens()
}

fn any_flags(mut d: DoorRule) -> DoorRule {
    d.tcp_flags = TcpFlags::default();
    d
}

fn udp_door(ports: &[u16]) -> DoorRule {
    let mut d = door(ports, 25);
    for s in &mut d.sequence {
        s.proto = Proto::Udp;
    }
    d
}

/// The sweeps and more: one to four passes in every order over the seed door's
/// ports, made of SYN, SYN|ACK, ACK, FIN, RST, NULL, XMAS, SYN|FIN, SYN|RST, UDP or all of
/// them mixed, against doors with `TCPFlags = syn`, without `TCPFlags`, with `TCPFlags = ack`
/// (which then never opens: see rule 7) and UDP doors: none opens.
#[test]
fn sweeps_of_any_tcp_flags_or_udp_open_no_guarded_door() {
    let seeds: [&[u16]; 2] = [&[7000, 8000, 9000], &[9000, 7000, 8000]];
    let ports: Vec<u16> = (6990..=9010).collect();
    for seq in seeds {
        let mut ack = door(seq, 25);
        ack.tcp_flags = TcpFlags { set: ACK, unset: 0 };
        for d in [door(seq, 25), any_flags(door(seq, 25)), ack, udp_door(seq)] {
            for kind in kinds() {
                for passes in 1..=4 {
                    let mut r = Run::new(vec![d.clone()]);
                    assert_eq!(
                        sweep(&mut r, kind, &ports, passes),
                        vec![],
                        "{seq:?} flags {:?} proto {:?}: {passes} sweeps of {kind:?}",
                        d.tcp_flags,
                        d.sequence[0].proto
                    );
                }
            }
        }
    }
}

/// A guarded door's TCP knock is a connection attempt: the right ports with other flags
/// neither knock nor advance, whatever `TCPFlags` says; the same ports as SYNs open.
#[test]
fn on_a_guarded_door_only_connection_attempts_knock() {
    for flags in FLAGS.into_iter().filter(|f| f & (SYN | ACK) != SYN) {
        let mut r = Run::new(vec![any_flags(door(&[7000, 8000, 9000], 25))]);
        let a = ip(2);
        for (i, port) in [7000, 8000, 9000].into_iter().enumerate() {
            let mut p = syn(a, 40000 + i as u16, port);
            p.tcp_flags = flags;
            r.packet(i as u64, p);
        }
        assert!(r.events.is_empty(), "flags {flags:#x}: {:?}", r.events);
        // Mid-sequence, such packets do not advance (nor reset) an attempt.
        r.knock(10, a, 7000);
        let mut p = syn(a, 41000, 8000);
        p.tcp_flags = flags;
        r.packet(11, p);
        assert_eq!(r.m.attempts()[0].stage, 1, "flags {flags:#x}");
        r.knock(12, a, 8000);
        r.knock(13, a, 9000);
        assert_eq!(r.opens(), vec![(a, 0)], "flags {flags:#x}");
    }
    // A door with the guard off keeps knockd 0.8's rule: whatever TCPFlags matches knocks.
    let mut d = any_flags(door(&[7000, 8000, 9000], 25));
    d.sweep_guard = false;
    let mut r = Run::new(vec![d]);
    for (i, port) in [7000, 8000, 9000].into_iter().enumerate() {
        let mut p = syn(ip(2), 40000 + i as u16, port);
        p.tcp_flags = ACK;
        r.packet(i as u64, p);
    }
    assert_eq!(r.opens(), vec![(ip(2), 0)]);
}

fn spec() -> Spec {
    Spec {
        secret: b"0123456789abcdef0123456789abcdef".to_vec(),
        step_secs: 30,
        knocks: 4,
        lo: 10000,
        hi: 59999,
        exclude: vec![],
    }
}

fn totp_door() -> DoorRule {
    DoorRule {
        sequence: Vec::new(),
        seq_timeout: Duration::from_secs(25),
        tcp_flags: TcpFlags::default(),
        target: None,
        enabled: true,
        sweep_guard: true,
        replay_guard: true,
        replay_key: 1,
    }
}

/// Rotating doors (no TCPFlags by default) against sweeps of every kind over their whole
/// range, two passes: none opens.
#[test]
fn sweeps_of_any_flags_over_a_rotating_doors_range_do_not_open_it() {
    let s = Spec {
        lo: 20000,
        hi: 23999,
        ..spec()
    };
    let ports: Vec<u16> = (s.lo..=s.hi).collect();
    for kind in kinds() {
        let mut r = Run::new(vec![totp_door()]);
        r.m.set_variants(0, window(&s, 1000));
        assert_eq!(sweep(&mut r, kind, &ports, 3), vec![], "{kind:?}");
    }
}

/// Issue: six forged packets from a client's address (a static door's first knock, then five
/// other ports) make it a scanner. The client's next correct TOTP knock still opens; the
/// static door refuses its first knocks until the penalty ends (what a forger can still do).
#[test]
fn a_forged_burst_does_not_keep_a_client_out_of_a_rotating_door() {
    let s = spec();
    let mut r = Run::new(vec![door(&[7000, 8000, 9000], 25), totp_door()]);
    r.m.set_variants(1, window(&s, 1000));
    let client = ip(2);
    // The client is half-way through its TOTP knock when the forged burst arrives.
    let ports = s.ports(1000);
    r.knock(0, client, ports[0]);
    r.knock(1, client, 7000);
    for (i, port) in [1, 2, 3, 4, 5].into_iter().enumerate() {
        r.packet(2 + i as u64, syn(client, 30000 + i as u16, port));
    }
    assert!(r.events.contains(&MatchEvent::Scanner {
        src: client,
        strays: 5
    }));
    assert_eq!(r.m.len(), 0, "the burst ended the client's attempts");
    // The client's next correct knock opens the rotating door...
    for (i, &port) in ports.iter().enumerate() {
        r.knock(1000 + i as u64, client, port);
    }
    assert_eq!(r.opens(), vec![(client, 1)]);
    // ...while the static door refuses first knocks from that address for SweepPenalty.
    r.events.clear();
    r.knock(2000, client, 7000);
    assert_eq!(
        r.events,
        vec![MatchEvent::Refused {
            src: client,
            door: 0,
            reason: Refusal::Scanner
        }]
    );
    let mut out = Vec::new();
    r.m.expire(r.at(62_000), &mut out);
    for (i, port) in [7000, 8000, 9000].into_iter().enumerate() {
        r.knock(62_000 + i as u64, client, port);
    }
    assert_eq!(r.opens().last(), Some(&(client, 0)));
}

/// Two doors sharing one secret (another Target, or fewer knocks): a sequence that opened one
/// of them for a client is refused on the other for any other address.
#[test]
fn doors_sharing_a_secret_cannot_be_replayed_into_each_other() {
    let s = spec();
    let other: IpAddr = "10.99.77.200".parse().unwrap_or(DST);
    let mut a = totp_door();
    a.target = Some(DST);
    let mut b = totp_door();
    b.target = Some(other);
    let mut short = totp_door();
    short.target = Some(other);
    let three = Spec {
        knocks: 3,
        ..spec()
    };
    let mut r = Run::new(vec![a, b, short]);
    r.m.set_variants(0, window(&s, 1000));
    r.m.set_variants(1, window(&s, 1000));
    r.m.set_variants(2, window(&three, 1000));
    let ports = s.ports(1000);
    for (i, &port) in ports.iter().enumerate() {
        r.knock(i as u64, ip(2), port);
    }
    assert_eq!(r.opens(), vec![(ip(2), 0)], "door 0 only: its Target");
    // The sniffed knocks replayed from elsewhere to the other door's address.
    let replayer = ip(9);
    for (i, &port) in ports.iter().enumerate() {
        let mut p = syn(replayer, 50000 + i as u16, port);
        p.dst = other;
        r.packet(100 + i as u64, p);
    }
    assert_eq!(r.opens(), vec![(ip(2), 0)], "{:?}", r.events);
    let refused: Vec<DoorId> = r
        .events
        .iter()
        .filter_map(|e| match e {
            MatchEvent::Refused {
                src,
                door,
                reason: Refusal::Replay,
            } if *src == replayer => Some(*door),
            _ => None,
        })
        .collect();
    assert_eq!(refused, vec![2, 1], "the 3-knock door completes first");
    // The client itself may use the other doors.
    for (i, &port) in ports.iter().enumerate() {
        let mut p = syn(ip(2), 51000 + i as u16, port);
        p.dst = other;
        r.packet(200 + i as u64, p);
    }
    assert_eq!(r.opens().len(), 3);
}
