//! Answers to control-socket requests.

use super::events::grant_info;
use super::runner::Chain;
use super::Engine;
use crate::action::Executor;
use crate::config::{self, Door};
use crate::firewall::nftables::side as nft_side;
use crate::grants::GrantId;
use crate::knocklog::LogSink;
use knock_ipc as ipc;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A door as `knockctl doors` shows it; `step` is its current TOTP step, `wall` the TOTP clock
/// (time since the Unix epoch); `firewall`: the backend of native doors (`open 22/tcp
/// (INPUT)` with iptables, `open 22/tcp (nftables)` with nftables, which uses no chain).
fn door_info(
    d: &Door,
    step: Option<u64>,
    wall: Duration,
    firewall: config::FirewallKind,
) -> ipc::DoorInfo {
    let mut flags: Vec<String> = Vec::new();
    for (name, bit) in config::flag::NAMES {
        if d.tcp_flags.set & bit != 0 {
            flags.push(name.to_string());
        }
        if d.tcp_flags.unset & bit != 0 {
            flags.push(format!("!{name}"));
        }
    }
    let action = if !d.open.is_empty() {
        let ports = config::ports_label(d.open.iter().map(|o| (o.port, o.proto)));
        let via = match firewall {
            config::FirewallKind::Iptables => d.open_chain.as_str(),
            config::FirewallKind::Nftables => "nftables",
        };
        format!("open {ports} ({via})")
    } else {
        match (&d.start_command, &d.stop_command) {
            (Some(_), Some(_)) => "command + stop_command".to_string(),
            (Some(_), None) => "command".to_string(),
            (None, Some(_)) => "stop_command".to_string(),
            (None, None) => "none".to_string(),
        }
    };
    ipc::DoorInfo {
        name: d.name.clone(),
        // A TOTP door's current sequence would open it: never sent.
        sequence: if d.totp.is_some() {
            Vec::new()
        } else {
            d.sequence.iter().map(|s| s.to_string()).collect()
        },
        seq_timeout_ms: ms(d.seq_timeout),
        cmd_timeout_ms: ms(d.cmd_timeout),
        tcp_flags: flags.join(","),
        action,
        one_time: d.one_time_sequences.is_some(),
        enabled: !d.sequence.is_empty() || d.totp.is_some(),
        target: d.target,
        kind: if d.totp.is_some() {
            "totp"
        } else if d.one_time_sequences.is_some() {
            "one-time"
        } else {
            "static"
        }
        .to_string(),
        step,
        knocks: match &d.totp {
            Some(spec) => u32::try_from(spec.knocks).unwrap_or(u32::MAX),
            None => u32::try_from(d.sequence.len()).unwrap_or(u32::MAX),
        },
        // The control socket withholds it from peers that are not root.
        sequence_hidden: false,
        step_secs: d.totp.as_ref().map(|t| t.step_secs.max(1)),
        next_step_in_ms: d.totp.as_ref().zip(step).map(|(t, step)| {
            let next = Duration::from_secs(t.step_start(step.saturating_add(1)));
            ms(next.saturating_sub(wall))
        }),
    }
}

impl<E: Executor, L: LogSink> Engine<E, L> {
    /// Answer a control-socket request.
    pub fn on_request(&mut self, req: ipc::Request) -> ipc::Response {
        use ipc::{Request, Response};
        let now = super::now();
        match req {
            Request::Status => Response::Status {
                status: self.status(now),
            },
            // Both lists send their oldest LIST_CAP entries and the total: the engine's cost
            // is the page, never the table (100,000 attempts, 20,000 grants).
            Request::Grants => Response::Grants {
                grants: self
                    .ledger
                    .oldest()
                    .take(ipc::LIST_CAP)
                    .map(|g| grant_info(g, now))
                    .collect(),
                total: self.ledger.len() as u64,
            },
            Request::Attempts => Response::Attempts {
                attempts: self
                    .matcher
                    .oldest(ipc::LIST_CAP)
                    .into_iter()
                    .map(|a| ipc::AttemptInfo {
                        addr: a.src,
                        door: self
                            .config
                            .doors
                            .get(a.door)
                            .map(|d| d.name.clone())
                            .unwrap_or_default(),
                        stage: a.stage as u32,
                        of: a.of as u32,
                        age_ms: ms(now.saturating_duration_since(a.started)),
                        remaining_ms: ms(a.deadline.saturating_duration_since(now)),
                    })
                    .collect(),
                total: self.matcher.len() as u64,
            },
            Request::Doors => {
                let wall = self.totp.wall();
                let firewall = self.config.options.firewall;
                Response::Doors {
                    doors: self
                        .config
                        .doors
                        .iter()
                        .enumerate()
                        .map(|(i, d)| door_info(d, self.totp.step(i), wall, firewall))
                        .collect(),
                }
            }
            Request::Revoke { addr, door } => self.revoke(addr, door.as_deref(), now),
            // Both are the socket server's job: a reload is read and prepared off this task
            // (see `request_reload`), a subscription is served from the event channel.
            Request::Reload | Request::Subscribe => Response::Error {
                message: "reload and subscribe are the socket server's job".into(),
            },
            Request::Clients => self.spa_clients(),
            Request::RevokeClient { name, close } => self.spa_revoke(&name, close, now),
        }
    }

    pub(super) fn status(&self, now: Instant) -> ipc::Status {
        let drops = self.capture_stats.as_ref().map_or(0, |s| {
            s.dropped.load(Ordering::Relaxed) + s.if_dropped.load(Ordering::Relaxed)
        });
        let failing = self.persistence.failing();
        ipc::Status {
            daemon_version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            uptime_secs: now.saturating_duration_since(self.started).as_secs(),
            interfaces: self.interfaces.clone(),
            config_file: self.config_path.display().to_string(),
            doors: self.config.doors.len() as u32,
            attempts: self.matcher.len() as u64,
            max_attempts: self.matcher.cap() as u64,
            grants: self.ledger.len() as u64,
            spa: self.spa_counters(),
            counters: ipc::Counters {
                kernel_drops: drops,
                log_lines_dropped: self.events.dropped(),
                ..self.events.stats.clone()
            },
            firewall: self.config.options.firewall.as_str().to_string(),
            state_error: failing.as_ref().map(|f| f.error.clone()),
            state_error_since_unix_ms: failing.map(|f| crate::state::unix_ms(f.since)),
        }
    }

    /// Close the grants of `addr` (of one door if given) now.
    pub(super) fn revoke(
        &mut self,
        addr: IpAddr,
        door: Option<&str>,
        now: Instant,
    ) -> ipc::Response {
        let ids: Vec<GrantId> = self
            .ledger
            .oldest()
            .filter(|g| g.addr == addr && g.closing.is_none() && door.is_none_or(|d| d == g.door))
            .map(|g| g.id)
            .collect();
        if ids.is_empty() {
            let message = match door {
                Some(d) => format!("no open grant for {addr} on door {d}"),
                None => format!("no open grant for {addr}"),
            };
            return ipc::Response::Error { message };
        }
        let mut revoked = Vec::new();
        for id in ids {
            if let Some(g) = self.ledger.begin_close(id) {
                let msg = format!("{}: {}: grant revoked", g.addr, g.door);
                self.line(&msg);
                let info = grant_info(&g, now);
                let ev = info.clone();
                self.emit(|| ipc::EventKind::GrantRevoked { grant: ev });
                revoked.push(info);
                self.close_grant(g);
            }
        }
        ipc::Response::Revoked { grants: revoked }
    }

    /// `knockctl list` with nftables: read the kernel's elements off the engine task;
    /// [`Self::on_kernel_view`] answers `reply` when they are in.
    pub(super) fn list_from_kernel(&mut self, reply: tokio::sync::oneshot::Sender<ipc::Response>) {
        let last_id = self.ledger.last_id();
        if let Err(reply) = self.nft.list(last_id, super::now(), reply) {
            let _ = reply.send(self.on_request(ipc::Request::Grants));
        }
    }

    /// The kernel's listing is in: the ledger follows it (see [`nft_side::follow`]), then
    /// `knockctl list` is answered with the kernel's time left on each grant.
    pub(super) fn on_kernel_view(&mut self, v: nft_side::KernelView) {
        let now = super::now();
        let runner = &self.runner;
        let pending = |addr: IpAddr| runner.pending(&Chain::NftElems(addr));
        let f = match nft_side::follow(&mut self.ledger, v, pending, now) {
            Ok(f) => f,
            Err((e, reply)) => {
                tracing::warn!("cannot read the kernel's nftables elements for knockctl list: {e}");
                let _ = reply.send(self.on_request(ipc::Request::Grants));
                return;
            }
        };
        for g in &f.forgotten {
            let msg = format!(
                "{}: {}: grant no longer in the kernel (expired or removed), forgotten",
                g.addr, g.door
            );
            self.line(&msg);
            let info = grant_info(g, now);
            self.emit(|| ipc::EventKind::GrantExpired { grant: info });
        }
        let grants = self
            .ledger
            .oldest()
            .take(ipc::LIST_CAP)
            .map(|g| f.info(g, grant_info(g, now)))
            .collect();
        let total = self.ledger.len() as u64;
        let _ = f.reply.send(ipc::Response::Grants { grants, total });
    }
}
