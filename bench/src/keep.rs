//! `--keep-logs DIR`: a run's files, kept after its lab is gone, so that a missed knock can
//! be read next to what the daemon logged: the daemon's LogFile, its stdout and stderr (our
//! knockd's stderr has every line with a microsecond timestamp), its config and state file,
//! `knockctl --json status` at the end, and the legitimate client's tries (`tries.tsv`, one
//! line per try with the UTC time its last SYN left).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::legit::Legit;

/// Copies the regular files of `lab_dir` into a new folder of `dir` named `name` (`name-2`,
/// `name-3`... when it exists), with `tries.tsv` and `status.json`; returns the folder.
pub fn keep(
    dir: &Path,
    name: &str,
    lab_dir: &Path,
    legit: &Legit,
    status_json: Option<&str>,
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let to = fresh(dir, name);
    std::fs::create_dir(&to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in std::fs::read_dir(lab_dir)
        .with_context(|| format!("cannot list {}", lab_dir.display()))?
        .flatten()
    {
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            let dst = to.join(entry.file_name());
            std::fs::copy(entry.path(), &dst)
                .with_context(|| format!("cannot copy {}", entry.path().display()))?;
        }
    }
    std::fs::write(to.join("tries.tsv"), legit.tries_tsv())?;
    if let Some(json) = status_json {
        std::fs::write(to.join("status.json"), json)?;
    }
    Ok(to)
}

/// `dir/name`, or the first of `dir/name-2`, `dir/name-3`... that does not exist.
fn fresh(dir: &Path, name: &str) -> PathBuf {
    let first = dir.join(name);
    if !first.exists() {
        return first;
    }
    (2..)
        .map(|n| dir.join(format!("{name}-{n}")))
        .find(|p| !p.exists())
        .unwrap_or(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::legit::Try;

    #[test]
    fn keeps_the_labs_files_the_tries_and_the_status_in_a_new_folder_each_time() {
        let root = tempfile::tempdir().expect("tempdir");
        let lab = root.path().join("lab");
        std::fs::create_dir(&lab).expect("lab");
        std::fs::write(lab.join("knockd.log"), "10.99.77.2: openSSH: OPEN SESAME\n")
            .expect("test file");
        std::fs::create_dir(lab.join("sub")).expect("sub");
        let legit = Legit {
            tries: vec![Try::default()],
            ..Legit::default()
        };
        let out = root.path().join("kept");
        let a = keep(&out, "quiet-ours-cmd", &lab, &legit, Some("{}")).expect("keep");
        let b = keep(&out, "quiet-ours-cmd", &lab, &legit, None).expect("keep again");
        assert_eq!(a, out.join("quiet-ours-cmd"));
        assert_eq!(b, out.join("quiet-ours-cmd-2"));
        let log = std::fs::read_to_string(a.join("knockd.log")).expect("test file");
        assert!(log.contains("OPEN SESAME"));
        assert_eq!(
            std::fs::read_to_string(a.join("status.json")).expect("test file"),
            "{}"
        );
        assert!(!b.join("status.json").exists());
        assert!(!a.join("sub").exists());
        let tries = std::fs::read_to_string(a.join("tries.tsv")).expect("test file");
        assert_eq!(tries.lines().count(), 2, "{tries}");
    }
}
