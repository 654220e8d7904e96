//! Timers: TOTP step boundaries, attempts' deadlines, grants' deadlines, close retries,
//! rechecks of re-knocked grants, and starts whose turn came.

use super::events::grant_info;
use super::Engine;
use crate::action::Executor;
use crate::knocklog::LogSink;
use knock_ipc as ipc;
use std::time::Instant;

impl<E: Executor, L: LogSink> Engine<E, L> {
    pub fn on_timer(&mut self, now: Instant) {
        self.spa_timer();
        if self.totp.next_deadline().is_some_and(|t| now >= t) && self.rotate_totp(now, false) {
            self.update_filter();
        }
        let mut matched = std::mem::take(&mut self.matched);
        self.matcher.expire(now, &mut matched);
        for ev in matched.drain(..) {
            self.on_match(ev, now);
        }
        self.matched = matched;
        for id in self.ledger.expire(now) {
            let Some(g) = self.ledger.get(id) else {
                continue;
            };
            let info = grant_info(g, now);
            let (addr, door) = (g.addr, g.door.clone());
            if g.close.kernel_expires() {
                // The kernel removed the elements at this deadline: the ledger only follows.
                self.ledger.remove(id);
                let msg = format!("{addr}: {door}: grant expired (removed by the kernel)");
                self.line(&msg);
                self.emit(|| ipc::EventKind::GrantExpired { grant: info });
                continue;
            }
            let msg = format!("{addr}: {door}: command timeout");
            self.line(&msg);
            self.emit(|| ipc::EventKind::GrantExpired { grant: info });
            self.close_id(id);
        }
        for g in self.ledger.due_retries(now) {
            let failures = g.closing.as_ref().map_or(0, |c| c.failures);
            let msg = format!(
                "{}: {}: closing again (attempt {})",
                g.addr,
                g.door,
                failures + 1
            );
            self.line(&msg);
            self.close_grant(g);
        }
        for id in self.ledger.due_rechecks(now, super::REFRESH_CHECK_INTERVAL) {
            self.check_grant(id, now);
        }
        self.serve_starts(now);
    }
}
