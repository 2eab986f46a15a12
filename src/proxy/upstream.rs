//! Upstream connections: a small keep-alive pool per destination address,
//! so a busy caller does not pay a TCP handshake per request.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::net::TcpStream;

/// Idle connections kept per upstream address.
const MAX_IDLE_PER_ADDR: usize = 32;

#[derive(Debug, Default)]
pub struct UpstreamPool {
    idle: Mutex<HashMap<SocketAddr, Vec<TcpStream>>>,
}

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

    /// A fresh connection, bounded by `timeout`.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        let s = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        s.set_nodelay(true)?;
        Ok(s)
    }
}
