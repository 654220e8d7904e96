//! Packet capture on its own thread: libpcap (immediate mode, kernel BPF filter) → decode →
//! bounded channel to the engine. Filter updates arrive on a std channel and are applied
//! between packets. Nothing here waits on the engine's commands.

use crate::engine::CaptureMsg;
use crate::packet::{decode, LinkType};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

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

pub struct Capture {
    iface: String,
    cap: pcap::Capture<pcap::Active>,
    link: LinkType,
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
            .immediate_mode(true)
            .snaplen(256)
            .buffer_size(8 << 20)
            .timeout(200)
            .open()
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
            only_ipv4,
        })
    }

    /// Run on a new thread until the engine's receiver is dropped or capture fails.
    pub fn spawn(
        self,
        filters: std::sync::mpsc::Receiver<String>,
        tx: mpsc::Sender<CaptureMsg>,
        stats: Arc<CaptureStats>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || self.run(filters, tx, stats))
    }

    fn run(
        mut self,
        filters: std::sync::mpsc::Receiver<String>,
        tx: mpsc::Sender<CaptureMsg>,
        stats: Arc<CaptureStats>,
    ) {
        let mut last_stats = Instant::now();
        loop {
            while let Ok(f) = filters.try_recv() {
                if let Err(e) = self.cap.filter(&f, true) {
                    tracing::error!(filter = %f, "cannot install capture filter: {e}");
                }
            }
            match self.cap.next_packet() {
                Ok(p) => {
                    let Some(pkt) = decode(self.link, p.data) else {
                        continue;
                    };
                    if self.only_ipv4 && pkt.src.is_ipv6() {
                        continue;
                    }
                    if tx
                        .blocking_send(CaptureMsg::Packet(pkt, Instant::now()))
                        .is_err()
                    {
                        return;
                    }
                }
                Err(pcap::Error::TimeoutExpired) => {
                    if tx.is_closed() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(CaptureMsg::Error(format!("{}: {e}", self.iface)));
                    return;
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
