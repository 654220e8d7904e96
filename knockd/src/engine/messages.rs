//! What goes in and out of the engine task: control requests from signals, the address
//! watcher and the control socket ([`Control`]); the results of the commands and firewall
//! ops it started ([`Done`]); why it stopped ([`EngineError`]).

use crate::action::Outcome;
use crate::grants::GrantId;
use crate::reload::{Prepared, ReloadResult, Snapshot};
use knock_ipc as ipc;
use std::net::IpAddr;
use std::path::PathBuf;
use tokio::sync::{mpsc, oneshot};

/// Requests to the engine from signals, the address watcher and the control socket.
#[derive(Debug)]
pub enum Control {
    LocalAddrs(Vec<IpAddr>),
    /// A control-socket request (everything but Subscribe and Reload, which the socket server
    /// handles).
    Request(ipc::Request, oneshot::Sender<ipc::Response>),
    /// A reload whose config file was already read, parsed and made ready off the engine task
    /// (a large config takes a while to parse and to index; the engine only swaps it in).
    ReloadLoaded(Box<Prepared>, Option<oneshot::Sender<ReloadResult>>),
    /// The config in force and the local addresses (O(1)): what a reload prepares against.
    Snapshot(oneshot::Sender<Snapshot>),
}

/// Load and prepare `path` off the engine task (against the engine's snapshot), then hand it
/// to the engine; the engine's answer goes to `reply`. False when the engine is gone. The one
/// way a reload reaches the engine (SIGHUP, `knockctl reload`).
pub async fn request_reload(
    ctl: &mpsc::Sender<Control>,
    path: PathBuf,
    reply: Option<oneshot::Sender<ReloadResult>>,
) -> bool {
    let (tx, rx) = oneshot::channel();
    if ctl.send(Control::Snapshot(tx)).await.is_err() {
        return false;
    }
    let Ok(snapshot) = rx.await else {
        return false;
    };
    let prepared = crate::reload::load(path, Some(snapshot)).await;
    ctl.send(Control::ReloadLoaded(Box::new(prepared), reply))
        .await
        .is_ok()
}

/// What a command task or firewall batch was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskKind {
    /// Opening a new grant: on failure the grant is dropped.
    Start,
    /// Closing (expiry, revoke, shutdown, closing door).
    Close,
    /// Re-knock: put the rule back if someone removed it.
    Ensure,
    /// A command with no grant (fire and forget, like knockd).
    Free,
    /// At start: are a restored grant's rules still there?
    Verify,
}

/// One task handed to the command runner: which grant, door and source it is for.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub grant: Option<GrantId>,
    pub door: String,
    pub addr: IpAddr,
    pub kind: TaskKind,
}

impl Job {
    pub fn new(grant: Option<GrantId>, door: &str, addr: IpAddr, kind: TaskKind) -> Job {
        Job {
            grant,
            door: door.to_string(),
            addr,
            kind,
        }
    }
}

/// A task finished (from the command runner back to the engine).
#[derive(Debug)]
pub(crate) struct Done {
    pub job: Job,
    /// Ran through the command pool (counted against its queue), not the firewall queue.
    pub pooled: bool,
    /// For Ensure: whether the rule had to be re-inserted.
    pub reinserted: bool,
    /// Firewall ops: how many, and how many found their rule absent.
    pub total: usize,
    pub absent: usize,
    pub outcome: Outcome,
}

/// Why the engine stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("packet capture stopped: {0}")]
    Capture(String),
}
