//! The proxy and `explain` cannot disagree: generated requests, hostile
//! ones among them (dot segments, encoded `/`, absolute form, upper-case
//! and port hosts, CONNECT), go through the proxy's own decide steps
//! (`frontend::route`, `conn::authorise`) and through what `explain`
//! answers with (`cli::explain_route`, `Policy::probe`), and the status,
//! the pool and the path the upstream is sent must agree.
//!
//! A child of `proxy::frontend` so that it can call the private `route`.

use std::net::SocketAddr;
use std::sync::Arc;

use proptest::prelude::*;

use super::{limits_for, route, Frontend, Plan as FrontendPlan};
use crate::balance::Balancer;
use crate::policy::probe::RequestProbe;
use crate::policy::route_decision::FrontendRequest;
use crate::policy::{Policy, Verdict, L4};
use crate::proxy::conn::{authorise, resolve, Check, Flow, Plan as AccessPlan};
use crate::proxy::downstream::ClientProtocol;
use crate::proxy::limits::{self, SourceTable};
use crate::state::directory::Directory;
use crate::state::metrics::Metrics;
use crate::state::snapshot::Snapshot;
use crate::wire::head::{parse_request, MAX_HEADERS};

const APP2: &str = "198.19.0.3";

fn snapshot() -> Snapshot {
    let set = crate::rules::parse("rules.json", include_str!("../../rules/example.json"))
        .expect("valid rules");
    let policy = Policy::compile(set).expect("compiles");
    let dir = Directory::build(&policy, |_| vec![APP2.parse().expect("address")]);
    let lb = Arc::new(Balancer::compile(&policy));
    Snapshot {
        policy: Arc::new(policy),
        dir,
        version: 1,
        lb,
        tls: Default::default(),
    }
}

/// The request line of an upstream head.
fn request_line(out: &[u8]) -> String {
    let line = out.split(|&b| b == b'\r').next().unwrap_or_default();
    String::from_utf8_lossy(line).into_owned()
}

/// (status or pool name, request line sent upstream) by the proxy's
/// `route`, and (status or pool name) by `explain --frontend`; `None` when
/// the head does not parse (refused before any decision).
fn frontend_both(snap: &Snapshot, raw: &str) -> Option<((String, String), String)> {
    let fe = snap.lb.frontend("edge").expect("frontend edge");
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let req = parse_request(raw.as_bytes(), &mut storage).ok()?;
    let peer: SocketAddr = "127.0.0.1:40000".parse().expect("address");
    let lim = limits_for(&snap.policy, fe);
    let metrics = Metrics::default();
    let mut out = Vec::new();
    let (index, fe) = snap.lb.frontend_index_at(fe.listen).expect("edge listens");
    let at = Frontend {
        https: false,
        snap,
        fe,
        index,
        series: &metrics.labelled.series.of(snap, &metrics.labelled),
    };
    let proxy = match route(&at, peer, fe.listen, &req, &lim, &mut out, &metrics) {
        FrontendPlan::Forward { pool, .. } => (
            snap.lb
                .pool(pool)
                .map_or("missing".to_owned(), |p| p.name.clone()),
            request_line(&out),
        ),
        FrontendPlan::Refuse { refusal, .. } => (refusal.status().to_string(), String::new()),
    };
    let explained = crate::cli::explain_route(
        &snap.policy,
        &snap.lb,
        fe,
        &FrontendRequest {
            method: req.method,
            target: req.target,
            headers: req.headers,
        },
    )
    .expect("explain answers");
    let said = if explained["status"].is_null() {
        explained["pool"].as_str().unwrap_or("no pool").to_owned()
    } else {
        explained["status"].to_string()
    };
    Some((proxy, said))
}

/// (status, request line sent upstream) by the proxy's `authorise` for a
/// request from app2 to app1:80, and (status) by `explain`; 200 = allowed.
fn access_both(snap: &Snapshot, raw: &str) -> Option<((u16, String), u16)> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let req = parse_request(raw.as_bytes(), &mut storage).ok()?;
    let flow = Flow {
        peer: format!("{APP2}:40000").parse().expect("address"),
        dst: "198.19.0.2:80".parse().expect("address"),
    };
    let resolved = resolve(&snap.policy, &snap.dir, &flow);
    assert!(resolved.entry.is_some(), "app2 -> app1:80 is owned");
    let lim = limits::effective(&snap.policy, resolved.entry);
    let (metrics, sources) = (Metrics::default(), SourceTable::default());
    let check = Check {
        policy: &snap.policy,
        resolved: &resolved,
        flow: &flow,
        limits: &lim,
        metrics: &metrics,
        series: &metrics.labelled.series.of(snap, &metrics.labelled),
        sources: &sources,
        client: ClientProtocol::Http1,
    };
    let mut out = Vec::new();
    let proxy = match authorise(&check, &req, &mut out) {
        AccessPlan::Forward(_) => (200, request_line(&out)),
        AccessPlan::Refuse { refusal, .. } => (refusal.status(), String::new()),
    };
    let d = snap
        .policy
        .probe(
            "app2",
            "app1",
            L4::Tcp,
            80,
            Some(&RequestProbe {
                method: req.method,
                target: req.target,
                headers: req.headers,
            }),
        )
        .expect("known containers");
    let said = match (d.verdict, d.status) {
        (Verdict::Allow, _) => 200,
        (Verdict::Deny, s) => s.unwrap_or(0),
    };
    Some((proxy, said))
}

fn segment() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "two", "three", "one", "four", "foo", "bar", "x", "..", ".", "%2e%2e", "%2E", "%2f", "%5c",
        "%61", "%66oo", "a;b", "..;", "%", "%zz", "", "TWO", "%00", "%c3%a9",
    ])
}

fn host() -> impl Strategy<Value = Option<&'static str>> {
    prop::option::weighted(
        0.9,
        prop::sample::select(vec![
            "two.example",
            "TWO.Example:8080",
            "three.example.",
            "other.test",
            "Other.TEST:80",
            "[::1]:8080",
            "x:y",
            "a_b",
            "app1",
            "198.19.0.2:80",
            "",
        ]),
    )
}

/// An origin-form target from hostile and ordinary segments.
fn path() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(segment(), 0..5),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(segs, slash, query)| {
            let mut p = format!("/{}", segs.join("/"));
            if slash {
                p.push('/');
            }
            if query {
                p.push_str("?q=%2f..");
            }
            p
        })
}

/// A request target: origin form, absolute form (whose authority may
/// disagree with Host), `*`, or an authority.
fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => path(),
        2 => (prop::sample::select(vec!["http://two.example", "HTTP://three.example:8080", "http://other.test", "http://a@b", "http://app1"]), path())
            .prop_map(|(a, p)| format!("{a}{p}")),
        1 => prop::sample::select(vec!["*", "two.example:443", "two.example", "foo"]).prop_map(str::to_owned),
    ]
}

fn method() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["GET", "GET", "PUT", "POST", "CONNECT", "HEAD"])
}

/// An HTTP/1.1 head, or HTTP/1.0 without a Host (1.1 requires one).
fn head(method: &str, target: &str, host: Option<&str>, extra: &str) -> String {
    match host {
        Some(h) => format!("{method} {target} HTTP/1.1\r\nHost: {h}\r\n{extra}\r\n"),
        None => format!("{method} {target} HTTP/1.0\r\n{extra}\r\n"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn route_and_explain_frontend_agree(m in method(), t in target(), h in host()) {
        let snap = snapshot();
        if let Some(((proxy, line), said)) = frontend_both(&snap, &head(m, &t, h, "")) {
            prop_assert_eq!(&proxy, &said, "{} {} host {:?}", m, t, h);
            if !line.is_empty() {
                // The member is sent the path the route was chosen by.
                let fe = snap.lb.frontend("edge").expect("edge");
                let headers: Vec<httparse::Header> = h
                    .map(|v| httparse::Header { name: "host", value: v.as_bytes() })
                    .into_iter()
                    .collect();
                let r = fe
                    .decide(&snap.policy.fields, &FrontendRequest { method: m, target: &t, headers: &headers })
                    .expect("routed");
                let want = match r.query {
                    Some(q) => format!("{m} {}?{q} HTTP/1.1", r.path),
                    None => format!("{m} {} HTTP/1.1", r.path),
                };
                prop_assert_eq!(line, want);
            }
        }
    }

    #[test]
    fn authorise_and_explain_agree(m in method(), t in target(), h in host(), bar in any::<bool>()) {
        let snap = snapshot();
        let extra = if bar { "X-Bar: bar\r\n" } else { "" };
        if let Some(((proxy, line), said)) = access_both(&snap, &head(m, &t, h, extra)) {
            prop_assert_eq!(proxy, said, "{} {} host {:?}", m, t, h);
            if proxy == 200 {
                // Only the allowed prefixes reach app1, under the path checked.
                let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
                prop_assert!(path.starts_with("/foo") || path.starts_with("/bar"), "{}", line);
            }
        }
    }
}

/// Requests the proxy and `explain` used to disagree on, each decided by
/// both (the property above samples; these are always run).
#[test]
fn known_disagreements_are_gone() {
    let snap = snapshot();
    let front = [
        ("GET", "/x/a", Some("TWO.Example:8080"), "two"),
        ("GET", "http://two.example/x", None, "two"),
        ("GET", "http://two.example/x", Some("three.example"), "400"),
        ("CONNECT", "two.example:443", Some("two.example"), "501"),
        ("GET", "/one", Some("Other.TEST:80"), "one"),
        ("GET", "/two/%2f", Some("other.test"), "400"),
    ];
    for (m, t, h, want) in front {
        let ((proxy, _), said) = frontend_both(&snap, &head(m, t, h, ""))
            .unwrap_or_else(|| panic!("{m} {t} {h:?} parses"));
        assert_eq!(
            (proxy.as_str(), said.as_str()),
            (want, want),
            "{m} {t} {h:?}"
        );
    }
    let access = [
        ("GET", "http://app1/foo", Some("app1"), 200),
        ("GET", "http://app1/foo", Some("app3"), 400),
        ("CONNECT", "app1", Some("app1"), 400),
        ("GET", "/foo/../admin", Some("app1"), 403),
        ("GET", "/foo/%2e%2e/bar", Some("app1"), 403),
        ("GET", "/foo%2fx", Some("app1"), 400),
    ];
    for (m, t, h, want) in access {
        let ((proxy, _), said) = access_both(&snap, &head(m, t, h, ""))
            .unwrap_or_else(|| panic!("{m} {t} {h:?} parses"));
        assert_eq!((proxy, said), (want, want), "{m} {t} {h:?}");
    }
}
