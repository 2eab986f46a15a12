//! One cached service: a `moka` store of responses, the index of `Vary`
//! variants per URL, and the table of fetches in flight that concurrent
//! misses wait on (request coalescing).
//!
//! `max_bytes` bounds everything the service holds, not only bodies (class 5
//! of issue 9: keys and variant values were once free, so long random paths
//! grew the daemon by gigabytes while the cache "weighed" a few MB). It is
//! split into three budgets ([`Settings`]): the responses (weighed with
//! their keys, header fields, validators and a per-entry overhead for the
//! store's own bookkeeping), the index (weighed with its URL keys and the
//! variant values it lists) and the bodies of fetches still filling. A URL
//! has at most [`MAX_VARIANTS`] stored variants.
//!
//! `moka` evicts by size with a TinyLFU admission policy, so a full cache
//! keeps what is asked for often rather than what came last. Freshness is
//! not moka's business: stale entries stay until evicted, because a stale
//! entry with a validator is still worth a conditional request. The stores
//! are `moka::sync` caches: no operation waits on I/O, and the fetch that
//! fills an entry can store it the moment the upstream's body ends, without
//! waiting for its own client (see `serve`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use moka::notification::RemovalCause;
use tokio::sync::watch;

use super::freshness::{
    self, AgeFacts, CacheControl, NotStorable, RequestFacts, ResponseFacts, StoredFacts, Vary,
};
use super::key::{CacheRequest, Field, Key, Primary};
use crate::state::metrics::Metrics;
use crate::wire::head;

/// Bytes counted per stored response on top of what it holds: the store's
/// bookkeeping for one entry (hash-table slot, access-order node, entry
/// info, `Arc`s) and the allocator's rounding of its allocations.
pub const ENTRY_OVERHEAD: u64 = 512;
/// Bytes counted per URL in the index on top of what its record holds.
const INDEX_OVERHEAD: u64 = 256;
/// Bytes counted per header field on top of its name and value (the
/// `(String, Vec<u8>)` pair and two allocations).
const FIELD_OVERHEAD: u64 = 64;
/// Bytes counted per string held (its `String` and its allocation).
const STRING_OVERHEAD: u64 = 40;
/// Most variants (distinct values of the fields a `Vary` names) stored for
/// one URL. Beyond it a new variant is relayed without being stored.
pub const MAX_VARIANTS: usize = 16;

/// A stored response.
#[derive(Debug, Clone)]
pub struct Stored {
    pub status: u16,
    pub reason: String,
    /// End-to-end fields as received, without framing, `Age` and hop-by-hop
    /// fields.
    pub headers: Vec<Field>,
    pub body: Bytes,
    pub facts: StoredFacts,
    pub vary: Vec<String>,
    pub etag: Option<Vec<u8>>,
    pub last_modified: Option<Vec<u8>>,
    /// What the entry weighs in the store, in bytes.
    pub weight: u32,
}

/// The fields of a response head worth storing.
pub fn storable_fields(fields: &[httparse::Header<'_>]) -> Vec<Field> {
    fields
        .iter()
        .filter(|h| {
            !head::is_hop_by_hop(h.name)
                && !head::named_by_connection(fields, h.name)
                && !h.name.eq_ignore_ascii_case("content-length")
                && !h.name.eq_ignore_ascii_case("age")
                && !h.name.eq_ignore_ascii_case("x-cache")
        })
        .map(|h| (h.name.to_owned(), h.value.to_vec()))
        .collect()
}

fn values<'a>(fields: &'a [Field], name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    fields
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// The caching facts of a response from its fields.
pub fn response_facts(status: u16, fields: &[Field], age: Option<u64>) -> ResponseFacts {
    let first = |name| values(fields, name).next();
    ResponseFacts {
        status,
        cc: CacheControl::parse(values(fields, "cache-control")),
        expires: first("expires").map(freshness::http_date),
        date: first("date").and_then(freshness::http_date),
        age,
        set_cookie: first("set-cookie").is_some(),
        vary: Vary::parse(values(fields, "vary")),
        etag: first("etag").is_some(),
        last_modified: first("last-modified").is_some(),
    }
}

/// The `Age` field of a response head, if valid.
pub fn age_field(fields: &[httparse::Header<'_>]) -> Option<u64> {
    let v = fields.iter().find(|h| h.name.eq_ignore_ascii_case("age"))?;
    std::str::from_utf8(head::trim(v.value))
        .ok()?
        .parse::<u64>()
        .ok()
        .map(|a| a.min(freshness::MAX_DELTA))
}

impl Stored {
    /// Builds an entry if the response may be stored.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        req: &RequestFacts,
        status: u16,
        reason: &str,
        headers: Vec<Field>,
        age: Option<u64>,
        body: Bytes,
        default_ttl: Option<Duration>,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> Result<Stored, NotStorable> {
        let facts = response_facts(status, &headers, age);
        let lifetime = freshness::storable(req, &facts, default_ttl, response_time)?;
        let vary = match &facts.vary {
            Vary::Fields(f) => f.clone(),
            _ => Vec::new(),
        };
        let first = |name| values(&headers, name).next().map(<[u8]>::to_vec);
        let etag = first("etag");
        let last_modified = first("last-modified");
        // Everything the entry holds but its key (weighed by the store,
        // see `Key::weight`).
        let weight = ENTRY_OVERHEAD
            + STRING_OVERHEAD
            + reason.len() as u64
            + body.len() as u64
            + headers
                .iter()
                .map(|(n, v)| (n.len() + v.len()) as u64 + FIELD_OVERHEAD)
                .sum::<u64>()
            + vary
                .iter()
                .map(|v| v.len() as u64 + STRING_OVERHEAD)
                .sum::<u64>()
            + [&etag, &last_modified]
                .iter()
                .map(|v| v.as_ref().map_or(0, |v| v.len() as u64 + STRING_OVERHEAD))
                .sum::<u64>();
        Ok(Stored {
            status,
            reason: reason.to_owned(),
            facts: StoredFacts {
                lifetime,
                age: AgeFacts {
                    date: facts.date,
                    age,
                    request_time,
                    response_time,
                },
                no_cache: facts.cc.no_cache,
                must_revalidate: facts.cc.must_revalidate
                    || facts.cc.proxy_revalidate
                    || facts.cc.s_maxage.is_some(),
                has_validator: facts.has_validator(),
            },
            headers,
            body,
            vary,
            etag,
            last_modified,
            weight: u32::try_from(weight).unwrap_or(u32::MAX),
        })
    }

    /// The entry after a `304 Not Modified`: its fields updated with those
    /// of the 304 (RFC 9111 §3.2), times reset to the revalidation.
    pub fn refreshed(
        &self,
        req: &RequestFacts,
        not_modified: &[Field],
        age: Option<u64>,
        default_ttl: Option<Duration>,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> Result<Stored, NotStorable> {
        let mut headers = self.headers.clone();
        for (name, _) in not_modified {
            if name.eq_ignore_ascii_case("content-length")
                || name.eq_ignore_ascii_case("content-encoding")
                || name.eq_ignore_ascii_case("content-range")
            {
                continue;
            }
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        }
        headers.extend(
            not_modified
                .iter()
                .filter(|(n, _)| {
                    !n.eq_ignore_ascii_case("content-length")
                        && !n.eq_ignore_ascii_case("content-encoding")
                        && !n.eq_ignore_ascii_case("content-range")
                })
                .cloned(),
        );
        Stored::build(
            req,
            self.status,
            &self.reason,
            headers,
            age,
            self.body.clone(),
            default_ttl,
            request_time,
            response_time,
        )
    }
}

/// How a fetch others waited on ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    /// The response is in the store: look again.
    Stored,
    /// It cannot be stored (or is too large): go to the upstream yourself.
    NotStorable,
    /// The fetch failed or was abandoned: try again.
    Failed,
}

/// Who fetches a missing key.
pub enum Join {
    /// You do; release the guard with the outcome.
    Leader(FetchGuard),
    /// Someone else does: wait for the outcome.
    Waiter(watch::Receiver<Outcome>),
}

/// Held by the one fetch of a key; tells the waiters how it ended (and
/// `Failed` if it is dropped before, e.g. when its client went away).
pub struct FetchGuard {
    service: Arc<ServiceCache>,
    key: Key,
    tx: watch::Sender<Outcome>,
    released: bool,
}

impl FetchGuard {
    pub fn release(&mut self, outcome: Outcome) {
        if self.released {
            return;
        }
        self.released = true;
        self.service
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
        let _ = self.tx.send(outcome);
    }
}

impl Drop for FetchGuard {
    fn drop(&mut self) {
        self.release(Outcome::Failed);
    }
}

/// The variants stored for one URL: the `Vary` they were stored under and
/// the variant part of each stored key. A record never changes: storing a
/// new variant replaces it, so the index weighs each record as it is.
#[derive(Debug)]
struct Variants {
    primary: Primary,
    vary: Vec<String>,
    seen: Vec<String>,
}

/// What the stores are keyed by: a 128-bit keyed hash of the full key
/// (the full key is kept in the value and compared on every lookup).
///
/// `moka` keeps the keys of removed entries in its hash table as
/// tombstones until the table is next rebuilt, hundreds of them: with
/// keys of tens of KB (long paths, long `Vary` values) that held tens of
/// MB beyond `max_bytes`. A fixed-size id makes that negligible. The hash
/// keys are random per service, so ids cannot be made to collide on
/// purpose; a collision would only make one response miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Id(u64, u64);

/// The two random hashers an [`Id`] is made with.
struct Ider(std::hash::RandomState, std::hash::RandomState);

impl Ider {
    fn id<T: std::hash::Hash>(&self, t: &T) -> Id {
        use std::hash::BuildHasher;
        Id(self.0.hash_one(t), self.1.hash_one(t))
    }
}

/// A stored response with its full key.
#[derive(Debug, Clone)]
struct Held {
    key: Arc<Key>,
    entry: Arc<Stored>,
}

fn primary_weight(p: &Primary) -> u64 {
    (p.authority.len() + p.target.len() + p.source.len()) as u64 + 3 * STRING_OVERHEAD
}

/// What a stored response's key weighs.
fn key_weight(k: &Key) -> u64 {
    primary_weight(&k.primary) + k.variant.len() as u64 + STRING_OVERHEAD
}

/// What one stored response weighs in the store: its key and its content.
fn entry_weight(k: &Key, v: &Stored) -> u64 {
    key_weight(k) + u64::from(v.weight)
}

/// What one URL's record weighs in the index.
fn variants_weight(v: &Variants) -> u64 {
    INDEX_OVERHEAD
        + primary_weight(&v.primary)
        + v.vary
            .iter()
            .chain(&v.seen)
            .map(|s| s.len() as u64 + STRING_OVERHEAD)
            .sum::<u64>()
}

fn as_weight(w: u64) -> u32 {
    u32::try_from(w).unwrap_or(u32::MAX)
}

/// Settings of one cached service (from the rule file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub max_bytes: u64,
    pub default_ttl: Option<Duration>,
}

impl Settings {
    /// The largest response stored: an eighth of `max_bytes`, so one
    /// response can never flush the whole cache.
    pub fn entry_limit(&self) -> u64 {
        (self.max_bytes / 8).min(u64::from(u32::MAX) / 2)
    }

    /// Budget of the bodies being filled by fetches in flight, all
    /// together: a quarter of `max_bytes` (each buffered byte is counted
    /// twice, for the copy being stored and the copy queued for the
    /// fetching client, so one response of the largest size fits).
    pub fn filling_limit(&self) -> u64 {
        self.max_bytes / 4
    }

    /// Budget of the index of URLs and their variants: an eighth (a URL
    /// whose record the index evicts loses its stored responses with it).
    pub fn index_limit(&self) -> u64 {
        (self.max_bytes / 8).max(1)
    }

    /// Budget of the stored responses: what the other two leave.
    pub fn store_limit(&self) -> u64 {
        self.max_bytes
            .saturating_sub(self.filling_limit() + self.index_limit())
            .max(1)
    }
}

/// The cache of one `container:port`.
pub struct ServiceCache {
    pub name: String,
    pub settings: Settings,
    entries: moka::sync::Cache<Id, Held>,
    index: moka::sync::Cache<Id, Arc<Variants>>,
    ider: Arc<Ider>,
    /// Serialises changes to the index and the entries they list, so two
    /// variants stored at once cannot lose one another (an entry missing
    /// from its URL's record could never be invalidated).
    index_write: Mutex<()>,
    inflight: Mutex<HashMap<Key, watch::Receiver<Outcome>>>,
    /// Bytes held by fetches still filling (see [`Reservation`]).
    filling: AtomicU64,
    metrics: Arc<Metrics>,
    /// Its labelled series (`cache_service_bytes`: the bytes it holds).
    pub series: crate::state::metrics::labelled::CacheSeries,
}

impl std::fmt::Debug for ServiceCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCache")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

/// What a lookup found.
pub struct Found {
    /// The full key under the currently known `Vary` of the URL.
    pub key: Key,
    pub entry: Option<Arc<Stored>>,
}

/// Why a response that may be stored was not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotKept {
    #[error("its URL already has {MAX_VARIANTS} variants stored")]
    TooManyVariants,
}

impl ServiceCache {
    pub fn new(name: &str, settings: Settings, metrics: Arc<Metrics>) -> ServiceCache {
        let ider = Arc::new(Ider(
            std::hash::RandomState::new(),
            std::hash::RandomState::new(),
        ));
        let m = metrics.clone();
        // This service's share of `cache_bytes` and its lookups, labelled by its name.
        let series = metrics.labelled.cache_series(name);
        let b = series.bytes.clone();
        let entries = moka::sync::Cache::builder()
            .max_capacity(settings.store_limit())
            .weigher(|_: &Id, h: &Held| as_weight(entry_weight(&h.key, &h.entry)))
            .eviction_listener(move |_, h: Held, cause| {
                let w = entry_weight(&h.key, &h.entry);
                m.cache_bytes.fetch_sub(w, Ordering::Relaxed);
                b.dec_by(w as i64);
                if cause == RemovalCause::Size {
                    Metrics::inc(&m.cache_evictions_total);
                }
            })
            .build();
        let m = metrics.clone();
        let b = series.bytes.clone();
        let held = entries.clone();
        let by = ider.clone();
        let index = moka::sync::Cache::builder()
            .max_capacity(settings.index_limit())
            .weigher(|_: &Id, v: &Arc<Variants>| as_weight(variants_weight(v)))
            .eviction_listener(move |_, v: Arc<Variants>, cause| {
                let w = variants_weight(&v);
                m.cache_bytes.fetch_sub(w, Ordering::Relaxed);
                b.dec_by(w as i64);
                // A URL the index forgot has entries nothing could find or
                // invalidate any more: they go with it.
                if cause.was_evicted() {
                    for variant in &v.seen {
                        let id = by.id(&Key {
                            primary: v.primary.clone(),
                            variant: variant.clone(),
                        });
                        if held.remove(&id).is_some() {
                            Metrics::inc(&m.cache_evictions_total);
                        }
                    }
                }
            })
            .build();
        ServiceCache {
            name: name.to_owned(),
            settings,
            entries,
            index,
            ider,
            index_write: Mutex::new(()),
            inflight: Mutex::new(HashMap::new()),
            filling: AtomicU64::new(0),
            metrics,
            series,
        }
    }

    /// The record of a URL, if the index has it.
    fn record(&self, primary: &Primary) -> Option<Arc<Variants>> {
        self.index
            .get(&self.ider.id(primary))
            .filter(|v| v.primary == *primary)
    }

    /// The stored response of a full key.
    fn stored(&self, key: &Key) -> Option<Arc<Stored>> {
        self.entries
            .get(&self.ider.id(key))
            .filter(|h| *h.key == *key)
            .map(|h| h.entry)
    }

    /// Removes the stored response of a full key; was there one?
    fn remove(&self, key: &Key) -> bool {
        let id = self.ider.id(key);
        match self.entries.get(&id) {
            Some(h) if *h.key == *key => self.entries.remove(&id).is_some(),
            _ => false,
        }
    }

    /// Looks up the stored response for `req`.
    pub fn lookup(&self, req: &CacheRequest) -> Found {
        let vary = self.record(&req.primary);
        let key = Key {
            primary: req.primary.clone(),
            variant: vary
                .as_ref()
                .map(|v| req.variant(&v.vary))
                .unwrap_or_default(),
        };
        let entry = match vary {
            Some(_) => self.stored(&key),
            None => None,
        };
        Found { key, entry }
    }

    /// Stores `entry` as the answer to `req`, unless its URL already has
    /// [`MAX_VARIANTS`] other variants stored.
    pub fn insert(&self, req: &CacheRequest, entry: Arc<Stored>) -> Result<(), NotKept> {
        let key = Key {
            primary: req.primary.clone(),
            variant: req.variant(&entry.vary),
        };
        let _one = self.index_write.lock().unwrap_or_else(|p| p.into_inner());
        let record = match self.record(&req.primary) {
            Some(v) if v.vary == entry.vary => {
                if v.seen.contains(&key.variant) {
                    None
                } else {
                    // Variants the store has evicted meanwhile free their place.
                    let mut seen: Vec<String> = v
                        .seen
                        .iter()
                        .filter(|s| {
                            self.stored(&Key {
                                primary: req.primary.clone(),
                                variant: (*s).clone(),
                            })
                            .is_some()
                        })
                        .cloned()
                        .collect();
                    if seen.len() >= MAX_VARIANTS {
                        return Err(NotKept::TooManyVariants);
                    }
                    seen.push(key.variant.clone());
                    Some(Variants {
                        primary: req.primary.clone(),
                        vary: v.vary.clone(),
                        seen,
                    })
                }
            }
            old => {
                // A new Vary for this URL: the old variants can no longer be
                // found the same way, drop them.
                if let Some(old) = old {
                    self.drop_variants(&req.primary, &old);
                }
                Some(Variants {
                    primary: req.primary.clone(),
                    vary: entry.vary.clone(),
                    seen: vec![key.variant.clone()],
                })
            }
        };
        // The URL's record is in place before its entry, so an entry can
        // always be found by invalidation.
        if let Some(record) = record {
            let w = variants_weight(&record);
            self.metrics.cache_bytes.fetch_add(w, Ordering::Relaxed);
            self.series.bytes.inc_by(w as i64);
            self.index
                .insert(self.ider.id(&req.primary), Arc::new(record));
        }
        let w = entry_weight(&key, &entry);
        self.metrics.cache_bytes.fetch_add(w, Ordering::Relaxed);
        self.series.bytes.inc_by(w as i64);
        Metrics::inc(&self.metrics.cache_stores_total);
        self.entries.insert(
            self.ider.id(&key),
            Held {
                key: Arc::new(key),
                entry,
            },
        );
        // Until the stores run their maintenance, what they evict is still
        // held (in their write logs): run it now, so the bound holds at
        // every moment and not only on average. Stores are rare next to
        // hits; lookups never pay for this.
        self.index.run_pending_tasks();
        self.entries.run_pending_tasks();
        Ok(())
    }

    fn drop_variants(&self, primary: &Primary, v: &Variants) -> u64 {
        let mut n = 0;
        for variant in &v.seen {
            let key = Key {
                primary: primary.clone(),
                variant: variant.clone(),
            };
            if self.remove(&key) {
                n += 1;
            }
        }
        n
    }

    /// Removes every stored variant of one URL; returns how many there were.
    pub fn invalidate(&self, primary: &Primary) -> u64 {
        let _one = self.index_write.lock().unwrap_or_else(|p| p.into_inner());
        match self.record(primary) {
            Some(v) => {
                self.index.invalidate(&self.ider.id(primary));
                self.drop_variants(primary, &v)
            }
            None => 0,
        }
    }

    /// Removes the URLs whose target (path and query) is `target`, for
    /// any authority or only `authority`; everything when both are `None`.
    pub fn purge(&self, target: Option<&str>, authority: Option<&str>) -> u64 {
        if target.is_none() && authority.is_none() {
            let _one = self.index_write.lock().unwrap_or_else(|p| p.into_inner());
            self.entries.run_pending_tasks();
            let n = self.entries.entry_count();
            self.entries.invalidate_all();
            self.index.invalidate_all();
            self.entries.run_pending_tasks();
            self.index.run_pending_tasks();
            return n;
        }
        let matching: Vec<Primary> = self
            .index
            .iter()
            .map(|(_, v)| v.primary.clone())
            .filter(|p| {
                target.is_none_or(|t| p.target == t)
                    && authority.is_none_or(|a| p.authority.eq_ignore_ascii_case(a))
            })
            .collect();
        matching.iter().map(|p| self.invalidate(p)).sum()
    }

    /// Becomes the one fetch of `key`, or a waiter on it.
    pub fn join(self: &Arc<Self>, key: &Key) -> Join {
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = inflight.get(key) {
            return Join::Waiter(rx.clone());
        }
        let (tx, rx) = watch::channel(Outcome::Pending);
        inflight.insert(key.clone(), rx);
        Join::Leader(FetchGuard {
            service: self.clone(),
            key: key.clone(),
            tx,
            released: false,
        })
    }

    /// A claim on the budget of bodies being filled, empty at first.
    pub fn reservation(&self) -> Reservation<'_> {
        Reservation {
            service: self,
            bytes: 0,
        }
    }

    /// Number of stored entries (after pending maintenance).
    pub fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    /// What the stored responses and the index weigh, and what fetches
    /// still filling hold (after pending maintenance).
    pub fn weighed(&self) -> (u64, u64, u64) {
        self.entries.run_pending_tasks();
        self.index.run_pending_tasks();
        (
            self.entries.weighted_size(),
            self.index.weighted_size(),
            self.filling.load(Ordering::Relaxed),
        )
    }
}

/// Bytes a fetch buffers while it fills an entry, counted against the
/// service's [`Settings::filling_limit`] and given back when dropped, so
/// concurrent fills cannot hold more than that between them.
pub struct Reservation<'a> {
    service: &'a ServiceCache,
    bytes: u64,
}

impl Reservation<'_> {
    /// Claims `n` more bytes; `false` (and nothing claimed) when the
    /// budget cannot spare them.
    pub fn grow(&mut self, n: u64) -> bool {
        let limit = self.service.settings.filling_limit();
        let claimed = self
            .service
            .filling
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(n).filter(|total| *total <= limit)
            })
            .is_ok();
        if claimed {
            self.bytes += n;
        }
        claimed
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.service.filling.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Waits for the fetch a waiter joined.
pub async fn wait(mut rx: watch::Receiver<Outcome>) -> Outcome {
    match rx.wait_for(|o| *o != Outcome::Pending).await {
        Ok(o) => *o,
        Err(_) => Outcome::Failed,
    }
}

/// Decodes a body in the proxy's canonical chunked encoding (hex size,
/// CRLF, data, CRLF, …, `0` CRLF CRLF; see `proxy::body`). `None` if it is
/// not exactly that.
pub fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    loop {
        let eol = raw.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(raw.get(..eol)?).ok()?, 16).ok()?;
        raw = raw.get(eol + 2..)?;
        if size == 0 {
            return (raw == b"\r\n").then_some(out);
        }
        out.extend_from_slice(raw.get(..size)?);
        if raw.get(size..size + 2)? != b"\r\n" {
            return None;
        }
        raw = raw.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(raw: &str) -> CacheRequest {
        CacheRequest::parse(raw.as_bytes()).unwrap()
    }

    fn entry(cc: &str, vary: Option<&str>, body: &'static [u8]) -> Arc<Stored> {
        let mut headers: Vec<Field> = vec![("Cache-Control".into(), cc.as_bytes().to_vec())];
        if let Some(v) = vary {
            headers.push(("Vary".into(), v.as_bytes().to_vec()));
        }
        let now = SystemTime::now();
        let r = req("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        Arc::new(
            Stored::build(
                &r.facts,
                200,
                "OK",
                headers,
                None,
                Bytes::from_static(body),
                None,
                now,
                now,
            )
            .unwrap(),
        )
    }

    #[test]
    fn dechunk_canonical_bodies() {
        assert_eq!(
            dechunk(b"5\r\nhello\r\n1\r\n!\r\n0\r\n\r\n").as_deref(),
            Some(&b"hello!"[..])
        );
        assert_eq!(dechunk(b"0\r\n\r\n").as_deref(), Some(&b""[..]));
        assert_eq!(dechunk(b"5\r\nhell\r\n0\r\n\r\n"), None);
        assert_eq!(dechunk(b"5\r\nhello\r\n"), None);
        assert_eq!(dechunk(b"zz\r\n"), None);
    }

    #[test]
    fn weight_counts_status_headers_and_body() {
        let e = entry("max-age=60", None, &[0u8; 1000]);
        assert!(e.weight >= 1000 + 13 + 10, "{}", e.weight);
        assert!(u64::from(e.weight) < 1000 + ENTRY_OVERHEAD + 256);
        // The key counts in the store: a long path or variant weighs.
        let short = Key {
            primary: req("GET /a HTTP/1.1\r\nHost: a\r\n\r\n").primary,
            variant: String::new(),
        };
        let long = Key {
            primary: req(&format!(
                "GET /{} HTTP/1.1\r\nHost: a\r\n\r\n",
                "p".repeat(5000)
            ))
            .primary,
            variant: "accept-encoding=".to_owned() + &"g".repeat(3000),
        };
        assert!(entry_weight(&long, &e) >= entry_weight(&short, &e) + 8000);
    }

    /// A URL keeps at most MAX_VARIANTS variants; one the store evicted
    /// frees its place; a URL the index forgets takes its entries along.
    #[tokio::test]
    async fn variants_per_url_are_bounded() {
        let svc = ServiceCache::new(
            "app1:80",
            Settings {
                max_bytes: 1 << 20,
                default_ttl: None,
            },
            Arc::new(Metrics::default()),
        );
        let ae = |i: usize| {
            req(&format!(
                "GET /v HTTP/1.1\r\nHost: a\r\nAccept-Encoding: e{i}\r\n\r\n"
            ))
        };
        let e = || entry("max-age=60", Some("Accept-Encoding"), b"x");
        for i in 0..MAX_VARIANTS {
            svc.insert(&ae(i), e()).unwrap();
        }
        assert_eq!(svc.insert(&ae(99), e()), Err(NotKept::TooManyVariants));
        assert!(svc.lookup(&ae(99)).entry.is_none());
        // Storing a variant again is no new variant.
        svc.insert(&ae(3), e()).unwrap();
        assert!(svc.remove(&svc.lookup(&ae(0)).key));
        svc.insert(&ae(99), e()).unwrap();
        assert!(svc.lookup(&ae(99)).entry.is_some());
        assert_eq!(svc.invalidate(&ae(1).primary), MAX_VARIANTS as u64);
        assert_eq!(svc.entry_count(), 0);
    }

    #[test]
    fn refresh_merges_the_304_fields() {
        let r = req("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let now = SystemTime::now();
        let with_etag = Stored::build(
            &r.facts,
            200,
            "OK",
            vec![
                ("Cache-Control".into(), b"max-age=0".to_vec()),
                ("ETag".into(), b"\"v1\"".to_vec()),
                ("X-Keep".into(), b"1".to_vec()),
            ],
            None,
            Bytes::from_static(b"body"),
            None,
            now,
            now,
        )
        .unwrap();
        let fresh = with_etag
            .refreshed(
                &r.facts,
                &[
                    ("Cache-Control".into(), b"max-age=60".to_vec()),
                    ("Content-Length".into(), b"0".to_vec()),
                ],
                None,
                None,
                now,
                now,
            )
            .unwrap();
        assert_eq!(fresh.facts.lifetime, Duration::from_secs(60));
        assert_eq!(&fresh.body[..], b"body");
        assert!(fresh.headers.iter().any(|(n, _)| n == "X-Keep"));
        assert!(!fresh.headers.iter().any(|(n, _)| n == "Content-Length"));
        assert_eq!(values(&fresh.headers, "cache-control").count(), 1);
    }

    #[tokio::test]
    async fn variants_are_stored_apart_and_invalidated_together() {
        let svc = Arc::new(ServiceCache::new(
            "app1:80",
            Settings {
                max_bytes: 1 << 20,
                default_ttl: None,
            },
            Arc::new(Metrics::default()),
        ));
        let en = req("GET /v HTTP/1.1\r\nHost: a\r\nAccept-Language: en\r\n\r\n");
        let de = req("GET /v HTTP/1.1\r\nHost: a\r\nAccept-Language: de\r\n\r\n");
        svc.insert(&en, entry("max-age=60", Some("Accept-Language"), b"en"))
            .unwrap();
        assert!(svc.lookup(&de).entry.is_none());
        svc.insert(&de, entry("max-age=60", Some("Accept-Language"), b"de"))
            .unwrap();
        assert_eq!(&svc.lookup(&en).entry.unwrap().body[..], b"en");
        assert_eq!(&svc.lookup(&de).entry.unwrap().body[..], b"de");
        assert_eq!(svc.invalidate(&en.primary), 2);
        assert!(svc.lookup(&en).entry.is_none());
        assert!(svc.lookup(&de).entry.is_none());
    }

    #[tokio::test]
    async fn one_leader_per_key_and_waiters_learn_the_outcome() {
        let svc = Arc::new(ServiceCache::new(
            "app1:80",
            Settings {
                max_bytes: 1 << 20,
                default_ttl: None,
            },
            Arc::new(Metrics::default()),
        ));
        let key = svc.lookup(&req("GET /x HTTP/1.1\r\nHost: a\r\n\r\n")).key;
        let Join::Leader(mut guard) = svc.join(&key) else {
            panic!("first must lead")
        };
        let Join::Waiter(rx) = svc.join(&key) else {
            panic!("second must wait")
        };
        let waiter = tokio::spawn(wait(rx));
        guard.release(Outcome::NotStorable);
        assert_eq!(waiter.await.unwrap(), Outcome::NotStorable);
        // Released: the next miss leads again; a dropped leader fails its waiters.
        let Join::Leader(guard) = svc.join(&key) else {
            panic!("must lead after release")
        };
        let Join::Waiter(rx) = svc.join(&key) else {
            panic!("must wait")
        };
        drop(guard);
        assert_eq!(wait(rx).await, Outcome::Failed);
    }

    #[tokio::test]
    async fn size_bound_evicts_and_counts() {
        let metrics = Arc::new(Metrics::default());
        let svc = ServiceCache::new(
            "app1:80",
            Settings {
                max_bytes: 16384,
                default_ttl: None,
            },
            metrics.clone(),
        );
        for i in 0..20 {
            let r = req(&format!("GET /{i} HTTP/1.1\r\nHost: a\r\n\r\n"));
            svc.insert(&r, entry("max-age=60", None, &[7u8; 500]))
                .unwrap();
        }
        let (stored, index, filling) = svc.weighed();
        assert!(stored > 0 && stored <= svc.settings.store_limit());
        assert!(index > 0 && index <= svc.settings.index_limit());
        assert_eq!(filling, 0);
        assert!(metrics.cache_evictions_total.load(Ordering::Relaxed) > 0);
        assert_eq!(metrics.cache_bytes.load(Ordering::Relaxed), stored + index);
        // The service's own gauge holds the same bytes.
        let own = metrics.labelled.cache_series("app1:80").bytes.get();
        assert_eq!(own as u64, stored + index);
    }
}
