//! The network edge of the `knock` client: name resolution and sending one knock.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};

use socket2::{Domain, Socket, Type};

use super::{Family, Knock, KnockError, Protocol};

/// Resolves `host` once and picks the address a connection to it would use: the first
/// address of the requested family (in the resolver's order, RFC 6724, as ssh and other
/// clients try them) that this host has a route to; the first of the family when none has.
///
/// The returned address has port 0; callers set the port per knock. IPv6 literals may be
/// written with or without brackets (`::1` or `[::1]`); a zone (`fe80::1%eth0`) is kept.
pub fn resolve(host: &str, family: Family) -> Result<SocketAddr, KnockError> {
    let name = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let found: Vec<SocketAddr> = (name, 0)
        .to_socket_addrs()
        .map_err(|source| KnockError::Resolve {
            host: host.to_owned(),
            source,
        })?
        .collect();
    pick_address(&found, family, routable).ok_or_else(|| KnockError::NoAddress {
        host: host.to_owned(),
        family,
        found: found.iter().map(SocketAddr::ip).collect(),
    })
}

/// The address of `found` a connection would use: the first of `family` that `routable`
/// accepts (a connection skips addresses it has no route to), else the first of `family`.
pub fn pick_address(
    found: &[SocketAddr],
    family: Family,
    routable: impl Fn(SocketAddr) -> bool,
) -> Option<SocketAddr> {
    let mut candidates = found.iter().copied().filter(|addr| match family {
        Family::Any => true,
        Family::V4 => addr.is_ipv4(),
        Family::V6 => addr.is_ipv6(),
    });
    let first = candidates.next()?;
    if routable(first) {
        return Some(first);
    }
    Some(candidates.find(|a| routable(*a)).unwrap_or(first))
}

/// Whether this host has a route to `addr`: a UDP socket can be connected to it (which sends
/// nothing).
fn routable(addr: SocketAddr) -> bool {
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let mut probe = addr;
    probe.set_port(9);
    UdpSocket::bind(local).is_ok_and(|s| s.connect(probe).is_ok())
}

/// Sends one knock: a single TCP SYN or a single one-byte UDP datagram.
pub fn send(knock: &Knock) -> io::Result<()> {
    match knock.protocol {
        Protocol::Tcp => send_tcp(knock.addr),
        Protocol::Udp => send_udp(knock.addr),
    }
}

/// Emits exactly one SYN: a non-blocking connect on a fresh socket, closed at once.
///
/// The connection is never awaited, so the kernel sends no retransmission. "In progress" is
/// the expected outcome; an immediate "refused" also means the SYN went out (a local closed
/// port answered it with a RST).
fn send_tcp(addr: SocketAddr) -> io::Result<()> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    let result = match socket.connect(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if connect_in_progress(&e) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
        Err(e) => Err(e),
    };
    drop(socket);
    result
}

fn connect_in_progress(err: &io::Error) -> bool {
    #[cfg(unix)]
    if err.raw_os_error() == Some(libc::EINPROGRESS) {
        return true;
    }
    err.kind() == io::ErrorKind::WouldBlock
}

/// Sends one datagram with a single NUL byte (like knock 0.8) from a fresh socket.
fn send_udp(addr: SocketAddr) -> io::Result<()> {
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local)?;
    let sent = socket.send_to(&[0u8], addr)?;
    if sent == 1 {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "the datagram was not sent",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn resolves_literals_honouring_family() {
        let v4 = resolve("127.0.0.1", Family::Any).expect("v4 literal");
        assert_eq!(v4.ip(), IpAddr::from(Ipv4Addr::LOCALHOST));
        assert_eq!(v4.port(), 0);
        let v6 = resolve("::1", Family::V6).expect("v6 literal");
        assert_eq!(v6.ip(), IpAddr::from(Ipv6Addr::LOCALHOST));
        let bracketed = resolve("[::1]", Family::Any).expect("bracketed v6 literal");
        assert_eq!(bracketed.ip(), IpAddr::from(Ipv6Addr::LOCALHOST));
    }

    #[test]
    fn wrong_family_is_a_clear_error() {
        let err = resolve("::1", Family::V4).expect_err("::1 has no IPv4 address");
        assert_eq!(
            err.to_string(),
            "host '::1' has no IPv4 address (it resolves to ::1); drop -4 or use -6"
        );
        let err = resolve("127.0.0.1", Family::V6).expect_err("no IPv6 address");
        assert_eq!(
            err.to_string(),
            "host '127.0.0.1' has no IPv6 address (it resolves to 127.0.0.1); drop -6 or use -4"
        );
    }

    /// Like a connection: the resolver's order, skipping addresses without a route.
    #[test]
    fn picks_the_first_routable_address_of_the_family() {
        let v6: SocketAddr = "[2001:db8::1]:0".parse().expect("v6");
        let v4: SocketAddr = "192.0.2.1:0".parse().expect("v4");
        let found = [v6, v4];
        assert_eq!(pick_address(&found, Family::Any, |_| true), Some(v6));
        assert_eq!(
            pick_address(&found, Family::Any, |a| a.is_ipv4()),
            Some(v4),
            "no route to the IPv6 address: the IPv4 one, as a connection would"
        );
        assert_eq!(pick_address(&found, Family::Any, |_| false), Some(v6));
        assert_eq!(pick_address(&found, Family::V6, |a| a.is_ipv4()), Some(v6));
        assert_eq!(pick_address(&found, Family::V4, |_| true), Some(v4));
        assert_eq!(pick_address(&[v6], Family::V4, |_| true), None);
        assert!(routable("127.0.0.1:0".parse().expect("lo")));
    }

    #[test]
    fn unresolvable_host_names_the_host() {
        let err =
            resolve("no-such-host.invalid", Family::Any).expect_err(".invalid never resolves");
        assert!(
            err.to_string()
                .starts_with("cannot resolve host 'no-such-host.invalid': "),
            "{err}"
        );
    }
}
