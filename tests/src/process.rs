//! Long-running processes started in a lab namespace.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tempfile::TempDir;

use crate::wait::{read_text, wait_until};

/// A child shared by its [`Daemon`] and the lab, so that whichever is dropped first kills it.
/// Only the holder of the lock signals or reaps the child, so its pid cannot be reused under
/// us while we signal it.
pub(crate) type SharedChild = Arc<Mutex<Child>>;

pub(crate) fn lock(child: &SharedChild) -> MutexGuard<'_, Child> {
    child.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Kills the child with SIGKILL and reaps it, unless it has already exited.
pub(crate) fn kill_and_reap(child: &SharedChild) {
    let mut child = lock(child);
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A process started by [`Lab::spawn_srv`](crate::Lab::spawn_srv) or
/// [`Lab::spawn_cli`](crate::Lab::spawn_cli). Its stdout and stderr go to files in the lab's
/// temp dir. Dropping it kills it (SIGKILL, by PID); if the test is panicking, its output is
/// printed to stderr first.
pub struct Daemon {
    label: String,
    pid: u32,
    child: SharedChild,
    stdout: PathBuf,
    stderr: PathBuf,
    // Keeps the lab's temp dir (and so the output files) alive as long as the process.
    _dir: Arc<TempDir>,
}

impl Daemon {
    pub(crate) fn spawn(
        label: String,
        mut cmd: Command,
        stdout: PathBuf,
        stderr: PathBuf,
        dir: Arc<TempDir>,
    ) -> (Daemon, SharedChild) {
        let open = |path: &PathBuf| {
            std::fs::File::create(path)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()))
        };
        cmd.stdin(Stdio::null())
            .stdout(open(&stdout))
            .stderr(open(&stderr));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {label} ({cmd:?}): {e}"));
        let pid = child.id();
        let child = Arc::new(Mutex::new(child));
        let daemon = Daemon {
            label,
            pid,
            child: Arc::clone(&child),
            stdout,
            stderr,
            _dir: dir,
        };
        (daemon, child)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Everything written to stdout so far.
    pub fn stdout_text(&self) -> String {
        read_text(&self.stdout)
    }

    /// Everything written to stderr so far.
    pub fn stderr_text(&self) -> String {
        read_text(&self.stderr)
    }

    /// stdout followed by stderr: whichever the program logs to.
    pub fn log_text(&self) -> String {
        self.stdout_text() + &self.stderr_text()
    }

    /// Waits until stdout or stderr contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log_text().contains(needle))
    }

    /// Sends a signal by name (`"TERM"`, `"HUP"`, `"INT"`, ...) unless the process has
    /// already exited.
    pub fn signal(&self, name: &str) {
        let mut child = lock(&self.child);
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        let pid = self.pid.to_string();
        let status = Command::new("kill")
            .args(["-s", name, &pid])
            .stdin(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run `kill -s {name} {pid}`: {e}"));
        assert!(status.success(), "`kill -s {name} {pid}` failed: {status}");
    }

    /// SIGTERM.
    pub fn kill_term(&self) {
        self.signal("TERM");
    }

    /// SIGHUP.
    pub fn kill_hup(&self) {
        self.signal("HUP");
    }

    /// SIGKILL (does not wait; see [`Daemon::wait_exit`]).
    pub fn kill_9(&self) {
        let mut child = lock(&self.child);
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
        }
    }

    /// True until the process has exited.
    pub fn is_running(&self) -> bool {
        matches!(lock(&self.child).try_wait(), Ok(None))
    }

    /// Waits for the process to exit; `None` if it is still running after `timeout`.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = lock(&self.child).try_wait().ok().flatten();
            status.is_some()
        });
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        kill_and_reap(&self.child);
        if std::thread::panicking() {
            eprintln!(
                "---- {} (pid {}) stdout ----\n{}---- {} stderr ----\n{}---- end of {} ----",
                self.label,
                self.pid,
                self.stdout_text(),
                self.label,
                self.stderr_text(),
                self.label
            );
        }
    }
}
