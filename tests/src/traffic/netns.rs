//! Sockets that live in a lab's network namespace while this process stays where it is.
//!
//! A socket belongs to the network namespace of the thread that created it. [`create_in`]
//! runs the constructor on a short-lived thread that first joins the named namespace
//! (`setns(CLONE_NEWNET)` affects only the calling thread), so the rest of the bench,
//! including its clock, stays in one process.

use std::fs::File;

use anyhow::{anyhow, Context, Result};
use nix::sched::{setns, CloneFlags};

/// Runs `make` on a thread inside network namespace `ns` (a name under `/run/netns`) and
/// returns what it made.
pub fn create_in<T, F>(ns: &str, make: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> Result<T> + Send,
{
    let path = format!("/run/netns/{ns}");
    let handle = File::open(&path).with_context(|| format!("cannot open {path}"))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            setns(&handle, CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("cannot enter network namespace {ns}"))?;
            make()
        })
        .join()
        .map_err(|_| anyhow!("the thread creating a socket in {ns} panicked"))?
    })
}
