//! Frontends end to end on loopback: real sockets, the daemon's listener
//! and health-check machinery, small upstream servers on 127.0.0.x that
//! say who they are and echo the headers the proxy sent them. No kernel
//! rules are involved (frontends listen on the host and connect out).

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use portcullis::balance::{Balancer, MemberStatus};
use portcullis::policy::Policy;
use portcullis::proxy::ProxyCtx;
use portcullis::state::directory::Directory;
use portcullis::state::metrics::Metrics;
use portcullis::state::snapshot::Snapshot;
use support::*;

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_path_with_forwarding_headers() {
    let two = Upstream::start(ip(2), "app2").await;
    let three = Upstream::start(ip(3), "app3").await;
    let rules = format!(
        r#"{{ "version": 1,
  "containers": {{ "app2": {{ "docker": "127.0.0.2" }}, "app3": {{ "docker": "127.0.0.3" }} }},
  "frontends": [ {{ "name": "edge", "listen": "@FRONT@", "routes": [
    {{ "host": "two.example", "pool": "two" }},
    {{ "host": "three.example", "pool": "three" }},
    {{ "host": "*.wild.example", "pool": "three" }},
    {{ "path_prefix": "/two", "pool": "two" }},
    {{ "path_prefix": "/three", "pool": "three" }} ] }} ],
  "pools": {{ "two": {{ "members": ["app2:{}"] }}, "three": {{ "members": ["app3:{}"] }} }} }}"#,
        two.addr.port(),
        three.addr.port()
    );
    let lab = lab(&rules).await;
    let f = lab.front;
    // Scenario 3: by Host (case-insensitive, port ignored); scenario 4: by path.
    assert_eq!(who(f, "two.example", "/three").await, "app2");
    assert_eq!(who(f, "THREE.example:8080", "/two").await, "app3");
    assert_eq!(who(f, "a.b.wild.example", "/").await, "app3");
    assert_eq!(who(f, "other.test", "/two/x?y=1").await, "app2");
    assert_eq!(who(f, "other.test", "/three").await, "app3");
    assert!(who(f, "other.test", "/twofold")
        .await
        .starts_with("status 404"));
    assert!(who(f, "other.test", "/").await.starts_with("status 404"));
    assert!(who(f, "other.test", "/two/../../x")
        .await
        .starts_with("status 400"));
    // Absolute form routes by its authority; one that disagrees with Host is refused.
    let (s, body) = get(
        f,
        "GET http://three.example/x HTTP/1.1\r\nHost: three.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((s, body.lines().next()), (200, Some("app3")));
    let (s, _) = get(
        f,
        "GET http://three.example/x HTTP/1.1\r\nHost: two.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(s, 400);

    // What the upstream saw.
    let (s, body) = get(
        f,
        "GET /two/a/./b HTTP/1.1\r\nHost: Two.Example\r\nX-Forwarded-For: 192.0.2.7\r\n\
         X-Forwarded-Proto: https\r\nX-Portcullis-Source: app1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(s, 200);
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[1], "GET /two/a/b HTTP/1.1", "normalised path");
    assert!(lines.contains(&"host: Two.Example"), "{body}");
    assert!(
        lines.contains(&"x-forwarded-for: 192.0.2.7, 127.0.0.1"),
        "{body}"
    );
    assert!(lines.contains(&"x-forwarded-proto: http"), "{body}");
    assert!(
        lines.contains(&"forwarded: for=127.0.0.1;proto=http;host=\"Two.Example\""),
        "{body}"
    );
    assert!(!body.contains("x-portcullis-source"), "{body}");
    assert!(!body.contains("https"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_is_routed_like_http1() {
    // Members speak HTTP/1.1 unless their pool says h2c: an HTTP/2 client
    // reaches either, through the same pipeline.
    h2_clients_through_a_frontend(None).await;
    h2_clients_through_a_frontend(Some("h2c")).await;
}

/// HTTP/2 clients of a frontend whose pools speak `protocol`.
async fn h2_clients_through_a_frontend(protocol: Option<&str>) {
    let proto = protocol.map_or_else(String::new, |p| format!(r#", "protocol": "{p}""#));
    let h2c = protocol == Some("h2c");
    let two = Upstream::start(ip(2), "app2").await;
    let three = Upstream::start(ip(3), "app3").await;
    let rules = format!(
        r#"{{ "version": 1,
  "containers": {{ "app2": {{ "docker": "127.0.0.2" }}, "app3": {{ "docker": "127.0.0.3" }} }},
  "frontends": [ {{ "name": "edge", "listen": "@FRONT@", "routes": [
    {{ "host": "two.example", "pool": "two" }},
    {{ "path_prefix": "/three", "pool": "three" }} ] }} ],
  "pools": {{ "two": {{ "members": ["app2:{}"]{proto} }}, "three": {{ "members": ["app3:{}"]{proto} }} }} }}"#,
        two.addr.port(),
        three.addr.port()
    );
    let lab = lab(&rules).await;
    let got = get_h2(
        lab.front,
        &[
            ("two.example", "/three", None),
            ("other.test", "/three/x?y=1", None),
            ("other.test", "/", None),
            ("other.test", "/three/../../x", None),
            (
                "TWO.example:8080",
                "/a/./b",
                Some(("x-forwarded-for", "192.0.2.7")),
            ),
            ("two.example", "/", Some(("x-portcullis-source", "app1"))),
        ],
    )
    .await;
    let first = |i: usize| {
        let (s, b) = &got[i];
        (*s, b.lines().next().unwrap_or("").to_owned())
    };
    // By :authority first, then by path; each stream on its own.
    assert_eq!(first(0), (200, "app2".into()), "{got:?}");
    assert_eq!(first(1), (200, "app3".into()), "{got:?}");
    let request_line = |l: &str| {
        if h2c {
            l.to_owned()
        } else {
            format!("{l} HTTP/1.1")
        }
    };
    assert_eq!(
        got[1].1.lines().nth(1).map(str::to_owned),
        Some(request_line("GET /three/x?y=1"))
    );
    assert_eq!(got[2].0, 404, "{got:?}");
    assert!(got[2].1.contains("no route"), "{got:?}");
    assert_eq!(got[3].0, 400, "{got:?}");
    // What the member saw: normalised path, authority kept, forwarding
    // fields appended to as for HTTP/1, a client's source claim dropped.
    let (s, body) = &got[4];
    assert_eq!(*s, 200, "{body}");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[1], request_line("GET /a/b"), "{body}");
    let authority = if h2c {
        ":authority: TWO.example:8080"
    } else {
        "host: TWO.example:8080"
    };
    assert!(lines.contains(&authority), "{body}");
    assert!(
        lines.contains(&"x-forwarded-for: 192.0.2.7, 127.0.0.1"),
        "{body}"
    );
    assert!(lines.contains(&"x-forwarded-proto: http"), "{body}");
    assert!(
        lines.contains(&"forwarded: for=127.0.0.1;proto=http;host=\"TWO.example:8080\""),
        "{body}"
    );
    assert_eq!(got[5].0, 200, "{got:?}");
    assert!(!got[5].1.contains("x-portcullis-source"), "{got:?}");

    // A member that is gone: 502 on each stream, and after
    // PASSIVE_EJECT_AFTER of them it is ejected, as for HTTP/1 (503 then).
    let member = format!("app2:{}", two.addr.port());
    two.stop();
    drop(two);
    let got = get_h2(lab.front, &[("two.example", "/", None); 4]).await;
    let statuses: Vec<u16> = got.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, [502, 502, 502, 503], "{got:?}");
    assert_eq!(lab.status("two", &member), MemberStatus::Ejected);
}

/// Reads one response head (status line and fields).
async fn read_head(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while !out.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut byte))
            .await
            .expect("head in time")
            .expect("read head");
        assert_eq!(n, 1, "connection closed inside a head: {out:?}");
        out.push(byte[0]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_is_routed_and_tunnelled_connect_is_refused() {
    let two = Upstream::start(ip(2), "app2").await;
    let three = Upstream::start(ip(3), "app3").await;
    let rules = format!(
        r#"{{ "version": 1,
  "containers": {{ "app2": {{ "docker": "127.0.0.2" }}, "app3": {{ "docker": "127.0.0.3" }} }},
  "frontends": [ {{ "name": "edge", "listen": "@FRONT@", "routes": [
    {{ "host": "two.example", "pool": "two" }},
    {{ "path_prefix": "/three", "pool": "three" }} ] }} ],
  "pools": {{ "two": {{ "members": ["app2:{}"] }}, "three": {{ "members": ["app3:{}"] }} }} }}"#,
        two.addr.port(),
        three.addr.port()
    );
    let lab = lab(&rules).await;
    let upgrade = |host: &str, path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
    };
    for (host, path, member) in [
        ("other.test", "/three/ws", "app3"),
        ("two.example", "/ws", "app2"),
    ] {
        let mut s = TcpStream::connect(lab.front).await.unwrap();
        s.write_all(upgrade(host, path).as_bytes()).await.unwrap();
        let head = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("upgrade: websocket"),
            "{head}"
        );
        // Bytes now go both ways untouched, to the routed member.
        s.write_all(b"hello").await.unwrap();
        let want = format!("{member}:hello");
        let mut got = vec![0u8; want.len()];
        tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut got))
            .await
            .expect("echo in time")
            .expect("echo");
        assert_eq!(String::from_utf8_lossy(&got), want);
    }
    // No route for an upgrade: 404 as for any request.
    let mut s = TcpStream::connect(lab.front).await.unwrap();
    s.write_all(upgrade("other.test", "/ws").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    // CONNECT: refused with a reason.
    let (status, body) = get(
        lab.front,
        "CONNECT two.example:443 HTTP/1.1\r\nHost: two.example:443\r\n\r\n",
    )
    .await;
    assert_eq!(status, 501);
    assert!(
        body.contains("CONNECT is not supported on frontends"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_hashing_retries_and_health() {
    let a = Upstream::start(ip(4), "a").await;
    let b = Upstream::start(ip(5), "b").await;
    let dead_port = free_port();
    let rules = format!(
        r#"{{ "version": 1,
  "containers": {{ "a": {{ "docker": "127.0.0.4" }}, "b": {{ "docker": "127.0.0.5" }},
                   "dead": {{ "docker": "127.0.0.6" }} }},
  "frontends": [ {{ "name": "edge", "listen": "@FRONT@", "routes": [
    {{ "path_prefix": "/w", "pool": "weighted" }},
    {{ "path_prefix": "/h", "pool": "hashed" }},
    {{ "path_prefix": "/r", "pool": "retry" }},
    {{ "path_prefix": "/c", "pool": "checked" }} ] }} ],
  "pools": {{
    "weighted": {{ "members": [{{ "target": "a:{pa}", "weight": 3 }}, "b:{pb}"] }},
    "hashed": {{ "members": ["a:{pa}", "b:{pb}"], "balance": "hash", "hash_key": "header:X-User" }},
    "retry": {{ "members": ["dead:{dead_port}", "b:{pb}"], "connect_timeout_ms": 500 }},
    "checked": {{ "members": ["a:{pa}", "b:{pb}"], "balance": "least_connections",
                 "health": {{ "path": "/healthz", "interval_ms": 100, "timeout_ms": 200,
                             "unhealthy_after": 2, "healthy_after": 2 }} }} }} }}"#,
        pa = a.addr.port(),
        pb = b.addr.port(),
    );
    let lab = lab(&rules).await;
    let f = lab.front;

    // Smooth weighted round robin: exactly 3:1 over whole cycles.
    let mut n = (0, 0);
    for _ in 0..40 {
        match who(f, "x", "/w").await.as_str() {
            "a" => n.0 += 1,
            "b" => n.1 += 1,
            other => panic!("unexpected answer {other}"),
        }
    }
    assert_eq!(n, (30, 10));

    // Hashing: one key, one member; different keys use both.
    let mut seen = std::collections::HashSet::new();
    for user in 0..16 {
        let req = format!(
            "GET /h HTTP/1.1\r\nHost: x\r\nX-User: user{user}\r\nConnection: close\r\n\r\n"
        );
        let first = get(f, &req).await.1;
        for _ in 0..5 {
            assert_eq!(get(f, &req).await.1.lines().next(), first.lines().next());
        }
        seen.insert(first.lines().next().unwrap_or("").to_owned());
    }
    assert_eq!(seen.len(), 2, "16 keys over 2 members use both");

    // A member that refuses connections: every GET still succeeds (retried
    // on the other member), and the dead one is ejected passively.
    for _ in 0..10 {
        assert_eq!(who(f, "x", "/r").await, "b");
    }
    assert_eq!(
        lab.status("retry", &format!("dead:{dead_port}")),
        MemberStatus::Ejected
    );

    // Active health: stop b; once detected, no request fails or reaches it;
    // start it again and it is back in rotation.
    let b_member = format!("b:{}", b.addr.port());
    assert!(
        lab.wait_status("checked", &b_member, MemberStatus::Healthy)
            .await
    );
    b.stop();
    assert!(
        lab.wait_status("checked", &b_member, MemberStatus::Unhealthy)
            .await,
        "b taken out of rotation by health checks"
    );
    for _ in 0..10 {
        assert_eq!(who(f, "x", "/c").await, "a");
    }
    let b2 = Upstream::start(b.addr, "b").await;
    assert!(
        lab.wait_status("checked", &b_member, MemberStatus::Healthy)
            .await,
        "b back after healthy_after checks"
    );
    let mut back = std::collections::HashSet::new();
    for _ in 0..10 {
        back.insert(who(f, "x", "/c").await);
    }
    assert_eq!(back.len(), 2, "both members serve again: {back:?}");

    // No healthy member: 503.
    a.stop();
    b2.stop();
    let a_member = format!("a:{}", a.addr.port());
    assert!(
        lab.wait_status("checked", &a_member, MemberStatus::Unhealthy)
            .await
    );
    assert!(
        lab.wait_status("checked", &b_member, MemberStatus::Unhealthy)
            .await
    );
    assert!(who(f, "x", "/c").await.starts_with("status 503"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_follow_the_rules_and_refuse_busy_addresses() {
    let app = Upstream::start(ip(7), "app").await;
    let rules = format!(
        r#"{{ "version": 1,
  "containers": {{ "app": {{ "docker": "127.0.0.7" }} }},
  "frontends": [ {{ "name": "edge", "listen": "@FRONT@", "routes": [], "default_pool": "p" }} ],
  "pools": {{ "p": {{ "members": ["app:{}"] }} }} }}"#,
        app.addr.port()
    );
    let mut lab = lab(&rules).await;
    let first = lab.front;
    assert_eq!(who(first, "x", "/").await, "app");

    // An address another socket holds: prepare fails, nothing changes.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap();
    let err = lab
        .listeners
        .prepare(&[first, busy_addr])
        .await
        .expect_err("busy address");
    assert_eq!(err.addr, busy_addr);
    assert!(err
        .to_string()
        .starts_with(&format!("cannot listen on {busy_addr}")));
    assert_eq!(who(first, "x", "/").await, "app");

    // New rules move the frontend: the new address serves, the old one closes.
    let moved = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let text = rules.replace("@FRONT@", &moved.to_string());
    let policy =
        Arc::new(Policy::compile(portcullis::rules::parse("rules.json", &text).unwrap()).unwrap());
    let dir = Directory::build(&policy, |name| name.parse().into_iter().collect());
    let lb = Arc::new(Balancer::compile(&policy));
    let bound = lab.listeners.prepare(&lb.listen_addrs()).await.unwrap();
    lab.state.store(Arc::new(Snapshot {
        policy,
        dir,
        version: 2,
        lb,
        tls: Default::default(),
    }));
    let ctx = Arc::new(ProxyCtx::new(
        lab.state.clone(),
        Arc::new(Metrics::default()),
    ));
    lab.listeners.commit(bound, &ctx);
    assert_eq!(who(moved, "x", "/").await, "app");
    let mut closed = false;
    for _ in 0..100 {
        if TcpStream::connect(first).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "the old frontend address stopped accepting");
}

/// Accepts, reads a request head, and closes without answering.
async fn start_closer(addr: SocketAddr) -> (SocketAddr, JoinHandle<()>) {
    let l = TcpListener::bind(addr).await.expect("bind closer");
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_safe_requests_are_sent_twice() {
    let good = Upstream::start(ip(8), "good").await;
    let (closer, closer_task) = start_closer(ip(9)).await;
    let rules = format!(
        r#"{{ "version": 1,
  "containers": {{ "good": {{ "docker": "127.0.0.8" }}, "closer": {{ "docker": "127.0.0.9" }} }},
  "frontends": [ {{ "name": "edge", "listen": "@FRONT@", "routes": [], "default_pool": "p" }} ],
  "pools": {{ "p": {{ "members": ["closer:{}", "good:{}"], "retries": 1 }} }} }}"#,
        closer.port(),
        good.addr.port()
    );
    let lab = lab(&rules).await;
    // Round robin alternates: two POSTs meet the member that closes. Their
    // body was sent, so they are not sent again: 502. The others succeed.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (s, _) = get(
            lab.front,
            "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        )
        .await;
        statuses.push(s);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 502, 502]);
    // A GET without body may be sent again: every one succeeds.
    for _ in 0..4 {
        assert_eq!(who(lab.front, "x", "/").await, "good");
    }
    closer_task.abort();
}

/// Reads one response with a content-length body from a kept-alive
/// connection; its status.
async fn read_one(s: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return head
                    .split(' ')
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut chunk))
            .await
            .expect("response in time")
            .expect("read");
        assert!(n > 0, "closed before a full response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_client_limits_answer_429() {
    let two = Upstream::start(ip(2), "app2").await;
    let rules = format!(
        r#"{{ "version": 1,
  "containers": {{ "app2": {{ "docker": "127.0.0.2" }} }},
  "frontends": [ {{ "name": "edge", "listen": "@FRONT@", "default_pool": "two",
    "limits": {{ "max_connections_per_source": 2, "requests_per_second": 1, "burst": 3 }} }} ],
  "pools": {{ "two": {{ "members": ["app2:{}"] }} }} }}"#,
        two.addr.port()
    );
    let lab = lab(&rules).await;
    let f = lab.front;
    // Two connections, each admitted (it was served), then a third: 429.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(f).await.unwrap();
        s.write_all(b"GET /held HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_one(&mut s).await, 200);
        held.push(s);
    }
    let (status, body) = get_host(f, "a", "/third").await;
    assert_eq!(status, 429, "{body}");
    drop(held);
    // The burst of 3 was spent on 2 held requests and at most one more:
    // before long the client is refused for its rate, never served more
    // than the bucket allows.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        loop {
            let (status, body) = get_host(f, "a", "/rate").await;
            if status == 429 && body.contains("connections") {
                // A held connection not yet noticed as closed.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            statuses.push(status);
            break;
        }
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 429),
        "{statuses:?}"
    );
}

/// Accepts, keeps every byte received in `seen`, and answers `200` to
/// each request head.
async fn start_recorder(
    addr: SocketAddr,
) -> (SocketAddr, Arc<std::sync::Mutex<Vec<u8>>>, JoinHandle<()>) {
    let l = TcpListener::bind(addr).await.expect("bind recorder");
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let all = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            let all = all.clone();
            tokio::spawn(async move {
                let mut chunk = [0u8; 4096];
                loop {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            all.lock().unwrap().extend_from_slice(&chunk[..n]);
                            if chunk[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                                let _ = s
                                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                                    .await;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, seen, task)
}

/// A request body is received and checked before a member is picked: a
/// malformed or trickled body never reaches one (issue 9, class 8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_checked_before_a_member_is_picked() {
    let (rec, seen, rec_task) = start_recorder(ip(10)).await;
    let rules = format!(
        r#"{{ "version": 1,
  "containers": {{ "rec": {{ "docker": "127.0.0.10" }} }},
  "frontends": [ {{ "name": "edge", "listen": "@FRONT@", "routes": [], "default_pool": "p",
                   "limits": {{ "body_timeout_ms": 800, "request_buffer_bytes": 1024 }} }} ],
  "pools": {{ "p": {{ "members": ["rec:{}"] }} }} }}"#,
        rec.port()
    );
    let lab = lab(&rules).await;
    let posts = |seen: &std::sync::Mutex<Vec<u8>>| {
        String::from_utf8_lossy(&seen.lock().unwrap())
            .matches("POST ")
            .count()
    };

    let (status, _) = get(
        lab.front,
        "POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400);

    let mut s = TcpStream::connect(lab.front).await.unwrap();
    s.write_all(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("an answer at the body deadline")
        .expect("read");
    assert!(
        out.starts_with(b"HTTP/1.1 408 "),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(posts(&seen), 0, "no member saw the refused requests");

    // A good body does reach the member.
    let (status, _) = get(
        lab.front,
        "POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(posts(&seen), 1);
    rec_task.abort();
}

/// What `portcullis explain --frontend edge --json` says about a request:
/// the pool it routes to, or the status. `PORTCULLIS_BIN` picks another
/// binary (to see this test fail against one whose explain disagrees).
fn explained(rules: &std::path::Path, host: &str, target: &str) -> String {
    let bin = std::env::var("PORTCULLIS_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_portcullis").to_owned());
    let out = std::process::Command::new(bin)
        .arg("explain")
        .arg(rules)
        .args([
            "--frontend",
            "edge",
            "--host",
            host,
            "--path",
            target,
            "--json",
        ])
        .output()
        .expect("run portcullis explain");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "explain {host} {target}: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    match v["status"].as_u64() {
        Some(status) => status.to_string(),
        None => v["pool"].as_str().unwrap_or("no pool").to_owned(),
    }
}

/// The proxy and `explain --frontend` decide with one function: on hostile
/// hosts and targets the real frontend's answer (the member's pool, or the
/// status) is what explain prints, and what the test expects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_frontend_does_what_explain_says() {
    let two = Upstream::start(ip(2), "app2").await;
    let three = Upstream::start(ip(3), "app3").await;
    let rules = format!(
        r#"{{ "version": 1,
  "containers": {{ "app2": {{ "docker": "127.0.0.2" }}, "app3": {{ "docker": "127.0.0.3" }} }},
  "frontends": [ {{ "name": "edge", "listen": "@FRONT@", "routes": [
    {{ "host": "two.example", "pool": "two" }},
    {{ "path_prefix": "/three", "pool": "three" }} ] }} ],
  "pools": {{ "two": {{ "members": ["app2:{}"] }}, "three": {{ "members": ["app3:{}"] }} }} }}"#,
        two.addr.port(),
        three.addr.port()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("rules.json");
    std::fs::write(&file, rules.replace("@FRONT@", "127.0.0.1:1")).expect("write rules");
    let lab = lab(&rules).await;
    let cases = [
        ("two.example", "/x", "two"),
        ("TWO.Example:8080", "/x", "two"),
        ("two.example.", "/three", "two"),
        ("two.example", "http://two.example/three", "two"),
        ("two.example", "HTTP://TWO.EXAMPLE/three", "two"),
        ("three.example", "http://two.example/x", "400"),
        ("other.test", "/three/x?a=%2f..", "three"),
        ("other.test", "/x/../three/y", "three"),
        ("other.test", "/thre%65/y", "three"),
        ("other.test", "/three/..", "404"),
        ("other.test", "/three/%2e%2e/x", "404"),
        ("other.test", "/threex", "404"),
        ("other.test", "/three%2fx", "400"),
        ("other.test", "/../three", "400"),
        ("other.test", "/three/..;/x", "400"),
        ("other.test", "three", "400"),
    ];
    for (host, target, want) in cases {
        let (status, body) = get_host(lab.front, host, target).await;
        let proxy = match (status, body.lines().next()) {
            (200, Some("app2")) => "two".to_owned(),
            (200, Some("app3")) => "three".to_owned(),
            _ => status.to_string(),
        };
        let said = explained(&file, host, target);
        assert_eq!(
            (proxy.as_str(), said.as_str()),
            (want, want),
            "Host {host}, target {target}: (proxy, explain)"
        );
    }
}

/// One request from the client address `from` (a managed container's, or
/// not): (status, body).
async fn get_from(from: [u8; 4], front: SocketAddr, raw_head: &str) -> (u16, String) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("bind client address");
    let s = socket.connect(front).await.expect("connect frontend");
    exchange_on(s, raw_head).await
}

/// The host is no way around the rules: a managed container that is a
/// frontend's client reaches only the members it may reach directly, by
/// the same matchers; other clients are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_containers_are_held_to_their_rules_on_frontends() {
    let two = Upstream::start(ip(2), "app2").await;
    let three = Upstream::start(ip(3), "app3").await;
    let rules = format!(
        r#"{{ "version": 1,
  "containers": {{ "app2": {{ "docker": "127.0.0.2" }}, "app3": {{ "docker": "127.0.0.3" }},
                  "app5": {{ "docker": "127.0.0.5" }}, "app6": {{ "docker": "127.0.0.6" }} }},
  "access": [
    {{ "from": "app6", "to": "app2", "ports": [{p2}], "http": [ {{ "methods": ["GET"], "path_prefix": "/ok" }} ] }},
    {{ "from": "app5", "to": "app3", "ports": [{p3}] }}
  ],
  "frontends": [ {{ "name": "edge", "listen": "@FRONT@", "routes": [ {{ "path_prefix": "/", "pool": "both" }} ] }} ],
  "pools": {{ "both": {{ "members": ["app2:{p2}", "app3:{p3}"] }} }} }}"#,
        p2 = two.addr.port(),
        p3 = three.addr.port()
    );
    let lab = lab(&rules).await;
    let req = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let who = |r: &(u16, String)| (r.0, r.1.lines().next().unwrap_or("").to_owned());

    // An outside client (127.0.0.9 is no container) reaches both members.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let r = get_from([127, 0, 0, 9], lab.front, &req("/any")).await;
        assert_eq!(r.0, 200, "{r:?}");
        seen.insert(who(&r).1);
    }
    assert_eq!(
        seen.len(),
        2,
        "both members serve outside clients: {seen:?}"
    );

    // app5 may reach app3 (L4 entry) but not app2: always app3.
    for _ in 0..6 {
        let r = get_from([127, 0, 0, 5], lab.front, &req("/any")).await;
        assert_eq!(who(&r), (200, "app3".to_owned()), "{r:?}");
    }
    // app6 may reach app2 only with GET /ok…: app2 for that, 403 otherwise.
    for _ in 0..4 {
        let r = get_from([127, 0, 0, 6], lab.front, &req("/ok/x")).await;
        assert_eq!(who(&r), (200, "app2".to_owned()), "{r:?}");
    }
    let (status, body) = get_from([127, 0, 0, 6], lab.front, &req("/admin")).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.starts_with("portcullis: denied by rules.json:") && body.contains("(access[0])"),
        "the denial names the rule, as on a direct request: {body}"
    );
}
