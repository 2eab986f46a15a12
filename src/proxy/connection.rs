//! One client connection, whatever its entry path and stream type.
//!
//! Every accepted connection goes through the same skeleton:
//!
//! 1. **admit** — counted against `max_connections_per_source` (429 over it);
//! 2. **protocol** — by ALPN where the stream negotiated one (TLS), else by
//!    sniffing the first bytes for the HTTP/2 prior-knowledge preface;
//! 3. **serve** — HTTP/1: request after request, each head read, parsed
//!    and decided by the entry path's [`EntryPath::decide`]; HTTP/2: one
//!    task per stream ([`super::h2`]) decided by the same function; then
//!    the shared phases ([`super::pipeline`]);
//! 4. **close** — half-close and a short drain, so the last response is
//!    not destroyed by a reset.
//!
//! What differs between a redirected access flow and a frontend is the
//! [`EntryPath`] (who the source is, which limits apply, how a request is
//! decided). What differs between plain TCP and TLS is only the stream:
//! anything [`ClientStream`] boxed into a [`ClientIo`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::body::{HeadWait, Inbound};
use super::client_io::{ClientIo, ConnLimits};
use super::downstream::{ClientProtocol, Downstream};
use super::exchange::Exchange;
use super::h2::{self, Sniffed};
use super::limits::ConnectionPermit;
use super::pipeline::{self, Target};
use super::refusal::{write_refusal, At, Refusal};
use super::ProxyCtx;
use crate::state::metrics::Metrics;
use crate::wire::head::{self, RequestHead, MAX_HEADERS};

/// A connection over `max_connections_per_source`: the open count and
/// the limit, and where it came from for the log line.
#[derive(Debug)]
pub struct NotAdmitted {
    pub open: u64,
    pub limit: u64,
    pub source: String,
    pub destination: String,
}

/// What an entry path decided for one request, whichever protocol it
/// came in: the same plan for an HTTP/1 request and an HTTP/2 stream.
/// Made once per request and taken apart at once: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Decision {
    /// Refused (already counted and logged). `close`: an HTTP/1 connection
    /// must close (a body is left unread, or the request was malformed).
    Refuse { refusal: Refusal, close: bool },
    /// Allowed or routed: the checked upstream head is in `out_head`.
    Forward { exchange: Exchange, target: Target },
}

/// What an entry path (access flows, frontends) brings to the skeleton:
/// who the source is, which limits apply, and how a request is decided.
/// Everything else — reading heads, HTTP/2 streams, the phases after the
/// decision — is the same for both.
pub trait EntryPath: Send + Sync + 'static {
    /// The metrics' `entry_path` label.
    const PATH: &'static str;
    /// Counts the connection against its source; `Ok(None)`: the entry is
    /// gone (a removed frontend).
    fn admit(&self, ctx: &Arc<ProxyCtx>) -> Result<Option<ConnectionPermit>, NotAdmitted>;
    /// The limits in force for this connection now.
    fn limits(&self, ctx: &ProxyCtx) -> ConnLimits;
    /// Decides one request by the rules published now, writing the checked
    /// upstream head into `out_head`.
    fn decide(
        &self,
        ctx: &ProxyCtx,
        req: &RequestHead<'_, '_>,
        client: ClientProtocol,
        out_head: &mut Vec<u8>,
    ) -> Decision;
    /// The client's address.
    fn peer(&self) -> SocketAddr;
    /// Where the limit `field` in force for this connection is set in the
    /// rule file (`None`: its default).
    fn limit_ref(&self, ctx: &ProxyCtx, field: &str) -> Option<crate::rules::RuleRef> {
        let _ = (ctx, field);
        None
    }
    /// The source and destination as refusals name them before a request
    /// exists (a head that timed out or cannot be parsed).
    fn endpoints(&self, ctx: &ProxyCtx) -> (String, String);
    /// `Strict-Transport-Security` for the responses on this connection
    /// (a TLS frontend's `hsts`).
    fn hsts(&self) -> Option<crate::tls::Hsts> {
        None
    }
}

/// Serves one accepted connection of `entry` until either side is done.
pub async fn serve<E: EntryPath>(ctx: Arc<ProxyCtx>, io: ClientIo, entry: E) {
    let entry = Arc::new(entry);
    let _active = ctx.metrics.labelled.connection(E::PATH);
    let mut inbound = Inbound::new(io);
    let _permit = match entry.admit(&ctx) {
        Ok(Some(p)) => p,
        Ok(None) => return,
        Err(n) => {
            let r = not_admitted(&ctx, &*entry, n);
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
        return h2::serve_with(ctx, inbound, entry, lim).await;
    }
    let mut out_head: Vec<u8> = Vec::with_capacity(1024);
    loop {
        match exchange(&ctx, &*entry, &mut inbound, &mut out_head).await {
            Ok(true) => continue,
            Ok(false) => break,
            Err(e) => {
                if super::send::is_send_timeout(&e) {
                    Metrics::inc(&ctx.metrics.clients_send_timeout_total);
                    warn!(peer = %entry.peer(), error = %e, "client connection closed: the client stopped reading");
                } else {
                    debug!(peer = %entry.peer(), error = %e, "connection ended");
                }
                break;
            }
        }
    }
    close_lingering(&mut inbound).await;
}

/// Records (counts and logs) a connection over `max_connections_per_source`;
/// the refusal to answer it with, if the stream can still carry one.
pub fn not_admitted<E: EntryPath>(ctx: &ProxyCtx, entry: &E, n: NotAdmitted) -> Refusal {
    let r = Refusal::TooManyConnections {
        open: n.open,
        limit: n.limit,
    };
    let limit_at = entry.limit_ref(ctx, "max_connections_per_source");
    let at = At {
        source: Some(&n.source),
        destination: Some(&n.destination),
        limit_at: limit_at.as_ref(),
        ..At::default()
    };
    r.record(&ctx.metrics, &at);
    r
}

/// One HTTP/1 request/response exchange. `Ok(true)`: keep the connection.
async fn exchange<E: EntryPath>(
    ctx: &ProxyCtx,
    entry: &E,
    inbound: &mut Inbound<ClientIo>,
    out_head: &mut Vec<u8>,
) -> io::Result<bool> {
    let lim = entry.limits(ctx);
    // Read the head: the idle timeout covers the wait for a first byte,
    // the header timeout the rest of the head (slowloris).
    let head_len = match inbound
        .next_head(lim.idle_timeout, lim.header_timeout, lim.max_header_bytes)
        .await?
    {
        HeadWait::Head(n) => n,
        HeadWait::Closed => return Ok(false),
        HeadWait::Idle => {
            Metrics::inc(&ctx.metrics.connections_idle_closed_total);
            debug!(peer = %entry.peer(), "idle keep-alive connection closed");
            return Ok(false);
        }
        HeadWait::HeaderTimeout => {
            return refuse_head(ctx, entry, inbound, Refusal::HeadTimeout).await
        }
        HeadWait::Bad(e) => return refuse_head(ctx, entry, inbound, Refusal::Head(e)).await,
    };
    // Parse and decide — by the rules in force now that the request is
    // here, not those of when the connection went idle before it: a reload
    // (or a container moving) in between applies to it.
    let decision = {
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        head::parse_request(&inbound.buf[..head_len], &mut storage)
            .map(|req| entry.decide(ctx, &req, ClientProtocol::Http1, out_head))
    };
    let decision = match decision {
        Ok(d) => d,
        Err(e) => return refuse_head(ctx, entry, inbound, Refusal::Head(e)).await,
    };
    inbound.buf.advance(head_len);
    match decision {
        Decision::Refuse { refusal, close } => {
            write_refusal(&mut inbound.io, &refusal, close).await?;
            Ok(!close)
        }
        Decision::Forward { exchange, target } => {
            let mut client = Downstream::H1 {
                send_timeout: exchange.send_timeout,
                inbound,
                hsts: entry.hsts(),
            };
            pipeline::serve(ctx, entry.peer(), &mut client, out_head, exchange, target).await
        }
    }
}

/// A request refused before it could be decided (timeout, malformed
/// head): recorded, answered, and the connection closes.
async fn refuse_head<E: EntryPath>(
    ctx: &ProxyCtx,
    entry: &E,
    inbound: &mut Inbound<ClientIo>,
    refusal: Refusal,
) -> io::Result<bool> {
    let (source, destination) = entry.endpoints(ctx);
    let limit_at = refusal.limit_field().and_then(|f| entry.limit_ref(ctx, f));
    let at = At {
        limit_at: limit_at.as_ref(),
        source: Some(&source),
        peer: Some(entry.peer()),
        destination: Some(&destination),
        ..At::default()
    };
    refusal.record(&ctx.metrics, &at);
    write_refusal(&mut inbound.io, &refusal, true).await?;
    Ok(false)
}

/// Closes after a last response: half-close, then drain what the client
/// still sends for a moment, so unread input does not turn the close into
/// a reset that destroys the response in flight.
pub(super) async fn close_lingering(inbound: &mut Inbound<ClientIo>) {
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
