//! Timers: TOTP step boundaries, attempts' deadlines, grants' deadlines, close retries,
//! rechecks of re-knocked grants, and starts whose turn came.

use super::events::grant_info;
use super::Engine;
use crate::action::Executor;
use crate::knocklog::LogSink;
use knock_ipc as ipc;
use std::pin::Pin;
use std::time::{Duration, Instant};

/// The engine loop's one timer. It stays registered with tokio's timer across the loop's
/// turns and is moved only to an earlier deadline (or after it rang): a later deadline is
/// left to the armed one, which then rings early and the loop arms the next. Under a flood
/// the wanted deadline moves later with every batch ([`crate::capture::pacer::COALESCE`]),
/// and a new sleep per batch woke tokio's timer driver (a worker thread) and the engine
/// again and again for deadlines that had moved.
pub(crate) struct Alarm {
    sleep: Pin<Box<tokio::time::Sleep>>,
    armed: Option<Instant>,
}

impl Default for Alarm {
    fn default() -> Self {
        Alarm {
            sleep: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
            armed: None,
        }
    }
}

impl Alarm {
    /// Ring at or before `wanted` (None: nothing to wake for).
    pub fn want(&mut self, wanted: Option<Instant>) {
        let Some(w) = wanted else {
            return;
        };
        if self.armed.is_none_or(|a| w < a) {
            self.sleep.as_mut().reset(tokio::time::Instant::from_std(w));
            self.armed = Some(w);
        }
    }

    pub fn is_armed(&self) -> bool {
        self.armed.is_some()
    }

    /// Resolves when the armed deadline has come (then disarmed). Poll only while armed.
    pub async fn ring(&mut self) {
        self.sleep.as_mut().await;
        self.armed = None;
    }
}

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

#[cfg(test)]
mod tests {
    use super::Alarm;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A later deadline leaves the armed one in place (it rings then, early, and the caller
    /// arms the next): a flood's deadline that moves with every batch re-registers nothing.
    /// An earlier one moves it.
    #[tokio::test(start_paused = true)]
    async fn the_alarm_moves_only_to_an_earlier_deadline() {
        let t0 = crate::engine::now();
        let mut a = Alarm::default();
        a.want(None);
        assert!(!a.is_armed());
        a.want(Some(t0 + ms(100)));
        for later in [150, 200, 300] {
            a.want(Some(t0 + ms(later)));
        }
        a.ring().await;
        let rang = crate::engine::now() - t0;
        assert!(rang >= ms(100) && rang < ms(150), "{rang:?}");
        assert!(!a.is_armed());
        a.want(Some(t0 + ms(400)));
        a.want(Some(t0 + ms(250)));
        a.ring().await;
        let rang = crate::engine::now() - t0;
        assert!(rang >= ms(250) && rang < ms(300), "{rang:?}");
    }
}
