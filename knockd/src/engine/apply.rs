//! Applying a reload: the config was read, parsed and made ready off the engine task
//! ([`crate::reload`]); here it is swapped in and every owner follows — the log is reopened,
//! unrecorded one-time sequences are recorded, the matcher takes the new tables (attempts of
//! kept doors move over), the TOTP clock and the replay memory follow the new doors, table
//! inet knockd (or the SPA port's iptables DROP rule) is updated, and the capture filter
//! changes.

use super::events::grant_info;
use super::messages::TaskKind;
use super::Engine;
use crate::action::Executor;
use crate::config;
use crate::firewall::nftables::side as nft_side;
use crate::knocklog::LogSink;
use crate::matcher::Settings;
use crate::reload::{door_rules, keep_map, Prepared, ReloadResult};
use knock_ipc as ipc;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Drop `t` on a thread of its own: freeing 100,000 doors' tables (a million small blocks) is
/// not the engine's work. The thread waits [`RETIRE_DELAY`] first: freeing while the engine
/// finishes the reload (and allocates) made both contend for the allocator, which cost the
/// engine about as much as the freeing itself.
fn retire<T: Send + 'static>(t: T) {
    // If no thread can be started, `t` is dropped here, which is merely slower.
    let _ = std::thread::Builder::new()
        .name("knockd-drop".into())
        .spawn(move || {
            std::thread::sleep(RETIRE_DELAY);
            drop(t);
        });
}

/// See [`retire`].
const RETIRE_DELAY: Duration = Duration::from_millis(100);

impl<E: Executor, L: LogSink> Engine<E, L> {
    /// Read, prepare and apply the config file here, as a reload request does off the task
    /// (tests).
    #[cfg(test)]
    pub fn reload(&mut self) -> ReloadResult {
        let snapshot = crate::reload::Snapshot {
            config: self.config.clone(),
            local: self.filter.local().to_vec(),
        };
        let path = self.config_path.clone();
        let prepared = crate::reload::prepare(config::load(&path), &path, Some(snapshot));
        self.reload_prepared(prepared)
    }

    /// Apply a config file read and parsed elsewhere, not prepared (tests).
    #[cfg(test)]
    pub fn reload_with(&mut self, loaded: config::Loaded) -> ReloadResult {
        self.reload_prepared(Prepared { loaded, work: None })
    }

    /// Log the failed reload's problems and tell the subscribers.
    fn reload_failed(&mut self, problems: Vec<String>) -> ReloadResult {
        for p in &problems {
            let msg = format!("config error: {p}");
            self.line(&msg);
        }
        self.line("reload failed: keeping the running configuration");
        let errors = problems.clone();
        self.emit(|| ipc::EventKind::ReloadFailed { errors });
        Err(problems)
    }

    /// Reopen the log (logrotate moves it away, then sends SIGHUP). On failure keep the old one.
    fn reopen_log(&mut self, log_file: Option<&Path>, syslog: bool) {
        if let Err(e) = self.events.reopen(log_file, syslog) {
            let msg = format!("error: {e}; still logging to the previous log file");
            self.line(&msg);
        }
    }

    /// Apply a reload made ready off this task ([`crate::reload::prepare`]): when it was
    /// prepared against the config still in force, only the swap and the attempts' move are
    /// left here; otherwise (another reload, a one-time sequence used in between) the tables
    /// are built here, as without preparation.
    pub fn reload_prepared(&mut self, prepared: Prepared) -> ReloadResult {
        let Prepared { loaded, work } = prepared;
        let work = work.filter(|w| Arc::ptr_eq(&w.base, &self.config));
        let msg = format!("re-reading config file: {}", self.config_path.display());
        self.line(&msg);
        let parsed = match loaded {
            Ok(p) => p,
            Err(errs) => {
                // logrotate moved the file away and sent SIGHUP: reopen it all the same, before
                // logging why the reload failed.
                let config = self.config.clone();
                self.reopen_log(
                    config.options.log_file.as_deref(),
                    config.options.use_syslog,
                );
                return self.reload_failed(errs.0.iter().map(|e| e.to_string()).collect());
            }
        };
        let warnings: Vec<String> = parsed.warnings.iter().map(|w| w.to_string()).collect();
        // A config of 100,000 doors can have 200,000 warnings: log a bounded number (writing
        // them all took seconds on this task, holding grants open past their deadline).
        for w in warnings.iter().take(config::MAX_LOGGED_WARNINGS) {
            self.line(w);
        }
        if warnings.len() > config::MAX_LOGGED_WARNINGS {
            let msg = format!(
                "warning: {} more warning(s) not logged (knockd -t lists them all)",
                warnings.len() - config::MAX_LOGGED_WARNINGS
            );
            self.line(&msg);
        }
        let mut new = parsed.config;
        self.overrides.apply(&mut new.options);
        if new.options.interface != self.config.options.interface {
            self.line("warning: Interface changed in the config: restart knockd to capture on the new interface");
        }
        self.reopen_log(new.options.log_file.as_deref(), new.options.use_syslog);
        // Switching backends moves every grant between two firewalls while knocks keep
        // coming: only a restart does it (no grant can race the switch then).
        if let Err(problem) =
            nft_side::switch_refused(&self.config.options, &new.options, &self.config_path)
        {
            return self.reload_failed(vec![problem]);
        }
        let otp_pending = self.persistence.has_unrecorded();
        let (keep, tables, filter, base) = match work {
            Some(w) => {
                let filter = w.filter.filter(|_| w.local == self.filter.local());
                (w.keep, Some(w.matcher), filter, Some(w.base))
            }
            None => (keep_map(&self.config, &new), None, None, None),
        };
        self.persistence.record_used(&mut new, &mut self.events);
        // The replay memory as it stands: taken in again below by the doors that derive the
        // same sequences (kept doors keep it anyway; this also covers a renamed door).
        let replay = super::totp::saved_replay(&self.config, &self.matcher);
        // A one-time sequence recorded just now changed a door: its tables are built here.
        let tables = match tables {
            Some(t) if !otp_pending => t,
            _ => crate::matcher::Prepared::new(door_rules(&new.doors)),
        };
        let settings = Settings::from(&new);
        let retired = self.matcher.reconfigure_prepared(tables, &keep, settings);
        let old = std::mem::replace(&mut self.config, Arc::new(new));
        retire((retired, old, base, keep));
        self.sync_nft_table();
        self.reload_spa_drop();
        self.rotate_totp(super::now(), true);
        self.totp
            .remember_replays(&self.config, &mut self.matcher, replay);
        self.spa_reload();
        match filter {
            Some(f) => self.filter.set(f),
            None => self.update_filter(),
        }
        let doors = self.config.doors.len();
        let msg = format!("configuration reloaded: {doors} door(s)");
        self.line(&msg);
        let w = warnings.clone();
        self.emit(|| ipc::EventKind::ReloadOk {
            doors: doors as u32,
            warnings: w,
        });
        Ok(warnings)
    }

    /// After a reload with nftables: the grants of doors that are gone or whose ports changed
    /// are closed, their elements put again where other grants hold them, and the table
    /// updated in one transaction ([`nft_side::reload`]).
    fn sync_nft_table(&mut self) {
        if self.config.options.firewall != config::FirewallKind::Nftables {
            return;
        }
        let now = super::now();
        let r = nft_side::reload(&mut self.ledger, &self.config, now);
        for g in r.gone {
            let msg = format!(
                "{}: {}: grant closed: the door's ports changed at reload",
                g.addr, g.door
            );
            self.line(&msg);
            let info = grant_info(&g, now);
            self.emit(|| ipc::EventKind::GrantRevoked { grant: info });
        }
        for (door, addr, ops) in r.keep {
            self.submit_nft(None, &door, addr, TaskKind::Free, ops);
        }
        self.nft.set_spec(&self.config);
        self.nft.update_table(r.script);
    }

    /// Answer a reload; with nftables, only once its table update ran.
    pub(super) fn answer_reload(
        &mut self,
        r: ReloadResult,
        reply: Option<oneshot::Sender<ReloadResult>>,
    ) {
        let Some(reply) = reply else {
            return;
        };
        match r {
            Ok(warnings) => {
                if let Some((reply, warnings)) = self.nft.hold_reply((reply, warnings)) {
                    let _ = reply.send(Ok(warnings));
                }
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }
}
