//! What a run left in the server namespace's firewall: ACCEPT rules for single sources in
//! INPUT (`iptables -S INPUT`) and elements of knockd's nftables allow set. Counted from the
//! kernel at the end, not from the monitor's events (a netlink listener can lose events when
//! thousands of rules arrive at once). The parsers are pure.

use serde::Serialize;

use knock_e2e::Lab;

const IPTABLES: &str = "/usr/sbin/iptables";
const NFT: &str = "/usr/sbin/nft";

/// Grants the firewall holds at the end of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FirewallCount {
    /// `-A INPUT -s ADDR ... -j ACCEPT` rules.
    pub rules: u64,
    /// Elements of `inet knockd allow4` and `allow6`; `None` when the table does not exist.
    pub set_elements: Option<u64>,
}

/// Reads both from the lab's server namespace.
pub fn count(lab: &Lab) -> FirewallCount {
    let rules = lab.srv_exec([IPTABLES, "-w", "-S", "INPUT"]);
    let rules = if rules.status.success() {
        accept_rules(&String::from_utf8_lossy(&rules.stdout))
    } else {
        0
    };
    let mut set_elements = None;
    for set in ["allow4", "allow6"] {
        let out = lab.srv_exec([NFT, "-j", "list", "set", "inet", "knockd", set]);
        if out.status.success() {
            let n = set_elements_in(&String::from_utf8_lossy(&out.stdout));
            set_elements = Some(set_elements.unwrap_or(0) + n);
        }
    }
    FirewallCount {
        rules,
        set_elements,
    }
}

/// Lines of `iptables -S` that accept one source (what a grant adds).
pub fn accept_rules(listing: &str) -> u64 {
    listing
        .lines()
        .filter(|l| l.starts_with("-A ") && l.contains(" -s ") && l.contains("-j ACCEPT"))
        .count() as u64
}

/// Elements of the sets in `nft -j list set ...` output.
pub fn set_elements_in(json: &str) -> u64 {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return 0;
    };
    v.get("nftables")
        .and_then(|a| a.as_array())
        .map_or(0, |items| {
            items
                .iter()
                .filter_map(|i| i.get("set")?.get("elem")?.as_array())
                .map(|e| e.len() as u64)
                .sum()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_single_source_accepts_only() {
        let listing = "-P INPUT DROP\n\
            -A INPUT -p tcp -m tcp ! --dport 22 -j ACCEPT\n\
            -A INPUT ! -p tcp -j ACCEPT\n\
            -A INPUT -s 10.192.0.1/32 -p tcp -m tcp --dport 22 -j ACCEPT\n\
            -A INPUT -s 10.192.0.2/32 -p tcp -m tcp --dport 22 -m comment --comment \"knockd\" -j ACCEPT\n\
            -A INPUT -s 10.192.0.3/32 -j DROP\n";
        assert_eq!(accept_rules(listing), 2);
        assert_eq!(accept_rules(""), 0);
    }

    #[test]
    fn counts_set_elements_from_nft_json() {
        let two = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"set": {"family": "inet", "name": "allow4", "table": "knockd", "flags": ["timeout"], "elem": [{"elem": {"val": {"concat": ["10.0.0.1", "tcp", 22]}, "timeout": 30, "expires": 29}}, {"elem": {"val": {"concat": ["10.0.0.2", "tcp", 22]}, "timeout": 30, "expires": 29}}]}}]}"#;
        assert_eq!(set_elements_in(two), 2);
        let empty = r#"{"nftables": [{"metainfo": {}}, {"set": {"name": "allow4", "flags": ["timeout"]}}]}"#;
        assert_eq!(set_elements_in(empty), 0);
        assert_eq!(set_elements_in("Error: No such file"), 0);
    }
}
