use super::*;
use crate::config::flag::{ACK, FIN, PSH, RST, SYN, URG};
use crate::config::DEFAULT_MAX_ATTEMPTS;
use std::net::IpAddr;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

const SEED: &str = "[options]
\tUseSyslog

[openSSH]
\tsequence    = 7000,8000,9000
\tseq_timeout = 5
\tcommand     = /sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
\ttcpflags    = syn

[closeSSH]
\tsequence    = 9000,8000,7000
\tseq_timeout = 5
\tcommand     = /sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
\ttcpflags    = syn
";

fn ok(text: &str) -> Parsed {
    match parse(text, "t.conf") {
        Ok(p) => p,
        Err(e) => panic!("expected OK for:\n{text}\ngot:\n{e}"),
    }
}

fn errs(text: &str) -> Vec<ConfigError> {
    match parse(text, "t.conf") {
        Ok(p) => panic!("expected errors for:\n{text}\ngot {p:#?}"),
        Err(e) => e.0,
    }
}

/// The single door of a config.
fn door(text: &str) -> Door {
    let p = ok(text);
    assert_eq!(p.config.doors.len(), 1, "{text}");
    p.config.doors.into_iter().next().unwrap()
}

fn tcp(port: u16) -> Step {
    Step {
        port,
        proto: Proto::Tcp,
    }
}

fn udp(port: u16) -> Step {
    Step {
        port,
        proto: Proto::Udp,
    }
}

#[test]
fn seed_parses_verbatim() {
    let p = ok(SEED);
    let c = &p.config;
    assert!(c.options.use_syslog);
    assert_eq!(c.doors.len(), 2);
    let (open, close) = (&c.doors[0], &c.doors[1]);
    assert_eq!(open.name, "openSSH");
    assert_eq!(open.line, 4);
    assert_eq!(open.sequence, vec![tcp(7000), tcp(8000), tcp(9000)]);
    assert_eq!(open.seq_timeout, Duration::from_secs(5));
    assert_eq!(
        open.start_command.as_deref(),
        Some("/sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT")
    );
    assert_eq!(open.start_command_6, Command6::Fallback);
    assert_eq!(open.tcp_flags, TcpFlags { set: SYN, unset: 0 });
    assert_eq!(open.cmd_timeout, DEFAULT_CMD_TIMEOUT);
    assert_eq!(open.open_chain, DEFAULT_OPEN_CHAIN);
    assert_eq!(close.name, "closeSSH");
    assert_eq!(close.line, 10);
    assert_eq!(close.sequence, vec![tcp(9000), tcp(8000), tcp(7000)]);
    // Warned, not rejected: the example sequence and the IPv6 fallback to iptables; both
    // static doors in one line.
    let statics: Vec<&Warning> = p
        .warnings
        .iter()
        .filter(|w| w.message.starts_with("static sequence"))
        .collect();
    assert_eq!(statics.len(), 1);
    assert_eq!(statics[0].door, None);
    assert!(
        statics[0].message.starts_with(
            "static sequences on 2 doors that may face the internet: 'openSSH' (line 5), 'closeSSH' (line 11): anyone who sees the knocks can replay them"
        ),
        "{}",
        statics[0].message
    );
    let lines: Vec<(usize, bool)> = p
        .warnings
        .iter()
        .filter(|w| !w.message.starts_with("static sequence"))
        .map(|w| (w.line, w.message.contains("example sequence")))
        .collect();
    assert_eq!(
        lines,
        vec![
            (5, true),
            (5, false),
            (7, false),
            (11, true),
            (11, false),
            (13, false)
        ],
        "{:#?}",
        p.warnings
    );
    assert_eq!(
        p.warnings[0].to_string(),
        "t.conf:5: warning: door 'openSSH': 7000,8000,9000 is knockd's example sequence, scanners try it (choose your own ports)"
    );
}

#[test]
fn every_key_is_parsed() {
    let p = ok("# comment
[options]
  LogFile = /var/log/knockd.log
  PidFile = /run/knockd.pid
  Interface = eth1
  MaxAttempts = 500
  MaxGrants = 50
  UseSyslog = yes

[web]
  Sequence = 2222:udp, 3333, 1111:TCP
  Seq_Timeout = 2.5
  TCPFlags = syn, !ack
  TCPFlags = !fin,!rst,!psh,!urg
  Start_Command = /usr/sbin/iptables -A INPUT -s %IP% -j ACCEPT
  Start_Command_6 = /usr/sbin/ip6tables -A INPUT -s %IP% -j ACCEPT
  Stop_Command = /usr/sbin/iptables -D INPUT -s %IP% -j ACCEPT
  Stop_Command_6 =
  Cmd_Timeout = 0.25
  Target = 192.0.2.1

[native]
  One_Time_Sequences = /etc/knockd/native.otp
  Open = 22/tcp, 443, 53/udp
  Open_Chain = KNOCK-in.1
  Target = 2001:DB8::1
");
    let o = &p.config.options;
    assert_eq!(
        o,
        &Options {
            use_syslog: true,
            log_file: Some("/var/log/knockd.log".into()),
            pid_file: Some("/run/knockd.pid".into()),
            interface: Some("eth1".into()),
            max_attempts: Some(500),
            max_grants: Some(50),
            ..Options::default()
        }
    );
    assert_eq!(p.config.max_attempts(), 500);
    assert_eq!(p.config.max_grants(), 50);
    let web = &p.config.doors[0];
    assert_eq!(web.line, 10);
    assert_eq!(web.sequence, vec![udp(2222), tcp(3333), tcp(1111)]);
    assert_eq!(web.seq_timeout, Duration::from_millis(2500));
    assert_eq!(
        web.tcp_flags,
        TcpFlags {
            set: SYN,
            unset: ACK | FIN | RST | PSH | URG
        }
    );
    assert_eq!(
        web.start_command.as_deref(),
        Some("/usr/sbin/iptables -A INPUT -s %IP% -j ACCEPT")
    );
    assert_eq!(
        web.start_command_6,
        Command6::Command("/usr/sbin/ip6tables -A INPUT -s %IP% -j ACCEPT".into())
    );
    assert_eq!(
        web.stop_command.as_deref(),
        Some("/usr/sbin/iptables -D INPUT -s %IP% -j ACCEPT")
    );
    assert_eq!(web.stop_command_6, Command6::Disabled);
    assert_eq!(web.cmd_timeout, Duration::from_millis(250));
    assert_eq!(web.target, Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))));
    assert!(web.open.is_empty());
    assert_eq!(web.one_time_sequences, None);

    let native = &p.config.doors[1];
    assert_eq!(
        native.one_time_sequences.as_deref(),
        Some(Path::new("/etc/knockd/native.otp"))
    );
    assert!(native.sequence.is_empty(), "filled by load()");
    assert_eq!(
        native.open,
        vec![
            OpenPort {
                port: 22,
                proto: Proto::Tcp
            },
            OpenPort {
                port: 443,
                proto: Proto::Tcp
            },
            OpenPort {
                port: 53,
                proto: Proto::Udp
            },
        ]
    );
    assert_eq!(native.open_chain, "KNOCK-in.1");
    assert_eq!(
        native.target,
        Some(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)))
    );
    assert!(
        p.warnings
            .iter()
            .all(|w| w.message.contains("sequence has only 3 knocks")),
        "{:#?}",
        p.warnings
    );
}

#[test]
fn defaults() {
    let d = door("[d]\nsequence = 1,5,3\n");
    assert_eq!(d.seq_timeout, DEFAULT_SEQ_TIMEOUT);
    assert_eq!(d.cmd_timeout, DEFAULT_CMD_TIMEOUT);
    assert_eq!(d.open_chain, DEFAULT_OPEN_CHAIN);
    assert!(d.tcp_flags.is_dont_care());
    assert_eq!(d.start_command, None);
    assert_eq!(d.start_command_6, Command6::Fallback);
    assert_eq!(d.stop_command_6, Command6::Fallback);
    assert_eq!(d.target, None);
    let c = ok("[d]\nsequence = 1,5,3\n").config;
    assert_eq!(c.options, Options::default());
    assert_eq!(c.max_attempts(), DEFAULT_MAX_ATTEMPTS);
}

#[test]
fn aliases_and_key_case() {
    let d = door(
        "[d]\nSEQUENCE = 1,5,3\nTimeout = 7\nCOMMAND = start\ncommand_6 = start6\nsTOP_cOMMAND = stop\ncmd_timeout = 3\n",
    );
    assert_eq!(d.sequence, vec![tcp(1), tcp(5), tcp(3)]);
    assert_eq!(d.seq_timeout, Duration::from_secs(7));
    assert_eq!(d.start_command.as_deref(), Some("start"));
    assert_eq!(d.start_command_6, Command6::Command("start6".into()));
    assert_eq!(d.stop_command.as_deref(), Some("stop"));
    assert_eq!(d.cmd_timeout, Duration::from_secs(3));
}

#[test]
fn values_are_verbatim() {
    // Split at the first '=', no inline comments, case kept.
    let d = door("[d]\nsequence=1,5,3\ncommand = echo a=b # %IP% Keep\n");
    assert_eq!(d.start_command.as_deref(), Some("echo a=b # %IP% Keep"));
}

#[test]
fn empty_commands() {
    let d = door("[d]\nsequence=1,5,3\nstart_command =\nstop_command=\nstart_command_6 =\n");
    assert_eq!(d.start_command, None);
    assert_eq!(d.stop_command, None);
    assert_eq!(d.start_command_6, Command6::Disabled);
    assert_eq!(d.stop_command_6, Command6::Fallback);
}

#[test]
fn use_syslog_forms() {
    for (text, on) in [
        ("[options]\nUseSyslog\n", true),
        ("[options]\nusesyslog\n", true),
        ("UseSyslog\n[options]\n", true),
        ("[options]\nUseSyslog = yes\n", true),
        ("[options]\nUseSyslog = TRUE\n", true),
        ("[options]\nUseSyslog = on\n", true),
        ("[options]\nUseSyslog = 1\n", true),
        ("[options]\nUseSyslog = no\n", false),
        ("[options]\nUseSyslog = false\n", false),
        ("[options]\nUseSyslog = Off\n", false),
        ("[options]\nUseSyslog = 0\n", false),
        ("[options]\n", false),
    ] {
        let p = ok(&format!("{text}[d]\nsequence = 1,5,3\nopen = 22\n"));
        assert_eq!(p.config.options.use_syslog, on, "{text}");
    }
    // Inside a door (knockd compat): sets the global flag, with a warning.
    let p = ok("[d]\nsequence = 1000,5000,3000,2000\nopen = 22\n  USESYSLOG\n");
    assert!(p.config.options.use_syslog);
    let ws: Vec<&Warning> = p
        .warnings
        .iter()
        .filter(|w| !w.message.starts_with("static sequence"))
        .collect();
    assert_eq!(ws.len(), 1, "{ws:#?}");
    assert_eq!(ws[0].line, 4);
    assert!(ws[0].message.contains("move it to [options]"));
}

#[test]
fn sequences() {
    let max: Vec<String> = (1..=32)
        .map(|p| ((p * 37) % 1000 + 1).to_string())
        .collect();
    for (text, want) in [
        ("7000", vec![tcp(7000)]),
        ("1,65535", vec![tcp(1), tcp(65535)]),
        (
            " 7000 : UDP ,8000,9000:tcp ",
            vec![udp(7000), tcp(8000), tcp(9000)],
        ),
        ("1000,1000,2000", vec![tcp(1000), tcp(1000), tcp(2000)]),
        ("07000:Udp", vec![udp(7000)]),
    ] {
        assert_eq!(parse_sequence(text), Ok(want.clone()), "{text}");
        assert_eq!(door(&format!("[d]\nsequence = {text}\n")).sequence, want);
    }
    assert_eq!(parse_sequence(&max.join(",")).map(|s| s.len()), Ok(32));
}

#[test]
fn seconds() {
    for (text, want) in [
        ("5", Duration::from_secs(5)),
        ("2.5", Duration::from_millis(2500)),
        ("0.001", Duration::from_millis(1)),
        ("007", Duration::from_secs(7)),
        ("1.0000000019", Duration::new(1, 1)),
        ("2592000", Duration::from_secs(MAX_TIMEOUT_SECS)),
    ] {
        let d = door(&format!(
            "[d]\nsequence = 1,5,3\nseq_timeout = {text}\ncmd_timeout = {text}\n"
        ));
        assert_eq!(d.seq_timeout, want, "{text}");
        assert_eq!(d.cmd_timeout, want, "{text}");
    }
    let d = door("[d]\nsequence = 1,5,3\ncmd_timeout = 0\n");
    assert_eq!(d.cmd_timeout, Duration::ZERO);
}

#[test]
fn targets() {
    for (text, want) in [
        ("10.0.0.1", "10.0.0.1"),
        ("2001:db8:0:0::1", "2001:db8::1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("[::1]", "::1"),
        ("::ffff:192.0.2.1", "::ffff:192.0.2.1"),
    ] {
        let d = door(&format!("[d]\nsequence = 1,5,3\ntarget = {text}\n"));
        assert_eq!(d.target, Some(want.parse().unwrap()), "{text}");
    }
}

#[test]
fn sections_and_lexing() {
    // CRLF, BOM, indented comments, trimmed names, several [options] sections.
    let p = ok("\u{feff}[options]\r\n   # hi\r\n\tLogFile = /a\r\n[ my door ]\r\nsequence = 1,5,3\r\n[options]\r\nPidFile = /b\r\n");
    assert_eq!(p.config.options.log_file, Some("/a".into()));
    assert_eq!(p.config.options.pid_file, Some("/b".into()));
    assert_eq!(p.config.doors[0].name, "my door");
    assert_eq!(p.config.doors[0].line, 4);
    // Empty file: no doors, no errors.
    assert_eq!(ok("").config, Config::default());
    // Door names are case-sensitive: these are two doors.
    assert_eq!(
        ok("[a]\nsequence=1,5,3\n[A]\nsequence=1,5,3\n")
            .config
            .doors
            .len(),
        2
    );
}

#[test]
fn errors_name_line_and_fix() {
    let many: Vec<String> = (1..=33)
        .map(|p| ((p * 37) % 1000 + 1).to_string())
        .collect();
    let many = format!("[d]\nsequence = {}\n", many.join(","));
    let long_chain = format!(
        "[d]\nsequence = 1,5,3\nopen = 22\nopen_chain = {}\n",
        "A".repeat(29)
    );
    #[rustfmt::skip]
    let cases: Vec<(&str, usize, &str)> = vec![
        // Structure.
        ("sequence = 1,2,3\n[d]\n", 1, "before any section (put it under [options] or a [door] header)"),
        ("LogFile = /x\n", 1, "before any section"),
        ("[Options]\nUseSyslog\n", 1, "section [Options] must be written [options]"),
        ("[OPTIONS]\n", 1, "must be written [options] (lower case)"),
        ("[]\n", 1, "empty section name '[]' (write [options] or a door name"),
        ("[  ]\n", 1, "empty section name"),
        ("[door\nsequence = 1,5,3\n", 1, "has no closing ']'"),
        ("[a]b]\n", 1, "contains '[' or ']'"),
        ("[a\u{1b}b]\n", 1, "control character U+001B at position 2"),
        ("[ab\rc]\nsequence = 1,5,3\n", 1, "control character U+000D"),
        ("[a\u{7f}]\n", 1, "U+007F"),
        ("[a\u{85}b]\n", 1, "U+0085"),
        ("[\u{202e}nimda]\n", 1, "U+202E"),
        ("[d] # ssh\nsequence = 1,5,3\n", 1, "junk '# ssh' after section header (nothing may follow ']'"),
        ("[options]\nUseSyslog =\n", 2, "invalid UseSyslog value ''"),
        ("[d]\nsequence=1,5,3\ninterface = eth0\n", 3, "interface belongs in [options], not in door 'd'"),
        ("[d]\nsequence=1,5,3\n\n[d]\nsequence=1,5,3\n", 4, "duplicate door [d] (first defined on line 1); rename"),
        ("[d]\nsequence=1,5,3\nfoo\n", 3, "'foo' is not a directive (write key = value"),
        ("[d]\nsequence\n", 2, "sequence needs a value (write Sequence = ...)"),
        ("[d]\nsequence=1,5,3\n = 5\n", 3, "missing key before '='"),
        ("[options]\nfoo = 1\n", 2, "unknown key 'foo' in [options] (valid keys: UseSyslog, LogFile, PidFile, Interface, MaxAttempts, Socket, StateFile, OnShutdown, MaxGrants, StartRate, SweepThreshold, SweepPenalty, MaxAttemptsPerNetwork, NetworkPrefixV4, NetworkPrefixV6, Firewall, NftMark, MaxClients, NftTable, SPA_Port, SPA_ClientDir, SPA_ServerKey)"),
        ("[d]\nsequence=1,5,3\nfoo = 1\n", 3, "unknown key 'foo' in door 'd' (valid keys: Sequence, One_Time_Sequences, Seq_Timeout, TCPFlags, Start_Command, Start_Command_6, Stop_Command, Stop_Command_6, Cmd_Timeout, Target, Open, Open_Chain, SweepGuard, TOTP_File, SPA, SPA_Address)"),
        ("[d]\nsequence=1,5,3\nLogFile = /x\n", 3, "LogFile belongs in [options], not in door 'd' (move it to [options])"),
        ("[d]\nsequence=1,5,3\nmaxattempts = 5\n", 3, "maxattempts belongs in [options]"),
        ("[options]\nSequence = 1,2,3\n", 2, "Sequence is a door key and does not belong in [options]"),
        ("[options]\ncommand = x\n", 2, "command is a door key"),
        // Duplicates (aliases are the same key; [options] sections share keys).
        ("[d]\nsequence=1,5,3\nsequence=1,5,3\n", 3, "duplicate Sequence (already set on line 2); remove one"),
        ("[d]\nsequence=1,5,3\ncommand = a\nstart_command = b\n", 4, "duplicate Start_Command (already set as 'command' on line 3)"),
        ("[d]\nsequence=1,5,3\ntimeout = 1\nseq_timeout = 2\n", 4, "duplicate Seq_Timeout (already set as 'timeout' on line 3)"),
        ("[d]\nsequence=1,5,3\ncommand_6 = a\nSTART_COMMAND_6 = b\n", 4, "duplicate Start_Command_6"),
        ("[d]\nsequence=1,5,3\nstop_command = a\nstop_command = b\n", 4, "duplicate Stop_Command"),
        ("[d]\nsequence=1,5,3\nstop_command_6 = a\nstop_command_6 = b\n", 4, "duplicate Stop_Command_6"),
        ("[d]\nsequence=1,5,3\ncmd_timeout = 1\ncmd_timeout = 1\n", 4, "duplicate Cmd_Timeout"),
        ("[d]\nsequence=1,5,3\ntarget = ::1\ntarget = ::1\n", 4, "duplicate Target"),
        ("[d]\nsequence=1,5,3\nopen = 1\nopen = 2\n", 4, "duplicate Open"),
        ("[d]\nsequence=1,5,3\nopen = 1\nopen_chain = A\nopen_chain = B\n", 5, "duplicate Open_Chain"),
        ("[d]\none_time_sequences = /a\none_time_sequences = /b\n", 3, "duplicate One_Time_Sequences"),
        ("[options]\nLogFile = /a\n[options]\nlogfile = /b\n", 4, "duplicate LogFile (already set on line 2)"),
        ("[options]\nUseSyslog\nusesyslog = no\n", 3, "duplicate UseSyslog"),
        // [options] values.
        ("[options]\nUseSyslog = maybe\n", 2, "invalid UseSyslog value 'maybe' (use yes or no"),
        ("[options]\nMaxAttempts = 0\n", 2, "invalid MaxAttempts '0' (use a whole number of at least 1"),
        ("[options]\nMaxGrants = 0\n", 2, "invalid MaxGrants '0' (use a whole number of at least 1, e.g. 10000)"),
        ("[options]\nMaxGrants = lots\n", 2, "invalid MaxGrants 'lots'"),
        ("[options]\nStartRate = 0\n", 2, "invalid StartRate '0' (use a whole number from 1 to 100000, e.g. 20)"),
        ("[options]\nMaxAttempts = -1\n", 2, "invalid MaxAttempts '-1'"),
        ("[options]\nMaxAttempts = 1e5\n", 2, "invalid MaxAttempts '1e5'"),
        ("[options]\nMaxAttempts = 100000000000000000000000\n", 2, "invalid MaxAttempts"),
        ("[options]\nInterface = eth 0\n", 2, "invalid Interface 'eth 0' (use a network interface name"),
        ("[options]\nInterface = abcdefghijklmnop\n", 2, "invalid Interface"),
        ("[options]\nInterface =\n", 2, "invalid Interface ''"),
        ("[options]\nLogFile =\n", 2, "LogFile needs a path"),
        ("[options]\nPidFile =\n", 2, "PidFile needs a path"),
        // Sequence.
        ("[d]\nsequence = abc\n", 2, "invalid port 'abc' in sequence (use a number from 1 to 65535)"),
        ("[d]\nsequence = -1\n", 2, "invalid port '-1' in sequence"),
        ("[d]\nsequence = 8000junk\n", 2, "invalid port '8000junk' in sequence"),
        ("[d]\nsequence = +8000\n", 2, "invalid port '+8000' in sequence"),
        ("[d]\nsequence = 70 00\n", 2, "invalid port '70 00' in sequence"),
        ("[d]\nsequence = 0,1,2\n", 2, "port 0 out of range in sequence (use 1 to 65535)"),
        ("[d]\nsequence = 1,65536\n", 2, "port 65536 out of range in sequence"),
        ("[d]\nsequence = 99999999999999999999999\n", 2, "out of range in sequence"),
        ("[d]\nsequence = 7000:tcp:junk\n", 2, "junk after the protocol in knock '7000:tcp:junk' (write port or port:proto"),
        ("[d]\nsequence = 7000,,8000\n", 2, "empty item in sequence '7000,,8000' (remove the extra ',')"),
        ("[d]\nsequence = 7000,8000,\n", 2, "empty item in sequence"),
        ("[d]\nsequence = 7000:icmp\n", 2, "unknown protocol 'icmp' in sequence (use tcp or udp)"),
        ("[d]\nsequence = 7000:\n", 2, "missing protocol after ':' in knock '7000:' (use tcp or udp)"),
        ("[d]\nsequence = 7000/udp\n", 2, "invalid knock '7000/udp' in sequence (write port or port:proto, e.g. 7000:udp)"),
        (many.as_str(), 2, "sequence has 33 knocks, more than the maximum of 32 (shorten it)"),
        ("[d]\nsequence =\n", 2, "empty sequence (list the knocks"),
        ("[d]\nsequence = 1,5,3 # my knock\n", 2, "'#' starts a comment only at the beginning of a line"),
        // One_Time_Sequences.
        ("[d]\none_time_sequences =\n", 2, "One_Time_Sequences needs a file name"),
        // Timeouts.
        ("[d]\nsequence=1,5,3\nseq_timeout = 5 # s\n", 3, "invalid Seq_Timeout '5 # s' (use seconds greater than 0, e.g. 5 or 2.5); note: '#' starts a comment"),
        ("[d]\nsequence=1,5,3\nseq_timeout = abc\n", 3, "invalid Seq_Timeout 'abc'"),
        ("[d]\nsequence=1,5,3\ntimeout = abc\n", 3, "invalid Seq_Timeout 'abc'"),
        ("[d]\nsequence=1,5,3\nseq_timeout = -1\n", 3, "invalid Seq_Timeout '-1'"),
        ("[d]\nsequence=1,5,3\nseq_timeout = 5s\n", 3, "invalid Seq_Timeout '5s'"),
        ("[d]\nsequence=1,5,3\nseq_timeout = 1.\n", 3, "invalid Seq_Timeout '1.'"),
        ("[d]\nsequence=1,5,3\nseq_timeout = .5\n", 3, "invalid Seq_Timeout '.5'"),
        ("[d]\nsequence=1,5,3\nseq_timeout = 1e3\n", 3, "invalid Seq_Timeout '1e3'"),
        ("[d]\nsequence=1,5,3\nseq_timeout =\n", 3, "invalid Seq_Timeout ''"),
        ("[d]\nsequence=1,5,3\nseq_timeout = 0\n", 3, "Seq_Timeout must be greater than 0"),
        ("[d]\nsequence=1,5,3\nseq_timeout = 0.0\n", 3, "Seq_Timeout must be greater than 0"),
        ("[d]\nsequence=1,5,3\nseq_timeout = 2592000.5\n", 3, "Seq_Timeout '2592000.5' is too large (at most 2592000 seconds)"),
        ("[d]\nsequence=1,5,3\nseq_timeout = 99999999999999999999999\n", 3, "is too large"),
        ("[d]\nsequence=1,5,3\ncmd_timeout = abc\n", 3, "invalid Cmd_Timeout 'abc' (use seconds 0 or more, e.g. 5 or 2.5)"),
        ("[d]\nsequence=1,5,3\ncmd_timeout = -1\n", 3, "invalid Cmd_Timeout '-1'"),
        ("[d]\nsequence=1,5,3\ncmd_timeout = 1.2.3\n", 3, "invalid Cmd_Timeout '1.2.3'"),
        ("[d]\nsequence=1,5,3\ncmd_timeout = 3000000\n", 3, "Cmd_Timeout '3000000' is too large"),
        // TCPFlags.
        ("[d]\nsequence=1,5,3\ntcpflags = syn,foo\n", 3, "unknown TCP flag 'foo' (use fin, syn, rst, psh, ack, urg, optionally prefixed with '!'"),
        ("[d]\nsequence=1,5,3\ntcpflags = ece\n", 3, "unknown TCP flag 'ece'"),
        ("[d]\nsequence=1,5,3\ntcpflags = !\n", 3, "unknown TCP flag '!'"),
        ("[d]\nsequence=1,5,3\ntcpflags = syn,!syn\n", 3, "TCP flag 'syn' is both required and negated ('!syn') in TCPFlags (keep one)"),
        ("[d]\nsequence=1,5,3\ntcpflags = syn\ntcpflags = ack, !SYN\n", 4, "TCP flag 'syn' is both required and negated"),
        ("[d]\nsequence=1,5,3\ntcpflags =\n", 3, "TCPFlags is empty"),
        ("[d]\nsequence=1,5,3\ntcpflags = syn,,ack\n", 3, "empty item in TCPFlags"),
        // Target.
        ("[d]\nsequence=1,5,3\ntarget = example.com\n", 3, "invalid Target address 'example.com' (use one IPv4 or IPv6 address"),
        ("[d]\nsequence=1,5,3\ntarget = 300.1.1.1\n", 3, "invalid Target address '300.1.1.1'"),
        ("[d]\nsequence=1,5,3\ntarget = 10.0.0.1, 10.0.0.2\n", 3, "invalid Target address"),
        ("[d]\nsequence=1,5,3\ntarget =\n", 3, "invalid Target address ''"),
        // Open / Open_Chain.
        ("[d]\nsequence=1,5,3\nopen =\n", 3, "Open is empty (list the ports to open"),
        ("[d]\nsequence=1,5,3\nopen = 22:tcp\n", 3, "invalid item '22:tcp' in Open (write port or port/proto, e.g. 22/tcp)"),
        ("[d]\nsequence=1,5,3\nopen = ssh\n", 3, "invalid port 'ssh' in Open (use a number from 1 to 65535)"),
        ("[d]\nsequence=1,5,3\nopen = 0\n", 3, "port 0 out of range in Open"),
        ("[d]\nsequence=1,5,3\nopen = 70000/udp\n", 3, "port 70000 out of range in Open"),
        ("[d]\nsequence=1,5,3\nopen = 22/icmp\n", 3, "unknown protocol 'icmp' in Open (use tcp or udp)"),
        ("[d]\nsequence=1,5,3\nopen = 22/\n", 3, "missing protocol after '/' in Open item '22/'"),
        ("[d]\nsequence=1,5,3\nopen = 22/tcp/x\n", 3, "junk after the protocol in Open item"),
        ("[d]\nsequence=1,5,3\nopen = 22,,443\n", 3, "empty item in Open"),
        ("[d]\nsequence=1,5,3\nopen = 22/tcp, 22\n", 3, "22/tcp is listed twice in Open (remove one)"),
        ("[d]\nsequence=1,5,3\nopen = 22\nopen_chain = bad chain\n", 4, "invalid Open_Chain 'bad chain' (use 1 to 28 characters"),
        ("[d]\nsequence=1,5,3\nopen = 22\nopen_chain =\n", 4, "invalid Open_Chain ''"),
        (long_chain.as_str(), 4, "invalid Open_Chain"),
        ("[d]\nsequence=1,5,3\nopen_chain = INPUT\n", 3, "Open_Chain without Open in door 'd' (add Open = port/proto, or remove Open_Chain)"),
        ("[d]\nsequence=1,5,3\ncommand = x\nopen = 22\n", 4, "door 'd' has both Open and Start_Command (line 3); pick one kind of action"),
        ("[d]\nsequence=1,5,3\nopen = 22\nstop_command = x\n", 3, "has both Open and Stop_Command (line 4)"),
        ("[d]\nsequence=1,5,3\nopen = 22\ncommand_6 =\n", 3, "has both Open and Start_Command_6"),
        // Door-level.
        ("[d]\ncommand = x\n", 1, "door 'd' has no knock sequence (add Sequence = port,port,..., One_Time_Sequences = /path/to/file, TOTP_File = /path/to/file or SPA = client, ...)"),
        ("[options]\n[d]\n", 2, "door 'd' has no knock sequence"),
        ("[d]\nsequence=1,5,3\none_time_sequences = /x\n", 3, "door 'd' has both Sequence (line 2) and One_Time_Sequences (line 3); keep one"),
    ];
    for (text, line, phrase) in cases {
        let es = errs(text);
        assert!(
            es.iter()
                .any(|e| e.line == line && e.message.contains(phrase)),
            "want line {line} containing {phrase:?} for:\n{text}\ngot: {es:#?}"
        );
        for e in &es {
            assert_eq!(e.file, "t.conf");
            assert!(
                e.message.contains('(') || e.message.contains(';'),
                "message without a fix: {}",
                e.message
            );
        }
    }
}

#[test]
fn all_errors_are_collected_in_line_order() {
    let es = errs("[d]\ncommand = x\n[e]\nsequence = 1,x\nseq_timeout = y\n[Options]\nbogus\n");
    let lines: Vec<usize> = es.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![1, 4, 5, 6, 7], "{es:#?}");
    let shown = ConfigErrors(es).to_string();
    assert_eq!(shown.lines().count(), 5);
    assert!(
        shown.starts_with("t.conf:1: door 'd' has no knock sequence"),
        "{shown}"
    );
}

#[test]
fn directives_after_a_bad_header_are_still_checked() {
    let es = errs("[]\nsequence = abc\n");
    let lines: Vec<usize> = es.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![1, 2], "{es:#?}");
}

fn warnings(text: &str) -> Vec<Warning> {
    ok(text).warnings
}

#[test]
fn warnings_table() {
    #[rustfmt::skip]
    let cases: Vec<(&str, Option<(usize, &str)>)> = vec![
        // Short sequences.
        ("[d]\nsequence = 5000,1000\nopen = 22\n", Some((2, "sequence has only 2 knocks: easy to guess or stumble on (use 4 or more)"))),
        ("[d]\nsequence = 5000\nopen = 22\n", Some((2, "sequence has only 1 knock: easy to guess"))),
        ("[d]\nsequence = 3000,1000,2000\nopen = 22\n", Some((2, "sequence has only 3 knocks"))),
        // Ports a sweep meets without tripping the guard; the old "shuffle" advice is gone.
        ("[d]\nsequence = 1000,1001,1002,1003\nopen = 22\n", Some((2, "ports too close together: a port sweep over 1000-1003 meets only 0 other port(s) between the knocks, under SweepThreshold (5), and opens the door (spread the ports further apart)"))),
        ("[d]\nsequence = 2003,1000,1001,1002\nopen = 22\n", Some((2, "a port sweep over 1000-2003 meets only 0 other"))),
        ("[options]\nSweepThreshold = 300\n[d]\nsequence = 1000,1100,1200,1300\nopen = 22\n", Some((4, "meets only 297 other port(s) between the knocks, under SweepThreshold (300)"))),
        // The guard turned off.
        ("[d]\nsequence = 3000,1000,2000,1500\nopen = 22\nSweepGuard = off\n", Some((4, "SweepGuard is off: two port sweeps open this door whatever the order of its ports"))),
        ("[d]\nsequence = 3000,1000,2000,1500\nopen = 22\nSweepGuard = off\n", Some((4, "made of any packets its TCPFlags matches (SYN|ACK, ACK, FIN, NULL... unless TCPFlags = syn,!ack)"))),
        // Guarded doors: a TCP knock is a connection attempt; TCPFlags that match none never knock.
        ("[d]\nsequence = 3000,1000,2000,1500\nopen = 22\ntcpflags = ack\n", Some((4, "TCPFlags matches no connection attempt: with the sweep guard on, a TCP knock counts only as a SYN without ACK"))),
        ("[d]\nsequence = 3000,1000,2000,1500\nopen = 22\ntcpflags = fin,!syn\n", Some((4, "TCPFlags matches no connection attempt"))),
        // Static sequences that may face the internet: suggest a rotating door.
        ("[d]\nsequence = 3000,1000,2000,1500\nopen = 22\n", Some((2, "static sequence on a door that may face the internet: anyone who sees the knocks can replay them (use a rotating door: knockd --new-totp FILE, then TOTP_File = FILE)"))),
        ("[d]\nsequence = 3000,1000,2000,1500\nopen = 22\ntarget = 8.8.8.8\n", Some((2, "static sequence on a door that may face the internet"))),
        // The example sequence (and its reverse), any protocol.
        ("[d]\nsequence = 7000,8000,9000\nopen = 22\n", Some((2, "7000,8000,9000 is knockd's example sequence, scanners try it"))),
        ("[d]\nsequence = 9000:udp,8000,7000\nopen = 22\n", Some((2, "9000,8000,7000 is knockd's example sequence"))),
        // No action.
        ("[d]\nsequence = 3000,1000,2000,1500\n", Some((1, "door has no action: a completed knock is only logged (set Start_Command or Open)"))),
        ("[d]\nsequence = 3000,1000,2000,1500\ncommand =\n", Some((1, "door has no action"))),
        // IPv6 fallback to iptables.
        ("[d]\nsequence = 3000,1000,2000,1500\ncommand = /sbin/iptables -I INPUT -s %IP% -j ACCEPT\n", Some((3, "Start_Command runs iptables and Start_Command_6 is not set: IPv6 knocks would pass an IPv6 address to iptables; set Start_Command_6 (ip6tables ...) or leave it empty to disable IPv6"))),
        ("[d]\nsequence = 3000,1000,2000,1500\ncommand = iptables-nft -I INPUT -s %IP% -j ACCEPT\n", Some((3, "Start_Command runs iptables"))),
        ("[d]\nsequence = 3000,1000,2000,1500\ncommand = x\nstop_command = iptables -D INPUT -s %IP% -j ACCEPT\n", Some((4, "Stop_Command runs iptables and Stop_Command_6 is not set"))),
        // Clean doors.
        ("[d]\nsequence = 3000,1000,2000,1500\nopen = 22\n", None),
        ("[d]\nsequence = 3000,1000,2000,1500\ncommand = /sbin/iptables -I INPUT\ncommand_6 =\n", None),
        ("[d]\nsequence = 3000,1000,2000,1500\ncommand = /sbin/iptables -I INPUT\ncommand_6 = ip6tables -I INPUT\n", None),
        ("[d]\nsequence = 3000,1000,2000,1500\ncommand = /usr/bin/nft add element inet f s { %IP% }\n", None),
        ("[d]\nsequence = 3000,1000,2000,1500\nstart_command_6 = ip6tables -I INPUT\n", None),
        ("[d]\nsequence = 3000,1000,2000,1000\nopen = 22\n", None),
        // One-time sequences: no short/monotonic warnings.
        ("[d]\none_time_sequences = /x\nopen = 22\n", None),
    ];
    for (text, want) in cases {
        let ws = warnings(text);
        match want {
            Some((line, phrase)) => assert!(
                ws.iter().any(|w| w.line == line
                    && w.message.contains(phrase)
                    && w.door.as_deref() == Some("d")),
                "want warning at line {line} containing {phrase:?} for:\n{text}\ngot: {ws:#?}"
            ),
            None => assert!(
                ws.iter().all(|w| w.message.starts_with("static sequence")),
                "no warning expected for:\n{text}\ngot: {ws:#?}"
            ),
        }
    }
    // Monotonic but spread out: no warning (the sweep guard handles it), no "shuffle" advice.
    let ws = warnings("[d]\nsequence = 1000,2000,3000,4000\nopen = 22\ntarget = 10.1.2.3\n");
    assert!(ws.is_empty(), "{ws:#?}");
    // A private Target is not internet-facing; one-time and TOTP doors are not static.
    let ws = warnings("[d]\nsequence = 1000,5000,3000,2000\nopen = 22\ntarget = fd00::1\n");
    assert!(ws.is_empty(), "{ws:#?}");
}

// ------------------------------------------------------------------------------------------
// load()

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn load_reads_and_parses() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "knockd.conf", SEED);
    let parsed = load(&p).unwrap();
    assert_eq!(parsed.config.doors.len(), 2);
    assert_eq!(parsed.warnings[0].file, p.display().to_string());
}

#[test]
fn load_unreadable_names_path_and_os_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("missing.conf");
    let e = load(&p).unwrap_err();
    assert_eq!(e.len(), 1);
    assert_eq!(e.0[0].line, 0);
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("{}: cannot read config file: ", p.display())),
        "{shown}"
    );
    assert!(shown.contains("os error 2"), "{shown}");
}

#[test]
fn load_parse_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "k.conf", "[d]\nsequence = x\n");
    let e = load(&p).unwrap_err();
    assert!(e
        .to_string()
        .starts_with(&format!("{}:2: invalid port 'x'", p.display())));
}

#[test]
fn load_fills_one_time_sequences() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir,
        "ssh.otp",
        "# used\n#7001,7002\n 7003:udp,7004,7005\n7006,7007\n",
    );
    let abs = write(&dir, "abs.otp", "1,2,3\n");
    let conf = format!(
        "[rel]\none_time_sequences = ssh.otp\nopen = 22\n[abs]\none_time_sequences = {}\nopen = 22\n",
        abs.display()
    );
    let p = write(&dir, "knockd.conf", &conf);
    let parsed = load(&p).unwrap();
    let rel = &parsed.config.doors[0];
    assert_eq!(rel.sequence, vec![udp(7003), tcp(7004), tcp(7005)]);
    // Relative paths are resolved against the config file's directory.
    assert_eq!(
        rel.one_time_sequences.as_deref(),
        Some(dir.path().join("ssh.otp").as_path())
    );
    let abs_door = &parsed.config.doors[1];
    assert_eq!(abs_door.sequence, vec![tcp(1), tcp(2), tcp(3)]);
    assert_eq!(abs_door.one_time_sequences.as_deref(), Some(abs.as_path()));
}

#[test]
fn load_missing_otp_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let conf = "[a]\nopen = 22\none_time_sequences = missing.otp\n";
    let p = write(&dir, "knockd.conf", conf);
    let e = load(&p).unwrap_err();
    assert_eq!(e.len(), 1, "{e}");
    assert_eq!(e.0[0].line, 3);
    assert!(
        e.0[0]
            .message
            .contains("cannot read one-time sequences file")
            && e.0[0].message.contains("missing.otp"),
        "{e}"
    );
}

/// Issue 13: a used-up one-time file disables its door, not the daemon.
#[test]
fn load_empty_or_exhausted_otp_file_disables_the_door_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir, "empty.otp", "");
    write(&dir, "used.otp", "#1,2,3\n\n# 4,5,6\nnot a sequence\n");
    write(&dir, "ok.otp", "4000,1000,3000,2000\n");
    let conf = "[b]\none_time_sequences = empty.otp\nopen = 22\n[c]\none_time_sequences = used.otp\nopen = 22\n[d]\none_time_sequences = ok.otp\nopen = 22\n";
    let p = write(&dir, "knockd.conf", conf);
    let parsed = load(&p).unwrap();
    let doors = &parsed.config.doors;
    assert!(doors[0].sequence.is_empty() && doors[1].sequence.is_empty());
    assert_eq!(doors[2].sequence.len(), 4);
    let disabled: Vec<(usize, Option<&str>)> = parsed
        .warnings
        .iter()
        .filter(|w| w.message.starts_with("door disabled:"))
        .map(|w| (w.line, w.door.as_deref()))
        .collect();
    assert_eq!(
        disabled,
        vec![(2, Some("b")), (5, Some("c"))],
        "{:#?}",
        parsed.warnings
    );
    assert!(parsed
        .warnings
        .iter()
        .any(|w| w.message.contains("has no unused sequence") && w.message.contains("used.otp")));
    // Outside the unit's writable directories: said so.
    assert!(parsed
        .warnings
        .iter()
        .any(|w| w.door.as_deref() == Some("d") && w.message.contains("ReadWritePaths")));
    // The disabled doors are not in the filter and match nothing.
    let rules: Vec<crate::matcher::DoorRule> = doors.iter().map(Into::into).collect();
    assert!(!rules[0].enabled && !rules[1].enabled && rules[2].enabled);
}

#[test]
fn control_plane_options() {
    let p = parse(
        "[options]\n Socket = /run/k/k.sock\n StateFile = /var/lib/k/s.json\n OnShutdown = Keep\n MaxClients = 200\n[d]\n sequence = 1,5,3\n",
        "t.conf",
    )
    .expect("valid");
    let o = &p.config.options;
    assert_eq!(
        o.socket.as_deref(),
        Some(std::path::Path::new("/run/k/k.sock"))
    );
    assert_eq!(
        o.state_file.as_deref(),
        Some(std::path::Path::new("/var/lib/k/s.json"))
    );
    assert_eq!(o.on_shutdown, crate::config::ShutdownPolicy::Keep);
    assert_eq!(o.max_clients, Some(200));
    assert_eq!(
        parse("[d]\n sequence = 1,5,3\n", "t.conf")
            .expect("valid")
            .config
            .options
            .on_shutdown,
        crate::config::ShutdownPolicy::Close
    );
    for (text, line, needle) in [
        ("[options]\n Socket = rel.sock\n", 2, "absolute path"),
        ("[options]\n StateFile = s.json\n", 2, "absolute path"),
        ("[options]\n MaxClients = 0\n", 2, "invalid MaxClients '0'"),
        (
            "[options]\n MaxClients = lots\n",
            2,
            "whole number from 1 to 100000",
        ),
        (
            "[options]\n OnShutdown = never\n",
            2,
            "close, close-all or keep",
        ),
    ] {
        let errs = parse(&format!("{text}[d]\n sequence = 1,5,3\n"), "t.conf").expect_err(text);
        assert!(
            errs.0
                .iter()
                .any(|e| e.line == line && e.message.contains(needle)),
            "{text}: {errs}"
        );
    }
}

#[test]
fn load_totp_doors() {
    let dir = tempfile::tempdir().unwrap();
    let spec = knock_ipc::totp::Spec::write_new(&dir.path().join("ssh.totp")).unwrap();
    let p = write(
        &dir,
        "knockd.conf",
        "[ssh]\nTOTP_File = ssh.totp\nopen = 22\n",
    );
    let parsed = load(&p).unwrap();
    let d = &parsed.config.doors[0];
    assert_eq!(d.totp.as_ref(), Some(&spec));
    assert!(d.sequence.is_empty());
    assert_eq!(
        d.totp_file.as_deref(),
        Some(dir.path().join("ssh.totp").as_path())
    );
    // Its secret never shows in Debug output (logs, panics).
    let secret = data_encoding::BASE32_NOPAD.encode(&spec.secret);
    assert!(!format!("{parsed:?}").contains(&secret));
    // One kind of sequence per door.
    let e = errs("[d]\nsequence = 1000,5000,3000,2000\nTOTP_File = x\nopen = 22\n");
    assert!(
        e.iter().any(|e| e.line == 3
            && e.message == "door 'd' has both Sequence (line 2) and TOTP_File (line 3); keep one"),
        "{e:?}"
    );
    // A protected (opened) port inside the derivation range is refused.
    let p = write(
        &dir,
        "k2.conf",
        "[ssh]\nTOTP_File = ssh.totp\nopen = 22, 20000\n",
    );
    let e = load(&p).unwrap_err();
    assert!(
        e.to_string()
            .contains("may choose port 20000, which the door opens (add 20000 to its exclude line"),
        "{e}"
    );
    // Weak files are warned about: few knocks, few ports, a short step; a default one is not.
    assert!(
        !parsed
            .warnings
            .iter()
            .any(|w| w.message.contains("TOTP_File")),
        "{:?}",
        parsed.warnings
    );
    let weak = knock_ipc::totp::Spec {
        knocks: 2,
        lo: 20000,
        hi: 20499,
        step_secs: 10,
        ..spec.clone()
    };
    std::fs::write(dir.path().join("weak.totp"), weak.render()).unwrap();
    let p = write(&dir, "k4.conf", "[ssh]\nTOTP_File = weak.totp\nopen = 22\n");
    let w: Vec<String> = load(&p)
        .unwrap()
        .warnings
        .into_iter()
        .map(|w| w.message)
        .filter(|m| m.contains("weak.totp"))
        .collect();
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(w[0].contains("only 2 knocks: easy to guess"), "{w:?}");
    assert!(
        w[1].contains("ports 20000-20499 leave 500 port(s) to choose from, under 1000"),
        "{w:?}"
    );
    assert!(w[2].contains("step = 10 s is under 15 s"), "{w:?}");
    // Missing file: an error naming the fix.
    let p = write(&dir, "k3.conf", "[ssh]\nTOTP_File = nope.totp\nopen = 22\n");
    let e = load(&p).unwrap_err().to_string();
    assert!(
        e.contains("cannot read TOTP file") && e.contains("knockd --new-totp"),
        "{e}"
    );
}

/// 100,000 doors parse and validate in well under a second (release; a few seconds in a
/// debug build): no check is quadratic in the number of doors. Measured in this thread's CPU
/// time, which a loaded machine does not stretch (wall time it does).
#[test]
fn a_hundred_thousand_doors_load_quickly_and_duplicates_are_still_found() {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(100_000 * 60);
    for i in 0..100_000u32 {
        let _ = write!(
            text,
            "[door{i}]\n sequence = {},{},{}\n command = true\n",
            1 + i % 60_000,
            2 + (i * 7) % 60_000,
            3 + (i * 13) % 60_000
        );
    }
    let (t, cpu) = (std::time::Instant::now(), thread_cpu());
    let parsed = parse(&text, "big.conf").expect("valid");
    let (took, wall) = (thread_cpu() - cpu, t.elapsed());
    assert_eq!(parsed.config.doors.len(), 100_000);
    let limit = if cfg!(debug_assertions) { 10 } else { 1 };
    assert!(
        took.as_secs() < limit,
        "100,000 doors took {took:?} of CPU ({wall:?} wall), over {limit} s"
    );
    text.push_str("[door99999]\n sequence = 1,5,3\n");
    let errs = parse(&text, "big.conf").expect_err("duplicate");
    assert!(
        errs.0[0].message.contains("duplicate door [door99999]"),
        "{errs}"
    );
}

/// The CPU time (user and system) this thread has used.
fn thread_cpu() -> std::time::Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_THREAD).expect("getrusage(RUSAGE_THREAD)");
    let us = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
    std::time::Duration::from_micros(us(u.user_time()) + us(u.system_time()))
}

/// A relative LogFile/PidFile is resolved against the start directory, on every apply (so a
/// reload after -d does not move the log to /); absolute paths and CLI values are kept.
#[test]
fn relative_log_and_pid_files_resolve_against_the_start_directory() {
    let o = crate::config::Overrides {
        base_dir: Some("/srv/knock".into()),
        ..Default::default()
    };
    let mut opts = parse(
        "[options]\n LogFile = knockd.log\n PidFile = /run/k.pid\n[d]\n sequence = 1,5,3\n",
        "t.conf",
    )
    .expect("valid")
    .config
    .options;
    o.apply(&mut opts);
    assert_eq!(
        opts.log_file.as_deref(),
        Some(std::path::Path::new("/srv/knock/knockd.log"))
    );
    assert_eq!(
        opts.pid_file.as_deref(),
        Some(std::path::Path::new("/run/k.pid"))
    );
}

/// Many static doors: one warning naming the first eight and counting the rest, not a line
/// per door.
#[test]
fn static_sequence_warning_is_one_line_for_many_doors() {
    let text: String = (0..10)
        .map(|i| {
            format!(
                "[d{i}]\nsequence = 3000,1000,2000,{}\nopen = 22\n",
                4000 + i
            )
        })
        .collect();
    let ws: Vec<Warning> = warnings(&text)
        .into_iter()
        .filter(|w| w.message.contains("static sequence"))
        .collect();
    assert_eq!(ws.len(), 1, "{ws:?}");
    assert_eq!(ws[0].line, 2);
    assert!(
        ws[0].message.starts_with(
            "static sequences on 10 doors that may face the internet: 'd0' (line 2), 'd1' (line 5),"
        ),
        "{}",
        ws[0].message
    );
    assert!(
        ws[0]
            .message
            .contains("'d7' (line 23), 2 more: anyone who sees"),
        "{}",
        ws[0].message
    );
}
