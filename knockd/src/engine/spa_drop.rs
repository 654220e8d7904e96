//! The SPA port's DROP rule as the engine runs it (`Firewall = iptables`; the rule itself is
//! [`crate::firewall::spa_drop`]): brought in line with the config at start (awaited, before
//! the capture starts), after every reload that applied (in the background, one at a time and
//! in the order asked: a reload that failed changes nothing), checked every [`CHECK_EVERY`]
//! while a rule is wanted (in the same one-at-a-time chain; a tick is skipped while a change
//! still runs), and removed at a clean exit, after the ones still running. What each one did
//! comes back as log lines; a check that finds the rule in place logs nothing, one that puts
//! back a rule another program removed (`iptables-restore`, `iptables -F INPUT`) says so, and
//! a check that fails the same way as the one before is not logged again.

use super::Engine;
use crate::action::Executor;
use crate::config::{Config, FirewallKind};
pub(super) use crate::firewall::spa_drop::CHECK_EVERY;
use crate::firewall::spa_drop::{Occasion, Protection};
use crate::firewall::{BoxFuture, Firewall};
use crate::knocklog::LogSink;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Interval, MissedTickBehavior};

/// What a periodic check needs: the same sync a reload asks, with the config it last asked.
struct Check {
    fw: Arc<dyn Firewall>,
    tag: String,
    unwanted: &'static str,
    tick: Interval,
}

/// The rule's owner on the engine.
pub(crate) struct SpaDropSide {
    /// One change at a time, in the order asked: resolves when the last one handed out is
    /// done (the next one waits for it).
    last: Option<oneshot::Receiver<()>>,
    /// The port last asked for (None: no rule, or never asked).
    want: Option<u16>,
    /// The periodic check, while a rule is wanted (None otherwise: no timer at all).
    check: Option<Check>,
    /// What the last check that reported said (a check failing the same way again is quiet).
    last_check: Vec<String>,
    /// Lines of a background change, and whether it was a check.
    tx: mpsc::UnboundedSender<(bool, Vec<String>)>,
    rx: mpsc::UnboundedReceiver<(bool, Vec<String>)>,
}

impl Default for SpaDropSide {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        SpaDropSide {
            last: None,
            want: None,
            check: None,
            last_check: Vec::new(),
            tx,
            rx,
        }
    }
}

/// Why no rule is wanted for `p`, for the log.
fn unwanted(p: Protection) -> &'static str {
    match p {
        Protection::Unprotected(_) => "no door opens natively (Open =) now",
        _ => "no door takes SPA now",
    }
}

/// The next tick of the check, if there is one (never resolves otherwise).
async fn tick(check: &mut Option<Check>) {
    match check {
        Some(c) => {
            c.tick.tick().await;
        }
        None => std::future::pending().await,
    }
}

impl SpaDropSide {
    /// At start: make INPUT hold the rule `config` wants, keeping one an earlier run left (a
    /// `kill -9`) and removing one for a port no longer wanted. Nothing with nftables, nor
    /// without native doors (knockd runs no iptables then: see [`Protection::warning`]).
    async fn start(&mut self, fw: &Arc<dyn Firewall>, config: &Config) -> Vec<String> {
        let p = Protection::of(config);
        let natives = config.doors.iter().any(|d| !d.open.is_empty());
        if config.options.firewall != FirewallKind::Iptables
            || (p.iptables_port().is_none() && !natives)
        {
            return Vec::new();
        }
        self.after_last().await;
        self.want = p.iptables_port();
        self.set_check(fw, config, unwanted(p));
        let tag = config.options.instance_tag();
        match fw.spa_drop(tag, self.want, unwanted(p), Occasion::Start) {
            Some(f) => f.await,
            None => Vec::new(),
        }
    }

    /// After a reload: the rule the new config wants (a new port is inserted before the old
    /// one goes). The lines come back through [`Self::recv`].
    fn reload(&mut self, fw: &Arc<dyn Firewall>, config: &Config) {
        let p = Protection::of(config);
        let want = p.iptables_port();
        if config.options.firewall != FirewallKind::Iptables
            || (want.is_none() && self.want.is_none())
        {
            return;
        }
        self.want = want;
        self.set_check(fw, config, unwanted(p));
        let tag = config.options.instance_tag();
        if let Some(f) = fw.spa_drop(tag, want, unwanted(p), Occasion::Reload) {
            self.queue(f, false);
        }
    }

    /// The periodic check follows what was last asked: on while a rule is wanted (its first
    /// tick [`CHECK_EVERY`] from now when it was off), off otherwise.
    fn set_check(&mut self, fw: &Arc<dyn Firewall>, config: &Config, unwanted: &'static str) {
        if self.want.is_none() {
            self.check = None;
            return;
        }
        let tick = match self.check.take() {
            Some(c) => c.tick,
            None => {
                let start = tokio::time::Instant::now() + CHECK_EVERY;
                let mut t = tokio::time::interval_at(start, CHECK_EVERY);
                t.set_missed_tick_behavior(MissedTickBehavior::Delay);
                t
            }
        };
        self.check = Some(Check {
            fw: fw.clone(),
            tag: config.options.instance_tag(),
            unwanted,
            tick,
        });
    }

    /// A tick: the same sync as a reload's, unless a change still runs (the tick is skipped:
    /// that change brings INPUT in line anyway, and two never run at once).
    fn check_now(&mut self) {
        if let Some(last) = &mut self.last {
            match last.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => return,
                _ => self.last = None,
            }
        }
        let (Some(c), Some(want)) = (&self.check, self.want) else {
            return;
        };
        if let Some(f) =
            c.fw.spa_drop(c.tag.clone(), Some(want), c.unwanted, Occasion::Check)
        {
            self.queue(f, true);
        }
    }

    /// Run `f` after the change handed out last; its lines come back through [`Self::recv`].
    fn queue(&mut self, f: BoxFuture<Vec<String>>, check: bool) {
        let prev = self.last.take();
        let (done, last) = oneshot::channel();
        self.last = Some(last);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            if let Some(p) = prev {
                let _ = p.await;
            }
            let _ = tx.send((check, f.await));
            let _ = done.send(());
        });
    }

    /// Wait until every change handed out is done.
    async fn after_last(&mut self) {
        if let Some(p) = self.last.take() {
            let _ = p.await;
        }
    }

    /// The lines to log of what a background change did: a check that found nothing to say,
    /// or said what the check before it said, logs nothing.
    pub(super) fn lines(&mut self, check: bool, lines: Vec<String>) -> Option<Vec<String>> {
        if !check {
            self.last_check.clear();
            return Some(lines);
        }
        let again = lines == self.last_check;
        self.last_check.clone_from(&lines);
        (!again && !lines.is_empty()).then_some(lines)
    }

    /// What a change made in the background did (never None: the side holds a sender). Runs
    /// the periodic check while a rule is wanted. Cancel-safe (the engine's select loop).
    pub(super) async fn recv(&mut self) -> Option<Vec<String>> {
        loop {
            let checking = self.want.is_some() && self.check.is_some();
            tokio::select! {
                m = self.rx.recv() => {
                    let (check, lines) = m?;
                    if let Some(lines) = self.lines(check, lines) {
                        return Some(lines);
                    }
                }
                () = tick(&mut self.check), if checking => self.check_now(),
            }
        }
    }

    /// At a clean exit: after the changes still running, remove the rule. Every line not yet
    /// logged.
    async fn stop(&mut self, fw: &Arc<dyn Firewall>, config: &Config) -> Vec<String> {
        self.check = None;
        self.after_last().await;
        let mut out = Vec::new();
        while let Ok((check, lines)) = self.rx.try_recv() {
            out.extend(self.lines(check, lines).unwrap_or_default());
        }
        if self.want.take().is_some() {
            let tag = config.options.instance_tag();
            if let Some(f) = fw.spa_drop(tag, None, "knockd stops", Occasion::Stop) {
                out.extend(f.await);
            }
        }
        out
    }
}

impl<E: Executor, L: LogSink> Engine<E, L> {
    /// At start (see [`SpaDropSide::start`]).
    pub(super) async fn start_spa_drop(&mut self) {
        let fw = self.runner.firewall();
        let config = self.config.clone();
        let lines = self.spa_drop.start(&fw, &config).await;
        self.spa_drop_lines(lines);
    }

    /// After a reload applied: the rule follows the config, and the warning when nothing
    /// drops the SPA port is logged again.
    pub(super) fn reload_spa_drop(&mut self) {
        let fw = self.runner.firewall();
        let config = self.config.clone();
        self.spa_drop.reload(&fw, &config);
        if let Some(w) = Protection::of(&config).warning() {
            self.line(&w);
        }
    }

    /// At a clean exit (see [`SpaDropSide::stop`]).
    pub(super) async fn stop_spa_drop(&mut self) {
        let fw = self.runner.firewall();
        let config = self.config.clone();
        let lines = self.spa_drop.stop(&fw, &config).await;
        self.spa_drop_lines(lines);
    }

    pub(super) fn spa_drop_lines(&mut self, lines: Vec<String>) {
        for l in lines {
            if l.starts_with("error: ") {
                self.events.stats.commands_failed += 1;
            }
            self.line(&l);
        }
    }
}
