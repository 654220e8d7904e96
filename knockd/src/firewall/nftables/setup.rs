//! Table `inet knockd` outside the engine: created or updated at start (`Firewall =
//! nftables`), removed at an iptables start and by `knockd --firewall-cleanup`, and the advice
//! about native base chains that would drop what knockd opens.
//!
//! A table belongs to one knockd: its comment names that knockd's state file. A knockd whose
//! table carries another's state file refuses to start (and `--firewall-cleanup` to remove it
//! without `--force`): two knockd on one host never change each other's protection or grants;
//! each names its own table (`NftTable`).

use super::script::{cleanup_script, owner_in_listing, owner_text, TableSpec};
use super::{detect, listing::KernelElem, table, transport, NftError};
use crate::config;
use anyhow::{bail, Context};
use std::path::Path;

/// Native nftables base chains on the input hook that would drop what knockd opens, and the
/// line the admin needs (empty when there are none, or nft is not installed / not permitted).
pub fn firewall_advice(options: &config::Options) -> Vec<String> {
    firewall_check(options).unwrap_or_else(|e| {
        tracing::debug!("{e}");
        Vec::new()
    })
}

/// [`firewall_advice`], or why the ruleset could not be read (`knockd -t` says so).
pub fn firewall_check(options: &config::Options) -> Result<Vec<String>, String> {
    let json =
        transport::list_ruleset().map_err(|e| format!("cannot list the nftables ruleset: {e}"))?;
    let chains = detect::drop_chains(&json, options.nft_mark())
        .map_err(|e| format!("cannot read the nftables ruleset: {e}"))?;
    Ok(detect::advice(
        options.firewall,
        options.nft_mark(),
        &chains,
    ))
}

/// Who owns the table now: None when there is no table; Some(None) for a table an older
/// knockd made (no owner in its comment).
fn current_owner() -> Result<Option<Option<String>>, NftError> {
    match transport::nft(&["list", "table", "inet", table()], None) {
        Ok(text) => Ok(Some(owner_in_listing(&text))),
        Err(NftError::Nft(e)) if e.contains("No such file or directory") => Ok(None),
        Err(e) => Err(e),
    }
}

/// The other knockd owning the table, as words: `knockd with state file X (running, pid N)`.
fn other_owner(owner: &str) -> String {
    let state = match crate::state::holder(Path::new(owner)) {
        Some(0) => "running".to_string(),
        Some(pid) => format!("running, pid {pid}"),
        None => "not running now".to_string(),
    };
    format!("the knockd with state file {owner} ({state})")
}

/// Another knockd's table: Err naming it, and what this one should do instead.
fn refuse_foreign(state_file: &Path) -> anyhow::Result<()> {
    let ours = owner_text(state_file);
    if let Some(Some(owner)) = current_owner().context("cannot read the nftables table")? {
        if owner != ours {
            bail!(
                "table inet {t} belongs to {other}; this knockd (state file {ours}) must not change its protection or grants. Give this knockd a table of its own: NftTable = {t}-2 in [options] of its config",
                t = table(),
                other = other_owner(&owner)
            );
        }
    }
    Ok(())
}

/// `Firewall = nftables`: create or update this knockd's table (one transaction), removing the
/// elements of ports no longer protected; returns the elements the kernel still holds. Refuses
/// a table another knockd owns.
pub fn set_up_table(config: &config::Config) -> anyhow::Result<Vec<KernelElem>> {
    refuse_foreign(&config.options.state_file())?;
    let t = table();
    let listed = transport::list_elements()
        .with_context(|| format!("cannot read table inet {t}"))?
        .unwrap_or_default();
    let spec = TableSpec::from_config(config);
    let elems: Vec<_> = listed.iter().map(|k| k.elem).collect();
    let stale = spec.stale(&elems);
    transport::apply_script(&spec.script(&stale))
        .with_context(|| format!("cannot create table inet {t} (Firewall = nftables)"))?;
    Ok(listed
        .into_iter()
        .filter(|k| !stale.contains(&k.elem))
        .collect())
}

/// `Firewall = iptables`: this knockd's table left by a run with `Firewall = nftables` would
/// keep dropping new connections to its ports (and so the iptables grants): remove it. The
/// table of another knockd is left alone.
pub fn remove_table_of_previous_run(state_file: &Path) -> Option<String> {
    let t = table();
    let owner = current_owner().ok()??;
    if let Some(owner) = owner.filter(|o| *o != owner_text(state_file)) {
        tracing::debug!("table inet {t} belongs to {owner}: left alone");
        return None;
    }
    let elems = transport::list_elements().ok()??;
    Some(match transport::apply_script(&cleanup_script()) {
        Ok(()) => format!(
            "Firewall = iptables: removed table inet {t} left by a run with Firewall = nftables ({} element(s): those grants are closed)",
            elems.len()
        ),
        Err(e) => format!(
            "error: Firewall = iptables, but table inet {t} of a run with Firewall = nftables is still there and cannot be removed ({e}): it drops new connections to its ports; remove it with knockd --firewall-cleanup"
        ),
    })
}

/// `knockd --firewall-cleanup`: remove this knockd's table (`NftTable` of `config_path`, if it
/// can be read), and nothing else. Refused while the knockd that owns it runs, `force` or
/// not: a running knockd re-creates its table within a second of its removal (it repairs what
/// another program deletes), so removing it would only leave the doors' ports unprotected
/// meanwhile. `force` removes a table that belongs to another knockd, stopped.
pub fn firewall_cleanup(
    config_path: &Path,
    overrides: &config::Overrides,
    force: bool,
) -> anyhow::Result<()> {
    let mut options = match config::load(config_path) {
        Ok(p) => p.config.options,
        Err(_) => config::Options::default(),
    };
    overrides.apply(&mut options);
    super::set_table(options.nft_table()).map_err(anyhow::Error::msg)?;
    let t = table();
    let state_file = options.state_file();
    let ours = owner_text(&state_file);
    if let Some(owner) = current_owner().context("cannot read the nftables table")? {
        let owner = owner.unwrap_or_else(|| ours.clone());
        // Ours by its real path (the comment's copy may be shortened).
        let owner_state = if owner == ours {
            state_file.as_path()
        } else {
            Path::new(&owner)
        };
        if let Some(pid) = crate::state::holder(owner_state) {
            let who = if pid == 0 {
                "a running knockd".to_string()
            } else {
                format!("knockd (pid {pid})")
            };
            bail!(
                "table inet {t} is in use: {who} runs with state file {} and would re-create it within a second, leaving the doors' ports unprotected meanwhile (--force does not change that); stop it first (systemctl stop knockd)",
                owner_state.display()
            );
        }
        if owner != ours && !force {
            bail!(
                "table inet {t} belongs to {}, not to this config's knockd (state file {ours}); add --force to remove it anyway",
                other_owner(&owner)
            );
        }
    }
    transport::apply_script(&cleanup_script())
        .with_context(|| format!("cannot remove table inet {t}"))?;
    println!("removed table inet {t} (if it existed); other tables were not touched");
    Ok(())
}
