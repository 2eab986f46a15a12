//! Request integrity (issue 9, classes 1-4): the upstream receives exactly
//! what the rules checked. Each case goes through the real proxy to
//! test-made upstreams that record what they received (parsed with
//! `httparse` / `h2`, not the proxy's code), and the assertions are on
//! those records: a refused request never arrives, a smuggled one never
//! becomes a request, a pooled connection is not poisoned for the next
//! client, and no underscore lookalike or disagreeing host gets through.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};

use crate::lab::{exchange, h2_server, read_answer, Lab};

/// HTTP/1 recording upstream.
const H1: u16 = 85;
/// HTTP/2 recording upstream.
const H2: u16 = 86;

pub const RULES: &str = r#"{
  "version": 1,
  "containers": {
    "client": { "address": "@CLIENT@" },
    "client2": { "address": "@CLIENT2@" },
    "up": { "address": "@UP@" }
  },
  "access": [
    { "from": ["client", "client2"], "to": "up", "ports": [85, 86],
      "http": [
        { "methods": ["GET", "POST"], "path_prefix": "/foo" },
        { "methods": ["GET"], "path_prefix": "/bar", "headers": { "X-Bar": false } },
        { "methods": ["PUT", "GET"], "path_prefix": "/need", "headers": { "X-Token": "t" } }
      ] }
  ]
}"#;

/// One request as an upstream received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub target: String,
    /// `:authority` for HTTP/2.
    pub authority: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

impl Received {
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    fn has(&self, name: &str) -> bool {
        !self.all(name).is_empty()
    }
}

type Log = Arc<Mutex<Vec<Received>>>;

fn take(log: &Log) -> Vec<Received> {
    std::mem::take(&mut *log.lock().unwrap_or_else(|p| p.into_inner()))
}

/// A keep-alive HTTP/1.1 upstream that records every request it parses
/// (independently of the proxy: `httparse` plus its own body reading) and
/// answers `ok`; `/foo/conn-cl` is answered with `Connection:
/// Content-Length` naming its own length, as a hostile upstream would.
fn h1_upstream(lab: &Lab) -> Log {
    let listener = lab.listen_upstream(H1);
    let log: Log = Arc::default();
    let l = log.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let log = l.clone();
            std::thread::spawn(move || serve_h1(conn, &log));
        }
    });
    log
}

fn serve_h1(mut conn: TcpStream, log: &Log) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // A complete head, then its body per the framing it declares.
        let parsed = loop {
            let mut storage = [httparse::EMPTY_HEADER; 128];
            let mut req = httparse::Request::new(&mut storage);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(end)) => {
                    let headers: Vec<(String, String)> = req
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_owned(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect();
                    break Some((
                        req.method.unwrap_or("").to_owned(),
                        req.path.unwrap_or("").to_owned(),
                        headers,
                        end,
                    ));
                }
                Ok(httparse::Status::Partial) => {}
                Err(_) => break None,
            }
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
            }
        };
        let Some((method, target, headers, end)) = parsed else {
            log.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Received {
                    method: "<unparsable>".into(),
                    target: String::from_utf8_lossy(&buf).into_owned(),
                    authority: None,
                    headers: Vec::new(),
                    body: Vec::new(),
                    trailers: Vec::new(),
                });
            return;
        };
        buf.drain(..end);
        let find = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_owned())
        };
        let mut body = Vec::new();
        if find("transfer-encoding").is_some() {
            // Chunked: sizes, data, then the last chunk and an empty line.
            loop {
                let line_end = loop {
                    if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                };
                let size =
                    usize::from_str_radix(String::from_utf8_lossy(&buf[..line_end]).trim(), 16)
                        .unwrap_or(0);
                while buf.len() < line_end + 2 + size + 2 {
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                }
                body.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
                buf.drain(..line_end + 2 + size + 2);
                if size == 0 {
                    break;
                }
            }
        } else if let Some(len) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
            while buf.len() < len {
                match conn.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                }
            }
            body = buf.drain(..len).collect();
        }
        let answer: &[u8] = if target == "/foo/conn-cl" {
            b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\nhello"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        };
        log.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Received {
                method,
                target,
                authority: None,
                headers,
                body,
                trailers: Vec::new(),
            });
        if conn.write_all(answer).is_err() {
            return;
        }
    }
}

/// An HTTP/2 upstream recording `:authority`, fields and trailers.
fn h2_upstream(lab: &Lab) -> Log {
    let log: Log = Arc::default();
    let l = log.clone();
    h2_server(lab, H2, false, move |req, respond| {
        record_h2(req, respond, l.clone())
    });
    log
}

fn pairs(map: &HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

async fn record_h2(
    req: Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    log: Log,
) {
    let (parts, mut body) = req.into_parts();
    let mut data = Vec::new();
    while let Some(Ok(chunk)) = body.data().await {
        data.extend_from_slice(&chunk);
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await.ok().flatten().unwrap_or_default();
    log.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Received {
            method: parts.method.to_string(),
            target: parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
            authority: parts.uri.authority().map(|a| a.as_str().to_owned()),
            headers: pairs(&parts.headers),
            body: data,
            trailers: pairs(&trailers),
        });
    let res = Response::builder()
        .status(StatusCode::OK)
        .body(())
        .expect("response");
    if let Ok(mut send) = respond.send_response(res, false) {
        let _ = send.send_data(Bytes::from_static(b"ok"), true);
    }
}

pub fn run(lab: &Lab) {
    let h1 = h1_upstream(lab);
    let h2 = h2_upstream(lab);
    let mut failures = Vec::new();
    connection_options(lab, &h1, &mut failures);
    underscores(lab, &h1, &mut failures);
    path_parameters(lab, &h1, &mut failures);
    framing_is_restated(lab, &h1, &mut failures);
    response_connection_content_length(lab, &h1, &mut failures);
    http2(lab, &h2, &mut failures);
    assert!(
        failures.is_empty(),
        "{} integrity case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Sends `bytes`, expects `want` statuses and that nothing reached the upstream.
fn refused(lab: &Lab, log: &Log, name: &str, bytes: &[u8], failures: &mut Vec<String>) {
    let a = exchange(lab, H1, bytes, 1);
    std::thread::sleep(Duration::from_millis(200));
    let got = take(log);
    if a.statuses() != [400] || !got.is_empty() || !a.closed {
        failures.push(format!(
            "{name}: statuses {:?} (want [400]), closed {}, upstream received {got:?}",
            a.statuses(),
            a.closed
        ));
    }
}

/// Class 1: `Connection` cannot make the proxy drop a field after the
/// decision, and a smuggled body never becomes a request.
fn connection_options(lab: &Lab, log: &Log, failures: &mut Vec<String>) {
    let smuggled = "GET /admin HTTP/1.1\r\nHost: up\r\nX-Portcullis-Source: app3\r\n\r\n";
    for (token, name) in [
        (
            "Content-Length",
            "Connection: Content-Length smuggles the body",
        ),
        (
            "content_length",
            "Connection: content_length smuggles the body",
        ),
        (
            "keep-alive, CONTENT-LENGTH",
            "Connection list with Content-Length",
        ),
    ] {
        let attack = format!(
            "POST /foo HTTP/1.1\r\nHost: up\r\nContent-Length: {}\r\nConnection: {token}\r\n\r\n{smuggled}",
            smuggled.len()
        );
        refused(lab, log, name, attack.as_bytes(), failures);
    }
    // The pooled upstream connection is not poisoned: the next client's
    // request is the only thing the upstream sees, and it gets its answer.
    let mut s = lab.connect_from(lab.client2_ip(), H1);
    let _ = s.write_all(b"GET /foo/next HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n");
    let a = read_answer(&mut s, 1, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(200));
    let got = take(log);
    let paths: Vec<String> = got
        .iter()
        .map(|r| format!("{} {}", r.method, r.target))
        .collect();
    if a.statuses() != [200] || a.responses[0].text() != "ok" || paths != ["GET /foo/next"] {
        failures.push(format!(
            "next client after the smuggling attempts: statuses {:?}, upstream saw {paths:?}",
            a.statuses()
        ));
    } else if got[0].all("x-portcullis-source") != ["client2"] {
        failures.push(format!(
            "next client: source {:?}",
            got[0].all("x-portcullis-source")
        ));
    }
    for (token, name) in [
        ("Host", "Connection: Host"),
        ("X-Portcullis-Source", "Connection: X-Portcullis-Source"),
        (
            "X-Token",
            "Connection: X-Token drops a field a rule required",
        ),
        ("x_token", "Connection: x_token"),
    ] {
        let req =
            format!("GET /need HTTP/1.1\r\nHost: up\r\nX-Token: t\r\nConnection: {token}\r\n\r\n");
        refused(lab, log, name, req.as_bytes(), failures);
    }
    // Other options are honoured: the field named is dropped.
    let a = exchange(
        lab,
        H1,
        b"GET /need HTTP/1.1\r\nHost: up\r\nX-Token: t\r\nConnection: X-Other, close\r\nX-Other: 1\r\n\r\n",
        1,
    );
    let got = take(log);
    match got.as_slice() {
        [r] if a.statuses() == [200] && !r.has("x-other") && r.all("x-token") == ["t"] => {}
        _ => failures.push(format!(
            "Connection: X-Other: statuses {:?}, upstream received {got:?}",
            a.statuses()
        )),
    }
}

/// Class 2: underscore spellings of the source header or of a header a
/// rule names never reach the upstream.
fn underscores(lab: &Lab, log: &Log, failures: &mut Vec<String>) {
    for (name, req) in [
        (
            "X-Portcullis_Source",
            "GET /foo/u HTTP/1.1\r\nHost: up\r\nX-Portcullis_Source: app3\r\n\r\n",
        ),
        (
            "x_portcullis_source",
            "GET /foo/u HTTP/1.1\r\nHost: up\r\nx_portcullis_source: app3\r\n\r\n",
        ),
        (
            "X_Bar defeating an absent-header rule",
            "GET /bar HTTP/1.1\r\nHost: up\r\nX_Bar: 1\r\n\r\n",
        ),
        (
            "X_Token beside the required X-Token",
            "GET /need HTTP/1.1\r\nHost: up\r\nX-Token: t\r\nX_Token: evil\r\n\r\n",
        ),
    ] {
        refused(lab, log, name, req.as_bytes(), failures);
    }
    // Other underscore names pass by default.
    let a = exchange(
        lab,
        H1,
        b"GET /foo/u HTTP/1.1\r\nHost: up\r\nX_Other: 1\r\nConnection: close\r\n\r\n",
        1,
    );
    let got = take(log);
    if a.statuses() != [200] || got.len() != 1 || got[0].all("x_other") != ["1"] {
        failures.push(format!("X_Other: {:?}, {got:?}", a.statuses()));
    }
}

/// Class 3: a dot segment with `;parameters` is refused before any rule.
fn path_parameters(lab: &Lab, log: &Log, failures: &mut Vec<String>) {
    for path in [
        "/foo/..;/admin",
        "/foo/%2e%2e;/admin",
        "/foo/.%2E;x=1/admin",
        "/foo/.;/x",
        "/foo/..%3b/admin",
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: up\r\n\r\n");
        refused(lab, log, path, req.as_bytes(), failures);
    }
}

/// Class 1: the upstream gets the framing the proxy streams by, stated
/// once, and the body as sent.
fn framing_is_restated(lab: &Lab, log: &Log, failures: &mut Vec<String>) {
    let a = exchange(
        lab,
        H1,
        b"POST /foo/len HTTP/1.1\r\nHost: up\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        1,
    );
    let got = take(log);
    match got.as_slice() {
        [r] if a.statuses() == [200]
            && r.all("content-length") == ["5"]
            && !r.has("transfer-encoding")
            && r.body == b"hello" => {}
        _ => failures.push(format!("Content-Length body: {:?}, {got:?}", a.statuses())),
    }
    let a = exchange(
        lab,
        H1,
        b"POST /foo/chunked HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Portcullis-Source: evil\r\n\r\n",
        1,
    );
    let got = take(log);
    match got.as_slice() {
        [r] if a.statuses() == [200]
            && r.all("transfer-encoding") == ["chunked"]
            && !r.has("content-length")
            && r.all("x-portcullis-source") == ["client"]
            && r.body == b"hello" => {}
        _ => failures.push(format!("chunked body: {:?}, {got:?}", a.statuses())),
    }
}

/// Class 1, response side: an upstream's `Connection: Content-Length`
/// does not leave the client without the length, so the next response on
/// the connection is read as the next response.
fn response_connection_content_length(lab: &Lab, log: &Log, failures: &mut Vec<String>) {
    let a = exchange(
        lab,
        H1,
        b"GET /foo/conn-cl HTTP/1.1\r\nHost: up\r\n\r\nGET /foo/after HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n",
        2,
    );
    let bodies: Vec<String> = a.responses.iter().map(|r| r.text()).collect();
    if a.statuses() != [200, 200] || bodies != ["hello", "ok"] {
        failures.push(format!(
            "response with Connection: Content-Length: statuses {:?}, bodies {bodies:?}, raw {:?}",
            a.statuses(),
            String::from_utf8_lossy(&a.raw)
        ));
    }
    take(log);
}

/// One HTTP/2 request on a fresh connection: the status, or `None` when
/// the stream was reset or the connection failed.
fn h2_request(
    lab: &Lab,
    req: Request<()>,
    body: Option<(&'static [u8], HeaderMap)>,
) -> Option<u16> {
    let tcp = lab.connect(H2);
    tcp.set_nonblocking(true).expect("nonblocking");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::from_std(tcp).expect("tokio stream");
        let (client, conn) = h2::client::handshake(tcp).await.ok()?;
        tokio::spawn(conn);
        let mut client = client.ready().await.ok()?;
        let (response, mut send) = client.send_request(req, body.is_none()).ok()?;
        if let Some((data, trailers)) = body {
            send.send_data(Bytes::from_static(data), false).ok()?;
            send.send_trailers(trailers).ok()?;
        }
        let res = tokio::time::timeout(Duration::from_secs(10), response)
            .await
            .ok()?
            .ok()?;
        Some(res.status().as_u16())
    })
}

/// Class 4: `:authority` wins and a disagreeing `host` is refused;
/// trailers carry nothing the head could not.
fn http2(lab: &Lab, log: &Log, failures: &mut Vec<String>) {
    let get = |uri: &str| Request::get(uri.to_owned());
    // Baseline: agreeing host, forwarded with the authority the rules saw.
    let st = h2_request(
        lab,
        get("http://up/foo/h2")
            .header("host", "up")
            .body(())
            .unwrap(),
        None,
    );
    std::thread::sleep(Duration::from_millis(200));
    let got = take(log);
    match got.as_slice() {
        [r] if st == Some(200) && r.authority.as_deref() == Some("up") && !r.has("host") => {}
        _ => failures.push(format!("h2 agreeing host: {st:?}, {got:?}")),
    }
    for (name, req) in [
        (
            "h2 :authority and host disagree",
            get("http://up/foo/h2")
                .header("host", "evil")
                .body(())
                .unwrap(),
        ),
        (
            "h2 :authority with userinfo",
            get("http://user@up/foo/h2").body(()).unwrap(),
        ),
        (
            "h2 underscore source header",
            get("http://up/foo/h2")
                .header("x-portcullis_source", "app3")
                .body(())
                .unwrap(),
        ),
        (
            "h2 dot segment with parameters",
            get("http://up/foo/..;/admin").body(()).unwrap(),
        ),
    ] {
        let st = h2_request(lab, req, None);
        std::thread::sleep(Duration::from_millis(200));
        let got = take(log);
        if st != Some(400) || !got.is_empty() {
            failures.push(format!(
                "{name}: status {st:?} (want 400), upstream received {got:?}"
            ));
        }
    }
    // Trailers: protected, hop-by-hop and lookalike fields are dropped.
    let mut trailers = HeaderMap::new();
    for (n, v) in [
        ("x-portcullis-source", "evil"),
        ("x-portcullis_source", "evil"),
        ("host", "evil"),
        ("x-token", "evil"),
        ("content-length", "1"),
        ("grpc-status", "0"),
    ] {
        trailers.insert(
            http::HeaderName::from_static(n),
            http::HeaderValue::from_static(v),
        );
    }
    let st = h2_request(
        lab,
        Request::post("http://up/foo/trailers").body(()).unwrap(),
        Some((b"hello", trailers)),
    );
    std::thread::sleep(Duration::from_millis(200));
    let got = take(log);
    match got.as_slice() {
        [r] if st == Some(200)
            && r.body == b"hello"
            && r.trailers == [("grpc-status".to_owned(), "0".to_owned())]
            && r.all("x-portcullis-source") == ["client"] => {}
        _ => failures.push(format!("h2 trailers: {st:?}, {got:?}")),
    }
}
