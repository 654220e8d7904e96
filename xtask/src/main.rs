//! `cargo run -p xtask -- man|completions|all [--out-dir DIR]`.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "knockd-rs project tasks")]
struct Args {
    #[command(subcommand)]
    task: Task,
    /// Write under this directory instead of the repository root.
    #[arg(long, global = true, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Write man/knockd.8, man/knock.1 and man/knockctl.8 from the clap definitions.
    Man,
    /// Write bash, zsh and fish completions into completions/.
    Completions,
    /// Both.
    All,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let root = args.out_dir.unwrap_or_else(xtask::repo_root);
    let files = match args.task {
        Task::Man => xtask::man_pages(),
        Task::Completions => xtask::completions(),
        Task::All => xtask::man_pages().and_then(|mut m| {
            m.extend(xtask::completions()?);
            Ok(m)
        }),
    };
    let result = files.and_then(|files| {
        xtask::write(&root, &files)?;
        for f in &files {
            println!("wrote {}", root.join(&f.path).display());
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
