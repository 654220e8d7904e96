//! The key table: every knockd.conf key, its aliases and where it may appear.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Key {
    UseSyslog,
    LogFile,
    PidFile,
    Interface,
    MaxAttempts,
    Socket,
    MaxClients,
    StateFile,
    OnShutdown,
    SweepThreshold,
    SweepPenalty,
    MaxAttemptsPerNetwork,
    NetworkPrefixV4,
    NetworkPrefixV6,
    Firewall,
    NftMark,
    NftTable,
    Sequence,
    OneTimeSequences,
    SeqTimeout,
    TcpFlags,
    StartCommand,
    StartCommand6,
    StopCommand,
    StopCommand6,
    CmdTimeout,
    Target,
    Open,
    OpenChain,
    MaxGrants,
    StartRate,
    SweepGuard,
    TotpFile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// `[options]` only.
    Global,
    /// Door sections only.
    Door,
    /// UseSyslog: knockd accepts it anywhere.
    Anywhere,
}

pub(super) struct KeyInfo {
    pub(super) key: Key,
    pub(super) name: &'static str,
    pub(super) aliases: &'static [&'static str],
    pub(super) scope: Scope,
}

const fn key(
    key: Key,
    name: &'static str,
    aliases: &'static [&'static str],
    scope: Scope,
) -> KeyInfo {
    KeyInfo {
        key,
        name,
        aliases,
        scope,
    }
}

/// Every key, in the order listed in "valid keys" messages.
#[rustfmt::skip]
const KEYS: &[KeyInfo] = &[
    key(Key::UseSyslog, "UseSyslog", &[], Scope::Anywhere),
    key(Key::LogFile, "LogFile", &[], Scope::Global),
    key(Key::PidFile, "PidFile", &[], Scope::Global),
    key(Key::Interface, "Interface", &[], Scope::Global),
    key(Key::MaxAttempts, "MaxAttempts", &[], Scope::Global),
    key(Key::Socket, "Socket", &[], Scope::Global),
    key(Key::StateFile, "StateFile", &[], Scope::Global),
    key(Key::OnShutdown, "OnShutdown", &[], Scope::Global),
    key(Key::MaxGrants, "MaxGrants", &[], Scope::Global),
    key(Key::StartRate, "StartRate", &[], Scope::Global),
    key(Key::SweepThreshold, "SweepThreshold", &[], Scope::Global),
    key(Key::SweepPenalty, "SweepPenalty", &[], Scope::Global),
    key(Key::MaxAttemptsPerNetwork, "MaxAttemptsPerNetwork", &[], Scope::Global),
    key(Key::NetworkPrefixV4, "NetworkPrefixV4", &[], Scope::Global),
    key(Key::NetworkPrefixV6, "NetworkPrefixV6", &[], Scope::Global),
    key(Key::Firewall, "Firewall", &[], Scope::Global),
    key(Key::NftMark, "NftMark", &[], Scope::Global),
    key(Key::MaxClients, "MaxClients", &[], Scope::Global),
    key(Key::NftTable, "NftTable", &[], Scope::Global),
    key(Key::Sequence, "Sequence", &[], Scope::Door),
    key(Key::OneTimeSequences, "One_Time_Sequences", &[], Scope::Door),
    key(Key::SeqTimeout, "Seq_Timeout", &["Timeout"], Scope::Door),
    key(Key::TcpFlags, "TCPFlags", &[], Scope::Door),
    key(Key::StartCommand, "Start_Command", &["Command"], Scope::Door),
    key(Key::StartCommand6, "Start_Command_6", &["Command_6"], Scope::Door),
    key(Key::StopCommand, "Stop_Command", &[], Scope::Door),
    key(Key::StopCommand6, "Stop_Command_6", &[], Scope::Door),
    key(Key::CmdTimeout, "Cmd_Timeout", &[], Scope::Door),
    key(Key::Target, "Target", &[], Scope::Door),
    key(Key::Open, "Open", &[], Scope::Door),
    key(Key::OpenChain, "Open_Chain", &[], Scope::Door),
    key(Key::SweepGuard, "SweepGuard", &[], Scope::Door),
    key(Key::TotpFile, "TOTP_File", &[], Scope::Door),
];

/// Every key's name and its aliases, in table order (for the documentation check).
pub fn names() -> impl Iterator<Item = (&'static str, &'static [&'static str])> {
    KEYS.iter().map(|k| (k.name, k.aliases))
}

pub(super) fn lookup_key(written: &str) -> Option<&'static KeyInfo> {
    KEYS.iter().find(|k| {
        k.name.eq_ignore_ascii_case(written)
            || k.aliases.iter().any(|a| a.eq_ignore_ascii_case(written))
    })
}

pub(super) fn key_name(key: Key) -> &'static str {
    KEYS.iter().find(|k| k.key == key).map_or("?", |k| k.name)
}

pub(super) fn valid_keys(scope: Scope) -> String {
    KEYS.iter()
        .filter(|k| k.scope == scope || (scope == Scope::Global && k.scope == Scope::Anywhere))
        .map(|k| k.name)
        .collect::<Vec<_>>()
        .join(", ")
}
