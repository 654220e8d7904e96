//! Grants pane: open grants, their countdown, and how each closed.

use knock_ipc::GrantInfo;

use super::{State, GRACE_MS};

/// How a grant closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantEnd {
    Revoked,
    Expired,
    Closed,
}

impl GrantEnd {
    pub fn label(self) -> &'static str {
        match self {
            GrantEnd::Revoked => "REVOKED",
            GrantEnd::Expired => "EXPIRED",
            GrantEnd::Closed => "CLOSED",
        }
    }
}

/// An open grant (or just closed, for [`super::LINGER_MS`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// Index in [`State::hosts`].
    pub host: usize,
    pub info: GrantInfo,
    /// None: open until revoked.
    pub expires_at_ms: Option<i64>,
    /// nftables: when the kernel removes the element on its own.
    pub kernel_expires_at_ms: Option<i64>,
    pub updated_ms: i64,
    pub ended: Option<(GrantEnd, i64)>,
}

impl State {
    pub fn visible_grants(&self) -> Vec<&Grant> {
        let mut rows: Vec<&Grant> = self
            .grants
            .iter()
            .filter(|g| {
                self.matches(g.host, &g.info.addr, &g.info.door)
                    || g.info
                        .client
                        .as_deref()
                        .is_some_and(|c| c.to_lowercase().contains(&self.filter.to_lowercase()))
            })
            .collect();
        rows.sort_by(|a, b| {
            (a.info.opened_at_unix_ms, a.info.addr, &a.info.door, a.host).cmp(&(
                b.info.opened_at_unix_ms,
                b.info.addr,
                &b.info.door,
                b.host,
            ))
        });
        rows
    }

    pub(super) fn upsert_grant(
        &mut self,
        host: usize,
        info: GrantInfo,
        base_ms: i64,
        updated_ms: i64,
    ) {
        let row = grant_row(host, info, base_ms, updated_ms);
        match self.grants.iter_mut().find(|g| {
            g.host == host && g.info.addr == row.info.addr && g.info.door == row.info.door
        }) {
            Some(g) => *g = row,
            None => self.grants.push(row),
        }
    }

    pub(super) fn end_grant(&mut self, host: usize, info: GrantInfo, how: GrantEnd, at: i64) {
        match self
            .grants
            .iter_mut()
            .find(|g| g.host == host && g.info.addr == info.addr && g.info.door == info.door)
        {
            Some(g) => {
                if g.ended.is_none() {
                    g.ended = Some((how, at));
                    g.updated_ms = at;
                }
            }
            None => self.grants.push(Grant {
                host,
                info,
                expires_at_ms: None,
                kernel_expires_at_ms: None,
                updated_ms: at,
                ended: Some((how, at)),
            }),
        }
    }

    /// Host `host`'s list of grants (the oldest `LIST_CAP` of `total`, oldest first).
    pub(super) fn merge_grants(&mut self, host: usize, list: Vec<GrantInfo>, total: u64, now: i64) {
        // When knockd left grants out, only a row opened before the youngest listed one is
        // known to be gone when it is missing; a younger one may just not be listed.
        let truncated = total > list.len() as u64;
        let youngest = list.last().map(|g| g.opened_at_unix_ms);
        let mut listed = std::collections::HashSet::with_capacity(list.len());
        // One row per (address, door): found through a map, not a search per listed grant.
        let mut index: std::collections::HashMap<(std::net::IpAddr, String), usize> =
            std::collections::HashMap::with_capacity(self.grants.len());
        for (i, g) in self.grants.iter().enumerate() {
            if g.host == host {
                index.entry((g.info.addr, g.info.door.clone())).or_insert(i);
            }
        }
        for info in list {
            let key = (info.addr, info.door.clone());
            listed.insert(key.clone());
            match index.get(&key) {
                Some(&i) => {
                    let g = &mut self.grants[i];
                    // Ended a moment ago: this list predates the end.
                    if g.ended.is_some() && now - g.updated_ms < GRACE_MS {
                        continue;
                    }
                    let updated = g.updated_ms;
                    *g = grant_row(host, info, now, updated);
                }
                None => {
                    index.insert(key, self.grants.len());
                    self.grants.push(grant_row(host, info, now, now));
                }
            }
        }
        for g in self.grants.iter_mut().filter(|g| g.host == host) {
            let is_listed = listed.contains(&(g.info.addr, g.info.door.clone()));
            let knowable = !truncated || youngest.is_some_and(|y| g.info.opened_at_unix_ms < y);
            if g.ended.is_none() && !is_listed && knowable && now - g.updated_ms >= GRACE_MS {
                let how = match g.expires_at_ms {
                    Some(t) if t <= now + GRACE_MS => GrantEnd::Expired,
                    _ => GrantEnd::Closed,
                };
                g.ended = Some((how, now));
                g.updated_ms = now;
            }
        }
    }
}

/// A live row for `info`, its deadline counted from `base_ms`.
fn grant_row(host: usize, info: GrantInfo, base_ms: i64, updated_ms: i64) -> Grant {
    let at = |ms: u64| base_ms + i64::try_from(ms).unwrap_or(i64::MAX / 2);
    let expires_at_ms = info.expires_in_ms.map(at);
    let kernel_expires_at_ms = info.kernel_expires_in_ms.map(at);
    Grant {
        host,
        info,
        expires_at_ms,
        kernel_expires_at_ms,
        updated_ms,
        ended: None,
    }
}
