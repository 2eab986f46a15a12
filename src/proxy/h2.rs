//! HTTP/2 with prior knowledge on redirected flows and on frontends.
//!
//! A client that opens with the connection preface (`PRI * HTTP/2.0`) is
//! served by the `h2` crate. Every stream is one request and goes through
//! the same decision as an HTTP/1 request of its entry path, given as a
//! [`Streams`] implementation: on access flows [`Access`] runs
//! [`super::conn::authorise`] (limits, path normalisation, access
//! matchers); on frontends `frontend::FrontendStreams` routes by
//! `:authority` and path and picks a pool member. So the two protocols
//! cannot disagree about what is allowed or where it goes. An allowed
//! stream is forwarded over HTTP/2 too (one upstream connection per
//! client connection and destination, opened on first use): a client that
//! speaks HTTP/2 with prior knowledge expects the service to.
//!
//! Hostile-client bounds: at most [`MAX_STREAMS`] concurrent streams, and
//! as many streams *being worked on* (a stream's task holds a permit until
//! it ends, and no new stream is accepted without one), so resetting
//! streams cannot pile up work (rapid reset, CVE-2023-44487); streams reset
//! before they were accepted are bounded by
//! `max_pending_accept_reset_streams`, beyond which `h2` ends the
//! connection with `ENHANCE_YOUR_CALM`. A header block (HEADERS plus any
//! CONTINUATION frames) is bounded by `max_header_bytes`, which also stops
//! CONTINUATION floods. CONNECT (and so RFC 8441 WebSockets) over HTTP/2
//! is refused with 501.
//!
//! Slow streams: a request body is received up to `request_buffer_bytes`
//! before the upstream is asked for a stream, all of it within
//! `body_timeout_ms` (→ 408, the upstream stream reset if it had begun);
//! the response head is awaited for the response timeout once the body is
//! sent (→ 504), each piece of its body likewise, and a client that grants
//! no window for `send_timeout_ms` gets its stream reset. Writes to a
//! client that stops reading altogether fail after `send_timeout_ms`.

use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, Semaphore};
use tokio::time::{timeout, timeout_at, Instant};
use tracing::{debug, warn};

use super::body::Inbound;
use super::conn::{authorise, resolve, Check, Flow, Plan};
use super::limits::{self, SourceName};
use super::send::SendTimeout;
use super::upstream::UpstreamPool;
use super::ProxyCtx;
use crate::balance::Outcome;
use crate::policy::fields::{same_field, FieldGuard};
use crate::state::metrics::Metrics;
use crate::wire::head::{self, Framing, RequestHead};

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Concurrent streams per client connection, and streams being worked on.
pub const MAX_STREAMS: u32 = 100;
/// Streams reset by the client before they were accepted, per connection.
const MAX_PENDING_RESETS: usize = 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which protocol a new client connection speaks, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// The HTTP/2 prior-knowledge preface was read.
    Http2,
    /// Anything else: the HTTP/1 parser takes it (and refuses non-HTTP).
    Http1,
    /// Nothing arrived within the idle timeout.
    Idle,
    /// Closed, failed, or the preface did not complete in time.
    Gone,
}

/// Waits up to `idle` for the first bytes of a connection, and up to
/// `header` for the rest of an HTTP/2 preface they begin.
pub async fn sniff(inbound: &mut Inbound<TcpStream>, idle: Duration, header: Duration) -> Sniffed {
    match timeout(idle, inbound.fill()).await {
        Ok(Ok(n)) if n > 0 => {}
        Err(_) => return Sniffed::Idle,
        _ => return Sniffed::Gone,
    }
    if !starts_like_preface(&inbound.buf) {
        return Sniffed::Http1;
    }
    match timeout(header, read_preface(inbound)).await {
        Ok(Ok(true)) => Sniffed::Http2,
        // Not HTTP/2 after all: the HTTP/1 parser refuses it.
        Ok(Ok(false)) => Sniffed::Http1,
        _ => Sniffed::Gone,
    }
}

/// Could `buf` be the beginning of the preface?
pub fn starts_like_preface(buf: &[u8]) -> bool {
    let n = buf.len().min(PREFACE.len());
    buf.get(..n) == PREFACE.get(..n)
}

/// Reads until the preface is complete (`true`) or ruled out (`false`).
pub async fn read_preface(inbound: &mut Inbound<TcpStream>) -> io::Result<bool> {
    loop {
        if inbound.buf.len() >= PREFACE.len() {
            return Ok(inbound.buf.starts_with(PREFACE));
        }
        if !starts_like_preface(&inbound.buf) {
            return Ok(false);
        }
        if inbound.fill().await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// A stream that first replays bytes already read (the preface); writes
/// to a client that stops reading fail after `send_timeout_ms`.
struct Rewind {
    pre: BytesMut,
    io: SendTimeout<TcpStream>,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            let chunk = self.pre.split_to(n);
            buf.put_slice(&chunk);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// What an entry path decided for one stream.
pub(crate) enum Decision {
    Refuse { code: u16, reason: String },
    Forward(Route),
}

/// Where and how an allowed stream goes upstream.
pub(crate) struct Route {
    pub dst: SocketAddr,
    /// Path and query sent upstream (normalised).
    pub target: String,
    pub body_limit: Option<u64>,
    /// Request body bytes received before the upstream is involved.
    pub request_buffer_bytes: usize,
    /// When the whole request body must have arrived (→ 408, the upstream
    /// stream reset).
    pub body_deadline: Instant,
    /// Longest wait for the response head once the body is sent, and for
    /// each piece of the response body (→ 504 / reset).
    pub response_timeout: Duration,
    /// Longest wait for the client to take response data (→ reset).
    pub send_timeout: Duration,
    /// Request fields not copied upstream (besides hop-by-hop ones).
    pub strip: &'static [&'static str],
    /// Fields added upstream after the copied ones.
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Who sent it, for logs.
    pub who: String,
    /// Told how the exchange with the upstream went (passive health).
    pub report: Option<Box<dyn FnOnce(Outcome) + Send>>,
}

/// The per-stream step of an entry path: its checks, and the upstream.
pub(crate) trait Streams: Send + Sync + 'static {
    /// The client (for logs).
    fn peer(&self) -> SocketAddr;
    /// Limits of the connection: header list size, handshake and idle
    /// time, and the send timeout towards the client.
    fn conn_limits(&self) -> (usize, Duration, Duration, Duration);
    /// Decides one stream; `headers` shows `:authority` as `host`.
    fn decide(
        &self,
        method: &Method,
        target: &str,
        headers: &[httparse::Header<'_>],
        framing: Framing,
    ) -> Decision;
}

/// Redirected access flows: the rules decide, the original destination serves.
pub(crate) struct Access {
    ctx: Arc<ProxyCtx>,
    flow: Flow,
}

impl Streams for Access {
    fn peer(&self) -> SocketAddr {
        self.flow.peer
    }

    fn conn_limits(&self) -> (usize, Duration, Duration, Duration) {
        let snap = self.ctx.state.load();
        let r = resolve(&snap.policy, &snap.dir, &self.flow);
        let lim = limits::effective(&snap.policy, r.entry);
        (
            lim.max_header_bytes,
            lim.header_timeout,
            lim.idle_timeout,
            lim.send_timeout,
        )
    }

    fn decide(
        &self,
        method: &Method,
        target: &str,
        headers: &[httparse::Header<'_>],
        framing: Framing,
    ) -> Decision {
        let (ctx, flow) = (&self.ctx, &self.flow);
        let snap = ctx.state.load_full();
        let resolved = resolve(&snap.policy, &snap.dir, flow);
        let lim = limits::effective(&snap.policy, resolved.entry);
        let source = SourceName(&snap.policy, resolved.key.source).to_string();
        let mut out_head = Vec::with_capacity(512);
        let plan = match head::check_h2_request(target, headers) {
            Err(e) => {
                Metrics::inc(&ctx.metrics.requests_bad_total);
                warn!(source = %source, peer = %flow.peer, destination = %flow.dst, status = 400, reason = %e, "malformed HTTP/2 request refused");
                return Decision::Refuse {
                    code: 400,
                    reason: format!("bad request: {e}"),
                };
            }
            Ok(()) => {
                let head = RequestHead {
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
                };
                authorise(&check, &head, &mut out_head)
            }
        };
        let exchange = match plan {
            Plan::Refuse { code, reason, .. } => return Decision::Refuse { code, reason },
            Plan::Forward(x) => x,
        };
        let Some(path) = authorised_target(&out_head) else {
            return Decision::Refuse {
                code: 500,
                reason: "internal error: no target".into(),
            };
        };
        let source_name = resolved
            .from
            .map(|f| snap.policy.container_name(f))
            .unwrap_or("unknown");
        let add = HeaderValue::from_str(source_name)
            .map(|v| vec![(HeaderName::from_static("x-portcullis-source"), v)])
            .unwrap_or_default();
        Decision::Forward(Route {
            dst: flow.dst,
            target: path.to_owned(),
            body_limit: exchange.body_limit,
            request_buffer_bytes: exchange.request_buffer_bytes,
            body_deadline: exchange.body_deadline,
            response_timeout: exchange.response_timeout,
            send_timeout: exchange.send_timeout,
            strip: &["x-portcullis-source"],
            add,
            who: source,
            report: None,
        })
    }
}

/// What the streams of one client connection share.
struct Shared<S> {
    ctx: Arc<ProxyCtx>,
    streams: S,
    /// Upstream HTTP/2 connections by destination, opened on first use
    /// and replaced when they end (GOAWAY, close).
    upstream: Mutex<HashMap<SocketAddr, h2::client::SendRequest<Bytes>>>,
}

impl<S> Shared<S> {
    /// A sender ready for one more stream, reconnecting once if the
    /// upstream connection has ended.
    async fn ready_sender(
        &self,
        dst: SocketAddr,
    ) -> Result<h2::client::SendRequest<Bytes>, io::Error> {
        let mut slots = self.upstream.lock().await;
        if let Some(s) = slots.get(&dst) {
            if let Ok(ready) = s.clone().ready().await {
                return Ok(ready);
            }
        }
        let fresh = connect_upstream(dst).await?;
        let ready = fresh
            .clone()
            .ready()
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
        slots.insert(dst, fresh);
        Ok(ready)
    }
}

/// Serves one HTTP/2 client connection of a redirected flow until it ends.
pub async fn serve(ctx: Arc<ProxyCtx>, inbound: Inbound<TcpStream>, flow: Flow) {
    let streams = Access {
        ctx: ctx.clone(),
        flow,
    };
    serve_with(ctx, inbound, streams).await;
}

/// Serves one HTTP/2 client connection until it ends, each stream decided
/// by `streams`.
pub(crate) async fn serve_with<S: Streams>(
    ctx: Arc<ProxyCtx>,
    inbound: Inbound<TcpStream>,
    streams: S,
) {
    Metrics::inc(&ctx.metrics.h2_connections_total);
    let (max_header_bytes, header_timeout, idle_timeout, send_timeout) = streams.conn_limits();
    let peer = streams.peer();
    let io = Rewind {
        pre: inbound.buf,
        io: SendTimeout::new(inbound.io, send_timeout),
    };
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
        .max_concurrent_reset_streams(MAX_STREAMS as usize)
        .max_send_buffer_size(64 * 1024);
    let mut conn = match timeout(header_timeout, builder.handshake::<_, Bytes>(io)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return debug!(peer = %peer, error = %e, "HTTP/2 handshake failed"),
        Err(_) => return debug!(peer = %peer, "HTTP/2 handshake timed out"),
    };
    let shared = Arc::new(Shared {
        ctx,
        streams,
        upstream: Mutex::new(HashMap::new()),
    });
    let working = Arc::new(Semaphore::new(MAX_STREAMS as usize));
    loop {
        // No permit, no new stream: work per connection stays bounded
        // however fast streams are opened and reset.
        let permit = tokio::select! {
            p = working.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            // Keep the connection (pings, resets, window updates) going
            // while every permit is in use.
            closed = poll_fn(|cx| conn.poll_closed(cx)) => {
                if let Err(e) = closed {
                    connection_error(&shared.ctx.metrics, peer, &e);
                }
                break;
            }
        };
        let idle = working.available_permits() == MAX_STREAMS as usize - 1;
        let next = if idle {
            match timeout(idle_timeout, conn.accept()).await {
                Ok(n) => n,
                Err(_) => {
                    Metrics::inc(&shared.ctx.metrics.connections_idle_closed_total);
                    conn.graceful_shutdown();
                    drop(permit);
                    let _ = poll_fn(|cx| conn.poll_closed(cx)).await;
                    break;
                }
            }
        } else {
            conn.accept().await
        };
        match next {
            None => break,
            Some(Err(e)) => {
                connection_error(&shared.ctx.metrics, peer, &e);
                break;
            }
            Some(Ok((req, respond))) => {
                Metrics::inc(&shared.ctx.metrics.h2_streams_total);
                let shared = shared.clone();
                tokio::spawn(async move {
                    stream(&shared, req, respond).await;
                    drop(permit);
                });
            }
        }
    }
}

/// Logs why a client connection ended: a client that stopped reading
/// (counted) and protocol errors (rapid reset, CONTINUATION flood,
/// malformed frames) are warnings, the rest is noise.
fn connection_error(metrics: &Metrics, peer: SocketAddr, e: &h2::Error) {
    if e.get_io().is_some_and(super::send::is_send_timeout) {
        Metrics::inc(&metrics.clients_send_timeout_total);
        warn!(peer = %peer, error = %e, "HTTP/2 client connection closed: the client stopped reading");
    } else if e.reason().is_some_and(|r| r != Reason::NO_ERROR) {
        warn!(peer = %peer, error = %e, "HTTP/2 connection ended by protocol error");
    } else {
        debug!(peer = %peer, error = %e, "HTTP/2 connection error");
    }
}

/// A response the proxy makes itself on a stream.
fn refuse(respond: &mut SendResponse<Bytes>, code: u16, reason: &str) {
    let body = super::respond::body_text(reason);
    let mut res = Response::new(());
    *res.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    let h = res.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    if let Ok(mut s) = respond.send_response(res, false) {
        let _ = s.send_data(Bytes::from(body), true);
    }
}

/// The request's fields as `httparse` headers, for the shared matchers;
/// `:authority` appears as `host` (a `host` field, which [`authority`]
/// made sure agrees with it, is not listed twice).
fn header_view<'a>(authority: Option<&'a str>, map: &'a HeaderMap) -> Vec<httparse::Header<'a>> {
    let mut out = Vec::with_capacity(map.len() + 1);
    if let Some(a) = authority {
        out.push(httparse::Header {
            name: "host",
            value: a.as_bytes(),
        });
    }
    for (name, value) in map {
        if authority.is_some() && name == http::header::HOST {
            continue;
        }
        out.push(httparse::Header {
            name: name.as_str(),
            value: value.as_bytes(),
        });
    }
    out
}

/// The authority of a stream (RFC 9113 §8.3.1): `:authority` wins, and it
/// must be a valid Host value; a `host` field must agree with it (else the
/// rules and the route would see one name and the upstream another).
/// Without `:authority`, one valid `host` field stands in.
fn authority<'a>(
    uri: Option<&'a str>,
    map: &'a HeaderMap,
) -> Result<Option<&'a str>, &'static str> {
    let mut hosts = map.get_all(http::header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err("more than one host field"),
        (Some(h), None) => Some(h.to_str().map_err(|_| "invalid host field")?),
        (None, None) => None,
    };
    match (uri, host) {
        (Some(a), _) if !head::valid_host(a.as_bytes()) || a.is_empty() => {
            Err("invalid :authority")
        }
        (Some(a), Some(h)) if !a.eq_ignore_ascii_case(head::trim_str(h)) => {
            Err(":authority and host disagree")
        }
        (Some(a), _) => Ok(Some(a)),
        (None, Some(h)) => {
            let h = head::trim_str(h);
            if h.is_empty() || !head::valid_host(h.as_bytes()) {
                Err("invalid host field")
            } else {
                Ok(Some(h))
            }
        }
        (None, None) => Ok(None),
    }
}

/// The target authorise (or frontend routing) wrote into the upstream head (`METHOD SP target SP …`).
pub(crate) fn authorised_target(out_head: &[u8]) -> Option<&str> {
    let line = out_head.split(|&b| b == b'\r').next()?;
    let mut parts = line.split(|&b| b == b' ');
    let _method = parts.next()?;
    std::str::from_utf8(parts.next()?).ok()
}

/// One stream: the entry path decides, then forward over HTTP/2.
async fn stream<S: Streams>(
    shared: &Shared<S>,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let ctx = &shared.ctx;
    let peer = shared.streams.peer();
    let (parts, body) = req.into_parts();

    if parts.method == Method::CONNECT {
        Metrics::inc(&ctx.metrics.requests_bad_total);
        warn!(peer = %peer, status = 501, "CONNECT over HTTP/2 refused");
        return refuse(&mut respond, 501, "CONNECT over HTTP/2 is not supported");
    }
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let authority = match authority(parts.uri.authority().map(|a| a.as_str()), &parts.headers) {
        Ok(a) => a,
        Err(why) => {
            Metrics::inc(&ctx.metrics.requests_bad_total);
            warn!(peer = %peer, status = 400, reason = why, "malformed HTTP/2 request refused");
            return refuse(&mut respond, 400, &format!("bad request: {why}"));
        }
    };
    let framing = if body.is_end_stream() {
        Framing::None
    } else {
        match parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            Some(n) => Framing::Length(n),
            None => Framing::Chunked,
        }
    };
    let decision = {
        let headers = header_view(authority, &parts.headers);
        shared
            .streams
            .decide(&parts.method, target, &headers, framing)
    };
    let route = match decision {
        Decision::Refuse { code, reason } => return refuse(&mut respond, code, &reason),
        Decision::Forward(r) => r,
    };
    let Route {
        dst,
        target: path,
        body_limit: limit,
        request_buffer_bytes,
        body_deadline,
        response_timeout,
        send_timeout,
        strip,
        add,
        who: source,
        report,
    } = route;
    let report = |outcome: Outcome| {
        if let Some(r) = report {
            r(outcome);
        }
    };

    // Phase 4a: the body, up to request_buffer_bytes, before any upstream
    // is involved: a stalled or oversized body never reaches one.
    let mut body = body;
    let (buffered, buffered_len) = if framing == Framing::None {
        (Vec::new(), 0)
    } else {
        match timeout_at(
            body_deadline,
            buffer_stream(&mut body, request_buffer_bytes, limit),
        )
        .await
        {
            Ok(Ok(b)) => b,
            Ok(Err(PumpError::TooLarge)) => {
                Metrics::inc(&ctx.metrics.requests_body_too_large_total);
                warn!(source = %source, destination = %dst, status = 413, "HTTP/2 request body over max_body_bytes");
                return refuse(&mut respond, 413, "request body too large");
            }
            Ok(Err(e)) => {
                return debug!(source = %source, error = ?e, "HTTP/2 client stream ended before its body");
            }
            Err(_) => {
                Metrics::inc(&ctx.metrics.requests_timeout_total);
                warn!(source = %source, destination = %dst, status = 408, "HTTP/2 request body not received within body_timeout_ms");
                return refuse(&mut respond, 408, "request body timeout");
            }
        }
    };

    // Phase 4: the upstream request over HTTP/2.
    let mut sender = match shared.ready_sender(dst).await {
        Ok(s) => s,
        Err(e) => {
            Metrics::inc(&ctx.metrics.upstream_errors_total);
            report(Outcome::ConnectFailure);
            warn!(destination = %dst, error = %e, status = 502, "HTTP/2 upstream unreachable");
            return refuse(&mut respond, 502, &format!("upstream {dst} failed: {e}"));
        }
    };
    let uri = format!(
        "http://{}{path}",
        authority.map_or_else(|| dst.to_string(), str::to_owned)
    );
    // What the cache keys the request by, should it have to invalidate.
    let cache_source = add
        .iter()
        .find(|(n, _)| n == "x-portcullis-source")
        .and_then(|(_, v)| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let cache_authority = authority.map_or_else(|| dst.to_string(), str::to_owned);
    let mut up_req = Request::builder().method(parts.method.clone()).uri(uri);
    let snap = ctx.state.load_full();
    let fields = &snap.policy.fields;
    if let Some(h) = up_req.headers_mut() {
        for (name, value) in &parts.headers {
            // `te: trailers` is the one TE value HTTP/2 allows (gRPC needs it).
            let te_trailers = name == http::header::TE && value.as_bytes() == b"trailers";
            // The authority travels as `:authority` (the one the rules saw).
            if (head::is_hop_by_hop(name.as_str()) && !te_trailers)
                || name == http::header::HOST
                || fields.drops(name.as_str())
                || strip.iter().any(|s| same_field(name.as_str(), s))
            {
                continue;
            }
            h.append(name.clone(), value.clone());
        }
        for (name, value) in add {
            h.insert(name, value);
        }
    }
    let Ok(up_req) = up_req.body(()) else {
        return refuse(&mut respond, 400, "bad request: cannot restate the request");
    };
    let (response, up_send) = match sender.send_request(up_req, framing == Framing::None) {
        Ok(x) => x,
        Err(e) => {
            Metrics::inc(&ctx.metrics.upstream_errors_total);
            report(Outcome::GatewayFailure);
            warn!(destination = %dst, error = %e, status = 502, "HTTP/2 upstream failed");
            return refuse(&mut respond, 502, &format!("upstream {dst} failed: {e}"));
        }
    };
    // The response timeout starts once the request body is sent.
    let (body_sent, body_sent_rx) = tokio::sync::oneshot::channel::<()>();
    let pump_up = async move {
        if framing == Framing::None {
            let _ = body_sent.send(());
            return Ok(());
        }
        let mut up_send = up_send;
        // The whole body within body_timeout_ms: a stalled client stream
        // does not hold the upstream stream open.
        let rest = async {
            for chunk in buffered {
                send_chunk(&mut up_send, chunk, None).await?;
            }
            let left = limit.map(|l| l.saturating_sub(buffered_len));
            pump(body, &mut up_send, left, Some(fields), None, None).await
        };
        match timeout_at(body_deadline, rest).await {
            Ok(Ok(())) => {
                let _ = body_sent.send(());
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => {
                up_send.send_reset(Reason::CANCEL);
                Err(PumpError::BodyTimeout)
            }
        }
    };
    let relay = async {
        let response_deadline = async {
            match body_sent_rx.await {
                Ok(()) => tokio::time::sleep(response_timeout).await,
                // The body failed: its own error answers the stream.
                Err(_) => std::future::pending().await,
            }
        };
        // A client that resets its stream cancels the upstream request too
        // (dropping it sends RST_STREAM upstream): no work for nobody.
        let res = tokio::select! {
            r = response => r.map_err(PumpError::Upstream)?,
            _ = poll_fn(|cx| respond.poll_reset(cx)) => return Err(PumpError::Reset),
            _ = response_deadline => return Err(PumpError::UpstreamTimeout),
        };
        let (rparts, rbody) = res.into_parts();
        let mut out = Response::new(());
        *out.status_mut() = rparts.status;
        for (name, value) in &rparts.headers {
            if !head::is_hop_by_hop(name.as_str()) {
                out.headers_mut().append(name.clone(), value.clone());
            }
        }
        let end = rbody.is_end_stream();
        let down = respond.send_response(out, end).map_err(PumpError::Client)?;
        if !end {
            let mut down = down;
            pump(
                rbody,
                &mut down,
                None,
                None,
                Some(response_timeout),
                Some(send_timeout),
            )
            .await?;
        }
        Ok::<u16, PumpError>(rparts.status.as_u16())
    };
    let (up, down) = tokio::join!(pump_up, relay);
    // An accepted unsafe request invalidates a cached service's stored
    // responses of its URL (RFC 9111 §4.4), as on HTTP/1; an unknown
    // outcome (the client went away) counts as accepted.
    let accepted = match &down {
        Ok(code) => (200..400).contains(code),
        Err(PumpError::Client(_) | PumpError::Reset) => true,
        Err(_) => false,
    };
    if accepted {
        ctx.cache.invalidate_forwarded(
            &ctx.state.load(),
            dst,
            parts.method.as_str(),
            &cache_authority,
            &path,
            &cache_source,
        );
    }
    match (up, down) {
        (_, Ok(code)) => {
            report(Outcome::of_status(code));
            debug!(source = %source, destination = %dst, status = code, "forwarded over HTTP/2")
        }
        (Err(PumpError::TooLarge), _) => {
            Metrics::inc(&ctx.metrics.requests_body_too_large_total);
            warn!(source = %source, destination = %dst, status = 413, "HTTP/2 request body over max_body_bytes");
            refuse(&mut respond, 413, "request body too large");
        }
        (Err(PumpError::BodyTimeout), _) => {
            Metrics::inc(&ctx.metrics.requests_timeout_total);
            warn!(source = %source, destination = %dst, status = 408, "HTTP/2 request body not received within body_timeout_ms; upstream stream reset");
            refuse(&mut respond, 408, "request body timeout");
        }
        (_, Err(PumpError::UpstreamTimeout)) => {
            Metrics::inc(&ctx.metrics.upstream_errors_total);
            report(Outcome::GatewayFailure);
            warn!(destination = %dst, status = 504, "HTTP/2 upstream did not answer in time");
            refuse(
                &mut respond,
                504,
                &format!("upstream {dst} did not answer in time"),
            );
        }
        (_, Err(PumpError::SendTimeout)) => {
            Metrics::inc(&ctx.metrics.clients_send_timeout_total);
            warn!(source = %source, destination = %dst, "HTTP/2 stream reset: the client took no response data for send_timeout_ms");
        }
        (_, Err(PumpError::Upstream(e))) => {
            Metrics::inc(&ctx.metrics.upstream_errors_total);
            report(Outcome::GatewayFailure);
            warn!(destination = %dst, error = %e, status = 502, "HTTP/2 upstream failed");
            refuse(&mut respond, 502, &format!("upstream {dst} failed: {e}"));
        }
        (_, Err(PumpError::Client(e))) => {
            debug!(source = %source, error = %e, "HTTP/2 client stream ended early")
        }
        (_, Err(PumpError::Reset)) => {
            debug!(source = %source, destination = %dst, "HTTP/2 stream reset by the client; upstream request cancelled")
        }
        (_, Err(PumpError::TooLarge | PumpError::BodyTimeout)) => {}
    }
}

#[derive(Debug)]
enum PumpError {
    TooLarge,
    /// The request body did not arrive within `body_timeout_ms`.
    BodyTimeout,
    /// The upstream sent no response head, or no response data, in time.
    UpstreamTimeout,
    /// The client granted no window for the response for `send_timeout_ms`.
    SendTimeout,
    /// The client reset the stream before the response came.
    Reset,
    Client(h2::Error),
    Upstream(h2::Error),
}

/// Copies a body between streams with flow control: data is sent only as
/// the receiver grants capacity, and released to the sender as it leaves,
/// so a stream never holds more than a window's worth. Request trailers
/// (`trailers` given) pass only the fields [`FieldGuard::trailer_allowed`]
/// lets through: the rules never saw them.
/// `read_timeout` bounds each wait for data (→ `UpstreamTimeout`),
/// `send_timeout` each wait for capacity (→ `SendTimeout`); either resets `to`.
async fn pump(
    mut from: RecvStream,
    to: &mut SendStream<Bytes>,
    limit: Option<u64>,
    trailers: Option<&FieldGuard>,
    read_timeout: Option<Duration>,
    send_timeout: Option<Duration>,
) -> Result<(), PumpError> {
    let mut total = 0u64;
    loop {
        let next = match read_timeout {
            None => from.data().await,
            Some(t) => match timeout(t, from.data()).await {
                Ok(n) => n,
                Err(_) => {
                    to.send_reset(Reason::CANCEL);
                    return Err(PumpError::UpstreamTimeout);
                }
            },
        };
        let Some(chunk) = next else {
            break;
        };
        let chunk = chunk.map_err(PumpError::Client)?;
        let len = chunk.len();
        total += len as u64;
        if limit.is_some_and(|l| total > l) {
            to.send_reset(Reason::CANCEL);
            return Err(PumpError::TooLarge);
        }
        send_chunk(to, chunk, send_timeout).await?;
        let _ = from.flow_control().release_capacity(len);
    }
    match from.trailers().await.map_err(PumpError::Client)? {
        Some(mut t) => {
            if let Some(guard) = trailers {
                let before = t.len();
                t = filter_trailers(t, guard);
                if t.len() != before {
                    warn!(dropped = before - t.len(), "request trailer fields dropped (protected, hop-by-hop or underscore names)");
                }
                if t.is_empty() {
                    return to
                        .send_data(Bytes::new(), true)
                        .map_err(PumpError::Upstream);
                }
            }
            to.send_trailers(t).map_err(PumpError::Upstream)
        }
        None => to
            .send_data(Bytes::new(), true)
            .map_err(PumpError::Upstream),
    }
}

/// The trailer fields that may follow a request upstream.
fn filter_trailers(t: HeaderMap, guard: &FieldGuard) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(t.len());
    let mut name = None;
    for (n, v) in t {
        // `into_iter` names only the first value of a repeated field.
        if let Some(n) = n {
            name = Some(n);
        }
        if let Some(n) = &name {
            if guard.trailer_allowed(n.as_str()) {
                out.append(n.clone(), v);
            }
        }
    }
    out
}

/// Sends `chunk` on `to` as the receiver grants capacity, waiting at most
/// `send_timeout` for each grant (→ `SendTimeout`, `to` reset).
async fn send_chunk(
    to: &mut SendStream<Bytes>,
    mut chunk: Bytes,
    send_timeout: Option<Duration>,
) -> Result<(), PumpError> {
    while !chunk.is_empty() {
        to.reserve_capacity(chunk.len());
        let capacity = poll_fn(|cx| to.poll_capacity(cx));
        let granted = match send_timeout {
            None => capacity.await,
            Some(t) => match timeout(t, capacity).await {
                Ok(c) => c,
                Err(_) => {
                    to.send_reset(Reason::CANCEL);
                    return Err(PumpError::SendTimeout);
                }
            },
        };
        let cap = match granted {
            Some(Ok(c)) => c,
            Some(Err(e)) => return Err(PumpError::Upstream(e)),
            None => return Err(PumpError::Upstream(h2::Error::from(Reason::CANCEL))),
        };
        let piece = chunk.split_to(cap.min(chunk.len()));
        to.send_data(piece, false).map_err(PumpError::Upstream)?;
    }
    Ok(())
}

/// Receives a request body until it ends or more than `max` bytes are in
/// (then the rest streams), before any upstream is involved. Capacity is
/// released as data arrives, so the client can send up to `max`; memory
/// stays bounded by it. Returns the data and its length.
async fn buffer_stream(
    from: &mut RecvStream,
    max: usize,
    limit: Option<u64>,
) -> Result<(Vec<Bytes>, u64), PumpError> {
    let mut chunks = Vec::new();
    let mut total = 0u64;
    while total <= max as u64 {
        let Some(chunk) = from.data().await else {
            break;
        };
        let chunk = chunk.map_err(PumpError::Client)?;
        total += chunk.len() as u64;
        if limit.is_some_and(|l| total > l) {
            return Err(PumpError::TooLarge);
        }
        let _ = from.flow_control().release_capacity(chunk.len());
        chunks.push(chunk);
    }
    Ok((chunks, total))
}

async fn connect_upstream(
    dst: std::net::SocketAddr,
) -> Result<h2::client::SendRequest<Bytes>, io::Error> {
    let tcp = UpstreamPool::connect(dst, CONNECT_TIMEOUT).await?;
    let (send, conn) = h2::client::Builder::new()
        .max_concurrent_reset_streams(MAX_STREAMS as usize)
        .handshake::<_, Bytes>(tcp)
        .await
        .map_err(|e| io::Error::other(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(destination = %dst, error = %e, "HTTP/2 upstream connection ended");
        }
    });
    Ok(send)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preface_prefixes() {
        assert!(starts_like_preface(b"PRI * HT"));
        assert!(starts_like_preface(PREFACE));
        assert!(!starts_like_preface(b"GET / HTTP/1.1"));
        assert!(!starts_like_preface(b"PRI * HTTP/1.1\r\n"));
    }

    #[test]
    fn target_from_the_upstream_head() {
        assert_eq!(
            authorised_target(b"GET /foo?x=1 HTTP/1.1\r\nhost: a\r\n\r\n"),
            Some("/foo?x=1")
        );
    }
}
