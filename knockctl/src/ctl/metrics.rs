//! `knockctl metrics`: the daemon's counters and gauges in the Prometheus text exposition
//! format (version 0.0.4), for node_exporter's textfile collector or any scraper run from a
//! timer. knockd itself listens on no TCP port.
//!
//! Every field of the wire's `Counters` is exported, including ones added after this file was
//! written: a number becomes `knockd_<field>_total`, a map of numbers (for example refusals
//! by reason) one series per key, labelled `reason`; `refused` and every `refused_<reason>`
//! field form the family `knockd_refusals_total{reason=...}`. Known fields get a better name
//! and help.

use knock_ipc::Status;
use serde_json::Value;

/// Known counters: wire field, metric name (without `knockd_` and `_total`), help text.
const COUNTERS: &[(&str, &str, &str)] = &[
    ("packets", "packets", "Packets captured and decoded."),
    (
        "stages",
        "knocks",
        "Knocks that advanced a sequence (log: Stage N).",
    ),
    ("opens", "opens", "Completed sequences (log: OPEN SESAME)."),
    (
        "resets",
        "resets",
        "Attempts ended by a knock out of sequence.",
    ),
    ("timeouts", "timeouts", "Attempts ended by Seq_Timeout."),
    (
        "evictions",
        "evictions",
        "Stage-1 attempts evicted to make room (MaxAttempts or a network's share).",
    ),
    (
        "commands_failed",
        "command_failures",
        "Commands or firewall changes that failed.",
    ),
    (
        "kernel_drops",
        "kernel_drops",
        "Packets the kernel dropped before knockd read them.",
    ),
    (
        "scanners",
        "scanners",
        "Sources the sweep guard found scanning.",
    ),
    (
        "log_lines_dropped",
        "log_lines_dropped",
        "Log lines dropped because the log (LogFile, syslog, stderr) could not keep up.",
    ),
    (
        "totp_clock_skew",
        "totp_clock_skew",
        "TOTP sequences knocked for a step just outside the accepted window: a client clock off by about two steps (or a late replay).",
    ),
    (
        "nft_tables_recreated",
        "nft_tables_recreated",
        "Firewall = nftables: times knockd re-created its table after another program removed or changed it (nft flush ruleset).",
    ),
];

/// Refusal counters (`refused`, `refused_<reason>`) form one family labelled by reason.
const REFUSALS: (&str, &str) = (
    "refusals",
    "Knocks or opens refused, by reason: first_knock (scanner penalty, network share or \
     table full of advanced attempts), pool_full, max_grants, start_network, start_queue, \
     start_displaced (a door's StartRate queue), replay (a TOTP step's sequence completed \
     from an address beyond those it may open), state_unwritable (the state file could not \
     record the open).",
);

/// The reason label of a refusal counter field, None for other fields.
fn refusal_reason(field: &str) -> Option<String> {
    match field {
        "refused" => Some("first_knock".to_string()),
        f => f.strip_prefix("refused_").map(sanitize),
    }
}

/// The exposition text for a status reply.
pub fn format_metrics(status: &Status) -> String {
    let mut out = String::new();
    gauge(
        &mut out,
        "up",
        "1 when knockctl could read knockd's status.",
        1,
    );
    out.push_str("# HELP knockd_info knockd's version and firewall backend.\n");
    out.push_str("# TYPE knockd_info gauge\n");
    out.push_str(&format!(
        "knockd_info{{version=\"{}\",firewall=\"{}\"}} 1\n",
        escape(&status.daemon_version),
        escape(&status.firewall)
    ));
    gauge(
        &mut out,
        "uptime_seconds",
        "Seconds since knockd started.",
        status.uptime_secs,
    );
    gauge(
        &mut out,
        "doors",
        "Doors configured.",
        u64::from(status.doors),
    );
    gauge(
        &mut out,
        "grants_open",
        "Grants open (addresses let in).",
        status.grants,
    );
    gauge(
        &mut out,
        "attempts_tracked",
        "Knock attempts in progress.",
        status.attempts,
    );
    gauge(
        &mut out,
        "attempts_max",
        "MaxAttempts: attempts tracked at most.",
        status.max_attempts,
    );
    gauge(
        &mut out,
        "state_write_failing",
        "1 while the state file cannot be written (opens are refused meanwhile).",
        u64::from(status.state_error.is_some()),
    );
    gauge(
        &mut out,
        "state_write_failing_since_seconds",
        "Unix time since which the state file cannot be written; 0 when it can.",
        status
            .state_error_since_unix_ms
            .map_or(0, |ms| u64::try_from(ms / 1000).unwrap_or(0)),
    );

    let fields = match serde_json::to_value(&status.counters) {
        Ok(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let mut refusals = Vec::new();
    for (field, value) in &fields {
        if let (Some(reason), Value::Number(n)) = (refusal_reason(field), value) {
            refusals.push((reason, n.to_string()));
            continue;
        }
        let (name, help) = COUNTERS
            .iter()
            .find(|(f, _, _)| f == field)
            .map(|(_, n, h)| ((*n).to_string(), (*h).to_string()))
            .unwrap_or_else(|| (sanitize(field), format!("knockd counter {field}.")));
        match value {
            Value::Number(n) => {
                header(&mut out, &name, &help, "counter");
                out.push_str(&format!("knockd_{name}_total {n}\n"));
            }
            Value::Object(by) => {
                header(&mut out, &name, &help, "counter");
                for (key, n) in by {
                    if let Value::Number(n) = n {
                        out.push_str(&format!(
                            "knockd_{name}_total{{reason=\"{}\"}} {n}\n",
                            escape(key)
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    if !refusals.is_empty() {
        let (name, help) = REFUSALS;
        header(&mut out, name, help, "counter");
        for (reason, n) in refusals {
            out.push_str(&format!("knockd_{name}_total{{reason=\"{reason}\"}} {n}\n"));
        }
    }
    out
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let suffix = if kind == "counter" { "_total" } else { "" };
    out.push_str(&format!("# HELP knockd_{name}{suffix} {help}\n"));
    out.push_str(&format!("# TYPE knockd_{name}{suffix} {kind}\n"));
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, help, "gauge");
    out.push_str(&format!("knockd_{name} {value}\n"));
}

/// A label value: backslash, double quote and newline escaped.
pub fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A metric name part: `[a-zA-Z0-9_]`, anything else becomes `_`.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use knock_ipc::Counters;

    fn status() -> Status {
        Status {
            daemon_version: "0.1.0".into(),
            uptime_secs: 7500,
            doors: 3,
            attempts: 4,
            max_attempts: 100_000,
            grants: 2,
            firewall: "iptables".into(),
            counters: Counters {
                packets: 1234,
                stages: 40,
                opens: 12,
                resets: 3,
                timeouts: 1,
                evictions: 0,
                commands_failed: 2,
                kernel_drops: 5,
                refused: 7,
                refused_pool_full: 1,
                log_lines_dropped: 3,
                refused_replay: 4,
                totp_clock_skew: 6,
                ..Counters::default()
            },
            ..Status::default()
        }
    }

    #[test]
    fn every_counter_and_gauge_in_exposition_format() {
        let text = format_metrics(&status());
        for line in [
            "knockd_up 1",
            "knockd_info{version=\"0.1.0\",firewall=\"iptables\"} 1",
            "knockd_uptime_seconds 7500",
            "knockd_doors 3",
            "knockd_grants_open 2",
            "knockd_attempts_tracked 4",
            "knockd_attempts_max 100000",
            "# TYPE knockd_packets_total counter",
            "knockd_packets_total 1234",
            "knockd_knocks_total 40",
            "knockd_opens_total 12",
            "knockd_resets_total 3",
            "knockd_timeouts_total 1",
            "knockd_evictions_total 0",
            "knockd_command_failures_total 2",
            "knockd_kernel_drops_total 5",
            "knockd_log_lines_dropped_total 3",
            "knockd_refusals_total{reason=\"first_knock\"} 7",
            "knockd_refusals_total{reason=\"pool_full\"} 1",
            "knockd_refusals_total{reason=\"max_grants\"} 0",
            // A TOTP replay is its own reason, not a refused first knock.
            "knockd_refusals_total{reason=\"replay\"} 4",
            "knockd_totp_clock_skew_total 6",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        // The format: every sample line is `name{labels} value`, each metric has HELP and TYPE.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = l.rsplit_once(' ').expect("name value");
            assert!(value.parse::<f64>().is_ok(), "{l}");
            let metric = name.split('{').next().expect("name");
            assert!(
                text.contains(&format!("# TYPE {metric} ")),
                "no TYPE for {metric}"
            );
            assert!(
                text.contains(&format!("# HELP {metric} ")),
                "no HELP for {metric}"
            );
        }
    }

    #[test]
    fn every_wire_counter_is_exported() {
        // A counter added to the wire shows up without touching this file.
        let fields = match serde_json::to_value(Counters::default()) {
            Ok(Value::Object(map)) => map,
            other => panic!("counters are not an object: {other:?}"),
        };
        let text = format_metrics(&status());
        for field in fields.keys() {
            if let Some(reason) = refusal_reason(field) {
                let line = format!("knockd_refusals_total{{reason=\"{reason}\"}} ");
                assert!(text.contains(&line), "{field} not exported:\n{text}");
                continue;
            }
            let name = COUNTERS
                .iter()
                .find(|(f, _, _)| f == field)
                .map(|(_, n, _)| (*n).to_string())
                .unwrap_or_else(|| sanitize(field));
            assert!(
                text.contains(&format!("knockd_{name}_total")),
                "{field} not exported:\n{text}"
            );
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(sanitize("refused-by reason"), "refused_by_reason");
    }
}
