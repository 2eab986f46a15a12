//! One redirected client connection, request by request.
//!
//! Phases per request (see `docs/wiki/proxy.md`):
//! 0. **admit** — the connection counts against `max_connections_per_source`
//!    (429 over it); a client opening with the HTTP/2 preface is handed to
//!    [`super::h2`], which runs the same authorise step per stream;
//! 1. **read head** — bounded by `max_header_bytes`, header and idle timeouts;
//! 2. **parse** — strict RFC 9112 ([`crate::wire::head`]); refusals are 400/431/501;
//! 3. **authorise** — the source's request bucket (429), `max_body_bytes`
//!    against a declared length (413), the field checks of
//!    [`crate::policy::fields`] (400), normalise the path, find the access
//!    entry for (source container, original destination, port) and run its
//!    matchers; a refusal is a 403 naming the rule. CONNECT and WebSocket
//!    upgrades are checked like any request (CONNECT only by a matcher that
//!    names it) and tunnelled once the upstream agrees;
//! 4. **forward** — the body is received and checked first, up to
//!    `request_buffer_bytes`, within `body_timeout_ms` ([`super::buffer`]);
//!    then the head written from the checked request ([`super::outbound`]:
//!    normalised path, framing restated by the proxy, hop-by-hop headers
//!    dropped, `X-Portcullis-Source` set) and the streamed body go to the
//!    original destination over a pooled connection;
//! 5. **respond** — the upstream response head is checked and relayed, the
//!    body streamed back; the connection is kept if both sides allow it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::body::{HeadWait, Inbound};
use super::downstream::{ClientProtocol, Downstream};
use super::forward::{write_refusal, Exchange};
use super::h2::Sniffed;
use super::limits::{self, Effective, Key, Scope, Source, SourceName, SourceTable};
use super::outbound;
use super::pipeline::{self, Target};
use super::respond;
use super::ProxyCtx;
use crate::policy::access::{Access, FlowOwner, HttpRequest};
use crate::policy::{ContainerId, Entry, Policy, L4};
use crate::rules::model::UpstreamProtocol;
use crate::state::directory::Directory;
use crate::state::metrics::Metrics;
use crate::wire::head::{self, Framing, HeadError, Tunnel, MAX_HEADERS};

/// Who is talking to whom on this connection.
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    pub peer: SocketAddr,
    pub dst: SocketAddr,
}

/// A flow looked up in one snapshot of the rules.
pub struct Resolved<'p> {
    pub from: Option<ContainerId>,
    pub entry: Option<&'p Entry>,
    pub key: Key,
}

/// Finds the source container and the access entry owning `flow`.
pub fn resolve<'p>(policy: &'p Policy, dir: &Directory, flow: &Flow) -> Resolved<'p> {
    let from = dir.container_at(flow.peer.ip());
    let to = dir.container_at(flow.dst.ip());
    let index = match (from, to) {
        (Some(f), Some(t)) => policy.flow_index(f, t, L4::Tcp, flow.dst.port()),
        _ => None,
    };
    Resolved {
        from,
        entry: index.and_then(|i| policy.entries.get(i as usize)),
        key: Key {
            source: from.map_or(
                Source::Address(flow.peer.ip().to_canonical()),
                Source::Container,
            ),
            scope: index.map_or(Scope::Unowned, Scope::Access),
        },
    }
}

/// What the authorise phase decided, owning what later phases need so the
/// borrow of the read buffer can end.
pub enum Plan {
    Forward(Exchange),
    Refuse {
        code: u16,
        reason: String,
        /// The request body (if any) is not read: the connection must close.
        close: bool,
    },
}

/// Everything the authorise step consults besides the request.
pub struct Check<'a> {
    pub policy: &'a Policy,
    pub resolved: &'a Resolved<'a>,
    pub flow: &'a Flow,
    pub limits: &'a Effective,
    pub metrics: &'a Metrics,
    pub sources: &'a SourceTable,
    /// The protocol the client speaks (an access destination's default).
    pub client: ClientProtocol,
}

/// Serves one accepted connection until either side is done.
pub async fn serve(ctx: Arc<ProxyCtx>, client: TcpStream, peer: SocketAddr, dst: SocketAddr) {
    let _ = client.set_nodelay(true);
    let flow = Flow { peer, dst };
    let mut inbound = Inbound::new(client);
    let (lim, admitted) = {
        let snap = ctx.state.load();
        let r = resolve(&snap.policy, &snap.dir, &flow);
        let lim = limits::effective(&snap.policy, r.entry);
        let admitted = ctx.sources.open(r.key, lim.max_connections);
        if let Err(open) = &admitted {
            Metrics::inc(&ctx.metrics.connections_limited_total);
            warn!(source = %SourceName(&snap.policy, r.key.source), peer = %peer, destination = %dst, open, limit = lim.max_connections, status = 429, "connection refused: max_connections_per_source reached");
        }
        (lim, admitted)
    };
    let Ok(_permit) = admitted else {
        let _ = write_refusal(
            &mut inbound.io,
            429,
            "too many connections from this source",
            true,
        )
        .await;
        close_lingering(&mut inbound).await;
        return;
    };
    // The first bytes tell HTTP/2 (prior knowledge) from HTTP/1.
    match super::h2::sniff(&mut inbound, lim.idle_timeout, lim.header_timeout).await {
        Sniffed::Http1 => {}
        Sniffed::Http2 => return super::h2::serve(ctx, inbound, flow).await,
        Sniffed::Idle => return Metrics::inc(&ctx.metrics.connections_idle_closed_total),
        Sniffed::Gone => return,
    }
    let mut out_head: Vec<u8> = Vec::with_capacity(1024);
    loop {
        match one_exchange(&ctx, &flow, &mut inbound, &mut out_head).await {
            Ok(true) => continue,
            Ok(false) => break,
            Err(e) => {
                if super::send::is_send_timeout(&e) {
                    Metrics::inc(&ctx.metrics.clients_send_timeout_total);
                    warn!(peer = %flow.peer, destination = %flow.dst, error = %e, "client connection closed: the client stopped reading");
                } else {
                    debug!(peer = %flow.peer, error = %e, "connection ended");
                }
                break;
            }
        }
    }
    close_lingering(&mut inbound).await;
}

/// Closes after a last response: half-close, then drain what the client
/// still sends for a moment, so unread input does not turn the close into
/// a reset that destroys the response in flight.
async fn close_lingering(inbound: &mut Inbound<TcpStream>) {
    let _ = inbound.io.shutdown().await;
    let mut sink = [0u8; 8192];
    let mut drained = 0usize;
    let deadline = Instant::now() + Duration::from_millis(500);
    while drained < 256 * 1024 {
        match tokio::time::timeout_at(deadline, inbound.io.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
}

/// Handles one request/response exchange. `Ok(true)`: keep the connection.
async fn one_exchange(
    ctx: &ProxyCtx,
    flow: &Flow,
    inbound: &mut Inbound<TcpStream>,
    out_head: &mut Vec<u8>,
) -> io::Result<bool> {
    let snap = ctx.state.load_full();
    let policy = &snap.policy;
    let resolved = resolve(policy, &snap.dir, flow);
    let lim = limits::effective(policy, resolved.entry);
    let metrics: &Metrics = &ctx.metrics;
    let source = SourceName(policy, resolved.key.source);

    // Phase 1: read head. The idle timeout covers the wait for a first
    // byte, the header timeout the rest of the head (slowloris).
    let head_len = match inbound
        .next_head(lim.idle_timeout, lim.header_timeout, lim.max_header_bytes)
        .await?
    {
        HeadWait::Head(n) => n,
        HeadWait::Closed => return Ok(false),
        HeadWait::Idle => {
            Metrics::inc(&metrics.connections_idle_closed_total);
            debug!(source = %source, peer = %flow.peer, "idle keep-alive connection closed");
            return Ok(false);
        }
        HeadWait::HeaderTimeout => {
            Metrics::inc(&metrics.requests_timeout_total);
            warn!(source = %source, peer = %flow.peer, destination = %flow.dst, status = 408, "request head not received within header_timeout_ms");
            write_refusal(&mut inbound.io, 408, "request header timeout", true).await?;
            return Ok(false);
        }
        HeadWait::Bad(e) => return refuse_head(inbound, flow, &source, &e, metrics).await,
    };
    // The request is decided by the rules in force now that it is here, not
    // by those loaded when the connection went idle before it: a reload
    // (or a container moving) in between applies to it.
    drop(snap);
    let snap = ctx.state.load_full();
    let policy = &snap.policy;
    let resolved = resolve(policy, &snap.dir, flow);
    let lim = limits::effective(policy, resolved.entry);
    let source = SourceName(policy, resolved.key.source);

    // Phases 2 and 3: parse and authorise, writing the upstream head.
    let plan = {
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match head::parse_request(&inbound.buf[..head_len], &mut storage) {
            Err(e) => Err(e),
            Ok(req) => {
                let check = Check {
                    policy,
                    resolved: &resolved,
                    flow,
                    limits: &lim,
                    metrics,
                    sources: &ctx.sources,
                    client: ClientProtocol::Http1,
                };
                Ok(authorise(&check, &req, out_head))
            }
        }
    };
    let plan = match plan {
        Ok(p) => p,
        Err(e) => return refuse_head(inbound, flow, &source, &e, metrics).await,
    };
    inbound.buf.advance(head_len);

    match plan {
        Plan::Refuse {
            code,
            reason,
            close,
        } => {
            write_refusal(&mut inbound.io, code, &reason, close).await?;
            Ok(!close)
        }
        Plan::Forward(exchange) => {
            let mut client = Downstream::H1 {
                send_timeout: exchange.send_timeout,
                inbound,
            };
            let target = Target::Direct(flow.dst);
            pipeline::serve(ctx, flow.peer, &mut client, out_head, exchange, target).await
        }
    }
}

async fn refuse_head(
    inbound: &mut Inbound<TcpStream>,
    flow: &Flow,
    source: &SourceName<'_>,
    e: &HeadError,
    metrics: &Metrics,
) -> io::Result<bool> {
    let code = respond::request_head_status(e);
    if code == 431 {
        Metrics::inc(&metrics.requests_header_too_large_total);
    } else {
        Metrics::inc(&metrics.requests_bad_total);
    }
    warn!(source = %source, peer = %flow.peer, destination = %flow.dst, status = code, reason = %e, "malformed request refused");
    write_refusal(&mut inbound.io, code, &format!("bad request: {e}"), true).await?;
    Ok(false)
}

/// The authorise phase, shared by HTTP/1 and HTTP/2 streams: limits,
/// target, path normalisation and the access matchers. On success the
/// HTTP/1.1 head for the upstream is left in `out_head`.
pub fn authorise(c: &Check<'_>, req: &head::RequestHead<'_, '_>, out_head: &mut Vec<u8>) -> Plan {
    let (flow, metrics) = (c.flow, c.metrics);
    let source = SourceName(c.policy, c.resolved.key.source);
    let has_body = req.framing != Framing::None;
    let refuse = |code: u16, reason: String| Plan::Refuse {
        code,
        reason,
        close: has_body || code != 403,
    };
    if let Some(rate) = c.limits.rate {
        if !c.sources.take_token(c.resolved.key, rate, Instant::now()) {
            Metrics::inc(&metrics.requests_rate_limited_total);
            warn!(source = %source, peer = %flow.peer, destination = %flow.dst, method = req.method, status = 429, "request refused: requests_per_second of the source exceeded");
            return refuse(429, "rate limit of this source exceeded".into());
        }
    }
    if let (Framing::Length(n), Some(max)) = (req.framing, c.limits.max_body_bytes) {
        if n > max {
            Metrics::inc(&metrics.requests_body_too_large_total);
            warn!(source = %source, peer = %flow.peer, destination = %flow.dst, length = n, limit = max, status = 413, "request body over max_body_bytes");
            return refuse(
                413,
                format!("request body of {n} bytes is over the limit of {max}"),
            );
        }
    }
    // The decision is `Policy::decide_access`, the function `explain`, the
    // demo and `diff` answer with: fields, target (CONNECT's authority
    // form), path, then the rules. An allowed request is not explained.
    let connect = req.tunnel == Some(Tunnel::Connect);
    let source_name = c.resolved.from.map(|f| c.policy.container_name(f));
    let owner = match c.resolved.entry {
        Some(entry) => FlowOwner::Entry(entry),
        None => FlowOwner::Unowned {
            source: source_name.unwrap_or("an unmanaged address"),
            destination: &flow.dst,
        },
    };
    let request = HttpRequest {
        method: req.method,
        target: req.target,
        headers: req.headers,
    };
    let (path, query) = match c.policy.decide_access(owner, &request) {
        Access::Allow { path, query, .. } => {
            Metrics::inc(&metrics.requests_allowed_total);
            (path, query)
        }
        Access::Audited {
            path,
            query,
            decision: d,
        } => {
            let rule = d
                .rule
                .as_ref()
                .map_or_else(|| "default".to_owned(), ToString::to_string);
            Metrics::inc(&metrics.requests_audit_denied_total);
            warn!(source = %source, destination = %flow.dst, method = req.method, path = %path, rule = %rule, reason = %d.reason, "audit_deny");
            (path, query)
        }
        Access::Deny { path, decision: d } => {
            let rule = d
                .rule
                .as_ref()
                .map_or_else(|| "default".to_owned(), ToString::to_string);
            Metrics::inc(&metrics.requests_denied_total);
            warn!(source = %source, destination = %flow.dst, method = req.method, path = %path, rule = %rule, reason = %d.reason, "request denied");
            let reason = match d.rule {
                Some(_) => format!("denied by {rule}: {}", d.reason),
                None => d.reason,
            };
            return refuse(403, reason);
        }
        Access::Bad(e) => {
            Metrics::inc(&metrics.requests_bad_total);
            warn!(source = %source, peer = %flow.peer, destination = %flow.dst, method = req.method, target = req.target, status = 400, reason = %e, "malformed request refused");
            return refuse(400, format!("bad request: {e}"));
        }
    };

    // Phase 4 preparation: the head sent upstream, from the checked request.
    if connect {
        outbound::request_line(out_head, req.method, req.target, None);
    } else {
        outbound::request_line(out_head, req.method, &path, query);
    }
    if !outbound::copy_fields(out_head, req, &c.policy.fields, |_| false) {
        out_head.extend_from_slice(format!("host: {}\r\n", flow.dst).as_bytes());
    }
    outbound::framing_fields(out_head, req.framing);
    if req.tunnel == Some(Tunnel::WebSocket) {
        out_head.extend_from_slice(b"connection: upgrade\r\nupgrade: websocket\r\n");
    }
    outbound::field(
        out_head,
        outbound::SOURCE_HEADER.as_bytes(),
        source_name.unwrap_or("unknown").as_bytes(),
    );
    out_head.extend_from_slice(b"\r\n");
    Plan::Forward(Exchange {
        framing: req.framing,
        // A tunnel request is the last one on its connection either way.
        keep_alive: req.keep_alive && req.tunnel.is_none(),
        head_request: req.method == "HEAD",
        expect_continue: req.expect_continue,
        body_limit: c.limits.max_body_bytes,
        connect_timeout: super::forward::CONNECT_TIMEOUT,
        response_timeout: super::forward::RESPONSE_TIMEOUT,
        tunnel: req.tunnel,
        request_buffer_bytes: c.limits.request_buffer_bytes,
        body_deadline: Instant::now() + c.limits.body_timeout,
        send_timeout: c.limits.send_timeout,
        source_framing: req.framing,
        upstream: c
            .resolved
            .entry
            .and_then(|e| e.upstream)
            .unwrap_or(match c.client {
                ClientProtocol::Http1 => UpstreamProtocol::Http1,
                ClientProtocol::Http2 => UpstreamProtocol::H2c,
            }),
    })
}
