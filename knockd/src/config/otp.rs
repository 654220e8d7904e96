//! One-time sequences files (`One_Time_Sequences = file`).
//!
//! One sequence per line, in the `Sequence` format. Blank lines, lines starting with `#` and
//! lines that do not parse are skipped (as knockd does). The first remaining line is the
//! door's current sequence. When it is used, [`consume`] comments it out by rewriting the
//! whole file atomically (knockd instead overwrote the line's first byte with `#`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::model::Step;
use super::values::parse_sequence;

#[derive(Debug, thiserror::Error)]
pub enum OtpError {
    #[error("cannot read one-time sequences file '{}': {source} (check the path and permissions)", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot rewrite one-time sequences file '{}': {source} (knockd needs write access to the file's directory)", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("sequence {sequence} is not an unused line of one-time sequences file '{}' (was the file edited while knockd was running? reload knockd)", path.display())]
    NotFound { path: PathBuf, sequence: String },
}

/// The file's current sequence: its first valid, uncommented line. `None` when there is none
/// left (empty file, or every line used or invalid).
pub fn read_current(path: &Path) -> Result<Option<Vec<Step>>, OtpError> {
    let bytes = fs::read(path).map_err(|source| OtpError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(current_in(&bytes))
}

/// Marks `used` as used: the first uncommented line whose parsed sequence equals `used` gets a
/// `#` prefix. The file is rewritten atomically (temp file in the same directory, write,
/// fsync, rename) with its mode kept; a symlink is followed and stays a symlink. Returns the
/// next sequence, or `None` when the file is exhausted.
pub fn consume(path: &Path, used: &[Step]) -> Result<Option<Vec<Step>>, OtpError> {
    let read_err = |source| OtpError::Read {
        path: path.to_path_buf(),
        source,
    };
    let real = fs::canonicalize(path).map_err(read_err)?;
    let bytes = fs::read(&real).map_err(read_err)?;
    let mut out = Vec::with_capacity(bytes.len() + 1);
    let mut found = false;
    for line in lines(&bytes) {
        if !found && parse_line(line).as_deref() == Some(used) {
            out.push(b'#');
            found = true;
        }
        out.extend_from_slice(line);
    }
    if !found {
        return Err(OtpError::NotFound {
            path: path.to_path_buf(),
            sequence: used
                .iter()
                .map(Step::to_string)
                .collect::<Vec<_>>()
                .join(","),
        });
    }
    write_atomic(&real, &out).map_err(|source| OtpError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(current_in(&out))
}

/// Checks that [`consume`] could rewrite `path`: a file can be created in (and removed from)
/// its directory. Run at load, so that a door whose used sequences could not be recorded is
/// disabled from the start instead of accepting a used sequence again.
pub fn check_writable(path: &Path) -> Result<(), OtpError> {
    let write_err = |source| OtpError::Write {
        path: path.to_path_buf(),
        source,
    };
    let real = fs::canonicalize(path).map_err(|source| OtpError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let dir = real.parent().unwrap_or(Path::new("/"));
    let probe = dir.join(format!(".knockd-write-check.{}", std::process::id()));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)
        .map_err(write_err)?;
    fs::remove_file(&probe).map_err(write_err)
}

fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes.split_inclusive(|b| *b == b'\n')
}

/// The sequence on one line, or None for blank, comment, non-UTF-8 or invalid lines.
fn parse_line(line: &[u8]) -> Option<Vec<Step>> {
    let text = std::str::from_utf8(line).ok()?.trim();
    if text.is_empty() || text.starts_with('#') {
        return None;
    }
    parse_sequence(text).ok()
}

/// Whether `seq` is still an unused (uncommented) line of a one-time sequences file's
/// contents (pure).
pub fn is_unused_in(bytes: &[u8], seq: &[Step]) -> bool {
    lines(bytes).any(|l| parse_line(l).as_deref() == Some(seq))
}

/// The current sequence of a one-time sequences file's contents (pure; what [`read_current`]
/// does after reading the file).
pub fn current_in(bytes: &[u8]) -> Option<Vec<Step>> {
    lines(bytes).find_map(parse_line)
}

/// Replaces `path` (a regular file, not a symlink) with `data` atomically, keeping its mode
/// and, where permitted, its owner.
fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let meta = fs::metadata(path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (tmp, mut file) = loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.knockd-tmp.{}.{n}", std::process::id()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => continue,
            Err(e) => return Err(e),
        }
    };
    let result = (|| {
        file.write_all(data)?;
        file.set_permissions(meta.permissions())?;
        // Best effort: only root may give the file away; the mode is what matters.
        if meta.uid() != file.metadata()?.uid() || meta.gid() != file.metadata()?.gid() {
            let _ = std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()));
        }
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::Proto;
    use std::os::unix::fs::PermissionsExt;

    fn steps(ports: &[u16]) -> Vec<Step> {
        ports
            .iter()
            .map(|&port| Step {
                port,
                proto: Proto::Tcp,
            })
            .collect()
    }

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let p = dir.path().join("otp");
        fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn read_current_skips_blank_comments_and_invalid_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "\n# header\n  #001,7002\nabc,def\n 7001, 7002:udp\n7003\n",
        );
        let cur = read_current(&p).unwrap().unwrap();
        assert_eq!(
            cur,
            vec![
                Step {
                    port: 7001,
                    proto: Proto::Tcp
                },
                Step {
                    port: 7002,
                    proto: Proto::Udp
                }
            ]
        );
    }

    #[test]
    fn check_writable_probes_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "1,2,3\n");
        check_writable(&p).unwrap();
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "probe removed"
        );
        let missing = dir.path().join("nope");
        assert!(matches!(
            check_writable(&missing),
            Err(OtpError::Read { .. })
        ));
        // A directory that cannot be written (root bypasses modes, so a file stands in for
        // the directory: creating under it fails for everyone).
        let not_dir = dir.path().join("plain");
        fs::write(&not_dir, "").unwrap();
        let fake = not_dir.join("otp");
        assert!(check_writable(&fake).is_err());
    }

    #[test]
    fn read_current_empty_or_exhausted_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "");
        assert_eq!(read_current(&p).unwrap(), None);
        let p = write(&dir, "# 1,2,3\n\n#4,5,6\n");
        assert_eq!(read_current(&p).unwrap(), None);
    }

    #[test]
    fn read_current_missing_file_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope");
        let e = read_current(&p).unwrap_err();
        assert!(matches!(e, OtpError::Read { .. }));
        assert!(e.to_string().contains(&p.display().to_string()), "{e}");
    }

    #[test]
    fn consume_marks_the_line_with_the_same_parsed_sequence() {
        let dir = tempfile::tempdir().unwrap();
        // The first line shares a prefix with the used sequence; knockd's memcmp bug could
        // mark it. The second line is the same sequence spelled differently.
        let p = write(
            &dir,
            "7001,7002,7003\n 7001 , 7002:TCP\n7001,7002\n9000,9001\n",
        );
        let next = consume(&p, &steps(&[7001, 7002])).unwrap();
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            "7001,7002,7003\n# 7001 , 7002:TCP\n7001,7002\n9000,9001\n"
        );
        // The current (first valid) line is unchanged.
        assert_eq!(next, Some(steps(&[7001, 7002, 7003])));
    }

    #[test]
    fn consume_preserves_other_lines_and_returns_next() {
        let dir = tempfile::tempdir().unwrap();
        let text = "# my codes\r\n\n 1001,1002,1003\r\nbogus\n# 5,6,7\n2001,2002,2003";
        let p = write(&dir, text);
        let next = consume(&p, &steps(&[1001, 1002, 1003])).unwrap();
        assert_eq!(next, Some(steps(&[2001, 2002, 2003])));
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            "# my codes\r\n\n# 1001,1002,1003\r\nbogus\n# 5,6,7\n2001,2002,2003"
        );
        // Exhaustion.
        let next = consume(&p, &steps(&[2001, 2002, 2003])).unwrap();
        assert_eq!(next, None);
        assert!(fs::read_to_string(&p)
            .unwrap()
            .ends_with("\n#2001,2002,2003"));
        assert_eq!(read_current(&p).unwrap(), None);
        // No temp files left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn consume_unknown_sequence_is_an_error_and_leaves_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "#1,2,3\n4,5,6\n");
        let e = consume(&p, &steps(&[1, 2, 3])).unwrap_err();
        assert!(matches!(e, OtpError::NotFound { .. }), "{e}");
        assert!(e.to_string().contains("1:tcp,2:tcp,3:tcp"), "{e}");
        assert_eq!(fs::read_to_string(&p).unwrap(), "#1,2,3\n4,5,6\n");
    }

    #[test]
    fn consume_keeps_file_mode_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "1,2,3\n4,5,6\n");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let ino_before = fs::metadata(&p).unwrap().ino();
        consume(&p, &steps(&[1, 2, 3])).unwrap();
        let meta = fs::metadata(&p).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
        // A new inode: the file was replaced by rename, not rewritten in place.
        assert_ne!(meta.ino(), ino_before);
    }

    #[test]
    fn consume_through_symlink_keeps_the_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let real = write(&dir, "1,2,3\n4,5,6\n");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let next = consume(&link, &steps(&[1, 2, 3])).unwrap();
        assert_eq!(next, Some(steps(&[4, 5, 6])));
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_to_string(&real).unwrap(), "#1,2,3\n4,5,6\n");
    }
}
