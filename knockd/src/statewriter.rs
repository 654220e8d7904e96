//! The state file writer: a task of its own, so the engine never waits for the disk. The
//! engine sends what changed (O(1) per grant changed); the writer keeps its own copy of the
//! ledger and writes it atomically ([`state::save`], on a blocking thread) at most every
//! [`COALESCE`], and at once on [`StateWriter::flush`] (clean shutdown).
//!
//! A write that fails (a full disk, say) loses nothing: the writer keeps the whole state it
//! owes the disk, retries every [`RETRY`] (and at once when an open waits), and says so
//! ([`StateWriter::failing`]: the error and since when) until a write succeeds. An open that
//! waits for its record learns that the record did not reach the disk
//! ([`StateWriter::barrier`] resolves `false`), and is refused: a rule never exists that a
//! crash could leave without its record.

use crate::grants::GrantId;
use crate::state::{self, SavedGrant, SavedOneTime, SavedReplay, SavedSpaReplay};
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
/// While writes fail, the next attempt comes this long after the last one (sooner when an
/// open waits).
pub const RETRY: Duration = Duration::from_secs(1);
/// A changed replay memory ([`StateWriter::hurry`]) is written this long after it changed
/// (and at least [`URGENT_GAP`] after the previous write): soon, but not at the very moment
/// the open that changed it goes to the firewall, where the write (serialising, `fsync` on a
/// thread of its own) would compete with it for the CPU. Nothing waits for it; a `kill -9`
/// keeps what was written (the page cache survives it), and a packet made before the next
/// start is refused by that start's fence anyway.
pub const MEMORY_DELAY: Duration = Duration::from_millis(3);

/// The state file cannot be written now: the last error, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failing {
    pub error: String,
    pub since: std::time::SystemTime,
}

/// What the writer publishes after each attempt.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// The last generation on disk.
    written: u64,
    /// The last generation a failed write attempted.
    failed: u64,
    failing: Option<Failing>,
}

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
    /// SPA clients' replay memories: these entries replace the ones of the same client and
    /// keys (`all`: replace the whole section). O(clients that accepted a packet).
    SpaReplay {
        all: bool,
        entries: Vec<SavedSpaReplay>,
    },
}

/// The writer's copy of what the file holds.
#[derive(Debug, Default)]
struct Contents {
    grants: BTreeMap<GrantId, SavedGrant>,
    replay: Vec<SavedReplay>,
    one_time: Vec<SavedOneTime>,
    /// Keyed by (client, fingerprint).
    spa: BTreeMap<(String, String), SavedSpaReplay>,
}

enum Msg {
    /// Changes, with the generation of this send.
    Changes(u64, Vec<Change>),
    Flush(oneshot::Sender<()>),
    /// An open waits for the next write: make it soon.
    Urgent,
    /// A memory changed: write it within [`MEMORY_DELAY`].
    Soon,
}

/// Handle to the writer task.
#[derive(Debug, Clone)]
pub struct StateWriter {
    tx: mpsc::UnboundedSender<Msg>,
    /// Generation of the last send; the writer publishes the last one written in `written`.
    sent: Arc<AtomicU64>,
    progress: watch::Receiver<Progress>,
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
        let (progress_tx, progress) = watch::channel(Progress::default());
        tokio::spawn(serve(path, rx, errors, progress_tx));
        StateWriter {
            tx,
            sent: Arc::new(AtomicU64::new(0)),
            progress,
        }
    }

    pub fn send(&self, changes: Vec<Change>) {
        if !changes.is_empty() {
            let generation = self.sent.fetch_add(1, Ordering::Relaxed) + 1;
            let _ = self.tx.send(Msg::Changes(generation, changes));
        }
    }

    /// Resolves once everything sent so far is on disk (`true`), or once a write of it
    /// failed (`false`): an open waits for this and goes to the firewall only on `true`, so a
    /// rule never exists without its record.
    pub fn barrier(&self) -> impl std::future::Future<Output = bool> + Send + 'static {
        let generation = self.sent.load(Ordering::Relaxed);
        let _ = self.tx.send(Msg::Urgent);
        let mut rx = self.progress.clone();
        async move {
            match rx
                .wait_for(|p| p.written >= generation || p.failed >= generation)
                .await
            {
                Ok(p) => p.written >= generation,
                Err(_) => false,
            }
        }
    }

    /// The state file cannot be written now (since when, why); None when the last write
    /// succeeded.
    pub fn failing(&self) -> Option<Failing> {
        self.progress.borrow().failing.clone()
    }

    /// Make the next write soon ([`MEMORY_DELAY`] from now, and within [`URGENT_GAP`] of the
    /// previous one) without waiting for it: for records that must not wait the coalescing
    /// window (replay memory).
    pub fn hurry(&self) {
        let _ = self.tx.send(Msg::Soon);
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
            Change::SpaReplay { all, entries } => {
                if all {
                    copy.spa.clear();
                }
                for e in entries {
                    if copy.spa.len() < state::MAX_SPA_REPLAY
                        || copy
                            .spa
                            .contains_key(&(e.client.clone(), e.fingerprint.clone()))
                    {
                        copy.spa
                            .insert((e.client.clone(), e.fingerprint.clone()), e);
                    }
                }
            }
        }
    }
}

async fn write(path: &std::path::Path, copy: &Contents) -> Result<(), String> {
    let saved = state::Saved {
        grants: copy.grants.values().cloned().collect(),
        totp_replay: copy.replay.clone(),
        one_time_used: copy.one_time.clone(),
        spa_replay: copy.spa.values().cloned().collect(),
    };
    let p = path.to_path_buf();
    match tokio::task::spawn_blocking(move || state::save_all(&p, saved)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("state writer: {e}")),
    }
}

/// When the next write is due (None: now, if anything is owed): within [`URGENT_GAP`] of the
/// last when an open waits, at `soon` (not before [`URGENT_GAP`] after the last) for a
/// changed memory, else the coalescing window (the retry period while writes fail).
fn due_at(
    last_write: Option<tokio::time::Instant>,
    urgent: bool,
    soon: Option<tokio::time::Instant>,
    failing: bool,
) -> Option<tokio::time::Instant> {
    if urgent {
        return last_write.map(|t| t + URGENT_GAP);
    }
    if let Some(s) = soon {
        return Some(last_write.map_or(s, |t| s.max(t + URGENT_GAP)));
    }
    let gap = if failing { RETRY } else { COALESCE };
    last_write.map(|t| t + gap)
}

async fn serve(
    path: PathBuf,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    errors: mpsc::UnboundedSender<String>,
    progress: watch::Sender<Progress>,
) {
    let mut map = Contents::default();
    let mut dirty = false;
    let mut generation = 0;
    // Someone waits for the write (an open, write-ahead): write within URGENT_GAP.
    let mut urgent = false;
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    let mut last_write: Option<tokio::time::Instant> = None;
    let mut failing: Option<Failing> = None;
    // A memory changed (hurry): written at this time.
    let mut soon: Option<tokio::time::Instant> = None;
    loop {
        let due = due_at(last_write, urgent, soon, failing.is_some());
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
                    Msg::Soon => {
                        let at = tokio::time::Instant::now() + MEMORY_DELAY;
                        soon = Some(soon.map_or(at, |s| s.min(at)));
                    }
                    Msg::Flush(done) => {
                        urgent = true;
                        waiters.push(done);
                    }
                }
                next = rx.try_recv().ok();
            }
            // Not due yet: wait (the loop computes the deadline again).
            let due = due_at(last_write, urgent, soon, failing.is_some());
            if due.is_some_and(|d| d > tokio::time::Instant::now()) && !closed {
                continue;
            }
        }
        if dirty {
            let result = write(&path, &map).await;
            last_write = Some(tokio::time::Instant::now());
            match result {
                Ok(()) => {
                    dirty = false;
                    if let Some(f) = failing.take() {
                        let secs = f.since.elapsed().map_or(0, |d| d.as_secs());
                        let msg = format!("state file written again, after failing for {secs}s");
                        tracing::warn!("{msg}");
                    }
                    progress.send_modify(|p| {
                        p.written = generation;
                        p.failing = None;
                    });
                }
                Err(e) => {
                    // Keep owing it: still dirty, retried every RETRY (sooner for an open).
                    if failing.is_none() {
                        tracing::error!("{e}");
                        let _ = errors.send(format!(
                            "{e}; knockd keeps the state it owes the file and retries every {}s, and refuses opens until it is written",
                            RETRY.as_secs()
                        ));
                    }
                    let f = failing.get_or_insert_with(|| Failing {
                        error: e.clone(),
                        since: std::time::SystemTime::now(),
                    });
                    f.error = e;
                    let f = f.clone();
                    progress.send_modify(|p| {
                        p.failed = generation;
                        p.failing = Some(f);
                    });
                }
            }
        } else {
            progress.send_modify(|p| p.written = generation);
        }
        urgent = false;
        soon = None;
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

    /// Issue 21.8: a write that fails loses nothing: the writer says so (error, since when),
    /// an open's barrier is `false`, and the whole state it owes is written once it can be.
    #[test]
    fn a_changed_memory_waits_a_moment_an_open_does_not() {
        let t = tokio::time::Instant::now();
        let soon = Some(t + MEMORY_DELAY);
        // Nothing written yet: an open's barrier writes at once, a memory at `soon`.
        assert_eq!(due_at(None, true, soon, false), None);
        assert_eq!(due_at(None, false, soon, false), soon);
        assert_eq!(due_at(None, false, None, false), None);
        // Just written: never closer than URGENT_GAP to the last write.
        let last = Some(t + MEMORY_DELAY);
        assert_eq!(
            due_at(last, false, soon, false),
            Some(t + MEMORY_DELAY + URGENT_GAP)
        );
        assert_eq!(
            due_at(last, true, soon, true),
            Some(t + MEMORY_DELAY + URGENT_GAP)
        );
        // Long ago: at `soon`; without a memory, the coalescing window (retry when failing).
        let long_ago = Some(t - Duration::from_secs(5));
        assert_eq!(due_at(long_ago, false, soon, false), soon);
        assert_eq!(
            due_at(long_ago, false, None, false),
            Some(t - Duration::from_secs(5) + COALESCE)
        );
        assert_eq!(
            due_at(long_ago, false, None, true),
            Some(t - Duration::from_secs(5) + RETRY)
        );
    }

    #[tokio::test]
    async fn a_failed_write_is_owed_reported_and_retried() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The state file's directory is a plain file: every write fails (ENOTDIR).
        let blocked = dir.path().join("d");
        std::fs::write(&blocked, "").expect("file");
        let path = blocked.join("state.json");
        let (etx, mut erx) = mpsc::unbounded_channel();
        let w = StateWriter::start(path.clone(), etx);
        w.send(vec![Change::Upsert(1, Box::new(g("a")))]);
        assert!(!w.barrier().await, "an unwritten record is not on disk");
        let failing = w.failing().expect("failing");
        assert!(failing.since <= std::time::SystemTime::now());
        assert!(erx.try_recv().is_ok(), "the failure is reported once");
        w.send(vec![Change::Upsert(2, Box::new(g("b")))]);
        assert!(!w.barrier().await);
        assert!(erx.try_recv().is_err(), "not once per attempt");
        assert_eq!(w.failing().map(|f| f.since), Some(failing.since));
        // The disk comes back: the retry writes everything owed, without a new change.
        std::fs::remove_file(&blocked).expect("rm");
        std::fs::create_dir(&blocked).expect("mkdir");
        let t0 = std::time::Instant::now();
        while w.failing().is_some() {
            assert!(t0.elapsed() < Duration::from_secs(10), "never retried");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let saved = state::load(&path).expect("load");
        assert_eq!(saved.len(), 2, "{saved:?}");
        w.send(vec![Change::Remove(1)]);
        assert!(w.barrier().await);
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
