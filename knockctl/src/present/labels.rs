//! How a door's sequence, a grant's closing and an empty revoke read, in the CLI and the TUI
//! alike.

use std::net::IpAddr;

use knock_ipc::{DoorInfo, GrantInfo, Status};

use super::time::format_remaining;

/// A door's sequence as shown to the operator. A rotating door's sequence is never sent: its
/// kind and step stand in for it.
pub fn door_sequence(d: &DoorInfo) -> String {
    if d.kind == "totp" {
        match d.step {
            Some(step) => format!("(rotating: TOTP step {step})"),
            None => "(rotating: TOTP)".to_string(),
        }
    } else if d.sequence_hidden {
        // knockd sends static and one-time sequences to root only.
        format!("(hidden: {} knocks)", d.knocks)
    } else if d.sequence.is_empty() {
        "(used up)".to_string()
    } else {
        d.sequence.join(" ")
    }
}

/// The protocols of a sequence, each once, in order of first use (`tcp,udp`), or `-`.
pub fn protocols(sequence: &[String]) -> String {
    let mut protos: Vec<&str> = Vec::new();
    for step in sequence {
        let proto = step.rsplit_once(':').map_or("tcp", |(_, p)| p);
        if !protos.contains(&proto) {
            protos.push(proto);
        }
    }
    if protos.is_empty() {
        "-".to_string()
    } else {
        protos.join(",")
    }
}

/// How a grant closes; for nftables grants with the time the kernel has left; a grant being
/// closed shows CLOSING and why its last attempt failed.
pub fn closes_by(g: &GrantInfo) -> String {
    if g.closing {
        return match &g.close_error {
            Some(e) => format!("CLOSING, retrying: {e}"),
            None => "CLOSING".to_string(),
        };
    }
    match g.kernel_expires_in_ms {
        Some(ms) => format!("{} (kernel: {} left)", g.closes, format_remaining(Some(ms))),
        None => g.closes.clone(),
    }
}

/// Why a revoke closed nothing.
pub fn no_grant_message(addr: IpAddr, door: Option<&str>) -> String {
    match door {
        Some(door) => format!("no open grant for {addr} on door {door}"),
        None => format!("no open grant for {addr}"),
    }
}

/// `ok`, or since when (and why) the state file cannot be written: knockd refuses opens
/// meanwhile.
pub fn state_file_health(status: &Status) -> String {
    use chrono::TimeZone;
    match &status.state_error {
        None => "ok".to_string(),
        Some(e) => {
            let since = status
                .state_error_since_unix_ms
                .and_then(|ms| chrono::Utc.timestamp_millis_opt(ms).single())
                .map(|t| format!(" since {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
                .unwrap_or_default();
            format!(
                "CANNOT BE WRITTEN{since}: {} (opens are refused until it is)",
                super::visible(e)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_in_order_of_first_use() {
        let seq = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(protocols(&[]), "-");
        assert_eq!(
            protocols(&seq(&["7000:tcp", "8000:udp", "9000:tcp"])),
            "tcp,udp"
        );
        assert_eq!(protocols(&seq(&["7000"])), "tcp");
    }
}
