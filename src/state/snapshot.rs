//! The unit the control plane publishes and the data plane reads.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::directory::Directory;
use crate::balance::{health, Balancer, Member};
use crate::policy::Policy;

/// What the data plane reads per request: the policy and the addresses it
/// was installed with, published together so they never disagree.
#[derive(Debug)]
pub struct Snapshot {
    pub policy: Arc<Policy>,
    pub dir: Directory,
    /// Increases with every successful (re)load.
    pub version: u64,
    /// Frontend routes and pools compiled from `policy` (kept across
    /// reloads that change only addresses, so health state survives).
    pub lb: Arc<crate::balance::Balancer>,
}

/// Member addresses for the health checks of a balancer, looked up in the
/// snapshot published at the time of each check.
pub fn placement(state: &Arc<ArcSwap<Snapshot>>) -> health::Placed {
    let state = state.clone();
    Arc::new(move |lb: &Arc<Balancer>, member: &Member| {
        let snap = state.load();
        if Arc::ptr_eq(&snap.lb, lb) {
            health::Placement::At(member.address(&snap.dir))
        } else {
            health::Placement::Stale
        }
    })
}
