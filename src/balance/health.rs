//! Active health checks: one background task per member of every pool
//! that has a `health` block.
//!
//! Each task sends `GET <path>` to the member every `interval_ms`, bounded
//! by `timeout_ms`; a 2xx or 3xx answer is a success, anything else
//! (refused, timed out, no address, other status) a failure.
//! `unhealthy_after` consecutive failures take the member out of rotation,
//! `healthy_after` consecutive successes bring it back. The verdict is
//! published in the member's atomic flag, which the request path reads
//! without a lock. Every change of state is logged once, with the pool,
//! the member and the reason.
//!
//! The tasks belong to one [`Balancer`]; when a reload publishes a new
//! one, the old [`HealthTasks`] is dropped, which stops its tasks.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{timeout, MissedTickBehavior};
use tracing::{info, warn};

use super::{Balancer, HealthSpec};

/// The running checks of one balancer; dropping it stops them.
#[derive(Debug)]
pub struct HealthTasks {
    pub lb: Arc<Balancer>,
    handles: Vec<JoinHandle<()>>,
}

impl Drop for HealthTasks {
    fn drop(&mut self) {
        for h in &self.handles {
            h.abort();
        }
    }
}

/// Where a member is, as [`spawn`]'s caller sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The published rules are not this balancer's (a reload is under
    /// way): skip this round.
    Stale,
    /// The member's address, `None` while its container has none.
    At(Option<SocketAddr>),
}

/// Looks up a member in the rules published now.
pub type Placed = Arc<dyn Fn(&Arc<Balancer>, &super::Member) -> Placement + Send + Sync>;

/// Starts the checks of every pool with a `health` block (on the current
/// tokio runtime).
/// `placed` says where a member of `lb` is now: `None` while its container
/// has no address, or once the published rules are no longer `lb`'s (only
/// addresses published with this balancer's rules mean what its container
/// ids say).
pub fn spawn(lb: Arc<Balancer>, placed: Placed) -> HealthTasks {
    let mut handles = Vec::new();
    for (p, pool) in lb.pools.iter().enumerate() {
        let Some(spec) = &pool.health else { continue };
        for m in 0..pool.members.len() {
            handles.push(tokio::spawn(check_loop(
                lb.clone(),
                placed.clone(),
                p,
                m,
                spec.clone(),
            )));
        }
    }
    HealthTasks { lb, handles }
}

async fn check_loop(lb: Arc<Balancer>, placed: Placed, p: usize, m: usize, spec: HealthSpec) {
    let (Some(pool), Some(member)) = (
        lb.pools.get(p),
        lb.pools.get(p).and_then(|x| x.members.get(m)),
    ) else {
        return;
    };
    let mut tick = tokio::time::interval(spec.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (mut oks, mut fails) = (0u32, 0u32);
    loop {
        tick.tick().await;
        let addr = match placed(&lb, member) {
            Placement::Stale => continue,
            Placement::At(a) => a,
        };
        let result = match addr {
            None => Err("container has no address".to_owned()),
            Some(a) => probe(a, &spec, &member.target).await,
        };
        match result {
            Ok(code) => {
                fails = 0;
                oks = oks.saturating_add(1);
                if !member.is_healthy() && oks >= spec.healthy_after {
                    member.set_healthy(true);
                    info!(pool = %pool.name, member = %member.target, status = code, checks = oks, "pool member healthy again");
                }
            }
            Err(why) => {
                oks = 0;
                fails = fails.saturating_add(1);
                if member.is_healthy() && fails >= spec.unhealthy_after {
                    member.set_healthy(false);
                    warn!(pool = %pool.name, member = %member.target, reason = %why, checks = fails, "pool member unhealthy: out of rotation");
                }
            }
        }
    }
}

/// One check: `Ok(status)` for 2xx/3xx.
async fn probe(addr: SocketAddr, spec: &HealthSpec, target: &str) -> Result<u16, String> {
    let exchange = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        let req = format!(
            "GET {} HTTP/1.1\r\nhost: {target}\r\nuser-agent: portcullis-health\r\nconnection: close\r\n\r\n",
            spec.path
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("send to {addr}: {e}"))?;
        let mut buf = vec![0u8; 4096];
        let mut n = 0;
        loop {
            let k = s
                .read(&mut buf[n..])
                .await
                .map_err(|e| format!("read from {addr}: {e}"))?;
            if k == 0 {
                return Err(format!("{addr} closed without a response"));
            }
            n += k;
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut res = httparse::Response::new(&mut headers);
            match res.parse(&buf[..n]) {
                Ok(httparse::Status::Complete(_)) => {
                    let code = res.code.unwrap_or(0);
                    return if (200..400).contains(&code) {
                        Ok(code)
                    } else {
                        Err(format!("{} answered {code}", spec.path))
                    };
                }
                Ok(httparse::Status::Partial) if n < buf.len() => continue,
                Ok(httparse::Status::Partial) => return Err("response head too large".into()),
                Err(e) => return Err(format!("invalid response: {e}")),
            }
        }
    };
    match timeout(spec.timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} ms", spec.timeout.as_millis())),
    }
}
