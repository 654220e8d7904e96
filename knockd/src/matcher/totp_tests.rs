//! Table tests for rotating (TOTP) doors in the matcher: step boundaries, clock skew, replay
//! from another source, re-knock from the same source. Time (the step) is an input.

use super::tests::{ip, Run};
use super::*;
use crate::config::totp::window;
use knock_ipc::totp::Spec;

fn spec() -> Spec {
    Spec {
        secret: b"0123456789abcdef0123456789abcdef".to_vec(),
        step_secs: 30,
        knocks: 4,
        lo: 10000,
        hi: 59999,
        exclude: vec![22],
    }
}

fn totp_door() -> DoorRule {
    DoorRule {
        sequence: Vec::new(),
        seq_timeout: Duration::from_secs(25),
        tcp_flags: TcpFlags {
            set: flag::SYN,
            unset: 0,
        },
        target: None,
        enabled: true,
        sweep_guard: true,
        replay_guard: true,
        replay_key: 0,
    }
}

/// A matcher whose TOTP door is at `step`.
fn at_step(step: u64) -> Run {
    let mut r = Run::new(vec![totp_door()]);
    r.m.set_variants(0, window(&spec(), step));
    r
}

fn knock_ports(r: &mut Run, ms: u64, src: IpAddr, ports: &[u16]) {
    for (i, &p) in ports.iter().enumerate() {
        r.knock(ms + i as u64, src, p);
    }
}

#[test]
fn current_previous_and_next_steps_open_others_do_not() {
    let s = spec();
    for (knocked, opens) in [
        (1000, true),
        (999, true),
        (1001, true),
        (998, false),
        (1002, false),
    ] {
        let mut r = at_step(1000);
        knock_ports(&mut r, 0, ip(2), &s.ports(knocked));
        assert_eq!(!r.opens().is_empty(), opens, "step {knocked} at 1000");
    }
}

#[test]
fn at_the_boundary_the_window_moves_and_attempts_in_it_carry_on() {
    let s = spec();
    let mut r = at_step(1000);
    // Half a sequence of step 1000, then the step changes to 1001: 1000 is still accepted
    // (previous), so the attempt completes.
    let p = s.ports(1000);
    knock_ports(&mut r, 0, ip(2), &p[..2]);
    r.m.set_variants(0, window(&s, 1001));
    knock_ports(&mut r, 10, ip(2), &p[2..]);
    assert_eq!(r.opens(), vec![(ip(2), 0)]);
    // An attempt of step 1000 when the window moves to 1002 ends; its rest does not open.
    let mut r = at_step(1000);
    knock_ports(&mut r, 0, ip(3), &p[..2]);
    r.m.set_variants(0, window(&s, 1002));
    assert_eq!(r.m.len(), 0);
    knock_ports(&mut r, 10, ip(3), &p[2..]);
    assert!(r.opens().is_empty());
}

#[test]
fn replay_from_another_source_is_refused_and_a_reknock_from_the_same_source_refreshes() {
    let s = spec();
    let mut r = at_step(1000);
    let p = s.ports(1000);
    knock_ports(&mut r, 0, ip(2), &p);
    assert_eq!(r.opens(), vec![(ip(2), 0)]);
    // The same packets from elsewhere, within the window: refused.
    knock_ports(&mut r, 100, ip(9), &p);
    assert_eq!(r.opens(), vec![(ip(2), 0)]);
    assert!(r.events.contains(&MatchEvent::Refused {
        src: ip(9),
        door: 0,
        reason: Refusal::Replay
    }));
    // Still refused after the window moved on by one (step 1000 is the previous one).
    r.m.set_variants(0, window(&s, 1001));
    knock_ports(&mut r, 200, ip(9), &p);
    assert_eq!(r.opens().len(), 1);
    // The client itself may knock again (refresh).
    knock_ports(&mut r, 300, ip(2), &p);
    assert_eq!(r.opens(), vec![(ip(2), 0), (ip(2), 0)]);
    // Another source may use another step's sequence.
    knock_ports(&mut r, 400, ip(9), &s.ports(1001));
    assert_eq!(r.opens().last(), Some(&(ip(9), 0)));
    // Once the step has left the window, its sequence opens nothing for anyone.
    r.m.set_variants(0, window(&s, 1002));
    let before = r.opens().len();
    knock_ports(&mut r, 500, ip(2), &p);
    knock_ports(&mut r, 600, ip(9), &p);
    assert_eq!(r.opens().len(), before);
}

/// A reload that keeps the door (same secret) keeps its attempts in progress and what each
/// step opened for; a door that is not kept (e.g. a new secret) starts afresh.
#[test]
fn a_reload_keeping_the_door_keeps_attempts_and_replay_memory() {
    let s = spec();
    let p = s.ports(1000);
    let mut r = at_step(1000);
    knock_ports(&mut r, 0, ip(2), &p);
    let q = s.ports(999);
    knock_ports(&mut r, 10, ip(3), &q[..2]);
    let generation = r.m.replay_generation();
    // The door moves from index 0 to 1 (a static door is added before it).
    r.m.reconfigure(
        vec![super::tests::door(&[1, 2, 3], 5), totp_door()],
        &[Some(1)],
    );
    assert!(r.m.replay_generation() != generation);
    r.m.set_variants(1, window(&s, 1000));
    assert_eq!(r.m.replay_memory(), vec![(1, 1000, ip(2))]);
    knock_ports(&mut r, 20, ip(9), &p);
    knock_ports(&mut r, 30, ip(3), &q[2..]);
    let opens: Vec<_> = r.opens().into_iter().filter(|&(_, d)| d == 1).collect();
    assert_eq!(opens, vec![(ip(3), 1)], "B refused, C's attempt carried on");
    // Not kept: nothing carries over.
    r.m.reconfigure(vec![totp_door()], &[None, None]);
    r.m.set_variants(0, window(&s, 1000));
    assert!(r.m.replay_memory().is_empty());
    // What the state file brings back: only steps the door accepts now.
    assert!(r.m.remember_replay(0, 1000, ip(2)));
    assert!(!r.m.remember_replay(0, 1000, ip(9)), "first one wins");
    assert!(!r.m.remember_replay(0, 1002, ip(2)), "not in the window");
    knock_ports(&mut r, 40, ip(9), &p);
    assert!(r.events.contains(&MatchEvent::Refused {
        src: ip(9),
        door: 0,
        reason: Refusal::Replay
    }));
}
