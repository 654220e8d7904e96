//! Local addresses of the capture interface: the default knock destinations of a door
//! without `Target`. Re-read by the daemon whenever it likes (DHCP, PPPoE, VIPs).

use std::io;
use std::net::IpAddr;

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

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
