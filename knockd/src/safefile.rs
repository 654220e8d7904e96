//! Opening the files knockd writes as root (LogFile, PidFile) so they cannot be turned against
//! it: the last path component is never followed if it is a symbolic link (`O_NOFOLLOW`), a
//! FIFO or device is refused without blocking on it (`O_NONBLOCK`, then a type check), and an
//! existing file must be a plain file with a single link, owned by root or by knockd's user
//! (a hard link or a file planted by someone else in a world-writable directory is refused).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SafeFileError {
    #[error("{what} {path} is a symbolic link; knockd does not follow it (remove the link, or point {what} at the real file)")]
    Symlink { what: &'static str, path: String },
    #[error("{what} {path} is not a regular file (remove it, or choose another path)")]
    NotRegular { what: &'static str, path: String },
    #[error("{what} {path} has {links} hard links; knockd refuses to write through a hard link (remove it)")]
    HardLink {
        what: &'static str,
        path: String,
        links: u64,
    },
    #[error(
        "{what} {path} is owned by uid {uid}, not by root or knockd's user; remove it or chown it"
    )]
    Owner {
        what: &'static str,
        path: String,
        uid: u32,
    },
    #[error("cannot open {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
}

impl From<SafeFileError> for std::io::Error {
    fn from(e: SafeFileError) -> Self {
        std::io::Error::other(e.to_string())
    }
}

/// Open `path` for writing (appending when `append`, else read-write without truncating),
/// creating it with `mode`, never through a symlink; then check what was opened.
pub fn open_write(
    what: &'static str,
    path: &Path,
    append: bool,
    mode: u32,
) -> Result<File, SafeFileError> {
    let p = path.display().to_string();
    let mut o = OpenOptions::new();
    if append {
        o.append(true);
    } else {
        o.read(true).write(true);
    }
    let file = o
        .create(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| {
            if source.raw_os_error() == Some(libc::ELOOP) {
                SafeFileError::Symlink {
                    what,
                    path: p.clone(),
                }
            } else {
                SafeFileError::Io {
                    what,
                    path: p.clone(),
                    source,
                }
            }
        })?;
    check(what, &p, &file)?;
    Ok(file)
}

fn check(what: &'static str, path: &str, file: &File) -> Result<(), SafeFileError> {
    let meta = file.metadata().map_err(|source| SafeFileError::Io {
        what,
        path: path.to_string(),
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(SafeFileError::NotRegular {
            what,
            path: path.to_string(),
        });
    }
    if meta.nlink() > 1 {
        return Err(SafeFileError::HardLink {
            what,
            path: path.to_string(),
            links: meta.nlink(),
        });
    }
    let me = nix::unistd::Uid::effective().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(SafeFileError::Owner {
            what,
            path: path.to_string(),
            uid: meta.uid(),
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn refuses_symlinks_fifos_and_hard_links_and_never_touches_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, "keep me\n").unwrap();
        let link = dir.path().join("knockd.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = open_write("LogFile", &link, true, 0o600).unwrap_err();
        assert!(matches!(e, SafeFileError::Symlink { .. }), "{e}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let e = open_write("PidFile", &link, false, 0o644).unwrap_err();
        assert!(matches!(e, SafeFileError::Symlink { .. }), "{e}");
        // A dangling link is not created through either.
        let dangling = dir.path().join("pid");
        std::os::unix::fs::symlink(dir.path().join("created"), &dangling).unwrap();
        assert!(open_write("PidFile", &dangling, false, 0o644).is_err());
        assert!(!dir.path().join("created").exists());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");

        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // Refused at once (ENXIO without a reader, NotRegular with one), never blocks.
        assert!(open_write("LogFile", &fifo, true, 0o600).is_err());
        assert!(open_write("PidFile", &fifo, false, 0o644).is_err());

        let hard = dir.path().join("hard");
        std::fs::hard_link(&target, &hard).unwrap();
        let e = open_write("PidFile", &hard, false, 0o644).unwrap_err();
        assert!(matches!(e, SafeFileError::HardLink { .. }), "{e}");

        let ok = dir.path().join("ok.log");
        let mut f = open_write("LogFile", &ok, true, 0o600).unwrap();
        f.write_all(b"x").unwrap();
        assert_eq!(std::fs::read_to_string(&ok).unwrap(), "x");
    }
}
