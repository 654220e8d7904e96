use super::*;
use crate::config::parse;
use knock_ipc::spa::{Body, ClientKey, DoorId, Op, ServerKey};

const NOW: u64 = 1_800_000_000_000;

fn config(address: &str) -> Config {
    let text = format!(
        "[ssh]\n SPA = alice, bob\n SPA_Address = {address}\n Open = 22/tcp\n\
         [web]\n SPA = bob\n Open = 443/tcp\n\
         [seq]\n Sequence = 7001,7002,7003,7004\n SPA = alice\n Open = 8080/tcp\n"
    );
    parse(&text, "t.conf").expect("config").config
}

fn setup(address: &str) -> (Gate, ClientKey, ClientKey) {
    let server = ServerKey::from_bytes([1; 32]);
    let alice = ClientKey::from_bytes("alice", [2; 32], [3; 32], server.public());
    let bob = ClientKey::from_bytes("bob", [4; 32], [5; 32], server.public());
    let gate = Gate::from_parts(
        &config(address),
        server,
        &[alice.record(), bob.record()],
        NOW - 1000,
    );
    (gate, alice, bob)
}

fn body(ts_ms: u64, addr: Option<&str>, door: DoorId) -> Body {
    Body {
        ts_ms,
        op: Op::Open,
        addr: addr.map(|a| a.parse().expect("addr")),
        timeout_secs: 0,
        door,
    }
}

fn src() -> IpAddr {
    "192.0.2.7".parse().expect("addr")
}

fn refused(reason: Refusal) -> impl Fn(&Verdict) -> bool {
    move |v| matches!(v, Verdict::Refused { reason: r, .. } if *r == reason)
}

#[test]
fn opens_once_then_refuses_every_replay() {
    let (mut g, alice, _) = setup("source");
    let p = alice
        .packet(&body(NOW, None, DoorId::ANY), &[7; 24])
        .expect("p");
    match g.on_packet(src(), &p, NOW + 5) {
        Verdict::Open { client, opens, nat } => {
            assert_eq!(client, "alice");
            // Every door listing alice: ssh (0) and seq (2), for the source.
            assert_eq!(opens, vec![(0, src()), (2, src())]);
            assert!(!nat);
        }
        v => panic!("{v:?}"),
    }
    for from in [src(), "198.51.100.1".parse().expect("addr")] {
        assert!(refused(Refusal::Replay)(&g.on_packet(from, &p, NOW + 10)));
    }
    let c = g.counters();
    assert_eq!(c.accepted, 1);
    assert!(c.refused.contains(&(Refusal::Replay, 2)));
}

#[test]
fn forged_short_stale_and_fenced_packets_are_refused() {
    let (mut g, alice, _) = setup("source");
    assert!(refused(Refusal::Length)(&g.on_packet(src(), &[0; 10], NOW)));
    assert!(refused(Refusal::UnknownHint)(&g.on_packet(
        src(),
        &[0x5a; PACKET_LEN],
        NOW
    )));
    // Made 61 s before the server's clock (its hint is still in the window): the clock
    // check refuses it.
    let now = NOW + 29_000;
    let old = alice
        .packet(&body(now - 61_000, None, DoorId::ANY), &[1; 24])
        .expect("p");
    assert!(refused(Refusal::Clock)(&g.on_packet(src(), &old, now)));
    // Made before the gate started (the start fence).
    let before = alice
        .packet(&body(NOW - 2000, None, DoorId::ANY), &[2; 24])
        .expect("p");
    assert!(refused(Refusal::Replay)(&g.on_packet(src(), &before, NOW)));
    // A packet for another server never matches a hint here.
    let other = ClientKey::from_bytes(
        "alice",
        [2; 32],
        [3; 32],
        ServerKey::from_bytes([9; 32]).public(),
    );
    let p = other
        .packet(&body(NOW, None, DoorId::ANY), &[3; 24])
        .expect("p");
    assert!(refused(Refusal::UnknownHint)(&g.on_packet(src(), &p, NOW)));
}

use knock_ipc::spa::PACKET_LEN;

#[test]
fn door_and_address_policy() {
    let (mut g, alice, bob) = setup("source");
    // bob names web: only web opens.
    let p = bob
        .packet(&body(NOW, None, DoorId::of("web")), &[1; 24])
        .expect("p");
    assert!(
        matches!(g.on_packet(src(), &p, NOW), Verdict::Open { ref opens, .. } if opens == &vec![(1, src())])
    );
    // alice names web, which does not list her.
    let p = alice
        .packet(&body(NOW + 1, None, DoorId::of("web")), &[2; 24])
        .expect("p");
    assert!(refused(Refusal::NoDoor)(&g.on_packet(src(), &p, NOW)));
    // source: an embedded address must be the source.
    let p = alice
        .packet(
            &body(NOW + 2, Some("203.0.113.9"), DoorId::of("ssh")),
            &[3; 24],
        )
        .expect("p");
    assert!(refused(Refusal::Address)(&g.on_packet(src(), &p, NOW)));
    let p = alice
        .packet(
            &body(NOW + 3, Some("192.0.2.7"), DoorId::of("ssh")),
            &[4; 24],
        )
        .expect("p");
    assert!(matches!(g.on_packet(src(), &p, NOW), Verdict::Open { .. }));

    let (mut g, alice, _) = setup("require");
    let p = alice
        .packet(&body(NOW, None, DoorId::of("ssh")), &[5; 24])
        .expect("p");
    assert!(refused(Refusal::Address)(&g.on_packet(src(), &p, NOW)));

    let (mut g, alice, _) = setup("any");
    let p = alice
        .packet(&body(NOW, Some("203.0.113.9"), DoorId::of("ssh")), &[6; 24])
        .expect("p");
    match g.on_packet(src(), &p, NOW) {
        Verdict::Open { opens, nat, .. } => {
            assert_eq!(opens, vec![(0, "203.0.113.9".parse().expect("addr"))]);
            assert!(nat);
        }
        v => panic!("{v:?}"),
    }
}

#[test]
fn hints_follow_the_clock_and_revocation() {
    let (mut g, alice, _) = setup("source");
    assert_eq!(g.hint_count(), 2 * 5);
    // Ten epochs later the window moved: a fresh packet opens, the table kept its size.
    let later = NOW + 10 * packet::EPOCH_MS;
    for step in 1..=10 {
        let _ = g.rotate(NOW + step * packet::EPOCH_MS);
    }
    assert_eq!(g.hint_count(), 2 * 5);
    let p = alice
        .packet(&body(later, None, DoorId::ANY), &[1; 24])
        .expect("p");
    assert!(matches!(
        g.on_packet(src(), &p, later),
        Verdict::Open { .. }
    ));
    // Revoked: refused by the cheapest check, from the next packet.
    assert!(g.revoke("alice").is_ok());
    assert_eq!(g.hint_count(), 5);
    let p = alice
        .packet(&body(later + 1, None, DoorId::ANY), &[2; 24])
        .expect("p");
    assert!(refused(Refusal::UnknownHint)(&g.on_packet(
        src(),
        &p,
        later
    )));
    assert!(g.revoke("nobody").is_err());
}

#[test]
fn a_key_holder_flood_is_bounded_by_the_client_budget() {
    let (mut g, alice, _) = setup("source");
    let mut busy = 0;
    for i in 0..100u64 {
        let p = alice
            .packet(&body(NOW + i, None, DoorId::ANY), &[i as u8; 24])
            .expect("p");
        if refused(Refusal::Busy)(&g.on_packet(src(), &p, NOW)) {
            busy += 1;
        }
    }
    assert_eq!(busy, 100 - CLIENT_BURST as usize);
}

#[test]
fn enrolled_clients_cost_under_512_bytes_each() {
    // 2,000 here (key derivation is slow in debug builds); the benchmark enrolls 10,000.
    let server = ServerKey::from_bytes([1; 32]);
    let records: Vec<_> = (0..2_000u32)
        .map(|i| {
            let mut x = [7u8; 32];
            x[..4].copy_from_slice(&i.to_be_bytes());
            ClientKey::from_bytes(&format!("client{i}"), x, x, server.public()).record()
        })
        .collect();
    let g = Gate::from_parts(&config("source"), server, &records, NOW);
    assert_eq!(g.hint_count(), 10_000);
    let per = g.bytes_per_client();
    assert!(per <= 512, "{per} bytes per client");
}

#[test]
fn replay_memory_survives_a_restart_through_the_state_file() {
    let (mut g, alice, _) = setup("source");
    assert_eq!(
        g.take_replay(false),
        None,
        "nothing accepted, nothing to write"
    );
    assert_eq!(
        g.take_replay(true),
        Some(vec![]),
        "no memory says more than a fence"
    );
    // Alice's clock is 40 s ahead: her packet is made after the next start.
    let ahead = NOW + 40_000;
    let p = alice
        .packet(&body(ahead, None, DoorId::ANY), &[9; 24])
        .expect("p");
    assert!(matches!(g.on_packet(src(), &p, NOW), Verdict::Open { .. }));
    let saved = g.take_replay(false).expect("alice's memory changed");
    assert_eq!(saved.len(), 1);
    assert_eq!(saved[0].client, "alice");
    assert_eq!(saved[0].seen.len(), 1);
    assert_eq!(g.take_replay(false), None, "handed over once");
    // Through the state file's text and back.
    let text = crate::state::render_all(crate::state::Saved {
        spa_replay: saved,
        ..Default::default()
    })
    .expect("render");
    let saved = crate::state::parse_all(&text).expect("parse").spa_replay;

    // Restart 10 s later: the fence alone would let the replay in...
    let (mut fresh, _, _) = setup("source");
    fresh.fence_ms = NOW + 10_000;
    assert!(matches!(
        fresh.on_packet(src(), &p, NOW + 10_500),
        Verdict::Open { .. }
    ));
    // ...the recorded memory refuses it.
    let (mut g2, _, _) = setup("source");
    g2.fence_ms = NOW + 10_000;
    let line = g2.restore_replay(saved.clone()).expect("a line");
    assert!(line.contains("1 client(s)"), "{line}");
    assert!(refused(Refusal::Replay)(&g2.on_packet(
        src(),
        &p,
        NOW + 10_500
    )));
    assert_eq!(
        g2.take_replay(true),
        Some(saved.clone()),
        "written back at start"
    );

    // Keys not enrolled now (another fingerprint): held, written back, never applied to
    // other keys.
    let mut other = saved[0].clone();
    other.fingerprint = "SHA256:not-alice".into();
    let (mut g3, _, _) = setup("source");
    let line = g3.restore_replay(vec![other.clone()]).expect("a line");
    assert!(line.contains("1 held"), "{line}");
    assert_eq!(g3.take_replay(true), Some(vec![other]));
    assert!(matches!(
        g3.on_packet(src(), &p, NOW + 10_500),
        Verdict::Open { .. }
    ));
}

#[test]
fn a_cached_key_never_verifies_for_other_keys() {
    let (mut g, alice, _) = setup("source");
    let open = |v: &Verdict| matches!(v, Verdict::Open { .. });
    assert_eq!(g.keys.held(), 0, "nothing cached before a valid packet");
    let p = alice
        .packet(&body(NOW, None, DoorId::ANY), &[1; 24])
        .expect("p");
    assert!(open(&g.on_packet(src(), &p, NOW)));
    assert_eq!(g.keys.held(), 1, "alice's key is kept once it verified");
    let p = alice
        .packet(&body(NOW + 1, None, DoorId::ANY), &[2; 24])
        .expect("p");
    assert!(open(&g.on_packet(src(), &p, NOW + 1)), "from the cache");
    // alice enrolled again with a new signing key (same X25519 key, so the hint and the
    // AEAD still pass) while the cache holds her old one: the old key must not verify.
    let server = ServerKey::from_bytes([1; 32]);
    let again = ClientKey::from_bytes("alice", [2; 32], [9; 32], server.public());
    if let Some(c) = g.enrolled.get_mut(0) {
        c.record.verify = again.record().verify.to_bytes();
    }
    let old = alice
        .packet(&body(NOW + 2, None, DoorId::ANY), &[3; 24])
        .expect("p");
    assert!(refused(Refusal::Signature)(&g.on_packet(
        src(),
        &old,
        NOW + 2
    )));
    let new = again
        .packet(&body(NOW + 3, None, DoorId::ANY), &[4; 24])
        .expect("p");
    assert!(open(&g.on_packet(src(), &new, NOW + 3)));
    // A revocation (any change of the client list) empties the cache.
    assert!(g.revoke("alice").is_ok());
    assert_eq!(g.keys.held(), 0);
}
