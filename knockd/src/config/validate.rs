//! Door-level checks that need every key of a door (errors), and the warnings about
//! doors that parse but are probably not what the admin wants.

use super::error::ConfigError;
use super::keys::{key_name, Key};
use super::model::{flag, Command6, Door, Proto};
use super::values::program_name;
use super::warn::Warning;

/// Errors and warnings found in one file, in the order found.
pub(super) struct Findings<'a> {
    file: &'a str,
    pub(super) errors: Vec<ConfigError>,
    pub(super) warnings: Vec<Warning>,
    /// Doors with a static sequence that may face the internet (line, name): one warning
    /// for all of them ([`Findings::warn_static_doors`]), not one per door.
    static_doors: Vec<(usize, String)>,
}

/// Doors the static-sequence warning names; the rest are counted.
const STATIC_DOORS_NAMED: usize = 8;
const STATIC_ADVICE: &str = "anyone who sees the knocks can replay them (use a rotating door: knockd --new-totp FILE, then TOTP_File = FILE)";

impl<'a> Findings<'a> {
    pub(super) fn new(file: &'a str) -> Self {
        Self {
            file,
            errors: Vec::new(),
            warnings: Vec::new(),
            static_doors: Vec::new(),
        }
    }

    /// The one warning about static sequences on doors that may face the internet: about the
    /// door when there is one, else one line naming the first few and counting the rest.
    pub(super) fn warn_static_doors(&mut self) {
        let doors = std::mem::take(&mut self.static_doors);
        match doors.as_slice() {
            [] => {}
            [(line, name)] => self.warn(
                *line,
                Some(name),
                format!("static sequence on a door that may face the internet: {STATIC_ADVICE}"),
            ),
            [(first, _), ..] => {
                let mut named: Vec<String> = doors
                    .iter()
                    .take(STATIC_DOORS_NAMED)
                    .map(|(l, n)| format!("'{n}' (line {l})"))
                    .collect();
                if doors.len() > STATIC_DOORS_NAMED {
                    named.push(format!("{} more", doors.len() - STATIC_DOORS_NAMED));
                }
                let message = format!(
                    "static sequences on {} doors that may face the internet: {}: {STATIC_ADVICE}",
                    doors.len(),
                    named.join(", ")
                );
                self.warn(*first, None, message);
            }
        }
    }

    /// `Firewall = nftables`: a door whose command adds an iptables ACCEPT rule (knockd 0.8's
    /// example) lets nobody in on an nftables host with a dropping chain, and its rule never
    /// goes without a stop command: say so, and what to use instead.
    pub(super) fn warn_iptables_accept(&mut self, line: usize, door: &Door) {
        let Some(cmd) = door.start_command.as_deref() else {
            return;
        };
        if !adds_iptables_accept(cmd) {
            return;
        }
        let words: Vec<&str> = cmd.split_whitespace().collect();
        let after = |flag: &str| {
            words
                .iter()
                .position(|w| *w == flag)
                .and_then(|i| words.get(i + 1))
                .copied()
        };
        let port = format!(
            "{}/{}",
            after("--dport").unwrap_or("PORT"),
            after("-p").unwrap_or("tcp")
        );
        self.warn(
            line,
            Some(&door.name),
            format!(
                "with Firewall = nftables, its command adds an iptables ACCEPT rule: a native nftables chain that drops (policy drop, ufw or firewalld on nftables) still drops the client, and the rule stays until a stop command removes it. Fix: replace Start_Command/Stop_Command with Open = {port} (knockd's own table, closed by the kernel at Cmd_Timeout)"
            ),
        );
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

/// Does a shell command add an iptables ACCEPT rule (`iptables -A|-I ... -j ACCEPT`)?
pub(super) fn adds_iptables_accept(cmd: &str) -> bool {
    cmd.split([';', '&', '|']).any(|part| {
        let words: Vec<&str> = part.split_whitespace().collect();
        let program = words.iter().any(|w| {
            let base = w.rsplit('/').next().unwrap_or(w);
            base.starts_with("iptables") || base.starts_with("ip6tables")
        });
        let adds = words
            .iter()
            .any(|w| matches!(*w, "-A" | "-I" | "--append" | "--insert"));
        program && adds && words.contains(&"ACCEPT")
    })
}

/// Door-level checks (need every key of the door) and warnings. `line_of` gives the line
/// where the door set a key, if it did.
pub(super) fn check_door(
    out: &mut Findings<'_>,
    door: &Door,
    sweep_threshold: usize,
    line_of: impl Fn(Key) -> Option<usize>,
) {
    let name = door.name.as_str();
    let seq_line = line_of(Key::Sequence);
    let otp_line = line_of(Key::OneTimeSequences);
    let totp_line = line_of(Key::TotpFile);
    let sources: Vec<(Key, usize)> = [
        (Key::Sequence, seq_line),
        (Key::OneTimeSequences, otp_line),
        (Key::TotpFile, totp_line),
    ]
    .into_iter()
    .filter_map(|(k, l)| l.map(|l| (k, l)))
    .collect();
    match sources.as_slice() {
        [] => out.error(
            door.line,
            format!(
                "door '{name}' has no knock sequence (add Sequence = port,port,..., One_Time_Sequences = /path/to/file or TOTP_File = /path/to/file)"
            ),
        ),
        [_] => {}
        [(a, la), (b, lb), ..] => out.error(
            (*la).max(*lb),
            format!(
                "door '{name}' has both {} (line {la}) and {} (line {lb}); keep one",
                key_name(*a),
                key_name(*b)
            ),
        ),
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
    if let (Some(l), None, None) = (seq_line, otp_line, totp_line) {
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
            }
            if seq.len() <= 3 {
                out.warn(
                    l,
                    Some(name),
                    format!(
                        "sequence has only {} knock{}: easy to guess or stumble on (use 4 or more)",
                        seq.len(),
                        if seq.len() == 1 { "" } else { "s" }
                    ),
                );
            }
            if door.sweep_guard {
                let weakest = [true, false]
                    .into_iter()
                    .filter_map(|up| sweep_strays(&ports, up))
                    .min();
                if let Some(strays) = weakest.filter(|n| *n < sweep_threshold) {
                    let lo = ports.iter().min().copied().unwrap_or_default();
                    let hi = ports.iter().max().copied().unwrap_or_default();
                    out.warn(
                        l,
                        Some(name),
                        format!(
                            "ports too close together: a port sweep over {lo}-{hi} meets only {strays} other port(s) between the knocks, under SweepThreshold ({sweep_threshold}), and opens the door (spread the ports further apart)"
                        ),
                    );
                }
            }
        }
    }
    if let (Some(l), None, None) = (seq_line, otp_line, totp_line) {
        let internet_facing = match door.target {
            None => true,
            Some(t) => is_global(t),
        };
        if internet_facing && !door.sequence.is_empty() {
            out.static_doors.push((l, name.to_string()));
        }
    }
    let tcp_knocks =
        door.sequence.is_empty() || door.sequence.iter().any(|s| s.proto == Proto::Tcp);
    let f = door.tcp_flags;
    if door.sweep_guard && sweep_threshold > 0 && tcp_knocks {
        // Rule: on a guarded door a TCP knock is a connection attempt (SYN without ACK).
        if f.set & flag::ACK != 0 || f.unset & flag::SYN != 0 {
            out.warn(
                line_of(Key::TcpFlags).unwrap_or(door.line),
                Some(name),
                "TCPFlags matches no connection attempt: with the sweep guard on, a TCP knock counts only as a SYN without ACK (what knock sends), so no TCP knock of this door ever counts (remove TCPFlags, or set SweepGuard = off)",
            );
        }
    }
    if !door.sweep_guard {
        out.warn(
            line_of(Key::SweepGuard).unwrap_or(door.line),
            Some(name),
            if tcp_knocks && !(f.set & flag::SYN != 0 && f.unset & flag::ACK != 0) {
                "SweepGuard is off: two port sweeps open this door whatever the order of its ports, made of any packets its TCPFlags matches (SYN|ACK, ACK, FIN, NULL... unless TCPFlags = syn,!ack) (knockd 0.8 behaviour; turn it on unless a client needs it)"
            } else {
                "SweepGuard is off: two port sweeps open this door whatever the order of its ports (knockd 0.8 behaviour; turn it on unless a client needs it)"
            },
        );
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

/// Whether `ip` is reachable from the internet (not private, loopback, link-local, ULA,
/// CGNAT or documentation space).
fn is_global(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(a) => {
            let o = a.octets();
            !(a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_documentation()
                || (o[0] == 100 && (64..128).contains(&o[1])))
        }
        std::net::IpAddr::V6(a) => {
            let s = a.segments();
            !(a.is_loopback()
                || a.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8))
        }
    }
}

/// How many distinct non-knock ports a sweep (ascending if `up`, else descending, as many
/// passes as it takes) over exactly the door's port range meets between the first and the
/// last knock, when such a sweep can open the door at all; `None` when it cannot (it hits
/// another of the door's ports out of order, which resets the attempt).
pub(super) fn sweep_strays(ports: &[u16], up: bool) -> Option<usize> {
    let key = |p: u16| if up { i64::from(p) } else { -i64::from(p) };
    let lo = ports.iter().map(|&p| key(p)).min()?;
    let hi = ports.iter().map(|&p| key(p)).max()?;
    let mut strays = 0usize;
    for w in ports.windows(2) {
        let (a, b) = (key(w[0]), key(w[1]));
        if a < b {
            // Within one pass: every port strictly between is visited.
            if ports.iter().any(|&p| a < key(p) && key(p) < b) {
                return None;
            }
            strays += usize::try_from(b - a - 1).unwrap_or(usize::MAX);
        } else {
            // Next pass: visits (a, hi] and [lo, b); free only when they hold no port.
            if ports
                .iter()
                .any(|&p| (key(p) > a && key(p) <= hi) || (key(p) >= lo && key(p) < b))
            {
                return None;
            }
            strays += usize::try_from((hi - a) + (b - lo)).unwrap_or(usize::MAX);
        }
    }
    Some(strays)
}

#[cfg(test)]
mod tests {
    use super::{adds_iptables_accept, sweep_strays};

    #[test]
    fn iptables_accept_commands_under_nftables_are_named_with_the_fix() {
        for (cmd, adds) in [
            (
                "/sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT",
                true,
            ),
            ("iptables -I INPUT 1 -s %IP% -j ACCEPT", true),
            (
                "ip6tables --insert INPUT -s %IP% -j ACCEPT; logger hi",
                true,
            ),
            (
                "logger x && /usr/sbin/iptables-nft -A INPUT -s %IP% -j ACCEPT",
                true,
            ),
            (
                "/sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT",
                false,
            ),
            ("iptables -A INPUT -s %IP% -j DROP", false),
            ("nft add element inet filter allow { %IP% }", false),
        ] {
            assert_eq!(adds_iptables_accept(cmd), adds, "{cmd}");
        }
        let conf = |fw: &str| {
            format!(
                "[options]\n Firewall = {fw}\n[openSSH]\n sequence = 7000,8000,9000\n command = /sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n"
            )
        };
        let warned = |fw: &str| {
            crate::config::parse(&conf(fw), "k.conf")
                .expect("valid")
                .warnings
                .into_iter()
                .map(|w| w.to_string())
                .filter(|w| w.contains("iptables ACCEPT"))
                .collect::<Vec<_>>()
        };
        let w = warned("nftables");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("k.conf:5: warning: door 'openSSH': with Firewall = nftables")
                && w[0].contains("Open = 22/tcp"),
            "{w:?}"
        );
        assert!(warned("iptables").is_empty());
    }

    #[test]
    fn sweep_strays_table() {
        for (ports, up, want) in [
            (&[7000, 8000, 9000][..], true, Some(1998)),
            (&[7000, 8000, 9000][..], false, None),
            (&[9000, 7000, 8000][..], true, Some(999)),
            (&[9000, 7000, 8000][..], false, None),
            (&[7000, 7001, 7002][..], true, Some(0)),
            (&[9000, 7000, 7001][..], true, Some(0)),
            (&[7000, 8000, 7500][..], true, None),
            (&[7000, 7000, 7000][..], true, Some(0)),
            (&[7000, 7002, 7004][..], false, None),
            (&[7004, 7002, 7000][..], false, Some(2)),
        ] {
            assert_eq!(sweep_strays(ports, up), want, "{ports:?} up={up}");
        }
    }
}
