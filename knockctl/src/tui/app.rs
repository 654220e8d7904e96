//! The edge: the terminal, the two connections to knockd, the clock, and the one
//! `select!` loop that feeds keys, events and ticks to the pure [`State`].

use std::io::{self, IsTerminal};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use crossterm::event::{Event as TermEvent, EventStream};
use futures::StreamExt;
use knock_ipc::{Client, ClientError, Event, Request, Response, Subscription};
use ratatui::DefaultTerminal;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::{Instant, MissedTickBehavior};

use super::input::Command;
use super::render::render;
use super::state::{refresh_for, Refresh, State};

/// How long knockd gets for the handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long knockd gets to answer one request before the link counts as lost.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
const TICK: Duration = Duration::from_secs(1);
/// Shortest time between two frames.
const FRAME: Duration = Duration::from_millis(33);
/// Events arriving within this window share one refresh.
const DEBOUNCE: Duration = Duration::from_millis(50);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Wall clock in Unix milliseconds: the only place the TUI reads it.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The two connections: one for requests, one subscribed to events.
struct Daemon {
    client: Client,
    events: Subscription,
}

#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("knockd did not answer within {}s on {}", CONNECT_TIMEOUT.as_secs(), .0.display())]
    Timeout(std::path::PathBuf),
}

async fn connect(socket: &Path) -> Result<Daemon, LinkError> {
    let both = async {
        let client = Client::connect(socket).await?;
        let events = Client::connect(socket).await?.subscribe().await?;
        Ok::<_, ClientError>(Daemon { client, events })
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, both).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(LinkError::Timeout(socket.to_path_buf())),
    }
}

/// See [`super::run`].
pub async fn run(socket: &Path) -> Result<()> {
    // Connection errors are plain errors, reported before the terminal changes. A
    // `ClientError` stays downcastable for the caller's exit code.
    let daemon = match connect(socket).await {
        Ok(daemon) => daemon,
        Err(LinkError::Client(e)) => return Err(anyhow::Error::new(e)),
        Err(e) => return Err(anyhow::Error::new(e)),
    };
    if !io::stdout().is_terminal() {
        anyhow::bail!(
            "knockctl tui needs a terminal on stdout (for a plain event stream use knockctl tail)"
        );
    }
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let tz = *chrono::Local::now().offset();
    let mut app = App {
        socket,
        state: State::new(color, tz),
        daemon: None,
        backoff: BACKOFF_MIN,
        retry_at: None,
        refresh: Refresh::ALL,
        refresh_at: None,
    };
    app.connected(daemon).await;
    let mut terminal = TerminalGuard::enter()?;
    let result = app.run_loop(&mut terminal).await;
    drop(terminal);
    result
}

struct App<'a> {
    socket: &'a Path,
    state: State,
    daemon: Option<Daemon>,
    backoff: Duration,
    /// When to try to reconnect (while disconnected).
    retry_at: Option<Instant>,
    /// Lists to ask for at `refresh_at`.
    refresh: Refresh,
    refresh_at: Option<Instant>,
}

async fn next_event(daemon: &mut Option<Daemon>) -> Result<Event, ClientError> {
    match daemon {
        Some(d) => d.events.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl App<'_> {
    async fn run_loop(&mut self, terminal: &mut TerminalGuard) -> Result<()> {
        let mut keys = EventStream::new();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        let mut hangup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
        // A frame is drawn after something changed, at most one per FRAME: a flood of
        // events costs no more than ~30 draws a second.
        let mut dirty = true;
        let mut last_draw: Option<Instant> = None;
        loop {
            let draw_at = dirty.then(|| last_draw.map_or_else(Instant::now, |t| t + FRAME));
            tokio::select! {
                () = sleep_until(draw_at) => {
                    terminal
                        .terminal
                        .draw(|frame| render(&self.state, frame, now_ms()))
                        .context("cannot draw on the terminal")?;
                    last_draw = Some(Instant::now());
                    dirty = false;
                    continue;
                }
                key = keys.next() => match key {
                    Some(Ok(TermEvent::Key(key))) => {
                        if let Some(command) = self.state.on_key(key) {
                            if command == Command::Quit {
                                return Ok(());
                            }
                            self.command(command).await;
                        }
                    }
                    // Resize and the rest: just redraw.
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e).context("cannot read the terminal"),
                    None => return Ok(()),
                },
                event = next_event(&mut self.daemon) => match event {
                    Ok(event) => {
                        self.refresh = self.refresh.union(refresh_for(&event.kind));
                        self.refresh_at.get_or_insert(Instant::now() + DEBOUNCE);
                        self.state.on_event(event, now_ms());
                    }
                    Err(e) => self.lost(e.to_string()),
                },
                () = sleep_until(self.refresh_at) => self.refresh().await,
                _ = tick.tick() => {
                    self.state.on_tick(now_ms());
                    self.refresh = self.refresh.union(Refresh::TICK);
                    self.refresh().await;
                }
                () = sleep_until(self.retry_at) => self.reconnect().await,
                _ = terminate.recv() => return Ok(()),
                _ = hangup.recv() => return Ok(()),
            }
            dirty = true;
        }
    }

    async fn connected(&mut self, daemon: Daemon) {
        self.state
            .on_connected(daemon.client.daemon_version.clone(), now_ms());
        self.daemon = Some(daemon);
        self.backoff = BACKOFF_MIN;
        self.retry_at = None;
        self.refresh = Refresh::ALL;
        self.refresh().await;
    }

    async fn reconnect(&mut self) {
        self.retry_at = None;
        match connect(self.socket).await {
            Ok(daemon) => self.connected(daemon).await,
            Err(e) => self.lost(e.to_string()),
        }
    }

    /// The link is gone: drop both connections, retry later (1 s, 2 s, 4 s, 5 s, 5 s...).
    fn lost(&mut self, reason: String) {
        self.daemon = None;
        self.refresh = Refresh::default();
        self.refresh_at = None;
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        self.retry_at = Some(Instant::now() + delay);
        let now = now_ms();
        self.state.on_disconnected(reason, now + ms(delay), now);
    }

    /// Asks for the lists in `self.refresh`.
    async fn refresh(&mut self) {
        let wanted = std::mem::take(&mut self.refresh);
        self.refresh_at = None;
        if self.daemon.is_none() {
            return;
        }
        for request in wanted.requests() {
            match self.ask(request.clone()).await {
                Ok(response) => self.state.on_response(&request, response, now_ms()),
                Err(reason) => return self.lost(reason),
            }
        }
    }

    async fn ask(&mut self, request: Request) -> Result<Response, String> {
        let Some(daemon) = self.daemon.as_mut() else {
            return Err("not connected to knockd".to_string());
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, daemon.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(e.to_string()),
            // The answer may still come: this connection is out of step, drop it.
            Err(_) => Err(format!(
                "knockd did not answer within {}s",
                REQUEST_TIMEOUT.as_secs()
            )),
        }
    }

    async fn command(&mut self, command: Command) {
        let Some(request) = command.request() else {
            return;
        };
        if self.daemon.is_none() {
            self.state
                .on_command_failed(&request, "not connected to knockd", now_ms());
            return;
        }
        match self.ask(request.clone()).await {
            Ok(response) => {
                self.state.on_response(&request, response, now_ms());
                let after = match request {
                    Request::Reload => Refresh::ALL,
                    _ => Refresh {
                        status: true,
                        grants: true,
                        ..Refresh::default()
                    },
                };
                self.refresh = self.refresh.union(after);
                self.refresh().await;
            }
            Err(reason) => {
                self.state.on_command_failed(&request, &reason, now_ms());
                self.lost(reason);
            }
        }
    }
}

/// Raw mode + alternate screen for as long as it lives, through [`ratatui::try_init`],
/// whose panic hook restores the terminal before the panic message is printed. Dropping the
/// guard (quit, error, signal) restores it with [`ratatui::restore`]; while unwinding from a
/// panic the hook has already done so, and leaving the alternate screen twice would move the
/// cursor back over the panic message.
struct TerminalGuard {
    terminal: DefaultTerminal,
}

impl TerminalGuard {
    fn enter() -> Result<TerminalGuard> {
        match ratatui::try_init() {
            Ok(terminal) => Ok(TerminalGuard { terminal }),
            Err(e) => {
                ratatui::restore();
                Err(e).context("cannot set up the terminal")
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            ratatui::restore();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use knock_ipc::codec::Connection;
    use knock_ipc::{ClientMsg, ServerMsg, PROTOCOL_VERSION};
    use tokio::net::UnixListener;

    #[tokio::test]
    async fn a_missing_socket_is_a_plain_client_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("knockd.sock");
        let err = run(&socket).await.expect_err("no daemon");
        let client = err.downcast_ref::<ClientError>().expect("a ClientError");
        assert!(client.is_not_running());
        assert!(err.to_string().contains("knockd is not running"), "{err}");
    }

    #[tokio::test]
    async fn a_version_mismatch_is_reported_before_the_terminal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("knockd.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let mut conn = Connection::new(stream);
                let _ = conn.recv::<ClientMsg>().await;
                let _ = conn
                    .send(&ServerMsg::Hello {
                        version: PROTOCOL_VERSION + 1,
                        daemon_version: "9.9.9".into(),
                    })
                    .await;
            }
        });
        let err = run(&socket).await.expect_err("mismatch");
        assert!(
            matches!(
                err.downcast_ref::<ClientError>(),
                Some(ClientError::VersionMismatch { .. })
            ),
            "{err}"
        );
        assert!(err.to_string().contains("upgrade knockctl"), "{err}");
    }

    #[tokio::test]
    async fn connect_opens_a_request_and_a_subscribed_connection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("knockd.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        let (tx, mut asked) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut conn = Connection::new(stream);
                    let _ = conn.recv::<ClientMsg>().await;
                    let hello = ServerMsg::Hello {
                        version: PROTOCOL_VERSION,
                        daemon_version: "0.1.0".into(),
                    };
                    conn.send(&hello).await.expect("hello");
                    if let Ok(ClientMsg::Request { request }) = conn.recv::<ClientMsg>().await {
                        let _ = tx.send(request);
                        let reply = ServerMsg::Response {
                            response: Response::Subscribed,
                        };
                        conn.send(&reply).await.expect("subscribed");
                    }
                });
            }
        });
        let daemon = connect(&socket).await.expect("connect");
        assert_eq!(daemon.client.daemon_version, "0.1.0");
        assert_eq!(asked.recv().await, Some(Request::Subscribe));
        drop(daemon);
    }
}
