//! The client's byte stream as the request path holds it: any
//! [`ClientStream`] (plain TCP here, TLS in [`super::tls`]) boxed into a [`ClientIo`],
//! and the time limits of a client connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A client byte stream: plain TCP, or TLS on a TLS frontend.
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

impl From<&crate::policy::limits::Effective> for ConnLimits {
    fn from(e: &crate::policy::limits::Effective) -> Self {
        ConnLimits {
            max_header_bytes: e.max_header_bytes,
            header_timeout: e.header_timeout,
            idle_timeout: e.idle_timeout,
            send_timeout: e.send_timeout,
        }
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
