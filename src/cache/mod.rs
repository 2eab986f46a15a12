//! The response cache of the services listed under `cache` in the rule
//! file (scenario 5): responses are answered from memory whichever way the
//! request came in, because the cache sits in the forward phase that every
//! entry path shares ([`crate::proxy::pipeline`]).
//!
//! - [`freshness`]: RFC 9111 as pure functions (storable? fresh? age?);
//! - [`key`]: the request as the cache sees it, and its key;
//! - [`store`]: one service's stores; `max_bytes` bounds everything they
//!   hold (keys, variants, index, bodies being filled), a URL keeps at most
//!   16 variants; request coalescing;
//!
//! The phase that uses them (hit, fetch and tee at the upstream's pace,
//! revalidation, invalidation by accepted unsafe requests) is part of the
//! request pipeline: [`crate::proxy::cached`].
//!
//! Which destination is cached is decided per request from the published
//! [`Snapshot`]: `"container:port"` is matched against the original
//! destination through the container's current addresses. The per-service
//! stores survive reloads as long as their settings do not change.
//! Purging is an operator action, offered only by the admin endpoint.

pub mod freshness;
pub mod key;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::state::metrics::Metrics;
use crate::state::snapshot::Snapshot;

use store::{ServiceCache, Settings};

/// The stores of one published snapshot, by destination.
#[derive(Default)]
struct Compiled {
    /// Which snapshot this was built from (its version and policy).
    version: u64,
    policy: usize,
    by_dst: HashMap<SocketAddr, Arc<ServiceCache>>,
    services: BTreeMap<String, Arc<ServiceCache>>,
}

/// Every cached service of the running policy.
pub struct CacheLayer {
    compiled: ArcSwap<Compiled>,
    rebuild: Mutex<()>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = self.compiled.load();
        f.debug_struct("CacheLayer")
            .field("services", &c.services.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Why a purge was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PurgeError {
    #[error("service {0:?} is not listed under \"cache\" in the rule file")]
    UnknownService(String),
}

impl CacheLayer {
    pub fn new(metrics: Arc<Metrics>) -> CacheLayer {
        CacheLayer {
            compiled: ArcSwap::from_pointee(Compiled {
                policy: 0,
                ..Compiled::default()
            }),
            rebuild: Mutex::new(()),
            metrics,
        }
    }

    fn current(&self, snap: &Snapshot) -> Arc<Compiled> {
        let policy = Arc::as_ptr(&snap.policy) as usize;
        let c = self.compiled.load_full();
        if c.version == snap.version && c.policy == policy {
            return c;
        }
        let _one = self.rebuild.lock().unwrap_or_else(|p| p.into_inner());
        let c = self.compiled.load_full();
        if c.version == snap.version && c.policy == policy {
            return c;
        }
        let mut next = Compiled {
            version: snap.version,
            policy,
            ..Compiled::default()
        };
        let p = &snap.policy;
        for (target, spec) in &p.source.rules.cache {
            let Some((name, port)) = target
                .rsplit_once(':')
                .and_then(|(n, port)| Some((n, port.parse::<u16>().ok()?)))
            else {
                continue;
            };
            let settings = Settings {
                max_bytes: spec.max_bytes,
                default_ttl: spec.default_ttl_s.map(Duration::from_secs),
            };
            let svc = match c.services.get(target) {
                Some(old) if old.settings == settings => old.clone(),
                _ => Arc::new(ServiceCache::new(target, settings, self.metrics.clone())),
            };
            if let Some(id) = p.container_id(name) {
                for ip in snap.dir.addresses(id) {
                    next.by_dst.insert(SocketAddr::new(*ip, port), svc.clone());
                }
            }
            next.services.insert(target.clone(), svc);
        }
        let next = Arc::new(next);
        self.compiled.store(next.clone());
        next
    }

    /// The cache of the service at `dst`, if it is listed under `cache`.
    /// Called for every forwarded request: when the snapshot is unchanged
    /// it costs one atomic load and, if any service is cached, one lookup.
    pub fn service_for(&self, snap: &Snapshot, dst: SocketAddr) -> Option<Arc<ServiceCache>> {
        let find = |c: &Compiled| {
            if c.by_dst.is_empty() {
                return None;
            }
            c.by_dst
                .get(&SocketAddr::new(dst.ip().to_canonical(), dst.port()))
                .cloned()
        };
        let c = self.compiled.load();
        if c.version == snap.version && c.policy == Arc::as_ptr(&snap.policy) as usize {
            return find(&c);
        }
        find(&self.current(snap))
    }

    /// After an unsafe request was forwarded to `dst` outside the cache
    /// phase (HTTP/2 streams are forwarded over HTTP/2) and accepted
    /// (2xx/3xx, or an unknown status): drops the stored responses of its
    /// URL as the cache phase does, so no way in gets past invalidation.
    /// `authority` and `target` as the upstream got them, `source` the
    /// proxy-set `X-Portcullis-Source` (empty without one).
    pub fn invalidate_forwarded(
        &self,
        snap: &Snapshot,
        dst: SocketAddr,
        method: &str,
        authority: &str,
        target: &str,
        source: &str,
    ) -> u64 {
        if key::MethodClass::of(method) != key::MethodClass::Unsafe {
            return 0;
        }
        let Some(svc) = self.service_for(snap, dst) else {
            return 0;
        };
        let primary = key::Primary {
            authority: String::from_utf8_lossy(crate::wire::head::trim(authority.as_bytes()))
                .to_ascii_lowercase(),
            target: target.to_owned(),
            source: source.to_owned(),
        };
        let n = svc.invalidate(&primary);
        if n > 0 {
            Metrics::inc(&self.metrics.cache_invalidations_total);
        }
        n
    }

    /// Purges stored responses: of one service or (`None`) all; of one
    /// target (`/path?query`) and/or authority, or everything. Returns the
    /// number of entries removed.
    pub async fn purge(
        &self,
        snap: &Snapshot,
        service: Option<&str>,
        target: Option<&str>,
        authority: Option<&str>,
    ) -> Result<u64, PurgeError> {
        let c = self.current(snap);
        let services: Vec<Arc<ServiceCache>> = match service {
            Some(s) => vec![c
                .services
                .get(s)
                .cloned()
                .ok_or_else(|| PurgeError::UnknownService(s.to_owned()))?],
            None => c.services.values().cloned().collect(),
        };
        let mut n = 0;
        for svc in services {
            n += svc.purge(target, authority);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
