//! `knockctl` over the hosts `-H`, `--hosts` or `KNOCKCTL_HOST` chose: every host asked at
//! once, answers merged ([`super::output`]). With one host, the output is what the local
//! command prints.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use chrono::Local;
use knock_ipc::codec::CodecError;
use knock_ipc::ClientError;
use tokio::sync::mpsc;

use super::ask::{ask, ask_all, revoke_where_held, subscribe, HostError};
use super::connect::{connector_sharing, Connector};
use super::hosts::Host;
use super::merge::Merger;
use super::output::{render_many, tail_line, Answer};
use super::share::Share;
use crate::ctl::cli::{Args, Command};
use crate::ctl::run::{render, request_for};
use crate::ctl::CtlError;

/// The ssh program: `KNOCKCTL_SSH` if set, else `ssh` from PATH.
pub fn ssh_program() -> PathBuf {
    std::env::var_os("KNOCKCTL_SSH")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from("ssh"), PathBuf::from)
}

fn write(out: &mut dyn Write, text: &str) -> Result<(), CtlError> {
    out.write_all(text.as_bytes()).map_err(CtlError::Output)
}

/// Runs `args.command` on `hosts` (not `tui` or `dial-stdio`).
pub async fn run(
    args: &Args,
    hosts: &[Host],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CtlError> {
    let ssh = ssh_program();
    let share = Share::new(super::hosts::persist(args)?)?.map(std::sync::Arc::new);
    let peers: Vec<(&Host, Box<dyn Connector>)> = hosts
        .iter()
        .map(|h| (h, connector_sharing(h, &ssh, share.clone())))
        .collect();
    match args.command {
        Command::Tail => return tail(&peers, args.json, args.timeout, out, err).await,
        Command::Tui => {
            return Err(CtlError::Tui(anyhow::anyhow!(
                "knockctl tui is started by knockctl::run_knockctl"
            )))
        }
        _ => {}
    }
    let request = request_for(&args.command);
    if let [(host, connector)] = peers.as_slice() {
        let response = ask(connector.as_ref(), request.clone(), args.timeout)
            .await
            .map_err(|error| CtlError::Host {
                name: host.name.clone(),
                error,
            })?;
        let reply = render(
            &args.command,
            request.name(),
            response,
            args.json,
            &Local::now(),
            crate::ctl::run::table_width(),
        );
        return emit(reply, out, err);
    }
    let only = match &args.command {
        Command::Revoke { on: Some(on), .. } => {
            if !hosts.iter().any(|h| &h.name == on) {
                let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
                return Err(CtlError::UnknownHost {
                    name: on.clone(),
                    known: names.join(", "),
                });
            }
            Some(on.as_str())
        }
        _ => None,
    };
    let chosen: Vec<&(&Host, Box<dyn Connector>)> = peers
        .iter()
        .filter(|(h, _)| only.is_none_or(|on| h.name == on))
        .collect();
    let results = match &args.command {
        Command::Revoke { addr, door, .. } => {
            futures::future::join_all(
                chosen
                    .iter()
                    .map(|(_, c)| revoke_where_held(c.as_ref(), *addr, door.clone(), args.timeout)),
            )
            .await
        }
        _ => {
            let asks = chosen
                .iter()
                .map(|(_, c)| (c.as_ref(), request.clone()))
                .collect();
            ask_all(asks, args.timeout).await
        }
    };
    let answers = chosen
        .iter()
        .zip(results)
        .map(|((host, _), result)| Answer {
            host: host.name.clone(),
            result,
        })
        .collect();
    let reply = render_many(&args.command, answers, args.json, &Local::now());
    emit(reply, out, err)
}

fn emit(
    reply: crate::ctl::Reply,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CtlError> {
    write(out, &reply.stdout)?;
    out.flush().map_err(CtlError::Output)?;
    write(err, &reply.stderr)?;
    reply.result
}

/// What a host's event stream sends the merging loop.
enum Feed {
    Event(knock_ipc::Event),
    /// The stream ended: None when knockd closed it, else why.
    End(Option<HostError>),
}

/// `tail` over many hosts: one stream, each line started by its host, in time order (events
/// are held [`super::merge::HOLD`] so that a host a little behind still lands in order).
async fn tail(
    peers: &[(&Host, Box<dyn Connector>)],
    json: bool,
    timeout: Duration,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CtlError> {
    let single = peers.len() == 1;
    let width = peers.iter().map(|(h, _)| h.name.len()).max().unwrap_or(0);
    let opened =
        futures::future::join_all(peers.iter().map(|(_, c)| subscribe(c.as_ref(), timeout))).await;
    let (tx, mut rx) = mpsc::channel::<(usize, Feed)>(1024);
    let mut live = 0;
    let mut failed = 0;
    for (i, result) in opened.into_iter().enumerate() {
        let name = &peers[i].0.name;
        match result {
            Ok(mut events) => {
                live += 1;
                let tx = tx.clone();
                tokio::spawn(async move {
                    loop {
                        let feed = match events.next().await {
                            Ok(event) => Feed::Event(event),
                            Err(HostError::Client(ClientError::Codec(CodecError::Closed))) => {
                                Feed::End(None)
                            }
                            Err(e) => Feed::End(Some(e)),
                        };
                        let end = matches!(feed, Feed::End(_));
                        if tx.send((i, feed)).await.is_err() || end {
                            return;
                        }
                    }
                });
            }
            Err(error) if single => {
                return Err(CtlError::Host {
                    name: name.clone(),
                    error,
                })
            }
            Err(e) => {
                failed += 1;
                writeln!(err, "knockctl: {}: {e}", crate::present::visible(name))
                    .map_err(CtlError::Output)?;
            }
        }
    }
    drop(tx);
    let tz = Local;
    let mut merger = Merger::default();
    let mut open = live;
    while open > 0 || !merger.is_empty() {
        let wait = merger.next_due(tokio::time::Instant::now());
        let feed = tokio::select! {
            feed = rx.recv(), if open > 0 => feed,
            () = sleep(wait) => None,
        };
        match feed {
            Some((i, Feed::Event(event))) => merger.push(i, event, tokio::time::Instant::now()),
            Some((i, Feed::End(why))) => {
                open -= 1;
                let name = crate::present::visible(&peers[i].0.name).into_owned();
                let text = match why {
                    None if single => "knockd closed the connection".to_string(),
                    None => format!("{name}: knockd closed the connection"),
                    Some(e) => format!("{name}: {e}"),
                };
                writeln!(err, "{text}").map_err(CtlError::Output)?;
            }
            None if open > 0 && wait.is_none() => open = 0,
            None => {}
        }
        let now = tokio::time::Instant::now();
        let flush_all = open == 0;
        for (i, event) in merger.due(now, flush_all) {
            let line = if single {
                let mut line = if json {
                    serde_json::to_string(&event).unwrap_or_else(|_| "null".into())
                } else {
                    crate::ctl::output::format_event(&event, &tz)
                };
                line.push('\n');
                line
            } else {
                tail_line(&peers[i].0.name, width, &event, json, &tz)
            };
            write(out, &line)?;
        }
        out.flush().map_err(CtlError::Output)?;
    }
    match failed {
        0 => Ok(()),
        _ => Err(CtlError::Hosts {
            failed,
            of: peers.len(),
        }),
    }
}

async fn sleep(until: Option<tokio::time::Instant>) {
    match until {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
