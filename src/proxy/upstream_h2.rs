//! The upstream phase towards a member or destination that speaks HTTP/2
//! with prior knowledge (`"protocol": "h2c"` on a pool, `upstream_protocol`
//! on an access entry, or by default an HTTP/2 client's own destination).
//!
//! The request is the one the decision wrote for an HTTP/1 upstream (the
//! checked, restated head: [`super::outbound`]), carried over field by
//! field: its request line becomes `:method` and `:path`, its `host` the
//! `:authority`, framing fields are left to HTTP/2. The response goes
//! through the same [`Tap`] (the cache) and the same [`Downstream`] as an
//! HTTP/1 response, so the client's protocol does not matter. One HTTP/2
//! connection per destination is shared by every client
//! ([`super::upstream::UpstreamPool::h2_sender`]).
//!
//! An HTTP/2 client's stream is relayed both ways at once (its request
//! body may still be arriving while the response streams: gRPC), with
//! request trailers filtered by [`crate::policy::fields::FieldGuard`]; an
//! HTTP/1 client's body is sent whole before the response is read.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request};
use tokio::time::{timeout, timeout_at};
use tracing::{debug, warn};

use super::body::{copy_payload, BodyError, Inbound};
use super::buffer::{refuse_body, BodyAt};
use super::downstream::{ClientProtocol, Downstream, H2Body, H2Writer, OutHead};
use super::exchange::{failure, Exchange, Relayed, Upstream, UpstreamFailure};
use super::tap::{Tap, TapAction};
use super::ProxyCtx;
use crate::policy::fields::FieldGuard;
use crate::state::metrics::Metrics;
use crate::wire::head::{self, Framing, ResponseHead, MAX_HEADERS};

type Outcome = io::Result<Result<Relayed, UpstreamFailure>>;

/// The checked upstream head as an HTTP/2 request (see the module doc).
fn h2_request(
    out_head: &[u8],
    dst: std::net::SocketAddr,
    te_trailers: bool,
) -> Option<Request<()>> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut storage);
    let Ok(httparse::Status::Complete(_)) = req.parse(out_head) else {
        return None;
    };
    let method = Method::from_bytes(req.method?.as_bytes()).ok()?;
    let target = req.path?;
    let authority = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .and_then(|h| std::str::from_utf8(head::trim(h.value)).ok())
        .map_or_else(|| dst.to_string(), str::to_owned);
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("http://{authority}{target}"));
    let map = builder.headers_mut()?;
    for h in req.headers.iter() {
        let n = h.name;
        if n.eq_ignore_ascii_case("host")
            || n.eq_ignore_ascii_case("transfer-encoding")
            || head::is_hop_by_hop(n)
        {
            continue;
        }
        map.append(
            HeaderName::from_bytes(n.as_bytes()).ok()?,
            HeaderValue::from_bytes(h.value).ok()?,
        );
    }
    if te_trailers {
        // The client can take trailers (gRPC): say so upstream.
        map.insert(http::header::TE, HeaderValue::from_static("trailers"));
    }
    builder.body(()).ok()
}

/// Sends one authorised request to an HTTP/2 upstream and relays the
/// response, as [`super::forward::forward_once_h1`] does for HTTP/1.
pub async fn forward_once(
    ctx: &ProxyCtx,
    flow: &Upstream,
    client: &mut Downstream<'_>,
    out_head: &[u8],
    exchange: Exchange,
    tap: &mut dyn Tap,
) -> Outcome {
    if exchange.tunnel.is_some() {
        return failure(
            502,
            "upgrades and CONNECT do not go to an h2c upstream",
            false,
            false,
        );
    }
    let h2_client = client.protocol() == ClientProtocol::Http2;
    let Some(request) = h2_request(out_head, flow.dst, h2_client) else {
        return failure(
            502,
            "the request cannot be restated in HTTP/2",
            false,
            false,
        );
    };
    let mut sender = match ctx
        .upstreams
        .h2_sender(flow.dst, exchange.connect_timeout)
        .await
    {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
            return failure(504, format!("connect: {e}"), false, false)
        }
        Err(e) => return failure(502, format!("connect: {e}"), false, false),
    };
    let has_body = exchange.framing != Framing::None;
    let (response, send) = match sender.send_request(request, !has_body) {
        Ok(x) => x,
        Err(e) => return failure(502, e.to_string(), false, false),
    };
    let guard = ctx.state.load().policy.clone();
    let fields = &guard.fields;

    // The request body: an HTTP/2 client's streams alongside the response,
    // an HTTP/1 client's is sent first.
    let response = if !has_body {
        tokio::select! {
            r = response_within(response, exchange.response_timeout) => r,
            () = client.reset() => Err((0, "client reset the stream".to_owned())),
        }
    } else if let Downstream::H2(d) = client {
        let Some(mut body) = d.body.take() else {
            return failure(502, "request body already taken", false, false);
        };
        let pump = send_body(&mut body, send, &exchange, fields);
        let respond = &mut d.respond;
        let (sent, res) = tokio::join!(pump, async {
            // The response timeout runs from when the body is complete:
            // approximated by the total body deadline plus the timeout.
            let deadline = exchange.body_deadline + exchange.response_timeout;
            tokio::select! {
                r = timeout_at(deadline, response) => match r {
                    Ok(r) => r.map_err(|e| (502, e.to_string())),
                    Err(_) => Err((504, "no response".to_owned())),
                },
                _ = std::future::poll_fn(|cx| respond.poll_reset(cx)) => Err((0, "client reset the stream".to_owned())),
            }
        });
        d.body = Some(body);
        if let Err(e) = sent {
            if let Some(out) = body_failed(ctx, flow, client, out_head, &exchange, e).await? {
                return Ok(out);
            }
        }
        res
    } else {
        let Some(inbound) = client.h1_inbound() else {
            return failure(502, "no request body", false, false);
        };
        if let Err(e) = send_body(inbound, send, &exchange, fields).await {
            if let Some(out) = body_failed(ctx, flow, client, out_head, &exchange, e).await? {
                return Ok(out);
            }
        }
        tokio::select! {
            r = response_within(response, exchange.response_timeout) => r,
            () = client.reset() => Err((0, "client reset the stream".to_owned())),
        }
    };
    let touched = has_body;
    let res = match response {
        Ok(r) => r,
        // Dropping the response future resets the upstream stream too.
        Err((0, why)) => return Err(io::Error::new(io::ErrorKind::ConnectionReset, why)),
        Err((code, why)) => return failure(code, why, true, touched),
    };
    relay_response(ctx, flow, client, &exchange, tap, res).await
}

async fn response_within(
    response: h2::client::ResponseFuture,
    limit: Duration,
) -> Result<http::Response<RecvStream>, (u16, String)> {
    match timeout(limit, response).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err((502, e.to_string())),
        Err(_) => Err((504, "no response".to_owned())),
    }
}

/// Answers a request whose body failed: the client's fault (400/408/413)
/// is refused to it; the upstream's (a reset) is an upstream failure.
async fn body_failed(
    ctx: &ProxyCtx,
    flow: &Upstream,
    client: &mut Downstream<'_>,
    out_head: &[u8],
    exchange: &Exchange,
    e: BodyError,
) -> io::Result<Option<Result<Relayed, UpstreamFailure>>> {
    match e {
        BodyError::Write(e) => Ok(Some(Err(UpstreamFailure {
            code: 502,
            why: e.to_string(),
            request_sent: true,
            client_touched: true,
        }))),
        e => {
            let at = BodyAt {
                peer: flow.peer,
                destination: &flow.dst,
                out_head,
                limits: exchange.limits,
            };
            refuse_body(ctx, &at, client, e).await?;
            Ok(Some(Ok(Relayed {
                keep: false,
                status: None,
                intercepted: false,
            })))
        }
    }
}

/// Streams a request body to the upstream stream, then its end (with the
/// client's trailers that [`FieldGuard::trailer_allowed`] lets through).
async fn send_body<R: tokio::io::AsyncRead + Unpin + TrailerSource>(
    from: &mut Inbound<R>,
    mut to: SendStream<Bytes>,
    exchange: &Exchange,
    fields: &FieldGuard,
) -> Result<(), BodyError> {
    let copy = async {
        let mut w = H2Writer {
            send: Some(&mut to),
        };
        copy_payload(from, &mut w, exchange.source_framing, exchange.body_limit).await
    };
    let copied = timeout_at(exchange.body_deadline, copy)
        .await
        .unwrap_or_else(|_| Err(BodyError::Read(io::ErrorKind::TimedOut.into())));
    if let Err(e) = copied {
        to.send_reset(h2::Reason::CANCEL);
        return Err(e);
    }
    let trailers = from.io.trailers().map(|t| filter_trailers(t, fields));
    match trailers {
        Some(t) if !t.is_empty() => to.send_trailers(t),
        _ => to.send_data(Bytes::new(), true),
    }
    .map_err(|e| BodyError::Write(io::Error::other(e)))
}

/// Where request trailers come from: only an HTTP/2 client has any.
pub trait TrailerSource {
    fn trailers(&mut self) -> Option<HeaderMap>;
}

impl TrailerSource for H2Body {
    fn trailers(&mut self) -> Option<HeaderMap> {
        self.trailers.take()
    }
}

impl TrailerSource for super::client_io::ClientIo {
    fn trailers(&mut self) -> Option<HeaderMap> {
        None
    }
}

/// The trailer fields that may follow a request upstream; dropping any is
/// logged (the rules never saw them).
fn filter_trailers(t: HeaderMap, guard: &FieldGuard) -> HeaderMap {
    let before = t.len();
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
    if out.len() != before {
        warn!(
            dropped = before - out.len(),
            "request trailer fields dropped (protected, hop-by-hop or underscore names)"
        );
    }
    out
}

/// Relays an HTTP/2 upstream's response: the tap sees its head (as an
/// HTTP/1-shaped view), the client gets it in its own protocol.
async fn relay_response(
    ctx: &ProxyCtx,
    flow: &Upstream,
    client: &mut Downstream<'_>,
    exchange: &Exchange,
    tap: &mut dyn Tap,
    res: http::Response<RecvStream>,
) -> Outcome {
    let (parts, body) = res.into_parts();
    let code = parts.status.as_u16();
    let views: Vec<httparse::Header<'_>> = parts
        .headers
        .iter()
        .filter(|(n, _)| !head::is_hop_by_hop(n.as_str()))
        .map(|(n, v)| httparse::Header {
            name: n.as_str(),
            value: v.as_bytes(),
        })
        .collect();
    let length = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let bodyless = exchange.head_request || code == 204 || code == 304;
    // Towards an HTTP/1 client an unknown length is chunked; the upstream's
    // body itself ends with its stream.
    let framing = match (bodyless || body.is_end_stream(), length) {
        (true, _) => Framing::None,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::Chunked,
    };
    let fields: Vec<httparse::Header<'_>> = views
        .iter()
        .filter(|h| bodyless || !h.name.eq_ignore_ascii_case("content-length"))
        .copied()
        .collect();
    let reason = parts.status.canonical_reason().unwrap_or("");
    let view = ResponseHead {
        code,
        reason,
        headers: &views,
        framing,
        close: false,
    };
    let (extra, tee) = match tap.head(&view) {
        TapAction::Relay { extra, body } => (extra, body),
        TapAction::Intercept => {
            let mut sink = tokio::io::sink();
            let mut src = Inbound::new(H2Body::new(body));
            let _ = copy_payload(&mut src, &mut sink, Framing::UntilClose, None).await;
            return Ok(Ok(Relayed {
                keep: false,
                status: Some(code),
                intercepted: true,
            }));
        }
    };
    let keep = exchange.keep_alive;
    let out = OutHead {
        status: code,
        reason,
        fields: &fields,
        extra,
        framing,
        close: !keep,
        upgrade: "",
    };
    client.send_head(&out, &[]).await?;
    let mut src = Inbound::new(H2Body::new(body));
    src.read_timeout = Some(exchange.response_timeout);
    let source = if framing == Framing::None {
        Framing::None
    } else {
        Framing::UntilClose
    };
    let mut to_client = client.body(framing);
    let copied = super::tap::copy_response(&mut src, &mut to_client, tap, tee, source).await;
    match copied {
        Ok(_) => {}
        Err(BodyError::Write(e)) => return Err(e),
        Err(e) => {
            Metrics::inc(&ctx.metrics.upstream_errors_total);
            warn!(destination = %flow.dst, error = ?e, "HTTP/2 upstream response body failed; closing");
            return Ok(Ok(Relayed {
                keep: false,
                status: Some(code),
                intercepted: false,
            }));
        }
    }
    tap.end();
    let trailers = src.io.trailers.take();
    to_client.finish(trailers).await?;
    debug!(source = %flow.peer, destination = %flow.dst, status = code, "forwarded over HTTP/2");
    Ok(Ok(Relayed {
        keep,
        status: Some(code),
        intercepted: false,
    }))
}
