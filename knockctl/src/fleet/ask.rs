//! Talking to one knockd through a [`Connector`], and to many at once: every host is asked
//! at the same time and gets the same time limit, so a host that is down, slow or refusing
//! never delays the others' answers past it.

use std::time::Duration;

use knock_ipc::codec::CodecError;
use knock_ipc::{Client, ClientError, Event, Request, Response, Subscription};

use super::connect::{Connector, Stderr};

/// Why one host did not answer.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// knockd's or the connection's own error (refused, version mismatch, not running...).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// ssh (or the remote `knockctl dial-stdio`) failed; its own words.
    #[error("{message}")]
    Ssh {
        message: String,
        /// ssh's exit code: the remote command's, 255 for ssh's own errors.
        exit: Option<i32>,
    },
    #[error("no answer within {}s", .0.as_secs_f32())]
    Timeout(Duration),
}

impl HostError {
    /// knockd is not running there (no socket, or nothing listens on it).
    pub fn is_not_running(&self) -> bool {
        match self {
            HostError::Client(e) => e.is_not_running(),
            // `knockctl dial-stdio` exits 3 like every knockctl command when knockd is not
            // running.
            HostError::Ssh { exit, .. } => *exit == Some(3),
            HostError::Timeout(_) => false,
        }
    }
}

/// A connection to one knockd, past the handshake.
pub struct Session {
    pub client: Client,
    stderr: Option<Stderr>,
}

/// When the stream failed and ssh said something, ssh's words explain it best (host key,
/// authentication, unreachable, remote knockctl missing or refused).
async fn explain(error: ClientError, stderr: Option<&Stderr>) -> HostError {
    let stream_failed = matches!(
        error,
        ClientError::Codec(CodecError::Closed | CodecError::Io(_))
    );
    match stderr {
        Some(stderr) if stream_failed => match stderr.text().await {
            Some(message) => HostError::Ssh {
                message,
                exit: stderr.exit_code().await,
            },
            None => HostError::Client(error),
        },
        _ => HostError::Client(error),
    }
}

impl Session {
    /// Connects and says hello.
    pub async fn open(connector: &dyn Connector) -> Result<Session, HostError> {
        let link = connector.connect().await?;
        match Client::handshake(link.stream).await {
            Ok(client) => Ok(Session {
                client,
                stderr: link.stderr,
            }),
            Err(e) => Err(explain(e, link.stderr.as_ref()).await),
        }
    }

    pub async fn request(&mut self, request: Request) -> Result<Response, HostError> {
        match self.client.request(request).await {
            Ok(response) => Ok(response),
            Err(e) => Err(explain(e, self.stderr.as_ref()).await),
        }
    }

    /// Turns this connection into the host's live event stream.
    pub async fn subscribe(self) -> Result<Events, HostError> {
        match self.client.subscribe().await {
            Ok(sub) => Ok(Events {
                sub,
                stderr: self.stderr,
            }),
            Err(e) => Err(explain(e, self.stderr.as_ref()).await),
        }
    }
}

/// One host's live events.
pub struct Events {
    sub: Subscription,
    stderr: Option<Stderr>,
}

impl Events {
    /// Next event; `Client(Codec(Closed))` when knockd (or ssh, quietly) closed it.
    pub async fn next(&mut self) -> Result<Event, HostError> {
        match self.sub.next().await {
            Ok(event) => Ok(event),
            Err(e) => Err(explain(e, self.stderr.as_ref()).await),
        }
    }
}

/// Connects, asks `request`, and returns the answer, all within `timeout`.
pub async fn ask(
    connector: &dyn Connector,
    request: Request,
    timeout: Duration,
) -> Result<Response, HostError> {
    let exchange = async {
        let mut session = Session::open(connector).await?;
        session.request(request).await
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(HostError::Timeout(timeout)))
}

/// `revoke ADDRESS` on one of many hosts: asks for the host's grants first and revokes only
/// when it holds one for `addr` (of `door`, if given); a host that holds none answers an
/// empty `Revoked`. When the host's list is cut short, the revoke is sent regardless.
pub async fn revoke_where_held(
    connector: &dyn Connector,
    addr: std::net::IpAddr,
    door: Option<String>,
    timeout: Duration,
) -> Result<Response, HostError> {
    let exchange = async {
        let mut session = Session::open(connector).await?;
        let held = match session.request(Request::Grants).await? {
            Response::Grants { grants, total } => {
                total > grants.len() as u64
                    || grants.iter().any(|g| {
                        g.addr == addr && !g.closing && door.as_deref().is_none_or(|d| d == g.door)
                    })
            }
            other => return Ok(other),
        };
        if !held {
            return Ok(Response::Revoked { grants: Vec::new() });
        }
        session.request(Request::Revoke { addr, door }).await
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(HostError::Timeout(timeout)))
}

/// Opens a session and subscribes, within `timeout`.
pub async fn subscribe(connector: &dyn Connector, timeout: Duration) -> Result<Events, HostError> {
    let opening = async { Session::open(connector).await?.subscribe().await };
    tokio::time::timeout(timeout, opening)
        .await
        .unwrap_or(Err(HostError::Timeout(timeout)))
}

/// Asks every connector its request at once; the answers in the same order.
pub async fn ask_all(
    asks: Vec<(&dyn Connector, Request)>,
    timeout: Duration,
) -> Vec<Result<Response, HostError>> {
    futures::future::join_all(
        asks.into_iter()
            .map(|(connector, request)| ask(connector, request, timeout)),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::connect::Link;
    use futures::future::BoxFuture;
    use knock_ipc::codec::Connection;
    use knock_ipc::{ClientMsg, ServerMsg, PROTOCOL_VERSION};

    /// How a fake knockd behaves.
    #[derive(Clone, Copy)]
    enum Fake {
        /// Answers every request with an empty grant list.
        Answers,
        /// Says hello, then never answers.
        Hangs,
        /// Speaks another protocol version.
        Newer,
        /// Nothing there.
        Missing,
    }

    impl Connector for Fake {
        fn connect(&self) -> BoxFuture<'_, Result<Link, ClientError>> {
            let fake = *self;
            Box::pin(async move {
                if let Fake::Missing = fake {
                    return Err(ClientError::NotRunning("/nope.sock".into()));
                }
                let (ours, theirs) = tokio::io::duplex(64 << 10);
                tokio::spawn(async move {
                    let mut conn = Connection::new(theirs);
                    let _ = conn.recv::<ClientMsg>().await;
                    let version = match fake {
                        Fake::Newer => PROTOCOL_VERSION + 1,
                        _ => PROTOCOL_VERSION,
                    };
                    let hello = ServerMsg::Hello {
                        version,
                        daemon_version: "9.9".into(),
                    };
                    let _ = conn.send(&hello).await;
                    while let Ok(ClientMsg::Request { .. }) = conn.recv::<ClientMsg>().await {
                        if let Fake::Hangs = fake {
                            std::future::pending::<()>().await;
                        }
                        let response = Response::Grants {
                            grants: vec![],
                            total: 0,
                        };
                        let _ = conn.send(&ServerMsg::Response { response }).await;
                    }
                });
                Ok(Link {
                    stream: Box::new(ours),
                    stderr: None,
                })
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn hosts_fail_alone_and_none_waits_past_the_timeout() {
        let fakes = [Fake::Answers, Fake::Hangs, Fake::Newer, Fake::Missing];
        let asks = fakes
            .iter()
            .map(|f| (f as &dyn Connector, Request::Grants))
            .collect();
        let started = tokio::time::Instant::now();
        let answers = ask_all(asks, Duration::from_secs(10)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert!(matches!(answers[0], Ok(Response::Grants { .. })));
        assert!(matches!(answers[1], Err(HostError::Timeout(_))));
        let newer = answers[2].as_ref().expect_err("mismatch").to_string();
        assert!(
            newer.contains(&format!("speaks protocol {}", PROTOCOL_VERSION + 1))
                && newer.contains(&format!("this client speaks {PROTOCOL_VERSION}")),
            "{newer}"
        );
        let missing = answers[3].as_ref().expect_err("missing");
        assert!(missing.is_not_running(), "{missing}");
    }
}
