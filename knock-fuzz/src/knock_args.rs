//! The `knock` client's argument parser (`knockctl::knock::Args` and its port specs), without
//! resolving the host or sending anything.
//!
//! Input: argv after the program name, separated by NUL bytes (lossy UTF-8).
//! Invariants: no panic; memory bounded by [`memory_limit`]; every accepted `PORT[:PROTO]`
//! renders back to an argument that parses to the same knock.

use clap::Parser;
use knockctl::knock::{Args, PortSpec};

/// Peak bytes for `len` bytes of arguments (clap's own tables plus copies of the arguments).
pub fn memory_limit(len: usize) -> usize {
    64 * len + (1 << 20)
}

pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let argv = std::iter::once("knock").chain(text.split('\0'));
    let parsed = crate::alloc::within("knock::Args", memory_limit(data.len()), || {
        Args::try_parse_from(argv)
    });
    let Ok(args) = parsed else {
        return;
    };
    let _ = args.family();
    let _ = args.delay();
    if let Ok(specs) = args.port_specs() {
        assert_eq!(specs.len(), args.ports.len());
        for (port, proto) in specs {
            assert_ne!(port, 0, "port 0 accepted");
            let again = format!("{port}:{proto}");
            match again.parse::<PortSpec>() {
                Ok(spec) => {
                    assert_eq!(spec.port, port);
                    assert_eq!(spec.protocol_or(args.default_protocol()), proto);
                }
                Err(e) => panic!("{again} does not parse back: {e}"),
            }
        }
    }
}
