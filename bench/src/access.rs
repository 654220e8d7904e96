//! Real access through an opened door: a TCP listener on the protected port in the server
//! namespace, and the legitimate client's connection to it from the client namespace.
//!
//! The listener never accepts: the kernel completes the handshake and queues the connection
//! (a few dozen per run, far below the backlog), which is all "got access" needs. The client
//! socket is made in the client namespace, so its source is the client's own address.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use knock_e2e::traffic::netns::create_in;

/// Connections the listener queues before the kernel refuses more.
const BACKLOG: i32 = 1024;

/// A listening TCP socket in a namespace; closed on drop.
pub struct Listener {
    _sock: Socket,
}

impl Listener {
    /// Listens on `addr:port` inside network namespace `ns`.
    pub fn start(ns: &str, addr: Ipv4Addr, port: u16) -> Result<Listener> {
        let sock = create_in(ns, || {
            let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
                .context("cannot open a TCP socket")?;
            s.set_reuse_address(true)?;
            s.bind(&SockAddr::from(SocketAddrV4::new(addr, port)))
                .with_context(|| format!("cannot bind {addr}:{port} in {ns}"))?;
            s.listen(BACKLOG)
                .with_context(|| format!("cannot listen on {addr}:{port}"))?;
            Ok(s)
        })?;
        Ok(Listener { _sock: sock })
    }
}

/// Connects from namespace `ns` to `dst:port`; true when the handshake completed within
/// `timeout` (a dropped SYN makes it time out).
pub fn connect(ns: &str, dst: Ipv4Addr, port: u16, timeout: Duration) -> Result<bool> {
    let sock = create_in(ns, || {
        Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
            .context("cannot open a TCP socket")
    })?;
    Ok(sock
        .connect_timeout(&SockAddr::from(SocketAddrV4::new(dst, port)), timeout)
        .is_ok())
}
