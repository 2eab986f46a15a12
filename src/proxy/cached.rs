//! The cache phase of an exchange with a cached service: look up, serve a
//! hit from memory, or fetch — one fetch per key at a time, its response
//! streamed to the client and teed into the store — and revalidate stale
//! entries with a conditional request.
//!
//! ```text
//! request ─┬─ unsafe method ──────────────► relay, then invalidate the URL on 2xx/3xx
//!          ├─ body / Range / OPTIONS ─────► relay (X-Cache: MISS)
//!          └─ GET / HEAD ─ lookup ─┬─ fresh ───────────► hit (Age, X-Cache: HIT)
//!                                  ├─ stale+validator ─► conditional fetch ─┬─ 304 ► refresh, hit
//!                                  │                                        └─ 200 ► relay + tee
//!                                  └─ none ─ join ─┬─ leader ─► fetch: relay + tee ─► store
//!                                                  └─ waiter ─► wait, then look again
//! ```
//!
//! A waiter waits at most the response timeout and only while its client
//! is there; the leader's fetch fills the store at the upstream's pace
//! (the proxy's `Tee` queues what its client has not read yet), so no
//! client can hold the others hostage.

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::downstream::{Downstream, OutHead};
use super::exchange::{Exchange, Relayed, Upstream};
use super::relay::relay;
use super::tap::{NoTap, Tap, TapAction};
use super::ProxyCtx;
use crate::cache::freshness::{self, NotStorable, Use};
use crate::cache::key::{CacheRequest, Field, MethodClass};
use crate::cache::store::{self, FetchGuard, Join, NotKept, Outcome, ServiceCache, Stored};
use crate::state::metrics::Metrics;
use crate::wire::head::{Framing, ResponseHead};

const MISS: &[(&str, &[u8])] = &[("x-cache", b"MISS")];
const TOO_LARGE: &str = "larger than the per-entry bound (max_bytes / 8)";
const FILLING: &str = "the budget of bodies being filled (max_bytes / 4) is in use";
/// A waiter looks again at most this often before fetching on its own.
const ROUNDS: usize = 3;

/// How long a waiter waits for the fetch it joined, at most: the
/// exchange's response timeout (the pool's, for frontends).
fn wait_limit(exchange: &Exchange) -> Duration {
    exchange.response_timeout
}

/// Answers one request to a cached service.
pub async fn forward_cached(
    ctx: &ProxyCtx,
    svc: Arc<ServiceCache>,
    flow: &Upstream,
    client: &mut Downstream<'_>,
    out_head: &[u8],
    exchange: Exchange,
) -> io::Result<bool> {
    let metrics = &ctx.metrics;
    let Some(req) = CacheRequest::parse(out_head) else {
        // Fail closed: without reading the request the cache cannot tell
        // whether it must invalidate or stay out of the way.
        Metrics::inc(&metrics.requests_bad_total);
        warn!(source = %flow.peer, destination = %flow.dst, status = 400, "request head the cache cannot read; refused");
        client
            .answer(400, "bad request: unreadable request head", true)
            .await?;
        return Ok(false);
    };
    let head_request = match req.class {
        MethodClass::Unsafe => {
            return forward_unsafe(ctx, &svc, flow, client, out_head, exchange, &req).await
        }
        MethodClass::Other => return pass(ctx, flow, client, out_head, exchange, &mut NoTap).await,
        MethodClass::Read { .. } if req.bypass || exchange.framing != Framing::None => {
            miss(metrics, &svc);
            return pass(ctx, flow, client, out_head, exchange, &mut MissTap).await;
        }
        MethodClass::Read { head } => head,
    };

    let mut coalesce = true;
    for _ in 0..ROUNDS {
        let found = svc.lookup(&req);
        let stale = match found.entry {
            Some(entry) => match freshness::usable(&entry.facts, &req.facts, SystemTime::now()) {
                Use::Fresh(age) => {
                    hit(metrics, &svc, entry.body.len());
                    return serve_hit(client, &req, &entry, age, &exchange, head_request).await;
                }
                Use::Revalidate => Some(entry),
                Use::Fetch => None,
            },
            None => None,
        };
        if req.facts.cc.only_if_cached {
            miss(metrics, &svc);
            let close = !exchange.keep_alive;
            client
                .answer(504, "not in the cache (only-if-cached)", close)
                .await?;
            return Ok(!close);
        }
        if (head_request && stale.is_none()) || req.facts.cc.no_store {
            // A HEAD response has no body to store (the next GET fills the
            // entry); a no-store request may not fill it: neither should
            // make other requests wait for it.
            miss(metrics, &svc);
            return pass(ctx, flow, client, out_head, exchange, &mut MissTap).await;
        }
        let guard = if coalesce {
            match svc.join(&found.key) {
                Join::Leader(g) => Some(g),
                Join::Waiter(rx) => {
                    Metrics::inc(&metrics.cache_coalesced_total);
                    match wait_for_fill(rx, client, wait_limit(&exchange)).await {
                        Waited::Done(Outcome::Stored) => coalesce = false,
                        Waited::Done(Outcome::NotStorable) => {
                            miss(metrics, &svc);
                            return pass(ctx, flow, client, out_head, exchange, &mut MissTap).await;
                        }
                        Waited::Done(Outcome::Failed | Outcome::Pending) => {}
                        Waited::TimedOut => {
                            // The fetch is slow: fetch for this client
                            // alone (still storing what it gets).
                            debug!(service = %svc.name, key = %req.primary, "gave up waiting for a fetch");
                            coalesce = false;
                        }
                        Waited::ClientGone => return Ok(false),
                    }
                    continue;
                }
            }
        } else {
            None
        };
        return fetch(
            ctx, &svc, flow, client, out_head, exchange, &req, stale, guard,
        )
        .await;
    }
    miss(metrics, &svc);
    pass(ctx, flow, client, out_head, exchange, &mut MissTap).await
}

/// An unsafe method: relayed, then the stored responses of its URL are
/// dropped if the upstream accepted it (RFC 9111 §4.4: a non-error
/// status, 2xx or 3xx) — or if the client went away before the cache
/// could learn the status: a needless invalidation costs one fetch, a
/// missing one serves what the request changed.
async fn forward_unsafe(
    ctx: &ProxyCtx,
    svc: &ServiceCache,
    flow: &Upstream,
    client: &mut Downstream<'_>,
    out_head: &[u8],
    exchange: Exchange,
    req: &CacheRequest,
) -> io::Result<bool> {
    let relayed = relay(ctx, flow, client, out_head, exchange, &mut NoTap).await;
    let invalidate = match &relayed {
        Ok(r) => r.status.is_some_and(|s| (200..400).contains(&s)),
        Err(_) => true,
    };
    if invalidate {
        let n = svc.invalidate(&req.primary);
        if n > 0 {
            Metrics::inc(&ctx.metrics.cache_invalidations_total);
            debug!(service = %svc.name, key = %req.primary, entries = n, "invalidated by an unsafe method");
        }
    }
    let relayed = relayed?;
    Ok(relayed.keep && !relayed.intercepted)
}

/// How waiting for another request's fetch ended.
enum Waited {
    Done(Outcome),
    /// Longer than the response timeout.
    TimedOut,
    /// The waiting client closed its connection.
    ClientGone,
}

/// Waits for the fetch a waiter joined, at most `limit`, and only while
/// the waiting client is still there.
async fn wait_for_fill(
    rx: watch::Receiver<Outcome>,
    client: &mut Downstream<'_>,
    limit: Duration,
) -> Waited {
    tokio::select! {
        o = store::wait(rx) => Waited::Done(o),
        () = tokio::time::sleep(limit) => Waited::TimedOut,
        () = client.gone() => Waited::ClientGone,
    }
}

/// Relays without storing.
async fn pass(
    ctx: &ProxyCtx,
    flow: &Upstream,
    client: &mut Downstream<'_>,
    out_head: &[u8],
    exchange: Exchange,
    tap: &mut dyn Tap,
) -> io::Result<bool> {
    let relayed = relay(ctx, flow, client, out_head, exchange, tap).await?;
    Ok(relayed.keep && !relayed.intercepted)
}

/// Fetches from the upstream for storage (conditionally when `stale` has
/// validators), relaying to this client as the response arrives. The
/// response is stored by the tap as soon as the upstream's body is
/// complete, whatever the pace of this client.
#[allow(clippy::too_many_arguments)]
async fn fetch(
    ctx: &ProxyCtx,
    svc: &ServiceCache,
    flow: &Upstream,
    client: &mut Downstream<'_>,
    out_head: &[u8],
    exchange: Exchange,
    req: &CacheRequest,
    stale: Option<Arc<Stored>>,
    guard: Option<FetchGuard>,
) -> io::Result<bool> {
    let metrics = &ctx.metrics;
    let head = match &stale {
        Some(s) => {
            CacheRequest::fetch_head(out_head, s.etag.as_deref(), s.last_modified.as_deref())
        }
        None => CacheRequest::fetch_head(out_head, None, None),
    };
    let mut tap = FetchTap {
        req,
        svc,
        request_time: SystemTime::now(),
        stale: stale.clone(),
        guard,
        reservation: svc.reservation(),
        state: TapState::Idle,
    };
    let relayed = relay(ctx, flow, client, &head, exchange, &mut tap).await;
    // Stored, or why not, whether or not this client is still there.
    match std::mem::replace(&mut tap.state, TapState::Idle) {
        TapState::Stored => {
            debug!(service = %svc.name, key = %req.primary, "stored");
        }
        TapState::NotStorable(why) => {
            debug!(service = %svc.name, key = %req.primary, reason = %why, "not stored");
        }
        TapState::NotKept(why) => {
            debug!(service = %svc.name, key = %req.primary, reason = %why, "not stored");
        }
        TapState::Passed(why) => {
            debug!(service = %svc.name, key = %req.primary, limit = svc.settings.entry_limit(), reason = why, "not stored");
        }
        TapState::NotModified { headers, age } => {
            let Ok(Relayed {
                intercepted: true, ..
            }) = relayed
            else {
                return relayed.map(|r| r.keep);
            };
            // 304 to our conditional request (or a HEAD's 200 describing
            // the stored response): the stored body is current.
            Metrics::inc(&metrics.cache_revalidations_total);
            hit(metrics, svc, stale.as_ref().map_or(0, |s| s.body.len()));
            let Some(stale) = stale else {
                // Only a revalidation intercepts; never reached otherwise.
                return Ok(false);
            };
            let response_time = SystemTime::now();
            // What is refreshed is the stored GET response, also when a
            // HEAD revalidated it: it stays storable as a GET response.
            let facts = freshness::RequestFacts {
                get: true,
                ..req.facts.clone()
            };
            let entry = match stale.refreshed(
                &facts,
                &headers,
                age,
                svc.settings.default_ttl,
                tap.request_time,
                response_time,
            ) {
                Ok(e) => {
                    let e = Arc::new(e);
                    match svc.insert(req, e.clone()) {
                        Ok(()) => tap.release(Outcome::Stored),
                        Err(_) => tap.release(Outcome::NotStorable),
                    }
                    e
                }
                Err(why) => {
                    // Usable for this request, not for later ones.
                    svc.invalidate(&req.primary);
                    tap.release(Outcome::NotStorable);
                    debug!(service = %svc.name, key = %req.primary, reason = %why, "revalidated, no longer storable");
                    stale
                }
            };
            let age = freshness::current_age(&entry.facts.age, SystemTime::now());
            let head_request = req.class == (MethodClass::Read { head: true });
            return serve_hit(client, req, &entry, age, &exchange, head_request).await;
        }
        TapState::Idle | TapState::Buffering(_) => {}
    }
    let relayed = relayed?;
    if !relayed.intercepted {
        miss(metrics, svc);
    }
    Ok(relayed.keep && !relayed.intercepted)
}

/// Writes a stored response (or a 304 when the client's own conditional
/// matches it) with `Age` and `X-Cache: HIT`.
async fn serve_hit(
    client: &mut Downstream<'_>,
    req: &CacheRequest,
    entry: &Stored,
    age: Duration,
    exchange: &Exchange,
    head_request: bool,
) -> io::Result<bool> {
    let keep_alive = exchange.keep_alive;
    let not_modified = client_not_modified(req, entry);
    let (fields, age) = hit_fields(entry, age, not_modified);
    let with_body = !(head_request || not_modified || bodyless(entry.status));
    let header_views: Vec<httparse::Header<'_>> = fields
        .iter()
        .map(|(n, v)| httparse::Header { name: n, value: v })
        .collect();
    let has_body = !(not_modified || bodyless(entry.status));
    let length = entry.body.len().to_string();
    let mut extra: Vec<(&str, &[u8])> = vec![("age", age.as_bytes()), ("x-cache", b"HIT")];
    if head_request && has_body {
        // What a GET would get; no body follows it.
        extra.push(("content-length", length.as_bytes()));
    }
    let out = OutHead {
        status: if not_modified { 304 } else { entry.status },
        reason: if not_modified {
            "Not Modified"
        } else {
            &entry.reason
        },
        fields: &header_views,
        extra: &extra,
        framing: if with_body {
            Framing::Length(entry.body.len() as u64)
        } else {
            Framing::None
        },
        close: !keep_alive,
        upgrade: "",
    };
    // A client that stops reading a large entry is cut after
    // send_timeout_ms (the downstream's writes are bounded by it).
    let body: &[u8] = if with_body { &entry.body } else { &[] };
    client.send_head(&out, body).await?;
    client.body(Framing::None).finish(None).await?;
    Ok(keep_alive)
}

fn bodyless(status: u16) -> bool {
    status == 204 || status == 304 || (100..200).contains(&status)
}

/// Does the client's own `If-None-Match` (or, without it,
/// `If-Modified-Since`) say it already has this response?
fn client_not_modified(req: &CacheRequest, entry: &Stored) -> bool {
    if entry.status != 200 {
        return false;
    }
    let inm: Vec<&[u8]> = req.field("if-none-match").collect();
    if !inm.is_empty() {
        return entry
            .etag
            .as_deref()
            .is_some_and(|e| inm.iter().any(|l| freshness::if_none_match(l, e)));
    }
    let ims = req
        .field("if-modified-since")
        .next()
        .and_then(freshness::http_date);
    let lm = entry
        .last_modified
        .as_deref()
        .and_then(freshness::http_date);
    matches!((ims, lm), (Some(ims), Some(lm)) if lm <= ims)
}

/// The stored fields a hit (or a 304 for it) carries, and its `Age`.
fn hit_fields(entry: &Stored, age: Duration, not_modified: bool) -> (Vec<(&str, &[u8])>, String) {
    // Fields a 304 carries (RFC 9110 §15.4.5).
    const FOR_304: [&str; 6] = [
        "cache-control",
        "content-location",
        "date",
        "etag",
        "expires",
        "vary",
    ];
    let fields = entry
        .headers
        .iter()
        .filter(|(name, _)| !not_modified || FOR_304.iter().any(|f| name.eq_ignore_ascii_case(f)))
        .map(|(n, v)| (n.as_ref(), v.as_ref()))
        .collect();
    (fields, freshness::age_header(age).to_string())
}

// === impl Tap ===

/// Marks a relayed response as a miss.
struct MissTap;

impl Tap for MissTap {
    fn head(&mut self, _: &ResponseHead<'_, '_>) -> TapAction {
        TapAction::Relay {
            extra: MISS,
            body: false,
        }
    }
    fn body(&mut self, _: &[u8]) -> bool {
        false
    }
    fn end(&mut self) {}
}

/// A response being teed into the store.
struct Capture {
    status: u16,
    reason: String,
    headers: Vec<Field>,
    age: Option<u64>,
    chunked: bool,
    raw: Vec<u8>,
}

enum TapState {
    Idle,
    NotStorable(NotStorable),
    /// Storable by the rules, not kept: the reason.
    Passed(&'static str),
    /// Storable, refused by the store.
    NotKept(NotKept),
    Buffering(Capture),
    Stored,
    /// The stored response is current: its fields updated from these.
    NotModified {
        headers: Vec<Field>,
        age: Option<u64>,
    },
}

/// The tap of a fetch: decides at the response head whether the response
/// may be stored, keeps its body (within the per-entry bound and the
/// service's budget of bodies being filled) while it is relayed, stores
/// it the moment the upstream's body ends, and lets waiting requests go as
/// soon as it knows they cannot be served from this response.
struct FetchTap<'a> {
    req: &'a CacheRequest,
    svc: &'a ServiceCache,
    request_time: SystemTime,
    /// The stored response being revalidated.
    stale: Option<Arc<Stored>>,
    guard: Option<FetchGuard>,
    /// What the kept body (and the copy queued for the client) hold of
    /// the service's budget; given back when the fetch ends.
    reservation: store::Reservation<'a>,
    state: TapState,
}

impl FetchTap<'_> {
    fn release(&mut self, outcome: Outcome) {
        if let Some(g) = self.guard.as_mut() {
            g.release(outcome);
        }
    }

    fn limit(&self) -> u64 {
        self.svc.settings.entry_limit()
    }

    /// Stops keeping the body: its memory goes at once, waiters go
    /// upstream themselves.
    fn pass(&mut self, why: &'static str) -> bool {
        self.state = TapState::Passed(why);
        self.release(Outcome::NotStorable);
        false
    }

    /// The body is complete: store the response.
    fn store(&mut self, c: Capture) {
        // The tap sees the payload, decoded whatever the framing.
        let body = Bytes::from(c.raw);
        let built = Stored::build(
            &self.req.facts,
            c.status,
            &c.reason,
            c.headers,
            c.age,
            body,
            self.svc.settings.default_ttl,
            self.request_time,
            SystemTime::now(),
        );
        match built.map(|e| self.svc.insert(self.req, Arc::new(e))) {
            Ok(Ok(())) => {
                self.state = TapState::Stored;
                self.release(Outcome::Stored);
            }
            Ok(Err(why)) => {
                self.state = TapState::NotKept(why);
                self.release(Outcome::NotStorable);
            }
            Err(why) => {
                self.state = TapState::NotStorable(why);
                self.release(Outcome::NotStorable);
            }
        }
    }
}

/// Does a `200` to a HEAD describe the stored response (RFC 9111 §4.3.5):
/// every validator it carries matches the stored one (it carries at least
/// one), and so does its `Content-Length` when it has one?
fn same_representation(stored: &Stored, res: &ResponseHead<'_, '_>) -> bool {
    let field = |name: &str| {
        res.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| crate::wire::head::trim(h.value))
    };
    let etag = field("etag");
    let last_modified = field("last-modified");
    if etag.is_none() && last_modified.is_none() {
        return false;
    }
    let matches = |got: Option<&[u8]>, have: Option<&Vec<u8>>| {
        got.is_none_or(|g| have.is_some_and(|h| crate::wire::head::trim(h) == g))
    };
    matches(etag, stored.etag.as_ref())
        && matches(last_modified, stored.last_modified.as_ref())
        && field("content-length").is_none_or(|l| l == stored.body.len().to_string().as_bytes())
}

impl Tap for FetchTap<'_> {
    fn head(&mut self, res: &ResponseHead<'_, '_>) -> TapAction {
        let headers = store::storable_fields(res.headers);
        let age = store::age_field(res.headers);
        if self.stale.is_some() && res.code == 304 {
            self.state = TapState::NotModified { headers, age };
            return TapAction::Intercept;
        }
        if self.req.class == (MethodClass::Read { head: true }) {
            // A HEAD response has no body: it may refresh the stored GET
            // response it describes, never replace it with nothing.
            if res.code == 200
                && self
                    .stale
                    .as_deref()
                    .is_some_and(|s| same_representation(s, res))
            {
                self.state = TapState::NotModified { headers, age };
                return TapAction::Intercept;
            }
            self.state = TapState::Passed("a HEAD response does not replace a stored body");
            // Waiters (GETs of the same URL) fetch again themselves.
            self.release(Outcome::Failed);
            return TapAction::Relay {
                extra: MISS,
                body: false,
            };
        }
        let facts = store::response_facts(res.code, &headers, age);
        let verdict = freshness::storable(
            &self.req.facts,
            &facts,
            self.svc.settings.default_ttl,
            SystemTime::now(),
        );
        if let Err(why) = verdict {
            self.state = TapState::NotStorable(why);
            self.release(Outcome::NotStorable);
            return TapAction::Relay {
                extra: MISS,
                body: false,
            };
        }
        let pass = match res.framing {
            Framing::Length(n) if n > self.limit() => Some(TOO_LARGE),
            // A declared length within the bound is claimed at once (kept
            // and queued: twice), and allocated in one piece.
            Framing::Length(n) if !self.reservation.grow(n.saturating_mul(2)) => Some(FILLING),
            // Its end cannot be told from a truncation.
            Framing::UntilClose => Some("body delimited by the connection closing"),
            _ => None,
        };
        if let Some(why) = pass {
            self.pass(why);
            return TapAction::Relay {
                extra: MISS,
                body: false,
            };
        }
        self.state = TapState::Buffering(Capture {
            status: res.code,
            reason: res.reason.to_owned(),
            headers,
            age,
            chunked: res.framing == Framing::Chunked,
            raw: match res.framing {
                Framing::Length(n) => Vec::with_capacity(usize::try_from(n).unwrap_or(0)),
                _ => Vec::new(),
            },
        });
        TapAction::Relay {
            extra: MISS,
            body: true,
        }
    }

    fn body(&mut self, bytes: &[u8]) -> bool {
        let limit = self.limit();
        let TapState::Buffering(c) = &mut self.state else {
            return false;
        };
        let need = c.raw.len() + bytes.len();
        if need as u64 > limit {
            // Over the bound: stop keeping it and let the rest stream.
            return self.pass(TOO_LARGE);
        }
        if !c.chunked {
            // Claimed in full at the head.
            c.raw.extend_from_slice(bytes);
            return true;
        }
        // Grow by doubling up to the bound, claiming what is allocated,
        // plus the copy queued for the client.
        let capacity = c.raw.capacity();
        let target = if need > capacity {
            need.max(capacity.saturating_mul(2))
                .min(limit as usize)
                .max(need)
        } else {
            capacity
        };
        if !self
            .reservation
            .grow((target - capacity + bytes.len()) as u64)
        {
            return self.pass(FILLING);
        }
        let TapState::Buffering(c) = &mut self.state else {
            return false;
        };
        c.raw.reserve_exact(target - c.raw.len());
        c.raw.extend_from_slice(bytes);
        true
    }

    fn end(&mut self) {
        if let TapState::Buffering(_) = &self.state {
            if let TapState::Buffering(c) = std::mem::replace(&mut self.state, TapState::Idle) {
                self.store(c);
            }
        }
    }
}

/// Counts a cache hit: the total, and per service with the body bytes
/// answered from memory.
fn hit(metrics: &Metrics, svc: &ServiceCache, bytes: usize) {
    Metrics::inc(&metrics.cache_hits_total);
    svc.series.hits.inc();
    svc.series.response_bytes.inc_by(bytes as u64);
}

/// Counts a request to a cached service the upstream answers.
fn miss(metrics: &Metrics, svc: &ServiceCache) {
    Metrics::inc(&metrics.cache_misses_total);
    svc.series.misses.inc();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::store::Settings;
    use crate::wire::head::parse_response;

    fn service(max_bytes: u64) -> Arc<ServiceCache> {
        Arc::new(ServiceCache::new(
            "app1:80",
            Settings {
                max_bytes,
                default_ttl: None,
            },
            Arc::new(Metrics::default()),
        ))
    }

    fn tap_for<'a>(
        req: &'a CacheRequest,
        svc: &'a ServiceCache,
        guard: Option<FetchGuard>,
    ) -> FetchTap<'a> {
        FetchTap {
            req,
            svc,
            request_time: SystemTime::now(),
            stale: None,
            guard,
            reservation: svc.reservation(),
            state: TapState::Idle,
        }
    }

    const CHUNKED: &[u8] =
        b"HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ntransfer-encoding: chunked\r\n\r\n";

    fn head_of(raw: &[u8], tap: &mut FetchTap<'_>) -> TapAction {
        let mut st = [httparse::EMPTY_HEADER; 8];
        let res = parse_response(raw, &mut st, false).unwrap();
        tap.head(&res)
    }

    #[tokio::test]
    async fn a_body_over_the_bound_is_dropped_and_waiters_let_go_at_once() {
        let req = CacheRequest::parse(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        let svc = service(800);
        let key = svc.lookup(&req).key;
        let Join::Leader(guard) = svc.join(&key) else {
            panic!("first must lead")
        };
        let Join::Waiter(waiter) = svc.join(&key) else {
            panic!("second must wait")
        };
        let mut tap = tap_for(&req, &svc, Some(guard));
        assert_eq!(
            head_of(CHUNKED, &mut tap),
            TapAction::Relay {
                extra: MISS,
                body: true
            }
        );
        assert!(tap.body(&[b'x'; 60]));
        assert!(matches!(&tap.state, TapState::Buffering(c) if c.raw.len() == 60));
        assert!(waiter.has_changed().is_ok_and(|c| !c), "still pending");
        assert!(!tap.body(&[b'x'; 60]));
        assert!(matches!(tap.state, TapState::Passed(TOO_LARGE)));
        // The waiter is released while the body still streams.
        assert_eq!(store::wait(waiter).await, Outcome::NotStorable);
        assert!(!tap.body(&[b'x'; 60]));
        tap.end();
        assert!(matches!(tap.state, TapState::Passed(_)));
        drop(tap);
        assert_eq!(svc.weighed().2, 0, "the reservation is given back");

        // A declared length over the bound is never buffered at all.
        let mut tap = tap_for(&req, &svc, None);
        let long = b"HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: 101\r\n\r\n";
        assert_eq!(
            head_of(long, &mut tap),
            TapAction::Relay {
                extra: MISS,
                body: false
            }
        );
        // And a response that may not be stored is not buffered either.
        let mut tap = tap_for(&req, &svc, None);
        let private = b"HTTP/1.1 200 OK\r\ncache-control: private\r\ncontent-length: 1\r\n\r\n";
        assert_eq!(
            head_of(private, &mut tap),
            TapAction::Relay {
                extra: MISS,
                body: false
            }
        );
        assert!(matches!(
            tap.state,
            TapState::NotStorable(NotStorable::Private)
        ));
    }

    /// Fetches filling at once share one budget (max_bytes / 4, every kept
    /// byte counted for the stored copy and the copy queued for its
    /// client): beyond it they stream through unkept.
    #[tokio::test]
    async fn concurrent_fills_share_one_bounded_budget() {
        let svc = service(8000); // entry bound 1000, filling budget 2000
        let reqs: Vec<CacheRequest> = (0..4)
            .map(|i| {
                CacheRequest::parse(format!("GET /{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
                    .unwrap()
            })
            .collect();
        let mut taps: Vec<FetchTap<'_>> = reqs.iter().map(|r| tap_for(r, &svc, None)).collect();
        let mut kept = 0;
        for tap in &mut taps {
            head_of(CHUNKED, tap);
            for _ in 0..9 {
                if tap.body(&[b'y'; 100]) {
                    kept += 100;
                }
            }
            assert!(svc.weighed().2 <= svc.settings.filling_limit());
        }
        assert!(kept < 4 * 900, "some fills were refused: {kept}");
        assert!(taps
            .iter()
            .any(|t| matches!(t.state, TapState::Passed(FILLING))));
        let declared =
            b"HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: 900\r\n\r\n";
        let late = CacheRequest::parse(b"GET /late HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        let mut tap = tap_for(&late, &svc, None);
        assert_eq!(
            head_of(declared, &mut tap),
            TapAction::Relay {
                extra: MISS,
                body: false
            }
        );
        drop(tap);
        drop(taps);
        assert_eq!(svc.weighed().2, 0);
    }
}
