//! The SPA port's DROP rule with `Firewall = iptables`: knockd reads single-packet knocks from
//! its capture and binds no socket, so without a rule the kernel answers every datagram to
//! `SPA_Port` with ICMP port unreachable. With nftables, knockd's table drops the port (see
//! `nftables::script`); with iptables, knockd inserts one rule per address family, first in
//! INPUT:
//!
//! ```text
//! iptables  -I INPUT 1 -p udp -m udp --dport 62201 -m comment --comment knockd@TAG:spa-drop -j DROP
//! ip6tables -I INPUT 1 -p udp -m udp --dport 62201 -m comment --comment knockd@TAG:spa-drop -j DROP
//! ```
//!
//! It matches UDP to that one port only, so it never blocks anything else, and grants (ACCEPT
//! rules inserted with `-I` later) go in front of it for their own ports. Its comment carries
//! the instance tag (`TAG`, from the state file's path) and its own kind, `spa-drop`: the
//! start-up cleanup of grant rules ([`super::iptables::parse_marked`]: `-s ADDR ... -j
//! ACCEPT`) never takes it for a grant, and another instance's drop rule is never touched.
//!
//! [`sync`] brings INPUT to exactly what is wanted (one rule for the port, or none) from what
//! `iptables -S INPUT` lists: a rule left by a `kill -9` is kept, never doubled; a rule for an
//! old port goes once the new one is in (a failed insert keeps the old one); a clean exit and
//! `knockd --firewall-cleanup` remove it. The engine also runs it every
//! [`CHECK_EVERY`] while a rule is wanted ([`Occasion::Check`]), so a rule
//! another program removed (`iptables-restore`, `iptables -F INPUT`) is put back within that
//! time. [`plan`] (pure) decides the steps, [`said`] (pure) what a step that worked logs: a
//! check that finds the rule in place logs nothing.

use crate::config::Config;
use crate::proc::{self, FIREWALL_TIME_LIMIT, XTABLES_WAIT_SECS};
use std::time::Duration;

/// How often the rule is checked while one is wanted: a rule another program removed is put
/// back within this time (the port answers probes with ICMP port unreachable meanwhile). A
/// check is one `iptables -S INPUT` and one `ip6tables -S INPUT` (each takes the xtables lock
/// briefly; nothing is written when the rule is there): 3 ms of CPU for both with a short
/// INPUT chain, 35 ms with 2,000 rules in each (BENCHMARKS.md, "The SPA drop rule's periodic
/// check"): every 15 s that is 0.02 % of a core, 0.23 % with long chains, for a window of at
/// most 15 s in which probes are answered.
pub const CHECK_EVERY: Duration = Duration::from_secs(15);

/// The kind in the comment: `knockd@TAG:spa-drop`.
pub const KIND: &str = "spa-drop";
/// The chain the rule goes in (first).
pub const CHAIN: &str = "INPUT";

/// What knockd does about the SPA port for a config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// No door takes SPA.
    None,
    /// `Firewall = nftables`: table inet knockd drops the port.
    Nftables(u16),
    /// `Firewall = iptables` and native doors: knockd's own DROP rules (this module).
    Iptables(u16),
    /// `Firewall = iptables` and no native door (`Open =`): knockd runs no firewall program of
    /// its own and adds no rule; the admin must drop the port.
    Unprotected(u16),
}

impl Protection {
    pub fn of(config: &Config) -> Protection {
        let Some(port) = crate::capture::spa_port(config) else {
            return Protection::None;
        };
        match config.options.firewall {
            crate::config::FirewallKind::Nftables => Protection::Nftables(port),
            crate::config::FirewallKind::Iptables
                if config.doors.iter().any(|d| !d.open.is_empty()) =>
            {
                Protection::Iptables(port)
            }
            crate::config::FirewallKind::Iptables => Protection::Unprotected(port),
        }
    }

    /// The port of knockd's iptables DROP rule, if it wants one.
    pub fn iptables_port(self) -> Option<u16> {
        match self {
            Protection::Iptables(p) => Some(p),
            _ => None,
        }
    }

    /// Start, reload and `knockd -t`: the warning when nothing drops the port.
    pub fn warning(self) -> Option<String> {
        let Protection::Unprotected(p) = self else {
            return None;
        };
        Some(format!(
            "warning: SPA_Port {p}/udp: no door opens natively (Open =) and Firewall = iptables, so knockd adds no rule for it and the kernel answers probes with ICMP port unreachable: drop it yourself (iptables -I INPUT -p udp --dport {p} -j DROP, and the same with ip6tables), or set Firewall = nftables (knockd's table drops it)"
        ))
    }

    /// `knockd -t`: how the port is kept silent (`tag`: this knockd's instance tag).
    pub fn note(self, tag: &str) -> Option<String> {
        match self {
            Protection::None | Protection::Unprotected(_) => None,
            Protection::Nftables(p) => Some(format!(
                "SPA port {p}/udp: table inet {} drops it (nothing answers a probe)",
                super::nftables::table()
            )),
            Protection::Iptables(p) => Some(format!(
                "SPA port {p}/udp: at start knockd inserts `{}` (and the same with ip6tables), puts it back within {} s if another program removes it, deletes it when it stops: nothing answers a probe",
                command("iptables", "-I INPUT 1", tag, p),
                CHECK_EVERY.as_secs()
            )),
        }
    }
}

/// The comment: `knockd@TAG:spa-drop`.
pub fn comment(tag: &str) -> String {
    format!("knockd@{tag}:{KIND}")
}

/// The rule's match and target: `-p udp -m udp --dport PORT -m comment --comment
/// knockd@TAG:spa-drop -j DROP`.
pub fn spec(tag: &str, port: u16) -> Vec<String> {
    [
        "-p",
        "udp",
        "-m",
        "udp",
        "--dport",
        &port.to_string(),
        "-m",
        "comment",
        "--comment",
        &comment(tag),
        "-j",
        "DROP",
    ]
    .map(str::to_string)
    .to_vec()
}

/// `PROGRAM OP spec...` as one line, for logs (`op`: `-I INPUT 1`, `-D INPUT`).
pub fn command(program: &str, op: &str, tag: &str, port: u16) -> String {
    format!("{program} {op} {}", spec(tag, port).join(" "))
}

/// A line of `iptables -S INPUT` that is a knockd SPA drop rule exactly as knockd writes it:
/// its instance tag and port. Anything else (a grant, an admin's rule, another shape): None.
pub fn parse(line: &str) -> Option<(String, u16)> {
    let line = line.trim().replace('"', "");
    let rest = line.strip_prefix("-A ")?.strip_prefix(CHAIN)?;
    let w: Vec<&str> = rest.split(' ').skip(1).collect();
    let [_, _, _, _, _, port, _, _, _, mark, _, _] = w[..] else {
        return None;
    };
    let tag = mark.strip_prefix("knockd@")?.strip_suffix(KIND)?;
    let tag = tag.strip_suffix(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    (super::is_instance_tag(tag) && rest == format!(" {}", spec(tag, port).join(" ")))
        .then(|| (tag.to_string(), port))
}

/// Why a rule goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// A second copy of the wanted rule (two starts raced, or an admin copied it).
    Duplicate,
    /// The rule of an older SPA port: the new one is in.
    Moved,
    /// No rule is wanted now (no SPA door, knockd stops, `--firewall-cleanup`).
    Unwanted,
}

/// When a [`sync`] runs: what its lines say depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occasion {
    /// knockd starts: a rule found in place was left by an earlier run (`kill -9`).
    Start,
    /// A reload applied: the rule follows the new config.
    Reload,
    /// The periodic check while a rule is wanted: a missing rule was removed by another
    /// program; a rule in place is the normal case and logs nothing.
    Check,
    /// A clean exit, or `knockd --firewall-cleanup`: no rule is wanted.
    Stop,
}

/// One step of a [`plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Insert the rule for this port first in INPUT.
    Insert(u16),
    /// The wanted rule is already there: nothing to do.
    Keep(u16),
    /// Delete one copy of the rule for this port.
    Delete(u16, Why),
}

/// The steps that make INPUT hold exactly the rule for `want` (None: no rule), given the
/// ports of this instance's drop rules `listed` in it, in chain order: the wanted rule first
/// (so a failed insert stops before anything is deleted), then the deletes.
pub fn plan(want: Option<u16>, listed: &[u16]) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut kept = false;
    if let Some(p) = want {
        steps.push(if listed.contains(&p) {
            Step::Keep(p)
        } else {
            Step::Insert(p)
        });
    }
    for &port in listed {
        let why = match want {
            Some(p) if p == port && !kept => {
                kept = true;
                continue;
            }
            Some(p) if p == port => Why::Duplicate,
            Some(_) => Why::Moved,
            None => Why::Unwanted,
        };
        steps.push(Step::Delete(port, why));
    }
    steps
}

/// What a step that worked logs, by occasion (None: nothing). `program`: `iptables` or
/// `ip6tables`; `unwanted`: why no rule is wanted (for [`Why::Unwanted`]).
pub fn said(
    step: Step,
    occasion: Occasion,
    program: &str,
    tag: &str,
    unwanted: &str,
) -> Option<String> {
    Some(match step {
        // Only a start can find a rule it did not put there itself (a `kill -9` left it); at
        // a reload or a check a rule in place is simply what is wanted.
        Step::Keep(p) if occasion == Occasion::Start => format!(
            "SPA port {p}/udp: {program}: DROP rule {} already in {CHAIN} (left by an earlier run): kept",
            comment(tag)
        ),
        Step::Keep(_) => return None,
        Step::Insert(p) if occasion == Occasion::Check => format!(
            "warning: SPA port {p}/udp: {program}: DROP rule {} was missing from {CHAIN} (removed by another program: a ruleset restore, a flush): put back `{}`: nothing answers a probe",
            comment(tag),
            command(program, "-I INPUT 1", tag, p)
        ),
        Step::Insert(p) => format!(
            "SPA port {p}/udp: inserted `{}`: nothing answers a probe",
            command(program, "-I INPUT 1", tag, p)
        ),
        Step::Delete(p, why) => format!(
            "SPA port {p}/udp: deleted `{}` ({})",
            command(program, "-D INPUT", tag, p),
            why.said(unwanted)
        ),
    })
}

impl Why {
    /// Why a rule goes, for the log (`unwanted`: why no rule is wanted now).
    fn said(self, unwanted: &str) -> &str {
        match self {
            Why::Duplicate => "a second copy",
            Why::Moved => "no longer the SPA port",
            Why::Unwanted => unwanted,
        }
    }
}

/// Make INPUT of each family hold exactly this instance's drop rule for `want` (None: none),
/// with `programs` (`iptables`, `ip6tables`). `unwanted`: why no rule is wanted, for the
/// log (`knockd stops`); `occasion`: when it runs, for the log (see [`said`]). Returns the
/// lines to log (failures start with `error: `); a family whose chain cannot be listed is
/// left as it is (an error only when a rule is wanted).
pub async fn sync(
    programs: [String; 2],
    tag: String,
    want: Option<u16>,
    unwanted: &str,
    occasion: Occasion,
) -> Vec<String> {
    let mut out = Vec::new();
    for program in programs {
        sync_family(&program, &tag, want, unwanted, occasion, &mut out).await;
    }
    out
}

fn wait() -> String {
    XTABLES_WAIT_SECS.to_string()
}

async fn sync_family(
    program: &str,
    tag: &str,
    want: Option<u16>,
    unwanted: &str,
    occasion: Occasion,
    out: &mut Vec<String>,
) {
    let listed = match listed(program, tag).await {
        Ok(l) => l,
        Err(why) => {
            match want {
                Some(p) => out.push(format!(
                    "error: SPA port {p}/udp: cannot list {program} {CHAIN} ({why}): no DROP rule checked or inserted, the kernel may answer probes with ICMP port unreachable"
                )),
                None => tracing::debug!("{program} -S {CHAIN}: {why}"),
            }
            return;
        }
    };
    for step in plan(want, &listed) {
        let r = match step {
            Step::Keep(_) => Ok(()),
            Step::Insert(p) => write(program, &["-I", CHAIN, "1"], tag, p).await,
            Step::Delete(p, _) => write(program, &["-D", CHAIN], tag, p).await,
        };
        match (r, step) {
            (Ok(()), _) => out.extend(said(step, occasion, program, tag, unwanted)),
            (Err(e), Step::Insert(p)) => {
                out.push(format!(
                    "error: SPA port {p}/udp: `{}` failed ({e}): the kernel answers probes with ICMP port unreachable{}",
                    command(program, "-I INPUT 1", tag, p),
                    if listed.is_empty() { "" } else { "; the DROP rule of the previous port is kept" }
                ));
                return;
            }
            (Err(e), Step::Delete(p, why)) => out.push(format!(
                "error: SPA port {p}/udp: `{}` ({}) failed ({e}): delete it by hand",
                command(program, "-D INPUT", tag, p),
                why.said(unwanted)
            )),
            (Err(_), Step::Keep(_)) => {}
        }
    }
}

async fn write(program: &str, op: &[&str], tag: &str, port: u16) -> Result<(), String> {
    let mut argv: Vec<String> = vec![program.to_string(), "-w".into(), wait()];
    argv.extend(op.iter().map(|s| s.to_string()));
    argv.extend(spec(tag, port));
    let e = proc::run(&argv, None, FIREWALL_TIME_LIMIT).await;
    if e.success() {
        Ok(())
    } else {
        Err(super::iptables::describe(&e))
    }
}

/// The ports of instance `tag`'s drop rules in INPUT, in chain order (`program -S INPUT`).
async fn listed(program: &str, tag: &str) -> Result<Vec<u16>, String> {
    let argv = [program, "-w", &wait(), "-S", CHAIN].map(str::to_string);
    let (e, stdout) = proc::run_output(&argv, FIREWALL_TIME_LIMIT).await;
    if !e.success() {
        return Err(super::iptables::describe(&e));
    }
    Ok(String::from_utf8_lossy(&stdout)
        .lines()
        .filter_map(parse)
        .filter(|(t, _)| t == tag)
        .map(|(_, p)| p)
        .collect())
}

/// `knockd --firewall-cleanup`: delete this knockd's SPA port DROP rules (its instance tag,
/// from `options`' state file) from INPUT of both families, nothing else. Refused while that
/// knockd runs (its port would answer probes until its next reload), `--force` or not. The
/// lines to print.
pub fn cleanup(options: &crate::config::Options) -> anyhow::Result<Vec<String>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tag = options.instance_tag();
    let programs = ["iptables".to_string(), "ip6tables".to_string()];
    rt.block_on(async move {
        let mut found = 0;
        for p in &programs {
            found += listed(p, &tag).await.map_or(0, |l| l.len());
        }
        if found == 0 {
            return Ok(vec![format!(
                "no SPA port DROP rule of this knockd ({}) in INPUT",
                comment(&tag)
            )]);
        }
        let state = options.state_file();
        if let Some(pid) = crate::state::holder(&state) {
            let who = if pid == 0 {
                "a running knockd".to_string()
            } else {
                format!("knockd (pid {pid})")
            };
            anyhow::bail!(
                "the SPA port DROP rule {} is in use: {who} runs with state file {} and its SPA port would answer probes again (--force does not change that); stop it first (it deletes the rule itself)",
                comment(&tag),
                state.display()
            );
        }
        Ok(sync(programs, tag, None, "--firewall-cleanup", Occasion::Stop).await)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FirewallKind;

    const TAG: &str = "0a1b2c3d";

    /// `iptables -S INPUT` prints the comment quoted.
    fn listed(tag: &str, port: u16) -> String {
        format!("-A INPUT {}", spec(tag, port).join(" "))
            .replace(&comment(tag), &format!("\"{}\"", comment(tag)))
    }

    #[test]
    fn the_rule_is_udp_to_the_spa_port_only_with_its_own_kind_of_tag() {
        assert_eq!(
            command("iptables", "-I INPUT 1", TAG, 62201),
            "iptables -I INPUT 1 -p udp -m udp --dport 62201 -m comment --comment knockd@0a1b2c3d:spa-drop -j DROP"
        );
        assert_eq!(
            listed(TAG, 62201),
            "-A INPUT -p udp -m udp --dport 62201 -m comment --comment \"knockd@0a1b2c3d:spa-drop\" -j DROP"
        );
    }

    #[test]
    fn listed_drop_rules_are_read_back_exactly_and_nothing_else() {
        assert_eq!(parse(&listed(TAG, 62201)), Some((TAG.into(), 62201)));
        assert_eq!(parse(&listed("ffff0000", 1)), Some(("ffff0000".into(), 1)));
        for l in [
            // Another chain, another protocol, a source, another target, no tag, a bad tag,
            // another kind (a grant's door), the admin's own rule, a policy line.
            "-A FORWARD -p udp -m udp --dport 62201 -m comment --comment \"knockd@0a1b2c3d:spa-drop\" -j DROP",
            "-A INPUT -p tcp -m tcp --dport 62201 -m comment --comment \"knockd@0a1b2c3d:spa-drop\" -j DROP",
            "-A INPUT -s 10.0.0.1/32 -p udp -m udp --dport 62201 -m comment --comment \"knockd@0a1b2c3d:spa-drop\" -j DROP",
            "-A INPUT -p udp -m udp --dport 62201 -m comment --comment \"knockd@0a1b2c3d:spa-drop\" -j ACCEPT",
            "-A INPUT -p udp -m udp --dport 62201 -m comment --comment \"knockd:spa-drop\" -j DROP",
            "-A INPUT -p udp -m udp --dport 62201 -m comment --comment \"knockd@XYZ:spa-drop\" -j DROP",
            "-A INPUT -p udp -m udp --dport 62201 -m comment --comment \"knockd@0a1b2c3d:ssh\" -j DROP",
            "-A INPUT -p udp -m udp --dport 0 -m comment --comment \"knockd@0a1b2c3d:spa-drop\" -j DROP",
            "-A INPUT -p udp -m udp --dport 62201 -j DROP",
            "-A INPUTX -p udp -m udp --dport 62201 -m comment --comment \"knockd@0a1b2c3d:spa-drop\" -j DROP",
            "-P INPUT ACCEPT",
        ] {
            assert_eq!(parse(l), None, "{l}");
        }
    }

    /// The start-up cleanup of grant rules reads ACCEPTs from one address only: the drop
    /// rule is never a grant, and a grant of a door named `spa-drop` never a drop rule.
    #[test]
    fn the_drop_rule_and_grants_never_pass_for_each_other() {
        assert_eq!(
            super::super::iptables::parse_marked("INPUT", &listed(TAG, 62201), false),
            None
        );
        let grant = "-A INPUT -s 10.0.0.12/32 -p udp -m udp --dport 62201 -m comment --comment \"knockd@0a1b2c3d:spa-drop\" -j ACCEPT";
        assert!(super::super::iptables::parse_marked("INPUT", grant, false).is_some());
        assert_eq!(parse(grant), None);
    }

    #[test]
    fn plans_keep_one_rule_and_insert_before_deleting() {
        use Step::*;
        // Start: none there; a kill -9 left it; it was there twice.
        assert_eq!(plan(Some(62201), &[]), [Insert(62201)]);
        assert_eq!(plan(Some(62201), &[62201]), [Keep(62201)]);
        assert_eq!(
            plan(Some(62201), &[62201, 62201]),
            [Keep(62201), Delete(62201, Why::Duplicate)]
        );
        // Reload to another port: the new one first, then the old one goes.
        assert_eq!(
            plan(Some(62202), &[62201]),
            [Insert(62202), Delete(62201, Why::Moved)]
        );
        assert_eq!(
            plan(Some(62202), &[62201, 62202, 62202]),
            [
                Keep(62202),
                Delete(62201, Why::Moved),
                Delete(62202, Why::Duplicate)
            ]
        );
        // No SPA door any more, a clean exit, --firewall-cleanup.
        assert_eq!(
            plan(None, &[62201, 62202]),
            [Delete(62201, Why::Unwanted), Delete(62202, Why::Unwanted)]
        );
        assert_eq!(plan(None, &[]), []);
    }

    /// A rule found in place is news only at start (a `kill -9` left it): a reload or a
    /// periodic check that finds it logs nothing; a check that has to insert it says another
    /// program removed it.
    #[test]
    fn what_each_occasion_says() {
        use Occasion::*;
        let say = |step, occasion| said(step, occasion, "iptables", TAG, "knockd stops");
        assert_eq!(
            say(Step::Keep(62201), Start).as_deref(),
            Some("SPA port 62201/udp: iptables: DROP rule knockd@0a1b2c3d:spa-drop already in INPUT (left by an earlier run): kept")
        );
        for o in [Reload, Check, Stop] {
            assert_eq!(say(Step::Keep(62201), o), None, "{o:?}");
        }
        let insert = "SPA port 62201/udp: inserted `iptables -I INPUT 1 -p udp -m udp --dport 62201 -m comment --comment knockd@0a1b2c3d:spa-drop -j DROP`: nothing answers a probe";
        for o in [Start, Reload] {
            assert_eq!(
                say(Step::Insert(62201), o).as_deref(),
                Some(insert),
                "{o:?}"
            );
        }
        assert_eq!(
            say(Step::Insert(62201), Check).as_deref(),
            Some("warning: SPA port 62201/udp: iptables: DROP rule knockd@0a1b2c3d:spa-drop was missing from INPUT (removed by another program: a ruleset restore, a flush): put back `iptables -I INPUT 1 -p udp -m udp --dport 62201 -m comment --comment knockd@0a1b2c3d:spa-drop -j DROP`: nothing answers a probe")
        );
        assert_eq!(
            say(Step::Delete(62201, Why::Unwanted), Stop).as_deref(),
            Some("SPA port 62201/udp: deleted `iptables -D INPUT -p udp -m udp --dport 62201 -m comment --comment knockd@0a1b2c3d:spa-drop -j DROP` (knockd stops)")
        );
        assert!(say(Step::Delete(62201, Why::Duplicate), Check)
            .expect("line")
            .ends_with("(a second copy)"));
    }

    /// A stand-in for iptables: `-S` prints `listing`, every call is written to `calls`, and
    /// `-I` fails while `fail-insert` exists.
    fn fake_iptables(dir: &std::path::Path, listing: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(dir.join("listing"), listing).expect("listing");
        let script = dir.join("fake-iptables");
        let d = dir.display();
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$*\" >> {d}/calls\ncase \"$3\" in\n -S) cat {d}/listing ;;\n -I) [ -e {d}/fail-insert ] && {{ echo 'iptables: boom' >&2; exit 4; }} ;;\nesac\nexit 0\n"
            ),
        )
        .expect("script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        script.display().to_string()
    }

    fn calls(dir: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// A reload to another port: the new rule goes in first, then the old one goes; when the
    /// insert fails, the old rule stays and the error says so.
    #[tokio::test]
    async fn a_failed_insert_keeps_the_old_rule() {
        let dir = tempfile::tempdir().expect("tempdir");
        let listing = format!(
            "-P INPUT ACCEPT\n{}\n{}\n",
            listed(TAG, 62201),
            listed("ffff0000", 62202)
        );
        let fake = fake_iptables(dir.path(), &listing);
        std::fs::write(dir.path().join("fail-insert"), "").expect("flag");
        let lines = sync(
            [fake.clone(), fake.clone()],
            TAG.into(),
            Some(62202),
            "x",
            Occasion::Reload,
        )
        .await;
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("error: SPA port 62202/udp: `")
                && lines[0].contains("(iptables: boom)")
                && lines[0].ends_with("the DROP rule of the previous port is kept"),
            "{lines:?}"
        );
        assert!(
            calls(dir.path()).iter().all(|c| !c.contains("-D")),
            "{:?}",
            calls(dir.path())
        );

        std::fs::remove_file(dir.path().join("fail-insert")).expect("rm");
        std::fs::remove_file(dir.path().join("calls")).expect("rm");
        let lines = sync(
            [fake.clone(), fake],
            TAG.into(),
            Some(62202),
            "x",
            Occasion::Reload,
        )
        .await;
        let want = [
            "-w 5 -S INPUT".to_string(),
            format!("-w 5 -I INPUT 1 {}", spec(TAG, 62202).join(" ")),
            format!("-w 5 -D INPUT {}", spec(TAG, 62201).join(" ")),
        ];
        // Both families; another instance's rule (ffff0000) is never touched.
        assert_eq!(
            calls(dir.path()),
            [want.clone(), want].concat(),
            "{lines:?}"
        );
        assert!(lines[1].ends_with("(no longer the SPA port)"), "{lines:?}");
    }

    fn config(text: &str, firewall: FirewallKind) -> Config {
        let mut c = crate::config::parse(text, "k.conf").expect("config").config;
        c.options.firewall = firewall;
        c
    }

    #[test]
    fn who_keeps_the_port_silent() {
        let native = "[options]\n SPA_Port = 40000\n[ssh]\n SPA = alice\n Open = 22/tcp\n";
        let command = "[ssh]\n SPA = alice\n Start_Command = /bin/true %IP%\n";
        let mixed = format!("{command}[web]\n Sequence = 7000,8000\n Open = 443/tcp\n");
        let none = "[web]\n Sequence = 7000,8000\n Open = 443/tcp\n";
        let of = |t: &str, f| Protection::of(&config(t, f));
        assert_eq!(
            of(native, FirewallKind::Iptables),
            Protection::Iptables(40000)
        );
        assert_eq!(
            of(native, FirewallKind::Nftables),
            Protection::Nftables(40000)
        );
        assert_eq!(
            of(&mixed, FirewallKind::Iptables),
            Protection::Iptables(62201)
        );
        assert_eq!(
            of(command, FirewallKind::Iptables),
            Protection::Unprotected(62201)
        );
        assert_eq!(
            of(command, FirewallKind::Nftables),
            Protection::Nftables(62201)
        );
        assert_eq!(of(none, FirewallKind::Iptables), Protection::None);
        let w = of(command, FirewallKind::Iptables)
            .warning()
            .expect("warning");
        assert!(
            w.starts_with("warning: SPA_Port 62201/udp: no door opens natively"),
            "{w}"
        );
        assert!(
            w.contains("iptables -I INPUT -p udp --dport 62201 -j DROP"),
            "{w}"
        );
        assert_eq!(of(native, FirewallKind::Iptables).warning(), None);
        assert_eq!(
            of(native, FirewallKind::Iptables).note(TAG).expect("note"),
            "SPA port 40000/udp: at start knockd inserts `iptables -I INPUT 1 -p udp -m udp --dport 40000 -m comment --comment knockd@0a1b2c3d:spa-drop -j DROP` (and the same with ip6tables), puts it back within 15 s if another program removes it, deletes it when it stops: nothing answers a probe"
        );
        assert_eq!(of(none, FirewallKind::Iptables).note(TAG), None);
    }
}
