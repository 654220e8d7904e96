//! Reference async client: connect + handshake, request/response, subscribe to events.

use crate::codec::{CodecError, Connection};
use crate::protocol::*;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;

/// A byte stream to knockd: its control socket, or a pipe that leads to it (an ssh child's
/// stdin and stdout running `knockctl dial-stdio` on the remote host).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A boxed [`Stream`], what [`Client`] talks over.
pub type BoxStream = Box<dyn Stream>;

/// Connects to the control socket at `path`; the errors say whether knockd is not running,
/// the socket is stale, or the caller may not use it.
pub async fn connect_socket(path: &Path) -> Result<UnixStream, ClientError> {
    UnixStream::connect(path).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ClientError::NotRunning(path.to_path_buf()),
        std::io::ErrorKind::ConnectionRefused => ClientError::Refused(path.to_path_buf()),
        std::io::ErrorKind::PermissionDenied => ClientError::PermissionDenied(path.to_path_buf()),
        _ => ClientError::Connect {
            path: path.to_path_buf(),
            source: e,
        },
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("knockd is not running: no socket at {0} (start it, or point --socket at its socket)")]
    NotRunning(PathBuf),
    #[error("knockd is not running: nothing listens on {0} (stale socket)")]
    Refused(PathBuf),
    #[error("permission denied on {0}: run as root or join group knockd")]
    PermissionDenied(PathBuf),
    #[error("cannot connect to {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("knockd refused the connection: {0}")]
    Rejected(String),
    #[error("protocol mismatch: knockd {daemon_version} speaks protocol {daemon}, this client speaks {client}; {hint}")]
    VersionMismatch {
        daemon: u32,
        client: u32,
        daemon_version: String,
        hint: &'static str,
    },
    #[error("connection to knockd failed: {0}")]
    Codec(#[from] CodecError),
    #[error("unexpected reply from knockd: {0}")]
    Unexpected(String),
}

impl ClientError {
    /// True when the daemon is simply not running (distinct exit code in knockctl).
    pub fn is_not_running(&self) -> bool {
        matches!(self, ClientError::NotRunning(_) | ClientError::Refused(_))
    }
}

/// Hint for a version mismatch: which side is older.
pub fn mismatch_hint(daemon: u32, client: u32) -> &'static str {
    if daemon < client {
        "knockd is older than knockctl: restart knockd after upgrading it"
    } else {
        "knockctl is older than knockd: upgrade knockctl (same package as knockd)"
    }
}

pub struct Client {
    conn: Connection<BoxStream>,
    pub daemon_version: String,
}

impl Client {
    /// Connects to the control socket at `path` and says hello.
    pub async fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = connect_socket(path).await?;
        Client::handshake(Box::new(stream)).await
    }

    /// Says hello over `stream`, which leads to knockd one way or another: the same
    /// handshake, frame limits and checks as over the socket.
    pub async fn handshake(stream: BoxStream) -> Result<Client, ClientError> {
        let mut conn = Connection::new(stream);
        conn.send(&ClientMsg::Hello {
            version: PROTOCOL_VERSION,
            client: format!("knock-ipc {}", env!("CARGO_PKG_VERSION")),
        })
        .await?;
        match conn.recv::<ServerMsg>().await? {
            ServerMsg::Hello {
                version,
                daemon_version,
            } if version == PROTOCOL_VERSION => Ok(Client {
                conn,
                daemon_version,
            }),
            ServerMsg::Hello {
                version,
                daemon_version,
            } => Err(ClientError::VersionMismatch {
                daemon: version,
                client: PROTOCOL_VERSION,
                daemon_version,
                hint: mismatch_hint(version, PROTOCOL_VERSION),
            }),
            ServerMsg::Rejected { reason } => Err(ClientError::Rejected(reason)),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    pub async fn request(&mut self, request: Request) -> Result<Response, ClientError> {
        self.conn.send(&ClientMsg::Request { request }).await?;
        match self.conn.recv::<ServerMsg>().await? {
            ServerMsg::Response { response } => Ok(response),
            ServerMsg::Rejected { reason } => Err(ClientError::Rejected(reason)),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Turn this connection into a live event stream.
    pub async fn subscribe(mut self) -> Result<Subscription, ClientError> {
        match self.request(Request::Subscribe).await? {
            Response::Subscribed => Ok(Subscription { conn: self.conn }),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }
}

pub struct Subscription {
    conn: Connection<BoxStream>,
}

impl Subscription {
    /// Next event; `Err(Codec(Closed))` when the daemon goes away.
    pub async fn next(&mut self) -> Result<Event, ClientError> {
        match self.conn.recv::<ServerMsg>().await? {
            ServerMsg::Event { event } => Ok(event),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }
}
