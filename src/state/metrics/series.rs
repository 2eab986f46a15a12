//! The labelled series a request counts in, resolved once per rule set.
//!
//! Looking a series up in a `prometheus-client` [`Family`] hashes its label
//! values (SipHash over every string) under a read lock. Doing that four
//! times per request cost the frontend about 2,400 instructions per request
//! (callgrind, `benches/e2e/instructions.sh`), about 8 % of all its
//! user-space work. Every label of these series comes from the rule file, so
//! they are resolved once, when a request first sees a new rule set, into
//! vectors indexed by what the request path already holds (the access entry,
//! the frontend, the route, the pool, the member): a request then indexes a
//! vector and bumps an atomic.
//!
//! [`SeriesCache`] keeps the series of the newest rule set it was asked for,
//! with the `Policy` and `Balancer` they were made from (held, so their
//! identity cannot be reused); a request whose snapshot holds others builds
//! the series for it (idempotent: both builds resolve the same series).
//!
//! [`Family`]: prometheus_client::metrics::family::Family

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use super::labelled::{
    status_index, Labelled, RequestLabels, ResponseLabels, UpstreamLabels, ACCESS, FRONTEND,
    STATUS_CLASSES,
};
use crate::balance::Balancer;
use crate::policy::routes::RouteMatch;
use crate::policy::Policy;
use crate::state::snapshot::Snapshot;

/// How an access request was let through (a denial is a refusal, counted
/// with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passed {
    Allowed = 0,
    AuditDenied = 1,
}

const PASSED: [&str; 2] = ["allowed", "audit_denied"];

/// One counter per status class.
type ByClass = [Counter; 5];

#[derive(Debug)]
struct FrontendSeries {
    /// `requests{decision="routed"}` per route, then the default pool's.
    routes: Vec<Counter>,
    default: Counter,
    /// `responses` by pool (`None`: no route of this frontend names it),
    /// member and status class.
    responses: Vec<Option<Vec<ByClass>>>,
}

/// The series of one rule set.
#[derive(Debug)]
pub struct Series {
    policy: Arc<Policy>,
    lb: Arc<Balancer>,
    /// `requests{entry_path="access"}` per access entry, by [`Passed`].
    entries: Vec<[Counter; 2]>,
    /// The same for flows no entry owns (rule `default`).
    unowned: [Counter; 2],
    frontends: Vec<FrontendSeries>,
    /// `upstream_duration_seconds{entry_path="frontend"}` per pool.
    upstream: Vec<Histogram>,
}

impl Series {
    /// Resolves every series `policy` and `lb` can name.
    pub fn build(policy: &Arc<Policy>, lb: &Arc<Balancer>, l: &Labelled) -> Series {
        let passed = |rule: &super::labelled::Label| {
            PASSED.map(|decision| {
                l.requests
                    .get_or_create(&RequestLabels {
                        entry_path: ACCESS,
                        decision,
                        rule: rule.clone(),
                    })
                    .clone()
            })
        };
        let routed = |rule: &super::labelled::Label| {
            l.requests
                .get_or_create(&RequestLabels {
                    entry_path: FRONTEND,
                    decision: "routed",
                    rule: rule.clone(),
                })
                .clone()
        };
        let frontends = lb
            .frontends
            .iter()
            .map(|fe| {
                let mut named = vec![false; lb.pools.len()];
                for p in fe
                    .routes
                    .iter()
                    .map(|r| r.pool)
                    .chain(fe.default_pool.as_ref().map(|d| d.0))
                {
                    if let Some(n) = named.get_mut(p) {
                        *n = true;
                    }
                }
                let responses = lb
                    .pools
                    .iter()
                    .zip(named)
                    .map(|(pool, named)| {
                        named.then(|| {
                            pool.members
                                .iter()
                                .map(|m| {
                                    STATUS_CLASSES.map(|status_class| {
                                        l.responses
                                            .get_or_create(&ResponseLabels {
                                                entry_path: FRONTEND,
                                                frontend: fe.label.clone(),
                                                pool: pool.label.clone(),
                                                member: m.label.clone(),
                                                status_class,
                                            })
                                            .clone()
                                    })
                                })
                                .collect()
                        })
                    })
                    .collect();
                FrontendSeries {
                    routes: fe.routes.iter().map(|r| routed(&r.label)).collect(),
                    default: routed(&fe.default_label),
                    responses,
                }
            })
            .collect();
        Series {
            entries: policy.entries.iter().map(|e| passed(&e.label)).collect(),
            unowned: passed(&l.default_rule),
            frontends,
            upstream: lb
                .pools
                .iter()
                .map(|p| {
                    l.upstream_duration
                        .get_or_create(&UpstreamLabels {
                            entry_path: FRONTEND,
                            pool: p.label.clone(),
                        })
                        .clone()
                })
                .collect(),
            policy: policy.clone(),
            lb: lb.clone(),
        }
    }

    fn of(&self, snap: &Snapshot) -> bool {
        Arc::ptr_eq(&self.policy, &snap.policy) && Arc::ptr_eq(&self.lb, &snap.lb)
    }

    /// Counts an access request let through, under its entry (`None`: no
    /// entry owns the flow).
    pub fn access(&self, entry: Option<usize>, passed: Passed) {
        let counters = match entry {
            None => Some(&self.unowned),
            Some(i) => self.entries.get(i),
        };
        debug_assert!(counters.is_some(), "access entry {entry:?} out of range");
        if let Some(c) = counters {
            c[passed as usize].inc();
        }
    }

    /// Counts a request frontend `fe` routed by `m`.
    pub fn routed(&self, fe: usize, m: &RouteMatch) {
        let counter = self.frontends.get(fe).and_then(|f| match m {
            RouteMatch::Route { index, .. } => f.routes.get(*index),
            RouteMatch::Default { .. } => Some(&f.default),
        });
        debug_assert!(counter.is_some(), "frontend {fe} / {m:?} out of range");
        if let Some(c) = counter {
            c.inc();
        }
    }

    /// Counts a response of `member` of `pool`, relayed by frontend `fe`.
    pub fn response(&self, fe: usize, pool: usize, member: usize, status: u16) {
        let counter = self
            .frontends
            .get(fe)
            .and_then(|f| f.responses.get(pool)?.as_ref()?.get(member));
        debug_assert!(
            counter.is_some(),
            "frontend {fe} pool {pool} member {member} out of range"
        );
        if let Some(c) = counter {
            c[status_index(status)].inc();
        }
    }

    /// Records the time of one attempt on a member of `pool`.
    pub fn upstream_time(&self, pool: usize, took: Duration) {
        if let Some(h) = self.upstream.get(pool) {
            h.observe(took.as_secs_f64());
        }
    }
}

/// The series of the newest rule set requests were counted under.
#[derive(Debug, Default)]
pub struct SeriesCache(ArcSwapOption<Series>);

impl SeriesCache {
    /// The series of `snap`'s rules (built on the first request that sees
    /// them).
    pub fn of(&self, snap: &Snapshot, l: &Labelled) -> Arc<Series> {
        if let Some(s) = self.0.load_full().filter(|s| s.of(snap)) {
            return s;
        }
        let s = Arc::new(Series::build(&snap.policy, &snap.lb, l));
        self.0.store(Some(s.clone()));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::directory::Directory;

    fn snapshot(json: &str) -> Snapshot {
        let set = crate::rules::parse("rules.json", json).expect("valid rules");
        let policy = Arc::new(Policy::compile(set).expect("compiles"));
        Snapshot {
            lb: Arc::new(Balancer::compile(&policy)),
            tls: Default::default(),
            dir: Directory::build(&policy, |_| Vec::new()),
            version: 1,
            policy,
        }
    }

    const RULES: &str = r#"{
      "version": 1,
      "containers": { "a": { "address": "198.19.7.2" }, "b": { "address": "198.19.7.3" } },
      "access": [ { "name": "a-to-b", "from": ["a"], "to": "b", "ports": [80],
                    "http": [ { "methods": ["GET"] } ] } ],
      "frontends": [ { "name": "web", "listen": "127.0.0.1:18080",
                       "routes": [ { "path_prefix": "/api", "pool": "api" } ],
                       "default_pool": "site" } ],
      "pools": { "api": { "members": ["b:80"] }, "site": { "members": ["a:80", "b:80"] } },
      "proxy": { "listen_port": 15001, "admin": "127.0.0.1:19090" }
    }"#;

    fn rendered(l: &Labelled) -> String {
        let mut s = String::new();
        l.render(&mut s);
        s
    }

    #[test]
    fn requests_count_in_the_series_their_labels_name() {
        let l = Labelled::default();
        let snap = snapshot(RULES);
        let cache = SeriesCache::default();
        let s = cache.of(&snap, &l);
        s.access(Some(0), Passed::Allowed);
        s.access(None, Passed::AuditDenied);
        s.routed(0, &RouteMatch::Default { pool: 1 });
        s.response(0, 1, 1, 503);
        let out = rendered(&l);
        for line in [
            "portcullis_requests_total{entry_path=\"access\",decision=\"allowed\",rule=\"a-to-b\"} 1\n",
            "portcullis_requests_total{entry_path=\"access\",decision=\"audit_denied\",rule=\"default\"} 1\n",
            "portcullis_responses_total{entry_path=\"frontend\",frontend=\"web\",pool=\"site\",member=\"b:80\",status_class=\"5xx\"} 1\n",
        ] {
            assert!(out.contains(line), "missing {line:?} in\n{out}");
        }
        let default_rule = snap.lb.frontends[0].default_label.to_string();
        assert!(
            out.contains(&format!(
                "portcullis_requests_total{{entry_path=\"frontend\",decision=\"routed\",rule=\"{default_rule}\"}} 1\n"
            )),
            "{out}"
        );
        // The same rule set: the same series; a new one: rebuilt.
        assert!(Arc::ptr_eq(&s, &cache.of(&snap, &l)));
        let reloaded = snapshot(RULES);
        let again = cache.of(&reloaded, &l);
        assert!(!Arc::ptr_eq(&s, &again));
        again.access(Some(0), Passed::Allowed);
        assert!(
            rendered(&l).contains(
                "portcullis_requests_total{entry_path=\"access\",decision=\"allowed\",rule=\"a-to-b\"} 2\n"
            ),
            "a reload with the same labels counts on in the same series"
        );
    }

    #[test]
    fn pools_no_route_of_a_frontend_names_get_no_series_for_it() {
        let json = RULES.replace("\"default_pool\": \"site\"", "\"default_pool\": \"api\"");
        let l = Labelled::default();
        let s = cache_of(&json, &l);
        s.response(0, 0, 0, 200);
        let out = rendered(&l);
        assert!(
            !out.contains(
                "portcullis_responses_total{entry_path=\"frontend\",frontend=\"web\",pool=\"site\""
            ),
            "{out}"
        );
        assert!(
            out.contains("pool=\"api\",member=\"b:80\",status_class=\"2xx\"} 1\n"),
            "{out}"
        );
    }

    fn cache_of(json: &str, l: &Labelled) -> Arc<Series> {
        SeriesCache::default().of(&snapshot(json), l)
    }
}
