//! The cache phase of an exchange with a cached service: look up, serve a
//! hit from memory, or fetch — one fetch per key at a time, its response
//! streamed to the client and teed into the store — and revalidate stale
//! entries with a conditional request.
//!
//! ```text
//! request ─┬─ unsafe method ──────────────► relay, then invalidate the URL
//!          ├─ body / Range / OPTIONS ─────► relay (X-Cache: MISS)
//!          └─ GET / HEAD ─ lookup ─┬─ fresh ───────────► hit (Age, X-Cache: HIT)
//!                                  ├─ stale+validator ─► conditional fetch ─┬─ 304 ► refresh, hit
//!                                  │                                        └─ 200 ► relay + tee
//!                                  └─ none ─ join ─┬─ leader ─► fetch: relay + tee ─► store
//!                                                  └─ waiter ─► wait, then look again
//! ```

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::debug;

use super::freshness::{self, NotStorable, Use};
use super::key::{CacheRequest, Field, MethodClass};
use super::store::{self, FetchGuard, Join, Outcome, ServiceCache, Stored};
use crate::control::metrics::Metrics;
use crate::proxy::body::Inbound;
use crate::proxy::forward::{relay, Exchange, NoTap, Relayed, Tap, TapAction, Upstream};
use crate::proxy::head::{Framing, ResponseHead};
use crate::proxy::send::SendTimeout;
use crate::proxy::{respond, ProxyCtx};

const MISS: &str = "x-cache: MISS\r\n";
const TOO_LARGE: &str = "larger than the per-entry bound (max_bytes / 8)";
/// A waiter looks again at most this often before fetching on its own.
const ROUNDS: usize = 3;

/// Answers one request to a cached service.
pub async fn forward_cached(
    ctx: &ProxyCtx,
    svc: Arc<ServiceCache>,
    flow: &Upstream,
    client: &mut Inbound<TcpStream>,
    out_head: &[u8],
    exchange: Exchange,
) -> io::Result<bool> {
    let metrics = &ctx.metrics;
    let Some(req) = CacheRequest::parse(out_head) else {
        return pass(ctx, flow, client, out_head, exchange, &mut NoTap).await;
    };
    let head_request = match req.class {
        MethodClass::Unsafe => {
            let r = pass(ctx, flow, client, out_head, exchange, &mut NoTap).await;
            let n = svc.invalidate(&req.primary).await;
            if n > 0 {
                Metrics::inc(&metrics.cache_invalidations_total);
                debug!(service = %svc.name, key = %req.primary, entries = n, "invalidated by an unsafe method");
            }
            return r;
        }
        MethodClass::Other => return pass(ctx, flow, client, out_head, exchange, &mut NoTap).await,
        MethodClass::Read { .. } if req.bypass || exchange.framing != Framing::None => {
            Metrics::inc(&metrics.cache_misses_total);
            return pass(ctx, flow, client, out_head, exchange, &mut MissTap).await;
        }
        MethodClass::Read { head } => head,
    };

    let mut coalesce = true;
    for _ in 0..ROUNDS {
        let found = svc.lookup(&req).await;
        let stale = match found.entry {
            Some(entry) => match freshness::usable(&entry.facts, &req.facts, SystemTime::now()) {
                Use::Fresh(age) => {
                    Metrics::inc(&metrics.cache_hits_total);
                    return serve_hit(client, &req, &entry, age, &exchange, head_request).await;
                }
                Use::Revalidate => Some(entry),
                Use::Fetch => None,
            },
            None => None,
        };
        if req.facts.cc.only_if_cached {
            Metrics::inc(&metrics.cache_misses_total);
            let close = !exchange.keep_alive;
            client
                .io
                .write_all(&respond::simple(
                    504,
                    "not in the cache (only-if-cached)",
                    close,
                ))
                .await?;
            return Ok(!close);
        }
        if (head_request && stale.is_none()) || req.facts.cc.no_store {
            // A HEAD response has no body to store (the next GET fills the
            // entry); a no-store request may not fill it: neither should
            // make other requests wait for it.
            Metrics::inc(&metrics.cache_misses_total);
            return pass(ctx, flow, client, out_head, exchange, &mut MissTap).await;
        }
        let guard = if coalesce {
            match svc.join(&found.key) {
                Join::Leader(g) => Some(g),
                Join::Waiter(rx) => {
                    Metrics::inc(&metrics.cache_coalesced_total);
                    match store::wait(rx).await {
                        Outcome::Stored => coalesce = false,
                        Outcome::NotStorable => {
                            Metrics::inc(&metrics.cache_misses_total);
                            return pass(ctx, flow, client, out_head, exchange, &mut MissTap).await;
                        }
                        Outcome::Failed | Outcome::Pending => {}
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
    Metrics::inc(&metrics.cache_misses_total);
    pass(ctx, flow, client, out_head, exchange, &mut MissTap).await
}

/// Relays without storing.
async fn pass(
    ctx: &ProxyCtx,
    flow: &Upstream,
    client: &mut Inbound<TcpStream>,
    out_head: &[u8],
    exchange: Exchange,
    tap: &mut dyn Tap,
) -> io::Result<bool> {
    let relayed = relay(ctx, flow, client, out_head, exchange, tap).await?;
    Ok(relayed.keep && !relayed.intercepted)
}

/// Fetches from the upstream for storage (conditionally when `stale` has
/// validators), relaying to this client as the response arrives.
#[allow(clippy::too_many_arguments)]
async fn fetch(
    ctx: &ProxyCtx,
    svc: &ServiceCache,
    flow: &Upstream,
    client: &mut Inbound<TcpStream>,
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
    let request_time = SystemTime::now();
    let mut tap = FetchTap {
        req,
        settings_ttl: svc.settings.default_ttl,
        limit: svc.settings.entry_limit(),
        revalidating: stale.is_some(),
        guard,
        state: TapState::Idle,
    };
    let relayed = relay(ctx, flow, client, &head, exchange, &mut tap).await?;
    let response_time = SystemTime::now();
    match relayed {
        Relayed {
            keep,
            intercepted: false,
            ..
        } => {
            Metrics::inc(&metrics.cache_misses_total);
            match std::mem::replace(&mut tap.state, TapState::Idle) {
                TapState::Complete(resp) => {
                    let body = match resp.chunked {
                        true => store::dechunk(&resp.raw).map(Bytes::from),
                        false => Some(Bytes::from(resp.raw)),
                    };
                    let built = body.ok_or(None).and_then(|body| {
                        Stored::build(
                            &req.facts,
                            resp.status,
                            &resp.reason,
                            resp.headers,
                            resp.age,
                            body,
                            svc.settings.default_ttl,
                            request_time,
                            response_time,
                        )
                        .map_err(Some)
                    });
                    match built {
                        Ok(entry) => {
                            svc.insert(req, Arc::new(entry)).await;
                            tap.release(Outcome::Stored);
                            debug!(service = %svc.name, key = %req.primary, "stored");
                        }
                        Err(why) => {
                            tap.release(Outcome::NotStorable);
                            debug!(service = %svc.name, key = %req.primary, reason = ?why, "not stored");
                        }
                    }
                }
                TapState::NotStorable(why) => {
                    debug!(service = %svc.name, key = %req.primary, reason = %why, "not stored");
                }
                TapState::Passed(why) => {
                    debug!(service = %svc.name, key = %req.primary, limit = tap.limit, reason = why, "not stored");
                }
                _ => {}
            }
            Ok(keep)
        }
        Relayed {
            intercepted: true, ..
        } => {
            // 304 to our conditional request: the stored body is current.
            Metrics::inc(&metrics.cache_revalidations_total);
            Metrics::inc(&metrics.cache_hits_total);
            let (Some(stale), TapState::NotModified { headers, age }) =
                (stale, std::mem::replace(&mut tap.state, TapState::Idle))
            else {
                // Only a revalidation intercepts; never reached otherwise.
                return Ok(false);
            };
            let entry = match stale.refreshed(
                &req.facts,
                &headers,
                age,
                svc.settings.default_ttl,
                request_time,
                response_time,
            ) {
                Ok(e) => {
                    let e = Arc::new(e);
                    svc.insert(req, e.clone()).await;
                    tap.release(Outcome::Stored);
                    e
                }
                Err(why) => {
                    // Usable for this request, not for later ones.
                    svc.invalidate(&req.primary).await;
                    tap.release(Outcome::NotStorable);
                    debug!(service = %svc.name, key = %req.primary, reason = %why, "revalidated, no longer storable");
                    stale
                }
            };
            let age = freshness::current_age(&entry.facts.age, SystemTime::now());
            let head_request = req.class == (MethodClass::Read { head: true });
            serve_hit(client, req, &entry, age, &exchange, head_request).await
        }
    }
}

/// Writes a stored response (or a 304 when the client's own conditional
/// matches it) with `Age` and `X-Cache: HIT`.
async fn serve_hit(
    client: &mut Inbound<TcpStream>,
    req: &CacheRequest,
    entry: &Stored,
    age: Duration,
    exchange: &Exchange,
    head_request: bool,
) -> io::Result<bool> {
    let keep_alive = exchange.keep_alive;
    let not_modified = client_not_modified(req, entry);
    let out = hit_head(entry, age, keep_alive, not_modified);
    // A client that stops reading a large entry is cut after send_timeout_ms.
    let mut to_client = SendTimeout::new(&mut client.io, exchange.send_timeout);
    to_client.write_all(&out).await?;
    if !(head_request || not_modified || bodyless(entry.status)) {
        to_client.write_all(&entry.body).await?;
    }
    to_client.flush().await?;
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

/// The head of a hit.
fn hit_head(entry: &Stored, age: Duration, keep_alive: bool, not_modified: bool) -> Vec<u8> {
    // Fields a 304 carries (RFC 9110 §15.4.5).
    const FOR_304: [&str; 6] = [
        "cache-control",
        "content-location",
        "date",
        "etag",
        "expires",
        "vary",
    ];
    let mut out = Vec::with_capacity(256 + entry.headers.len() * 32);
    if not_modified {
        out.extend_from_slice(b"HTTP/1.1 304 Not Modified\r\n");
    } else {
        out.extend_from_slice(format!("HTTP/1.1 {} {}\r\n", entry.status, entry.reason).as_bytes());
    }
    for (name, value) in &entry.headers {
        if not_modified && !FOR_304.iter().any(|f| name.eq_ignore_ascii_case(f)) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(
        format!("age: {}\r\nx-cache: HIT\r\n", freshness::age_header(age)).as_bytes(),
    );
    if !not_modified && !bodyless(entry.status) {
        out.extend_from_slice(format!("content-length: {}\r\n", entry.body.len()).as_bytes());
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
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
    fn body(&mut self, _: &[u8]) {}
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
    Buffering(Capture),
    Complete(Capture),
    NotModified {
        headers: Vec<Field>,
        age: Option<u64>,
    },
}

/// The tap of a fetch: decides at the response head whether the response
/// may be stored, buffers its body up to the per-entry bound while it is
/// relayed, and lets waiting requests go as soon as it knows they cannot
/// be served from this response.
struct FetchTap<'a> {
    req: &'a CacheRequest,
    settings_ttl: Option<Duration>,
    limit: u64,
    revalidating: bool,
    guard: Option<FetchGuard>,
    state: TapState,
}

impl FetchTap<'_> {
    fn release(&mut self, outcome: Outcome) {
        if let Some(g) = self.guard.as_mut() {
            g.release(outcome);
        }
    }
}

impl Tap for FetchTap<'_> {
    fn head(&mut self, res: &ResponseHead<'_, '_>) -> TapAction {
        let headers = store::storable_fields(res.headers);
        let age = store::age_field(res.headers);
        if self.revalidating && res.code == 304 {
            self.state = TapState::NotModified { headers, age };
            return TapAction::Intercept;
        }
        let facts = store::response_facts(res.code, &headers, age);
        let verdict = freshness::storable(
            &self.req.facts,
            &facts,
            self.settings_ttl,
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
            Framing::Length(n) if n > self.limit => Some(TOO_LARGE),
            // Its end cannot be told from a truncation.
            Framing::UntilClose => Some("body delimited by the connection closing"),
            _ => None,
        };
        if let Some(why) = pass {
            self.state = TapState::Passed(why);
            self.release(Outcome::NotStorable);
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
            // A declared length is within the bound here: one allocation.
            raw: match res.framing {
                Framing::Length(n) => Vec::with_capacity(n as usize),
                _ => Vec::new(),
            },
        });
        TapAction::Relay {
            extra: MISS,
            body: true,
        }
    }

    fn body(&mut self, bytes: &[u8]) {
        let TapState::Buffering(c) = &mut self.state else {
            return;
        };
        if (c.raw.len() + bytes.len()) as u64 > self.limit {
            // Over the bound: stop buffering (the memory goes at once) and
            // let the rest stream through.
            self.state = TapState::Passed(TOO_LARGE);
            self.release(Outcome::NotStorable);
            return;
        }
        c.raw.extend_from_slice(bytes);
    }

    fn end(&mut self) {
        if let TapState::Buffering(_) = &self.state {
            if let TapState::Buffering(c) = std::mem::replace(&mut self.state, TapState::Idle) {
                self.state = TapState::Complete(c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::store::Settings;
    use crate::proxy::head::parse_response;

    fn tap_for(req: &CacheRequest, guard: Option<FetchGuard>) -> FetchTap<'_> {
        FetchTap {
            req,
            settings_ttl: None,
            limit: 100,
            revalidating: false,
            guard,
            state: TapState::Idle,
        }
    }

    #[tokio::test]
    async fn a_body_over_the_bound_is_dropped_and_waiters_let_go_at_once() {
        let req = CacheRequest::parse(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        let svc = Arc::new(ServiceCache::new(
            "app1:80",
            Settings {
                max_bytes: 800,
                default_ttl: None,
            },
            Arc::new(Metrics::default()),
        ));
        let key = svc.lookup(&req).await.key;
        let Join::Leader(guard) = svc.join(&key) else {
            panic!("first must lead")
        };
        let Join::Waiter(waiter) = svc.join(&key) else {
            panic!("second must wait")
        };
        let mut tap = tap_for(&req, Some(guard));
        let mut st = [httparse::EMPTY_HEADER; 8];
        let chunked =
            b"HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ntransfer-encoding: chunked\r\n\r\n";
        let res = parse_response(chunked, &mut st, false).unwrap();
        assert_eq!(
            tap.head(&res),
            TapAction::Relay {
                extra: MISS,
                body: true
            }
        );
        tap.body(&[b'x'; 60]);
        assert!(matches!(&tap.state, TapState::Buffering(c) if c.raw.len() == 60));
        assert!(waiter.has_changed().is_ok_and(|c| !c), "still pending");
        tap.body(&[b'x'; 60]);
        assert!(matches!(tap.state, TapState::Passed(TOO_LARGE)));
        // The waiter is released while the body still streams.
        assert_eq!(store::wait(waiter).await, Outcome::NotStorable);
        tap.body(&[b'x'; 60]);
        tap.end();
        assert!(matches!(tap.state, TapState::Passed(_)));

        // A declared length over the bound is never buffered at all.
        let mut tap = tap_for(&req, None);
        let mut st = [httparse::EMPTY_HEADER; 8];
        let long = b"HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: 101\r\n\r\n";
        let res = parse_response(long, &mut st, false).unwrap();
        assert_eq!(
            tap.head(&res),
            TapAction::Relay {
                extra: MISS,
                body: false
            }
        );
        // And a response that may not be stored is not buffered either.
        let mut tap = tap_for(&req, None);
        let mut st = [httparse::EMPTY_HEADER; 8];
        let private = b"HTTP/1.1 200 OK\r\ncache-control: private\r\ncontent-length: 1\r\n\r\n";
        let res = parse_response(private, &mut st, false).unwrap();
        assert_eq!(
            tap.head(&res),
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
}
