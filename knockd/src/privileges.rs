//! What knockd must be allowed to do: capture (CAP_NET_RAW) and change the firewall
//! (CAP_NET_ADMIN). Checked at start, with the exact fix when one is missing.

use anyhow::bail;

/// Err names every missing capability and the ways to grant them.
pub fn check() -> anyhow::Result<()> {
    use caps::{CapSet, Capability};
    let mut missing = Vec::new();
    for c in [Capability::CAP_NET_RAW, Capability::CAP_NET_ADMIN] {
        if !caps::has_cap(None, CapSet::Effective, c).unwrap_or(false) {
            missing.push(c.to_string());
        }
    }
    if !missing.is_empty() {
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "/usr/sbin/knockd".into());
        bail!(
            "missing capabilities: {} (knockd needs CAP_NET_RAW to capture and CAP_NET_ADMIN for the firewall).\n\
             Fix: run it as root (sudo knockd ...), or under systemd with AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN,\n\
             or grant them to the binary: setcap cap_net_raw,cap_net_admin+eip {exe}",
            missing.join(", ")
        );
    }
    Ok(())
}
