//! The admin endpoint (`proxy.admin`, default `127.0.0.1:9901`): `/healthz`,
//! `/metrics` (Prometheus text) and `/status` (JSON for `portcullis status`).
//! Runs on its own small runtime thread, apart from the data plane, so a
//! flood of proxied traffic cannot starve operators of answers.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::directory::Snapshot;
use super::metrics::Metrics;

/// Serves the admin endpoint on `listener` until the runtime stops.
pub async fn serve(listener: TcpListener, state: Arc<ArcSwap<Snapshot>>, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        let metrics = metrics.clone();
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
            let path = line.split_whitespace().nth(1).unwrap_or("");
            let (code, ctype, body) = match path {
                "/healthz" => (200, "text/plain", "ok\n".to_owned()),
                "/metrics" => (200, "text/plain; version=0.0.4", metrics.render()),
                "/status" => (
                    200,
                    "application/json",
                    status_json(&state.load(), &metrics),
                ),
                _ => (404, "text/plain", "not found\n".to_owned()),
            };
            let head = format!(
                "HTTP/1.1 {code} {}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                if code == 200 { "OK" } else { "Not Found" },
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(body.as_bytes()).await;
        });
    }
}

fn status_json(snap: &Snapshot, metrics: &Metrics) -> String {
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
    serde_json::json!({
        "rules": p.file.to_string(),
        "pools": pools,
        "version": snap.version,
        "mode": if p.audit { "audit" } else { "enforce" },
        "containers": containers,
        "counters": counters,
    })
    .to_string()
}

/// Binds the admin address (an error names it).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
