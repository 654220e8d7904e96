//! Answers: what each host's reply to a request (a refresh or a command) changes.

use knock_ipc::{Request, Response};

use super::{GrantEnd, Overlay, State};
use crate::present::no_grant_message;

impl State {
    /// Host `host`'s answer to `request`.
    pub fn host_response(&mut self, host: usize, request: &Request, response: Response, now: i64) {
        if host >= self.hosts.len() {
            return;
        }
        let who = self.host_prefix(host);
        match response {
            Response::Status { status } => {
                let h = &mut self.hosts[host];
                h.daemon_version = Some(status.daemon_version.clone());
                h.status = Some(status);
                h.status_at_ms = now;
            }
            Response::Attempts { attempts, total } => {
                self.hosts[host].attempts_unlisted = total.saturating_sub(attempts.len() as u64);
                self.merge_attempts(host, attempts, total, now);
            }
            Response::Grants { grants, total } => {
                self.hosts[host].grants_unlisted = total.saturating_sub(grants.len() as u64);
                self.merge_grants(host, grants, total, now);
            }
            Response::Doors { doors } => {
                let h = &mut self.hosts[host];
                h.doors = doors;
                h.doors_at_ms = now;
            }
            Response::Clients { .. } | Response::ClientRevoked { .. } => {}
            Response::Revoked { grants } => {
                if grants.is_empty() {
                    let (addr, door) = match request {
                        Request::Revoke { addr, door } => (Some(*addr), door.as_deref()),
                        _ => (None, None),
                    };
                    let text = match addr {
                        Some(addr) => no_grant_message(addr, door),
                        None => "nothing revoked".to_string(),
                    };
                    self.set_notice(format!("{who}{text}"), true, Some(now));
                } else {
                    let names: Vec<String> = grants
                        .iter()
                        .map(|g| format!("{} ({})", g.addr, g.door))
                        .collect();
                    self.set_notice(
                        format!("{who}revoked {}", names.join(", ")),
                        false,
                        Some(now),
                    );
                    for grant in grants {
                        self.end_grant(host, grant, GrantEnd::Revoked, now);
                    }
                }
            }
            Response::Reloaded { warnings } => {
                if warnings.is_empty() {
                    self.set_notice(format!("{who}configuration reloaded"), false, Some(now));
                } else {
                    self.set_notice(
                        format!(
                            "{who}configuration reloaded with {} warning(s)",
                            warnings.len()
                        ),
                        false,
                        Some(now),
                    );
                    let mut warnings: Vec<String> =
                        warnings.into_iter().map(|w| format!("{who}{w}")).collect();
                    // Another host's warnings from the same reload stay in the popup.
                    if let Some(Overlay::ReloadWarnings { warnings: before }) = self.overlay.take()
                    {
                        warnings.splice(0..0, before);
                    }
                    self.overlay = Some(Overlay::ReloadWarnings { warnings });
                }
            }
            Response::ReloadFailed { errors } => {
                self.set_notice(
                    format!("{who}reload failed: the old configuration stays in force"),
                    true,
                    Some(now),
                );
                let mut errors: Vec<String> =
                    errors.into_iter().map(|e| format!("{who}{e}")).collect();
                if let Some(Overlay::ReloadFailed { errors: before }) = self.overlay.take() {
                    errors.splice(0..0, before);
                }
                self.overlay = Some(Overlay::ReloadFailed { errors });
            }
            Response::Error { message } => {
                self.set_notice(
                    format!("{who}knockd: {message} ({})", request.name()),
                    true,
                    Some(now),
                );
            }
            Response::Subscribed => {}
        }
        self.prune(now);
    }

    /// A command for host `host` could not be carried out (not connected, no answer).
    pub fn host_command_failed(&mut self, host: usize, request: &Request, reason: &str, now: i64) {
        let who = self.host_prefix(host);
        self.set_notice(
            format!("{who}{} failed: {reason}", request.name()),
            true,
            Some(now),
        );
    }
}
