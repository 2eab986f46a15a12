//! The transparent HTTP proxy: accepts connections that nftables redirected,
//! recovers their original destination, and enforces the access rules on
//! every request before forwarding it (see [`conn`] for the phases).

pub mod body;
pub mod buffer;
pub mod cached;
pub mod client_io;
pub mod conn;
pub mod connection;
pub mod downstream;
pub mod exchange;
pub mod forward;
pub mod frontend;
pub mod h2;
pub mod limits;
pub mod original_dst;
pub mod outbound;
pub mod pipeline;
pub mod redirect;
pub mod refusal;
pub mod relay;
pub mod respond;
pub mod send;
#[cfg(test)]
mod split_tests;
pub mod tap;
pub mod tls;
pub mod tunnel;
pub mod upstream;
pub mod upstream_h2;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::state::metrics::Metrics;
use crate::state::snapshot::Snapshot;

/// Shared by every connection of the data plane.
#[derive(Debug)]
pub struct ProxyCtx {
    pub state: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<Metrics>,
    pub upstreams: upstream::UpstreamPool,
    /// Open connections and request buckets per source (`limits`).
    pub sources: Arc<limits::SourceTable>,
    /// Response caches of the services listed under `cache`.
    pub cache: Arc<crate::cache::CacheLayer>,
    active: AtomicUsize,
}

impl ProxyCtx {
    pub fn new(state: Arc<ArcSwap<Snapshot>>, metrics: Arc<Metrics>) -> Self {
        ProxyCtx {
            state,
            cache: Arc::new(crate::cache::CacheLayer::new(metrics.clone())),
            metrics,
            upstreams: upstream::UpstreamPool::default(),
            sources: Arc::default(),
            active: AtomicUsize::new(0),
        }
    }

    pub fn active_connections(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
}

struct ActiveGuard(Arc<ProxyCtx>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts redirected connections until `shutdown` turns true, then waits
/// up to `drain` for open connections to finish.
pub async fn serve_transparent(
    listener: TcpListener,
    ctx: Arc<ProxyCtx>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let local = match stream.local_addr() {
                    Ok(a) => a,
                    Err(_) => continue,
                };
                let dst = match original_dst::original_dst(&stream, local) {
                    Ok(d) => d,
                    Err(e) => {
                        warn!(source = %peer, error = %e, "no original destination; closing");
                        continue;
                    }
                };
                if dst == local {
                    // Not redirected (nftables drops these; belt and braces).
                    debug!(source = %peer, "direct connection to the proxy port refused");
                    continue;
                }
                Metrics::inc(&ctx.metrics.connections_total);
                ctx.active.fetch_add(1, Ordering::Relaxed);
                let guard = ActiveGuard(ctx.clone());
                let _ = stream.set_nodelay(true);
                let entry = conn::AccessFlow { flow: conn::Flow { peer, dst } };
                tokio::spawn(async move {
                    connection::serve(guard.0.clone(), client_io::ClientIo::new(stream), entry).await;
                    drop(guard);
                });
            }
        }
    }
    let deadline = tokio::time::Instant::now() + drain;
    while ctx.active_connections() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
