//! The two SPA scenarios, the same for every daemon (ours, fwknopd): quiet latency and a
//! forged flood with a real client knocking. A [`Subject`] says how to make a real packet,
//! how to close the grant it opened and how many packets the kernel dropped; the rest (the
//! send, the timestamps, the pacing of the flood, the netlink monitor) is shared, so both
//! daemons get the same traffic measured the same way.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use knock_e2e::traffic::netns::create_in;
use knock_e2e::Lab;

use super::monitor::{RuleBook, RuleMonitor};
use super::procfs;

pub const CLI: Ipv4Addr = Ipv4Addr::new(10, 99, 77, 2);
pub const SRV: Ipv4Addr = Ipv4Addr::new(10, 99, 77, 1);
/// The length of every forged packet: our SPA packet's (`knock_ipc::spa::PACKET_LEN`).
pub const FORGED_LEN: usize = 166;

/// One daemon under test, already running in `lab`.
pub struct Subject<'a> {
    /// The daemon's pid: its CPU (and its reaped children's) is read from `/proc`.
    pub pid: u32,
    /// The UDP port its real packets and the flood go to.
    pub port: u16,
    /// Makes the next real packet (called before the clock starts).
    pub packet: Box<dyn FnMut() -> Result<Vec<u8>> + 'a>,
    /// Closes the real client's grant (the monitor then waits for its rule to go).
    pub close: Box<dyn FnMut() -> Result<()> + 'a>,
    /// Packets the kernel dropped before the daemon read them, so far (cumulative).
    pub drops: Box<dyn FnMut() -> Result<u64> + 'a>,
}

/// What the scenarios measured for one subject.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub quiet_ms: Vec<f64>,
    pub forged_sent: u64,
    pub flood_s: f64,
    pub flood_cpu_s: f64,
    pub real_knocks: u64,
    pub real_opened: u64,
    /// Latency of each real knock that opened during the flood (ms).
    pub flood_open_ms: Vec<f64>,
    pub kernel_drops: u64,
}

/// How many knocks and how fast.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub quiet_trials: usize,
    pub quiet_gap: Duration,
    pub flood_pps: u64,
    pub flood: Duration,
    pub knock_every: Duration,
    pub open_timeout: Duration,
}

/// A UDP socket of the client namespace, bound to the client's address.
pub fn client_socket(lab: &Lab) -> Result<UdpSocket> {
    create_in(lab.cli_ns(), || {
        Ok(UdpSocket::bind(SocketAddr::from((CLI, 0)))?)
    })
    .context("cannot open a UDP socket in the client namespace")
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs both scenarios against `s`; `on_fail` says what the daemon logged.
pub fn measure(
    lab: &Lab,
    pace: &Pace,
    s: &mut Subject<'_>,
    on_fail: &dyn Fn() -> String,
) -> Result<Measured> {
    let mon = RuleMonitor::start(lab.srv_ns())?;
    let mut book = RuleBook::new(CLI);
    let sock = client_socket(lab)?;
    let to = SocketAddr::new(IpAddr::V4(SRV), s.port);
    let mut m = Measured::default();

    // Quiet.
    for _ in 0..pace.quiet_trials {
        book.drain(&mon);
        let p = (s.packet)()?;
        let t0 = Instant::now();
        sock.send_to(&p, to)?;
        let Some(t1) = book.wait_added(&mon, t0 + pace.open_timeout) else {
            bail!("a quiet SPA knock did not open:\n{}", on_fail());
        };
        m.quiet_ms.push(ms(t1.saturating_duration_since(t0)));
        close(s, &mut book, &mon)?;
        std::thread::sleep(pace.quiet_gap.saturating_sub(t0.elapsed()));
    }

    // Flood.
    let drops0 = (s.drops)()?;
    let cpu0 = procfs::sample(s.pid)?.cpu_s;
    let sent = Arc::new(AtomicU64::new(0));
    let flooder = flood(client_socket(lab)?, to, pace, Arc::clone(&sent));
    let t_flood = Instant::now();
    while t_flood.elapsed() < pace.flood {
        book.drain(&mon);
        let p = (s.packet)()?;
        let t0 = Instant::now();
        sock.send_to(&p, to)?;
        m.real_knocks += 1;
        if let Some(t1) = book.wait_added(&mon, t0 + pace.open_timeout) {
            m.real_opened += 1;
            m.flood_open_ms.push(ms(t1.saturating_duration_since(t0)));
            close(s, &mut book, &mon)?;
        }
        let next = t0 + pace.knock_every;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let _ = flooder.join();
    m.flood_s = t_flood.elapsed().as_secs_f64();
    m.flood_cpu_s = procfs::sample(s.pid)?.cpu_s - cpu0;
    m.forged_sent = sent.load(Ordering::Relaxed);
    // Whatever the daemon still has queued is read (or dropped) by now.
    std::thread::sleep(Duration::from_millis(1200));
    m.kernel_drops = (s.drops)()?.saturating_sub(drops0);
    Ok(m)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn close(s: &mut Subject<'_>, book: &mut RuleBook, mon: &RuleMonitor) -> Result<()> {
    (s.close)()?;
    if !book.wait_closed(mon, Instant::now() + Duration::from_secs(5)) {
        bail!("the grant did not close");
    }
    Ok(())
}

/// Sends random [`FORGED_LEN`]-byte datagrams to `to` at `pace.flood_pps` (paced every
/// 0.5 ms) for `pace.flood`, on its own thread; the count goes to `sent`.
fn flood(
    sock: UdpSocket,
    to: SocketAddr,
    pace: &Pace,
    sent: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    let (pps, dur) = (pace.flood_pps, pace.flood);
    std::thread::spawn(move || {
        let mut s: u64 = 0x2545_F491_4F6C_DD1D;
        let mut buf = [0u8; FORGED_LEN];
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
                if sock.send_to(&buf, to).is_ok() {
                    n += 1;
                }
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        sent.store(n, Ordering::Relaxed);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_middle_of_the_sorted_values() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 3.0);
        assert!(median(&[]).is_nan());
    }
}
