//! One redirected client connection, request by request.
//!
//! Phases per request (see `docs/wiki/proxy.md`):
//! 1. **read head** — bounded by `max_header_bytes`, header and idle timeouts;
//! 2. **parse** — strict RFC 9112 ([`super::head`]); refusals are 400/431/501;
//! 3. **authorise** — normalise the path, find the access entry for
//!    (source container, original destination, port) and run its matchers;
//!    a refusal is a 403 naming the rule;
//! 4. **forward** — the rewritten head (normalised path, hop-by-hop headers
//!    dropped, `X-Portcullis-Source` set) and the streamed body go to the
//!    original destination over a pooled connection;
//! 5. **respond** — the upstream response head is checked and relayed, the
//!    body streamed back; the connection is kept if both sides allow it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tracing::warn;

use super::body::{Inbound, ReadHeadError};
use super::forward::{forward, write_refusal, Exchange, Upstream};
use super::head::{self, Framing, HeadError, MAX_HEADERS};
use super::respond;
use super::ProxyCtx;
use crate::control::metrics::Metrics;
use crate::policy::matcher::RequestView;
use crate::policy::normalize::{normalize_path, split_target};
use crate::policy::{ContainerId, Policy, RequestCheck, L4};

const DEFAULT_MAX_HEADER_BYTES: u64 = 16 * 1024;
const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Who is talking to whom on this connection.
struct Flow {
    peer: SocketAddr,
    dst: SocketAddr,
}

/// What the authorise phase decided, owning what later phases need so the
/// borrow of the read buffer can end.
enum Plan {
    Forward(Exchange),
    Refuse {
        code: u16,
        reason: String,
        /// The request body (if any) is not read: the connection must close.
        close: bool,
    },
}

/// Effective limits for this connection's entry (entry overrides global).
struct Limits {
    max_header_bytes: usize,
    header_timeout: Duration,
    idle_timeout: Duration,
    max_body_bytes: Option<u64>,
}

fn limits_for(policy: &Policy, entry: Option<&crate::policy::Entry>) -> Limits {
    let g = &policy.limits;
    let e = entry.map(|e| &e.limits);
    let pick = |f: fn(&crate::rules::model::Limits) -> Option<u64>| e.and_then(f).or_else(|| f(g));
    Limits {
        max_header_bytes: pick(|l| l.max_header_bytes).unwrap_or(DEFAULT_MAX_HEADER_BYTES) as usize,
        header_timeout: pick(|l| l.header_timeout_ms)
            .map_or(DEFAULT_HEADER_TIMEOUT, Duration::from_millis),
        idle_timeout: pick(|l| l.idle_timeout_ms)
            .map_or(DEFAULT_IDLE_TIMEOUT, Duration::from_millis),
        max_body_bytes: pick(|l| l.max_body_bytes),
    }
}

/// Serves one accepted connection until either side is done.
pub async fn serve(ctx: Arc<ProxyCtx>, client: TcpStream, peer: SocketAddr, dst: SocketAddr) {
    let _ = client.set_nodelay(true);
    let flow = Flow { peer, dst };
    let mut inbound = Inbound::new(client);
    let mut out_head: Vec<u8> = Vec::with_capacity(1024);
    loop {
        match one_exchange(&ctx, &flow, &mut inbound, &mut out_head).await {
            Ok(true) => continue,
            Ok(false) => break,
            Err(e) => {
                tracing::debug!(peer = %flow.peer, error = %e, "connection ended");
                break;
            }
        }
    }
    let _ = inbound.io.shutdown().await;
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
    let from = snap.dir.container_at(flow.peer.ip());
    let to = snap.dir.container_at(flow.dst.ip());
    let entry = match (from, to) {
        (Some(f), Some(t)) => policy.flow(f, t, L4::Tcp, flow.dst.port()),
        _ => None,
    };
    let lim = limits_for(policy, entry);
    let metrics: &Metrics = &ctx.metrics;

    // Phase 1: read head. The idle timeout covers the wait for a first
    // byte, the header timeout the rest of the head (slowloris).
    if inbound.buf.is_empty() {
        match timeout(lim.idle_timeout, inbound.fill()).await {
            Err(_) => return Ok(false),
            Ok(Ok(0)) => return Ok(false),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
    let head_len = match timeout(lim.header_timeout, inbound.read_head(lim.max_header_bytes)).await
    {
        Err(_) => {
            Metrics::inc(&metrics.requests_timeout_total);
            warn!(source = %flow.peer, "request head not received in time: 408");
            write_refusal(&mut inbound.io, 408, "request header timeout", true).await?;
            return Ok(false);
        }
        Ok(Ok(None)) => return Ok(false),
        Ok(Ok(Some(n))) => n,
        Ok(Err(ReadHeadError::Io(e))) => return Err(e),
        Ok(Err(ReadHeadError::Head(e))) => {
            return refuse_head(inbound, flow, &e, metrics).await;
        }
    };

    // Phases 2 and 3: parse and authorise, writing the upstream head.
    let plan = {
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match head::parse_request(&inbound.buf[..head_len], &mut storage) {
            Err(e) => None.ok_or(e),
            Ok(req) => Ok(authorise(
                policy, from, entry, flow, &req, &lim, out_head, metrics,
            )),
        }
    };
    let plan = match plan {
        Ok(p) => p,
        Err(e) => return refuse_head(inbound, flow, &e, metrics).await,
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
            let to = Upstream {
                peer: flow.peer,
                dst: flow.dst,
            };
            forward(ctx, &to, inbound, out_head, exchange).await
        }
    }
}

async fn refuse_head(
    inbound: &mut Inbound<TcpStream>,
    flow: &Flow,
    e: &HeadError,
    metrics: &Metrics,
) -> io::Result<bool> {
    let code = respond::request_head_status(e);
    Metrics::inc(&metrics.requests_bad_total);
    warn!(source = %flow.peer, destination = %flow.dst, status = code, reason = %e, "malformed request refused");
    write_refusal(&mut inbound.io, code, &format!("bad request: {e}"), true).await?;
    Ok(false)
}

#[allow(clippy::too_many_arguments)]
fn authorise(
    policy: &Policy,
    from: Option<ContainerId>,
    entry: Option<&crate::policy::Entry>,
    flow: &Flow,
    req: &head::RequestHead<'_, '_>,
    lim: &Limits,
    out_head: &mut Vec<u8>,
    metrics: &Metrics,
) -> Plan {
    let has_body = req.framing != Framing::None;
    let refuse = |code: u16, reason: String| Plan::Refuse {
        code,
        reason,
        close: has_body || code != 403,
    };
    if req.wants_tunnel {
        Metrics::inc(&metrics.requests_bad_total);
        warn!(source = %flow.peer, destination = %flow.dst, method = req.method, "upgrade/CONNECT refused: not supported on access flows");
        return refuse(
            501,
            "upgrade and CONNECT are not supported on access flows".into(),
        );
    }
    let target = match head::origin_form(req.target, req.headers) {
        Ok(t) => t,
        Err(e) => {
            Metrics::inc(&metrics.requests_bad_total);
            warn!(source = %flow.peer, destination = %flow.dst, reason = %e, "malformed request refused");
            return refuse(400, format!("bad request: {e}"));
        }
    };
    let (raw_path, query) = split_target(target);
    let path = match normalize_path(raw_path) {
        Ok(p) => p,
        Err(e) => {
            let d = Policy::refuse_path(e);
            Metrics::inc(&metrics.requests_bad_total);
            warn!(source = %flow.peer, destination = %flow.dst, method = req.method, path = raw_path, status = 400, reason = %d.reason, "request refused");
            return refuse(400, d.reason);
        }
    };
    let source_name = from.map(|f| policy.container_name(f));
    let Some(entry) = entry else {
        Metrics::inc(&metrics.requests_denied_total);
        let reason = format!(
            "denied by default: no access entry allows {} -> {}",
            source_name.unwrap_or("an unmanaged address"),
            flow.dst
        );
        warn!(source = %flow.peer, destination = %flow.dst, method = req.method, path = %path, rule = "default", reason = %reason, "request denied");
        return refuse(403, reason);
    };
    let view = RequestView {
        method: req.method,
        path: &path,
        headers: req.headers,
    };
    if Policy::check_request(entry, &view) == RequestCheck::Denied {
        let d = policy.decide_request(entry, &view);
        let rule = d
            .rule
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| "default".into());
        if d.audit_deny {
            Metrics::inc(&metrics.requests_audit_denied_total);
            warn!(source = source_name.unwrap_or("?"), destination = %flow.dst, method = req.method, path = %path, rule = %rule, reason = %d.reason, "audit_deny");
        } else {
            Metrics::inc(&metrics.requests_denied_total);
            warn!(source = source_name.unwrap_or("?"), destination = %flow.dst, method = req.method, path = %path, rule = %rule, reason = %d.reason, "request denied");
            return refuse(403, format!("denied by {rule}: {}", d.reason));
        }
    } else {
        Metrics::inc(&metrics.requests_allowed_total);
    }

    // Phase 4 preparation: the head sent upstream.
    out_head.clear();
    out_head.extend_from_slice(req.method.as_bytes());
    out_head.push(b' ');
    out_head.extend_from_slice(path.as_bytes());
    if let Some(q) = query {
        out_head.push(b'?');
        out_head.extend_from_slice(q.as_bytes());
    }
    out_head.extend_from_slice(b" HTTP/1.1\r\n");
    let mut has_host = false;
    for h in req.headers {
        if head::is_hop_by_hop(h.name)
            || h.name.eq_ignore_ascii_case("x-portcullis-source")
            || (req.expect_continue && h.name.eq_ignore_ascii_case("expect"))
            || head::named_by_connection(req.headers, h.name)
        {
            continue;
        }
        has_host |= h.name.eq_ignore_ascii_case("host");
        out_head.extend_from_slice(h.name.as_bytes());
        out_head.extend_from_slice(b": ");
        out_head.extend_from_slice(h.value);
        out_head.extend_from_slice(b"\r\n");
    }
    if !has_host {
        out_head.extend_from_slice(format!("host: {}\r\n", flow.dst).as_bytes());
    }
    if req.framing == Framing::Chunked {
        out_head.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out_head.extend_from_slice(b"x-portcullis-source: ");
    out_head.extend_from_slice(source_name.unwrap_or("unknown").as_bytes());
    out_head.extend_from_slice(b"\r\n\r\n");
    Plan::Forward(Exchange {
        framing: req.framing,
        keep_alive: req.keep_alive,
        head_request: req.method == "HEAD",
        expect_continue: req.expect_continue,
        body_limit: lim.max_body_bytes,
        connect_timeout: super::forward::CONNECT_TIMEOUT,
        response_timeout: super::forward::RESPONSE_TIMEOUT,
    })
}
