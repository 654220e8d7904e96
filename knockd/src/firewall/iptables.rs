//! The iptables backend: a batch is one `iptables-restore -w 5 --noflush` transaction per
//! address family (`ip6tables-restore` for IPv6), with the same `-I` (first in the chain) and
//! `-D` lines a single `iptables` call would take. Checks (`-C`) run one process each: they
//! only happen at start and for re-knocks, at most once per grant per second; a batch with
//! many of them (the restore of many grants) is answered by one `iptables -S` per chain.
//!
//! When a transaction fails, iptables-restore names the line: that op is retried alone (a
//! delete of a rule already gone is then reported `Absent`, its check decides) and the rest is
//! applied again, so one stale rule never fails the other grants of the batch. Every program
//! runs with [`proc::FIREWALL_TIME_LIMIT`] and is killed after it.

use super::{BoxFuture, Firewall, FwRule, Op, OpOutcome};
use crate::proc::{self, Exit, FIREWALL_TIME_LIMIT, XTABLES_WAIT_SECS};

/// After this many failed transactions in one batch, the rest goes op by op.
const MAX_RESTORE_RETRIES: usize = 4;
/// From this many checks in one batch (a restore of many grants, re-knocks under a flood),
/// one `iptables -S CHAIN` listing answers them all instead of one `iptables -C` each (about
/// 30 ms each with a few thousand rules: 2,000 restored grants took a minute, holding up
/// every knock behind them in the firewall queue).
const BULK_CHECKS: usize = 8;

/// The `iptables` / `iptables-restore` programs (from `PATH`, like knockd's commands).
#[derive(Debug, Clone)]
pub struct IptablesRestore {
    v4: Programs,
    v6: Programs,
}

#[derive(Debug, Clone)]
struct Programs {
    single: String,
    restore: String,
}

impl Default for IptablesRestore {
    fn default() -> Self {
        IptablesRestore {
            v4: Programs {
                single: "iptables".into(),
                restore: "iptables-restore".into(),
            },
            v6: Programs {
                single: "ip6tables".into(),
                restore: "ip6tables-restore".into(),
            },
        }
    }
}

/// The match and target of a rule: `-s IP/32 -p tcp -m tcp --dport 22 -m comment --comment
/// knockd:door -j ACCEPT`. Every word comes from a validated field (address, protocol, port,
/// sanitised comment); the chain is checked by [`FwRule::is_valid`] before use.
pub fn rule_spec(r: &FwRule) -> Vec<String> {
    let prefix = if r.src.is_ipv6() { 128 } else { 32 };
    vec![
        "-s".into(),
        format!("{}/{prefix}", r.src),
        "-p".into(),
        r.proto.to_string(),
        "-m".into(),
        r.proto.to_string(),
        "--dport".into(),
        r.port.to_string(),
        "-m".into(),
        "comment".into(),
        "--comment".into(),
        r.comment(),
        "-j".into(),
        "ACCEPT".into(),
    ]
}

/// `iptables -w 5 OP CHAIN spec...` (ip6tables for IPv6): what one op costs without batching.
pub fn argv(r: &FwRule, op: &str) -> Vec<String> {
    let mut v = vec![
        if r.src.is_ipv6() {
            "ip6tables"
        } else {
            "iptables"
        }
        .to_string(),
        "-w".into(),
        XTABLES_WAIT_SECS.to_string(),
        op.into(),
        r.chain.clone(),
    ];
    v.extend(rule_spec(r));
    v
}

/// One line of an iptables-restore input: `-I CHAIN spec...`.
fn restore_line(r: &FwRule, op: &str) -> String {
    let mut v = vec![op.to_string(), r.chain.clone()];
    v.extend(rule_spec(r));
    v.join(" ")
}

/// A line of `iptables -S CHAIN` in the form [`restore_line`] writes with `-A` (the quotes
/// iptables puts around comments removed: knockd's comments have no spaces or quotes).
fn listed_line(l: &str) -> String {
    l.trim().replace('"', "")
}

/// The text of one transaction.
pub fn restore_input<'a>(lines: impl IntoIterator<Item = &'a str>) -> String {
    let mut s = String::from("*filter\n");
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s.push_str("COMMIT\n");
    s
}

/// `iptables-restore: line 3 failed...` → 3.
fn failed_line(stderr: &str) -> Option<usize> {
    let rest = &stderr[stderr.find("line ")? + 5..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    rest[digits.len()..]
        .starts_with(" failed")
        .then(|| digits.parse().ok())
        .flatten()
}

fn describe(e: &Exit) -> String {
    match e {
        Exit::Status { code, stderr } if stderr.is_empty() => match code {
            Some(c) => format!("exit status {c}"),
            None => "killed by a signal".into(),
        },
        Exit::Status { stderr, .. } => stderr.clone(),
        Exit::TimedOut(d) => format!(
            "no answer within {}s (xtables lock held?): killed",
            d.as_secs()
        ),
        Exit::SpawnError(e) => e.clone(),
    }
}

/// Ops with their position in the batch.
type Indexed = Vec<(usize, Op)>;

/// A write that goes through a transaction: `-I` or `-D`.
struct Write {
    idx: usize,
    rule: FwRule,
    insert: bool,
    /// Outcome when it succeeds (`Absent` for the re-add of a refresh).
    ok: OpOutcome,
}

impl IptablesRestore {
    fn programs(&self, r: &FwRule) -> &Programs {
        if r.src.is_ipv6() {
            &self.v6
        } else {
            &self.v4
        }
    }

    async fn single(&self, r: &FwRule, op: &str) -> Exit {
        let mut a = argv(r, op);
        a[0] = self.programs(r).single.clone();
        proc::run(&a, None, FIREWALL_TIME_LIMIT).await
    }

    /// `-C`: Ok (present), Absent (exit 1), Failed (anything else).
    async fn check(&self, r: &FwRule) -> OpOutcome {
        match self.single(r, "-C").await {
            e if e.success() => OpOutcome::Ok,
            Exit::Status { code: Some(1), .. } => OpOutcome::Absent,
            e => OpOutcome::Failed(describe(&e)),
        }
    }

    /// One write on its own; a failed delete whose rule is gone is `Absent`.
    async fn write_alone(&self, w: &Write) -> OpOutcome {
        let e = self
            .single(&w.rule, if w.insert { "-I" } else { "-D" })
            .await;
        if e.success() {
            return w.ok.clone();
        }
        if !w.insert && self.check(&w.rule).await == OpOutcome::Absent {
            return OpOutcome::Absent;
        }
        OpOutcome::Failed(describe(&e))
    }

    /// Apply writes of one family: transactions while they fail on an identifiable line.
    async fn write_all(&self, mut writes: Vec<Write>, out: &mut [OpOutcome]) {
        let mut retries = 0;
        while let Some(first) = writes.first() {
            let program = self.programs(&first.rule).restore.clone();
            let lines: Vec<String> = writes
                .iter()
                .map(|w| restore_line(&w.rule, if w.insert { "-I" } else { "-D" }))
                .collect();
            let input = restore_input(lines.iter().map(String::as_str));
            let argv = vec![
                program,
                "-w".into(),
                XTABLES_WAIT_SECS.to_string(),
                "--noflush".into(),
            ];
            let e = proc::run(&argv, Some(input.as_bytes()), FIREWALL_TIME_LIMIT).await;
            if e.success() {
                for w in writes {
                    out[w.idx] = w.ok;
                }
                return;
            }
            let bad = match &e {
                Exit::Status { stderr, .. } => failed_line(stderr)
                    .and_then(|l| l.checked_sub(2))
                    .filter(|i| *i < writes.len()),
                _ => None,
            };
            retries += 1;
            match bad {
                Some(i) if retries <= MAX_RESTORE_RETRIES => {
                    let w = writes.remove(i);
                    out[w.idx] = self.write_alone(&w).await;
                }
                _ => {
                    // Unknown cause (lock held, time-out): each op on its own says which.
                    for w in &writes {
                        out[w.idx] = self.write_alone(w).await;
                    }
                    return;
                }
            }
        }
    }

    /// The rules of `chain` as `-A CHAIN spec` lines, from one `iptables -S CHAIN`.
    async fn list_chain(&self, r: &FwRule) -> Option<std::collections::HashSet<String>> {
        let argv = vec![
            self.programs(r).single.clone(),
            "-w".into(),
            XTABLES_WAIT_SECS.to_string(),
            "-S".into(),
            r.chain.clone(),
        ];
        let (e, stdout) = proc::run_output(&argv, FIREWALL_TIME_LIMIT).await;
        if !e.success() {
            tracing::debug!("iptables -S {}: {}", r.chain, describe(&e));
            return None;
        }
        Some(
            String::from_utf8_lossy(&stdout)
                .lines()
                .map(listed_line)
                .collect(),
        )
    }

    /// `-C` of `r`, answered from `listed` (chain → its rules) when the chain was listed.
    async fn check_in(
        &self,
        listed: &std::collections::HashMap<String, Option<std::collections::HashSet<String>>>,
        r: &FwRule,
    ) -> OpOutcome {
        match listed.get(&r.chain) {
            Some(Some(rules)) if rules.contains(&restore_line(r, "-A")) => OpOutcome::Ok,
            Some(Some(_)) => OpOutcome::Absent,
            _ => self.check(r).await,
        }
    }

    async fn apply_family(&self, ops: Indexed, out: &mut [OpOutcome]) {
        let mut writes = Vec::new();
        // Many checks: one listing per chain answers them (a failed listing: one -C each).
        let mut listed = std::collections::HashMap::new();
        let checks: Vec<&FwRule> = ops
            .iter()
            .filter(|(_, op)| matches!(op, Op::Check { .. } | Op::Refresh { .. }))
            .map(|(_, op)| op.rule())
            .filter(|r| r.is_valid())
            .collect();
        if checks.len() >= BULK_CHECKS {
            for r in checks {
                if !listed.contains_key(&r.chain) {
                    let rules = self.list_chain(r).await;
                    listed.insert(r.chain.clone(), rules);
                }
            }
        }
        for (idx, op) in ops {
            if !op.rule().is_valid() {
                out[idx] = OpOutcome::Failed(format!(
                    "invalid chain name {:?} (letters, digits, _-. only)",
                    op.rule().chain
                ));
                continue;
            }
            match op {
                Op::Add { rule, .. } => writes.push(Write {
                    idx,
                    rule,
                    insert: true,
                    ok: OpOutcome::Ok,
                }),
                Op::Delete { rule } => writes.push(Write {
                    idx,
                    rule,
                    insert: false,
                    ok: OpOutcome::Ok,
                }),
                Op::Check { rule } => out[idx] = self.check_in(&listed, &rule).await,
                Op::Refresh { rule, .. } => match self.check_in(&listed, &rule).await {
                    OpOutcome::Absent => writes.push(Write {
                        idx,
                        rule,
                        insert: true,
                        ok: OpOutcome::Absent,
                    }),
                    o => out[idx] = o,
                },
            }
        }
        self.write_all(writes, out).await;
    }
}

impl Firewall for IptablesRestore {
    fn name(&self) -> &'static str {
        "iptables"
    }

    fn apply(&self, ops: Vec<Op>) -> BoxFuture<Vec<OpOutcome>> {
        let me = self.clone();
        Box::pin(async move {
            let mut out = vec![OpOutcome::Failed("not applied".into()); ops.len()];
            let (v6, v4): (Indexed, Indexed) = ops
                .into_iter()
                .enumerate()
                .partition(|(_, op)| op.rule().src.is_ipv6());
            me.apply_family(v4, &mut out).await;
            me.apply_family(v6, &mut out).await;
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Proto;

    fn rule(src: &str) -> FwRule {
        FwRule {
            chain: "INPUT".into(),
            src: src.parse().expect("ip"),
            proto: Proto::Tcp,
            port: 22,
            door: "open SSH".into(),
        }
    }

    #[test]
    fn argv_and_restore_lines_are_the_same_rule() {
        assert_eq!(
            argv(&rule("10.0.0.12"), "-I").join(" "),
            "iptables -w 5 -I INPUT -s 10.0.0.12/32 -p tcp -m tcp --dport 22 -m comment --comment knockd:open_SSH -j ACCEPT"
        );
        assert_eq!(argv(&rule("fd99:77::2"), "-D")[0], "ip6tables");
        assert_eq!(argv(&rule("fd99:77::2"), "-D")[6], "fd99:77::2/128");
        let l = restore_line(&rule("10.0.0.12"), "-I");
        assert_eq!(
            restore_input([l.as_str()]),
            "*filter\n-I INPUT -s 10.0.0.12/32 -p tcp -m tcp --dport 22 -m comment --comment knockd:open_SSH -j ACCEPT\nCOMMIT\n"
        );
    }

    #[test]
    fn listed_rules_compare_with_what_knockd_writes() {
        // `iptables -S INPUT` (iptables-nft and -legacy quote the comment).
        let listing = "-P INPUT ACCEPT\n-A INPUT -s 10.0.0.12/32 -p tcp -m tcp --dport 22 -m comment --comment \"knockd:open_SSH\" -j ACCEPT\n-A INPUT -s fd99:77::2/128 -p tcp -m tcp --dport 22 -m comment --comment \"knockd:open_SSH\" -j ACCEPT\n";
        let set: std::collections::HashSet<String> = listing.lines().map(listed_line).collect();
        assert!(set.contains(&restore_line(&rule("10.0.0.12"), "-A")));
        assert!(set.contains(&restore_line(&rule("fd99:77::2"), "-A")));
        assert!(!set.contains(&restore_line(&rule("10.0.0.13"), "-A")));
    }

    #[test]
    fn finds_the_failed_line() {
        assert_eq!(
            failed_line("iptables-restore: line 3 failed: Bad rule (does a matching rule exist in that chain?)."),
            Some(3)
        );
        assert_eq!(failed_line("iptables-restore: line 12 failed"), Some(12));
        assert_eq!(
            failed_line("Another app is currently holding the xtables lock"),
            None
        );
        assert_eq!(failed_line("line x failed"), None);
    }
}
