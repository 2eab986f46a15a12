//! The `limits` of the rule file through the real proxy: each over-limit
//! event answers as HTTP says, is counted in `/metrics` and logged with its
//! source; an entry's own limits override the global ones, and one source
//! over its limit does not affect another.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::lab::{exchange, read_answer, Lab};

const RULES: &str = r#"{
  "version": 1,
  "containers": {
    "client": { "address": "@CLIENT@" },
    "client2": { "address": "@CLIENT2@" },
    "up": { "address": "@UP@" }
  },
  "access": [
    { "from": ["client", "client2"], "to": "up", "ports": [80], "http": [ { "path_prefix": "/" } ],
      "limits": { "max_body_bytes": 1000, "max_header_bytes": 4096, "max_connections_per_source": 4,
                  "idle_timeout_ms": 20000 } },
    { "from": "client", "to": "up", "ports": [8080], "http": [ { "path_prefix": "/" } ] },
    { "from": ["client", "client2"], "to": "up", "ports": [8081], "http": [ { "path_prefix": "/" } ],
      "limits": { "requests_per_second": 1, "burst": 3 } }
  ],
  "limits": { "max_body_bytes": 100, "max_header_bytes": 1024, "header_timeout_ms": 1000,
              "idle_timeout_ms": 700 },
  "frontends": [
    { "name": "edge", "listen": "@HOST@:8804", "default_pool": "up",
      "limits": { "max_body_bytes": 50 } },
    { "name": "edge-rate", "listen": "@HOST@:8805", "default_pool": "up",
      "limits": { "requests_per_second": 1, "burst": 1 } }
  ],
  "pools": { "up": { "members": ["up:80"] } }
}"#;

fn get(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: up\r\n{extra}Connection: close\r\n\r\n").into_bytes()
}

fn post(len: usize) -> Vec<u8> {
    let mut r = format!(
        "POST /p HTTP/1.1\r\nHost: up\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    r.extend(std::iter::repeat_n(b'x', len));
    r
}

pub fn run() {
    let lab = Lab::start(RULES);
    let log_has = |what: &str| {
        let log = lab.log();
        log.lines()
            .any(|l| l.contains(what) && l.contains("\"source\":\"client\""))
    };

    // max_body_bytes: the entry's 1000 on port 80, the global 100 on 8080.
    assert_eq!(exchange(&lab, 80, &post(500), 1).statuses(), [200]);
    assert_eq!(exchange(&lab, 8080, &post(500), 1).statuses(), [413]);
    let chunked = format!(
        "POST /p HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n{0}\r\n64\r\n{0}\r\n0\r\n\r\n",
        "y".repeat(100)
    );
    assert_eq!(
        exchange(&lab, 8080, chunked.as_bytes(), 1).statuses(),
        [413]
    );
    assert!(lab.metric("requests_body_too_large_total") >= 2);
    assert!(
        log_has("max_body_bytes"),
        "413 logged with the source:\n{}",
        lab.log()
    );
    // The log line names where the deciding limit is set: the global
    // `limits.max_body_bytes` on 8080 (its entry sets none), the entry's own
    // on port 80.
    assert_eq!(exchange(&lab, 80, &post(1500), 1).statuses(), [413]);
    for at in [
        "(limits.max_body_bytes)",
        "(access[0].limits.max_body_bytes)",
    ] {
        assert!(
            lab.log().lines().any(|l| l.contains("\"status\":413")
                && l.contains("\"limit_at\":\"")
                && l.contains("rules.json:")
                && l.contains(at)),
            "413 logged with the file position of {at}:\n{}",
            lab.log()
        );
    }

    // Refusals after the decision (the body, read after the head was
    // checked) and on frontends name their limit's place too, with the
    // request they refused.
    let chunked_at = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n78\r\n{}\r\n0\r\n\r\n",
            "z".repeat(120)
        )
    };
    assert_eq!(
        exchange(&lab, 8080, chunked_at("/chunked").as_bytes(), 1).statuses(),
        [413]
    );
    let fe = |port: u16, raw: &[u8]| {
        let mut s = lab.connect_frontend(port);
        s.write_all(raw).expect("send");
        let a = read_answer(&mut s, 1, Duration::from_secs(10));
        a.statuses()
    };
    assert_eq!(fe(8804, chunked_at("/fe-chunked").as_bytes()), [413]);
    let big_head = get("/fe-head", &format!("X-Big: {}\r\n", "h".repeat(1500)));
    assert_eq!(fe(8804, &big_head), [431]);
    let mut rate = Vec::new();
    for _ in 0..3 {
        rate.extend(fe(8805, &get("/fe-rate", "")));
    }
    assert!(
        rate.contains(&429),
        "edge-rate allows 1 request per second: {rate:?}"
    );
    // Frontend clients are named like access-flow ones, by their managed
    // container (the lab's frontend client is `client2`).
    let logged = |status: &str, path: &str, source: &str, at: &str| {
        lab.log().lines().any(|l| {
            l.contains(&format!("\"status\":{status}"))
                && l.contains(&format!("\"path\":\"{path}\""))
                && l.contains(&format!("\"source\":\"{source}\""))
                && l.contains("\"limit_at\":\"")
                && l.contains("rules.json:")
                && l.contains(at)
        })
    };
    for (status, path, source, at) in [
        ("413", "/chunked", "client", "(limits.max_body_bytes)"),
        (
            "413",
            "/fe-chunked",
            "client2",
            "(frontends[0].limits.max_body_bytes)",
        ),
        (
            "429",
            "/fe-rate",
            "client2",
            "(frontends[1].limits.requests_per_second)",
        ),
        // A head over the limit on a frontend: the global limit (the
        // frontend sets none); the head was not read, so no path.
        ("431", "-", "client2", "(limits.max_header_bytes)"),
    ] {
        assert!(
            logged(status, path, source, at),
            "{status} of {path} logged with {source} and the place of {at}:\n{}",
            lab.log()
        );
    }

    // max_header_bytes: 4096 on port 80, the global 1024 on 8080.
    let header = format!("X-Big: {}\r\n", "h".repeat(1500));
    assert_eq!(exchange(&lab, 80, &get("/h", &header), 1).statuses(), [200]);
    assert_eq!(
        exchange(&lab, 8080, &get("/h", &header), 1).statuses(),
        [431]
    );
    assert!(lab.metric("requests_header_too_large_total") >= 1);

    // header_timeout_ms: a head that never ends is answered 408.
    let mut s = lab.connect(8080);
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: up\r\n")
        .expect("write");
    let a = read_answer(&mut s, 1, Duration::from_secs(10));
    assert_eq!((a.statuses(), a.closed), (vec![408], true), "{a:?}");
    assert!(lab.metric("requests_timeout_total") >= 1);
    assert!(log_has("header_timeout_ms"), "408 logged with the source");

    // idle_timeout_ms: a kept-alive connection without a next request is
    // closed (without a response: nothing was asked).
    let mut s = lab.connect(8080);
    s.write_all(b"GET /idle HTTP/1.1\r\nHost: up\r\n\r\n")
        .expect("write");
    let a = read_answer(&mut s, 1, Duration::from_secs(10));
    assert_eq!(a.statuses(), [200], "{a:?}");
    let rest = read_answer(&mut s, 0, Duration::from_secs(10));
    assert!(
        rest.closed && rest.responses.is_empty(),
        "closed when idle: {rest:?}"
    );
    assert!(lab.metric("connections_idle_closed_total") >= 1);

    // A body that stalls for longer than idle_timeout_ms (a slow-body
    // attack) is answered 408, and the upstream never serves it.
    let before = lab.upstream_count();
    let mut s = lab.connect(8080);
    s.write_all(b"POST /slow-body HTTP/1.1\r\nHost: up\r\nContent-Length: 10\r\n\r\nhello")
        .expect("write");
    let a = read_answer(&mut s, 1, Duration::from_secs(10));
    assert_eq!((a.statuses(), a.closed), (vec![408], true), "{a:?}");
    assert_eq!(lab.upstream_count(), before);

    // max_connections_per_source: a fifth connection of `client` on port
    // 80 is refused with 429, `client2` is not affected, and a slot freed
    // by closing is given to the next connection.
    // Each held connection is served once first, so all four are surely
    // admitted (and counted) before the fifth arrives.
    let held: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = lab.connect(80);
            s.write_all(b"GET /held HTTP/1.1\r\nHost: up\r\n\r\n")
                .expect("write");
            let a = read_answer(&mut s, 1, Duration::from_secs(10));
            assert_eq!((a.statuses(), a.closed), (vec![200], false), "{a:?}");
            s
        })
        .collect();
    let mut extra = lab.connect(80);
    let a = read_answer(&mut extra, 1, Duration::from_secs(10));
    assert_eq!((a.statuses(), a.closed), (vec![429], true), "{a:?}");
    let mut other = lab.connect_from(lab.client2_ip(), 80);
    other.write_all(&get("/other", "")).expect("write");
    assert_eq!(
        read_answer(&mut other, 1, Duration::from_secs(10)).statuses(),
        [200]
    );
    assert!(lab.metric("connections_limited_total") >= 1);
    assert!(
        log_has("max_connections_per_source"),
        "429 logged with the source"
    );
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = exchange(&lab, 80, &get("/again", ""), 1);
        if a.statuses() == [200] {
            break;
        }
        assert_eq!(a.statuses(), [429], "{a:?}");
        assert!(
            Instant::now() < deadline,
            "closed connections never freed their slots"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // requests_per_second 1 with burst 3 on port 8081: the burst is served,
    // then the source is refused with 429 while client2's bucket is full.
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.extend(exchange(&lab, 8081, &get("/rate", ""), 1).statuses());
    }
    assert_eq!(&statuses[..3], [200, 200, 200], "the burst: {statuses:?}");
    assert!(statuses.contains(&429), "over the rate: {statuses:?}");
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 429),
        "{statuses:?}"
    );
    let mut other = lab.connect_from(lab.client2_ip(), 8081);
    other.write_all(&get("/rate", "")).expect("write");
    assert_eq!(
        read_answer(&mut other, 1, Duration::from_secs(10)).statuses(),
        [200]
    );
    assert!(lab.metric("requests_rate_limited_total") >= 1);
    assert!(log_has("requests_per_second"), "429 logged with the source");
}
