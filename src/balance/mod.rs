//! Pools behind the frontends: member selection, health and passive
//! ejection.
//!
//! A [`Balancer`] is compiled from a [`Policy`] once per rule file and
//! published inside the data-plane [`Snapshot`](crate::state::snapshot::Snapshot),
//! so routes, pools and container addresses always come from the same
//! rules. Everything that changes while traffic flows (round-robin
//! cursor, in-flight counts, health, ejection) is an atomic in the
//! member: picking a member takes no lock and allocates nothing.
//!
//! - `round_robin` walks a precomputed smooth weighted sequence
//!   ([`wrr`]), so weights 5:1:1 interleave as `a a b a c a a`, not in bursts;
//! - `least_connections` takes the member with the fewest requests in
//!   flight relative to its weight, ties broken round-robin;
//! - `hash` is weighted rendezvous hashing ([`hash`]): a member leaving
//!   (down, ejected, or removed) moves only the keys it owned.
//!
//! A member is used only while it is healthy by the active checks
//! ([`health`]), not ejected by passive failure counting, and has an
//! address (a stopped Docker container has none).
//!
//! Passive ejection must not be something a client can trigger: only
//! gateway failures count ([`Outcome`], as Envoy's
//! `consecutive_gateway_failure`), so a request the member merely refuses
//! (`BREW /` → 501) says the member is alive. A failure that came after the
//! request reached the member can still be provoked by a client (a path
//! whose handler times out, a member that is itself a gateway answering
//! 502), so such failures never eject a member when that would leave fewer
//! than half of the pool's members usable ([`Pool::report`]); only a member
//! that cannot even be connected to is ejected regardless.

pub mod hash;
pub mod health;
pub mod wrr;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::warn;

use crate::policy::routes::RouteTable;
use crate::policy::{ContainerId, Policy};
use crate::rules::model::{Balance, Health, UpstreamProtocol};
use crate::rules::RuleRef;

/// Where the containers of the rules are now: what a member's container
/// name resolves to. Implemented by the data plane's directory
/// ([`crate::state::directory::Directory`]); the balancer only reads it,
/// so it depends on no part of the daemon that publishes addresses.
pub trait Addresses {
    /// The current addresses of container `id` (empty: not placed).
    fn addresses(&self, id: ContainerId) -> &[IpAddr];
}

/// Defaults of the `pools` fields (documented in `docs/wiki/routing.md`).
pub const DEFAULT_RETRIES: u32 = 1;
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_HEALTH_PATH: &str = "/";
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_UNHEALTHY_AFTER: u32 = 2;
pub const DEFAULT_HEALTHY_AFTER: u32 = 2;
/// Consecutive gateway failures ([`Outcome::ConnectFailure`],
/// [`Outcome::GatewayFailure`]) after which a member is ejected passively.
pub const PASSIVE_EJECT_AFTER: u32 = 3;
/// Failures after the request reached a member eject it only while at
/// least this share (in percent, rounded up) of the pool's members with an
/// address stays usable: the floor that keeps a client able to provoke
/// such failures from taking the pool down. Connect failures are exempt
/// (a member that cannot be connected to serves nobody either way).
pub const PASSIVE_EJECT_FLOOR_PERCENT: usize = 50;
/// How long a passive ejection lasts before the member is tried again.
pub const PASSIVE_EJECT_FOR: Duration = Duration::from_secs(5);

/// Milliseconds on a process-wide monotonic clock (never 0).
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// The pools and frontend route tables of one rule file.
#[derive(Debug, Default)]
pub struct Balancer {
    pub frontends: Vec<RouteTable>,
    pub pools: Vec<Pool>,
}

/// How a pool chooses.
#[derive(Debug)]
pub enum Algo {
    RoundRobin { seq: Vec<u32>, cursor: AtomicUsize },
    LeastConnections { cursor: AtomicUsize },
    Hash(HashKey),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    /// Lower-case header name. A request without the header (or with it
    /// more than once) is hashed on its client address instead.
    Header(String),
}

/// Active health-check settings, defaults applied.
#[derive(Debug, Clone)]
pub struct HealthSpec {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_after: u32,
    pub healthy_after: u32,
}

#[derive(Debug)]
pub struct Pool {
    pub name: String,
    /// `name`, as the metrics' `pool` label.
    pub label: Arc<str>,
    pub rule: RuleRef,
    pub members: Vec<Member>,
    pub algo: Algo,
    pub health: Option<HealthSpec>,
    pub retries: u32,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// What the members speak.
    pub protocol: UpstreamProtocol,
    /// Serialises passive-ejection decisions, so two members failing at
    /// once cannot both pass the floor check (taken only when a member
    /// reaches [`PASSIVE_EJECT_AFTER`], never on the plain request path).
    ejecting: Mutex<()>,
}

/// How an exchange with a member went, as passive health counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The member answered with anything but 502/503/504: it is alive,
    /// whatever it thought of the request (a 500 or 501 included).
    Success,
    /// Nothing reached the member: connecting was refused, unreachable or
    /// timed out.
    ConnectFailure,
    /// After the request reached the member: reset, closed or timed out
    /// without a response, an invalid response, or 502/503/504.
    GatewayFailure,
    /// Says nothing about the member (the proxy answered the client itself,
    /// e.g. a malformed or oversized request body; a cached service).
    Neutral,
}

impl Outcome {
    /// The outcome of a response the member sent with status `code`.
    pub fn of_status(code: u16) -> Outcome {
        if matches!(code, 502..=504) {
            Outcome::GatewayFailure
        } else {
            Outcome::Success
        }
    }
}

#[derive(Debug)]
pub struct Member {
    /// `"container:port"` as written.
    pub target: String,
    /// `target`, as the metrics' `member` label.
    pub label: Arc<str>,
    pub container: ContainerId,
    pub port: u16,
    pub weight: u32,
    /// Rendezvous seed, from the target name (stable across reloads).
    seed: u64,
    /// Verdict of the active checks (true until they say otherwise).
    healthy: AtomicBool,
    /// Consecutive gateway failures seen by the proxy.
    failures: AtomicU32,
    /// Passively ejected until this [`now_ms`] (0: not ejected).
    ejected_until: AtomicU64,
    /// Requests in flight through this member.
    inflight: AtomicUsize,
}

/// What selection looks at in a request.
#[derive(Debug, Clone, Copy)]
pub struct PickInput<'a> {
    pub client: IpAddr,
    pub headers: &'a [httparse::Header<'a>],
}

/// A chosen member; counts as in flight until dropped.
#[derive(Debug)]
pub struct Pick<'a> {
    pub index: usize,
    pub member: &'a Member,
    pub addr: SocketAddr,
}

impl Drop for Pick<'_> {
    fn drop(&mut self) {
        self.member.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A member's state as `portcullis status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberStatus {
    Healthy,
    Unhealthy,
    Ejected,
    NoAddress,
}

impl MemberStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Healthy => "healthy",
            MemberStatus::Unhealthy => "unhealthy",
            MemberStatus::Ejected => "ejected",
            MemberStatus::NoAddress => "no address",
        }
    }
}

// === impl Balancer ===

impl Balancer {
    /// Compiles the frontends and pools of a compiled policy.
    pub fn compile(policy: &Policy) -> Balancer {
        let set = &policy.source;
        let names: Vec<&String> = set.rules.pools.keys().collect();
        let mut pools = Vec::with_capacity(names.len());
        for (name, p) in &set.rules.pools {
            let path = format!("pools.{name}");
            let members = p
                .members
                .iter()
                .filter_map(|m| {
                    let (c, port) = m.target.rsplit_once(':')?;
                    Some(Member::new(
                        &m.target,
                        policy.container_id(c)?,
                        port.parse().ok()?,
                        u32::try_from(m.weight).unwrap_or(1).max(1),
                    ))
                })
                .collect::<Vec<_>>();
            let algo = match p.balance {
                Balance::RoundRobin => Algo::RoundRobin {
                    seq: wrr::smooth_sequence(
                        &members.iter().map(|m| m.weight).collect::<Vec<_>>(),
                    ),
                    cursor: AtomicUsize::new(0),
                },
                Balance::LeastConnections => Algo::LeastConnections {
                    cursor: AtomicUsize::new(0),
                },
                Balance::Hash => Algo::Hash(match p.hash_key.as_deref() {
                    Some(k) => match k.strip_prefix("header:") {
                        Some(h) => HashKey::Header(h.to_ascii_lowercase()),
                        None => HashKey::ClientIp,
                    },
                    None => HashKey::ClientIp,
                }),
            };
            pools.push(Pool {
                label: name.as_str().into(),
                name: name.clone(),
                rule: set.rule_ref(&path),
                members,
                algo,
                health: p.health.as_ref().map(HealthSpec::from_rules),
                retries: p.retries.unwrap_or(DEFAULT_RETRIES),
                connect_timeout: p
                    .connect_timeout_ms
                    .map_or(DEFAULT_CONNECT_TIMEOUT, Duration::from_millis),
                timeout: p.timeout_ms.map_or(DEFAULT_TIMEOUT, Duration::from_millis),
                protocol: p.protocol,
                ejecting: Mutex::new(()),
            });
        }
        let pool_id = |n: &str| names.iter().position(|x| *x == n).unwrap_or(0);
        let frontends = (0..set.rules.frontends.len())
            .map(|i| RouteTable::compile(set, i, &pool_id))
            .collect();
        Balancer { frontends, pools }
    }

    /// Carries the health verdicts and ejections of `old` over to the
    /// members of this (newly compiled) balancer that are the same pool
    /// and target, so a reload does not send traffic to a member already
    /// known to be down.
    pub fn carry_state_from(&self, old: &Balancer) {
        for pool in &self.pools {
            let Some(prev) = old.pools.iter().find(|p| p.name == pool.name) else {
                continue;
            };
            for m in &pool.members {
                if let Some(o) = prev.members.iter().find(|o| o.target == m.target) {
                    m.healthy
                        .store(o.healthy.load(Ordering::Relaxed), Ordering::Relaxed);
                    m.ejected_until
                        .store(o.ejected_until.load(Ordering::Relaxed), Ordering::Relaxed);
                }
            }
        }
    }

    /// The frontend listening on `addr`.
    pub fn frontend_at(&self, addr: SocketAddr) -> Option<&RouteTable> {
        self.frontend_index_at(addr).map(|(_, f)| f)
    }

    /// The frontend listening on `addr`, with its index in `frontends`.
    pub fn frontend_index_at(&self, addr: SocketAddr) -> Option<(usize, &RouteTable)> {
        self.frontends
            .iter()
            .enumerate()
            .find(|(_, f)| f.listen == addr)
    }

    pub fn frontend(&self, name: &str) -> Option<&RouteTable> {
        self.frontends.iter().find(|f| f.name == name)
    }

    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.frontends.iter().map(|f| f.listen).collect()
    }

    pub fn pool(&self, i: usize) -> Option<&Pool> {
        self.pools.get(i)
    }
}

impl HealthSpec {
    fn from_rules(h: &Health) -> HealthSpec {
        HealthSpec {
            path: h.path.clone().unwrap_or_else(|| DEFAULT_HEALTH_PATH.into()),
            interval: h
                .interval_ms
                .map_or(DEFAULT_HEALTH_INTERVAL, Duration::from_millis),
            timeout: h
                .timeout_ms
                .map_or(DEFAULT_HEALTH_TIMEOUT, Duration::from_millis),
            unhealthy_after: h.unhealthy_after.unwrap_or(DEFAULT_UNHEALTHY_AFTER),
            healthy_after: h.healthy_after.unwrap_or(DEFAULT_HEALTHY_AFTER),
        }
    }
}

// === impl Pool ===

impl Pool {
    /// What a request contributes to the choice: its hash key for a
    /// `hash` pool (0 otherwise). Taken once, while the head is at hand,
    /// so retries choose consistently.
    pub fn request_key(&self, input: &PickInput<'_>) -> u64 {
        match &self.algo {
            Algo::Hash(key) => hash::key_hash(key, input),
            _ => 0,
        }
    }

    /// Chooses a usable member not in `exclude` (members already tried
    /// for this request); `key` from [`Pool::request_key`]. `None`: no
    /// healthy member (→ 503).
    pub fn pick<'a>(
        &'a self,
        dir: &dyn Addresses,
        key: u64,
        exclude: &[usize],
    ) -> Option<Pick<'a>> {
        let now = now_ms();
        let usable = |i: usize| -> Option<SocketAddr> {
            if exclude.contains(&i) {
                return None;
            }
            self.members.get(i)?.usable(dir, now)
        };
        let n = self.members.len();
        let chosen = match &self.algo {
            Algo::RoundRobin { seq, cursor } => {
                let start = cursor.fetch_add(1, Ordering::Relaxed);
                (0..seq.len()).find_map(|k| {
                    let i = *seq.get((start.wrapping_add(k)) % seq.len())? as usize;
                    usable(i).map(|a| (i, a))
                })
            }
            Algo::LeastConnections { cursor } => {
                let start = cursor.fetch_add(1, Ordering::Relaxed);
                let mut best: Option<(usize, SocketAddr, usize, u32)> = None;
                for k in 0..n {
                    let i = (start.wrapping_add(k)) % n;
                    let Some(addr) = usable(i) else { continue };
                    let m = &self.members[i];
                    let load = m.inflight.load(Ordering::Relaxed);
                    // load/weight < best_load/best_weight, without division.
                    let better = best.is_none_or(|(_, _, bl, bw)| {
                        (load as u128) * u128::from(bw) < (bl as u128) * u128::from(m.weight)
                    });
                    if better {
                        best = Some((i, addr, load, m.weight));
                    }
                }
                best.map(|(i, a, _, _)| (i, a))
            }
            Algo::Hash(_) => {
                let mut best: Option<(usize, SocketAddr, f64)> = None;
                for i in 0..n {
                    let Some(addr) = usable(i) else { continue };
                    let m = &self.members[i];
                    let score = hash::score(key, m.seed, m.weight);
                    if best.is_none_or(|(_, _, s)| score > s) {
                        best = Some((i, addr, score));
                    }
                }
                best.map(|(i, a, _)| (i, a))
            }
        };
        let (index, addr) = chosen?;
        let member = self.members.get(index)?;
        member.inflight.fetch_add(1, Ordering::Relaxed);
        Some(Pick {
            index,
            member,
            addr,
        })
    }

    /// Records how an exchange with member `i` went (passive health).
    ///
    /// [`PASSIVE_EJECT_AFTER`] consecutive failures eject the member for
    /// [`PASSIVE_EJECT_FOR`]; any [`Outcome::Success`] starts the count
    /// again. When the last of them is a [`Outcome::GatewayFailure`], the
    /// ejection happens only if at least [`PASSIVE_EJECT_FLOOR_PERCENT`] of
    /// the members with an address stay usable afterwards (otherwise the
    /// member stays in rotation and the count starts again).
    pub fn report(&self, dir: &dyn Addresses, i: usize, outcome: Outcome) {
        let Some(m) = self.members.get(i) else { return };
        match outcome {
            Outcome::Neutral => return,
            Outcome::Success => {
                m.failures.store(0, Ordering::Relaxed);
                return;
            }
            Outcome::ConnectFailure | Outcome::GatewayFailure => {}
        }
        let n = m.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n < PASSIVE_EJECT_AFTER {
            return;
        }
        let _one_at_a_time = self.ejecting.lock().unwrap_or_else(|p| p.into_inner());
        m.failures.store(0, Ordering::Relaxed);
        let now = now_ms();
        if m.ejected_until.load(Ordering::Relaxed) > now {
            return;
        }
        if outcome == Outcome::GatewayFailure {
            let (usable_after, total) = self.usable_without(dir, i, now);
            if usable_after * 100 < total * PASSIVE_EJECT_FLOOR_PERCENT {
                warn!(pool = %self.name, member = %m.target, failures = n, usable = usable_after + 1, members = total, floor_percent = PASSIVE_EJECT_FLOOR_PERCENT, "pool member not ejected: it would leave too few members usable");
                return;
            }
        }
        let until = now + PASSIVE_EJECT_FOR.as_millis() as u64;
        m.ejected_until.store(until, Ordering::Relaxed);
        let reason = match outcome {
            Outcome::ConnectFailure => "connect failures",
            _ => "gateway failures",
        };
        warn!(pool = %self.name, member = %m.target, failures = n, reason, ejected_for_ms = PASSIVE_EJECT_FOR.as_millis() as u64, "pool member ejected after consecutive failures");
    }

    /// Members other than `i` usable now, and members with an address.
    fn usable_without(&self, dir: &dyn Addresses, i: usize, now: u64) -> (usize, usize) {
        let mut usable = 0;
        let mut total = 0;
        for (j, m) in self.members.iter().enumerate() {
            if m.address(dir).is_none() {
                continue;
            }
            total += 1;
            if j != i && m.usable(dir, now).is_some() {
                usable += 1;
            }
        }
        (usable, total)
    }
}

// === impl Member ===

impl Member {
    pub fn new(target: &str, container: ContainerId, port: u16, weight: u32) -> Member {
        Member {
            target: target.to_owned(),
            label: target.into(),
            container,
            port,
            weight,
            seed: hash::member_seed(target),
            healthy: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            inflight: AtomicUsize::new(0),
        }
    }

    /// The member's first address if it may take traffic now.
    fn usable(&self, dir: &dyn Addresses, now: u64) -> Option<SocketAddr> {
        if !self.healthy.load(Ordering::Relaxed) || self.ejected_until.load(Ordering::Relaxed) > now
        {
            return None;
        }
        self.address(dir)
    }

    pub fn address(&self, dir: &dyn Addresses) -> Option<SocketAddr> {
        dir.addresses(self.container)
            .first()
            .map(|ip| SocketAddr::new(*ip, self.port))
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Publishes the verdict of the active checks.
    pub fn set_healthy(&self, up: bool) {
        self.healthy.store(up, Ordering::Relaxed);
        if up {
            // A recovered member starts with a clean slate.
            self.ejected_until.store(0, Ordering::Relaxed);
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    pub fn status(&self, dir: &dyn Addresses) -> MemberStatus {
        if self.address(dir).is_none() {
            MemberStatus::NoAddress
        } else if !self.is_healthy() {
            MemberStatus::Unhealthy
        } else if self.ejected_until.load(Ordering::Relaxed) > now_ms() {
            MemberStatus::Ejected
        } else {
            MemberStatus::Healthy
        }
    }
}

#[cfg(test)]
mod tests;
