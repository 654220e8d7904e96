//! Running one child process with a time limit: its own process group (so a shell's children
//! go too), stdin from a buffer or /dev/null, stderr captured (first 500 characters), and
//! SIGKILL to the whole group when the limit passes. Nothing here blocks a thread.

use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Firewall programs (`iptables -w 5`, `iptables-restore -w 5`) are killed after this.
pub const FIREWALL_TIME_LIMIT: Duration = Duration::from_secs(10);
/// How long `iptables -w` / `iptables-restore -w` waits for the xtables lock, in seconds.
pub const XTABLES_WAIT_SECS: u32 = 5;
/// A door's `Start_Command`/`Stop_Command` is killed after this.
pub const COMMAND_TIME_LIMIT: Duration = Duration::from_secs(30);

/// How a child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Exit status (`None`: killed by a signal), and the start of its stderr.
    Status { code: Option<i32>, stderr: String },
    /// Still running at the time limit: killed (with its process group).
    TimedOut(Duration),
    /// Could not be started.
    SpawnError(String),
}

impl Exit {
    pub fn success(&self) -> bool {
        matches!(self, Exit::Status { code: Some(0), .. })
    }
}

/// Run `argv` (program + arguments, no shell), feeding `stdin`, killed after `limit`.
pub async fn run(argv: &[String], stdin: Option<&[u8]>, limit: Duration) -> Exit {
    run_inner(argv, stdin, limit, false).await.0
}

/// [`run`], also returning what the child wrote to stdout (a listing such as `iptables -S`).
pub async fn run_output(argv: &[String], limit: Duration) -> (Exit, Vec<u8>) {
    run_inner(argv, None, limit, true).await
}

async fn run_inner(
    argv: &[String],
    stdin: Option<&[u8]>,
    limit: Duration,
    stdout: bool,
) -> (Exit, Vec<u8>) {
    let Some((program, args)) = argv.split_first() else {
        return (Exit::SpawnError("empty command".to_string()), Vec::new());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(if stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return (
                Exit::SpawnError(format!("{}: {e}", argv.join(" "))),
                Vec::new(),
            )
        }
    };
    let pgid = child.id();
    let input = stdin.map(<[u8]>::to_vec);
    let mut pipe = child.stdin.take();
    let work = async move {
        if let (Some(p), Some(data)) = (pipe.as_mut(), input) {
            // A child that exits without reading everything closes the pipe: not our error.
            let _ = p.write_all(&data).await;
        }
        drop(pipe);
        child.wait_with_output().await
    };
    match tokio::time::timeout(limit, work).await {
        Ok(Ok(out)) => (
            Exit::Status {
                code: out.status.code(),
                stderr: String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .chars()
                    .take(500)
                    .collect(),
            },
            out.stdout,
        ),
        Ok(Err(e)) => (
            Exit::SpawnError(format!("{}: {e}", argv.join(" "))),
            Vec::new(),
        ),
        Err(_) => {
            // The child itself went with the dropped future (kill_on_drop); its group too.
            if let Some(pid) = pgid.and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            (Exit::TimedOut(limit), Vec::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(s: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), s.into()]
    }

    #[tokio::test]
    async fn status_stderr_stdin_and_spawn_errors() {
        assert!(run(&sh("true"), None, Duration::from_secs(5))
            .await
            .success());
        assert_eq!(
            run(&sh("echo oops >&2; exit 3"), None, Duration::from_secs(5)).await,
            Exit::Status {
                code: Some(3),
                stderr: "oops".into()
            }
        );
        let e = run(
            &sh("read l; test \"$l\" = hello"),
            Some(b"hello\n"),
            Duration::from_secs(5),
        )
        .await;
        assert!(e.success(), "{e:?}");
        assert!(matches!(
            run(
                &["/nonexistent/x".to_string()],
                None,
                Duration::from_secs(5)
            )
            .await,
            Exit::SpawnError(_)
        ));
    }

    #[tokio::test]
    async fn a_hung_command_and_its_children_are_killed_at_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("child-ran");
        let script = format!("(sleep 1; touch {}) & sleep 30", marker.display());
        let t0 = std::time::Instant::now();
        let e = run(&sh(&script), None, Duration::from_millis(300)).await;
        assert_eq!(e, Exit::TimedOut(Duration::from_millis(300)));
        assert!(t0.elapsed() < Duration::from_secs(5));
        // The background child was in the same group: killed, it never touches the marker.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!marker.exists(), "the shell's child survived the kill");
    }
}
