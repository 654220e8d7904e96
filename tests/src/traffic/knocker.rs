//! The legitimate client: a full knock (one SYN per port) from the client's own address,
//! sent from a raw socket in the client namespace, timestamped just before the last SYN.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use anyhow::{Context, Result};
use socket2::{SockAddr, Socket};

use super::generator::raw_socket;
use super::netns::create_in;
use super::wire::syn;

pub struct Knocker {
    sock: Socket,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    /// Source port of the next SYN. Every knock uses new ports, so no daemon can take it
    /// for a retransmission of an earlier knock.
    next_sport: u16,
}

impl Knocker {
    pub fn new(ns: &str, src: Ipv4Addr, dst: Ipv4Addr) -> Result<Knocker> {
        Ok(Knocker {
            sock: create_in(ns, raw_socket)?,
            src,
            dst,
            next_sport: 20_000,
        })
    }

    /// Sends one SYN to each of `ports`, back to back, and returns when the last one left.
    pub fn knock(&mut self, ports: &[u16]) -> Result<Instant> {
        let dst = SockAddr::from(SocketAddrV4::new(self.dst, 0));
        let mut last = Instant::now();
        for &port in ports {
            let sport = self.next_sport;
            self.next_sport = if sport >= 60_000 { 20_000 } else { sport + 1 };
            let pkt = syn(self.src, self.dst, sport, port, u32::from(sport) << 16);
            last = Instant::now();
            self.sock
                .send_to(&pkt, &dst)
                .with_context(|| format!("cannot send the knock SYN to {}:{port}", self.dst))?;
        }
        Ok(last)
    }
}
