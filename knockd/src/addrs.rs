//! Local addresses of the capture interface: the default knock destinations of a door
//! without `Target`. Re-read every 2 s while the daemon runs ([`watch`]: DHCP, PPPoE, VIPs).
//! Also the default route's interface (the capture interface when none is configured).

use crate::engine::Control;
use std::io;
use std::net::IpAddr;
use std::time::Duration;
use tokio::sync::mpsc;

/// The pseudo-interface that captures on all interfaces.
pub const ANY: &str = "any";

/// All IPv4 and IPv6 addresses of `interface` (link-local included; an `IpAddr` carries no
/// scope), sorted and deduplicated. `"any"` yields the addresses of every interface.
///
/// Fails with [`io::ErrorKind::NotFound`] when no interface of that name exists. An
/// interface that exists but has no address yields an empty list.
pub fn local_addrs(interface: &str) -> io::Result<Vec<IpAddr>> {
    let all = interface == ANY;
    let mut seen = false;
    let mut out = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(io::Error::from)? {
        if !all && ifa.interface_name != interface {
            continue;
        }
        seen = true;
        let Some(sa) = ifa.address else {
            continue;
        };
        if let Some(v4) = sa.as_sockaddr_in() {
            out.push(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = sa.as_sockaddr_in6() {
            out.push(IpAddr::V6(v6.ip()));
        }
    }
    // getifaddrs lists every interface (AF_PACKET entries on Linux), but ask the kernel
    // directly before calling a name unknown.
    if !all && !seen && nix::net::if_::if_nametoindex(interface).is_err() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no network interface named '{interface}' (list them with `ip link`)"),
        ));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The addresses of `iface` as the daemon uses them (IPv4 only with `-4`); none when they
/// cannot be read (logged at debug level: the interface may come up later).
pub fn of_interface(iface: &str, only_v4: bool) -> Vec<IpAddr> {
    match local_addrs(iface) {
        Ok(mut v) => {
            if only_v4 {
                v.retain(|a| a.is_ipv4());
            }
            v
        }
        Err(e) => {
            tracing::debug!("cannot read addresses of {iface}: {e}");
            Vec::new()
        }
    }
}

/// Addresses come and go (DHCP, PPPoE, VIPs): re-read them every 2 s and tell the engine
/// when they changed. Ends when the engine is gone.
pub async fn watch(iface: String, only_v4: bool, ctl: mpsc::Sender<Control>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.tick().await;
    let mut last = of_interface(&iface, only_v4);
    loop {
        tick.tick().await;
        let now = of_interface(&iface, only_v4);
        if now != last {
            last = now.clone();
            if ctl.send(Control::LocalAddrs(now)).await.is_err() {
                return;
            }
        }
    }
}

/// The interface of the IPv4 default route, from /proc/net/route.
pub fn default_route_interface() -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    default_route_in(&table)
}

fn default_route_in(table: &str) -> Option<String> {
    table.lines().skip(1).find_map(|l| {
        let mut f = l.split_whitespace();
        let iface = f.next()?;
        (f.next()? == "00000000").then(|| iface.to_string())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn finds_the_default_route_interface() {
        let table = "Iface\tDestination\tGateway\tFlags\n\
                     wg0\t0000000A\t00000000\t0001\n\
                     ens3\t00000000\t0101A8C0\t0003\n";
        assert_eq!(default_route_in(table).as_deref(), Some("ens3"));
        assert_eq!(default_route_in("Iface\tDestination\n"), None);
    }

    #[test]
    fn loopback_has_127_0_0_1() {
        let v = local_addrs("lo").unwrap();
        assert!(v.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{v:?}");
        let mut sorted = v.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(v, sorted);
    }

    #[test]
    fn any_includes_loopback() {
        let v = local_addrs(ANY).unwrap();
        assert!(v.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{v:?}");
        let lo = local_addrs("lo").unwrap();
        assert!(lo.iter().all(|a| v.contains(a)));
    }

    #[test]
    fn unknown_interface_is_not_found() {
        for name in ["nosuchif0xyz", "", "bad\0name"] {
            let e = local_addrs(name).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{name:?}");
            assert!(e.to_string().contains(name), "{e}");
        }
    }
}
