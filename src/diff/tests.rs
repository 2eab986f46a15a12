//! What `diff` says about small, typical edits. The property tests in
//! `tests/diff_props.rs` check soundness against `explain`; these pin the
//! classification and wording of each kind of change.

use super::*;

fn policy(name: &str, access: &str, extra: &str) -> Policy {
    let text = format!(
        r#"{{ "version": 1,
  "containers": {{ "a": {{ "address": "198.19.0.2" }}, "b": {{ "address": "198.19.0.3" }} }},
  "access": [{access}]{extra} }}"#
    );
    let set = crate::rules::parse(name, &text).expect("valid rules");
    Policy::compile(set).expect("compiles")
}

fn http(m: &str) -> String {
    format!(r#"{{ "from": "a", "to": "b", "ports": [80], "http": [{m}] }}"#)
}

/// (class, what) of every change.
fn changes(old: &Policy, new: &Policy) -> Vec<(Class, String)> {
    diff(old, new)
        .changes
        .into_iter()
        .map(|c| (c.class, c.what))
        .collect()
}

fn one(old_m: &str, new_m: &str) -> Vec<(Class, String)> {
    changes(
        &policy("old.json", &http(old_m), ""),
        &policy("new.json", &http(new_m), ""),
    )
}

#[test]
fn path_prefixes_are_segment_aware() {
    let narrower = one(
        r#"{ "methods": ["GET"], "path_prefix": "/foo" }"#,
        r#"{ "methods": ["GET"], "path_prefix": "/foo/bar" }"#,
    );
    assert_eq!(
        narrower,
        [(
            Class::Narrow,
            "no longer allowed: GET under /foo (e.g. GET /foo)".to_owned()
        )]
    );
    let wider = one(
        r#"{ "methods": ["GET"], "path_prefix": "/foo" }"#,
        r#"{ "methods": ["GET"], "path_prefix": "/" }"#,
    );
    assert_eq!(
        wider,
        [(
            Class::Widen,
            "newly allowed: GET any path (e.g. GET /)".to_owned()
        )]
    );
    // `/foobar` is not under `/foo`: a sideways move is both.
    let sideways = one(
        r#"{ "path_prefix": "/foo" }"#,
        r#"{ "path_prefix": "/foobar" }"#,
    );
    let classes: Vec<Class> = sideways.iter().map(|c| c.0).collect();
    assert_eq!(classes, [Class::Widen, Class::Narrow], "{sideways:?}");
    // `/foo/` is the same prefix as `/foo`.
    assert!(one(
        r#"{ "path_prefix": "/foo" }"#,
        r#"{ "path_prefix": "/foo/" }"#
    )
    .is_empty());
}

#[test]
fn methods_and_headers() {
    // Split across two old matchers, still covered.
    assert!(one(
        r#"{ "methods": ["GET"], "path_prefix": "/a" }, { "methods": ["PUT"], "path_prefix": "/a" }"#,
        r#"{ "methods": ["GET", "PUT"], "path_prefix": "/a" }"#,
    )
    .is_empty());
    // Any method does not include CONNECT: naming it widens.
    let connect = one(r#"{ "path_prefix": "/" }"#, r#"{ "methods": ["CONNECT"] }"#);
    assert_eq!(connect[0].0, Class::Widen, "{connect:?}");
    // An exact header value within a prefix: narrowing only.
    let h = one(
        r#"{ "headers": { "X-K": { "prefix": "ab" } } }"#,
        r#"{ "headers": { "x-k": "abc" } }"#,
    );
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(h[0].0, Class::Narrow);
    // Dropping a header condition widens, with an example without it.
    let h = one(
        r#"{ "headers": { "X-K": true } }"#,
        r#"{ "path_prefix": "/" }"#,
    );
    assert_eq!(
        h,
        [(
            Class::Widen,
            "newly allowed: any method any path (e.g. GET /)".to_owned()
        )]
    );
}

#[test]
fn regexes_are_unknown_never_narrowing() {
    let r = one(
        r#"{ "path_regex": "/a/[0-9]+" }"#,
        r#"{ "path_regex": "/a/[0-9a-f]+" }"#,
    );
    assert!(!r.is_empty());
    assert!(r.iter().all(|c| c.0 == Class::Unknown), "{r:?}");
    assert!(r[0].1.contains("cannot be compared"), "{r:?}");
    let old = policy("old.json", &http(r#"{ "path_regex": "/a/[0-9]+" }"#), "");
    let new = policy("new.json", &http(r#"{ "path_regex": "/a/[0-9a-f]+" }"#), "");
    let report = diff(&old, &new);
    assert_eq!(report.verdict(), Verdict::Widening);
    assert_eq!(report.exit_code(FailOn::Any), 2);
    assert_eq!(report.exit_code(FailOn::Widen), 2);
    // Identical regexes: no change.
    assert!(one(
        r#"{ "path_regex": "/a/.*" }"#,
        r#"{ "path_regex": "/a/.*" }"#
    )
    .is_empty());
}

#[test]
fn flows_modes_and_containers() {
    let l4 = r#"{ "from": "a", "to": "b", "ports": [5432] }"#;
    let none = policy("old.json", "", "");
    let some = policy("new.json", l4, "");
    let c = diff(&none, &some);
    assert_eq!(c.changes.len(), 1);
    assert_eq!(c.changes[0].subject, "a -> b:5432/tcp");
    assert_eq!(c.changes[0].class, Class::Widen);
    assert_eq!(c.verdict(), Verdict::Widening);
    let back = diff(&some, &none);
    assert_eq!(back.verdict(), Verdict::Narrowing);
    assert_eq!(back.exit_code(FailOn::Any), 1);
    assert_eq!(back.exit_code(FailOn::Widen), 0);
    // Ports of one pair join into one line.
    let two = policy(
        "new.json",
        r#"{ "from": "a", "to": "b", "ports": [80, 443] }"#,
        "",
    );
    let c = diff(&none, &two);
    assert_eq!(c.changes.len(), 1);
    assert_eq!(c.changes[0].subject, "a -> b:80,443/tcp");

    let audit = policy("new.json", "", r#", "mode": "audit""#);
    let c = changes(&none, &audit);
    assert_eq!(c[0].0, Class::Widen, "enforce -> audit widens: {c:?}");
    let c = changes(&audit, &none);
    assert_eq!(c[0].0, Class::Narrow);

    // A container removed from the file is no longer filtered at all.
    let text = r#"{ "version": 1, "containers": { "a": { "address": "198.19.0.2" } } }"#;
    let fewer = Policy::compile(crate::rules::parse("new.json", text).unwrap()).unwrap();
    let c = diff(&none, &fewer);
    assert_eq!(c.changes.len(), 1);
    assert_eq!(c.changes[0].class, Class::Widen);
    assert_eq!(c.changes[0].scope, Scope::Container("b".into()));
    assert_eq!(diff(&fewer, &none).verdict(), Verdict::Narrowing);
}

#[test]
fn limits_pools_cache() {
    let lim = |l: &str| {
        policy(
            "x.json",
            "",
            &format!(
                r#", "limits": {{ {l} }}, "pools": {{ "p": {{ "members": ["a:80"] }} }},
                 "cache": {{ "b:80": {{ "max_bytes": 1000 }} }}"#
            ),
        )
    };
    let c = changes(
        &lim(r#""max_body_bytes": 10"#),
        &lim(r#""max_body_bytes": 20"#),
    );
    assert_eq!(
        c,
        [(Class::Widen, "max_body_bytes loosened: 10 -> 20".to_owned())]
    );
    let c = changes(&lim(""), &lim(r#""max_header_bytes": 8192"#));
    assert_eq!(
        c,
        [(
            Class::Narrow,
            "max_header_bytes tightened: 16384 -> 8192".to_owned()
        )]
    );
    let base = |pool: &str, cache: &str| {
        policy(
            "x.json",
            "",
            &format!(r#", "pools": {{ "p": {pool} }}, "cache": {{ "b:80": {cache} }}"#),
        )
    };
    let c = changes(
        &base(r#"{ "members": ["a:80"] }"#, r#"{ "max_bytes": 1000 }"#),
        &base(
            r#"{ "members": [{ "target": "a:80", "weight": 2 }, "b:80"], "retries": 3 }"#,
            r#"{ "max_bytes": 2000, "default_ttl_s": 5 }"#,
        ),
    );
    let classes: Vec<Class> = c.iter().map(|x| x.0).collect();
    assert_eq!(
        classes,
        [Class::Change, Class::Widen, Class::Change, Class::Change],
        "{c:?}"
    );
}

#[test]
fn body_limits_and_underscore_handling() {
    let lim = |l: &str, p: &str| policy("x.json", "", &format!(r#", "limits": {{ {l} }}{p}"#));
    // Defaults count: an explicit default is no change, a higher value loosens.
    assert_eq!(
        changes(&lim("", ""), &lim(r#""request_buffer_bytes": 65536"#, "")),
        []
    );
    assert_eq!(
        changes(&lim("", ""), &lim(r#""body_timeout_ms": 120000"#, "")),
        [(
            Class::Widen,
            "body_timeout_ms loosened: 60000 -> 120000".to_owned()
        )]
    );
    assert_eq!(
        changes(
            &lim("", ""),
            &lim(r#""max_connections_per_source": 64"#, "")
        ),
        [(
            Class::Narrow,
            "max_connections_per_source tightened: 1024 -> 64".to_owned()
        )]
    );
    // `drop` lets through requests `reject_lookalikes` refuses: a widening.
    let drop = r#", "proxy": { "headers_with_underscores": "drop" }"#;
    let reject = r#", "proxy": { "headers_with_underscores": "reject" }"#;
    assert_eq!(
        changes(&lim("", ""), &lim("", drop)),
        [(
            Class::Widen,
            "headers_with_underscores reject_lookalikes -> drop".to_owned()
        )]
    );
    assert_eq!(
        changes(&lim("", ""), &lim("", reject)),
        [(
            Class::Narrow,
            "headers_with_underscores reject_lookalikes -> reject".to_owned()
        )]
    );
}
