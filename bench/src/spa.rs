//! Single-packet knocks in a lab, side by side: our knockd (`Firewall = nftables`, and
//! `Firewall = iptables` like fwknopd) with one real client and thousands more enrolled, and
//! fwknopd 2.6 (Debian's `fwknop-server`, see [`super::fwknop`]) with one real client.
//!
//! Each daemon gets a fresh lab of the same shape (two namespaces, the same addresses) and
//! the same scenarios ([`super::spa_load`]), one daemon after the other in the same run:
//! - quiet: the real client sends a packet; the time from the send to the kernel's
//!   notification that the grant is in (our set element in `inet knockd allow4`, or an
//!   iptables-nft rule `-s CLIENT/32`) is its latency; the grant is closed and the next trial
//!   waits until it is gone;
//! - flood: random 166-byte datagrams (forged: for us no client's hint, for fwknopd not even
//!   base64) are sent to the SPA port at `flood_pps` for `flood`, while the real client
//!   knocks every `knock_every`; the daemon's CPU seconds (utime + stime, its own and its
//!   reaped children's: fwknopd forks iptables) over the flood, the packets the kernel
//!   dropped before the daemon read them, and how many real knocks opened within
//!   `open_timeout` are reported.
//!
//! The forged packets come from the client's own address (neither daemon keeps per-source
//! state before a packet authenticates).

use anyhow::{bail, Context, Result};
use knock_e2e::knockd::OurKnockd;
use knock_e2e::{bin, Lab};
use knock_ipc::spa::keys::random_nonce;
use knock_ipc::spa::{Body, ClientKey, DoorId, Op, DEFAULT_PORT};
use serde::Serialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::fwknop::{self, Fwknopd};
use super::pktstats::PacketCounter;
use super::spa_load::{measure, median, Measured, Pace, Subject, CLI};

/// What to run.
#[derive(Debug, Clone)]
pub struct SpaPlan {
    pub clients: u32,
    /// How many knocks and how fast. Its `quiet_gap` is also the least time between knocks
    /// during the flood: knockd checks at most 2 signatures per second per client (burst
    /// 10), so a client knocking faster is refused as busy.
    pub pace: Pace,
    /// Our knockd with `Firewall = nftables`.
    pub ours_nftables: bool,
    /// Also our knockd with `Firewall = iptables` (fwknopd's firewall).
    pub ours_iptables: bool,
    /// Also fwknopd (with its default `PCAP_LOOP_SLEEP`, 100 ms).
    pub fwknop: bool,
    /// Also fwknopd with `PCAP_LOOP_SLEEP` set to this many µs (a tuned row).
    pub fwknop_tuned_sleep_us: Option<u32>,
}

impl SpaPlan {
    pub fn full() -> SpaPlan {
        SpaPlan {
            clients: 10_000,
            pace: Pace {
                quiet_trials: 30,
                quiet_gap: Duration::from_millis(600),
                flood_pps: 30_000,
                flood: Duration::from_secs(10),
                knock_every: Duration::from_secs(1),
                open_timeout: Duration::from_secs(2),
            },
            ours_nftables: true,
            ours_iptables: true,
            fwknop: true,
            fwknop_tuned_sleep_us: Some(1_000),
        }
    }

    pub fn smoke() -> SpaPlan {
        SpaPlan {
            clients: 50,
            pace: Pace {
                quiet_trials: 3,
                quiet_gap: Duration::from_millis(600),
                flood_pps: 2_000,
                flood: Duration::from_millis(1200),
                knock_every: Duration::from_millis(600),
                open_timeout: Duration::from_secs(2),
            },
            ours_nftables: true,
            ours_iptables: false,
            fwknop: true,
            fwknop_tuned_sleep_us: None,
        }
    }
}

/// One daemon's results.
#[derive(Debug, Clone, Serialize)]
pub struct SpaResult {
    /// `knockd-rs` or `fwknopd 2.6.10`.
    pub daemon: String,
    /// `nftables` (a set element) or `iptables` (an iptables-nft rule).
    pub firewall: String,
    /// Clients enrolled (fwknopd: access stanzas' keys, 1).
    pub clients: u32,
    /// Packet sent to grant in, per quiet trial (ms).
    pub quiet_ms: Vec<f64>,
    pub quiet_p50_ms: f64,
    pub flood_pps_asked: u64,
    pub forged_sent: u64,
    pub flood_s: f64,
    /// The daemon's CPU seconds over the flood (with its reaped children), and per second
    /// of flood (cores).
    pub flood_cpu_s: f64,
    pub flood_cores: f64,
    pub real_knocks: u64,
    pub real_opened: u64,
    /// Packet sent to grant in for the real knocks that opened during the flood (ms).
    pub flood_open_p50_ms: f64,
    /// Packets the kernel dropped before the daemon read them (libpcap's count: ours from
    /// `knockctl metrics`, fwknopd's read from its socket by the bench).
    pub kernel_drops: u64,
    /// Our knockd's count of forged refusals (unknown hint) over the run.
    pub refused_unknown_hint: Option<u64>,
}

impl SpaResult {
    fn new(daemon: &str, firewall: &str, clients: u32, plan: &SpaPlan, m: Measured) -> Self {
        SpaResult {
            daemon: daemon.into(),
            firewall: firewall.into(),
            clients,
            quiet_p50_ms: median(&m.quiet_ms),
            quiet_ms: m.quiet_ms,
            flood_pps_asked: plan.pace.flood_pps,
            forged_sent: m.forged_sent,
            flood_s: m.flood_s,
            flood_cpu_s: m.flood_cpu_s,
            flood_cores: m.flood_cpu_s / m.flood_s.max(1e-9),
            real_knocks: m.real_knocks,
            real_opened: m.real_opened,
            flood_open_p50_ms: median(&m.flood_open_ms),
            kernel_drops: m.kernel_drops,
            refused_unknown_hint: None,
        }
    }
}

/// Everything one `--spa` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct SpaReport {
    /// `/proc/loadavg` before and after.
    pub loadavg_before: String,
    pub loadavg_after: String,
    pub rows: Vec<SpaResult>,
    /// Why fwknopd was not measured, when it was asked for and could not run.
    pub fwknop_missing: Option<String>,
}

/// Runs the SPA scenarios: ours (nftables) and ours (iptables) if asked, fwknopd (default, then
/// tuned if asked) if asked and installed (else `fwknop_missing` says why).
pub fn run(plan: &SpaPlan) -> Result<SpaReport> {
    let loadavg_before = super::report::loadavg();
    let mut rows = Vec::new();
    if plan.ours_nftables {
        rows.push(ours(plan, "nftables")?);
    }
    if plan.ours_iptables {
        rows.push(ours(plan, "iptables")?);
    }
    let mut fwknop_missing = None;
    if plan.fwknop {
        match fwknop::missing() {
            None => {
                rows.push(fwknopd(plan, None)?);
                if let Some(us) = plan.fwknop_tuned_sleep_us {
                    rows.push(fwknopd(plan, Some(us))?);
                }
            }
            Some(why) => fwknop_missing = Some(why),
        }
    }
    Ok(SpaReport {
        loadavg_before,
        loadavg_after: super::report::loadavg(),
        rows,
        fwknop_missing,
    })
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn metric(k: &OurKnockd, needle: &str) -> u64 {
    let text = String::from_utf8_lossy(&k.knockctl(&["metrics"]).stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(needle))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Our knockd with `Firewall = <firewall>` in a fresh lab.
fn ours(plan: &SpaPlan, firewall: &str) -> Result<SpaResult> {
    let lab = Lab::new();
    let conf = format!(
        "[options]\n\tFirewall = {firewall}\n\tSPA_ClientDir = {}\n\tSPA_ServerKey = {}\n\
         [ssh]\n\tSPA = real\n\tOpen = 22/tcp\n\tCmd_Timeout = 60\n",
        lab.path("clients").display(),
        lab.path("spa.key").display()
    );
    let conf_path = lab.write_file("knockd.conf", &conf);
    let key = lab.path("real.knock");
    let made = std::process::Command::new(bin("knockd"))
        .arg("-c")
        .arg(&conf_path)
        .args(["--new-client", "real", "--out"])
        .arg(&key)
        .output()
        .context("knockd --new-client")?;
    if !made.status.success() {
        bail!("knockd --new-client failed: {made:?}");
    }
    let real = ClientKey::read(&key).context("the real client's key")?;
    // The other clients: their records only (their secret keys are not needed).
    for i in 1..plan.clients {
        let name = format!("c{i}");
        let c = ClientKey::generate(&name, real.server_x).context("client key")?;
        std::fs::write(
            lab.path(&format!("clients/{name}.pub")),
            c.record().render(),
        )?;
    }
    let k = OurKnockd::start(&lab, &conf);
    let mut subject = Subject {
        pid: k.daemon.pid(),
        port: DEFAULT_PORT,
        packet: Box::new(|| {
            let body = Body {
                ts_ms: wall_ms(),
                op: Op::Open,
                addr: None,
                timeout_secs: 0,
                door: DoorId::ANY,
            };
            Ok(real.packet(&body, &random_nonce()?)?.to_vec())
        }),
        close: Box::new(|| {
            let out = k.knockctl(&["revoke", &CLI.to_string()]);
            // Exit 1 = nothing to revoke.
            if !out.status.success() && out.status.code() != Some(1) {
                bail!("knockctl revoke: {out:?}");
            }
            Ok(())
        }),
        drops: Box::new(|| Ok(metric(&k, "knockd_kernel_drops "))),
    };
    let m = measure(&lab, &plan.pace, &mut subject, &|| k.log())?;
    drop(subject);
    let mut r = SpaResult::new("knockd-rs", firewall, plan.clients, plan, m);
    r.refused_unknown_hint = Some(metric(
        &k,
        "knockd_spa_packets_total{outcome=\"unknown_hint\"} ",
    ));
    Ok(r)
}

/// fwknopd in a fresh lab, `PCAP_LOOP_SLEEP` its default or `loop_sleep_us`.
fn fwknopd(plan: &SpaPlan, loop_sleep_us: Option<u32>) -> Result<SpaResult> {
    let lab = Lab::new();
    let f = Fwknopd::start(&lab, loop_sleep_us)?;
    let pid = f.daemon.pid();
    let mut counter = PacketCounter::new(pid).context("fwknopd's capture counters")?;
    let mut subject = Subject {
        pid,
        port: fwknop::PORT,
        packet: Box::new(|| f.packet()),
        close: Box::new(|| f.close_all()),
        drops: Box::new(|| Ok(counter.read()?.drops)),
    };
    let m = measure(&lab, &plan.pace, &mut subject, &|| f.daemon.log_text());
    drop(subject);
    f.stop();
    let m = m?;
    let name = match loop_sleep_us {
        None => "fwknopd 2.6.10".to_string(),
        Some(us) => format!("fwknopd 2.6.10, PCAP_LOOP_SLEEP {us} µs"),
    };
    Ok(SpaResult::new(&name, "iptables", 1, plan, m))
}
