//! The control socket: a Unix stream socket speaking `knock-ipc`.
//!
//! Hygiene: an existing path is probed first (a live daemon answers → refuse to start; stale →
//! replace it); the directory is created with safe modes; the socket gets its mode and group
//! before `listen`; every peer's credentials are checked (root, our own uid, or a member of
//! group `knockd`). Each connection has its own task: a bad client (garbage, oversize frames,
//! silence, vanishing mid-frame) only ever closes its own connection.

use crate::capture::FilterProbe;
use crate::engine::Control;
use knock_ipc::codec::{CodecError, Reader, Writer, MAX_FRAME, MAX_REQUEST_FRAME};
use knock_ipc::{
    ClientMsg, DoorInfo, Event, EventKind, Request, Response, ServerMsg, PROTOCOL_VERSION,
};
use nix::unistd::{Gid, Group, Uid};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

/// Group whose members may use the socket.
pub const GROUP: &str = "knockd";
pub use crate::config::DEFAULT_MAX_CLIENTS;
/// Connections beyond the cap that only root may open.
pub const ROOT_RESERVE: usize = 4;
/// Connections over the cap being told so, at most (each holds a descriptor for up to
/// [`REFUSE_WAIT`]); beyond that they are closed without a word.
const REFUSING: usize = 16;
const REFUSE_WAIT: Duration = Duration::from_secs(1);
/// The hello must arrive within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A frame that has started must be complete within this.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection with no request for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A client must read an answer or event within this.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of large answers (grants, attempts, doors) buffered at once, all connections
/// together: 16 frames of 1 MiB.
pub const REPLY_BUDGET: usize = 16 * MAX_FRAME;
/// Requests per second per connection (sustained), and burst.
pub const RATE_PER_SEC: f64 = 50.0;
pub const RATE_BURST: f64 = 50.0;
const TICK: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("another knockd is already running: it answers on {0} (stop it first, or use another --socket)")]
    AlreadyRunning(PathBuf),
    #[error("{0} exists and is not a socket; remove it or choose another --socket")]
    NotASocket(PathBuf),
    #[error("cannot create the control socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A bound control socket; removes its path when dropped.
pub struct ControlSocket {
    listener: std::os::unix::net::UnixListener,
    path: PathBuf,
    group: Option<Gid>,
    max_clients: usize,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn knockd_group() -> Option<Gid> {
    Group::from_name(GROUP).ok().flatten().map(|g| g.gid)
}

impl ControlSocket {
    /// Bind `path` (no runtime needed: call it before daemonising, so errors show).
    pub fn bind(path: &Path, max_clients: usize) -> Result<ControlSocket, ControlError> {
        let io = |source| ControlError::Io {
            path: path.to_path_buf(),
            source,
        };
        let group = knockd_group();
        if let Some(dir) = path.parent() {
            if !dir.exists() {
                std::fs::create_dir_all(dir).map_err(io)?;
                // Group members must reach the socket; nobody else needs to.
                let mode = if group.is_some() { 0o750 } else { 0o700 };
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(io)?;
                if let Some(gid) = group {
                    nix::unistd::chown(dir, None, Some(gid)).map_err(|e| io(e.into()))?;
                }
            }
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) => {
                use std::os::unix::fs::FileTypeExt;
                if !meta.file_type().is_socket() {
                    return Err(ControlError::NotASocket(path.to_path_buf()));
                }
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(ControlError::AlreadyRunning(path.to_path_buf()));
                }
                tracing::info!("removing stale control socket {}", path.display());
                std::fs::remove_file(path).map_err(io)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        // bind, then set mode and group, then listen: no window where others can connect.
        let sock =
            socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).map_err(io)?;
        let addr = socket2::SockAddr::unix(path).map_err(io)?;
        sock.bind(&addr).map_err(io)?;
        let mode = if group.is_some() { 0o660 } else { 0o600 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
        if let Some(gid) = group {
            nix::unistd::chown(path, None, Some(gid)).map_err(|e| io(e.into()))?;
        }
        sock.listen(64).map_err(io)?;
        sock.set_nonblocking(true).map_err(io)?;
        let listener: std::os::unix::net::UnixListener = sock.into();
        Ok(ControlSocket {
            listener,
            path: path.to_path_buf(),
            group,
            max_clients: max_clients.max(1),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accept connections until the engine goes away.
    pub async fn serve(
        self,
        ctl: mpsc::Sender<Control>,
        events: broadcast::Sender<Event>,
        filter: FilterProbe,
        config: PathBuf,
    ) {
        let listener = match self.listener.try_clone().and_then(UnixListener::from_std) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("control socket {}: {e}", self.path.display());
                return;
            }
        };
        let limits = Arc::new(Limits::new(self.max_clients));
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE/ENFILE: the connection stays in the kernel's backlog; the
                    // descriptor reserve keeps grants, state and log working meanwhile.
                    tracing::warn!("control socket: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if ctl.is_closed() {
                return;
            }
            let root = stream.peer_cred().map(|c| c.uid() == 0).unwrap_or(false);
            let Some(slot) = limits.admit(root) else {
                limits.refuse(stream);
                continue;
            };
            let conn = Conn {
                ctl: ctl.clone(),
                events: events.clone(),
                group: self.group,
                limits: limits.clone(),
                filter: filter.clone(),
                config: config.clone(),
            };
            tokio::spawn(async move {
                let _slot = slot;
                if let Err(e) = conn.handle(stream).await {
                    tracing::debug!("control connection closed: {e}");
                }
            });
        }
    }
}

/// Connection limits shared by all connections.
struct Limits {
    max_clients: usize,
    /// Everyone's slots.
    clients: Arc<Semaphore>,
    /// Extra slots only root may take once `clients` is exhausted.
    root: Arc<Semaphore>,
    /// Connections being told that the cap is reached (each holds a descriptor briefly).
    refusing: Arc<Semaphore>,
    /// Bytes of large replies being written, across all connections.
    reply_bytes: Arc<Semaphore>,
}

impl Limits {
    fn new(max_clients: usize) -> Limits {
        Limits {
            max_clients,
            clients: Arc::new(Semaphore::new(max_clients)),
            root: Arc::new(Semaphore::new(ROOT_RESERVE)),
            refusing: Arc::new(Semaphore::new(REFUSING)),
            reply_bytes: Arc::new(Semaphore::new(REPLY_BUDGET)),
        }
    }

    fn admit(&self, root: bool) -> Option<OwnedSemaphorePermit> {
        self.clients.clone().try_acquire_owned().ok().or_else(|| {
            root.then(|| self.root.clone().try_acquire_owned().ok())
                .flatten()
        })
    }

    /// Tell the client the cap is reached (after reading its hello, so it reads the reason
    /// rather than a reset), without ever holding more than [`REFUSING`] descriptors for it.
    fn refuse(&self, stream: UnixStream) {
        let reason = format!(
            "too many control connections: the cap (MaxClients = {}) is reached; try again later \
             (root has {ROOT_RESERVE} reserved connections; raise MaxClients in [options])",
            self.max_clients
        );
        tracing::warn!(
            "control socket: refused a connection: {} connections open (MaxClients = {})",
            self.max_clients,
            self.max_clients
        );
        let Ok(permit) = self.refusing.clone().try_acquire_owned() else {
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let (r, w) = stream.into_split();
            let mut rd = Reader::new(r, MAX_REQUEST_FRAME);
            let _ = tokio::time::timeout(REFUSE_WAIT, rd.recv::<ClientMsg>()).await;
            let mut wr = Writer::new(w);
            let _ =
                tokio::time::timeout(REFUSE_WAIT, wr.send(&ServerMsg::Rejected { reason })).await;
        });
    }
}

/// Per-connection request rate: a token bucket.
struct Rate {
    tokens: f64,
    last: tokio::time::Instant,
}

impl Rate {
    fn new() -> Rate {
        Rate {
            tokens: RATE_BURST,
            last: tokio::time::Instant::now(),
        }
    }

    /// Wait until this connection may make another request.
    async fn take(&mut self) {
        let now = tokio::time::Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * RATE_PER_SEC)
            .min(RATE_BURST);
        self.last = now;
        if self.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - self.tokens) / RATE_PER_SEC);
            tokio::time::sleep(wait).await;
            self.tokens = 1.0;
            self.last = tokio::time::Instant::now();
        }
        self.tokens -= 1.0;
    }
}

struct Conn {
    ctl: mpsc::Sender<Control>,
    events: broadcast::Sender<Event>,
    group: Option<Gid>,
    limits: Arc<Limits>,
    filter: FilterProbe,
    /// The config file a reload re-reads (parsed here, off the engine task).
    config: PathBuf,
}

/// May this peer see door sequences? Root or our own uid (who can read the config and the
/// one-time sequence files anyway); a member of group knockd may not: a static or one-time
/// sequence would let it open the door, and burn a one-time line.
fn sees_sequences(stream: &UnixStream) -> bool {
    stream.peer_cred().is_ok_and(|cred| {
        let uid = Uid::from_raw(cred.uid());
        uid.is_root() || uid == Uid::effective()
    })
}

/// What a peer that may not see sequences gets of `response`.
fn for_member(response: Response) -> Response {
    match response {
        Response::Doors { doors } => Response::Doors {
            doors: doors.into_iter().map(DoorInfo::without_sequence).collect(),
        },
        other => other,
    }
}

/// Is this peer allowed? Root, our own uid, or a member (primary or supplementary) of `group`.
fn allowed(stream: &UnixStream, group: Option<Gid>) -> bool {
    let Ok(cred) = stream.peer_cred() else {
        return false;
    };
    let uid = Uid::from_raw(cred.uid());
    if uid.is_root() || uid == Uid::effective() {
        return true;
    }
    let Some(gid) = group else {
        return false;
    };
    if Gid::from_raw(cred.gid()) == gid {
        return true;
    }
    // Supplementary groups of the peer process.
    cred.pid()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .any(|x| x.parse::<u32>().ok() == Some(gid.as_raw()))
            })
        })
        .unwrap_or(false)
}

/// Next client message: Ok(None) when the connection was idle for [`IDLE_TIMEOUT`]; an
/// error when a frame stays incomplete for [`FRAME_TIMEOUT`] (slowloris) or is malformed.
async fn next_msg(
    rd: &mut Reader<OwnedReadHalf>,
    idle: Duration,
) -> Result<Option<ClientMsg>, CodecError> {
    let start = tokio::time::Instant::now();
    let mut partial_since: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            m = rd.recv::<ClientMsg>() => return m.map(Some),
            () = tokio::time::sleep(TICK) => {
                let now = tokio::time::Instant::now();
                if rd.buffered() > 0 {
                    let since = *partial_since.get_or_insert(now);
                    if now.duration_since(since) >= FRAME_TIMEOUT {
                        return Err(CodecError::Malformed(format!(
                            "frame incomplete after {} s", FRAME_TIMEOUT.as_secs()
                        )));
                    }
                } else {
                    partial_since = None;
                    if now.duration_since(start) >= idle {
                        return Ok(None);
                    }
                }
            }
        }
    }
}

/// Does `request` produce an answer that can be large (up to a whole frame)?
fn large_reply(request: &Request) -> bool {
    matches!(
        request,
        Request::Grants | Request::Attempts | Request::Doors | Request::Revoke { .. }
    )
}

impl Conn {
    async fn handle(mut self, stream: UnixStream) -> Result<(), CodecError> {
        let ok = allowed(&stream, self.group);
        let sequences = sees_sequences(&stream);
        let (r, w) = stream.into_split();
        let mut rd = Reader::new(r, MAX_REQUEST_FRAME);
        let mut wr = Writer::new(w);
        let hello = match next_msg(&mut rd, HANDSHAKE_TIMEOUT).await? {
            Some(m) => m,
            None => {
                return Err(CodecError::Malformed(format!(
                    "no hello within {} s",
                    HANDSHAKE_TIMEOUT.as_secs()
                )))
            }
        };
        if !ok {
            tracing::warn!("control socket: refused a client without permission");
            return send(
                &mut wr,
                &ServerMsg::Rejected {
                    reason: format!("permission denied: run as root or join group {GROUP}"),
                },
            )
            .await;
        }
        match hello {
            ClientMsg::Hello { version, .. } if version == PROTOCOL_VERSION => {}
            ClientMsg::Hello { version, client } => {
                let hint = knock_ipc::client::mismatch_hint(PROTOCOL_VERSION, version);
                tracing::warn!(
                    "control socket: {client} speaks protocol {version}, not {PROTOCOL_VERSION}"
                );
                return send(&mut wr, &ServerMsg::Rejected {
                    reason: format!(
                        "protocol mismatch: knockd {} speaks protocol {PROTOCOL_VERSION}, the client speaks {version}; {hint}",
                        env!("CARGO_PKG_VERSION")
                    ),
                })
                .await;
            }
            ClientMsg::Request { .. } => {
                return Err(CodecError::Malformed("request before hello".into()));
            }
        }
        send(
            &mut wr,
            &ServerMsg::Hello {
                version: PROTOCOL_VERSION,
                daemon_version: env!("CARGO_PKG_VERSION").to_string(),
            },
        )
        .await?;
        let mut rate = Rate::new();
        loop {
            let Some(msg) = next_msg(&mut rd, IDLE_TIMEOUT).await? else {
                return Ok(());
            };
            let request = match msg {
                ClientMsg::Request { request } => request,
                ClientMsg::Hello { .. } => {
                    return Err(CodecError::Malformed("second hello".into()))
                }
            };
            rate.take().await;
            if request == Request::Subscribe {
                let rx = self.events.subscribe();
                send(
                    &mut wr,
                    &ServerMsg::Response {
                        response: Response::Subscribed,
                    },
                )
                .await?;
                return stream_events(rd, wr, rx).await;
            }
            // Large answers take their size from a shared budget until written, so slow
            // readers cannot make knockd hold many of them.
            let _budget = if large_reply(&request) {
                let permits = u32::try_from(MAX_FRAME).unwrap_or(u32::MAX);
                match tokio::time::timeout(
                    WRITE_TIMEOUT,
                    self.limits.reply_bytes.clone().acquire_many_owned(permits),
                )
                .await
                {
                    Ok(Ok(p)) => Some(p),
                    _ => return Err(CodecError::Malformed("reply budget exhausted".into())),
                }
            } else {
                None
            };
            let shutting_down = || Response::Error {
                message: "knockd is shutting down".into(),
            };
            let response = if request == Request::Reload {
                let (tx, rx) = oneshot::channel();
                if !crate::engine::request_reload(&self.ctl, self.config.clone(), Some(tx)).await {
                    return Ok(());
                }
                let response = match rx.await {
                    Ok(Ok(warnings)) => Response::Reloaded { warnings },
                    Ok(Err(errors)) => Response::ReloadFailed { errors },
                    Err(_) => shutting_down(),
                };
                self.with_filter_result(response).await
            } else {
                let (tx, rx) = oneshot::channel();
                if self.ctl.send(Control::Request(request, tx)).await.is_err() {
                    return Ok(());
                }
                rx.await.unwrap_or_else(|_| shutting_down())
            };
            let response = if sequences {
                response
            } else {
                for_member(response)
            };
            send(&mut wr, &bounded(ServerMsg::Response { response })).await?;
        }
    }

    /// A reload answers once the capture thread has the new filter; what it reported is part
    /// of the answer (a reload whose filter did not go in is a failed reload).
    async fn with_filter_result(&mut self, response: Response) -> Response {
        let Response::Reloaded { mut warnings } = response else {
            return response;
        };
        match self.filter.settled().await {
            Ok(None) => Response::Reloaded { warnings },
            Ok(Some(note)) => {
                warnings.push(note);
                Response::Reloaded { warnings }
            }
            Err(e) => Response::ReloadFailed {
                errors: vec![format!(
                    "the new configuration is in force but its capture filter is not: {e}"
                )],
            },
        }
    }
}

/// Most warnings or errors sent in one reload answer or event; the rest are counted (a
/// config of 10,000 doors can have 20,000 warnings, far more than a frame holds).
pub const MAX_LISTED_PROBLEMS: usize = 200;

fn bounded_list(list: &mut Vec<String>, what: &str) {
    if list.len() > MAX_LISTED_PROBLEMS {
        let more = list.len() - MAX_LISTED_PROBLEMS;
        list.truncate(MAX_LISTED_PROBLEMS);
        list.push(format!(
            "... and {more} more {what} (`knockd -t` lists them all)"
        ));
    }
}

/// A message that fits in a frame whatever the size of the config behind it.
fn bounded(mut msg: ServerMsg) -> ServerMsg {
    match &mut msg {
        ServerMsg::Response {
            response: Response::Reloaded { warnings },
        }
        | ServerMsg::Event {
            event:
                Event {
                    kind: EventKind::ReloadOk { warnings, .. },
                    ..
                },
        } => bounded_list(warnings, "warnings"),
        ServerMsg::Response {
            response: Response::ReloadFailed { errors },
        }
        | ServerMsg::Event {
            event:
                Event {
                    kind: EventKind::ReloadFailed { errors },
                    ..
                },
        } => bounded_list(errors, "errors"),
        _ => {}
    }
    msg
}

/// Send with a deadline: a client that does not read its answers is disconnected.
async fn send(wr: &mut Writer<OwnedWriteHalf>, msg: &ServerMsg) -> Result<(), CodecError> {
    match tokio::time::timeout(WRITE_TIMEOUT, wr.send(msg)).await {
        Ok(r) => r,
        Err(_) => Err(CodecError::Malformed(format!(
            "client did not read for {} s",
            WRITE_TIMEOUT.as_secs()
        ))),
    }
}

/// Forward events; a subscriber that falls behind skips ahead and is told how much it missed.
/// A subscriber that hangs up (or sends anything) is noticed at once, not at the next event.
async fn stream_events(
    mut rd: Reader<OwnedReadHalf>,
    mut wr: Writer<OwnedWriteHalf>,
    mut rx: broadcast::Receiver<Event>,
) -> Result<(), CodecError> {
    loop {
        let event = tokio::select! {
            r = rx.recv() => match r {
                Ok(e) => e,
                Err(broadcast::error::RecvError::Lagged(missed)) => Event {
                    at_unix_ms: crate::state::unix_ms(std::time::SystemTime::now()),
                    kind: EventKind::Lagged { missed },
                },
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = rd.recv::<ClientMsg>() => return Ok(()),
        };
        send(&mut wr, &bounded(ServerMsg::Event { event })).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 20,000 reload warnings (10,000 doors of 3 knocks) still fit in one frame, and the
    /// answer says how many were left out.
    #[test]
    fn huge_reload_answers_fit_in_a_frame() {
        let warnings: Vec<String> = (0..20_000)
            .map(|i| format!("knockd.conf:{i}: warning: door 'd{i}': sequence has only 3 knocks: easy to guess or stumble on (use 4 or more)"))
            .collect();
        let msg = bounded(ServerMsg::Response {
            response: Response::Reloaded {
                warnings: warnings.clone(),
            },
        });
        let bytes = knock_ipc::codec::encode(&msg).expect("fits in a frame");
        assert!(bytes.len() <= MAX_FRAME);
        let ServerMsg::Response {
            response: Response::Reloaded { warnings: sent },
        } = msg
        else {
            panic!("not a Reloaded answer");
        };
        assert_eq!(sent.len(), MAX_LISTED_PROBLEMS + 1);
        assert!(sent[MAX_LISTED_PROBLEMS].contains("19800 more warnings"));
        let ev = bounded(ServerMsg::Event {
            event: Event {
                at_unix_ms: 0,
                kind: EventKind::ReloadFailed { errors: warnings },
            },
        });
        assert!(knock_ipc::codec::encode(&ev).is_ok());
    }
}
