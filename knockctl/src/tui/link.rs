//! One knockd's link, in a task of its own: it connects (a request connection and an event
//! subscription, through the host's [`Connector`]: the local socket or ssh), asks for the
//! lists the events make stale, carries out the operator's commands, and reconnects with
//! backoff when the link fails. It reports everything as [`Feed`] on a channel the
//! dashboard's loop reads; the loop never waits on a host, so one slow or dead host cannot
//! freeze the screen.

use std::time::Duration;

use knock_ipc::{Event, Request, Response};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use super::state::{refresh_for, Refresh};
use crate::fleet::ask::{Events, HostError, Session};
use crate::fleet::Connector;

/// How long knockd gets to answer one request before the link counts as lost.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often counters and the lists whose rows end without an event are asked for again.
const TICK: Duration = Duration::from_secs(1);
/// Events arriving within this window share one refresh.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// Commands waiting for a host; more are refused ("busy") rather than queued.
const ORDERS: usize = 8;

/// What a host's task tells the dashboard.
#[derive(Debug)]
pub enum Feed {
    /// Both connections are up, past the handshake.
    Connected {
        daemon_version: String,
    },
    /// The link failed (or a try failed); the next try is in `retry_in`.
    Lost {
        reason: String,
        retry_in: Duration,
    },
    Event(Event),
    /// knockd's answer to a request (a refresh or a command).
    Answer {
        request: Request,
        response: Response,
    },
    /// A command that could not be carried out.
    Failed {
        request: Request,
        reason: String,
    },
}

/// Time between tries: 1 s, 2 s, 4 s, then 5 s, until a try succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub const MIN: Duration = Duration::from_secs(1);
    pub const MAX: Duration = Duration::from_secs(5);

    /// A try failed: how long to wait before the next.
    pub fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        wait
    }

    /// A try succeeded: the next failure waits the least again.
    pub fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { next: Self::MIN }
    }
}

/// A host's two connections: requests, and its event subscription.
pub struct Linked {
    session: Session,
    events: Events,
}

impl Linked {
    pub fn daemon_version(&self) -> &str {
        &self.session.client.daemon_version
    }
}

/// Opens both connections within `timeout`.
pub async fn open(connector: &dyn Connector, timeout: Duration) -> Result<Linked, HostError> {
    let both = async {
        let session = Session::open(connector).await?;
        let events = Session::open(connector).await?.subscribe().await?;
        Ok(Linked { session, events })
    };
    tokio::time::timeout(timeout, both)
        .await
        .unwrap_or(Err(HostError::Timeout(timeout)))
}

/// Starts host `host`'s task (with its first link, if the caller opened it already); the
/// returned sender takes its commands.
pub fn spawn(
    host: usize,
    connector: Box<dyn Connector>,
    first: Option<Linked>,
    timeout: Duration,
    feed: mpsc::Sender<(usize, Feed)>,
) -> mpsc::Sender<Request> {
    let (orders, rx) = mpsc::channel(ORDERS);
    let task = HostTask {
        host,
        connector,
        timeout,
        feed,
        orders: rx,
    };
    tokio::spawn(task.run(first));
    orders
}

/// The dashboard is gone: the task ends.
struct Gone;

struct HostTask {
    host: usize,
    connector: Box<dyn Connector>,
    timeout: Duration,
    feed: mpsc::Sender<(usize, Feed)>,
    orders: mpsc::Receiver<Request>,
}

impl HostTask {
    async fn send(&self, feed: Feed) -> Result<(), Gone> {
        self.feed.send((self.host, feed)).await.map_err(|_| Gone)
    }

    async fn run(mut self, mut first: Option<Linked>) {
        let mut backoff = Backoff::default();
        loop {
            let linked = match first.take() {
                Some(linked) => Ok(linked),
                None => open(self.connector.as_ref(), self.timeout).await,
            };
            let reason = match linked {
                Ok(linked) => {
                    backoff.reset();
                    let daemon_version = linked.daemon_version().to_string();
                    if self.send(Feed::Connected { daemon_version }).await.is_err() {
                        return;
                    }
                    match self.serve(linked).await {
                        Ok(reason) => reason,
                        Err(Gone) => return,
                    }
                }
                Err(e) => e.to_string(),
            };
            let retry_in = backoff.failed();
            if self.send(Feed::Lost { reason, retry_in }).await.is_err() {
                return;
            }
            if self.wait(Instant::now() + retry_in).await.is_err() {
                return;
            }
        }
    }

    /// Until `until`: commands fail at once (nothing to send them on).
    async fn wait(&mut self, until: Instant) -> Result<(), Gone> {
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => return Ok(()),
                order = self.orders.recv() => {
                    let request = order.ok_or(Gone)?;
                    let reason = "not connected to knockd".to_string();
                    self.send(Feed::Failed { request, reason }).await?;
                }
            }
        }
    }

    /// Serves a live link until it fails; returns why.
    async fn serve(&mut self, linked: Linked) -> Result<String, Gone> {
        let Linked {
            mut session,
            mut events,
        } = linked;
        let mut wanted = Refresh::ALL;
        let mut refresh_at = Some(Instant::now());
        let mut tick = tokio::time::interval_at(Instant::now() + TICK, TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Ok(event) => {
                        wanted = wanted.union(refresh_for(&event.kind));
                        refresh_at.get_or_insert(Instant::now() + DEBOUNCE);
                        self.send(Feed::Event(event)).await?;
                        continue;
                    }
                    Err(e) => return Ok(e.to_string()),
                },
                () = sleep_until(refresh_at) => {}
                _ = tick.tick() => wanted = wanted.union(Refresh::TICK),
                order = self.orders.recv() => {
                    let request = order.ok_or(Gone)?;
                    match ask(&mut session, request.clone()).await {
                        Ok(response) => {
                            wanted = wanted.union(after(&request));
                            self.send(Feed::Answer { request, response }).await?;
                        }
                        Err(reason) => {
                            let failed = Feed::Failed { request, reason: reason.clone() };
                            self.send(failed).await?;
                            return Ok(reason);
                        }
                    }
                }
            }
            refresh_at = None;
            for request in std::mem::take(&mut wanted).requests() {
                match ask(&mut session, request.clone()).await {
                    Ok(response) => self.send(Feed::Answer { request, response }).await?,
                    Err(reason) => return Ok(reason),
                }
            }
        }
    }
}

/// The lists a command's answer makes stale.
fn after(request: &Request) -> Refresh {
    match request {
        Request::Reload => Refresh::ALL,
        _ => Refresh {
            status: true,
            grants: true,
            ..Refresh::default()
        },
    }
}

async fn ask(session: &mut Session, request: Request) -> Result<Response, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, session.request(request)).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => Err(e.to_string()),
        // The answer may still come: this connection is out of step, drop it.
        Err(_) => Err(format!(
            "knockd did not answer within {}s",
            REQUEST_TIMEOUT.as_secs()
        )),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
