//! One client connection, whatever its entry path and stream type.
//!
//! Every accepted connection goes through the same skeleton:
//!
//! 1. **admit** — counted against `max_connections_per_source` (429 over it);
//! 2. **protocol** — by ALPN where the stream negotiated one (TLS), else by
//!    sniffing the first bytes for the HTTP/2 prior-knowledge preface;
//! 3. **serve** — HTTP/2: one task per stream ([`super::h2`]) deciding
//!    through the entry path's [`Streams`]; HTTP/1: request after request
//!    through the entry path's [`EntryPath::exchange`];
//! 4. **close** — half-close and a short drain, so the last response is
//!    not destroyed by a reset.
//!
//! What differs between a redirected access flow and a frontend is the
//! [`EntryPath`] (who the source is, which limits apply, how a request is
//! decided). What differs between plain TCP and TLS is only the stream:
//! anything [`ClientStream`] boxed into a [`ClientIo`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::body::Inbound;
use super::h2::{self, Sniffed, Streams};
use super::limits::ConnectionPermit;
use super::refusal::{At, Refusal};
use super::ProxyCtx;
use crate::state::metrics::Metrics;

/// A client byte stream: plain TCP today, TLS next.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static {
    /// Resolves `Ready(true)` when the peer has closed (or the stream
    /// failed), `Ready(false)` when bytes are waiting, without taking them.
    fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<bool>;
    /// The application protocol negotiated by ALPN, if any.
    fn alpn(&self) -> Option<&[u8]> {
        None
    }
}

impl ClientStream for TcpStream {
    fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        match self.poll_peek(cx, &mut buf) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => Poll::Ready(true),
            Poll::Ready(Ok(_)) => Poll::Ready(false),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The client stream as the request path holds it (one allocation per
/// connection buys one code path for every stream type).
pub struct ClientIo(Box<dyn ClientStream>);

impl ClientIo {
    pub fn new(s: impl ClientStream) -> Self {
        ClientIo(Box::new(s))
    }

    /// Resolves when the client has closed its side; never while it has
    /// bytes waiting (a pipelined request cannot be told from a client
    /// that stays).
    pub async fn closed(&self) {
        let closed = std::future::poll_fn(|cx| self.0.poll_closed(cx)).await;
        if !closed {
            std::future::pending::<()>().await;
        }
    }

    pub fn alpn(&self) -> Option<&[u8]> {
        self.0.alpn()
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

/// The time limits of a connection before and between requests.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_header_bytes: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub send_timeout: Duration,
}

/// A connection over `max_connections_per_source`: the open count and
/// the limit, and where it came from for the log line.
#[derive(Debug)]
pub struct NotAdmitted {
    pub open: u64,
    pub limit: u64,
    pub source: String,
    pub destination: String,
}

/// What an entry path (access flows, frontends) brings to the skeleton.
pub trait EntryPath: Send + Sync + Sized + 'static {
    /// Per-stream decisions of its HTTP/2 connections.
    type Streams: Streams;
    /// Counts the connection against its source; `Ok(None)`: the entry is
    /// gone (a removed frontend).
    fn admit(&self, ctx: &Arc<ProxyCtx>) -> Result<Option<ConnectionPermit>, NotAdmitted>;
    /// The limits in force for this connection now.
    fn limits(&self, ctx: &ProxyCtx) -> ConnLimits;
    /// One HTTP/1 request/response exchange: `Ok(true)` keeps the connection.
    fn exchange<'a>(
        &'a self,
        ctx: &'a ProxyCtx,
        inbound: &'a mut Inbound<ClientIo>,
        out_head: &'a mut Vec<u8>,
    ) -> impl Future<Output = io::Result<bool>> + Send + 'a;
    /// The decisions of this connection's HTTP/2 streams.
    fn streams(self, ctx: Arc<ProxyCtx>) -> Self::Streams;
    /// Who is on this connection, for the log lines of the skeleton.
    fn describe(&self) -> String;
}

/// Serves one accepted connection of `entry` until either side is done.
pub async fn serve<E: EntryPath>(ctx: Arc<ProxyCtx>, io: ClientIo, entry: E) {
    let mut inbound = Inbound::new(io);
    let _permit = match entry.admit(&ctx) {
        Ok(Some(p)) => p,
        Ok(None) => return,
        Err(n) => {
            let r = Refusal::TooManyConnections {
                open: n.open,
                limit: n.limit,
            };
            let at = At {
                source: Some(&n.source),
                destination: Some(&n.destination),
                ..At::default()
            };
            r.record(&ctx.metrics, &at);
            let _ = super::forward::write_refusal(&mut inbound.io, &r, true).await;
            close_lingering(&mut inbound).await;
            return;
        }
    };
    let lim = entry.limits(&ctx);
    let http2 = match inbound.io.alpn() {
        Some(b"h2") => true,
        Some(_) => false,
        // No ALPN: the first bytes tell HTTP/2 (prior knowledge) from HTTP/1.
        None => match h2::sniff(&mut inbound, lim.idle_timeout, lim.header_timeout).await {
            Sniffed::Http1 => false,
            Sniffed::Http2 => true,
            Sniffed::Idle => return Metrics::inc(&ctx.metrics.connections_idle_closed_total),
            Sniffed::Gone => return,
        },
    };
    if http2 {
        let streams = entry.streams(ctx.clone());
        return h2::serve_with(ctx, inbound, streams, lim).await;
    }
    let mut out_head: Vec<u8> = Vec::with_capacity(1024);
    loop {
        match entry.exchange(&ctx, &mut inbound, &mut out_head).await {
            Ok(true) => continue,
            Ok(false) => break,
            Err(e) => {
                if super::send::is_send_timeout(&e) {
                    Metrics::inc(&ctx.metrics.clients_send_timeout_total);
                    warn!(client = %entry.describe(), error = %e, "client connection closed: the client stopped reading");
                } else {
                    debug!(client = %entry.describe(), error = %e, "connection ended");
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
async fn close_lingering(inbound: &mut Inbound<ClientIo>) {
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
