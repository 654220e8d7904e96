//! fwknopd 2.6 (Debian's `fwknop-server`), the SPA peer, in a lab's server namespace.
//!
//! Everything it reads or writes is in the lab's temp dir: `fwknopd.conf` (`PCAP_INTF` the
//! lab's veth, run dir, pid file and digest cache there), `access.conf` (one stanza:
//! `SOURCE ANY`, `REQUIRE_SOURCE_ADDRESS Y`, `OPEN_PORTS tcp/22`, Rijndael + HMAC-SHA256 keys
//! made for the run by `fwknop --key-gen`, `FW_ACCESS_TIMEOUT 60`). It runs in the foreground
//! (`-f`: it logs to stderr, not to the host's syslog) with its stock defaults otherwise, so
//! `PCAP_LOOP_SLEEP` is 100 ms (the bench also runs it with a shorter sleep, as a tuned row). Its firewall is `iptables` (iptables-nft on Debian 12): a
//! grant is `-A FWKNOP_INPUT -s ADDR/32 -p tcp --dport 22 ... -j ACCEPT`, which the bench's
//! netlink monitor sees as an nf_tables rule the moment the kernel commits it.
//!
//! Real packets are made by the fwknop client (`fwknop -A tcp/22 -a CLIENT -D SERVER
//! --use-hmac -T -B FILE`: built, saved, not sent) before the clock starts and sent by the
//! bench's own socket, exactly like ours: the latency is the daemon's, from the send to the
//! rule, without the client process's start-up.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use knock_e2e::{Daemon, Lab};

use super::spa_load::{CLI, SRV};

pub const FWKNOPD: &str = "/usr/sbin/fwknopd";
pub const FWKNOP: &str = "/usr/bin/fwknop";
/// fwknopd's default SPA port.
pub const PORT: u16 = 62201;
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Why fwknop cannot run here, if it cannot.
pub fn missing() -> Option<String> {
    missing_among(&[FWKNOPD, FWKNOP])
}

/// Which of `paths` are not files, and how to install them.
fn missing_among(paths: &[&str]) -> Option<String> {
    let absent: Vec<&str> = paths
        .iter()
        .copied()
        .filter(|p| !Path::new(p).is_file())
        .collect();
    (!absent.is_empty()).then(|| {
        format!(
            "{} not found: install Debian's fwknop-server and fwknop-client with \
             `sudo bash scripts/setup.sh`",
            absent.join(" and ")
        )
    })
}

/// The two keys of the run, base64 as fwknop prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    pub rijndael: String,
    pub hmac: String,
}

/// `KEY_BASE64: ...` and `HMAC_KEY_BASE64: ...` from `fwknop --key-gen`'s output.
pub fn parse_keys(text: &str) -> Option<Keys> {
    let find = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    Some(Keys {
        rijndael: find("KEY_BASE64")?,
        hmac: find("HMAC_KEY_BASE64")?,
    })
}

/// fwknopd.conf for a run in `dir` on interface `intf`; `loop_sleep_us` overrides
/// `PCAP_LOOP_SLEEP` (default 100,000 µs: fwknopd reads its capture ten times a second).
pub fn server_conf(dir: &Path, intf: &str, loop_sleep_us: Option<u32>) -> String {
    let d = dir.display();
    let mut c = format!(
        "PCAP_INTF {intf};\nPCAP_FILTER udp port {PORT};\nFWKNOP_RUN_DIR {d};\n\
         FWKNOP_PID_FILE {d}/fwknopd.pid;\nDIGEST_FILE {d}/digest.cache;\n"
    );
    if let Some(us) = loop_sleep_us {
        c.push_str(&format!("PCAP_LOOP_SLEEP {us};\n"));
    }
    c
}

/// access.conf: one stanza opening tcp/22 to the packet's (required) address.
pub fn access_conf(k: &Keys) -> String {
    format!(
        "SOURCE ANY\nREQUIRE_SOURCE_ADDRESS Y\nOPEN_PORTS tcp/22\nKEY_BASE64 {}\n\
         HMAC_KEY_BASE64 {}\nHMAC_DIGEST_TYPE sha256\nFW_ACCESS_TIMEOUT 60\n",
        k.rijndael, k.hmac
    )
}

/// fwknopd running in a lab.
pub struct Fwknopd<'a> {
    lab: &'a Lab,
    pub daemon: Daemon,
    keys: Keys,
    made: std::cell::Cell<u32>,
}

fn ok(out: Output, what: &str) -> Result<Output> {
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

impl<'a> Fwknopd<'a> {
    /// Makes the keys, writes the config and starts fwknopd in `lab`'s server namespace;
    /// returns once it logs that its main loop runs.
    pub fn start(lab: &'a Lab, loop_sleep_us: Option<u32>) -> Result<Fwknopd<'a>> {
        let dir = lab.path("fwknop");
        std::fs::create_dir_all(&dir)?;
        let rc = dir.join("fwknoprc");
        let out = Command::new(FWKNOP)
            .arg("--key-gen")
            .arg("--rc-file")
            .arg(&rc)
            .output()
            .context("fwknop --key-gen")?;
        let out = ok(out, "fwknop --key-gen")?;
        let Some(keys) = parse_keys(&String::from_utf8_lossy(&out.stdout)) else {
            bail!("fwknop --key-gen printed no keys: {out:?}");
        };
        let conf = dir.join("fwknopd.conf");
        let access = dir.join("access.conf");
        write_private(&conf, &server_conf(&dir, lab.srv_if(), loop_sleep_us))?;
        write_private(&access, &access_conf(&keys))?;
        let arg = |p: &PathBuf| p.display().to_string();
        let daemon = lab.spawn_srv([
            FWKNOPD.to_owned(),
            "-f".into(),
            "-c".into(),
            arg(&conf),
            "-a".into(),
            arg(&access),
            "-i".into(),
            lab.srv_if().into(),
            "-p".into(),
            arg(&dir.join("fwknopd.pid")),
            "-d".into(),
            arg(&dir.join("digest.cache")),
        ]);
        if !daemon.wait_for_log("Starting fwknopd main event loop", START_TIMEOUT) {
            bail!(
                "fwknopd did not start within {START_TIMEOUT:?}:\n{}",
                daemon.log_text()
            );
        }
        Ok(Fwknopd {
            lab,
            daemon,
            keys,
            made: std::cell::Cell::new(0),
        })
    }

    /// A fresh SPA packet from the fwknop client (run in the client namespace, not sent).
    pub fn packet(&self) -> Result<Vec<u8>> {
        self.made.set(self.made.get() + 1);
        let file = self
            .lab
            .path(&format!("fwknop/spa-{}.pkt", self.made.get()));
        let rc = self.lab.path("fwknop/fwknoprc");
        let (cli, srv) = (CLI.to_string(), SRV.to_string());
        let out = self.lab.cli_exec([
            FWKNOP,
            "--rc-file",
            &rc.display().to_string(),
            "--no-save-args",
            "-A",
            "tcp/22",
            "-a",
            cli.as_str(),
            "-D",
            srv.as_str(),
            "--key-base64-rijndael",
            &self.keys.rijndael,
            "--key-base64-hmac",
            &self.keys.hmac,
            "--use-hmac",
            "-T",
            "-B",
            &file.display().to_string(),
        ]);
        ok(out, "fwknop -T -B (make a packet)")?;
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("the fwknop client wrote no packet to {}", file.display()))?;
        let _ = std::fs::remove_file(&file);
        let data = text.trim();
        if data.is_empty() {
            bail!("the fwknop client wrote an empty packet");
        }
        Ok(data.as_bytes().to_vec())
    }

    /// Removes every grant: `iptables -F FWKNOP_INPUT` in the server namespace (fwknopd
    /// finds nothing to expire afterwards; it does not track rules in memory).
    pub fn close_all(&self) -> Result<()> {
        ok(
            self.lab.srv_exec(["iptables", "-F", "FWKNOP_INPUT"]),
            "iptables -F FWKNOP_INPUT",
        )?;
        Ok(())
    }

    /// SIGTERM by pid (it flushes its chains on exit; the namespace goes with the lab).
    pub fn stop(&self) {
        self.daemon.kill_term();
        if self.daemon.wait_exit(Duration::from_secs(5)).is_none() {
            self.daemon.kill_9();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_key_gen_output() {
        let out = "[*] Creating initial rc file: /tmp/x/rc.\n\
                   KEY_BASE64: QrR80k1/07Ki+5Q=\nHMAC_KEY_BASE64: dhp9s6b6TYiz==\n";
        let k = parse_keys(out).expect("keys");
        assert_eq!(k.rijndael, "QrR80k1/07Ki+5Q=");
        assert_eq!(k.hmac, "dhp9s6b6TYiz==");
        assert_eq!(parse_keys("KEY_BASE64: abc\n"), None);
        assert_eq!(parse_keys("KEY_BASE64:\nHMAC_KEY_BASE64: x\n"), None);
    }

    #[test]
    fn a_missing_binary_is_named_with_the_fix() {
        assert_eq!(missing_among(&["/bin/sh"]), None);
        let why = missing_among(&["/bin/sh", "/nonexistent/fwknopd"]).expect("missing");
        assert!(why.starts_with("/nonexistent/fwknopd not found"), "{why}");
        assert!(why.contains("scripts/setup.sh"), "{why}");
    }

    #[test]
    fn configs_keep_everything_in_the_run_dir() {
        let c = server_conf(Path::new("/tmp/lab/fwknop"), "kv0", None);
        assert!(c.contains("PCAP_INTF kv0;"));
        assert!(c.contains("FWKNOP_PID_FILE /tmp/lab/fwknop/fwknopd.pid;"));
        assert!(c.contains("DIGEST_FILE /tmp/lab/fwknop/digest.cache;"));
        assert!(!c.contains("PCAP_LOOP_SLEEP"));
        let c = server_conf(Path::new("/tmp/lab/fwknop"), "kv0", Some(1000));
        assert!(c.contains("PCAP_LOOP_SLEEP 1000;\n"));
        let k = Keys {
            rijndael: "R".into(),
            hmac: "H".into(),
        };
        let a = access_conf(&k);
        assert!(a.contains("KEY_BASE64 R\n") && a.contains("HMAC_KEY_BASE64 H\n"));
        assert!(a.contains("OPEN_PORTS tcp/22\n"));
    }
}
