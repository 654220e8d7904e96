//! Host tasks against fake knockd, on tokio's paused clock: the time between tries, the
//! reconnect, a hanging host beside a live one.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;
use knock_ipc::codec::Connection;
use knock_ipc::{ClientError, ClientMsg, EventKind, ServerMsg, PROTOCOL_VERSION};
use tokio::sync::broadcast;

use super::*;
use crate::fleet::connect::Link;
use crate::tui::fixtures::{doors, ev, ip, status};

/// A fake knockd: down while `up` is false (nothing listens), `kill` drops every open
/// connection, `events` go to every subscriber; with `hang` it never answers a request.
#[derive(Clone)]
struct Fake {
    up: Arc<AtomicBool>,
    hang: bool,
    connects: Arc<AtomicUsize>,
    kill: broadcast::Sender<()>,
    events: broadcast::Sender<Event>,
}

impl Fake {
    fn new(up: bool) -> Fake {
        Fake {
            up: Arc::new(AtomicBool::new(up)),
            hang: false,
            connects: Arc::new(AtomicUsize::new(0)),
            kill: broadcast::channel(4).0,
            events: broadcast::channel(64).0,
        }
    }

    fn answer(request: &Request) -> Response {
        match request {
            Request::Status => Response::Status { status: status() },
            Request::Doors => Response::Doors { doors: doors() },
            Request::Attempts => Response::Attempts {
                attempts: vec![],
                total: 0,
            },
            Request::Reload => Response::Reloaded { warnings: vec![] },
            _ => Response::Grants {
                grants: vec![],
                total: 0,
            },
        }
    }

    async fn serve(self, stream: tokio::io::DuplexStream) {
        let mut kill = self.kill.subscribe();
        let mut events = self.events.subscribe();
        let mut conn = Connection::new(stream);
        let _ = conn.recv::<ClientMsg>().await;
        let hello = ServerMsg::Hello {
            version: PROTOCOL_VERSION,
            daemon_version: "0.9.0".into(),
        };
        if conn.send(&hello).await.is_err() {
            return;
        }
        let mut subscribed = false;
        loop {
            tokio::select! {
                msg = conn.recv::<ClientMsg>() => {
                    let Ok(ClientMsg::Request { request }) = msg else { return };
                    if self.hang {
                        let _ = kill.recv().await;
                        return;
                    }
                    let response = if request == Request::Subscribe {
                        subscribed = true;
                        Response::Subscribed
                    } else {
                        Fake::answer(&request)
                    };
                    if conn.send(&ServerMsg::Response { response }).await.is_err() {
                        return;
                    }
                }
                event = events.recv(), if subscribed => {
                    let Ok(event) = event else { return };
                    if conn.send(&ServerMsg::Event { event }).await.is_err() {
                        return;
                    }
                }
                _ = kill.recv() => return,
            }
        }
    }
}

impl Connector for Fake {
    fn connect(&self) -> BoxFuture<'_, Result<Link, ClientError>> {
        let fake = self.clone();
        Box::pin(async move {
            fake.connects.fetch_add(1, Ordering::Relaxed);
            if !fake.up.load(Ordering::Relaxed) {
                return Err(ClientError::NotRunning("/run/knockd/knockd.sock".into()));
            }
            let (ours, theirs) = tokio::io::duplex(64 << 10);
            tokio::spawn(fake.serve(theirs));
            Ok(Link {
                stream: Box::new(ours),
                stderr: None,
            })
        })
    }
}

/// The next report of host `host`, skipping answers to refreshes.
async fn next_of(rx: &mut mpsc::Receiver<(usize, Feed)>, host: usize, skip_answers: bool) -> Feed {
    loop {
        let (h, feed) = rx.recv().await.expect("the task runs");
        if h != host || (skip_answers && matches!(feed, Feed::Answer { .. })) {
            continue;
        }
        return feed;
    }
}

#[test]
fn backoff_doubles_to_five_seconds_and_resets() {
    let mut b = Backoff::default();
    let waits: Vec<u64> = (0..6).map(|_| b.failed().as_secs()).collect();
    assert_eq!(waits, [1, 2, 4, 5, 5, 5]);
    b.reset();
    assert_eq!(b.failed(), Backoff::MIN);
}

#[tokio::test(start_paused = true)]
async fn a_host_that_is_down_is_retried_with_backoff_then_served_and_reconnected() {
    let fake = Fake::new(false);
    let (tx, mut rx) = mpsc::channel(64);
    let orders = spawn(0, Box::new(fake.clone()), None, Duration::from_secs(10), tx);

    // Down: each try fails at once; the waits between tries are 1, 2, 4, 5 s.
    let mut tried_at = Vec::new();
    for want in [1, 2, 4, 5] {
        match next_of(&mut rx, 0, false).await {
            Feed::Lost { reason, retry_in } => {
                assert!(reason.contains("knockd is not running"), "{reason}");
                assert_eq!(retry_in, Duration::from_secs(want));
            }
            other => panic!("{other:?}"),
        }
        tried_at.push(Instant::now());
    }
    let gaps: Vec<u64> = tried_at
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs())
        .collect();
    assert_eq!(gaps, [1, 2, 4], "the clock moved by the backoff, no more");
    assert_eq!(fake.connects.load(Ordering::Relaxed), 4);

    // A command while down fails at once, naming why.
    orders.send(Request::Reload).await.expect("queued");
    match next_of(&mut rx, 0, false).await {
        Feed::Failed { request, reason } => {
            assert_eq!(request, Request::Reload);
            assert_eq!(reason, "not connected to knockd");
        }
        other => panic!("{other:?}"),
    }

    // Up again: connected at the next try, then every list asked for.
    fake.up.store(true, Ordering::Relaxed);
    let before = Instant::now();
    match next_of(&mut rx, 0, false).await {
        Feed::Connected { daemon_version } => assert_eq!(daemon_version, "0.9.0"),
        other => panic!("{other:?}"),
    }
    assert!(Instant::now() - before <= Duration::from_secs(5));
    let mut asked = Vec::new();
    while asked.len() < 4 {
        if let Feed::Answer { request, .. } = next_of(&mut rx, 0, false).await {
            asked.push(request);
        }
    }
    assert_eq!(
        asked,
        [
            Request::Doors,
            Request::Status,
            Request::Attempts,
            Request::Grants
        ]
    );

    // Events flow; a reload is answered.
    fake.events
        .send(ev(
            0,
            EventKind::Open {
                addr: ip("10.0.0.9"),
                door: "openSSH".into(),
            },
        ))
        .expect("a subscriber");
    assert!(matches!(next_of(&mut rx, 0, true).await, Feed::Event(_)));
    orders.send(Request::Reload).await.expect("queued");
    loop {
        if let Feed::Answer { request, response } = next_of(&mut rx, 0, false).await {
            if request == Request::Reload {
                assert_eq!(response, Response::Reloaded { warnings: vec![] });
                break;
            }
        }
    }

    // knockd goes away: lost, retried after the shortest wait (the backoff starts over),
    // and connected again.
    let _ = fake.kill.send(());
    match next_of(&mut rx, 0, true).await {
        Feed::Lost { retry_in, .. } => assert_eq!(retry_in, Backoff::MIN),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        next_of(&mut rx, 0, true).await,
        Feed::Connected { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn a_hanging_host_never_holds_up_another() {
    let live = Fake::new(true);
    let mut hung = Fake::new(true);
    hung.hang = true;
    let (tx, mut rx) = mpsc::channel(64);
    let _a = spawn(
        0,
        Box::new(live.clone()),
        None,
        Duration::from_secs(10),
        tx.clone(),
    );
    let _b = spawn(1, Box::new(hung.clone()), None, Duration::from_secs(10), tx);
    let started = Instant::now();
    // The hung host never answers its subscription: its connect times out (10 s) while the
    // live host's reports keep coming.
    let mut live_answers = 0;
    let lost = loop {
        let (host, feed) = rx.recv().await.expect("tasks run");
        match (host, feed) {
            (0, Feed::Answer { .. }) => live_answers += 1,
            (1, Feed::Lost { reason, .. }) => break reason,
            (1, other) => panic!("{other:?}"),
            _ => {}
        }
    };
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    assert!(lost.contains("no answer within 10"), "{lost}");
    // Four lists at connect, then status, attempts and grants every second.
    assert!(live_answers >= 4 + 3 * 9, "{live_answers}");
}
