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
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::body::Inbound;
use super::client_io::{ClientIo, ConnLimits};
use super::h2::{self, Sniffed, Streams};
use super::limits::ConnectionPermit;
use super::refusal::{At, Refusal};
use super::ProxyCtx;
use crate::state::metrics::Metrics;

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
    /// The metrics' `entry_path` label.
    const PATH: &'static str;
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
    let _active = ctx.metrics.labelled.connection(E::PATH);
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
            let _ = super::refusal::write_refusal(&mut inbound.io, &r, true).await;
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
