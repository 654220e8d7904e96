//! The hosts file (`~/.config/knockctl/hosts.toml`): named hosts and groups of them, chosen
//! with `--hosts NAME[,NAME]`.
//!
//! ```toml
//! [hosts]
//! bastion1 = "ssh://root@bastion1"
//! node7 = { url = "ssh://ops@node7:2222", knockctl = "/usr/local/bin/knockctl" }
//!
//! [groups]
//! prod = ["bastion1", "node7"]
//!
//! [ssh]
//! persist = 60    # share one ssh connection per host, kept 60 s (see `super::share`)
//! ```
//!
//! `all` means every host unless the file defines a host or group of that name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::target::{safe_word, Target, TargetError};

/// One knockd to talk to, with the name output shows for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub target: Target,
    /// The remote `knockctl` (ssh targets): None runs `knockctl` from the remote's PATH.
    pub knockctl: Option<String>,
}

impl Host {
    /// Hosts for `-H` URLs, named after their host part (see [`super::target::names`]).
    pub fn from_urls(urls: &[String]) -> Result<Vec<Host>, TargetError> {
        let targets = urls
            .iter()
            .map(|u| Target::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        let names = super::target::names(&targets);
        Ok(names
            .into_iter()
            .zip(targets)
            .map(|(name, target)| Host {
                name,
                target,
                knockctl: None,
            })
            .collect())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("--hosts needs a hosts file: set HOME or XDG_CONFIG_HOME, or use --hosts-file")]
    NoPath,
    #[error("cannot read the hosts file {path}: {source} (write it, or use -H URL)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("hosts file {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("hosts file {path}: host '{name}': {source}")]
    Url {
        path: PathBuf,
        name: String,
        source: TargetError,
    },
    #[error("hosts file {path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("cannot share ssh connections: control socket directory {}: {why}", .dir.display())]
    Share { dir: PathBuf, why: String },
    #[error("no host or group '{name}' in {path} (it has: {known})")]
    Unknown {
        name: String,
        path: PathBuf,
        known: String,
    },
}

/// Which hosts a command talks to: the `-H` URLs and the `--hosts` names of the hosts file
/// (in that order); without either, the URLs of `KNOCKCTL_HOST` (comma-separated); without
/// that, the local control socket `socket`.
pub fn resolve(
    urls: &[String],
    names: &[String],
    hosts_file: Option<&Path>,
    env_hosts: Option<&str>,
    socket: &Path,
) -> Result<Vec<Host>, HostsError> {
    let mut hosts = Host::from_urls(urls)?;
    if !names.is_empty() {
        let path = match hosts_file {
            Some(path) => path.to_path_buf(),
            None => default_path().ok_or(HostsError::NoPath)?,
        };
        for host in HostsFile::load(&path)?.select(names)? {
            if let Some(twin) = hosts.iter_mut().find(|h| h.name == host.name) {
                // A -H URL named like a host of the file: the URL shows in full.
                twin.name = twin.target.to_string();
            }
            hosts.push(host);
        }
    }
    if hosts.is_empty() {
        let env: Vec<String> = env_hosts
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .collect();
        hosts = Host::from_urls(&env)?;
    }
    if hosts.is_empty() {
        hosts.push(Host {
            name: "local".to_string(),
            target: Target::Unix(socket.to_path_buf()),
            knockctl: None,
        });
    }
    Ok(hosts)
}

/// How long shared ssh connections stay ([`super::share`]): `--ssh-persist` (or
/// `KNOCKCTL_SSH_PERSIST`) if given, else the hosts file's `[ssh] persist` when `--hosts`
/// uses the file; None or zero: no sharing.
pub fn persist(args: &crate::ctl::Args) -> Result<Option<std::time::Duration>, HostsError> {
    if let Some(secs) = args.ssh_persist {
        return Ok(Some(std::time::Duration::from_secs(secs)));
    }
    if args.hosts.is_empty() {
        return Ok(None);
    }
    let path = match args.hosts_file.as_deref() {
        Some(path) => path.to_path_buf(),
        None => default_path().ok_or(HostsError::NoPath)?,
    };
    Ok(HostsFile::load(&path)?.persist)
}

/// The hosts `args` choose ([`resolve`] with `KNOCKCTL_HOST` from the environment).
pub fn chosen(args: &crate::ctl::Args) -> Result<Vec<Host>, HostsError> {
    let env_hosts = std::env::var("KNOCKCTL_HOST").ok();
    resolve(
        &args.host,
        &args.hosts,
        args.hosts_file.as_deref(),
        env_hosts.as_deref(),
        &args.socket,
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    hosts: BTreeMap<String, Entry>,
    #[serde(default)]
    groups: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    ssh: SshSection,
}

/// `[ssh]`: how knockctl uses ssh for this file's hosts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SshSection {
    /// Seconds an ssh master connection stays after its last session (0: no sharing).
    persist: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Entry {
    Url(String),
    Full(FullEntry),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FullEntry {
    url: String,
    knockctl: Option<String>,
}

/// A parsed hosts file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsFile {
    path: PathBuf,
    /// In name order.
    hosts: Vec<Host>,
    groups: BTreeMap<String, Vec<String>>,
    /// `[ssh] persist`: share ssh connections, masters kept this long.
    pub persist: Option<std::time::Duration>,
}

/// `$XDG_CONFIG_HOME/knockctl/hosts.toml`, else `$HOME/.config/knockctl/hosts.toml`.
pub fn default_path() -> Option<PathBuf> {
    let nonempty = |v: std::ffi::OsString| (!v.is_empty()).then(|| PathBuf::from(v));
    std::env::var_os("XDG_CONFIG_HOME")
        .and_then(nonempty)
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(nonempty)
                .map(|h| h.join(".config"))
        })
        .map(|dir| dir.join("knockctl").join("hosts.toml"))
}

impl HostsFile {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<HostsFile, HostsError> {
        let text = std::fs::read_to_string(path).map_err(|source| HostsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        HostsFile::parse(path, &text)
    }

    /// Checks `text`, read from `path` (named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<HostsFile, HostsError> {
        let path = path.to_path_buf();
        let file: File = toml::from_str(text).map_err(|e| HostsError::Syntax {
            path: path.clone(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let invalid = |what: String| HostsError::Invalid {
            path: path.clone(),
            what,
        };
        let mut hosts = Vec::new();
        for (name, entry) in file.hosts {
            if !safe_word(&name) || name.contains(',') {
                return Err(invalid(format!(
                    "host name '{name}': use letters, digits, '.', '_', '-'"
                )));
            }
            let (url, knockctl) = match entry {
                Entry::Url(url) => (url, None),
                Entry::Full(FullEntry { url, knockctl }) => (url, knockctl),
            };
            if let Some(k) = knockctl.as_deref().filter(|k| !safe_word(k)) {
                return Err(invalid(format!(
                    "host '{name}': knockctl '{k}' is not a plain path"
                )));
            }
            let target = Target::parse(&url).map_err(|source| HostsError::Url {
                path: path.clone(),
                name: name.clone(),
                source,
            })?;
            hosts.push(Host {
                name,
                target,
                knockctl,
            });
        }
        for (group, members) in &file.groups {
            if hosts.iter().any(|h| &h.name == group) {
                return Err(invalid(format!("'{group}' is both a host and a group")));
            }
            if let Some(m) = members
                .iter()
                .find(|m| !hosts.iter().any(|h| &h.name == *m))
            {
                return Err(invalid(format!("group '{group}': no host '{m}'")));
            }
        }
        let persist = match file.ssh.persist {
            Some(secs) if secs > 86_400 => {
                return Err(invalid(format!(
                    "[ssh] persist = {secs}: use 0 (no sharing) to 86400 seconds"
                )))
            }
            secs => secs.map(std::time::Duration::from_secs),
        };
        Ok(HostsFile {
            path,
            hosts,
            groups: file.groups,
            persist,
        })
    }

    /// The hosts `selection` names (`NAME[,NAME]`, hosts or groups), each once, in the
    /// order named (a group's in the group's order).
    pub fn select(&self, selection: &[String]) -> Result<Vec<Host>, HostsError> {
        let mut out: Vec<Host> = Vec::new();
        let mut add = |host: &Host| {
            if !out.iter().any(|h| h.name == host.name) {
                out.push(host.clone());
            }
        };
        for name in selection.iter().flat_map(|s| s.split(',')).map(str::trim) {
            if let Some(host) = self.host(name) {
                add(host);
            } else if let Some(members) = self.groups.get(name) {
                members
                    .iter()
                    .filter_map(|m| self.host(m))
                    .for_each(&mut add);
            } else if name == "all" {
                self.hosts.iter().for_each(&mut add);
            } else {
                return Err(HostsError::Unknown {
                    name: name.to_string(),
                    path: self.path.clone(),
                    known: self.known(),
                });
            }
        }
        Ok(out)
    }

    fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// Host and group names, for an error message.
    fn known(&self) -> String {
        let names: Vec<&str> = self
            .hosts
            .iter()
            .map(|h| h.name.as_str())
            .chain(self.groups.keys().map(String::as_str))
            .collect();
        if names.is_empty() {
            "nothing".to_string()
        } else {
            names.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[hosts]
bastion1 = "ssh://root@bastion1"
node7 = { url = "ssh://ops@node7:2222/run/knockd/knockd.sock", knockctl = "/opt/k/knockctl" }
local = "unix:///run/knockd/knockd.sock"

[groups]
prod = ["node7", "bastion1"]
"#;

    fn file() -> HostsFile {
        HostsFile::parse(Path::new("hosts.toml"), FILE).expect("valid")
    }

    fn names(hosts: &[Host]) -> Vec<&str> {
        hosts.iter().map(|h| h.name.as_str()).collect()
    }

    #[test]
    fn selects_hosts_and_groups_once_each_in_order() {
        let f = file();
        let sel = |s: &[&str]| {
            let owned: Vec<String> = s.iter().map(|x| x.to_string()).collect();
            f.select(&owned).expect("known")
        };
        assert_eq!(names(&sel(&["prod"])), ["node7", "bastion1"]);
        assert_eq!(
            names(&sel(&["local,prod", "node7"])),
            ["local", "node7", "bastion1"]
        );
        assert_eq!(names(&sel(&["all"])), ["bastion1", "local", "node7"]);
        assert_eq!(f.persist, None);
        let shared = HostsFile::parse(Path::new("h.toml"), "[ssh]\npersist = 60\n").expect("ok");
        assert_eq!(shared.persist, Some(std::time::Duration::from_secs(60)));
        let node7 = &sel(&["node7"])[0];
        assert_eq!(node7.knockctl.as_deref(), Some("/opt/k/knockctl"));
        assert_eq!(
            node7.target.to_string(),
            "ssh://ops@node7:2222/run/knockd/knockd.sock"
        );
    }

    #[test]
    fn an_unknown_name_lists_the_known_ones() {
        let err = file().select(&["web".to_string()]).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "no host or group 'web' in hosts.toml (it has: bastion1, local, node7, prod)"
        );
    }

    #[test]
    fn bad_files_say_what_and_where() {
        let table: &[(&str, &str)] = &[
            (
                "[hosts]\nx = \"ftp://x\"\n",
                "host 'x': 'ftp://x': a host is unix://",
            ),
            ("[hosts]\nx = \n", "hosts.toml: TOML parse error at line 2"),
            ("[hostz]\n", "unknown field `hostz`"),
            ("[groups]\ng = [\"nope\"]\n", "group 'g': no host 'nope'"),
            (
                "[hosts]\ng = \"ssh://g\"\n[groups]\ng = [\"g\"]\n",
                "'g' is both a host and a group",
            ),
            (
                "[hosts]\nx = { url = \"ssh://x\", knockctl = \"k; rm\" }\n",
                "knockctl 'k; rm' is not a plain path",
            ),
            ("[hosts]\n\"a b\" = \"ssh://x\"\n", "host name 'a b'"),
            ("[ssh]\npersist = 100000\n", "use 0 (no sharing) to 86400"),
            ("[ssh]\nperist = 6\n", "unknown field `perist`"),
        ];
        for (text, want) in table {
            let err = HostsFile::parse(Path::new("hosts.toml"), text)
                .expect_err(text)
                .to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn urls_then_names_else_the_environment_else_the_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hosts.toml");
        std::fs::write(&path, FILE).expect("write");
        let socket = Path::new("/run/k.sock");
        let urls = ["ssh://bastion1".to_string(), "ssh://web".to_string()];
        let prod = ["prod".to_string()];
        let got = resolve(&urls, &prod, Some(&path), Some("ssh://env"), socket).expect("ok");
        assert_eq!(
            names(&got),
            ["ssh://bastion1", "web", "node7", "bastion1"],
            "a -H URL named like a file's host shows in full"
        );
        let got = resolve(&[], &[], None, Some(" ssh://a, ssh://b:22 ,"), socket).expect("ok");
        assert_eq!(names(&got), ["a", "b"]);
        let got = resolve(&[], &[], None, None, socket).expect("ok");
        assert_eq!(got[0].target, Target::Unix(socket.to_path_buf()));
        let missing = dir.path().join("none.toml");
        let err = resolve(&[], &prod, Some(&missing), None, socket).expect_err("no file");
        assert!(err.to_string().contains("none.toml"), "{err}");
    }

    #[test]
    fn ssh_persist_flag_first_then_the_file_when_hosts_come_from_it() {
        use clap::Parser;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hosts.toml");
        std::fs::write(&path, format!("{FILE}\n[ssh]\npersist = 60\n")).expect("write");
        let file = path.to_str().expect("utf-8");
        let args = |extra: &[&str]| {
            let mut argv = vec!["knockctl", "--hosts-file", file];
            argv.extend_from_slice(extra);
            argv.push("list");
            crate::ctl::Args::try_parse_from(argv).expect("valid")
        };
        let secs = |s: u64| Some(std::time::Duration::from_secs(s));
        assert_eq!(persist(&args(&["--hosts", "prod"])).expect("ok"), secs(60));
        assert_eq!(
            persist(&args(&["--hosts", "prod", "--ssh-persist", "0"])).expect("ok"),
            secs(0)
        );
        assert_eq!(persist(&args(&["-H", "ssh://a"])).expect("ok"), None);
        assert_eq!(
            persist(&args(&["-H", "ssh://a", "--ssh-persist", "5"])).expect("ok"),
            secs(5)
        );
    }

    #[test]
    fn urls_become_hosts_named_after_their_host() {
        let hosts = Host::from_urls(&[
            "ssh://root@bastion1".to_string(),
            "ssh://ops@node7:2222/run/knockd/knockd.sock".to_string(),
        ])
        .expect("valid");
        assert_eq!(names(&hosts), ["bastion1", "node7"]);
        assert!(Host::from_urls(&["nope".to_string()]).is_err());
    }
}
