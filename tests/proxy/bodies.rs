//! Slow or broken bodies never reach an upstream half-made (issue 9,
//! class 8), through the real proxy, asserting what the upstream actually
//! received: a recording upstream keeps every byte of every connection.
//!
//! - a chunked body malformed within `request_buffer_bytes` gets 400 and
//!   the upstream sees no connection at all (not even the head);
//! - a body trickled slower than `body_timeout_ms` gets 408 and no upstream
//!   connection is made meanwhile;
//! - `Expect: 100-continue` is answered by the proxy, and the upstream is
//!   contacted only once the body is in;
//! - a body larger than the buffer streams and arrives whole; a malformed
//!   tail is refused and the upstream connection closed;
//! - an entry's own `request_buffer_bytes` overrides the global one;
//! - a client that stops reading a large response is disconnected after
//!   `send_timeout_ms`, counted and logged;
//! - an HTTP/2 stream whose body stalls is answered 408 and its upstream
//!   stream reset.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;

use crate::lab::{exchange, h2_server, read_answer, Lab};

/// Recording HTTP/1 upstream.
const REC: u16 = 82;
/// The same upstream behind an entry with a larger buffer.
const REC_BIG_BUFFER: u16 = 85;
/// Recording HTTP/2 upstream.
const H2: u16 = 86;
/// Bytes the upstream sends for `/big`.
const BIG: usize = 64 << 20;

const RULES: &str = r#"{
  "version": 1,
  "containers": {
    "client": { "address": "@CLIENT@" },
    "up": { "address": "@UP@" }
  },
  "access": [
    { "from": "client", "to": "up", "ports": [82, 86], "http": [ { "path_prefix": "/" } ] },
    { "from": "client", "to": "up", "ports": [85], "http": [ { "path_prefix": "/" } ],
      "limits": { "request_buffer_bytes": 1048576 } }
  ],
  "limits": { "request_buffer_bytes": 1024, "body_timeout_ms": 1500, "send_timeout_ms": 1000,
              "idle_timeout_ms": 5000 }
}"#;

/// One upstream connection as recorded.
#[derive(Default)]
struct Conn {
    bytes: Vec<u8>,
    /// The proxy closed it (read returned 0 or failed).
    closed: bool,
    /// Writing the `/big` response failed (the proxy went away).
    write_failed: bool,
}

/// Everything the upstream received: per connection, and all bytes in
/// arrival order (the proxy pools connections, so "nothing received"
/// means no new connection *and* no new byte).
#[derive(Default)]
struct Recorded {
    conns: Mutex<Vec<Arc<Mutex<Conn>>>>,
    log: Mutex<Vec<u8>>,
}

/// A point in what the upstream received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    conns: usize,
    bytes: usize,
}

impl Recorded {
    fn mark(&self) -> Mark {
        Mark {
            conns: self.conns.lock().unwrap().len(),
            bytes: self.log.lock().unwrap().len(),
        }
    }
    /// The bytes received since `m`.
    fn since(&self, m: Mark) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()[m.bytes..]).into_owned()
    }
    fn assert_nothing_since(&self, m: Mark, what: &str) {
        let got = self.since(m);
        assert_eq!(
            self.mark(),
            m,
            "{what}: the upstream received nothing, yet got {:?}",
            got.chars().take(300).collect::<String>()
        );
    }
    /// The connection that received `needle`.
    fn conn_with(&self, needle: &str) -> Arc<Mutex<Conn>> {
        let conns = self.conns.lock().unwrap();
        conns
            .iter()
            .find(|c| String::from_utf8_lossy(&c.lock().unwrap().bytes).contains(needle))
            .unwrap_or_else(|| panic!("no upstream connection received {needle:?}"))
            .clone()
    }
}

/// A complete request at the start of `buf`: (length, path, body length).
fn complete_request(buf: &[u8]) -> Option<(usize, String, usize)> {
    let mut storage = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut storage);
    let head = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    let path = req.path.unwrap_or("/").to_owned();
    let field = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
    };
    if field("transfer-encoding").is_some() {
        let mut at = head;
        let mut body = 0;
        loop {
            let rest = buf.get(at..)?;
            let nl = rest.windows(2).position(|w| w == b"\r\n")?;
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..nl]).ok()?, 16).ok()?;
            at += nl + 2;
            if size == 0 {
                buf.get(at..at + 2)?;
                return Some((at + 2, path, body));
            }
            buf.get(at..at + size + 2)?;
            at += size + 2;
            body += size;
        }
    }
    let len: usize = field("content-length").map_or(Some(0), |v| v.parse().ok())?;
    buf.get(head..head + len)?;
    Some((head + len, path, len))
}

/// Serves HTTP/1 on `port` in the upstream namespace, keeping every byte:
/// `200` with `got N` (the body length) for each request, and `BIG`
/// bytes for `/big`.
fn recording_upstream(lab: &Lab, port: u16) -> Arc<Recorded> {
    let listener = lab.listen_upstream(port);
    let rec = Arc::new(Recorded::default());
    let r = rec.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let me = Arc::new(Mutex::new(Conn::default()));
            r.conns.lock().unwrap().push(me.clone());
            let r = r.clone();
            std::thread::spawn(move || {
                let mut pending = Vec::new();
                let mut b = [0u8; 16384];
                loop {
                    match conn.read(&mut b) {
                        Ok(0) | Err(_) => {
                            me.lock().unwrap().closed = true;
                            return;
                        }
                        Ok(n) => {
                            me.lock().unwrap().bytes.extend_from_slice(&b[..n]);
                            r.log.lock().unwrap().extend_from_slice(&b[..n]);
                            pending.extend_from_slice(&b[..n]);
                        }
                    }
                    while let Some((used, path, body)) = complete_request(&pending) {
                        pending.drain(..used);
                        if path == "/big" || path == "/flood" {
                            // `/flood`: a WebSocket tunnel that only sends.
                            let head = if path == "/flood" {
                                "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n".to_owned()
                            } else {
                                format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n")
                            };
                            let block = vec![b'z'; 1 << 16];
                            let mut ok = conn.write_all(head.as_bytes()).is_ok();
                            let mut sent = 0;
                            while ok && sent < BIG {
                                ok = conn.write_all(&block).is_ok();
                                sent += block.len();
                            }
                            if !ok {
                                me.lock().unwrap().write_failed = true;
                                return;
                            }
                        } else {
                            let text = format!("got {body}");
                            let res = format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
                                text.len()
                            );
                            if conn.write_all(res.as_bytes()).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    rec
}

fn chunked_head(path: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
}

fn wait_for(what: &str, patience: Duration, mut ok: impl FnMut() -> bool) {
    let until = Instant::now() + patience;
    while !ok() {
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn run() {
    let lab = Lab::start(RULES);
    let rec = recording_upstream(&lab, REC);
    let rec_big = recording_upstream(&lab, REC_BIG_BUFFER);

    malformed_within_the_buffer_never_reaches_the_upstream(&lab, &rec);
    trickled_bodies_get_408_without_an_upstream_connection(&lab, &rec);
    expect_continue_is_answered_then_the_body_buffered(&lab, &rec);
    large_bodies_stream_whole_and_a_bad_tail_closes_upstream(&lab, &rec);
    an_entry_overrides_the_buffer_size(&lab, &rec_big);
    a_client_that_stops_reading_is_disconnected(&lab, &rec);
    an_h2_stream_whose_body_stalls_gets_408(&lab);
}

fn malformed_within_the_buffer_never_reaches_the_upstream(lab: &Lab, rec: &Recorded) {
    let before = rec.mark();
    let bad_bodies: &[&str] = &[
        "zz\r\nhello\r\n0\r\n\r\n",
        "5\r\nhello\r\n5\r\nworldX\r\n0\r\n\r\n",
        "5\nhello\r\n0\r\n\r\n",
    ];
    for body in bad_bodies {
        let req = format!("{}{body}", chunked_head("/bad"));
        let a = exchange(lab, REC, req.as_bytes(), 1);
        assert_eq!(a.statuses(), [400], "{body:?}: {a:?}");
        assert!(a.closed, "{body:?}: connection closed after the refusal");
    }
    std::thread::sleep(Duration::from_millis(300));
    rec.assert_nothing_since(before, "malformed chunked bodies");
    // A valid body does reach it: the recorder works.
    let ok = format!("{}5\r\nhello\r\n0\r\n\r\n", chunked_head("/good"));
    let a = exchange(lab, REC, ok.as_bytes(), 1);
    assert_eq!(a.statuses(), [200], "{a:?}");
    assert_eq!(a.responses[0].text(), "got 5");
    assert!(rec.since(before).starts_with("POST /good "));
    assert!(lab.metric("requests_bad_total") >= bad_bodies.len() as u64);
}

fn trickled_bodies_get_408_without_an_upstream_connection(lab: &Lab, rec: &Recorded) {
    let before = rec.mark();
    let timeouts = lab.metric("requests_timeout_total");
    for (head, piece) in [
        (
            "POST /slow HTTP/1.1\r\nHost: up\r\nContent-Length: 40\r\n\r\n".to_owned(),
            "a",
        ),
        (chunked_head("/slow"), "1\r\na\r\n"),
    ] {
        let mut s = lab.connect(REC);
        s.write_all(head.as_bytes()).unwrap();
        let mut clone = s.try_clone().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let piece = piece.to_owned();
        // One piece every 250 ms: well inside the idle timeout (5 s) per
        // read, far past the 1.5 s body deadline in total (40 pieces).
        let trickler = std::thread::spawn(move || {
            for _ in 0..40 {
                if st.load(Ordering::Relaxed) || clone.write_all(piece.as_bytes()).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        let started = Instant::now();
        let a = read_answer(&mut s, 1, Duration::from_secs(8));
        let took = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        let _ = trickler.join();
        assert_eq!(a.statuses(), [408], "{head:?}: {a:?}");
        assert!(
            took < Duration::from_secs(4),
            "408 at the body deadline, not after the whole trickle ({took:?})"
        );
        rec.assert_nothing_since(before, "a trickled body");
    }
    assert!(lab.metric("requests_timeout_total") >= timeouts + 2);
    assert!(
        lab.log().contains("body_timeout_ms"),
        "the 408 is logged:\n{}",
        lab.log()
    );
}

fn expect_continue_is_answered_then_the_body_buffered(lab: &Lab, rec: &Recorded) {
    let before = rec.mark();
    let mut s = lab.connect(REC);
    s.write_all(
        b"POST /expect HTTP/1.1\r\nHost: up\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 256];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut b).expect("an interim response");
        assert!(n > 0, "closed before 100 Continue");
        got.extend_from_slice(&b[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 100 Continue\r\n"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    std::thread::sleep(Duration::from_millis(300));
    rec.assert_nothing_since(before, "before the body is in");
    s.write_all(b"hello").unwrap();
    let a = read_answer(&mut s, 1, Duration::from_secs(5));
    assert_eq!(a.statuses(), [200], "{a:?}");
    assert_eq!(a.responses[0].text(), "got 5");
    let seen = rec.since(before).to_ascii_lowercase();
    assert!(
        !seen.contains("expect:") && seen.ends_with("\r\n\r\nhello"),
        "the upstream got the body and no Expect: {seen:?}"
    );
}

fn large_bodies_stream_whole_and_a_bad_tail_closes_upstream(lab: &Lab, rec: &Recorded) {
    // Content-Length over the buffer.
    let len = 200_000;
    let mut req = format!(
        "POST /large HTTP/1.1\r\nHost: up\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    req.extend(std::iter::repeat_n(b'L', len));
    let before = rec.mark();
    let a = exchange(lab, REC, &req, 1);
    assert_eq!(a.statuses(), [200], "{a:?}");
    assert_eq!(a.responses[0].text(), format!("got {len}"));
    let seen = rec.since(before);
    let body = seen.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert_eq!(
        body.bytes().filter(|&b| b == b'L').count(),
        len,
        "the whole body arrived"
    );

    // Chunked over the buffer, in pieces.
    let mut body = String::new();
    for _ in 0..100 {
        body.push_str(&format!("3e8\r\n{}\r\n", "C".repeat(1000)));
    }
    body.push_str("0\r\n\r\n");
    let a = exchange(
        lab,
        REC,
        format!("{}{body}", chunked_head("/large")).as_bytes(),
        1,
    );
    assert_eq!(a.statuses(), [200], "{a:?}");
    assert_eq!(a.responses[0].text(), "got 100000");

    // A malformed tail past the buffer: refused, and the upstream
    // connection, which saw part of the body, closed (never pooled).
    // (The tail comes later: what is already read is checked at once.)
    let mut s = lab.connect(REC);
    let first = format!("{}7d0\r\n{}\r\n", chunked_head("/tail"), "T".repeat(2000));
    s.write_all(first.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let _ = s.write_all(b"zz\r\n");
    let a = read_answer(&mut s, 1, Duration::from_secs(5));
    assert_eq!(a.statuses(), [400], "{a:?}");
    let c = rec.conn_with("POST /tail ");
    wait_for(
        "the upstream connection closed",
        Duration::from_secs(5),
        || c.lock().unwrap().closed,
    );
    let seen = String::from_utf8_lossy(&c.lock().unwrap().bytes).into_owned();
    let seen = &seen[seen.find("POST /tail ").unwrap_or(0)..];
    assert!(
        !seen.contains("0\r\n\r\n"),
        "the upstream never got a complete body: {}",
        seen.chars().take(300).collect::<String>()
    );
    // The next request is served on another connection.
    let a = exchange(
        lab,
        REC,
        b"GET /next HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n",
        1,
    );
    assert_eq!(a.statuses(), [200]);
    assert!(!String::from_utf8_lossy(&c.lock().unwrap().bytes).contains("/next"));
}

fn an_entry_overrides_the_buffer_size(lab: &Lab, rec: &Recorded) {
    // 100 kB with a bad tail: within this entry's 1 MiB buffer, so the
    // upstream sees nothing (globally, with 1 KiB, it would stream).
    let mut body = String::new();
    for _ in 0..100 {
        body.push_str(&format!("3e8\r\n{}\r\n", "O".repeat(1000)));
    }
    body.push_str("zz\r\n");
    let before = rec.mark();
    let a = exchange(
        lab,
        REC_BIG_BUFFER,
        format!("{}{body}", chunked_head("/override")).as_bytes(),
        1,
    );
    assert_eq!(a.statuses(), [400], "{a:?}");
    std::thread::sleep(Duration::from_millis(200));
    rec.assert_nothing_since(before, "the entry's 1 MiB buffer held it all");
}

fn a_client_that_stops_reading_is_disconnected(lab: &Lab, rec: &Recorded) {
    // A large response, and a tunnel whose upstream only sends.
    for (request, needle) in [
        ("GET /big HTTP/1.1\r\nHost: up\r\n\r\n", "GET /big "),
        (
            "GET /flood HTTP/1.1\r\nHost: up\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET /flood ",
        ),
    ] {
        client_not_reading(lab, rec, request, needle);
    }
}

fn client_not_reading(lab: &Lab, rec: &Recorded, request: &str, needle: &str) {
    let before_timeouts = lab.metric("clients_send_timeout_total");
    let mut s = lab.connect(REC);
    s.write_all(request.as_bytes()).unwrap();
    // Read nothing for well past send_timeout_ms (1 s).
    std::thread::sleep(Duration::from_secs(4));
    let c = rec.conn_with(needle);
    wait_for(
        "the proxy dropped the upstream of a client not reading",
        Duration::from_secs(5),
        || {
            let c = c.lock().unwrap();
            c.write_failed || c.closed
        },
    );
    // What is left in the buffers drains, then the connection ends.
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut total = 0usize;
    let mut b = vec![0u8; 1 << 16];
    let ended = loop {
        match s.read(&mut b) {
            Ok(0) => break true,
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    assert!(ended, "{needle}: the proxy closed the connection");
    assert!(
        total < BIG,
        "{needle}: the client got only what was buffered ({total} bytes of {BIG})"
    );
    let _ = s.shutdown(Shutdown::Both);
    assert!(lab.metric("clients_send_timeout_total") > before_timeouts);
    assert!(
        lab.log().contains("stopped reading"),
        "logged:\n{}",
        lab.log()
    );
}

/// What the HTTP/2 upstream saw of its one request.
#[derive(Default)]
struct H2Seen {
    requests: AtomicU64,
    /// Body bytes received.
    bytes: AtomicU64,
    /// The request body ended with an error (the proxy reset the stream).
    reset: AtomicBool,
    /// The request body ended cleanly.
    ended: AtomicBool,
}

fn h2_recording_upstream(lab: &Lab, port: u16) -> Arc<H2Seen> {
    let seen = Arc::new(H2Seen::default());
    let s = seen.clone();
    h2_server(lab, port, false, move |req, respond| {
        record_h2(req, respond, s.clone())
    });
    seen
}

/// Counts the stream and its body bytes, notes a reset or a clean end,
/// and answers `200 ok` once the body has ended.
async fn record_h2(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    seen: Arc<H2Seen>,
) {
    seen.requests.fetch_add(1, Ordering::SeqCst);
    let mut body = req.into_body();
    loop {
        match body.data().await {
            Some(Ok(d)) => {
                seen.bytes.fetch_add(d.len() as u64, Ordering::SeqCst);
                let _ = body.flow_control().release_capacity(d.len());
            }
            Some(Err(_)) => {
                seen.reset.store(true, Ordering::SeqCst);
                return;
            }
            None => break,
        }
    }
    seen.ended.store(true, Ordering::SeqCst);
    let res = http::Response::builder().status(200).body(()).unwrap();
    if let Ok(mut s) = respond.send_response(res, false) {
        let _ = s.send_data(Bytes::from_static(b"ok"), true);
    }
}

/// Sends `sent` of `declared` body bytes on a fresh HTTP/2 connection and
/// then stalls; the status and how long it took.
fn h2_stalled_post(lab: &Lab, declared: usize, sent: usize) -> (u16, Duration) {
    let tcp = lab.connect(H2);
    tcp.set_nonblocking(true).expect("nonblocking");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::from_std(tcp).expect("tokio stream");
        let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
        tokio::spawn(conn);
        let mut client = client.ready().await.expect("ready");
        let req = Request::post("http://up/stall")
            .header("content-length", declared)
            .body(())
            .expect("request");
        let (response, mut body) = client.send_request(req, false).expect("send");
        body.send_data(Bytes::from(vec![b's'; sent]), false)
            .expect("first bytes");
        // …and nothing more: the body stalls.
        let started = Instant::now();
        let res = tokio::time::timeout(Duration::from_secs(10), response)
            .await
            .expect("an answer before the test's own patience ran out");
        let status = match res {
            Ok(r) => r.status().as_u16(),
            Err(e) => panic!("the stream was reset instead of answered: {e}"),
        };
        drop(body);
        (status, started.elapsed())
    })
}

fn an_h2_stream_whose_body_stalls_gets_408(lab: &Lab) {
    let seen = h2_recording_upstream(lab, H2);
    let timeouts = lab.metric("requests_timeout_total");

    // Within the buffer: the upstream never hears of the request.
    let (status, took) = h2_stalled_post(lab, 100, 10);
    assert_eq!(status, 408);
    assert!(
        took < Duration::from_secs(5),
        "at the body deadline: {took:?}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        seen.requests.load(Ordering::SeqCst),
        0,
        "a body stalled within the buffer never reaches the upstream"
    );

    // Past the buffer: the request streams, then its upstream stream is
    // reset at the deadline.
    let (status, took) = h2_stalled_post(lab, 5000, 2000);
    assert_eq!(status, 408);
    assert!(
        took < Duration::from_secs(5),
        "at the body deadline: {took:?}"
    );
    wait_for("the upstream stream reset", Duration::from_secs(5), || {
        seen.reset.load(Ordering::SeqCst)
    });
    assert_eq!(seen.requests.load(Ordering::SeqCst), 1);
    assert!(
        !seen.ended.load(Ordering::SeqCst),
        "the upstream never saw a complete request"
    );
    assert!(lab.metric("requests_timeout_total") >= timeouts + 2);
}
