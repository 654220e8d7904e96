//! The daemons under test, all with the same door, each started fresh in its own lab:
//! Debian's knockd 0.8, ours with the same `command =` door, and ours with the native
//! `open = 22/tcp` door.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::{bin, read_text, wait_for_text, Daemon, Lab, DEBIAN_KNOCKD, SRV_IF};

/// The knock sequence of the door.
pub const SEQUENCE: [u16; 3] = [7000, 8000, 9000];
/// How long a daemon may take to log that it listens.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const IPTABLES: &str = "/usr/sbin/iptables";
/// What the daemons log once they capture.
const STARTED: &str = "starting up, listening on kv0";

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

    /// The config file, with `LogFile` at `log` and the door's `seq_timeout`.
    pub fn config(self, log: &str, seq_timeout: u32) -> String {
        let action = match self {
            Variant::Debian | Variant::OursCmd => {
                format!("command     = {IPTABLES} -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT")
            }
            // cmd_timeout only bounds the grant; the bench revokes it after every knock.
            Variant::OursNative | Variant::OursNft => {
                "open        = 22/tcp\n\tcmd_timeout = 3600".to_string()
            }
        };
        let firewall = if self == Variant::OursNft {
            "\tFirewall = nftables\n"
        } else {
            ""
        };
        let seq = SEQUENCE.map(|p| p.to_string()).join(",");
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
    pub fn start(lab: &'lab Lab, variant: Variant, seq_timeout: u32) -> Result<Self> {
        let log = lab.path("knockd.log");
        let log_str = log.to_str().context("lab path is not UTF-8")?;
        let conf = lab.write_file("knockd.conf", &variant.config(log_str, seq_timeout));
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
        if !self.variant.is_ours() {
            return None;
        }
        let out = Command::new(bin("knockctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(["--json", "status"])
            .output()
            .ok()?;
        let s: StatusJson = serde_json::from_slice(&out.stdout).ok()?;
        Some((s.counters, s.attempts))
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
        let a = Variant::Debian.config("/tmp/l", 5);
        assert_eq!(a, Variant::OursCmd.config("/tmp/l", 5));
        assert!(a.contains("sequence    = 7000,8000,9000"));
        assert!(a.contains("seq_timeout = 5"));
        assert!(a.contains("tcpflags    = syn"));
        assert!(a.contains("-I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT"));
        assert!(a.contains("LogFile = /tmp/l"));
    }

    #[test]
    fn native_door_opens_port_22() {
        let c = Variant::OursNative.config("/tmp/l", 60);
        assert!(c.contains("open        = 22/tcp"));
        assert!(c.contains("seq_timeout = 60"));
        assert!(!c.contains("command"));
    }

    #[test]
    fn nft_door_uses_the_nftables_backend() {
        let c = Variant::OursNft.config("/tmp/l", 60);
        assert!(c.contains("\tFirewall = nftables\n"), "{c}");
        assert!(c.contains("open        = 22/tcp"));
        assert!(!Variant::OursNative
            .config("/tmp/l", 60)
            .contains("Firewall"));
    }

    #[test]
    fn labels_round_trip() {
        for v in Variant::ALL {
            assert_eq!(Variant::parse(v.label()), Some(v));
        }
        assert_eq!(Variant::parse("nope"), None);
    }
}
