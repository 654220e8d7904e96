//! Project tasks (`cargo run -p xtask -- <task>`):
//!
//! - `man`: write `man/knockd.8`, `man/knock.1` and `man/knockctl.8` from the clap definitions
//!   ([`knockd::cli::Args`], [`knockctl::knock::Args`], [`knockctl::ctl::Args`]) plus the
//!   hand-written sections in `xtask/man/*.roff`. `man/knockd.conf.5` is written by hand.
//! - `completions`: write bash, zsh and fish completions for the three programs into
//!   `completions/`.
//!
//! Everything is generated in memory first ([`man_pages`], [`completions`]), so the stale
//! test (`xtask/tests/stale.rs`) can compare with the committed files.

pub mod pages;
pub mod roff;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;
use std::path::{Path, PathBuf};

/// One generated file, with its path relative to the repository root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    pub path: PathBuf,
    pub contents: Vec<u8>,
}

/// The man pages written by hand, which `man` never touches.
pub const HAND_WRITTEN_MAN_PAGES: &[&str] = &["knockd.conf.5"];

/// The repository root (the parent of the xtask crate).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Render the generated man pages.
pub fn man_pages() -> anyhow::Result<Vec<Generated>> {
    pages::all()
        .into_iter()
        .map(|p| {
            let text = p
                .render()
                .with_context(|| format!("rendering {}", p.file))?;
            Ok(Generated {
                path: Path::new("man").join(p.file),
                contents: text.into_bytes(),
            })
        })
        .collect()
}

/// The programs that get completions: (binary name, clap command).
fn programs() -> Vec<(&'static str, clap::Command)> {
    vec![
        ("knockd", knockd::cli::Args::command()),
        ("knock", knockctl::knock::Args::command()),
        ("knockctl", knockctl::ctl::Args::command()),
    ]
}

/// File name of `bin`'s completion script for `shell`, in the layout the Debian package
/// installs (`completions/<shell>/<file>`).
fn completion_file(shell: Shell, bin: &str) -> String {
    match shell {
        Shell::Zsh => format!("_{bin}"),
        Shell::Fish => format!("{bin}.fish"),
        _ => bin.to_string(),
    }
}

/// Render bash, zsh and fish completions for knockd, knock and knockctl.
pub fn completions() -> anyhow::Result<Vec<Generated>> {
    let mut out = Vec::new();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        for (bin, mut cmd) in programs() {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, bin, &mut buf);
            out.push(Generated {
                path: Path::new("completions")
                    .join(shell.to_string())
                    .join(completion_file(shell, bin)),
                contents: buf,
            });
        }
    }
    Ok(out)
}

/// Write `files` under `root`, creating directories as needed.
pub fn write(root: &Path, files: &[Generated]) -> anyhow::Result<()> {
    for f in files {
        let path = root.join(&f.path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(&path, &f.contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
