//! Test helper: a local attacker on knockd's control socket. Drops to uid/gid 65534 (nobody),
//! opens `count` connections and holds them for `secs` seconds, each either idle (`idle`:
//! connected, nothing sent) or stuck one byte short of a frame of `bytes` bytes (`partial`).
//! Prints `held <n> refused <m>` once every connection was attempted.
//!
//! usage: `knock-hold <socket> <count> <secs> idle|partial [bytes]`

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 5,
        "usage: knock-hold <socket> <count> <secs> idle|partial [bytes]"
    );
    let (socket, count, secs, mode) = (
        &args[1],
        args[2].parse::<usize>()?,
        args[3].parse::<u64>()?,
        args[4].as_str(),
    );
    let bytes: usize = args
        .get(5)
        .map(|b| b.parse())
        .transpose()?
        .unwrap_or(16 << 10);
    // Enough descriptors for the connections, then become nobody.
    if let Ok((_, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
    if nix::unistd::Uid::effective().is_root() {
        nix::unistd::setgroups(&[])?;
        nix::unistd::setgid(nix::unistd::Gid::from_raw(65534))?;
        nix::unistd::setuid(nix::unistd::Uid::from_raw(65534))?;
    }
    let mut held = Vec::new();
    let mut refused = 0usize;
    for _ in 0..count {
        match UnixStream::connect(socket) {
            Ok(mut s) => {
                if mode == "partial" {
                    let len = u32::try_from(bytes).unwrap_or(u32::MAX);
                    let _ = s.write_all(&len.to_be_bytes());
                    let _ = s.write_all(&vec![0u8; bytes.saturating_sub(1)]);
                }
                held.push(s);
            }
            Err(_) => refused += 1,
        }
    }
    println!("held {} refused {refused}", held.len());
    std::io::stdout().flush()?;
    std::thread::sleep(Duration::from_secs(secs));
    Ok(())
}
