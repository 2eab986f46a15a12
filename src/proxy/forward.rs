//! Phases 4 and 5 of an exchange, shared by every way a request enters
//! (access flows, frontends): send the authorised head and the streamed
//! body to the chosen upstream over a pooled connection, then check and
//! relay the response head and stream its body back.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Buf;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tracing::warn;

use super::body::{copy_body, BodyError, Inbound, ReadHeadError};
use super::head::{self, Framing, Tunnel, MAX_HEADERS};
use super::respond;
use super::upstream::UpstreamPool;
use super::ProxyCtx;
use crate::control::metrics::Metrics;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// The two ends of a forwarded exchange.
#[derive(Debug, Clone, Copy)]
pub struct Upstream {
    /// The client (for logs).
    pub peer: SocketAddr,
    /// Where the request goes.
    pub dst: SocketAddr,
}

/// What the authorisation step decided about the request's framing and
/// connection handling; everything [`forward`] needs besides the head.
#[derive(Debug, Clone, Copy)]
pub struct Exchange {
    pub framing: Framing,
    pub keep_alive: bool,
    pub head_request: bool,
    pub expect_continue: bool,
    pub body_limit: Option<u64>,
    /// An authorised CONNECT or WebSocket upgrade: if the upstream agrees
    /// (2xx / 101), the connection becomes a byte tunnel.
    pub tunnel: Option<Tunnel>,
}

/// Writes a response the proxy produced itself.
pub async fn write_refusal(
    client: &mut TcpStream,
    code: u16,
    reason: &str,
    close: bool,
) -> io::Result<()> {
    client
        .write_all(&respond::simple(code, reason, close))
        .await
}

/// Sends one authorised request (`out_head`, then the client's body) to
/// `flow.dst` and relays the response. `Ok(true)`: the client connection
/// may carry another request.
pub async fn forward(
    ctx: &ProxyCtx,
    flow: &Upstream,
    client: &mut Inbound<TcpStream>,
    out_head: &[u8],
    exchange: Exchange,
) -> io::Result<bool> {
    let Exchange {
        framing,
        keep_alive,
        head_request,
        expect_continue,
        body_limit,
        tunnel,
    } = exchange;
    let metrics = &ctx.metrics;
    // A pooled connection may have been closed by the upstream meanwhile;
    // without a body nothing is lost by retrying once on a fresh one.
    let mut attempt = 0;
    let (mut upstream, response_started) = loop {
        attempt += 1;
        let pooled = ctx.upstreams.take(flow.dst);
        let reused = pooled.is_some();
        let stream = match pooled {
            Some(s) => s,
            None => match UpstreamPool::connect(flow.dst, CONNECT_TIMEOUT).await {
                Ok(s) => s,
                Err(e) => {
                    Metrics::inc(&metrics.upstream_errors_total);
                    let code = if e.kind() == io::ErrorKind::TimedOut {
                        504
                    } else {
                        502
                    };
                    warn!(destination = %flow.dst, error = %e, status = code, "upstream connect failed");
                    write_refusal(
                        &mut client.io,
                        code,
                        &format!("upstream {} unreachable: {e}", flow.dst),
                        true,
                    )
                    .await?;
                    return Ok(false);
                }
            },
        };
        let mut up = Inbound::new(stream);
        up.read_timeout = Some(RESPONSE_TIMEOUT);
        if let Err(e) = up.io.write_all(out_head).await {
            if reused && attempt == 1 {
                continue;
            }
            return upstream_failed(client, flow, metrics, &e.to_string()).await;
        }
        if framing == Framing::None {
            // Make sure the upstream is alive before giving up the retry.
            match timeout(RESPONSE_TIMEOUT, up.fill()).await {
                Ok(Ok(n)) if n > 0 => break (up, true),
                Ok(_) if reused && attempt == 1 => continue,
                Ok(Ok(_)) => {
                    return upstream_failed(client, flow, metrics, "upstream closed the connection")
                        .await
                }
                Ok(Err(e)) => return upstream_failed(client, flow, metrics, &e.to_string()).await,
                Err(_) => return upstream_timeout(client, flow, metrics).await,
            }
        }
        break (up, false);
    };

    // Request body. `Expect: 100-continue` is answered here (the header is
    // not forwarded): the request was already authorised, and an upstream
    // that ignores Expect would otherwise deadlock waiting for the body.
    if framing != Framing::None && !response_started {
        if expect_continue {
            client
                .io
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await?;
        }
        match copy_body(client, &mut upstream.io, framing, body_limit).await {
            Ok(_) => {}
            Err(BodyError::TooLarge) => {
                Metrics::inc(&metrics.requests_body_too_large_total);
                warn!(source = %flow.peer, destination = %flow.dst, status = 413, "request body over the limit");
                write_refusal(&mut client.io, 413, "request body too large", true).await?;
                return Ok(false);
            }
            Err(BodyError::Malformed(why)) => {
                Metrics::inc(&metrics.requests_bad_total);
                warn!(source = %flow.peer, destination = %flow.dst, reason = why, "malformed request body");
                write_refusal(&mut client.io, 400, &format!("bad request: {why}"), true).await?;
                return Ok(false);
            }
            Err(BodyError::Read(e)) if e.kind() == io::ErrorKind::TimedOut => {
                Metrics::inc(&metrics.requests_timeout_total);
                warn!(source = %flow.peer, destination = %flow.dst, status = 408, "request body stalled longer than idle_timeout_ms");
                write_refusal(&mut client.io, 408, "request body timeout", true).await?;
                return Ok(false);
            }
            Err(BodyError::Read(e)) => {
                // The client ended (or broke) its body early; the upstream
                // never gets a complete request.
                Metrics::inc(&metrics.requests_bad_total);
                warn!(source = %flow.peer, destination = %flow.dst, error = %e, status = 400, "request body incomplete");
                write_refusal(&mut client.io, 400, "bad request: incomplete body", true).await?;
                return Ok(false);
            }
            Err(BodyError::Write(e)) => {
                return upstream_failed(client, flow, metrics, &e.to_string()).await
            }
        }
    }

    // Phase 5: response heads (skipping interim 1xx), then the body.
    loop {
        let n = match read_response_head(&mut upstream).await {
            Ok(n) => n,
            Err(e) if e == "timeout" => return upstream_timeout(client, flow, metrics).await,
            Err(e) => return upstream_failed(client, flow, metrics, &e).await,
        };
        let (code, res_framing, upstream_closes, interim, client_keeps, upgraded, out) = {
            let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
            // Any 2xx to CONNECT starts the tunnel: it has no body.
            let bodyless = head_request || tunnel == Some(Tunnel::Connect);
            let res = match head::parse_response(&upstream.buf[..n], &mut storage, bodyless) {
                Ok(r) => r,
                Err(e) => {
                    let msg = format!("invalid response from upstream: {e}");
                    return upstream_failed(client, flow, metrics, &msg).await;
                }
            };
            let upgraded = match tunnel {
                Some(Tunnel::WebSocket) => {
                    res.code == 101
                        && res.headers.iter().any(|h| {
                            h.name.eq_ignore_ascii_case("upgrade")
                                && head::trim(h.value).eq_ignore_ascii_case(b"websocket")
                        })
                }
                Some(Tunnel::Connect) => (200..300).contains(&res.code),
                None => false,
            };
            if upgraded {
                let mut out = response_head(&res, false);
                if tunnel == Some(Tunnel::WebSocket) {
                    // Restore the hop-by-hop pair that makes it an upgrade.
                    out.truncate(out.len().saturating_sub(2));
                    out.extend_from_slice(b"connection: upgrade\r\nupgrade: websocket\r\n\r\n");
                }
                (res.code, Framing::None, true, false, false, true, out)
            } else {
                if res.code == 101 {
                    return upstream_failed(
                        client,
                        flow,
                        metrics,
                        "upstream switched protocols unasked",
                    )
                    .await;
                }
                let interim = (100..200).contains(&res.code);
                let client_keeps = keep_alive && !res.close;
                (
                    res.code,
                    res.framing,
                    res.close,
                    interim,
                    client_keeps,
                    false,
                    response_head(&res, !interim && !client_keeps),
                )
            }
        };
        upstream.buf.advance(n);
        client.io.write_all(&out).await?;
        if upgraded {
            Metrics::inc(&metrics.tunnels_total);
            tracing::info!(source = %flow.peer, destination = %flow.dst, status = code, "tunnel opened");
            let moved = super::tunnel::splice(client, &mut upstream).await;
            tracing::debug!(source = %flow.peer, destination = %flow.dst, result = ?moved, "tunnel closed");
            return Ok(false);
        }
        if interim {
            continue;
        }
        match copy_body(&mut upstream, &mut client.io, res_framing, None).await {
            Ok(_) => {}
            Err(BodyError::Write(e)) => return Err(e),
            Err(e) => {
                Metrics::inc(&metrics.upstream_errors_total);
                warn!(destination = %flow.dst, error = ?e, "upstream response body failed; closing");
                return Ok(false);
            }
        }
        if !upstream_closes && upstream.buf.is_empty() {
            ctx.upstreams.put(flow.dst, upstream.io);
        }
        client.io.flush().await?;
        tracing::debug!(source = %flow.peer, destination = %flow.dst, status = code, "forwarded");
        return Ok(client_keeps);
    }
}

/// The response head relayed to the client: hop-by-hop headers dropped,
/// framing restated, `connection: close` when this exchange is the last.
fn response_head(res: &head::ResponseHead<'_, '_>, close: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(format!("HTTP/1.1 {} {}\r\n", res.code, res.reason).as_bytes());
    for h in res.headers {
        if head::is_hop_by_hop(h.name) || head::named_by_connection(res.headers, h.name) {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if res.framing == Framing::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

async fn read_response_head(up: &mut Inbound<TcpStream>) -> Result<usize, String> {
    match timeout(RESPONSE_TIMEOUT, up.read_head(64 * 1024)).await {
        Err(_) => Err("timeout".into()),
        Ok(Ok(Some(n))) => Ok(n),
        Ok(Ok(None)) => Err("upstream closed the connection before responding".into()),
        Ok(Err(ReadHeadError::Io(e))) => Err(e.to_string()),
        Ok(Err(ReadHeadError::Head(e))) => Err(format!("invalid response head from upstream: {e}")),
    }
}

async fn upstream_failed(
    client: &mut Inbound<TcpStream>,
    flow: &Upstream,
    metrics: &Metrics,
    why: &str,
) -> io::Result<bool> {
    Metrics::inc(&metrics.upstream_errors_total);
    warn!(destination = %flow.dst, error = why, status = 502, "upstream failed");
    write_refusal(
        &mut client.io,
        502,
        &format!("upstream {} failed: {why}", flow.dst),
        true,
    )
    .await?;
    Ok(false)
}

async fn upstream_timeout(
    client: &mut Inbound<TcpStream>,
    flow: &Upstream,
    metrics: &Metrics,
) -> io::Result<bool> {
    Metrics::inc(&metrics.upstream_errors_total);
    warn!(destination = %flow.dst, status = 504, "upstream did not answer in time");
    write_refusal(
        &mut client.io,
        504,
        &format!("upstream {} did not answer in time", flow.dst),
        true,
    )
    .await?;
    Ok(false)
}
