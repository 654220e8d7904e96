//! Where the binaries under test are.

use std::path::{Path, PathBuf};

/// Debian's knockd 0.8, the reference implementation (package `knockd`).
pub const DEBIAN_KNOCKD: &str = "/usr/sbin/knockd";
/// Debian's knock client 0.8 (package `knockd`).
pub const DEBIAN_KNOCK: &str = "/usr/bin/knock";

/// A binary of this workspace (`knockd`, `knock`, `knockctl`), from the same
/// `target/<profile>/` directory as the running test.
///
/// Cargo does not build other packages' binaries for this package's tests, so build them
/// first (`scripts/test.sh` does): `cargo build --workspace --bins`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("cannot find the path of the running test binary");
    let path = profile_dir(&exe).join(name);
    assert!(
        path.is_file(),
        "{name} not found at {}: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// One of Debian's binaries ([`DEBIAN_KNOCKD`], [`DEBIAN_KNOCK`]); panics with the fix if
/// the package is missing.
pub fn debian_bin(path: &str) -> &str {
    assert!(
        Path::new(path).is_file(),
        "{path} not found: install Debian's knockd package with `sudo bash scripts/setup.sh`"
    );
    path
}

/// `target/<profile>/deps/test-hash` → `target/<profile>`; any other location → its folder.
fn profile_dir(exe: &Path) -> PathBuf {
    let dir = exe.parent().unwrap_or(Path::new("."));
    match dir.file_name() {
        Some(name) if name == "deps" => dir.parent().unwrap_or(dir).to_path_buf(),
        _ => dir.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_binaries_live_in_deps_below_the_profile_dir() {
        assert_eq!(
            profile_dir(Path::new("/w/target/debug/deps/harness_debian-0123abcd")),
            Path::new("/w/target/debug")
        );
        assert_eq!(
            profile_dir(Path::new(
                "/w/target/x86_64-unknown-linux-gnu/release/deps/t-1"
            )),
            Path::new("/w/target/x86_64-unknown-linux-gnu/release")
        );
    }

    #[test]
    fn an_executable_outside_deps_uses_its_own_dir() {
        assert_eq!(
            profile_dir(Path::new("/opt/knock/t")),
            Path::new("/opt/knock")
        );
    }

    #[test]
    #[should_panic(expected = "run `cargo build --workspace --bins` first")]
    fn a_missing_binary_says_how_to_build_it() {
        bin("no-such-binary-knock-e2e");
    }
}
