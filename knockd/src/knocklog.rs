//! knockd-compatible log lines: the `LogFile` (`[YYYY-MM-DD HH:MM] msg`), syslog (ident
//! `knockd`, LOG_USER, LOG_NOTICE, no PID) and tracing (stderr in the foreground).
//! Unlike knockd 0.8, no message ever carries a trailing newline.

use std::fs::File;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Where the knockd-format lines go.
pub trait LogSink: Send {
    fn line(&mut self, msg: &str);
    /// A line that happened at `at` (written later, by [`crate::logwriter::LogWriter`]'s
    /// thread): the timestamp is the event's, not the write's.
    fn line_at(&mut self, _at: SystemTime, msg: &str) {
        self.line(msg);
    }
    /// Lines lost so far (a full queue, a full syslog socket).
    fn dropped(&self) -> u64 {
        0
    }
    /// Reopen the sinks with (possibly new) settings: on reload, so logrotate can move the
    /// file away and SIGHUP knockd, like knockd 0.8.
    fn reopen(&mut self, _log_file: Option<&Path>, _use_syslog: bool) -> std::io::Result<()> {
        Ok(())
    }
}

/// Format one LogFile line (knockd 0.8: local time, minute resolution).
pub fn file_line(now: chrono::DateTime<chrono::Local>, msg: &str) -> String {
    format!("[{}] {}\n", now.format("%Y-%m-%d %H:%M"), msg)
}

/// Format one syslog datagram: `<13>Mmm dd hh:mm:ss knockd: msg` (RFC 3164, LOG_USER|LOG_NOTICE).
pub fn syslog_line(now: chrono::DateTime<chrono::Local>, msg: &str) -> String {
    format!("<13>{} knockd: {}", now.format("%b %e %H:%M:%S"), msg)
}

pub struct KnockLog {
    file: Option<(PathBuf, File)>,
    syslog: Option<UnixDatagram>,
    /// Syslog lines dropped because the socket stayed full for [`SYSLOG_WAIT`], not yet said.
    syslog_dropped: u64,
    /// All syslog lines dropped.
    syslog_dropped_total: u64,
}

/// How long a syslog line may wait for room in the socket (on the log writer's thread, never
/// on the engine's) before it is dropped and counted.
pub const SYSLOG_WAIT: Duration = Duration::from_secs(1);

impl KnockLog {
    /// Open the configured sinks. An unwritable LogFile is an error naming the path.
    pub fn open(log_file: Option<&Path>, use_syslog: bool) -> std::io::Result<KnockLog> {
        let file = match log_file {
            Some(p) => Some((p.to_path_buf(), open_append(p)?)),
            None => None,
        };
        let syslog = if use_syslog { connect_syslog() } else { None };
        Ok(KnockLog {
            file,
            syslog,
            syslog_dropped: 0,
            syslog_dropped_total: 0,
        })
    }
}

/// Append to the log file, never through a symlink (see [`crate::safefile`]).
fn open_append(p: &Path) -> std::io::Result<File> {
    Ok(crate::safefile::open_write("LogFile", p, true, 0o640)?)
}

fn connect_syslog() -> Option<UnixDatagram> {
    let sock = UnixDatagram::unbound().ok()?;
    match sock.connect("/dev/log") {
        // Lines are written on the log writer's thread: a busy syslog daemon gets a moment,
        // then the line is dropped (and counted).
        Ok(()) if sock.set_write_timeout(Some(SYSLOG_WAIT)).is_ok() => Some(sock),
        Ok(()) => None,
        Err(e) => {
            tracing::warn!("UseSyslog: cannot connect to /dev/log ({e}); logging to stderr only");
            None
        }
    }
}

impl LogSink for KnockLog {
    fn reopen(&mut self, log_file: Option<&Path>, use_syslog: bool) -> std::io::Result<()> {
        *self = KnockLog::open(log_file, use_syslog)?;
        Ok(())
    }

    fn line(&mut self, msg: &str) {
        self.line_at(SystemTime::now(), msg);
    }

    fn dropped(&self) -> u64 {
        self.syslog_dropped_total
    }

    fn line_at(&mut self, at: SystemTime, msg: &str) {
        if msg.starts_with("error") {
            tracing::error!(target: "knockd", "{msg}");
        } else if msg.contains("warning") {
            tracing::warn!(target: "knockd", "{msg}");
        } else {
            tracing::info!(target: "knockd", "{msg}");
        }
        let now = chrono::DateTime::<chrono::Local>::from(at);
        if let Some((path, f)) = &mut self.file {
            if let Err(e) = f.write_all(file_line(now, msg).as_bytes()) {
                tracing::warn!("cannot write log file {}: {e}", path.display());
            }
        }
        if let Some(s) = &self.syslog {
            if self.syslog_dropped > 0 {
                let note = format!(
                    "{} log line(s) dropped: the syslog socket was full",
                    self.syslog_dropped
                );
                if s.send(syslog_line(now, &note).as_bytes()).is_ok() {
                    tracing::warn!("{note}");
                    self.syslog_dropped = 0;
                }
            }
            if s.send(syslog_line(now, msg).as_bytes()).is_err() {
                self.syslog_dropped += 1;
                self.syslog_dropped_total += 1;
            }
        }
    }
}

/// Collects lines in memory (tests).
#[derive(Debug, Clone, Default)]
pub struct MemoryLog(pub std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl MemoryLog {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl LogSink for MemoryLog {
    fn line(&mut self, msg: &str) {
        if let Ok(mut v) = self.0.lock() {
            v.push(msg.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn formats_like_knockd() {
        let t = chrono::Local
            .with_ymd_and_hms(2026, 11, 24, 9, 5, 33)
            .single()
            .expect("time");
        assert_eq!(
            file_line(t, "10.0.0.12: openSSH: Stage 1"),
            "[2026-11-24 09:05] 10.0.0.12: openSSH: Stage 1\n"
        );
        assert_eq!(
            syslog_line(t, "10.0.0.12: openSSH: OPEN SESAME"),
            "<13>Nov 24 09:05:33 knockd: 10.0.0.12: openSSH: OPEN SESAME"
        );
    }

    #[test]
    fn appends_to_the_log_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("knockd.log");
        let mut log = KnockLog::open(Some(&p), false).expect("open");
        log.line("a");
        log.line("b");
        let text = std::fs::read_to_string(&p).expect("read");
        assert_eq!(text.lines().count(), 2);
        assert!(text.lines().all(|l| l.starts_with('[')));
        assert!(KnockLog::open(Some(Path::new("/nonexistent/dir/x.log")), false).is_err());
    }
}
