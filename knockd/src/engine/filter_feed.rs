//! The capture filter as the engine feeds it: the local addresses it is built for, the
//! expression last sent to the capture thread, and where to send a new one. Built by
//! [`crate::capture::filter_for`] (the one place that decides what goes in).

use super::totp::TotpClock;
use crate::config::Config;
use std::net::IpAddr;

pub(crate) struct FilterFeed {
    send: Box<dyn FnMut(String) + Send>,
    current: String,
    /// The capture interface's addresses (sorted, no duplicates).
    local: Vec<IpAddr>,
}

impl FilterFeed {
    /// `send` receives every new expression (at start, on reload, on address change, at a
    /// TOTP step boundary).
    pub fn new(send: Box<dyn FnMut(String) + Send>) -> Self {
        FilterFeed {
            send,
            current: String::new(),
            local: Vec::new(),
        }
    }

    pub fn local(&self) -> &[IpAddr] {
        &self.local
    }

    /// New local addresses: true when they changed (the filter then needs an update).
    pub fn set_local(&mut self, mut addrs: Vec<IpAddr>) -> bool {
        addrs.sort();
        addrs.dedup();
        if addrs == self.local {
            return false;
        }
        self.local = addrs;
        true
    }

    /// Build the filter for the doors of `config` at the TOTP clock's steps, and send it if it
    /// changed. Exact for small configs, the union of knock ports for large ones (cheap).
    pub fn update(&mut self, config: &Config, totp: &TotpClock) {
        let f = crate::capture::filter_for(&config.doors, &self.local, |i| totp.step(i));
        self.set(f);
    }

    /// Send `f` (built here or off the engine task for a reload) if it changed.
    pub fn set(&mut self, f: String) {
        if f != self.current {
            tracing::debug!(filter = %f, "new capture filter");
            self.current = f.clone();
            (self.send)(f);
        }
    }
}
