//! How a door's sequence, a grant's closing and an empty revoke read, in the CLI and the TUI
//! alike.

use std::net::IpAddr;

use knock_ipc::{DoorInfo, GrantInfo, Status};

use super::time::{format_duration_secs, format_remaining};

/// A door's sequence as shown to the operator. A rotating door's sequence is never sent: its
/// kind, step and when the next step begins stand in for it.
pub fn door_sequence(d: &DoorInfo) -> String {
    if d.kind == "totp" {
        match (d.step, totp_clock(d, 0)) {
            (_, Some((step, next_ms))) => {
                format!("(rotating: TOTP step {step}, next in {})", secs_up(next_ms))
            }
            (Some(step), None) => format!("(rotating: TOTP step {step})"),
            (None, None) => "(rotating: TOTP)".to_string(),
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

/// A door's sequence in few columns, `elapsed_ms` after knockd listed it, for the TUI, whose
/// PROTO column names the protocols: knocks without `:tcp` (knockd.conf's default), others
/// keep theirs (`1111:udp 2222`); a rotating door says when its sequence next changes.
pub fn door_sequence_short(d: &DoorInfo, elapsed_ms: u64) -> String {
    if d.kind == "totp" {
        return match (totp_clock(d, elapsed_ms), d.step) {
            (Some((_, next_ms)), _) => format!("TOTP, next in {}", secs_up(next_ms)),
            (None, Some(step)) => format!("TOTP step {step}"),
            (None, None) => "TOTP".to_string(),
        };
    }
    if d.sequence.is_empty() {
        return door_sequence(d);
    }
    d.sequence
        .iter()
        .map(|k| k.strip_suffix(":tcp").unwrap_or(k))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A TOTP door's step and the milliseconds until the next one begins, `elapsed_ms` after
/// knockd's answer (counting in the steps that began since).
pub fn totp_clock(d: &DoorInfo, elapsed_ms: u64) -> Option<(u64, u64)> {
    let (step, next) = (d.step?, d.next_step_in_ms?);
    if elapsed_ms < next {
        return Some((step, next - elapsed_ms));
    }
    let len = d.step_secs?.max(1).saturating_mul(1000);
    let past = elapsed_ms - next;
    Some((step + 1 + past / len, len - past % len))
}

/// `12s` for 11.2 s: a countdown that reaches 0 when the moment comes.
fn secs_up(ms: u64) -> String {
    format_duration_secs(ms.div_ceil(1000))
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

    fn totp(step: u64, next_ms: u64) -> DoorInfo {
        DoorInfo {
            name: "rot".into(),
            sequence: vec![],
            seq_timeout_ms: 5_000,
            cmd_timeout_ms: 0,
            tcp_flags: String::new(),
            action: "open 22/tcp".into(),
            one_time: false,
            enabled: true,
            target: None,
            kind: "totp".into(),
            step: Some(step),
            step_secs: Some(30),
            next_step_in_ms: Some(next_ms),
            knocks: 0,
            sequence_hidden: false,
        }
    }

    #[test]
    fn a_totp_door_says_when_its_sequence_next_changes() {
        let d = totp(58_000_000, 11_200);
        assert_eq!(
            door_sequence(&d),
            "(rotating: TOTP step 58000000, next in 12s)"
        );
        assert_eq!(door_sequence_short(&d, 0), "TOTP, next in 12s");
        assert_eq!(door_sequence_short(&d, 11_000), "TOTP, next in 1s");
        // Past the boundary the clock counts on through the next steps.
        assert_eq!(totp_clock(&d, 11_200), Some((58_000_001, 30_000)));
        assert_eq!(totp_clock(&d, 41_300), Some((58_000_002, 29_900)));
        assert_eq!(door_sequence_short(&d, 41_300), "TOTP, next in 30s");
        let old = DoorInfo {
            next_step_in_ms: None,
            knocks: 0,
            sequence_hidden: false,
            ..d
        };
        assert_eq!(door_sequence(&old), "(rotating: TOTP step 58000000)");
    }

    #[test]
    fn short_sequences_leave_out_the_default_protocol() {
        let mut d = totp(0, 0);
        d.kind = "static".into();
        d.sequence = vec!["1111:udp".into(), "2222:tcp".into()];
        assert_eq!(door_sequence_short(&d, 0), "1111:udp 2222");
        assert_eq!(door_sequence(&d), "1111:udp 2222:tcp");
    }

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
