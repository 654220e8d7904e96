//! All signal handling in one place: SIGHUP → reload; SIGTERM/SIGINT → the shutdown future.

use crate::engine::Control;
use std::future::Future;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// Start listening for signals. The returned future completes on SIGTERM or SIGINT.
/// `config` is the file a SIGHUP re-reads (parsed off the engine task, see [`crate::reload`]).
pub fn install(
    ctl: mpsc::Sender<Control>,
    config: std::path::PathBuf,
) -> std::io::Result<impl Future<Output = ()>> {
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            if !crate::reload::request(&ctl, config.clone(), None).await {
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
