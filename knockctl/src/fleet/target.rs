//! Where a knockd is: `unix:///path/to.sock` (a local control socket) or
//! `ssh://[user@]host[:port][/remote/socket/path]` (a remote one, reached through ssh and
//! `knockctl dial-stdio` on that host). Pure: text in, values out.

use std::fmt;
use std::path::PathBuf;

/// A knockd to talk to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A control socket on this host.
    Unix(PathBuf),
    /// A control socket on another host, through ssh.
    Ssh(SshTarget),
}

/// `ssh://[user@]host[:port][/remote/socket/path]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub user: Option<String>,
    /// A name ssh resolves (so `~/.ssh/config` aliases work) or an address (`[::1]` in URLs).
    pub host: String,
    pub port: Option<u16>,
    /// The remote control socket; None: the remote knockctl's default.
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("'{0}': a host is unix:///path/to.sock or ssh://[user@]host[:port][/socket/path]")]
    Scheme(String),
    #[error("'{0}': unix:// needs an absolute path (unix:///run/knockd/knockd.sock)")]
    UnixPath(String),
    #[error("'{0}': no host name after ssh://")]
    NoHost(String),
    #[error("'{url}': bad port '{port}' (a number from 1 to 65535)")]
    Port { url: String, port: String },
    #[error("'{url}': '{part}' contains a character ssh would not take literally")]
    Unsafe { url: String, part: String },
}

/// What a user, host or socket path of an ssh URL may contain: these words end up on ssh's
/// command line and in the remote shell's command, so nothing a shell or ssh would
/// interpret (no spaces, quotes, `$`, `;`, a leading `-`...).
pub fn safe_word(part: &str) -> bool {
    !part.is_empty()
        && !part.starts_with('-')
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:@%+~".contains(c))
}

impl Target {
    /// Parses a `-H` URL or a hosts-file `url`.
    pub fn parse(url: &str) -> Result<Target, TargetError> {
        if let Some(path) = url.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(TargetError::UnixPath(url.to_string()));
            }
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        let Some(rest) = url.strip_prefix("ssh://") else {
            return Err(TargetError::Scheme(url.to_string()));
        };
        let (authority, socket) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((user, hostport)) => (Some(user), hostport),
            None => (None, authority),
        };
        let (host, port) = split_port(hostport);
        if host.is_empty() {
            return Err(TargetError::NoHost(url.to_string()));
        }
        let port =
            match port {
                None => None,
                Some(p) => Some(p.parse::<u16>().ok().filter(|&n| n > 0).ok_or_else(|| {
                    TargetError::Port {
                        url: url.to_string(),
                        port: p.to_string(),
                    }
                })?),
            };
        let socket = socket.filter(|s| *s != "/");
        for part in [user, Some(host), socket].into_iter().flatten() {
            if !safe_word(part) {
                return Err(TargetError::Unsafe {
                    url: url.to_string(),
                    part: part.to_string(),
                });
            }
        }
        Ok(Target::Ssh(SshTarget {
            user: user.map(str::to_string),
            host: host.to_string(),
            port,
            socket: socket.map(PathBuf::from),
        }))
    }

    /// The name output shows for this target when nothing better is known: the host of an
    /// ssh URL, the path of a socket.
    pub fn short_name(&self) -> String {
        match self {
            Target::Unix(path) if path == std::path::Path::new(knock_ipc::DEFAULT_SOCKET) => {
                "local".to_string()
            }
            Target::Unix(path) => path.display().to_string(),
            Target::Ssh(ssh) => ssh.host.clone(),
        }
    }

    /// Like [`Target::short_name`], with the port: to tell apart two URLs on one host.
    pub fn longer_name(&self) -> String {
        match self {
            Target::Ssh(SshTarget {
                host,
                port: Some(port),
                ..
            }) => format!("{host}:{port}"),
            other => other.short_name(),
        }
    }
}

/// `host:port`, `[v6]:port`, `host`, `[v6]`, `v6` (several colons, no brackets: no port).
fn split_port(hostport: &str) -> (&str, Option<&str>) {
    if let Some(inner) = hostport.strip_prefix('[') {
        return match inner.split_once(']') {
            Some((host, rest)) => (host, rest.strip_prefix(':')),
            None => (hostport, None),
        };
    }
    match hostport.split_once(':') {
        Some((host, port)) if !port.contains(':') => (host, Some(port)),
        _ => (hostport, None),
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Unix(path) => write!(f, "unix://{}", path.display()),
            Target::Ssh(ssh) => {
                write!(f, "ssh://")?;
                if let Some(user) = &ssh.user {
                    write!(f, "{user}@")?;
                }
                if ssh.host.contains(':') {
                    write!(f, "[{}]", ssh.host)?;
                } else {
                    write!(f, "{}", ssh.host)?;
                }
                if let Some(port) = ssh.port {
                    write!(f, ":{port}")?;
                }
                if let Some(socket) = &ssh.socket {
                    write!(f, "{}", socket.display())?;
                }
                Ok(())
            }
        }
    }
}

/// Names for a list of targets, in order: each target's host, or host:port when two share a
/// host, or the whole URL when even that is shared.
pub fn names(targets: &[Target]) -> Vec<String> {
    let count =
        |name: &dyn Fn(&Target) -> String, n: &str| targets.iter().filter(|t| name(t) == n).count();
    targets
        .iter()
        .map(|t| {
            let short = t.short_name();
            if count(&Target::short_name, &short) == 1 {
                return short;
            }
            let longer = t.longer_name();
            if count(&Target::longer_name, &longer) == 1 {
                longer
            } else {
                t.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssh(user: Option<&str>, host: &str, port: Option<u16>, socket: Option<&str>) -> Target {
        Target::Ssh(SshTarget {
            user: user.map(str::to_string),
            host: host.to_string(),
            port,
            socket: socket.map(PathBuf::from),
        })
    }

    #[test]
    fn parses_the_url_forms() {
        let table: &[(&str, Target)] = &[
            (
                "unix:///run/knockd/knockd.sock",
                Target::Unix("/run/knockd/knockd.sock".into()),
            ),
            ("ssh://bastion1", ssh(None, "bastion1", None, None)),
            (
                "ssh://root@bastion1",
                ssh(Some("root"), "bastion1", None, None),
            ),
            (
                "ssh://ops@node7:2222/run/knockd/knockd.sock",
                ssh(
                    Some("ops"),
                    "node7",
                    Some(2222),
                    Some("/run/knockd/knockd.sock"),
                ),
            ),
            ("ssh://node7/", ssh(None, "node7", None, None)),
            ("ssh://[fd00::7]:22", ssh(None, "fd00::7", Some(22), None)),
            ("ssh://fd00::7", ssh(None, "fd00::7", None, None)),
            (
                "ssh://a@b@10.0.0.1",
                ssh(Some("a@b"), "10.0.0.1", None, None),
            ),
        ];
        for (url, want) in table {
            let got = Target::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(&got, want, "{url}");
        }
    }

    #[test]
    fn display_gives_back_an_equivalent_url() {
        for url in [
            "unix:///tmp/k.sock",
            "ssh://bastion1",
            "ssh://ops@node7:2222/run/knockd/knockd.sock",
            "ssh://[fd00::7]:22",
        ] {
            let target = Target::parse(url).expect("valid");
            assert_eq!(target.to_string(), url);
            assert_eq!(Target::parse(&target.to_string()), Ok(target));
        }
    }

    #[test]
    fn refuses_what_is_not_a_host_or_not_safe_on_a_command_line() {
        let table: &[(&str, &str)] = &[
            ("bastion1", "a host is unix://"),
            ("http://x", "a host is unix://"),
            ("unix://relative.sock", "absolute path"),
            ("ssh://", "no host name"),
            ("ssh://root@", "no host name"),
            ("ssh://h:0", "bad port '0'"),
            ("ssh://h:99999", "bad port '99999'"),
            ("ssh://h:x", "bad port 'x'"),
            ("ssh://-oProxyCommand=x", "would not take literally"),
            ("ssh://h/run/k.sock;reboot", "would not take literally"),
            ("ssh://h/$(id)", "would not take literally"),
            ("ssh://us er@h", "would not take literally"),
            ("ssh://h/a b", "would not take literally"),
        ];
        for (url, want) in table {
            let err = Target::parse(url).expect_err(url).to_string();
            assert!(err.contains(want), "{url}: {err}");
        }
    }

    #[test]
    fn names_are_short_unless_two_targets_share_them() {
        let targets: Vec<Target> = [
            "ssh://root@bastion1",
            "ssh://node7:22",
            "ssh://node7:2222",
            "ssh://a@web:22/x.sock",
            "ssh://b@web:22/y.sock",
            "unix:///run/knockd/knockd.sock",
            "unix:///tmp/k.sock",
        ]
        .iter()
        .map(|u| Target::parse(u).expect("valid"))
        .collect();
        assert_eq!(
            names(&targets),
            [
                "bastion1",
                "node7:22",
                "node7:2222",
                "ssh://a@web:22/x.sock",
                "ssh://b@web:22/y.sock",
                "local",
                "/tmp/k.sock"
            ]
        );
    }
}
