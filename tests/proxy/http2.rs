//! HTTP/2 with prior knowledge through the real proxy, with real clients
//! (`curl --http2-prior-knowledge`, `h2load`) and a raw-frame attacker:
//! each stream is checked like an HTTP/1 request and forwarded to the
//! upstream over HTTP/2; concurrency per connection is bounded; rapid
//! resets and CONTINUATION floods end the attacker's connection, not the
//! proxy's service.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};

use crate::lab::{h2_server, Lab};

const PORT: u16 = 83;
const MAX_STREAMS: usize = 100;

const RULES: &str = r#"{
  "version": 1,
  "containers": {
    "client": { "address": "@CLIENT@" },
    "up": { "address": "@UP@" }
  },
  "access": [
    { "from": "client", "to": "up", "ports": [83, 84],
      "http": [ { "methods": ["GET"], "path_prefix": "/foo" },
                { "methods": ["POST"], "path_prefix": "/upload" } ] }
  ],
  "limits": { "max_body_bytes": 1000 }
}"#;

/// What the HTTP/2 upstream saw.
#[derive(Default)]
struct Seen {
    requests: AtomicU64,
    inflight: AtomicUsize,
    max_inflight: AtomicUsize,
}

/// An HTTP/2 (prior knowledge) echo upstream in the upstream namespace.
/// `/foo/slow` answers after two seconds. With `one_each`, every
/// connection serves one stream and then says GOAWAY.
fn h2_upstream(lab: &Lab, port: u16, one_each: bool) -> Arc<Seen> {
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    h2_server(lab, port, one_each, move |req, respond| {
        answer(req, respond, s.clone())
    });
    seen
}

async fn answer(
    req: Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    seen: Arc<Seen>,
) {
    seen.requests.fetch_add(1, Ordering::SeqCst);
    let now = seen.inflight.fetch_add(1, Ordering::SeqCst) + 1;
    seen.max_inflight.fetch_max(now, Ordering::SeqCst);
    let (parts, mut body) = req.into_parts();
    let mut body_bytes = 0;
    while let Some(Ok(chunk)) = body.data().await {
        body_bytes += chunk.len();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    if parts.uri.path() == "/foo/slow" {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let sources: Vec<&str> = parts
        .headers
        .get_all("x-portcullis-source")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let echo = serde_json::json!({
        "method": parts.method.as_str(),
        "target": parts.uri.path_and_query().map(|p| p.as_str()),
        "version": format!("{:?}", parts.version),
        "source": sources,
        "body_bytes": body_bytes,
    })
    .to_string();
    let res = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(())
        .expect("response");
    if let Ok(mut send) = respond.send_response(res, false) {
        let _ = send.send_data(Bytes::from(echo), true);
    }
    seen.inflight.fetch_sub(1, Ordering::SeqCst);
}

/// `curl --http2-prior-knowledge` from the client namespace: (status,
/// HTTP version, body).
fn curl(lab: &Lab, args: &[&str], path: &str) -> (u16, String, String) {
    let mut all = vec!["--http2-prior-knowledge", "--path-as-is"];
    all.extend_from_slice(args);
    let (status, version, _, body) = lab.curl(PORT, &all, path);
    (status, version, body)
}

pub fn run() {
    let lab = Lab::start(RULES);
    let seen = h2_upstream(&lab, PORT, false);
    let count = || seen.requests.load(Ordering::SeqCst);

    // Allowed: forwarded over HTTP/2 with the source stamped by the proxy.
    let (status, version, body) = curl(&lab, &["-H", "X-Portcullis-Source: evil"], "/foo/x?y=1");
    assert_eq!((status, version.as_str()), (200, "2"), "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).expect("echo JSON");
    assert_eq!(echo["version"], "HTTP/2.0");
    assert_eq!(echo["target"], "/foo/x?y=1");
    assert_eq!(echo["source"], serde_json::json!(["client"]));
    assert_eq!(count(), 1);

    // The path the rules see is the normalised one, and it is what is sent.
    let (status, _, body) = curl(&lab, &[], "/foo/./bar/../%62az");
    assert_eq!(status, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).expect("echo JSON");
    assert_eq!(echo["target"], "/foo/baz");

    // Refused per stream, exactly like HTTP/1, and nothing reaches upstream.
    let before = count();
    for (path, args, want) in [
        ("/admin", &[][..], 403),
        ("/foo/../admin", &[][..], 403),
        ("/foo%2fbar", &[][..], 400),
        ("/../foo", &[][..], 400),
        ("/foo", &["-X", "DELETE"][..], 403),
    ] {
        let (status, version, body) = curl(&lab, args, path);
        assert_eq!((status, version.as_str()), (want, "2"), "{path}: {body}");
    }
    // A declared body over max_body_bytes is refused before anything is
    // sent upstream. (Sent with h2 directly: curl 7.88 reports an early
    // response followed by RST_STREAM(NO_ERROR) as an error.)
    assert_eq!(h2_post(&lab, "/upload", 5000), 413);
    assert_eq!(count(), before, "refused streams never reach the upstream");
    let (status, _, body) = curl(&lab, &["--data-binary", "hello"], "/upload/x");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"body_bytes\":5"), "{body}");

    // Many clients, many streams each: every request is served over h2.
    let out = lab.run_in_client(&[
        "h2load",
        "-n",
        "400",
        "-c",
        "4",
        "-m",
        "20",
        &format!("http://{}/foo/load", lab.upstream(PORT)),
    ]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && report.contains("400 succeeded") && report.contains("400 2xx"),
        "h2load through the proxy:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("Application protocol: h2c"), "{report}");

    // An upstream connection that ends (GOAWAY) is replaced: two requests
    // on one client connection to an upstream serving one per connection.
    let one_each = h2_upstream(&lab, 84, true);
    let out = lab.run_in_client(&[
        "h2load",
        "-n",
        "3",
        "-c",
        "1",
        "-m",
        "1",
        &format!("http://{}/foo/again", lab.upstream(84)),
    ]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("3 succeeded") && report.contains("3 2xx"),
        "three requests on one client connection, each on a fresh upstream connection:\n{report}"
    );
    assert_eq!(one_each.requests.load(Ordering::SeqCst), 3);

    rapid_reset(&lab, &seen);
    continuation_flood(&lab);

    // After both attacks the proxy still serves a normal client.
    let (status, _, body) = curl(&lab, &[], "/foo/after");
    assert_eq!(status, 200, "{body}");
    assert!(lab.metric("h2_streams_total") >= 400);
}

/// One POST of `len` bytes (declared in content-length) over a fresh
/// HTTP/2 connection; the response status.
fn h2_post(lab: &Lab, path: &str, len: usize) -> u16 {
    let tcp = lab.connect(PORT);
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
        let req = Request::post(format!("http://up{path}"))
            .header("content-length", len)
            .body(())
            .expect("request");
        let (response, mut body) = client.send_request(req, false).expect("send");
        // The body may be cut short by the refusal; that is fine.
        let _ = body.send_data(Bytes::from(vec![b'b'; len]), true);
        let res = tokio::time::timeout(Duration::from_secs(10), response)
            .await
            .expect("a response in time")
            .expect("a response");
        res.status().as_u16()
    })
}

/// Opens streams to a slow path and resets each at once, far more than the
/// concurrency limit. The work reaching the upstream stays bounded by the
/// per-connection stream limit.
fn rapid_reset(lab: &Lab, seen: &Seen) {
    let tcp = lab.connect(PORT);
    tcp.set_nonblocking(true).expect("nonblocking");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let outcome = rt.block_on(async {
        let tcp = tokio::net::TcpStream::from_std(tcp).expect("tokio stream");
        let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
        let driver = tokio::spawn(conn);
        let mut client = Some(client);
        let mut sent = 0;
        for _ in 0..3000 {
            let Some(c) = client.take() else { break };
            let Ok(mut c) = c.ready().await else { break };
            let req = Request::get("http://up/foo/slow")
                .body(())
                .expect("request");
            match c.send_request(req, false) {
                Ok((_, mut stream)) => {
                    stream.send_reset(h2::Reason::CANCEL);
                    sent += 1;
                }
                Err(_) => break,
            }
            client = Some(c);
            if sent % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
        drop(client);
        let ended = tokio::time::timeout(Duration::from_secs(10), driver).await;
        (sent, ended)
    });
    let (sent, _) = outcome;
    let max = seen.max_inflight.load(Ordering::SeqCst);
    assert!(
        max <= MAX_STREAMS,
        "at most {MAX_STREAMS} streams of one connection are worked on at once, saw {max} (sent {sent})"
    );
    // Resets piling up faster than streams are taken on end the
    // attacker's connection (GOAWAY ENHANCE_YOUR_CALM) long before 3000.
    assert!(sent < 3000, "the proxy let {sent} rapid resets through");
    // The proxy logs right after it ends the connection; give it a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !lab
        .log()
        .contains("HTTP/2 connection ended by protocol error")
    {
        assert!(std::time::Instant::now() < deadline, "the attack is logged");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Cancelled streams do not linger upstream either.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(seen.inflight.load(Ordering::SeqCst), 0);
}

/// A HEADERS frame followed by endless tiny CONTINUATION frames: the
/// proxy ends the connection with GOAWAY instead of buffering.
fn continuation_flood(lab: &Lab) {
    let mut s = lab.connect(PORT);
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let mut f = Vec::with_capacity(9 + payload.len());
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        f.push(kind);
        f.push(flags);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    };
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[])); // SETTINGS
                                       // HEADERS without END_HEADERS: :method GET (static index 2), then a
                                       // literal header whose value never ends.
    out.extend(frame(
        0x1,
        0x1,
        1,
        &[0x82, 0x00, 0x01, b'x', 0x7f, 0xff, 0xff, 0x03],
    ));
    for _ in 0..2000 {
        out.extend(frame(0x9, 0, 1, b"aaaaaaaa"));
    }
    let _ = s.write_all(&out);
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    // Walk the frames the proxy sent for a GOAWAY and its error code.
    let mut at = 0;
    let mut goaway = None;
    while at + 9 <= got.len() {
        let len = u32::from_be_bytes([0, got[at], got[at + 1], got[at + 2]]) as usize;
        if got[at + 3] == 0x7 && at + 9 + 8 <= got.len() {
            let c = &got[at + 13..at + 17];
            goaway = Some(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
        }
        at += 9 + len;
    }
    assert!(
        matches!(goaway, Some(code) if code == 0xb || code == 0x1 || code == 0x9),
        "GOAWAY (ENHANCE_YOUR_CALM, PROTOCOL_ERROR or COMPRESSION_ERROR) expected, got {goaway:?} from {} bytes",
        got.len()
    );
}
