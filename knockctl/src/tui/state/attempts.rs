//! Attempts pane: knock sequences in progress, and how each ended (open, reset, timeout).

use std::net::IpAddr;

use super::{State, GRACE_MS};

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptEnd {
    Open,
    Reset,
    Timeout,
}

impl AttemptEnd {
    pub fn label(self) -> &'static str {
        match self {
            AttemptEnd::Open => "OPEN",
            AttemptEnd::Reset => "RESET",
            AttemptEnd::Timeout => "TIMEOUT",
        }
    }
}

/// A knock sequence in progress (or just ended, for [`super::LINGER_MS`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// Index in [`State::hosts`].
    pub host: usize,
    pub addr: IpAddr,
    pub door: String,
    pub stage: u32,
    pub of: u32,
    pub started_ms: i64,
    /// When the sequence times out; unknown until the door list or an attempt list says.
    pub deadline_ms: Option<i64>,
    /// Last event about this attempt (see [`GRACE_MS`]).
    pub updated_ms: i64,
    pub ended: Option<(AttemptEnd, i64)>,
}

impl State {
    pub fn visible_attempts(&self) -> Vec<&Attempt> {
        let mut rows: Vec<&Attempt> = self
            .attempts
            .iter()
            .filter(|a| self.matches(a.host, &a.addr, &a.door))
            .collect();
        rows.sort_by(|a, b| {
            (a.started_ms, a.addr, &a.door, a.host).cmp(&(b.started_ms, b.addr, &b.door, b.host))
        });
        rows
    }

    pub(super) fn seq_timeout_ms(&self, host: usize, door: &str) -> Option<i64> {
        self.hosts
            .get(host)?
            .doors
            .iter()
            .find(|d| d.name == door)
            .and_then(|d| i64::try_from(d.seq_timeout_ms).ok())
    }

    pub(super) fn live_attempt(
        &mut self,
        host: usize,
        addr: IpAddr,
        door: &str,
    ) -> Option<&mut Attempt> {
        self.attempts
            .iter_mut()
            .find(|a| a.host == host && a.addr == addr && a.door == door && a.ended.is_none())
    }

    pub(super) fn on_stage(
        &mut self,
        host: usize,
        addr: IpAddr,
        door: String,
        stage: u32,
        of: u32,
        at: i64,
    ) {
        if stage > 1 {
            if let Some(a) = self.live_attempt(host, addr, &door) {
                a.stage = stage;
                a.of = of;
                a.updated_ms = at;
                return;
            }
        }
        // A first knock (or one we missed the start of) starts a new attempt.
        let deadline_ms = if stage <= 1 {
            self.seq_timeout_ms(host, &door).map(|t| at + t)
        } else {
            None
        };
        self.attempts
            .retain(|a| !(a.host == host && a.addr == addr && a.door == door));
        self.attempts.push(Attempt {
            host,
            addr,
            door,
            stage,
            of,
            started_ms: at,
            deadline_ms,
            updated_ms: at,
            ended: None,
        });
    }

    pub(super) fn end_attempt(
        &mut self,
        host: usize,
        addr: IpAddr,
        door: &str,
        stage: Option<u32>,
        how: AttemptEnd,
        at: i64,
    ) {
        if let Some(a) = self.live_attempt(host, addr, door) {
            if how == AttemptEnd::Open {
                a.stage = a.of;
            } else if let Some(stage) = stage {
                a.stage = stage;
            }
            a.updated_ms = at;
            a.ended = Some((how, at));
        } else if how == AttemptEnd::Open {
            // A one-knock door, or a start we did not see: still worth a flash.
            let of = self.hosts[host]
                .doors
                .iter()
                .find(|d| d.name == door)
                .map_or(1, |d| d.knocks.max(1));
            self.attempts.retain(|a| {
                !(a.host == host && a.addr == addr && a.door == door && a.ended.is_some())
            });
            self.attempts.push(Attempt {
                host,
                addr,
                door: door.to_string(),
                stage: of,
                of,
                started_ms: at,
                deadline_ms: None,
                updated_ms: at,
                ended: Some((how, at)),
            });
        }
    }

    /// knockd's list of attempts (the oldest `LIST_CAP` of `total`, oldest first), merged into
    /// the rows events made. Linear: rows are found through a map (5,000 listed attempts
    /// against 5,000 rows was 25 million comparisons per refresh).
    pub(super) fn merge_attempts(
        &mut self,
        host: usize,
        list: Vec<knock_ipc::AttemptInfo>,
        total: u64,
        now: i64,
    ) {
        let mut index: std::collections::HashMap<(std::net::IpAddr, String), usize> =
            std::collections::HashMap::with_capacity(self.attempts.len());
        for (i, a) in self.attempts.iter().enumerate() {
            // The first row of an (address, door), as a search from the top would find.
            if a.host == host {
                index.entry((a.addr, a.door.clone())).or_insert(i);
            }
        }
        for info in &list {
            let started = now - i64::try_from(info.age_ms).unwrap_or(0);
            let deadline = now + i64::try_from(info.remaining_ms).unwrap_or(0);
            // The row as the daemon lists it, for an attempt new to us (or restarted).
            let listed = || Attempt {
                host,
                addr: info.addr,
                door: info.door.clone(),
                stage: info.stage,
                of: info.of,
                started_ms: started,
                deadline_ms: Some(deadline),
                updated_ms: now,
                ended: None,
            };
            let row = index
                .get(&(info.addr, info.door.clone()))
                .and_then(|&i| self.attempts.get_mut(i));
            match row {
                Some(a) if a.ended.is_none() => {
                    let fresh = now - a.updated_ms < GRACE_MS;
                    if !(fresh && info.stage < a.stage) {
                        a.stage = info.stage;
                        a.started_ms = started;
                    }
                    a.of = info.of;
                    a.deadline_ms = Some(deadline);
                }
                // Ended a moment ago: this list predates the end.
                Some(a) if now - a.updated_ms < GRACE_MS => {}
                Some(a) => *a = listed(),
                None => {
                    index.insert((info.addr, info.door.clone()), self.attempts.len());
                    self.attempts.push(listed());
                }
            }
        }
        // Live rows the daemon no longer has ended without an event reaching us: past the
        // deadline it timed out, before it a wrong knock reset it. When knockd left attempts
        // out (it lists the oldest), only a row older than the youngest listed one is known to
        // be gone; a younger one may just not be listed.
        let listed: std::collections::HashSet<(std::net::IpAddr, &str)> =
            list.iter().map(|i| (i.addr, i.door.as_str())).collect();
        let truncated = total > list.len() as u64;
        let youngest = list
            .last()
            .map(|i| now - i64::try_from(i.age_ms).unwrap_or(0));
        for a in self.attempts.iter_mut().filter(|a| a.host == host) {
            let is_listed = listed.contains(&(a.addr, a.door.as_str()));
            let knowable = !truncated || youngest.is_some_and(|y| a.started_ms < y);
            if a.ended.is_none() && !is_listed && knowable && now - a.updated_ms >= GRACE_MS {
                let how = match a.deadline_ms {
                    Some(d) if d <= now + GRACE_MS => AttemptEnd::Timeout,
                    _ => AttemptEnd::Reset,
                };
                a.ended = Some((how, now));
                a.updated_ms = now;
            }
        }
    }
}
