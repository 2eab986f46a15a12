//! The cache phase end to end in one process: the real forward phase
//! against a real `testsvc` upstream on loopback, one client socket per
//! request. (The container test, tests/containers/cache.sh, asserts the
//! same scenario through nftables and Docker.)

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use crate::policy::Policy;
use crate::proxy::body::Inbound;
use crate::proxy::downstream::Downstream;
use crate::proxy::exchange::{Exchange, Upstream};
use crate::proxy::pipeline::forward;
use crate::proxy::ProxyCtx;
use crate::state::directory::Directory;
use crate::state::metrics::Metrics;
use crate::state::snapshot::Snapshot;
use crate::wire::head::Framing;

struct Lab {
    ctx: Arc<ProxyCtx>,
    upstream: testsvc::server::Server,
    dst: SocketAddr,
}

fn lab(max_bytes: u64) -> Lab {
    let upstream = testsvc::server::Server::start(testsvc::server::Config {
        name: "app1".into(),
        http: vec![0],
        udp: vec![],
        bind: "127.0.0.1".parse().unwrap(),
        quiet: true,
    })
    .unwrap();
    let dst = upstream.http_addrs[0];
    let rules = format!(
        r#"{{ "version": 1,
  "containers": {{ "app1": {{ "docker": "app1" }}, "app2": {{ "address": "198.19.250.3" }} }},
  "access": [ {{ "from": "app2", "to": "app1", "ports": [{port}], "http": [ {{ "path_prefix": "/" }} ] }} ],
  "cache": {{ "app1:{port}": {{ "max_bytes": {max_bytes}, "default_ttl_s": 30 }} }} }}"#,
        port = dst.port()
    );
    let policy =
        Arc::new(Policy::compile(crate::rules::parse("cache-test.json", &rules).unwrap()).unwrap());
    // Loopback is not a valid container address in a rule file; as a
    // resolved Docker address it stands in for one.
    let dir = Directory::build(&policy, |_| vec![dst.ip()]);
    let state = Arc::new(ArcSwap::from_pointee(Snapshot {
        lb: Arc::new(crate::balance::Balancer::compile(&policy)),
        tls: Default::default(),
        policy,
        dir,
        version: 1,
    }));
    Lab {
        ctx: Arc::new(ProxyCtx::new(state, Arc::new(Metrics::default()))),
        upstream,
        dst,
    }
}

/// A response as the client saw it.
#[derive(Debug)]
struct Seen {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn x_cache(&self) -> &str {
        self.header("x-cache").unwrap_or("none")
    }
    /// The `counter` the upstream put into its echo when it made the body.
    fn echo_counter(&self) -> i64 {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap();
        v["counter"].as_i64().unwrap()
    }
}

impl Lab {
    /// Sends one request (as an entry path would after authorising it) and
    /// returns what the client received.
    async fn send(&self, method: &str, target: &str, headers: &[&str]) -> Seen {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        let mut head = format!("{method} {target} HTTP/1.1\r\nhost: app1\r\n");
        for h in headers {
            head.push_str(h);
            head.push_str("\r\n");
        }
        head.push_str("x-portcullis-source: app2\r\n\r\n");
        let ctx = self.ctx.clone();
        let flow = Upstream {
            peer,
            dst: self.dst,
        };
        let exchange = Exchange {
            limits: crate::proxy::exchange::LimitScope::NONE,
            framing: Framing::None,
            keep_alive: false,
            head_request: method == "HEAD",
            expect_continue: false,
            body_limit: None,
            connect_timeout: std::time::Duration::from_secs(5),
            response_timeout: std::time::Duration::from_secs(30),
            tunnel: None,
            request_buffer_bytes: 64 * 1024,
            body_deadline: tokio::time::Instant::now() + std::time::Duration::from_secs(30),
            send_timeout: std::time::Duration::from_secs(30),
            source_framing: Framing::None,
            upstream: crate::rules::model::UpstreamProtocol::Http1,
        };
        let task = tokio::spawn(async move {
            let mut inbound = Inbound::new(crate::proxy::client_io::ClientIo::new(server));
            let mut client = Downstream::H1 {
                send_timeout: exchange.send_timeout,
                inbound: &mut inbound,
                hsts: None,
            };
            forward(&ctx, &flow, &mut client, head.as_bytes(), exchange).await
        });
        let mut raw = Vec::new();
        client.read_to_end(&mut raw).await.unwrap();
        task.await.unwrap().unwrap();
        parse(&raw, method == "HEAD")
    }

    fn upstream_requests(&self) -> u64 {
        self.upstream.counter()
    }

    fn metric(&self, f: fn(&Metrics) -> &std::sync::atomic::AtomicU64) -> u64 {
        f(&self.ctx.metrics).load(Ordering::Relaxed)
    }
}

fn parse(raw: &[u8], head_request: bool) -> Seen {
    let mut storage = [httparse::EMPTY_HEADER; 64];
    let mut res = httparse::Response::new(&mut storage);
    let httparse::Status::Complete(n) = res.parse(raw).unwrap() else {
        panic!("incomplete response: {:?}", String::from_utf8_lossy(raw));
    };
    let headers: Vec<(String, String)> = res
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let status = res.code.unwrap();
    let rest = &raw[n..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if head_request || status == 304 {
        assert!(rest.is_empty(), "no body expected");
        Vec::new()
    } else if chunked {
        crate::cache::store::dechunk(rest).expect("canonical chunked body")
    } else {
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().unwrap())
            .expect("content-length");
        assert_eq!(rest.len(), len, "body length");
        rest.to_vec()
    };
    Seen {
        status,
        headers,
        body,
    }
}

#[tokio::test]
async fn repeated_cacheable_get_is_served_from_memory_with_age() {
    let lab = lab(1 << 20);
    let first = lab.send("GET", "/foo?cc=max-age%3D60", &[]).await;
    let second = lab.send("GET", "/foo?cc=max-age%3D60", &[]).await;
    assert_eq!((first.status, first.x_cache()), (200, "MISS"));
    assert_eq!((second.status, second.x_cache()), (200, "HIT"));
    assert!(first.header("age").is_none());
    assert!(second.header("age").unwrap().parse::<u64>().is_ok());
    assert_eq!(second.body, first.body);
    assert_eq!(lab.upstream_requests(), 1);
    // HEAD is answered from the GET entry, without a body.
    let head = lab.send("HEAD", "/foo?cc=max-age%3D60", &[]).await;
    assert_eq!(head.x_cache(), "HIT");
    assert_eq!(
        head.header("content-length"),
        Some(first.body.len().to_string().as_str())
    );
    // A different query is a different key.
    lab.send("GET", "/foo?cc=max-age%3D60&x=1", &[]).await;
    assert_eq!(lab.upstream_requests(), 2);
    assert_eq!(lab.metric(|m| &m.cache_hits_total), 2);
    assert_eq!(lab.metric(|m| &m.cache_stores_total), 2);
    assert!(lab.metric(|m| &m.cache_bytes) > 2 * first.body.len() as u64);
}

#[tokio::test]
async fn no_store_private_cookies_and_authorization_are_not_cached() {
    let lab = lab(1 << 20);
    let cases: [(&str, &[&str]); 5] = [
        ("/a?cc=no-store", &[]),
        ("/b?cc=private,max-age%3D60", &[]),
        ("/c?cc=max-age%3D60&set_cookie=1", &[]),
        ("/d?cc=max-age%3D60", &["Authorization: Bearer x"]),
        ("/e?cc=max-age%3D60", &["Cache-Control: no-store"]),
    ];
    for (target, headers) in cases {
        let before = lab.upstream_requests();
        let a = lab.send("GET", target, headers).await;
        let b = lab.send("GET", target, headers).await;
        assert_eq!((a.x_cache(), b.x_cache()), ("MISS", "MISS"), "{target}");
        assert_eq!(lab.upstream_requests() - before, 2, "{target}");
    }
    // Marked public, a cookie-setting response is stored.
    lab.send("GET", "/f?cc=public,max-age%3D60&set_cookie=1", &[])
        .await;
    let hit = lab
        .send("GET", "/f?cc=public,max-age%3D60&set_cookie=1", &[])
        .await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(lab.metric(|m| &m.cache_stores_total), 1);
}

#[tokio::test]
async fn a_varying_response_is_cached_per_variant() {
    let lab = lab(1 << 20);
    let t = "/v?cc=max-age%3D60&vary=Accept-Language";
    let en1 = lab.send("GET", t, &["Accept-Language: en"]).await;
    let de1 = lab.send("GET", t, &["Accept-Language: de"]).await;
    let en2 = lab.send("GET", t, &["Accept-Language: en"]).await;
    let de2 = lab.send("GET", t, &["Accept-Language: de"]).await;
    let none = lab.send("GET", t, &[]).await;
    assert_eq!(
        [
            en1.x_cache(),
            de1.x_cache(),
            en2.x_cache(),
            de2.x_cache(),
            none.x_cache()
        ],
        ["MISS", "MISS", "HIT", "HIT", "MISS"]
    );
    assert_eq!(en2.body, en1.body);
    assert_eq!(de2.body, de1.body);
    assert_ne!(en1.body, de1.body);
    assert_eq!(lab.upstream_requests(), 3);
}

#[tokio::test]
async fn concurrent_misses_make_one_upstream_request() {
    let lab = Arc::new(lab(1 << 20));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let lab = lab.clone();
        tasks.push(tokio::spawn(async move {
            lab.send("GET", "/slow?cc=max-age%3D60&delay_ms=300", &[])
                .await
        }));
    }
    let mut counters = Vec::new();
    for t in tasks {
        let seen = t.await.unwrap();
        assert_eq!(seen.status, 200);
        counters.push(seen.echo_counter());
    }
    assert!(counters.iter().all(|&c| c == 1), "{counters:?}");
    assert_eq!(lab.upstream_requests(), 1);
}

#[tokio::test]
async fn stale_entries_are_revalidated_and_served_on_304() {
    let lab = lab(1 << 20);
    let t = "/r?cc=max-age%3D0&etag=v1";
    let first = lab.send("GET", t, &[]).await;
    let second = lab.send("GET", t, &[]).await;
    assert_eq!((first.x_cache(), second.x_cache()), ("MISS", "HIT"));
    // The upstream was asked (conditionally) but the body is the stored one.
    assert_eq!(lab.upstream_requests(), 2);
    assert_eq!(second.echo_counter(), 1);
    assert_eq!(second.header("etag"), Some("\"v1\""));
    assert_eq!(lab.metric(|m| &m.cache_revalidations_total), 1);
    // A client's own matching conditional gets a 304 from the cache.
    let lab2 = self::lab(1 << 20);
    lab2.send("GET", "/c?cc=max-age%3D60&etag=v2", &[]).await;
    let nm = lab2
        .send(
            "GET",
            "/c?cc=max-age%3D60&etag=v2",
            &["If-None-Match: \"v2\""],
        )
        .await;
    assert_eq!((nm.status, nm.x_cache()), (304, "HIT"));
    assert_eq!(lab2.upstream_requests(), 1);
    // Request no-cache forces the revalidation of a fresh entry.
    let forced = lab2
        .send(
            "GET",
            "/c?cc=max-age%3D60&etag=v2",
            &["Cache-Control: no-cache"],
        )
        .await;
    assert_eq!((forced.status, forced.x_cache()), (200, "HIT"));
    assert_eq!(lab2.upstream_requests(), 2);
}

#[tokio::test]
async fn responses_over_the_entry_bound_stream_through_uncached() {
    // max_bytes 64 KiB: the per-entry bound is 8 KiB.
    let lab = lab(64 * 1024);
    for t in [
        "/big?cc=max-age%3D60&size=20000",
        "/big?cc=max-age%3D60&size=20000&chunked=1",
    ] {
        let before = lab.upstream_requests();
        let a = lab.send("GET", t, &[]).await;
        let b = lab.send("GET", t, &[]).await;
        assert_eq!((a.x_cache(), b.x_cache()), ("MISS", "MISS"), "{t}");
        assert_eq!((a.body.len(), b.body.len()), (20000, 20000), "{t}");
        assert_eq!(lab.upstream_requests() - before, 2, "{t}");
    }
    // A small chunked response is stored and served with a length.
    let t = "/small?cc=max-age%3D60&size=3000&chunked=1";
    let a = lab.send("GET", t, &[]).await;
    let b = lab.send("GET", t, &[]).await;
    assert_eq!((a.x_cache(), b.x_cache()), ("MISS", "HIT"));
    assert_eq!(b.body, a.body);
    assert_eq!(b.header("content-length"), Some("3000"));
    assert_eq!(lab.metric(|m| &m.cache_stores_total), 1);
}

#[tokio::test]
async fn unsafe_methods_invalidate_and_purge_empties() {
    let lab = lab(1 << 20);
    let t = "/bar?cc=max-age%3D60";
    lab.send("GET", t, &[]).await;
    assert_eq!(lab.send("GET", t, &[]).await.x_cache(), "HIT");
    let put = lab.send("PUT", t, &["Content-Length: 0"]).await;
    assert_eq!((put.status, put.header("x-cache")), (200, None));
    assert_eq!(lab.send("GET", t, &[]).await.x_cache(), "MISS");
    assert_eq!(lab.send("GET", t, &[]).await.x_cache(), "HIT");
    let snap = lab.ctx.state.load_full();
    let service = format!("app1:{}", lab.dst.port());
    let purged = lab
        .ctx
        .cache
        .purge(&snap, Some(&service), Some("/bar?cc=max-age%3D60"), None)
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert_eq!(lab.send("GET", t, &[]).await.x_cache(), "MISS");
    assert!(lab
        .ctx
        .cache
        .purge(&snap, Some("app9:80"), None, None)
        .await
        .is_err());
    assert_eq!(
        lab.ctx.cache.purge(&snap, None, None, None).await.unwrap(),
        1
    );
    assert_eq!(lab.send("GET", t, &[]).await.x_cache(), "MISS");
    // only-if-cached on a missing entry: 504 from the cache, upstream untouched.
    let before = lab.upstream_requests();
    let gone = lab
        .send("GET", "/never", &["Cache-Control: only-if-cached"])
        .await;
    assert_eq!(gone.status, 504);
    assert_eq!(lab.upstream_requests(), before);
}

/// Every JSON block of docs/wiki/caching.md goes through the rule loader:
/// a block after `<!-- refused: MESSAGE -->` must be refused with MESSAGE,
/// every other one must load and list its cached services.
#[test]
fn wiki_examples_load_as_documented() {
    let page = include_str!("../../docs/wiki/caching.md");
    let mut refused: Option<&str> = None;
    let mut block: Option<String> = None;
    let (mut loaded, mut rejected) = (0, 0);
    for line in page.lines() {
        if let Some(b) = block.as_mut() {
            if line.trim_start() == "```" {
                let text = block.take().unwrap_or_default();
                let result = crate::rules::parse("caching.md", &text);
                match refused.take() {
                    Some(msg) => {
                        let err = result
                            .expect_err("a refused example must be refused")
                            .to_string();
                        assert!(err.contains(msg), "expected {msg:?} in {err:?}");
                        rejected += 1;
                    }
                    None => {
                        let set =
                            result.unwrap_or_else(|e| panic!("example must load: {e}\n{text}"));
                        assert!(!set.rules.cache.is_empty());
                        // The listed service is cached at its address, nothing else is.
                        let policy = Arc::new(Policy::compile(set).unwrap());
                        let snap = Snapshot {
                            lb: Arc::new(crate::balance::Balancer::compile(&policy)),
                            tls: Default::default(),
                            dir: Directory::build(&policy, |_| Vec::new()),
                            policy,
                            version: 1,
                        };
                        let layer = crate::cache::CacheLayer::new(Arc::new(Metrics::default()));
                        let at = |a: &str| {
                            layer
                                .service_for(&snap, a.parse().unwrap())
                                .map(|s| s.name.clone())
                        };
                        assert_eq!(at("198.19.0.2:80").as_deref(), Some("app1:80"));
                        assert_eq!(at("198.19.0.2:8080"), None);
                        assert_eq!(at("198.19.0.3:80"), None);
                        loaded += 1;
                    }
                }
            } else {
                b.push_str(line);
                b.push('\n');
            }
        } else if line.trim_start() == "```json" {
            block = Some(String::new());
        } else if let Some(m) = line
            .trim()
            .strip_prefix("<!-- refused: ")
            .and_then(|m| m.strip_suffix(" -->"))
        {
            refused = Some(m);
        }
    }
    assert_eq!((loaded, rejected), (1, 2));
}

#[tokio::test]
async fn each_calling_container_gets_its_own_entry() {
    let lab = lab(1 << 20);
    let t = "/who?cc=max-age%3D60";
    let app3 = ["x-portcullis-source: app3"];
    let a2 = lab.send("GET", t, &[]).await;
    let a3 = lab.send("GET", t, &app3).await;
    let b2 = lab.send("GET", t, &[]).await;
    let b3 = lab.send("GET", t, &app3).await;
    assert_eq!(
        [a2.x_cache(), a3.x_cache(), b2.x_cache(), b3.x_cache()],
        ["MISS", "MISS", "HIT", "HIT"]
    );
    assert_eq!((b2.body == a2.body, b3.body == a3.body), (true, true));
    assert_ne!(a2.body, a3.body);
    assert_eq!(lab.upstream_requests(), 2);
}

#[test]
fn stores_survive_reloads_that_keep_their_settings() {
    let rules = |max: u64| {
        format!(
            r#"{{ "version": 1, "containers": {{ "app1": {{ "address": "198.19.0.2" }} }},
  "cache": {{ "app1:80": {{ "max_bytes": {max} }} }} }}"#
        )
    };
    let snap = |max: u64, version: u64, moved: bool| {
        let policy =
            Arc::new(Policy::compile(crate::rules::parse("r.json", &rules(max)).unwrap()).unwrap());
        let mut dir = Directory::build(&policy, |_| Vec::new());
        if moved {
            dir.addrs[0] = vec!["198.19.0.9".parse().unwrap()];
        }
        Snapshot {
            lb: Arc::new(crate::balance::Balancer::compile(&policy)),
            tls: Default::default(),
            policy,
            dir,
            version,
        }
    };
    let layer = crate::cache::CacheLayer::new(Arc::new(Metrics::default()));
    let dst = |a: &str| a.parse::<SocketAddr>().unwrap();
    let first = layer
        .service_for(&snap(1000, 1, false), dst("198.19.0.2:80"))
        .unwrap();
    // A reload with the same settings keeps the store.
    let same = layer
        .service_for(&snap(1000, 2, false), dst("198.19.0.2:80"))
        .unwrap();
    assert!(Arc::ptr_eq(&first, &same));
    // The container moved: found at its new address only, same store.
    let moved = snap(1000, 3, true);
    assert!(layer.service_for(&moved, dst("198.19.0.2:80")).is_none());
    let found = layer.service_for(&moved, dst("198.19.0.9:80")).unwrap();
    assert!(Arc::ptr_eq(&first, &found));
    // New settings: a new store.
    let changed = layer
        .service_for(&snap(2000, 4, false), dst("198.19.0.2:80"))
        .unwrap();
    assert!(!Arc::ptr_eq(&first, &changed));
    assert_eq!(changed.settings.max_bytes, 2000);
}

/// A client that stops reading a large cache hit is cut after
/// `send_timeout_ms` instead of pinning the entry and the task (issue 9,
/// class 8).
#[tokio::test]
async fn a_hit_to_a_client_that_stops_reading_times_out() {
    // max_bytes 256 MiB: entries up to 32 MiB; 24 MB outgrows any socket buffer.
    let lab = lab(256 << 20);
    let t = "/large?cc=max-age%3D60&size=24000000";
    assert_eq!(lab.send("GET", t, &[]).await.x_cache(), "MISS");
    assert_eq!(lab.metric(|m| &m.cache_stores_total), 1);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, peer) = listener.accept().await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut client,
        format!("GET {t} HTTP/1.1\r\nhost: app1\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let head = format!("GET {t} HTTP/1.1\r\nhost: app1\r\nx-portcullis-source: app2\r\n\r\n");
    let flow = Upstream { peer, dst: lab.dst };
    let send_timeout = std::time::Duration::from_millis(300);
    let exchange = Exchange {
        limits: crate::proxy::exchange::LimitScope::NONE,
        framing: Framing::None,
        keep_alive: true,
        head_request: false,
        expect_continue: false,
        body_limit: None,
        connect_timeout: std::time::Duration::from_secs(5),
        response_timeout: std::time::Duration::from_secs(30),
        tunnel: None,
        request_buffer_bytes: 64 * 1024,
        body_deadline: tokio::time::Instant::now() + std::time::Duration::from_secs(30),
        send_timeout,
        source_framing: Framing::None,
        upstream: crate::rules::model::UpstreamProtocol::Http1,
    };
    let mut inbound = Inbound::new(crate::proxy::client_io::ClientIo::new(server));
    let started = std::time::Instant::now();
    let mut client = Downstream::H1 {
        send_timeout,
        inbound: &mut inbound,
        hsts: None,
    };
    // The client reads nothing.
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        forward(&lab.ctx, &flow, &mut client, head.as_bytes(), exchange),
    )
    .await
    .expect("the hit gave up on the client, not the test");
    let e = r.expect_err("the write to the client failed");
    assert!(crate::proxy::send::is_send_timeout(&e), "{e}");
    assert!(started.elapsed() >= send_timeout);
    assert_eq!(lab.metric(|m| &m.cache_hits_total), 1);
    drop(client);
}
