//! The kernel's view of the grants: `nft -j list table inet knockd` (or `list set`) parsed
//! back into elements with their timeout and the time left. Pure: JSON text in.

use super::{table, Elem, NftError, SET4, SET6};
use crate::config::Proto;
use serde_json::Value;
use std::net::IpAddr;
use std::time::Duration;

/// One element as the kernel holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelElem {
    pub elem: Elem,
    /// The element's timeout (None: none, which knockd never writes).
    pub timeout: Option<Duration>,
    /// Time left before the kernel removes it.
    pub expires: Option<Duration>,
}

/// Elements of knockd's allow sets in a `nft -j list ...` output. Elements that are not
/// (address . tcp|udp . port) are skipped (nobody but knockd should write there).
pub fn parse(json: &str) -> Result<Vec<KernelElem>, NftError> {
    let v: Value = serde_json::from_str(json).map_err(|e| NftError::Listing(e.to_string()))?;
    let items = v
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| NftError::Listing("no \"nftables\" array".into()))?;
    let mut out = Vec::new();
    for item in items {
        let Some(set) = item.get("set") else {
            continue;
        };
        let name = set.get("name").and_then(Value::as_str).unwrap_or_default();
        if set.get("table").and_then(Value::as_str) != Some(table())
            || set.get("family").and_then(Value::as_str) != Some("inet")
            || !(name == SET4 || name == SET6)
        {
            continue;
        }
        for e in set
            .get("elem")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(k) = element(e) {
                out.push(k);
            }
        }
    }
    Ok(out)
}

/// Is the table in a `nft -j list table` output whole: both allow sets, and the chain with
/// `rules` rules (what knockd's script makes)? False after `nft flush ruleset`, a deleted set,
/// chain or rule, or a flushed chain.
pub fn intact(json: &str, rules: usize) -> bool {
    let Ok(v) = serde_json::from_str::<Value>(json) else {
        return false;
    };
    let items = v
        .get("nftables")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let ours = |o: &Value| {
        o.get("table").and_then(Value::as_str) == Some(table())
            && o.get("family").and_then(Value::as_str) == Some("inet")
    };
    let named = |kind: &str, name: &str| {
        items
            .iter()
            .filter_map(|i| i.get(kind))
            .any(|o| ours(o) && o.get("name").and_then(Value::as_str) == Some(name))
    };
    let in_chain = items
        .iter()
        .filter_map(|i| i.get("rule"))
        .filter(|r| ours(r) && r.get("chain").and_then(Value::as_str) == Some(super::CHAIN))
        .count();
    named("set", SET4) && named("set", SET6) && named("chain", super::CHAIN) && in_chain == rules
}

fn element(e: &Value) -> Option<KernelElem> {
    // `{"elem": {"val": {"concat": [...]}, "timeout": 30, "expires": 29}}` or a bare value.
    let (val, meta) = match e.get("elem") {
        Some(inner) => (inner.get("val")?, Some(inner)),
        None => (e, None),
    };
    let parts = val.get("concat")?.as_array()?;
    let [addr, proto, port] = &parts[..] else {
        return None;
    };
    let addr: IpAddr = addr.as_str()?.parse().ok()?;
    let proto = match proto {
        Value::String(s) if s == "tcp" => Proto::Tcp,
        Value::String(s) if s == "udp" => Proto::Udp,
        Value::Number(n) if n.as_u64() == Some(6) => Proto::Tcp,
        Value::Number(n) if n.as_u64() == Some(17) => Proto::Udp,
        _ => return None,
    };
    let port = match port {
        Value::Number(n) => u16::try_from(n.as_u64()?).ok()?,
        Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    let secs = |k: &str| {
        meta.and_then(|m| m.get(k))
            .and_then(Value::as_f64)
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
    };
    Some(KernelElem {
        elem: Elem { addr, proto, port },
        timeout: secs("timeout"),
        expires: secs("expires"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from nft 1.0.6 (Debian 12) in a namespace.
    const LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "inet", "name": "knockd", "handle": 1}}, {"set": {"family": "inet", "name": "allow4", "table": "knockd", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 2, "flags": ["timeout"], "elem": [{"elem": {"val": {"concat": ["10.0.0.12", "tcp", 22]}, "timeout": 30, "expires": 29}}, {"elem": {"val": {"concat": ["10.0.0.13", "udp", 53]}, "timeout": 10, "expires": 3}}]}}, {"set": {"family": "inet", "name": "allow6", "table": "knockd", "type": ["ipv6_addr", "inet_proto", "inet_service"], "handle": 3, "flags": ["timeout"], "elem": [{"elem": {"val": {"concat": ["fd99:77::2", "tcp", 443]}, "timeout": 60, "expires": 59}}]}}, {"set": {"family": "inet", "name": "allow4", "table": "other", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 2, "flags": ["timeout"], "elem": [{"elem": {"val": {"concat": ["10.9.9.9", "tcp", 22]}, "timeout": 30, "expires": 29}}]}}, {"chain": {"family": "inet", "table": "knockd", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": -10, "policy": "accept"}}]}"#;

    #[test]
    fn parses_elements_with_remaining_timeout() {
        let got = parse(LISTING).expect("parse");
        let want = [
            ("10.0.0.12", Proto::Tcp, 22, 30, 29),
            ("10.0.0.13", Proto::Udp, 53, 10, 3),
            ("fd99:77::2", Proto::Tcp, 443, 60, 59),
        ];
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (g, (a, p, port, t, x)) in got.iter().zip(want) {
            assert_eq!(g.elem.addr, a.parse::<IpAddr>().expect("ip"));
            assert_eq!(g.elem.proto, p);
            assert_eq!(g.elem.port, port);
            assert_eq!(g.timeout, Some(Duration::from_secs(t)));
            assert_eq!(g.expires, Some(Duration::from_secs(x)));
        }
    }

    #[test]
    fn empty_sets_odd_elements_and_garbage() {
        let empty = r#"{"nftables": [{"set": {"family": "inet", "name": "allow4", "table": "knockd", "type": ["ipv4_addr", "inet_proto", "inet_service"], "flags": ["timeout"]}}]}"#;
        assert_eq!(parse(empty).expect("parse"), vec![]);
        let odd = r#"{"nftables": [{"set": {"family": "inet", "name": "allow4", "table": "knockd", "elem": [{"concat": ["10.0.0.1", 6, "22"]}, {"concat": ["10.0.0.1", "icmp", 0]}, "10.0.0.3"]}}]}"#;
        let got = parse(odd).expect("parse");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].elem.proto, Proto::Tcp);
        assert_eq!(got[0].expires, None);
        assert!(parse("Error: No such file or directory").is_err());
        assert!(parse("{}").is_err());
    }
}
