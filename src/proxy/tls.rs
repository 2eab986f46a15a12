//! TLS client connections of a frontend: the handshake (bounded by the
//! frontend's `header_timeout_ms`, counted, a failure logged as one JSON
//! line) and the TLS stream as one more [`ClientStream`], so that
//! everything after the handshake is the same connection skeleton
//! ([`super::connection`]) as plain TCP — HTTP/2 or HTTP/1.1 chosen by the
//! ALPN the handshake agreed on.
//!
//! The certificates come from the snapshot published when the connection
//! was accepted ([`crate::tls`]); a reload swaps them for new connections
//! only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::rustls::{ProtocolVersion, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::warn;

use super::client_io::ClientStream;
use crate::state::metrics::labelled::Handshake;
use crate::state::metrics::Metrics;

impl ClientStream for TlsStream<TcpStream> {
    /// Looks at the TCP stream under the TLS session: bytes waiting (a
    /// record, whatever it holds) are not a close; the end of the TCP
    /// stream is.
    fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<bool> {
        self.get_ref().0.poll_closed(cx)
    }

    fn alpn(&self) -> Option<&[u8]> {
        self.get_ref().1.alpn_protocol()
    }
}

/// Where a handshake is made, for its log line.
pub struct Handshaking<'a> {
    pub frontend: &'a str,
    pub peer: SocketAddr,
    /// The frontend's `header_timeout_ms`.
    pub timeout: Duration,
}

/// Makes the TLS handshake on `stream`: the TLS stream, or `None` when it
/// failed or timed out (logged and counted; the connection is dropped).
pub async fn handshake(
    metrics: &Metrics,
    config: Arc<ServerConfig>,
    stream: TcpStream,
    at: Handshaking<'_>,
) -> Option<TlsStream<TcpStream>> {
    let accepting = TlsAcceptor::from(config).accept(stream);
    let reason = match tokio::time::timeout(at.timeout, accepting).await {
        Ok(Ok(tls)) => {
            let version = match tls.get_ref().1.protocol_version() {
                Some(ProtocolVersion::TLSv1_2) => Handshake::Tls12,
                _ => Handshake::Tls13,
            };
            metrics.labelled.handshake(version);
            return Some(tls);
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!(
            "no TLS handshake within header_timeout_ms ({} ms)",
            at.timeout.as_millis()
        ),
    };
    metrics.labelled.handshake(Handshake::Failed);
    warn!(
        event = "tls_handshake_failed",
        frontend = at.frontend,
        peer = %at.peer,
        reason = %reason,
        "TLS handshake failed"
    );
    None
}
