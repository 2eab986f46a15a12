//! What the decision hands to the upstream phase, and what comes back:
//! the types the pipeline's phases share (so they import this, not each
//! other).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::refusal::Refusal;
use crate::rules::model::UpstreamProtocol;
use crate::state::snapshot::{LimitOwner, Snapshot};
use crate::wire::head::{Framing, Tunnel};

/// Defaults for access flows (frontends take theirs from the pool).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// The two ends of a forwarded exchange.
#[derive(Debug, Clone, Copy)]
pub struct Upstream {
    /// The client (for logs).
    pub peer: SocketAddr,
    /// Where the request goes.
    pub dst: SocketAddr,
}

/// What the authorisation step decided about the request's framing and
/// connection handling; everything [`forward`] needs besides the head.
#[derive(Debug, Clone, Copy)]
pub struct Exchange {
    pub framing: Framing,
    pub keep_alive: bool,
    pub head_request: bool,
    pub expect_continue: bool,
    pub body_limit: Option<u64>,
    /// Bound on connecting to the upstream (→ 504).
    pub connect_timeout: Duration,
    /// Bound on waiting for each response head (→ 504), and on each read
    /// of the response body.
    pub response_timeout: Duration,
    /// An authorised CONNECT or WebSocket upgrade: if the upstream agrees
    /// (2xx / 101), the connection becomes a byte tunnel.
    pub tunnel: Option<Tunnel>,
    /// How the request body is read from the client: `framing`, except for
    /// an HTTP/2 stream without a length (`UntilClose`: the end of the
    /// stream), which goes to an HTTP/1 upstream chunked.
    pub source_framing: Framing,
    /// What the upstream speaks.
    pub upstream: UpstreamProtocol,
    /// Request body bytes received and checked before an upstream is
    /// chosen ([`super::buffer`]); a larger body streams.
    pub request_buffer_bytes: usize,
    /// When the whole request body must have arrived (→ 408).
    pub body_deadline: Instant,
    /// Longest a write to the client may wait for it to read (→ closed).
    pub send_timeout: Duration,
    /// Whose limits hold the request (to name the one a body refusal hit).
    pub limits: LimitScope,
}

/// Whose `limits` hold a request, in the rule set (by its version) it was
/// decided by: a refusal after the decision (body too large, too slow)
/// names where the limit is set, looked up only then — and only in that
/// same rule set, so a reload in between leaves the position out rather
/// than naming another rule's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitScope {
    pub version: u64,
    pub owner: LimitOwner,
}

impl LimitScope {
    /// The scope of no rule set (tests that need no positions).
    pub const NONE: LimitScope = LimitScope {
        version: 0,
        owner: LimitOwner::Unowned,
    };

    /// Where `field` of these limits is set in `snap` (`None`: its
    /// default, or `snap` is not the rule set the request was decided by).
    pub fn limit_ref(&self, snap: &Snapshot, field: &str) -> Option<crate::rules::RuleRef> {
        (snap.version == self.version && self.version != 0)
            .then(|| snap.limit_ref(self.owner, field))
            .flatten()
    }
}

/// A response that reached the client.
#[derive(Debug, Clone, Copy)]
pub struct Relayed {
    /// The client connection may carry another request.
    pub keep: bool,
    /// The upstream's status; `None` when the proxy answered itself
    /// (a malformed or oversized request body).
    pub status: Option<u16>,
    /// The tap took the response head for itself ([`TapAction::Intercept`]):
    /// nothing was written to the client, the caller answers it.
    pub intercepted: bool,
}

/// An upstream failure before a final response reached the client.
/// Nothing has been written to the client for it (an interim `1xx`
/// excepted, see `client_touched`); the caller answers or retries.
#[derive(Debug, Clone)]
pub struct UpstreamFailure {
    /// 502, or 504 for a timeout.
    pub code: u16,
    pub why: String,
    /// Bytes of the request may have reached the upstream.
    pub request_sent: bool,
    /// The client's body was (partly) consumed, or an interim response was
    /// relayed: the request cannot be sent again.
    pub client_touched: bool,
}

impl UpstreamFailure {
    /// The one-line body of the 502/504.
    pub fn message(&self, dst: SocketAddr) -> String {
        if self.code == 504 {
            format!("upstream {dst} did not answer in time: {}", self.why)
        } else {
            format!("upstream {dst} failed: {}", self.why)
        }
    }

    /// The refusal the client gets for it.
    pub fn refusal(&self, dst: SocketAddr) -> Refusal {
        Refusal::Upstream {
            status: self.code,
            reason: self.message(dst),
            retryable: !self.client_touched && !self.request_sent,
        }
    }
}

/// An upstream failure as a phase returns it.
pub fn failure(
    code: u16,
    why: impl Into<String>,
    request_sent: bool,
    client_touched: bool,
) -> io::Result<Result<Relayed, UpstreamFailure>> {
    Ok(Err(UpstreamFailure {
        code,
        why: why.into(),
        request_sent,
        client_touched,
    }))
}
