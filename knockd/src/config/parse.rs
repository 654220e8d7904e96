//! The knockd.conf parser: knockd 0.8's grammar, strict where knockd was sloppy.
//!
//! [`parse`] is pure (text in, [`Parsed`] or every error out). [`load`] reads the file and
//! fills the current sequence of one-time-sequence doors from their files.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{ConfigError, ConfigErrors};
use super::model::{
    flag, Command6, Config, Door, FirewallKind, OpenPort, Options, Proto, ShutdownPolicy, Step,
    TcpFlags, DEFAULT_CMD_TIMEOUT, DEFAULT_OPEN_CHAIN, DEFAULT_SEQ_TIMEOUT, MAX_SEQUENCE_LEN,
};
use super::otp;
use super::warn::Warning;

/// Longest `Seq_Timeout` / `Cmd_Timeout` accepted (30 days), so that deadlines computed as
/// `Instant + timeout` can never overflow.
pub const MAX_TIMEOUT_SECS: u64 = 30 * 24 * 3600;
/// Longest iptables chain name (XT_EXTENSION_MAXNAMELEN - 1 = 28 usable characters).
pub const MAX_CHAIN_NAME_LEN: usize = 28;
/// Linux IFNAMSIZ - 1.
const MAX_INTERFACE_NAME_LEN: usize = 15;

const COMMENT_HINT: &str = "; note: '#' starts a comment only at the beginning of a line";

/// A successfully parsed configuration plus the non-fatal findings about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub config: Config,
    pub warnings: Vec<Warning>,
}

// ---------------------------------------------------------------------------------------------
// Keys

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    UseSyslog,
    LogFile,
    PidFile,
    Interface,
    MaxAttempts,
    Socket,
    StateFile,
    OnShutdown,
    Firewall,
    NftMark,
    Sequence,
    OneTimeSequences,
    SeqTimeout,
    TcpFlags,
    StartCommand,
    StartCommand6,
    StopCommand,
    StopCommand6,
    CmdTimeout,
    Target,
    Open,
    OpenChain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// `[options]` only.
    Global,
    /// Door sections only.
    Door,
    /// UseSyslog: knockd accepts it anywhere.
    Anywhere,
}

struct KeyInfo {
    key: Key,
    name: &'static str,
    aliases: &'static [&'static str],
    scope: Scope,
}

const fn key(
    key: Key,
    name: &'static str,
    aliases: &'static [&'static str],
    scope: Scope,
) -> KeyInfo {
    KeyInfo {
        key,
        name,
        aliases,
        scope,
    }
}

/// Every key, in the order listed in "valid keys" messages.
#[rustfmt::skip]
const KEYS: &[KeyInfo] = &[
    key(Key::UseSyslog, "UseSyslog", &[], Scope::Anywhere),
    key(Key::LogFile, "LogFile", &[], Scope::Global),
    key(Key::PidFile, "PidFile", &[], Scope::Global),
    key(Key::Interface, "Interface", &[], Scope::Global),
    key(Key::MaxAttempts, "MaxAttempts", &[], Scope::Global),
    key(Key::Socket, "Socket", &[], Scope::Global),
    key(Key::StateFile, "StateFile", &[], Scope::Global),
    key(Key::OnShutdown, "OnShutdown", &[], Scope::Global),
    key(Key::Firewall, "Firewall", &[], Scope::Global),
    key(Key::NftMark, "NftMark", &[], Scope::Global),
    key(Key::Sequence, "Sequence", &[], Scope::Door),
    key(Key::OneTimeSequences, "One_Time_Sequences", &[], Scope::Door),
    key(Key::SeqTimeout, "Seq_Timeout", &["Timeout"], Scope::Door),
    key(Key::TcpFlags, "TCPFlags", &[], Scope::Door),
    key(Key::StartCommand, "Start_Command", &["Command"], Scope::Door),
    key(Key::StartCommand6, "Start_Command_6", &["Command_6"], Scope::Door),
    key(Key::StopCommand, "Stop_Command", &[], Scope::Door),
    key(Key::StopCommand6, "Stop_Command_6", &[], Scope::Door),
    key(Key::CmdTimeout, "Cmd_Timeout", &[], Scope::Door),
    key(Key::Target, "Target", &[], Scope::Door),
    key(Key::Open, "Open", &[], Scope::Door),
    key(Key::OpenChain, "Open_Chain", &[], Scope::Door),
];

fn lookup_key(written: &str) -> Option<&'static KeyInfo> {
    KEYS.iter().find(|k| {
        k.name.eq_ignore_ascii_case(written)
            || k.aliases.iter().any(|a| a.eq_ignore_ascii_case(written))
    })
}

fn key_name(key: Key) -> &'static str {
    KEYS.iter().find(|k| k.key == key).map_or("?", |k| k.name)
}

fn valid_keys(scope: Scope) -> String {
    KEYS.iter()
        .filter(|k| k.scope == scope || (scope == Scope::Global && k.scope == Scope::Anywhere))
        .map(|k| k.name)
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// Value parsers shared by Sequence, Open and the one-time-sequences file

/// Parses a knock sequence: comma-separated `port[:proto]`, spaces allowed around items and
/// around the `:`, proto `tcp`/`udp` (any case, default tcp), 1..=[`MAX_SEQUENCE_LEN`] knocks.
/// The error is a complete message that names the problem and the fix.
pub fn parse_sequence(text: &str) -> Result<Vec<Step>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty sequence (list the knocks, e.g. 7000,8000:udp,9000)".into());
    }
    let mut steps = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(format!(
                "empty item in sequence '{text}' (remove the extra ',')"
            ));
        }
        if item.contains('/') {
            return Err(format!(
                "invalid knock '{item}' in sequence (write port or port:proto, e.g. 7000:udp)"
            ));
        }
        let mut parts = item.split(':');
        let port_text = parts.next().unwrap_or_default().trim();
        let proto_text = parts.next().map(str::trim);
        if parts.next().is_some() {
            return Err(format!(
                "junk after the protocol in knock '{item}' (write port or port:proto, e.g. 7000:udp)"
            ));
        }
        let port = parse_port(port_text, "sequence")?;
        let proto = match proto_text {
            None => Proto::Tcp,
            Some("") => {
                return Err(format!(
                    "missing protocol after ':' in knock '{item}' (use tcp or udp)"
                ))
            }
            Some(p) => parse_proto(p, "sequence")?,
        };
        steps.push(Step { port, proto });
    }
    if steps.len() > MAX_SEQUENCE_LEN {
        return Err(format!(
            "sequence has {} knocks, more than the maximum of {MAX_SEQUENCE_LEN} (shorten it)",
            steps.len()
        ));
    }
    Ok(steps)
}

fn parse_port(text: &str, what: &str) -> Result<u16, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "invalid port '{text}' in {what} (use a number from 1 to 65535)"
        ));
    }
    match text.parse::<u64>() {
        Ok(n) if (1..=65535).contains(&n) => u16::try_from(n)
            .map_err(|_| format!("port {text} out of range in {what} (use 1 to 65535)")),
        _ => Err(format!(
            "port {text} out of range in {what} (use 1 to 65535)"
        )),
    }
}

fn parse_proto(text: &str, what: &str) -> Result<Proto, String> {
    if text.eq_ignore_ascii_case("tcp") {
        Ok(Proto::Tcp)
    } else if text.eq_ignore_ascii_case("udp") {
        Ok(Proto::Udp)
    } else {
        Err(format!(
            "unknown protocol '{text}' in {what} (use tcp or udp)"
        ))
    }
}

/// `Open = 22/tcp, 443, 53/udp`.
fn parse_open(text: &str) -> Result<Vec<OpenPort>, String> {
    if text.is_empty() {
        return Err("Open is empty (list the ports to open, e.g. Open = 22/tcp, 443)".into());
    }
    let mut ports: Vec<OpenPort> = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(format!(
                "empty item in Open '{text}' (remove the extra ',')"
            ));
        }
        if item.contains(':') {
            return Err(format!(
                "invalid item '{item}' in Open (write port or port/proto, e.g. 22/tcp)"
            ));
        }
        let mut parts = item.split('/');
        let port_text = parts.next().unwrap_or_default().trim();
        let proto_text = parts.next().map(str::trim);
        if parts.next().is_some() {
            return Err(format!(
                "junk after the protocol in Open item '{item}' (write port or port/proto, e.g. 22/tcp)"
            ));
        }
        let port = parse_port(port_text, "Open")?;
        let proto = match proto_text {
            None => Proto::Tcp,
            Some("") => {
                return Err(format!(
                    "missing protocol after '/' in Open item '{item}' (use tcp or udp)"
                ))
            }
            Some(p) => parse_proto(p, "Open")?,
        };
        let open = OpenPort { port, proto };
        if ports.contains(&open) {
            return Err(format!(
                "{port}/{proto} is listed twice in Open (remove one)"
            ));
        }
        ports.push(open);
    }
    Ok(ports)
}

/// `TCPFlags = syn,!ack`.
fn parse_tcp_flags(text: &str) -> Result<TcpFlags, String> {
    let names = || {
        flag::NAMES
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if text.is_empty() {
        return Err(format!(
            "TCPFlags is empty (list flags from {}, e.g. TCPFlags = syn,!ack)",
            names()
        ));
    }
    let mut flags = TcpFlags::default();
    for item in text.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(format!(
                "empty item in TCPFlags '{text}' (remove the extra ',')"
            ));
        }
        let (negated, name) = match item.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, item),
        };
        let bit = flag::NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, b)| *b)
            .ok_or_else(|| {
                format!(
                    "unknown TCP flag '{item}' (use {}, optionally prefixed with '!' for must-be-clear)",
                    names()
                )
            })?;
        if negated {
            flags.unset |= bit;
        } else {
            flags.set |= bit;
        }
    }
    Ok(flags)
}

fn flag_names(bits: u8) -> String {
    flag::NAMES
        .iter()
        .filter(|(_, b)| bits & b != 0)
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

enum SecondsError {
    Syntax,
    TooLarge,
}

/// `5`, `2.5`, `0.25`: whole seconds with an optional decimal fraction (nanosecond precision).
fn parse_seconds(text: &str) -> Result<Duration, SecondsError> {
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (text, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || frac.is_some_and(|f| !digits(f)) {
        return Err(SecondsError::Syntax);
    }
    let secs = int.parse::<u64>().map_err(|_| SecondsError::TooLarge)?;
    let nanos = match frac {
        None => 0,
        Some(f) => {
            let mut s: String = f.chars().take(9).collect();
            while s.len() < 9 {
                s.push('0');
            }
            s.parse::<u32>().map_err(|_| SecondsError::Syntax)?
        }
    };
    let d = Duration::new(secs, nanos);
    if d > Duration::from_secs(MAX_TIMEOUT_SECS) {
        return Err(SecondsError::TooLarge);
    }
    Ok(d)
}

/// `Seq_Timeout` (> 0) and `Cmd_Timeout` (>= 0).
fn parse_timeout(value: &str, key: &str, zero_ok: bool) -> Result<Duration, String> {
    let range = if zero_ok {
        "0 or more"
    } else {
        "greater than 0"
    };
    match parse_seconds(value) {
        Ok(d) if zero_ok || !d.is_zero() => Ok(d),
        Ok(_) => Err(format!(
            "{key} must be greater than 0 (use seconds, e.g. 5 or 2.5)"
        )),
        Err(SecondsError::TooLarge) => Err(format!(
            "{key} '{value}' is too large (at most {MAX_TIMEOUT_SECS} seconds)"
        )),
        Err(SecondsError::Syntax) => Err(format!(
            "invalid {key} '{value}' (use seconds {range}, e.g. 5 or 2.5)"
        )),
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    const YES: [&str; 4] = ["yes", "true", "on", "1"];
    const NO: [&str; 4] = ["no", "false", "off", "0"];
    if YES.iter().any(|y| y.eq_ignore_ascii_case(text)) {
        Some(true)
    } else if NO.iter().any(|n| n.eq_ignore_ascii_case(text)) {
        Some(false)
    } else {
        None
    }
}

fn valid_chain_name(name: &str) -> bool {
    (1..=MAX_CHAIN_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn valid_interface_name(name: &str) -> bool {
    (1..=MAX_INTERFACE_NAME_LEN).contains(&name.len())
        && !name.contains('/')
        && !name.chars().any(char::is_whitespace)
}

/// Basename of the first word of a shell command: `/sbin/iptables -I ...` -> `iptables`.
fn program_name(command: &str) -> &str {
    let first = command.split_whitespace().next().unwrap_or_default();
    first.rsplit('/').next().unwrap_or(first)
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
    file: &'a str,
    errors: Vec<ConfigError>,
    warnings: Vec<Warning>,
    options: Options,
    options_seen: HashMap<Key, Seen>,
    drafts: Vec<DoorDraft>,
    section: Section,
}

/// Output of the pure parse, with what `load` needs on top of [`Parsed`].
struct ParseOutput {
    parsed: Parsed,
    /// Per door (same order as `config.doors`): line of its One_Time_Sequences key, if any.
    otp_lines: Vec<Option<usize>>,
}

/// Parses knockd.conf text. Pure: no I/O. `file` is only used in messages.
/// Returns every error found, in line order. One-time-sequence doors come back with an empty
/// `sequence`; [`load`] fills it from the file.
pub fn parse(text: &str, file: &str) -> Result<Parsed, ConfigErrors> {
    parse_inner(text, file).map(|o| o.parsed)
}

fn parse_inner(text: &str, file: &str) -> Result<ParseOutput, ConfigErrors> {
    let mut p = Parser {
        file,
        errors: Vec::new(),
        warnings: Vec::new(),
        options: Options::default(),
        options_seen: HashMap::new(),
        drafts: Vec::new(),
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
        self.errors
            .push(ConfigError::new(self.file, line, message.into()));
    }

    fn warn(&mut self, line: usize, door: Option<&str>, message: impl Into<String>) {
        self.warnings.push(Warning {
            file: self.file.to_string(),
            line,
            door: door.map(str::to_string),
            message: message.into(),
        });
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
        let first = self
            .drafts
            .iter()
            .find(|d| d.keep && d.door.name == name)
            .map(|d| d.door.line);
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
            return self.apply_option(key, value);
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
            Key::UseSyslog
            | Key::LogFile
            | Key::PidFile
            | Key::Interface
            | Key::MaxAttempts
            | Key::Socket
            | Key::StateFile
            | Key::OnShutdown
            | Key::Firewall
            | Key::NftMark => {}
        }
        Ok(())
    }

    fn apply_option(&mut self, key: Key, value: &str) -> Result<(), String> {
        let o = &mut self.options;
        match key {
            Key::LogFile => {
                if value.is_empty() {
                    return Err("LogFile needs a path (e.g. LogFile = /var/log/knockd.log)".into());
                }
                o.log_file = Some(PathBuf::from(value));
            }
            Key::PidFile => {
                if value.is_empty() {
                    return Err("PidFile needs a path (e.g. PidFile = /run/knockd.pid)".into());
                }
                o.pid_file = Some(PathBuf::from(value));
            }
            Key::Interface => {
                if !valid_interface_name(value) {
                    return Err(format!(
                        "invalid Interface '{value}' (use a network interface name such as eth0: 1 to {MAX_INTERFACE_NAME_LEN} characters, no spaces or '/')"
                    ));
                }
                o.interface = Some(value.to_string());
            }
            Key::MaxAttempts => {
                let n = value
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| value.parse::<usize>().ok())
                    .flatten()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| {
                        format!(
                            "invalid MaxAttempts '{value}' (use a whole number of at least 1, e.g. 100000)"
                        )
                    })?;
                o.max_attempts = Some(n);
            }
            Key::Socket => {
                if !value.starts_with('/') {
                    return Err(format!(
                        "invalid Socket '{value}' (use an absolute path, e.g. Socket = /run/knockd/knockd.sock)"
                    ));
                }
                o.socket = Some(PathBuf::from(value));
            }
            Key::StateFile => {
                if !value.starts_with('/') {
                    return Err(format!(
                        "invalid StateFile '{value}' (use an absolute path, e.g. StateFile = /var/lib/knockd/state.json)"
                    ));
                }
                o.state_file = Some(PathBuf::from(value));
            }
            Key::OnShutdown => {
                o.on_shutdown = match value.to_ascii_lowercase().as_str() {
                    "close" => ShutdownPolicy::Close,
                    "close-all" => ShutdownPolicy::CloseAll,
                    "keep" => ShutdownPolicy::Keep,
                    _ => {
                        return Err(format!(
                            "invalid OnShutdown '{value}' (use close, close-all or keep)"
                        ))
                    }
                };
            }
            Key::Firewall => {
                o.firewall = FirewallKind::parse(value).ok_or_else(|| {
                    format!("invalid Firewall '{value}' (use iptables or nftables)")
                })?;
            }
            Key::NftMark => o.nft_mark = Some(parse_mark(value)?),
            _ => {}
        }
        Ok(())
    }

    /// Door-level checks (need every key of the door) and warnings.
    fn finish_door(&mut self, draft: &DoorDraft) {
        let door = &draft.door;
        let name = door.name.as_str();
        let seq_line = draft.line_of(Key::Sequence);
        let otp_line = draft.line_of(Key::OneTimeSequences);
        match (seq_line, otp_line) {
            (Some(a), Some(b)) => self.error(
                a.max(b),
                format!(
                    "door '{name}' has both Sequence (line {}) and One_Time_Sequences (line {}); keep one",
                    a, b
                ),
            ),
            (None, None) => self.error(
                door.line,
                format!(
                    "door '{name}' has no knock sequence (add Sequence = port,port,... or One_Time_Sequences = /path/to/file)"
                ),
            ),
            _ => {}
        }
        if let Some(open_line) = draft.line_of(Key::Open) {
            for key in [
                Key::StartCommand,
                Key::StartCommand6,
                Key::StopCommand,
                Key::StopCommand6,
            ] {
                if let Some(l) = draft.line_of(key) {
                    self.error(
                        open_line,
                        format!(
                            "door '{name}' has both Open and {} (line {l}); pick one kind of action (Open, or commands)",
                            key_name(key)
                        ),
                    );
                }
            }
        } else if let Some(l) = draft.line_of(Key::OpenChain) {
            self.error(
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
                    self.warn(
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
                        self.warn(
                            l,
                            Some(name),
                            format!(
                                "sequence ports are strictly {dir}: a port sweep opens it (shuffle the order)"
                            ),
                        );
                    }
                }
                if seq.len() < 3 {
                    self.warn(
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
            self.warn(
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
                    self.warn(
                        draft.line_of(key).unwrap_or(door.line),
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

    fn finish(mut self) -> Result<ParseOutput, ConfigErrors> {
        let drafts = std::mem::take(&mut self.drafts);
        let mut doors = Vec::new();
        let mut otp_lines = Vec::new();
        for draft in drafts.into_iter().filter(|d| d.keep) {
            self.finish_door(&draft);
            otp_lines.push(draft.line_of(Key::OneTimeSequences));
            doors.push(draft.door);
        }
        if !self.errors.is_empty() {
            self.errors.sort_by_key(|e| e.line);
            return Err(ConfigErrors(self.errors));
        }
        self.warnings.sort_by_key(|w| w.line);
        Ok(ParseOutput {
            parsed: Parsed {
                config: Config {
                    options: self.options,
                    doors,
                },
                warnings: self.warnings,
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

// ---------------------------------------------------------------------------------------------
// Loading from disk

/// Reads and parses the config file, then fills the current sequence of every
/// One_Time_Sequences door from its file. A relative One_Time_Sequences path is resolved
/// against the config file's directory, and the resolved path is stored in the door.
pub fn load(path: &Path) -> Result<Parsed, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            &file,
            0,
            format!("cannot read config file: {e} (check the path and permissions)"),
        )
    })?;
    let ParseOutput {
        mut parsed,
        otp_lines,
    } = parse_inner(&text, &file)?;
    let base = path.parent().unwrap_or(Path::new(""));
    let mut errors = Vec::new();
    for (door, line) in parsed.config.doors.iter_mut().zip(otp_lines) {
        let Some(otp_path) = door.one_time_sequences.take() else {
            continue;
        };
        let otp_path = if otp_path.is_relative() {
            base.join(otp_path)
        } else {
            otp_path
        };
        let line = line.unwrap_or(door.line);
        match otp::read_current(&otp_path) {
            Ok(Some(seq)) => door.sequence = seq,
            Ok(None) => errors.push(ConfigError::new(
                &file,
                line,
                format!(
                    "one-time sequences file '{}' for door '{}' has no unused sequence: it is empty, or every line is used or invalid (add lines such as 7001,7002:udp,7003)",
                    otp_path.display(),
                    door.name
                ),
            )),
            Err(e) => errors.push(ConfigError::new(
                &file,
                line,
                format!("door '{}': {e}", door.name),
            )),
        }
        door.one_time_sequences = Some(otp_path);
    }
    if errors.is_empty() {
        Ok(parsed)
    } else {
        Err(ConfigErrors(errors))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

/// `NftMark = 0x4b4e` (hex or decimal), `0`/`off` for none.
fn parse_mark(value: &str) -> Result<u32, String> {
    let v = value.to_ascii_lowercase();
    let n = if v == "off" || v == "none" {
        Some(0)
    } else if let Some(hex) = v.strip_prefix("0x") {
        u32::from_str_radix(hex, 16).ok()
    } else {
        v.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| v.parse::<u32>().ok())
            .flatten()
    };
    n.ok_or_else(|| format!("invalid NftMark '{value}' (use a 32-bit mark such as 0x4b4e, or off)"))
}
