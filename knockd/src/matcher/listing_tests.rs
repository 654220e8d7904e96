//! `Matcher::oldest`: the first page of the full listing, whatever ended in between.

use super::tests::{door, syn, DST};
use super::*;
use std::net::Ipv4Addr;

fn src(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

/// Attempts on three doors with different timeouts, started at distinct times; some reset,
/// some completed, some timed out, some evicted: `oldest(k)` is always the first k of the
/// full sorted listing.
#[test]
fn oldest_is_the_first_page_of_the_listing() {
    let doors = vec![
        door(&[7000, 8000, 9000], 30),
        door(&[7001, 8001], 10),
        door(&[7002, 8002, 9002, 9003], 20),
    ];
    let mut settings = Settings::new(150);
    settings.per_network = 150;
    settings.sweep_threshold = 0;
    let mut m = Matcher::with_settings(doors, settings);
    m.set_local_addrs([DST]);
    let t0 = Instant::now();
    let mut out = Vec::new();
    let mut sport = 1000u16;
    let mut send = |m: &mut Matcher, s: IpAddr, port: u16, at: Instant, out: &mut Vec<_>| {
        sport += 1;
        m.on_packet(&syn(s, sport, port), at, out);
    };
    for i in 0..300u32 {
        let at = t0 + Duration::from_millis(u64::from(i) * 37);
        let first = [7000, 7001, 7002][(i % 3) as usize];
        send(&mut m, src(i), first, at, &mut out);
        match i % 7 {
            // A wrong knock ends it (its queue entry stays behind).
            1 => send(&mut m, src(i), 9999, at, &mut out),
            // Second knock: door 1 (two knocks) completes, others advance.
            2 => send(&mut m, src(i), first + 1000, at, &mut out),
            _ => {}
        }
    }
    // Timeouts: most door-1 attempts, the oldest advanced ones of door 2.
    m.expire(t0 + Duration::from_millis(21_000), &mut out);
    let evicted = out
        .iter()
        .filter(|e| matches!(e, MatchEvent::Evicted { .. }))
        .count();
    assert!(evicted > 0, "{} attempts, events {:?}", m.len(), &out[..5]);
    assert!(out.iter().any(|e| matches!(e, MatchEvent::Timeout { .. })));
    let all = m.attempts();
    assert!(all.len() > 50, "{} attempts", all.len());
    for k in [0, 1, 2, 10, all.len() - 1, all.len(), all.len() + 5] {
        let page = m.oldest(k);
        assert_eq!(page, all[..k.min(all.len())].to_vec(), "k = {k}");
    }
}
