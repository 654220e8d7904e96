//! What happens when a door opens: native rules, commands, grants, one-time sequences.

use super::*;

impl<E: Executor, L: LogSink> Engine<E, L> {
    /// A door opened for `src`: run or refresh its action and record the grant.
    pub(super) fn open(&mut self, door_idx: usize, src: IpAddr, now: Instant) {
        let Some(door) = self.config.doors.get(door_idx).cloned() else {
            return;
        };
        if door.open.is_empty() {
            self.open_command(&door, src, now);
        } else {
            self.open_native(&door, src, now);
        }
        if door.one_time_sequences.is_some() {
            self.next_one_time_sequence(door_idx);
        }
    }

    pub(super) fn open_native(&mut self, door: &Door, src: IpAddr, now: Instant) {
        if self.config.options.firewall == config::FirewallKind::Nftables {
            return self.open_nft(door, src, now);
        }
        let rules: Vec<FwRule> = door
            .open
            .iter()
            .map(|o| FwRule {
                chain: door.open_chain.clone(),
                src,
                proto: o.proto,
                port: o.port,
                door: door.name.clone(),
            })
            .collect();
        let expires = Some(now + door.cmd_timeout);
        if let Some(id) = self.ledger.find(&door.name, src).map(|g| g.id) {
            self.ledger.refresh(id, expires);
            let msg = format!(
                "{src}: {}: grant refreshed (closes in {}s)",
                door.name,
                door.cmd_timeout.as_secs()
            );
            self.line(&msg);
            self.emit_grant(id, |grant| ipc::EventKind::GrantRefreshed { grant });
            for r in rules {
                self.spawn(
                    Some(id),
                    &door.name,
                    src,
                    TaskKind::Ensure,
                    vec![Action::Exec(r.check()), Action::Exec(r.insert())],
                );
            }
            return;
        }
        let opened = door
            .open
            .iter()
            .map(|o| format!("{}/{}", o.port, o.proto))
            .collect::<Vec<_>>()
            .join(",");
        let actions: Vec<Action> = rules.iter().map(|r| Action::Exec(r.insert())).collect();
        let id = self.ledger.insert(
            &door.name,
            src,
            format!("{opened} ({})", door.open_chain),
            SystemTime::now(),
            expires,
            Close::Rules { rules },
        );
        self.emit_grant(id, |grant| ipc::EventKind::GrantAdded { grant });
        for a in actions {
            let msg = format!("{}: running command: {a}", door.name);
            self.line(&msg);
            self.spawn(Some(id), &door.name, src, TaskKind::Start, vec![a]);
        }
    }

    /// `Firewall = nftables`: one element per port with timeout = cmd_timeout; a re-knock
    /// puts them again with a fresh timeout. The kernel removes them at the deadline.
    fn open_nft(&mut self, door: &Door, src: IpAddr, now: Instant) {
        let elems: Vec<crate::nft::Elem> = door
            .open
            .iter()
            .map(|o| crate::nft::Elem {
                addr: src,
                proto: o.proto,
                port: o.port,
            })
            .collect();
        let timeout = door.cmd_timeout;
        let puts = Action::Nft(
            elems
                .iter()
                .map(|&elem| crate::nft::ElemOp::Put { elem, timeout })
                .collect(),
        );
        let expires = Some(now + timeout);
        if let Some(id) = self.ledger.find(&door.name, src).map(|g| g.id) {
            self.ledger.refresh(id, expires);
            let msg = format!(
                "{src}: {}: grant refreshed (the kernel closes it in {}s)",
                door.name,
                timeout.as_secs()
            );
            self.line(&msg);
            self.emit_grant(id, |grant| ipc::EventKind::GrantRefreshed { grant });
            self.spawn(Some(id), &door.name, src, TaskKind::Free, vec![puts]);
            return;
        }
        let opened = door
            .open
            .iter()
            .map(|o| format!("{}/{}", o.port, o.proto))
            .collect::<Vec<_>>()
            .join(",");
        let id = self.ledger.insert(
            &door.name,
            src,
            format!("{opened} (nftables)"),
            SystemTime::now(),
            expires,
            Close::Nft { elems },
        );
        self.emit_grant(id, |grant| ipc::EventKind::GrantAdded { grant });
        let msg = format!("{}: running command: {puts}", door.name);
        self.line(&msg);
        self.spawn(Some(id), &door.name, src, TaskKind::Start, vec![puts]);
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
        let start = self
            .pick(
                door,
                door.start_command.as_ref(),
                &door.start_command_6,
                src,
            )
            .map(|c| action::expand(c, src));
        let stop = self
            .pick(door, door.stop_command.as_ref(), &door.stop_command_6, src)
            .map(|c| action::expand(c, src));
        let Some(start) = start else {
            return;
        };
        // A door whose command is exactly the inverse of an open grant (the seed's closeSSH)
        // closes that grant.
        let mut after = None;
        if let Some(words) = action::plain_words(&start) {
            for id in self.ledger.closed_by(src, &words) {
                if let Some(g) = self.ledger.remove(id) {
                    let msg = format!("{src}: {}: closes the grant of door {}", door.name, g.door);
                    self.line(&msg);
                    let info = Self::grant_info(&g, now);
                    let by_door = door.name.clone();
                    self.emit(|| ipc::EventKind::GrantClosed {
                        grant: info,
                        by_door,
                    });
                    after = self.chains.remove(&id);
                }
            }
        }
        let existing = self.ledger.find(&door.name, src).map(|g| g.id);
        let derived = action::derive_inverse(&start);
        match (stop, derived) {
            (Some(stop), _) => {
                let expires = Some(now + door.cmd_timeout);
                if let Some(id) = existing {
                    self.ledger.refresh(id, expires);
                    let msg = format!(
                        "{src}: {}: grant refreshed (stop command in {}s)",
                        door.name,
                        door.cmd_timeout.as_secs()
                    );
                    self.line(&msg);
                    self.emit_grant(id, |grant| ipc::EventKind::GrantRefreshed { grant });
                    return;
                }
                self.grant_and_start(
                    door,
                    src,
                    start,
                    expires,
                    Close::StopCommand { command: stop },
                );
            }
            (None, Some(d)) => {
                if let Some(id) = existing {
                    self.ledger.refresh(id, None);
                    self.emit_grant(id, |grant| ipc::EventKind::GrantRefreshed { grant });
                    self.spawn(
                        Some(id),
                        &door.name,
                        src,
                        TaskKind::Ensure,
                        vec![Action::Exec(d.check.clone()), Action::Shell(start)],
                    );
                    return;
                }
                let close = Close::Derived {
                    delete: d.delete,
                    check: d.check,
                };
                self.grant_and_start(door, src, start, None, close);
            }
            (None, None) => {
                let msg = format!("{}: running command: {start}", door.name);
                self.line(&msg);
                self.spawn_after(
                    after,
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
                    "error while disabling used one time sequence for door {} --> disabling the door ({e})",
                    door.name
                );
                self.line(&msg);
                None
            }
        };
        if let Some(d) = self.config.doors.get_mut(door_idx) {
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
    ) {
        let id = self.ledger.insert(
            &door.name,
            src,
            start.clone(),
            SystemTime::now(),
            expires,
            close,
        );
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
}
