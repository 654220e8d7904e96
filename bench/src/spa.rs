//! Single-packet knocks in a lab: our knockd (`Firewall = nftables`) with one real client
//! and thousands more enrolled.
//!
//! - quiet: the real client sends a packet; the time from the send to the kernel's
//!   notification that the grant's set element is in (`inet knockd allow4`) is its latency;
//!   the grant is revoked and the next trial waits until its element is gone;
//! - flood: random packets of the SPA length (forged: no client's hint) are sent to the SPA
//!   port at `flood_pps` for `flood`, while the real client knocks every `knock_every`;
//!   knockd's CPU seconds (utime + stime, its own and its children's) over the flood, the
//!   packets the kernel dropped before knockd read them (`knockd_kernel_drops`) and how many
//!   real knocks opened within `open_timeout` are reported.
//!
//! The forged packets come from the client's own address (the gate's refusal does not depend
//! on the source: no per-source state exists before a packet authenticates).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use knock_e2e::knockd::OurKnockd;
use knock_e2e::traffic::netns::create_in;
use knock_e2e::{bin, Lab};
use knock_ipc::spa::keys::random_nonce;
use knock_ipc::spa::{Body, ClientKey, DoorId, Op, DEFAULT_PORT, PACKET_LEN};
use serde::Serialize;

use super::monitor::{RuleBook, RuleMonitor};
use super::procfs;

const CLI: Ipv4Addr = Ipv4Addr::new(10, 99, 77, 2);
const SRV: Ipv4Addr = Ipv4Addr::new(10, 99, 77, 1);

/// What to run.
#[derive(Debug, Clone)]
pub struct SpaPlan {
    pub clients: u32,
    pub quiet_trials: usize,
    /// Between quiet knocks, and at least between knocks during the flood: knockd checks at
    /// most 2 signatures per second per client (burst 10), so a client knocking faster is
    /// refused as busy.
    pub quiet_gap: Duration,
    pub flood_pps: u64,
    pub flood: Duration,
    pub knock_every: Duration,
    pub open_timeout: Duration,
}

impl SpaPlan {
    pub fn full() -> SpaPlan {
        SpaPlan {
            clients: 10_000,
            quiet_trials: 30,
            quiet_gap: Duration::from_millis(600),
            flood_pps: 30_000,
            flood: Duration::from_secs(10),
            knock_every: Duration::from_secs(1),
            open_timeout: Duration::from_secs(2),
        }
    }

    pub fn smoke() -> SpaPlan {
        SpaPlan {
            clients: 50,
            quiet_trials: 3,
            quiet_gap: Duration::from_millis(600),
            flood_pps: 2_000,
            flood: Duration::from_millis(1200),
            knock_every: Duration::from_millis(600),
            open_timeout: Duration::from_secs(2),
        }
    }
}

/// What came out.
#[derive(Debug, Clone, Serialize)]
pub struct SpaResult {
    pub clients: u32,
    /// Packet sent to set element in, per quiet trial (ms).
    pub quiet_ms: Vec<f64>,
    pub quiet_p50_ms: f64,
    pub flood_pps_asked: u64,
    pub forged_sent: u64,
    pub flood_s: f64,
    /// knockd's CPU seconds over the flood, and per second of flood (cores).
    pub flood_cpu_s: f64,
    pub flood_cores: f64,
    pub real_knocks: u64,
    pub real_opened: u64,
    pub kernel_drops: u64,
    /// knockd's own count of forged refusals (unknown hint) over the run.
    pub refused_unknown_hint: u64,
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

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A UDP socket of the client namespace, bound to the client's address.
fn client_socket(lab: &Lab) -> Result<UdpSocket> {
    create_in(lab.cli_ns(), || {
        Ok(UdpSocket::bind(SocketAddr::from((CLI, 0)))?)
    })
    .context("cannot open a UDP socket in the client namespace")
}

/// Runs the SPA scenarios in a fresh lab.
pub fn run(plan: &SpaPlan) -> Result<SpaResult> {
    let lab = Lab::new();
    let conf = format!(
        "[options]\n\tFirewall = nftables\n\tSPA_ClientDir = {}\n\tSPA_ServerKey = {}\n\
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
    let pid = k.daemon.pid();
    let mon = RuleMonitor::start(lab.srv_ns())?;
    let mut book = RuleBook::new(CLI);
    let sock = client_socket(&lab)?;
    let to = SocketAddr::new(IpAddr::V4(SRV), DEFAULT_PORT);
    let knock = |sock: &UdpSocket| -> Result<Instant> {
        let body = Body {
            ts_ms: wall_ms(),
            op: Op::Open,
            addr: None,
            timeout_secs: 0,
            door: DoorId::ANY,
        };
        let p = real.packet(&body, &random_nonce()?)?;
        let t0 = Instant::now();
        sock.send_to(&p, to)?;
        Ok(t0)
    };
    let revoke = |book: &mut RuleBook| -> Result<()> {
        let out = k.knockctl(&["revoke", &CLI.to_string()]);
        // Exit 1 = nothing to revoke.
        if !out.status.success() && out.status.code() != Some(1) {
            bail!("knockctl revoke: {out:?}");
        }
        if !book.wait_closed(&mon, Instant::now() + Duration::from_secs(5)) {
            bail!("the grant did not close after revoke");
        }
        Ok(())
    };

    // Quiet.
    let mut quiet_ms = Vec::new();
    for _ in 0..plan.quiet_trials {
        book.drain(&mon);
        let t0 = knock(&sock)?;
        let Some(t1) = book.wait_added(&mon, t0 + plan.open_timeout) else {
            bail!("a quiet SPA knock did not open:\n{}", k.log());
        };
        quiet_ms.push(t1.saturating_duration_since(t0).as_secs_f64() * 1000.0);
        revoke(&mut book)?;
        std::thread::sleep(plan.quiet_gap.saturating_sub(t0.elapsed()));
    }

    // Flood.
    let drops0 = metric(&k, "knockd_kernel_drops ");
    let cpu0 = procfs::sample(pid)?.cpu_s;
    let sent = Arc::new(AtomicU64::new(0));
    let flood_sock = client_socket(&lab)?;
    let (pps, dur) = (plan.flood_pps, plan.flood);
    let sent2 = Arc::clone(&sent);
    let flooder = std::thread::spawn(move || {
        let mut s: u64 = 0x2545_F491_4F6C_DD1D;
        let mut buf = [0u8; PACKET_LEN];
        let start = Instant::now();
        let mut n: u64 = 0;
        while start.elapsed() < dur {
            let due = (start.elapsed().as_secs_f64() * pps as f64) as u64;
            while n < due {
                for b in buf.iter_mut() {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    *b = s as u8;
                }
                if flood_sock.send_to(&buf, to).is_ok() {
                    n += 1;
                }
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        sent2.store(n, Ordering::Relaxed);
    });
    let t_flood = Instant::now();
    let (mut knocks, mut opened) = (0u64, 0u64);
    while t_flood.elapsed() < plan.flood {
        book.drain(&mon);
        let t0 = knock(&sock)?;
        knocks += 1;
        if book.wait_added(&mon, t0 + plan.open_timeout).is_some() {
            opened += 1;
            revoke(&mut book)?;
        }
        let next = t0 + plan.knock_every;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let _ = flooder.join();
    let flood_s = t_flood.elapsed().as_secs_f64();
    let cpu1 = procfs::sample(pid)?.cpu_s;
    std::thread::sleep(Duration::from_millis(1200));
    let drops = metric(&k, "knockd_kernel_drops ").saturating_sub(drops0);
    let refused = metric(&k, "knockd_spa_packets_total{outcome=\"unknown_hint\"} ");
    let flood_cpu_s = cpu1 - cpu0;
    Ok(SpaResult {
        clients: plan.clients,
        quiet_p50_ms: median(&quiet_ms),
        quiet_ms,
        flood_pps_asked: plan.flood_pps,
        forged_sent: sent.load(Ordering::Relaxed),
        flood_s,
        flood_cpu_s,
        flood_cores: flood_cpu_s / flood_s.max(1e-9),
        real_knocks: knocks,
        real_opened: opened,
        kernel_drops: drops,
        refused_unknown_hint: refused,
    })
}
