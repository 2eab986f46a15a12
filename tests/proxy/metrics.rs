//! `/metrics` after allowed, denied and frontend traffic: `promtool check
//! metrics` (Debian's `prometheus` package) accepts the whole page, and the
//! labelled series count what the traffic implies, under labels taken
//! from the rule file (an access entry's file position or `name`, the
//! frontend, pool and member).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::lab::{get, in_ns, read_answer, Lab};
use crate::member::{self, Reply};

const RULES: &str = r#"{
  "version": 1,
  "containers": {
    "client": { "address": "@CLIENT@" },
    "up": { "address": "@UP@" }
  },
  "access": [
    { "from": "client", "to": "up", "ports": [9301], "http": [ { "path_prefix": "/ok" } ] },
    { "name": "named-entry", "from": "client", "to": "up", "ports": [9302], "http": [ { "path_prefix": "/" } ] },
    { "name": "cached", "from": "client", "to": "up", "ports": [80], "http": [ { "path_prefix": "/" } ] }
  ],
  "cache": { "up:80": { "max_bytes": 1048576, "default_ttl_s": 600 } },
  "frontends": [
    { "name": "edge", "listen": "@HOST@:8803", "routes": [ { "path_prefix": "/api", "pool": "api" } ] }
  ],
  "pools": { "api": { "members": ["up:9303"] } },
  "log_drops": { "per_second": 100 }
}"#;

fn ok(_method: &str, target: &str) -> Reply {
    if target.starts_with("/api/missing") {
        Reply::Status(404)
    } else {
        Reply::Status(200)
    }
}

fn ask(mut s: std::net::TcpStream, path: &str) -> u16 {
    let req = format!("GET {path} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).expect("send");
    let a = read_answer(&mut s, 1, Duration::from_secs(5));
    a.responses
        .first()
        .unwrap_or_else(|| panic!("no response to GET {path}: {:?}", a.raw))
        .status
}

/// The value of the unlabelled series `name`.
fn series_plain(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The value of the series `name{labels}` exactly as rendered.
fn series(page: &str, name: &str, labels: &str) -> Option<f64> {
    let want = format!("{name}{{{labels}}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&want))
        .and_then(|v| v.trim().parse().ok())
}

pub fn run() {
    let lab = Lab::start(RULES);
    let _a = member::spawn(&lab, 9301, "a", ok);
    let _b = member::spawn(&lab, 9302, "b", ok);
    let _m = member::spawn(&lab, 9303, "m", ok);

    assert_eq!(ask(lab.connect(9301), "/ok/1"), 200);
    assert_eq!(ask(lab.connect(9301), "/ok/2"), 200);
    assert_eq!(ask(lab.connect(9301), "/denied"), 403);
    assert_eq!(ask(lab.connect(9302), "/any"), 200);
    // A cached service: the first GET is fetched and stored, the second
    // answered from the cache.
    assert_eq!(ask(lab.connect(80), "/cached"), 200);
    assert_eq!(ask(lab.connect(80), "/cached"), 200);
    assert_eq!(ask(lab.connect_frontend(8803), "/api/x"), 200);
    assert_eq!(ask(lab.connect_frontend(8803), "/api/missing"), 404);
    assert_eq!(ask(lab.connect_frontend(8803), "/nowhere"), 404);

    // No entry allows client → up:9399: nftables drops the SYN (and its
    // retransmissions), counted by the default-deny rule.
    let up = std::net::SocketAddr::from((lab.upstream_ip(), 9399));
    let refused = in_ns(&lab.client, || {
        std::net::TcpStream::connect_timeout(&up, Duration::from_millis(1500))
    });
    assert!(refused.is_err(), "a flow no entry allows was let through");
    // log_drops: the dropped SYN comes back through NFLOG as one JSON line
    // naming both containers and the port.
    let logged = |l: &str| {
        l.contains("kernel dropped a packet between managed containers")
            && l.contains("\"source\":\"client\"")
            && l.contains("\"destination\":\"up\"")
            && l.contains("\"protocol\":\"tcp\"")
            && l.contains("\"destination_port\":9399")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !lab.log().lines().any(logged) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        lab.log().lines().any(logged),
        "no drop log line:\n{}",
        lab.log()
    );
    let status = in_ns(&lab.host, || get("127.0.0.1:9901", "/status")).expect("GET /status");
    assert!(
        status.contains("\"drop_log\":{\"error\":null,\"group\":2121,\"reading\":true}"),
        "{status}"
    );

    let raw = in_ns(&lab.host, || get("127.0.0.1:9901", "/metrics")).expect("GET /metrics");
    let page = raw
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .expect("a response with a body");

    // promtool reads the page as Prometheus scrapes it; any parse error or
    // lint problem (exit 1 or 3) fails the test.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool not found: install Debian's prometheus package (ci/setup.sh)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(page.as_bytes())
        .expect("write to promtool");
    let out = promtool.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- page:\n{page}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The unlabelled totals keep their names and meaning.
    assert_eq!(lab.metric("requests_allowed_total"), 5);
    assert_eq!(lab.metric("requests_denied_total"), 1);

    // Access decisions under the entry's file position, or its name.
    let position = |decision: &str| -> f64 {
        let prefix = format!(
            "portcullis_requests_total{{entry_path=\"access\",decision=\"{decision}\",rule=\""
        );
        page.lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter_map(|l| l.split_once("\"} "))
            .find(|(rule, _)| rule.ends_with(":8:5 (access[0])"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {decision} series for access[0]:\n{page}"))
    };
    assert_eq!(position("allowed"), 2.0);
    assert_eq!(position("denied"), 1.0);
    let named = "entry_path=\"access\",decision=\"allowed\",rule=\"named-entry\"";
    assert_eq!(series(&page, "portcullis_requests_total", named), Some(1.0));

    // Frontend: routed under the route's file position, answered by the
    // member; the unrouted request is a refusal of the route table.
    assert!(
        page.lines().any(|l| l.starts_with(
            "portcullis_requests_total{entry_path=\"frontend\",decision=\"routed\",rule=\""
        ) && l.contains("(frontends[0].routes[0])\"} 2")),
        "{page}"
    );
    let member = |class: &str| {
        format!("entry_path=\"frontend\",frontend=\"edge\",pool=\"api\",member=\"up:9303\",status_class=\"{class}\"")
    };
    assert_eq!(
        series(&page, "portcullis_responses_total", &member("2xx")),
        Some(1.0)
    );
    assert_eq!(
        series(&page, "portcullis_responses_total", &member("4xx")),
        Some(1.0)
    );
    let access_2xx =
        "entry_path=\"access\",frontend=\"\",pool=\"\",member=\"\",status_class=\"2xx\"";
    assert_eq!(
        series(&page, "portcullis_responses_total", access_2xx),
        Some(3.0)
    );
    assert_eq!(
        series(
            &page,
            "portcullis_refusals_total",
            "status=\"404\",rule=\"frontend routes\""
        ),
        Some(1.0)
    );

    // Latency: one observation per forwarded request.
    assert_eq!(
        series(
            &page,
            "portcullis_request_duration_seconds_count",
            "entry_path=\"access\""
        ),
        Some(5.0)
    );
    assert_eq!(
        series(
            &page,
            "portcullis_upstream_duration_seconds_count",
            "entry_path=\"frontend\",pool=\"api\""
        ),
        Some(2.0)
    );
    // The cache, per service.
    let cache = |result: &str| format!("service=\"up:80\",result=\"{result}\"");
    assert_eq!(
        series(&page, "portcullis_cache_requests_total", &cache("miss")),
        Some(1.0)
    );
    assert_eq!(
        series(&page, "portcullis_cache_requests_total", &cache("hit")),
        Some(1.0)
    );
    let held = series(&page, "portcullis_cache_service_bytes", "service=\"up:80\"");
    assert!(held.is_some_and(|b| b > 0.0), "{page}");
    let served = series(
        &page,
        "portcullis_cache_response_bytes_total",
        "service=\"up:80\"",
    );
    assert!(served.is_some_and(|b| b > 0.0), "{page}");

    // Kernel drops, read from the default-deny rule's nftables counter.
    let drops = series(&page, "portcullis_kernel_drops_total", "family=\"ipv4\"")
        .unwrap_or_else(|| panic!("no kernel drop counter:\n{page}"));
    assert!(drops >= 1.0, "the dropped SYN was not counted: {drops}");
    assert_eq!(
        series(&page, "portcullis_kernel_drops_total", "family=\"ipv6\""),
        Some(0.0)
    );
    // The same drops per pair of containers, from the counters of the
    // drops4 set's elements: client -> up dropped; up -> client did not
    // (no series for a pair that dropped nothing).
    let pair = series(
        &page,
        "portcullis_kernel_pair_drops_total",
        "source=\"client\",destination=\"up\"",
    )
    .unwrap_or_else(|| panic!("no per-pair drop counter:\n{page}"));
    assert!(
        pair >= 1.0 && pair <= drops,
        "client -> up: {pair} of {drops}"
    );
    let bytes = series(
        &page,
        "portcullis_kernel_pair_dropped_bytes_total",
        "source=\"client\",destination=\"up\"",
    );
    assert!(bytes.is_some_and(|b| b >= 40.0 * pair), "{page}");
    assert!(
        !page.contains("source=\"up\",destination=\"client\""),
        "{page}"
    );

    assert!(page.contains("portcullis_kernel_drop_log_up 1\n"), "{page}");
    let logged = series_plain(&page, "portcullis_kernel_drops_logged_total");
    assert!(logged.is_some_and(|n| n >= 1.0), "{page}");
    assert!(page.contains("portcullis_build_info{version=\""), "{page}");
}
