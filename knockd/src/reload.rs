//! Reloads: the config file is read, decoded, parsed and validated (one-time sequence files
//! included) on a blocking thread, off the engine task; the engine only applies the result
//! ([`Control::ReloadLoaded`]). A config of 100,000 doors thus never stalls matching or
//! timers while it is parsed.

use crate::config::{self, ConfigError, ConfigErrors};
use crate::engine::{Control, ReloadResult};
use std::path::PathBuf;
use tokio::sync::{mpsc, oneshot};

/// Load `path` off the engine task.
pub async fn load(path: PathBuf) -> config::Loaded {
    let shown = path.display().to_string();
    tokio::task::spawn_blocking(move || config::load(&path))
        .await
        .unwrap_or_else(|e| {
            Err(ConfigErrors(vec![ConfigError::new(
                shown,
                0,
                format!("reading the config failed: {e}"),
            )]))
        })
}

/// Load `path`, then hand it to the engine; the engine's answer goes to `reply`. False when
/// the engine is gone.
pub async fn request(
    ctl: &mpsc::Sender<Control>,
    path: PathBuf,
    reply: Option<oneshot::Sender<ReloadResult>>,
) -> bool {
    let loaded = load(path).await;
    ctl.send(Control::ReloadLoaded(Box::new(loaded), reply))
        .await
        .is_ok()
}
