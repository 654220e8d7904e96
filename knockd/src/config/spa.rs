//! The SPA keys of knockd.conf: `SPA_Port`, `SPA_ClientDir`, `SPA_ServerKey` in `[options]`,
//! `SPA` and `SPA_Address` in doors. Value parsers only; the client records are read by the
//! daemon (`crate::spa`), which may add or revoke clients without a reload.

use super::keys::Key;
use super::model::{Options, SpaAddress};
use std::path::PathBuf;

/// `SPA = alice, bob`: distinct valid client names, in the order given.
pub(super) fn parse_clients(value: &str) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = Vec::new();
    for n in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !knock_ipc::spa::keys::valid_name(n) {
            return Err(format!(
                "invalid SPA client name '{n}' (1 to 32 of A-Z a-z 0-9 _ - ., as given to knockd --new-client)"
            ));
        }
        if !names.iter().any(|m| m == n) {
            names.push(n.to_string());
        }
    }
    if names.is_empty() {
        return Err("SPA needs client names (e.g. SPA = alice, bob; make one with knockd --new-client alice --out alice.knock)".into());
    }
    Ok(names)
}

pub(super) fn parse_address(value: &str) -> Result<SpaAddress, String> {
    SpaAddress::parse(value)
        .ok_or_else(|| format!("invalid SPA_Address '{value}' (use source, require or any)"))
}

pub(super) fn apply_option(o: &mut Options, key: Key, value: &str) -> Result<(), String> {
    match key {
        Key::SpaPort => {
            let port = value
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    format!(
                        "invalid SPA_Port '{value}' (use a UDP port from 1 to 65535, e.g. 62201)"
                    )
                })?;
            o.spa_port = Some(port);
        }
        Key::SpaClientDir => {
            if value.is_empty() {
                return Err(
                    "SPA_ClientDir needs a directory (e.g. SPA_ClientDir = /etc/knockd/clients)"
                        .into(),
                );
            }
            o.spa_client_dir = Some(PathBuf::from(value));
        }
        Key::SpaServerKeyFile => {
            if value.is_empty() {
                return Err(
                    "SPA_ServerKey needs a file (e.g. SPA_ServerKey = /etc/knockd/spa.key)".into(),
                );
            }
            o.spa_server_key = Some(PathBuf::from(value));
        }
        _ => {}
    }
    Ok(())
}
