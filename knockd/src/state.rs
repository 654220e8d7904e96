//! The persisted grant ledger: a small versioned JSON file, written atomically (temp file,
//! fsync, rename, fsync of the directory) after every change, read back at start so that a
//! restart, even after SIGKILL, closes every rule on schedule.

use crate::grants::Close;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedGrant {
    pub door: String,
    pub addr: IpAddr,
    pub opened: String,
    pub opened_at_unix_ms: i64,
    /// Wall-clock deadline; None = no deadline.
    pub expires_at_unix_ms: Option<i64>,
    pub close: Close,
    #[serde(default)]
    pub refreshes: u32,
    /// Its close had started and not succeeded: the next start closes it at once.
    #[serde(default)]
    pub closing: bool,
    /// Why the last close attempt failed.
    #[serde(default)]
    pub close_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub format: u32,
    pub written_by: String,
    pub grants: Vec<SavedGrant>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is not valid ({reason}); inspect it, or move it away to start with an empty ledger (the rules it lists would then not be closed by knockd)")]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot write state file {path}: {source} (check the directory exists and is writable, or set StateFile / --state-file)")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

pub fn from_unix_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// Read the saved grants; a missing file is an empty ledger.
pub fn load(path: &Path) -> Result<Vec<SavedGrant>, StateError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    parse(&text).map_err(|reason| StateError::Invalid {
        path: path.to_path_buf(),
        reason,
    })
}

/// The grants in a state file's text (pure; what [`load`] does after reading). The error is
/// the reason the text is not a valid state file.
pub fn parse(text: &str) -> Result<Vec<SavedGrant>, String> {
    let state: State = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if state.format != FORMAT {
        return Err(format!(
            "format {} is not {FORMAT}, written by {}",
            state.format, state.written_by
        ));
    }
    Ok(state.grants)
}

/// The text [`save`] writes for `grants` (pure); [`parse`] reads it back unchanged.
pub fn render(grants: Vec<SavedGrant>) -> Result<String, serde_json::Error> {
    let state = State {
        format: FORMAT,
        written_by: format!("knockd {}", env!("CARGO_PKG_VERSION")),
        grants,
    };
    serde_json::to_string_pretty(&state)
}

/// Write the ledger atomically (mode 0600).
pub fn save(path: &Path, grants: Vec<SavedGrant>) -> Result<(), StateError> {
    let err = |source| StateError::Write {
        path: path.to_path_buf(),
        source,
    };
    let text = render(grants).map_err(|e| err(std::io::Error::other(e.to_string())))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        f.write_all(text.as_bytes()).map_err(err)?;
        f.write_all(b"\n").map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::FwRule;
    use crate::config::Proto;

    fn sample() -> Vec<SavedGrant> {
        vec![
            SavedGrant {
                door: "ssh".into(),
                addr: "10.0.0.12".parse().expect("ip"),
                opened: "22/tcp (INPUT)".into(),
                opened_at_unix_ms: 1_790_000_000_000,
                expires_at_unix_ms: Some(1_790_000_030_000),
                close: Close::Rules {
                    rules: vec![FwRule {
                        chain: "INPUT".into(),
                        src: "10.0.0.12".parse().expect("ip"),
                        proto: Proto::Tcp,
                        port: 22,
                        door: "ssh".into(),
                    }],
                },
                refreshes: 2,
                closing: false,
                close_error: None,
            },
            SavedGrant {
                door: "openSSH".into(),
                addr: "fd99:77::2".parse().expect("ip"),
                opened: "cmd".into(),
                opened_at_unix_ms: 1,
                expires_at_unix_ms: None,
                close: Close::Derived {
                    delete: vec!["iptables".into(), "-D".into()],
                    check: vec!["iptables".into(), "-C".into()],
                },
                refreshes: 0,
                closing: true,
                close_error: Some("lock".into()),
            },
        ]
    }

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("state.json");
        assert_eq!(load(&p).expect("missing is empty"), vec![]);
        save(&p, sample()).expect("save");
        assert_eq!(load(&p).expect("load"), sample());
        let text = std::fs::read_to_string(&p).expect("read");
        assert!(text.contains("\"format\": 1"), "{text}");
        assert!(text.contains("\"kind\": \"rules\""), "{text}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn invalid_files_name_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("state.json");
        std::fs::write(&p, "{ nope").expect("write");
        let e = load(&p).expect_err("invalid").to_string();
        assert!(e.contains("move it away"), "{e}");
        std::fs::write(
            &p,
            r#"{"format": 99, "written_by": "future", "grants": []}"#,
        )
        .expect("write");
        assert!(load(&p)
            .expect_err("format")
            .to_string()
            .contains("format 99"));
    }

    #[test]
    fn unix_ms_round_trips() {
        let t = from_unix_ms(1_790_000_000_123);
        assert_eq!(unix_ms(t), 1_790_000_000_123);
    }
}
