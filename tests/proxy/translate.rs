//! Any client protocol reaches any upstream protocol on access flows, and
//! an HTTP/2 client gets what an HTTP/1 client gets from the one pipeline:
//! the cache, chunked and length-delimited bodies, request bodies without
//! a declared length. Asserted on what the upstream received.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};

use crate::lab::{h2_server, Lab};

/// 80: the lab's test service (HTTP/1.1 only), cached; 85: an HTTP/2-only
/// echo server of this test.
const RULES: &str = r#"{
  "version": 1,
  "containers": {
    "client": { "address": "@CLIENT@" },
    "up": { "address": "@UP@" }
  },
  "access": [
    { "from": "client", "to": "up", "ports": [80],
      "upstream_protocol": "http1",
      "http": [ { "methods": ["GET", "HEAD", "POST"], "path_prefix": "/" } ] },
    { "from": "client", "to": "up", "ports": [85],
      "upstream_protocol": "h2c",
      "http": [ { "methods": ["GET", "POST"], "path_prefix": "/" } ] }
  ],
  "cache": { "up:80": { "max_bytes": 16777216 } }
}"#;

fn echo(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("echo JSON ({e}): {body}"))
}

pub fn run() {
    let lab = Lab::start(RULES);
    let h2_requests = h2_echo(&lab, 85);

    // HTTP/2 client → HTTP/1.1-only service: translated, path and source as checked.
    let (status, version, _, body) = lab.curl(
        80,
        &["--http2-prior-knowledge", "-H", "X-Portcullis-Source: evil"],
        "/a/./b?x=1",
    );
    assert_eq!((status, version.as_str()), (200, "2"), "{body}");
    let e = echo(&body);
    assert_eq!(e["version"], "HTTP/1.1", "{body}");
    assert_eq!(e["target"], "/a/b?x=1", "{body}");
    let sources: Vec<&serde_json::Value> = e["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter(|h| {
            h[0].as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case("x-portcullis-source"))
        })
        .collect();
    assert_eq!(sources.len(), 1, "{body}");
    assert_eq!(sources[0][1], "client", "{body}");

    // A chunked HTTP/1.1 response reaches the HTTP/2 client whole.
    let (status, _, _, body) =
        lab.curl(80, &["--http2-prior-knowledge"], "/c?chunked=1&size=70000");
    assert_eq!(status, 200);
    assert_eq!(body.len(), 70000, "chunked body relayed as DATA, decoded");

    // An HTTP/2 request body without a declared length reaches the
    // HTTP/1.1 service chunked, every byte of it.
    let (status, body) = h2_post_unsized(&lab, 80, "/upload", 3 * 40_000);
    assert_eq!(status, 200, "{body}");
    let e = echo(&body);
    assert_eq!(e["body_bytes"], 3 * 40_000, "{body}");
    assert!(
        e["headers"].as_array().expect("headers").iter().any(|h| {
            h[0].as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case("transfer-encoding"))
                && h[1] == "chunked"
        }),
        "the service was told the framing: {body}"
    );

    // The cache answers HTTP/2 clients: one fetch, then hits.
    let before = lab.upstream_count();
    let path = "/cached?cc=max-age%3D60";
    let (s1, v1, h1, b1) = lab.curl(80, &["--http2-prior-knowledge"], path);
    let (s2, v2, h2, b2) = lab.curl(80, &["--http2-prior-knowledge"], path);
    let (s3, v3, h3, b3) = lab.curl(80, &[], path);
    assert_eq!((s1, s2, s3), (200, 200, 200));
    assert_eq!((v1.as_str(), v2.as_str(), v3.as_str()), ("2", "2", "1.1"));
    assert!(h1.contains("x-cache: miss"), "{h1}");
    assert!(
        h2.contains("x-cache: hit") && h2.contains("\nage: "),
        "{h2}"
    );
    assert!(h3.contains("x-cache: hit"), "{h3}");
    assert_eq!(
        (b1.as_str(), b3.as_str()),
        (b2.as_str(), b2.as_str()),
        "hits carry the stored body"
    );
    assert_eq!(
        lab.upstream_count() - before,
        1,
        "the service was asked once"
    );

    // HTTP/1.1 client → HTTP/2-only service (upstream_protocol h2c).
    let (status, version, _, body) = lab.curl(85, &[], "/h2/x?y=1");
    assert_eq!((status, version.as_str()), (200, "1.1"), "{body}");
    let e = echo(&body);
    assert_eq!(e["version"], "HTTP/2.0", "{body}");
    assert_eq!(e["target"], "/h2/x?y=1", "{body}");
    assert_eq!(e["source"], "client", "{body}");
    let (status, _, _, body) = lab.curl(85, &["--data-binary", "hello"], "/h2/post");
    assert_eq!(status, 200, "{body}");
    assert_eq!(echo(&body)["body_bytes"], 5, "{body}");

    // What the h2c service received from a hostile HTTP/1.1 client: the
    // checked path, one source stamped by the proxy, no field the client
    // named in Connection, no HTTP/1 framing (the body arrives whole).
    let (status, _, _, body) = lab.curl(
        85,
        &[
            "--path-as-is",
            "-H",
            "X-Portcullis-Source: evil",
            "-H",
            "Connection: keep-alive, X-Drop",
            "-H",
            "X-Drop: 1",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            "hello",
        ],
        "/h2/a/./b",
    );
    assert_eq!(status, 200, "{body}");
    let e = echo(&body);
    assert_eq!(e["target"], "/h2/a/b", "{body}");
    assert_eq!(e["body_bytes"], 5, "{body}");
    let names: Vec<&str> = e["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter_map(|h| h[0].as_str())
        .collect();
    for gone in [
        "x-drop",
        "connection",
        "transfer-encoding",
        "keep-alive",
        "host",
    ] {
        assert!(
            !names.contains(&gone),
            "{gone} reached the h2c upstream: {body}"
        );
    }
    let sources: Vec<&serde_json::Value> = e["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter(|h| h[0] == "x-portcullis-source")
        .collect();
    assert_eq!(sources.len(), 1, "{body}");
    assert_eq!(sources[0][1], "client", "{body}");
    assert_eq!(h2_requests.load(Ordering::SeqCst), 3);

    // Refusals are written in one place: the same status, metric and one
    // JSON log line (source, destination, method, path, the rule that
    // decided with its file position) whichever protocol asked.
    let denied_before = lab.metric("requests_denied_total");
    let (s1, _, _, b1) = lab.curl(80, &["-X", "DELETE"], "/gone");
    let (s2, v2, _, b2) = lab.curl(80, &["--http2-prior-knowledge", "-X", "DELETE"], "/gone");
    assert_eq!((s1, s2, v2.as_str()), (403, 403, "2"));
    assert_eq!(b1, b2, "one refusal body for both protocols");
    assert!(
        b1.starts_with("portcullis: denied by ") && b1.contains("rules.json:8:5 (access[0])"),
        "{b1}"
    );
    assert_eq!(lab.metric("requests_denied_total") - denied_before, 2);
    let lines: Vec<serde_json::Value> = lab
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &serde_json::Value| {
            l["fields"]["status"] == 403 && l["fields"]["method"] == "DELETE"
        })
        .collect();
    assert_eq!(lines.len(), 2, "one log line per refusal");
    for l in &lines {
        let f = &l["fields"];
        assert_eq!(f["message"], "request denied", "{l}");
        assert_eq!(f["path"], "/gone", "{l}");
        assert_eq!(f["source"], "client", "{l}");
        assert_eq!(f["destination"], lab.upstream(80).to_string(), "{l}");
        assert!(
            f["decided_by"]
                .as_str()
                .is_some_and(|r| r.ends_with("rules.json:8:5 (access[0])")),
            "{l}"
        );
    }
}

/// An HTTP/2-only echo server: method, target, version, source, body bytes.
fn h2_echo(lab: &Lab, port: u16) -> Arc<AtomicU64> {
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    h2_server(lab, port, false, move |req, mut respond| {
        let c = c.clone();
        async move {
            c.fetch_add(1, Ordering::SeqCst);
            let (parts, mut body) = req.into_parts();
            let mut n = 0;
            while let Some(Ok(chunk)) = body.data().await {
                n += chunk.len();
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            let echo = serde_json::json!({
                "target": parts.uri.path_and_query().map(|p| p.as_str()),
                "version": format!("{:?}", parts.version),
                "source": parts.headers.get("x-portcullis-source").and_then(|v| v.to_str().ok()),
                "headers": parts
                    .headers
                    .iter()
                    .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                    .collect::<Vec<_>>(),
                "body_bytes": n,
            })
            .to_string();
            let res = Response::builder()
                .status(StatusCode::OK)
                .body(())
                .expect("response");
            if let Ok(mut send) = respond.send_response(res, false) {
                let _ = send.send_data(Bytes::from(echo), true);
            }
        }
    });
    count
}

/// A POST over HTTP/2 with a body of `len` bytes in three DATA frames and no
/// content-length; (status, body).
fn h2_post_unsized(lab: &Lab, port: u16, path: &str, len: usize) -> (u16, String) {
    let tcp = lab.connect(port);
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
            .body(())
            .expect("request");
        let (response, mut body) = client.send_request(req, false).expect("send");
        let piece = len / 3;
        for i in 0..3 {
            body.reserve_capacity(piece);
            let mut left = piece;
            while left > 0 {
                let cap = std::future::poll_fn(|cx| body.poll_capacity(cx))
                    .await
                    .expect("capacity")
                    .expect("capacity");
                let n = cap.min(left);
                body.send_data(Bytes::from(vec![b'x'; n]), false)
                    .expect("data");
                left -= n;
            }
            if i == 2 {
                body.send_data(Bytes::new(), true).expect("end");
            }
        }
        let res = tokio::time::timeout(Duration::from_secs(20), response)
            .await
            .expect("a response in time")
            .expect("a response");
        let status = res.status().as_u16();
        let mut rb = res.into_body();
        let mut out = Vec::new();
        while let Some(Ok(chunk)) = rb.data().await {
            out.extend_from_slice(&chunk);
            let _ = rb.flow_control().release_capacity(chunk.len());
        }
        (status, String::from_utf8_lossy(&out).into_owned())
    })
}
