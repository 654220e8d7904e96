//! ssh connection sharing, when asked for (`--ssh-persist SECS`, `KNOCKCTL_SSH_PERSIST`, or
//! `persist = SECS` in the hosts file's `[ssh]` table): the first command to a host leaves
//! ssh's own master connection open for SECS after its last session (ssh's `ControlMaster
//! auto`, `ControlPersist`), and later commands open a session on it instead of logging in
//! again (no key exchange, no authentication; the remote login shell still runs).
//!
//! The user's ssh configuration wins: knockctl asks ssh what it would use for the host
//! (`ssh -G`, same user and port) and adds its options only when that sets neither
//! `ControlMaster` nor a `ControlPath`. Off by default, like docker's and podman's ssh
//! transports: a master outlives the command that started it, which a script may not expect.
//!
//! The control sockets are in a directory only this user can enter
//! (`$XDG_RUNTIME_DIR/knockctl-ssh`, else `~/.cache/knockctl/ssh`), mode 0700, checked
//! before use: whoever can connect to a control socket can run commands on the remote host
//! as the ssh user.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::hosts::HostsError;

/// How long `ssh -G` gets to print the configuration.
const CONFIG_WAIT: Duration = Duration::from_secs(5);

/// Sharing as asked for: where the control sockets go and how long masters stay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub dir: PathBuf,
    pub persist: Duration,
}

impl Share {
    /// Sharing for `persist` (None or zero: no sharing), with the control socket directory
    /// made or checked.
    pub fn new(persist: Option<Duration>) -> Result<Option<Share>, HostsError> {
        let Some(persist) = persist.filter(|p| !p.is_zero()) else {
            return Ok(None);
        };
        let dir = control_dir().ok_or_else(|| HostsError::Share {
            dir: PathBuf::from("~/.cache/knockctl/ssh"),
            why: "neither XDG_RUNTIME_DIR nor HOME is set".into(),
        })?;
        private_dir(&dir).map_err(|why| HostsError::Share {
            dir: dir.clone(),
            why,
        })?;
        Ok(Some(Share { dir, persist }))
    }

    /// ssh's options: become or use the host's master, keep it `persist` after the last
    /// session.
    pub fn options(&self) -> Vec<String> {
        vec![
            "-o".into(),
            "ControlMaster=auto".into(),
            "-o".into(),
            format!("ControlPath={}/%C", self.dir.display()),
            "-o".into(),
            format!("ControlPersist={}s", self.persist.as_secs().max(1)),
        ]
    }
}

/// `$XDG_RUNTIME_DIR/knockctl-ssh`, else `$HOME/.cache/knockctl/ssh`.
pub fn control_dir() -> Option<PathBuf> {
    let nonempty = |v: std::ffi::OsString| (!v.is_empty()).then(|| PathBuf::from(v));
    std::env::var_os("XDG_RUNTIME_DIR")
        .and_then(nonempty)
        .map(|d| d.join("knockctl-ssh"))
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(nonempty)
                .map(|h| h.join(".cache").join("knockctl").join("ssh"))
        })
}

/// Makes `dir` (mode 0700) if missing; refuses a directory that is not ours, is reachable by
/// others, or whose path ssh would not take literally in `-o ControlPath=`.
fn private_dir(dir: &Path) -> Result<(), String> {
    let text = dir.to_str().ok_or("the path is not UTF-8")?;
    if !text.starts_with('/')
        || text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "%\"'\\".contains(c))
    {
        return Err("ssh would not take the path literally (spaces, quotes or %)".into());
    }
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create it: {e}"))?;
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
    let me = nix::unistd::Uid::effective().as_raw();
    if !meta.is_dir() {
        return Err("not a directory".into());
    }
    if meta.uid() != me {
        return Err(format!(
            "owned by uid {}, not by you (uid {me})",
            meta.uid()
        ));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "mode {:04o}: others could use the control sockets (chmod 700 it)",
            meta.permissions().mode() & 0o7777
        ));
    }
    Ok(())
}

/// Does ssh's configuration for a host (`ssh -G` output) choose sharing itself: a
/// `ControlMaster` other than `no`, or any `ControlPath`?
pub fn configured(config: &str) -> bool {
    config.lines().any(|line| {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("controlmaster"), Some(value)) => value != "false",
            (Some("controlpath"), Some(_)) => true,
            _ => false,
        }
    })
}

/// ssh's arguments to print the configuration for `target`: `-G`, then the URL's port and
/// user, `--` and the host.
pub fn config_args(target: &super::target::SshTarget) -> Vec<String> {
    let mut args = vec!["-G".to_string()];
    if let Some(port) = target.port {
        args.extend(["-p".to_string(), port.to_string()]);
    }
    if let Some(user) = &target.user {
        args.extend(["-l".to_string(), user.clone()]);
    }
    args.extend(["--".to_string(), target.host.clone()]);
    args
}

/// The sharing options for `target` through `program`: `share`'s unless ssh's own
/// configuration chooses sharing for it, or `ssh -G` fails (then none: it is not known
/// what the configuration says).
pub async fn options_for(
    program: &Path,
    target: &super::target::SshTarget,
    share: &Share,
) -> Vec<String> {
    let run = tokio::process::Command::new(program)
        .args(config_args(target))
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(CONFIG_WAIT, run).await {
        Ok(Ok(out))
            if out.status.success() && !configured(&String::from_utf8_lossy(&out.stdout)) =>
        {
            share.options()
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_own_sharing_wins() {
        let defaults = "user root\ncontrolmaster false\ncontrolpersist no\nport 22\n";
        assert!(!configured(defaults));
        for own in [
            "controlmaster auto\ncontrolpath /home/a/.ssh/cm-%C\n",
            "controlmaster true\n",
            "controlmaster false\ncontrolpath /tmp/s\n",
            "controlmaster autoask\n",
        ] {
            assert!(configured(own), "{own}");
        }
    }

    #[test]
    fn options_and_the_config_query() {
        let share = Share {
            dir: "/run/user/1000/knockctl-ssh".into(),
            persist: Duration::from_secs(60),
        };
        assert_eq!(
            share.options().join(" "),
            "-o ControlMaster=auto -o ControlPath=/run/user/1000/knockctl-ssh/%C \
             -o ControlPersist=60s"
        );
        let Ok(super::super::Target::Ssh(t)) =
            super::super::Target::parse("ssh://ops@node7:2222/run/k.sock")
        else {
            panic!("ssh url");
        };
        assert_eq!(config_args(&t).join(" "), "-G -p 2222 -l ops -- node7");
    }

    #[test]
    fn the_control_directory_is_private_and_ours() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("a").join("ssh");
        private_dir(&dir).expect("made");
        let mode = std::fs::metadata(&dir).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let err = private_dir(&dir).expect_err("open to others");
        assert!(err.contains("mode 0755"), "{err}");
        let file = tmp.path().join("file");
        std::fs::write(&file, "").expect("write");
        assert!(private_dir(&file).is_err());
        assert!(private_dir(&tmp.path().join("with space")).is_err());
        assert!(private_dir(&tmp.path().join("pct%d")).is_err());
        assert!(private_dir(Path::new("relative")).is_err());
    }
}
