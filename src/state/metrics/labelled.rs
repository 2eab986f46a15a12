//! The labelled metric families, through the `prometheus-client` crate.
//!
//! Bounded memory: every label value comes from the rule file (an access
//! entry's file position or `name`, a frontend, route, pool or member name,
//! a limit's name) or from a fixed set (`entry_path`, `decision`,
//! `status_class`, `result`) — never from a client's address, path or
//! header. So the number of series is bounded by the rule files loaded.
//! The label values are `Arc<str>` made when the rules are compiled, so
//! counting a request clones a reference count and looks a key up under a
//! read lock: no allocation on the request path (a new series allocates
//! once, on first use).
//!
//! `prometheus-client` writes OpenMetrics; [`Labelled::render`] turns it
//! into the Prometheus text format 0.0.4 the admin endpoint serves (counter
//! families named with their `_total`, no `# EOF`), which `promtool check
//! metrics` accepts.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::text::encode_registry;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A label value made from the rule file when it is compiled.
pub type Label = Arc<str>;

/// `entry_path`: how a request reached the proxy.
pub const ACCESS: &str = "access";
pub const FRONTEND: &str = "frontend";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `access` or `frontend`.
    pub entry_path: &'static str,
    /// `allowed`, `audit_denied`, `denied` (access) or `routed` (frontend).
    pub decision: &'static str,
    /// The access entry (`name`, or its file position) or the frontend
    /// route (its file position; the frontend's for `default_pool`).
    pub rule: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub status: u16,
    /// The rule or limit that decided ([`crate::proxy`]'s `decided_by`).
    pub rule: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResponseLabels {
    pub entry_path: &'static str,
    /// Empty on access flows.
    pub frontend: Label,
    pub pool: Label,
    /// The pool member as written (`container:port`).
    pub member: Label,
    /// `1xx` … `5xx`.
    pub status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabels {
    pub entry_path: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub entry_path: &'static str,
    /// The pool; empty on access flows (the original destination).
    pub pool: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    /// The cached service as the rule file names it (`container:port`).
    pub service: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `failed`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    /// `ok` or `failed`.
    pub result: &'static str,
    /// `TLSv1.3`, `TLSv1.2`, or `unknown` (a failed handshake).
    pub version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    /// The frontend's name.
    pub frontend: Label,
    /// The certificate file, as resolved.
    pub certificate: Label,
}

/// The outcome of one TLS handshake, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    Tls13,
    Tls12,
    Failed,
}

/// `tls_handshakes` label sets, in [`Handshake`] order.
const HANDSHAKES: [HandshakeLabels; 3] = [
    HandshakeLabels {
        result: "ok",
        version: "TLSv1.3",
    },
    HandshakeLabels {
        result: "ok",
        version: "TLSv1.2",
    },
    HandshakeLabels {
        result: "failed",
        version: "unknown",
    },
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

fn latency() -> Histogram {
    // 1 ms … ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

type Hist<L> = Family<L, Histogram, fn() -> Histogram>;

/// The series whose labels are all from fixed sets, resolved once.
#[derive(Debug)]
struct Fixed {
    /// `request_duration_seconds` of `access`, `frontend`.
    request_time: [Histogram; 2],
    /// `upstream_duration_seconds{entry_path="access",pool=""}`.
    access_upstream_time: Histogram,
    /// `responses{entry_path="access"}` (no frontend, pool or member) by
    /// status class.
    access_responses: [Counter; 5],
    /// `active_connections` of `access`, `frontend`.
    active: [Gauge; 2],
    /// `tls_handshakes`, in [`Handshake`] order.
    handshakes: [Counter; 3],
}

/// The labelled families, registered once.
#[derive(Debug)]
pub struct Labelled {
    registry: Registry,
    fixed: Fixed,
    /// The series of the rule set requests are counted under.
    pub series: super::series::SeriesCache,
    /// The `rule` label of decisions no entry owns (`default`).
    pub default_rule: Label,
    /// An empty label value (access flows have no frontend, pool, member).
    pub none: Label,
    pub requests: Family<RequestLabels, Counter>,
    pub refusals: Family<RefusalLabels, Counter>,
    pub responses: Family<ResponseLabels, Counter>,
    pub request_duration: Hist<PathLabels>,
    pub upstream_duration: Hist<UpstreamLabels>,
    pub active_connections: Family<PathLabels, Gauge>,
    pub cache_requests: Family<CacheLabels, Counter>,
    pub cache_response_bytes: Family<ServiceLabels, Counter>,
    pub cache_bytes: Family<ServiceLabels, Gauge>,
    pub reloads: Family<ResultLabels, Counter>,
    pub last_reload: Gauge<f64, AtomicU64>,
    pub last_reload_success: Gauge,
    pub tls_handshakes: Family<HandshakeLabels, Counter>,
    pub tls_expiry: Family<CertificateLabels, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub service: Label,
    /// `hit` or `miss`.
    pub result: &'static str,
}

impl Default for Labelled {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("portcullis");
        let l = Labelled {
            requests: Family::default(),
            refusals: Family::default(),
            responses: Family::default(),
            request_duration: Family::new_with_constructor(latency),
            upstream_duration: Family::new_with_constructor(latency),
            active_connections: Family::default(),
            cache_requests: Family::default(),
            cache_response_bytes: Family::default(),
            cache_bytes: Family::default(),
            reloads: Family::default(),
            last_reload: Gauge::default(),
            last_reload_success: Gauge::default(),
            tls_handshakes: Family::default(),
            tls_expiry: Family::default(),
            registry: Registry::default(),
            fixed: Fixed {
                request_time: [latency(), latency()],
                access_upstream_time: latency(),
                access_responses: Default::default(),
                active: Default::default(),
                handshakes: Default::default(),
            },
            series: Default::default(),
            default_rule: "default".into(),
            none: "".into(),
        };
        // `prometheus-client` appends `_total` to counters.
        registry.register(
            "requests",
            "Requests decided, by entry path, decision and the access entry or frontend route that decided.",
            l.requests.clone(),
        );
        registry.register(
            "refusals",
            "Answers the proxy made itself (4xx/5xx), by status and the rule or limit that decided.",
            l.refusals.clone(),
        );
        registry.register(
            "responses",
            "Upstream responses relayed to the client, by entry path, frontend, pool, member and status class.",
            l.responses.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from the decision to the end of the response, by entry path.",
            l.request_duration.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Time of one upstream attempt (connect, send, response relayed), by entry path and pool.",
            l.upstream_duration.clone(),
        );
        registry.register(
            "active_connections",
            "Client connections open now, by entry path.",
            l.active_connections.clone(),
        );
        registry.register(
            "cache_requests",
            "Requests to cached services, by service and result (hit: answered from the cache).",
            l.cache_requests.clone(),
        );
        registry.register(
            "cache_response_bytes",
            "Response body bytes answered from the cache, by service.",
            l.cache_response_bytes.clone(),
        );
        registry.register(
            "cache_service_bytes",
            "Bytes held by the cache of each service (status, headers and bodies; their sum is cache_bytes).",
            l.cache_bytes.clone(),
        );
        registry.register(
            "reload_results",
            "Rule reloads by result (ok: applied; failed: refused, the previous rules stayed).",
            l.reloads.clone(),
        );
        registry.register(
            "last_reload_timestamp_seconds",
            "Unix time of the last reload attempt (0: none since start).",
            l.last_reload.clone(),
        );
        registry.register(
            "last_reload_success",
            "1 if the last reload attempt was applied (or none was made), 0 if it was refused.",
            l.last_reload_success.clone(),
        );
        registry.register(
            "tls_handshakes",
            "TLS handshakes at frontends, by result and protocol version.",
            l.tls_handshakes.clone(),
        );
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "Unix time a frontend's certificate expires (notAfter), by frontend and certificate file.",
            l.tls_expiry.clone(),
        );
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "Always 1; the version running.", build);
        l.last_reload_success.set(1);
        let path = |entry_path| PathLabels { entry_path };
        let fixed = Fixed {
            request_time: ENTRY_PATHS.map(|p| l.request_duration.get_or_create(&path(p)).clone()),
            access_upstream_time: l
                .upstream_duration
                .get_or_create(&UpstreamLabels {
                    entry_path: ACCESS,
                    pool: l.none.clone(),
                })
                .clone(),
            access_responses: STATUS_CLASSES.map(|status_class| {
                l.responses
                    .get_or_create(&ResponseLabels {
                        entry_path: ACCESS,
                        frontend: l.none.clone(),
                        pool: l.none.clone(),
                        member: l.none.clone(),
                        status_class,
                    })
                    .clone()
            }),
            active: ENTRY_PATHS.map(|p| l.active_connections.get_or_create(&path(p)).clone()),
            handshakes: HANDSHAKES.map(|h| l.tls_handshakes.get_or_create(&h).clone()),
        };
        Labelled {
            registry,
            fixed,
            ..l
        }
    }
}

/// The `status_class` label values, in [`status_index`] order.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The `entry_path` label values, in [`path_index`] order.
const ENTRY_PATHS: [&str; 2] = [ACCESS, FRONTEND];

/// The class of an HTTP status, as an index into [`STATUS_CLASSES`].
pub fn status_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

fn path_index(entry_path: &'static str) -> usize {
    usize::from(entry_path == FRONTEND)
}

/// The series of one cached service.
#[derive(Debug, Clone)]
pub struct CacheSeries {
    /// `cache_requests{result="hit"}`.
    pub hits: Counter,
    /// `cache_requests{result="miss"}`.
    pub misses: Counter,
    /// `cache_response_bytes`.
    pub response_bytes: Counter,
    /// `cache_service_bytes`.
    pub bytes: Gauge,
}

/// Keeps a connection counted in `active_connections` until dropped.
pub struct ActiveConnection(Gauge);

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Labelled {
    /// Counts a decided request.
    pub fn request(&self, entry_path: &'static str, decision: &'static str, rule: &Label) {
        self.requests
            .get_or_create(&RequestLabels {
                entry_path,
                decision,
                rule: rule.clone(),
            })
            .inc();
    }

    /// Counts a refusal under its status and the rule or limit that decided.
    pub fn refusal(&self, status: u16, rule: Label) {
        self.refusals
            .get_or_create(&RefusalLabels { status, rule })
            .inc();
    }

    /// Counts an open connection until the guard is dropped.
    pub fn connection(&self, entry_path: &'static str) -> ActiveConnection {
        let g = self.fixed.active[path_index(entry_path)].clone();
        g.inc();
        ActiveConnection(g)
    }

    /// Counts an upstream response relayed on an access flow (frontends
    /// count theirs in [`super::series::Series::response`]).
    pub fn access_response(&self, status: u16) {
        self.fixed.access_responses[status_index(status)].inc();
    }

    /// Records the time from the decision to the end of the response.
    pub fn request_time(&self, entry_path: &'static str, took: Duration) {
        self.fixed.request_time[path_index(entry_path)].observe(took.as_secs_f64());
    }

    /// Records the time of the upstream exchange of an access flow.
    pub fn access_upstream_time(&self, took: Duration) {
        self.fixed.access_upstream_time.observe(took.as_secs_f64());
    }

    /// The series of the cached service `service`, resolved once (its
    /// cache holds them: a lookup counts without a map lookup).
    pub fn cache_series(&self, service: &str) -> CacheSeries {
        let service: Label = service.into();
        let lookups = |result| {
            self.cache_requests
                .get_or_create(&CacheLabels {
                    service: service.clone(),
                    result,
                })
                .clone()
        };
        let labels = ServiceLabels {
            service: service.clone(),
        };
        CacheSeries {
            hits: lookups("hit"),
            misses: lookups("miss"),
            response_bytes: self.cache_response_bytes.get_or_create(&labels).clone(),
            bytes: self.cache_bytes.get_or_create(&labels).clone(),
        }
    }

    /// Counts one TLS handshake (no lookup: the series are resolved once).
    pub fn handshake(&self, h: Handshake) {
        let i = match h {
            Handshake::Tls13 => 0,
            Handshake::Tls12 => 1,
            Handshake::Failed => 2,
        };
        self.fixed.handshakes[i].inc();
    }

    /// Publishes the expiry of the certificates now served (the series of
    /// certificates no longer served go away).
    pub fn certificates(&self, certs: &crate::tls::Certificates) {
        self.tls_expiry.clear();
        for fe in certs.frontends() {
            for c in &fe.certificates {
                let labels = CertificateLabels {
                    frontend: fe.name.clone(),
                    certificate: c.cert.display().to_string().into(),
                };
                self.tls_expiry.get_or_create(&labels).set(c.not_after);
            }
        }
    }

    /// Records a reload attempt: its result and time.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_reload.set(now);
        self.last_reload_success.set(i64::from(ok));
    }

    /// Appends the families in Prometheus text format 0.0.4.
    pub fn render(&self, out: &mut String) {
        let mut open = String::new();
        if encode_registry(&mut open, &self.registry).is_err() {
            return;
        }
        openmetrics_to_text(&open, out);
    }
}

/// OpenMetrics names a counter family without `_total` in `# HELP` and
/// `# TYPE` and its samples with it; the 0.0.4 text format wants one name.
fn openmetrics_to_text(open: &str, out: &mut String) {
    let mut lines: Vec<&str> = open.lines().filter(|l| *l != "# EOF").collect();
    let mut counters = Vec::new();
    for l in &lines {
        if let Some(name) = l
            .strip_prefix("# TYPE ")
            .and_then(|r| r.strip_suffix(" counter"))
        {
            if !name.ends_with("_total") {
                counters.push(name.to_owned());
            }
        }
    }
    for l in lines.drain(..) {
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = l.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .iter()
                .any(|c| c == name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        match renamed {
            Some(r) => out.push_str(&r),
            None => out.push_str(l),
        }
        out.push('\n');
    }
}

impl Labelled {
    /// Value of a counter series, for tests and `status`.
    pub fn requests_of(&self, entry_path: &'static str, decision: &'static str, rule: &str) -> u64 {
        self.requests
            .get_or_create(&RequestLabels {
                entry_path,
                decision,
                rule: rule.into(),
            })
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_with_total_in_help_and_type() {
        let l = Labelled::default();
        l.request(
            ACCESS,
            "allowed",
            &Label::from("rules.json:9:5 (access[0])"),
        );
        l.reload(false);
        l.request_time(FRONTEND, Duration::from_millis(3));
        let mut s = String::new();
        l.render(&mut s);
        assert!(
            s.contains("# TYPE portcullis_requests_total counter\n"),
            "{s}"
        );
        assert!(s.contains("# HELP portcullis_requests_total "), "{s}");
        assert!(
            s.contains(
                "portcullis_requests_total{entry_path=\"access\",decision=\"allowed\",rule=\"rules.json:9:5 (access[0])\"} 1\n"
            ),
            "{s}"
        );
        assert!(
            s.contains("portcullis_reload_results_total{result=\"failed\"} 1\n"),
            "{s}"
        );
        assert!(s.contains("portcullis_last_reload_success 0\n"), "{s}");
        assert!(s.contains("portcullis_build_info{version=\""), "{s}");
        assert!(
            s.contains("# TYPE portcullis_request_duration_seconds histogram"),
            "{s}"
        );
        assert!(!s.contains("# EOF"), "{s}");
    }
}
