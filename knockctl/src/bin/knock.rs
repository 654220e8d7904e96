//! `knock`: send a port-knocking sequence. A drop-in replacement for knock(1) from knock 0.8.

use std::process::ExitCode;

use clap::Parser;
use knockctl::knock::{run, Args};

fn main() -> ExitCode {
    // Usage errors, --help and --version are handled by clap (exit 2, 0 and 0).
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("knock: {err}");
            ExitCode::FAILURE
        }
    }
}
