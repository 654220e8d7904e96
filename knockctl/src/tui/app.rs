//! The edge: the terminal, one task per host ([`super::link`]: connections, refreshes,
//! commands, reconnects), the clock, and the one `select!` loop that feeds keys, what the
//! hosts report and ticks to the pure [`State`]. The loop never waits on a host: hosts
//! report on a channel, commands go to each host's own queue.

use std::io::{self, IsTerminal};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use crossterm::event::{Event as TermEvent, EventStream};
use futures::StreamExt;
use knock_ipc::Request;
use ratatui::DefaultTerminal;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use super::input::Command;
use super::link::{self, Feed};
use super::render::render;
use super::state::{Link, State};
use crate::fleet::{connector_for, HostError};
use crate::fleet::{Connector, Host};

const TICK: Duration = Duration::from_secs(1);
/// Shortest time between two frames.
const FRAME: Duration = Duration::from_millis(33);
/// What the hosts may have reported and the loop not yet read; a host with more waits.
const FEED_CAP: usize = 4096;
/// Reports applied before the loop looks at keys and frames again.
const BATCH: usize = 512;

/// Wall clock in Unix milliseconds: the only place the TUI reads it.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// See [`super::run`].
pub async fn run(hosts: &[Host], ssh: &std::path::Path, timeout: Duration) -> Result<()> {
    let connectors: Vec<Box<dyn Connector>> = hosts.iter().map(|h| connector_for(h, ssh)).collect();
    // One host: a connection error is a plain error, reported before the terminal changes
    // (a `ClientError` stays downcastable for the caller's exit code). Many hosts: each
    // host's state is on screen, a host that is down among them.
    let mut first = None;
    if let [connector] = connectors.as_slice() {
        match link::open(connector.as_ref(), timeout).await {
            Ok(linked) => first = Some(linked),
            Err(HostError::Client(e)) => return Err(anyhow::Error::new(e)),
            Err(e) => return Err(anyhow::Error::new(e)),
        }
    }
    if !io::stdout().is_terminal() {
        anyhow::bail!(
            "knockctl tui needs a terminal on stdout (for a plain event stream use knockctl tail)"
        );
    }
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let tz = *chrono::Local::now().offset();
    let state = if hosts.len() > 1 {
        State::fleet(hosts.iter().map(|h| h.name.clone()).collect(), color, tz)
    } else {
        State::new(color, tz)
    };
    let (tx, feed) = mpsc::channel(FEED_CAP);
    let orders = connectors
        .into_iter()
        .enumerate()
        .map(|(i, c)| link::spawn(i, c, first.take(), timeout, tx.clone()))
        .collect();
    drop(tx);
    let mut app = App {
        state,
        orders,
        feed,
    };
    let mut terminal = TerminalGuard::enter()?;
    let result = app.run_loop(&mut terminal).await;
    drop(terminal);
    result
}

struct App {
    state: State,
    /// Each host's command queue, by index.
    orders: Vec<mpsc::Sender<Request>>,
    feed: mpsc::Receiver<(usize, Feed)>,
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl App {
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
        let mut hosts_live = true;
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
                            self.command(command);
                        }
                    }
                    // Resize and the rest: just redraw.
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e).context("cannot read the terminal"),
                    None => return Ok(()),
                },
                report = self.feed.recv(), if hosts_live => match report {
                    Some((host, feed)) => {
                        self.apply(host, feed);
                        // What else is waiting, up to a batch: one frame for many reports.
                        for _ in 0..BATCH {
                            match self.feed.try_recv() {
                                Ok((host, feed)) => self.apply(host, feed),
                                Err(_) => break,
                            }
                        }
                    }
                    None => hosts_live = false,
                },
                _ = tick.tick() => self.state.on_tick(now_ms()),
                _ = terminate.recv() => return Ok(()),
                _ = hangup.recv() => return Ok(()),
            }
            dirty = true;
        }
    }

    fn apply(&mut self, host: usize, feed: Feed) {
        let now = now_ms();
        match feed {
            Feed::Connected { daemon_version } => {
                self.state.host_connected(host, daemon_version, now)
            }
            Feed::Lost { reason, retry_in } => {
                self.state
                    .host_disconnected(host, reason, now + ms(retry_in), now)
            }
            Feed::Event(event) => self.state.host_event(host, event, now),
            Feed::Answer { request, response } => {
                self.state.host_response(host, &request, response, now)
            }
            Feed::Failed { request, reason } => {
                self.state.host_command_failed(host, &request, &reason, now)
            }
        }
    }

    /// Hands a command to its host's task (or to every host's, for a reload of all).
    fn command(&mut self, command: Command) {
        let Some(request) = command.request() else {
            return;
        };
        let hosts: Vec<usize> = match command {
            Command::Revoke { host, .. } | Command::Reload { host: Some(host) } => vec![host],
            Command::Reload { host: None } => (0..self.orders.len()).collect(),
            Command::Quit => return,
        };
        for host in hosts {
            let connected = self
                .state
                .hosts
                .get(host)
                .is_some_and(|h| h.link == Link::Connected);
            let sent = match self.orders.get(host) {
                _ if !connected => Err("not connected to knockd"),
                Some(orders) => orders
                    .try_send(request.clone())
                    .map_err(|_| "busy: earlier commands are still waiting for an answer"),
                None => Err("no such host"),
            };
            if let Err(reason) = sent {
                self.state
                    .host_command_failed(host, &request, reason, now_ms());
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
    use knock_ipc::{ClientError, ClientMsg, Response, ServerMsg, PROTOCOL_VERSION};
    use tokio::net::UnixListener;

    fn local(socket: &std::path::Path) -> Vec<Host> {
        vec![Host {
            name: "local".into(),
            target: crate::fleet::Target::Unix(socket.to_path_buf()),
            knockctl: None,
        }]
    }

    async fn run_local(socket: &std::path::Path) -> Result<()> {
        run(&local(socket), "ssh".as_ref(), Duration::from_secs(5)).await
    }

    #[tokio::test]
    async fn a_missing_socket_is_a_plain_client_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("knockd.sock");
        let err = run_local(&socket).await.expect_err("no daemon");
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
        let err = run_local(&socket).await.expect_err("mismatch");
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
        let connector = crate::fleet::connect::UnixConnector(socket.clone());
        let daemon = link::open(&connector, Duration::from_secs(5))
            .await
            .expect("connect");
        assert_eq!(daemon.daemon_version(), "0.1.0");
        assert_eq!(asked.recv().await, Some(Request::Subscribe));
        drop(daemon);
    }
}
