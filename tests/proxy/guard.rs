//! Guarded networks (`guard.networks`): an address of a guarded network
//! that belongs to no known container is dropped by the kernel to and
//! from managed containers — it never reaches the upstream, nor the proxy
//! — while known, allowed containers still pass; a reload that places the
//! address lets it through.

use std::io::Write;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use crate::lab::{read_answer, Lab};

/// `client2` (@CLIENT2@) is in the guarded network but in no container.
const RULES: &str = r#"{
  "version": 1,
  "guard": { "networks": ["198.19.0.0/16"] },
  "containers": { "client": { "address": "@CLIENT@" }, "up": { "address": "@UP@" } },
  "access": [
    { "from": "client", "to": "up", "ports": [80], "http": [ { "path_prefix": "/" } ] }
  ]
}"#;

/// The same, with client2 placed and allowed.
const PLACED: &str = r#"{
  "version": 1,
  "guard": { "networks": ["198.19.0.0/16"] },
  "containers": { "client": { "address": "@CLIENT@" }, "client2": { "address": "@CLIENT2@" },
                  "up": { "address": "@UP@" } },
  "access": [
    { "from": ["client", "client2"], "to": "up", "ports": [80], "http": [ { "path_prefix": "/" } ] }
  ]
}"#;

const GET: &[u8] = b"GET /guard HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n";
const PATIENCE: Duration = Duration::from_millis(1500);

fn reload(lab: &Lab, template: &str) {
    let before = lab.metric("reloads_total");
    let text = template
        .replace("@CLIENT2@", &lab.client2_ip().to_string())
        .replace("@CLIENT@", &lab.client_ip().to_string())
        .replace("@UP@", &lab.upstream_ip().to_string());
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(lab.rules_path(), text).expect("rewrite rules");
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.metric("reloads_total") == before {
        assert!(
            Instant::now() < deadline,
            "the daemon did not reload; log:\n{}",
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Packets counted by the forward rule whose comment contains `what`.
fn counted(lab: &Lab, what: &str) -> u64 {
    let chain = lab.forward_chain();
    let line = chain
        .lines()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no rule {what:?} in\n{chain}"));
    line.split("counter packets ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {line}"))
}

fn served(lab: &Lab, src: std::net::Ipv4Addr) -> Vec<u16> {
    let mut s = lab.connect_from(src, 80);
    s.write_all(GET).expect("send");
    read_answer(&mut s, 1, Duration::from_secs(5)).statuses()
}

#[test]
fn unplaced_address_in_a_guarded_network_is_dropped_until_placed() {
    let lab = Lab::start(RULES);
    let up80 = SocketAddrV4::new(lab.upstream_ip(), 80);

    // The known, allowed client is served as before.
    let before = lab.upstream_count();
    assert_eq!(served(&lab, lab.client_ip()), [200]);
    assert_eq!(lab.upstream_count(), before + 1);

    // client2: no connection to the upstream, directly or via the proxy.
    let before = lab.upstream_count();
    let out = lab.try_connect_in(&lab.client, lab.client2_ip(), up80, PATIENCE);
    assert!(
        out.is_err(),
        "an unplaced address connected to a managed container"
    );
    assert_eq!(lab.upstream_count(), before, "HTTP reached the upstream");
    assert!(counted(&lab, "guard deny unplaced -> managed") > 0);

    // Nor the other way: the managed upstream cannot reach client2.
    let listener = crate::lab::in_ns(&lab.client, || {
        std::net::TcpListener::bind(SocketAddrV4::new(lab.client2_ip(), 7070))
    })
    .expect("listen on client2");
    let back = lab.try_connect_in(
        &lab.upstream,
        lab.upstream_ip(),
        SocketAddrV4::new(lab.client2_ip(), 7070),
        PATIENCE,
    );
    assert!(
        back.is_err(),
        "a managed container reached an unplaced address"
    );
    assert!(counted(&lab, "guard deny managed -> unplaced") > 0);
    drop(listener);

    // Placed and allowed by a reload: client2 is served.
    reload(&lab, PLACED);
    let before = lab.upstream_count();
    assert_eq!(served(&lab, lab.client2_ip()), [200]);
    assert_eq!(lab.upstream_count(), before + 1);
    assert_eq!(served(&lab, lab.client_ip()), [200]);
}
