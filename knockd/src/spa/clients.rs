//! The enrolled clients: one public record per file in `SPA_ClientDir` (`NAME.pub`), read
//! again whenever the directory changes, so adding a client needs no restart and no reload.
//! A revoked client's file is renamed `NAME.pub.revoked` (kept for the record, never read).
//! `knockd --new-client` ([`new_client`]) writes the records and the server key.

use super::replay::Replay;
use super::Bucket;
use crate::state::{SavedSpaReplay, MAX_SPA_REPLAY};
use knock_ipc::spa::keys::{write_new, RECORD_SUFFIX};
use knock_ipc::spa::{ClientKey, ClientRecord, ServerKey, SessionKeys, SpaError};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Suffix a revoked record's file gets.
pub const REVOKED_SUFFIX: &str = ".revoked";

/// A client's public keys, compact (the Ed25519 key stays compressed until a packet passed
/// every cheaper check; the gate's [`super::keycache`] keeps it decompressed for clients
/// that sent a valid packet lately).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub x: [u8; 32],
    pub verify: [u8; 32],
}

impl Record {
    fn of(r: &ClientRecord) -> Record {
        Record {
            name: r.name.clone(),
            x: r.x,
            verify: r.verify.to_bytes(),
        }
    }

    pub fn fingerprint(&self) -> String {
        knock_ipc::spa::keys::fingerprint_of(&self.x, &self.verify)
    }
}

/// One enrolled client.
#[derive(Debug, Clone)]
pub struct Client {
    pub record: Record,
    pub keys: SessionKeys,
    pub replay: Replay,
    pub budget: Bucket,
    pub revoked: bool,
    /// When its last packet was accepted (unix ms).
    pub last_seen_ms: Option<u64>,
}

/// The clients of `SPA_ClientDir`.
pub struct Enrolled {
    dir: PathBuf,
    mtime: Option<SystemTime>,
    clients: Vec<Client>,
    /// Revoked by name while this run lasts, even if renaming the file failed.
    revoked: HashSet<String>,
    /// Enrolled from records, not a directory (tests, benchmarks): never re-read.
    fixed: bool,
    /// Replay memories of clients not enrolled now (from the state file, or a record that
    /// left the directory), by (name, fingerprint): taken back when the same keys are
    /// enrolled again, and written to the state file meanwhile. At most [`MAX_SPA_REPLAY`].
    pending: HashMap<(String, String), SavedSpaReplay>,
}

/// Does this memory say more than the start fence will (something accepted, or a floor above
/// the fence)? Only such memories go to the state file.
fn worth_saving(c: &Client, fence_ms: u64) -> bool {
    !c.replay.entries().is_empty() || c.replay.floor_ms() > fence_ms
}

/// A client's memory as the state file holds it.
pub fn saved_of(c: &Client) -> SavedSpaReplay {
    SavedSpaReplay {
        client: c.record.name.clone(),
        fingerprint: c.record.fingerprint(),
        floor_ms: c.replay.floor_ms(),
        seen: c.replay.entries().to_vec(),
        last_seen_unix_ms: c.last_seen_ms,
    }
}

impl Enrolled {
    pub fn new(dir: PathBuf) -> Enrolled {
        Enrolled {
            dir,
            mtime: None,
            clients: Vec::new(),
            revoked: HashSet::new(),
            fixed: false,
            pending: HashMap::new(),
        }
    }

    pub fn set_dir(&mut self, dir: PathBuf) {
        if dir != self.dir {
            self.dir = dir;
            self.mtime = None;
        }
    }

    /// Forget the clients (their replay memories wait in `pending` for the same keys).
    pub fn clear(&mut self, fence_ms: u64) {
        let gone: Vec<Client> = self.clients.drain(..).collect();
        self.keep_pending(gone, fence_ms);
        self.mtime = None;
    }

    fn keep_pending(&mut self, gone: impl IntoIterator<Item = Client>, fence_ms: u64) {
        for c in gone {
            if worth_saving(&c, fence_ms) {
                let s = saved_of(&c);
                self.hold(s);
            }
        }
    }

    /// Keep a memory for keys not enrolled now (merged with what is held for them).
    fn hold(&mut self, s: SavedSpaReplay) {
        let key = (s.client.clone(), s.fingerprint.clone());
        if let Some(held) = self.pending.get_mut(&key) {
            let mut r = Replay::restore(held.floor_ms, &held.seen);
            r.merge(s.floor_ms, &s.seen);
            held.floor_ms = r.floor_ms();
            held.seen = r.entries().to_vec();
            held.last_seen_unix_ms = held.last_seen_unix_ms.max(s.last_seen_unix_ms);
        } else if self.pending.len() < MAX_SPA_REPLAY {
            self.pending.insert(key, s);
        }
    }

    /// Take in the replay memories of a state file: merged into the enrolled client with the
    /// same name and keys, held for keys not enrolled now. Returns (merged, held).
    pub fn restore(&mut self, saved: Vec<SavedSpaReplay>) -> (usize, usize) {
        let mut merged = 0;
        let mut held = 0;
        for s in saved {
            let found = self
                .clients
                .iter_mut()
                .find(|c| c.record.name == s.client && c.record.fingerprint() == s.fingerprint);
            match found {
                Some(c) => {
                    c.replay.merge(s.floor_ms, &s.seen);
                    c.last_seen_ms = c.last_seen_ms.max(s.last_seen_unix_ms);
                    merged += 1;
                }
                None => {
                    self.hold(s);
                    held += 1;
                }
            }
        }
        (merged, held)
    }

    /// Every replay memory the state file should hold: the enrolled clients' that say more
    /// than the fence, and the held ones.
    pub fn saved_all(&self, fence_ms: u64) -> Vec<SavedSpaReplay> {
        self.clients
            .iter()
            .filter(|c| worth_saving(c, fence_ms))
            .map(saved_of)
            .chain(self.pending.values().cloned())
            .take(MAX_SPA_REPLAY)
            .collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &Client)> {
        self.clients
            .iter()
            .enumerate()
            .map(|(i, c)| (u32::try_from(i).unwrap_or(u32::MAX), c))
    }

    /// Never read the directory (records given by [`Enrolled::insert`] stay).
    pub fn fix(&mut self) {
        self.fixed = true;
        self.clients.shrink_to_fit();
    }

    pub fn capacity(&self) -> usize {
        self.clients.capacity()
    }

    pub fn all(&self) -> &[Client] {
        &self.clients
    }

    pub fn active(&self) -> usize {
        self.clients.iter().filter(|c| !c.revoked).count()
    }

    pub fn get(&self, i: u32) -> Option<&Client> {
        self.clients.get(i as usize)
    }

    pub fn get_mut(&mut self, i: u32) -> Option<&mut Client> {
        self.clients.get_mut(i as usize)
    }

    pub fn has(&self, name: &str) -> bool {
        self.clients
            .iter()
            .any(|c| c.record.name == name && !c.revoked)
    }

    /// Enroll records directly (tests, benchmarks). Returns the problems.
    pub fn insert(
        &mut self,
        server: &ServerKey,
        records: &[ClientRecord],
        fence_ms: u64,
    ) -> Vec<String> {
        let mut lines = Vec::new();
        for r in records {
            match server.session(r) {
                Ok(keys) => {
                    let record = Record::of(r);
                    let mut replay = Replay::new(fence_ms);
                    let mut last_seen_ms = None;
                    if !self.pending.is_empty() {
                        let key = (record.name.clone(), record.fingerprint());
                        if let Some(s) = self.pending.remove(&key) {
                            replay.merge(s.floor_ms, &s.seen);
                            last_seen_ms = s.last_seen_unix_ms;
                        }
                    }
                    self.clients.push(Client {
                        record,
                        keys,
                        replay,
                        budget: Bucket::full(super::CLIENT_BURST),
                        revoked: self.revoked.contains(&r.name),
                        last_seen_ms,
                    });
                }
                Err(e) => lines.push(format!("warning: SPA client skipped: {e}")),
            }
        }
        lines
    }

    /// Read the directory again when its modification time changed (or `force`). Clients
    /// whose keys did not change keep their replay memory. Returns (changed, log lines).
    pub fn rescan(
        &mut self,
        server: &ServerKey,
        fence_ms: u64,
        force: bool,
    ) -> (bool, Vec<String>) {
        if self.fixed {
            return (false, Vec::new());
        }
        let mtime = std::fs::metadata(&self.dir).and_then(|m| m.modified()).ok();
        if !force && mtime.is_some() && mtime == self.mtime {
            return (false, Vec::new());
        }
        self.mtime = mtime;
        let (records, mut lines) = read_dir(&self.dir);
        let mut old: HashMap<String, Client> = self
            .clients
            .drain(..)
            .map(|c| (c.record.name.clone(), c))
            .collect();
        for r in records {
            let compact = Record::of(&r);
            match old.remove(&r.name) {
                Some(c) if c.record == compact => self.clients.push(c),
                other => {
                    // New keys under an old name: the old keys' memory is held for them.
                    self.keep_pending(other, fence_ms);
                    lines.extend(self.insert(server, std::slice::from_ref(&r), fence_ms));
                }
            }
        }
        for c in &mut self.clients {
            c.revoked = self.revoked.contains(&c.record.name);
        }
        self.keep_pending(old.into_values(), fence_ms);
        self.clients.shrink_to_fit();
        (true, lines)
    }

    /// Mark `name` revoked and rename its file.
    pub fn revoke(&mut self, name: &str) -> Result<Vec<String>, String> {
        let Some(c) = self.clients.iter_mut().find(|c| c.record.name == name) else {
            return Err(format!(
                "no SPA client '{name}' is enrolled (knockctl clients lists them)"
            ));
        };
        c.revoked = true;
        self.revoked.insert(name.to_string());
        let from = self.dir.join(format!("{name}{RECORD_SUFFIX}"));
        let to = self
            .dir
            .join(format!("{name}{RECORD_SUFFIX}{REVOKED_SUFFIX}"));
        let mut lines = vec![format!("SPA client {name} revoked")];
        if let Err(e) = std::fs::rename(&from, &to) {
            lines.push(format!(
                "warning: SPA client {name} is revoked until knockd restarts, but its record '{}' could not be renamed: {e} (move it out of {} yourself)",
                from.display(),
                self.dir.display()
            ));
        }
        // The rename changed the directory; nothing to read again for it.
        self.mtime = std::fs::metadata(&self.dir).and_then(|m| m.modified()).ok();
        Ok(lines)
    }
}

/// Every `NAME.pub` record of `dir` (a name must match its file), and the problems found.
pub fn read_dir(dir: &Path) -> (Vec<ClientRecord>, Vec<String>) {
    let mut out = Vec::new();
    let mut lines = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            lines.push(format!(
                "warning: SPA client directory '{}': {e} (knockd --new-client NAME makes it)",
                dir.display()
            ));
            return (out, lines);
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pub"))
        .collect();
    paths.sort();
    for p in paths {
        let stem = p
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        match ClientRecord::read(&p) {
            Ok(r) if r.name == stem => out.push(r),
            Ok(r) => lines.push(format!(
                "warning: SPA client record '{}' names client '{}': skipped (a record must be NAME.pub)",
                p.display(),
                r.name
            )),
            Err(e) => lines.push(format!("warning: SPA client record skipped: {e}")),
        }
    }
    (out, lines)
}

/// `knockd --new-client NAME --out FILE`: make the server key if there is none, the client's
/// keys, its public record in `dir` and its secret key file `out` (mode 0600). Returns what
/// was written, for the admin.
pub fn new_client(
    name: &str,
    out: &Path,
    dir: &Path,
    key_path: &Path,
) -> Result<Vec<String>, SpaError> {
    let mut said = Vec::new();
    if !knock_ipc::spa::keys::valid_name(name) {
        return Err(SpaError::Name(name.to_string()));
    }
    let record_path = dir.join(format!("{name}{RECORD_SUFFIX}"));
    if record_path.exists() {
        return Err(SpaError::Exists { path: record_path });
    }
    let server = match ServerKey::read(key_path) {
        Ok(k) => k,
        Err(SpaError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = key_path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|source| SpaError::Create {
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
            let k = ServerKey::generate()?;
            write_new(key_path, &k.render(), 0o600)?;
            said.push(format!(
                "made the SPA server key {} (mode 0600)",
                key_path.display()
            ));
            k
        }
        Err(e) => return Err(e),
    };
    let client = ClientKey::generate(name, server.public())?;
    std::fs::create_dir_all(dir).map_err(|source| SpaError::Create {
        path: dir.to_path_buf(),
        source,
    })?;
    write_new(out, &client.render(), 0o600)?;
    let record = client.record();
    write_new(&record_path, &record.render(), 0o644)?;
    said.push(format!(
        "client {name}: public record {} (fingerprint {}), key file {} (mode 0600: give it to {name} over a trusted channel; knock --spa {} HOST)",
        record_path.display(),
        record.fingerprint(),
        out.display(),
        out.display()
    ));
    Ok(said)
}
