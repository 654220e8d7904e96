//! The log, written off the engine task. The engine hands each knockd-format line to a
//! bounded queue and goes on; one thread writes them to the sinks (LogFile, syslog, stderr).
//! A full queue (a stalled disk, a busy syslog daemon, a blocked stderr pipe) drops the line
//! and counts it: `knockctl status` shows the count, and the thread writes how many it lost
//! once it catches up. Logging therefore never delays a knock or a deadline.
//!
//! Reopening (SIGHUP, reload: logrotate moves the file away first) opens the new sinks on the
//! caller's side, so a failure is reported at once and the old sinks stay; the thread switches
//! to them after the lines queued before.

use crate::knocklog::{KnockLog, LogSink};
use crate::ratelimit::Gcra;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// Lines waiting to be written, at most (about 100 bytes each).
pub const LOG_QUEUE: usize = 4096;
/// How long dropping the writer waits for the lines still queued (shutdown).
pub const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// Opens the sinks for (LogFile, UseSyslog): [`KnockLog::open`] in the daemon.
pub type Opener =
    Box<dyn Fn(Option<&Path>, bool) -> std::io::Result<Box<dyn LogSink>> + Send + 'static>;

enum Msg {
    Line(SystemTime, String),
    /// Write to these sinks from now on.
    Swap(Box<dyn LogSink>),
}

/// What the engine holds: [`LogSink`] whose `line` never blocks.
pub struct LogWriter {
    tx: Option<SyncSender<Msg>>,
    /// New sinks that did not fit in the queue: the thread takes them before its next line.
    pending: Arc<Mutex<Option<Box<dyn LogSink>>>>,
    /// Lines lost: queue full, or a sink that refused them (syslog socket full).
    dropped: Arc<AtomicU64>,
    open: Opener,
    done: Option<Receiver<()>>,
    thread: Option<JoinHandle<()>>,
}

impl LogWriter {
    /// Start the writer thread over `sink` (call after daemonising: threads do not survive
    /// the fork).
    pub fn start(sink: Box<dyn LogSink>, open: Opener) -> std::io::Result<LogWriter> {
        Self::with_capacity(sink, open, LOG_QUEUE)
    }

    /// The daemon's writer: LogFile, syslog and stderr through [`KnockLog`].
    pub fn knockd(log: KnockLog) -> std::io::Result<LogWriter> {
        Self::start(
            Box::new(log),
            Box::new(
                |file, syslog| Ok(Box::new(KnockLog::open(file, syslog)?) as Box<dyn LogSink>),
            ),
        )
    }

    pub fn with_capacity(
        sink: Box<dyn LogSink>,
        open: Opener,
        capacity: usize,
    ) -> std::io::Result<LogWriter> {
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let (done_tx, done) = mpsc::channel();
        let pending: Arc<Mutex<Option<Box<dyn LogSink>>>> = Arc::new(Mutex::new(None));
        let dropped = Arc::new(AtomicU64::new(0));
        let thread = {
            let pending = pending.clone();
            let dropped = dropped.clone();
            std::thread::Builder::new()
                .name("knockd-log".into())
                .spawn(move || {
                    write_loop(sink, &rx, &pending, &dropped);
                    let _ = done_tx.send(());
                })?
        };
        Ok(LogWriter {
            tx: Some(tx),
            pending,
            dropped,
            open,
            done: Some(done),
            thread: Some(thread),
        })
    }

    /// Lines lost so far.
    pub fn dropped_lines(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Lines written at once at most.
pub const WRITE_BATCH: usize = 512;
/// Writes (and wake-ups) of the thread: bursts of up to [`WRITE_BURST`] at once, then at most
/// [`WRITE_RATE`] a second (a token bucket). When the bucket is empty the thread waits for the
/// next token, and the lines that come meanwhile go out together in the next write. A knock's
/// few lines, or anything after a quiet moment, are written at once; a flood's per-knock
/// lines (200 a second, see [`crate::ratelimit`]) trickle in one or two per captured batch
/// and were a wake-up and a write each.
pub const WRITE_RATE: u32 = 40;
pub const WRITE_BURST: u32 = 100;

/// The writes the thread may still make at once (see [`WRITE_RATE`]).
struct WriteBudget(Gcra);

impl WriteBudget {
    const INTERVAL: Duration = Duration::from_nanos(1_000_000_000 / WRITE_RATE as u64);

    /// One write was made at `now`: how long to wait before the next one.
    fn spend(&mut self, now: Instant) -> Option<Duration> {
        self.0.spend(now, Self::INTERVAL);
        let at = self.0.allowed_at(WRITE_BURST, Self::INTERVAL)?;
        (at > now).then(|| at - now)
    }
}

/// The sink the thread writes to, and what it has said about lost lines.
struct Out {
    sink: Box<dyn LogSink>,
    /// Drops already reported in the log, and drops the current sink reported so far.
    reported: u64,
    sink_seen: u64,
}

impl Out {
    fn swap(&mut self, new: Box<dyn LogSink>) {
        self.sink = new;
        self.sink_seen = 0;
    }

    /// Write `lines` (then empty), followed by a note when lines were lost since the last one.
    fn write(&mut self, lines: &mut Vec<(SystemTime, String)>, dropped: &AtomicU64) {
        if lines.is_empty() {
            return;
        }
        self.sink.lines_at(lines);
        lines.clear();
        let lost = dropped.load(Ordering::Relaxed);
        if lost > self.reported {
            let note = format!(
                "warning: {} log line(s) dropped: the log could not keep up (see knockctl status)",
                lost - self.reported
            );
            self.sink.line_at(SystemTime::now(), &note);
            self.reported = lost;
        }
        // A sink's own losses (syslog socket full) count too.
        let now = self.sink.dropped();
        if now > self.sink_seen {
            dropped.fetch_add(now - self.sink_seen, Ordering::Relaxed);
            // Already said in-band by the sink itself.
            self.reported += now - self.sink_seen;
            self.sink_seen = now;
        }
    }
}

/// The thread: write lines in order, what is queued at once in one go, within the write
/// budget ([`WRITE_RATE`]); after a run of lost lines, say how many.
fn write_loop(
    sink: Box<dyn LogSink>,
    rx: &Receiver<Msg>,
    pending: &Mutex<Option<Box<dyn LogSink>>>,
    dropped: &AtomicU64,
) {
    let mut out = Out {
        sink,
        reported: 0,
        sink_seen: 0,
    };
    let mut lines: Vec<(SystemTime, String)> = Vec::new();
    let mut budget = WriteBudget(Gcra::default());
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(msg) = next.take() {
            if let Some(new) = pending.lock().ok().and_then(|mut p| p.take()) {
                // A reopen that did not fit in the queue: it came after everything queued
                // so far was taken, so what was gathered goes to the old sink.
                out.write(&mut lines, dropped);
                out.swap(new);
            }
            match msg {
                Msg::Swap(new) => {
                    out.write(&mut lines, dropped);
                    out.swap(new);
                }
                Msg::Line(at, line) => lines.push((at, line)),
            }
            taken += 1;
            if taken < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        out.write(&mut lines, dropped);
        if let Some(wait) = budget.spend(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

impl LogSink for LogWriter {
    fn line(&mut self, msg: &str) {
        let Some(tx) = &self.tx else {
            return;
        };
        match tx.try_send(Msg::Line(SystemTime::now(), msg.to_string())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn reopen(&mut self, log_file: Option<&Path>, use_syslog: bool) -> std::io::Result<()> {
        let new = (self.open)(log_file, use_syslog)?;
        let Some(tx) = &self.tx else {
            return Ok(());
        };
        match tx.try_send(Msg::Swap(new)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(Msg::Swap(new))) => {
                // Never wait on the queue: the thread picks it up before its next line.
                if let Ok(mut p) = self.pending.lock() {
                    *p = Some(new);
                }
                Ok(())
            }
            Err(_) => Err(std::io::Error::other("the log writer thread has stopped")),
        }
    }

    fn dropped(&self) -> u64 {
        self.dropped_lines()
    }
}

impl Drop for LogWriter {
    /// Close the queue and give the thread [`FLUSH_WAIT`] to write what is left (shutdown's
    /// last lines), never more: a stalled sink must not hold up the exit.
    fn drop(&mut self) {
        self.tx = None;
        if let Some(done) = self.done.take() {
            match done.recv_timeout(FLUSH_WAIT) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                    if let Some(t) = self.thread.take() {
                        let _ = t.join();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knocklog::MemoryLog;
    use std::sync::Barrier;
    use std::time::Instant;

    fn memory(log: &MemoryLog) -> Box<dyn LogSink> {
        Box::new(log.clone())
    }

    fn no_reopen() -> Opener {
        Box::new(|_, _| Err(std::io::Error::other("no reopen in this test")))
    }

    fn wait_for(log: &MemoryLog, n: usize) -> Vec<String> {
        let t = Instant::now();
        while log.lines().len() < n && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        log.lines()
    }

    #[test]
    fn lines_arrive_in_order() {
        let log = MemoryLog::default();
        let mut w = LogWriter::start(memory(&log), no_reopen()).expect("start");
        for i in 0..100 {
            w.line(&format!("line {i}"));
        }
        drop(w);
        let lines = log.lines();
        assert_eq!(lines.len(), 100);
        assert!(lines
            .iter()
            .enumerate()
            .all(|(i, l)| *l == format!("line {i}")));
    }

    /// Records how the lines were handed over: one entry per write, with its lines.
    #[derive(Clone, Default)]
    struct Batches(Arc<Mutex<Vec<Vec<String>>>>);

    impl LogSink for Batches {
        fn line(&mut self, msg: &str) {
            self.lines_at(&[(SystemTime::now(), msg.to_string())]);
        }
        fn lines_at(&mut self, lines: &[(SystemTime, String)]) {
            if let Ok(mut b) = self.0.lock() {
                b.push(lines.iter().map(|(_, l)| l.clone()).collect());
            }
        }
    }

    /// Lines sent faster than one write each are written together: every line, in order,
    /// in fewer writes than lines; a lone line later is written on its own, at once.
    #[test]
    fn a_burst_is_written_in_batches_keeping_every_line_in_order() {
        let batches = Batches::default();
        let mut w = LogWriter::start(Box::new(batches.clone()), no_reopen()).expect("start");
        for i in 0..3000 {
            w.line(&format!("line {i}"));
        }
        let t = Instant::now();
        let count = || {
            batches
                .0
                .lock()
                .map(|b| b.iter().map(Vec::len).sum::<usize>())
                .unwrap_or(0)
        };
        while count() < 3000 && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let writes = batches.0.lock().map(|b| b.clone()).unwrap_or_default();
        let all: Vec<String> = writes.iter().flatten().cloned().collect();
        assert_eq!(
            all,
            (0..3000).map(|i| format!("line {i}")).collect::<Vec<_>>()
        );
        assert!(
            writes.len() < 3000 / 4,
            "{} writes for 3000 lines",
            writes.len()
        );
        assert!(writes.iter().all(|b| b.len() <= WRITE_BATCH));
        assert_eq!(w.dropped_lines(), 0);
        std::thread::sleep(Duration::from_secs_f64(
            f64::from(WRITE_BURST) / f64::from(WRITE_RATE),
        ));
        let t = Instant::now();
        w.line("alone");
        while count() < 3001 && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let writes = batches.0.lock().map(|b| b.clone()).unwrap_or_default();
        assert_eq!(writes.last(), Some(&vec!["alone".to_string()]));
        drop(w);
    }

    /// Lines that trickle in one by one (a flood's per-knock lines under the rate limit)
    /// are written a few at a time once the burst is spent: at most [`WRITE_BURST`] writes
    /// plus [`WRITE_RATE`] a second, every line in order.
    #[test]
    fn a_trickle_of_lines_is_written_within_the_write_budget() {
        let batches = Batches::default();
        let mut w = LogWriter::start(Box::new(batches.clone()), no_reopen()).expect("start");
        let t = Instant::now();
        for i in 0..300 {
            w.line(&format!("line {i}"));
            std::thread::sleep(Duration::from_millis(2));
        }
        let spent = t.elapsed();
        drop(w);
        let writes = batches.0.lock().map(|b| b.clone()).unwrap_or_default();
        let all: Vec<String> = writes.iter().flatten().cloned().collect();
        assert_eq!(
            all,
            (0..300).map(|i| format!("line {i}")).collect::<Vec<_>>()
        );
        // The burst, then the rate while the lines came, and one more at the end.
        let most = (f64::from(WRITE_BURST) + spent.as_secs_f64() * f64::from(WRITE_RATE)).ceil()
            as usize
            + 2;
        assert!(
            writes.len() <= most,
            "{} writes for 300 lines over {spent:?} (at most {most})",
            writes.len()
        );
    }

    /// A knock's few lines are written as they come (within the burst), not held back to
    /// go out together.
    #[test]
    fn a_few_lines_are_written_as_they_come() {
        let batches = Batches::default();
        let mut w = LogWriter::start(Box::new(batches.clone()), no_reopen()).expect("start");
        for i in 0..5 {
            w.line(&format!("line {i}"));
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(w);
        let writes = batches.0.lock().map(|b| b.clone()).unwrap_or_default();
        assert_eq!(writes.iter().map(Vec::len).sum::<usize>(), 5);
        assert!(writes.len() >= 3, "{writes:?}");
    }

    /// A sink that blocks until released: stands for a stalled disk or syslog daemon.
    struct Stuck {
        gate: Arc<Barrier>,
        log: MemoryLog,
        first: bool,
    }

    impl LogSink for Stuck {
        fn line(&mut self, msg: &str) {
            if self.first {
                self.first = false;
                self.gate.wait();
            }
            self.log.line(msg);
        }
    }

    /// With the sink stalled, `line` still returns at once: what does not fit is dropped,
    /// counted, and said in the log once the sink moves again.
    #[test]
    fn a_stalled_sink_drops_and_counts_instead_of_blocking() {
        let gate = Arc::new(Barrier::new(2));
        let log = MemoryLog::default();
        let sink = Stuck {
            gate: gate.clone(),
            log: log.clone(),
            first: true,
        };
        let mut w = LogWriter::with_capacity(Box::new(sink), no_reopen(), 16).expect("start");
        let t = Instant::now();
        for i in 0..1000 {
            w.line(&format!("line {i}"));
        }
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        // Held while stalled: the queue (16) and what the thread took before the sink stuck
        // (one batch at most), never more.
        let lost = w.dropped_lines();
        assert!(lost >= (1000 - 16 - WRITE_BATCH) as u64, "dropped {lost}");
        gate.wait();
        // The lines kept, then the note about the others.
        let lines = wait_for(&log, 1000 - lost as usize + 1);
        assert_eq!(lines[0], "line 0");
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("{lost} log line(s) dropped"))),
            "{lines:?}"
        );
        // Caught up: the next line is written.
        w.line("after");
        let lines = wait_for(&log, 1000 - lost as usize + 2);
        assert_eq!(lines.last().map(String::as_str), Some("after"));
        assert_eq!(w.dropped(), lost);
    }

    /// logrotate: lines before the reopen go to the old sink, lines after it to the new one;
    /// a reopen that fails leaves the old sink in place and says why.
    #[test]
    fn reopen_switches_sinks_in_order() {
        let old = MemoryLog::default();
        let new = MemoryLog::default();
        let new2 = new.clone();
        let open: Opener = Box::new(move |file, _| match file {
            Some(_) => Ok(Box::new(new2.clone()) as Box<dyn LogSink>),
            None => Err(std::io::Error::other("cannot open")),
        });
        let mut w = LogWriter::start(memory(&old), open).expect("start");
        w.line("before");
        assert!(w.reopen(None, false).is_err());
        w.line("still old");
        w.reopen(Some(Path::new("/x")), false).expect("reopen");
        w.line("after");
        drop(w);
        assert_eq!(old.lines(), vec!["before", "still old"]);
        assert_eq!(new.lines(), vec!["after"]);
    }
}
