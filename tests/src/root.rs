//! Do we have what end-to-end tests need (root, network namespaces)?

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// True if this process can create network namespaces (checked once, by creating and
/// deleting one). Otherwise: with `CI=true` it panics, because a skipped test in CI is a
/// failure; elsewhere it prints a loud `SKIPPED` line to stderr and returns false.
///
/// Use it as the first line of every root-only test: `if !require_root() { return; }`.
pub fn require_root() -> bool {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    let Err(why) = PROBE.get_or_init(probe) else {
        return true;
    };
    let current = std::thread::current();
    let test = current.name().unwrap_or("<unnamed test>");
    if in_ci() {
        panic!("{test}: needs root + network namespaces, and CI must not skip tests: {why}");
    }
    // Written to the stderr handle, not with eprintln!, which the test harness captures
    // and hides for a test that passes.
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!!!!! SKIPPED (needs root + network namespaces): {test}\n\
         !!!!!!!! {why}\n\
         !!!!!!!! run as root, e.g. `sudo -E bash scripts/test.sh`\n"
    );
    false
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

fn probe() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    match effective_uid(&status) {
        Some(0) => {}
        Some(uid) => return Err(format!("effective uid is {uid}, not 0")),
        None => return Err("no Uid line in /proc/self/status".into()),
    }
    let name = format!("kt{}-probe", std::process::id());
    // A probe left by an earlier, killed process with our pid would make `add` fail.
    let _ = Command::new("ip")
        .args(["netns", "delete", &name])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let out = Command::new("ip")
        .args(["netns", "add", &name])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip` (install iproute2): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`ip netns add {name}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let _ = Command::new("ip")
        .args(["netns", "delete", &name])
        .stdin(Stdio::null())
        .output();
    Ok(())
}

/// The effective uid from the text of `/proc/self/status` (`Uid: real effective saved fs`).
fn effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_uid_is_the_second_number() {
        let status =
            "Name:\tcargo\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Uid:\t1000\t1000\t1000\t1000\n"), Some(1000));
    }

    #[test]
    fn malformed_status_has_no_uid() {
        assert_eq!(effective_uid("Name:\tx\n"), None);
        assert_eq!(effective_uid("Uid:\t1000\n"), None);
        assert_eq!(effective_uid("Uid:\ta\tb\n"), None);
    }
}
