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

use bytes::Buf;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::body::{HeadWait, Inbound};
use super::client_io::{ClientIo, ConnLimits};
use super::connection::{EntryPath, NotAdmitted};
use super::downstream::{ClientProtocol, Downstream};
use super::exchange::{self, Exchange};
use super::h2::{Decision as H2Decision, Streams};
use super::limits::{
    self, ConnectionPermit, Effective, Key, Scope, Source, SourceName, SourceTable,
};
use super::outbound;
use super::pipeline::{self, Target};
use super::refusal::{write_refusal, At, Refusal};
use super::ProxyCtx;
use crate::policy::access::{Access, FlowOwner, HttpRequest};
use crate::policy::{ContainerId, Entry, Policy, L4};
use crate::rules::model::UpstreamProtocol;
use crate::state::directory::Directory;
use crate::state::metrics::Metrics;
use crate::wire::head::{self, Framing, Tunnel, MAX_HEADERS};

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
    /// Already recorded (counted and logged); to be answered.
    Refuse {
        refusal: Refusal,
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

/// A redirected connection: the entry path of access flows.
pub struct AccessFlow {
    pub flow: Flow,
}

impl EntryPath for AccessFlow {
    const PATH: &'static str = crate::state::metrics::labelled::ACCESS;
    type Streams = AccessStreams;

    fn admit(&self, ctx: &Arc<ProxyCtx>) -> Result<Option<ConnectionPermit>, NotAdmitted> {
        let snap = ctx.state.load();
        let r = resolve(&snap.policy, &snap.dir, &self.flow);
        let lim = limits::effective(&snap.policy, r.entry);
        match ctx.sources.open(r.key, lim.max_connections) {
            Ok(p) => Ok(Some(p)),
            Err(open) => Err(NotAdmitted {
                open,
                limit: lim.max_connections,
                source: SourceName(&snap.policy, r.key.source).to_string(),
                destination: self.flow.dst.to_string(),
            }),
        }
    }

    fn limits(&self, ctx: &ProxyCtx) -> ConnLimits {
        let snap = ctx.state.load();
        let r = resolve(&snap.policy, &snap.dir, &self.flow);
        let lim = limits::effective(&snap.policy, r.entry);
        ConnLimits {
            max_header_bytes: lim.max_header_bytes,
            header_timeout: lim.header_timeout,
            idle_timeout: lim.idle_timeout,
            send_timeout: lim.send_timeout,
        }
    }

    async fn exchange(
        &self,
        ctx: &ProxyCtx,
        inbound: &mut Inbound<ClientIo>,
        out_head: &mut Vec<u8>,
    ) -> io::Result<bool> {
        one_exchange(ctx, &self.flow, inbound, out_head).await
    }

    fn streams(self, ctx: Arc<ProxyCtx>) -> AccessStreams {
        AccessStreams {
            ctx,
            flow: self.flow,
        }
    }

    fn describe(&self) -> String {
        format!("{} -> {}", self.flow.peer, self.flow.dst)
    }
}

/// Redirected access flows: the rules decide, the original destination serves.
pub struct AccessStreams {
    pub ctx: Arc<ProxyCtx>,
    pub flow: Flow,
}

impl Streams for AccessStreams {
    fn peer(&self) -> SocketAddr {
        self.flow.peer
    }

    fn decide(
        &self,
        method: &http::Method,
        target: &str,
        headers: &[httparse::Header<'_>],
        framing: Framing,
    ) -> H2Decision {
        let (ctx, flow) = (&self.ctx, &self.flow);
        let snap = ctx.state.load_full();
        let resolved = resolve(&snap.policy, &snap.dir, flow);
        let lim = limits::effective(&snap.policy, resolved.entry);
        if let Err(e) = head::check_h2_request(target, headers) {
            let source = SourceName(&snap.policy, resolved.key.source);
            let r = Refusal::Malformed(e.to_string());
            let at = At {
                source: Some(&source),
                peer: Some(flow.peer),
                destination: Some(&flow.dst),
                method: Some(method.as_str()),
                path: Some(target),
            };
            r.record(&ctx.metrics, &at);
            return H2Decision::Refuse(r);
        }
        let head = head::RequestHead {
            method: method.as_str(),
            target,
            http10: false,
            headers,
            framing,
            keep_alive: true,
            expect_continue: false,
            tunnel: None,
        };
        let check = Check {
            policy: &snap.policy,
            resolved: &resolved,
            flow,
            limits: &lim,
            metrics: &ctx.metrics,
            sources: &ctx.sources,
            client: ClientProtocol::Http2,
        };
        let mut out_head = Vec::with_capacity(512);
        match authorise(&check, &head, &mut out_head) {
            Plan::Refuse { refusal, .. } => H2Decision::Refuse(refusal),
            Plan::Forward(exchange) => H2Decision::Forward {
                out_head,
                exchange,
                target: Target::Direct(flow.dst),
            },
        }
    }
}

/// Handles one request/response exchange. `Ok(true)`: keep the connection.
async fn one_exchange(
    ctx: &ProxyCtx,
    flow: &Flow,
    inbound: &mut Inbound<ClientIo>,
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
            return refuse_head(inbound, flow, &source, Refusal::HeadTimeout, metrics).await
        }
        HeadWait::Bad(e) => {
            return refuse_head(inbound, flow, &source, Refusal::Head(e), metrics).await
        }
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
        Err(e) => return refuse_head(inbound, flow, &source, Refusal::Head(e), metrics).await,
    };
    inbound.buf.advance(head_len);

    match plan {
        Plan::Refuse { refusal, close } => {
            write_refusal(&mut inbound.io, &refusal, close).await?;
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

/// A request refused before it could be parsed (timeout, malformed head):
/// recorded, answered, and the connection closes.
async fn refuse_head(
    inbound: &mut Inbound<ClientIo>,
    flow: &Flow,
    source: &SourceName<'_>,
    refusal: Refusal,
    metrics: &Metrics,
) -> io::Result<bool> {
    let at = At {
        source: Some(source),
        peer: Some(flow.peer),
        destination: Some(&flow.dst),
        ..At::default()
    };
    refusal.record(metrics, &at);
    write_refusal(&mut inbound.io, &refusal, true).await?;
    Ok(false)
}

/// The authorise phase, shared by HTTP/1 and HTTP/2 streams: limits,
/// target, path normalisation and the access matchers. On success the
/// HTTP/1.1 head for the upstream is left in `out_head`.
pub fn authorise(c: &Check<'_>, req: &head::RequestHead<'_, '_>, out_head: &mut Vec<u8>) -> Plan {
    let (flow, metrics) = (c.flow, c.metrics);
    let source = SourceName(c.policy, c.resolved.key.source);
    let has_body = req.framing != Framing::None;
    // Every refusal of this phase: recorded with where the request was
    // going, answered by the caller in the client's protocol.
    let refuse = |refusal: Refusal, path: Option<&str>| {
        let at = At {
            source: Some(&source),
            peer: Some(flow.peer),
            destination: Some(&flow.dst),
            method: Some(req.method),
            path: Some(path.unwrap_or(req.target)),
        };
        refusal.record(metrics, &at);
        let close = has_body || refusal.status() != 403;
        Plan::Refuse { refusal, close }
    };
    if let Some(rate) = c.limits.rate {
        if !c.sources.take_token(c.resolved.key, rate, Instant::now()) {
            return refuse(Refusal::RateLimited, None);
        }
    }
    if let (Framing::Length(n), Some(max)) = (req.framing, c.limits.max_body_bytes) {
        if n > max {
            let too_large = Refusal::BodyTooLarge {
                length: Some(n),
                limit: Some(max),
            };
            return refuse(too_large, None);
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
            count(metrics, c.resolved.entry, "allowed");
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
            count(metrics, c.resolved.entry, "audit_denied");
            warn!(source = %source, destination = %flow.dst, method = req.method, path = %path, rule = %rule, reason = %d.reason, "audit_deny");
            (path, query)
        }
        Access::Deny { path, decision: d } => {
            let rule = d
                .rule
                .as_ref()
                .map_or_else(|| "default".to_owned(), ToString::to_string);
            let denied = Refusal::Denied {
                rule,
                reason: d.reason,
            };
            return refuse(denied, Some(&path));
        }
        Access::Bad(e) => return refuse(Refusal::Malformed(e.to_string()), None),
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
        connect_timeout: exchange::CONNECT_TIMEOUT,
        response_timeout: exchange::RESPONSE_TIMEOUT,
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

/// Counts an access decision under its entry's `rule` label.
fn count(metrics: &Metrics, entry: Option<&Entry>, decision: &'static str) {
    let l = &metrics.labelled;
    let rule = entry.map_or(&l.default_rule, |e| &e.label);
    l.request(crate::state::metrics::labelled::ACCESS, decision, rule);
}
