//! Upgrades and CONNECT: refused unless an access entry allows the request
//! (CONNECT only by a matcher that names it), tunnelled after the rule
//! check once the upstream agrees; an `h2c` upgrade is never honoured.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use crate::lab::{exchange, read_answer, Lab};

const RULES: &str = r#"{
  "version": 1,
  "containers": {
    "client": { "address": "@CLIENT@" },
    "up": { "address": "@UP@" }
  },
  "access": [
    { "from": "client", "to": "up", "ports": [80], "http": [ { "methods": ["GET"], "path_prefix": "/foo" } ] },
    { "from": "client", "to": "up", "ports": [82],
      "http": [ { "methods": ["GET"], "path_prefix": "/ws" }, { "methods": ["CONNECT"] } ] }
  ]
}"#;

/// A WebSocket/CONNECT upstream: agrees to the tunnel, then echoes bytes.
fn tunnel_upstream(lab: &Lab) {
    let listener = lab.listen_upstream(82);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut b = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let source_ok = text.contains("x-portcullis-source: client\r\n");
                let answer = if text.starts_with("connect ") && source_ok {
                    "HTTP/1.1 200 Connection Established\r\n\r\n"
                } else if text.contains("upgrade: websocket\r\n")
                    && text.contains("connection: upgrade\r\n")
                    && source_ok
                {
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
                } else {
                    "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                };
                if conn.write_all(answer.as_bytes()).is_err()
                    || !answer.contains(" 101 ") && !answer.contains(" 200 ")
                {
                    return;
                }
                loop {
                    match conn.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if conn.write_all(&b[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
}

/// Sends `bytes` through an established tunnel and reads the echo.
fn echo_through(s: &mut std::net::TcpStream, bytes: &[u8]) -> Vec<u8> {
    s.write_all(bytes).expect("write into the tunnel");
    let mut got = vec![0u8; bytes.len()];
    s.read_exact(&mut got).expect("echo through the tunnel");
    got
}

pub fn run() {
    let lab = Lab::start(RULES);
    tunnel_upstream(&lab);

    // An allowed WebSocket upgrade is tunnelled both ways.
    let mut s = lab.connect(82);
    s.write_all(b"GET /ws/chat HTTP/1.1\r\nHost: up\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Portcullis-Source: evil\r\n\r\n")
        .expect("write");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut b).expect("read the 101"),
            1,
            "closed before the 101: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    assert!(
        head.contains("upgrade: websocket\r\n") && head.contains("connection: upgrade\r\n"),
        "{head}"
    );
    for msg in [&b"\x81\x05hello"[..], &[0x82, 0x03, 0, 1, 2], &[b'z'; 5000]] {
        assert_eq!(echo_through(&mut s, msg), msg);
    }
    let _ = s.shutdown(Shutdown::Write);
    assert!(lab.metric("tunnels_total") >= 1);

    // A WebSocket upgrade on a path no matcher allows: 403, no tunnel.
    let a = exchange(
        &lab,
        82,
        b"GET /admin HTTP/1.1\r\nHost: up\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        1,
    );
    assert_eq!(a.statuses(), [403], "{a:?}");

    // CONNECT is allowed on port 82 by a matcher that names it.
    let mut s = lab.connect(82);
    s.write_all(b"CONNECT up:82 HTTP/1.1\r\nHost: up:82\r\n\r\n")
        .expect("write");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).expect("read the 200"), 1);
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200 "),
        "{}",
        String::from_utf8_lossy(&head)
    );
    assert_eq!(echo_through(&mut s, b"anything at all"), b"anything at all");

    // On port 80 no matcher names CONNECT: a matcher without `methods`
    // would not do either.
    let a = exchange(
        &lab,
        80,
        b"CONNECT up:80 HTTP/1.1\r\nHost: up:80\r\n\r\n",
        1,
    );
    assert_eq!(a.statuses(), [403], "{a:?}");

    // An allowed upgrade the upstream declines is an ordinary response.
    let a = exchange(
        &lab,
        80,
        b"GET /foo HTTP/1.1\r\nHost: up\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        1,
    );
    assert_eq!((a.statuses(), a.closed), (vec![200], true), "{a:?}");

    // h2c upgrades are not honoured: the request is served as HTTP/1.1
    // and the upstream never sees the Upgrade.
    let mut s = lab.connect(80);
    s.write_all(b"GET /foo HTTP/1.1\r\nHost: up\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
        .expect("write");
    let a = read_answer(&mut s, 1, Duration::from_secs(5));
    assert_eq!(a.statuses(), [200], "{a:?}");
    let echo = a.responses[0].text().to_ascii_lowercase();
    assert!(
        !echo.contains("upgrade") && !echo.contains("http2-settings"),
        "{echo}"
    );
}
