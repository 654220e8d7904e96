//! The hosts: each one's link and what it said about itself ([`HostView`]), and how a
//! link coming up or going down changes the state.

use knock_ipc::{DoorInfo, Status};

use super::{Link, LogKind, State};

/// One knockd: its link and what it said about itself. Rows (attempts, grants, log lines,
/// doors) name their host by its index in [`State::hosts`].
#[derive(Debug, Clone)]
pub struct HostView {
    /// What the HOST column and the header call it (empty with one host).
    pub name: String,
    pub link: Link,
    pub daemon_version: Option<String>,
    pub status: Option<Status>,
    /// When `status` arrived (uptime keeps counting from there).
    pub status_at_ms: i64,
    /// Attempts and grants knockd did not list (it sends the oldest `LIST_CAP` and the total).
    pub attempts_unlisted: u64,
    pub grants_unlisted: u64,
    pub doors: Vec<DoorInfo>,
    /// When `doors` arrived (TOTP doors' countdowns run from there).
    pub doors_at_ms: i64,
    /// Since when the link is down: its grants and doors on screen are what knockd said
    /// before.
    pub stale_since_ms: Option<i64>,
}

impl HostView {
    pub(super) fn new(name: String) -> HostView {
        HostView {
            name,
            link: Link::Connecting,
            daemon_version: None,
            status: None,
            status_at_ms: 0,
            attempts_unlisted: 0,
            grants_unlisted: 0,
            doors: Vec::new(),
            doors_at_ms: 0,
            stale_since_ms: None,
        }
    }

    /// knockd's uptime now, counted on from the last status.
    pub fn uptime_secs(&self, now: i64) -> Option<u64> {
        let status = self.status.as_ref()?;
        let since = u64::try_from((now - self.status_at_ms).max(0) / 1000).unwrap_or(0);
        Some(status.uptime_secs + since)
    }
}

impl State {
    /// More than one host: rows carry a HOST column, the header a line per host.
    pub fn is_fleet(&self) -> bool {
        self.hosts.len() > 1
    }

    /// Host `host`'s name (empty for an unknown index).
    pub fn host_name(&self, host: usize) -> &str {
        self.hosts.get(host).map_or("", |h| h.name.as_str())
    }

    /// `name: ` before a message about one host of many; nothing with one host.
    pub fn host_prefix(&self, host: usize) -> String {
        if self.is_fleet() {
            format!("{}: ", crate::present::visible(self.host_name(host)))
        } else {
            String::new()
        }
    }

    /// Host `host`'s two connections are up and the handshake is done.
    pub fn host_connected(&mut self, host: usize, daemon_version: String, now: i64) {
        self.push_log(
            host,
            now,
            LogKind::Info,
            format!("connected to knockd {daemon_version}"),
        );
        let Some(h) = self.hosts.get_mut(host) else {
            return;
        };
        h.daemon_version = Some(daemon_version);
        h.link = Link::Connected;
        h.stale_since_ms = None;
    }

    /// Host `host`'s link failed (or a retry failed); the next try is at `retry_at_ms`.
    pub fn host_disconnected(&mut self, host: usize, reason: String, retry_at_ms: i64, now: i64) {
        let Some(h) = self.hosts.get(host) else {
            return;
        };
        match &h.link {
            Link::Disconnected { reason: old, .. } if *old == reason => {}
            _ => self.push_log(host, now, LogKind::Error, format!("disconnected: {reason}")),
        }
        // Attempts live in the daemon's memory: whatever comes back starts afresh.
        self.attempts.retain(|a| a.host != host);
        if let Some(h) = self.hosts.get_mut(host) {
            h.stale_since_ms.get_or_insert(now);
            h.link = Link::Disconnected {
                reason,
                retry_at_ms,
            };
        }
    }
}
