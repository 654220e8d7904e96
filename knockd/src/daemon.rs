//! The knockd daemon's start: arguments and config, privileges, the capture interface, the
//! state file's lock, table inet knockd, the control socket, daemonising, the pidfile and the
//! runtime; then [`crate::serve::serve`] runs it. `main.rs` only parses the command line and
//! maps the result to an exit code.

use crate::action::SystemExecutor;
use crate::capture::Capture;
use crate::cli::{Args, DEFAULT_PIDFILE};
use crate::config::{self, DEFAULT_STATE_FILE};
use crate::control::ControlSocket;
use crate::firewall::iptables::IptablesRestore;
use crate::knocklog::KnockLog;
use crate::oneshot::{check_filter, load_config};
use crate::serve::{Deps, Packets, Parts};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the command line sets over the config file (at start, on every reload, and for
/// `--firewall-cleanup`).
pub(crate) fn overrides_of(args: &Args) -> config::Overrides {
    config::Overrides {
        interface: args.interface.clone(),
        log_file: args.logfile.clone(),
        pid_file: args.pidfile.clone(),
        socket: args.socket.clone(),
        state_file: args.state_file.clone(),
        base_dir: std::env::current_dir().ok(),
        firewall: args.firewall,
    }
}

struct PidFile(PathBuf);

impl PidFile {
    /// Write our pid, never through a symlink or into someone else's file (see
    /// [`crate::safefile`]); refuse when the pid in an existing file is a running knockd.
    fn create(path: &Path) -> anyhow::Result<PidFile> {
        use std::io::{Read, Seek, Write};
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).ok();
        }
        let mut f = crate::safefile::open_write("PidFile", path, false, 0o644)?;
        let mut text = String::new();
        let _ = f.read_to_string(&mut text);
        if let Ok(pid) = text.trim().parse::<u32>() {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if pid != std::process::id() && comm.trim() == "knockd" {
                bail!(
                    "knockd is already running (pid {pid}, pidfile {}); stop it first",
                    path.display()
                );
            }
        }
        f.set_len(0)
            .and_then(|()| f.rewind())
            .and_then(|()| f.write_all(format!("{}\n", std::process::id()).as_bytes()))
            .with_context(|| format!("could not write pid file {}", path.display()))?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The config's warnings as knockd logs them at start: at most
/// [`config::MAX_LOGGED_WARNINGS`], then how many more `knockd -t` lists.
pub fn startup_warnings(warnings: &[config::Warning]) -> Vec<String> {
    let mut out: Vec<String> = warnings
        .iter()
        .take(config::MAX_LOGGED_WARNINGS)
        .map(ToString::to_string)
        .collect();
    if warnings.len() > config::MAX_LOGGED_WARNINGS {
        out.push(format!(
            "warning: {} more warning(s) not logged (knockd -t lists them all)",
            warnings.len() - config::MAX_LOGGED_WARNINGS
        ));
    }
    out
}

/// Everything before the async part; then the runtime. Returns when the daemon stops.
pub fn run(mut args: Args) -> anyhow::Result<()> {
    // From the first instant, SIGHUP/SIGTERM/SIGINT wait (pending) until the handlers are in
    // place (signals::install): a SIGHUP during start-up is a queued reload, never fatal.
    crate::signals::hold();
    // Control connections are capped below this, keeping a reserve (see fdlimit).
    let nofile = crate::fdlimit::raise_nofile();
    // Reloads re-read this path, and -d changes the working directory to /.
    if let Ok(abs) = std::path::absolute(&args.config) {
        args.config = abs;
    }
    let parsed = load_config(&args.config)?;
    // Logged once the log is open (LogFile and syslog too, not only stderr).
    let mut warnings = startup_warnings(&parsed.warnings);
    let mut config = parsed.config;
    // Command line beats the config file, for every option (also on reload).
    let overrides = overrides_of(&args);
    overrides.apply(&mut config.options);
    // The one table this process ever touches.
    crate::firewall::nftables::set_table(config.options.nft_table()).map_err(anyhow::Error::msg)?;
    let iface = match &config.options.interface {
        Some(i) => i.clone(),
        None => crate::addrs::default_route_interface().unwrap_or_else(|| "eth0".to_string()),
    };
    if args.lookup {
        warnings.push(
            "warning: -l/--lookup is ignored: knockd does not resolve knockers' addresses".into(),
        );
    }
    crate::privileges::check()?;
    let capture = Capture::open(&iface, args.only_ipv4)?;
    if let Some(note) = check_filter(
        &config,
        &crate::addrs::of_interface(&iface, args.only_ipv4),
        capture.linktype(),
    )? {
        warnings.push(note);
    }
    let log = KnockLog::open(
        config.options.log_file.as_deref(),
        config.options.use_syslog,
    )?;
    let state_file = config
        .options
        .state_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_FILE));
    if let Some(dir) = state_file.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).ok();
        }
    }
    // One knockd per state file: a second one (another socket, the same default path) stops here.
    let state_lock = crate::state::lock(&state_file)?;
    let saved = crate::state::load_all(&state_file)?;
    let mut advice = warnings;
    let kernel = if config.options.firewall == config::FirewallKind::Nftables {
        Some(crate::firewall::nftables::setup::set_up_table(&config)?)
    } else {
        advice.extend(crate::firewall::nftables::setup::remove_table_of_previous_run(&state_file));
        None
    };
    advice.extend(crate::firewall::nftables::setup::firewall_advice(
        &config.options,
    ));
    advice.extend(crate::firewall::spa_drop::Protection::of(&config).warning());
    let socket_path = config
        .options
        .socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(knock_ipc::DEFAULT_SOCKET));
    let extra = crate::control::ROOT_RESERVE + 16;
    let max_clients = config
        .options
        .max_clients
        .unwrap_or(crate::control::DEFAULT_MAX_CLIENTS);
    let (max_clients, warning) = crate::fdlimit::clients_cap(max_clients, nofile, extra);
    if let Some(w) = warning {
        advice.push(format!("warning: {w}"));
    }
    if let Some(dir) = socket_path.parent() {
        advice.extend(crate::sockdir::prepare(dir)?);
    }
    let socket = ControlSocket::bind(&socket_path, max_clients)?;
    if args.daemon {
        if config.options.log_file.is_none() && !config.options.use_syslog {
            tracing::warn!("running with -d but neither LogFile nor UseSyslog is set: events will not be logged anywhere");
        }
        nix::unistd::daemon(false, false).context("cannot daemonize")?;
    }
    let pid_path = config
        .options
        .pid_file
        .clone()
        .or_else(|| args.daemon.then(|| PathBuf::from(DEFAULT_PIDFILE)));
    let _pidfile = pid_path.as_deref().map(PidFile::create).transpose()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let only_ipv4 = args.only_ipv4;
    runtime.block_on(async move {
        let control = crate::serve::control_channel();
        // Signals first: a SIGHUP held since start-up, or sent during the restore, becomes a
        // reload queued for the engine.
        let shutdown = crate::signals::install(control.0.clone(), args.config.clone())?;
        let parts = Parts {
            config,
            config_path: args.config,
            overrides,
            state_file: Some(state_file),
            saved,
            kernel,
            socket,
            packets: Packets::Live {
                capture,
                iface,
                only_ipv4,
            },
            control,
            events: crate::serve::event_channel(),
            advice,
        };
        let deps = Deps {
            exec: SystemExecutor,
            firewall: Arc::new(IptablesRestore::default()),
            nft_firewall: Arc::new(crate::firewall::nftables::NftFirewall),
            // The log's own thread (started here, after daemonising): never blocks the engine.
            log: crate::logwriter::LogWriter::knockd(log).context("cannot start the log writer")?,
        };
        let served = crate::serve::serve(parts, deps, shutdown).await;
        // One knockd per state file: held until the engine stopped.
        drop(state_lock);
        served
    })
}
