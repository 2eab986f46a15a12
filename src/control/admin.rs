//! The admin endpoint (`proxy.admin`, default `127.0.0.1:9901`): `/healthz`,
//! `/metrics` (Prometheus text), `/status` (JSON for `portcullis status`),
//! `POST /cache/purge` (the only way to purge the cache: containers and
//! frontends never can) and `POST /reload` (`portcullis reload`, the systemd
//! unit's `ExecReload`: it reloads the rule file and answers only once the
//! reload has been applied or refused, so the caller's exit status is the
//! reload's result).
//! Runs on its own small runtime thread, apart from the data plane, so a
//! flood of proxied traffic cannot starve operators of answers.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::drift::Kernel;
use super::report::Report;
use crate::cache::CacheLayer;
use crate::discovery::Discovery;
use crate::state::metrics::{render_kernel_drops, render_kernel_pair_drops, Metrics};
use crate::state::snapshot::Snapshot;

/// Where the daemon loop answers a `POST /reload`: the new rules version,
/// or why the reload was refused (the previous rules stay in force).
pub type ReloadReply = tokio::sync::oneshot::Sender<Result<u64, String>>;

/// Longest wait for the daemon loop to finish a requested reload (resolving
/// Docker containers and installing the ruleset normally take milliseconds).
const RELOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// What the admin endpoint reads from (and asks of) the daemon.
#[derive(Clone)]
pub struct Admin {
    pub state: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<Metrics>,
    pub cache: Arc<CacheLayer>,
    pub kernel: Arc<Kernel>,
    pub source: Arc<dyn Discovery>,
    pub report: Arc<Report>,
    pub reload: tokio::sync::mpsc::Sender<ReloadReply>,
}

/// Serves the admin endpoint on `listener` until the runtime stops.
pub async fn serve(listener: TcpListener, admin: Admin) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        let Admin {
            state,
            metrics,
            cache,
            kernel,
            source,
            report,
            reload,
        } = admin.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let mut n = 0;
            while n < buf.len() {
                match tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf[n..]))
                    .await
                {
                    Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                    Ok(Ok(k)) => n += k,
                }
                if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let line = String::from_utf8_lossy(&buf[..n]);
            let mut words = line.split_whitespace();
            let method = words.next().unwrap_or("");
            let target = words.next().unwrap_or("");
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            let (code, ctype, body) = match path {
                "/cache/purge" if method == "POST" => {
                    purge(&cache, &state.load_full(), query).await
                }
                "/cache/purge" => (405, "text/plain", "use POST\n".to_owned()),
                "/healthz" => match kernel.drift() {
                    None => (200, "text/plain", "ok\n".to_owned()),
                    Some(d) => (503, "text/plain", format!("unhealthy: {d}\n")),
                },
                "/reload" if method == "POST" => request_reload(&reload).await,
                "/reload" => (405, "text/plain", "use POST\n".to_owned()),
                "/metrics" => (
                    200,
                    "text/plain; version=0.0.4",
                    render_metrics(&metrics, &state.load()),
                ),
                "/status" => (
                    200,
                    "application/json",
                    status_json(&state.load(), &metrics, &kernel, &*source, &report),
                ),
                _ => (404, "text/plain", "not found\n".to_owned()),
            };
            let head = format!(
                "HTTP/1.1 {code} {}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                match code {
                    200 => "OK",
                    400 => "Bad Request",
                    405 => "Method Not Allowed",
                    409 => "Conflict",
                    503 => "Service Unavailable",
                    _ => "Not Found",
                },
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(body.as_bytes()).await;
        });
    }
}

/// `POST /reload`: asks the daemon loop for a reload of the rule file and
/// waits for its result. 200 `{"version": N}` when the new rules are in
/// force, 409 `{"error": …}` when the reload was refused (the previous rules
/// stay), 503 when the daemon loop does not answer.
async fn request_reload(
    reload: &tokio::sync::mpsc::Sender<ReloadReply>,
) -> (u16, &'static str, String) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let answer = tokio::time::timeout(RELOAD_WAIT, async {
        reload.send(tx).await.ok()?;
        rx.await.ok()
    })
    .await;
    match answer {
        Ok(Some(Ok(version))) => (
            200,
            "application/json",
            serde_json::json!({ "version": version }).to_string(),
        ),
        Ok(Some(Err(error))) => (
            409,
            "application/json",
            serde_json::json!({ "error": error }).to_string(),
        ),
        Ok(None) | Err(_) => (
            503,
            "application/json",
            serde_json::json!({ "error": "the daemon did not answer the reload request" })
                .to_string(),
        ),
    }
}

/// `POST /cache/purge?service=app1:80&target=/foo%3Fx%3D1&host=app1`: every
/// parameter optional (`service` absent: all services; `target`, the path
/// and query as the upstream sees them, and `host` narrow it down).
async fn purge(cache: &CacheLayer, snap: &Snapshot, query: &str) -> (u16, &'static str, String) {
    let mut service = None;
    let mut target = None;
    let mut host = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(v) = percent_decode(v) else {
            return (
                400,
                "text/plain",
                format!("invalid percent-encoding in {k}\n"),
            );
        };
        match k {
            "service" => service = Some(v),
            "target" => target = Some(v),
            "host" => host = Some(v),
            _ => {
                return (
                    400,
                    "text/plain",
                    format!("unknown parameter {k:?}: expected service, target, host\n"),
                )
            }
        }
    }
    match cache
        .purge(snap, service.as_deref(), target.as_deref(), host.as_deref())
        .await
    {
        Ok(n) => {
            tracing::info!(
                service = service.as_deref().unwrap_or("*"),
                target = target.as_deref().unwrap_or("*"),
                host = host.as_deref().unwrap_or("*"),
                purged = n,
                "cache purged"
            );
            (
                200,
                "application/json",
                serde_json::json!({ "purged": n }).to_string(),
            )
        }
        Err(e) => (404, "text/plain", format!("{e}\n")),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn status_json(
    snap: &Snapshot,
    metrics: &Metrics,
    kernel: &Kernel,
    source: &dyn Discovery,
    report: &Report,
) -> String {
    let p = &snap.policy;
    let containers: serde_json::Map<String, serde_json::Value> = p
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let addrs: Vec<String> = snap
                .dir
                .addresses(i as u16)
                .iter()
                .map(ToString::to_string)
                .collect();
            (c.name.clone(), serde_json::json!(addrs))
        })
        .collect();
    let counters: serde_json::Map<String, serde_json::Value> = metrics
        .pairs()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into()))
        .collect();
    let pools: serde_json::Map<String, serde_json::Value> = snap
        .lb
        .pools
        .iter()
        .map(|pool| {
            let members: serde_json::Map<String, serde_json::Value> = pool
                .members
                .iter()
                .map(|m| {
                    (
                        m.target.clone(),
                        serde_json::json!({
                            "status": m.status(&snap.dir).as_str(),
                            "address": m.address(&snap.dir).map(|a| a.to_string()),
                            "weight": m.weight,
                            "in_flight": m.inflight(),
                        }),
                    )
                })
                .collect();
            (pool.name.clone(), serde_json::json!({ "members": members }))
        })
        .collect();
    let mut v = serde_json::json!({
        "rules": p.file.to_string(),
        "pools": pools,
        "version": snap.version,
        "mode": if p.audit { "audit" } else { "enforce" },
        "containers": containers,
        "counters": counters,
        "kernel": match kernel.drift() {
            None => serde_json::json!({ "in_sync": true }),
            Some(d) => serde_json::json!({ "in_sync": false, "differs": d }),
        },
        // The last refused reload (until a later one applies) and the last
        // applied one, with their times.
        "reload": report.reload_json(),
        // Whether nftables sees traffic between containers on one bridge.
        "bridge_netfilter": report.bridge_json(),
        "drop_log": report.drop_log_json(),
    });
    // The discovery source's section (`"docker"`): null while the rules
    // name none of its containers or networks. `networks`: the subnets in
    // force for each guarded network named in the rules.
    v[source.kind()] = if source.names(p).is_empty() {
        serde_json::Value::Null
    } else {
        let networks: serde_json::Map<String, serde_json::Value> = snap
            .dir
            .networks
            .iter()
            .map(|(name, nets)| {
                let nets: Vec<String> = nets.iter().map(ToString::to_string).collect();
                (name.clone(), serde_json::json!(nets))
            })
            .collect();
        serde_json::json!({
            "engine_up": source.reachable(),
            "unresolved": snap.dir.unplaced(p),
            "networks": networks,
            "unresolved_networks": p.unresolved_guard_networks(&snap.dir.networks),
        })
    };
    v.to_string()
}

/// Binds the admin address (an error names it).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// The metrics page: the daemon's own, then the kernel's drop counters,
/// per family and per pair of containers (named by `snap`'s directory).
/// Left out, with a debug line, when the table cannot be read; the pairs
/// also in global audit mode, where nothing is dropped.
fn render_metrics(metrics: &Metrics, snap: &Snapshot) -> String {
    let mut s = metrics.render();
    match crate::nft::readback::rule_counters() {
        Ok(counters) => render_kernel_drops(&mut s, &counters),
        Err(e) => tracing::debug!(error = %e, "kernel counters not readable"),
    }
    if !snap.policy.audit {
        match crate::nft::readback::pair_counters() {
            Ok(pairs) => render_kernel_pair_drops(&mut s, &pairs, |ip| {
                let c = snap.dir.container_at(ip)?;
                Some(snap.policy.container_name(c))
            }),
            Err(e) => tracing::debug!(error = %e, "kernel pair counters not readable"),
        }
    }
    s
}
