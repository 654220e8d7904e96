//! All signal handling in one place: SIGHUP → reload; SIGTERM/SIGINT → the shutdown future.

use crate::engine::Control;
use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
use std::future::Future;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGHUP, Signal::SIGTERM, Signal::SIGINT] {
        set.add(s);
    }
    set
}

/// Call first thing: block SIGHUP, SIGTERM and SIGINT on this thread (and the threads it
/// starts) so that they stay pending, instead of killing knockd, until [`install`] has set the
/// handlers. Child processes do not inherit the block (std resets their signal mask).
pub fn hold() {
    if let Err(e) = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&handled()), None) {
        tracing::warn!("cannot hold signals during start-up: {e}");
    }
}

/// Undo [`hold`] (one-shot commands such as `knockd -t` stay killable with Ctrl-C).
pub fn release() {
    let _ = pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&handled()), None);
}

/// Start listening for signals. The returned future completes on SIGTERM or SIGINT.
/// Signals held by [`hold`] are released here and delivered to the new handlers.
/// `config` is the file a SIGHUP re-reads (parsed off the engine task, see [`crate::reload`]).
pub fn install(
    ctl: mpsc::Sender<Control>,
    config: std::path::PathBuf,
) -> std::io::Result<impl Future<Output = ()>> {
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&handled()), None)
        .map_err(std::io::Error::from)?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            if !crate::engine::request_reload(&ctl, config.clone(), None).await {
                break;
            }
        }
    });
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
