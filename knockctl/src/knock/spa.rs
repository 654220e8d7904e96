//! `knock --spa FILE HOST`: one single-packet knock (the format is `knock_ipc::spa`).

use super::{resolve, Args, KnockError};
use knock_ipc::spa::keys::random_nonce;
use knock_ipc::spa::{Body, ClientKey, DoorId, Op};
use socket2::{Domain, Socket, Type};
use std::io::Write;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// The packet's fields for `args` at unix time `now_ms`.
pub fn body(args: &Args, now_ms: u64) -> Body {
    Body {
        ts_ms: now_ms,
        op: Op::Open,
        addr: args.nat_address,
        timeout_secs: 0,
        door: args.door.as_deref().map_or(DoorId::ANY, DoorId::of),
    }
}

/// Reads the key, resolves the host, sends one datagram from a fresh socket.
pub fn run(args: &Args) -> Result<(), KnockError> {
    let Some(path) = &args.spa else {
        return Ok(());
    };
    let key = ClientKey::read(path)?;
    let mut addr: SocketAddr = resolve(&args.host, args.family()?)?;
    addr.set_port(args.spa_port);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let packet = key.packet(&body(args, now_ms), &random_nonce()?)?;
    let sent = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .and_then(|s| s.send_to(&packet, &addr.into()));
    match sent {
        Ok(n) if n == packet.len() => {
            if args.verbose {
                let _ = writeln!(
                    std::io::stdout(),
                    "sent single-packet knock of {} to udp {addr}",
                    key.name
                );
            }
            Ok(())
        }
        Ok(n) => Err(KnockError::SpaSend {
            addr,
            source: std::io::Error::other(format!("only {n} of {} bytes sent", packet.len())),
        }),
        Err(source) => Err(KnockError::SpaSend { addr, source }),
    }
}
