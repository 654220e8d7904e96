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
    let mut loaded = load(path.clone()).await;
    if let Ok(parsed) = &mut loaded {
        // The engine logs and answers a bounded number of warnings: cut the rest here, so it
        // does not format 200,000 of them (100,000 doors) on its task.
        let total = parsed.warnings.len();
        if total > config::MAX_LOGGED_WARNINGS {
            parsed.warnings.truncate(config::MAX_LOGGED_WARNINGS);
            parsed.warnings.push(config::Warning {
                file: path.display().to_string(),
                line: 0,
                door: None,
                message: format!(
                    "{} more warning(s) not shown (knockd -t lists them all)",
                    total - config::MAX_LOGGED_WARNINGS
                ),
            });
        }
        // Said here, off the engine task: the capture filter will be coarse.
        if let Some(message) = crate::bpf::coarse_note(&parsed.config.doors) {
            parsed.warnings.insert(
                0,
                config::Warning {
                    file: path.display().to_string(),
                    line: 0,
                    door: None,
                    message,
                },
            );
        }
    }
    ctl.send(Control::ReloadLoaded(Box::new(loaded), reply))
        .await
        .is_ok()
}
