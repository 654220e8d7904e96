//! Door-level checks that need every key of a door (errors), and the warnings about
//! doors that parse but are probably not what the admin wants.

use super::error::ConfigError;
use super::keys::{key_name, Key};
use super::model::{Command6, Door};
use super::values::program_name;
use super::warn::Warning;

/// Errors and warnings found in one file, in the order found.
pub(super) struct Findings<'a> {
    file: &'a str,
    pub(super) errors: Vec<ConfigError>,
    pub(super) warnings: Vec<Warning>,
}

impl<'a> Findings<'a> {
    pub(super) fn new(file: &'a str) -> Self {
        Self {
            file,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub(super) fn error(&mut self, line: usize, message: impl Into<String>) {
        self.errors
            .push(ConfigError::new(self.file, line, message.into()));
    }

    pub(super) fn warn(&mut self, line: usize, door: Option<&str>, message: impl Into<String>) {
        self.warnings.push(Warning {
            file: self.file.to_string(),
            line,
            door: door.map(str::to_string),
            message: message.into(),
        });
    }
}

/// Door-level checks (need every key of the door) and warnings. `line_of` gives the line
/// where the door set a key, if it did.
pub(super) fn check_door(
    out: &mut Findings<'_>,
    door: &Door,
    line_of: impl Fn(Key) -> Option<usize>,
) {
    let name = door.name.as_str();
    let seq_line = line_of(Key::Sequence);
    let otp_line = line_of(Key::OneTimeSequences);
    match (seq_line, otp_line) {
        (Some(a), Some(b)) => out.error(
            a.max(b),
            format!(
                "door '{name}' has both Sequence (line {}) and One_Time_Sequences (line {}); keep one",
                a, b
            ),
        ),
        (None, None) => out.error(
            door.line,
            format!(
                "door '{name}' has no knock sequence (add Sequence = port,port,... or One_Time_Sequences = /path/to/file)"
            ),
        ),
        _ => {}
    }
    if let Some(open_line) = line_of(Key::Open) {
        for key in [
            Key::StartCommand,
            Key::StartCommand6,
            Key::StopCommand,
            Key::StopCommand6,
        ] {
            if let Some(l) = line_of(key) {
                out.error(
                    open_line,
                    format!(
                        "door '{name}' has both Open and {} (line {l}); pick one kind of action (Open, or commands)",
                        key_name(key)
                    ),
                );
            }
        }
    } else if let Some(l) = line_of(Key::OpenChain) {
        out.error(
            l,
            format!("Open_Chain without Open in door '{name}' (add Open = port/proto, or remove Open_Chain)"),
        );
    }

    // Warnings.
    if let (Some(l), None) = (seq_line, otp_line) {
        let seq = &door.sequence;
        if !seq.is_empty() {
            let ports: Vec<u16> = seq.iter().map(|s| s.port).collect();
            if ports == [7000, 8000, 9000] || ports == [9000, 8000, 7000] {
                out.warn(
                    l,
                    Some(name),
                    format!(
                        "{} is knockd's example sequence, scanners try it (choose your own ports)",
                        ports
                            .iter()
                            .map(u16::to_string)
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                );
            } else if ports.len() >= 2 {
                let up = ports.windows(2).all(|w| w[0] < w[1]);
                let down = ports.windows(2).all(|w| w[0] > w[1]);
                if up || down {
                    let dir = if up { "increasing" } else { "decreasing" };
                    out.warn(
                        l,
                        Some(name),
                        format!(
                            "sequence ports are strictly {dir}: a port sweep opens it (shuffle the order)"
                        ),
                    );
                }
            }
            if seq.len() < 3 {
                out.warn(
                    l,
                    Some(name),
                    format!(
                        "sequence has only {} knock{}: easy to guess (use at least 3)",
                        seq.len(),
                        if seq.len() == 1 { "" } else { "s" }
                    ),
                );
            }
        }
    }
    let has_action = door.start_command.is_some()
        || door.stop_command.is_some()
        || matches!(door.start_command_6, Command6::Command(_))
        || matches!(door.stop_command_6, Command6::Command(_))
        || !door.open.is_empty();
    if !has_action {
        out.warn(
            door.line,
            Some(name),
            "door has no action: a completed knock is only logged (set Start_Command or Open)",
        );
    }
    for (cmd, cmd6, key, key6) in [
        (
            &door.start_command,
            &door.start_command_6,
            Key::StartCommand,
            "Start_Command_6",
        ),
        (
            &door.stop_command,
            &door.stop_command_6,
            Key::StopCommand,
            "Stop_Command_6",
        ),
    ] {
        if let (Some(cmd), Command6::Fallback) = (cmd, cmd6) {
            if program_name(cmd).starts_with("iptables") {
                out.warn(
                    line_of(key).unwrap_or(door.line),
                    Some(name),
                    format!(
                        "{} runs iptables and {key6} is not set: IPv6 knocks would pass an IPv6 address to iptables; set {key6} (ip6tables ...) or leave it empty to disable IPv6",
                        key_name(key)
                    ),
                );
            }
        }
    }
}
