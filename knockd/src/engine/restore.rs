//! Taking over a previous run's state at start: its memories (replay memory of TOTP doors
//! and SPA clients, unrecorded one-time sequences), then its grants, checked against the config and the
//! firewall (the state file is data: nothing in it runs unchecked).

use super::messages::TaskKind;
use super::Engine;
use crate::action::{self, Action, Executor, Outcome};
use crate::config::{self, Command6};
use crate::firewall::nftables::side as nft_side;
use crate::firewall::Op;
use crate::grants::{Close, GrantId};
use crate::knocklog::LogSink;
use crate::state::{self, SavedGrant, SavedOneTime, SavedReplay};
use std::time::{Duration, SystemTime};

impl<E: Executor, L: LogSink> Engine<E, L> {
    /// Take over a previous run's state file: its memories (replay memory of TOTP doors,
    /// unrecorded one-time sequences), then its grants.
    pub async fn restore_all(
        &mut self,
        saved: state::Saved,
        kernel: Option<Vec<crate::firewall::nftables::listing::KernelElem>>,
    ) {
        self.restore_memory(saved.totp_replay, saved.one_time_used);
        if let Some(line) = self.spa.restore_replay(saved.spa_replay) {
            self.line(&line);
        }
        self.restore_with_kernel(saved.grants, kernel).await;
        if self.config.options.firewall == crate::config::FirewallKind::Iptables {
            self.close_unrecorded_rules().await;
        }
        // Before the capture starts: silent from the first packet.
        self.start_spa_drop().await;
    }

    /// At start, the firewall is the truth for iptables too: a rule that carries this
    /// instance's mark (`knockd@TAG:door`, an ACCEPT from one address: never the SPA port's
    /// DROP rule `knockd@TAG:spa-drop`, which `start_spa_drop` keeps) and that no grant of the ledger explains (its grant
    /// never reached the state file: a crash, a lost or older state file) becomes a grant due
    /// now and is closed like any other (retried until done, listed as closing meanwhile). One
    /// listing per chain and family. Rules of another instance (another tag) are never
    /// touched; rules of a version before the tags (`knockd:door`) cannot be told apart from
    /// another instance's: counted and left, with a line saying so.
    pub async fn close_unrecorded_rules(&mut self) {
        let mut known = std::collections::HashSet::new();
        let mut chains: std::collections::BTreeSet<String> = self
            .config
            .doors
            .iter()
            .filter(|d| !d.open.is_empty())
            .map(|d| d.open_chain.clone())
            .collect();
        for g in self.ledger.list() {
            if let Close::Rules { rules } = &g.close {
                for r in rules {
                    chains.insert(r.chain.clone());
                    known.insert(r.clone());
                }
            }
        }
        chains.retain(|c| crate::firewall::FwRule::chain_name_ok(c));
        if chains.is_empty() {
            return;
        }
        let Some(listing) = self.runner.firewall().marked(chains.into_iter().collect()) else {
            return;
        };
        let marked = match listing.await {
            Ok(m) => m,
            Err(e) => {
                let msg = format!("warning: cannot list the firewall for rules of knockd's that no grant records: {e}");
                self.line(&msg);
                return;
            }
        };
        let own = Some(self.config.options.instance_tag());
        let (mut old, mut others, mut closed) = (0, 0, 0);
        let now = super::now();
        for r in marked {
            if known.contains(&r) {
                continue;
            }
            if r.instance != own {
                if r.instance.is_none() {
                    old += 1;
                } else {
                    others += 1;
                }
                continue;
            }
            known.insert(r.clone());
            // Its own key (the comment), so it never replaces a grant of the real door.
            let (door, addr) = (r.comment(), r.src);
            let msg = format!(
                "{addr}: {door}: rule {r} carries this knockd's mark but no grant records it: closing it"
            );
            self.line(&msg);
            let opened = format!("{}/{} ({})", r.port, r.proto, r.chain);
            let id = self.ledger.insert(
                &door,
                addr,
                opened,
                SystemTime::now(),
                Some(now),
                Close::Rules { rules: vec![r] },
            );
            self.close_id(id);
            closed += 1;
        }
        if old > 0 {
            let msg = format!("{old} rule(s) carry the mark of a knockd before instance tags (knockd:DOOR) and no grant of this one: left alone (another instance's?); delete them by hand if no knockd owns them");
            self.line(&msg);
        }
        if others > 0 {
            let msg = format!("{others} rule(s) of another knockd instance (another knockd@TAG) in the same chains: left alone");
            self.line(&msg);
        }
        if closed > 0 {
            self.persistence
                .reset(&mut self.ledger, &self.config, &self.matcher, &mut self.spa);
        }
    }

    /// The memories of a state file (call before the grants' restore, which writes the file
    /// back with them). Entries are checked before they count (see `TotpClock::remember_replays` and
    /// `restore_used_otp`).
    pub fn restore_memory(&mut self, replay: Vec<SavedReplay>, one_time: Vec<SavedOneTime>) {
        let offered = replay.len();
        let taken = self
            .totp
            .remember_replays(&self.config, &mut self.matcher, replay);
        if offered > 0 {
            let msg = format!(
                "replay memory: {taken} of {offered} TOTP step(s) from the state file still in their window"
            );
            self.line(&msg);
        }
        self.restore_used_otp(one_time);
    }

    /// At start: one-time sequences a previous run used but could not record in their file
    /// (from the state file). Each one whose file still lists it unused is remembered; a
    /// door whose current line is one of them gets it recorded now, or stays disabled while
    /// its file cannot be rewritten. Fail closed: a used line never opens again, across
    /// restarts too. Entries already recorded (or removed from their file) are forgotten.
    fn restore_used_otp(&mut self, saved: Vec<SavedOneTime>) {
        self.persistence.restore_unrecorded(saved, &mut self.events);
        if !self.persistence.has_unrecorded() {
            return;
        }
        let mut config = std::mem::take(&mut self.config);
        let before: Vec<(usize, Vec<config::Step>)> = config
            .doors
            .iter()
            .enumerate()
            .filter(|(_, d)| d.one_time_sequences.is_some())
            .map(|(i, d)| (i, d.sequence.clone()))
            .collect();
        self.persistence
            .record_used(std::sync::Arc::make_mut(&mut config), &mut self.events);
        self.config = config;
        for (i, old) in before {
            let seq = self.config.doors[i].sequence.clone();
            if seq != old {
                let name = self.config.doors[i].name.clone();
                let msg = if seq.is_empty() {
                    format!("door {name}: its current one-time sequence was used before the restart and is not recorded yet --> door disabled")
                } else {
                    format!("door {name}: recorded the one-time sequence used before the restart")
                };
                self.line(&msg);
                self.matcher
                    .set_sequence(i, (!seq.is_empty()).then_some(seq));
            }
        }
        self.update_filter();
    }

    /// Take over the grants of a previous run: close those past their deadline, forget those
    /// whose rule is gone from the firewall (never re-open them), re-arm the rest.
    pub async fn restore(&mut self, saved: Vec<SavedGrant>) {
        self.restore_with_kernel(saved, None).await;
    }

    /// What closes a saved grant, taken from data only: native rules as recorded (their
    /// fields are checked), a stop command from the config's door of that name (never the
    /// command text of the state file), a derived inverse re-derived from the config's door or
    /// checked as one knockd could have written. Err: nothing runs, the admin is told.
    fn vet_close(&self, g: &SavedGrant) -> Result<Close, String> {
        let door = self.config.doors.iter().find(|d| d.name == g.door);
        let v6 = g.addr.is_ipv6();
        let pick = |v4: &Option<String>, c6: &Command6| -> Option<String> {
            if !v6 {
                return v4.clone();
            }
            match c6 {
                Command6::Command(c) => Some(c.clone()),
                Command6::Disabled => None,
                Command6::Fallback => v4.clone(),
            }
        };
        let by_hand = "close it by hand if it is still open";
        match &g.close {
            Close::Rules { rules } => {
                if rules.iter().all(|r| r.src == g.addr && r.is_valid()) {
                    Ok(g.close.clone())
                } else {
                    Err(format!(
                        "state file lists a native rule that is not for this address or has an invalid chain: not run; {by_hand}"
                    ))
                }
            }
            Close::StopCommand { .. } => door
                .and_then(|d| pick(&d.stop_command, &d.stop_command_6))
                .map(|c| Close::StopCommand {
                    command: action::expand(&c, g.addr)
                        .replace("%CLIENT%", g.client.as_deref().unwrap_or_default()),
                })
                .ok_or_else(|| {
                    format!(
                        "door '{}' is no longer in the config or has no Stop_Command: the stop command recorded in the state file is not run; {by_hand}",
                        g.door
                    )
                }),
            Close::Derived { delete, check } => {
                let from_config = door
                    .and_then(|d| pick(&d.start_command, &d.start_command_6))
                    .and_then(|c| {
                        let client = g.client.as_deref().unwrap_or_default();
                        action::derive_inverse(&action::expand(&c, g.addr).replace("%CLIENT%", client))
                    })
                    .filter(|d| d.delete == *delete);
                if let Some(d) = from_config {
                    return Ok(Close::Derived {
                        delete: d.delete,
                        check: d.check,
                    });
                }
                if action::valid_recorded_inverse(delete, check, g.addr) {
                    Ok(g.close.clone())
                } else {
                    Err(format!(
                        "the closing command in the state file is not an iptables -D for this address: not run; {by_hand}"
                    ))
                }
            }
            Close::Nft { .. } => Ok(g.close.clone()),
        }
    }

    /// A restored grant: check that its rules are still there (in the background). All gone:
    /// forgotten (never re-opened); some gone: the rest is closed; all there: kept.
    fn verify(&mut self, id: GrantId) {
        let Some(g) = self.ledger.get(id) else {
            return;
        };
        let (door, addr) = (g.door.clone(), g.addr);
        match &g.close {
            Close::Rules { rules } => {
                let ops = rules
                    .iter()
                    .map(|r| Op::Check { rule: r.clone() })
                    .collect();
                self.submit_fw(Some(id), &door, addr, TaskKind::Verify, ops);
            }
            Close::Derived { check, .. } => {
                let a = vec![Action::Exec(check.clone())];
                self.spawn(Some(id), &door, addr, TaskKind::Verify, a);
            }
            Close::StopCommand { .. } | Close::Nft { .. } => {}
        }
    }

    /// The outcome of [`Self::verify`].
    pub(super) fn on_verified(
        &mut self,
        id: GrantId,
        outcome: &Outcome,
        absent: usize,
        total: usize,
    ) {
        let Some(g) = self.ledger.get(id) else {
            return;
        };
        let (door, addr) = (g.door.clone(), g.addr);
        let absent = match outcome {
            Outcome::Ok => absent,
            // A derived check exits 1 when its rule is missing.
            Outcome::Failed { code: Some(1), .. } if total == 0 => 1,
            _ => {
                let msg = format!("{addr}: {door}: warning: cannot check the restored grant's rules ({outcome:?}): kept");
                self.line(&msg);
                return;
            }
        };
        let total = total.max(1);
        if absent == 0 {
            return;
        }
        if absent >= total {
            self.ledger.remove(id);
            let msg = format!("{addr}: {door}: rule no longer in the firewall, grant dropped");
            self.line(&msg);
        } else {
            let msg = format!(
                "{addr}: {door}: {absent} of {total} rules no longer in the firewall: closing the others"
            );
            self.line(&msg);
            self.close_id(id);
        }
    }

    /// [`restore`](Self::restore), with the elements of table `inet knockd` as the kernel
    /// holds them (`Firewall = nftables`; None: no table). For nftables grants the kernel is
    /// the truth: a grant keeps the elements still there with the time the kernel has left,
    /// and elements the state file does not know become grants of the door that opens them.
    pub async fn restore_with_kernel(
        &mut self,
        saved: Vec<SavedGrant>,
        kernel: Option<Vec<crate::firewall::nftables::listing::KernelElem>>,
    ) {
        let wall = SystemTime::now();
        let now = super::now();
        let mut kernel = kernel.unwrap_or_default();
        let mut due_ids = Vec::new();
        for g in saved {
            if let Close::Nft { elems } = &g.close {
                if let Some(c) = &g.client {
                    self.ledger.spa_client(&g.door, g.addr, c);
                }
                let elems = elems.clone();
                let msg = nft_side::restore(&mut self.ledger, g, &elems, &mut kernel, now);
                self.line(&msg);
                continue;
            }
            let remaining = g.expires_at_unix_ms.map(|ms| {
                state::from_unix_ms(ms)
                    .duration_since(wall)
                    .unwrap_or(Duration::ZERO)
            });
            // The state file is data: what closes the grant comes from the config, or is
            // checked against the little a previous run could have written.
            let close = match self.vet_close(&g) {
                Ok(c) => c,
                Err(why) => {
                    let msg = format!("error: {}: {}: {why}", g.addr, g.door);
                    self.line(&msg);
                    continue;
                }
            };
            let due = g.closing || remaining == Some(Duration::ZERO);
            let (door, addr) = (g.door.clone(), g.addr);
            if let Some(c) = &g.client {
                self.ledger.spa_client(&door, addr, c);
            }
            let id = self.ledger.insert(
                &door,
                addr,
                g.opened,
                state::from_unix_ms(g.opened_at_unix_ms),
                remaining.map(|r| now + r),
                close,
            );
            if due {
                let msg = if g.closing {
                    format!(
                        "{addr}: {door}: grant was still closing when knockd stopped, closing it"
                    )
                } else {
                    format!("{addr}: {door}: grant expired while knockd was down, closing it")
                };
                self.line(&msg);
                due_ids.push((g.opened_at_unix_ms, id));
                continue;
            }
            self.verify(id);
            let msg = match remaining {
                Some(r) => format!(
                    "{addr}: {door}: grant restored (closes in {}s)",
                    r.as_secs()
                ),
                None => format!("{addr}: {door}: grant restored (no deadline)"),
            };
            self.line(&msg);
        }
        // Through the pool and the firewall queue: in parallel, while knocks are served.
        // Newest first: `-I` put the newest rule at the head of its chain, and iptables-nft
        // compares a delete with every rule in front of its match, so the first batches the
        // queue forms (while these are still being handed over) delete from the head.
        due_ids.sort_unstable_by(|a, b| b.cmp(a));
        for (_, id) in due_ids {
            self.close_id(id);
        }
        if self.config.options.firewall == crate::config::FirewallKind::Nftables {
            for msg in nft_side::adopt(&mut self.ledger, &self.config, kernel, now) {
                self.line(&msg);
            }
        }
        // The file now reflects what this run owns (grants dropped above leave it).
        self.persistence
            .reset(&mut self.ledger, &self.config, &self.matcher, &mut self.spa);
    }
}
