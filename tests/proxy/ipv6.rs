//! IPv6 end to end (issue 11): the lab's IPv6 addresses, through the real
//! daemon's `inet` table and transparent proxy.
//!
//! Allowed HTTP is redirected into the proxy over IPv6 (the upstream sees
//! the `X-Portcullis-Source` only the proxy adds, so it did not bypass it),
//! a refused request gets the 403 naming its rule and never reaches the
//! upstream, a port without an access entry is dropped in the kernel (the
//! IPv6 default-deny counter rises), a port allowed at L4 connects, and
//! neighbour discovery between two managed containers on one bridge works
//! while the table is installed (it was dropped by the default deny before).

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use crate::lab::{self, in_ns, read_answer, Lab};

/// Line 11 is the HTTP-filtered entry (`rules.json:11:5 (access[0])`).
pub const RULES: &str = r#"{
  "version": 1,
  "containers": {
    "client": { "address": ["@CLIENT@", "@CLIENT6@"] },
    "client2": { "address": "@CLIENT26@" },
    "up": { "address": ["@UP@", "@UP6@"] },
    "nd1": { "address": "@ND1@" },
    "nd2": { "address": "@ND2@" }
  },
  "access": [
    { "from": "client", "to": "up", "ports": [80],
      "http": [ { "methods": ["GET"], "path_prefix": "/allowed" } ] },
    { "from": "client", "to": "up", "ports": [8080] },
    { "from": "nd1", "to": "nd2", "ports": [7000] }
  ]
}"#;

/// Packets counted by the IPv6 default-deny rule of the lab's table.
fn v6_drops(lab: &Lab) -> u64 {
    forward_counter(lab, "default deny between managed containers (ipv6)")
}

/// Packets accepted by the neighbour-discovery rule of the lab's table.
fn nd_accepted(lab: &Lab) -> u64 {
    forward_counter(lab, "ipv6 neighbour discovery on the link is never dropped")
}

/// The packet counter of the `forward` rule whose comment contains `which`.
fn forward_counter(lab: &Lab, which: &str) -> u64 {
    let out = lab.run_in(
        &lab.host,
        &["nft", "list", "chain", "inet", "portcullis", "forward"],
    );
    assert!(out.status.success(), "nft list failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains(which))
        .unwrap_or_else(|| panic!("no rule {which:?} in:\n{text}"));
    line.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no packet counter in {line}"))
}

fn http_from_client(lab: &Lab, port: u16, request: &str) -> lab::Answer {
    let mut s = lab
        .try_connect6(lab.client_ip6(), port, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("IPv6 connect to up:{port} failed: {e}"));
    let _ = s.write_all(request.as_bytes());
    read_answer(&mut s, 1, Duration::from_secs(5))
}

fn allow_and_deny_at_l7(lab: &Lab) {
    let host = format!("[{}]", lab.upstream_ip6());
    let before = lab.upstream_count();
    let allowed = http_from_client(
        lab,
        80,
        &format!("GET /allowed/x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(allowed.statuses(), vec![200], "{:?}", allowed.raw);
    let echo: serde_json::Value =
        serde_json::from_slice(&allowed.responses[0].body).expect("the test service's echo");
    let sources: Vec<&str> = echo["headers"]
        .as_array()
        .expect("echoed headers")
        .iter()
        .filter(|h| {
            h[0].as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case("x-portcullis-source"))
        })
        .filter_map(|h| h[1].as_str())
        .collect();
    assert_eq!(
        sources,
        vec!["client"],
        "the upstream saw the proxy's source header, so the IPv6 flow went through the proxy: {echo}"
    );
    assert_eq!(echo["path"], "/allowed/x", "{echo}");
    // The upstream was reached from the host namespace (the proxy's own
    // IPv6 connection to the original destination).
    let peer = echo["peer"].as_str().unwrap_or_default();
    assert!(
        peer.starts_with(&format!("[{}]:", lab.host_ip6())),
        "the upstream's peer is the proxy over IPv6: {peer}"
    );
    assert_eq!(lab.upstream_count(), before + 1);

    let denied_before = lab.metric("requests_denied_total");
    let refused = http_from_client(
        lab,
        80,
        &format!("DELETE /allowed/x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(refused.statuses(), vec![403], "{:?}", refused.raw);
    let body = refused.responses[0].text();
    assert!(
        body.starts_with("portcullis: denied by ") && body.contains("rules.json:11:5 (access[0])"),
        "the 403 names the rule: {body}"
    );
    let other_path = http_from_client(
        lab,
        80,
        &format!("GET /secret HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(other_path.statuses(), vec![403], "{:?}", other_path.raw);
    assert_eq!(
        lab.upstream_count(),
        before + 1,
        "no refused IPv6 request reached the upstream"
    );
    assert_eq!(lab.metric("requests_denied_total") - denied_before, 2);
    let log = lab.log();
    assert!(
        log.contains(&format!("\"destination\":\"[{}]:80\"", lab.upstream_ip6())),
        "the refusal is logged with the IPv6 original destination; log:\n{log}"
    );
}

fn l4_allow_and_drop(lab: &Lab) {
    // Allowed at L4 without HTTP rules: accepted in the kernel, no proxy.
    let before = lab.upstream_count();
    let plain = http_from_client(
        lab,
        8080,
        "GET /anything HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(plain.statuses(), vec![200], "{:?}", plain.raw);
    let echo: serde_json::Value =
        serde_json::from_slice(&plain.responses[0].body).expect("the test service's echo");
    assert!(
        echo["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with(&format!("[{}]:", lab.client_ip6()))),
        "an L4 flow is not proxied: the upstream sees the client itself: {echo}"
    );
    assert_eq!(lab.upstream_count(), before + 1);

    // No access entry for 8081: dropped in the kernel, counted there.
    let drops = v6_drops(lab);
    let r = lab.try_connect6(lab.client_ip6(), 8081, Duration::from_secs(2));
    assert!(
        r.is_err(),
        "IPv6 to a port without an access entry connected"
    );
    // Another managed source has no entry at all, not even for port 80.
    let r = lab.try_connect6(lab.client2_ip6(), 80, Duration::from_secs(2));
    assert!(r.is_err(), "client2 reached up over IPv6 without an entry");
    assert!(
        v6_drops(lab) >= drops + 2,
        "the IPv6 default deny counted the dropped SYNs ({drops} -> {})",
        v6_drops(lab)
    );
    assert_eq!(
        lab.upstream_count(),
        before + 1,
        "nothing dropped reached up"
    );
}

/// A neighbour solicitation sent from the client to the upstream is
/// routed by the host namespace, so it reaches `forward` with hop limit
/// 254: not on-link ND, and the default deny drops it like any other
/// ICMPv6 between managed containers (the ND exception is no tunnel).
fn routed_nd_stays_denied(lab: &Lab) {
    let (nd_before, drops_before) = (nd_accepted(lab), v6_drops(lab));
    let src = SocketAddr::new(lab.client_ip6().into(), 0);
    let dst = SocketAddr::new(lab.upstream_ip6().into(), 0);
    in_ns(&lab.client, move || -> std::io::Result<()> {
        use socket2::{Domain, Protocol, Socket, Type};
        let sock = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
        sock.bind(&src.into())?;
        sock.set_unicast_hops_v6(255)?;
        // Type 135, code 0, checksum (the kernel fills it in for ICMPv6
        // raw sockets), reserved, then the target address.
        let mut ns = vec![135u8, 0, 0, 0, 0, 0, 0, 0];
        if let SocketAddr::V6(d) = dst {
            ns.extend_from_slice(&d.ip().octets());
        }
        for _ in 0..3 {
            sock.send_to(&ns, &dst.into())?;
        }
        Ok(())
    })
    .expect("send a neighbour solicitation over the routed path");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        nd_accepted(lab),
        nd_before,
        "a routed (hop limit 254) solicitation was accepted as ND"
    );
    assert!(
        v6_drops(lab) >= drops_before + 3,
        "the routed solicitations were dropped by the default deny ({drops_before} -> {})",
        v6_drops(lab)
    );
}

fn neighbour_discovery(lab: &mut Lab) {
    let nd_before = nd_accepted(lab);
    let (nd1, nd2) = lab.add_bridged_pair();
    let dst = SocketAddr::new(lab.nd_ip(2).into(), 7000);
    let listener: TcpListener =
        in_ns(&nd2, move || TcpListener::bind(dst)).expect("listener in nd2");
    // Bridged, on-link: nd1 must resolve nd2 by neighbour solicitation and
    // hear its (unicast, managed-to-managed) advertisement back.
    let src = SocketAddr::new(lab.nd_ip(1).into(), 0);
    let conn = lab::try_connect_in(&nd1, src, dst, Duration::from_secs(5));
    let neigh = lab.run_in(&nd1, &["ip", "-6", "neigh", "show", "dev", "eth0"]);
    let neigh = String::from_utf8_lossy(&neigh.stdout).into_owned();
    assert!(
        conn.is_ok(),
        "nd1 -> nd2:7000 (allowed at L4) did not connect over a bridge: {conn:?}; nd1's neighbours:\n{neigh}"
    );
    let (_accepted, peer) = listener.accept().expect("accept in nd2");
    assert_eq!(peer.ip(), lab.nd_ip(1));
    assert!(
        nd_accepted(lab) > nd_before,
        "the bridged ND went through the table's ND rule"
    );
    let entry = neigh
        .lines()
        .find(|l| l.starts_with(&lab.nd_ip(2).to_string()))
        .unwrap_or_else(|| panic!("nd1 has no neighbour entry for nd2:\n{neigh}"));
    assert!(
        ["REACHABLE", "STALE", "DELAY", "PROBE"]
            .iter()
            .any(|s| entry.contains(s)),
        "nd2's neighbour entry is resolved: {entry}"
    );
    // The way back is resolved too (nd2 answered nd1's solicitation and
    // learnt nd1), and the default deny still holds on the bridge: nd2 may
    // not open a connection to nd1.
    let back = SocketAddr::new(lab.nd_ip(1).into(), 7001);
    let _l1 = in_ns(&nd1, move || TcpListener::bind(back)).expect("listener in nd1");
    let src2 = SocketAddr::new(lab.nd_ip(2).into(), 0);
    let r = lab::try_connect_in(&nd2, src2, back, Duration::from_secs(2));
    assert!(r.is_err(), "nd2 -> nd1 has no access entry but connected");
}

pub fn run() {
    let mut lab = Lab::start_dual_stack(RULES);
    allow_and_deny_at_l7(&lab);
    l4_allow_and_drop(&lab);
    routed_nd_stays_denied(&lab);
    neighbour_discovery(&mut lab);
}
