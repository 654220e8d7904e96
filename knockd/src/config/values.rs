//! Value parsers shared by the config keys (`Sequence`, `Open`, `TCPFlags`, timeouts, names)
//! and by the one-time sequences file. Pure: text in, value or a complete message out.

use std::time::Duration;

use super::model::{flag, OpenPort, Proto, Step, TcpFlags, MAX_SEQUENCE_LEN};

/// Longest `Seq_Timeout` / `Cmd_Timeout` accepted (30 days), so that deadlines computed as
/// `Instant + timeout` can never overflow.
pub const MAX_TIMEOUT_SECS: u64 = 30 * 24 * 3600;
/// Longest iptables chain name (XT_EXTENSION_MAXNAMELEN - 1 = 28 usable characters).
pub const MAX_CHAIN_NAME_LEN: usize = 28;
/// Linux IFNAMSIZ - 1.
pub(super) const MAX_INTERFACE_NAME_LEN: usize = 15;

pub(super) const COMMENT_HINT: &str =
    "; note: '#' starts a comment only at the beginning of a line";

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

pub(super) fn parse_port(text: &str, what: &str) -> Result<u16, String> {
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

pub(super) fn parse_proto(text: &str, what: &str) -> Result<Proto, String> {
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
pub(super) fn parse_open(text: &str) -> Result<Vec<OpenPort>, String> {
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
pub(super) fn parse_tcp_flags(text: &str) -> Result<TcpFlags, String> {
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

pub(super) fn flag_names(bits: u8) -> String {
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
pub(super) fn parse_timeout(value: &str, key: &str, zero_ok: bool) -> Result<Duration, String> {
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

/// A whole number in `min..=max`; `example` goes into the message.
pub(super) fn parse_count(
    value: &str,
    key: &str,
    min: usize,
    max: usize,
    example: &str,
) -> Result<usize, String> {
    value
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| value.parse::<usize>().ok())
        .flatten()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            if max == usize::MAX {
                format!("invalid {key} '{value}' (use a whole number of at least {min}, e.g. {example})")
            } else {
                format!("invalid {key} '{value}' (use a whole number from {min} to {max}, e.g. {example})")
            }
        })
}

pub(super) fn parse_bool(text: &str) -> Option<bool> {
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

pub(super) fn valid_chain_name(name: &str) -> bool {
    (1..=MAX_CHAIN_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

pub(super) fn valid_interface_name(name: &str) -> bool {
    (1..=MAX_INTERFACE_NAME_LEN).contains(&name.len())
        && !name.contains('/')
        && !name.chars().any(char::is_whitespace)
}

/// Basename of the first word of a shell command: `/sbin/iptables -I ...` -> `iptables`.
pub(super) fn program_name(command: &str) -> &str {
    let first = command.split_whitespace().next().unwrap_or_default();
    first.rsplit('/').next().unwrap_or(first)
}

/// Why `name` cannot be a door name, if it cannot: door names go into log lines, syslog and
/// `knockctl` output, so control characters (C0, DEL, C1: newline, ESC...) and the Unicode
/// bidirectional overrides that reorder what a terminal shows are refused.
pub(super) fn door_name_problem(name: &str) -> Option<String> {
    let (col, c) = name.chars().enumerate().find(|&(_, c)| {
        c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    })?;
    Some(format!(
        "section name contains the control character U+{:04X} at position {} (door names are \
         written to logs and knockctl output: use letters, digits, '-', '_' or '.')",
        u32::from(c),
        col + 1
    ))
}

/// `NftTable = knockd-2`: letters, digits, `_` and `-`, at most 32 bytes.
pub(super) fn parse_table(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= 32
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(value.to_string())
    } else {
        Err(format!(
            "invalid NftTable '{value}' (use a name of letters, digits, _ and -, at most 32 characters, such as knockd-2)"
        ))
    }
}

/// `NftMark = 0x4b4e` (hex or decimal), `0`/`off` for none.
pub(super) fn parse_mark(value: &str) -> Result<u32, String> {
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
