use super::keys::{valid_name, ClientKey, ClientRecord, ServerKey, SpaError};
use super::packet::*;
use super::Refusal;
use std::net::IpAddr;
use std::path::Path;

fn keys() -> (ServerKey, ClientKey) {
    let server = ServerKey::from_bytes([7; 32]);
    let client = ClientKey::from_bytes("alice", [9; 32], [11; 32], server.public());
    (server, client)
}

const NOW: u64 = 1_800_000_000_000;

fn body(ts_ms: u64) -> Body {
    Body {
        ts_ms,
        op: Op::Open,
        addr: Some("192.0.2.9".parse().expect("addr")),
        timeout_secs: 30,
        door: DoorId::of("ssh"),
    }
}

/// The server's checks up to the signature, as knockd runs them, for one enrolled client.
fn server_check(server: &ServerKey, rec: &ClientRecord, packet: &[u8]) -> Result<Body, Refusal> {
    let keys = server.session(rec).expect("session");
    let hint = hint_of(packet)?;
    let e = NOW / EPOCH_MS;
    let epoch = (e - EPOCH_SLACK..=e + EPOCH_SLACK)
        .find(|ep| keys.hint(*ep) == *hint)
        .ok_or(Refusal::UnknownHint)?;
    let opened = open(&keys, packet)?;
    if opened.body.epoch() != epoch {
        return Err(Refusal::Epoch);
    }
    verify(&opened, packet, &server.public(), &rec.verify)?;
    Ok(opened.body)
}

#[test]
fn a_sealed_packet_opens_with_its_fields() {
    let (server, client) = keys();
    let b = body(NOW + 5);
    let p = client.packet(&b, &[3; 24]).expect("packet");
    assert_eq!(p.len(), PACKET_LEN);
    assert_eq!(server_check(&server, &client.record(), &p), Ok(b));
}

#[test]
fn body_round_trips_every_address_kind() {
    for addr in [
        None,
        Some("10.1.2.3"),
        Some("2001:db8::7"),
        Some("::ffff:1.2.3.4"),
    ] {
        let b = Body {
            addr: addr.map(|a| a.parse::<IpAddr>().expect("addr")),
            ..body(NOW)
        };
        assert_eq!(Body::decode(&b.encode()), Ok(b));
    }
}

#[test]
fn every_single_bit_flip_is_refused_with_its_reason() {
    let (server, client) = keys();
    let rec = client.record();
    let p = client.packet(&body(NOW), &[3; 24]).expect("packet");
    for bit in 0..PACKET_LEN * 8 {
        let mut q = p;
        q[bit / 8] ^= 1 << (bit % 8);
        let want = if bit / 8 < HINT_LEN {
            Refusal::UnknownHint
        } else {
            Refusal::Aead
        };
        assert_eq!(server_check(&server, &rec, &q), Err(want), "bit {bit}");
    }
}

#[test]
fn truncations_and_extensions_are_refused_by_length() {
    let (server, client) = keys();
    let rec = client.record();
    let p = client.packet(&body(NOW), &[3; 24]).expect("packet");
    for len in 0..PACKET_LEN {
        assert_eq!(
            server_check(&server, &rec, &p[..len]),
            Err(Refusal::Length),
            "{len}"
        );
    }
    for extra in [0u8, 0xff] {
        for n in 1..=64 {
            let mut q = p.to_vec();
            q.extend(std::iter::repeat_n(extra, n));
            assert_eq!(server_check(&server, &rec, &q), Err(Refusal::Length));
        }
    }
}

#[test]
fn another_clients_signature_or_server_is_refused() {
    let (server, client) = keys();
    // The same X25519 key (so the AEAD opens) but another signing key: a stolen server key
    // lets its holder make packets that pass the AEAD, never the signature.
    let thief = ClientKey::from_bytes("alice", [9; 32], [12; 32], server.public());
    let p = thief.packet(&body(NOW), &[3; 24]).expect("packet");
    assert_eq!(
        server_check(&server, &client.record(), &p),
        Err(Refusal::Signature)
    );
    // Made for another server: its hint is unknown here.
    let other = ServerKey::from_bytes([8; 32]);
    let elsewhere = ClientKey::from_bytes("alice", [9; 32], [11; 32], other.public());
    let p = elsewhere.packet(&body(NOW), &[3; 24]).expect("packet");
    assert_eq!(
        server_check(&server, &client.record(), &p),
        Err(Refusal::UnknownHint)
    );
}

#[test]
fn a_hint_moved_onto_another_packet_is_refused() {
    let (server, client) = keys();
    let rec = client.record();
    let keys = client.session().expect("session");
    // A packet whose hint names epoch e but whose body says e+1: only a key holder makes one,
    // but the server still refuses it (the hint and the timestamp must agree).
    let mut p = client
        .packet(&body(NOW + EPOCH_MS), &[3; 24])
        .expect("packet");
    p[..HINT_LEN].copy_from_slice(&keys.hint(NOW / EPOCH_MS));
    // The hint is in the AAD, so changing it breaks the tag first.
    assert_eq!(server_check(&server, &rec, &p), Err(Refusal::Aead));
}

#[test]
fn malformed_bodies_are_refused() {
    let good = body(NOW).encode();
    let mut cases = Vec::new();
    let mut b = good;
    b[8] = 2; // unknown op
    cases.push(b);
    let mut b = good;
    b[9] = 5; // unknown address kind
    cases.push(b);
    let mut b = good;
    b[20] = 1; // byte past an IPv4 address
    cases.push(b);
    let mut b = good;
    b[45] = 1; // reserved
    cases.push(b);
    let mut b = Body {
        addr: None,
        ..body(NOW)
    }
    .encode();
    b[12] = 1; // an address byte with kind 0
    cases.push(b);
    for c in cases {
        assert_eq!(Body::decode(&c), Err(Refusal::Malformed), "{c:?}");
    }
}

#[test]
fn no_field_repeats_across_epochs_or_clients() {
    let (server, client) = keys();
    let other = ClientKey::from_bytes("bob", [21; 32], [22; 32], server.public());
    let a1 = client.packet(&body(NOW), &[1; 24]).expect("p");
    let a2 = client.packet(&body(NOW + EPOCH_MS), &[2; 24]).expect("p");
    let b1 = other.packet(&body(NOW), &[3; 24]).expect("p");
    for (x, y) in [(&a1, &a2), (&a1, &b1), (&a2, &b1)] {
        assert_ne!(x[..HINT_LEN], y[..HINT_LEN]);
        let same = x.iter().zip(y.iter()).filter(|(a, b)| a == b).count();
        assert!(same < PACKET_LEN / 16, "{same} equal bytes");
    }
}

#[test]
fn door_ids_are_stable_and_never_any() {
    assert_ne!(DoorId::of("ssh"), DoorId::ANY);
    assert_eq!(DoorId::of("ssh"), DoorId::of("ssh"));
    assert_ne!(DoorId::of("ssh"), DoorId::of("web"));
}

#[test]
fn key_files_round_trip_and_name_their_errors() {
    let path = Path::new("x");
    let (server, client) = keys();
    let s2 = ServerKey::parse(&server.render(), path).expect("server");
    assert_eq!(s2.public(), server.public());
    let rec = client.record();
    assert_eq!(
        ClientRecord::parse(&rec.render(), path).expect("record"),
        rec
    );
    let c2 = ClientKey::parse(&client.render(), path).expect("client");
    assert_eq!(c2.record(), rec);
    assert_eq!(c2.server_x, server.public());
    assert!(rec.render().contains(&rec.fingerprint()));
    assert!(!rec.render().contains("secret"));

    let bad = rec.render().replace("name = alice", "name = ../etc");
    assert!(matches!(
        ClientRecord::parse(&bad, path),
        Err(SpaError::Name(_))
    ));
    let dup = format!("{}name = bob\n", rec.render());
    assert!(ClientRecord::parse(&dup, path)
        .expect_err("dup")
        .to_string()
        .contains("twice"));
    let short = rec.render().replace("x25519 = ", "x25519 = AAAA");
    assert!(ClientRecord::parse(&short, path).is_err());
    assert!(ClientRecord::parse("name = a\n", path)
        .expect_err("missing")
        .to_string()
        .contains("no 'x25519 ='"));
}

#[test]
fn low_order_client_keys_are_refused() {
    let (server, client) = keys();
    let mut rec = client.record();
    rec.x = [0; 32];
    assert!(matches!(server.session(&rec), Err(SpaError::LowOrder(_))));
}

#[test]
fn client_names() {
    for ok in ["alice", "bob-2", "a.b_c", "A"] {
        assert!(valid_name(ok), "{ok}");
    }
    for bad in ["", ".x", "-x", "a/b", "a b", "é", &"x".repeat(33)] {
        assert!(!valid_name(bad), "{bad}");
    }
}
