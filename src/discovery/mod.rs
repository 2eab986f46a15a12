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
//! The same source resolves the networks the rules guard by name
//! (`{"docker_network": NAME}` in `guard.networks`) to their subnets, which
//! the directory holds beside the container addresses.
//!
//! Fail closed, whatever the source: a name it cannot place gets no
//! address, so no rule opens anything for it; a source that cannot be
//! reached leaves the addresses known so far in force (none at start). For
//! a guarded network "closed" is the other way round, more subnets guarded
//! rather than fewer: one the source cannot be asked about (unreachable, or
//! an error for that network) keeps the subnets it had (none at start); one
//! the source says does not exist, or has no subnet, guards nothing, since
//! nothing can be on it. Either way a named network without subnets is
//! reported (log, metric, `status`), never silent.
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

use crate::policy::guard::Cidr;
use crate::policy::{ContainerId, Policy};
use crate::state::directory::Directory;
use crate::state::metrics::Metrics;
use crate::state::snapshot::Snapshot;

/// A future a `dyn Discovery` can return (native `async fn` in traits is not
/// object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a source could not be asked at all (its own error type, erased).
pub type Unreachable = Box<dyn std::error::Error + Send + Sync>;

/// A source of container addresses (and of the subnets of guarded
/// networks). Implementations keep their own log lines and metrics (told
/// through [`Discovery::report`]) so that the daemon and the admin endpoint
/// need not know which platform they follow.
pub trait Discovery: Send + Sync {
    /// What the source is called: the key of its section in `status`, and
    /// the `trigger` of the reloads it causes (`"docker"`).
    fn kind(&self) -> &'static str;

    /// The names in `policy` this source is to place (the keys
    /// [`Directory::build`] and [`Directory::with_networks`] look up).
    /// Empty: the rules need nothing from this source; it is then neither
    /// asked nor followed.
    fn names(&self, policy: &Policy) -> Names;

    /// The current addresses of `names.containers` and subnets of
    /// `names.networks`. Never fails: a source that cannot be reached says
    /// so in [`Resolution::unreachable`]; a container it does not know, or
    /// that is not running, gets no addresses; a network it does not know
    /// gets no subnets, one it could not ask about an error.
    fn resolve<'a>(&'a self, names: &'a Names) -> BoxFuture<'a, Resolution>;

    /// Follows the platform until `changed` is closed, sending one message
    /// whenever addresses or subnets may have changed, and after every
    /// (re)connection (changes may have been missed meanwhile). Spawned by
    /// the daemon once the rules name a container or network of this
    /// source.
    fn follow(&self, changed: mpsc::Sender<()>) -> BoxFuture<'static, ()>;

    /// Whether the platform answers right now (for `status`).
    fn reachable(&self) -> bool;

    /// Told what one directory build found, so that the source can say it
    /// in its log and metrics.
    fn report(&self, outcome: &Outcome<'_>);
}

/// What the rules ask of a source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// Containers by the platform's name (`{"docker": NAME}`).
    pub containers: Vec<String>,
    /// Guarded networks by the platform's name (`{"docker_network": NAME}`).
    pub networks: Vec<String>,
}

impl Names {
    /// What `policy` names the Docker way: `{"docker": NAME}` containers
    /// and `{"docker_network": NAME}` guarded networks, in file order.
    pub fn docker(policy: &Policy) -> Names {
        Names {
            containers: policy
                .containers
                .iter()
                .filter_map(|c| c.docker.clone())
                .collect(),
            networks: policy.guard_docker_networks(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.containers.is_empty() && self.networks.is_empty()
    }
}

/// What a source answered for the names asked of it.
#[derive(Debug, Default)]
pub struct Resolution {
    /// Addresses per container name (an empty list: not running, or
    /// unknown).
    pub addresses: HashMap<String, Vec<IpAddr>>,
    /// Subnets per network name: an empty list if the network does not
    /// exist or has none; an error if it could not be asked about (then
    /// the subnets known so far stay). A name missing here counts as an
    /// error.
    pub networks: HashMap<String, Result<Vec<Cidr>, String>>,
    /// Set when the source could not be asked (then `addresses` and
    /// `networks` are empty and the caller keeps what it knew).
    pub unreachable: Option<Unreachable>,
}

/// What stays in force for names the source cannot answer for: on a
/// reload, what the snapshot in force holds ([`Snapshot`] implements it);
/// at start, nothing ([`NothingKnown`]).
pub trait Known: Sync {
    /// The addresses of the discovered container `name`.
    fn addresses(&self, name: &str) -> Vec<IpAddr>;
    /// The subnets of the guarded network `name`.
    fn subnets(&self, name: &str) -> Vec<Cidr>;
}

/// Nothing known yet: the daemon's start.
pub struct NothingKnown;

impl Known for NothingKnown {
    fn addresses(&self, _: &str) -> Vec<IpAddr> {
        Vec::new()
    }
    fn subnets(&self, _: &str) -> Vec<Cidr> {
        Vec::new()
    }
}

impl Known for Snapshot {
    fn addresses(&self, name: &str) -> Vec<IpAddr> {
        self.policy
            .containers
            .iter()
            .position(|c| c.docker.as_deref() == Some(name))
            .map(|i| self.dir.addresses(i as ContainerId).to_vec())
            .unwrap_or_default()
    }
    fn subnets(&self, name: &str) -> Vec<Cidr> {
        self.dir.subnets(name).to_vec()
    }
}

/// The result of one [`directory`] build, as told to the source.
#[derive(Debug)]
pub struct Outcome<'a> {
    /// The names the source was asked for (empty: the rules name none of
    /// its containers or networks).
    pub names: &'a Names,
    /// Why the source could not be asked, if it could not.
    pub unreachable: Option<&'a Unreachable>,
    /// The containers (their names in the rule file) left without an
    /// address: not running, unknown, or the source unreachable.
    pub unplaced: &'a [&'a str],
    /// The guarded networks left without a subnet: unknown, without
    /// subnets, or never resolved (the source unreachable since start).
    pub unresolved_networks: &'a [&'a str],
    /// The networks that could not be asked about, with why (they keep
    /// the subnets known so far).
    pub network_errors: &'a [(&'a str, &'a str)],
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
/// discovered ones and the subnets of guarded networks from `source`.
/// Never fails: if the source cannot be reached, its containers and
/// networks keep what `known` gives them (on a reload, what is in force;
/// at start, nothing); a network it could not be asked about keeps its
/// known subnets. The source is told the outcome ([`Discovery::report`]).
pub async fn directory(source: &dyn Discovery, policy: &Policy, known: &dyn Known) -> Directory {
    let names = source.names(policy);
    let r = source.resolve(&names).await;
    let mut errors: Vec<(&str, &str)> = Vec::new();
    let dir = Directory::build(policy, |name| match &r.unreachable {
        Some(_) => known.addresses(name),
        None => r.addresses.get(name).cloned().unwrap_or_default(),
    })
    .with_networks(policy, |name| {
        match (&r.unreachable, r.networks.get(name)) {
            (None, Some(Ok(nets))) => nets.clone(),
            // Unreachable, or no usable answer for this one: keep what was known.
            _ => known.subnets(name),
        }
    });
    if r.unreachable.is_none() {
        for name in &names.networks {
            match r.networks.get(name) {
                Some(Ok(_)) => {}
                Some(Err(e)) => errors.push((name, e)),
                None => errors.push((name, "not answered")),
            }
        }
    }
    let unplaced = dir.unplaced(policy);
    let unresolved = policy.unresolved_guard_networks(&dir.networks);
    source.report(&Outcome {
        names: &names,
        unreachable: r.unreachable.as_ref(),
        unplaced: &unplaced,
        unresolved_networks: &unresolved,
        network_errors: &errors,
    });
    dir
}

#[cfg(test)]
mod tests;
