//! Events pane: the log of daemon events, newest first, with pause.

use super::{State, LOG_CAP};

/// What an event log line is about; picks its tag and colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    Stage,
    Open,
    Reset,
    Timeout,
    Grant,
    Refresh,
    Revoke,
    Expire,
    Close,
    Reload,
    Error,
    Info,
}

impl LogKind {
    /// Text marker, so the log reads without colour.
    pub fn tag(self) -> &'static str {
        match self {
            LogKind::Stage => "STAGE",
            LogKind::Open => "OPEN",
            LogKind::Reset => "RESET",
            LogKind::Timeout => "TIMEOUT",
            LogKind::Grant => "GRANT",
            LogKind::Refresh => "REFRESH",
            LogKind::Revoke => "REVOKE",
            LogKind::Expire => "EXPIRE",
            LogKind::Close => "CLOSE",
            LogKind::Reload => "RELOAD",
            LogKind::Error => "ERROR",
            LogKind::Info => "INFO",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// Index in [`State::hosts`].
    pub host: usize,
    pub at_ms: i64,
    pub kind: LogKind,
    pub text: String,
}

impl State {
    pub fn visible_log(&self) -> Vec<&LogEntry> {
        let needle = self.filter.to_lowercase();
        self.log
            .iter()
            .filter(|e| {
                needle.is_empty()
                    || e.text.to_lowercase().contains(&needle)
                    || (self.is_fleet() && self.host_name(e.host).to_lowercase().contains(&needle))
            })
            .collect()
    }

    /// Adds a line, newest first. One host's lines stay in the order they came; many hosts'
    /// are merged by time (each host's come in order, so a line lands at or near the front).
    pub(super) fn push_log(&mut self, host: usize, at_ms: i64, kind: LogKind, text: String) {
        let fleet = self.is_fleet();
        let entry = LogEntry {
            host,
            at_ms,
            kind,
            text,
        };
        let target = if self.paused {
            &mut self.held
        } else {
            &mut self.log
        };
        let at = if fleet {
            target
                .iter()
                .position(|e| e.at_ms <= at_ms)
                .unwrap_or(target.len())
        } else {
            0
        };
        target.insert(at, entry);
        target.truncate(LOG_CAP);
    }

    /// Moves entries held during a pause into the log.
    pub fn release_held(&mut self) {
        let fleet = self.is_fleet();
        while let Some(entry) = self.held.pop_back() {
            let at = if fleet {
                self.log
                    .iter()
                    .position(|e| e.at_ms <= entry.at_ms)
                    .unwrap_or(self.log.len())
            } else {
                0
            };
            self.log.insert(at, entry);
        }
        self.log.truncate(LOG_CAP);
    }
}
