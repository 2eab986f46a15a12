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

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::time::Instant;
use tracing::warn;

use super::client_io::ConnLimits;
use super::connection::{Decision, EntryPath, NotAdmitted};
use super::downstream::ClientProtocol;
use super::exchange::{self, Exchange, LimitScope};
use super::limits::{
    self, ConnectionPermit, Effective, Key, Scope, Source, SourceName, SourceTable,
};
use super::outbound;
use super::pipeline::Target;
use super::refusal::{At, Refusal};
use super::ProxyCtx;
use crate::policy::access::{Access, FlowOwner, HttpRequest};
use crate::policy::{ContainerId, Entry, Policy, L4};
use crate::rules::model::UpstreamProtocol;
use crate::state::directory::Directory;
use crate::state::metrics::series::{Passed, Series};
use crate::state::metrics::Metrics;
use crate::state::snapshot::LimitOwner;
use crate::wire::head::{self, Framing, Tunnel};

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

impl Resolved<'_> {
    /// The index of [`Resolved::entry`] in the policy's entries.
    pub fn entry_index(&self) -> Option<usize> {
        match self.key.scope {
            Scope::Access(i) => Some(i as usize),
            _ => None,
        }
    }
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
    /// The metric series of `policy`'s rule set.
    pub series: &'a Series,
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
        ConnLimits::from(&limits::effective(&snap.policy, r.entry))
    }

    fn decide(
        &self,
        ctx: &ProxyCtx,
        req: &head::RequestHead<'_, '_>,
        client: ClientProtocol,
        out_head: &mut Vec<u8>,
    ) -> Decision {
        let snap = ctx.state.load_full();
        let resolved = resolve(&snap.policy, &snap.dir, &self.flow);
        let lim = limits::effective(&snap.policy, resolved.entry);
        let check = Check {
            policy: &snap.policy,
            resolved: &resolved,
            flow: &self.flow,
            limits: &lim,
            metrics: &ctx.metrics,
            series: &ctx.metrics.labelled.series.of(&snap, &ctx.metrics.labelled),
            sources: &ctx.sources,
            client,
        };
        match authorise(&check, req, out_head) {
            Plan::Refuse { refusal, close } => Decision::Refuse { refusal, close },
            Plan::Forward(exchange) => Decision::Forward {
                exchange: Exchange {
                    limits: LimitScope {
                        version: snap.version,
                        owner: resolved
                            .entry_index()
                            .map_or(LimitOwner::Unowned, LimitOwner::Entry),
                    },
                    ..exchange
                },
                target: Target::Direct(self.flow.dst),
            },
        }
    }

    fn peer(&self) -> SocketAddr {
        self.flow.peer
    }

    fn limit_ref(&self, ctx: &ProxyCtx, field: &str) -> Option<crate::rules::RuleRef> {
        let snap = ctx.state.load();
        let r = resolve(&snap.policy, &snap.dir, &self.flow);
        snap.policy.limit_ref(r.entry, field)
    }

    fn endpoints(&self, ctx: &ProxyCtx) -> (String, String) {
        let snap = ctx.state.load();
        let r = resolve(&snap.policy, &snap.dir, &self.flow);
        (
            SourceName(&snap.policy, r.key.source).to_string(),
            self.flow.dst.to_string(),
        )
    }
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
        let limit_at = refusal
            .limit_field()
            .and_then(|f| c.policy.limit_ref(c.resolved.entry, f));
        let at = At {
            limit_at: limit_at.as_ref(),
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
            c.series.access(c.resolved.entry_index(), Passed::Allowed);
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
            c.series
                .access(c.resolved.entry_index(), Passed::AuditDenied);
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
        // Set by the entry path, which knows the rule set.
        limits: LimitScope::NONE,
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
