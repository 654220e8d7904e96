use clap::Parser;
use knockd::cli::Args;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // Before anything else: a SIGHUP sent the instant knockd starts is a reload, not fatal.
    knockd::signals::hold();
    let args = Args::parse();
    if args.new_totp.is_some()
        || args.new_client.is_some()
        || args.firewall_cleanup
        || args.check_config
    {
        knockd::signals::release();
    }
    let level = if args.debug {
        "knockd=trace,info"
    } else if args.verbose {
        "knockd=debug,info"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let result = if let Some(path) = &args.new_totp {
        knockd::oneshot::new_totp(path)
    } else if let (Some(name), Some(out)) = (&args.new_client, &args.out) {
        knockd::oneshot::new_client(&args.config, name, out)
    } else if args.firewall_cleanup {
        knockd::oneshot::firewall_cleanup(&args)
    } else if args.check_config {
        knockd::oneshot::check_config(
            &args.config,
            args.interface.as_deref(),
            args.firewall,
            args.state_file.as_deref(),
        )
    } else {
        knockd::daemon::run(args)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("knockd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
