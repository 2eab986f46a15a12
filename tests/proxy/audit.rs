//! Audit mode never blocks (spec/rules.md `mode`): what enforce mode would
//! refuse is let through, counted and logged as `audit_deny` — also the
//! proxy's own default deny for a request on a flow that no access entry
//! owns any more (the rules changed under an open keep-alive connection).

use std::io::Write;
use std::time::{Duration, Instant};

use crate::lab::{read_answer, Lab};

const RULES: &str = r#"{
  "version": 1, "mode": "@MODE@",
  "containers": { "client": { "address": "@CLIENT@" }, "up": { "address": "@UP@" } },
  "access": [
    { "from": "client", "to": "up", "ports": [80],
      "http": [ { "methods": ["GET"], "path_prefix": "/foo" } ] }
  ]
}"#;

/// The same containers with no access entry at all.
const NO_ENTRY: &str = r#"{
  "version": 1, "mode": "@MODE@",
  "containers": { "client": { "address": "@CLIENT@" }, "up": { "address": "@UP@" } },
  "access": []
}"#;

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: up\r\n\r\n").into_bytes()
}

/// Rewrites the lab's rule file and waits until the daemon has loaded it.
fn reload(lab: &Lab, template: &str, mode: &str) {
    let before = lab.metric("reloads_total");
    let text = template
        .replace("@MODE@", mode)
        .replace("@CLIENT@", &lab.client_ip().to_string())
        .replace("@UP@", &lab.upstream_ip().to_string());
    // A new mtime second, so the daemon's file watch cannot miss it.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(lab.rules_path(), text).expect("rewrite rules");
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.metric("reloads_total") == before {
        assert!(
            Instant::now() < deadline,
            "the daemon did not reload the rule file; log:\n{}",
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One lab per mode: a request matchers refuse, then a request on a
/// keep-alive connection whose flow lost its entry.
fn run_mode(mode: &str) -> (Vec<u16>, u64, u64) {
    let lab = Lab::start(&RULES.replace("@MODE@", mode));
    let counted = lab.upstream_count();
    let mut statuses = Vec::new();

    let mut s = lab.connect(80);
    s.write_all(&get("/admin")).expect("send");
    let a = read_answer(&mut s, 1, Duration::from_secs(2));
    statuses.extend(a.statuses());

    // Keep this connection open across a reload that removes the entry:
    // the flow stays with the proxy, which no longer finds an owner.
    s.write_all(&get("/foo")).expect("send");
    let a = read_answer(&mut s, 1, Duration::from_secs(2));
    statuses.extend(a.statuses());
    reload(&lab, NO_ENTRY, mode);
    s.write_all(&get("/foo/after-reload")).expect("send");
    let a = read_answer(&mut s, 1, Duration::from_secs(2));
    statuses.extend(a.statuses());

    let reached = lab.upstream_count() - counted;
    let audit_denied = lab.metric("requests_audit_denied_total");
    let log = lab.log();
    if mode == "audit" {
        assert_eq!(
            log.lines().filter(|l| l.contains("audit_deny")).count() as u64,
            audit_denied,
            "every audit_deny is logged; log:\n{log}"
        );
        assert!(
            log.contains("denied by default: no access entry allows client"),
            "the unowned request's audit_deny names the default; log:\n{log}"
        );
    }
    (statuses, reached, audit_denied)
}

pub fn run() {
    // Enforce mode: the matcher refusal and the default deny are 403s.
    let (statuses, reached, audit_denied) = run_mode("enforce");
    assert_eq!(statuses, vec![403, 200, 403], "enforce mode");
    assert_eq!(reached, 1, "enforce mode: only the allowed request reached");
    assert_eq!(audit_denied, 0);

    // Audit mode: nothing is blocked; both would-be denials are counted.
    let (statuses, reached, audit_denied) = run_mode("audit");
    assert_eq!(
        statuses,
        vec![200, 200, 200],
        "audit mode must never block, including the default deny"
    );
    assert_eq!(reached, 3, "audit mode: every request reached the upstream");
    assert_eq!(audit_denied, 2, "audit mode counts both would-be denials");
}
