//! Drift repair: when something other than Portcullis flushes, deletes or
//! edits table `inet portcullis`, the daemon notices (nftables change
//! notifications), applies its rules again, counts and logs it — and what
//! is enforced is what the rule file says again: the redirected flow is
//! checked by the proxy, the flow no rule allows is dropped.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::lab::{exchange, in_ns, Lab};

const RULES: &str = r#"{
  "version": 1,
  "containers": { "client": { "address": "@CLIENT@" }, "up": { "address": "@UP@" } },
  "access": [
    { "from": "client", "to": "up", "ports": [80],
      "http": [ { "methods": ["GET"], "path_prefix": "/foo" } ] }
  ]
}"#;

fn nft(lab: &Lab, args: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.host, "nft"])
        .args(args.split(' '))
        .stdin(Stdio::null())
        .output()
        .expect("run nft in the lab's host namespace");
    assert!(
        out.status.success(),
        "nft {args} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits for the `n`-th repair and returns how long it took.
fn repaired(lab: &Lab, n: u64, what: &str) -> Duration {
    let start = Instant::now();
    while lab.metric("nft_drift_repairs_total") < n {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{what}: not repaired within 5 s; log:\n{}",
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// What the kernel holds, without counters.
fn table(lab: &Lab) -> String {
    nft(lab, "-s list table inet portcullis")
}

/// The enforcement the rules ask for: GET /foo passes the proxy, GET /bar
/// is refused by it, port 8080 is dropped in the kernel.
fn enforced(lab: &Lab, after: &str) {
    let a = exchange(lab, 80, b"GET /foo HTTP/1.1\r\nHost: up\r\n\r\n", 1);
    assert_eq!(a.statuses(), vec![200], "{after}: allowed request");
    let a = exchange(lab, 80, b"GET /bar HTTP/1.1\r\nHost: up\r\n\r\n", 1);
    assert_eq!(a.statuses(), vec![403], "{after}: refused request");
    let up = lab.upstream(8080);
    let client = lab.client.clone();
    let dropped = in_ns(&client, move || {
        std::net::TcpStream::connect_timeout(&up, Duration::from_millis(500))
    });
    assert!(dropped.is_err(), "{after}: port 8080 must stay dropped");
}

pub fn run() {
    let lab = Lab::start(RULES);
    assert_eq!(lab.metric("nft_in_sync"), 1);
    let original = table(&lab);
    enforced(&lab, "at start");

    let tampering = [
        ("flush ruleset", "flush ruleset"),
        ("delete table", "delete table inet portcullis"),
        (
            "add element (a widening)",
            &*format!(
                "add element inet portcullis allow4 {{ {} . {} . tcp . 8080 }}",
                lab.client_ip(),
                lab.upstream_ip()
            ),
        ),
        ("flush chain", "flush chain inet portcullis forward"),
    ];
    for (n, (what, cmd)) in tampering.iter().enumerate() {
        nft(&lab, cmd);
        let took = repaired(&lab, n as u64 + 1, what);
        eprintln!("drift after `{what}` repaired in {took:?}");
        assert!(
            took < Duration::from_secs(2),
            "{what}: repair took {took:?} (the daemon promises about 1 s)"
        );
        assert_eq!(table(&lab), original, "{what}: the table is whole again");
        assert_eq!(lab.metric("nft_in_sync"), 1, "{what}");
        enforced(&lab, what);
    }
    let log = lab.log();
    assert!(
        log.contains("nftables drift repaired"),
        "repairs are logged; log:\n{log}"
    );
    assert!(log.contains("was removed by something other than portcullis"));
    assert!(log.contains("was changed by something other than portcullis"));
    // Only the tampering counted: a quiet table is not "repaired" again.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        lab.metric("nft_drift_repairs_total"),
        tampering.len() as u64
    );
}
