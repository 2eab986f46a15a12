//! Effective limits: an access entry's (or a frontend's) own `limits` over
//! the global ones over the defaults, field by field. Pure data from the
//! rule file, shared by the proxy (which enforces them), `explain` and
//! `portcullis diff` (which report them).

use std::time::Duration;

use super::{Entry, Policy};
use crate::rules::model::Limits as RuleLimits;

pub const DEFAULT_MAX_HEADER_BYTES: u64 = 16 * 1024;
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// `max_connections_per_source` when the rules say nothing: enough for any
/// one well-behaved client or container, few enough that one source
/// cannot hold the daemon's file descriptors and memory.
pub const DEFAULT_MAX_CONNECTIONS_PER_SOURCE: u64 = 1024;
/// nginx's `client_body_buffer_size` order of magnitude: most API bodies fit.
pub const DEFAULT_REQUEST_BUFFER_BYTES: usize = 64 * 1024;
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// The limits in force for one connection's access entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Effective {
    pub max_header_bytes: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_body_bytes: Option<u64>,
    /// `max_connections_per_source`, else [`DEFAULT_MAX_CONNECTIONS_PER_SOURCE`].
    pub max_connections: u64,
    pub rate: Option<Rate>,
    /// Request body bytes checked before an upstream is chosen.
    pub request_buffer_bytes: usize,
    /// Total time for a request body (→ 408).
    pub body_timeout: Duration,
    /// Longest wait for a client to take a write (→ connection closed).
    pub send_timeout: Duration,
}

/// `requests_per_second` with its `burst` (default: one second's worth).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

/// Entry limits over global limits over the defaults.
pub fn effective(policy: &Policy, entry: Option<&Entry>) -> Effective {
    effective_over(&policy.limits, entry.map(|e| &e.limits))
}

/// `own` limits (an access entry's, a frontend's) over `global` ones over
/// the defaults, field by field.
pub fn effective_over(global: &RuleLimits, own: Option<&RuleLimits>) -> Effective {
    let g = global;
    let e = own;
    let pick = |f: fn(&RuleLimits) -> Option<u64>| e.and_then(f).or_else(|| f(g));
    let rate = pick(|l| l.requests_per_second).map(|rps| Rate {
        per_second: rps as f64,
        burst: pick(|l| l.burst).unwrap_or(rps).max(1) as f64,
    });
    Effective {
        max_header_bytes: usize::try_from(
            pick(|l| l.max_header_bytes).unwrap_or(DEFAULT_MAX_HEADER_BYTES),
        )
        .unwrap_or(usize::MAX),
        header_timeout: pick(|l| l.header_timeout_ms)
            .map_or(DEFAULT_HEADER_TIMEOUT, Duration::from_millis),
        idle_timeout: pick(|l| l.idle_timeout_ms)
            .map_or(DEFAULT_IDLE_TIMEOUT, Duration::from_millis),
        max_body_bytes: pick(|l| l.max_body_bytes),
        max_connections: pick(|l| l.max_connections_per_source)
            .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_SOURCE),
        rate,
        request_buffer_bytes: pick(|l| l.request_buffer_bytes)
            .map_or(DEFAULT_REQUEST_BUFFER_BYTES, |b| {
                usize::try_from(b).unwrap_or(usize::MAX)
            }),
        body_timeout: pick(|l| l.body_timeout_ms)
            .map_or(DEFAULT_BODY_TIMEOUT, Duration::from_millis),
        send_timeout: pick(|l| l.send_timeout_ms)
            .map_or(DEFAULT_SEND_TIMEOUT, Duration::from_millis),
    }
}
