//! The end-to-end tests: one test binary (one link), one module per area. Each module starts
//! the real daemons and clients in throwaway network namespaces (see the `knock-e2e` library).
//!
//!     cargo build --workspace --bins && cargo test -p knock-e2e --test e2e nft::

mod checks;
mod control;
mod control_flood;
mod fleet;
mod grant_hazards;
mod harness_debian;
mod knockd;
mod local;
mod log;
mod matcher;
mod member;
mod nft;
mod pipeline;
mod state_file;
mod tui;
