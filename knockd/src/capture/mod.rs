//! Packet capture: the capture thread (here), its [`pacer`], the capture filter's text
//! ([`filter`]) and fitting it to what libpcap and the kernel take ([`bpf`]). What the filter
//! is built from is decided in one place: [`filter_for`].
//!
//! The thread: libpcap with a kernel BPF filter → decode → bounded channel to the engine.
//! Filter updates arrive on a std channel and are applied between reads. Nothing here waits on
//! the engine's commands.
//!
//! Packets are handed over in batches: the thread drains everything the kernel ring holds
//! without blocking and sends it as one message (at most [`MAX_BATCH`]). Under a flood that is
//! one wake-up of the engine per batch, not per packet (a per-packet hand-off spent most of the
//! daemon's CPU in context switches). The ring runs in immediate mode (libpcap then uses
//! per-packet frames, not TPACKET_V3 blocks held back by a timeout), so a lone knock is handed
//! over as soon as it arrives, with no batching delay; under a flood (above
//! [`pacer::BUSY_PPS`]) the thread pauses after each batch (1 to 4 ms, see [`pacer`]) so that
//! the next read takes tens of packets at once, and the engine handles its deadlines with the
//! batches instead of waking for each.

pub mod bpf;
pub mod filter;
pub mod pacer;

use crate::config::model::{Config, Door, Proto, Step};
use crate::packet::{decode_l4, udp_payload, LinkType, Packet};
use knock_ipc::totp::Spec;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::borrow::Cow;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Largest batch sent to the engine at once.
pub const MAX_BATCH: usize = 1024;
/// Batches queued for the engine at most: the queue holds at most
/// `QUEUE_BATCHES * MAX_BATCH` packets. When it is full the capture thread waits, the kernel
/// ring fills and the kernel drops (counted in `knockctl status`), instead of seconds of queue.
pub const QUEUE_BATCHES: usize = 16;

/// The doors the capture filter is built from, with `step(i)` the current step of rotating
/// door `i` (None: unknown, or not a rotating door). Every door counts: one without a sequence
/// adds no knock clause, but its `Target` is a destination the sweep guard watches, as in the
/// matcher. A rotating door has no static sequence: it stands for the ports of its accepted
/// steps (none while its step is unknown).
pub fn filter_doors(doors: &[Door], step: impl Fn(usize) -> Option<u64>) -> Cow<'_, [Door]> {
    if !doors.iter().any(|d| d.totp.is_some()) {
        return Cow::Borrowed(doors);
    }
    Cow::Owned(
        doors
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let mut d = d.clone();
                if let Some(spec) = &d.totp {
                    d.sequence = step(i).map(|s| window_steps(spec, s)).unwrap_or_default();
                }
                d
            })
            .collect(),
    )
}

/// The ports the capture filter needs for a TOTP door at `step`: those of its accepted steps,
/// and of the two steps just outside them (to notice a client's clock skew, see
/// [`crate::skew`]).
fn window_steps(spec: &Spec, step: u64) -> Vec<Step> {
    let skewed = crate::skew::OFFSETS
        .iter()
        .filter_map(|&o| step.checked_add_signed(o))
        .flat_map(|s| spec.ports(s))
        .map(|port| Step {
            port,
            proto: Proto::Tcp,
        });
    crate::config::totp::window(spec, step)
        .into_iter()
        .flat_map(|(_, seq)| seq)
        .chain(skewed)
        .collect()
}

/// The capture filter expression for the doors of `config` (see [`filter_doors`]) on an
/// interface with addresses `local`, widened to the SPA port when a door takes single-packet
/// knocks (see [`spa_port`]): the one function that builds it, for the engine (start, reload,
/// address change, step boundary) and a reload's preparation.
pub fn filter_for(
    config: &Config,
    local: &[IpAddr],
    step: impl Fn(usize) -> Option<u64>,
) -> String {
    let knocks = bpf::expression(&filter_doors(&config.doors, step), local);
    filter::with_spa(knocks, spa_port(config))
}

/// The UDP port single-packet knocks come to, when a door of `config` takes them (`SPA`):
/// the same port the engine's [`crate::spa::Gate`] listens on.
pub fn spa_port(config: &Config) -> Option<u16> {
    config
        .doors
        .iter()
        .any(|d| !d.spa.is_empty())
        .then(|| config.options.spa_port())
}

/// From the capture thread to the engine.
#[derive(Debug)]
pub enum CaptureMsg {
    /// Packets read together (at most [`MAX_BATCH`]), all received by `Instant`.
    Batch(Vec<Packet>, Instant),
    /// Capture failed (interface gone...). The engine shuts down with this error.
    Error(String),
    /// UDP datagrams whose payload has the length of an SPA packet, read with the batch
    /// that carries their [`Packet`]s (the engine keeps those sent to its SPA port).
    Spa(Vec<SpaDatagram>, Instant),
}

/// A UDP datagram that may be a single-packet knock.
#[derive(Debug, Clone)]
pub struct SpaDatagram {
    pub src: IpAddr,
    pub dport: u16,
    pub payload: [u8; knock_ipc::spa::PACKET_LEN],
}

/// How long a read waits before checking for filter updates and shutdown.
const POLL_MS: u16 = 200;

/// Kernel-side counters from `pcap_stats`, refreshed about once a second.
#[derive(Debug, Default)]
pub struct CaptureStats {
    pub received: AtomicU64,
    pub dropped: AtomicU64,
    pub if_dropped: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot capture on interface '{iface}': {source} (check the name with `ip link`, or set it with -i or Interface in [options])")]
    Open { iface: String, source: pcap::Error },
    #[error("interface '{iface}' has link type {dlt}, which knockd cannot decode")]
    LinkType { iface: String, dlt: i32 },
}

/// What the capture thread last did with a filter: generation `n` (the n-th filter sent) was
/// installed, with a note when it is coarser than exact, or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterStatus {
    pub generation: u64,
    pub result: Result<Option<String>, String>,
}

/// Filters for the capture thread, each with its generation; sending wakes the thread at once
/// (it would otherwise notice only after its poll timeout).
pub struct FilterSender {
    tx: std::sync::mpsc::Sender<(u64, String)>,
    wake: UnixStream,
    sent: Arc<AtomicU64>,
}

impl FilterSender {
    /// Queue `expr`; returns its generation.
    pub fn send(&self, expr: String) -> u64 {
        let g = self.sent.fetch_add(1, Ordering::SeqCst) + 1;
        let _ = self.tx.send((g, expr));
        let _ = (&self.wake).write(&[1]);
        g
    }

    /// The generation counter (the last filter sent), to wait for its installation.
    pub fn sent_counter(&self) -> Arc<AtomicU64> {
        self.sent.clone()
    }
}

/// The capture side of a [`FilterSender`].
pub struct FilterReceiver {
    rx: std::sync::mpsc::Receiver<(u64, String)>,
    wake: UnixStream,
    status: tokio::sync::watch::Sender<FilterStatus>,
}

impl FilterReceiver {
    /// The newest filter sent since the last call, if any (older ones are superseded).
    fn latest(&self) -> Option<(u64, String)> {
        let mut buf = [0u8; 64];
        while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
        self.rx.try_iter().last()
    }
}

/// A filter channel: the sender (engine side), the receiver (capture thread), and a watch of
/// what the capture thread installed.
pub fn filter_channel() -> std::io::Result<(
    FilterSender,
    FilterReceiver,
    tokio::sync::watch::Receiver<FilterStatus>,
)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (a, b) = UnixStream::pair()?;
    a.set_nonblocking(true)?;
    b.set_nonblocking(true)?;
    let (status, watch) = tokio::sync::watch::channel(FilterStatus {
        generation: 0,
        result: Ok(None),
    });
    Ok((
        FilterSender {
            tx,
            wake: a,
            sent: Arc::new(AtomicU64::new(0)),
        },
        FilterReceiver {
            rx,
            wake: b,
            status,
        },
        watch,
    ))
}

/// How long `reload` waits for the capture thread to install the new filter.
const FILTER_WAIT: Duration = Duration::from_secs(10);

/// Where the capture thread reports the filters it installed, so `reload` can answer only
/// once the new filter is in place (a knock sent right after it is not lost).
#[derive(Clone)]
pub struct FilterProbe {
    pub sent: Arc<AtomicU64>,
    pub status: watch::Receiver<FilterStatus>,
}

impl FilterProbe {
    /// A probe for an engine without capture (tests): every filter counts as installed.
    pub fn inert() -> FilterProbe {
        let (_tx, status) = watch::channel(FilterStatus {
            generation: 0,
            result: Ok(None),
        });
        FilterProbe {
            sent: Arc::new(AtomicU64::new(0)),
            status,
        }
    }

    /// Wait (bounded) until the capture thread has handled the last filter sent; its note
    /// (coarser filter) or error.
    pub async fn settled(&mut self) -> Result<Option<String>, String> {
        let want = self.sent.load(Ordering::SeqCst);
        let wait = self.status.wait_for(|s| s.generation >= want);
        match tokio::time::timeout(FILTER_WAIT, wait).await {
            Ok(Ok(s)) => s.result.clone(),
            Ok(Err(_)) => Err("the capture thread has stopped".into()),
            Err(_) => Err(format!(
                "the capture thread did not install the new filter within {} s",
                FILTER_WAIT.as_secs()
            )),
        }
    }
}

pub struct Capture {
    iface: String,
    cap: pcap::Capture<pcap::Active>,
    link: LinkType,
    dlt: i32,
    only_ipv4: bool,
}

impl Capture {
    /// Open the interface now (so errors surface before the daemon starts).
    pub fn open(iface: &str, only_ipv4: bool) -> Result<Capture, CaptureError> {
        let err = |source| CaptureError::Open {
            iface: iface.to_string(),
            source,
        };
        let cap = pcap::Capture::from_device(iface)
            .map_err(err)?
            .snaplen(256)
            .buffer_size(8 << 20)
            .immediate_mode(true)
            .open()
            .map_err(err)?
            .setnonblock()
            .map_err(err)?;
        let dlt = cap.get_datalink().0;
        let link = LinkType::from_dlt(dlt).ok_or_else(|| CaptureError::LinkType {
            iface: iface.to_string(),
            dlt,
        })?;
        Ok(Capture {
            iface: iface.to_string(),
            cap,
            link,
            dlt,
            only_ipv4,
        })
    }

    /// The link type of `iface` without capturing (`knockd -t`): Err says why it could not be
    /// read (no such interface, no permission to open it).
    pub fn link_of(iface: &str) -> Result<pcap::Linktype, String> {
        let cap = pcap::Capture::from_device(iface)
            .and_then(|c| c.snaplen(64).open())
            .map_err(|e| e.to_string())?;
        Ok(cap.get_datalink())
    }

    /// The link type, as a DLT for compiling filters (`knockd -t`, reload checks).
    pub fn linktype(&self) -> pcap::Linktype {
        pcap::Linktype(self.dlt)
    }

    /// Run on a new thread until the engine's receiver is dropped or capture fails. The thread
    /// has a large stack: libpcap's filter compiler recurses per term.
    pub fn spawn(
        self,
        filters: FilterReceiver,
        tx: mpsc::Sender<CaptureMsg>,
        stats: Arc<CaptureStats>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("capture".into())
            .stack_size(bpf::COMPILE_STACK)
            .spawn(move || self.run(filters, tx, stats))
    }

    /// Fit and install filter generation `g`; report what happened on the status watch.
    fn install(&mut self, g: u64, expr: &str, status: &tokio::sync::watch::Sender<FilterStatus>) {
        let result = match bpf::fit_expr(expr, 0, pcap::Linktype(self.dlt)) {
            Ok(fitted) => match self.cap.filter(&fitted.expr, true) {
                Ok(()) => {
                    if let Some(n) = fitted.note() {
                        tracing::warn!("{n}");
                    }
                    Ok(fitted.note())
                }
                Err(e) => Err(format!("cannot install capture filter: {e}")),
            },
            Err(e) => Err(e.to_string()),
        };
        let result = result.or_else(|e| {
            // Never stay blind or on a stale filter: capture every TCP/UDP packet instead.
            tracing::error!("{e}; capturing every TCP and UDP packet instead");
            match self.cap.filter(bpf::ANY_KNOCK, true) {
                Ok(()) => Ok(Some(format!(
                    "warning: {e}; capturing every TCP and UDP packet instead"
                ))),
                Err(e2) => Err(format!("{e}; the fallback filter failed too: {e2}")),
            }
        });
        status.send_replace(FilterStatus {
            generation: g,
            result,
        });
    }

    fn run(
        mut self,
        filters: FilterReceiver,
        tx: mpsc::Sender<CaptureMsg>,
        stats: Arc<CaptureStats>,
    ) {
        let mut last_stats = Instant::now();
        let mut batch = Vec::with_capacity(64);
        let mut spa: Vec<SpaDatagram> = Vec::new();
        let mut pacer = pacer::Pacer::default();
        loop {
            if let Some((g, f)) = filters.latest() {
                self.install(g, &f, &filters.status);
            }
            // Drain what is there without blocking.
            loop {
                match self.cap.next_packet() {
                    Ok(p) => {
                        if let Some((pkt, l4)) = decode_l4(self.link, p.data) {
                            if !(self.only_ipv4 && pkt.src.is_ipv6()) {
                                if pkt.proto == Proto::Udp {
                                    spa_candidate(&pkt, l4, &mut spa);
                                }
                                batch.push(pkt);
                            }
                        }
                        if batch.len() >= MAX_BATCH {
                            break;
                        }
                    }
                    Err(pcap::Error::TimeoutExpired) => break,
                    Err(e) => {
                        let _ = tx.blocking_send(CaptureMsg::Error(format!("{}: {e}", self.iface)));
                        return;
                    }
                }
            }
            if batch.is_empty() {
                // Nothing ready: sleep until the kernel hands over a block (or a while passes).
                // The wake-up socket: a new filter is read at the top of the loop.
                let mut fds = [
                    PollFd::new(self.cap.as_fd(), PollFlags::POLLIN),
                    PollFd::new(filters.wake.as_fd(), PollFlags::POLLIN),
                ];
                if let Err(e) = poll(&mut fds, PollTimeout::from(POLL_MS)) {
                    if e != nix::errno::Errno::EINTR {
                        let _ = tx
                            .blocking_send(CaptureMsg::Error(format!("{}: poll: {e}", self.iface)));
                        return;
                    }
                }
                let failed = fds[0].revents().is_some_and(|r| {
                    r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL)
                });
                if failed {
                    // The next read reports the reason (e.g. the interface disappeared).
                    if let Err(e) = self.cap.next_packet() {
                        if !matches!(e, pcap::Error::TimeoutExpired) {
                            let _ =
                                tx.blocking_send(CaptureMsg::Error(format!("{}: {e}", self.iface)));
                            return;
                        }
                    }
                }
                if tx.is_closed() {
                    return;
                }
            } else {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(64));
                let n = full.len();
                let now = Instant::now();
                if !spa.is_empty()
                    && tx
                        .blocking_send(CaptureMsg::Spa(std::mem::take(&mut spa), now))
                        .is_err()
                {
                    return;
                }
                if tx.blocking_send(CaptureMsg::Batch(full, now)).is_err() {
                    return;
                }
                // Under a flood, let packets pile up for a moment (see pacer).
                if let Some(pause) = pacer.after_batch(n, now) {
                    std::thread::sleep(pause);
                }
            }
            if last_stats.elapsed() >= Duration::from_secs(1) {
                last_stats = Instant::now();
                if let Ok(s) = self.cap.stats() {
                    stats
                        .received
                        .store(u64::from(s.received), Ordering::Relaxed);
                    stats.dropped.store(u64::from(s.dropped), Ordering::Relaxed);
                    stats
                        .if_dropped
                        .store(u64::from(s.if_dropped), Ordering::Relaxed);
                }
            }
        }
    }
}

/// Keep a UDP datagram whose payload has an SPA packet's length.
fn spa_candidate(pkt: &Packet, l4: &[u8], out: &mut Vec<SpaDatagram>) {
    let Some(payload) = udp_payload(l4) else {
        return;
    };
    if let Ok(payload) = <[u8; knock_ipc::spa::PACKET_LEN]>::try_from(payload) {
        out.push(SpaDatagram {
            src: pkt.src,
            dport: pkt.dport,
            payload,
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::model::flag;
    use crate::packet::testpkt::{self, TCP};
    use std::net::Ipv4Addr;

    /// The daemon's filter for the seed's doors: SYN|ACK to a knock port stays in the kernel
    /// while the sweep guard watches the doors (the default), and reaches the matcher with
    /// `SweepGuard = off` (knockd 0.8's flag rule then decides alone).
    #[test]
    fn the_filter_follows_the_sweep_guard() {
        let doors = |guard: &str| {
            format!(
                "[openSSH]\n sequence = 7000,8000,9000\n tcpflags = syn\n command = x %IP%\n{guard}\
                 [closeSSH]\n sequence = 9000,8000,7000\n tcpflags = syn\n command = y %IP%\n{guard}"
            )
        };
        let local = [IpAddr::V4(Ipv4Addr::new(10, 99, 77, 1))];
        let frame = |flags: u8| {
            testpkt::ether_ip(&testpkt::ipv4(
                Ipv4Addr::new(192, 0, 2, 7),
                Ipv4Addr::new(10, 99, 77, 1),
                TCP,
                &testpkt::tcp(1, 8000, flags, 1),
            ))
        };
        let cap = pcap::Capture::dead(pcap::Linktype::ETHERNET).unwrap();
        for (guard, synack) in [("", false), (" SweepGuard = off\n", true)] {
            let config = crate::config::parse(&doors(guard), "t").unwrap().config;
            let expr = filter_for(&config, &local, |_| None);
            let prog = cap.compile(&expr, true).unwrap();
            assert!(prog.filter(&frame(flag::SYN)), "{expr}");
            assert_eq!(prog.filter(&frame(flag::SYN | flag::ACK)), synack, "{expr}");
            assert!(!prog.filter(&frame(flag::ACK)), "{expr}");
        }
    }
}
