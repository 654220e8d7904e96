//! Many hosts from one console: which knockd to talk to and how to reach it.
//!
//! - [`target`]: `unix:///path` and `ssh://[user@]host[:port][/socket]` URLs (`-H`).
//! - [`hosts`]: the hosts file (`~/.config/knockctl/hosts.toml`), hosts and groups
//!   (`--hosts`).
//! - [`connect`]: the [`Connector`] seam: a byte stream to knockd from its local socket or an
//!   ssh child running `knockctl dial-stdio` on the remote host.
//! - [`share`]: ssh connection sharing when asked for (`--ssh-persist`), the user's ssh
//!   configuration first.
//! - [`ask`](mod@ask): one host's session, and all hosts asked at once under one time limit.
//! - [`dial`]: `knockctl dial-stdio`, the remote end of an ssh link.
//! - [`run`](mod@run): a command on the chosen hosts; [`output`] and [`tables`] merge the
//!   answers (HOST column, `host` label and field); [`merge`] orders `tail`'s events.

pub mod ask;
pub mod connect;
pub mod dial;
pub mod hosts;
pub mod merge;
pub mod output;
pub mod run;
pub mod share;
pub mod tables;
pub mod target;

pub use ask::{ask, ask_all, HostError, Session};
pub use connect::{connector_for, Connector};
pub use hosts::{Host, HostsFile};
pub use target::Target;
