//! Where the addresses of discovered containers come from.
//!
//! The rule file names some containers by what a platform calls them
//! (`{"docker": NAME}`) instead of by address. A [`Discovery`] source turns
//! those names into addresses, says whether the platform answers, and wakes
//! the daemon when addresses may have changed. The daemon
//! ([`crate::control::daemon`]) holds one `Arc<dyn Discovery>`, chosen by
//! [`open`], and never names the platform; [`directory`] is the one place
//! where a source's answer becomes the [`Directory`] the data plane reads.
//!
//! Fail closed, whatever the source: a name it cannot place gets no
//! address, so no rule opens anything for it; a source that cannot be
//! reached leaves the addresses known so far in force (none at start).
//!
//! Docker ([`docker`]) is the only source today; a Kubernetes source goes
//! in `src/discovery/kubernetes.rs` as a second `impl Discovery`, chosen in
//! [`open`] from a new [`Config`] field (with its `{"kubernetes": …}`
//! containers keyed in [`Directory::build`] the way Docker names are).
//!
//! Layering: this module reads `policy` and `state` and is read by
//! `control` and `cli`; `state` never imports it.

pub mod docker;

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::policy::{ContainerId, Policy};
use crate::state::directory::Directory;
use crate::state::metrics::Metrics;
use crate::state::snapshot::Snapshot;

/// A future a `dyn Discovery` can return (native `async fn` in traits is not
/// object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a source could not be asked at all (its own error type, erased).
pub type Unreachable = Box<dyn std::error::Error + Send + Sync>;

/// A source of container addresses. Implementations keep their own log
/// lines and metrics (told through [`Discovery::report`]) so that the
/// daemon and the admin endpoint need not know which platform they follow.
pub trait Discovery: Send + Sync {
    /// What the source is called: the key of its section in `status`, and
    /// the `trigger` of the reloads it causes (`"docker"`).
    fn kind(&self) -> &'static str;

    /// The names in `policy` this source is to place (the keys
    /// [`Directory::build`] looks up). Empty: the rules need nothing from
    /// this source; it is then neither asked nor followed.
    fn names(&self, policy: &Policy) -> Vec<String>;

    /// The current addresses of `names`. Never fails: a source that cannot
    /// be reached says so in [`Resolution::unreachable`]; a name it does
    /// not know, or whose container is not running, gets no addresses.
    fn resolve<'a>(&'a self, names: &'a [String]) -> BoxFuture<'a, Resolution>;

    /// Follows the platform until `changed` is closed, sending one message
    /// whenever addresses may have changed, and after every (re)connection
    /// (changes may have been missed meanwhile). Spawned by the daemon once
    /// the rules name a container of this source.
    fn follow(&self, changed: mpsc::Sender<()>) -> BoxFuture<'static, ()>;

    /// Whether the platform answers right now (for `status`).
    fn reachable(&self) -> bool;

    /// Told what one directory build found, so that the source can say it
    /// in its log and metrics.
    fn report(&self, outcome: &Outcome<'_>);
}

/// What a source answered for the names asked of it.
#[derive(Debug, Default)]
pub struct Resolution {
    /// Addresses per name (an empty list: not running, or unknown).
    pub addresses: HashMap<String, Vec<IpAddr>>,
    /// Set when the source could not be asked (then `addresses` is empty
    /// and the caller keeps the addresses it knew).
    pub unreachable: Option<Unreachable>,
}

/// The result of one [`directory`] build, as told to the source.
#[derive(Debug)]
pub struct Outcome<'a> {
    /// The names the source was asked for (empty: the rules name none of
    /// its containers).
    pub names: &'a [String],
    /// Why the source could not be asked, if it could not.
    pub unreachable: Option<&'a Unreachable>,
    /// The containers (their names in the rule file) left without an
    /// address: not running, unknown, or the source unreachable.
    pub unplaced: &'a [&'a str],
}

/// What [`open`] needs to choose and set up the source.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Docker Engine socket (`--docker-socket`).
    pub docker_socket: String,
}

/// The source the daemon follows. Docker, always: it connects only when
/// asked, so rules without `{"docker": …}` containers cost nothing, and a
/// reload that adds the first one finds it ready (an absent engine at
/// start is reported, never fatal).
pub fn open(config: &Config, metrics: Arc<Metrics>) -> Arc<dyn Discovery> {
    Arc::new(docker::DockerDiscovery::new(&config.docker_socket, metrics))
}

/// Builds the directory of `policy`: fixed addresses from the rule file,
/// discovered ones from `source`. Never fails: if the source cannot be
/// reached, its containers keep the addresses `known` gives them (on a
/// reload, those in force: see [`known_in`]; at start, none). The source
/// is told the outcome ([`Discovery::report`]).
pub async fn directory(
    source: &dyn Discovery,
    policy: &Policy,
    known: impl Fn(&str) -> Vec<IpAddr>,
) -> Directory {
    let names = source.names(policy);
    let r = source.resolve(&names).await;
    let dir = Directory::build(policy, |name| match &r.unreachable {
        Some(_) => known(name),
        None => r.addresses.get(name).cloned().unwrap_or_default(),
    });
    let unplaced = dir.unplaced(policy);
    source.report(&Outcome {
        names: &names,
        unreachable: r.unreachable.as_ref(),
        unplaced: &unplaced,
    });
    dir
}

/// The addresses `snap` holds for the discovered container `name` (what
/// stays in force while the source cannot be reached).
pub fn known_in(snap: &Snapshot, name: &str) -> Vec<IpAddr> {
    snap.policy
        .containers
        .iter()
        .position(|c| c.docker.as_deref() == Some(name))
        .map(|i| snap.dir.addresses(i as ContainerId).to_vec())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
