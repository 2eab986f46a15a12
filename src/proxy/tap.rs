//! The response filter of phase 5 ([`super::relay::relay`]): a [`Tap`]
//! sees the final response head, may add header lines or take the response
//! for itself, and may see every body byte as it is written to the client.
//! The cache ([`crate::cache`]) tees responses into its store this way,
//! without buffering a response before the client gets it.
//!
//! While the tap keeps a copy of the body, the [`Tee`] does not wait for
//! the client: it queues what the client has not taken yet and keeps
//! reading the upstream, so the store fills at the upstream's pace and a
//! slow-reading client cannot hold others waiting on the same fetch
//! hostage. The queue never holds more than the tap keeps (which the cache
//! bounds); once the tap stops keeping, the queue drains and the client's
//! pace applies again.

use std::collections::VecDeque;
use std::io;
use std::task::Poll;

use crate::wire::head;

/// What [`super::relay::relay`] does with the final response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapAction {
    /// Relay it with the `extra` fields added;
    /// `body`: pass the body bytes to [`Tap::body`] too.
    Relay {
        extra: &'static [(&'static str, &'static [u8])],
        body: bool,
    },
    /// Do not relay: read and drop the (empty) body, keep the upstream
    /// connection, return a [`super::exchange::Relayed`] marked `intercepted`.
    Intercept,
}

/// The response filter of phase 5: sees the final response head and, if it
/// asks to, every body byte as it is written to the client (the cache tees
/// responses into its store this way without buffering them first).
pub trait Tap: Send {
    fn head(&mut self, res: &head::ResponseHead<'_, '_>) -> TapAction;
    /// Bytes of the body's payload (decoded, whatever the framing on
    /// either side), as they are read from the upstream. `true`: the tap keeps a copy of them, so the writer may
    /// queue them for the client rather than wait for it. `false`: the tap
    /// keeps nothing more (it is not called again for this body).
    fn body(&mut self, bytes: &[u8]) -> bool;
    /// The whole body was read from the upstream (and, when the tap kept
    /// none of it, written to the client).
    fn end(&mut self);
}

/// The tap of an uncached exchange.
pub struct NoTap;

impl Tap for NoTap {
    fn head(&mut self, _: &head::ResponseHead<'_, '_>) -> TapAction {
        TapAction::Relay {
            extra: &[],
            body: false,
        }
    }
    fn body(&mut self, _: &[u8]) -> bool {
        false
    }
    fn end(&mut self) {}
}

/// Copies a response payload (read by `framing`) to the client writer,
/// through the tap when it keeps the body (`tee`): the one body copy of
/// every upstream protocol.
pub async fn copy_response<R, W>(
    src: &mut super::body::Inbound<R>,
    to_client: &mut W,
    tap: &mut dyn Tap,
    tee: bool,
    framing: crate::wire::head::Framing,
) -> Result<u64, super::body::BodyError>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use super::body::{copy_payload, BodyError};
    if !tee {
        return copy_payload(src, to_client, framing, None).await;
    }
    // The tap learns the body is complete as soon as the upstream sent it
    // all, before the client has taken it (see `Tee`).
    let mut w = Tee::new(to_client, tap);
    let n = copy_payload(src, &mut w, framing, None).await?;
    w.finish().await.map_err(BodyError::Write)?;
    Ok(n)
}

/// A writer that hands every body byte to a [`Tap`] and, while the tap
/// keeps them, queues them for the client instead of waiting for it.
///
/// `poll_flush` flushes what was written to the client, not the queue:
/// [`Tee::finish`] ends the tap's body first (so the store is filled as
/// soon as the upstream's body is complete) and then drains the queue.
pub(super) struct Tee<'a, W> {
    inner: &'a mut W,
    tap: &'a mut dyn Tap,
    /// Bytes kept by the tap that the client has not taken yet, one piece
    /// per write (exact sizes: the queue holds what it says), the first
    /// from `sent`.
    queue: VecDeque<Vec<u8>>,
    sent: usize,
    /// The tap still keeps what it is given.
    keeping: bool,
    /// The client failed while the tap was keeping: reported once the tap
    /// stops keeping or the body ends, so the store still fills.
    broken: Option<io::Error>,
}

impl<'a, W: tokio::io::AsyncWrite + Unpin> Tee<'a, W> {
    pub(super) fn new(inner: &'a mut W, tap: &'a mut dyn Tap) -> Self {
        Tee {
            inner,
            tap,
            queue: VecDeque::new(),
            sent: 0,
            keeping: true,
            broken: None,
        }
    }

    /// Writes queued bytes until the queue is empty or the client blocks.
    fn poll_drain(&mut self, cx: &mut std::task::Context<'_>) -> Poll<io::Result<()>> {
        while let Some(piece) = self.queue.front() {
            let rest = piece.get(self.sent..).unwrap_or_default();
            if rest.is_empty() {
                self.queue.pop_front();
                self.sent = 0;
                continue;
            }
            match std::pin::Pin::new(&mut *self.inner).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// The upstream's body is complete: tells the tap, then writes what
    /// is still queued to the client and flushes it.
    pub(super) async fn finish(&mut self) -> io::Result<()> {
        self.tap.end();
        self.keeping = false;
        if let Some(e) = self.broken.take() {
            return Err(e);
        }
        std::future::poll_fn(|cx| self.poll_drain(cx)).await?;
        tokio::io::AsyncWriteExt::flush(&mut *self.inner).await
    }
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Tee<'_, W> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.keeping {
            if this.tap.body(buf) {
                if this.broken.is_none() {
                    this.queue.push_back(buf.to_vec());
                    if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                        this.broken = Some(e);
                        this.queue = VecDeque::new();
                        this.sent = 0;
                    }
                }
                return Poll::Ready(Ok(buf.len()));
            }
            this.keeping = false;
        }
        if let Some(e) = this.broken.take() {
            return Poll::Ready(Err(e));
        }
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        std::pin::Pin::new(&mut *this.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<io::Result<()>> {
        std::pin::Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<io::Result<()>> {
        std::pin::Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }
}
