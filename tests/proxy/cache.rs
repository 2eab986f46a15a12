//! The response cache through the real proxy (issue 9, classes 5, 6 and
//! 11), each case asserting what the upstream received or how often it was
//! asked, not only the status the client saw:
//!
//! - memory: `max_bytes` bounds the daemon's memory however long the paths
//!   and `Vary` values are (the RSS test), and a URL keeps at most 16
//!   variants;
//! - coalescing: a client that does not read its response does not hold
//!   the others waiting for the same fetch, and a waiting client that left
//!   stops waiting (its connection slot is free at once);
//! - invalidation: only a 2xx/3xx to an unsafe method invalidates, a HEAD
//!   never replaces a stored body, and a request with as many fields as a
//!   client may send does not skip invalidation.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::lab::{exchange, read_answer, Answer, Lab, Response};

const RULES: &str = r#"{
  "version": 1,
  "containers": {
    "client": { "address": "@CLIENT@" },
    "client2": { "address": "@CLIENT2@" },
    "up": { "address": "@UP@" }
  },
  "access": [
    { "from": ["client", "client2"], "to": "up", "ports": [80, 83], "http": [ { "path_prefix": "/" } ] }
  ],
  "cache": {
    "up:80": { "max_bytes": 67108864, "default_ttl_s": 600 },
    "up:83": { "max_bytes": 1048576 }
  },
  "limits": { "max_connections_per_source": 3, "idle_timeout_ms": 30000 }
}"#;

/// The scripted upstream (port 83) records every request head it gets.
type Seen = Arc<Mutex<Vec<String>>>;

fn get(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: up\r\n{extra}Connection: close\r\n\r\n").into_bytes()
}

fn one(lab: &Lab, port: u16, bytes: &[u8]) -> Response {
    let answer = exchange(lab, port, bytes, 1);
    assert_eq!(answer.responses.len(), 1, "one answer expected: {answer:?}");
    answer
        .responses
        .into_iter()
        .next()
        .unwrap_or_else(|| unreachable!())
}

fn x_cache(r: &Response) -> &str {
    r.header("x-cache").unwrap_or("none")
}

/// Runs one case in its own lab, with the scripted upstream on port 83.
pub fn run(case: fn(&Lab, &Seen)) {
    let lab = Lab::start(RULES);
    let seen = scripted_upstream(&lab);
    case(&lab, &seen);
}

// === class 11: invalidation and revalidation ===

fn gets_of(seen: &Seen, path: &str) -> usize {
    let line = format!("GET {path} HTTP/1.1\r\n");
    seen.lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|h| h.starts_with(&line))
        .count()
}

fn post(path: &str, status: u16) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: up\r\nx-status: {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// RFC 9111 §4.4: an unsafe request invalidates only when the upstream
/// accepted it. A client allowed to POST cannot flush the cache with
/// requests the service refuses.
pub fn invalidation_needs_a_non_error_answer(lab: &Lab, seen: &Seen) {
    let first = one(lab, 83, &get("/inv", ""));
    assert_eq!((first.status, x_cache(&first)), (200, "MISS"));
    assert_eq!(x_cache(&one(lab, 83, &get("/inv", ""))), "HIT");
    for status in [400, 403, 404, 409, 500, 503] {
        let r = one(lab, 83, &post("/inv", status));
        assert_eq!(r.status, status, "the POST's own answer");
        let again = one(lab, 83, &get("/inv", ""));
        assert_eq!(
            (x_cache(&again), again.text()),
            ("HIT", first.text()),
            "a {status} to a POST must not invalidate"
        );
    }
    assert_eq!(gets_of(seen, "/inv"), 1, "the upstream saw one GET");
    for status in [204, 303] {
        one(lab, 83, &post("/inv", status));
        let after = one(lab, 83, &get("/inv", ""));
        assert_eq!(x_cache(&after), "MISS", "a {status} to a POST invalidates");
    }
    assert_eq!(gets_of(seen, "/inv"), 3);
}

/// A client may send up to 100 header fields; the proxy adds its own to
/// what it forwards. The cache once parsed that head with room for 100
/// fields only, so such a POST skipped invalidation.
pub fn many_fields_do_not_skip_invalidation(lab: &Lab, seen: &Seen) {
    assert_eq!(x_cache(&one(lab, 83, &get("/many", ""))), "MISS");
    assert_eq!(x_cache(&one(lab, 83, &get("/many", ""))), "HIT");
    let mut many = String::from("POST /many HTTP/1.1\r\nHost: up\r\nContent-Length: 0\r\n");
    for i in 0..98 {
        many.push_str(&format!("x-h{i}: {i}\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(one(lab, 83, many.as_bytes()).status, 204);
    let posted = seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .last()
        .cloned()
        .unwrap_or_default();
    assert!(
        posted.starts_with("POST /many ") && posted.contains("x-h97: 97"),
        "the upstream got the POST with every field: {posted}"
    );
    let after = one(lab, 83, &get("/many", ""));
    assert_eq!(x_cache(&after), "MISS", "the POST invalidated /many");
    assert_eq!(gets_of(seen, "/many"), 2);
}

/// A stale entry revalidated by a HEAD: a 304, or a 200 that describes
/// the stored response, refreshes it; a 200 that does not leaves it as it
/// was. None of them evicts the entry or replaces the stored body with the
/// HEAD's empty one.
pub fn head_never_replaces_a_stored_body(lab: &Lab, seen: &Seen) {
    let first = one(lab, 83, &get("/h", ""));
    assert_eq!((first.status, first.text().as_str()), (200, "hello"));
    let head = |extra: &str| {
        let bytes = format!("HEAD /h HTTP/1.1\r\nHost: up\r\n{extra}Connection: close\r\n\r\n");
        let mut s = lab.connect(83);
        s.write_all(bytes.as_bytes()).expect("write HEAD");
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        String::from_utf8_lossy(&raw).into_owned()
    };
    let last_request = || {
        seen.lock()
            .unwrap_or_else(|p| p.into_inner())
            .last()
            .cloned()
            .unwrap_or_default()
    };
    // The stored GET body is intact when the next GET revalidates with the
    // stored validator and is served "hello" on the 304.
    let body_intact = |after: &str| {
        let r = one(lab, 83, &get("/h", ""));
        assert_eq!(
            (r.status, r.text().as_str(), x_cache(&r)),
            (200, "hello", "HIT"),
            "the stored body survived {after}"
        );
        let last = last_request();
        assert!(
            last.starts_with("GET /h ") && last.contains("if-none-match: \"v1\""),
            "after {after} the upstream got a conditional GET for the stored response: {last}"
        );
    };
    let not_modified = head("");
    assert!(not_modified.starts_with("HTTP/1.1 200"), "{not_modified}");
    assert!(last_request().starts_with("HEAD /h "));
    body_intact("a HEAD answered 304");
    let same = head("x-ignore-conditional: 1\r\n");
    assert!(same.starts_with("HTTP/1.1 200"), "{same}");
    body_intact("a HEAD answered 200 with the same ETag");
    let changed = head("x-etag: \"v2\"\r\n");
    assert!(
        changed.starts_with("HTTP/1.1 200") && changed.contains("\"v2\""),
        "{changed}"
    );
    body_intact("a HEAD answered 200 with another ETag");
    let heads = seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|h| h.starts_with("HEAD /h "))
        .count();
    assert_eq!(heads, 3, "each HEAD revalidated upstream");
}

/// HTTP/2 streams to a cached service are forwarded over HTTP/2, outside
/// the cache phase; an accepted unsafe one still invalidates the URL, a
/// refused one does not.
pub fn http2_unsafe_requests_invalidate_too(lab: &Lab, seen: &Seen) {
    assert_eq!(x_cache(&one(lab, 83, &get("/h2inv", ""))), "MISS");
    assert_eq!(x_cache(&one(lab, 83, &get("/h2inv", ""))), "HIT");
    let h2_post = |status: u16| {
        let url = format!("http://{}:83/h2inv", lab.upstream_ip());
        let out = lab.run_in_client(&[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--http2-prior-knowledge",
            "-X",
            "POST",
            "--data",
            "",
            "-H",
            "Host: up",
            "-H",
            &format!("x-status: {status}"),
            &url,
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(h2_post(403), "403");
    assert_eq!(
        x_cache(&one(lab, 83, &get("/h2inv", ""))),
        "HIT",
        "a refused POST"
    );
    assert_eq!(h2_post(204), "204");
    let posted = seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|h| h.starts_with("POST /h2inv HTTP/2"))
        .count();
    assert_eq!(posted, 2, "both POSTs reached the upstream over HTTP/2");
    assert_eq!(
        x_cache(&one(lab, 83, &get("/h2inv", ""))),
        "MISS",
        "an accepted POST over HTTP/2 invalidated the URL"
    );
    assert_eq!(gets_of(seen, "/h2inv"), 2);
}

// === class 5: bounded variants ===

/// 20 values of a field the response varies on: 16 are kept, the other 4
/// go upstream every time.
pub fn variants_per_url_are_bounded(lab: &Lab, _: &Seen) {
    let path = "/var?vary=Accept-Encoding&cc=max-age%3D600&size=10";
    let req = |i: usize| get(path, &format!("Accept-Encoding: enc{i}\r\n"));
    let before = lab.upstream_count();
    for i in 0..20 {
        assert_eq!(x_cache(&one(lab, 80, &req(i))), "MISS");
    }
    assert_eq!(lab.upstream_count(), before + 20);
    let hits = (0..20)
        .filter(|&i| x_cache(&one(lab, 80, &req(i))) == "HIT")
        .count();
    assert_eq!(hits, 16, "a URL keeps 16 variants");
    assert_eq!(
        lab.upstream_count(),
        before + 24,
        "the other 4 went upstream"
    );
}

// === class 6: coalescing cannot be held hostage ===

/// The first client asks for a 7 MB response and reads none of it; a
/// second client asking for the same URL is answered from the cache as
/// soon as the upstream has sent it, and the upstream is asked once.
pub fn a_slow_reader_holds_no_one_hostage(lab: &Lab, _: &Seen) {
    const SIZE: usize = 7_000_000;
    let path = format!("/big?cc=max-age%3D600&size={SIZE}");
    let before = lab.upstream_count();
    let mut leader = lab.connect(80);
    leader.write_all(&get(&path, "")).expect("leader request");
    std::thread::sleep(Duration::from_millis(300));
    let mut waiter = lab.connect(80);
    waiter.write_all(&get(&path, "")).expect("waiter request");
    // The leader has read nothing yet: whatever the waiter gets, it did
    // not wait for the leader's client.
    let answer = read_answer(&mut waiter, 1, Duration::from_secs(15));
    let r = answer
        .responses
        .first()
        .unwrap_or_else(|| panic!("the waiter got no answer while the leader did not read"));
    assert_eq!((r.status, r.body.len(), x_cache(r)), (200, SIZE, "HIT"));
    // The leader still gets all of it, at its own pace.
    let led: Answer = read_answer(&mut leader, 1, Duration::from_secs(10));
    let r = led.responses.first().expect("the leader's answer");
    assert_eq!((r.status, r.body.len(), x_cache(r)), (200, SIZE, "MISS"));
    assert_eq!(lab.upstream_count(), before + 1, "one fetch upstream");
}

/// Clients waiting for a slow fetch that close their connection stop
/// waiting: their connection slots (max_connections_per_source: 3) are
/// free at once, not when the fetch ends.
pub fn a_waiter_whose_client_left_stops_waiting(lab: &Lab, _: &Seen) {
    let path = "/gone?cc=max-age%3D600&delay_ms=5000";
    let before = lab.upstream_count();
    let src = lab.client2_ip();
    let mut leader = lab.connect_from(src, 80);
    leader.write_all(&get(path, "")).expect("leader request");
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..2 {
        let mut w = lab.connect_from(src, 80);
        w.write_all(&get(path, "")).expect("waiter request");
        std::thread::sleep(Duration::from_millis(100));
        drop(w);
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut other = lab.connect_from(src, 80);
    other
        .write_all(&get("/other", ""))
        .expect("another request");
    let answer = read_answer(&mut other, 1, Duration::from_secs(5));
    assert_eq!(
        answer.statuses(),
        [200],
        "the waiters that left no longer hold connection slots"
    );
    let led = read_answer(&mut leader, 1, Duration::from_secs(10));
    assert_eq!(led.statuses(), [200]);
    assert_eq!(
        lab.upstream_count(),
        before + 2,
        "the leader's fetch and /other; the waiters that left never went upstream"
    );
}

// === the scripted upstream (port 83) ===

/// HTTP/1 on port 83, and HTTP/2 (prior knowledge) on the same port, as
/// the proxy forwards HTTP/2 streams over HTTP/2.
fn scripted_upstream(lab: &Lab) -> Seen {
    let listener = lab.listen_upstream(83);
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
        else {
            return;
        };
        for conn in listener.incoming() {
            let Ok(conn) = conn else { break };
            let record = record.clone();
            let mut first = [0u8; 3];
            if conn.peek(&mut first).is_ok_and(|n| n == 3) && &first == b"PRI" {
                rt.spawn(serve_h2(conn, record));
            } else {
                std::thread::spawn(move || serve(conn, &record));
            }
        }
    });
    seen
}

/// HTTP/2: records each request as a head text (`METHOD target HTTP/2`
/// and its fields) and answers the status in `x-status` (default 204).
async fn serve_h2(conn: TcpStream, seen: Seen) {
    let Ok(tcp) = conn
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpStream::from_std(conn))
    else {
        return;
    };
    let Ok(mut h2) = h2::server::handshake(tcp).await else {
        return;
    };
    while let Some(Ok((req, mut respond))) = h2.accept().await {
        let (parts, mut body) = req.into_parts();
        while let Some(Ok(chunk)) = body.data().await {
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        let mut head = format!(
            "{} {} HTTP/2\r\n",
            parts.method,
            parts.uri.path_and_query().map_or("/", |p| p.as_str())
        );
        for (n, v) in &parts.headers {
            head.push_str(&format!(
                "{n}: {}\r\n",
                String::from_utf8_lossy(v.as_bytes())
            ));
        }
        let status: u16 = field(&head, "x-status")
            .and_then(|v| v.parse().ok())
            .unwrap_or(204);
        seen.lock().unwrap_or_else(|p| p.into_inner()).push(head);
        let Ok(res) = http::Response::builder().status(status).body(()) else {
            return;
        };
        let _ = respond.send_response(res, true);
    }
}

fn field<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// One connection: reads each request (head and `Content-Length` body),
/// records its head and answers as [`answer`] says.
fn serve(mut conn: TcpStream, seen: &Seen) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let len: usize = field(&head, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < end + len {
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..end + len);
        let n = {
            let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
            s.push(head.clone());
            s.len()
        };
        if conn.write_all(&answer(&head, n)).is_err() {
            return;
        }
    }
}

/// - unsafe methods: the status in `x-status` (default 204), no body;
/// - `GET /h`: "hello", stale at once, `ETag: "v1"`, 304 on a match;
/// - `HEAD /h`: the ETag in `x-etag` (default `"v1"`), 304 on a match
///   unless `x-ignore-conditional` is sent (some servers ignore them);
/// - any other GET: fresh for 600 s, the body names the request number.
fn answer(head: &str, n: usize) -> Vec<u8> {
    let mut words = head.split_whitespace();
    let method = words.next().unwrap_or_default();
    let target = words.next().unwrap_or_default();
    let simple = |status: &str, fields: &str, body: &str| {
        format!(
            "HTTP/1.1 {status}\r\n{fields}content-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    match (method, target) {
        ("GET", "/h") => {
            let fields = "cache-control: max-age=0\r\netag: \"v1\"\r\n";
            if field(head, "if-none-match").is_some_and(|v| v.contains("\"v1\"")) {
                format!("HTTP/1.1 304 Not Modified\r\n{fields}\r\n").into_bytes()
            } else {
                simple("200 OK", fields, "hello")
            }
        }
        ("HEAD", "/h") => {
            let etag = field(head, "x-etag").unwrap_or("\"v1\"");
            let honours = field(head, "x-ignore-conditional").is_none();
            if honours && field(head, "if-none-match").is_some_and(|v| v.contains(etag)) {
                return format!(
                    "HTTP/1.1 304 Not Modified\r\ncache-control: max-age=0\r\netag: {etag}\r\n\r\n"
                )
                .into_bytes();
            }
            format!(
                "HTTP/1.1 200 OK\r\ncache-control: max-age=0\r\netag: {etag}\r\ncontent-length: 5\r\n\r\n"
            )
            .into_bytes()
        }
        ("GET", _) => simple(
            "200 OK",
            "cache-control: max-age=600\r\n",
            &format!("{target} #{n}"),
        ),
        _ => {
            let status = field(head, "x-status").unwrap_or("204");
            format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n").into_bytes()
        }
    }
}

// === class 5: the daemon's memory ===

/// A cached service with `max_bytes` of 4 MiB, and heads up to 64 KiB.
const MEMORY_RULES: &str = r#"{
  "version": 1,
  "containers": {
    "client": { "address": "@CLIENT@" },
    "up": { "address": "@UP@" }
  },
  "access": [
    { "from": "client", "to": "up", "ports": [80], "http": [ { "path_prefix": "/" } ] }
  ],
  "cache": { "up:80": { "max_bytes": 4194304, "default_ttl_s": 600 } },
  "limits": { "max_header_bytes": 65536, "idle_timeout_ms": 30000 }
}"#;

const MAX_BYTES: u64 = 4 << 20;
/// What the daemon may grow by besides `max_bytes` once it has served the
/// same kind of requests without storing them (the warm-up sets up the
/// connections, the worker threads' allocator arenas and the buffers for
/// heads of this size): what the allocator keeps of freed memory as
/// stored entries with 30 KB keys come and go between other allocations,
/// and the stores' own tables, which hold fixed-size ids. It does not grow
/// with the number of requests: the fixed cache grows by about 4 MiB for
/// 1 000 requests, where the old one, not counting keys and keeping them
/// in its tables after removal, grew by about 30 KB a request.
const OVERHEAD: u64 = 8 << 20;
const CLIENTS: usize = 4;
const ROUNDS: usize = 125;
/// Long random paths and long random `Accept-Encoding` values (the
/// response varies on it): every request is a new key.
const LONG: usize = 30_000;

/// Many requests with new long keys do not grow the daemon past
/// `max_bytes` plus a fixed overhead (its RSS, /proc/PID/status VmRSS).
pub fn memory_is_bounded_by_max_bytes() {
    let lab = Lab::start(MEMORY_RULES);
    // Warm up with the same requests, not stored (`no-store`).
    std::thread::scope(|s| {
        for c in 0..CLIENTS {
            let lab = &lab;
            s.spawn(move || drive(lab, 25, c as u64, "no-store"));
        }
    });
    assert_eq!(lab.metric("cache_stores_total"), 0);
    let baseline = lab.daemon_rss_kib() * 1024;
    let started = Instant::now();
    let mut peak = baseline;
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let lab = &lab;
                s.spawn(move || drive(lab, ROUNDS, 1000 + c as u64, "max-age%3D600"))
            })
            .collect();
        while !workers.iter().all(|w| w.is_finished()) {
            peak = peak.max(lab.daemon_rss_kib() * 1024);
            std::thread::sleep(Duration::from_millis(100));
        }
        for w in workers {
            w.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        }
    });
    let after = lab.daemon_rss_kib() * 1024;
    peak = peak.max(after);
    let requests = CLIENTS * ROUNDS * 2;
    let grown = peak.saturating_sub(baseline);
    eprintln!(
        "cache memory: {requests} requests in {:?}; RSS {} KiB -> peak {} KiB (grown {} KiB, bound {} KiB); stores: {}",
        started.elapsed(),
        baseline / 1024,
        peak / 1024,
        grown / 1024,
        (MAX_BYTES + OVERHEAD) / 1024,
        lab.metric("cache_stores_total"),
    );
    assert!(
        lab.metric("cache_stores_total") as usize >= requests / 2,
        "the requests were stored (else the test proves nothing)"
    );
    assert!(
        grown <= MAX_BYTES + OVERHEAD,
        "the daemon grew by {} KiB, more than max_bytes ({} KiB) plus {} KiB",
        grown / 1024,
        MAX_BYTES / 1024,
        OVERHEAD / 1024
    );
}

/// One keep-alive connection sending `rounds` pairs of requests: a long
/// random path, and a long random `Accept-Encoding` on one varying URL.
fn drive(lab: &Lab, rounds: usize, seed: u64, cc: &str) {
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut random = |n: usize| -> String {
        (0..n)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[(rng % 36) as usize])
            })
            .collect()
    };
    let mut s = lab.connect(80);
    let mut buf = Vec::new();
    for _ in 0..rounds {
        let path = format!(
            "GET /m/{}?size=1&cc={cc} HTTP/1.1\r\nHost: up\r\n\r\n",
            random(LONG)
        );
        let vary = format!(
            "GET /v?size=1&cc={cc}&vary=Accept-Encoding HTTP/1.1\r\nHost: up\r\nAccept-Encoding: {}\r\n\r\n",
            random(LONG)
        );
        for req in [path, vary] {
            s.write_all(req.as_bytes()).expect("write a request");
            read_small(&mut s, &mut buf);
        }
    }
}

/// Reads one response with a `Content-Length` body.
fn read_small(s: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            assert!(
                head.starts_with("HTTP/1.1 200"),
                "unexpected answer: {head}"
            );
            let len: usize = field(&head, "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no content-length: {head}"));
            if buf.len() >= end + len {
                buf.drain(..end + len);
                return;
            }
        }
        match s.read(&mut chunk) {
            Ok(0) => panic!("the proxy closed the connection"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("reading an answer: {e}"),
        }
    }
}
