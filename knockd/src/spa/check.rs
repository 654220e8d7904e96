//! What `knockd -t` checks of single-packet knocks: the server key, every client record of
//! `SPA_ClientDir` and every door's `SPA` list. Each finding names the file or door, the
//! problem and the fix. Errors are what leaves a door unable to open as written (or a
//! record knockd would skip); warnings are what works but is probably not meant.

use super::clients::REVOKED_SUFFIX;
use crate::config::Config;
use knock_ipc::spa::keys::RECORD_SUFFIX;
use knock_ipc::spa::{ClientRecord, ServerKey, SpaError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The findings; empty when no door has `SPA`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Findings {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// Checks not made (a file knockd's user could read, this one cannot).
    pub skipped: Vec<String>,
    pub notes: Vec<String>,
}

fn permission_denied(e: &SpaError) -> bool {
    matches!(e, SpaError::Read { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied)
}

fn not_found(e: &SpaError) -> bool {
    matches!(e, SpaError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

/// Check the SPA side of `config` against the files. `privileged`: running as knockd would
/// (a file it cannot read is then an error, not a skipped check).
pub fn check(config: &Config, privileged: bool) -> Findings {
    let mut f = Findings::default();
    let doors: Vec<(&str, &[String])> = config
        .doors
        .iter()
        .filter(|d| !d.spa.is_empty())
        .map(|d| (d.name.as_str(), d.spa.as_slice()))
        .collect();
    if doors.is_empty() {
        return f;
    }
    let key_path = config.options.spa_server_key();
    let dir = config.options.spa_client_dir();
    let server = server_key(&key_path, privileged, &mut f);
    let (enrolled, revoked) = records(&dir, server.as_ref(), privileged, &mut f);
    for (door, names) in &doors {
        for name in *names {
            if enrolled.contains(name) {
                continue;
            }
            if revoked.contains(name) {
                f.warnings.push(format!(
                    "warning: door '{door}': SPA client '{name}' is revoked ({}): its packets are refused (remove it from SPA = when that is meant)",
                    dir.join(format!("{name}{RECORD_SUFFIX}{REVOKED_SUFFIX}")).display()
                ));
            } else {
                f.errors.push(format!(
                    "door '{door}': SPA names client '{name}', who is not enrolled (no {}): enroll it with knockd --new-client {name} --out {name}.knock, or remove it from SPA =",
                    dir.join(format!("{name}{RECORD_SUFFIX}")).display()
                ));
            }
        }
    }
    let listed: BTreeSet<&str> = doors
        .iter()
        .flat_map(|(_, n)| n.iter().map(String::as_str))
        .collect();
    for name in &enrolled {
        if !listed.contains(name.as_str()) {
            f.warnings.push(format!(
                "warning: SPA client '{name}' is enrolled ({}) but no door lists it: its packets open nothing (add it to a door's SPA =, or revoke it)",
                dir.join(format!("{name}{RECORD_SUFFIX}")).display()
            ));
        }
    }
    f.notes.push(format!(
        "SPA: {} client(s) enrolled in {}, {} door(s) with SPA",
        enrolled.len(),
        dir.display(),
        doors.len()
    ));
    f
}

fn server_key(path: &Path, privileged: bool, f: &mut Findings) -> Option<ServerKey> {
    match ServerKey::read(path) {
        Ok(k) => {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(m) = std::fs::metadata(path) {
                if m.permissions().mode() & 0o077 != 0 {
                    f.warnings.push(format!(
                        "warning: SPA_ServerKey '{}' has mode {:o}: others may read it and pass the cheap filter (chmod 600 {})",
                        path.display(),
                        m.permissions().mode() & 0o777,
                        path.display()
                    ));
                }
            }
            Some(k)
        }
        Err(e) if not_found(&e) => {
            f.errors.push(format!(
                "SPA_ServerKey '{}' does not exist: no SPA door can open (knockd --new-client NAME --out NAME.knock makes it with the first client, or set SPA_ServerKey to the key's path)",
                path.display()
            ));
            None
        }
        Err(e) if permission_denied(&e) && !privileged => {
            f.skipped.push(format!(
                "the SPA server key {} (reading it needs root)",
                path.display()
            ));
            None
        }
        Err(e) => {
            f.errors.push(format!(
                "SPA_ServerKey: {e}: SPA is disabled at start (fix the file, or move it away and make a new one with knockd --new-client; every client then needs a new key file)"
            ));
            None
        }
    }
}

/// Names of the enrolled and of the revoked clients of `dir`; each bad record an error.
fn records(
    dir: &Path,
    server: Option<&ServerKey>,
    privileged: bool,
    f: &mut Findings,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut enrolled = BTreeSet::new();
    let mut revoked = BTreeSet::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && !privileged => {
            f.skipped.push(format!(
                "the SPA client records in {} (reading the directory needs root)",
                dir.display()
            ));
            return (enrolled, revoked);
        }
        Err(e) => {
            f.errors.push(format!(
                "SPA_ClientDir '{}': {e}: no client is enrolled (knockd --new-client NAME --out NAME.knock makes it, or set SPA_ClientDir)",
                dir.display()
            ));
            return (enrolled, revoked);
        }
    };
    let mut paths: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    paths.sort();
    // Fingerprint → the files that hold those keys.
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in paths {
        let file = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if let Some(name) = file.strip_suffix(&format!("{RECORD_SUFFIX}{REVOKED_SUFFIX}")) {
            revoked.insert(name.to_string());
            continue;
        }
        let Some(stem) = file.strip_suffix(RECORD_SUFFIX) else {
            continue;
        };
        let record = match ClientRecord::read(&p) {
            Ok(r) => r,
            Err(e) if permission_denied(&e) && !privileged => {
                f.skipped
                    .push(format!("the SPA client record {}", p.display()));
                continue;
            }
            Err(e) => {
                f.errors.push(format!(
                    "SPA client record {e}: knockd skips it (make the client again with knockd --new-client {stem} after moving the file away)"
                ));
                continue;
            }
        };
        if record.name != stem {
            f.errors.push(format!(
                "SPA client record '{}' names client '{}': knockd skips it (a record must be NAME{RECORD_SUFFIX}: rename the file to {}{RECORD_SUFFIX}, or fix its name = line)",
                p.display(),
                record.name,
                record.name
            ));
            continue;
        }
        if let Some(server) = server {
            if let Err(e) = server.session(&record) {
                f.errors.push(format!(
                    "SPA client record '{}': {e}: knockd skips it (make the client again with knockd --new-client)",
                    p.display()
                ));
                continue;
            }
        }
        seen.entry(record.fingerprint())
            .or_default()
            .push(p.display().to_string());
        enrolled.insert(record.name);
    }
    for (fingerprint, files) in seen {
        if files.len() > 1 {
            f.errors.push(format!(
                "SPA client records {} hold the same keys ({fingerprint}): one key file would open as either client, and revoking one leaves the other (keep one: each client needs its own knockd --new-client)",
                files.join(" and ")
            ));
        }
    }
    (enrolled, revoked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(extra: &str) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = format!(
            "[options]\n SPA_ClientDir = {0}/clients\n SPA_ServerKey = {0}/spa.key\n\
             [ssh]\n SPA = alice, bob\n Open = 22/tcp\n{extra}",
            dir.path().display()
        );
        let config = crate::config::parse(&text, "t.conf")
            .expect("config")
            .config;
        (dir, config)
    }

    fn enroll(dir: &Path, name: &str) {
        super::super::clients::new_client(
            name,
            &dir.join(format!("{name}.knock")),
            &dir.join("clients"),
            &dir.join("spa.key"),
        )
        .expect("new client");
    }

    #[test]
    fn a_config_without_spa_checks_nothing() {
        let config = crate::config::parse("[a]\n sequence = 1,2,3\n command = x\n", "t")
            .expect("config")
            .config;
        assert_eq!(check(&config, true), Findings::default());
    }

    #[test]
    fn missing_server_key_and_directory_are_errors_naming_the_fix() {
        let (_d, config) = setup("");
        let f = check(&config, true);
        assert_eq!(f.errors.len(), 4, "{f:?}");
        assert!(
            f.errors[0].contains("spa.key' does not exist") && f.errors[0].contains("--new-client")
        );
        assert!(f.errors[1].contains("SPA_ClientDir") && f.errors[1].contains("No such file"));
        assert!(f.errors[2].contains("door 'ssh': SPA names client 'alice', who is not enrolled"));
        assert!(f.errors[3].contains("knockd --new-client bob --out bob.knock"));
    }

    #[test]
    fn every_bad_record_and_reference_is_named() {
        let (d, config) = setup("[web]\n SPA = carol\n Open = 443/tcp\n");
        let dir = d.path();
        enroll(dir, "alice");
        enroll(dir, "bob");
        enroll(dir, "dave");
        let clients = dir.join("clients");
        let alice = std::fs::read_to_string(clients.join("alice.pub")).expect("alice");
        // A copy of alice's keys under another name; a record in the wrong file; junk.
        std::fs::write(
            clients.join("eve.pub"),
            alice.replace("name = alice", "name = eve"),
        )
        .expect("eve");
        std::fs::write(clients.join("frank.pub"), &alice).expect("frank");
        std::fs::write(
            clients.join("gina.pub"),
            "version = 1\nname = gina\nx25519 = nope\n",
        )
        .expect("gina");
        std::fs::rename(clients.join("bob.pub"), clients.join("bob.pub.revoked")).expect("revoke");
        let f = check(&config, true);
        let all = f.errors.join("\n");
        assert!(all.contains("frank.pub' names client 'alice'"), "{all}");
        assert!(all.contains("gina.pub"), "{all}");
        assert!(
            all.contains("alice.pub and ") && all.contains("eve.pub hold the same keys"),
            "{all}"
        );
        assert!(
            all.contains("door 'web': SPA names client 'carol', who is not enrolled"),
            "{all}"
        );
        assert_eq!(f.errors.len(), 4, "{all}");
        let warned = f.warnings.join("\n");
        assert!(
            warned.contains("door 'ssh': SPA client 'bob' is revoked"),
            "{warned}"
        );
        assert!(
            warned.contains("'dave' is enrolled") && warned.contains("'eve' is enrolled"),
            "{warned}"
        );
        // A clean directory: no errors.
        for junk in ["eve.pub", "frank.pub", "gina.pub", "dave.pub"] {
            std::fs::remove_file(clients.join(junk)).expect("rm");
        }
        std::fs::rename(clients.join("bob.pub.revoked"), clients.join("bob.pub")).expect("back");
        let (_, config) = {
            let text = format!(
                "[options]\n SPA_ClientDir = {0}/clients\n SPA_ServerKey = {0}/spa.key\n\
                 [ssh]\n SPA = alice, bob\n Open = 22/tcp\n",
                dir.display()
            );
            (
                (),
                crate::config::parse(&text, "t.conf")
                    .expect("config")
                    .config,
            )
        };
        let f = check(&config, true);
        assert!(f.errors.is_empty() && f.warnings.is_empty(), "{f:?}");
        assert!(f.notes[0].contains("2 client(s) enrolled"), "{f:?}");
    }
}
