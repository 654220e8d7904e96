//! The `[options]` section: one function that applies a global key's value, with every
//! value checked and an error that names the fix.

use super::keys::Key;
use super::model::{FirewallKind, Options, ShutdownPolicy, MAX_SWEEP_THRESHOLD};
use super::values::{
    parse_count, parse_mark, parse_table, parse_timeout, valid_interface_name,
    MAX_INTERFACE_NAME_LEN,
};
use std::path::PathBuf;

/// Apply `key = value` of the `[options]` section to `o`.
pub(super) fn apply(o: &mut Options, key: Key, value: &str) -> Result<(), String> {
    match key {
        Key::LogFile => {
            if value.is_empty() {
                return Err("LogFile needs a path (e.g. LogFile = /var/log/knockd.log)".into());
            }
            o.log_file = Some(PathBuf::from(value));
        }
        Key::PidFile => {
            if value.is_empty() {
                return Err("PidFile needs a path (e.g. PidFile = /run/knockd.pid)".into());
            }
            o.pid_file = Some(PathBuf::from(value));
        }
        Key::Interface => {
            if !valid_interface_name(value) {
                return Err(format!(
                    "invalid Interface '{value}' (use a network interface name such as eth0: 1 to {MAX_INTERFACE_NAME_LEN} characters, no spaces or '/')"
                ));
            }
            o.interface = Some(value.to_string());
        }
        Key::MaxAttempts => {
            o.max_attempts = Some(parse_count(value, "MaxAttempts", 1, usize::MAX, "100000")?)
        }
        Key::MaxClients => {
            o.max_clients = Some(parse_count(value, "MaxClients", 1, 100_000, "64")?)
        }
        Key::MaxGrants => {
            o.max_grants = Some(parse_count(value, "MaxGrants", 1, usize::MAX, "10000")?)
        }
        Key::StartRate => {
            let n = parse_count(value, "StartRate", 1, 100_000, "20")?;
            o.start_rate = u32::try_from(n).ok();
        }
        Key::SweepThreshold => {
            o.sweep_threshold = Some(parse_count(
                value,
                "SweepThreshold",
                1,
                MAX_SWEEP_THRESHOLD,
                "5",
            )?);
        }
        Key::SweepPenalty => {
            o.sweep_penalty = Some(parse_timeout(value, "SweepPenalty", false)?);
        }
        Key::MaxAttemptsPerNetwork => {
            o.max_attempts_per_network = Some(parse_count(
                value,
                "MaxAttemptsPerNetwork",
                1,
                usize::MAX,
                "10000",
            )?);
        }
        Key::NetworkPrefixV4 => {
            let n = parse_count(value, "NetworkPrefixV4", 0, 32, "24")?;
            o.network_prefix_v4 = u8::try_from(n).ok();
        }
        Key::NetworkPrefixV6 => {
            let n = parse_count(value, "NetworkPrefixV6", 0, 128, "64")?;
            o.network_prefix_v6 = u8::try_from(n).ok();
        }
        Key::Socket => {
            if !value.starts_with('/') {
                return Err(format!(
                    "invalid Socket '{value}' (use an absolute path, e.g. Socket = /run/knockd/knockd.sock)"
                ));
            }
            o.socket = Some(PathBuf::from(value));
        }
        Key::StateFile => {
            if !value.starts_with('/') {
                return Err(format!(
                    "invalid StateFile '{value}' (use an absolute path, e.g. StateFile = /var/lib/knockd/state.json)"
                ));
            }
            o.state_file = Some(PathBuf::from(value));
        }
        Key::OnShutdown => {
            o.on_shutdown = match value.to_ascii_lowercase().as_str() {
                "close" => ShutdownPolicy::Close,
                "close-all" => ShutdownPolicy::CloseAll,
                "keep" => ShutdownPolicy::Keep,
                _ => {
                    return Err(format!(
                        "invalid OnShutdown '{value}' (use close, close-all or keep)"
                    ))
                }
            };
        }
        Key::Firewall => {
            o.firewall = FirewallKind::parse(value)
                .ok_or_else(|| format!("invalid Firewall '{value}' (use iptables or nftables)"))?;
        }
        Key::NftMark => o.nft_mark = Some(parse_mark(value)?),
        Key::NftTable => o.nft_table = Some(parse_table(value)?),
        _ => {}
    }
    Ok(())
}
