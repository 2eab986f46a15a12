//! Upstream connections: a small keep-alive pool per destination address,
//! so a busy caller does not pay a TCP handshake per request.

use bytes::Bytes;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::net::TcpStream;

/// Idle connections kept per upstream address.
const MAX_IDLE_PER_ADDR: usize = 32;

#[derive(Default)]
pub struct UpstreamPool {
    idle: Mutex<HashMap<SocketAddr, Vec<TcpStream>>>,
    /// One HTTP/2 connection per h2c destination, shared by every client,
    /// opened on first use and replaced when it ends (GOAWAY, close).
    h2: tokio::sync::Mutex<HashMap<SocketAddr, h2::client::SendRequest<Bytes>>>,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool").finish_non_exhaustive()
    }
}

/// Streams a client may reset on one upstream HTTP/2 connection.
const H2_MAX_RESETS: usize = 100;

impl UpstreamPool {
    /// An idle connection that still looks open, if any.
    pub fn take(&self, addr: SocketAddr) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(&addr)?;
        while let Some(s) = list.pop() {
            let mut probe = [0u8; 1];
            // An idle upstream must have nothing to say: EOF or stray bytes
            // both mean the connection is unusable.
            if matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                return Some(s);
            }
        }
        None
    }

    /// Returns a connection after a complete exchange.
    pub fn put(&self, addr: SocketAddr, s: TcpStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(addr).or_default();
        if list.len() < MAX_IDLE_PER_ADDR {
            list.push(s);
        }
    }

    /// A sender ready for one more stream to the h2c upstream `dst`,
    /// connecting (within `connect_timeout`) if there is no live connection.
    pub async fn h2_sender(
        &self,
        dst: SocketAddr,
        connect_timeout: Duration,
    ) -> io::Result<h2::client::SendRequest<Bytes>> {
        let mut slots = self.h2.lock().await;
        if let Some(s) = slots.get(&dst) {
            if let Ok(ready) = s.clone().ready().await {
                return Ok(ready);
            }
            slots.remove(&dst);
        }
        let tcp = Self::connect(dst, connect_timeout).await?;
        let handshake = h2::client::Builder::new()
            .max_concurrent_reset_streams(H2_MAX_RESETS)
            .handshake::<_, Bytes>(tcp);
        let (send, conn) = tokio::time::timeout(connect_timeout, handshake)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "HTTP/2 handshake timed out"))?
            .map_err(io::Error::other)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(destination = %dst, error = %e, "HTTP/2 upstream connection ended");
            }
        });
        let ready = send.clone().ready().await.map_err(io::Error::other)?;
        slots.insert(dst, send);
        Ok(ready)
    }

    /// A fresh connection, bounded by `timeout`.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        let s = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        s.set_nodelay(true)?;
        Ok(s)
    }
}
