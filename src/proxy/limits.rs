//! The `limits` of the rule file, applied per source: open connections per
//! source and a token bucket of requests per source (the effective values
//! themselves are computed by [`crate::policy::limits`]).
//!
//! A *source* is the managed container a connection comes from, or its
//! address when it is not managed (always the client address on a
//! frontend); counts are kept per (source, access entry or frontend), so an
//! entry's own limit is not eaten up by traffic on another entry.
//!
//! Frontends face the internet, and with IPv6 a million client addresses
//! are cheap, so the request buckets are bounded and cost O(1) per request
//! however many sources there are: [`MAX_BUCKETS`] in all, split over
//! [`SHARDS`] short `std` mutexes (never held across an await), each shard
//! keeping two generations of buckets. A key is looked up in the current
//! generation, then in the previous one (and moved up); when the current
//! one is full it becomes the previous one and the old previous one is
//! dropped whole. A source idle for a whole generation therefore loses its
//! bucket and starts again with a full one: that only forgets how much it
//! spent, which every new address gets anyway, while a source that keeps
//! sending stays in the current generation and stays limited. No request
//! sweeps the table. Open connections are counted in one map whose entries
//! live exactly as long as the connections they count.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::policy::{ContainerId, Policy};

pub use crate::policy::limits::{
    effective, effective_over, Effective, Rate, DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS_PER_SOURCE, DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_REQUEST_BUFFER_BYTES, DEFAULT_SEND_TIMEOUT,
};

/// Request buckets kept at most, all sources and scopes together.
pub const MAX_BUCKETS: usize = 65_536;
/// Independent locks the buckets are spread over.
pub const SHARDS: usize = 16;
/// Buckets per generation of one shard (two generations per shard).
const GENERATION: usize = MAX_BUCKETS / SHARDS / 2;

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

impl<'a> SourceName<'a> {
    /// The client at `ip` as log lines name it: its managed container, or
    /// the address.
    pub fn of(
        policy: &'a Policy,
        dir: &crate::state::directory::Directory,
        ip: std::net::IpAddr,
    ) -> Self {
        let source = dir
            .container_at(ip)
            .map_or(Source::Address(ip.to_canonical()), Source::Container);
        SourceName(policy, source)
    }
}

impl fmt::Display for SourceName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Source::Container(c) => f.write_str(self.0.container_name(c)),
            Source::Address(a) => write!(f, "{a}"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// One shard of the buckets: the current and the previous generation.
#[derive(Debug, Default)]
struct Generations {
    current: HashMap<Key, Bucket>,
    previous: HashMap<Key, Bucket>,
}

impl Generations {
    /// The bucket of `key`, carried over from the previous generation or
    /// new and full; makes room by retiring a full current generation.
    fn bucket(&mut self, key: Key, full: Bucket) -> &mut Bucket {
        if !self.current.contains_key(&key) {
            let carried = self.previous.remove(&key);
            if self.current.len() >= GENERATION {
                // Keys and buckets own no heap memory: dropping the old
                // previous generation is one deallocation, not a sweep.
                let fresh = HashMap::with_capacity(GENERATION);
                self.previous = std::mem::replace(&mut self.current, fresh);
            }
            self.current.insert(key, carried.unwrap_or(full));
        }
        self.current.entry(key).or_insert(full)
    }

    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

/// Open connections and request buckets per [`Key`].
#[derive(Debug)]
pub struct SourceTable {
    connections: Mutex<HashMap<Key, u64>>,
    buckets: Box<[Mutex<Generations>]>,
    /// Chooses a key's shard (keyed per process: no one can aim at one).
    shard_of: RandomState,
}

impl Default for SourceTable {
    fn default() -> Self {
        SourceTable {
            connections: Mutex::default(),
            buckets: (0..SHARDS).map(|_| Mutex::default()).collect(),
            shard_of: RandomState::new(),
        }
    }
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
    pub fn open(self: &Arc<Self>, key: Key, max: u64) -> Result<ConnectionPermit, u64> {
        let mut map = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key).or_insert(0);
        if *n >= max {
            let open = *n;
            if open == 0 {
                map.remove(&key);
            }
            return Err(open);
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
    /// O(1): one shard lock, at most two hash probes and an insert.
    pub fn take_token(&self, key: Key, rate: Rate, now: Instant) -> bool {
        let shard = (self.shard_of.hash_one(key) as usize) % self.buckets.len();
        let Some(shard) = self.buckets.get(shard) else {
            return true;
        };
        let mut gens = shard.lock().unwrap_or_else(|p| p.into_inner());
        let b = gens.bucket(
            key,
            Bucket {
                tokens: rate.burst,
                last: now,
            },
        );
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

    /// Request buckets held (at most [`MAX_BUCKETS`]; for tests and status).
    pub fn bucket_count(&self) -> usize {
        self.buckets
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::model::Limits as RuleLimits;
    use std::time::Duration;

    fn key(n: u16) -> Key {
        Key {
            source: Source::Container(n),
            scope: Scope::Access(0),
        }
    }

    #[test]
    fn connections_are_counted_per_key_and_released() {
        let t = Arc::new(SourceTable::default());
        let a = t.open(key(1), 2).unwrap();
        let _b = t.open(key(1), 2).unwrap();
        assert_eq!(t.open(key(1), 2).unwrap_err(), 2);
        assert!(t.open(key(2), 2).is_ok(), "another source is not affected");
        drop(a);
        assert_eq!(t.open_connections(&key(1)), 1);
        assert!(t.open(key(1), 2).is_ok());
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

    #[test]
    fn unset_max_connections_has_a_default() {
        let none = RuleLimits::default();
        let e = effective_over(&none, None);
        assert_eq!(e.max_connections, DEFAULT_MAX_CONNECTIONS_PER_SOURCE);
        let own = RuleLimits {
            max_connections_per_source: Some(5000),
            ..RuleLimits::default()
        };
        assert_eq!(effective_over(&none, Some(&own)).max_connections, 5000);
    }

    fn v6(i: u32) -> Key {
        let ip = std::net::Ipv6Addr::from((0x2001_0db8_u128 << 96) | u128::from(i));
        Key {
            source: Source::Address(IpAddr::V6(ip)),
            scope: Scope::Frontend(SocketAddr::from(([198, 19, 0, 1], 443))),
        }
    }

    #[test]
    fn a_million_addresses_stay_bounded_and_a_hot_one_stays_limited() {
        let t = SourceTable::default();
        let rate = Rate {
            per_second: 1.0,
            burst: 3.0,
        };
        let t0 = Instant::now();
        let hot = key(7);
        let mut hot_taken = 0;
        for i in 0..1_000_000u32 {
            // Every new address gets its burst…
            assert!(t.take_token(v6(i), rate, t0), "address {i}");
            // …while one source that keeps sending stays limited: its
            // three tokens, then nothing (the clock stands still).
            if i % 100 == 0 {
                hot_taken += usize::from(t.take_token(hot, rate, t0));
            }
            if i % 50_000 == 0 {
                assert!(t.bucket_count() <= MAX_BUCKETS, "{}", t.bucket_count());
            }
        }
        assert_eq!(hot_taken, 3, "the hot key got only its burst");
        assert!(t.bucket_count() <= MAX_BUCKETS, "{}", t.bucket_count());
        assert!(t.bucket_count() >= MAX_BUCKETS / 4, "recent keys are kept");
        // A recently seen address keeps its bucket (it spent one token).
        let recent = v6(999_999);
        let left = (0..5).filter(|_| t.take_token(recent, rate, t0)).count();
        assert_eq!(left, 2);
    }
}
