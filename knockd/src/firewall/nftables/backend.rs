//! The nftables backend (`Firewall = nftables`) behind the [`Firewall`] trait: a batch is one
//! kernel transaction on the shared nf_tables netlink socket ([`super::transport`]), changing
//! elements of the allow sets of table `inet knockd`. A rule is the element
//! `src . proto . port` (its chain and door are not part of it); `Add` and `Refresh` put it with
//! the grant's timeout, so the kernel removes it at the deadline even if knockd is dead.
//!
//! Outcomes: a delete reports `Absent` only when the table itself is gone (it is written
//! add + delete, which cannot fail on an element the kernel already expired), and `Check` reports `Ok` (restore reads the sets back
//! instead, see [`super::listing`]). `list` dumps the sets over the same socket
//! ([`super::dump`]); `set_up` runs the table's script (`nft -f -`).

use super::listing::KernelElem;
use super::{transport, Elem, ElemOp, NftError};
use crate::config::MAX_TIMEOUT_SECS;
use crate::firewall::{BoxFuture, Firewall, Op, OpOutcome};
use std::time::Duration;

#[derive(Debug, Clone, Copy, Default)]
pub struct NftFirewall;

fn elem_op(op: &Op) -> Option<ElemOp> {
    let r = op.rule();
    let elem = Elem {
        addr: r.src,
        proto: r.proto,
        port: r.port,
    };
    let put = |timeout: &Option<Duration>| ElemOp::Put {
        elem,
        timeout: timeout.unwrap_or(Duration::from_secs(MAX_TIMEOUT_SECS)),
    };
    match op {
        Op::Add { timeout, .. } | Op::Refresh { timeout, .. } => Some(put(timeout)),
        Op::Delete { .. } => Some(ElemOp::Remove { elem }),
        Op::Check { .. } => None,
    }
}

impl Firewall for NftFirewall {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn list(&self) -> Option<BoxFuture<Result<Vec<KernelElem>, String>>> {
        Some(Box::pin(async move { transport::shared()?.list().await }))
    }

    fn set_up(&self, script: String) -> BoxFuture<Result<(), String>> {
        Box::pin(async move { transport::shared()?.script(script).await })
    }

    fn repair(&self, script: String) -> BoxFuture<Result<bool, String>> {
        Box::pin(async move { transport::shared()?.repair(script).await })
    }

    fn apply_now(&self, ops: &[Op]) -> bool {
        let Ok(handle) = transport::shared() else {
            return false;
        };
        let elem_ops: Vec<ElemOp> = ops.iter().filter_map(elem_op).collect();
        if elem_ops.is_empty() {
            return false;
        }
        matches!(handle.apply_now(&elem_ops), Some(Ok(())))
    }

    fn apply(&self, ops: Vec<Op>) -> BoxFuture<Vec<OpOutcome>> {
        Box::pin(async move {
            let handle = match transport::shared() {
                Ok(h) => h,
                Err(e) => return vec![OpOutcome::Failed(e); ops.len()],
            };
            let elem_ops: Vec<ElemOp> = ops.iter().filter_map(elem_op).collect();
            if handle.apply(elem_ops).await.is_ok() {
                return vec![OpOutcome::Ok; ops.len()];
            }
            // One bad op must not fail the others: each alone.
            let mut out = Vec::with_capacity(ops.len());
            for op in &ops {
                let r = match elem_op(op) {
                    Some(e) => handle.apply(vec![e]).await,
                    None => Ok(()),
                };
                out.push(match r {
                    Ok(()) => OpOutcome::Ok,
                    // No table, so no element: the grant is closed (a rule already gone counts
                    // as closed).
                    Err(e)
                        if matches!(op, Op::Delete { .. })
                            && e == NftError::NoTable.to_string() =>
                    {
                        OpOutcome::Absent
                    }
                    Err(e) => OpOutcome::Failed(e),
                });
            }
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Proto;
    use crate::firewall::FwRule;

    #[test]
    fn ops_become_element_changes() {
        let rule = FwRule {
            chain: "INPUT".into(),
            src: "10.0.0.2".parse().expect("ip"),
            proto: Proto::Tcp,
            port: 22,
            door: "ssh".into(),
            instance: None,
        };
        let t = Some(Duration::from_secs(30));
        let put = "nft put 10.0.0.2 . tcp . 22 timeout 30000ms";
        let s = |op: Op| elem_op(&op).map(|e| e.to_string());
        assert_eq!(
            s(Op::Add {
                rule: rule.clone(),
                timeout: t
            })
            .as_deref(),
            Some(put)
        );
        assert_eq!(
            s(Op::Refresh {
                rule: rule.clone(),
                timeout: t
            })
            .as_deref(),
            Some(put)
        );
        assert_eq!(
            s(Op::Delete { rule: rule.clone() }).as_deref(),
            Some("nft remove 10.0.0.2 . tcp . 22")
        );
        assert_eq!(s(Op::Check { rule }), None);
    }
}
