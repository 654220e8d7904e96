//! The persisted grant ledger: a small versioned JSON file, written atomically (temp file,
//! fsync, rename, fsync of the directory) by [`crate::statewriter`] — changes coalesced over
//! at most 100 ms, at once when an open waits for its record (write-ahead) — and read back at
//! start so that a restart, even after SIGKILL, closes every rule on schedule.
//!
//! Besides the grants it keeps small memories that must survive a restart: which TOTP step
//! opened a door for which address (replay guard), one-time sequences used but not yet
//! recorded in their file, and each SPA client's replay memory. All are data: the engine
//! checks every entry against the config, the enrolled keys and the clock before it believes
//! it.

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
    /// The SPA client whose packet opened it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// A TOTP step's sequence that opened door `door` for `addr`: refused from any other address
/// while the step is accepted. `ports` binds the entry to the secret: an entry whose ports
/// are not what the door's secret derives for `step` is ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedReplay {
    pub door: String,
    pub step: u64,
    pub ports: Vec<u16>,
    pub addr: IpAddr,
}

/// A one-time sequence that was used but could not be recorded in its file: never accepted
/// again, recorded as soon as the file can be rewritten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedOneTime {
    pub file: PathBuf,
    /// In the `Sequence` format (`7000:tcp,8000:udp`).
    pub sequence: String,
}

/// A SPA client's replay memory (`spa::replay`): nothing made at or before `floor_ms`, and
/// none of the packets in `seen` (timestamp ms, nonce tag), is accepted again from the client
/// whose keys have `fingerprint`. An entry whose fingerprint is not the enrolled client's is
/// kept for it, never applied to other keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSpaReplay {
    pub client: String,
    pub fingerprint: String,
    pub floor_ms: u64,
    #[serde(default)]
    pub seen: Vec<(u64, u64)>,
    /// When its last packet was accepted (`knockctl clients`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_unix_ms: Option<u64>,
}

/// SPA clients whose replay memory the state file may hold (a few hundred bytes each).
pub const MAX_SPA_REPLAY: usize = 1_000_000;

/// Entries each memory section may hold (a TOTP door holds at most 3 replay entries; a
/// one-time sequences file at most its lines). A file with more is not one knockd wrote.
pub const MAX_MEMORY_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub format: u32,
    pub written_by: String,
    pub grants: Vec<SavedGrant>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub totp_replay: Vec<SavedReplay>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub one_time_used: Vec<SavedOneTime>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spa_replay: Vec<SavedSpaReplay>,
}

/// Everything a state file holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Saved {
    pub grants: Vec<SavedGrant>,
    pub totp_replay: Vec<SavedReplay>,
    pub one_time_used: Vec<SavedOneTime>,
    pub spa_replay: Vec<SavedSpaReplay>,
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
    #[error("refusing state file {path}: {reason} (fix: {fix})")]
    Unsafe {
        path: PathBuf,
        reason: String,
        fix: String,
    },
    #[error("state file {path} is in use by another knockd{holder}: give each knockd its own StateFile (or --state-file), or stop the other one")]
    Locked { path: PathBuf, holder: String },
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

/// Who may own the state file and its directory: root, or the user knockd runs as.
fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::Uid::effective().as_raw()
}

/// The state file's directory must not let anyone else replace the file: owned by root (or
/// knockd's user) and writable by nobody else.
pub fn check_dir(path: &Path) -> Result<(), StateError> {
    use std::os::unix::fs::MetadataExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let meta = std::fs::metadata(dir).map_err(|source| StateError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    if !trusted_owner(meta.uid()) || meta.mode() & 0o022 != 0 {
        return Err(StateError::Unsafe {
            path: dir.to_path_buf(),
            reason: format!(
                "the state directory is owned by uid {} with mode {:o}: others could replace the state file",
                meta.uid(),
                meta.mode() & 0o7777
            ),
            fix: format!("chown root:root {0} && chmod go-w {0}", dir.display()),
        });
    }
    Ok(())
}

/// Read the saved grants (see [`load_all`]).
pub fn load(path: &Path) -> Result<Vec<SavedGrant>, StateError> {
    load_all(path).map(|s| s.grants)
}

/// Read the state file; a missing file is an empty ledger. The file is opened without
/// following a symbolic link and must be a plain file owned by root (or knockd's user) and
/// writable by nobody else; its directory too ([`check_dir`]).
pub fn load_all(path: &Path) -> Result<Saved, StateError> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    check_dir(path)?;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    let mut file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Saved::default()),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(StateError::Unsafe {
                path: path.to_path_buf(),
                reason: "the state file is a symbolic link; knockd does not follow it".into(),
                fix: format!("rm {}", path.display()),
            })
        }
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let meta = file.metadata().map_err(|source| StateError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.file_type().is_file() || !trusted_owner(meta.uid()) || meta.mode() & 0o022 != 0 {
        return Err(StateError::Unsafe {
            path: path.to_path_buf(),
            reason: format!(
                "the state file is not a plain file owned by root and writable only by it (uid {}, mode {:o})",
                meta.uid(),
                meta.mode() & 0o7777
            ),
            fix: format!(
                "check who wrote it; then chown root:root {0} && chmod 600 {0}, or move it away",
                path.display()
            ),
        });
    }
    let mut text = String::new();
    if let Err(source) = file.read_to_string(&mut text) {
        return Err(StateError::Read {
            path: path.to_path_buf(),
            source,
        });
    }
    parse_all(&text).map_err(|reason| StateError::Invalid {
        path: path.to_path_buf(),
        reason,
    })
}

/// The grants in a state file's text (see [`parse_all`]).
pub fn parse(text: &str) -> Result<Vec<SavedGrant>, String> {
    parse_all(text).map(|s| s.grants)
}

/// A state file's text (pure; what [`load_all`] does after reading). The error is the reason
/// the text is not a valid state file.
pub fn parse_all(text: &str) -> Result<Saved, String> {
    let state: State = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if state.format != FORMAT {
        return Err(format!(
            "format {} is not {FORMAT}, written by {}",
            state.format, state.written_by
        ));
    }
    for (name, n, max) in [
        ("totp_replay", state.totp_replay.len(), MAX_MEMORY_ENTRIES),
        (
            "one_time_used",
            state.one_time_used.len(),
            MAX_MEMORY_ENTRIES,
        ),
        ("spa_replay", state.spa_replay.len(), MAX_SPA_REPLAY),
    ] {
        if n > max {
            return Err(format!(
                "{name} holds {n} entries, more than the {max} knockd writes"
            ));
        }
    }
    Ok(Saved {
        grants: state.grants,
        totp_replay: state.totp_replay,
        one_time_used: state.one_time_used,
        spa_replay: state.spa_replay,
    })
}

/// 64 unpredictable bits (the kernel's random pool).
fn random_u64() -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        // No /dev/urandom: a per-process random SipHash key still makes names unpredictable.
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        return h.finish();
    }
    u64::from_ne_bytes(b)
}

/// Held for knockd's lifetime: an exclusive `flock` on `<state file>.lock`. A second knockd
/// pointed at the same state file (another socket, the same default path) fails to take it
/// and refuses to start, instead of both rewriting the file.
#[derive(Debug)]
pub struct StateLock {
    _file: std::fs::File,
}

/// The PID of the knockd holding `path`'s lock, if one does (0: a holder that wrote no PID).
/// Creates nothing: no lock file, no holder.
pub fn holder(path: &Path) -> Option<u32> {
    use std::io::Read;
    let lock_path = PathBuf::from(format!("{}.lock", path.display()));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&lock_path)
        .ok()?;
    #[allow(deprecated)] // released when `file` closes, at the end of this function.
    let free = nix::fcntl::flock(
        std::os::fd::AsRawFd::as_raw_fd(&file),
        nix::fcntl::FlockArg::LockSharedNonblock,
    )
    .is_ok();
    if free {
        return None;
    }
    let mut pid = String::new();
    let _ = file.read_to_string(&mut pid);
    Some(pid.trim().parse().unwrap_or(0))
}

/// Take the state file's lock (see [`StateLock`]).
pub fn lock(path: &Path) -> Result<StateLock, StateError> {
    use std::io::{Read, Seek};
    let lock_path = PathBuf::from(format!("{}.lock", path.display()));
    let err = |source| StateError::Write {
        path: lock_path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&lock_path)
        .map_err(err)?;
    #[allow(deprecated)] // nix's Flock type needs an owned file; this lock lives in StateLock.
    let locked = nix::fcntl::flock(
        std::os::fd::AsRawFd::as_raw_fd(&file),
        nix::fcntl::FlockArg::LockExclusiveNonblock,
    );
    if locked.is_err() {
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        let holder = match pid.trim() {
            "" => String::new(),
            p => format!(" (pid {p})"),
        };
        return Err(StateError::Locked {
            path: path.to_path_buf(),
            holder,
        });
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = writeln!(file, "{}", std::process::id());
    Ok(StateLock { _file: file })
}

/// The text [`save`] writes for `grants` (pure); [`parse`] reads it back unchanged.
pub fn render(grants: Vec<SavedGrant>) -> Result<String, serde_json::Error> {
    render_all(Saved {
        grants,
        ..Saved::default()
    })
}

/// The text [`save_all`] writes (pure); [`parse_all`] reads it back unchanged. Empty memory
/// sections are left out (a file without them is what an older knockd wrote and reads).
pub fn render_all(saved: Saved) -> Result<String, serde_json::Error> {
    let state = State {
        format: FORMAT,
        written_by: format!("knockd {}", env!("CARGO_PKG_VERSION")),
        grants: saved.grants,
        totp_replay: saved.totp_replay,
        one_time_used: saved.one_time_used,
        spa_replay: saved.spa_replay,
    };
    serde_json::to_string_pretty(&state)
}

/// Write the ledger atomically (mode 0600).
pub fn save(path: &Path, grants: Vec<SavedGrant>) -> Result<(), StateError> {
    save_all(
        path,
        Saved {
            grants,
            ..Saved::default()
        },
    )
}

/// Write the state file atomically (mode 0600).
pub fn save_all(path: &Path, saved: Saved) -> Result<(), StateError> {
    let err = |source| StateError::Write {
        path: path.to_path_buf(),
        source,
    };
    let text = render_all(saved).map_err(|e| err(std::io::Error::other(e.to_string())))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    // A fresh name nobody can guess, created exclusively, never through a symlink: nothing
    // planted in the directory can be written through.
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state.json".into());
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", random_u64()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
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
                        instance: None,
                    }],
                },
                refreshes: 2,
                closing: false,
                close_error: None,
                client: None,
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
                client: None,
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
    fn symlinks_and_writable_dirs_are_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("elsewhere.json");
        save(&target, sample()).expect("save");
        let link = dir.path().join("state.json");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let e = load(&link).expect_err("symlink").to_string();
        assert!(e.contains("symbolic link") && e.contains("fix: rm"), "{e}");
        // Saving replaces the link itself (rename), never writes through it.
        save(&link, vec![]).expect("save");
        assert_eq!(load(&target).expect("target untouched"), sample());
        // A directory others can write to: refused, with the chmod that fixes it.
        let open = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let e = load(&open.path().join("state.json"))
            .expect_err("world-writable dir")
            .to_string();
        assert!(e.contains("chmod go-w"), "{e}");
        // A state file others can write to.
        let p = dir.path().join("s2.json");
        save(&p, vec![]).expect("save");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        assert!(load(&p)
            .expect_err("0666")
            .to_string()
            .contains("chmod 600"));
    }

    #[test]
    fn a_second_lock_on_the_same_state_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("state.json");
        let held = lock(&p).expect("first");
        let e = lock(&p).expect_err("second").to_string();
        assert!(
            e.contains("in use by another knockd") && e.contains(&std::process::id().to_string()),
            "{e}"
        );
        drop(held);
        lock(&p).expect("free again");
    }

    #[test]
    fn memory_sections_round_trip_are_optional_and_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("state.json");
        let saved = Saved {
            grants: sample(),
            totp_replay: vec![SavedReplay {
                door: "rot".into(),
                step: 58_000_000,
                ports: vec![10001, 20002, 30003, 40004],
                addr: "10.0.0.12".parse().expect("ip"),
            }],
            one_time_used: vec![SavedOneTime {
                file: "/etc/knockd/otp".into(),
                sequence: "7001:tcp,7002:udp".into(),
            }],
            spa_replay: vec![SavedSpaReplay {
                client: "alice".into(),
                fingerprint: "SHA256:abc".into(),
                floor_ms: 1_790_000_000_000,
                seen: vec![(1_790_000_030_000, 7), (1_790_000_031_000, 9)],
                last_seen_unix_ms: Some(1_790_000_031_005),
            }],
        };
        save_all(&p, saved.clone()).expect("save");
        assert_eq!(load_all(&p).expect("load"), saved);
        assert_eq!(load(&p).expect("grants"), sample());
        // A file without the sections (an older knockd's) loads with empty memories, and a
        // file without memories has no such sections (an older knockd reads it).
        save(&p, sample()).expect("save");
        let text = std::fs::read_to_string(&p).expect("read");
        assert!(
            !text.contains("totp_replay")
                && !text.contains("one_time_used")
                && !text.contains("spa_replay")
        );
        assert_eq!(load_all(&p).expect("load").totp_replay, vec![]);
        assert_eq!(load_all(&p).expect("load").spa_replay, vec![]);
        // More entries than knockd ever writes: not a file knockd wrote.
        let many = Saved {
            totp_replay: vec![saved.totp_replay[0].clone(); MAX_MEMORY_ENTRIES + 1],
            ..Saved::default()
        };
        let text = render_all(many).expect("render");
        let e = parse_all(&text).expect_err("too many");
        assert!(e.contains("totp_replay holds 100001 entries"), "{e}");
    }

    #[test]
    fn unix_ms_round_trips() {
        let t = from_unix_ms(1_790_000_000_123);
        assert_eq!(unix_ms(t), 1_790_000_000_123);
    }
}
