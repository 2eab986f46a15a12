//! A Docker engine that cannot be reached does not stop the daemon: it
//! starts with what it knows (fixed addresses enforced, Docker containers
//! unplaced, Docker networks of `guard.networks` unresolved), and says so
//! in `status`, `/metrics` and the log.

use std::process::Command;

use crate::lab::{exchange, in_ns, Lab};

const RULES: &str = r#"{
  "version": 1,
  "guard": { "networks": [{ "docker_network": "portcullis-test-no-such-network" }] },
  "containers": {
    "client": { "address": "@CLIENT@" },
    "up": { "address": "@UP@" },
    "web": { "docker": "portcullis-test-no-such-container" }
  },
  "access": [
    { "from": "client", "to": "up", "ports": [80],
      "http": [ { "methods": ["GET"], "path_prefix": "/foo" } ] },
    { "from": "web", "to": "up", "ports": [80] }
  ]
}"#;

pub fn run() {
    let lab = Lab::start_with(RULES, &["--docker-socket", "/nonexistent/docker.sock"]);
    // Fixed containers are enforced as usual.
    let a = exchange(&lab, 80, b"GET /foo HTTP/1.1\r\nHost: up\r\n\r\n", 1);
    assert_eq!(a.statuses(), vec![200]);
    let a = exchange(&lab, 80, b"GET /bar HTTP/1.1\r\nHost: up\r\n\r\n", 1);
    assert_eq!(a.statuses(), vec![403]);

    assert_eq!(lab.metric("docker_engine_up"), 0);
    assert_eq!(lab.metric("docker_unresolved_containers"), 1);
    assert_eq!(lab.metric("docker_unresolved_networks"), 1);
    let host = lab.host.clone();
    let status = in_ns(&host, || {
        Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["status", "--admin", "127.0.0.1:9901"])
            .output()
            .expect("run portcullis status")
    });
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status prints JSON");
    assert_eq!(v["docker"]["engine_up"], false, "{v}");
    assert_eq!(v["docker"]["unresolved"], serde_json::json!(["web"]), "{v}");
    // The guarded network is unresolved, so it guards nothing: said, not silent.
    assert_eq!(
        v["docker"]["unresolved_networks"],
        serde_json::json!(["portcullis-test-no-such-network"]),
        "{v}"
    );
    assert_eq!(
        v["docker"]["networks"],
        serde_json::json!({ "portcullis-test-no-such-network": [] }),
        "{v}"
    );
    let log = lab.log();
    assert!(
        log.contains("docker engine unreachable"),
        "the unreachable engine is logged; log:\n{log}"
    );
    assert!(
        log.contains("docker containers without a known address"),
        "the unplaced container is logged; log:\n{log}"
    );
    assert!(
        log.contains("guarded docker networks without a known subnet"),
        "the unresolved guarded network is logged; log:\n{log}"
    );
}
