//! Traffic for tests and the benchmark: raw SYN packets, a rate-paced spoofed flood and a
//! legitimate knocker, sent from sockets created inside a lab namespace. All of it stays in
//! the lab's namespaces; spoofed sources come from 10.192.0.0/12 only.
//!
//! - [`wire`]: the SYN packets (pure).
//! - [`netns`]: sockets created inside a lab namespace.
//! - [`generator`]: the rate-paced spoofed flood; [`knocker`]: the legitimate client.

pub mod generator;
pub mod knocker;
pub mod netns;
pub mod wire;
