//! The iptables backend: a batch is one `iptables-restore -w 5 --noflush` transaction per
//! address family (`ip6tables-restore` for IPv6), with the same `-I` (first in the chain) and
//! `-D` lines a single `iptables` call would take. Checks (`-C`) run one process each: they
//! only happen at start and for re-knocks (a burst of three per grant, then one a second, plus
//! a quick lane of 8 a second for all grants together: `grants::checks`); a batch with many of
//! them (the restore of many grants) is answered by one `iptables -S` per chain, which also
//! puts a batch's many deletes in the chain's order (see `order_deletes`).
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

/// A listed rule (`iptables -S` line) that carries a knockd mark (`knockd:door` or
/// `knockd@TAG:door`) and is exactly what knockd writes: the rule it is, or None.
pub fn parse_marked(chain: &str, line: &str, v6: bool) -> Option<FwRule> {
    let line = listed_line(line);
    let w: Vec<&str> = line.split(' ').collect();
    let [a, c, s, addr, p, proto, m, proto2, d, port, m2, cm, cc, mark, j, accept] = w[..] else {
        return None;
    };
    if [a, c, s, p, m, d, m2, cm, cc, j, accept]
        != [
            "-A",
            chain,
            "-s",
            "-p",
            "-m",
            "--dport",
            "-m",
            "comment",
            "--comment",
            "-j",
            "ACCEPT",
        ]
        || proto != proto2
    {
        return None;
    }
    let (ip, prefix) = addr.split_once('/')?;
    let src: std::net::IpAddr = ip.parse().ok()?;
    if src.is_ipv6() != v6 || prefix != if v6 { "128" } else { "32" } {
        return None;
    }
    let proto = match proto {
        "tcp" => crate::config::Proto::Tcp,
        "udp" => crate::config::Proto::Udp,
        _ => return None,
    };
    let (instance, door) = match mark.strip_prefix("knockd@") {
        Some(rest) => {
            let (tag, door) = rest.split_once(':')?;
            (Some(tag.to_string()), door)
        }
        None => (None, mark.strip_prefix("knockd:")?),
    };
    let rule = FwRule {
        chain: chain.to_string(),
        src,
        proto,
        port: port.parse().ok()?,
        door: door.to_string(),
        instance,
    };
    // Exactly what knockd writes (door names as the comment carries them, a valid tag).
    (rule.is_valid() && !door.is_empty() && restore_line(&rule, "-A") == line).then_some(rule)
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

pub(super) fn describe(e: &Exit) -> String {
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
    /// A delete: about how many rules iptables compares it with before its match (see
    /// [`order_deletes`]); 0 for an insert.
    depth: usize,
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

    /// The rules of `chain` as `-A CHAIN spec` lines, in chain order, from one
    /// `iptables -S CHAIN`.
    async fn list_chain(&self, r: &FwRule) -> Option<Listing> {
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
        Some(Listing::new(&String::from_utf8_lossy(&stdout)))
    }

    /// `-C` of `r`, answered from `listed` (chain → its rules) when the chain was listed.
    async fn check_in(&self, listed: &Listed, r: &FwRule) -> OpOutcome {
        match listed.get(&r.chain) {
            Some(Some(l)) if l.contains(&restore_line(r, "-A")) => OpOutcome::Ok,
            Some(Some(_)) => OpOutcome::Absent,
            _ => self.check(r).await,
        }
    }

    async fn apply_family(&self, ops: Indexed, out: &mut [OpOutcome]) {
        let mut writes = Vec::new();
        // Many checks or deletes: one listing per chain answers the checks and orders the
        // deletes (a failed listing: one -C each, deletes in submission order).
        let mut listed = Listed::new();
        let valid = || {
            ops.iter()
                .map(|(_, op)| op)
                .filter(|op| op.rule().is_valid())
        };
        let checks = valid()
            .filter(|op| matches!(op, Op::Check { .. } | Op::Refresh { .. }))
            .count();
        let deletes = valid().filter(|op| matches!(op, Op::Delete { .. })).count();
        for op in valid() {
            let bulk = match op {
                Op::Check { .. } | Op::Refresh { .. } => checks >= BULK_CHECKS,
                Op::Delete { .. } => deletes >= BULK_DELETES,
                Op::Add { .. } => false,
            };
            let r = op.rule();
            if bulk && !listed.contains_key(&r.chain) {
                let rules = self.list_chain(r).await;
                listed.insert(r.chain.clone(), rules);
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
                    depth: 0,
                }),
                Op::Delete { rule } => writes.push(Write {
                    idx,
                    rule,
                    insert: false,
                    ok: OpOutcome::Ok,
                    depth: 0,
                }),
                Op::Check { rule } => out[idx] = self.check_in(&listed, &rule).await,
                Op::Refresh { rule, .. } => match self.check_in(&listed, &rule).await {
                    OpOutcome::Absent => writes.push(Write {
                        idx,
                        rule,
                        insert: true,
                        ok: OpOutcome::Absent,
                        depth: 0,
                    }),
                    o => out[idx] = o,
                },
            }
        }
        let writes = order_deletes(writes, &mut listed, out);
        for t in transactions(writes) {
            self.write_all(t, out).await;
        }
    }
}

/// From this many deletes in one batch (the close of many grants restored past their
/// deadline, a flood's grants expiring together), one listing per chain puts them in chain
/// order. iptables-nft finds the rule of a `-D` by comparing it with the chain's rules from
/// the first one on, so deleting 4,000 rules from the oldest (the chain's end: `-I` puts the
/// newest first) took 20 s and from the chain's head 0.4 s; a deleted rule the listing does not
/// hold is already gone (`Absent`) instead of failing the transaction.
const BULK_DELETES: usize = 8;

/// What one transaction may cost, in rules compared by its deletes (iptables-nft compares
/// about 400,000 a second here): a batch of deletes deep in a long chain is split so that no
/// transaction comes near [`FIREWALL_TIME_LIMIT`] (killed, then op by op).
const TRANSACTION_COMPARES: usize = 200_000;

/// Largest batch the queue hands this backend: every close that is waiting (5,000 grants
/// restored past their deadline) goes in one batch, so its deletes run in chain order.
pub const MAX_IPTABLES_BATCH: usize = 16_384;

/// `writes` cut into transactions of at most [`TRANSACTION_COMPARES`], in order.
fn transactions(writes: Vec<Write>) -> Vec<Vec<Write>> {
    let mut out: Vec<Vec<Write>> = Vec::new();
    let mut cost = 0;
    for w in writes {
        let c = w.depth + 1;
        match out.last_mut() {
            Some(t) if cost + c <= TRANSACTION_COMPARES => t.push(w),
            _ => {
                cost = 0;
                out.push(vec![w]);
            }
        }
        cost += c;
    }
    out
}

/// Chain → its listing (None: the listing failed).
type Listed = std::collections::HashMap<String, Option<Listing>>;

/// One `iptables -S CHAIN`: where each rule line stands (a line can be there twice).
struct Listing {
    at: std::collections::HashMap<String, std::collections::VecDeque<usize>>,
}

impl Listing {
    fn new(text: &str) -> Listing {
        let mut at: std::collections::HashMap<String, std::collections::VecDeque<usize>> =
            std::collections::HashMap::new();
        for (i, l) in text.lines().enumerate() {
            at.entry(listed_line(l)).or_default().push_back(i);
        }
        Listing { at }
    }

    fn contains(&self, line: &str) -> bool {
        self.at.get(line).is_some_and(|v| !v.is_empty())
    }

    /// The position of the first copy of `line` not yet taken by a delete, taking it.
    fn take(&mut self, line: &str) -> Option<usize> {
        self.at.get_mut(line)?.pop_front()
    }
}

/// Each run of consecutive deletes in chain order (by `listed`): a rule inserted earlier in
/// the batch first (`-I` put it at the head), then the listed ones from the head down. A delete
/// whose chain was listed and that finds neither is `Absent` and leaves the batch. The relative
/// order of a delete and the inserts around it is kept: only deletes (of distinct rules, or
/// copies of one) trade places.
fn order_deletes(writes: Vec<Write>, listed: &mut Listed, out: &mut [OpOutcome]) -> Vec<Write> {
    let mut inserted: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    // Listed rules of each chain deleted so far: no longer in front of the next ones.
    let mut taken: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut done: Vec<Write> = Vec::with_capacity(writes.len());
    let mut run: Vec<((String, usize), Write)> = Vec::new();
    let mut flush = |run: &mut Vec<((String, usize), Write)>, done: &mut Vec<Write>| {
        run.sort_by(|a, b| a.0.cmp(&b.0));
        for ((chain, key), mut w) in run.drain(..) {
            if key > 0 && key < usize::MAX {
                let before = taken.entry(chain).or_default();
                w.depth = (key - 1).saturating_sub(*before);
                *before += 1;
            }
            done.push(w);
        }
    };
    for w in writes {
        let line = restore_line(&w.rule, "-A");
        if w.insert {
            flush(&mut run, &mut done);
            *inserted.entry(line).or_default() += 1;
            done.push(w);
            continue;
        }
        let key = match inserted.get_mut(&line).filter(|n| **n > 0) {
            Some(n) => {
                *n -= 1;
                0
            }
            None => match listed.get_mut(&w.rule.chain) {
                Some(Some(l)) => match l.take(&line) {
                    Some(p) => p + 1,
                    None => {
                        out[w.idx] = OpOutcome::Absent;
                        continue;
                    }
                },
                // Not listed: after the listed ones, in submission order.
                _ => usize::MAX,
            },
        };
        run.push(((w.rule.chain.clone(), key), w));
    }
    flush(&mut run, &mut done);
    done
}

impl Firewall for IptablesRestore {
    fn name(&self) -> &'static str {
        "iptables"
    }

    fn max_batch(&self) -> usize {
        MAX_IPTABLES_BATCH
    }

    fn marked(&self, chains: Vec<String>) -> Option<BoxFuture<Result<Vec<FwRule>, String>>> {
        let me = self.clone();
        Some(Box::pin(async move {
            let mut out = Vec::new();
            for chain in chains {
                for v6 in [false, true] {
                    let p = if v6 { &me.v6 } else { &me.v4 };
                    let argv = vec![
                        p.single.clone(),
                        "-w".into(),
                        XTABLES_WAIT_SECS.to_string(),
                        "-S".into(),
                        chain.clone(),
                    ];
                    let (e, stdout) = proc::run_output(&argv, FIREWALL_TIME_LIMIT).await;
                    if !e.success() {
                        return Err(format!("{} -S {chain}: {}", p.single, describe(&e)));
                    }
                    out.extend(
                        String::from_utf8_lossy(&stdout)
                            .lines()
                            .filter_map(|l| parse_marked(&chain, l, v6)),
                    );
                }
            }
            Ok(out)
        }))
    }

    fn spa_drop(
        &self,
        tag: String,
        port: Option<u16>,
        unwanted: &'static str,
        occasion: super::spa_drop::Occasion,
    ) -> Option<BoxFuture<Vec<String>>> {
        let programs = [self.v4.single.clone(), self.v6.single.clone()];
        Some(Box::pin(super::spa_drop::sync(
            programs, tag, port, unwanted, occasion,
        )))
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
            instance: None,
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
        let set = Listing::new(listing);
        assert!(set.contains(&restore_line(&rule("10.0.0.12"), "-A")));
        assert!(set.contains(&restore_line(&rule("fd99:77::2"), "-A")));
        assert!(!set.contains(&restore_line(&rule("10.0.0.13"), "-A")));
    }

    fn write(idx: usize, src: &str, insert: bool) -> Write {
        Write {
            idx,
            rule: rule(src),
            insert,
            ok: OpOutcome::Ok,
            depth: 0,
        }
    }

    /// What `order_deletes` makes of `writes` against a listing of `chain_order` (INPUT).
    fn ordered(
        listing: Option<&[&str]>,
        writes: Vec<Write>,
    ) -> (Vec<(usize, bool)>, Vec<OpOutcome>) {
        let mut listed = Listed::new();
        let text = listing.map(|srcs| {
            let mut t =
                String::from("-P INPUT ACCEPT\n-A INPUT -p tcp -m tcp --dport 22 -j DROP\n");
            for s in srcs {
                t.push_str(
                    &restore_line(&rule(s), "-A").replace("knockd:open_SSH", "\"knockd:open_SSH\""),
                );
                t.push('\n');
            }
            Listing::new(&t)
        });
        listed.insert("INPUT".into(), text);
        let mut out = vec![OpOutcome::Failed("not applied".into()); writes.len()];
        let got = order_deletes(writes, &mut listed, &mut out);
        (got.iter().map(|w| (w.idx, w.insert)).collect(), out)
    }

    #[test]
    fn deletes_go_in_chain_order_and_listed_absentees_leave_the_batch() {
        // The chain holds .3, .2, .1 (newest first); the closes come oldest first.
        let chain: &[&str] = &["10.0.0.3", "10.0.0.2", "10.0.0.1"];
        let (got, out) = ordered(
            Some(chain),
            vec![
                write(0, "10.0.0.1", false),
                write(1, "10.0.0.9", false),
                write(2, "10.0.0.2", false),
                write(3, "10.0.0.3", false),
            ],
        );
        assert_eq!(got, [(3, false), (2, false), (0, false)]);
        assert_eq!(out[1], OpOutcome::Absent, "not in the chain: already gone");
        // Without a listing: as submitted, nothing decided.
        let (got, out) = ordered(
            None,
            vec![write(0, "10.0.0.1", false), write(1, "10.0.0.9", false)],
        );
        assert_eq!(got, [(0, false), (1, false)]);
        assert!(out.iter().all(OpOutcome::is_failed));
    }

    #[test]
    fn a_delete_never_crosses_an_insert_and_finds_the_rules_the_batch_inserted() {
        let chain: &[&str] = &["10.0.0.2", "10.0.0.1"];
        let (got, out) = ordered(
            Some(chain),
            vec![
                write(0, "10.0.0.1", false),
                write(1, "10.0.0.1", true),
                write(2, "10.0.0.1", false),
                write(3, "10.0.0.2", false),
                write(4, "10.0.0.5", true),
                write(5, "10.0.0.5", false),
                // Listed once, deleted once already (idx 0), inserted once (idx 1), taken
                // by idx 2: gone.
                write(6, "10.0.0.1", false),
            ],
        );
        assert_eq!(
            got,
            [
                (0, false),
                (1, true),
                (2, false),
                (3, false),
                (4, true),
                (5, false)
            ]
        );
        assert_eq!(out[6], OpOutcome::Absent);
    }

    #[test]
    fn deep_deletes_are_split_so_no_transaction_nears_the_time_limit() {
        let deep = |idx, depth| Write {
            depth,
            ..write(idx, "10.0.0.1", false)
        };
        let sizes = |ws: Vec<Write>| -> Vec<Vec<usize>> {
            transactions(ws)
                .iter()
                .map(|t| t.iter().map(|w| w.idx).collect())
                .collect()
        };
        assert_eq!(
            sizes(vec![deep(0, 150_000), deep(1, 60_000), deep(2, 10)]),
            [vec![0], vec![1, 2]]
        );
        // Deletes at the chain's head cost one compare each: thousands in one transaction.
        assert_eq!(sizes((0..5000).map(|i| deep(i, 0)).collect()).len(), 1);
        // The depth counts the rules still in front: after the first delete, the next one
        // (listed right behind it) is at the head.
        let chain: Vec<String> = (1..=3).map(|i| format!("10.0.0.{i}")).collect();
        let chain: Vec<&str> = chain.iter().map(String::as_str).collect();
        let mut listed = Listed::new();
        let mut t = String::new();
        for s in &chain {
            t.push_str(&restore_line(&rule(s), "-A"));
            t.push('\n');
        }
        listed.insert("INPUT".into(), Some(Listing::new(&t)));
        let mut out = vec![OpOutcome::Ok; 2];
        let got = order_deletes(
            vec![write(0, "10.0.0.3", false), write(1, "10.0.0.2", false)],
            &mut listed,
            &mut out,
        );
        assert_eq!(got.iter().map(|w| w.depth).collect::<Vec<_>>(), [1, 1]);
    }

    #[test]
    fn marked_rules_are_read_back_exactly_and_nothing_else() {
        let tagged = FwRule {
            door: "open_SSH".into(),
            instance: Some("0a1b2c3d".into()),
            ..rule("10.0.0.12")
        };
        let listed = |r: &FwRule| {
            restore_line(r, "-A").replace(&r.comment(), &format!("\"{}\"", r.comment()))
        };
        assert_eq!(tagged.comment(), "knockd@0a1b2c3d:open_SSH");
        assert_eq!(
            parse_marked("INPUT", &listed(&tagged), false),
            Some(tagged.clone())
        );
        let old = FwRule {
            door: "open_SSH".into(),
            ..rule("fd99:77::2")
        };
        assert_eq!(
            parse_marked("INPUT", &listed(&old), true),
            Some(old.clone())
        );
        // Wrong family, another chain, not knockd's shape: not a marked rule.
        assert_eq!(parse_marked("INPUT", &listed(&old), false), None);
        assert_eq!(parse_marked("FORWARD", &listed(&tagged), false), None);
        for l in [
            "-A INPUT -s 10.0.0.12/32 -p tcp -m tcp --dport 22 -m comment --comment \"knockd:ssh\" -j DROP",
            "-A INPUT -s 10.0.0.0/8 -p tcp -m tcp --dport 22 -m comment --comment \"knockd:ssh\" -j ACCEPT",
            "-A INPUT -s 10.0.0.12/32 -p tcp -m tcp --dport 22 -m comment --comment \"admin\" -j ACCEPT",
            "-A INPUT -s 10.0.0.12/32 -p tcp -m tcp --dport 22 -m comment --comment \"knockd@XYZ:ssh\" -j ACCEPT",
            "-A INPUT -s 10.0.0.12/32 -i eth0 -p tcp -m tcp --dport 22 -m comment --comment \"knockd:ssh\" -j ACCEPT",
            "-A INPUT -s 10.0.0.12/32 -p tcp -m tcp --dport 22 -m comment --comment \"knockd:\" -j ACCEPT",
            "-P INPUT ACCEPT",
        ] {
            assert_eq!(parse_marked("INPUT", l, false), None, "{l}");
        }
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
