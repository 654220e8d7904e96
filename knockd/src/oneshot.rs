//! The knockd binary's one-shot commands: `knockd -t` (check the config and the capture
//! filter as the daemon would run them), `knockd --new-totp FILE`, `knockd --firewall-cleanup`
//! (its work is [`crate::firewall::nftables::setup::firewall_cleanup`] and
//! [`crate::firewall::spa_drop::cleanup`]).

use crate::capture::Capture;
use crate::config::{self, Parsed};
use anyhow::bail;
use std::path::Path;

/// Load and validate the config; every problem is printed, none is fatal on its own.
pub fn load_config(path: &Path) -> anyhow::Result<Parsed> {
    match config::load(path) {
        Ok(p) => Ok(p),
        Err(errs) => {
            for e in &errs.0 {
                eprintln!("knockd: {e}");
            }
            bail!(
                "{} problem(s) in {}; nothing was started",
                errs.0.len(),
                path.display()
            )
        }
    }
}

/// `knockd --firewall-cleanup [--force]`: remove this config's nftables table, then this
/// knockd's SPA port DROP rules from iptables and ip6tables (`Firewall = iptables`).
pub fn firewall_cleanup(args: &crate::cli::Args) -> anyhow::Result<()> {
    let overrides = crate::daemon::overrides_of(args);
    crate::firewall::nftables::setup::firewall_cleanup(&args.config, &overrides, args.force)?;
    let mut options = match config::load(&args.config) {
        Ok(p) => p.config.options,
        Err(_) => config::Options::default(),
    };
    overrides.apply(&mut options);
    for line in crate::firewall::spa_drop::cleanup(&options)? {
        println!("{line}");
    }
    Ok(())
}

/// `knockd --new-totp FILE`: write a fresh TOTP secret file and say what to do with it.
pub fn new_totp(path: &Path) -> anyhow::Result<()> {
    let spec = knock_ipc::totp::Spec::write_new(path)?;
    println!(
        "wrote {} (mode 0600): a TOTP door secret, {} knocks on ports {}-{}, a new sequence every {} s.",
        path.display(),
        spec.knocks,
        spec.lo,
        spec.hi,
        spec.step_secs
    );
    println!(
        "server: add `TOTP_File = {}` to a door of knockd.conf, then reload.",
        path.display()
    );
    println!(
        "client: copy the file over a trusted channel (keep it 0600), then `knock --totp FILE HOST`."
    );
    Ok(())
}

/// `knockd --new-client NAME --out FILE`: enroll an SPA client where the config (if it
/// exists) keeps clients and the server key.
pub fn new_client(config: &Path, name: &str, out: &Path) -> anyhow::Result<()> {
    let options = if config.exists() {
        crate::config::load(config)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .config
            .options
    } else {
        crate::config::Options::default()
    };
    let said = crate::spa::clients::new_client(
        name,
        out,
        &options.spa_client_dir(),
        &options.spa_server_key(),
    )?;
    for line in said {
        println!("{line}");
    }
    println!("server: name the client in a door (SPA = {name}); a running knockd takes the new record without a restart.");
    Ok(())
}

/// `knockd -t`: print problems and warnings; Ok(()) when the config is valid. The capture
/// filter is compiled as it will run (the interface's addresses and link type) and a
/// fallback to a coarser filter is reported. With knockd's privileges a missing interface is
/// an error; without them, the checks that need them are skipped and named.
pub fn check_config(
    path: &Path,
    interface: Option<&str>,
    firewall: Option<config::FirewallKind>,
    state_file: Option<&Path>,
) -> anyhow::Result<()> {
    let mut parsed = load_config(path)?;
    let privileged = crate::privileges::check().is_ok();
    let mut report = crate::check::Report::new(privileged);
    report
        .warnings
        .extend(parsed.warnings.iter().map(|w| w.to_string()));
    let iface = interface
        .map(str::to_string)
        .or_else(|| parsed.config.options.interface.clone())
        .or_else(crate::addrs::default_route_interface);
    if let Some(i) = iface.as_deref() {
        if i != "any" && nix::net::if_::if_nametoindex(i).is_err() {
            report.missing_interface(i)?;
        }
    }
    let local = iface
        .as_deref()
        .map(|i| crate::addrs::of_interface(i, false))
        .unwrap_or_default();
    // Compile for the link type the capture will have: the interface's, read by opening it
    // (with knockd's privileges); Ethernet when it cannot be read, and say so.
    let link = match iface.as_deref().map(|i| (i, Capture::link_of(i))) {
        Some((i, Ok(link))) => {
            let name = link
                .get_name()
                .unwrap_or_else(|_| format!("DLT {}", link.0));
            report.notes.push(format!(
                "capture filter compiled for {i}'s link type ({name})"
            ));
            link
        }
        Some((i, Err(e))) => {
            report.link_type_unknown(i, &e.to_string());
            pcap::Linktype::ETHERNET
        }
        None => {
            report.notes.push("capture filter compiled for Ethernet (assumed: no interface given and no default route; use -i)".into());
            pcap::Linktype::ETHERNET
        }
    };
    if let Some(note) = check_filter(&parsed.config, &local, link)? {
        report.warnings.push(note);
    }
    if let Some(f) = firewall {
        parsed.config.options.firewall = f;
    }
    if let Some(s) = state_file {
        parsed.config.options.state_file = Some(s.to_path_buf());
    }
    // How the SPA port stays silent (the rule knockd inserts), or the warning that nothing
    // drops it.
    let silent = crate::firewall::spa_drop::Protection::of(&parsed.config);
    let tag = parsed.config.options.instance_tag();
    report.notes.extend(silent.note(&tag));
    report.warnings.extend(silent.warning());
    let _ = crate::firewall::nftables::set_table(parsed.config.options.nft_table());
    match crate::firewall::nftables::setup::firewall_check(&parsed.config.options) {
        Ok(advice) => report.warnings.extend(advice),
        Err(e) => report.ruleset_unread(&e),
    }
    let spa = crate::spa::check::check(&parsed.config, privileged);
    report.notes.extend(spa.notes);
    report.warnings.extend(spa.warnings);
    report.errors.extend(spa.errors);
    report.skipped.extend(spa.skipped);
    print!(
        "{}",
        report.render(&path.display().to_string(), parsed.config.doors.len())
    );
    if !report.errors.is_empty() {
        anyhow::bail!(
            "{}: {} error(s) (above)",
            path.display(),
            report.errors.len()
        );
    }
    Ok(())
}

/// Compile the capture filter for `config` exactly as the capture will run it. Err when no
/// filter at all can be built (the config is refused); Ok(Some(note)) when a coarser filter
/// than the exact one will be used.
pub fn check_filter(
    config: &config::Config,
    local: &[std::net::IpAddr],
    link: pcap::Linktype,
) -> anyhow::Result<Option<String>> {
    let wall = crate::engine::totp::system_wall_clock().as_secs();
    let doors = crate::capture::filter_doors(&config.doors, |i| {
        let spec = config.doors.get(i)?.totp.as_ref()?;
        Some(spec.step_at(wall))
    });
    let fitted = crate::capture::bpf::fit(&doors, local, link)?;
    Ok(fitted.note())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `knockd -t` checks the filter the daemon will run: rotating doors included, with the
    /// accepted steps' ports (they have no static sequence).
    #[test]
    fn the_checked_filter_includes_rotating_doors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("rot.totp");
        let spec = knock_ipc::totp::Spec::write_new(&secret).expect("secret");
        let conf = dir.path().join("knockd.conf");
        let text = format!(
            "[rot]\n TOTP_File = {}\n command = x %IP%\n[ssh]\n sequence = 7000,8000,9000\n command = x\n",
            secret.display()
        );
        std::fs::write(&conf, text).expect("write");
        let config = config::load(&conf).expect("load").config;
        let wall = 1_800_000_000;
        let step = spec.step_at(wall);
        let doors = crate::capture::filter_doors(&config.doors, |i| {
            config.doors[i].totp.as_ref().map(|_| step)
        });
        assert_eq!(doors.len(), 2);
        let rot = doors
            .iter()
            .find(|d| d.name == "rot")
            .expect("rotating door");
        for s in [step - 1, step, step + 1] {
            for port in spec.ports(s) {
                assert!(rot.sequence.iter().any(|st| st.port == port), "step {s}");
            }
        }
    }
}
