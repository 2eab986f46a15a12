//! Retries follow RFC 9110 §9.2.2 through the real proxy: a request sent
//! on a reused upstream connection that the upstream then closes without
//! answering is sent again only when its method is idempotent. The
//! test-made upstreams read each request, record it, and close on the
//! unsafe ones, as a server that acted on a POST and then crashed would.

use std::io::Write;
use std::time::Duration;

use crate::lab::{read_answer, Lab};
use crate::member::{self, Reply};

const RULES: &str = r#"{
  "version": 1,
  "containers": {
    "client": { "address": "@CLIENT@" },
    "up": { "address": "@UP@" }
  },
  "access": [
    { "from": "client", "to": "up", "ports": [9201], "http": [ { "path_prefix": "/" } ] }
  ],
  "frontends": [
    { "name": "edge", "listen": "@HOST@:8802", "routes": [], "default_pool": "closers" }
  ],
  "pools": { "closers": { "members": ["up:9202", "up:9203"], "retries": 1 } }
}"#;

/// GET is answered (the connection then idles in the proxy's pool); the
/// others are read and the connection closed without an answer.
fn closer(method: &str, _target: &str) -> Reply {
    if method == "GET" {
        Reply::Status(200)
    } else {
        Reply::Close
    }
}

/// One request (no body) on a fresh connection; its status.
fn ask(mut s: std::net::TcpStream, method: &str, path: &str) -> u16 {
    let req = format!("{method} {path} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).expect("send");
    let a = read_answer(&mut s, 1, Duration::from_secs(5));
    a.responses
        .first()
        .unwrap_or_else(|| panic!("no response to {method} {path}: {:?}", a.raw))
        .status
}

pub fn run() {
    let lab = Lab::start(RULES);
    let direct = member::spawn(&lab, 9201, "direct", closer);
    let m1 = member::spawn(&lab, 9202, "m1", closer);
    let m2 = member::spawn(&lab, 9203, "m2", closer);
    // Lets the proxy put the upstream connection back into its pool.
    let settle = || std::thread::sleep(Duration::from_millis(100));

    // Access flow: a GET leaves a kept-alive upstream connection; a POST
    // without body goes over it, the upstream reads it and closes. Sending
    // it again could order twice: 502, and the upstream saw it once.
    assert_eq!(ask(lab.connect(9201), "GET", "/warm"), 200);
    settle();
    assert_eq!(ask(lab.connect(9201), "POST", "/order"), 502);
    assert_eq!(
        direct.count("POST /order"),
        1,
        "a non-idempotent request is never re-sent: {:?}",
        direct.all()
    );
    // PATCH is not idempotent either.
    assert_eq!(ask(lab.connect(9201), "GET", "/warm"), 200);
    settle();
    assert_eq!(ask(lab.connect(9201), "PATCH", "/order"), 502);
    assert_eq!(direct.count("PATCH /order"), 1, "{:?}", direct.all());
    // An idempotent DELETE may be re-sent on a fresh connection (which the
    // upstream closes too): twice, then 502.
    assert_eq!(ask(lab.connect(9201), "GET", "/warm"), 200);
    settle();
    assert_eq!(ask(lab.connect(9201), "DELETE", "/order"), 502);
    assert_eq!(direct.count("DELETE /order"), 2, "{:?}", direct.all());

    // Frontend: both members hold a pooled connection; the POST reaches
    // one, which closes: not re-sent there nor to the other member.
    for _ in 0..2 {
        assert_eq!(ask(lab.connect_frontend(8802), "GET", "/warm"), 200);
    }
    assert_eq!((m1.count("GET /warm"), m2.count("GET /warm")), (1, 1));
    settle();
    assert_eq!(ask(lab.connect_frontend(8802), "POST", "/order"), 502);
    assert_eq!(
        m1.count("POST /order") + m2.count("POST /order"),
        1,
        "the members saw the POST once: {:?} {:?}",
        m1.all(),
        m2.all()
    );
}
