//! The daemon as a library: [`serve`] takes what was opened and checked before the runtime
//! ([`Parts`]), the effects it runs through ([`Deps`]: executor, firewall backends, log) and a
//! shutdown future, and runs the engine, the control socket, the capture thread and the
//! address watcher until `shutdown` resolves or capture fails. `daemon.rs` calls it with the
//! real ones; the in-process tests call it with a recording executor and firewalls, a memory
//! log and a channel for packets.

use crate::action::Executor;
use crate::capture::{Capture, CaptureMsg, CaptureStats, FilterProbe};
use crate::config::{self, Config};
use crate::control::ControlSocket;
use crate::engine::{Control, Engine};
use crate::firewall::Firewall;
use crate::knocklog::LogSink;
use anyhow::Context;
use knock_ipc as ipc;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};

/// Control requests waiting for the engine at most.
pub const CONTROL_QUEUE: usize = 64;

/// The control channel: its sender goes to the signal handler, the control socket and the
/// address watcher; its receiver to [`Parts::control`].
pub fn control_channel() -> (mpsc::Sender<Control>, mpsc::Receiver<Control>) {
    mpsc::channel(CONTROL_QUEUE)
}

/// The live event channel (`knockctl tail`, the TUI); see [`crate::engine::EVENT_BUFFER`].
pub fn event_channel() -> broadcast::Sender<ipc::Event> {
    broadcast::channel(crate::engine::EVENT_BUFFER).0
}

/// Where packets come from.
pub enum Packets {
    /// The capture opened on `iface`: its thread starts once the previous run's grants are
    /// taken over; the local addresses of `iface` are read now and every 2 s.
    Live {
        capture: Capture,
        iface: String,
        only_ipv4: bool,
    },
    /// Packets sent on a channel (tests): no filter, no local addresses.
    Channel(mpsc::Receiver<CaptureMsg>),
}

/// What the daemon opened and checked before the runtime started.
pub struct Parts {
    /// The config in force (command-line overrides applied) and the file reloads re-read.
    pub config: Config,
    pub config_path: PathBuf,
    /// Command-line settings re-applied over the config file on every reload.
    pub overrides: config::Overrides,
    /// None: no state file (tests).
    pub state_file: Option<PathBuf>,
    /// The previous run's state, and the elements of table inet knockd (`Firewall =
    /// nftables`; None: no table).
    pub saved: crate::state::Saved,
    pub kernel: Option<Vec<crate::firewall::nftables::listing::KernelElem>>,
    pub socket: ControlSocket,
    pub packets: Packets,
    /// Control requests (see [`control_channel`]); the sender serves the socket and the
    /// address watcher.
    pub control: (mpsc::Sender<Control>, mpsc::Receiver<Control>),
    /// See [`event_channel`].
    pub events: broadcast::Sender<ipc::Event>,
    /// Start-up warnings (the config's, then the firewall advice), logged once the log is up
    /// and before `starting up, listening on IFACE`: to stderr in the foreground, and to
    /// LogFile and syslog.
    pub advice: Vec<String>,
}

/// The effects the engine runs through.
pub struct Deps<E: Executor, L: LogSink> {
    /// Runs door commands.
    pub exec: E,
    /// Applies native doors' rules (`Firewall = iptables`).
    pub firewall: Arc<dyn Firewall>,
    /// Applies native doors' set elements (`Firewall = nftables`).
    pub nft_firewall: Arc<dyn Firewall>,
    pub log: L,
}

/// Run the daemon until `shutdown` resolves (Ok) or capture fails (Err). Grants with a
/// deadline are closed before it returns (see `OnShutdown`).
pub async fn serve<E: Executor, L: LogSink + 'static>(
    p: Parts,
    deps: Deps<E, L>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (ctl_tx, ctl_rx) = p.control;
    let stats = Arc::new(CaptureStats::default());
    let (set_filter, probe, pkt_rx, live): (Box<dyn FnMut(String) + Send>, _, _, _) =
        match p.packets {
            Packets::Live {
                capture,
                iface,
                only_ipv4,
            } => {
                let (filter_tx, filter_rx, status) =
                    crate::capture::filter_channel().context("cannot create the filter channel")?;
                let probe = FilterProbe {
                    sent: filter_tx.sent_counter(),
                    status,
                };
                let (pkt_tx, pkt_rx) = mpsc::channel(crate::capture::QUEUE_BATCHES);
                let send = Box::new(move |f| {
                    filter_tx.send(f);
                });
                let live = (capture, iface, only_ipv4, filter_rx, pkt_tx);
                (
                    send as Box<dyn FnMut(String) + Send>,
                    probe,
                    pkt_rx,
                    Some(live),
                )
            }
            Packets::Channel(rx) => (Box::new(|_| {}) as _, FilterProbe::inert(), rx, None),
        };
    let mut engine = Engine::new(
        p.config,
        p.config_path.clone(),
        deps.exec,
        deps.firewall,
        deps.log,
        set_filter,
    )
    .with_nft_firewall(deps.nft_firewall)
    .with_overrides(p.overrides)
    .with_events(p.events);
    if let Some(state) = p.state_file {
        engine = engine.with_state_file(state);
    }
    if let Some((_, iface, only_ipv4, _, _)) = &live {
        engine = engine.with_capture(vec![iface.clone()], stats.clone());
        engine.watch_nft_table();
        // Addresses first, so the first filter already names them.
        let addrs = crate::addrs::of_interface(iface, *only_ipv4);
        engine.on_control(Control::LocalAddrs(addrs));
    }
    engine.restore_all(p.saved, p.kernel).await;
    let mut _capture_thread = None;
    let mut listening = None;
    if let Some((capture, iface, only_ipv4, filter_rx, pkt_tx)) = live {
        _capture_thread = Some(capture.spawn(filter_rx, pkt_tx, stats)?);
        tokio::spawn(crate::addrs::watch(
            iface.clone(),
            only_ipv4,
            ctl_tx.clone(),
        ));
        listening = Some(iface);
    }
    tracing::info!("control socket {}", p.socket.path().display());
    tokio::spawn(
        p.socket
            .serve(ctl_tx, engine.events(), probe, p.config_path.clone()),
    );
    // Once each: log_line also writes to stderr. Before the readiness line, so whoever waits
    // for "starting up" (an admin's script, the tests) has every start-up warning by then.
    for line in &p.advice {
        engine.log_line(line);
    }
    if let Some(iface) = listening {
        engine.log_line(&format!("starting up, listening on {iface}"));
    }
    engine.run(pkt_rx, ctl_rx, shutdown).await?;
    Ok(())
}
