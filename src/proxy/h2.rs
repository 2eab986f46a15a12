//! HTTP/2 with prior knowledge on redirected flows and on frontends.
//!
//! A client that opens with the connection preface (`PRI * HTTP/2.0`) is
//! served by the `h2` crate. Every stream is one request, viewed as the
//! HTTP/1 parser would give it (`:authority` as `host`) and decided by the
//! same [`EntryPath::decide`] as an HTTP/1 request of its entry path, then
//! served by the same pipeline ([`super::pipeline`]) with the stream as
//! its [`Downstream`]. So the two protocols cannot disagree about what is
//! allowed, where it goes, or what the upstream receives; the upstream
//! speaks what its pool or access entry says, whatever the client speaks.
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

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::client_io::{ClientIo, ConnLimits};
use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use http::{HeaderMap, Method, Request};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tracing::{debug, warn};

use super::body::Inbound;
use super::connection::{Decision, EntryPath};
use super::downstream::{ClientProtocol, Downstream, H2Body, H2Down};
use super::pipeline;
use super::refusal::{At, Refusal};
use super::respond::h2_refuse;
use super::send::SendTimeout;
use super::ProxyCtx;
use crate::state::metrics::Metrics;
use crate::wire::head::{self, Framing, RequestHead};

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Concurrent streams per client connection, and streams being worked on.
pub const MAX_STREAMS: u32 = 100;
/// Streams reset by the client before they were accepted, per connection.
const MAX_PENDING_RESETS: usize = 20;

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
pub async fn sniff(inbound: &mut Inbound<ClientIo>, idle: Duration, header: Duration) -> Sniffed {
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
pub async fn read_preface(inbound: &mut Inbound<ClientIo>) -> io::Result<bool> {
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
    io: SendTimeout<ClientIo>,
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

/// What the streams of one client connection share.
struct Shared<E> {
    ctx: Arc<ProxyCtx>,
    entry: Arc<E>,
}

/// Serves one HTTP/2 client connection until it ends, each stream decided
/// by `entry` as an HTTP/1 request of it is.
pub async fn serve_with<E: EntryPath>(
    ctx: Arc<ProxyCtx>,
    inbound: Inbound<ClientIo>,
    entry: Arc<E>,
    lim: ConnLimits,
) {
    Metrics::inc(&ctx.metrics.h2_connections_total);
    let ConnLimits {
        max_header_bytes,
        header_timeout,
        idle_timeout,
        send_timeout,
    } = lim;
    let peer = entry.peer();
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
    let shared = Arc::new(Shared { ctx, entry });
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
                    // Boxed: the pipeline future is large, and moving it
                    // into and out of the task per stream showed in profiles.
                    Box::pin(stream(&shared, req, respond)).await;
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

/// One stream: the entry path decides, then the shared pipeline serves it
/// with this stream as the downstream.
async fn stream<E: EntryPath>(
    shared: &Shared<E>,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let ctx = &shared.ctx;
    let peer = shared.entry.peer();
    let (parts, body) = req.into_parts();

    let refuse = |respond: &mut SendResponse<Bytes>, r: Refusal| {
        let at = At {
            peer: Some(peer),
            method: Some(parts.method.as_str()),
            path: parts.uri.path_and_query().map(|p| p.as_str()),
            ..At::default()
        };
        r.record(&ctx.metrics, &at);
        h2_refuse(respond, r.status(), &r.reason());
    };
    if parts.method == Method::CONNECT {
        let r = Refusal::Unsupported("CONNECT over HTTP/2 is not supported");
        return refuse(&mut respond, r);
    }
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let authority = match authority(parts.uri.authority().map(|a| a.as_str()), &parts.headers) {
        Ok(a) => a,
        Err(why) => return refuse(&mut respond, Refusal::Malformed(why.to_owned())),
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
    let mut out_head = Vec::with_capacity(512);
    let decision = {
        let headers = header_view(authority, &parts.headers);
        if let Err(e) = head::check_h2_request(target, &headers) {
            return refuse(&mut respond, Refusal::Malformed(e.to_string()));
        }
        // The request as an HTTP/1 parser would have given it: the entry
        // path decides it with the same function.
        let req = RequestHead {
            method: parts.method.as_str(),
            target,
            http10: false,
            headers: &headers,
            framing,
            keep_alive: true,
            expect_continue: false,
            tunnel: None,
        };
        shared
            .entry
            .decide(ctx, &req, ClientProtocol::Http2, &mut out_head)
    };
    let (mut exchange, target) = match decision {
        Decision::Refuse { refusal, .. } => {
            return h2_refuse(&mut respond, refusal.status(), &refusal.reason())
        }
        Decision::Forward { exchange, target } => (exchange, target),
    };
    if exchange.framing == Framing::Chunked {
        // No declared length: the end of the stream ends the body (an
        // HTTP/1 upstream gets it chunked).
        exchange.source_framing = Framing::UntilClose;
    }
    let send_timeout = exchange.send_timeout;
    let mut client = Downstream::H2(Box::new(H2Down {
        respond,
        send: None,
        body: Some(Inbound::new(H2Body::new(body))),
        send_timeout,
        hsts: shared.entry.hsts(),
    }));
    if let Err(e) = pipeline::serve(ctx, peer, &mut client, &out_head, exchange, target).await {
        if super::send::is_send_timeout(&e) {
            Metrics::inc(&ctx.metrics.clients_send_timeout_total);
            warn!(peer = %peer, error = %e, "HTTP/2 stream reset: the client took no response data for send_timeout_ms");
            if let Downstream::H2(d) = &mut client {
                if let Some(s) = d.send.as_mut() {
                    s.send_reset(Reason::CANCEL);
                }
            }
        } else {
            debug!(peer = %peer, error = %e, "HTTP/2 stream ended early");
        }
    }
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
}
