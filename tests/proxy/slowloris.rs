//! Slowloris: many connections that trickle a request head and never end
//! it. The proxy must keep serving others and answer each slow one `408`
//! once `header_timeout_ms` has passed.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::lab::{exchange, read_answer, Lab};

const SLOW: usize = 300;

const RULES: &str = r#"{
  "version": 1,
  "containers": {
    "client": { "address": ["@CLIENT@", "@CLIENT2@"] },
    "up": { "address": "@UP@" }
  },
  "access": [
    { "from": "client", "to": "up", "ports": [80], "http": [ { "methods": ["GET"], "path_prefix": "/foo" } ] }
  ],
  "limits": { "header_timeout_ms": 2000, "idle_timeout_ms": 30000 }
}"#;

pub fn run() {
    let lab = Lab::start(RULES);
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|_| {
            let mut s = lab.connect(80);
            s.write_all(b"GET /foo HTTP/1.1\r\nHost: up\r\nX-Slow: ")
                .expect("slow client write");
            s
        })
        .collect();
    // Keep them trickling one byte at a time, as a slowloris does.
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = {
        let stop = stop.clone();
        let mut clones: Vec<TcpStream> = slow.iter().filter_map(|s| s.try_clone().ok()).collect();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for s in &mut clones {
                    let _ = s.write_all(b"a");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    // A normal client is served meanwhile, more than once.
    let before = lab.upstream_count();
    for _ in 0..5 {
        let a = exchange(
            &lab,
            80,
            b"GET /foo HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n",
            1,
        );
        assert_eq!(
            a.statuses(),
            [200],
            "a normal client while {SLOW} slow ones wait: {a:?}"
        );
    }
    assert_eq!(lab.upstream_count() - before, 5);
    // Every slow client gets 408 and is closed.
    let mut timed_out = 0;
    for s in &mut slow {
        let a = read_answer(s, 1, Duration::from_secs(20));
        if a.statuses() == [408] && a.closed {
            timed_out += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = trickle.join();
    assert_eq!(timed_out, SLOW, "slow clients answered 408 and closed");
    assert!(lab.metric("requests_timeout_total") >= SLOW as u64);
    assert_eq!(
        lab.upstream_count() - before,
        5,
        "no slow request reached the upstream"
    );
}
