//! Daemon lifecycle: config, privileges, capture, daemonising, pidfile, signals, engine.
//! `main.rs` only parses the command line and maps the result to an exit code.

use crate::action::SystemExecutor;
use crate::capture::{Capture, CaptureStats};
use crate::cli::{Args, DEFAULT_PIDFILE};
use crate::config::{self, Parsed, DEFAULT_SOCKET, DEFAULT_STATE_FILE};
use crate::control::ControlSocket;
use crate::engine::{Control, Engine};
use crate::firewall::iptables::IptablesRestore;
use crate::firewall::nftables::setup as nft_setup;
use crate::knocklog::KnockLog;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Load and validate the config; every problem is printed, none is fatal on its own.
pub fn load_config(path: &Path) -> anyhow::Result<Parsed> {
    match config::load(path) {
        Ok(p) => Ok(p),
        Err(errs) => {
            for e in &errs.0 {
                eprintln!("knockd: {e}");
            }
            bail!(
                "{} problem(s) in {}; nothing was started",
                errs.0.len(),
                path.display()
            )
        }
    }
}

/// `knockd --new-totp FILE`: write a fresh TOTP secret file and say what to do with it.
pub fn new_totp(path: &Path) -> anyhow::Result<()> {
    let spec = knock_ipc::totp::Spec::write_new(path)?;
    println!(
        "wrote {} (mode 0600): a TOTP door secret, {} knocks on ports {}-{}, a new sequence every {} s.",
        path.display(),
        spec.knocks,
        spec.lo,
        spec.hi,
        spec.step_secs
    );
    println!(
        "server: add `TOTP_File = {}` to a door of knockd.conf, then reload.",
        path.display()
    );
    println!(
        "client: copy the file over a trusted channel (keep it 0600), then `knock --totp FILE HOST`."
    );
    Ok(())
}

/// `knockd -t`: print problems and warnings; Ok(()) when the config is valid. The capture
/// filter is compiled as it will run (the interface's addresses and link type) and a
/// fallback to a coarser filter is reported. With knockd's privileges a missing interface is
/// an error; without them, the checks that need them are skipped and named.
pub fn check_config(
    path: &Path,
    interface: Option<&str>,
    firewall: Option<config::FirewallKind>,
) -> anyhow::Result<()> {
    let mut parsed = load_config(path)?;
    let privileged = check_privileges().is_ok();
    let mut report = crate::check::Report::new(privileged);
    report
        .warnings
        .extend(parsed.warnings.iter().map(|w| w.to_string()));
    let iface = interface
        .map(str::to_string)
        .or_else(|| parsed.config.options.interface.clone())
        .or_else(default_route_interface);
    if let Some(i) = iface.as_deref() {
        if i != "any" && nix::net::if_::if_nametoindex(i).is_err() {
            report.missing_interface(i)?;
        }
    }
    let local = iface
        .as_deref()
        .map(|i| local_addrs(i, false))
        .unwrap_or_default();
    // Compile for the link type the capture will have: the interface's, read by opening it
    // (with knockd's privileges); Ethernet when it cannot be read, and say so.
    let link = match iface.as_deref().map(|i| (i, Capture::link_of(i))) {
        Some((i, Ok(link))) => {
            let name = link
                .get_name()
                .unwrap_or_else(|_| format!("DLT {}", link.0));
            report.notes.push(format!(
                "capture filter compiled for {i}'s link type ({name})"
            ));
            link
        }
        Some((i, Err(e))) => {
            report.link_type_unknown(i, &e.to_string());
            pcap::Linktype::ETHERNET
        }
        None => {
            report.notes.push("capture filter compiled for Ethernet (assumed: no interface given and no default route; use -i)".into());
            pcap::Linktype::ETHERNET
        }
    };
    if let Some(note) = check_filter(&parsed.config, &local, link)? {
        report.warnings.push(note);
    }
    if let Some(f) = firewall {
        parsed.config.options.firewall = f;
    }
    match nft_setup::firewall_check(&parsed.config.options) {
        Ok(advice) => report.warnings.extend(advice),
        Err(e) => report.ruleset_unread(&e),
    }
    print!(
        "{}",
        report.render(&path.display().to_string(), parsed.config.doors.len())
    );
    Ok(())
}

/// Compile the capture filter for `config` exactly as the capture will run it. Err when no
/// filter at all can be built (the config is refused); Ok(Some(note)) when a coarser filter
/// than the exact one will be used.
pub fn check_filter(
    config: &config::Config,
    local: &[std::net::IpAddr],
    link: pcap::Linktype,
) -> anyhow::Result<Option<String>> {
    let wall = crate::engine::totp::system_wall_clock().as_secs();
    let active = capture_doors(config, wall);
    let fitted = crate::bpf::fit(&active, local, link)?;
    Ok(fitted.note())
}

/// The doors the capture filter is built from at `wall_secs` (unix time): doors with a
/// sequence, and rotating doors with their accepted steps' ports, as the engine has them.
pub fn capture_doors(config: &config::Config, wall_secs: u64) -> Vec<config::model::Door> {
    config
        .doors
        .iter()
        .filter_map(|d| match &d.totp {
            Some(spec) => {
                let mut d = d.clone();
                d.sequence = crate::engine::totp::window_steps(spec, spec.step_at(wall_secs));
                Some(d)
            }
            None => (!d.sequence.is_empty()).then(|| d.clone()),
        })
        .collect()
}

/// The interface of the IPv4 default route, from /proc/net/route.
pub fn default_route_interface() -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    default_route_in(&table)
}

fn default_route_in(table: &str) -> Option<String> {
    table.lines().skip(1).find_map(|l| {
        let mut f = l.split_whitespace();
        let iface = f.next()?;
        (f.next()? == "00000000").then(|| iface.to_string())
    })
}

/// knockd needs to capture (CAP_NET_RAW) and change the firewall (CAP_NET_ADMIN).
pub fn check_privileges() -> anyhow::Result<()> {
    use caps::{CapSet, Capability};
    let mut missing = Vec::new();
    for c in [Capability::CAP_NET_RAW, Capability::CAP_NET_ADMIN] {
        if !caps::has_cap(None, CapSet::Effective, c).unwrap_or(false) {
            missing.push(c.to_string());
        }
    }
    if !missing.is_empty() {
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "/usr/sbin/knockd".into());
        bail!(
            "missing capabilities: {} (knockd needs CAP_NET_RAW to capture and CAP_NET_ADMIN for the firewall).\n\
             Fix: run it as root (sudo knockd ...), or under systemd with AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN,\n\
             or grant them to the binary: setcap cap_net_raw,cap_net_admin+eip {exe}",
            missing.join(", ")
        );
    }
    Ok(())
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
    let overrides = config::Overrides {
        interface: args.interface.clone(),
        log_file: args.logfile.clone(),
        pid_file: args.pidfile.clone(),
        socket: args.socket.clone(),
        state_file: args.state_file.clone(),
        base_dir: std::env::current_dir().ok(),
        firewall: args.firewall,
    };
    overrides.apply(&mut config.options);
    let iface = match &config.options.interface {
        Some(i) => i.clone(),
        None => default_route_interface().unwrap_or_else(|| "eth0".to_string()),
    };
    if args.lookup {
        warnings.push(
            "warning: -l/--lookup is ignored: knockd does not resolve knockers' addresses".into(),
        );
    }
    check_privileges()?;
    let capture = Capture::open(&iface, args.only_ipv4)?;
    if let Some(note) = check_filter(
        &config,
        &local_addrs(&iface, args.only_ipv4),
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
        Some(nft_setup::set_up_table(&config)?)
    } else {
        advice.extend(nft_setup::remove_table_of_previous_run());
        None
    };
    advice.extend(nft_setup::firewall_advice(&config.options));
    let socket_path = config
        .options
        .socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
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
    let parts = Parts {
        config,
        overrides,
        iface,
        capture,
        log,
        state_file,
        _state_lock: state_lock,
        saved,
        kernel,
        advice,
        socket,
    };
    runtime.block_on(serve(args, parts))
}

/// Everything opened and checked before the runtime starts.
struct Parts {
    config: config::Config,
    overrides: config::Overrides,
    iface: String,
    capture: Capture,
    log: KnockLog,
    state_file: PathBuf,
    _state_lock: crate::state::StateLock,
    saved: crate::state::Saved,
    kernel: Option<Vec<crate::firewall::nftables::listing::KernelElem>>,
    /// Start-up warnings (the config's, then what `firewall_advice` found), logged once the
    /// log is up: to stderr in the foreground, and to LogFile and syslog.
    advice: Vec<String>,
    socket: ControlSocket,
}

async fn serve(args: Args, p: Parts) -> anyhow::Result<()> {
    let (pkt_tx, pkt_rx) = mpsc::channel(crate::capture::QUEUE_BATCHES);
    let (ctl_tx, ctl_rx) = mpsc::channel(64);
    // Signals first: a SIGHUP held since start-up, or sent during the restore, becomes a
    // reload queued for the engine.
    let shutdown = crate::signals::install(ctl_tx.clone(), args.config.clone())?;
    let (filter_tx, filter_rx, filter_status) =
        crate::capture::filter_channel().context("cannot create the filter channel")?;
    let filter_probe = crate::control::FilterProbe {
        sent: filter_tx.sent_counter(),
        status: filter_status,
    };
    let stats = Arc::new(CaptureStats::default());

    let iface = p.iface;
    let mut engine = Engine::new(
        p.config,
        args.config.clone(),
        SystemExecutor,
        Arc::new(IptablesRestore::default()),
        // The log's own thread (started here, after daemonising): never blocks the engine.
        crate::logwriter::LogWriter::knockd(p.log).context("cannot start the log writer")?,
        Box::new(move |f| {
            filter_tx.send(f);
        }),
    )
    .with_overrides(p.overrides)
    .with_state_file(p.state_file)
    .with_capture(vec![iface.clone()], stats.clone());
    // Addresses first, so the first filter already names them.
    let only_v4 = args.only_ipv4;
    let addrs = local_addrs(&iface, only_v4);
    engine.on_control(Control::LocalAddrs(addrs));
    engine.restore_all(p.saved, p.kernel).await;
    let _capture_thread = p.capture.spawn(filter_rx, pkt_tx, stats)?;
    tokio::spawn(watch_addresses(iface.clone(), only_v4, ctl_tx.clone()));
    tracing::info!("control socket {}", p.socket.path().display());
    tokio::spawn(p.socket.serve(
        ctl_tx.clone(),
        engine.events(),
        filter_probe,
        args.config.clone(),
    ));
    engine.log_line(&format!("starting up, listening on {iface}"));
    // Once each: log_line also writes to stderr.
    for line in &p.advice {
        engine.log_line(line);
    }
    engine.run(pkt_rx, ctl_rx, shutdown).await?;
    Ok(())
}

fn local_addrs(iface: &str, only_v4: bool) -> Vec<std::net::IpAddr> {
    match crate::addrs::local_addrs(iface) {
        Ok(mut v) => {
            if only_v4 {
                v.retain(|a| a.is_ipv4());
            }
            v
        }
        Err(e) => {
            tracing::debug!("cannot read addresses of {iface}: {e}");
            Vec::new()
        }
    }
}

/// Addresses come and go (DHCP, PPPoE, VIPs): re-read them every 2 s.
async fn watch_addresses(iface: String, only_v4: bool, ctl: mpsc::Sender<Control>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.tick().await;
    let mut last = local_addrs(&iface, only_v4);
    loop {
        tick.tick().await;
        let now = local_addrs(&iface, only_v4);
        if now != last {
            last = now.clone();
            if ctl.send(Control::LocalAddrs(now)).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_default_route_interface() {
        let table = "Iface\tDestination\tGateway\tFlags\n\
                     wg0\t0000000A\t00000000\t0001\n\
                     ens3\t00000000\t0101A8C0\t0003\n";
        assert_eq!(default_route_in(table).as_deref(), Some("ens3"));
        assert_eq!(default_route_in("Iface\tDestination\n"), None);
    }

    /// `knockd -t` checks the filter the daemon will run: rotating doors included, with the
    /// accepted steps' ports (they have no static sequence).
    #[test]
    fn the_checked_filter_includes_rotating_doors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("rot.totp");
        let spec = knock_ipc::totp::Spec::write_new(&secret).expect("secret");
        let conf = dir.path().join("knockd.conf");
        let text = format!(
            "[rot]\n TOTP_File = {}\n command = x %IP%\n[ssh]\n sequence = 7000,8000,9000\n command = x\n",
            secret.display()
        );
        std::fs::write(&conf, text).expect("write");
        let config = config::load(&conf).expect("load").config;
        let wall = 1_800_000_000;
        let doors = capture_doors(&config, wall);
        assert_eq!(doors.len(), 2);
        let rot = doors
            .iter()
            .find(|d| d.name == "rot")
            .expect("rotating door");
        let step = spec.step_at(wall);
        for s in [step - 1, step, step + 1] {
            for port in spec.ports(s) {
                assert!(rot.sequence.iter().any(|st| st.port == port), "step {s}");
            }
        }
    }
}
