//! How knockctl reaches a knockd: the [`Connector`] seam. A connector yields a byte stream
//! to knockd; everything above it (handshake, requests, fan-out, output) is the same for a
//! local socket, an ssh child, or a test's in-memory pipe.
//!
//! - [`UnixConnector`]: the control socket on this host.
//! - [`SshConnector`]: the system `ssh` (so `~/.ssh/config`, keys, agent, known_hosts,
//!   ProxyJump and ControlMaster apply), run as `ssh -o BatchMode=yes -T [-p PORT]
//!   [-l USER] -- HOST knockctl dial-stdio [--socket PATH]`; its stdin and stdout are the
//!   stream, its stderr is kept (bounded) to say why a host failed, in ssh's own words. The
//!   child is killed when the stream is dropped.

use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use knock_ipc::{connect_socket, BoxStream, ClientError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::{oneshot, watch};

use super::hosts::Host;
use super::share::{options_for, Share};
use super::target::{SshTarget, Target};

/// Most of ssh's stderr kept per connection (its messages are a line or a banner).
pub const STDERR_CAP: usize = 8 << 10;

/// How the remote `knockctl dial-stdio` starts its error lines (like every knockctl).
const REMOTE_PREFIX: &str = "knockctl: ";

/// How long to wait for ssh to finish writing its error once the stream has ended.
const STDERR_WAIT: Duration = Duration::from_millis(500);

/// A stream to knockd, and where to look when it fails.
pub struct Link {
    pub stream: BoxStream,
    /// The ssh child's stderr, for ssh links.
    pub stderr: Option<Stderr>,
}

/// Opens streams to one knockd.
pub trait Connector: Send + Sync {
    /// A new stream; errors before any byte is exchanged (socket missing, ssh not found).
    fn connect(&self) -> BoxFuture<'_, Result<Link, ClientError>>;
}

/// The control socket at a path on this host.
pub struct UnixConnector(pub PathBuf);

impl Connector for UnixConnector {
    fn connect(&self) -> BoxFuture<'_, Result<Link, ClientError>> {
        Box::pin(async move {
            let stream = connect_socket(&self.0).await?;
            Ok(Link {
                stream: Box::new(stream),
                stderr: None,
            })
        })
    }
}

/// A remote knockd through `ssh ... knockctl dial-stdio`.
pub struct SshConnector {
    /// The ssh program (`ssh`, found in PATH; `KNOCKCTL_SSH` overrides it).
    pub program: PathBuf,
    pub target: SshTarget,
    /// The remote knockctl (default: `knockctl` from the remote's PATH).
    pub knockctl: Option<String>,
    /// Connection sharing, when asked for ([`super::share`]).
    pub share: Option<Arc<Share>>,
    /// The sharing options, once ssh's configuration for the host has been read.
    sharing: tokio::sync::OnceCell<Vec<String>>,
}

impl SshConnector {
    pub fn new(
        program: PathBuf,
        target: SshTarget,
        knockctl: Option<String>,
        share: Option<Arc<Share>>,
    ) -> SshConnector {
        SshConnector {
            program,
            target,
            knockctl,
            share,
            sharing: tokio::sync::OnceCell::new(),
        }
    }

    /// ssh's arguments: never prompt (BatchMode), no terminal, the URL's port and user,
    /// `--` before the host, then the remote command.
    pub fn args(&self) -> Vec<String> {
        self.args_with(&[])
    }

    /// [`SshConnector::args`] with `extra` options before the port and user.
    fn args_with(&self, extra: &[String]) -> Vec<String> {
        let mut args: Vec<String> = ["-o", "BatchMode=yes", "-T"]
            .into_iter()
            .map(str::to_string)
            .collect();
        args.extend_from_slice(extra);
        if let Some(port) = self.target.port {
            args.extend(["-p".to_string(), port.to_string()]);
        }
        if let Some(user) = &self.target.user {
            args.extend(["-l".to_string(), user.clone()]);
        }
        args.push("--".to_string());
        args.push(self.target.host.clone());
        args.push(self.knockctl.clone().unwrap_or_else(|| "knockctl".into()));
        args.push("dial-stdio".to_string());
        if let Some(socket) = &self.target.socket {
            args.push("--socket".to_string());
            args.push(socket.display().to_string());
        }
        args
    }
}

impl Connector for SshConnector {
    fn connect(&self) -> BoxFuture<'_, Result<Link, ClientError>> {
        Box::pin(async move {
            let extra = match &self.share {
                Some(share) => {
                    self.sharing
                        .get_or_init(|| options_for(&self.program, &self.target, share))
                        .await
                }
                None => &Vec::new(),
            };
            let mut child = Command::new(&self.program)
                .args(self.args_with(extra))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|source| ClientError::Connect {
                    path: self.program.clone(),
                    source,
                })?;
            let (Some(stdin), Some(stdout), Some(stderr)) =
                (child.stdin.take(), child.stdout.take(), child.stderr.take())
            else {
                return Err(ClientError::Unexpected("ssh without its pipes".into()));
            };
            let (alive, dropped) = oneshot::channel();
            let capture = Stderr::watch(child, stderr, dropped);
            Ok(Link {
                stream: Box::new(SshStream {
                    _alive: alive,
                    stdin,
                    stdout,
                }),
                stderr: Some(capture),
            })
        })
    }
}

/// The connector for a host.
pub fn connector_for(host: &Host, ssh_program: &std::path::Path) -> Box<dyn Connector> {
    connector_sharing(host, ssh_program, None)
}

/// The connector for a host, sharing ssh connections as `share` says.
pub fn connector_sharing(
    host: &Host,
    ssh_program: &std::path::Path,
    share: Option<Arc<Share>>,
) -> Box<dyn Connector> {
    match &host.target {
        Target::Unix(path) => Box::new(UnixConnector(path.clone())),
        Target::Ssh(target) => Box::new(SshConnector::new(
            ssh_program.to_path_buf(),
            target.clone(),
            host.knockctl.clone(),
            share,
        )),
    }
}

/// An ssh child's stdout (read) and stdin (write). Dropping it drops `_alive`, which tells
/// the task watching the child to kill it.
struct SshStream {
    _alive: oneshot::Sender<()>,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

impl AsyncRead for SshStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdout).poll_read(cx, buf)
    }
}

impl AsyncWrite for SshStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stdin).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdin).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdin).poll_shutdown(cx)
    }
}

/// What an ssh child wrote on stderr (the first [`STDERR_CAP`] bytes) and how it exited,
/// from a task of its own that reads the pipe (so ssh never blocks on it) and kills the
/// child when its stream is dropped.
#[derive(Clone)]
pub struct Stderr {
    text: Arc<Mutex<Vec<u8>>>,
    /// Some(exit code, None if killed) once the child is gone and its stderr read.
    done: watch::Receiver<Option<Option<i32>>>,
}

impl Stderr {
    fn watch(mut child: Child, mut from: ChildStderr, dropped: oneshot::Receiver<()>) -> Stderr {
        let text = Arc::new(Mutex::new(Vec::new()));
        let (tx, done) = watch::channel(None);
        let sink = Arc::clone(&text);
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let mut dropped = std::pin::pin!(dropped);
            let mut killed = false;
            let code = loop {
                tokio::select! {
                    read = from.read(&mut buf) => match read {
                        Ok(n @ 1..) => keep(&sink, &buf[..n]),
                        // EOF: ssh exited (or handed stderr to a ControlPersist master).
                        _ => break child.wait().await.ok().and_then(|s| s.code()),
                    },
                    _ = &mut dropped, if !killed => {
                        killed = true;
                        let _ = child.start_kill();
                    }
                }
            };
            let _ = tx.send(Some(code));
        });
        Stderr { text, done }
    }

    /// Reads `from` to its end (for tests: a fake ssh's stderr).
    #[cfg(test)]
    fn capture<R: AsyncRead + Unpin + Send + 'static>(mut from: R) -> Stderr {
        let text = Arc::new(Mutex::new(Vec::new()));
        let (tx, done) = watch::channel(None);
        let sink = Arc::clone(&text);
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            while let Ok(n @ 1..) = from.read(&mut buf).await {
                keep(&sink, &buf[..n]);
            }
            let _ = tx.send(Some(Some(255)));
        });
        Stderr { text, done }
    }

    /// Waits (briefly: a ControlPersist master can hold stderr open) until ssh is gone.
    async fn finished(&self) -> Option<Option<i32>> {
        let mut done = self.done.clone();
        let finished = tokio::time::timeout(STDERR_WAIT, done.wait_for(Option::is_some))
            .await
            .ok()
            .and_then(|r| r.ok().map(|code| *code));
        finished.flatten()
    }

    /// ssh's exit code once it is gone: the remote command's, or 255 for ssh's own errors.
    pub async fn exit_code(&self) -> Option<i32> {
        self.finished().await.flatten()
    }

    /// The text ssh wrote: trimmed, lines joined by `; `, control characters escaped (a
    /// remote host chooses what it prints), the remote knockctl's own `knockctl: ` taken off
    /// its lines (the console prints `knockctl: HOST: ` before them). None when it is empty.
    pub async fn text(&self) -> Option<String> {
        let _ = self.finished().await;
        let bytes = self
            .text
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<String> = text
            .lines()
            .map(str::trim)
            .map(|l| l.strip_prefix(REMOTE_PREFIX).map_or(l, str::trim_start))
            .filter(|l| !l.is_empty())
            .map(|l| crate::present::visible(l).into_owned())
            .collect();
        (!lines.is_empty()).then(|| lines.join("; "))
    }
}

/// Appends what fits under [`STDERR_CAP`].
fn keep(sink: &Mutex<Vec<u8>>, bytes: &[u8]) {
    let mut kept = sink.lock().unwrap_or_else(PoisonError::into_inner);
    let room = STDERR_CAP.saturating_sub(kept.len());
    kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector(url: &str, knockctl: Option<&str>) -> SshConnector {
        let Ok(Target::Ssh(target)) = Target::parse(url) else {
            panic!("{url} is not ssh");
        };
        SshConnector::new("ssh".into(), target, knockctl.map(str::to_string), None)
    }

    #[test]
    fn ssh_never_prompts_and_runs_dial_stdio() {
        assert_eq!(
            connector("ssh://bastion1", None).args().join(" "),
            "-o BatchMode=yes -T -- bastion1 knockctl dial-stdio"
        );
        assert_eq!(
            connector("ssh://ops@node7:2222/run/k.sock", Some("/opt/knockctl"))
                .args()
                .join(" "),
            "-o BatchMode=yes -T -p 2222 -l ops -- node7 /opt/knockctl dial-stdio --socket /run/k.sock"
        );
    }

    #[tokio::test]
    async fn stderr_is_kept_bounded_and_escaped() {
        let err =
            Stderr::capture(&b"\n ssh: connect to host x port 22: Connection refused\r\n"[..]);
        assert_eq!(
            err.text().await.as_deref(),
            Some("ssh: connect to host x port 22: Connection refused")
        );
        let err = Stderr::capture(&b"a\x1b[2Jb\nsecond line\n"[..]);
        assert_eq!(
            err.text().await.as_deref(),
            Some("a\\u{1b}[2Jb; second line")
        );
        let err = Stderr::capture(
            &b"knockctl: knockd is not running: no socket at /run/k.sock\nssh: knockctl: x\n"[..],
        );
        assert_eq!(
            err.text().await.as_deref(),
            Some("knockd is not running: no socket at /run/k.sock; ssh: knockctl: x")
        );
        let big = vec![b'x'; 3 * STDERR_CAP];
        let err = Stderr::capture(std::io::Cursor::new(big));
        assert_eq!(err.text().await.map(|t| t.len()), Some(STDERR_CAP));
        assert_eq!(Stderr::capture(&b""[..]).text().await, None);
    }

    #[tokio::test]
    async fn a_missing_ssh_program_is_a_connect_error() {
        let mut c = connector("ssh://h", None);
        c.program = "/nonexistent/ssh".into();
        let Err(err) = c.connect().await else {
            panic!("connected");
        };
        assert!(err.to_string().contains("/nonexistent/ssh"), "{err}");
    }

    #[tokio::test]
    async fn a_dropped_stream_kills_ssh() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("pid");
        let fake = dir.path().join("ssh");
        let script = format!(
            "#!/bin/sh\necho $$ > {}\nexec sleep 30\n",
            pidfile.display()
        );
        std::fs::write(&fake, script).expect("write");
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut c = connector("ssh://h", None);
        c.program = fake;
        let link = c.connect().await.expect("spawned");
        let mut pid = String::new();
        for _ in 0..500 {
            pid = std::fs::read_to_string(&pidfile).unwrap_or_default();
            if pid.ends_with('\n') {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let proc = PathBuf::from(format!("/proc/{}", pid.trim()));
        assert!(proc.exists(), "the fake ssh runs");
        drop(link);
        let mut gone = false;
        for _ in 0..500 {
            // A zombie until reaped: gone, or no longer sleeping.
            let stat = std::fs::read_to_string(proc.join("stat")).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z") {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(gone, "ssh still runs after its stream was dropped");
    }
}
