//! Streaming message bodies: Content-Length, chunked and read-until-close,
//! copied piece by piece so nothing is buffered whole.
//!
//! Chunked bodies are decoded and re-encoded rather than passed through raw:
//! chunk extensions and trailers are dropped, and every size line is
//! validated, so what the next hop sees has exactly one interpretation.

use bytes::{Buf, BytesMut};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::wire::head::{head_end, Framing, HeadError};

/// Longest chunk-size or trailer line accepted.
pub(super) const MAX_LINE: usize = 4096;
/// Most trailer bytes accepted (they are read and dropped).
pub(super) const MAX_TRAILERS: usize = 16384;
const READ_CHUNK: usize = 16 * 1024;

/// A byte source with a read-ahead buffer (bytes after a head belong to
/// the body or the next pipelined message).
#[derive(Debug)]
pub struct Inbound<R> {
    pub io: R,
    pub buf: BytesMut,
    /// Longest wait for one read while copying a body (`None`: no bound);
    /// a sender that stalls mid-body gets `TimedOut` instead of holding
    /// the exchange open forever (slow-body attacks).
    pub read_timeout: Option<std::time::Duration>,
}

/// Why copying a body stopped.
#[derive(Debug)]
pub enum BodyError {
    /// Reading the source failed or it closed early.
    Read(io::Error),
    /// Writing to the destination failed.
    Write(io::Error),
    /// The framing was invalid (bad chunk size, missing CRLF…).
    Malformed(&'static str),
    /// The body is larger than the limit.
    TooLarge,
}

impl<R: AsyncRead + Unpin> Inbound<R> {
    pub fn new(io: R) -> Self {
        Inbound {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            read_timeout: None,
        }
    }

    /// Reads more bytes into the buffer; `Ok(0)` at end of stream.
    pub async fn fill(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(READ_CHUNK);
        }
        self.io.read_buf(&mut self.buf).await
    }

    /// Phase 1 of every request on a client connection: wait up to `idle`
    /// for its first byte, then up to `header` for the rest of the head
    /// (slowloris), at most `max` bytes. Reads inside the body that follows
    /// may each pause for `idle` (→ 408).
    pub async fn next_head(
        &mut self,
        idle: std::time::Duration,
        header: std::time::Duration,
        max: usize,
    ) -> io::Result<HeadWait> {
        if self.buf.is_empty() {
            match tokio::time::timeout(idle, self.fill()).await {
                Err(_) => return Ok(HeadWait::Idle),
                Ok(Ok(0)) => return Ok(HeadWait::Closed),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
            }
        }
        self.read_timeout = Some(idle);
        match tokio::time::timeout(header, self.read_head(max)).await {
            Err(_) => Ok(HeadWait::HeaderTimeout),
            Ok(Ok(None)) => Ok(HeadWait::Closed),
            Ok(Ok(Some(n))) => Ok(HeadWait::Head(n)),
            Ok(Err(ReadHeadError::Io(e))) => Err(e),
            Ok(Err(ReadHeadError::Head(e))) => Ok(HeadWait::Bad(e)),
        }
    }

    /// Reads until a complete head is buffered and returns its length;
    /// `Ok(None)` if the stream ended cleanly before any byte.
    pub async fn read_head(&mut self, max: usize) -> Result<Option<usize>, ReadHeadError> {
        loop {
            // Empty lines before a request line are ignored (RFC 9112 §2.2):
            // some clients send a CRLF after a body.
            while self.buf.starts_with(b"\r\n") {
                self.buf.advance(2);
            }
            if let Some(end) = head_end(&self.buf).map_err(ReadHeadError::Head)? {
                if end > max {
                    return Err(ReadHeadError::Head(HeadError::TooLarge));
                }
                return Ok(Some(end));
            }
            if self.buf.len() > max {
                return Err(ReadHeadError::Head(HeadError::TooLarge));
            }
            match self.fill().await {
                Ok(0) if self.buf.is_empty() => return Ok(None),
                Ok(0) => return Err(ReadHeadError::Io(io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => {}
                Err(e) => return Err(ReadHeadError::Io(e)),
            }
        }
    }

    /// [`Inbound::fill`] bounded by `read_timeout`.
    pub(super) async fn fill_bounded(&mut self) -> io::Result<usize> {
        match self.read_timeout {
            None => self.fill().await,
            Some(t) => tokio::time::timeout(t, self.fill())
                .await
                .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
        }
    }

    async fn fill_or_eof(&mut self) -> Result<(), BodyError> {
        match self.fill_bounded().await {
            Ok(0) => Err(BodyError::Read(io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => Ok(()),
            Err(e) => Err(BodyError::Read(e)),
        }
    }

    /// Takes one CRLF-terminated line (without the CRLF).
    async fn line(&mut self) -> Result<BytesMut, BodyError> {
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf) {
                if i == 0 || self.buf[i - 1] != b'\r' {
                    return Err(BodyError::Malformed("bare LF in chunked body"));
                }
                let mut line = self.buf.split_to(i + 1);
                line.truncate(i - 1);
                return Ok(line);
            }
            if self.buf.len() > MAX_LINE {
                return Err(BodyError::Malformed("chunk line too long"));
            }
            self.fill_or_eof().await?;
        }
    }
}

/// How waiting for the next request head ended.
#[derive(Debug)]
pub enum HeadWait {
    /// A complete head of this many bytes is buffered.
    Head(usize),
    /// The client closed the connection between requests.
    Closed,
    /// No new request within the idle timeout.
    Idle,
    /// The head did not complete within the header timeout (→ 408).
    HeaderTimeout,
    /// The head is malformed or too large.
    Bad(HeadError),
}

#[derive(Debug)]
pub enum ReadHeadError {
    Head(HeadError),
    Io(io::Error),
}

/// Copies one body from `src` to `dst` according to `framing`, as HTTP/1
/// framed bytes: a chunked body re-encoded (extensions and trailers
/// dropped), any other body as it is. Returns the payload byte count.
pub async fn copy_body<R, W>(
    src: &mut Inbound<R>,
    dst: &mut W,
    framing: Framing,
    limit: Option<u64>,
) -> Result<u64, BodyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if framing != Framing::Chunked {
        return copy_payload(src, dst, framing, limit).await;
    }
    let mut out = ChunkedWriter::new(dst);
    let n = copy_payload(src, &mut out, framing, limit).await?;
    out.finish().await.map_err(BodyError::Write)?;
    Ok(n)
}

/// Copies one body from `src` to `dst`, decoded: `dst` gets the payload
/// only (what an HTTP/2 peer gets as DATA, what the cache stores), never
/// holding more than one read's worth. Returns the payload byte count.
pub async fn copy_payload<R, W>(
    src: &mut Inbound<R>,
    dst: &mut W,
    framing: Framing,
    limit: Option<u64>,
) -> Result<u64, BodyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let n = match framing {
        Framing::None => 0,
        Framing::Length(len) => {
            if limit.is_some_and(|l| len > l) {
                return Err(BodyError::TooLarge);
            }
            copy_exact(src, dst, len).await?;
            len
        }
        Framing::Chunked => copy_chunked(src, dst, limit).await?,
        Framing::UntilClose => {
            let mut total = 0u64;
            loop {
                if !src.buf.is_empty() {
                    total += src.buf.len() as u64;
                    if limit.is_some_and(|l| total > l) {
                        return Err(BodyError::TooLarge);
                    }
                    dst.write_all(&src.buf).await.map_err(BodyError::Write)?;
                    src.buf.clear();
                }
                match src.fill_bounded().await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => return Err(BodyError::Read(e)),
                }
            }
            total
        }
    };
    dst.flush().await.map_err(BodyError::Write)?;
    Ok(n)
}

/// HTTP/1 chunked encoding of what is written: every write becomes one
/// chunk (its size line, the data, CRLF); [`ChunkedWriter::finish`] writes
/// the last chunk. Payload writers (the body copy, the cache's tee) stay
/// the same whichever framing the next hop needs.
#[derive(Debug)]
pub struct ChunkedWriter<W> {
    inner: W,
    /// The size line of the chunk being written, and how much of it is out.
    line: [u8; 18],
    line_len: usize,
    line_pos: usize,
    /// Data of the current chunk still to write.
    data_left: usize,
    /// Bytes of the chunk's closing CRLF still to write (0, 1 or 2).
    crlf_left: usize,
}

impl<W: AsyncWrite + Unpin> ChunkedWriter<W> {
    pub fn new(inner: W) -> Self {
        ChunkedWriter {
            inner,
            line: [0; 18],
            line_len: 0,
            line_pos: 0,
            data_left: 0,
            crlf_left: 0,
        }
    }

    /// Completes a pending chunk end (CRLF).
    fn poll_crlf(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.crlf_left > 0 {
            let crlf = &b"\r\n"[2 - self.crlf_left..];
            match Pin::new(&mut self.inner).poll_write(cx, crlf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.crlf_left -= n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Writes the last chunk and flushes.
    pub async fn finish(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_crlf(cx)).await?;
        self.inner.write_all(b"0\r\n\r\n").await?;
        self.inner.flush().await
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for ChunkedWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.data_left == 0 {
            ready!(this.poll_crlf(cx))?;
            if this.line_pos == this.line_len {
                // A new chunk for this buffer.
                let mut digits = [0u8; 16];
                let mut n = buf.len();
                let mut i = digits.len();
                loop {
                    i -= 1;
                    digits[i] = b"0123456789abcdef"[n % 16];
                    n /= 16;
                    if n == 0 {
                        break;
                    }
                }
                let len = digits.len() - i;
                this.line[..len].copy_from_slice(&digits[i..]);
                this.line[len..len + 2].copy_from_slice(b"\r\n");
                this.line_len = len + 2;
                this.line_pos = 0;
                this.data_left = buf.len();
            }
        }
        while this.line_pos < this.line_len {
            let line = &this.line[this.line_pos..this.line_len];
            match ready!(Pin::new(&mut this.inner).poll_write(cx, line)) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => this.line_pos += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        let take = buf.len().min(this.data_left);
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &buf[..take]))?;
        this.data_left -= n;
        if this.data_left == 0 && n > 0 {
            this.crlf_left = 2;
            // Best effort now; the next write, flush or finish completes it.
            let _ = this.poll_crlf(cx);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_crlf(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

async fn copy_exact<R, W>(src: &mut Inbound<R>, dst: &mut W, mut left: u64) -> Result<(), BodyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    while left > 0 {
        if src.buf.is_empty() {
            src.fill_or_eof().await?;
        }
        let take = (src.buf.len() as u64).min(left) as usize;
        dst.write_all(&src.buf[..take])
            .await
            .map_err(BodyError::Write)?;
        src.buf.advance(take);
        left -= take as u64;
    }
    Ok(())
}

pub(super) fn chunk_size(line: &[u8]) -> Result<u64, BodyError> {
    let end = line.iter().position(|&b| b == b';').unwrap_or(line.len());
    let digits = &line[..end];
    if digits.is_empty() || digits.len() > 15 {
        return Err(BodyError::Malformed("invalid chunk size"));
    }
    let mut n = 0u64;
    for &d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err(BodyError::Malformed("invalid chunk size")),
        };
        n = n * 16 + u64::from(v);
    }
    Ok(n)
}

async fn copy_chunked<R, W>(
    src: &mut Inbound<R>,
    dst: &mut W,
    limit: Option<u64>,
) -> Result<u64, BodyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut total = 0u64;
    loop {
        let line = src.line().await?;
        let size = chunk_size(&line)?;
        total = total.saturating_add(size);
        if limit.is_some_and(|l| total > l) {
            return Err(BodyError::TooLarge);
        }
        if size == 0 {
            let mut trailer_bytes = 0;
            loop {
                let t = src.line().await?;
                if t.is_empty() {
                    break;
                }
                trailer_bytes += t.len();
                if trailer_bytes > MAX_TRAILERS {
                    return Err(BodyError::Malformed("trailer section too large"));
                }
            }
            return Ok(total);
        }
        copy_exact(src, dst, size).await?;
        let crlf = src.line().await?;
        if !crlf.is_empty() {
            return Err(BodyError::Malformed("chunk data longer than its size"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(input: &[u8], framing: Framing) -> (Result<u64, BodyError>, Vec<u8>, Vec<u8>) {
        let mut src = Inbound::new(input);
        let mut out = Vec::new();
        let r = copy_body(&mut src, &mut out, framing, Some(1000)).await;
        (r, out, src.buf.to_vec())
    }

    #[tokio::test]
    async fn content_length_leaves_the_next_message() {
        let (r, out, rest) = run(b"helloGET /", Framing::Length(5)).await;
        assert_eq!(r.unwrap(), 5);
        assert_eq!(out, b"hello");
        assert_eq!(rest, b"GET /");
    }

    #[tokio::test]
    async fn chunked_is_reencoded_without_extensions_or_trailers() {
        let (r, out, rest) = run(
            b"5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\nNEXT",
            Framing::Chunked,
        )
        .await;
        assert_eq!(r.unwrap(), 5);
        assert_eq!(out, b"5\r\nhello\r\n0\r\n\r\n");
        assert_eq!(rest, b"NEXT");
    }

    #[tokio::test]
    async fn chunked_errors() {
        for bad in [
            &b"fffffffffffffffff\r\n"[..],
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"zz\r\n",
            b"5\nhello\r\n",
            b"5\r\nhel",
            b"3e9\r\n",
        ] {
            let (r, _, _) = run(bad, Framing::Chunked).await;
            assert!(r.is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn chunked_writer_frames_each_write_and_survives_partial_writes() {
        // A peer that takes three bytes at a time: size lines, data and
        // CRLFs are all split across writes.
        let (a, mut b) = tokio::io::duplex(3);
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut b, &mut out)
                .await
                .unwrap();
            out
        });
        let mut w = ChunkedWriter::new(a);
        w.write_all(b"hello").await.unwrap();
        w.write_all(&[b'x'; 17]).await.unwrap();
        w.finish().await.unwrap();
        drop(w);
        let got = reader.await.unwrap();
        assert_eq!(
            String::from_utf8(got).unwrap(),
            format!("5\r\nhello\r\n11\r\n{}\r\n0\r\n\r\n", "x".repeat(17))
        );
    }

    #[tokio::test]
    async fn payload_copy_decodes_what_copy_body_reencodes() {
        let mut src = Inbound::new(&b"5;e=1\r\nhello\r\n3\r\nabc\r\n0\r\nT: 1\r\n\r\nNEXT"[..]);
        let mut out = Vec::new();
        let n = copy_payload(&mut src, &mut out, Framing::Chunked, None)
            .await
            .unwrap();
        assert_eq!(
            (n, out.as_slice(), &src.buf[..]),
            (8, &b"helloabc"[..], &b"NEXT"[..])
        );
    }

    #[tokio::test]
    async fn limit_applies_to_both_framings() {
        let (r, _, _) = run(b"x", Framing::Length(5000)).await;
        assert!(matches!(r, Err(BodyError::TooLarge)));
    }
}
