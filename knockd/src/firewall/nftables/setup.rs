//! Table `inet knockd` outside the engine: created or updated at start (`Firewall =
//! nftables`), removed at an iptables start and by `knockd --firewall-cleanup`, and the advice
//! about native base chains that would drop what knockd opens.

use crate::config;
use anyhow::Context;

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
    use super::{detect, transport};
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

/// `Firewall = nftables`: create or update table inet knockd (one transaction), removing the
/// elements of ports no longer protected; returns the elements the kernel still holds.
pub fn set_up_table(
    config: &config::Config,
) -> anyhow::Result<Vec<crate::firewall::nftables::listing::KernelElem>> {
    use super::{script::TableSpec, transport};
    let listed = transport::list_elements()
        .context("cannot read table inet knockd")?
        .unwrap_or_default();
    let spec = TableSpec::from_config(config);
    let elems: Vec<_> = listed.iter().map(|k| k.elem).collect();
    let stale = spec.stale(&elems);
    transport::apply_script(&spec.script(&stale))
        .context("cannot create table inet knockd (Firewall = nftables)")?;
    Ok(listed
        .into_iter()
        .filter(|k| !stale.contains(&k.elem))
        .collect())
}

/// `Firewall = iptables`: a table inet knockd left by a run with `Firewall = nftables` would
/// keep dropping new connections to its ports (and so the iptables grants): remove it.
pub fn remove_table_of_previous_run() -> Option<String> {
    use super::{script::cleanup_script, transport};
    let elems = transport::list_elements().ok()??;
    Some(match transport::apply_script(&cleanup_script()) {
        Ok(()) => format!(
            "Firewall = iptables: removed table inet knockd left by a run with Firewall = nftables ({} element(s): those grants are closed)",
            elems.len()
        ),
        Err(e) => format!(
            "error: Firewall = iptables, but table inet knockd of a run with Firewall = nftables is still there and cannot be removed ({e}): it drops new connections to its ports; remove it with knockd --firewall-cleanup"
        ),
    })
}

/// `knockd --firewall-cleanup`: remove table inet knockd, and nothing else.
pub fn firewall_cleanup() -> anyhow::Result<()> {
    use super::{script::cleanup_script, transport};
    transport::apply_script(&cleanup_script()).context("cannot remove table inet knockd")?;
    println!("removed table inet knockd (if it existed); other tables were not touched");
    Ok(())
}
