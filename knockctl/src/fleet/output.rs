//! Many hosts' answers made into one output. Pure: answers and a clock reading in, text out.
//!
//! Tables gain a HOST column; status comes in one section per host; metrics carry a `host`
//! label; revoke and reload lines start with their host; JSON objects carry `host`. Hosts
//! that did not answer are named on stderr with their reason.

use chrono::{DateTime, TimeZone};
use knock_ipc::{Event, Response};
use serde::Serialize;
use serde_json::{json, Value};

use super::ask::HostError;
use crate::ctl::cli::Command;
use crate::ctl::output;
use crate::ctl::{CtlError, Reply};

/// One host's answer.
pub struct Answer {
    pub host: String,
    pub result: Result<Response, HostError>,
}

/// `value` as a JSON object with `host` added (a non-object goes under `value`).
pub fn with_host<T: Serialize>(host: &str, value: &T) -> Value {
    match serde_json::to_value(value) {
        Ok(Value::Object(mut map)) => {
            map.insert("host".into(), Value::String(host.to_string()));
            Value::Object(map)
        }
        Ok(other) => json!({ "host": host, "value": other }),
        Err(_) => json!({ "host": host }),
    }
}

/// A pretty JSON document and a final newline.
fn doc(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into());
    text.push('\n');
    text
}

/// `text` with every line started by `host` padded to `width`.
fn prefixed(host: &str, width: usize, text: &str) -> String {
    let host = crate::present::visible(host);
    text.lines()
        .map(|line| format!("{host:<width$}  {line}\n"))
        .collect()
}

/// What the hosts answered, merged for `command`.
pub fn render_many<Tz: TimeZone>(
    command: &Command,
    answers: Vec<Answer>,
    json: bool,
    now: &DateTime<Tz>,
) -> Reply {
    let of = answers.len();
    let width = answers.iter().map(|a| a.host.len()).max().unwrap_or(0);
    let mut stderr = String::new();
    let mut failed = 0;
    let mut errors: Vec<CtlError> = Vec::new();
    let mut ok: Vec<(String, Response)> = Vec::new();
    for answer in answers {
        match answer.result {
            Ok(Response::Error { message }) => {
                let host = crate::present::visible(&answer.host);
                stderr.push_str(&format!("knockctl: {host}: knockd: {message}\n"));
                errors.push(CtlError::Daemon(message));
            }
            Ok(response) => ok.push((answer.host, response)),
            Err(e) => {
                failed += 1;
                let host = crate::present::visible(&answer.host);
                stderr.push_str(&format!("knockctl: {host}: {e}\n"));
                if matches!(command, Command::Metrics) {
                    ok.push((answer.host, Response::Subscribed));
                }
            }
        }
    }
    let (stdout, outcome) = merge(command, ok, json, now, width, &mut stderr);
    let result = if failed > 0 {
        Err(CtlError::Hosts { failed, of })
    } else if let Some(e) = errors.into_iter().next() {
        Err(e)
    } else {
        outcome
    };
    Reply {
        stdout,
        stderr,
        result,
    }
}

/// The answers that came, merged: stdout and the command's own outcome.
fn merge<Tz: TimeZone>(
    command: &Command,
    ok: Vec<(String, Response)>,
    json: bool,
    now: &DateTime<Tz>,
    width: usize,
    stderr: &mut String,
) -> (String, Result<(), CtlError>) {
    let mut out = String::new();
    let mut objects: Vec<Value> = Vec::new();
    let mut outcome = Ok(());
    let mut revoked = 0;
    let mut tables = super::tables::Tables::default();
    for (host, response) in &ok {
        match (command, response) {
            (Command::Status, Response::Status { status }) => {
                if json {
                    objects.push(with_host(host, status));
                } else {
                    if !out.is_empty() {
                        out.push('\n');
                    }
                    out.push_str(&format!("== {} ==\n", crate::present::visible(host)));
                    out.push_str(&output::format_status(status));
                }
            }
            (Command::Metrics, response) => {
                let status = match response {
                    Response::Status { status } => Some(status),
                    _ => None,
                };
                tables.metrics(host, status);
            }
            (Command::List, Response::Grants { grants, total }) => {
                note(stderr, host, grants.len(), *total, "grants");
                if json {
                    objects.extend(grants.iter().map(|g| with_host(host, g)));
                }
                tables.grants(host, grants);
            }
            (Command::Attempts, Response::Attempts { attempts, total }) => {
                note(stderr, host, attempts.len(), *total, "attempts");
                if json {
                    objects.extend(attempts.iter().map(|a| with_host(host, a)));
                }
                tables.attempts(host, attempts);
            }
            (Command::Doors, Response::Doors { doors }) => {
                if json {
                    objects.extend(doors.iter().map(|d| with_host(host, d)));
                }
                tables.doors(host, doors);
            }
            (Command::Revoke { .. }, Response::Revoked { grants }) => {
                revoked += grants.len();
                if json {
                    objects.extend(grants.iter().map(|g| with_host(host, g)));
                } else {
                    out.push_str(&prefixed(host, width, &output::format_revoked(grants)));
                }
            }
            (Command::Reload, Response::Reloaded { warnings }) => {
                if json {
                    objects.push(json!({ "host": host, "reloaded": true, "warnings": warnings }));
                } else {
                    out.push_str(&prefixed(host, width, &output::format_reloaded(warnings)));
                }
            }
            (Command::Reload, Response::ReloadFailed { errors }) => {
                if json {
                    objects.push(json!({ "host": host, "reloaded": false, "errors": errors }));
                } else {
                    let text = output::format_reload_failed(errors);
                    out.push_str(&prefixed(host, width, &text));
                }
                outcome = Err(CtlError::ReloadsFailed);
            }
            (_, other) => {
                let host = crate::present::visible(host);
                stderr.push_str(&format!("knockctl: {host}: unexpected reply {other:?}\n"));
                outcome = Err(CtlError::Unexpected {
                    request: "many",
                    reply: format!("{other:?}"),
                });
            }
        }
    }
    if let Command::Revoke { addr, door, .. } = command {
        if revoked == 0 && !ok.is_empty() {
            outcome = Err(CtlError::NoGrant {
                addr: *addr,
                door: door.clone(),
            });
        }
        if json {
            return (doc(&json!({ "revoked": objects })), outcome);
        }
    }
    if json && !matches!(command, Command::Metrics) {
        return (doc(&Value::Array(objects)), outcome);
    }
    out.push_str(&tables.render(command, now, crate::ctl::run::table_width()));
    (out, outcome)
}

/// A host's list was cut short: say so on stderr (stdout stays one table or document).
fn note(stderr: &mut String, host: &str, shown: usize, total: u64, what: &str) {
    if let Some(note) = crate::ctl::run::truncation_note(shown, total, what) {
        let host = crate::present::visible(host);
        stderr.push_str(&format!("knockctl: {host}: {note}\n"));
    }
}

/// One merged `tail` line: the host, padded to `width`, then the event as `tail` shows it;
/// with `json`, the event's object with `host`.
pub fn tail_line<Tz: TimeZone>(
    host: &str,
    width: usize,
    event: &Event,
    json: bool,
    tz: &Tz,
) -> String {
    if json {
        let mut line =
            serde_json::to_string(&with_host(host, event)).unwrap_or_else(|_| "null".into());
        line.push('\n');
        line
    } else {
        prefixed(host, width, &output::format_event(event, tz))
    }
}
