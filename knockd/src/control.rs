//! The control socket: a Unix stream socket speaking `knock-ipc`.
//!
//! Hygiene: an existing path is probed first (a live daemon answers → refuse to start; stale →
//! replace it); the directory is created with safe modes; the socket gets its mode and group
//! before `listen`; every peer's credentials are checked (root, our own uid, or a member of
//! group `knockd`). Each connection has its own task: a bad client (garbage, oversize frames,
//! silence, vanishing mid-frame) only ever closes its own connection.

use crate::engine::Control;
use knock_ipc::codec::{CodecError, Connection};
use knock_ipc::{ClientMsg, Event, EventKind, Request, Response, ServerMsg, PROTOCOL_VERSION};
use nix::unistd::{Gid, Group, Uid};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, oneshot};

/// Group whose members may use the socket.
pub const GROUP: &str = "knockd";
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

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
    pub fn bind(path: &Path) -> Result<ControlSocket, ControlError> {
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
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accept connections until the engine goes away.
    pub async fn serve(self, ctl: mpsc::Sender<Control>, events: broadcast::Sender<Event>) {
        let listener = match self.listener.try_clone().and_then(UnixListener::from_std) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("control socket {}: {e}", self.path.display());
                return;
            }
        };
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("control socket: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if ctl.is_closed() {
                return;
            }
            let (ctl, events, group) = (ctl.clone(), events.clone(), self.group);
            tokio::spawn(async move {
                if let Err(e) = handle(stream, ctl, events, group).await {
                    tracing::debug!("control connection closed: {e}");
                }
            });
        }
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

async fn handle(
    stream: UnixStream,
    ctl: mpsc::Sender<Control>,
    events: broadcast::Sender<Event>,
    group: Option<Gid>,
) -> Result<(), CodecError> {
    let ok = allowed(&stream, group);
    let mut conn = Connection::new(stream);
    let hello = tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.recv::<ClientMsg>())
        .await
        .map_err(|_| CodecError::Malformed("no hello within 5 s".into()))??;
    if !ok {
        tracing::warn!("control socket: refused a client without permission");
        return conn
            .send(&ServerMsg::Rejected {
                reason: format!("permission denied: run as root or join group {GROUP}"),
            })
            .await;
    }
    match hello {
        ClientMsg::Hello { version, .. } if version == PROTOCOL_VERSION => {}
        ClientMsg::Hello { version, client } => {
            let hint = knock_ipc::client::mismatch_hint(PROTOCOL_VERSION, version);
            tracing::warn!(
                "control socket: {client} speaks protocol {version}, not {PROTOCOL_VERSION}"
            );
            return conn
                .send(&ServerMsg::Rejected {
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
    conn.send(&ServerMsg::Hello {
        version: PROTOCOL_VERSION,
        daemon_version: env!("CARGO_PKG_VERSION").to_string(),
    })
    .await?;
    loop {
        let msg = match tokio::time::timeout(IDLE_TIMEOUT, conn.recv::<ClientMsg>()).await {
            Ok(m) => m?,
            Err(_) => return Ok(()),
        };
        let request = match msg {
            ClientMsg::Request { request } => request,
            ClientMsg::Hello { .. } => return Err(CodecError::Malformed("second hello".into())),
        };
        if request == Request::Subscribe {
            let rx = events.subscribe();
            conn.send(&ServerMsg::Response {
                response: Response::Subscribed,
            })
            .await?;
            return stream_events(conn, rx).await;
        }
        let (tx, rx) = oneshot::channel();
        if ctl.send(Control::Request(request, tx)).await.is_err() {
            return Ok(());
        }
        let response = rx.await.unwrap_or(Response::Error {
            message: "knockd is shutting down".into(),
        });
        conn.send(&ServerMsg::Response { response }).await?;
    }
}

/// Forward events; a subscriber that falls behind skips ahead and is told how much it missed.
async fn stream_events(
    mut conn: Connection<UnixStream>,
    mut rx: broadcast::Receiver<Event>,
) -> Result<(), CodecError> {
    loop {
        let event = match rx.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(missed)) => Event {
                at_unix_ms: crate::state::unix_ms(std::time::SystemTime::now()),
                kind: EventKind::Lagged { missed },
            },
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        };
        conn.send(&ServerMsg::Event { event }).await?;
    }
}
