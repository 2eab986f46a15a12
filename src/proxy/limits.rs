//! The `limits` of the rule file, applied per source: effective values
//! (an access entry's own limits override the global ones), open
//! connections per source and a token bucket of requests per source.
//!
//! A *source* is the managed container a connection comes from, or its
//! address when it is not managed (always the client address on a
//! frontend); counts are kept per (source, access entry or frontend), so an
//! entry's own limit is not eaten up by traffic on another entry. Both tables sit behind short `std` mutexes: one lock per
//! connection, and per request only when a rate limit is configured.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::policy::{ContainerId, Entry, Policy};
use crate::rules::model::Limits as RuleLimits;

pub const DEFAULT_MAX_HEADER_BYTES: u64 = 16 * 1024;
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's `client_body_buffer_size` order of magnitude: most API bodies fit.
pub const DEFAULT_REQUEST_BUFFER_BYTES: usize = 64 * 1024;
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Buckets kept before idle (full) ones are pruned.
const PRUNE_AT: usize = 4096;

/// The limits in force for one connection's access entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Effective {
    pub max_header_bytes: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_body_bytes: Option<u64>,
    pub max_connections: Option<u64>,
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
        max_connections: pick(|l| l.max_connections_per_source),
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

/// Who a limit is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Container(ContainerId),
    Address(IpAddr),
}

/// Where a limit applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// An access entry, by its index in the policy.
    Access(u32),
    /// A frontend, by its listen address.
    Frontend(SocketAddr),
    /// A flow no entry owns (its requests are refused anyway).
    Unowned,
}

/// A source within one scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub source: Source,
    pub scope: Scope,
}

/// A source as logs name it: the container's name, else its address.
pub struct SourceName<'a>(pub &'a Policy, pub Source);

impl fmt::Display for SourceName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Source::Container(c) => f.write_str(self.0.container_name(c)),
            Source::Address(a) => write!(f, "{a}"),
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Open connections and request buckets per [`Key`].
#[derive(Debug, Default)]
pub struct SourceTable {
    connections: Mutex<HashMap<Key, u64>>,
    buckets: Mutex<HashMap<Key, Bucket>>,
}

/// Holds one connection's place in the per-source count until dropped.
#[derive(Debug)]
pub struct ConnectionPermit {
    table: Arc<SourceTable>,
    key: Key,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut map = self
            .table
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

impl SourceTable {
    /// Counts a new connection of `key`; `Err(open)` if `max` are open.
    pub fn open(self: &Arc<Self>, key: Key, max: Option<u64>) -> Result<ConnectionPermit, u64> {
        let mut map = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key).or_insert(0);
        if max.is_some_and(|m| *n >= m) {
            return Err(*n);
        }
        *n += 1;
        Ok(ConnectionPermit {
            table: self.clone(),
            key,
        })
    }

    /// Open connections of `key` (for tests and status).
    pub fn open_connections(&self, key: &Key) -> u64 {
        let map = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).copied().unwrap_or(0)
    }

    /// Takes one request token of `key` at `now`; `false`: over the rate.
    pub fn take_token(&self, key: Key, rate: Rate, now: Instant) -> bool {
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= PRUNE_AT {
            // A bucket that has refilled completely holds no state worth keeping.
            map.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate.per_second
                    < rate.burst
            });
        }
        let b = map.entry(key).or_insert(Bucket {
            tokens: rate.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate.per_second).min(rate.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u16) -> Key {
        Key {
            source: Source::Container(n),
            scope: Scope::Access(0),
        }
    }

    #[test]
    fn connections_are_counted_per_key_and_released() {
        let t = Arc::new(SourceTable::default());
        let a = t.open(key(1), Some(2)).unwrap();
        let _b = t.open(key(1), Some(2)).unwrap();
        assert_eq!(t.open(key(1), Some(2)).unwrap_err(), 2);
        assert!(
            t.open(key(2), Some(2)).is_ok(),
            "another source is not affected"
        );
        drop(a);
        assert_eq!(t.open_connections(&key(1)), 1);
        assert!(t.open(key(1), Some(2)).is_ok());
    }

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let t = SourceTable::default();
        let rate = Rate {
            per_second: 2.0,
            burst: 3.0,
        };
        let t0 = Instant::now();
        let taken = (0..5).filter(|_| t.take_token(key(1), rate, t0)).count();
        assert_eq!(taken, 3, "the burst");
        assert!(
            t.take_token(key(2), rate, t0),
            "another source has its own bucket"
        );
        // Half a second later one more token (2/s) has arrived.
        let t1 = t0 + Duration::from_millis(500);
        assert!(t.take_token(key(1), rate, t1));
        assert!(!t.take_token(key(1), rate, t1));
        // After a long pause the bucket is full again, never fuller.
        let t2 = t1 + Duration::from_secs(60);
        let taken = (0..10).filter(|_| t.take_token(key(1), rate, t2)).count();
        assert_eq!(taken, 3);
    }
}
