//! Talking to knockd: connect, send one request, print the answer; or follow the event
//! stream. Turning an answer into text is [`render`], which is pure.

use std::io::{self, IsTerminal, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Local, TimeZone};
use knock_ipc::codec::CodecError;
use knock_ipc::{Client, ClientError, Request, Response};
use serde::Serialize;
use serde_json::json;

use super::cli::{Args, Command};
use super::output;

/// How long knockd gets to accept the connection and to answer a request. `tail` waits for
/// events as long as it takes.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why `knockctl` failed. The binary prints it as `knockctl: {err}` and exits with
/// [`CtlError::exit_code`].
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Connecting or talking to knockd failed (not running, permission, version mismatch...).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// knockd did not answer in time.
    #[error("knockd did not answer within {}s on {}", REPLY_TIMEOUT.as_secs(), .0.display())]
    Timeout(PathBuf),
    /// knockd answered the request with an error.
    #[error("knockd: {0}")]
    Daemon(String),
    /// `reload` failed; one error per line, each naming its file:line.
    #[error("{}", output::format_reload_failed(.0))]
    ReloadFailed(Vec<String>),
    /// `revoke` found nothing to close.
    #[error("{}", crate::present::no_grant_message(*.addr, .door.as_deref()))]
    NoGrant { addr: IpAddr, door: Option<String> },
    /// The socket's path goes through a directory this user cannot search.
    #[error("permission denied on {}: you cannot pass directory {} (mode {:04o}, owner {}:{}), which leads to the socket: restart knockd (it gives its socket directory group knockd, mode 0750), or as root run `chgrp knockd {} && chmod g+rx {}`",
        .socket.display(), .dir.display(), .mode, .uid, .gid, .dir.display(), .dir.display())]
    DirBlocked {
        socket: PathBuf,
        dir: PathBuf,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// `revoke --door NAME` named a door knockd does not have.
    #[error("no door named '{door}' (knockd has: {}; see knockctl doors)", .known.join(", "))]
    NoSuchDoor { door: String, known: Vec<String> },
    /// knockd answered with a response that does not fit the request.
    #[error("unexpected reply from knockd to {request}: {reply}")]
    Unexpected {
        request: &'static str,
        reply: String,
    },
    /// Writing to stdout or stderr failed.
    #[error("cannot write output: {0}")]
    Output(#[source] io::Error),
    /// The terminal interface failed (`knockctl tui`).
    #[error("{0:#}")]
    Tui(anyhow::Error),
    /// `-H`, `--hosts` or the hosts file are wrong.
    #[error(transparent)]
    Targets(#[from] crate::fleet::hosts::HostsError),
    /// The one host asked did not answer.
    #[error("{}: {error}", crate::present::visible(.name))]
    Host {
        name: String,
        error: crate::fleet::HostError,
    },
    /// Some of many hosts did not answer (each was named above with its reason).
    #[error("{failed} of {of} hosts did not answer")]
    Hosts { failed: usize, of: usize },
    /// `revoke --on HOST` names no chosen host.
    #[error("--on {name}: not one of the hosts ({known})")]
    UnknownHost { name: String, known: String },
    /// `reload` failed on some hosts (their errors are above).
    #[error("reload failed on some hosts")]
    ReloadsFailed,
}

impl CtlError {
    /// 3 when knockd is not running, 1 for everything else (usage errors are clap's 2).
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Client(e) if e.is_not_running() => 3,
            CtlError::Host { error, .. } if error.is_not_running() => 3,
            // Many hosts: 3 when none answered, 1 when some did not.
            CtlError::Hosts { failed, of } if failed >= of => 3,
            CtlError::Tui(e)
                if e.downcast_ref::<knock_ipc::ClientError>()
                    .is_some_and(knock_ipc::ClientError::is_not_running) =>
            {
                3
            }
            _ => 1,
        }
    }
}

/// Runs one `knockctl` command against the daemon at `args.socket`, writing results to
/// `out` and notices to `err`; tables fit in `width` columns (see [`table_width`]), or are
/// never wrapped with `None`. A closed `out` (`knockctl tail | head`) ends the run quietly.
pub async fn run(
    args: &Args,
    out: &mut dyn Write,
    err: &mut dyn Write,
    width: Option<usize>,
) -> Result<(), CtlError> {
    match dispatch(args, out, err, width).await {
        Err(CtlError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

async fn dispatch(
    args: &Args,
    out: &mut dyn Write,
    err: &mut dyn Write,
    width: Option<usize>,
) -> Result<(), CtlError> {
    if let Command::DialStdio = args.command {
        return Ok(crate::fleet::dial::dial_stdio(&args.socket).await?);
    }
    let hosts = crate::fleet::hosts::chosen(args)?;
    let socket = match hosts.as_slice() {
        [host] => match &host.target {
            crate::fleet::Target::Unix(path) => path.clone(),
            crate::fleet::Target::Ssh(_) => {
                return crate::fleet::run::run(args, &hosts, out, err).await
            }
        },
        _ => return crate::fleet::run::run(args, &hosts, out, err).await,
    };
    let socket = socket.as_path();
    match &args.command {
        Command::Tail => tail(socket, args.json, out, err).await,
        // The dashboard is started by `crate::run_knockctl`; `ctl` knows nothing of it.
        Command::Tui => Err(CtlError::Tui(anyhow::anyhow!(
            "knockctl tui is started by knockctl::run_knockctl, not ctl::run"
        ))),
        command => {
            let request = request_for(command);
            let name = request.name();
            let mut client = connect(socket).await?;
            let response = within(socket, client.request(request)).await?;
            let mut reply = render(command, name, response, args.json, &Local::now(), width);
            if let Err(CtlError::NoGrant {
                door: Some(door), ..
            }) = &reply.result
            {
                // Nothing closed: say so plainly if the door itself does not exist.
                if let Ok(Response::Doors { doors }) =
                    within(socket, client.request(Request::Doors)).await
                {
                    if let Some(e) = no_such_door(door, &doors) {
                        reply.result = Err(e);
                    }
                }
            }
            write(out, &reply.stdout)?;
            out.flush().map_err(CtlError::Output)?;
            write(err, &reply.stderr)?;
            reply.result
        }
    }
}

/// The width of the tables on stdout, like `ps` and `ss`: on a terminal, `COLUMNS` when
/// set, else the terminal's width; `None` (one row per line, never wrapped, so `grep` sees
/// whole rows) when stdout is a pipe or a file.
pub fn table_width() -> Option<usize> {
    if !io::stdout().is_terminal() {
        return None;
    }
    let columns = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok());
    let terminal = crossterm::terminal::size()
        .ok()
        .map(|(w, _)| usize::from(w));
    let positive = |w: &usize| *w > 0;
    Some(
        columns
            .filter(positive)
            .or(terminal.filter(positive))
            .unwrap_or(output::WIDTH),
    )
}

/// [`CtlError::NoSuchDoor`] when `door` is none of `doors` (names compare exactly, as
/// knockd's revoke does).
pub fn no_such_door(door: &str, doors: &[knock_ipc::DoorInfo]) -> Option<CtlError> {
    if doors.iter().any(|d| d.name == door) {
        return None;
    }
    let mut known: Vec<String> = doors
        .iter()
        .take(8)
        .map(|d| crate::present::visible(&d.name).into_owned())
        .collect();
    if doors.len() > known.len() {
        known.push(format!("... {} more", doors.len() - known.len()));
    }
    Some(CtlError::NoSuchDoor {
        door: crate::present::visible(door).into_owned(),
        known,
    })
}

/// What to print for a response, and whether the command succeeded.
#[derive(Debug)]
pub struct Reply {
    /// Goes to stdout, even when `result` is an error (e.g. the JSON of a failed reload).
    pub stdout: String,
    /// Notices for stderr (e.g. that a `--json` list is truncated).
    pub stderr: String,
    pub result: Result<(), CtlError>,
}

impl Reply {
    fn ok(stdout: String) -> Reply {
        Reply {
            stdout,
            stderr: String::new(),
            result: Ok(()),
        }
    }

    fn fail(stdout: String, error: CtlError) -> Reply {
        Reply {
            stdout,
            stderr: String::new(),
            result: Err(error),
        }
    }
}

/// The request a (non-streaming) command sends.
pub fn request_for(command: &Command) -> Request {
    match command {
        Command::Status => Request::Status,
        Command::List => Request::Grants,
        Command::Attempts => Request::Attempts,
        Command::Doors => Request::Doors,
        Command::Revoke { addr, door, .. } => Request::Revoke {
            addr: *addr,
            door: door.clone(),
        },
        Command::Reload => Request::Reload,
        Command::Metrics => Request::Status,
        Command::Clients { action: None } => Request::Clients,
        Command::Clients {
            action: Some(super::cli::ClientsAction::Revoke { name, close }),
        } => Request::RevokeClient {
            name: name.clone(),
            close: *close,
        },
        Command::Tail | Command::Tui | Command::DialStdio => Request::Subscribe,
    }
}

/// knockd lists at most [`knock_ipc::LIST_CAP`] entries, oldest first, and says how many there
/// are: when it sent fewer than that, say so (on stdout after the table; on stderr with
/// `--json`, whose stdout stays the plain list).
pub fn truncation_note(shown: usize, total: u64, what: &str) -> Option<String> {
    (total > shown as u64).then(|| {
        format!(
            "showing the oldest {shown} of {total} {what} (knockd lists at most {})",
            knock_ipc::LIST_CAP
        )
    })
}

/// A list: the table, then the truncation note; with `--json`, the document alone on stdout.
fn listing(body: String, json: bool, note: Option<String>) -> Reply {
    match note {
        Some(note) if json => Reply {
            stdout: body,
            stderr: format!("knockctl: {note}\n"),
            result: Ok(()),
        },
        Some(note) => Reply::ok(format!("{body}({note})\n")),
        None => Reply::ok(body),
    }
}

/// Turns knockd's answer to `command` into output and an outcome. `now` gives the time zone
/// and the day for clock times; tables fit in `width` columns, or never wrap with `None`.
pub fn render<Tz: TimeZone>(
    command: &Command,
    request: &'static str,
    response: Response,
    json: bool,
    now: &DateTime<Tz>,
    width: Option<usize>,
) -> Reply {
    match (command, response) {
        (_, Response::Error { message }) => Reply::fail(String::new(), CtlError::Daemon(message)),
        (Command::Status, Response::Status { status }) => Reply::ok(if json {
            doc(&status)
        } else {
            output::format_status(&status)
        }),
        (Command::Metrics, Response::Status { status }) => {
            Reply::ok(super::metrics::format_metrics(&status))
        }
        (Command::List, Response::Grants { grants, total }) => {
            let note = truncation_note(grants.len(), total, "grants");
            let body = if json {
                doc(&grants)
            } else {
                output::format_grants(&grants, now, width)
            };
            listing(body, json, note)
        }
        (Command::Attempts, Response::Attempts { attempts, total }) => {
            let note = truncation_note(attempts.len(), total, "attempts");
            let body = if json {
                doc(&attempts)
            } else {
                output::format_attempts(&attempts, width)
            };
            listing(body, json, note)
        }
        (Command::Doors, Response::Doors { doors }) => Reply::ok(if json {
            doc(&doors)
        } else {
            output::format_doors(&doors, width)
        }),
        (Command::Revoke { addr, door, .. }, Response::Revoked { grants }) => {
            let stdout = if json {
                doc(&json!({ "revoked": grants }))
            } else {
                output::format_revoked(&grants)
            };
            if grants.is_empty() {
                Reply::fail(
                    stdout,
                    CtlError::NoGrant {
                        addr: *addr,
                        door: door.clone(),
                    },
                )
            } else {
                Reply::ok(stdout)
            }
        }
        (Command::Clients { .. }, Response::Clients { clients }) => Reply::ok(if json {
            doc(&clients)
        } else {
            output::format_clients(&clients, now, width)
        }),
        (Command::Clients { .. }, Response::ClientRevoked { name, closed }) => Reply::ok(if json {
            doc(&json!({ "revoked": name, "closed": closed }))
        } else {
            let mut s = format!("SPA client {name} revoked: its next packet is refused\n");
            if !closed.is_empty() {
                s.push_str(&output::format_revoked(&closed));
            }
            s
        }),
        (Command::Reload, Response::Reloaded { warnings }) => Reply::ok(if json {
            doc(&json!({ "reloaded": true, "warnings": warnings }))
        } else {
            output::format_reloaded(&warnings)
        }),
        (Command::Reload, Response::ReloadFailed { errors }) => {
            let stdout = if json {
                doc(&json!({ "reloaded": false, "errors": errors }))
            } else {
                String::new()
            };
            Reply::fail(stdout, CtlError::ReloadFailed(errors))
        }
        (_, other) => Reply::fail(
            String::new(),
            CtlError::Unexpected {
                request,
                reply: format!("{other:?}"),
            },
        ),
    }
}

/// A pretty JSON document and a final newline.
fn doc<T: Serialize + ?Sized>(value: &T) -> String {
    // Wire types and `json!` values always serialize; fall back to null regardless.
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into());
    text.push('\n');
    text
}

/// `knockctl tail`: one line (or JSON object) per event until knockd closes the connection.
async fn tail(
    socket: &Path,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CtlError> {
    let client = connect(socket).await?;
    let mut events = within(socket, client.subscribe()).await?;
    let tz = Local;
    loop {
        match events.next().await {
            Ok(event) => {
                let line = if json {
                    serde_json::to_string(&event).unwrap_or_else(|_| "null".into())
                } else {
                    output::format_event(&event, &tz)
                };
                write(out, &format!("{line}\n"))?;
                out.flush().map_err(CtlError::Output)?;
            }
            Err(ClientError::Codec(CodecError::Closed)) => {
                writeln!(err, "knockd closed the connection").map_err(CtlError::Output)?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn connect(socket: &Path) -> Result<Client, CtlError> {
    match within(socket, Client::connect(socket)).await {
        Err(CtlError::Client(ClientError::PermissionDenied(path))) => {
            Err(blocked(&path).unwrap_or(CtlError::Client(ClientError::PermissionDenied(path))))
        }
        other => other,
    }
}

/// [`CtlError::DirBlocked`] for the first directory on the way to `socket` that this user
/// cannot search, if any (else the socket itself refused: group membership).
pub fn blocked(socket: &Path) -> Option<CtlError> {
    use std::os::unix::fs::MetadataExt;
    let parent = socket.parent()?;
    let mut dirs: Vec<&Path> = parent.ancestors().collect();
    dirs.reverse();
    dirs.into_iter()
        .filter(|d| !d.as_os_str().is_empty())
        .find_map(|dir| {
            if nix::unistd::access(dir, nix::unistd::AccessFlags::X_OK).is_ok() {
                return None;
            }
            let meta = std::fs::metadata(dir).ok()?;
            Some(CtlError::DirBlocked {
                socket: socket.to_path_buf(),
                dir: dir.to_path_buf(),
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
            })
        })
}

/// Awaits a step of the conversation with knockd, for at most [`REPLY_TIMEOUT`].
async fn within<T>(
    socket: &Path,
    step: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, CtlError> {
    match tokio::time::timeout(REPLY_TIMEOUT, step).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(CtlError::Timeout(socket.to_path_buf())),
    }
}

fn write(out: &mut dyn Write, text: &str) -> Result<(), CtlError> {
    out.write_all(text.as_bytes()).map_err(CtlError::Output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, Utc};
    use knock_ipc::GrantInfo;

    fn now() -> DateTime<FixedOffset> {
        Utc::now().fixed_offset()
    }

    fn grant() -> GrantInfo {
        GrantInfo {
            door: "openSSH".into(),
            addr: "10.0.0.12".parse().expect("ip"),
            opened: "22/tcp (INPUT)".into(),
            opened_at_unix_ms: 1_790_089_156_201,
            expires_in_ms: Some(30_000),
            closes: "native rule delete".into(),
            refreshes: 0,
            kernel_expires_in_ms: None,
            closing: false,
            close_error: None,
            client: None,
        }
    }

    fn revoke(door: Option<&str>) -> Command {
        Command::Revoke {
            addr: "10.0.0.12".parse().expect("ip"),
            door: door.map(str::to_string),
            on: None,
        }
    }

    #[test]
    fn every_command_maps_to_its_request() {
        assert_eq!(request_for(&Command::Status), Request::Status);
        assert_eq!(request_for(&Command::List), Request::Grants);
        assert_eq!(request_for(&Command::Attempts), Request::Attempts);
        assert_eq!(request_for(&Command::Doors), Request::Doors);
        assert_eq!(request_for(&Command::Reload), Request::Reload);
        assert_eq!(
            request_for(&revoke(Some("openSSH"))),
            Request::Revoke {
                addr: "10.0.0.12".parse().expect("ip"),
                door: Some("openSSH".into())
            }
        );
    }

    #[test]
    fn revoke_of_nothing_fails_and_names_the_door() {
        let reply = render(
            &revoke(Some("openSSH")),
            "revoke",
            Response::Revoked { grants: vec![] },
            false,
            &now(),
            None,
        );
        let err = reply.result.expect_err("nothing revoked");
        assert_eq!(err.exit_code(), 1);
        assert_eq!(
            err.to_string(),
            "no open grant for 10.0.0.12 on door openSSH"
        );

        let reply = render(
            &revoke(None),
            "revoke",
            Response::Revoked {
                grants: vec![grant()],
            },
            false,
            &now(),
            None,
        );
        assert!(reply.result.is_ok());
        assert_eq!(reply.stdout, "revoked openSSH 10.0.0.12 (22/tcp (INPUT))\n");
    }

    #[test]
    fn json_documents() {
        let reply = render(
            &Command::List,
            "list",
            Response::Grants {
                grants: vec![grant()],
                total: 1,
            },
            true,
            &now(),
            None,
        );
        let value: serde_json::Value = serde_json::from_str(&reply.stdout).expect("json");
        assert_eq!(value[0]["addr"], "10.0.0.12");
        assert_eq!(value[0]["expires_in_ms"], 30_000);
        assert_eq!(reply.stderr, "");

        let reply = render(
            &Command::Reload,
            "reload",
            Response::ReloadFailed {
                errors: vec!["/etc/knockd.conf:3: bad".into()],
            },
            true,
            &now(),
            None,
        );
        let value: serde_json::Value = serde_json::from_str(&reply.stdout).expect("json");
        assert_eq!(value["reloaded"], false);
        assert_eq!(value["errors"][0], "/etc/knockd.conf:3: bad");
        assert!(matches!(reply.result, Err(CtlError::ReloadFailed(_))));
    }

    /// A capped list says how much it left out: after the table, or on stderr with `--json`
    /// (stdout stays a plain JSON list).
    #[test]
    fn truncated_lists_say_so() {
        let grants = vec![grant(); 3];
        let list = |json| {
            render(
                &Command::List,
                "list",
                Response::Grants {
                    grants: grants.clone(),
                    total: 20_000,
                },
                json,
                &now(),
                None,
            )
        };
        let text = list(false);
        let last = text.stdout.lines().last().expect("a line");
        assert_eq!(
            last,
            format!(
                "(showing the oldest 3 of 20000 grants (knockd lists at most {}))",
                knock_ipc::LIST_CAP
            )
        );
        let json = list(true);
        let value: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
        assert_eq!(value.as_array().map(Vec::len), Some(3));
        assert!(json
            .stderr
            .starts_with("knockctl: showing the oldest 3 of 20000 grants"));
        let attempts = render(
            &Command::Attempts,
            "attempts",
            Response::Attempts {
                attempts: vec![],
                total: 0,
            },
            false,
            &now(),
            None,
        );
        assert!(!attempts.stdout.contains("showing"));
    }

    #[test]
    fn daemon_errors_and_mismatched_replies_exit_1() {
        let reply = render(
            &Command::Status,
            "status",
            Response::Error {
                message: "engine is shutting down".into(),
            },
            false,
            &now(),
            None,
        );
        let err = reply.result.expect_err("error");
        assert_eq!(err.to_string(), "knockd: engine is shutting down");
        assert_eq!(err.exit_code(), 1);

        let reply = render(
            &Command::Status,
            "status",
            Response::Subscribed,
            false,
            &now(),
            None,
        );
        let err = reply.result.expect_err("mismatch");
        assert_eq!(
            err.to_string(),
            "unexpected reply from knockd to status: Subscribed"
        );
    }

    #[test]
    fn not_running_exits_3() {
        let err = CtlError::from(ClientError::NotRunning("/run/knockd/knockd.sock".into()));
        assert_eq!(err.exit_code(), 3);
        let err = CtlError::from(ClientError::Refused("/run/knockd/knockd.sock".into()));
        assert_eq!(err.exit_code(), 3);
        let err = CtlError::from(ClientError::PermissionDenied("/s".into()));
        assert_eq!(err.exit_code(), 1);
    }
}
