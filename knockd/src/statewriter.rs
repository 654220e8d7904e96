//! The state file writer: a task of its own, so the engine never waits for the disk. The
//! engine sends what changed (O(1) per grant changed); the writer keeps its own copy of the
//! ledger and writes it atomically ([`state::save`], on a blocking thread) at most every
//! [`COALESCE`], and at once on [`StateWriter::flush`] (clean shutdown).

use crate::grants::GrantId;
use crate::state::{self, SavedGrant, SavedOneTime, SavedReplay};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Writes are at least this far apart; changes in between go into the next write.
pub const COALESCE: Duration = Duration::from_millis(100);
/// ... unless an open waits for the write (write-ahead): then at least this far apart.
pub const URGENT_GAP: Duration = Duration::from_millis(3);

/// One change to the ledger.
#[derive(Debug, Clone)]
pub enum Change {
    Upsert(GrantId, Box<SavedGrant>),
    Remove(GrantId),
    /// Replace everything (after restore: the file reflects what this run owns).
    Reset(Vec<(GrantId, SavedGrant)>),
    /// Replace the TOTP replay memory (small: at most 3 entries per TOTP door).
    Replay(Vec<SavedReplay>),
    /// Replace the one-time sequences used but not recorded in their file.
    OneTime(Vec<SavedOneTime>),
}

/// The writer's copy of what the file holds.
#[derive(Debug, Default)]
struct Contents {
    grants: BTreeMap<GrantId, SavedGrant>,
    replay: Vec<SavedReplay>,
    one_time: Vec<SavedOneTime>,
}

enum Msg {
    /// Changes, with the generation of this send.
    Changes(u64, Vec<Change>),
    Flush(oneshot::Sender<()>),
    /// An open waits for the next write: make it soon.
    Urgent,
}

/// Handle to the writer task.
#[derive(Debug, Clone)]
pub struct StateWriter {
    tx: mpsc::UnboundedSender<Msg>,
    /// Generation of the last send; the writer publishes the last one written in `written`.
    sent: Arc<AtomicU64>,
    written: watch::Receiver<u64>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

impl StateWriter {
    /// Start the writer for `path` on the current runtime; write errors go to `errors`.
    pub fn start(path: PathBuf, errors: mpsc::UnboundedSender<String>) -> StateWriter {
        let (tx, rx) = mpsc::unbounded_channel();
        let (written_tx, written) = watch::channel(0);
        tokio::spawn(serve(path, rx, errors, written_tx));
        StateWriter {
            tx,
            sent: Arc::new(AtomicU64::new(0)),
            written,
        }
    }

    pub fn send(&self, changes: Vec<Change>) {
        if !changes.is_empty() {
            let generation = self.sent.fetch_add(1, Ordering::Relaxed) + 1;
            let _ = self.tx.send(Msg::Changes(generation, changes));
        }
    }

    /// Resolves once everything sent so far is on disk (or its write failed, which is
    /// logged): an open waits for this, so a rule never exists without its record.
    pub fn barrier(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let generation = self.sent.load(Ordering::Relaxed);
        let _ = self.tx.send(Msg::Urgent);
        let mut rx = self.written.clone();
        async move {
            let _ = rx.wait_for(|w| *w >= generation).await;
        }
    }

    /// Make the next write soon (within [`URGENT_GAP`] of the previous one) without waiting
    /// for it: for records that must not wait the coalescing window (replay memory).
    pub fn hurry(&self) {
        let _ = self.tx.send(Msg::Urgent);
    }

    /// Write what is pending now, and wait for it.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

fn apply(copy: &mut Contents, changes: Vec<Change>) {
    for c in changes {
        match c {
            Change::Upsert(id, g) => {
                copy.grants.insert(id, *g);
            }
            Change::Remove(id) => {
                copy.grants.remove(&id);
            }
            Change::Reset(all) => copy.grants = all.into_iter().collect(),
            Change::Replay(r) => copy.replay = r,
            Change::OneTime(o) => copy.one_time = o,
        }
    }
}

async fn write(path: &std::path::Path, copy: &Contents, errors: &mpsc::UnboundedSender<String>) {
    let saved = state::Saved {
        grants: copy.grants.values().cloned().collect(),
        totp_replay: copy.replay.clone(),
        one_time_used: copy.one_time.clone(),
    };
    let p = path.to_path_buf();
    let r = tokio::task::spawn_blocking(move || state::save_all(&p, saved)).await;
    let e = match r {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(e) => format!("state writer: {e}"),
    };
    tracing::error!("{e}");
    let _ = errors.send(e);
}

async fn serve(
    path: PathBuf,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    errors: mpsc::UnboundedSender<String>,
    written: watch::Sender<u64>,
) {
    let mut map = Contents::default();
    let mut dirty = false;
    let mut generation = 0;
    // Someone waits for the write (an open, write-ahead): write within URGENT_GAP.
    let mut urgent = false;
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    let mut last_write: Option<tokio::time::Instant> = None;
    loop {
        let due = last_write.map(|t| t + if urgent { URGENT_GAP } else { COALESCE });
        let msg = match (dirty || !waiters.is_empty(), due) {
            (true, Some(due)) if due > tokio::time::Instant::now() => {
                tokio::time::timeout_at(due, rx.recv()).await.ok()
            }
            // Dirty and due: write now (below).
            (true, _) => None,
            (false, _) => Some(rx.recv().await),
        };
        let closed = matches!(msg, Some(None));
        if let Some(Some(m)) = msg {
            let mut next = Some(m);
            // Take everything already queued into this write.
            while let Some(m) = next {
                match m {
                    Msg::Changes(g, c) => {
                        apply(&mut map, c);
                        generation = g;
                        dirty = true;
                    }
                    Msg::Urgent => urgent = true,
                    Msg::Flush(done) => {
                        urgent = true;
                        waiters.push(done);
                    }
                }
                next = rx.try_recv().ok();
            }
            // Not due yet: wait (the loop computes the deadline again).
            let due = last_write.map(|t| t + if urgent { URGENT_GAP } else { COALESCE });
            if due.is_some_and(|d| d > tokio::time::Instant::now()) && !closed {
                continue;
            }
        }
        if dirty {
            write(&path, &map, &errors).await;
            last_write = Some(tokio::time::Instant::now());
            dirty = false;
        }
        let _ = written.send(generation);
        urgent = false;
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grants::Close;

    fn g(door: &str) -> SavedGrant {
        SavedGrant {
            door: door.into(),
            addr: "10.0.0.2".parse().expect("ip"),
            opened: "x".into(),
            opened_at_unix_ms: 1,
            expires_at_unix_ms: None,
            close: Close::StopCommand {
                command: "x".into(),
            },
            refreshes: 0,
            closing: false,
            close_error: None,
            client: None,
        }
    }

    #[tokio::test]
    async fn changes_are_coalesced_and_flushed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let (etx, _erx) = mpsc::unbounded_channel();
        let w = StateWriter::start(path.clone(), etx);
        for i in 0..1000u64 {
            w.send(vec![Change::Upsert(i, Box::new(g(&format!("d{i}"))))]);
        }
        for i in 0..500u64 {
            w.send(vec![Change::Remove(i)]);
        }
        w.flush().await;
        let saved = state::load(&path).expect("load");
        assert_eq!(saved.len(), 500);
        // No temporary file left behind.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["state.json".to_string()], "{names:?}");
    }
}
