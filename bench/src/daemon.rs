//! The daemons under test, all with the same door, each started fresh in its own lab:
//! Debian's knockd 0.8, ours with the same `command =` door, and ours with the native
//! `open = 22/tcp` door (iptables or nftables).
//!
//! The completing flood uses [`Doors::Seed`] instead: Debian's and `ours-cmd` get the
//! config knockd 0.8 ships (its `openSSH`/`closeSSH` command doors, `iptables -A`), ours
//! native doors `open = 22/tcp` with `cmd_timeout = 30`, and the server namespace drops new
//! connections to port 22 unless a grant lets them in.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use knock_e2e::{bin, read_text, wait_for_text, Daemon, Lab, DEBIAN_KNOCKD, SRV_IF};

/// The knock sequence of the door.
pub const SEQUENCE: [u16; 3] = [7000, 8000, 9000];
/// How long a daemon may take to log that it listens.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const IPTABLES: &str = "/usr/sbin/iptables";
/// What the daemons log once they capture.
const STARTED: &str = "starting up, listening on kv0";
/// The port the doors open (a listener waits there in the completing flood).
pub const PROTECTED_PORT: u16 = 22;

/// Which doors the config has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doors {
    /// One door, `command = iptables -I ...` or `open = 22/tcp` (revoked after every knock).
    Bench,
    /// The doors knockd 0.8 ships in /etc/knockd.conf (`openSSH` / `closeSSH`, `iptables -A`
    /// without a stop command), or for native doors `open = 22/tcp`, `cmd_timeout = 30`.
    Seed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// Debian's knockd 0.8 with `command = iptables -I ...`.
    Debian,
    /// Our knockd with the very same config.
    OursCmd,
    /// Our knockd with `open = 22/tcp` instead of the command.
    OursNative,
    /// Our knockd with `open = 22/tcp` and `Firewall = nftables` (set elements over netlink).
    OursNft,
}

impl Variant {
    pub const ALL: [Variant; 4] = [
        Variant::Debian,
        Variant::OursCmd,
        Variant::OursNative,
        Variant::OursNft,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Variant::Debian => "debian",
            Variant::OursCmd => "ours-cmd",
            Variant::OursNative => "ours-native",
            Variant::OursNft => "ours-nft",
        }
    }

    pub fn parse(s: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.label() == s)
    }

    pub fn is_ours(self) -> bool {
        self != Variant::Debian
    }

    /// True for the daemons whose door runs a command (not a native `open =` door).
    pub fn runs_commands(self) -> bool {
        matches!(self, Variant::Debian | Variant::OursCmd)
    }

    /// The config file, with `LogFile` at `log`, the door's `seq_timeout`, and `doors`.
    pub fn config(self, log: &str, seq_timeout: u32, doors: Doors) -> String {
        let seq = SEQUENCE.map(|p| p.to_string()).join(",");
        if doors == Doors::Seed && self.runs_commands() {
            let rev: Vec<String> = SEQUENCE.iter().rev().map(u16::to_string).collect();
            let rev = rev.join(",");
            // knockd 0.8's /etc/knockd.conf, with LogFile for UseSyslog (openHTTPS left out:
            // its knock_add script does not exist).
            return format!(
                "[options]\n\
                 \tLogFile = {log}\n\
                 \n\
                 [openSSH]\n\
                 \tsequence    = {seq}\n\
                 \tseq_timeout = {seq_timeout}\n\
                 \tcommand     = /sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n\
                 \ttcpflags    = syn\n\
                 \n\
                 [closeSSH]\n\
                 \tsequence    = {rev}\n\
                 \tseq_timeout = {seq_timeout}\n\
                 \tcommand     = /sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n\
                 \ttcpflags    = syn\n"
            );
        }
        let action = match (self, doors) {
            (Variant::Debian | Variant::OursCmd, _) => {
                format!("command     = {IPTABLES} -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT")
            }
            // cmd_timeout only bounds the grant; the bench revokes it after every knock.
            (_, Doors::Bench) => "open        = 22/tcp\n\tcmd_timeout = 3600".to_string(),
            // The issue's door: the flood's grants stay open for the whole run.
            (_, Doors::Seed) => "open        = 22/tcp\n\tcmd_timeout = 30".to_string(),
        };
        let firewall = if self == Variant::OursNft {
            "\tFirewall = nftables\n"
        } else {
            ""
        };
        format!(
            "[options]\n\
             \tLogFile = {log}\n\
             {firewall}\
             \n\
             [openSSH]\n\
             \tsequence    = {seq}\n\
             \tseq_timeout = {seq_timeout}\n\
             \ttcpflags    = syn\n\
             \t{action}\n"
        )
    }

    /// The daemon's version as its package or build reports it.
    pub fn version(self) -> String {
        let out = match self {
            Variant::Debian => Command::new("dpkg-query")
                .args(["-W", "-f", "knockd ${Version} (Debian package)", "knockd"])
                .output(),
            _ => Command::new(bin("knockd")).arg("--version").output(),
        };
        match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
            _ => "unknown".to_string(),
        }
    }
}

/// Counters of our knockd (`knockctl status --json`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct OurCounters {
    pub packets: u64,
    pub kernel_drops: u64,
    pub evictions: u64,
}

#[derive(Deserialize)]
struct StatusJson {
    attempts: u64,
    counters: OurCounters,
}

/// The `refused_*` counters of `knockctl --json status` (opens refused, by reason), without
/// the prefix; first knocks refused by the matcher (`refused`) are not opens. Pure.
pub fn open_refusals(status_json: &str) -> BTreeMap<String, u64> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(status_json) else {
        return BTreeMap::new();
    };
    let Some(counters) = v.get("counters").and_then(|c| c.as_object()) else {
        return BTreeMap::new();
    };
    counters
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("refused_")?.to_string(), v.as_u64()?)))
        .collect()
}

/// The server namespace's guard for iptables doors: new TCP connections to the protected
/// port are dropped (INPUT policy DROP, everything else accepted), so a connection gets in
/// only through a rule a grant added, wherever in INPUT it was added (`-I` or the seed's
/// `-A`). Our nftables door needs none: its own table drops the protected port.
pub fn guard_commands() -> Vec<Vec<String>> {
    let port = PROTECTED_PORT.to_string();
    [
        vec![
            "-A", "INPUT", "-p", "tcp", "!", "--dport", &port, "-j", "ACCEPT",
        ],
        vec!["-A", "INPUT", "!", "-p", "tcp", "-j", "ACCEPT"],
        vec!["-P", "INPUT", "DROP"],
    ]
    .into_iter()
    .map(|rule| {
        let mut v = vec![IPTABLES.to_string(), "-w".to_string()];
        v.extend(rule.into_iter().map(str::to_string));
        v
    })
    .collect()
}

/// A daemon running in a lab's server namespace.
pub struct RunningDaemon<'lab> {
    pub variant: Variant,
    lab: &'lab Lab,
    daemon: Daemon,
    log: PathBuf,
    socket: PathBuf,
    /// Bytes of Debian's log already counted by [`RunningDaemon::processed`].
    log_seen: u64,
    stage1_lines: u64,
}

impl<'lab> RunningDaemon<'lab> {
    /// Writes the config, starts the daemon in `lab`'s server namespace and waits until it
    /// captures. Also makes iptables create its tables now, not at the first grant.
    /// With [`Doors::Seed`], iptables doors get the [`guard_commands`] first.
    pub fn start(lab: &'lab Lab, variant: Variant, seq_timeout: u32, doors: Doors) -> Result<Self> {
        if doors == Doors::Seed && variant != Variant::OursNft {
            for cmd in guard_commands() {
                let out = lab.srv_exec(&cmd);
                if !out.status.success() {
                    bail!(
                        "cannot guard port {PROTECTED_PORT} in the server namespace ({}): {}",
                        cmd.join(" "),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
        let log = lab.path("knockd.log");
        let log_str = log.to_str().context("lab path is not UTF-8")?;
        let conf = lab.write_file("knockd.conf", &variant.config(log_str, seq_timeout, doors));
        let socket = lab.path("knockd.sock");
        let mut args: Vec<OsString> = match variant {
            Variant::Debian => vec![DEBIAN_KNOCKD.into()],
            _ => vec![bin("knockd").into()],
        };
        args.extend(["-i".into(), SRV_IF.into(), "-c".into(), conf.into()]);
        if variant.is_ours() {
            args.extend([
                "--socket".into(),
                socket.clone().into(),
                "--state-file".into(),
                lab.path("state.json").into(),
            ]);
        }
        let daemon = lab.spawn_srv(args);
        if !wait_for_text(&log, STARTED, START_TIMEOUT) {
            bail!(
                "{} did not log `{STARTED}` within {START_TIMEOUT:?}; log:\n{}\n{}",
                variant.label(),
                read_text(&log),
                daemon.log_text()
            );
        }
        let warm = lab.srv_exec([IPTABLES, "-w", "-S", "INPUT"]);
        if !warm.status.success() {
            bail!(
                "iptables -S INPUT failed in the server namespace: {}",
                String::from_utf8_lossy(&warm.stderr)
            );
        }
        Ok(RunningDaemon {
            variant,
            lab,
            daemon,
            log,
            socket,
            log_seen: 0,
            stage1_lines: 0,
        })
    }

    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    pub fn is_running(&self) -> bool {
        self.daemon.is_running()
    }

    /// Closes whatever the daemon opened for `addr`: `knockctl revoke` for ours (which also
    /// forgets the grant), `iptables -D` until no such rule is left for Debian's.
    pub fn revoke(&self, addr: Ipv4Addr) -> Result<()> {
        if self.variant.is_ours() {
            let out = Command::new(bin("knockctl"))
                .arg("--socket")
                .arg(&self.socket)
                .args(["revoke", &addr.to_string()])
                .output()
                .context("cannot run knockctl revoke")?;
            // Exit 1 = nothing to revoke: fine.
            if !out.status.success() && out.status.code() != Some(1) {
                bail!(
                    "knockctl revoke {addr} failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            return Ok(());
        }
        let src = addr.to_string();
        let rule = ["-s", &src, "-p", "tcp", "--dport", "22", "-j", "ACCEPT"];
        for _ in 0..8 {
            let mut args = vec![IPTABLES, "-w", "-D", "INPUT"];
            args.extend(rule);
            if !self.lab.srv_exec(args).status.success() {
                break;
            }
        }
        Ok(())
    }

    /// Our daemon's counters and live attempts; `None` for Debian's (it has none).
    pub fn status(&self) -> Option<(OurCounters, u64)> {
        let s: StatusJson = serde_json::from_str(&self.status_json()?).ok()?;
        Some((s.counters, s.attempts))
    }

    /// `knockctl --json status`; `None` for Debian's.
    pub fn status_json(&self) -> Option<String> {
        if !self.variant.is_ours() {
            return None;
        }
        let out = Command::new(bin("knockctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(["--json", "status"])
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Packets the daemon has taken in so far: our `packets` counter, or for Debian the
    /// `Stage 1` lines it logged (one per first knock of a new source).
    pub fn processed(&mut self) -> u64 {
        if let Some((c, _)) = self.status() {
            return c.packets;
        }
        self.count_new_stage1_lines();
        self.stage1_lines
    }

    fn count_new_stage1_lines(&mut self) {
        let Ok(mut f) = File::open(&self.log) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.log_seen)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() {
            return;
        }
        // Count complete lines only; a partial last line is read again next time.
        let complete = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let text = String::from_utf8_lossy(&buf[..complete]);
        self.stage1_lines += text.lines().filter(|l| l.ends_with(": Stage 1")).count() as u64;
        self.log_seen += complete as u64;
    }

    /// The daemon's log file so far.
    pub fn log_text(&self) -> String {
        read_text(&self.log) + &self.daemon.log_text()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_and_ours_cmd_share_the_config() {
        let a = Variant::Debian.config("/tmp/l", 5, Doors::Bench);
        assert_eq!(a, Variant::OursCmd.config("/tmp/l", 5, Doors::Bench));
        assert!(a.contains("sequence    = 7000,8000,9000"));
        assert!(a.contains("seq_timeout = 5"));
        assert!(a.contains("tcpflags    = syn"));
        assert!(a.contains("-I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT"));
        assert!(a.contains("LogFile = /tmp/l"));
    }

    #[test]
    fn native_door_opens_port_22() {
        let c = Variant::OursNative.config("/tmp/l", 60, Doors::Bench);
        assert!(c.contains("open        = 22/tcp"));
        assert!(c.contains("seq_timeout = 60"));
        assert!(!c.contains("command"));
    }

    #[test]
    fn nft_door_uses_the_nftables_backend() {
        let c = Variant::OursNft.config("/tmp/l", 60, Doors::Bench);
        assert!(c.contains("\tFirewall = nftables\n"), "{c}");
        assert!(c.contains("open        = 22/tcp"));
        assert!(!Variant::OursNative
            .config("/tmp/l", 60, Doors::Bench)
            .contains("Firewall"));
    }

    #[test]
    fn seed_doors_are_knockd_0_8s_for_commands_and_30_s_grants_for_native() {
        let a = Variant::Debian.config("/tmp/l", 5, Doors::Seed);
        assert_eq!(a, Variant::OursCmd.config("/tmp/l", 5, Doors::Seed));
        assert!(
            a.contains("[openSSH]\n\tsequence    = 7000,8000,9000\n"),
            "{a}"
        );
        assert!(
            a.contains("[closeSSH]\n\tsequence    = 9000,8000,7000\n"),
            "{a}"
        );
        assert!(
            a.contains("command     = /sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT")
        );
        assert!(
            a.contains("command     = /sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT")
        );
        assert!(
            !a.contains("cmd_timeout"),
            "the seed has no stop command: {a}"
        );
        for v in [Variant::OursNative, Variant::OursNft] {
            let c = v.config("/tmp/l", 5, Doors::Seed);
            assert!(
                c.contains("open        = 22/tcp\n\tcmd_timeout = 30\n"),
                "{c}"
            );
        }
        assert!(Variant::OursNft
            .config("/tmp/l", 5, Doors::Seed)
            .contains("Firewall = nftables"));
    }

    #[test]
    fn guard_drops_only_new_connections_to_the_protected_port() {
        let g: Vec<String> = guard_commands().iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            g,
            [
                "/usr/sbin/iptables -w -A INPUT -p tcp ! --dport 22 -j ACCEPT",
                "/usr/sbin/iptables -w -A INPUT ! -p tcp -j ACCEPT",
                "/usr/sbin/iptables -w -P INPUT DROP",
            ]
        );
    }

    #[test]
    fn open_refusals_by_reason_from_status_json() {
        let json = r#"{"attempts": 3, "counters": {"packets": 9, "refused": 4,
            "refused_pool_full": 7, "refused_max_grants": 0, "refused_door_rate": 2}}"#;
        let r = open_refusals(json);
        assert_eq!(
            r.into_iter().collect::<Vec<_>>(),
            [
                ("door_rate".to_string(), 2),
                ("max_grants".to_string(), 0),
                ("pool_full".to_string(), 7)
            ]
        );
        assert!(open_refusals("not json").is_empty());
        assert!(open_refusals("{}").is_empty());
    }

    #[test]
    fn labels_round_trip() {
        for v in Variant::ALL {
            assert_eq!(Variant::parse(v.label()), Some(v));
        }
        assert_eq!(Variant::parse("nope"), None);
    }
}
