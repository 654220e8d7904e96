//! The control socket's directory: members of group `knockd` must be able to reach the
//! socket in it. knockd creates it 0750 root:knockd; one that already exists (made by hand,
//! by tmpfiles.d, by an older package) is fixed at start when it is knockd's own, and
//! otherwise refused with the command that fixes it. [`decide`] is pure.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Owner, group and permission bits of a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirMeta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// What to do about the socket's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Group members (or everyone) can already search it, or there is no group knockd.
    Fine,
    /// knockd's own directory: give it group `gid` (when set) and `mode`.
    Fix { gid: Option<u32>, mode: u32 },
    /// Someone else's directory, or one others may write to: the admin's call.
    Refuse(String),
}

/// What `dir` (with `meta`) needs so that group `group` reaches a socket in it, for a knockd
/// running as `uid`:`gid`.
pub fn decide(dir: &Path, meta: DirMeta, uid: u32, gid: u32, group: Option<u32>) -> Decision {
    let Some(group) = group else {
        return Decision::Fine;
    };
    let perm = meta.mode & 0o7777;
    let searchable = (meta.gid == group && perm & 0o010 != 0) || perm & 0o001 != 0;
    if searchable {
        return Decision::Fine;
    }
    let own = meta.uid == uid && (meta.gid == gid || meta.gid == group);
    if own && perm & 0o022 == 0 {
        return Decision::Fix {
            gid: (meta.gid != group).then_some(group),
            mode: perm | 0o050,
        };
    }
    let dir = dir.display();
    Decision::Refuse(format!(
        "control socket directory {dir} (mode {perm:04o}, owner {}:{}) keeps group knockd from the socket, and it is not knockd's to change: fix it with `chgrp knockd {dir} && chmod g+rx,g-w {dir}` (or set Socket elsewhere)",
        meta.uid, meta.gid
    ))
}

/// Apply [`decide`] to the existing directory `dir`; returns what was changed, for the log.
pub fn prepare(dir: &Path) -> anyhow::Result<Option<String>> {
    let group = nix::unistd::Group::from_name(crate::control::GROUP)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw());
    let Ok(meta) = std::fs::metadata(dir) else {
        return Ok(None); // bind creates it
    };
    let m = DirMeta {
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
    };
    let me = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    match decide(dir, m, me.0, me.1, group) {
        Decision::Fine => Ok(None),
        Decision::Refuse(why) => anyhow::bail!("{why}"),
        Decision::Fix { gid, mode } => {
            use anyhow::Context;
            if let Some(gid) = gid {
                nix::unistd::chown(dir, None, Some(nix::unistd::Gid::from_raw(gid)))
                    .with_context(|| format!("cannot give {} group knockd", dir.display()))?;
            }
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("cannot chmod {}", dir.display()))?;
            Ok(Some(format!(
                "control socket directory {}: group knockd, mode {mode:04o} (was {:04o} {}:{}: group knockd could not reach the socket)",
                dir.display(),
                m.mode & 0o7777,
                m.uid,
                m.gid
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOCKD: u32 = 120;

    fn meta(mode: u32, uid: u32, gid: u32) -> DirMeta {
        DirMeta { mode, uid, gid }
    }

    #[test]
    fn decisions() {
        let d = Path::new("/run/knockd");
        let table: &[(DirMeta, Option<u32>, Decision)] = &[
            // Made by knockd, or reachable anyway: nothing to do.
            (meta(0o750, 0, KNOCKD), Some(KNOCKD), Decision::Fine),
            (meta(0o755, 0, 0), Some(KNOCKD), Decision::Fine),
            (meta(0o1777, 0, 0), Some(KNOCKD), Decision::Fine),
            // No group knockd: only root uses the socket.
            (meta(0o700, 0, 0), None, Decision::Fine),
            // The case: 0700 root:root, knockd's own: fixed.
            (
                meta(0o700, 0, 0),
                Some(KNOCKD),
                Decision::Fix {
                    gid: Some(KNOCKD),
                    mode: 0o750,
                },
            ),
            (
                meta(0o700, 0, KNOCKD),
                Some(KNOCKD),
                Decision::Fix {
                    gid: None,
                    mode: 0o750,
                },
            ),
        ];
        for (m, group, want) in table {
            assert_eq!(&decide(d, *m, 0, 0, *group), want, "{m:?} {group:?}");
        }
        // Someone else's directory, or one with another group, or group-writable: refused,
        // with the exact command.
        for m in [
            meta(0o700, 1000, 1000),
            meta(0o700, 0, 4),
            meta(0o770, 0, 0),
        ] {
            match decide(d, m, 0, 0, Some(KNOCKD)) {
                Decision::Refuse(why) => assert!(
                    why.contains("`chgrp knockd /run/knockd && chmod g+rx,g-w /run/knockd`"),
                    "{why}"
                ),
                other => panic!("{m:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn prepare_fixes_a_0700_directory_of_its_own() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let note = prepare(dir.path()).expect("prepare");
        let mode = std::fs::metadata(dir.path()).expect("meta").mode() & 0o7777;
        match nix::unistd::Group::from_name(crate::control::GROUP)
            .ok()
            .flatten()
        {
            // Without group knockd, nothing needs reaching it.
            None => {
                assert_eq!(note, None);
                assert_eq!(mode, 0o700);
            }
            Some(_) => {
                assert!(note.is_some());
                assert_eq!(mode, 0o750);
            }
        }
    }
}
