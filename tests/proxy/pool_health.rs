//! Passive health through the real proxy: a client cannot eject members.
//! A frontend on the host namespace fronts pools of test-made members
//! that answer `BREW` with 501 and `/bad` with 502; whatever a client
//! sends, the pool keeps serving, and the members receive every request.

use std::io::Write;
use std::time::Duration;

use crate::lab::{read_answer, Lab};
use crate::member::{self, Reply};

const RULES: &str = r#"{
  "version": 1,
  "containers": { "up": { "address": "@UP@" } },
  "frontends": [
    { "name": "pair", "listen": "@HOST@:8800", "routes": [], "default_pool": "pair" },
    { "name": "solo", "listen": "@HOST@:8801", "routes": [], "default_pool": "solo" }
  ],
  "pools": {
    "pair": { "members": ["up:9101", "up:9102"], "retries": 1 },
    "solo": { "members": ["up:9103"] }
  }
}"#;

fn behave(method: &str, target: &str) -> Reply {
    match (method, target) {
        ("BREW", _) => Reply::Status(501),
        (_, "/bad") => Reply::Status(502),
        _ => Reply::Status(200),
    }
}

/// One request on a fresh connection to the frontend on `port`; its status
/// and body.
fn ask(lab: &Lab, port: u16, method: &str, path: &str) -> (u16, String) {
    let mut s = lab.connect_frontend(port);
    let req = format!("{method} {path} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).expect("send");
    let a = read_answer(&mut s, 1, Duration::from_secs(5));
    let r = a
        .responses
        .first()
        .unwrap_or_else(|| panic!("no response to {method} {path}: {:?}", a.raw));
    (r.status, r.text())
}

pub fn run() {
    let lab = Lab::start(RULES);
    let a = member::spawn(&lab, 9101, "a", behave);
    let b = member::spawn(&lab, 9102, "b", behave);
    let solo = member::spawn(&lab, 9103, "solo", behave);

    // `BREW /` ten times per member: each is the member's own 501, relayed;
    // a member that answers is alive, so nothing is ejected.
    let brews: Vec<u16> = (0..20).map(|_| ask(&lab, 8800, "BREW", "/").0).collect();
    assert_eq!(brews, [501; 20], "every BREW reached a member");
    assert_eq!((a.count("BREW "), b.count("BREW ")), (10, 10));
    let mut served = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let (status, who) = ask(&lab, 8800, "GET", "/after-brew");
        assert_eq!(status, 200, "the pool still serves after BREW abuse");
        served.insert(who);
    }
    assert_eq!(
        served.len(),
        2,
        "both members still in rotation: {served:?}"
    );
    assert_eq!(a.count("GET /after-brew") + b.count("GET /after-brew"), 10);

    // Members answering 502 (a client can find a path that does that, e.g.
    // behind a member that is itself a gateway): at most half of the pool
    // is ejected, never all of it.
    for _ in 0..20 {
        assert_eq!(ask(&lab, 8800, "GET", "/bad").0, 502);
    }
    for _ in 0..10 {
        assert_eq!(
            ask(&lab, 8800, "GET", "/after-bad").0,
            200,
            "the pool still serves after 502 abuse"
        );
    }
    assert_eq!(a.count("GET /after-bad") + b.count("GET /after-bad"), 10);
    assert!(
        lab.log().contains("it would leave too few members usable"),
        "the refused ejection is logged:\n{}",
        lab.log()
    );

    // A pool of one is never emptied by responses.
    for _ in 0..10 {
        assert_eq!(ask(&lab, 8801, "BREW", "/").0, 501);
        assert_eq!(ask(&lab, 8801, "GET", "/bad").0, 502);
    }
    assert_eq!(ask(&lab, 8801, "GET", "/after").0, 200);
    assert_eq!(
        (
            solo.count("BREW "),
            solo.count("GET /bad"),
            solo.count("GET /after")
        ),
        (10, 10, 1),
        "the lone member received every request"
    );
}
