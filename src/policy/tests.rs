//! Decision tests on the example rule file of `spec/rules.md`: the same
//! probes the three-container test sends, answered by the policy alone.

use super::*;

fn policy(text: &str) -> Policy {
    let set = crate::rules::parse("rules.json", text).expect("valid rules");
    Policy::compile(set).expect("compiles")
}

fn example() -> Policy {
    policy(include_str!("../../rules/example.json"))
}

fn req<'a>(
    p: &Policy,
    method: &'a str,
    path: &'a str,
    headers: &'a [httparse::Header<'a>],
) -> Decision {
    let (app2, app1) = (
        p.container_id("app2").unwrap(),
        p.container_id("app1").unwrap(),
    );
    let entry = p.flow(app2, app1, L4::Tcp, 80).expect("entry");
    let norm = match normalize::normalize_path(path) {
        Ok(n) => n,
        Err(e) => return Policy::refuse_path(e),
    };
    p.decide_request(
        entry,
        &RequestView {
            method,
            path: &norm,
            headers,
        },
    )
}

#[test]
fn scenario_2_requests() {
    let p = example();
    let bar = [httparse::Header {
        name: "x-bar",
        value: b"bar",
    }];
    let baz = [httparse::Header {
        name: "X-Bar",
        value: b"baz",
    }];
    let twice = [
        httparse::Header {
            name: "X-Bar",
            value: b"bar",
        },
        httparse::Header {
            name: "X-Bar",
            value: b"bar",
        },
    ];
    let allowed: [(&str, &str, &[httparse::Header]); 4] = [
        ("GET", "/foo", &[]),
        ("GET", "/foo/x", &[]),
        ("GET", "/foo/", &[]),
        ("PUT", "/bar", &bar),
    ];
    for (m, path, h) in allowed {
        let d = req(&p, m, path, h);
        assert_eq!(d.verdict, Verdict::Allow, "{m} {path}: {d:?}");
        assert_eq!(d.layer, Layer::Proxy);
        assert!(d.rule.unwrap().path.starts_with("access[0].http["));
    }
    let denied: [(&str, &str, &[httparse::Header]); 7] = [
        ("POST", "/foo", &[]),
        ("GET", "/bar", &[]),
        ("PUT", "/bar", &[]),
        ("PUT", "/bar", &baz),
        ("PUT", "/bar", &twice),
        ("GET", "/foobar", &[]),
        ("GET", "/foo/../admin", &[]),
    ];
    for (m, path, h) in denied {
        let d = req(&p, m, path, h);
        assert_eq!(d.verdict, Verdict::Deny, "{m} {path}: {d:?}");
        assert_eq!(d.status, Some(403));
        assert_eq!(d.rule.as_ref().unwrap().path, "access[0]");
        assert_eq!(d.rule.unwrap().pos.line, 9, "rule named by its line");
    }
    let d = req(&p, "GET", "/foo/%2e%2e/%2e%2e/etc", &[]);
    assert_eq!(
        (d.verdict, d.status, d.rule),
        (Verdict::Deny, Some(400), None)
    );
}

#[test]
fn scenario_1_and_other_ports_are_default_deny() {
    let p = example();
    let id = |n| p.container_id(n).unwrap();
    for (from, port, proto) in [
        ("app3", 80, L4::Tcp),
        ("app3", 8080, L4::Tcp),
        ("app3", 53, L4::Udp),
        ("app2", 8080, L4::Tcp),
        ("app2", 80, L4::Udp),
    ] {
        let d = p.decide_flow(id(from), id("app1"), proto, port);
        assert_eq!(
            (d.verdict, d.layer, d.rule),
            (Verdict::Deny, Layer::Nftables, None),
            "{from} {port}"
        );
        assert!(d.reason.starts_with("default deny"));
    }
    let d = p.decide_flow(id("app2"), id("app1"), L4::Tcp, 80);
    assert_eq!((d.verdict, d.layer), (Verdict::Allow, Layer::Nftables));
    assert!(d.reason.contains("redirected to the proxy"));
}

#[test]
fn audit_mode_lets_denials_through_but_says_so() {
    let text = include_str!("../../rules/example.json").replacen(
        "\"version\": 1,",
        "\"version\": 1, \"mode\": \"audit\",",
        1,
    );
    let p = policy(&text);
    let d = req(&p, "POST", "/foo", &[]);
    assert_eq!(d.verdict, Verdict::Allow);
    assert!(d.audit_deny && d.reason.starts_with("audit_deny"));
    let id = |n| p.container_id(n).unwrap();
    let d = p.decide_flow(id("app3"), id("app1"), L4::Tcp, 80);
    assert!(d.audit_deny && d.verdict == Verdict::Allow);
}

#[test]
fn per_entry_audit_overrides_global_enforce() {
    let p = policy(
        r#"{"version":1,"containers":{"a":{"address":"198.19.0.2"},"b":{"address":"198.19.0.3"}},
        "access":[{"from":"a","to":"b","ports":[80],"mode":"audit","http":[{"methods":["GET"]}]}]}"#,
    );
    let e = p.flow(0, 1, L4::Tcp, 80).unwrap();
    let d = p.decide_request(
        e,
        &RequestView {
            method: "DELETE",
            path: "/",
            headers: &[],
        },
    );
    assert!(d.audit_deny && d.verdict == Verdict::Allow);
    assert!(!p.audit);
}

#[test]
fn header_conditions() {
    let p = policy(
        r#"{"version":1,"containers":{"a":{"address":"198.19.0.2"},"b":{"address":"198.19.0.3"}},
        "access":[{"from":["a"],"to":"b","ports":[80],"http":[
          {"headers":{"X-Tok":{"prefix":"ab"},"X-Never":false,"X-Here":true,"X-Re":{"regex":"v[0-9]+"},"X-Suf":{"suffix":".json"}}}]}]}"#,
    );
    let e = p.flow(0, 1, L4::Tcp, 80).unwrap();
    let h = |pairs: &[(&'static str, &'static [u8])]| {
        pairs
            .iter()
            .map(|(n, v)| httparse::Header { name: n, value: v })
            .collect::<Vec<_>>()
    };
    let good = h(&[
        ("x-tok", b"abc"),
        ("x-here", b""),
        ("x-re", b"v12"),
        ("x-suf", b"a.json"),
    ]);
    let ok = |hs: &[httparse::Header]| {
        Policy::check_request(
            e,
            &RequestView {
                method: "GET",
                path: "/",
                headers: hs,
            },
        ) != RequestCheck::Denied
    };
    assert!(ok(&good));
    let mut with_never = good.clone();
    with_never.push(httparse::Header {
        name: "X-Never",
        value: b"1",
    });
    assert!(!ok(&with_never));
    let mut regex_partial = good.clone();
    regex_partial[2].value = b"xv12";
    assert!(!ok(&regex_partial), "header regex matches the whole value");
    assert!(!ok(&good[1..]), "missing prefix header");
}

#[test]
fn bad_rule_files_name_their_position() {
    let cases: &[(&str, &str)] = &[
        (r#"{"version":1,"containers":{},"acess":[]}"#, "1:36: unknown field `acess`"),
        (r#"{"version":2,"containers":{}}"#, "1:12: unsupported version 2"),
        ("{\"version\":1,\n\"containers\":{\"a\":{\"address\":\"198.19.0.2\"}},\n\"access\":[{\"from\":\"a\",\"to\":\"zz\",\"ports\":[80]}]}", "3:28: unknown container \"zz\""),
        (r#"{"version":1,"containers":{"a":{"address":"198.19.0.2"},"b":{"address":"198.19.0.3"}},"access":[{"from":"a","to":"b","ports":[70000]}]}"#, "port 70000 out of range"),
        (r#"{"version":1,"containers":{"a":{"address":"198.19.0.2"},"b":{"address":"198.19.0.3"}},"access":[{"from":"a","to":"b","ports":[53],"protocol":"udp","http":[{}]}]}"#, "\"http\" requires \"protocol\": \"tcp\""),
        (r#"{"version":1,"containers":{"a":{"address":"198.19.0.2"},"b":{"address":"198.19.0.3"}},"access":[{"from":"a","to":"b","ports":[80],"http":[{"path_regex":"("}]}]}"#, "path_regex does not compile"),
        (r#"{"version":1,"containers":{"a":{"address":"198.19.0.2"},"b":{"address":"198.19.0.3"}},"access":[{"from":"a","to":"b","ports":[80]},{"from":"a","to":"b","ports":[80]}]}"#, "already covered by access[0]"),
        (r#"{"version":1,"containers":{"a":{"address":"198.19.0.2"},"a":{"address":"198.19.0.3"}}}"#, "duplicate key `containers.a`"),
        (r#"{"version":1,"containers":{"a":{"address":"198.19.0.2"}},"pools":{"p":{"members":["zz:80"]}}}"#, "unknown container \"zz\""),
        (r#"{"version":1,"containers":{"a":{"address":"198.19.0.2"}},"frontends":[{"name":"e","listen":"127.0.0.1:1","routes":[{"host":"x","pool":"nope"}]}]}"#, "unknown pool \"nope\""),
        (r#"{"version":1,"containers":{"a":{"address":"198.19.0.2"},"b":{"address":"198.19.0.3"}},"access":[{"from":"a","to":"b","ports":[80],"http":[{"path_prefix":"/x/../y"}]}]}"#, "not normalised"),
        (r#"{"version":1,"containers":{"a":{"address":"198.19.0.2"},"b":{"address":"198.19.0.3"}},"access":[{"from":"a","to":"b","ports":[80],"http":[{"headers":{"X":{"contains":"y"}}}]}]}"#, "unknown field `contains`"),
        (r#"{"version":1,"containers":{"a":{"address":"198.19.0.2"}},"cache":{"a:0":{"max_bytes":1}}}"#, "invalid target \"a:0\""),
        ("{\"version\":1,\"containers\":{", "unexpected end of file"),
        ("{\"version\":1,\"containers\":{},\n\"guard\":{\"networks\":[\"198.19.0.0/16\",\n \"198.19.7.0/24\"]}}", "3:2: guarded network 198.19.7.0/24 overlaps guard.networks[0] (198.19.0.0/16)"),
        (r#"{"version":1,"containers":{},"guard":{"networks":["198.19.0.1/16"]}}"#, "invalid guarded network \"198.19.0.1/16\": host bits are set: the network is 198.19.0.0/16"),
        (r#"{"version":1,"containers":{},"guard":{"networks":["appnet"]}}"#, "expected a network \"ADDRESS/PREFIX\""),
        (r#"{"version":1,"containers":{},"guard":{"networks":["::/0"]}}"#, "prefix /0 is out of range for IPv6"),
        (r#"{"version":1,"containers":{},"guard":{"networks":[]}}"#, "1:50: no networks"),
        (r#"{"version":1,"containers":{},"guard":{"network":["198.19.0.0/16"]}}"#, "unknown field `network`"),
        // A name in a plain string is not guessed at: the error says how to write one.
        (r#"{"version":1,"containers":{},"guard":{"networks":["appnet"]}}"#, "1:51: invalid guarded network \"appnet\": expected a network \"ADDRESS/PREFIX\" such as \"198.19.0.0/16\" or \"fd00:19::/64\"; to guard the Docker network of that name write {\"docker_network\": \"appnet\"}"),
        (r#"{"version":1,"containers":{},"guard":{"networks":["198.19.0.0"]}}"#, "invalid guarded network \"198.19.0.0\": expected a network \"ADDRESS/PREFIX\" such as \"198.19.0.0/16\" or \"fd00:19::/64\""),
        (r#"{"version":1,"containers":{},"guard":{"networks":[{"docker_network":"app net"}]}}"#, "1:69: invalid Docker network name \"app net\""),
        (r#"{"version":1,"containers":{},"guard":{"networks":[{"docker_network":""}]}}"#, "invalid Docker network name \"\""),
        (r#"{"version":1,"containers":{},"guard":{"networks":[{"docker_network":"host"}]}}"#, "Docker network \"host\" has no addresses of its own"),
        (r#"{"version":1,"containers":{},"guard":{"networks":[{"docker_network":"a"},"198.19.0.0/16",{"docker_network":"a"}]}}"#, "Docker network \"a\" is already guard.networks[0]"),
        (r#"{"version":1,"containers":{},"guard":{"networks":[{"docker":"appnet"}]}}"#, "unknown field `docker`, expected `docker_network`"),
        (r#"{"version":1,"containers":{},"guard":{"networks":[{}]}}"#, "empty guarded network: expected {\"docker_network\": \"NAME\"}"),
        (r#"{"version":1,"containers":{},"guard":{"networks":[{"docker_network":"a","name":"b"}]}}"#, "exactly one field, docker_network"),
        (r#"{"version":1,"containers":{},"guard":{"networks":[42]}}"#, "expected a network: \"ADDRESS/PREFIX\" or {\"docker_network\": \"NAME\"}"),
    ];
    let bare = crate::rules::parse(
        "r.json",
        r#"{"version":1,"containers":{},"guard":{"networks":["198.19.0.0"]}}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(
        !bare.contains("docker_network"),
        "an address is no name: {bare}"
    );
    for (text, want) in cases {
        let err = crate::rules::parse("r.json", text)
            .and_then(Policy::compile)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("r.json:"), "{err}");
        assert!(err.contains(want), "{err:?} should contain {want:?}");
        assert!(!err.contains('\n'), "one line: {err}");
    }
}

#[test]
fn example_file_is_valid_and_summarised() {
    let set = crate::rules::parse("rules.json", include_str!("../../rules/example.json")).unwrap();
    assert_eq!(set.summary(), "rules.json: valid: 3 containers, 1 access entries, 1 frontends, 3 pools, 1 cached services");
}

#[test]
fn connect_is_allowed_only_by_a_matcher_that_names_it() {
    let p = policy(
        r#"{"version":1,"containers":{"a":{"address":"198.19.0.2"},"b":{"address":"198.19.0.3"}},
        "access":[{"from":"a","to":"b","ports":[80],"http":[{"path_prefix":"/"}]},
                  {"from":"a","to":"b","ports":[81],"http":[{"methods":["CONNECT"]}]}]}"#,
    );
    let decide = |port: u16, method: &str, target: &str| {
        let e = p.flow(0, 1, L4::Tcp, port).unwrap();
        let (path, _) = Policy::request_path(method, target).unwrap();
        p.decide_request(
            e,
            &RequestView {
                method,
                path: &path,
                headers: &[],
            },
        )
    };
    // Omitting `methods` allows every method but CONNECT, in explain as in
    // the proxy (both call this decision).
    let d = decide(80, "CONNECT", "b:443");
    assert_eq!((d.verdict, d.status), (Verdict::Deny, Some(403)));
    assert!(d.reason.contains("does not name CONNECT"), "{}", d.reason);
    assert_eq!(decide(80, "GET", "/x").verdict, Verdict::Allow);
    // A matcher naming it allows it; its path conditions see "/".
    assert_eq!(decide(81, "CONNECT", "b:443").verdict, Verdict::Allow);
    assert_eq!(
        Policy::request_path("CONNECT", "b:443").unwrap().0,
        "/",
        "CONNECT's authority target is seen as /"
    );
}

#[test]
fn the_proxys_default_deny_is_audited_in_audit_mode() {
    let enforce = example();
    let d = enforce.decide_unowned("app3", "198.19.0.2:80");
    assert_eq!((d.verdict, d.status), (Verdict::Deny, Some(403)));
    assert!(d.rule.is_none() && d.reason.starts_with("denied by default"));
    let audit = policy(&include_str!("../../rules/example.json").replacen(
        "\"version\": 1,",
        "\"version\": 1, \"mode\": \"audit\",",
        1,
    ));
    let d = audit.decide_unowned("app3", "198.19.0.2:80");
    assert_eq!((d.verdict, d.status), (Verdict::Allow, None));
    assert!(d.audit_deny && d.reason.starts_with("audit_deny: denied by default"));
}

#[test]
fn explain_denies_an_unplaced_address_in_a_guarded_network_both_ways() {
    let p = policy(
        r#"{"version": 1,
  "guard": {"networks": ["198.19.0.0/16", "fd00:19::/64"]},
  "containers": {"app1": {"address": ["198.19.0.2", "fd00:19::2"]}, "app2": {"address": "198.19.0.3"}},
  "access": [{"from": "app2", "to": "app1", "ports": [80]}]}"#,
    );
    for (from, to) in [
        ("198.19.9.9", "app1"),
        ("app1", "198.19.9.9"),
        ("fd00:19::99", "app1"),
    ] {
        let d = p.probe(from, to, L4::Tcp, 80, None).expect("probe");
        assert_eq!(d.verdict, Verdict::Deny, "{from} -> {to}");
        assert_eq!(d.layer, Layer::Nftables);
        assert!(d.reason.starts_with("denied by guard: "), "{}", d.reason);
        assert!(
            d.reason.contains("belongs to no known container"),
            "{}",
            d.reason
        );
        let rule = d.rule.expect("the guarded network decided");
        assert!(rule.path.starts_with("guard.networks["), "{}", rule.path);
        assert_eq!(rule.pos.line, 2);
    }
    // A fixed container address is that container: its flow is allowed.
    let d = p
        .probe("198.19.0.3", "198.19.0.2", L4::Tcp, 80, None)
        .expect("probe");
    assert_eq!(d.verdict, Verdict::Allow, "{}", d.reason);
    // Outside every guarded network Portcullis does not decide.
    let d = p
        .probe("203.0.113.9", "app1", L4::Tcp, 80, None)
        .expect("probe");
    assert_eq!(d.verdict, Verdict::Allow);
    assert!(d.reason.contains("in no guarded network"), "{}", d.reason);
    // Names are still checked.
    assert!(p.probe("app9", "app1", L4::Tcp, 80, None).is_err());
    // Without an answer from Docker, a named network guards nothing here
    // (see the next test).
    assert_eq!(p.guard_docker_networks(), Vec::<String>::new());
    // In global audit mode the guard reports instead of dropping.
    let audit = policy(
        r#"{"version": 1, "mode": "audit", "guard": {"networks": ["198.19.0.0/16"]},
  "containers": {"app1": {"address": "198.19.0.2"}}}"#,
    );
    let d = audit
        .probe("198.19.9.9", "app1", L4::Tcp, 80, None)
        .expect("probe");
    assert!(d.audit_deny && d.verdict == Verdict::Allow, "{d:?}");
}

/// A Docker network guarded by name: `explain` decides an unplaced address
/// in its resolved subnets like one in a CIDR, names the network, and says
/// so when the name is unresolved instead of quietly claiming nothing is
/// guarded.
#[test]
fn explain_guards_the_resolved_subnets_of_a_named_network() {
    use crate::policy::guard::{Cidr, NamedSubnets};
    let p = policy(
        r#"{"version": 1,
  "guard": {"networks": ["198.19.0.0/24", {"docker_network": "appnet"}, {"docker_network": "later"}]},
  "containers": {"app1": {"address": "198.19.0.2"}, "app2": {"docker": "app2"}},
  "access": [{"from": "app2", "to": "app1", "ports": [80]}]}"#,
    );
    assert_eq!(p.guard_docker_networks(), vec!["appnet", "later"]);
    let named: NamedSubnets = [(
        "appnet".to_owned(),
        vec![
            Cidr::parse("198.19.5.0/24").expect("cidr"),
            Cidr::parse("fd00:198:19:5::/64").expect("cidr"),
        ],
    )]
    .into_iter()
    .collect();
    assert_eq!(p.unresolved_guard_networks(&named), vec!["later"]);
    for (from, to, net) in [
        ("198.19.5.9", "app1", "198.19.5.0/24"),
        ("app1", "fd00:198:19:5::9", "fd00:198:19:5::/64"),
    ] {
        let d = p
            .probe_with(from, to, L4::Tcp, 80, None, &named)
            .expect("probe");
        assert_eq!(
            (d.verdict, d.layer),
            (Verdict::Deny, Layer::Nftables),
            "{d:?}"
        );
        assert!(
            d.reason.contains(&format!(
                "is in guarded network {net} (Docker network appnet) and belongs to no known container"
            )),
            "{}",
            d.reason
        );
        let rule = d.rule.expect("the named network decided");
        assert_eq!(
            (rule.path.as_str(), rule.pos.line),
            ("guard.networks[1]", 2)
        );
    }
    // The CIDR entry still decides its own range.
    let d = p
        .probe_with("198.19.0.9", "app1", L4::Tcp, 80, None, &named)
        .expect("probe");
    assert_eq!(d.rule.map(|r| r.path), Some("guard.networks[0]".to_owned()));
    // Outside: allowed, and the unresolved name is said.
    let d = p
        .probe_with("198.19.6.9", "app1", L4::Tcp, 80, None, &named)
        .expect("probe");
    assert_eq!(d.verdict, Verdict::Allow);
    assert!(
        d.reason
            .ends_with("(unresolved, so guarding nothing here: Docker network later)"),
        "{}",
        d.reason
    );
    // Without any answer from Docker (plain `probe`): both names unresolved.
    let d = p
        .probe("198.19.5.9", "app1", L4::Tcp, 80, None)
        .expect("probe");
    assert_eq!(d.verdict, Verdict::Allow);
    assert!(
        d.reason.contains("Docker network appnet, later"),
        "{}",
        d.reason
    );
}
