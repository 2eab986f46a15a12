//! Request body buffering: a body is received and checked *before* an
//! upstream is chosen and connected (nginx's `proxy_request_buffering`).
//!
//! Up to `request_buffer_bytes` of a request body (counted as sent, framing
//! included) are read into the client's read-ahead buffer and validated:
//! a chunked body's every size line, CRLF and trailer line, a declared
//! length against `max_body_bytes`. Only a complete, well-formed body makes
//! the exchange go on; so a body that turns out malformed, too large,
//! truncated or too slow (`body_timeout_ms`, a total deadline from the end
//! of the head) is answered 400/413/408 without the upstream ever seeing a
//! byte of the request, and a trickling client holds no upstream
//! connection while it trickles.
//!
//! The body then goes upstream through the same streaming copy as a large
//! one ([`super::body::copy_body`]), from memory: a chunked body stays
//! chunked (re-encoded, extensions and trailers dropped), a
//! `Content-Length` body keeps its length. A body larger than the buffer
//! streams once the upstream is connected, still bounded by the same
//! deadline; a malformed tail is then refused with the upstream
//! connection closed, never pooled.

use std::io;
use std::net::SocketAddr;

use tokio::io::AsyncRead;
use tokio::time::Instant;

use super::body::{chunk_size, BodyError, Inbound, MAX_LINE, MAX_TRAILERS};
use super::downstream::Downstream;
use super::exchange::{Exchange, LimitScope};
use super::limits::SourceName;
use super::outbound::method_and_path;
use super::refusal::{At, Refusal};
use super::ProxyCtx;
use crate::wire::head::Framing;

/// How much of a request body is in memory after [`buffer_body`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// No body, or all of it, checked.
    Complete,
    /// The body is larger than the buffer: the rest streams.
    Streaming,
}

/// Reads the request body of `framing` into `client.buf` until it is
/// complete and valid, or more than `max` bytes are buffered (then the
/// rest streams), or `deadline` passes (`Read(TimedOut)`).
pub async fn buffer_body<R: AsyncRead + Unpin>(
    client: &mut Inbound<R>,
    framing: Framing,
    limit: Option<u64>,
    max: usize,
    deadline: Instant,
) -> Result<Received, BodyError> {
    match framing {
        Framing::None => Ok(Received::Complete),
        // An HTTP/2 body without a declared length: up to its end.
        Framing::UntilClose => loop {
            if limit.is_some_and(|l| client.buf.len() as u64 > l) {
                return Err(BodyError::TooLarge);
            }
            if client.buf.len() > max {
                return Ok(Received::Streaming);
            }
            match tokio::time::timeout_at(deadline, client.fill_bounded()).await {
                Err(_) => return Err(BodyError::Read(io::ErrorKind::TimedOut.into())),
                Ok(Ok(0)) => return Ok(Received::Complete),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(BodyError::Read(e)),
            }
        },
        Framing::Length(n) => {
            if limit.is_some_and(|l| n > l) {
                return Err(BodyError::TooLarge);
            }
            if usize::try_from(n).map_or(true, |n| n > max) {
                return Ok(Received::Streaming);
            }
            while (client.buf.len() as u64) < n {
                fill_by(client, deadline).await?;
            }
            Ok(Received::Complete)
        }
        Framing::Chunked => {
            let mut scan = ChunkScan::default();
            loop {
                if scan.scan(&client.buf, limit)? {
                    return Ok(Received::Complete);
                }
                if client.buf.len() > max {
                    return Ok(Received::Streaming);
                }
                fill_by(client, deadline).await?;
            }
        }
    }
}

async fn fill_by<R: AsyncRead + Unpin>(
    client: &mut Inbound<R>,
    deadline: Instant,
) -> Result<(), BodyError> {
    match tokio::time::timeout_at(deadline, client.fill_bounded()).await {
        Err(_) => Err(BodyError::Read(io::ErrorKind::TimedOut.into())),
        Ok(Ok(0)) => Err(BodyError::Read(io::ErrorKind::UnexpectedEof.into())),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(BodyError::Read(e)),
    }
}

/// An incremental check of a chunked body, by the same rules as
/// [`super::body::copy_body`] (so the later copy cannot fail on bytes
/// checked here), resuming where the last call stopped: a trickled body
/// costs linear time, not quadratic.
#[derive(Debug, Default)]
struct ChunkScan {
    /// Bytes of the buffer accepted so far.
    pos: usize,
    state: Scan,
    total: u64,
    trailer_bytes: usize,
}

#[derive(Debug, Default, Clone, Copy)]
enum Scan {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

impl ChunkScan {
    /// The next CRLF-terminated line at `pos`, without the CRLF, moving
    /// past it; `None` until it is complete.
    fn line<'b>(&mut self, buf: &'b [u8]) -> Result<Option<&'b [u8]>, BodyError> {
        let rest = buf.get(self.pos..).unwrap_or_default();
        match memchr::memchr(b'\n', rest) {
            Some(i) => {
                if i == 0 || rest[i - 1] != b'\r' {
                    return Err(BodyError::Malformed("bare LF in chunked body"));
                }
                self.pos += i + 1;
                Ok(Some(&rest[..i - 1]))
            }
            None if rest.len() > MAX_LINE => Err(BodyError::Malformed("chunk line too long")),
            None => Ok(None),
        }
    }

    /// `Ok(true)` once the body (last chunk and trailers) is complete.
    fn scan(&mut self, buf: &[u8], limit: Option<u64>) -> Result<bool, BodyError> {
        loop {
            match self.state {
                Scan::Size => {
                    let Some(line) = self.line(buf)? else {
                        return Ok(false);
                    };
                    let size = chunk_size(line)?;
                    self.total = self.total.saturating_add(size);
                    if limit.is_some_and(|l| self.total > l) {
                        return Err(BodyError::TooLarge);
                    }
                    self.state = if size == 0 {
                        Scan::Trailers
                    } else {
                        Scan::Data(size)
                    };
                }
                Scan::Data(left) => {
                    let avail = (buf.len().saturating_sub(self.pos)) as u64;
                    let take = avail.min(left);
                    self.pos += take as usize;
                    if take < left {
                        self.state = Scan::Data(left - take);
                        return Ok(false);
                    }
                    self.state = Scan::DataEnd;
                }
                Scan::DataEnd => {
                    let Some(line) = self.line(buf)? else {
                        return Ok(false);
                    };
                    if !line.is_empty() {
                        return Err(BodyError::Malformed("chunk data longer than its size"));
                    }
                    self.state = Scan::Size;
                }
                Scan::Trailers => {
                    let Some(line) = self.line(buf)? else {
                        return Ok(false);
                    };
                    if line.is_empty() {
                        return Ok(true);
                    }
                    self.trailer_bytes += line.len();
                    if self.trailer_bytes > MAX_TRAILERS {
                        return Err(BodyError::Malformed("trailer section too large"));
                    }
                }
            }
        }
    }
}

/// The exchange's body step on a client connection, before an upstream is
/// chosen: `Expect: 100-continue` answered (the request is authorised),
/// then the body buffered and checked. `Ok(None)`: go on and forward;
/// `Ok(Some(keep))`: the proxy answered the request itself (400, 408 or
/// 413, logged and counted) and the connection closes.
pub async fn receive(
    ctx: &ProxyCtx,
    peer: SocketAddr,
    destination: &(dyn std::fmt::Display + Sync),
    out_head: &[u8],
    client: &mut Downstream<'_>,
    exchange: &mut Exchange,
) -> io::Result<Option<bool>> {
    if exchange.framing == Framing::None {
        return Ok(None);
    }
    if exchange.expect_continue {
        client.send_continue().await?;
        exchange.expect_continue = false;
    }
    let (framing, limit, max, deadline) = (
        exchange.source_framing,
        exchange.body_limit,
        exchange.request_buffer_bytes,
        exchange.body_deadline,
    );
    let buffered = match client {
        Downstream::H1 { inbound, .. } => buffer_body(inbound, framing, limit, max, deadline).await,
        Downstream::H2(d) => match d.body.as_mut() {
            Some(body) => buffer_body(body, framing, limit, max, deadline).await,
            None => Ok(Received::Complete),
        },
    };
    match buffered {
        Ok(_) => Ok(None),
        Err(e) => {
            let at = BodyAt {
                peer,
                destination,
                out_head,
                limits: exchange.limits,
            };
            refuse_body(ctx, &at, client, e).await?;
            Ok(Some(false))
        }
    }
}

/// Answers a request whose body could not be received: 413 over the
/// limit, 408 past the deadline or an idle pause, 400 malformed or cut
/// short. Counted and logged; the connection closes after it. A write
/// error towards the upstream is not a client fault: `Err(e)` back.
pub async fn refuse_body(
    ctx: &ProxyCtx,
    at: &BodyAt<'_>,
    client: &mut Downstream<'_>,
    e: BodyError,
) -> io::Result<()> {
    let refusal = match e {
        BodyError::TooLarge => Refusal::BodyTooLarge {
            length: None,
            limit: None,
        },
        BodyError::Malformed(why) => Refusal::BodyMalformed(why.to_owned()),
        BodyError::Read(e) if e.kind() == io::ErrorKind::TimedOut => Refusal::BodyTimeout,
        BodyError::Read(_) => Refusal::BodyMalformed("incomplete body".to_owned()),
        BodyError::Write(e) => return Err(e),
    };
    let (method, path) = method_and_path(at.out_head);
    let snap = ctx.state.load();
    let limit_at = refusal
        .limit_field()
        .and_then(|f| at.limits.limit_ref(&snap, f));
    let source = SourceName::of(&snap.policy, &snap.dir, at.peer.ip());
    let logged = At {
        source: Some(&source),
        peer: Some(at.peer),
        destination: Some(at.destination),
        method: Some(method),
        path: Some(path),
        limit_at: limit_at.as_ref(),
    };
    refusal.record(&ctx.metrics, &logged);
    client.refuse(&refusal, true).await
}

/// What the log line of a body refusal names: the client, where the
/// request was going, the request (read back from its upstream head) and
/// whose limits it was held to.
pub struct BodyAt<'a> {
    pub peer: SocketAddr,
    pub destination: &'a (dyn std::fmt::Display + Sync),
    pub out_head: &'a [u8],
    pub limits: LimitScope,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    async fn buffered(input: &[u8], framing: Framing, max: usize) -> Result<Received, BodyError> {
        let mut src = Inbound::new(input);
        let deadline = Instant::now() + Duration::from_secs(5);
        buffer_body(&mut src, framing, Some(1000), max, deadline).await
    }

    #[tokio::test]
    async fn a_complete_chunked_body_is_checked_whole() {
        let r = buffered(
            b"5;x=1\r\nhello\r\n0\r\nT: 1\r\n\r\nNEXT",
            Framing::Chunked,
            64,
        )
        .await;
        assert_eq!(r.unwrap(), Received::Complete);
    }

    #[tokio::test]
    async fn a_malformed_chunked_body_is_refused_before_any_upstream() {
        for bad in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"5\nhello\r\n",
            b"5\r\nhel",
            b"3e9\r\n",
        ] {
            assert!(
                buffered(bad, Framing::Chunked, 64).await.is_err(),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_body_over_the_buffer_streams() {
        let body = format!("20\r\n{}\r\n", "a".repeat(32)).repeat(4);
        let r = buffered(body.as_bytes(), Framing::Chunked, 64).await;
        assert_eq!(r.unwrap(), Received::Streaming);
        assert_eq!(
            buffered(b"", Framing::Length(100), 64).await.unwrap(),
            Received::Streaming
        );
    }

    #[tokio::test]
    async fn a_trickle_past_the_deadline_times_out() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut src = Inbound::new(rx);
        let deadline = Instant::now() + Duration::from_millis(300);
        let feeder = tokio::spawn(async move {
            for _ in 0..100 {
                if tx.write_all(b"a").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let r = buffer_body(&mut src, Framing::Length(100), None, 1000, deadline).await;
        assert!(
            matches!(&r, Err(BodyError::Read(e)) if e.kind() == io::ErrorKind::TimedOut),
            "{r:?}"
        );
        feeder.abort();
    }

    /// The scan resumes where it stopped and agrees with one pass.
    #[test]
    fn scanning_byte_by_byte_agrees() {
        let body = b"3\r\nabc\r\n10;e\r\n0123456789abcdef\r\n0\r\nX: y\r\n\r\n";
        let mut scan = ChunkScan::default();
        for end in 0..body.len() {
            assert!(
                !scan.scan(&body[..end], None).unwrap(),
                "complete early at {end}"
            );
        }
        assert!(scan.scan(body, None).unwrap());
        assert_eq!(scan.pos, body.len());
    }
}
