//! The response filter of phase 5 ([`super::forward::relay`]): a [`Tap`]
//! sees the final response head, may add header lines or take the response
//! for itself, and may see every body byte as it is written to the client.
//! The cache ([`crate::cache`]) tees responses into its store this way,
//! without buffering a response before the client gets it.

use std::io;

use super::head;

/// What [`super::forward::relay`] does with the final response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapAction {
    /// Relay it with `extra` header lines (each ending in CRLF) added;
    /// `body`: pass the body bytes to [`Tap::body`] too.
    Relay { extra: &'static str, body: bool },
    /// Do not relay: read and drop the (empty) body, keep the upstream
    /// connection, return a [`super::forward::Relayed`] marked `intercepted`.
    Intercept,
}

/// The response filter of phase 5: sees the final response head and, if it
/// asks to, every body byte as it is written to the client (the cache tees
/// responses into its store this way without buffering them first).
pub trait Tap: Send {
    fn head(&mut self, res: &head::ResponseHead<'_, '_>) -> TapAction;
    /// Bytes of the body as framed towards the client (chunked bodies in
    /// the proxy's canonical chunked encoding).
    fn body(&mut self, bytes: &[u8]);
    /// The whole body reached the client.
    fn end(&mut self);
}

/// The tap of an uncached exchange.
pub struct NoTap;

impl Tap for NoTap {
    fn head(&mut self, _: &head::ResponseHead<'_, '_>) -> TapAction {
        TapAction::Relay {
            extra: "",
            body: false,
        }
    }
    fn body(&mut self, _: &[u8]) {}
    fn end(&mut self) {}
}

/// A writer that hands every byte it writes to a [`Tap`].
pub(super) struct Tee<'a, W> {
    pub(super) inner: &'a mut W,
    pub(super) tap: &'a mut dyn Tap,
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Tee<'_, W> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = std::pin::Pin::new(&mut *this.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &r {
            this.tap.body(buf.get(..*n).unwrap_or_default());
        }
        r
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }
}
