//! Rotating (TOTP) doors: the sequences a door accepts at a time step. Pure; the engine's
//! TOTP clock says which step it is.

use super::model::{Proto, Step};
use knock_ipc::totp::Spec;

/// The accepted steps of a TOTP door at `step`: the current one first (preferred when two
/// share a first knock), then the previous and the next (clock skew).
pub fn window(spec: &Spec, step: u64) -> Vec<(u64, Vec<Step>)> {
    [Some(step), step.checked_sub(1), step.checked_add(1)]
        .into_iter()
        .flatten()
        .map(|s| {
            let seq = spec
                .ports(s)
                .into_iter()
                .map(|port| Step {
                    port,
                    proto: Proto::Tcp,
                })
                .collect();
            (s, seq)
        })
        .collect()
}
