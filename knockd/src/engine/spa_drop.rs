//! The SPA port's DROP rule as the engine runs it (`Firewall = iptables`; the rule itself is
//! [`crate::firewall::spa_drop`]): brought in line with the config at start (awaited, before
//! the capture starts), after every reload that applied (in the background, one at a time and
//! in the order asked: a reload that failed changes nothing), and removed at a clean exit,
//! after the ones still running. What each one did comes back as log lines.

use super::Engine;
use crate::action::Executor;
use crate::config::{Config, FirewallKind};
use crate::firewall::spa_drop::Protection;
use crate::firewall::Firewall;
use crate::knocklog::LogSink;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// The rule's owner on the engine.
pub(crate) struct SpaDropSide {
    /// One change at a time, in the order asked: resolves when the last one handed out is
    /// done (the next one waits for it).
    last: Option<oneshot::Receiver<()>>,
    /// The port last asked for (None: no rule, or never asked).
    want: Option<u16>,
    tx: mpsc::UnboundedSender<Vec<String>>,
    rx: mpsc::UnboundedReceiver<Vec<String>>,
}

impl Default for SpaDropSide {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        SpaDropSide {
            last: None,
            want: None,
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
        match fw.spa_drop(config.options.instance_tag(), self.want, unwanted(p)) {
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
        let Some(f) = fw.spa_drop(config.options.instance_tag(), want, unwanted(p)) else {
            return;
        };
        let prev = self.last.take();
        let (done, last) = oneshot::channel();
        self.last = Some(last);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            if let Some(p) = prev {
                let _ = p.await;
            }
            let _ = tx.send(f.await);
            let _ = done.send(());
        });
    }

    /// Wait until every change handed out is done.
    async fn after_last(&mut self) {
        if let Some(p) = self.last.take() {
            let _ = p.await;
        }
    }

    /// What a change made in the background did (never None: the side holds a sender).
    pub(super) async fn recv(&mut self) -> Option<Vec<String>> {
        self.rx.recv().await
    }

    /// At a clean exit: after the changes still running, remove the rule. Every line not yet
    /// logged.
    async fn stop(&mut self, fw: &Arc<dyn Firewall>, config: &Config) -> Vec<String> {
        self.after_last().await;
        let mut out = Vec::new();
        while let Ok(lines) = self.rx.try_recv() {
            out.extend(lines);
        }
        if self.want.take().is_some() {
            if let Some(f) = fw.spa_drop(config.options.instance_tag(), None, "knockd stops") {
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
