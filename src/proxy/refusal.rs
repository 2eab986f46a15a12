//! Every answer the proxy makes itself, in one place: why ([`Refusal`]),
//! whose fault it is ([`Side`]), whether another attempt may succeed, and
//! the status, metric, log line and one-line body it turns into.
//!
//! A refusal site only says what happened (`Refusal::BodyTooLarge`) and
//! where (`At`); [`Refusal::record`] counts and logs it — one JSON log line
//! per refusal, with the source, destination, method, path and the rule or
//! limit that decided — and the downstream writes it
//! ([`super::downstream::Downstream::refuse`], or [`respond`] before a
//! request exists). So a status, a metric and a log line cannot drift
//! apart between HTTP/1 and HTTP/2, access flows and frontends.

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;

use tracing::warn;

use super::respond;
use crate::state::metrics::Metrics;
use crate::wire::head::HeadError;

/// Writes a refusal on an HTTP/1 connection before a request exists
/// (timeouts, malformed heads, decisions), as `respond` builds it.
pub async fn write_refusal<W: tokio::io::AsyncWrite + Unpin>(
    client: &mut W,
    r: &Refusal,
    close: bool,
) -> std::io::Result<()> {
    tokio::io::AsyncWriteExt::write_all(client, &respond::simple(r.status(), &r.reason(), close))
        .await
}

/// Whose fault a refused or failed exchange is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something the proxy refuses (4xx).
    Downstream,
    /// The upstream (or the pool) failed (5xx).
    Upstream,
    /// The proxy itself cannot go on.
    Internal,
}

/// Why the proxy answers a request itself.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// A malformed or ambiguous request head, path or field (400).
    Malformed(String),
    /// A head error from the strict parser: 400, 431 or 501.
    Head(HeadError),
    /// A feature the proxy does not offer on this path (501).
    Unsupported(&'static str),
    /// The head did not arrive within `header_timeout_ms` (408).
    HeadTimeout,
    /// The body did not arrive within `body_timeout_ms`, or paused past
    /// `idle_timeout_ms` (408).
    BodyTimeout,
    /// The body is over `max_body_bytes` (413); the declared length if any.
    BodyTooLarge {
        length: Option<u64>,
        limit: Option<u64>,
    },
    /// The body is malformed or cut short (400).
    BodyMalformed(String),
    /// Over `requests_per_second`/`burst` (429).
    RateLimited,
    /// Over `max_connections_per_source` (429).
    TooManyConnections { open: u64, limit: u64 },
    /// The access rules refuse it (403): the rule (file position) and why.
    Denied { rule: String, reason: String },
    /// No frontend route matches (404).
    NoRoute(String),
    /// The pool has no usable member (503).
    NoMember { pool: String },
    /// The upstream failed: 502, or 504 for a timeout.
    Upstream {
        status: u16,
        reason: String,
        /// Another attempt (another member) may succeed: nothing was sent.
        retryable: bool,
    },
    /// Something the proxy cannot do for a reason of its own (500).
    Internal(&'static str),
}

/// Where a refused request was going, for its log line.
#[derive(Default, Clone, Copy)]
pub struct At<'a> {
    /// The managed container or client address it came from.
    pub source: Option<&'a (dyn fmt::Display + Sync)>,
    pub peer: Option<SocketAddr>,
    /// The original destination, or the frontend.
    pub destination: Option<&'a (dyn fmt::Display + Sync)>,
    pub method: Option<&'a str>,
    pub path: Option<&'a str>,
    /// Where in the rule file the limit that decided is set (`None`: its
    /// default, or a refusal no limit decided).
    pub limit_at: Option<&'a crate::rules::RuleRef>,
}

/// Shows an optional field as `-` when absent.
struct Opt<'a, T: ?Sized>(Option<&'a T>);

impl<T: fmt::Display + ?Sized> fmt::Display for Opt<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("-"),
        }
    }
}

impl Refusal {
    /// The status the client gets.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Malformed(_) | Refusal::BodyMalformed(_) => 400,
            Refusal::Head(e) => respond::request_head_status(e),
            Refusal::Unsupported(_) => 501,
            Refusal::HeadTimeout | Refusal::BodyTimeout => 408,
            Refusal::BodyTooLarge { .. } => 413,
            Refusal::RateLimited | Refusal::TooManyConnections { .. } => 429,
            Refusal::Denied { .. } => 403,
            Refusal::NoRoute(_) => 404,
            Refusal::NoMember { .. } => 503,
            Refusal::Upstream { status, .. } => *status,
            Refusal::Internal(_) => 500,
        }
    }

    pub fn side(&self) -> Side {
        match self {
            Refusal::NoMember { .. } | Refusal::Upstream { .. } => Side::Upstream,
            Refusal::Internal(_) => Side::Internal,
            _ => Side::Downstream,
        }
    }

    /// May the same request succeed on another attempt (another member)?
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            Refusal::Upstream {
                retryable: true,
                ..
            }
        )
    }

    /// The `limits` field that decided, by its rule-file name.
    pub fn limit_field(&self) -> Option<&'static str> {
        Some(match self {
            Refusal::HeadTimeout => "header_timeout_ms",
            Refusal::BodyTimeout => "body_timeout_ms",
            Refusal::BodyTooLarge { .. } => "max_body_bytes",
            Refusal::Head(HeadError::TooLarge | HeadError::TooManyHeaders) => "max_header_bytes",
            Refusal::RateLimited => "requests_per_second",
            Refusal::TooManyConnections { .. } => "max_connections_per_source",
            _ => return None,
        })
    }

    /// The rule or limit that decided, as the rule file names it.
    pub fn decided_by(&self) -> Cow<'_, str> {
        if let Some(field) = self.limit_field() {
            return format!("limits.{field}").into();
        }
        match self {
            Refusal::Denied { rule, .. } => Cow::Borrowed(rule),
            Refusal::NoRoute(_) => "frontend routes".into(),
            Refusal::NoMember { pool } => Cow::Owned(format!("pools.{pool}")),
            _ => "HTTP".into(),
        }
    }

    /// The one line of the response body (after `portcullis: `).
    pub fn reason(&self) -> Cow<'_, str> {
        match self {
            Refusal::Malformed(r) | Refusal::BodyMalformed(r) => format!("bad request: {r}").into(),
            Refusal::Head(e) => format!("bad request: {e}").into(),
            Refusal::Unsupported(r) | Refusal::Internal(r) => Cow::Borrowed(r),
            Refusal::HeadTimeout => "request header timeout".into(),
            Refusal::BodyTimeout => "request body timeout".into(),
            Refusal::BodyTooLarge {
                length: Some(n),
                limit: Some(max),
            } => format!("request body of {n} bytes is over the limit of {max}").into(),
            Refusal::BodyTooLarge { .. } => "request body too large".into(),
            Refusal::RateLimited => "rate limit of this source exceeded".into(),
            Refusal::TooManyConnections { .. } => "too many connections from this source".into(),
            Refusal::Denied { rule, reason } if rule == "default" => Cow::Borrowed(reason),
            Refusal::Denied { rule, reason } => format!("denied by {rule}: {reason}").into(),
            Refusal::NoRoute(r) => Cow::Borrowed(r),
            Refusal::NoMember { pool } => format!("no healthy member in pool {pool}").into(),
            Refusal::Upstream { reason, .. } => Cow::Borrowed(reason),
        }
    }

    /// The log line's message.
    fn message(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) | Refusal::Head(_) | Refusal::Unsupported(_) => {
                "malformed request refused"
            }
            Refusal::BodyMalformed(_) => "malformed request body refused",
            Refusal::HeadTimeout => "request head not received within header_timeout_ms",
            Refusal::BodyTimeout => {
                "request body not received within body_timeout_ms (or paused past idle_timeout_ms)"
            }
            Refusal::BodyTooLarge { .. } => "request body over max_body_bytes",
            Refusal::RateLimited => "request refused: requests_per_second of the source exceeded",
            Refusal::TooManyConnections { .. } => {
                "connection refused: max_connections_per_source reached"
            }
            Refusal::Denied { .. } => "request denied",
            Refusal::NoRoute(_) => "no route",
            Refusal::NoMember { .. } => "no healthy member in the pool",
            Refusal::Upstream { .. } => "upstream failed",
            Refusal::Internal(_) => "internal error",
        }
    }

    /// Counts the refusal and logs its one line.
    pub fn record(&self, metrics: &Metrics, at: &At<'_>) {
        let counter = match self {
            Refusal::Malformed(_)
            | Refusal::BodyMalformed(_)
            | Refusal::Unsupported(_)
            | Refusal::Internal(_) => &metrics.requests_bad_total,
            Refusal::Head(HeadError::TooLarge | HeadError::TooManyHeaders) => {
                &metrics.requests_header_too_large_total
            }
            Refusal::Head(_) => &metrics.requests_bad_total,
            Refusal::HeadTimeout | Refusal::BodyTimeout => &metrics.requests_timeout_total,
            Refusal::BodyTooLarge { .. } => &metrics.requests_body_too_large_total,
            Refusal::RateLimited => &metrics.requests_rate_limited_total,
            Refusal::TooManyConnections { .. } => &metrics.connections_limited_total,
            Refusal::Denied { .. } => &metrics.requests_denied_total,
            Refusal::NoRoute(_) => &metrics.frontend_no_route_total,
            Refusal::NoMember { .. } => &metrics.frontend_unavailable_total,
            Refusal::Upstream { .. } => &metrics.upstream_errors_total,
        };
        Metrics::inc(counter);
        let rule: crate::state::metrics::labelled::Label = self.decided_by().as_ref().into();
        if let Refusal::Denied { .. } = self {
            let access = crate::state::metrics::labelled::ACCESS;
            metrics.labelled.request(access, "denied", &rule);
        }
        metrics.labelled.refusal(self.status(), rule);
        let peer = at.peer.map(|p| p.to_string());
        warn!(
            status = self.status(),
            side = ?self.side(),
            source = %Opt(at.source),
            peer = %Opt(peer.as_deref()),
            destination = %Opt(at.destination),
            method = %Opt(at.method),
            path = %Opt(at.path),
            decided_by = %self.decided_by(),
            limit_at = %Opt(at.limit_at),
            reason = %self.reason(),
            "{}",
            self.message()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_knows_its_status_side_and_limit() {
        let cases = [
            (
                Refusal::Head(HeadError::TooLarge),
                431,
                Side::Downstream,
                "limits.max_header_bytes",
            ),
            (
                Refusal::BodyTimeout,
                408,
                Side::Downstream,
                "limits.body_timeout_ms",
            ),
            (
                Refusal::RateLimited,
                429,
                Side::Downstream,
                "limits.requests_per_second",
            ),
            (
                Refusal::NoMember { pool: "api".into() },
                503,
                Side::Upstream,
                "pools.api",
            ),
            (
                Refusal::Denied {
                    rule: "rules.json:9:5 (access[0])".into(),
                    reason: "no matcher allows GET /x".into(),
                },
                403,
                Side::Downstream,
                "rules.json:9:5 (access[0])",
            ),
        ];
        for (r, status, side, by) in cases {
            assert_eq!(
                (r.status(), r.side(), r.decided_by().as_ref()),
                (status, side, by),
                "{r:?}"
            );
            assert!(!r.retryable());
        }
        let up = Refusal::Upstream {
            status: 502,
            reason: "connect: refused".into(),
            retryable: true,
        };
        assert!(up.retryable() && up.side() == Side::Upstream);
    }

    #[test]
    fn counted_where_operators_look() {
        let m = Metrics::default();
        Refusal::Head(HeadError::TooManyHeaders).record(&m, &At::default());
        Refusal::Malformed("x".into()).record(&m, &At::default());
        Refusal::NoRoute("no route".into()).record(&m, &At::default());
        let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(get(&m.requests_header_too_large_total), 1);
        assert_eq!(get(&m.requests_bad_total), 1);
        assert_eq!(get(&m.frontend_no_route_total), 1);
    }
}
