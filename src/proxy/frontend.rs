//! Frontend listeners: where outside clients enter (`frontends` in the
//! rule file), routed by Host and path to a pool of containers.
//!
//! On a TLS frontend each connection first makes its TLS handshake
//! ([`super::tls`], the certificates of the snapshot published at accept);
//! the requests on it then go through the same phases, forwarded with
//! `X-Forwarded-Proto: https`. A TLS frontend's `redirect_http` listener
//! is served here too, by [`super::redirect`] (a `308` to HTTPS, nothing
//! forwarded).
//!
//! Phases per request, sharing phases 1-2 and 4-5 with the access flows:
//! 1. **read head** — bounded by the frontend's (else the global) limits;
//! 2. **parse** — strict RFC 9112 ([`crate::wire::head`]): 400/431/501;
//! 3. **route** — host from `Host` (or the absolute-form authority, which
//!    must agree with it), normalised path, then the compiled
//!    [`RouteTable`](crate::policy::routes::RouteTable): `404` without a
//!    route; then a member of the pool ([`crate::balance`]): `503`
//!    without a healthy one;
//! 4. **forward** — the head written from the checked request
//!    ([`super::outbound`]: normalised path, framing restated, hop-by-hop
//!    headers and any client `X-Portcullis-Source` dropped, `Host` passed
//!    through, `X-Forwarded-For` / `Forwarded` appended to,
//!    `X-Forwarded-Proto` set) over the member's keep-alive pool;
//! 5. **respond** — as for access flows. An upstream failure (connect,
//!    reset, timeout, or a 502/503/504 it answered) is logged once with
//!    pool and member, counted against the member (passive ejection,
//!    [`crate::balance::Outcome`]), and the request goes to
//!    another member if `retries` allows and it is safe: nothing was sent
//!    yet, or the method is idempotent and had no body. Otherwise the
//!    client gets `502`, or `504` for a timeout.
//!
//! A WebSocket upgrade is routed like its GET and tunnelled once the member
//! answers 101 ([`super::forward`]); CONNECT gets 501. A client opening
//! with the HTTP/2 preface is served by [`super::h2`], each stream decided
//! by [`FrontendStreams`]: the same [`route`], a pool pick, and forwarding
//! over HTTP/2 with the member's health reported.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::rustls::ServerConfig;
use tracing::{debug, info, warn};

use super::client_io::{ClientIo, ConnLimits};
use super::connection::{self, Decision, EntryPath, NotAdmitted};
use super::downstream::ClientProtocol;
use super::exchange::{Exchange, LimitScope};
use super::limits;
use super::limits::{ConnectionPermit, Effective, SourceName};
use super::outbound;
use super::pipeline::{PoolTarget, Target};
use super::redirect;
use super::refusal::{At, Refusal};
use super::tls;
use super::{ActiveGuard, ProxyCtx};
use crate::balance::{PickInput, Pool};
use crate::policy::access::{Access, FlowOwner, HttpRequest};
use crate::policy::route_decision::{FrontendRequest, RouteRefusal, Routed};
use crate::policy::routes::{RouteMatch, RouteTable};
use crate::policy::Policy;
use crate::policy::{ContainerId, L4};
use crate::state::metrics::series::Series;
use crate::state::metrics::Metrics;
use crate::state::snapshot::LimitOwner;
use crate::wire::head::{self, Framing, Tunnel};

// === listeners ===

/// The frontend listeners of the daemon, by listen address.
#[derive(Debug, Default)]
pub struct Listeners {
    running: HashMap<SocketAddr, Running>,
}

#[derive(Debug)]
struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Sockets bound for a new set of listen addresses, not yet serving.
#[derive(Debug)]
pub struct Prepared {
    wanted: Vec<SocketAddr>,
    bound: Vec<(SocketAddr, TcpListener)>,
}

/// A listen address that cannot be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} (frontend): {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: io::Error,
}

impl Listeners {
    /// Binds every address of `wanted` not already served. Nothing changes
    /// for the running listeners, so a failure leaves the daemon as it was.
    pub async fn prepare(&self, wanted: &[SocketAddr]) -> Result<Prepared, BindError> {
        let mut bound = Vec::new();
        for &addr in wanted {
            if self.running.contains_key(&addr) {
                continue;
            }
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| BindError { addr, source })?;
            bound.push((addr, l));
        }
        Ok(Prepared {
            wanted: wanted.to_vec(),
            bound,
        })
    }

    /// Starts serving the newly bound addresses and stops the listeners
    /// no longer wanted (their open connections end after the current
    /// exchange, as their frontend is gone from the rules).
    pub fn commit(&mut self, p: Prepared, ctx: &Arc<ProxyCtx>) {
        let gone: Vec<SocketAddr> = self
            .running
            .keys()
            .filter(|a| !p.wanted.contains(a))
            .copied()
            .collect();
        for addr in gone {
            if let Some(r) = self.running.remove(&addr) {
                let _ = r.stop.send(true);
                info!(listen = %addr, "frontend listener closed");
            }
        }
        for (addr, listener) in p.bound {
            let (stop, rx) = watch::channel(false);
            let task = tokio::spawn(serve(listener, addr, ctx.clone(), rx));
            info!(listen = %addr, "frontend listening");
            self.running.insert(addr, Running { stop, task });
        }
    }

    /// Stops accepting on every listener and waits for the accept loops.
    pub async fn stop_all(&mut self) {
        for (_, r) in self.running.drain() {
            let _ = r.stop.send(true);
            let _ = r.task.await;
        }
    }
}

/// Accepts clients of the frontend configured at `listen`.
async fn serve(
    listener: TcpListener,
    listen: SocketAddr,
    ctx: Arc<ProxyCtx>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        warn!(listen = %listen, error = %e, "frontend accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                ctx.active.fetch_add(1, Ordering::Relaxed);
                let guard = ActiveGuard(ctx.clone());
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let ctx = guard.0.clone();
                    if let Some((port, lim)) = redirect_of(&ctx, listen) {
                        return redirect::serve(ClientIo::new(stream), peer, port, lim).await;
                    }
                    let https = tls_of(&ctx, listen);
                    let mut entry = FrontendConn {
                        peer,
                        listen,
                        https: false,
                        hsts: None,
                        admitted: Mutex::new(None),
                    };
                    let io = match https {
                        None => ClientIo::new(stream),
                        Some((config, name, timeout, hsts)) => {
                            // Admitted before the handshake, the costly part:
                            // `max_connections_per_source` bounds handshakes
                            // too. Over it, the connection closes unanswered
                            // (a 429 would need the handshake).
                            match entry.admit(&ctx) {
                                Ok(Some(p)) => entry.admitted = Mutex::new(Some(p)),
                                Ok(None) => return,
                                Err(n) => {
                                    connection::not_admitted(&ctx, &entry, n);
                                    return;
                                }
                            }
                            let at = tls::Handshaking { frontend: &name, peer, timeout };
                            let Some(s) = tls::handshake(&ctx.metrics, config, stream, at).await else {
                                return;
                            };
                            entry.https = true;
                            entry.hsts = hsts;
                            ClientIo::new(s)
                        }
                    };
                    connection::serve(ctx, io, entry).await;
                    drop(guard);
                });
            }
        }
    }
}

/// Where the `redirect_http` listener at `listen` sends clients (the TLS
/// frontend's port) and its frontend's limits; `None`: not one.
fn redirect_of(ctx: &ProxyCtx, listen: SocketAddr) -> Option<(u16, ConnLimits)> {
    let snap = ctx.state.load();
    let tls = snap.tls.at_redirect(listen)?;
    let fe = snap.lb.frontend_at(tls.listen)?;
    Some((
        tls.listen.port(),
        ConnLimits::from(&limits_for(&snap.policy, fe)),
    ))
}

/// Every address the frontends of these rules listen on: each frontend's
/// `listen` and each TLS frontend's `redirect_http`.
pub fn listen_addrs(
    lb: &crate::balance::Balancer,
    tls: &crate::tls::Certificates,
) -> Vec<SocketAddr> {
    let mut out = lb.listen_addrs();
    out.extend(tls.redirect_addrs());
    out
}

/// The TLS configuration of the frontend at `listen` as published now
/// (`None`: it speaks plain HTTP), its name and its handshake timeout.
type TlsAt = (
    Arc<ServerConfig>,
    Arc<str>,
    Duration,
    Option<crate::tls::Hsts>,
);

fn tls_of(ctx: &ProxyCtx, listen: SocketAddr) -> Option<TlsAt> {
    let snap = ctx.state.load();
    let tls = snap.tls.at(listen)?;
    let timeout = snap
        .lb
        .frontend_at(listen)
        .map_or_else(
            || limits::effective_over(&snap.policy.limits, None),
            |fe| limits_for(&snap.policy, fe),
        )
        .header_timeout;
    Some((tls.config.clone(), tls.name.clone(), timeout, tls.hsts))
}

/// A client of a frontend: the entry path of frontends. Limits count per
/// client address on this frontend.
struct FrontendConn {
    peer: SocketAddr,
    listen: SocketAddr,
    /// The client came over TLS (`X-Forwarded-Proto: https`).
    https: bool,
    /// The TLS frontend's `hsts` when the connection was accepted.
    hsts: Option<crate::tls::Hsts>,
    /// Counted already (before a TLS handshake): what `admit` hands out.
    admitted: Mutex<Option<ConnectionPermit>>,
}

impl EntryPath for FrontendConn {
    const PATH: &'static str = crate::state::metrics::labelled::FRONTEND;

    fn admit(&self, ctx: &Arc<ProxyCtx>) -> Result<Option<ConnectionPermit>, NotAdmitted> {
        if let Some(p) = self.admitted.lock().ok().and_then(|mut a| a.take()) {
            return Ok(Some(p));
        }
        let snap = ctx.state.load();
        let Some(fe) = snap.lb.frontend_at(self.listen) else {
            return Ok(None);
        };
        let lim = limits::effective_over(&snap.policy.limits, Some(&fe.limits));
        match ctx
            .sources
            .open(client_key(self.peer, self.listen), lim.max_connections)
        {
            Ok(p) => Ok(Some(p)),
            Err(open) => Err(NotAdmitted {
                open,
                limit: lim.max_connections,
                source: SourceName::of(&snap.policy, &snap.dir, self.peer.ip()).to_string(),
                destination: fe.name.to_string(),
            }),
        }
    }

    fn limits(&self, ctx: &ProxyCtx) -> ConnLimits {
        let snap = ctx.state.load();
        match snap.lb.frontend_at(self.listen) {
            Some(fe) => ConnLimits::from(&limits_for(&snap.policy, fe)),
            // Removed by a reload: the global limits.
            None => ConnLimits::from(&limits::effective_over(&snap.policy.limits, None)),
        }
    }

    fn decide(
        &self,
        ctx: &ProxyCtx,
        req: &head::RequestHead<'_, '_>,
        _client: ClientProtocol,
        out_head: &mut Vec<u8>,
    ) -> Decision {
        let (peer, listen) = (self.peer, self.listen);
        let metrics: &Metrics = &ctx.metrics;
        let snap = ctx.state.load_full();
        let Some((fe_index, fe)) = snap.lb.frontend_index_at(listen) else {
            let r = Refusal::NoRoute("frontend removed by a reload".into());
            r.record(metrics, &At::default());
            return Decision::Refuse {
                refusal: r,
                close: true,
            };
        };
        Metrics::inc(&metrics.frontend_requests_total);
        let rate = limits::effective_over(&snap.policy.limits, Some(&fe.limits)).rate;
        if rate.is_some_and(|r| {
            !ctx.sources
                .take_token(client_key(peer, listen), r, tokio::time::Instant::now())
        }) {
            let limit_at = snap.limit_ref(LimitOwner::Frontend(fe_index), "requests_per_second");
            let source = SourceName::of(&snap.policy, &snap.dir, peer.ip());
            let at = At {
                source: Some(&source),
                peer: Some(peer),
                destination: Some(&fe.name),
                method: Some(req.method),
                path: Some(req.target),
                limit_at: limit_at.as_ref(),
            };
            Refusal::RateLimited.record(metrics, &at);
            return Decision::Refuse {
                refusal: Refusal::RateLimited,
                close: true,
            };
        }
        let lim = limits_for(&snap.policy, fe);
        let series = metrics.labelled.series.of(&snap, &metrics.labelled);
        let at = Frontend {
            snap: &snap,
            fe,
            index: fe_index,
            series: &series,
            https: self.https,
        };
        match route(&at, peer, listen, req, &lim, out_head, metrics) {
            Plan::Refuse { refusal, close } => Decision::Refuse { refusal, close },
            Plan::Forward {
                pool,
                excluded,
                key,
                exchange,
                replayable,
            } => Decision::Forward {
                exchange: Exchange {
                    limits: LimitScope {
                        version: snap.version,
                        owner: LimitOwner::Frontend(fe_index),
                    },
                    ..exchange
                },
                target: Target::Pool(PoolTarget {
                    frontend: fe.label.clone(),
                    fe: fe_index,
                    snap: snap.clone(),
                    series: series.clone(),
                    pool,
                    excluded,
                    key,
                    replayable,
                }),
            },
        }
    }

    fn peer(&self) -> SocketAddr {
        self.peer
    }

    fn limit_ref(&self, ctx: &ProxyCtx, field: &str) -> Option<crate::rules::RuleRef> {
        let snap = ctx.state.load();
        // A frontend a reload removed is held to the top-level limits.
        let owner = snap
            .lb
            .frontend_index_at(self.listen)
            .map_or(LimitOwner::Unowned, |(i, _)| LimitOwner::Frontend(i));
        snap.limit_ref(owner, field)
    }

    fn hsts(&self) -> Option<crate::tls::Hsts> {
        self.hsts
    }

    fn endpoints(&self, ctx: &ProxyCtx) -> (String, String) {
        let snap = ctx.state.load();
        let frontend = snap
            .lb
            .frontend_at(self.listen)
            .map_or_else(|| self.listen.to_string(), |fe| fe.name.to_string());
        let source = SourceName::of(&snap.policy, &snap.dir, self.peer.ip());
        (source.to_string(), frontend)
    }
}

/// The per-client limit key of a frontend connection.
fn client_key(peer: SocketAddr, listen: SocketAddr) -> limits::Key {
    limits::Key {
        source: limits::Source::Address(peer.ip().to_canonical()),
        scope: limits::Scope::Frontend(listen),
    }
}

/// The limits of a frontend: its own `limits` over the global ones.
fn limits_for(policy: &Policy, fe: &RouteTable) -> Effective {
    limits::effective_over(&policy.limits, Some(&fe.limits))
}

/// What routing decided, owning what the forward phase needs.
enum Plan {
    Forward {
        pool: usize,
        /// Members the client may not reach (see [`members_out_of_reach`]).
        excluded: Vec<usize>,
        key: u64,
        exchange: Exchange,
        /// Safe to send again after the upstream saw it (idempotent, no body).
        replayable: bool,
    },
    /// Already recorded (counted and logged); to be answered.
    Refuse { refusal: Refusal, close: bool },
}

/// Fields of the frontend's upstream head the proxy restates itself.
const FORWARDING: [&str; 3] = ["x-forwarded-for", "x-forwarded-proto", "forwarded"];

#[cfg(test)]
#[path = "decide_props.rs"]
mod decide_props;

/// The frontend a request came in on, in the rules it is decided by.
struct Frontend<'a> {
    snap: &'a crate::state::snapshot::Snapshot,
    fe: &'a RouteTable,
    /// `fe`'s index in `snap.lb.frontends`.
    index: usize,
    /// The metric series of `snap`'s rules.
    series: &'a Series,
    /// The client connection is TLS.
    https: bool,
}

/// Phase 3: route and prepare the upstream head in `out_head`.
fn route(
    at: &Frontend<'_>,
    peer: SocketAddr,
    listen: SocketAddr,
    req: &head::RequestHead<'_, '_>,
    lim: &Effective,
    out_head: &mut Vec<u8>,
    metrics: &Metrics,
) -> Plan {
    let (snap, fe) = (at.snap, at.fe);
    let has_body = req.framing != Framing::None;
    let refuse = |refusal: Refusal, path: &str| {
        // Named only when refusing: no directory lookup per routed request.
        let source = SourceName::of(&snap.policy, &snap.dir, peer.ip());
        let at = At {
            source: Some(&source),
            peer: Some(peer),
            destination: Some(&fe.name),
            method: Some(req.method),
            path: Some(path),
            ..At::default()
        };
        refusal.record(metrics, &at);
        let code = refusal.status();
        let close = has_body || !req.keep_alive || code == 400 || code == 501;
        Plan::Refuse { refusal, close }
    };
    // The decision is `RouteTable::decide`, the function `explain
    // --frontend` and the demo answer with. A WebSocket upgrade is routed
    // like the GET it is and tunnelled once the member answers 101;
    // CONNECT is refused there (501). Other upgrades (h2c) are ignored,
    // their headers being hop-by-hop.
    let request = FrontendRequest {
        method: req.method,
        target: req.target,
        headers: req.headers,
    };
    let routed = match fe.decide(&snap.policy.fields, &request) {
        Ok(r) => r,
        Err(e) => {
            let refusal = match &e {
                RouteRefusal::NoRoute { .. } => Refusal::NoRoute(e.to_string()),
                RouteRefusal::Connect => Refusal::Unsupported(
                    "CONNECT is not supported on frontends (they route by path; no forward proxying)",
                ),
                RouteRefusal::Fields(x) => Refusal::Malformed(x.to_string()),
                RouteRefusal::Target(x) => Refusal::Malformed(x.to_string()),
                RouteRefusal::Host(x) => Refusal::Malformed(x.to_string()),
                RouteRefusal::Path { error, .. } => Refusal::Malformed(error.to_string()),
            };
            let path = match &e {
                RouteRefusal::NoRoute { path, .. } => path.to_string(),
                RouteRefusal::Path { raw, .. } => (*raw).to_owned(),
                _ => req.target.to_owned(),
            };
            return refuse(refusal, &path);
        }
    };
    let Routed {
        matched: m,
        host_header,
        raw_host,
        path,
        query,
        ..
    } = routed;
    let Some(pool) = snap.lb.pool(m.pool()) else {
        return refuse(Refusal::Internal("route names a missing pool"), &path);
    };
    if let RouteMatch::Route { index, .. } = m {
        debug!(frontend = %fe.name, route = index, pool = %pool.name, path = %path, "routed");
    }
    at.series.routed(at.index, &m);
    // A managed container is held to its own access rules on a frontend
    // too: it reaches only the members it could reach directly, by the
    // same matchers. The host is no way around the rules.
    let excluded = match snap.dir.container_at(peer.ip()) {
        None => Vec::new(),
        Some(from) => match members_out_of_reach(&snap.policy, from, pool, req) {
            Ok(excluded) => excluded,
            Err(denied) => return refuse(denied, &path),
        },
    };
    let key = pool.request_key(&PickInput {
        client: peer.ip(),
        headers: req.headers,
    });

    // Phase 4 preparation: the head sent upstream, from the checked request.
    outbound::request_line(out_head, req.method, &path, query);
    let xff: Vec<&[u8]> = forwarding_values(req, "x-forwarded-for");
    let fwd: Vec<&[u8]> = forwarding_values(req, "forwarded");
    outbound::copy_fields(out_head, req, &snap.policy.fields, |n| {
        FORWARDING.iter().any(|f| n.eq_ignore_ascii_case(f))
    });
    if host_header.is_none() {
        out_head.extend_from_slice(b"host: ");
        match raw_host {
            Some(h) => out_head.extend_from_slice(h),
            None => out_head.extend_from_slice(listen.to_string().as_bytes()),
        }
        out_head.extend_from_slice(b"\r\n");
    }
    outbound::framing_fields(out_head, req.framing);
    if req.tunnel == Some(Tunnel::WebSocket) {
        out_head.extend_from_slice(b"connection: upgrade\r\nupgrade: websocket\r\n");
    }
    let client = peer.ip().to_canonical();
    out_head.extend_from_slice(b"x-forwarded-for: ");
    for v in xff.iter().filter(|v| !v.is_empty()) {
        out_head.extend_from_slice(v);
        out_head.extend_from_slice(b", ");
    }
    outbound::push_ip(out_head, client);
    let proto = if at.https { "https" } else { "http" };
    out_head.extend_from_slice(b"\r\nx-forwarded-proto: ");
    out_head.extend_from_slice(proto.as_bytes());
    out_head.extend_from_slice(b"\r\nforwarded: ");
    for v in fwd.iter().filter(|v| !v.is_empty()) {
        out_head.extend_from_slice(v);
        out_head.extend_from_slice(b", ");
    }
    write_forwarded(out_head, client, proto, raw_host);
    out_head.extend_from_slice(b"\r\n\r\n");

    let idempotent = head::idempotent(req.method.as_bytes());
    Plan::Forward {
        pool: m.pool(),
        excluded,
        key,
        exchange: Exchange {
            // Set by the entry path, which knows the rule set.
            limits: LimitScope::NONE,
            framing: req.framing,
            // A tunnel request is the last one on its connection either way.
            keep_alive: req.keep_alive && req.tunnel.is_none(),
            head_request: req.method == "HEAD",
            expect_continue: req.expect_continue,
            body_limit: lim.max_body_bytes,
            connect_timeout: pool.connect_timeout,
            response_timeout: pool.timeout,
            tunnel: req.tunnel,
            request_buffer_bytes: lim.request_buffer_bytes,
            body_deadline: tokio::time::Instant::now() + lim.body_timeout,
            send_timeout: lim.send_timeout,
            source_framing: req.framing,
            upstream: pool.protocol,
        },
        replayable: idempotent && !has_body,
    }
}

/// The members of `pool` a managed container `from` may not reach with
/// this request (no access entry to the member's port, or its matchers
/// refuse the request), decided as a direct request would be; `Err` with
/// the denial when it may reach none of them.
fn members_out_of_reach(
    policy: &Policy,
    from: ContainerId,
    pool: &Pool,
    req: &head::RequestHead<'_, '_>,
) -> Result<Vec<usize>, Refusal> {
    let request = HttpRequest {
        method: req.method,
        target: req.target,
        headers: req.headers,
    };
    let source = policy.container_name(from);
    let mut excluded = Vec::new();
    let mut first_denial = None;
    for (i, member) in pool.members.iter().enumerate() {
        let entry = policy
            .flow_index(from, member.container, L4::Tcp, member.port)
            .and_then(|e| policy.entries.get(e as usize));
        let owner = match entry {
            Some(e) => FlowOwner::Entry(e),
            None => FlowOwner::Unowned {
                source,
                destination: &member.target,
            },
        };
        let denial = match policy.decide_access(owner, &request) {
            Access::Allow { .. } | Access::Audited { .. } => continue,
            Access::Deny { decision, .. } => Refusal::Denied {
                rule: decision
                    .rule
                    .as_ref()
                    .map_or_else(|| "default".to_owned(), ToString::to_string),
                reason: decision.reason,
            },
            Access::Bad(e) => Refusal::Malformed(e.to_string()),
        };
        excluded.push(i);
        first_denial.get_or_insert(denial);
    }
    match first_denial {
        Some(denied) if excluded.len() == pool.members.len() => Err(denied),
        _ => Ok(excluded),
    }
}

/// The client's values of a forwarding field the proxy appends to.
fn forwarding_values<'b>(req: &head::RequestHead<'b, '_>, name: &str) -> Vec<&'b [u8]> {
    req.headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| head::trim(h.value))
        .collect()
}

/// Appends one RFC 7239 element: `for=…;proto=http[;host="…"]` (`https`
/// on a TLS frontend).
fn write_forwarded(out: &mut Vec<u8>, client: IpAddr, proto: &str, host: Option<&[u8]>) {
    match client {
        IpAddr::V4(_) => {
            out.extend_from_slice(b"for=");
            outbound::push_ip(out, client);
        }
        IpAddr::V6(a) => {
            let _ = write!(out, "for=\"[{a}]\"");
        }
    }
    out.extend_from_slice(b";proto=");
    out.extend_from_slice(proto.as_bytes());
    if let Some(h) = host {
        if h.iter()
            .all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            out.extend_from_slice(b";host=\"");
            out.extend_from_slice(h);
            out.push(b'"');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(client: &str, host: Option<&[u8]>) -> String {
        let mut out = Vec::new();
        write_forwarded(&mut out, client.parse().unwrap(), "http", host);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn forwarded_elements() {
        assert_eq!(
            forwarded("198.19.0.9", Some(b"two.example:8080")),
            "for=198.19.0.9;proto=http;host=\"two.example:8080\""
        );
        assert_eq!(forwarded("::1", None), "for=\"[::1]\";proto=http");
        assert_eq!(forwarded("::1", Some(b"a\"b")), "for=\"[::1]\";proto=http");
        let mut out = Vec::new();
        write_forwarded(&mut out, "::1".parse().unwrap(), "https", None);
        assert_eq!(out, b"for=\"[::1]\";proto=https");
    }
}
