//! Write timeouts towards clients (`send_timeout_ms`).
//!
//! A client that stops reading makes every write to it wait forever once
//! the socket buffers are full, pinning the exchange: the upstream
//! connection, the response being relayed, a cache entry being served or
//! a tunnel. [`SendTimeout`] wraps the client side of such a copy and
//! fails a write that makes no progress for the timeout with a
//! [`SendTimedOut`] error, which the connection loops count
//! (`clients_send_timeout_total`) and log before closing. An idle
//! connection (nothing to write) never times out here; only a pending
//! write does, so a long but steadily read response is not cut.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The error a write gets when the client took nothing for the timeout.
#[derive(Debug, thiserror::Error)]
#[error("client did not read for {0:?} (send_timeout_ms)")]
pub struct SendTimedOut(pub Duration);

/// The `io::Error` for a send timeout.
pub fn timed_out(t: Duration) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, SendTimedOut(t))
}

/// Was `e` made by a send timeout?
pub fn is_send_timeout(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<SendTimedOut>())
}

/// `io` with writes bounded by `timeout` without progress; reads pass through.
#[derive(Debug)]
pub struct SendTimeout<W> {
    io: W,
    timeout: Duration,
    /// Armed while a write is pending; allocated on the first stall only.
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl<W> SendTimeout<W> {
    pub fn new(io: W, timeout: Duration) -> Self {
        SendTimeout {
            io,
            timeout,
            sleep: None,
            armed: false,
        }
    }

    /// The wrapped stream.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.io
    }

    /// `Ready(err)` when a stalled operation has waited out the timeout,
    /// `Pending` (with the timer armed) otherwise.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let deadline = Instant::now() + self.timeout;
        if !self.armed {
            match &mut self.sleep {
                Some(s) => s.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        let expired = match &mut self.sleep {
            Some(s) => s.as_mut().poll(cx).is_ready(),
            None => false,
        };
        if expired {
            self.armed = false;
            Poll::Ready(timed_out(self.timeout))
        } else {
            Poll::Pending
        }
    }

    fn progressed(&mut self) {
        self.armed = false;
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for SendTimeout<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.progressed();
                Poll::Ready(r)
            }
            Poll::Pending => this.stalled(cx).map(Err),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Ready(r) => {
                this.progressed();
                Poll::Ready(r)
            }
            Poll::Pending => this.stalled(cx).map(Err),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_shutdown(cx) {
            Poll::Ready(r) => {
                this.progressed();
                Poll::Ready(r)
            }
            Poll::Pending => this.stalled(cx).map(Err),
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for SendTimeout<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_reader_that_stops_fails_the_write_after_the_timeout() {
        let (a, _b) = tokio::io::duplex(1024);
        let mut w = SendTimeout::new(a, Duration::from_millis(300));
        let started = Instant::now();
        let e = w.write_all(&[0u8; 4096]).await.unwrap_err();
        assert!(is_send_timeout(&e), "{e}");
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn a_slow_but_steady_reader_is_not_cut() {
        let (a, mut b) = tokio::io::duplex(1024);
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = [0u8; 512];
            while got < 8192 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                got += tokio::io::AsyncReadExt::read(&mut b, &mut buf)
                    .await
                    .unwrap();
            }
        });
        let mut w = SendTimeout::new(a, Duration::from_millis(300));
        w.write_all(&[0u8; 8192]).await.unwrap();
        reader.await.unwrap();
    }
}
