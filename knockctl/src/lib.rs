//! Client-side tools: the `knock` client and the `knockctl` control CLI and dashboard.
//!
//! - [`knock`]: the `knock` client.
//! - [`ctl`]: `knockctl`'s commands: ask knockd, print the answer.
//! - [`tui`]: `knockctl tui`, the live dashboard.
//! - [`fleet`]: which knockd to talk to (`-H`, `--hosts`), how to reach it (a socket, ssh),
//!   many hosts asked at once and their answers merged.
//! - [`present`]: what the CLI and the dashboard share: durations, clocks, escaping, labels,
//!   column layout. `ctl` and `tui` both use it and never each other.

use std::io::Write;

pub mod ctl;
pub mod fleet;
pub mod knock;
pub mod present;
pub mod tui;

/// `knockctl`: the dashboard for `knockctl tui`, any other command through [`ctl::run()`].
pub async fn run_knockctl(
    args: &ctl::Args,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), ctl::CtlError> {
    match args.command {
        ctl::Command::Tui => {
            let hosts = fleet::hosts::chosen(args)?;
            let ssh = fleet::run::ssh_program();
            match tui::run(&hosts, &ssh, args.timeout).await {
                Ok(()) => Ok(()),
                // One host over ssh that cannot be reached: named, as the CLI does.
                Err(e) => match (e.downcast::<fleet::HostError>(), hosts.as_slice()) {
                    (Ok(error), [host]) => Err(ctl::CtlError::Host {
                        name: host.name.clone(),
                        error,
                    }),
                    (Ok(error), _) => Err(ctl::CtlError::Tui(anyhow::Error::new(error))),
                    (Err(e), _) => Err(ctl::CtlError::Tui(e)),
                },
            }
        }
        _ => ctl::run(args, out, err, ctl::run::table_width()).await,
    }
}

#[cfg(test)]
mod tests {
    /// The CLI and the dashboard share [`crate::present`], never each other's modules.
    #[test]
    fn ctl_and_tui_do_not_import_each_other() {
        let ctl = [
            include_str!("ctl/mod.rs"),
            include_str!("ctl/cli.rs"),
            include_str!("ctl/metrics.rs"),
            include_str!("ctl/output.rs"),
            include_str!("ctl/run.rs"),
        ];
        for src in ctl {
            assert!(!src.contains("crate::tui"), "ctl imports tui");
        }
        let tui = [
            include_str!("tui/mod.rs"),
            include_str!("tui/app.rs"),
            include_str!("tui/link.rs"),
            include_str!("tui/render/hosts.rs"),
            include_str!("tui/input.rs"),
            include_str!("tui/state/mod.rs"),
            include_str!("tui/render/mod.rs"),
            include_str!("tui/render/grants.rs"),
            include_str!("tui/render/doors.rs"),
        ];
        for src in tui {
            assert!(!src.contains("crate::ctl"), "tui imports ctl");
        }
    }
}
