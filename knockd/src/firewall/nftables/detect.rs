//! Detection of native nftables base chains on the input hook that drop or reject, and the
//! advice an admin needs for the chosen backend. Pure: `nft -j list ruleset` text in.
//!
//! Why it matters: an `accept` ends only the current base chain; the next base chain on the
//! same hook still sees the packet, and a drop there is final (nft(8)). So a grant knockd
//! accepts in one chain is dropped by any other default-drop chain that does not accept it.

use super::script::{admin_line, DEFAULT_MARK};
use super::table;
use crate::config::FirewallKind;
use serde_json::Value;

/// A base chain on the input hook that can drop a knocked client's packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropChain {
    pub family: String,
    pub table: String,
    pub chain: String,
    pub policy_drop: bool,
    /// Rules with a drop or reject verdict.
    pub drop_rules: usize,
    /// Some rule matches `meta mark <knockd's mark>` and accepts (the admin line is there).
    pub accepts_mark: bool,
}

impl DropChain {
    /// A chain of iptables-nft (`iptables` on Debian 12): table `filter` of family ip/ip6.
    pub fn is_iptables(&self) -> bool {
        (self.family == "ip" || self.family == "ip6") && self.table == "filter"
    }

    fn what(&self) -> String {
        match (self.policy_drop, self.drop_rules) {
            (true, 0) => "policy drop".to_string(),
            (true, n) => format!("policy drop and {n} drop/reject rule(s)"),
            (false, n) => format!("{n} drop/reject rule(s)"),
        }
    }
}

/// Input-hook base chains (other than knockd's own, and the tables of other knockd instances:
/// they drop only their own doors' ports) that drop or reject.
pub fn drop_chains(ruleset_json: &str, mark: Option<u32>) -> Result<Vec<DropChain>, String> {
    let v: Value = serde_json::from_str(ruleset_json).map_err(|e| e.to_string())?;
    let items = v
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or("no \"nftables\" array in the listing")?;
    let s = |o: &Value, k: &str| o.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    // Another knockd's table: an inet table with both allow sets.
    let sets = |name: &str| -> Vec<String> {
        items
            .iter()
            .filter_map(|i| i.get("set"))
            .filter(|t| s(t, "family") == "inet" && s(t, "name") == name)
            .map(|t| s(t, "table"))
            .collect()
    };
    let (with4, with6) = (sets(super::SET4), sets(super::SET6));
    let knockd_tables: Vec<&String> = with4.iter().filter(|t| with6.contains(t)).collect();
    let mut chains: Vec<DropChain> = items
        .iter()
        .filter_map(|i| i.get("chain"))
        .filter(|c| c.get("hook").and_then(Value::as_str) == Some("input"))
        .filter(|c| matches!(s(c, "family").as_str(), "ip" | "ip6" | "inet"))
        .filter(|c| {
            !(s(c, "family") == "inet"
                && (s(c, "table") == table() || knockd_tables.contains(&&s(c, "table"))))
        })
        .map(|c| DropChain {
            family: s(c, "family"),
            table: s(c, "table"),
            chain: s(c, "name"),
            policy_drop: s(c, "policy") == "drop",
            drop_rules: 0,
            accepts_mark: false,
        })
        .collect();
    for rule in items.iter().filter_map(|i| i.get("rule")) {
        let Some(ch) = chains.iter_mut().find(|c| {
            c.family == s(rule, "family")
                && c.table == s(rule, "table")
                && c.chain == s(rule, "chain")
        }) else {
            continue;
        };
        let expr: &[Value] = rule
            .get("expr")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if expr
            .iter()
            .any(|e| e.get("drop").is_some() || e.get("reject").is_some())
        {
            ch.drop_rules += 1;
        }
        if let Some(m) = mark {
            let matches_mark = expr.iter().any(|e| {
                e.get("match").is_some_and(|mt| {
                    mt.get("left")
                        .and_then(|l| l.get("meta"))
                        .and_then(|m| m.get("key"))
                        .and_then(Value::as_str)
                        == Some("mark")
                        && mt.get("right").and_then(Value::as_u64) == Some(u64::from(m))
                })
            });
            if matches_mark && expr.iter().any(|e| e.get("accept").is_some()) {
                ch.accepts_mark = true;
            }
        }
    }
    chains.retain(|c| c.policy_drop || c.drop_rules > 0);
    Ok(chains)
}

/// What to tell the admin for each dropping chain: which backend, which line, naming table and
/// chain. Empty when nothing stands in the way.
pub fn advice(backend: FirewallKind, mark: Option<u32>, chains: &[DropChain]) -> Vec<String> {
    let mut out = Vec::new();
    for c in chains {
        let name = format!("{} {} {}", c.family, c.table, c.chain);
        match backend {
            FirewallKind::Iptables => {
                if c.is_iptables() {
                    // knockd's ACCEPT is inserted first in this very chain: it wins there.
                    continue;
                }
                out.push(format!(
                    "warning: nftables base chain '{name}' on the input hook has {}: an iptables ACCEPT inserted by knockd (Firewall = iptables) cannot override it, so opened doors stay closed. \
                     Fix: set Firewall = nftables in [options] and add to that chain: {}",
                    c.what(),
                    admin_line(&c.family, &c.table, &c.chain, Some(mark.unwrap_or(DEFAULT_MARK)))
                ));
            }
            FirewallKind::Nftables => {
                if c.accepts_mark {
                    continue;
                }
                let line = match (c.is_iptables(), mark) {
                    (true, Some(m)) => format!(
                        "{} -I {} -m mark --mark {m:#x} -j ACCEPT",
                        if c.family == "ip6" {
                            "ip6tables"
                        } else {
                            "iptables"
                        },
                        c.chain
                    ),
                    _ => admin_line(&c.family, &c.table, &c.chain, mark),
                };
                let table = table();
                out.push(format!(
                    "warning: nftables base chain '{name}' on the input hook has {}: packets knockd accepts in table inet {table} (Firewall = nftables) are still dropped there. \
                     Fix: add to that chain: {line}",
                    c.what()
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // A host with a default-drop inet filter (mark line present), iptables-nft's ip filter
    // INPUT with policy DROP, a firewalld-like table with a reject rule, an output chain and
    // knockd's own table.
    const RULESET: &str = r#"{"nftables": [
 {"metainfo": {"version": "1.0.6"}},
 {"table": {"family": "inet", "name": "filter", "handle": 1}},
 {"chain": {"family": "inet", "table": "filter", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}},
 {"chain": {"family": "inet", "table": "filter", "name": "output", "handle": 2, "type": "filter", "hook": "output", "prio": 0, "policy": "drop"}},
 {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 4, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": 19278}}, {"accept": null}]}},
 {"chain": {"family": "ip", "table": "filter", "name": "INPUT", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}},
 {"chain": {"family": "inet", "table": "fw", "name": "in", "handle": 1, "type": "filter", "hook": "input", "prio": 10, "policy": "accept"}},
 {"chain": {"family": "inet", "table": "fw", "name": "helper", "handle": 2}},
 {"rule": {"family": "inet", "table": "fw", "chain": "in", "handle": 5, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 22}}, {"reject": null}]}},
 {"rule": {"family": "inet", "table": "fw", "chain": "helper", "handle": 6, "expr": [{"drop": null}]}},
 {"chain": {"family": "inet", "table": "knockd", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": -10, "policy": "accept"}},
 {"rule": {"family": "inet", "table": "knockd", "chain": "input", "handle": 8, "expr": [{"drop": null}]}},
 {"chain": {"family": "inet", "table": "open", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}}
]}"#;

    #[test]
    fn finds_dropping_input_chains() {
        let c = drop_chains(RULESET, Some(DEFAULT_MARK)).expect("parse");
        let names: Vec<String> = c
            .iter()
            .map(|c| format!("{} {} {}", c.family, c.table, c.chain))
            .collect();
        assert_eq!(
            names,
            ["inet filter input", "ip filter INPUT", "inet fw in"]
        );
        assert!(c[0].accepts_mark && c[0].policy_drop);
        assert!(!c[2].policy_drop && c[2].drop_rules == 1);
    }

    #[test]
    fn advice_per_backend() {
        let c = drop_chains(RULESET, Some(DEFAULT_MARK)).expect("parse");
        let nft = advice(FirewallKind::Nftables, Some(DEFAULT_MARK), &c);
        assert_eq!(nft.len(), 2, "{nft:#?}");
        assert!(
            nft[0].contains("'ip filter INPUT'")
                && nft[0].contains("iptables -I INPUT -m mark --mark 0x4b4e -j ACCEPT"),
            "{}",
            nft[0]
        );
        assert!(
            nft[1].contains("nft insert rule inet fw in meta mark 0x4b4e accept"),
            "{}",
            nft[1]
        );
        let ipt = advice(FirewallKind::Iptables, Some(DEFAULT_MARK), &c);
        // ip filter INPUT is iptables' own chain: knockd's -I ACCEPT wins there.
        assert_eq!(ipt.len(), 2, "{ipt:#?}");
        assert!(ipt[0].contains("'inet filter input'") && ipt[0].contains("Firewall = nftables"));
        let none = advice(FirewallKind::Nftables, None, &c);
        assert!(none.iter().all(|l| l.contains("NftMark")), "{none:#?}");
    }
}
