//! Running actions off the engine task, in order per grant, and taking their results back.

use super::*;

impl<E: Executor, L: LogSink> Engine<E, L> {
    pub(super) fn close_grant(&mut self, g: Grant) {
        let after = self.chains.remove(&g.id);
        for a in g.close.actions() {
            let msg = format!("{}: running command: {a}", g.door);
            self.line(&msg);
        }
        self.spawn_after(
            after,
            None,
            &g.door,
            g.addr,
            TaskKind::Close,
            g.close.actions(),
        );
    }

    /// Spawn `actions` for a grant, after the grant's previous actions finished (so a close
    /// never overtakes the insert it undoes).
    pub(super) fn spawn(
        &mut self,
        grant: Option<GrantId>,
        door: &str,
        addr: IpAddr,
        kind: TaskKind,
        actions: Vec<Action>,
    ) {
        let after = grant.and_then(|id| self.chains.get(&id).cloned());
        let done = self.spawn_after(after, grant, door, addr, kind, actions);
        if let (Some(id), Some(rx)) = (grant, done) {
            self.chains.insert(id, rx);
        }
    }

    pub(super) fn spawn_after(
        &mut self,
        after: Option<watch::Receiver<bool>>,
        grant: Option<GrantId>,
        door: &str,
        addr: IpAddr,
        kind: TaskKind,
        actions: Vec<Action>,
    ) -> Option<watch::Receiver<bool>> {
        let (tx, rx) = watch::channel(false);
        let exec = self.exec.clone();
        let done_tx = self.done_tx.clone();
        let door = door.to_string();
        self.inflight += 1;
        tokio::spawn(async move {
            if let Some(mut prev) = after {
                let _ = prev.wait_for(|d| *d).await;
            }
            let mut reinserted = false;
            let mut outcome = Outcome::Ok;
            if kind == TaskKind::Ensure {
                // [check, insert]: insert only when the check fails.
                let mut it = actions.into_iter();
                if let (Some(check), Some(insert)) = (it.next(), it.next()) {
                    if !exec.run(check).await.is_ok() {
                        reinserted = true;
                        outcome = exec.run(insert).await;
                    }
                }
            } else {
                for a in actions {
                    let o = exec.run(a).await;
                    if !o.is_ok() {
                        outcome = o;
                    }
                }
            }
            let _ = tx.send(true);
            let _ = done_tx.send(Done {
                grant,
                door,
                addr,
                kind,
                reinserted,
                outcome,
            });
        });
        Some(rx)
    }

    pub(super) fn on_done(&mut self, d: Done) {
        self.inflight = self.inflight.saturating_sub(1);
        if d.reinserted && d.outcome.is_ok() {
            let msg = format!("{}: {}: rule was missing, re-inserted", d.addr, d.door);
            self.line(&msg);
        }
        match &d.outcome {
            Outcome::Ok => {}
            Outcome::Failed { code, stderr } => {
                self.stats.commands_failed += 1;
                let msg = match code {
                    Some(c) => format!("{}: command returned non-zero status code ({c})", d.door),
                    None => format!("{}: command killed by a signal", d.door),
                };
                self.line(&msg);
                let door = d.door.clone();
                let message = if stderr.is_empty() {
                    msg.clone()
                } else {
                    format!("{msg}: {stderr}")
                };
                self.emit(|| ipc::EventKind::CommandFailed { door, message });
                if !stderr.is_empty() {
                    tracing::warn!(door = %d.door, "command stderr: {stderr}");
                }
            }
            Outcome::SpawnError(e) => {
                self.stats.commands_failed += 1;
                let msg = format!("{}: command failed to start: {e}", d.door);
                self.line(&msg);
                let door = d.door.clone();
                self.emit(|| ipc::EventKind::CommandFailed { door, message: msg });
            }
        }
        if d.kind == TaskKind::Start && !d.outcome.is_ok() {
            // Undo whatever part did succeed (one of several native rules, half a script):
            // close the grant now instead of forgetting it with a rule possibly left open.
            if let Some(g) = d.grant.and_then(|id| self.ledger.remove(id)) {
                let msg = format!(
                    "{}: {}: the start command failed: closing the grant",
                    g.addr, g.door
                );
                self.line(&msg);
                self.close_grant(g);
            }
        }
        if let Some(id) = d.grant {
            if self.ledger.get(id).is_none() {
                self.chains.remove(&id);
            }
        }
    }
}
