//! The knockd.conf parser: knockd 0.8's grammar, strict where knockd was sloppy.
//!
//! [`parse`] is pure (text in, [`Parsed`] or every error out). The key table is in
//! [`super::keys`], value parsers in [`super::values`], door checks and warnings in
//! [`super::validate`], reading from disk in [`super::load`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use super::error::ConfigErrors;
use super::keys::{lookup_key, valid_keys, Key, KeyInfo, Scope};
use super::model::{
    Command6, Config, Door, FirewallKind, Options, TcpFlags, DEFAULT_CMD_TIMEOUT,
    DEFAULT_OPEN_CHAIN, DEFAULT_SEQ_TIMEOUT, DEFAULT_SWEEP_THRESHOLD,
};
use super::validate::{check_door, Findings};
use super::values::{
    flag_names, parse_bool, parse_open, parse_sequence, parse_tcp_flags, parse_timeout,
    valid_chain_name, COMMENT_HINT, MAX_CHAIN_NAME_LEN,
};
use super::warn::Warning;

/// A successfully parsed configuration plus the non-fatal findings about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub config: Config,
    pub warnings: Vec<Warning>,
}

fn new_door(name: &str, line: usize) -> Door {
    Door {
        name: name.to_string(),
        line,
        sequence: Vec::new(),
        one_time_sequences: None,
        seq_timeout: DEFAULT_SEQ_TIMEOUT,
        tcp_flags: TcpFlags::default(),
        start_command: None,
        start_command_6: Command6::Fallback,
        stop_command: None,
        stop_command_6: Command6::Fallback,
        cmd_timeout: DEFAULT_CMD_TIMEOUT,
        target: None,
        open: Vec::new(),
        open_chain: DEFAULT_OPEN_CHAIN.to_string(),
        sweep_guard: true,
        totp_file: None,
        totp: None,
        spa: Vec::new(),
        spa_address: super::model::SpaAddress::default(),
    }
}

// ---------------------------------------------------------------------------------------------
// The parser

/// Where a key was first set in a section, and how it was spelled there.
struct Seen {
    line: usize,
    written: String,
}

struct DoorDraft {
    door: Door,
    /// False for sections whose header was invalid: their directives are still checked, but
    /// the door itself is neither validated nor kept.
    keep: bool,
    seen: HashMap<Key, Seen>,
}

impl DoorDraft {
    fn line_of(&self, key: Key) -> Option<usize> {
        self.seen.get(&key).map(|s| s.line)
    }
}

#[derive(Clone, Copy)]
enum Section {
    None,
    Options,
    Door(usize),
}

struct Parser<'a> {
    out: Findings<'a>,
    options: Options,
    options_seen: HashMap<Key, Seen>,
    drafts: Vec<DoorDraft>,
    /// Line of each kept door's header, by name (the duplicate check must stay O(1): 100,000
    /// doors took 19.5 s with a linear search).
    door_lines: HashMap<String, usize>,
    section: Section,
}

/// Output of the pure parse, with what `load` needs on top of [`Parsed`].
pub(super) struct ParseOutput {
    pub(super) parsed: Parsed,
    /// Per door (same order as `config.doors`): line of its One_Time_Sequences key, if any.
    pub(super) otp_lines: Vec<Option<usize>>,
}

/// Parses knockd.conf text. Pure: no I/O. `file` is only used in messages.
/// Returns every error found, in line order. One-time-sequence doors come back with an empty
/// `sequence`; [`crate::config::load`] fills it from the file.
pub fn parse(text: &str, file: &str) -> Result<Parsed, ConfigErrors> {
    parse_inner(text, file).map(|o| o.parsed)
}

pub(super) fn parse_inner(text: &str, file: &str) -> Result<ParseOutput, ConfigErrors> {
    let mut p = Parser {
        out: Findings::new(file),
        options: Options::default(),
        options_seen: HashMap::new(),
        drafts: Vec::new(),
        door_lines: HashMap::new(),
        section: Section::None,
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (i, raw) in text.lines().enumerate() {
        p.line(i + 1, raw);
    }
    p.finish()
}

impl Parser<'_> {
    fn error(&mut self, line: usize, message: impl Into<String>) {
        self.out.error(line, message);
    }

    fn warn(&mut self, line: usize, door: Option<&str>, message: impl Into<String>) {
        self.out.warn(line, door, message);
    }

    fn line(&mut self, n: usize, raw: &str) {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            return;
        }
        if line.starts_with('[') {
            self.header(n, line);
            return;
        }
        match line.split_once('=') {
            Some((key, value)) => self.directive(n, key.trim(), Some(value.trim())),
            None => self.directive(n, line, None),
        }
    }

    fn discard_section(&mut self, n: usize) {
        self.drafts.push(DoorDraft {
            door: new_door("", n),
            keep: false,
            seen: HashMap::new(),
        });
        self.section = Section::Door(self.drafts.len() - 1);
    }

    fn header(&mut self, n: usize, line: &str) {
        let Some(inner) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) else {
            let message = match line.find(']') {
                Some(end) => format!(
                    "junk '{}' after section header (nothing may follow ']'; comments go on their own line)",
                    line[end + 1..].trim()
                ),
                None => format!("section header '{line}' has no closing ']' (write [name])"),
            };
            self.error(n, message);
            self.discard_section(n);
            return;
        };
        let name = inner.trim();
        if name.is_empty() {
            self.error(
                n,
                "empty section name '[]' (write [options] or a door name such as [openSSH])",
            );
            self.discard_section(n);
            return;
        }
        if name.contains('[') || name.contains(']') {
            self.error(
                n,
                format!("section name '{name}' contains '[' or ']' (remove them)"),
            );
            self.discard_section(n);
            return;
        }
        if let Some(message) = super::values::door_name_problem(name) {
            self.error(n, message);
            self.discard_section(n);
            return;
        }
        if name == "options" {
            self.section = Section::Options;
            return;
        }
        if name.eq_ignore_ascii_case("options") {
            self.error(
                n,
                format!("section [{name}] must be written [options] (lower case); knockd 0.8 would treat [{name}] as a door"),
            );
            // Parse its contents as options anyway, to avoid a cascade of "belongs in
            // [options]" errors.
            self.section = Section::Options;
            return;
        }
        let first = self.door_lines.get(name).copied();
        if first.is_none() {
            self.door_lines.insert(name.to_string(), n);
        }
        if let Some(first) = first {
            self.error(
                n,
                format!("duplicate door [{name}] (first defined on line {first}); rename or merge one of them"),
            );
        }
        let keep = first.is_none();
        self.drafts.push(DoorDraft {
            door: new_door(name, n),
            keep,
            seen: HashMap::new(),
        });
        self.section = Section::Door(self.drafts.len() - 1);
    }

    fn section_label(&self) -> String {
        match self.section {
            Section::Door(i) => match self.drafts.get(i) {
                Some(d) if !d.door.name.is_empty() => format!("door '{}'", d.door.name),
                _ => "this section".to_string(),
            },
            Section::Options => "[options]".to_string(),
            Section::None => "the file".to_string(),
        }
    }

    fn directive(&mut self, n: usize, written: &str, value: Option<&str>) {
        if written.is_empty() {
            self.error(n, "missing key before '=' (write key = value)");
            return;
        }
        let info = lookup_key(written);
        let anywhere = info.is_some_and(|i| i.scope == Scope::Anywhere);
        if matches!(self.section, Section::None) && !anywhere {
            self.error(
                n,
                format!(
                    "'{written}' appears before any section (put it under [options] or a [door] header)"
                ),
            );
            return;
        }
        let Some(info) = info else {
            if value.is_none() {
                self.error(
                    n,
                    format!(
                        "'{written}' is not a directive (write key = value, or a [section] header)"
                    ),
                );
                return;
            }
            let (where_, scope) = match self.section {
                Section::Options => ("[options]".to_string(), Scope::Global),
                _ => (self.section_label(), Scope::Door),
            };
            self.error(
                n,
                format!(
                    "unknown key '{written}' in {where_} (valid keys: {})",
                    valid_keys(scope)
                ),
            );
            return;
        };
        // A bare `UseSyslog` means yes.
        let bare_default = (info.key == Key::UseSyslog).then_some("yes");
        let Some(value) = value.or(bare_default) else {
            self.error(
                n,
                format!("{written} needs a value (write {} = ...)", info.name),
            );
            return;
        };
        match (info.scope, self.section) {
            (Scope::Global, Section::Door(_)) => {
                let label = self.section_label();
                self.error(
                    n,
                    format!(
                        "{written} belongs in [options], not in {label} (move it to [options])"
                    ),
                );
                return;
            }
            (Scope::Door, Section::Options) => {
                self.error(
                    n,
                    format!(
                        "{written} is a door key and does not belong in [options] (move it under a door header such as [openSSH])"
                    ),
                );
                return;
            }
            _ => {}
        }
        // Duplicates (TCPFlags accumulates, like knockd).
        if info.key != Key::TcpFlags {
            let seen = match self.section {
                Section::Door(i) => self.drafts.get_mut(i).map(|d| &mut d.seen),
                _ => Some(&mut self.options_seen),
            };
            if let Some(seen) = seen {
                if let Some(first) = seen.get(&info.key) {
                    let also = if first.written.eq_ignore_ascii_case(written) {
                        String::new()
                    } else {
                        format!(" as '{}'", first.written)
                    };
                    let msg = format!(
                        "duplicate {} (already set{also} on line {}); remove one",
                        info.name, first.line
                    );
                    self.error(n, msg);
                    return;
                }
                seen.insert(
                    info.key,
                    Seen {
                        line: n,
                        written: written.to_string(),
                    },
                );
            }
        } else if let Section::Door(i) = self.section {
            if let Some(d) = self.drafts.get_mut(i) {
                d.seen.entry(Key::TcpFlags).or_insert(Seen {
                    line: n,
                    written: written.to_string(),
                });
            }
        }
        if let Err(msg) = self.apply(n, info, value) {
            let msg = if value.contains('#') {
                format!("{msg}{COMMENT_HINT}")
            } else {
                msg
            };
            self.error(n, msg);
        }
    }

    fn apply(&mut self, n: usize, info: &KeyInfo, value: &str) -> Result<(), String> {
        let key = info.key;
        if key == Key::UseSyslog {
            let on = parse_bool(value).ok_or_else(|| {
                format!(
                    "invalid UseSyslog value '{value}' (use yes or no, or write UseSyslog alone)"
                )
            })?;
            self.options.use_syslog = on;
            if let Section::Door(i) = self.section {
                if let Some(name) = self
                    .drafts
                    .get(i)
                    .filter(|d| d.keep)
                    .map(|d| d.door.name.clone())
                {
                    self.warn(
                        n,
                        Some(&name),
                        "UseSyslog inside a door sets the global option (move it to [options])",
                    );
                }
            }
            return Ok(());
        }
        if let Section::Options = self.section {
            return super::options::apply(&mut self.options, key, value);
        }
        let Section::Door(i) = self.section else {
            return Ok(());
        };
        let Some(draft) = self.drafts.get_mut(i) else {
            return Ok(());
        };
        let door = &mut draft.door;
        match key {
            Key::Sequence => door.sequence = parse_sequence(value)?,
            Key::OneTimeSequences => {
                if value.is_empty() {
                    return Err("One_Time_Sequences needs a file name (e.g. One_Time_Sequences = /etc/knockd/ssh.otp)".into());
                }
                door.one_time_sequences = Some(PathBuf::from(value));
            }
            Key::SeqTimeout => door.seq_timeout = parse_timeout(value, "Seq_Timeout", false)?,
            Key::CmdTimeout => door.cmd_timeout = parse_timeout(value, "Cmd_Timeout", true)?,
            Key::TcpFlags => {
                let new = parse_tcp_flags(value)?;
                let merged = TcpFlags {
                    set: door.tcp_flags.set | new.set,
                    unset: door.tcp_flags.unset | new.unset,
                };
                let clash = merged.set & merged.unset;
                if clash != 0 {
                    let names = flag_names(clash);
                    return Err(format!(
                        "TCP flag '{names}' is both required and negated ('!{names}') in TCPFlags (keep one)"
                    ));
                }
                door.tcp_flags = merged;
            }
            Key::StartCommand => door.start_command = non_empty(value),
            Key::StopCommand => door.stop_command = non_empty(value),
            Key::StartCommand6 => door.start_command_6 = command6(value),
            Key::StopCommand6 => door.stop_command_6 = command6(value),
            Key::Target => {
                let addr = value
                    .strip_prefix('[')
                    .and_then(|v| v.strip_suffix(']'))
                    .unwrap_or(value);
                door.target = Some(addr.parse::<IpAddr>().map_err(|_| {
                    format!(
                        "invalid Target address '{value}' (use one IPv4 or IPv6 address, e.g. 192.0.2.1 or 2001:db8::1)"
                    )
                })?);
            }
            Key::Open => door.open = parse_open(value)?,
            Key::OpenChain => {
                if !valid_chain_name(value) {
                    return Err(format!(
                        "invalid Open_Chain '{value}' (use 1 to {MAX_CHAIN_NAME_LEN} characters from A-Z a-z 0-9 _ . -, e.g. INPUT)"
                    ));
                }
                door.open_chain = value.to_string();
            }
            Key::TotpFile => {
                if value.is_empty() {
                    return Err("TOTP_File needs a file name (make one with knockd --new-totp /etc/knockd/ssh.totp)".into());
                }
                door.totp_file = Some(PathBuf::from(value));
            }
            Key::Spa => door.spa = super::spa::parse_clients(value)?,
            Key::SpaAddress => door.spa_address = super::spa::parse_address(value)?,
            Key::SweepGuard => {
                door.sweep_guard = parse_bool(value)
                    .ok_or_else(|| format!("invalid SweepGuard '{value}' (use on or off)"))?;
            }
            Key::UseSyslog
            | Key::LogFile
            | Key::PidFile
            | Key::Interface
            | Key::MaxAttempts
            | Key::Socket
            | Key::StateFile
            | Key::OnShutdown
            | Key::MaxClients
            | Key::MaxGrants
            | Key::StartRate
            | Key::SweepThreshold
            | Key::SweepPenalty
            | Key::MaxAttemptsPerNetwork
            | Key::NetworkPrefixV4
            | Key::NetworkPrefixV6
            | Key::Firewall
            | Key::NftMark
            | Key::SpaPort
            | Key::SpaClientDir
            | Key::SpaServerKeyFile
            | Key::NftTable => {}
        }
        Ok(())
    }

    fn finish(mut self) -> Result<ParseOutput, ConfigErrors> {
        let drafts = std::mem::take(&mut self.drafts);
        let sweep_threshold = self
            .options
            .sweep_threshold
            .unwrap_or(DEFAULT_SWEEP_THRESHOLD);
        let mut doors = Vec::new();
        let mut otp_lines = Vec::new();
        for draft in drafts.into_iter().filter(|d| d.keep) {
            check_door(&mut self.out, &draft.door, sweep_threshold, |key| {
                draft.line_of(key)
            });
            otp_lines.push(draft.line_of(Key::OneTimeSequences));
            if self.options.firewall == FirewallKind::Nftables {
                let line = draft.line_of(Key::StartCommand).unwrap_or(draft.door.line);
                self.out.warn_iptables_accept(line, &draft.door);
            }
            doors.push(draft.door);
        }
        self.out.warn_static_doors();
        if !self.out.errors.is_empty() {
            self.out.errors.sort_by_key(|e| e.line);
            return Err(ConfigErrors(self.out.errors));
        }
        self.out.warnings.sort_by_key(|w| w.line);
        Ok(ParseOutput {
            parsed: Parsed {
                config: Config {
                    options: self.options,
                    doors,
                },
                warnings: self.out.warnings,
            },
            otp_lines,
        })
    }
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_string())
}

fn command6(value: &str) -> Command6 {
    if value.is_empty() {
        Command6::Disabled
    } else {
        Command6::Command(value.to_string())
    }
}
