//! The phases after the decision, run once for every protocol and entry
//! path:
//!
//! ```text
//! decide (entry path: access rules, or frontend route)   ─ conn.rs / frontend.rs
//!   → body: received and checked up to request_buffer_bytes ─ buffer.rs
//!   → target: the original destination, or a pool member
//!     picked (and held, so least-connections counts it)
//!     for each attempt, retried per the pool              ─ here
//!   → cache (services listed under `cache`)               ─ cached.rs
//!   → upstream: HTTP/1.1 or h2c, connect/response timeouts ─ forward.rs, upstream_h2.rs
//!   → response to the client (HTTP/1 or HTTP/2)            ─ downstream.rs
//! ```
//!
//! The client is a [`Downstream`] (an HTTP/1 connection or an HTTP/2
//! stream), so an HTTP/2 client gets the cache, retries and the pool's
//! timeouts exactly as an HTTP/1 client does, and reaches members that
//! speak only HTTP/1.1.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, warn};

use super::buffer;
use super::downstream::Downstream;
use super::exchange::{Exchange, Upstream};
use super::outbound::method_and_path;
use super::refusal::{At, Refusal};
use super::relay::{self, forward_once};
use super::tap::NoTap;
use super::ProxyCtx;
use crate::balance::Outcome;
use crate::state::metrics::labelled::{ACCESS, FRONTEND};
use crate::state::metrics::series::Series;
use crate::state::metrics::Metrics;
use crate::state::snapshot::Snapshot;
use crate::wire::head::Framing;

/// Where a decided request goes.
pub enum Target {
    /// An access flow: the original destination.
    Direct(SocketAddr),
    /// A frontend route: a member of a pool, picked per attempt.
    Pool(PoolTarget),
}

/// A frontend's routed request.
pub struct PoolTarget {
    /// The rules the route was decided by (the pool's members and health).
    pub snap: Arc<Snapshot>,
    /// The metric series of `snap`'s rules.
    pub series: Arc<Series>,
    /// The frontend (into `snap.lb.frontends`) and its name.
    pub fe: usize,
    pub frontend: Arc<str>,
    pub pool: usize,
    /// Members this client may not reach (a managed container's access
    /// rules): never picked.
    pub excluded: Vec<usize>,
    /// The balancing key (hash policies).
    pub key: u64,
    /// Safe to send again after a member saw it (idempotent, no body).
    pub replayable: bool,
}

/// Runs the phases after the decision for one request whose upstream head
/// is `out_head`. `Ok(true)`: an HTTP/1 client connection may carry
/// another request.
pub async fn serve(
    ctx: &ProxyCtx,
    peer: SocketAddr,
    client: &mut Downstream<'_>,
    out_head: &[u8],
    mut exchange: Exchange,
    target: Target,
) -> io::Result<bool> {
    let metrics: &Metrics = &ctx.metrics;
    // The body is received and checked before an upstream is picked and
    // connected: a malformed or trickled body never reaches one.
    let shown: &(dyn std::fmt::Display + Sync) = match &target {
        Target::Direct(dst) => dst,
        Target::Pool(p) => &p.frontend,
    };
    let started = Instant::now();
    if let Some(keep) = buffer::receive(ctx, peer, shown, out_head, client, &mut exchange).await? {
        return Ok(keep);
    }
    let (path, done) = match target {
        Target::Direct(dst) => {
            let up = Instant::now();
            let done = forward(ctx, &Upstream { peer, dst }, client, out_head, exchange).await;
            metrics.labelled.access_upstream_time(up.elapsed());
            (ACCESS, done)
        }
        Target::Pool(p) => (
            FRONTEND,
            to_pool(ctx, peer, client, out_head, exchange, &p).await,
        ),
    };
    metrics.labelled.request_time(path, started.elapsed());
    done
}

/// Sends one authorised request (`out_head`, then the client's body) to
/// `flow.dst` and relays the response. `Ok(true)`: the client connection
/// may carry another request. A destination listed under `cache` is
/// answered through [`crate::cache`], which may serve it from memory. An
/// upstream failure is logged and answered with 502/504 here.
pub async fn forward(
    ctx: &ProxyCtx,
    flow: &Upstream,
    client: &mut Downstream<'_>,
    out_head: &[u8],
    exchange: Exchange,
) -> io::Result<bool> {
    if exchange.tunnel.is_none() {
        if let Some(service) = ctx.cache.service_for(&ctx.state.load(), flow.dst) {
            return super::cached::forward_cached(ctx, service, flow, client, out_head, exchange)
                .await;
        }
    }
    let relayed = relay::relay(ctx, flow, client, out_head, exchange, &mut NoTap).await?;
    if let Some(status) = relayed.status {
        ctx.metrics.labelled.access_response(status);
    }
    Ok(relayed.keep)
}

/// A pool member per attempt: failures are counted against the member
/// (passive health) and retried on another one when the pool allows it and
/// it is safe (nothing was sent, or the request is replayable); the pick is
/// held until the exchange ends.
async fn to_pool(
    ctx: &ProxyCtx,
    peer: SocketAddr,
    client: &mut Downstream<'_>,
    out_head: &[u8],
    exchange: Exchange,
    t: &PoolTarget,
) -> io::Result<bool> {
    let metrics: &Metrics = &ctx.metrics;
    let snap = &t.snap;
    let Some(pool) = snap.lb.pool(t.pool) else {
        let r = Refusal::Internal("route names a missing pool");
        r.record(metrics, &At::default());
        client.refuse(&r, true).await?;
        return Ok(false);
    };
    // A refusal keeps the connection only if no body is left unread.
    let close_on_refusal = exchange.framing != Framing::None || !exchange.keep_alive;
    let mut tried: Vec<usize> = t.excluded.clone();
    let mut last = None;
    for attempt in 0..=pool.retries {
        let Some(pick) = pool.pick(&snap.dir, t.key, &tried) else {
            break;
        };
        if attempt > 0 {
            Metrics::inc(&metrics.upstream_retries_total);
        }
        let flow = Upstream {
            peer,
            dst: pick.addr,
        };
        let cached = exchange.tunnel.is_none();
        if let Some(service) = cached
            .then(|| ctx.cache.service_for(snap, pick.addr))
            .flatten()
        {
            // A cached service (tunnels never are): the cache answers (hit, or one fetch for
            // every concurrent miss); no retry on another member.
            let keep =
                super::cached::forward_cached(ctx, service, &flow, client, out_head, exchange)
                    .await?;
            pool.report(&snap.dir, pick.index, Outcome::Neutral);
            return Ok(keep);
        }
        let up = Instant::now();
        let once = forward_once(ctx, &flow, client, out_head, exchange, &mut NoTap).await?;
        t.series.upstream_time(t.pool, up.elapsed());
        match once {
            Ok(relayed) => {
                if let Some(status) = relayed.status {
                    t.series.response(t.fe, t.pool, pick.index, status);
                }
                // A status the proxy answered itself (the client's body
                // was refused) says nothing about the member.
                let outcome = relayed.status.map_or(Outcome::Neutral, Outcome::of_status);
                pool.report(&snap.dir, pick.index, outcome);
                debug!(frontend = %t.frontend, pool = %pool.name, member = %pick.member.target, status = ?relayed.status, "frontend request forwarded");
                return Ok(relayed.keep);
            }
            Err(f) => {
                Metrics::inc(&metrics.upstream_errors_total);
                let outcome = if f.request_sent {
                    Outcome::GatewayFailure
                } else {
                    Outcome::ConnectFailure
                };
                pool.report(&snap.dir, pick.index, outcome);
                let retry = attempt < pool.retries
                    && !f.client_touched
                    && (!f.request_sent || t.replayable);
                let (method, path) = method_and_path(out_head);
                warn!(frontend = %t.frontend, pool = %pool.name, member = %pick.member.target, destination = %pick.addr, method, path, status = f.code, error = %f.why, retrying = retry, "upstream failed");
                tried.push(pick.index);
                last = Some((f, pick.addr));
                if !retry {
                    break;
                }
            }
        }
    }
    match last {
        // Each failed attempt was counted and logged with its member.
        Some((f, addr)) => {
            client.refuse(&f.refusal(addr), true).await?;
            Ok(false)
        }
        None => {
            let r = Refusal::NoMember {
                pool: pool.name.clone(),
            };
            let (method, path) = method_and_path(out_head);
            let at = At {
                peer: Some(peer),
                destination: Some(&t.frontend),
                method: Some(method),
                path: Some(path),
                ..At::default()
            };
            r.record(metrics, &at);
            client.refuse(&r, close_on_refusal).await?;
            Ok(!close_on_refusal)
        }
    }
}
