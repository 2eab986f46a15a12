//! The hostile-client corpus: raw bytes in, the status the proxy answers,
//! whether it then closes, and — from the test service's own request
//! counter — how many requests reached the upstream (for a refusal: none).
//! A second table does the same for hostile upstream responses.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::lab::{exchange, read_answer, Lab};

pub const RULES: &str = r#"{
  "version": 1,
  "containers": {
    "client": { "address": "@CLIENT@" },
    "client2": { "address": "@CLIENT2@" },
    "up": { "address": "@UP@" }
  },
  "access": [
    { "from": ["client", "client2"], "to": "up", "ports": [80],
      "http": [
        { "methods": ["GET", "HEAD"], "path_prefix": "/foo" },
        { "methods": ["POST", "PUT"], "path_prefix": "/upload" }
      ] },
    { "from": "client", "to": "up", "ports": [81], "http": [ { "path_prefix": "/" } ] }
  ],
  "limits": { "max_header_bytes": 4096, "max_body_bytes": 1024, "header_timeout_ms": 3000 }
}"#;

/// One hostile request.
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    /// Statuses answered, in order (interim 1xx not listed).
    expect: &'static [u16],
    /// Requests the upstream served because of it.
    reached: u64,
    /// Half-close the connection after writing (a client that gives up).
    half_close: bool,
}

fn case(name: &'static str, bytes: impl AsRef<[u8]>, expect: &'static [u16], reached: u64) -> Case {
    Case {
        name,
        bytes: bytes.as_ref().to_vec(),
        expect,
        reached,
        half_close: false,
    }
}

fn half_closed(name: &'static str, bytes: impl AsRef<[u8]>, expect: &'static [u16]) -> Case {
    Case {
        half_close: true,
        ..case(name, bytes, expect, 0)
    }
}

const OK: &[u16] = &[200];
const BAD: &[u16] = &[400];

fn cases() -> Vec<Case> {
    let big_header = format!(
        "GET /foo HTTP/1.1\r\nHost: up\r\nX-Big: {}\r\n\r\n",
        "a".repeat(5000)
    );
    let many_headers = format!(
        "GET /foo HTTP/1.1\r\nHost: up\r\n{}\r\n",
        (0..101)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect::<String>()
    );
    let long_target = format!("GET /foo/{} HTTP/1.1\r\nHost: up\r\n\r\n", "x".repeat(5000));
    let big_chunked = format!(
        "POST /upload HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n{}\r\n400\r\n{}\r\n0\r\n\r\n",
        "a".repeat(1024),
        "b".repeat(1024)
    );
    let smuggled = "GET /admin HTTP/1.1\r\nHost: up\r\n\r\n";
    let body_smuggle = format!(
        "POST /upload HTTP/1.1\r\nHost: up\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{smuggled}",
        smuggled.len()
    );
    vec![
        // Baselines: well-formed requests are served.
        case("plain GET", "GET /foo HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n", OK, 1),
        case("leading empty line is ignored", "\r\nGET /foo HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n", OK, 1),
        case("HTTP/1.0 without Host", "GET /foo HTTP/1.0\r\n\r\n", OK, 1),
        case("encoded unreserved bytes are normalised", "GET /%66oo/x HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n", OK, 1),
        case("absolute form agreeing with Host", "GET http://up/foo HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n", OK, 1),
        case("body that looks like a request stays a body", body_smuggle, OK, 1),
        // Body framing.
        case("CL and TE", "POST /upload HTTP/1.1\r\nHost: up\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", BAD, 0),
        case("TE and CL", "POST /upload HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", BAD, 0),
        case("repeated CL, same value", "POST /upload HTTP/1.1\r\nHost: up\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", BAD, 0),
        case("repeated CL, different values", "POST /upload HTTP/1.1\r\nHost: up\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", BAD, 0),
        case("CL list", "POST /upload HTTP/1.1\r\nHost: up\r\nContent-Length: 33, 33\r\n\r\n", BAD, 0),
        case("CL with sign", "POST /upload HTTP/1.1\r\nHost: up\r\nContent-Length: +5\r\n\r\nhello", BAD, 0),
        case("negative CL", "POST /upload HTTP/1.1\r\nHost: up\r\nContent-Length: -1\r\n\r\n", BAD, 0),
        case("hex CL", "POST /upload HTTP/1.1\r\nHost: up\r\nContent-Length: 0x5\r\n\r\nhello", BAD, 0),
        case("CL with inner space", "POST /upload HTTP/1.1\r\nHost: up\r\nContent-Length: 5 5\r\n\r\nhello", BAD, 0),
        case("empty CL", "POST /upload HTTP/1.1\r\nHost: up\r\nContent-Length:\r\n\r\n", BAD, 0),
        case("CL overflowing u64", "POST /upload HTTP/1.1\r\nHost: up\r\nContent-Length: 184467440737095516160\r\n\r\n", BAD, 0),
        case("TE whose last coding is not chunked", "POST /upload HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", BAD, 0),
        case("TE lookalike", "POST /upload HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", BAD, 0),
        case("TE repeated", "POST /upload HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", BAD, 0),
        case("TE chunked twice", "POST /upload HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", BAD, 0),
        case("TE with another coding first", "POST /upload HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", &[501], 0),
        case("TE with a vertical tab", "POST /upload HTTP/1.1\r\nHost: up\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n", BAD, 0),
        case("TE with space before the colon", "POST /upload HTTP/1.1\r\nHost: up\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", BAD, 0),
        case("CL with space before the colon", "POST /upload HTTP/1.1\r\nHost: up\r\nContent-Length : 5\r\n\r\nhello", BAD, 0),
        case("TE spelled with an underscore", "POST /upload HTTP/1.1\r\nHost: up\r\nContent-Length: 5\r\nTransfer_Encoding: chunked\r\n\r\n0\r\n\r\n", BAD, 0),
        case("CL spelled with an underscore", "POST /upload HTTP/1.1\r\nHost: up\r\nContent_Length: 5\r\n\r\nhello", BAD, 0),
        case("TE in HTTP/1.0", "POST /upload HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", BAD, 0),
        case("obsolete line folding", "GET /foo HTTP/1.1\r\nHost: up\r\nX-A: a\r\n b\r\n\r\n", BAD, 0),
        case("TE value folded", "POST /upload HTTP/1.1\r\nHost: up\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", BAD, 0),
        case("folding before the first header", "GET /foo HTTP/1.1\r\n Host: up\r\n\r\n", BAD, 0),
        // Line ends.
        case("bare LF after the request line", "GET /foo HTTP/1.1\nHost: up\r\n\r\n", BAD, 0),
        case("bare LF everywhere", "GET /foo HTTP/1.1\nHost: up\n\n", BAD, 0),
        case("bare CR inside a header", "GET /foo HTTP/1.1\r\nHost: up\rX: y\r\n\r\n", BAD, 0),
        case("CR CR LF", "GET /foo HTTP/1.1\r\nHost: up\r\r\n\r\n", BAD, 0),
        case("LF CR LF", "GET /foo HTTP/1.1\r\nHost: up\n\r\n", BAD, 0),
        // Host.
        case("two Hosts", "GET /foo HTTP/1.1\r\nHost: up\r\nHost: evil\r\n\r\n", BAD, 0),
        case("no Host in HTTP/1.1", "GET /foo HTTP/1.1\r\n\r\n", BAD, 0),
        case("Host list", "GET /foo HTTP/1.1\r\nHost: up, evil\r\n\r\n", BAD, 0),
        case("Host with a space", "GET /foo HTTP/1.1\r\nHost: up evil\r\n\r\n", BAD, 0),
        case("Host with userinfo", "GET /foo HTTP/1.1\r\nHost: evil@up\r\n\r\n", BAD, 0),
        case("Host with a path", "GET /foo HTTP/1.1\r\nHost: up/admin\r\n\r\n", BAD, 0),
        case("absolute form disagreeing with Host", "GET http://evil/foo HTTP/1.1\r\nHost: up\r\n\r\n", BAD, 0),
        case("absolute form with userinfo", "GET http://u@up/foo HTTP/1.1\r\nHost: up\r\n\r\n", BAD, 0),
        case("absolute form https", "GET https://up/foo HTTP/1.1\r\nHost: up\r\n\r\n", BAD, 0),
        case("absolute form with query and no path", "GET http://up?x=1 HTTP/1.1\r\nHost: up\r\n\r\n", BAD, 0),
        // Request line.
        case("HTTP/0.9", "GET /foo\r\n\r\n", BAD, 0),
        case("HTTP/1.2", "GET /foo HTTP/1.2\r\nHost: up\r\n\r\n", BAD, 0),
        case("HTTP/2.0 request line", "GET /foo HTTP/2.0\r\nHost: up\r\n\r\n", BAD, 0),
        case("two spaces", "GET  /foo HTTP/1.1\r\nHost: up\r\n\r\n", BAD, 0),
        case("extra word", "GET /foo HTTP/1.1 x\r\nHost: up\r\n\r\n", BAD, 0),
        case("lowercase version", "GET /foo http/1.1\r\nHost: up\r\n\r\n", BAD, 0),
        case("method with a delimiter", "G(T /foo HTTP/1.1\r\nHost: up\r\n\r\n", BAD, 0),
        case("space inside the target", "GET /fo o HTTP/1.1\r\nHost: up\r\n\r\n", BAD, 0),
        case("DEL in the target", "GET /foo\x7f HTTP/1.1\r\nHost: up\r\n\r\n", BAD, 0),
        case("non-ASCII byte in the target", b"GET /foo\xff HTTP/1.1\r\nHost: up\r\n\r\n".as_slice(), BAD, 0),
        case("NUL in the target", b"GET /foo\x00 HTTP/1.1\r\nHost: up\r\n\r\n".as_slice(), BAD, 0),
        case("fragment in the target", "GET /foo#/../admin HTTP/1.1\r\nHost: up\r\n\r\n", BAD, 0),
        case("asterisk form", "OPTIONS * HTTP/1.1\r\nHost: up\r\n\r\n", BAD, 0),
        case("relative target", "GET foo HTTP/1.1\r\nHost: up\r\n\r\n", BAD, 0),
        // Header bytes.
        case("NUL in a header value", b"GET /foo HTTP/1.1\r\nHost: up\r\nX: a\x00b\r\n\r\n".as_slice(), BAD, 0),
        case("control byte in a header value", "GET /foo HTTP/1.1\r\nHost: up\r\nX: a\x01b\r\n\r\n", BAD, 0),
        case("space in a header name", "GET /foo HTTP/1.1\r\nHost: up\r\nX Y: z\r\n\r\n", BAD, 0),
        case("empty header name", "GET /foo HTTP/1.1\r\nHost: up\r\n: z\r\n\r\n", BAD, 0),
        case("delimiter in a header name", "GET /foo HTTP/1.1\r\nHost: up\r\nX(: z\r\n\r\n", BAD, 0),
        case("non-ASCII header name", b"GET /foo HTTP/1.1\r\nHost: up\r\nX\xe9: z\r\n\r\n".as_slice(), BAD, 0),
        // Paths that cannot be normalised safely, and ones that can.
        case("encoded slash", "GET /foo%2f..%2fadmin HTTP/1.1\r\nHost: up\r\n\r\n", BAD, 0),
        case("encoded backslash", "GET /foo/..%5cadmin HTTP/1.1\r\nHost: up\r\n\r\n", BAD, 0),
        case("raw backslash", "GET /foo\\..\\admin HTTP/1.1\r\nHost: up\r\n\r\n", BAD, 0),
        case("encoded NUL", "GET /foo/%00 HTTP/1.1\r\nHost: up\r\n\r\n", BAD, 0),
        case("dot-dot above the root", "GET /../foo HTTP/1.1\r\nHost: up\r\n\r\n", BAD, 0),
        case("encoded dot-dot above the root", "GET /foo/%2e%2e/%2E%2E/foo HTTP/1.1\r\nHost: up\r\n\r\n", BAD, 0),
        case("malformed escape", "GET /foo/%zz HTTP/1.1\r\nHost: up\r\n\r\n", BAD, 0),
        case("dot-dot out of the allowed prefix", "GET /foo/../admin HTTP/1.1\r\nHost: up\r\n\r\n", &[403], 0),
        case("encoded dot-dot out of the allowed prefix", "GET /foo/%2e%2e/admin HTTP/1.1\r\nHost: up\r\n\r\n", &[403], 0),
        case("prefix is segment-aware", "GET /foobar HTTP/1.1\r\nHost: up\r\n\r\n", &[403], 0),
        // Sizes.
        case("header section over max_header_bytes", big_header, &[431], 0),
        case("request line over max_header_bytes", long_target, &[431], 0),
        case("more than 100 header fields", many_headers, &[431], 0),
        case("Content-Length over max_body_bytes", "POST /upload HTTP/1.1\r\nHost: up\r\nContent-Length: 2000\r\n\r\n", &[413], 0),
        case("chunked body over max_body_bytes", big_chunked, &[413], 0),
        // Chunked bodies.
        case("chunk size overflow", "POST /upload HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n", BAD, 0),
        case("chunk size 0x prefix", "POST /upload HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", BAD, 0),
        case("negative chunk size", "POST /upload HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", BAD, 0),
        case("space after the chunk size", "POST /upload HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n", BAD, 0),
        case("chunk longer than its size", "POST /upload HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n", BAD, 0),
        case("bare LF after a chunk size", "POST /upload HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", BAD, 0),
        half_closed("missing final chunk", "POST /upload HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", BAD),
        half_closed("body shorter than Content-Length", "POST /upload HTTP/1.1\r\nHost: up\r\nContent-Length: 10\r\n\r\nhello", BAD),
        // Tunnels: no matcher names CONNECT; an h2c upgrade is not honoured.
        case("CONNECT", "CONNECT up:80 HTTP/1.1\r\nHost: up:80\r\n\r\n", &[403], 0),
        case("WebSocket upgrade on a denied path", "GET /admin HTTP/1.1\r\nHost: up\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", &[403], 0),
        case("h2c upgrade is served as HTTP/1.1", "GET /foo HTTP/1.1\r\nHost: up\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: close\r\n\r\n", OK, 1),
        // Pipelines are answered in order; a bad request ends the connection.
        case("two pipelined requests", "GET /foo HTTP/1.1\r\nHost: up\r\n\r\nGET /foo/2 HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n", &[200, 200], 2),
        case("allowed then denied", "GET /foo HTTP/1.1\r\nHost: up\r\n\r\nGET /admin HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n", &[200, 403], 1),
        case("allowed then garbage", "GET /foo HTTP/1.1\r\nHost: up\r\n\r\nGARBAGE\r\n\r\n", &[200, 400], 1),
        case("allowed then smuggling attempt", "GET /foo HTTP/1.1\r\nHost: up\r\n\r\nPOST /upload HTTP/1.1\r\nHost: up\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", &[200, 400], 1),
        case("Expect: 100-continue on an allowed request", "POST /upload HTTP/1.1\r\nHost: up\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello", OK, 1),
        case("Expect: 100-continue on a denied request", "POST /admin HTTP/1.1\r\nHost: up\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", &[403], 0),
    ]
}

/// Drives every case through the real proxy.
pub fn run_request_corpus(lab: &Lab) {
    let cases = cases();
    assert!(cases.len() >= 60, "the corpus shrank to {}", cases.len());
    let bad_before = lab.metric("requests_bad_total");
    let mut failures = Vec::new();
    let mut refusals_400 = 0;
    for c in &cases {
        let before = lab.upstream_count();
        let answer = if c.half_close {
            let mut s = lab.connect(80);
            let _ = s.write_all(&c.bytes);
            let _ = s.shutdown(Shutdown::Write);
            read_answer(&mut s, c.expect.len(), Duration::from_secs(5))
        } else {
            exchange(lab, 80, &c.bytes, c.expect.len())
        };
        let reached = lab.upstream_count() - before;
        let statuses = answer.statuses();
        let refused = c.expect.last().is_some_and(|&s| s != 200);
        // After a refusal the proxy must close (no desync possible), except
        // a 403 on a request without a body, which may keep the connection.
        let must_close = refused && c.expect.last() != Some(&403);
        let mut problems = Vec::new();
        if statuses != c.expect {
            problems.push(format!("statuses {statuses:?}, want {:?}", c.expect));
        }
        if reached != c.reached {
            problems.push(format!(
                "{reached} request(s) reached the upstream, want {}",
                c.reached
            ));
        }
        if must_close && !answer.closed {
            problems.push("the proxy kept the connection open after refusing".into());
        }
        if c.name.contains("100-continue") {
            let saw_continue =
                String::from_utf8_lossy(&answer.raw).contains("HTTP/1.1 100 Continue");
            if saw_continue != (c.expect == OK) {
                problems.push(format!("100 Continue sent: {saw_continue}"));
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {} (answer: {:?})",
                c.name,
                problems.join("; "),
                String::from_utf8_lossy(&answer.raw)
            ));
        }
        refusals_400 += c.expect.iter().filter(|&&s| s == 400 || s == 501).count() as u64;
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // Every malformed request was counted, and logged with its source.
    let bad_after = lab.metric("requests_bad_total");
    assert_eq!(bad_after - bad_before, refusals_400, "requests_bad_total");
    let log = lab.log();
    assert!(
        log.contains("malformed request refused") && log.contains(&lab.client_ip().to_string()),
        "refusals are logged with the source address:\n{log}"
    );
}

/// Hostile upstream responses, each from a raw server in the upstream
/// namespace: the proxy answers 502 rather than pass on an ambiguous one.
pub fn run_response_corpus(lab: &Lab) {
    let listener = lab.listen_upstream(81);
    let served = Arc::new(AtomicU64::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head);
                let path = text.split(' ').nth(1).unwrap_or("/").to_owned();
                let _ = conn.write_all(&raw_response(&path));
                let _ = conn.shutdown(Shutdown::Write);
                let _ = conn.read(&mut b);
            });
        }
    });
    let table: &[(&str, &[u16], bool)] = &[
        ("/good", &[200], false),
        ("/both", &[502], true),
        ("/cl-list", &[502], true),
        ("/cl-repeated", &[502], true),
        ("/bare-lf", &[502], true),
        ("/folded", &[502], true),
        ("/te-last-not-chunked", &[502], true),
        ("/unasked-101", &[502], true),
        ("/nul", &[502], true),
        ("/huge-head", &[502], true),
        ("/no-status", &[502], true),
        ("/204-with-body", &[204], false),
        // The head was relayed; the body is cut off rather than passed on.
        ("/bad-chunk", &[], true),
    ];
    let mut failures = Vec::new();
    for &(path, want, closes) in table {
        let req = format!("GET {path} HTTP/1.1\r\nHost: up\r\n\r\n");
        let a = exchange(lab, 81, req.as_bytes(), want.len());
        if a.statuses() != want || (closes && !a.closed) {
            failures.push(format!(
                "{path}: statuses {:?} closed {}, want {want:?} closed {closes}: {:?}",
                a.statuses(),
                a.closed,
                String::from_utf8_lossy(&a.raw)
            ));
        }
        if path == "/204-with-body" && a.responses.first().is_some_and(|r| !r.body.is_empty()) {
            failures.push("a 204 was relayed with a body".into());
        }
    }
    assert!(
        failures.is_empty(),
        "response corpus:\n{}",
        failures.join("\n")
    );
    assert!(served.load(Ordering::SeqCst) >= table.len() as u64);
}

fn raw_response(path: &str) -> Vec<u8> {
    let s = |t: &str| t.as_bytes().to_vec();
    match path {
        "/good" => s("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        "/both" => s("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
        "/cl-list" => s("HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok"),
        "/cl-repeated" => s("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"),
        "/bare-lf" => s("HTTP/1.1 200 OK\nContent-Length: 2\n\nok"),
        "/folded" => s("HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok"),
        "/te-last-not-chunked" => s("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nok"),
        "/unasked-101" => s("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
        "/nul" => s("HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 2\r\n\r\nok"),
        "/huge-head" => format!("HTTP/1.1 200 OK\r\nX-A: {}\r\nContent-Length: 2\r\n\r\nok", "a".repeat(70_000)).into_bytes(),
        "/no-status" => s("HTTP/1.1 OK\r\nContent-Length: 2\r\n\r\nok"),
        "/204-with-body" => s("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello"),
        "/bad-chunk" => s("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n"),
        _ => s("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
    }
}
