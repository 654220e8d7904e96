//! What the matcher tells the engine: [`MatchEvent`]s, and why a knock was refused.

use std::net::IpAddr;

use super::DoorId;
use crate::config::Step;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchEvent {
    /// `stage` knocks of `of` done (1-based, like knockd's "Stage N").
    Stage {
        src: IpAddr,
        door: DoorId,
        stage: usize,
        of: usize,
    },
    /// The sequence is complete.
    Open { src: IpAddr, door: DoorId },
    /// A knock out of sequence ended the attempt after `stage` good knocks.
    Reset {
        src: IpAddr,
        door: DoorId,
        stage: usize,
        got: Step,
    },
    /// seq_timeout passed after `stage` good knocks.
    Timeout {
        src: IpAddr,
        door: DoorId,
        stage: usize,
    },
    /// A first knock needed room; this stage-1 attempt made it.
    Evicted {
        src: IpAddr,
        door: DoorId,
        stage: usize,
    },
    /// The sweep guard found `strays` distinct non-knock ports: `src` is a scanner. Followed
    /// by a `Swept` for each attempt this ends.
    Scanner { src: IpAddr, strays: usize },
    /// An attempt ended because its source is a scanner.
    Swept {
        src: IpAddr,
        door: DoorId,
        stage: usize,
    },
    /// A first knock that did not start an attempt, a completion refused as a replay, or a
    /// knock that could not advance its attempt ([`Refusal::DoorShare`]).
    Refused {
        src: IpAddr,
        door: DoorId,
        reason: Refusal,
    },
}

/// Why a first knock was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The source is penalised by the sweep guard.
    Scanner,
    /// Its network holds its whole share and none of it is at stage 1.
    NetworkFull,
    /// The table is full and no attempt is at stage 1.
    TableFull,
    /// A TOTP sequence completed by an address other than the one it already opened for.
    Replay,
    /// A knock that would advance an attempt while its door holds its share of advanced
    /// attempts (the attempt ends).
    DoorShare,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Scanner => "source is penalised as a scanner",
            Refusal::NetworkFull => "its network holds its whole share of attempts",
            Refusal::TableFull => "attempt table full of advanced attempts",
            Refusal::Replay => {
                "replay: this time step's sequence already opened the door for another address"
            }
            Refusal::DoorShare => "its door holds its share of advanced attempts",
        }
    }
}
