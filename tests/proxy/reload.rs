//! `portcullis reload` (the systemd unit's `ExecReload`): it asks the running
//! daemon to reload over the admin endpoint and exits with the reload's
//! result, so `systemctl reload` fails exactly when the new file was refused
//! — a broken file, or a valid one the daemon cannot apply — and the rules in
//! force do not change. (tests/systemd/run.sh drives the same through a real
//! systemd.)

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::lab::{get, in_ns, read_answer, Lab};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

const RULES: &str = r#"{
  "version": 1,
  "containers": { "client": { "address": "@CLIENT@" }, "up": { "address": "@UP@" } },
  "access": [
    { "from": "client", "to": "up", "ports": [80],
      "http": [ { "methods": ["GET"], "path_prefix": "/a" } ] }
  ]
}"#;

fn reload(lab: &Lab) -> Output {
    Command::new("ip")
        .args(["netns", "exec", &lab.host, BIN, "reload"])
        .stdin(Stdio::null())
        .output()
        .expect("run portcullis reload")
}

fn write_rules(lab: &Lab, template: &str) {
    let text = template
        .replace("@CLIENT@", &lab.client_ip().to_string())
        .replace("@UP@", &lab.upstream_ip().to_string());
    std::fs::write(lab.rules_path(), text).expect("rewrite rules");
}

/// The status of `GET path` from the client, and whether it reached the upstream.
fn request(lab: &Lab, path: &str) -> (u16, bool) {
    let before = lab.upstream_count();
    let mut s = lab.connect(80);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let answer = read_answer(&mut s, 1, Duration::from_secs(5));
    let status = answer.statuses().first().copied().unwrap_or(0);
    (status, lab.upstream_count() > before)
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}, stdout {:?}, stderr {:?}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn run() {
    let lab = Lab::start(RULES);
    assert_eq!(request(&lab, "/b"), (403, false));

    // A changed, valid file: exit 0 once it is in force.
    write_rules(&lab, &RULES.replace(r#""/a""#, r#""/b""#));
    let out = reload(&lab);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("reloaded: rules version "));
    assert_eq!(
        request(&lab, "/b"),
        (200, true),
        "no wait: reload returned after applying"
    );

    // A broken file: exit 1 with the file position; the rules stay.
    let failures = lab.metric("reload_failures_total");
    std::fs::write(lab.rules_path(), "{ \"version\": 1, \"containers\": ").expect("write");
    let out = reload(&lab);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reload refused, the previous rules stay in force: ")
            && err.contains("rules.json:1:"),
        "{}",
        text(&out)
    );
    assert!(lab.metric("reload_failures_total") > failures);
    assert_eq!(request(&lab, "/b"), (200, true));
    assert_eq!(request(&lab, "/a"), (403, false));

    // A valid file the daemon cannot apply without a restart: exit 1 too.
    write_rules(
        &lab,
        &RULES.replace(r#""/a""#, r#""/b""#).replace(
            r#""version": 1,"#,
            r#""version": 1, "proxy": { "listen_port": 15999 },"#,
        ),
    );
    let check = Command::new(BIN)
        .args(["check"])
        .arg(lab.rules_path())
        .output()
        .expect("portcullis check");
    assert!(
        check.status.success(),
        "the file is valid: {}",
        text(&check)
    );
    let out = reload(&lab);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("restart the daemon"),
        "{}",
        text(&out)
    );
    assert_eq!(request(&lab, "/b"), (200, true));

    // Only POST reloads.
    let answer = in_ns(&lab.host, || get("127.0.0.1:9901", "/reload")).expect("admin answers");
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
}
