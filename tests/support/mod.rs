//! The loopback lab of the frontend tests (`tests/frontend.rs`,
//! `tests/tls.rs`): small upstream servers on 127.0.0.x that say who they
//! are and echo the headers the proxy sent them, plain and HTTP/2 clients,
//! and the daemon's data plane without the kernel.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use portcullis::balance::{health, Balancer, MemberStatus};
use portcullis::policy::Policy;
use portcullis::proxy::frontend::Listeners;
use portcullis::proxy::ProxyCtx;
use portcullis::state::directory::Directory;
use portcullis::state::metrics::Metrics;
use portcullis::state::snapshot::Snapshot;

// === upstream test servers ===

/// An HTTP/1.1 keep-alive server answering `NAME\n` plus the request's
/// headers, one per line, lower-cased names. Dropping it (or `stop`)
/// closes the listener and every open connection.
pub struct Upstream {
    pub addr: SocketAddr,
    pub task: JoinHandle<()>,
}

impl Upstream {
    pub async fn start(addr: SocketAddr, name: &'static str) -> Upstream {
        let l = TcpListener::bind(addr).await.expect("bind upstream");
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                conns.spawn(serve_any(s, name));
            }
        });
        Upstream { addr, task }
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// HTTP/2 (prior knowledge) or HTTP/1.1, by the first bytes.
pub async fn serve_any(s: TcpStream, name: &'static str) {
    let mut first = [0u8; 3];
    let n = s.peek(&mut first).await.unwrap_or(0);
    if first[..n] == *b"PRI" {
        serve_upstream_h2(s, name).await;
    } else {
        serve_upstream(s, name).await;
    }
}

/// The HTTP/2 twin of [`serve_upstream`]: `NAME\n`, `METHOD path`, then
/// `:authority` and the other fields, one per line.
pub async fn serve_upstream_h2(s: TcpStream, name: &'static str) {
    let Ok(mut conn) = h2::server::handshake(s).await else {
        return;
    };
    while let Some(Ok((req, mut respond))) = conn.accept().await {
        let mut body = format!(
            "{name}\n{} {}\n:authority: {}\n",
            req.method(),
            req.uri().path_and_query().map_or("/", |p| p.as_str()),
            req.uri().authority().map_or("", |a| a.as_str())
        );
        for (n, v) in req.headers() {
            body.push_str(&format!("{n}: {}\n", v.to_str().unwrap_or("?")));
        }
        let res = http::Response::builder().status(200).body(()).unwrap();
        if let Ok(mut send) = respond.send_response(res, false) {
            let _ = send.send_data(bytes::Bytes::from(body), true);
        }
    }
}

pub async fn serve_upstream(mut s: TcpStream, name: &'static str) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or("").to_owned();
        let path = request_line.split(' ').nth(1).unwrap_or("").to_owned();
        if head
            .to_ascii_lowercase()
            .contains("\r\nupgrade: websocket\r\n")
        {
            // Agree, then echo every byte back after the member's name.
            let agreed = "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
            if s.write_all(agreed.as_bytes()).await.is_err() {
                return;
            }
            loop {
                if !buf.is_empty() {
                    let echo = [format!("{name}:").as_bytes(), &buf].concat();
                    if s.write_all(&echo).await.is_err() {
                        return;
                    }
                    buf.clear();
                }
                let mut chunk = [0u8; 4096];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        }
        let status = if path.starts_with("/fail") { 500 } else { 200 };
        let mut body = format!("{name}\n{request_line}\n");
        for l in lines.filter(|l| !l.is_empty()) {
            if let Some((n, v)) = l.split_once(':') {
                body.push_str(&format!("{}: {}\n", n.to_ascii_lowercase(), v.trim()));
            }
        }
        let resp = format!(
            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if s.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

// === client ===

/// One request on a fresh connection: (status, body).
pub async fn get(front: SocketAddr, raw_head: &str) -> (u16, String) {
    let s = TcpStream::connect(front).await.expect("connect frontend");
    exchange_on(s, raw_head).await
}

/// Sends `raw_head` on `s` (plain or TLS) and reads the answer to the
/// end: (status, body).
pub async fn exchange_on<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    raw_head: &str,
) -> (u16, String) {
    s.write_all(raw_head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

pub async fn get_host(front: SocketAddr, host: &str, path: &str) -> (u16, String) {
    get(
        front,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// The upstream's name (first body line) if the answer is a 200.
pub async fn who(front: SocketAddr, host: &str, path: &str) -> String {
    let (status, body) = get_host(front, host, path).await;
    if status == 200 {
        body.lines().next().unwrap_or("").to_owned()
    } else {
        format!("status {status}: {}", body.trim())
    }
}

/// One HTTP/2 request to make: authority, path and one optional field.
pub type H2Get<'a> = (&'a str, &'a str, Option<(&'static str, &'static str)>);

/// Requests over one HTTP/2 prior-knowledge connection: (status, body)
/// for each `(authority, path, extra field)`.
pub async fn get_h2(front: SocketAddr, requests: &[H2Get<'_>]) -> Vec<(u16, String)> {
    let tcp = TcpStream::connect(front).await.expect("connect frontend");
    get_h2_on(tcp, "http", requests).await
}

/// [`get_h2`] over an open stream (plain or TLS), URIs with `scheme`.
pub async fn get_h2_on<S>(io: S, scheme: &str, requests: &[H2Get<'_>]) -> Vec<(u16, String)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (client, conn) = h2::client::handshake(io).await.expect("h2 handshake");
    let driver = tokio::spawn(conn);
    let mut out = Vec::new();
    for (authority, path, extra) in requests {
        let mut req = http::Request::builder().uri(format!("{scheme}://{authority}{path}"));
        if let Some((n, v)) = extra {
            req = req.header(*n, *v);
        }
        let mut client = client.clone().ready().await.expect("stream allowed");
        let (response, _) = client
            .send_request(req.body(()).unwrap(), true)
            .expect("send request");
        let res = tokio::time::timeout(Duration::from_secs(20), response)
            .await
            .expect("response in time")
            .expect("response");
        let status = res.status().as_u16();
        let mut body = res.into_body();
        let mut text = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("body");
            let _ = body.flow_control().release_capacity(chunk.len());
            text.extend_from_slice(&chunk);
        }
        out.push((status, String::from_utf8_lossy(&text).into_owned()));
    }
    drop(client);
    driver.abort();
    out
}

// === the daemon's data plane, without the kernel ===

pub struct Lab {
    pub front: SocketAddr,
    pub state: Arc<ArcSwap<Snapshot>>,
    pub listeners: Listeners,
    pub _checks: health::HealthTasks,
    pub metrics: Arc<Metrics>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn lab(rules: &str) -> Lab {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("portcullis=info")
        .with_test_writer()
        .try_init();
    let port = free_port();
    let text = rules.replace("@FRONT@", &format!("127.0.0.1:{port}"));
    let set = portcullis::rules::parse("rules.json", &text).expect("valid rules");
    // As the daemon loads them: the certificates of TLS frontends with the
    // rules (paths in the lab's rules are absolute).
    let tls = portcullis::tls::load(&set, std::path::Path::new("."), SystemTime::now())
        .expect("certificates");
    let policy = Arc::new(Policy::compile(set).expect("compiles"));
    // Loopback is no container address in a rule file; the "Docker"
    // resolver of this lab maps each name to the address it spells.
    let dir = Directory::build(&policy, |name| name.parse().into_iter().collect());
    let lb = Arc::new(Balancer::compile(&policy));
    let state = Arc::new(ArcSwap::from_pointee(Snapshot {
        policy,
        dir,
        version: 1,
        lb: lb.clone(),
        tls: Arc::new(tls),
    }));
    let metrics = Arc::new(Metrics::default());
    metrics.labelled.certificates(&state.load().tls);
    let ctx = Arc::new(ProxyCtx::new(state.clone(), metrics.clone()));
    let mut listeners = Listeners::default();
    let bound = listeners
        .prepare(&portcullis::proxy::frontend::listen_addrs(
            &lb,
            &state.load().tls,
        ))
        .await
        .expect("bind frontend");
    listeners.commit(bound, &ctx);
    let checks = health::spawn(lb, portcullis::state::snapshot::placement(&state));
    Lab {
        front: SocketAddr::from(([127, 0, 0, 1], port)),
        state,
        listeners,
        _checks: checks,
        metrics,
    }
}

impl Lab {
    pub fn status(&self, pool: &str, member: &str) -> MemberStatus {
        let snap = self.state.load();
        let p = snap.lb.pools.iter().find(|p| p.name == pool).unwrap();
        let m = p.members.iter().find(|m| m.target == member).unwrap();
        m.status(&snap.dir)
    }

    /// Waits (bounded) until a member reaches `want`; false if it never does.
    pub async fn wait_status(&self, pool: &str, member: &str, want: MemberStatus) -> bool {
        for _ in 0..200 {
            if self.status(pool, member) == want {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

pub fn ip(i: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, i], 0))
}
