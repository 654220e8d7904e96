//! `nft -f` text for knockd's table and for element changes. Pure: config in, text out.

use super::{table, Elem, ElemOp, CHAIN, SET4, SET6};
use crate::config::{Config, Proto};
use std::collections::BTreeSet;
use std::fmt::Write;

/// Default packet mark set on packets accepted by a grant (`NftMark`), "KN" in ASCII.
pub const DEFAULT_MARK: u32 = 0x4b4e;

/// How the table's comment names its owner: the state file of the knockd that manages it.
const OWNER: &str = "managed by knockd with state file ";
/// Longest state file path written into the comment (nftables keeps 256 bytes of comment).
const OWNER_MAX: usize = 160;

/// What the table must look like for a config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableSpec {
    /// Every (protocol, port) of every native door (`Open =`): new connections to them are
    /// dropped unless a grant allows them.
    pub protected: BTreeSet<(Proto, u16)>,
    /// Mark set on packets a grant accepts, for an admin's default-drop chain to accept.
    pub mark: Option<u32>,
    /// The SPA port when a door takes single-packet knocks: every datagram to it is dropped
    /// (knockd reads them from its capture), so nothing answers, not even ICMP.
    pub spa_port: Option<u16>,
    /// The state file of the knockd that owns the table (written into its comment, so a
    /// second knockd can tell the table is not its own). Empty: no owner written.
    pub owner: String,
}

impl TableSpec {
    pub fn from_config(config: &Config) -> TableSpec {
        let protected = config
            .doors
            .iter()
            .flat_map(|d| d.open.iter().map(|o| (o.proto, o.port)))
            .collect();
        TableSpec {
            protected,
            mark: config.options.nft_mark(),
            spa_port: config
                .doors
                .iter()
                .any(|d| !d.spa.is_empty())
                .then(|| config.options.spa_port()),
            owner: owner_text(&config.options.state_file()),
        }
    }

    /// One transaction that creates the table or brings it up to date, keeping the elements
    /// (open grants) of the allow sets, and removing `stale` elements (ports no longer
    /// protected). Touches no other table.
    pub fn script(&self, stale: &[Elem]) -> String {
        let t = table();
        let mut s = String::new();
        let owner = if self.owner.is_empty() {
            "managed by knockd".to_string()
        } else {
            format!("{OWNER}{}", self.owner)
        };
        let _ = writeln!(
            s,
            "add table inet {t} {{ comment \"port-knock grants, {owner}; remove with knockd --firewall-cleanup\"; }}"
        );
        for (set, ty) in [(SET4, "ipv4_addr"), (SET6, "ipv6_addr")] {
            let _ = writeln!(
                s,
                "add set inet {t} {set} {{ type {ty} . inet_proto . inet_service; flags timeout; }}"
            );
        }
        let _ = writeln!(
            s,
            "add chain inet {t} {CHAIN} {{ type filter hook input priority filter - 10; policy accept; }}"
        );
        let _ = writeln!(s, "flush chain inet {t} {CHAIN}");
        let rule = |s: &mut String, r: &str| {
            let _ = writeln!(s, "add rule inet {t} {CHAIN} {r}");
        };
        if let Some(p) = self.spa_port {
            rule(&mut s, &format!("udp dport {p} counter drop"));
        }
        rule(&mut s, "ct state established,related accept");
        let mark = self
            .mark
            .map(|m| format!("meta mark set {m:#x} "))
            .unwrap_or_default();
        rule(
            &mut s,
            &format!("ip saddr . meta l4proto . th dport @{SET4} {mark}accept"),
        );
        rule(
            &mut s,
            &format!("ip6 saddr . meta l4proto . th dport @{SET6} {mark}accept"),
        );
        if !self.protected.is_empty() {
            let ports: Vec<String> = self
                .protected
                .iter()
                .map(|(p, port)| format!("{p} . {port}"))
                .collect();
            rule(
                &mut s,
                &format!(
                    "meta l4proto . th dport {{ {} }} counter drop",
                    ports.join(", ")
                ),
            );
        }
        for e in stale {
            remove(&mut s, e);
        }
        s
    }

    /// Elements of `listed` whose port is no longer protected: removed at reload.
    pub fn stale(&self, listed: &[Elem]) -> Vec<Elem> {
        listed
            .iter()
            .filter(|e| !self.protected.contains(&(e.proto, e.port)))
            .copied()
            .collect()
    }
}

fn remove(s: &mut String, e: &Elem) {
    let t = table();
    // add + delete: never fails when the kernel already expired the element.
    let _ = writeln!(s, "add element inet {t} {} {{ {e} timeout 1s }}", e.set());
    let _ = writeln!(s, "delete element inet {t} {} {{ {e} }}", e.set());
}

/// A state file path as the table comment carries it: no quote, backslash or control
/// character (replaced by `_`), at most `OWNER_MAX` (160) bytes.
pub fn owner_text(state_file: &std::path::Path) -> String {
    let mut out = String::new();
    for c in state_file.to_string_lossy().chars() {
        let c = if c == '"' || c == '\\' || c == ';' || c.is_control() {
            '_'
        } else {
            c
        };
        if out.len() + c.len_utf8() > OWNER_MAX {
            break;
        }
        out.push(c);
    }
    out
}

/// The owner (state file, as [`owner_text`] wrote it) named in `nft list table` text; None
/// when the table carries no owner (made by an older knockd).
pub fn owner_in_listing(text: &str) -> Option<String> {
    let at = text.find(OWNER)? + OWNER.len();
    let rest = &text[at..];
    let end = rest.find("; remove with")?;
    Some(rest[..end].to_string())
}

/// Element changes as one `nft -f` transaction.
pub fn ops_script(ops: &[ElemOp]) -> String {
    let t = table();
    let mut s = String::new();
    for op in ops {
        match op {
            ElemOp::Put { elem, timeout } => {
                let ms = timeout.as_millis().max(1);
                let add = format!(
                    "add element inet {t} {} {{ {elem} timeout {ms}ms }}",
                    elem.set()
                );
                let _ = writeln!(s, "{add}");
                let _ = writeln!(s, "delete element inet {t} {} {{ {elem} }}", elem.set());
                let _ = writeln!(s, "{add}");
            }
            ElemOp::Remove { elem } => remove(&mut s, elem),
        }
    }
    s
}

/// Removes knockd's table, and nothing else; succeeds when it is already gone.
pub fn cleanup_script() -> String {
    let t = table();
    format!("add table inet {t}\ndelete table inet {t}\n")
}

/// The one line an admin adds to a default-drop input chain `family table chain` so that
/// packets knockd accepted get through it too.
pub fn admin_line(family: &str, table: &str, chain: &str, mark: Option<u32>) -> String {
    match mark {
        Some(m) => format!("nft insert rule {family} {table} {chain} meta mark {m:#x} accept"),
        None => format!(
            "set NftMark = {DEFAULT_MARK:#x} in [options] of knockd.conf, then: nft insert rule {family} {table} {chain} meta mark {DEFAULT_MARK:#x} accept"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use std::time::Duration;

    const CONF: &str = "\
[options]
    Firewall = nftables
[ssh]
    sequence = 7000,8000,9000
    open = 22/tcp
    cmd_timeout = 30
[dns]
    sequence = 7100,8100,9100
    open = 53/udp, 443
[cmd]
    sequence = 7200,8200,9200
    command = /bin/true
";

    fn spec() -> TableSpec {
        TableSpec::from_config(&parse(CONF, "knockd.conf").expect("valid").config)
    }

    #[test]
    fn table_script_snapshot() {
        insta::assert_snapshot!(spec().script(&[]));
    }

    #[test]
    fn table_without_mark_or_doors() {
        let s = TableSpec::default().script(&[]);
        assert!(!s.contains("mark"), "{s}");
        assert!(!s.contains("drop"), "{s}");
        assert!(s.contains("@allow4 accept"), "{s}");
    }

    #[test]
    fn reload_removes_elements_of_ports_no_longer_protected() {
        let s = spec();
        let e = |a: &str, p: Proto, port: u16| Elem {
            addr: a.parse().expect("ip"),
            proto: p,
            port,
        };
        let listed = [
            e("10.0.0.2", Proto::Tcp, 22),
            e("10.0.0.2", Proto::Tcp, 2222),
            e("fd99::2", Proto::Udp, 53),
        ];
        let stale = s.stale(&listed);
        assert_eq!(stale, vec![e("10.0.0.2", Proto::Tcp, 2222)]);
        let text = s.script(&stale);
        assert!(
            text.ends_with(
                "add element inet knockd allow4 { 10.0.0.2 . tcp . 2222 timeout 1s }\n\
                 delete element inet knockd allow4 { 10.0.0.2 . tcp . 2222 }\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn ops_script_snapshot() {
        let ops = [
            ElemOp::Put {
                elem: Elem {
                    addr: "10.0.0.12".parse().expect("ip"),
                    proto: Proto::Tcp,
                    port: 22,
                },
                timeout: Duration::from_secs(30),
            },
            ElemOp::Remove {
                elem: Elem {
                    addr: "fd99:77::2".parse().expect("ip"),
                    proto: Proto::Udp,
                    port: 53,
                },
            },
        ];
        insta::assert_snapshot!(ops_script(&ops));
    }

    #[test]
    fn admin_line_names_table_and_chain() {
        assert_eq!(
            admin_line("inet", "filter", "input", Some(DEFAULT_MARK)),
            "nft insert rule inet filter input meta mark 0x4b4e accept"
        );
        assert!(admin_line("inet", "fw", "in", None).contains("NftMark = 0x4b4e"));
    }
}

#[cfg(test)]
mod config_tests {
    use crate::config::{parse, FirewallKind};

    #[test]
    fn firewall_and_mark_keys() {
        let c = parse(
            "[options]\nFirewall = nftables\nNftMark = 0x10\n",
            "knockd.conf",
        )
        .expect("valid")
        .config;
        assert_eq!(c.options.firewall, FirewallKind::Nftables);
        assert_eq!(c.options.nft_mark(), Some(0x10));
        let d = parse("[options]\nUseSyslog\n", "knockd.conf")
            .expect("valid")
            .config;
        assert_eq!(d.options.firewall, FirewallKind::Iptables);
        assert_eq!(d.options.nft_mark(), Some(0x4b4e));
        let off = parse("[options]\nNftMark = off\n", "knockd.conf")
            .expect("valid")
            .config;
        assert_eq!(off.options.nft_mark(), None);
        let e = parse("[options]\nFirewall = pf\nNftMark = 0xzz\n", "knockd.conf")
            .expect_err("invalid");
        let text = e.to_string();
        assert!(text.contains("use iptables or nftables"), "{text}");
        assert!(text.contains("invalid NftMark '0xzz'"), "{text}");
    }
}
