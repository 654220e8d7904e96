//! What happens when a door opens: native rules, commands, grants, one-time sequences.
//!
//! A re-knock of an open grant whose action is unchanged moves its deadline and checks its
//! rules (at once within the grant's budget or the quick lane, see `grants::checks`; a flood
//! of re-knocks is paced at one check a second per grant); one whose action changed since (a reload changed `Open`,
//! `Open_Chain` or the start command) is a close of exactly the old rules plus an open.

use super::events::{grant_info, OpenRefusal};
use super::messages::TaskKind;
use super::runner::Chain;
use super::{Engine, REFRESH_CHECK_INTERVAL};
use crate::action::{self, Action, Executor, FwRule};
use crate::config::MAX_TIMEOUT_SECS;
use crate::config::{self, Command6, Door};
use crate::fairstart::{Offer, StartRefusal};
use crate::firewall::nftables::side as nft_side;
use crate::firewall::Op;
use crate::grants::{CheckWhen, Close, GrantId};
use crate::knocklog::LogSink;
use knock_ipc as ipc;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

impl<E: Executor, L: LogSink> Engine<E, L> {
    /// A door opened for `src`: refresh its open grant now, or queue a new grant for the
    /// door's start rate (it starts at once when the door has a token).
    pub(super) fn open(&mut self, door_idx: usize, src: IpAddr, now: Instant) {
        let Some(door) = self.config.doors.get(door_idx) else {
            return;
        };
        let (name, pooled, otp) = (
            door.name.clone(),
            door.open.is_empty(),
            door.one_time_sequences.is_some(),
        );
        let refresh = self.ledger.find(&name, src).is_some();
        if refresh || self.offer_start(&name, pooled, src, now) {
            let msg = format!("{src}: {name}: OPEN SESAME");
            self.line(&msg);
            self.emit(|| ipc::EventKind::Open {
                addr: src,
                door: name,
            });
        }
        if refresh {
            self.open_now(door_idx, src, now);
        } else {
            self.serve_starts(now);
        }
        if otp {
            self.next_one_time_sequence(door_idx);
        }
    }

    /// Run or refresh the door's action for `src` and record the grant.
    pub(super) fn open_now(&mut self, door_idx: usize, src: IpAddr, now: Instant) {
        let Some(door) = self.config.doors.get(door_idx).cloned() else {
            return;
        };
        if door.open.is_empty() {
            self.open_command(&door, src, now);
        } else {
            self.open_native(&door, src, now);
        }
    }

    /// The open grant of (door, src) if its action is still `same`; a grant whose action
    /// changed is closed here (its own recorded rules or command) and None returned.
    fn current_grant(
        &mut self,
        door: &str,
        src: IpAddr,
        now: Instant,
        same: impl Fn(&crate::grants::Grant) -> bool,
    ) -> Option<GrantId> {
        let g = self.ledger.find(door, src)?;
        if same(g) {
            return Some(g.id);
        }
        let id = g.id;
        if let Some(old) = self.ledger.begin_close(id) {
            let msg = format!(
                "{src}: {door}: the door's action changed since this grant opened: closing its old rules before opening the new ones"
            );
            self.line(&msg);
            let info = grant_info(&old, now);
            let by_door = door.to_string();
            self.emit(|| ipc::EventKind::GrantClosed {
                grant: info,
                by_door,
            });
            self.close_grant(old);
        }
        None
    }

    /// A re-knock of an open grant: check (and restore) its rules now, or queued for when the
    /// grant's own budget allows one (one per [`REFRESH_CHECK_INTERVAL`] after its burst)
    /// when the quick lane is spent too.
    fn request_check(&mut self, id: GrantId, now: Instant) {
        if self.ledger.check_due(id, now, REFRESH_CHECK_INTERVAL) == CheckWhen::Now {
            self.check_grant(id, now);
        }
    }

    /// Make sure the rules of grant `id` are in the firewall, re-adding what went missing:
    /// native rules through the firewall, a derived rule by its check and its start command
    /// (only when the pool has room: the grant stays open either way).
    pub(super) fn check_grant(&mut self, id: GrantId, now: Instant) {
        let Some(g) = self.ledger.get(id) else {
            return;
        };
        let (door, addr) = (g.door.clone(), g.addr);
        match &g.close {
            Close::Rules { rules } => {
                let timeout = g.expires.map(|t| t.saturating_duration_since(now));
                let ops = rules
                    .iter()
                    .map(|r| Op::Refresh {
                        rule: r.clone(),
                        timeout,
                    })
                    .collect();
                self.submit_fw(Some(id), &door, addr, TaskKind::Ensure, ops);
            }
            Close::Derived { check, .. } => {
                if self.pool_has_room() {
                    let actions =
                        vec![Action::Exec(check.clone()), Action::Shell(g.opened.clone())];
                    self.spawn(Some(id), &door, addr, TaskKind::Ensure, actions);
                }
            }
            // Put the elements again with the time the ledger has left (the re-knock moved it).
            Close::Nft { elems } => {
                let own = g
                    .expires
                    .map_or(Duration::from_secs(MAX_TIMEOUT_SECS), |t| {
                        t.saturating_duration_since(now)
                    });
                let ops = nft_side::put_ops(&self.ledger, id, &door, elems, own, now, false);
                self.submit_nft(Some(id), &door, addr, TaskKind::Free, ops);
            }
            Close::StopCommand { .. } => {}
        }
    }

    /// Room for one more grant? Counted and logged when not.
    fn admit_grant(&mut self, door: &str, src: IpAddr, now: Instant, pooled: bool) -> bool {
        if self.ledger.len() >= self.config.max_grants() {
            self.refuse(OpenRefusal::MaxGrants, door, src, now);
            return false;
        }
        if pooled && !self.pool_has_room() {
            self.refuse(OpenRefusal::PoolFull, door, src, now);
            return false;
        }
        true
    }

    fn refreshed(&mut self, id: GrantId, door: &Door, src: IpAddr, what: &str) {
        let msg = format!(
            "{src}: {}: grant refreshed ({what} in {}s)",
            door.name,
            door.cmd_timeout.as_secs()
        );
        self.line(&msg);
        self.emit_grant(id, |grant| ipc::EventKind::GrantRefreshed { grant });
    }

    pub(super) fn open_native(&mut self, door: &Door, src: IpAddr, now: Instant) {
        if self.config.options.firewall == config::FirewallKind::Nftables {
            return self.open_nft(door, src, now);
        }
        let instance = Some(self.config.options.instance_tag());
        let rules: Vec<FwRule> = door
            .open
            .iter()
            .map(|o| FwRule {
                chain: door.open_chain.clone(),
                src,
                proto: o.proto,
                port: o.port,
                door: door.name.clone(),
                instance: instance.clone(),
            })
            .collect();
        let expires = Some(now + door.cmd_timeout);
        let timeout = Some(door.cmd_timeout);
        let existing = self.current_grant(
            &door.name,
            src,
            now,
            |g| matches!(&g.close, Close::Rules { rules: r } if *r == rules),
        );
        if let Some(id) = existing {
            self.ledger.refresh(id, expires);
            self.refreshed(id, door, src, "closes");
            self.request_check(id, now);
            return;
        }
        if !self.admit_grant(&door.name, src, now, false) {
            return;
        }
        let opened = config::ports_label(door.open.iter().map(|o| (o.port, o.proto)));
        let ops: Vec<Op> = rules
            .iter()
            .map(|r| Op::Add {
                rule: r.clone(),
                timeout,
            })
            .collect();
        let id = self.ledger.insert(
            &door.name,
            src,
            format!("{opened} ({})", door.open_chain),
            SystemTime::now(),
            expires,
            Close::Rules { rules },
        );
        self.ledger.check_due(id, now, REFRESH_CHECK_INTERVAL);
        self.emit_grant(id, |grant| ipc::EventKind::GrantAdded { grant });
        let msg = format!(
            "{}: opening {opened} in {} for {src} ({} firewall)",
            door.name,
            door.open_chain,
            self.runner.fw().name()
        );
        self.line(&msg);
        self.submit_fw(Some(id), &door.name, src, TaskKind::Start, ops);
    }

    /// `Firewall = nftables`: one element per port with timeout = cmd_timeout, through the
    /// nftables firewall queue (batched, no command pool); a re-knock puts them again with a
    /// fresh timeout. The kernel removes them at the deadline: nothing runs then.
    fn open_nft(&mut self, door: &Door, src: IpAddr, now: Instant) {
        let elems = nft_side::elems_of(door, src);
        let expires = Some(now + door.cmd_timeout);
        if let Some(id) = self.ledger.find(&door.name, src).map(|g| g.id) {
            // The ledger's deadline moves now; the kernel's with the next check of this grant
            // (at once, or at most once a second per grant beyond the quick lane under a flood
            // of re-knocks).
            self.ledger.refresh(id, expires);
            self.refreshed(id, door, src, "the kernel closes it");
            self.request_check(id, now);
            return;
        }
        if !self.admit_grant(&door.name, src, now, false) {
            return;
        }
        let opened = config::ports_label(door.open.iter().map(|o| (o.port, o.proto)));
        let id = self.ledger.insert(
            &door.name,
            src,
            format!("{opened} (nftables)"),
            SystemTime::now(),
            expires,
            Close::Nft {
                elems: elems.clone(),
            },
        );
        let ops = nft_side::put_ops(
            &self.ledger,
            id,
            &door.name,
            &elems,
            door.cmd_timeout,
            now,
            true,
        );
        self.ledger.check_due(id, now, REFRESH_CHECK_INTERVAL);
        // The element first (it may be applied right here, see firewall::direct), then the
        // line and the event, which nothing on the packet's path waits for.
        self.submit_nft(Some(id), &door.name, src, TaskKind::Start, ops);
        self.emit_grant(id, |grant| ipc::EventKind::GrantAdded { grant });
        let msg = format!(
            "{}: opening {opened} for {src} (nftables, kernel timeout {}s)",
            door.name,
            door.cmd_timeout.as_secs()
        );
        self.line(&msg);
    }

    pub(super) fn pick<'a>(
        &mut self,
        door: &'a Door,
        v4: Option<&'a String>,
        v6: &'a Command6,
        src: IpAddr,
    ) -> Option<&'a str> {
        if !src.is_ipv6() {
            return v4.map(String::as_str);
        }
        match v6 {
            Command6::Command(c) => Some(c.as_str()),
            Command6::Disabled => None,
            Command6::Fallback => {
                let c = v4?;
                if c.split_whitespace()
                    .next()
                    .is_some_and(|p| p.rsplit('/').next() == Some("iptables"))
                {
                    let msg = format!(
                        "{}: warning: IPv6 knock from {src} runs the IPv4 command (set Start_Command_6/Stop_Command_6, or leave them empty to disable IPv6)",
                        door.name
                    );
                    self.line(&msg);
                }
                Some(c.as_str())
            }
        }
    }

    pub(super) fn open_command(&mut self, door: &Door, src: IpAddr, now: Instant) {
        // `%CLIENT%`: the SPA client that opened (a valid client name: no shell syntax).
        let client = self.ledger.spa_client_of(&door.name, src);
        let start = self
            .pick(
                door,
                door.start_command.as_ref(),
                &door.start_command_6,
                src,
            )
            .map(|c| action::expand(c, src).replace("%CLIENT%", &client));
        let stop = self
            .pick(door, door.stop_command.as_ref(), &door.stop_command_6, src)
            .map(|c| action::expand(c, src).replace("%CLIENT%", &client));
        let Some(start) = start else {
            return;
        };
        // A door whose command is exactly the inverse of an open grant (the seed's closeSSH)
        // closes that grant; its own command then runs after that grant's actions.
        let mut chain_door = None;
        if let Some(words) = action::plain_words(&start) {
            for id in self.ledger.closed_by(src, &words) {
                if let Some(g) = self.ledger.remove(id) {
                    let msg = format!("{src}: {}: closes the grant of door {}", door.name, g.door);
                    self.line(&msg);
                    let info = grant_info(&g, now);
                    let by_door = door.name.clone();
                    self.emit(|| ipc::EventKind::GrantClosed {
                        grant: info,
                        by_door,
                    });
                    chain_door = Some(g.door.clone());
                }
            }
        }
        let existing = self.current_grant(&door.name, src, now, |g| g.opened == start);
        let derived = action::derive_inverse(&start);
        match (stop, derived) {
            (Some(stop), _) => {
                let expires = Some(now + door.cmd_timeout);
                if let Some(id) = existing {
                    self.ledger.refresh(id, expires);
                    self.refreshed(id, door, src, "stop command");
                    return;
                }
                self.grant_and_start(
                    door,
                    src,
                    start,
                    expires,
                    Close::StopCommand { command: stop },
                    now,
                );
            }
            (None, Some(d)) => {
                if let Some(id) = existing {
                    self.ledger.refresh(id, None);
                    self.emit_grant(id, |grant| ipc::EventKind::GrantRefreshed { grant });
                    self.request_check(id, now);
                    return;
                }
                let close = Close::Derived {
                    delete: d.delete,
                    check: d.check,
                };
                self.grant_and_start(door, src, start, None, close, now);
            }
            (None, None) => {
                if !self.pool_has_room() {
                    self.refuse(OpenRefusal::PoolFull, &door.name, src, now);
                    return;
                }
                let msg = format!("{}: running command: {start}", door.name);
                self.line(&msg);
                let chain = Chain::Door(chain_door.unwrap_or_else(|| door.name.clone()), src);
                self.spawn_in(
                    chain,
                    None,
                    &door.name,
                    src,
                    TaskKind::Free,
                    vec![Action::Shell(start)],
                );
            }
        }
    }

    pub(super) fn next_one_time_sequence(&mut self, door_idx: usize) {
        let Some(door) = self.config.doors.get(door_idx).cloned() else {
            return;
        };
        let Some(path) = door.one_time_sequences.as_ref() else {
            return;
        };
        let next = match config::otp::consume(path, &door.sequence) {
            Ok(Some(seq)) => Some(seq),
            Ok(None) => {
                let msg = format!(
                    "no more sequences left in the one time sequences file for door {} --> disabling the door",
                    door.name
                );
                self.line(&msg);
                None
            }
            Err(e) => {
                let msg = format!(
                    "error while disabling used one time sequence for door {} --> disabling the door until the file can be rewritten and knockd is reloaded ({e})",
                    door.name
                );
                self.line(&msg);
                self.persistence
                    .used_unrecorded(path.clone(), door.sequence.clone());
                None
            }
        };
        if let Some(d) = std::sync::Arc::make_mut(&mut self.config)
            .doors
            .get_mut(door_idx)
        {
            d.sequence = next.clone().unwrap_or_default();
        }
        self.matcher.set_sequence(door_idx, next);
        self.update_filter();
    }

    /// Record a new grant for a command door, then run its start command.
    fn grant_and_start(
        &mut self,
        door: &Door,
        src: IpAddr,
        start: String,
        expires: Option<Instant>,
        close: Close,
        now: Instant,
    ) {
        if !self.admit_grant(&door.name, src, now, true) {
            return;
        }
        let id = self.ledger.insert(
            &door.name,
            src,
            start.clone(),
            SystemTime::now(),
            expires,
            close,
        );
        self.ledger.check_due(id, now, REFRESH_CHECK_INTERVAL);
        self.emit_grant(id, |grant| ipc::EventKind::GrantAdded { grant });
        let msg = format!("{}: running command: {start}", door.name);
        self.line(&msg);
        self.spawn(
            Some(id),
            &door.name,
            src,
            TaskKind::Start,
            vec![Action::Shell(start)],
        );
    }

    /// Emit a live event about grant `id`.
    fn emit_grant(&self, id: GrantId, kind: fn(ipc::GrantInfo) -> ipc::EventKind) {
        self.events
            .emit_grant(self.ledger.get(id), super::now(), kind);
    }

    /// A new grant of door `door` (a command door when `pooled`) for `src` wants to start:
    /// it waits in the door's fair queue ([`Self::serve_starts`] starts it when a token, and
    /// for a command door room in the pool, is there). False when refused (counted).
    fn offer_start(&mut self, door: &str, pooled: bool, src: IpAddr, now: Instant) -> bool {
        match self.starts.offer(&self.config, door, pooled, src, now) {
            Offer::Queued | Offer::AlreadyWaiting => true,
            Offer::Displaced(gone) => {
                self.refuse(OpenRefusal::Displaced, door, gone, now);
                true
            }
            Offer::Refused(StartRefusal::NetworkBusy) => {
                self.refuse(OpenRefusal::NetworkBusy, door, src, now);
                false
            }
            Offer::Flooding(dropped) => {
                for gone in dropped {
                    self.refuse(OpenRefusal::NetworkFlooding, door, gone, now);
                }
                self.refuse(OpenRefusal::NetworkFlooding, door, src, now);
                false
            }
            Offer::Refused(StartRefusal::QueueFull) => {
                self.refuse(OpenRefusal::StartQueueFull, door, src, now);
                false
            }
        }
    }

    /// Start whatever the doors' rates (and the command pool) allow at `now`.
    pub(super) fn serve_starts(&mut self, now: Instant) {
        for name in self.starts.waiting_doors() {
            let Some(idx) = self.config.doors.iter().position(|d| d.name == name) else {
                // The door went away in a reload: so do its waiting starts.
                self.starts.forget(&name);
                continue;
            };
            let pooled = self.config.doors[idx].open.is_empty();
            loop {
                if pooled && !self.pool_has_room() {
                    break;
                }
                let Some(src) = self.starts.pop(&name, now) else {
                    break;
                };
                self.open_now(idx, src, now);
            }
        }
    }
}
