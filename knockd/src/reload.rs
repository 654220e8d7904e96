//! Reloads: the config file is read, decoded, parsed and validated (one-time sequence files
//! included) on a blocking thread, off the engine task, and made ready there too: the matcher's
//! tables for the new doors, which doors keep their attempts, the capture filter. The engine
//! only swaps the result in (`Control::ReloadLoaded`; the request is
//! [`crate::engine::request_reload`]). A config of 100,000 doors thus never
//! stalls matching or timers, neither while it is parsed nor while it is applied.

use crate::config::{self, Config, ConfigError, ConfigErrors, Door};
use crate::matcher::DoorRule;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Result of a reload: warnings on success, every problem on failure.
pub type ReloadResult = Result<Vec<String>, Vec<String>>;

/// The engine's config in force and its local addresses, shared (O(1)) with a reload being
/// prepared.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub config: Arc<Config>,
    pub local: Vec<IpAddr>,
}

/// A reload ready to apply: the loaded config, and (when prepared against a snapshot) the work
/// done for the engine.
#[derive(Debug)]
pub struct Prepared {
    pub loaded: config::Loaded,
    pub work: Option<Work>,
}

/// What a reload's preparation built; valid while `base` is still the engine's config.
#[derive(Debug)]
pub struct Work {
    pub base: Arc<Config>,
    pub local: Vec<IpAddr>,
    /// See `keep_map`.
    pub keep: Vec<Option<usize>>,
    pub matcher: crate::matcher::Prepared,
    /// The capture filter for `local`; None when a door rotates (its ports depend on the
    /// clock: built by the engine).
    pub filter: Option<String>,
}

/// The matcher's rules of a door set.
pub(crate) fn door_rules(doors: &[Door]) -> Vec<DoorRule> {
    doors.iter().map(DoorRule::from).collect()
}

/// For each door of `old`, the door of `new` that carries its attempts over: same name and
/// the same sequence (static doors) or the same secret and settings (rotating doors). Door
/// names are unique: a map keeps this linear (100,000 doors).
pub(crate) fn keep_map(old: &Config, new: &Config) -> Vec<Option<usize>> {
    let by_name: HashMap<&str, usize> = new
        .doors
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    old.doors
        .iter()
        .map(|old| {
            by_name.get(old.name.as_str()).copied().filter(|&i| {
                let d = &new.doors[i];
                (d.sequence == old.sequence && !old.sequence.is_empty())
                    || (d.totp.is_some() && d.totp == old.totp)
            })
        })
        .collect()
}

/// Bound the warnings and note a coarse filter (off the engine task: the engine logs and
/// answers a bounded number of warnings; 100,000 doors can have 200,000).
fn trim(loaded: &mut config::Loaded, path: &Path) {
    let Ok(parsed) = loaded else {
        return;
    };
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
    if let Some(message) = crate::capture::bpf::coarse_note(&parsed.config.doors) {
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

/// Make `loaded` ready to apply against `snapshot` (pure; runs on a blocking thread).
pub fn prepare(mut loaded: config::Loaded, path: &Path, snapshot: Option<Snapshot>) -> Prepared {
    trim(&mut loaded, path);
    let work = match (&loaded, snapshot) {
        (Ok(parsed), Some(snap)) => {
            let new = &parsed.config;
            Some(Work {
                keep: keep_map(&snap.config, new),
                matcher: crate::matcher::Prepared::new(door_rules(&new.doors)),
                filter: (!new.doors.iter().any(|d| d.totp.is_some()))
                    .then(|| crate::capture::filter_for(new, &snap.local, |_| None)),
                base: snap.config,
                local: snap.local,
            })
        }
        _ => None,
    };
    Prepared { loaded, work }
}

/// Load `path` and prepare it off the engine task.
pub async fn load(path: PathBuf, snapshot: Option<Snapshot>) -> Prepared {
    let shown = path.display().to_string();
    tokio::task::spawn_blocking(move || prepare(config::load(&path), &path, snapshot))
        .await
        .unwrap_or_else(|e| Prepared {
            loaded: Err(ConfigErrors(vec![ConfigError::new(
                shown,
                0,
                format!("reading the config failed: {e}"),
            )])),
            work: None,
        })
}
