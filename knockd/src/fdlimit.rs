//! File descriptors: raise the soft `RLIMIT_NOFILE` to the hard limit at start, and size the
//! control socket's connection cap so that a full socket still leaves a reserve for what must
//! never fail (closing grants: iptables children and their pipes; writing the state file;
//! the log; capture; reload reading the config and one-time files).

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Descriptors kept free of control connections.
pub const RESERVE: u64 = 256;

/// Raise the soft limit on open files to the hard limit; returns the soft limit in force.
pub fn raise_nofile() -> u64 {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!("cannot raise the open-files limit from {soft} to {hard}: {e}");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// The connection cap that fits in `nofile` descriptors with [`RESERVE`] left over (and the
/// root-only and refusal slots), and a warning when `wanted` had to be lowered.
pub fn clients_cap(wanted: usize, nofile: u64, extra: usize) -> (usize, Option<String>) {
    let room = nofile
        .saturating_sub(RESERVE)
        .saturating_sub(extra as u64)
        .max(1);
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    if wanted <= room {
        (wanted, None)
    } else {
        (
            room,
            Some(format!(
                "MaxClients = {wanted} does not fit in the open-files limit ({nofile}) with {RESERVE} \
                 descriptors kept in reserve: using {room} (raise LimitNOFILE / ulimit -n)"
            )),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_leaves_the_reserve() {
        assert_eq!(clients_cap(64, 1024, 20), (64, None));
        let (n, w) = clients_cap(5000, 1024, 20);
        assert_eq!(n, 1024 - 256 - 20);
        assert!(w.unwrap_or_default().contains("MaxClients = 5000"));
        assert_eq!(clients_cap(10, 100, 20).0, 1);
    }
}
