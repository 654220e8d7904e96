//! How a grant is closed: a value recorded in the ledger and the state file. The engine
//! routes it to the owner that closes it (firewall queue, nftables side, command runner).

use crate::action::{Action, FwRule};
use crate::firewall::nftables::Elem;

/// How a grant is closed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Close {
    /// Native door: delete these rules.
    Rules { rules: Vec<FwRule> },
    /// The door's Stop_Command, already expanded (run by /bin/sh).
    StopCommand { command: String },
    /// The `-D` inverse derived from a single iptables start command (no shell).
    Derived {
        delete: Vec<String>,
        check: Vec<String>,
    },
    /// Native door with `Firewall = nftables`: these elements of table `inet knockd`, which
    /// the kernel removes at their timeout (nothing runs at the deadline).
    Nft { elems: Vec<Elem> },
}

impl Close {
    /// The command that closes the grant (stop command, derived delete); None for native
    /// doors, whose rules and elements go through their firewall backend.
    pub fn command(&self) -> Option<Action> {
        match self {
            Close::StopCommand { command } => Some(Action::Shell(command.clone())),
            Close::Derived { delete, .. } => Some(Action::Exec(delete.clone())),
            Close::Rules { .. } | Close::Nft { .. } => None,
        }
    }

    /// A derived close whose delete is the command `words` (closeSSH-style doors).
    pub fn derived_delete_is(&self, words: &[String]) -> bool {
        match self {
            Close::Derived { delete, .. } => crate::action::same_command(delete, words),
            _ => false,
        }
    }

    /// Human description, e.g. `iptables -D ...` or `stop_command`.
    pub fn describe(&self) -> String {
        match self {
            Close::Rules { .. } => "native rule delete".to_string(),
            Close::StopCommand { .. } => "stop_command".to_string(),
            Close::Derived { .. } => "derived iptables -D".to_string(),
            Close::Nft { .. } => "kernel timeout (nftables)".to_string(),
        }
    }

    /// The kernel closes this grant by itself at its deadline (nftables element timeout).
    pub fn kernel_expires(&self) -> bool {
        matches!(self, Close::Nft { .. })
    }
}
