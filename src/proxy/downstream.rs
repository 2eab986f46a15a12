//! The client side of one exchange, whichever protocol it arrived in.
//!
//! The phases after the decision (body, cache, upstream, response) are
//! written once against [`Downstream`]: an HTTP/1 connection, or one
//! HTTP/2 stream. Each variant knows how to
//! - give the request body: always as an [`Inbound`] of HTTP/1-framed bytes
//!   of the exchange's `source_framing` (an HTTP/2 stream's DATA frames are
//!   read as a body delimited by the end of the stream, see [`H2Body`]);
//! - write the response head ([`Downstream::send_head`]), from the
//!   upstream's parsed head or the cache's stored one, with the proxy's
//!   own framing decision;
//! - write the response payload ([`Downstream::body`], an `AsyncWrite` of
//!   decoded bytes: HTTP/1 frames it, HTTP/2 sends DATA within the
//!   client's flow-control window) and end it ([`BodyOut::finish`]);
//! - refuse ([`Downstream::refuse`]): the one place a self-made response is
//!   written, as `text/plain` with the reason (`respond`);
//! - tell when the client has gone ([`Downstream::gone`]).
//!
//! So the upstream protocol is independent of the client's: an HTTP/2
//! client reaches an HTTP/1.1-only member, and the cache answers both.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::body::{ChunkedWriter, Inbound};
use super::client_io::ClientIo;
use super::refusal::Refusal;
use super::respond;
use super::send::SendTimeout;
use crate::tls::Hsts;
use crate::wire::head::{self, Framing};

/// A response head on its way to the client: status, the end-to-end
/// fields (hop-by-hop ones and the framing fields already left out), and
/// the framing of what follows.
#[derive(Debug)]
pub struct OutHead<'a> {
    pub status: u16,
    pub reason: &'a str,
    pub fields: &'a [httparse::Header<'a>],
    /// Extra `name: value` fields the proxy adds (`x-cache`, `age`…).
    pub extra: &'a [(&'a str, &'a [u8])],
    /// The payload's framing: `Length` is stated as `content-length`,
    /// `Chunked`/`UntilClose` stream, `None` means no body (a bodyless
    /// response keeps its own `content-length` among `fields`).
    pub framing: Framing,
    /// The last exchange of an HTTP/1 connection (`connection: close`).
    pub close: bool,
    /// Hop-by-hop fields an upgrade needs (`connection: upgrade`…), HTTP/1 only.
    pub upgrade: &'a str,
}

/// The client of one exchange.
pub enum Downstream<'a> {
    /// An HTTP/1 connection; the exchange reads and writes it in turn.
    H1 {
        inbound: &'a mut Inbound<ClientIo>,
        send_timeout: Duration,
        /// Added to every response head (a TLS frontend's `hsts`).
        hsts: Option<Hsts>,
    },
    /// One HTTP/2 stream.
    H2(Box<H2Down>),
}

/// One HTTP/2 stream as a downstream.
pub struct H2Down {
    pub respond: SendResponse<Bytes>,
    /// The response body stream, once the head is sent.
    pub send: Option<SendStream<Bytes>>,
    /// The request body, read as bytes up to the end of the stream (taken
    /// while an HTTP/2 upstream relays it alongside the response).
    pub body: Option<Inbound<H2Body>>,
    pub send_timeout: Duration,
    /// Added to every response head (a TLS frontend's `hsts`).
    pub hsts: Option<Hsts>,
}

/// Which protocol the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientProtocol {
    Http1,
    Http2,
}

impl Downstream<'_> {
    pub fn protocol(&self) -> ClientProtocol {
        match self {
            Downstream::H1 { .. } => ClientProtocol::Http1,
            Downstream::H2(_) => ClientProtocol::Http2,
        }
    }

    /// `100 Continue` on HTTP/1 (HTTP/2 clients do not wait for it here).
    pub async fn send_continue(&mut self) -> io::Result<()> {
        match self {
            Downstream::H1 { inbound, .. } => {
                inbound.io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await
            }
            Downstream::H2(_) => Ok(()),
        }
    }

    /// Writes the response head, and `first` payload bytes with it (a small
    /// body that arrived with the upstream's head goes out in one write).
    pub async fn send_head(&mut self, h: &OutHead<'_>, first: &[u8]) -> io::Result<()> {
        match self {
            Downstream::H1 {
                inbound,
                send_timeout,
                hsts,
            } => {
                let mut out = h1_head(h, hsts_for(h, *hsts));
                out.extend_from_slice(first);
                SendTimeout::new(&mut inbound.io, *send_timeout)
                    .write_all(&out)
                    .await
            }
            Downstream::H2(d) => {
                let res = h2_head(h, hsts_for(h, d.hsts))?;
                let end = matches!(h.framing, Framing::None | Framing::Length(0));
                let send = d
                    .respond
                    .send_response(res, end)
                    .map_err(io::Error::other)?;
                if end {
                    return Ok(());
                }
                d.send = Some(send);
                if !first.is_empty() {
                    let timeout = d.send_timeout;
                    let mut w = SendTimeout::new(
                        H2Writer {
                            send: d.send.as_mut(),
                        },
                        timeout,
                    );
                    w.write_all(first).await?;
                }
                Ok(())
            }
        }
    }

    /// The writer of the response payload announced by [`Self::send_head`].
    pub fn body(&mut self, framing: Framing) -> BodyOut<'_> {
        match self {
            Downstream::H1 {
                inbound,
                send_timeout,
                ..
            } => {
                let w = SendTimeout::new(&mut inbound.io, *send_timeout);
                if framing == Framing::Chunked {
                    BodyOut::H1Chunked(ChunkedWriter::new(w))
                } else {
                    BodyOut::H1(w)
                }
            }
            Downstream::H2(d) => BodyOut::H2(SendTimeout::new(
                H2Writer {
                    send: d.send.as_mut(),
                },
                d.send_timeout,
            )),
        }
    }

    /// Answers a [`Refusal`] (recorded by the caller): its status and
    /// one-line body. `close`: the last on an HTTP/1 connection.
    pub async fn refuse(&mut self, r: &Refusal, close: bool) -> io::Result<()> {
        self.answer(r.status(), &r.reason(), close).await
    }

    /// A response the proxy makes itself (see [`respond`]). `close`: the
    /// last on an HTTP/1 connection. On an HTTP/2 stream whose response
    /// has begun, the stream is reset instead.
    pub async fn answer(&mut self, code: u16, reason: &str, close: bool) -> io::Result<()> {
        match self {
            Downstream::H1 { inbound, .. } => {
                inbound
                    .io
                    .write_all(&respond::simple(code, reason, close))
                    .await
            }
            Downstream::H2(d) => {
                match d.send.as_mut() {
                    Some(s) => s.send_reset(h2::Reason::INTERNAL_ERROR),
                    None => respond::h2_refuse(&mut d.respond, code, reason),
                }
                Ok(())
            }
        }
    }

    /// Resolves when the client has gone (closed its connection, reset its
    /// stream); pending while it is there.
    pub async fn gone(&mut self) {
        match self {
            // Pipelined bytes: the client is there.
            Downstream::H1 { inbound, .. } => inbound.io.closed().await,
            Downstream::H2(d) => {
                let _ = poll_fn(|cx| d.respond.poll_reset(cx)).await;
            }
        }
    }

    /// Resolves when an HTTP/2 client resets its stream before the
    /// response began; never for HTTP/1 (whose half-close is no reset).
    /// The upstream request is abandoned then: no work for nobody.
    pub async fn reset(&mut self) {
        match self {
            Downstream::H2(d) if d.send.is_none() => {
                let _ = poll_fn(|cx| d.respond.poll_reset(cx)).await;
            }
            _ => std::future::pending().await,
        }
    }

    /// The request body source, when the client speaks HTTP/1.
    pub fn h1_inbound(&mut self) -> Option<&mut Inbound<ClientIo>> {
        match self {
            Downstream::H1 { inbound, .. } => Some(inbound),
            Downstream::H2(_) => None,
        }
    }
}

/// The `Strict-Transport-Security` to add to `h`: the connection's, unless
/// the member sent its own (which wins: browsers heed only the first).
fn hsts_for(h: &OutHead<'_>, hsts: Option<Hsts>) -> Option<Hsts> {
    let own = h
        .fields
        .iter()
        .any(|f| f.name.eq_ignore_ascii_case("strict-transport-security"));
    hsts.filter(|_| !own)
}

/// The HTTP/1 serialisation of a response head.
fn h1_head(h: &OutHead<'_>, hsts: Option<Hsts>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(h.status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(h.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for f in h.fields {
        super::outbound::field(&mut out, f.name.as_bytes(), f.value);
    }
    for (name, value) in h.extra {
        super::outbound::field(&mut out, name.as_bytes(), value);
    }
    if let Some(sts) = hsts {
        let _ = std::io::Write::write_fmt(
            &mut out,
            format_args!("strict-transport-security: {sts}\r\n"),
        );
    }
    super::outbound::framing_fields(&mut out, h.framing);
    if h.close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(h.upgrade.as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

/// The HTTP/2 form of a response head: the same fields, the framing as
/// `content-length` when known, no connection-specific fields.
fn h2_head(h: &OutHead<'_>, hsts: Option<Hsts>) -> io::Result<Response<()>> {
    let mut res = Response::new(());
    *res.status_mut() = StatusCode::from_u16(h.status)
        .map_err(|_| io::Error::other(format!("status {} not valid for HTTP/2", h.status)))?;
    let map = res.headers_mut();
    for f in h.fields {
        if head::is_hop_by_hop(f.name) {
            continue;
        }
        push(map, f.name.as_bytes(), f.value);
    }
    for (name, value) in h.extra {
        push(map, name.as_bytes(), value);
    }
    if let Some(sts) = hsts {
        push(
            map,
            b"strict-transport-security",
            sts.to_string().as_bytes(),
        );
    }
    if let Framing::Length(n) = h.framing {
        map.insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    Ok(res)
}

/// Adds a field the upstream sent; one HTTP/2 cannot carry is dropped (the
/// HTTP/1 parser already refused control characters, so this is rare).
fn push(map: &mut HeaderMap, name: &[u8], value: &[u8]) {
    if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
        map.append(n, v);
    }
}

/// The payload writer of a response.
pub enum BodyOut<'a> {
    H1(SendTimeout<&'a mut ClientIo>),
    H1Chunked(ChunkedWriter<SendTimeout<&'a mut ClientIo>>),
    H2(SendTimeout<H2Writer<'a>>),
}

impl BodyOut<'_> {
    /// Ends the payload: the last chunk, or the end of the HTTP/2 stream
    /// (with `trailers` if the upstream sent some and the client speaks
    /// HTTP/2), and flushes.
    pub async fn finish(&mut self, trailers: Option<HeaderMap>) -> io::Result<()> {
        match self {
            BodyOut::H1(w) => w.flush().await,
            BodyOut::H1Chunked(w) => w.finish().await,
            BodyOut::H2(w) => {
                w.flush().await?;
                let Some(send) = w.get_mut().send.as_mut() else {
                    return Ok(());
                };
                match trailers {
                    Some(t) if !t.is_empty() => send.send_trailers(t),
                    _ => send.send_data(Bytes::new(), true),
                }
                .map_err(io::Error::other)
            }
        }
    }
}

impl AsyncWrite for BodyOut<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BodyOut::H1(w) => Pin::new(w).poll_write(cx, buf),
            BodyOut::H1Chunked(w) => Pin::new(w).poll_write(cx, buf),
            BodyOut::H2(w) => Pin::new(w).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BodyOut::H1(w) => Pin::new(w).poll_flush(cx),
            BodyOut::H1Chunked(w) => Pin::new(w).poll_flush(cx),
            BodyOut::H2(w) => Pin::new(w).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BodyOut::H1(w) => Pin::new(w).poll_shutdown(cx),
            BodyOut::H1Chunked(w) => Pin::new(w).poll_shutdown(cx),
            BodyOut::H2(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

/// Writes DATA frames as the peer grants flow-control capacity: a write is
/// pending until there is a window for some of it (so [`SendTimeout`]
/// bounds a client that grants none).
pub struct H2Writer<'a> {
    pub send: Option<&'a mut SendStream<Bytes>>,
}

impl AsyncWrite for H2Writer<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let Some(send) = self.get_mut().send.as_deref_mut() else {
            return Poll::Ready(Err(io::Error::other("no HTTP/2 response stream")));
        };
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        send.reserve_capacity(buf.len());
        loop {
            match send.poll_capacity(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    return Poll::Ready(Err(io::Error::other("HTTP/2 stream closed")))
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(io::Error::other(e))),
                Poll::Ready(Some(Ok(0))) => continue,
                Poll::Ready(Some(Ok(n))) => {
                    let n = n.min(buf.len());
                    send.send_data(Bytes::copy_from_slice(&buf[..n]), false)
                        .map_err(io::Error::other)?;
                    return Poll::Ready(Ok(n));
                }
            }
        }
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// An HTTP/2 request body read as a byte stream that ends with the stream:
/// the exchange reads it with `Framing::UntilClose` (or `Length` when the
/// client declared one, which `h2` holds it to). Flow-control capacity is
/// released as bytes are taken, so the client sends no faster than the
/// exchange reads. Trailers are kept for an HTTP/2 upstream
/// ([`H2Body::trailers`]).
pub struct H2Body {
    pub recv: RecvStream,
    pending: Bytes,
    ended: bool,
    pub trailers: Option<HeaderMap>,
}

impl H2Body {
    pub fn new(recv: RecvStream) -> Self {
        let ended = recv.is_end_stream();
        H2Body {
            recv,
            pending: Bytes::new(),
            ended,
            trailers: None,
        }
    }
}

impl AsyncRead for H2Body {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                let chunk = this.pending.split_to(n);
                buf.put_slice(&chunk);
                let _ = this.recv.flow_control().release_capacity(n);
                return Poll::Ready(Ok(()));
            }
            if this.ended {
                return Poll::Ready(Ok(()));
            }
            match this.recv.poll_data(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(data))) => this.pending = data,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(io::Error::other(e))),
                Poll::Ready(None) => {
                    // The body is complete; trailers (if any) follow.
                    match this.recv.poll_trailers(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(t)) => this.trailers = t,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                    }
                    this.ended = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_with(fields: &[httparse::Header<'_>]) -> String {
        let h = OutHead {
            status: 200,
            reason: "OK",
            fields,
            extra: &[],
            framing: Framing::Length(0),
            close: false,
            upgrade: "",
        };
        let hsts = Hsts {
            max_age: 60,
            include_subdomains: false,
        };
        String::from_utf8(h1_head(&h, hsts_for(&h, Some(hsts)))).unwrap()
    }

    #[test]
    fn hsts_is_added_unless_the_member_sent_its_own() {
        let added = head_with(&[]);
        assert!(
            added.contains("strict-transport-security: max-age=60\r\n"),
            "{added}"
        );
        let own = [httparse::Header {
            name: "Strict-Transport-Security",
            value: b"max-age=5",
        }];
        let kept = head_with(&own);
        assert_eq!(kept.matches("max-age=").count(), 1, "{kept}");
        assert!(kept.contains("max-age=5"), "{kept}");
    }
}
