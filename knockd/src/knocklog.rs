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
    /// Lines queued together, in order (the log writer's thread hands over what piled up
    /// since its last write): a sink may write them at once.
    fn lines_at(&mut self, lines: &[(SystemTime, String)]) {
        for (at, msg) in lines {
            self.line_at(*at, msg);
        }
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
    /// The LogFile's text of the lines being written, sent in one write.
    buf: Vec<u8>,
    /// The last `[YYYY-MM-DD HH:MM] ` prefix, for the local minute it stands for.
    minute: Option<(i64, String)>,
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
            buf: Vec::new(),
            minute: None,
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
        self.push(at, msg);
        self.write_file();
    }

    /// One write to the LogFile for all of `lines` (syslog and stderr still get one message
    /// per line).
    fn lines_at(&mut self, lines: &[(SystemTime, String)]) {
        for (at, msg) in lines {
            self.push(*at, msg);
        }
        self.write_file();
    }
}

impl KnockLog {
    /// Keep the LogFile prefix `[YYYY-MM-DD HH:MM] ` for `now`: formatted once per local
    /// minute, not per line.
    fn refresh_prefix(&mut self, now: chrono::DateTime<chrono::Local>) {
        let minute = now.naive_local().and_utc().timestamp().div_euclid(60);
        if self.minute.as_ref().map(|(m, _)| *m) != Some(minute) {
            let text = format!("[{}] ", now.format("%Y-%m-%d %H:%M"));
            self.minute = Some((minute, text));
        }
    }

    /// Write what [`Self::push`] gathered to the LogFile, in one write.
    fn write_file(&mut self) {
        if let Some((path, f)) = &mut self.file {
            if !self.buf.is_empty() {
                if let Err(e) = f.write_all(&self.buf) {
                    tracing::warn!("cannot write log file {}: {e}", path.display());
                }
            }
        }
        self.buf.clear();
    }

    /// Send one line to stderr (tracing) and syslog, and add it to the LogFile's buffer.
    fn push(&mut self, at: SystemTime, msg: &str) {
        if msg.starts_with("error") {
            tracing::error!(target: "knockd", "{msg}");
        } else if msg.contains("warning") {
            tracing::warn!(target: "knockd", "{msg}");
        } else {
            tracing::info!(target: "knockd", "{msg}");
        }
        let now = chrono::DateTime::<chrono::Local>::from(at);
        if self.file.is_some() {
            self.refresh_prefix(now);
            if let Some((_, prefix)) = &self.minute {
                self.buf.extend_from_slice(prefix.as_bytes());
            }
            self.buf.extend_from_slice(msg.as_bytes());
            self.buf.push(b'\n');
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

    /// Lines written together land in one write, each exactly as `file_line` formats it,
    /// in order, across a minute boundary.
    #[test]
    fn lines_written_together_keep_their_text_and_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("knockd.log");
        let mut log = KnockLog::open(Some(&p), false).expect("open");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + 50);
        let lines: Vec<(SystemTime, String)> = (0..300u64)
            .map(|i| {
                (
                    t0 + Duration::from_millis(100 * i),
                    format!("10.0.0.{i}: ssh: Stage 1"),
                )
            })
            .collect();
        log.line_at(t0, "first");
        log.lines_at(&lines);
        log.line("last");
        let text = std::fs::read_to_string(&p).expect("read");
        let got: Vec<&str> = text.lines().collect();
        assert_eq!(got.len(), 302);
        let local = |t: SystemTime| chrono::DateTime::<chrono::Local>::from(t);
        assert_eq!(format!("{}\n", got[0]), file_line(local(t0), "first"));
        for (i, (at, msg)) in lines.iter().enumerate() {
            assert_eq!(format!("{}\n", got[i + 1]), file_line(local(*at), msg));
        }
        assert!(got[301].ends_with("] last"));
        // The 300 lines span a minute boundary: both minutes are there.
        let minutes: std::collections::BTreeSet<&str> =
            got[1..301].iter().map(|l| &l[..18]).collect();
        assert_eq!(minutes.len(), 2, "{minutes:?}");
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
