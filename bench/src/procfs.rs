//! What `/proc` says about a daemon: CPU time (its own and its reaped children's), peak and
//! current RSS, per-thread CPU. Parsers are pure; the readers only read files.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

/// One look at a process.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProcSample {
    /// utime + stime + cutime + cstime, in seconds.
    pub cpu_s: f64,
    /// VmHWM: peak resident set size, in KiB.
    pub hwm_kib: u64,
    /// VmRSS: current resident set size, in KiB.
    pub rss_kib: u64,
}

/// CPU seconds of one thread of a process.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadCpu {
    pub name: String,
    pub cpu_s: f64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`.
pub fn sample(pid: u32) -> Result<ProcSample> {
    let stat = read(&format!("/proc/{pid}/stat"))?;
    let status = read(&format!("/proc/{pid}/status"))?;
    let ticks = stat_ticks(&stat).with_context(|| format!("cannot parse /proc/{pid}/stat"))?;
    Ok(ProcSample {
        cpu_s: ticks.iter().sum::<u64>() as f64 / clk_tck(),
        hwm_kib: status_kib(&status, "VmHWM").unwrap_or(0),
        rss_kib: status_kib(&status, "VmRSS").unwrap_or(0),
    })
}

/// CPU seconds (utime + stime) of each thread of `pid`, by thread name, busiest first.
pub fn threads(pid: u32) -> Vec<ThreadCpu> {
    let dir = format!("/proc/{pid}/task");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<ThreadCpu> = Vec::new();
    for entry in entries.flatten() {
        let base = entry.path();
        let (Ok(stat), Ok(comm)) = (
            std::fs::read_to_string(base.join("stat")),
            std::fs::read_to_string(base.join("comm")),
        ) else {
            continue;
        };
        let Some(t) = stat_ticks(&stat) else {
            continue;
        };
        let name = comm.trim().to_string();
        let cpu_s = (t[0] + t[1]) as f64 / clk_tck();
        match out.iter_mut().find(|x| x.name == name) {
            Some(x) => x.cpu_s += cpu_s,
            None => out.push(ThreadCpu { name, cpu_s }),
        }
    }
    out.sort_by(|a, b| b.cpu_s.total_cmp(&a.cpu_s));
    out
}

/// Resident memory of one kind of mapping.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MemPart {
    /// `anon` (heap and allocator arenas), `[heap]`, `[stack]`, `socket` (the packet ring
    /// that libpcap maps), `file` (the binary and its libraries), or another `[name]`.
    pub kind: String,
    pub rss_kib: u64,
}

/// Where the resident memory of `pid` is, by kind of mapping, biggest first.
pub fn memory(pid: u32) -> Vec<MemPart> {
    std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .map(|t| smaps_by_kind(&t))
        .unwrap_or_default()
}

/// Sums the `Rss:` of each mapping of an smaps text by [`MemPart::kind`].
pub fn smaps_by_kind(smaps: &str) -> Vec<MemPart> {
    let mut parts: Vec<MemPart> = Vec::new();
    let mut kind = String::new();
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let is_header = fields.len() >= 5
            && fields[0].contains('-')
            && fields[1].len() == 4
            && !fields[0].ends_with(':');
        if is_header {
            let path = fields.get(5..).map(|p| p.join(" ")).unwrap_or_default();
            kind = if path.is_empty() {
                "anon".to_string()
            } else if path.starts_with("socket:") {
                "socket".to_string()
            } else if path.starts_with('[') {
                path
            } else {
                "file".to_string()
            };
        } else if fields.first() == Some(&"Rss:") {
            let kib: u64 = fields.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
            match parts.iter_mut().find(|p| p.kind == kind) {
                Some(p) => p.rss_kib += kib,
                None => parts.push(MemPart {
                    kind: kind.clone(),
                    rss_kib: kib,
                }),
            }
        }
    }
    parts.sort_by_key(|p| std::cmp::Reverse(p.rss_kib));
    parts
}

/// Makes VmHWM start again from the current RSS (`echo 5 > /proc/<pid>/clear_refs`).
pub fn reset_peak_rss(pid: u32) -> Result<()> {
    let path = format!("/proc/{pid}/clear_refs");
    std::fs::write(&path, "5").with_context(|| format!("cannot write {path}"))
}

/// Sum of the "dropped" column of `/proc/net/softnet_stat` over all CPUs: packets the
/// kernel dropped because a CPU's input backlog was full (host-wide, read-only).
pub fn backlog_drops() -> u64 {
    std::fs::read_to_string("/proc/net/softnet_stat")
        .map(|t| softnet_dropped(&t))
        .unwrap_or(0)
}

/// utime, stime, cutime, cstime (clock ticks) from the text of `/proc/<pid>/stat`.
pub fn stat_ticks(stat: &str) -> Option<[u64; 4]> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime is field 14.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some([field(14)?, field(15)?, field(16)?, field(17)?])
}

/// A `Key:   123 kB` value of `/proc/<pid>/status`.
pub fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.split(':').next() == Some(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn softnet_dropped(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|h| u64::from_str_radix(h, 16).ok())
        .sum()
}

fn clk_tck() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

fn read(path: &str) -> Result<String> {
    std::fs::read_to_string(Path::new(path)).with_context(|| format!("cannot read {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_follow_the_last_parenthesis() {
        let stat = "4242 (knockd (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    17 23 5 7 20 0 3 0 12345 1000000 300 18446744073709551615";
        assert_eq!(stat_ticks(stat), Some([17, 23, 5, 7]));
    }

    #[test]
    fn short_stat_is_rejected() {
        assert_eq!(stat_ticks("1 (x) S 1 2 3"), None);
        assert_eq!(stat_ticks("no parenthesis"), None);
    }

    #[test]
    fn status_values_in_kib() {
        let status = "Name:\tknockd\nVmHWM:\t   12345 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(status_kib(status, "VmHWM"), Some(12345));
        assert_eq!(status_kib(status, "VmRSS"), Some(2048));
        assert_eq!(status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn smaps_sums_rss_by_kind() {
        let smaps = "\
55d0c0000000-55d0c0100000 r-xp 00000000 08:01 1234                       /usr/sbin/knockd
Rss:                 100 kB
55d0c1000000-55d0c2000000 rw-p 00000000 00:00 0                          [heap]
Rss:                2000 kB
7f0000000000-7f0004000000 rw-p 00000000 00:00 0 
Rss:                3000 kB
7f0010000000-7f0010800000 rw-s 00000000 00:08 99                         socket:[99]
Rss:                8192 kB
7f0020000000-7f0020100000 rw-p 00000000 00:00 0 
Rss:                 500 kB
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]
Rss:                  12 kB
";
        let parts = smaps_by_kind(smaps);
        let get = |k: &str| parts.iter().find(|p| p.kind == k).map(|p| p.rss_kib);
        assert_eq!(parts[0].kind, "socket");
        assert_eq!(get("socket"), Some(8192));
        assert_eq!(get("anon"), Some(3500));
        assert_eq!(get("[heap]"), Some(2000));
        assert_eq!(get("[stack]"), Some(12));
        assert_eq!(get("file"), Some(100));
    }

    #[test]
    fn softnet_sums_the_second_column() {
        let text = "0000a000 00000002 00000000\n0000b000 00000010 00000000\n";
        assert_eq!(softnet_dropped(text), 0x12);
    }
}
