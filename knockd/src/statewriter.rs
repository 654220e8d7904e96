//! The state file writer: a task of its own, so the engine never waits for the disk. The
//! engine sends what changed (O(1) per grant changed); the writer keeps its own copy of the
//! ledger and writes it atomically ([`state::save`], on a blocking thread) at most every
//! [`COALESCE`], and at once on [`StateWriter::flush`] (clean shutdown).

use crate::grants::GrantId;
use crate::state::{self, SavedGrant};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Writes are at least this far apart; changes in between go into the next write.
pub const COALESCE: Duration = Duration::from_millis(100);

/// One change to the ledger.
#[derive(Debug, Clone)]
pub enum Change {
    Upsert(GrantId, Box<SavedGrant>),
    Remove(GrantId),
    /// Replace everything (after restore: the file reflects what this run owns).
    Reset(Vec<(GrantId, SavedGrant)>),
}

enum Msg {
    /// Changes, with the generation of this send.
    Changes(u64, Vec<Change>),
    Flush(oneshot::Sender<()>),
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
        let mut rx = self.written.clone();
        async move {
            let _ = rx.wait_for(|w| *w >= generation).await;
        }
    }

    /// Write what is pending now, and wait for it.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

fn apply(map: &mut BTreeMap<GrantId, SavedGrant>, changes: Vec<Change>) {
    for c in changes {
        match c {
            Change::Upsert(id, g) => {
                map.insert(id, *g);
            }
            Change::Remove(id) => {
                map.remove(&id);
            }
            Change::Reset(all) => *map = all.into_iter().collect(),
        }
    }
}

async fn write(
    path: &std::path::Path,
    map: &BTreeMap<GrantId, SavedGrant>,
    errors: &mpsc::UnboundedSender<String>,
) {
    let grants: Vec<SavedGrant> = map.values().cloned().collect();
    let p = path.to_path_buf();
    let r = tokio::task::spawn_blocking(move || state::save(&p, grants)).await;
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
    let mut map = BTreeMap::new();
    let mut dirty = false;
    let mut generation = 0;
    let mut next_write = tokio::time::Instant::now();
    loop {
        let msg = if dirty {
            match tokio::time::timeout_at(next_write, rx.recv()).await {
                Ok(m) => m,
                Err(_) => {
                    write(&path, &map, &errors).await;
                    let _ = written.send(generation);
                    dirty = false;
                    next_write = tokio::time::Instant::now() + COALESCE;
                    continue;
                }
            }
        } else {
            rx.recv().await
        };
        match msg {
            Some(Msg::Changes(g, c)) => {
                apply(&mut map, c);
                generation = g;
                dirty = true;
            }
            Some(Msg::Flush(done)) => {
                // Take everything already queued first.
                while let Ok(Msg::Changes(g, c)) = rx.try_recv() {
                    apply(&mut map, c);
                    generation = g;
                    dirty = true;
                }
                if dirty {
                    write(&path, &map, &errors).await;
                    let _ = written.send(generation);
                    dirty = false;
                    next_write = tokio::time::Instant::now() + COALESCE;
                }
                let _ = done.send(());
            }
            None => {
                if dirty {
                    write(&path, &map, &errors).await;
                    let _ = written.send(generation);
                }
                return;
            }
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
