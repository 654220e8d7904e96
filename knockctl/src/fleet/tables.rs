//! The lists of many hosts as one table with a HOST column, and their metrics as one
//! exposition with a `host` label. Pure.

use chrono::{DateTime, TimeZone};
use knock_ipc::{AttemptInfo, DoorInfo, GrantInfo, Status};

use crate::ctl::cli::Command;
use crate::ctl::metrics::{escape, format_metrics};
use crate::ctl::output;

/// Rows collected from every host that answered, in host order.
#[derive(Default)]
pub struct Tables {
    grants: Vec<(String, Vec<GrantInfo>)>,
    attempts: Vec<(String, Vec<AttemptInfo>)>,
    doors: Vec<(String, Vec<DoorInfo>)>,
    /// None: the host did not answer (`knockd_up 0`).
    metrics: Vec<(String, Option<Status>)>,
}

impl Tables {
    pub fn grants(&mut self, host: &str, grants: &[GrantInfo]) {
        self.grants.push((host.to_string(), grants.to_vec()));
    }

    pub fn attempts(&mut self, host: &str, attempts: &[AttemptInfo]) {
        self.attempts.push((host.to_string(), attempts.to_vec()));
    }

    pub fn doors(&mut self, host: &str, doors: &[DoorInfo]) {
        self.doors.push((host.to_string(), doors.to_vec()));
    }

    pub fn metrics(&mut self, host: &str, status: Option<&Status>) {
        self.metrics.push((host.to_string(), status.cloned()));
    }

    /// The table (or exposition) for `command`; empty for other commands.
    pub fn render<Tz: TimeZone>(
        &self,
        command: &Command,
        now: &DateTime<Tz>,
        width: Option<usize>,
    ) -> String {
        match command {
            Command::List => {
                let (hosts, rows) = flatten(&self.grants);
                output::grants_table(&rows, Some(&hosts), now, width)
            }
            Command::Attempts => {
                let (hosts, rows) = flatten(&self.attempts);
                output::attempts_table(&rows, Some(&hosts), width)
            }
            Command::Doors => {
                let (hosts, rows) = flatten(&self.doors);
                output::doors_table(&rows, Some(&hosts), width)
            }
            Command::Metrics => merged_metrics(&self.metrics),
            _ => String::new(),
        }
    }
}

/// Every host's rows in host order, and the host of each.
fn flatten<T: Clone>(per_host: &[(String, Vec<T>)]) -> (Vec<String>, Vec<T>) {
    per_host
        .iter()
        .flat_map(|(host, rows)| rows.iter().map(move |r| (host.clone(), r.clone())))
        .unzip()
}

/// Every host's exposition merged: each family's `# HELP` and `# TYPE` once, then its
/// samples from every host with `host="..."` as their first label. A host that did not
/// answer has `knockd_up{host="..."} 0` and nothing else.
pub fn merged_metrics(hosts: &[(String, Option<Status>)]) -> String {
    // Families in first-seen order: (header lines, samples).
    let mut families: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
    let family = |families: &mut Vec<(String, Vec<String>, Vec<String>)>, name: &str| match families
        .iter()
        .position(|(n, _, _)| n == name)
    {
        Some(i) => i,
        None => {
            families.push((name.to_string(), Vec::new(), Vec::new()));
            families.len() - 1
        }
    };
    let up_only = format_metrics(&Status::default());
    for (host, status) in hosts {
        let label = format!("host=\"{}\"", escape(host));
        let text = match status {
            Some(status) => format_metrics(status),
            None => up_only.clone(),
        };
        let mut current = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# ") {
                let name = rest.split_whitespace().nth(1).unwrap_or_default();
                let i = family(&mut families, name);
                current = Some(i);
                if !families[i].1.iter().any(|l| l == line) {
                    families[i].1.push(line.to_string());
                }
                continue;
            }
            let Some(i) = current else { continue };
            let up = families[i].0 == "knockd_up";
            if status.is_none() && !up {
                continue;
            }
            let sample = match (line.split_once('{'), line.split_once(' ')) {
                (Some((name, rest)), _) => format!("{name}{{{label},{rest}"),
                (None, Some((name, value))) => {
                    let value = if status.is_none() { "0" } else { value };
                    format!("{name}{{{label}}} {value}")
                }
                (None, None) => continue,
            };
            families[i].2.push(sample);
        }
    }
    let mut out = String::new();
    for (_, headers, samples) in families {
        if samples.is_empty() {
            continue;
        }
        for line in headers.iter().chain(&samples) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use knock_ipc::GrantInfo;

    fn grant(addr: &str) -> GrantInfo {
        GrantInfo {
            door: "ssh".into(),
            addr: addr.parse().expect("ip"),
            opened: "22/tcp (INPUT)".into(),
            opened_at_unix_ms: 0,
            expires_in_ms: Some(52_000),
            closes: "native rule delete".into(),
            refreshes: 0,
            kernel_expires_in_ms: None,
            closing: false,
            close_error: None,
            client: None,
        }
    }

    #[test]
    fn many_hosts_lists_are_one_table_with_a_host_column() {
        let mut t = Tables::default();
        t.grants("bastion1", &[grant("203.0.113.7")]);
        t.grants("node7", &[]);
        t.grants("web", &[grant("198.51.100.4"), grant("203.0.113.7")]);
        let text = t.render(&Command::List, &Utc::now(), Some(80));
        // Rows start with their host; wrapped cells continue on blank-host lines.
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with(' ')).collect();
        assert!(lines[0].starts_with("HOST      LEFT"), "{text}");
        assert!(lines[1].starts_with("bastion1  52s"), "{text}");
        assert!(
            lines[2].starts_with("web       52s") && lines[2].contains("198.51.100.4"),
            "{text}"
        );
        assert_eq!(lines.len(), 4, "{text}");
        let empty = Tables::default().render(&Command::List, &Utc::now(), Some(80));
        assert_eq!(empty, "no open grants\n");
    }

    #[test]
    fn metrics_carry_the_host_and_a_silent_host_is_down() {
        let mut status = Status::default();
        status.counters.opens = 7;
        status.counters.refused = 2;
        let text = merged_metrics(&[
            ("bastion1".to_string(), Some(status.clone())),
            ("node\"7".to_string(), None),
            ("web".to_string(), Some(status)),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        let up: Vec<&&str> = lines
            .iter()
            .filter(|l| l.starts_with("knockd_up{"))
            .collect();
        assert_eq!(
            up,
            [
                &"knockd_up{host=\"bastion1\"} 1",
                &"knockd_up{host=\"node\\\"7\"} 0",
                &"knockd_up{host=\"web\"} 1"
            ]
        );
        assert!(
            lines.contains(&"knockd_opens_total{host=\"web\"} 7"),
            "{text}"
        );
        assert!(
            lines.contains(&"knockd_refusals_total{host=\"bastion1\",reason=\"first_knock\"} 2"),
            "{text}"
        );
        assert!(
            !text.contains("host=\"node\\\"7\"} 0\nknockd_opens"),
            "{text}"
        );
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.starts_with("# TYPE knockd_opens_total"))
                .count(),
            1
        );
        // Every sample follows its family's header.
        let opens_type = lines
            .iter()
            .position(|l| l.starts_with("# TYPE knockd_opens_total"));
        let opens = lines
            .iter()
            .position(|l| l.starts_with("knockd_opens_total"));
        assert!(opens_type < opens);
    }
}
