//! Phases 4 and 5 of an exchange, shared by every way a request enters
//! (access flows, frontends): send the authorised head and the streamed
//! body to the chosen upstream over a pooled connection, then check and
//! relay the response head and stream its body back.

use std::io;
use std::time::Duration;

use bytes::Buf;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at};
use tracing::warn;

use super::body::{copy_body, copy_payload, BodyError, ChunkedWriter, Inbound, ReadHeadError};
use super::buffer::{refuse_body, BodyAt};
use super::downstream::{ClientProtocol, Downstream, OutHead};
use super::exchange::{failure, Exchange, Relayed, Upstream, UpstreamFailure};
use super::tap::copy_response;
use super::tap::{NoTap, Tap, TapAction};
use super::upstream::UpstreamPool;
use super::ProxyCtx;
use crate::state::metrics::Metrics;
use crate::wire::head::{self, Framing, Tunnel, MAX_HEADERS};

/// One exchange with an HTTP/1.1 upstream, failures not answered: the outer `Err` is the client
/// connection failing, the inner one an upstream failure the caller
/// reports (and may retry on another upstream, see [`UpstreamFailure`]).
pub async fn forward_once_h1(
    ctx: &ProxyCtx,
    flow: &Upstream,
    client: &mut Downstream<'_>,
    out_head: &[u8],
    exchange: Exchange,
    tap: &mut dyn Tap,
) -> io::Result<Result<Relayed, UpstreamFailure>> {
    let Exchange {
        framing,
        keep_alive,
        head_request,
        expect_continue,
        body_limit,
        connect_timeout,
        response_timeout,
        tunnel,
        source_framing,
        upstream: _,
        request_buffer_bytes: _,
        body_deadline,
        send_timeout,
        limits,
    } = exchange;
    let metrics = &ctx.metrics;
    // A pooled connection may have been closed by the upstream meanwhile
    // (after `UpstreamPool::take` found it open). The request is sent again
    // on a fresh connection only when that cannot do anything twice
    // (RFC 9110 §9.2.2): nothing of it reached the upstream, or its method
    // is idempotent. A server may well read a POST, act on it, and close
    // without answering; that POST is answered 502, never repeated.
    let idempotent = idempotent_method(out_head);
    let mut attempt = 0;
    let (mut upstream, response_started) = loop {
        attempt += 1;
        let pooled = ctx.upstreams.take(flow.dst);
        let reused = pooled.is_some();
        let may_resend = |reached: bool| reused && attempt == 1 && (!reached || idempotent);
        let stream = match pooled {
            Some(s) => s,
            None => match UpstreamPool::connect(flow.dst, connect_timeout).await {
                Ok(s) => s,
                Err(e) => {
                    let code = if e.kind() == io::ErrorKind::TimedOut {
                        504
                    } else {
                        502
                    };
                    return failure(code, format!("connect: {e}"), false, false);
                }
            },
        };
        let mut up = Inbound::new(stream);
        up.read_timeout = Some(response_timeout);
        if let Err((written, e)) = write_counted(&mut up.io, out_head).await {
            let reached = written > 0;
            if may_resend(reached) {
                continue;
            }
            return failure(502, e.to_string(), reached, false);
        }
        if framing == Framing::None {
            // Make sure the upstream is alive before giving up the retry.
            match timeout(response_timeout, up.fill()).await {
                Ok(Ok(n)) if n > 0 => break (up, true),
                Ok(_) if may_resend(true) => continue,
                Ok(Ok(_)) => return failure(502, "upstream closed the connection", true, false),
                Ok(Err(e)) => return failure(502, e.to_string(), true, false),
                Err(_) => return failure(504, "no response", true, false),
            }
        }
        break (up, false);
    };

    // Request body. `Expect: 100-continue` is answered here (the header is
    // not forwarded): the request was already authorised, and an upstream
    // that ignores Expect would otherwise deadlock waiting for the body.
    if framing != Framing::None && !response_started {
        if expect_continue {
            client.send_continue().await?;
        }
        // Usually from memory (buffered before the upstream was chosen);
        // a body over the buffer streams, under the same total deadline.
        let copied = timeout_at(
            body_deadline,
            request_body(
                client,
                &mut upstream.io,
                source_framing,
                framing,
                body_limit,
            ),
        )
        .await
        .unwrap_or_else(|_| Err(BodyError::Read(io::ErrorKind::TimedOut.into())));
        match copied {
            Ok(_) => {}
            Err(BodyError::Write(e)) => return failure(502, e.to_string(), true, true),
            // The upstream got an incomplete request: its connection is
            // dropped here, never pooled.
            Err(e) => {
                let at = BodyAt {
                    peer: flow.peer,
                    destination: &flow.dst,
                    out_head,
                    limits,
                };
                refuse_body(ctx, &at, client, e).await?;
                return Ok(Ok(Relayed {
                    keep: false,
                    status: None,
                    intercepted: false,
                }));
            }
        }
    }
    let mut touched = framing != Framing::None;

    // Phase 5: response heads (skipping interim 1xx), then the body.
    loop {
        let n = match tokio::select! {
            n = read_response_head(&mut upstream, response_timeout) => n,
            () = client.reset() => {
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "client reset the stream"));
            }
        } {
            Ok(n) => n,
            Err(e) if e == "timeout" => return failure(504, "no response", true, touched),
            Err(e) => return failure(502, e, true, touched),
        };
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        // Any 2xx to CONNECT starts the tunnel: it has no body.
        let bodyless = head_request || tunnel == Some(Tunnel::Connect);
        let res = match head::parse_response(&upstream.buf[..n], &mut storage, bodyless) {
            Ok(r) => r,
            Err(e) => {
                return failure(
                    502,
                    format!("invalid response from upstream: {e}"),
                    true,
                    touched,
                );
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
        if res.code == 101 && !upgraded {
            return failure(502, "upstream switched protocols unasked", true, touched);
        }
        let interim = !upgraded && (100..200).contains(&res.code);
        let (code, upstream_closes) = (res.code, res.close);
        let client_keeps = !upgraded && keep_alive && !res.close;
        let action = if interim || upgraded {
            NoTap.head(&res)
        } else {
            tap.head(&res)
        };
        let (extra, tee) = match action {
            TapAction::Relay { extra, body } => (extra, body),
            TapAction::Intercept => {
                let (framing, closes, status) = (res.framing, res.close, res.code);
                upstream.buf.advance(n);
                let mut sink = tokio::io::sink();
                if copy_body(&mut upstream, &mut sink, framing, None)
                    .await
                    .is_ok()
                    && !closes
                    && upstream.buf.is_empty()
                {
                    ctx.upstreams.put(flow.dst, upstream.io);
                }
                return Ok(Ok(Relayed {
                    keep: false,
                    status: Some(status),
                    intercepted: true,
                }));
            }
        };
        let res_framing = if upgraded { Framing::None } else { res.framing };
        let fields = response_fields(&res);
        let out = OutHead {
            status: res.code,
            reason: res.reason,
            fields: &fields,
            extra,
            framing: res_framing,
            close: !interim && !client_keeps,
            upgrade: match tunnel {
                Some(Tunnel::WebSocket) if upgraded => {
                    "connection: upgrade\r\nupgrade: websocket\r\n"
                }
                _ => "",
            },
        };
        // A small body usually arrives with its head: send both in one
        // write (one packet under TCP_NODELAY, one wakeup of the client).
        let mut first_len = 0;
        if !tee && !upgraded && !interim {
            if let Framing::Length(len) = res_framing {
                if let Ok(len) = usize::try_from(len) {
                    if upstream.buf.len() - n >= len {
                        first_len = len;
                    }
                }
            }
        }
        let h2_interim = interim && client.protocol() == ClientProtocol::Http2;
        if !h2_interim {
            client
                .send_head(&out, &upstream.buf[n..n + first_len])
                .await?;
        }
        drop(fields);
        upstream.buf.advance(n + first_len);
        let res_framing = if first_len > 0 {
            Framing::None
        } else {
            res_framing
        };
        if upgraded {
            let Downstream::H1 { inbound, .. } = client else {
                return failure(502, "tunnel on an HTTP/2 stream", true, true);
            };
            Metrics::inc(&metrics.tunnels_total);
            tracing::info!(source = %flow.peer, destination = %flow.dst, status = code, "tunnel opened");
            let moved = super::tunnel::splice(inbound, &mut upstream, send_timeout).await;
            if let Err(e) = &moved {
                if super::send::is_send_timeout(e) {
                    Metrics::inc(&metrics.clients_send_timeout_total);
                    warn!(source = %flow.peer, destination = %flow.dst, error = %e, "tunnel closed: one side stopped reading");
                }
            }
            tracing::debug!(source = %flow.peer, destination = %flow.dst, result = ?moved, "tunnel closed");
            return Ok(Ok(Relayed {
                keep: false,
                status: Some(code),
                intercepted: false,
            }));
        }
        if interim {
            touched = true;
            continue;
        }
        let mut to_client = client.body(res_framing);
        let copied = copy_response(&mut upstream, &mut to_client, tap, tee, res_framing).await;
        match copied {
            Ok(_) => {}
            Err(BodyError::Write(e)) => return Err(e),
            Err(e) => {
                Metrics::inc(&metrics.upstream_errors_total);
                warn!(destination = %flow.dst, error = ?e, "upstream response body failed; closing");
                return Ok(Ok(Relayed {
                    keep: false,
                    status: Some(code),
                    intercepted: false,
                }));
            }
        }
        tap.end();
        if !upstream_closes && upstream.buf.is_empty() {
            ctx.upstreams.put(flow.dst, upstream.io);
        }
        to_client.finish(None).await?;
        tracing::debug!(source = %flow.peer, destination = %flow.dst, status = code, "forwarded");
        return Ok(Ok(Relayed {
            keep: client_keeps,
            status: Some(code),
            intercepted: false,
        }));
    }
}

/// The request body from the client to an HTTP/1 upstream: read by its
/// `source` framing, written by the framing the upstream head declares.
async fn request_body(
    client: &mut Downstream<'_>,
    to: &mut TcpStream,
    source: Framing,
    out: Framing,
    limit: Option<u64>,
) -> Result<u64, BodyError> {
    match client {
        Downstream::H1 { inbound, .. } => copy_framed(inbound, to, source, out, limit).await,
        Downstream::H2(d) => match d.body.as_mut() {
            Some(body) => copy_framed(body, to, source, out, limit).await,
            None => Err(BodyError::Malformed("request body already taken")),
        },
    }
}

async fn copy_framed<R, W>(
    src: &mut Inbound<R>,
    dst: &mut W,
    source: Framing,
    out: Framing,
    limit: Option<u64>,
) -> Result<u64, BodyError>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    if out != Framing::Chunked {
        return copy_payload(src, dst, source, limit).await;
    }
    let mut w = ChunkedWriter::new(dst);
    let n = copy_payload(src, &mut w, source, limit).await?;
    w.finish().await.map_err(BodyError::Write)?;
    Ok(n)
}

/// Whether the method of an upstream head (its first word) is idempotent.
fn idempotent_method(head: &[u8]) -> bool {
    head::idempotent(head.split(|&b| b == b' ').next().unwrap_or_default())
}

/// `write_all`, telling on failure how many bytes the kernel had accepted
/// (0: nothing of the request can have reached the peer).
async fn write_counted(io: &mut TcpStream, mut buf: &[u8]) -> Result<(), (usize, io::Error)> {
    let mut written = 0;
    while !buf.is_empty() {
        match io.write(buf).await {
            Ok(0) => return Err((written, io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                written += n;
                buf = buf.get(n..).unwrap_or_default();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((written, e)),
        }
    }
    Ok(())
}

/// The upstream's fields relayed to the client: hop-by-hop ones (and
/// what the upstream's `Connection` names) dropped, and the framing fields
/// too, which the downstream restates from the proxy's own reading of the
/// response — never copied, so an upstream's `Connection: Content-Length`
/// cannot leave the client without the length the proxy streams by. A
/// bodyless response (HEAD, 204, 304) keeps its `Content-Length`: there it
/// describes the representation, not this message.
fn response_fields<'b>(res: &head::ResponseHead<'b, '_>) -> Vec<httparse::Header<'b>> {
    let bodyless = res.framing == Framing::None;
    let mut out = Vec::with_capacity(res.headers.len());
    for h in res.headers {
        let length = h.name.eq_ignore_ascii_case("content-length");
        if (length && !bodyless)
            || (!length
                && (head::is_hop_by_hop(h.name) || head::named_by_connection(res.headers, h.name)))
        {
            continue;
        }
        out.push(*h);
    }
    out
}

async fn read_response_head(up: &mut Inbound<TcpStream>, limit: Duration) -> Result<usize, String> {
    match timeout(limit, up.read_head(64 * 1024)).await {
        Err(_) => Err("timeout".into()),
        Ok(Ok(Some(n))) => Ok(n),
        Ok(Ok(None)) => Err("upstream closed the connection before responding".into()),
        Ok(Err(ReadHeadError::Io(e))) => Err(e.to_string()),
        Ok(Err(ReadHeadError::Head(e))) => Err(format!("invalid response head from upstream: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::idempotent_method;

    #[test]
    fn only_idempotent_methods_may_be_sent_twice() {
        for m in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            assert!(idempotent_method(
                format!("{m} / HTTP/1.1\r\n\r\n").as_bytes()
            ));
        }
        for m in ["POST", "PATCH", "CONNECT", "BREW", "get", "GETX", ""] {
            assert!(
                !idempotent_method(format!("{m} / HTTP/1.1\r\n\r\n").as_bytes()),
                "{m}"
            );
        }
    }
}
