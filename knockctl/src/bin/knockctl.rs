//! `knockctl`: inspect and control a running knockd.

use std::io;
use std::process::ExitCode;

use knockctl::ctl::Args;
use knockctl::run_knockctl;

#[tokio::main(worker_threads = 2)]
async fn main() -> ExitCode {
    // Usage errors, --help and --version are handled by clap (exit 2, 0 and 0).
    let args = Args::parse_all();
    match run_knockctl(&args, &mut io::stdout(), &mut io::stderr()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("knockctl: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
