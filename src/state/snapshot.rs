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
    /// The TLS frontends' checked certificates, read with `policy` (kept
    /// across reloads that change only addresses).
    pub tls: Arc<crate::tls::Certificates>,
}

/// Whose `limits` a request is held to: an access entry's, a frontend's,
/// or only the top-level ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitOwner {
    Unowned,
    /// Index into `policy.entries`.
    Entry(usize),
    /// Index into `lb.frontends`.
    Frontend(usize),
}

impl Snapshot {
    /// Where in the rule file `field` of `owner`'s limits is set (`None`:
    /// its default), for the log line of a refusal that limit decided.
    pub fn limit_ref(&self, owner: LimitOwner, field: &str) -> Option<crate::rules::RuleRef> {
        let own = match owner {
            LimitOwner::Unowned => None,
            LimitOwner::Entry(i) => self.policy.entries.get(i).map(|e| (&e.limits, &e.rule)),
            LimitOwner::Frontend(i) => self.lb.frontends.get(i).map(|f| (&f.limits, &f.rule)),
        };
        self.policy.limit_ref_over(own, field)
    }
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
