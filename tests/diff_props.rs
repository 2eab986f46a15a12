//! Every statement `portcullis diff` makes is checked against `explain`.
//!
//! Proptest generates a rule file and a few edits of it (matchers changed,
//! entries added or removed, modes flipped, containers removed, routes
//! changed). For a grid of probes (from, to, port, proto, method, path,
//! headers) both files are asked through [`Policy::probe`] — the function
//! `explain` prints — and the report of `diff` must agree:
//! - every probe that went deny -> allow is covered by a reported widening
//!   (or undecidable) change whose scope contains it;
//! - whenever anything went deny -> allow, the verdict is "widening" (never
//!   "narrowing" or "no change"); whenever any verdict changed, it is not
//!   "no change";
//! - for frontends, an input whose pool changed is reported in a route
//!   change of the right class covering that input's region.
//!
//! A container that a file does not have is unmanaged there: its traffic is
//! not filtered (allow), as in the kernel.

use portcullis::diff::{self, Class, Report, Scope};
use portcullis::policy::matcher::RequestView;
use portcullis::policy::probe::RequestProbe;
use portcullis::policy::routes::{route_host, RouteTable};
use portcullis::policy::{Policy, Verdict, L4};
use proptest::prelude::*;
use serde_json::{json, Value};

const NAMES: [&str; 4] = ["a", "b", "c", "d"];
const PORTS: [u16; 3] = [80, 443, 8080];
const PREFIXES: [&str; 5] = ["/", "/a", "/a/b", "/b", "/a/"];
const EXACTS: [&str; 3] = ["/a", "/a/b/c", "/b"];
const REGEXES: [&str; 2] = ["/a/.*", "/[ab]"];
const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];
const HOSTS: [&str; 3] = ["a.example", "*.example", "b.a.example"];

#[derive(Debug, Clone)]
enum Cond {
    Exact(&'static str),
    Present,
    Absent,
    Prefix(&'static str),
    Suffix(&'static str),
    Regex(&'static str),
}

#[derive(Debug, Clone)]
struct M {
    methods: Option<Vec<usize>>,
    prefix: Option<usize>,
    exact: Option<usize>,
    regex: Option<usize>,
    header: Option<Cond>,
}

#[derive(Debug, Clone)]
struct E {
    from: Vec<usize>,
    to: usize,
    ports: Vec<usize>,
    udp: bool,
    http: Option<Vec<M>>,
    audit: Option<bool>,
}

#[derive(Debug, Clone)]
struct R {
    host: Option<usize>,
    prefix: Option<usize>,
    pool: usize,
}

#[derive(Debug, Clone)]
struct Spec {
    audit: bool,
    present: [bool; 4],
    entries: Vec<E>,
    routes: Vec<R>,
    default_pool: Option<usize>,
}

#[derive(Debug, Clone)]
enum Edit {
    ToggleAudit,
    ToggleContainer(usize),
    ReplaceEntry(usize, E),
    RemoveEntry(usize),
    AddEntry(E),
    ReplaceMatcher(usize, usize, M),
    AddMatcher(usize, M),
    RemoveMatcher(usize, usize),
    ToggleEntryAudit(usize),
    DropHttp(usize),
    ReplaceRoute(usize, R),
    SwapRoutes(usize, usize),
    AddRoute(R),
    SetDefault(Option<usize>),
    /// One field of one matcher: the small edits reviews are about.
    Tweak(usize, usize, Field),
}

#[derive(Debug, Clone)]
enum Field {
    Methods(Option<Vec<usize>>),
    Prefix(Option<usize>),
    Exact(Option<usize>),
    Regex(Option<usize>),
    Header(Option<Cond>),
}

fn field() -> impl Strategy<Value = Field> {
    prop_oneof![
        proptest::option::of(proptest::sample::subsequence(vec![0, 1, 2, 3], 1..=3))
            .prop_map(Field::Methods),
        proptest::option::of(0..PREFIXES.len()).prop_map(Field::Prefix),
        proptest::option::weighted(0.3, 0..EXACTS.len()).prop_map(Field::Exact),
        proptest::option::weighted(0.3, 0..REGEXES.len()).prop_map(Field::Regex),
        proptest::option::weighted(0.8, cond()).prop_map(Field::Header),
    ]
}

fn cond() -> impl Strategy<Value = Cond> {
    prop_oneof![
        Just(Cond::Exact("1")),
        Just(Cond::Exact("12")),
        Just(Cond::Present),
        Just(Cond::Absent),
        Just(Cond::Prefix("1")),
        Just(Cond::Prefix("12")),
        Just(Cond::Suffix("2")),
        Just(Cond::Suffix("12")),
        Just(Cond::Regex("[0-9]+")),
        Just(Cond::Regex("1.*")),
    ]
}

fn matcher() -> impl Strategy<Value = M> {
    (
        proptest::option::weighted(0.6, proptest::sample::subsequence(vec![0, 1, 2, 3], 1..=3)),
        proptest::option::weighted(0.6, 0..PREFIXES.len()),
        proptest::option::weighted(0.2, 0..EXACTS.len()),
        proptest::option::weighted(0.15, 0..REGEXES.len()),
        proptest::option::weighted(0.35, cond()),
    )
        .prop_map(|(methods, prefix, exact, regex, header)| M {
            methods,
            prefix,
            exact,
            regex,
            header,
        })
}

fn entry() -> impl Strategy<Value = E> {
    (
        proptest::sample::subsequence(vec![0, 1, 2, 3], 1..=2),
        0..4usize,
        proptest::sample::subsequence(vec![0, 1, 2], 1..=2),
        proptest::bool::weighted(0.15),
        proptest::option::weighted(0.7, proptest::collection::vec(matcher(), 1..=3)),
        proptest::option::weighted(0.15, any::<bool>()),
    )
        .prop_map(|(from, to, ports, udp, http, audit)| E {
            from,
            to,
            ports,
            udp,
            http,
            audit,
        })
}

fn route() -> impl Strategy<Value = R> {
    (
        proptest::option::of(0..HOSTS.len()),
        proptest::option::of(0..PREFIXES.len()),
        0..3usize,
    )
        .prop_map(|(host, prefix, pool)| R { host, prefix, pool })
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        proptest::bool::weighted(0.1),
        proptest::collection::vec(entry(), 0..5),
        proptest::collection::vec(route(), 0..4),
        proptest::option::of(0..3usize),
    )
        .prop_map(|(audit, entries, routes, default_pool)| Spec {
            audit,
            present: [true; 4],
            entries,
            routes,
            default_pool,
        })
}

fn edit() -> impl Strategy<Value = Edit> {
    let i = any::<usize>;
    prop_oneof![
        Just(Edit::ToggleAudit),
        (0..4usize).prop_map(Edit::ToggleContainer),
        (i(), entry()).prop_map(|(a, e)| Edit::ReplaceEntry(a, e)),
        i().prop_map(Edit::RemoveEntry),
        entry().prop_map(Edit::AddEntry),
        (i(), i(), matcher()).prop_map(|(a, b, m)| Edit::ReplaceMatcher(a, b, m)),
        (i(), i(), matcher()).prop_map(|(a, b, m)| Edit::ReplaceMatcher(a, b, m)),
        (i(), matcher()).prop_map(|(a, m)| Edit::AddMatcher(a, m)),
        (i(), i()).prop_map(|(a, b)| Edit::RemoveMatcher(a, b)),
        i().prop_map(Edit::ToggleEntryAudit),
        i().prop_map(Edit::DropHttp),
        (i(), route()).prop_map(|(a, r)| Edit::ReplaceRoute(a, r)),
        (i(), i()).prop_map(|(a, b)| Edit::SwapRoutes(a, b)),
        route().prop_map(Edit::AddRoute),
        proptest::option::of(0..3usize).prop_map(Edit::SetDefault),
        (i(), i(), field()).prop_map(|(a, b, f)| Edit::Tweak(a, b, f)),
        (i(), i(), field()).prop_map(|(a, b, f)| Edit::Tweak(a, b, f)),
        (i(), i(), field()).prop_map(|(a, b, f)| Edit::Tweak(a, b, f)),
    ]
}

fn apply(mut s: Spec, edits: &[Edit]) -> Spec {
    for e in edits {
        let n = s.entries.len();
        match e.clone() {
            Edit::ToggleAudit => s.audit = !s.audit,
            Edit::ToggleContainer(c) => s.present[c] = !s.present[c],
            Edit::ReplaceEntry(i, x) if n > 0 => s.entries[i % n] = x,
            Edit::RemoveEntry(i) if n > 0 => {
                s.entries.remove(i % n);
            }
            Edit::AddEntry(x) => s.entries.push(x),
            Edit::ReplaceMatcher(i, j, m) if n > 0 => {
                if let Some(ms) = &mut s.entries[i % n].http {
                    let k = j % ms.len();
                    ms[k] = m;
                }
            }
            Edit::AddMatcher(i, m) if n > 0 => {
                let e = &mut s.entries[i % n];
                e.http.get_or_insert_with(Vec::new).push(m);
            }
            Edit::RemoveMatcher(i, j) if n > 0 => {
                if let Some(ms) = &mut s.entries[i % n].http {
                    if ms.len() > 1 {
                        ms.remove(j % ms.len());
                    }
                }
            }
            Edit::ToggleEntryAudit(i) if n > 0 => {
                let e = &mut s.entries[i % n];
                e.audit = match e.audit {
                    None => Some(!s.audit),
                    Some(a) => Some(!a),
                };
            }
            Edit::DropHttp(i) if n > 0 => s.entries[i % n].http = None,
            Edit::ReplaceRoute(i, r) if !s.routes.is_empty() => {
                let k = i % s.routes.len();
                s.routes[k] = r;
            }
            Edit::SwapRoutes(i, j) if !s.routes.is_empty() => {
                let l = s.routes.len();
                s.routes.swap(i % l, j % l);
            }
            Edit::AddRoute(r) => s.routes.push(r),
            Edit::SetDefault(d) => s.default_pool = d,
            Edit::Tweak(i, j, f) if n > 0 => {
                if let Some(ms) = &mut s.entries[i % n].http {
                    let k = j % ms.len();
                    let m = &mut ms[k];
                    match f {
                        Field::Methods(v) => m.methods = v,
                        Field::Prefix(v) => m.prefix = v,
                        Field::Exact(v) => m.exact = v,
                        Field::Regex(v) => m.regex = v,
                        Field::Header(v) => m.header = v,
                    }
                }
            }
            _ => {}
        }
    }
    s
}

fn cond_json(c: &Cond) -> Value {
    match c {
        Cond::Exact(v) => json!(v),
        Cond::Present => json!(true),
        Cond::Absent => json!(false),
        Cond::Prefix(v) => json!({ "prefix": v }),
        Cond::Suffix(v) => json!({ "suffix": v }),
        Cond::Regex(v) => json!({ "regex": v }),
    }
}

/// The rule file of a spec; entries that would be refused (a missing
/// container, an overlap, `http` on udp) are left out, as a careful author
/// would, so that almost every generated file is valid.
fn render(s: &Spec) -> String {
    let mut containers = serde_json::Map::new();
    for (i, n) in NAMES.iter().enumerate() {
        if s.present[i] {
            containers.insert(
                (*n).into(),
                json!({ "address": format!("198.19.0.{}", i + 2) }),
            );
        }
    }
    containers.insert("lb".into(), json!({ "address": "198.19.0.9" }));
    let mut taken = std::collections::HashSet::new();
    let mut access = Vec::new();
    for e in &s.entries {
        let from: Vec<usize> = e.from.iter().copied().filter(|&f| f != e.to).collect();
        if from.is_empty() || !s.present[e.to] || from.iter().any(|&f| !s.present[f]) {
            continue;
        }
        let keys: Vec<_> = from
            .iter()
            .flat_map(|&f| e.ports.iter().map(move |&p| (f, e.to, e.udp, p)))
            .collect();
        if keys.iter().any(|k| taken.contains(k)) {
            continue;
        }
        taken.extend(keys);
        let mut v = json!({
            "from": from.iter().map(|&f| NAMES[f]).collect::<Vec<_>>(),
            "to": NAMES[e.to],
            "ports": e.ports.iter().map(|&p| PORTS[p]).collect::<Vec<_>>(),
        });
        if e.udp {
            v["protocol"] = json!("udp");
        }
        if let Some(a) = e.audit {
            v["mode"] = json!(if a { "audit" } else { "enforce" });
        }
        if let (Some(ms), false) = (&e.http, e.udp) {
            let ms: Vec<Value> = ms
                .iter()
                .map(|m| {
                    let mut o = serde_json::Map::new();
                    if let Some(ms) = &m.methods {
                        o.insert(
                            "methods".into(),
                            json!(ms.iter().map(|&i| METHODS[i]).collect::<Vec<_>>()),
                        );
                    }
                    if let Some(p) = m.prefix {
                        o.insert("path_prefix".into(), json!(PREFIXES[p]));
                    }
                    if let Some(p) = m.exact {
                        o.insert("path".into(), json!(EXACTS[p]));
                    }
                    if let Some(r) = m.regex {
                        o.insert("path_regex".into(), json!(REGEXES[r]));
                    }
                    if let Some(c) = &m.header {
                        o.insert("headers".into(), json!({ "X-H": cond_json(c) }));
                    }
                    Value::Object(o)
                })
                .collect();
            v["http"] = json!(ms);
        }
        access.push(v);
    }
    let mut seen_routes = std::collections::HashSet::new();
    let routes: Vec<Value> = s
        .routes
        .iter()
        .filter(|r| r.host.is_some() || r.prefix.is_some())
        .filter(|r| {
            let p = r.prefix.map(|p| PREFIXES[p].trim_end_matches('/'));
            seen_routes.insert((r.host, p))
        })
        .map(|r| {
            let mut o = serde_json::Map::new();
            if let Some(h) = r.host {
                o.insert("host".into(), json!(HOSTS[h]));
            }
            if let Some(p) = r.prefix {
                o.insert("path_prefix".into(), json!(PREFIXES[p]));
            }
            o.insert("pool".into(), json!(format!("p{}", r.pool)));
            Value::Object(o)
        })
        .collect();
    let mut file = json!({
        "version": 1,
        "containers": containers,
        "access": access,
        "pools": {
            "p0": { "members": ["lb:80"] },
            "p1": { "members": ["lb:81"] },
            "p2": { "members": ["lb:82"] },
        },
    });
    if s.audit {
        file["mode"] = json!("audit");
    }
    if !routes.is_empty() || s.default_pool.is_some() {
        let mut f = json!({ "name": "edge", "listen": "127.0.0.1:8080", "routes": routes });
        if let Some(d) = s.default_pool {
            f["default_pool"] = json!(format!("p{d}"));
        }
        file["frontends"] = json!([f]);
    }
    serde_json::to_string_pretty(&file).expect("serialisable")
}

const PATHS: [&str; 9] = [
    "/", "/a", "/a/", "/a/b", "/a/b/c", "/ab", "/b", "/b/x", "/c",
];
const HEADER_SETS: [&[(&str, &str)]; 6] = [
    &[],
    &[("x-h", "1")],
    &[("x-h", "12")],
    &[("x-h", "2")],
    &[("x-h", "13")],
    &[("x-h", "1"), ("x-h", "1")],
];

/// `explain`'s verdict; a container the file lacks is unmanaged (allow).
fn allowed(
    p: &Policy,
    from: &str,
    to: &str,
    proto: L4,
    port: u16,
    req: Option<&RequestProbe>,
) -> bool {
    match p.probe(from, to, proto, port, req) {
        Ok(d) => d.verdict == Verdict::Allow,
        Err(_) => true,
    }
}

/// Does a widening (or undecidable) change of `r` cover this probe?
fn covered(
    r: &Report,
    new: &Policy,
    from: &str,
    to: &str,
    proto: L4,
    port: u16,
    req: Option<&RequestView>,
) -> bool {
    r.changes.iter().any(|c| {
        if !matches!(c.class, Class::Widen | Class::Unknown) {
            return false;
        }
        match &c.scope {
            Scope::Everything => true,
            Scope::Container(n) => n == from || n == to,
            Scope::Flows { flows, matcher } => {
                flows.iter().any(|k| {
                    k.from == from && k.to == to && k.proto.l4() == proto && k.port == port
                }) && match (matcher, req) {
                    (None, _) => true,
                    (Some((diff::FileSide::Old, _)), _) => false,
                    (Some((diff::FileSide::New, _)), None) => true,
                    (Some((diff::FileSide::New, j)), Some(req)) => {
                        let (Some(f), Some(t)) = (new.container_id(from), new.container_id(to))
                        else {
                            return false;
                        };
                        new.flow(f, t, proto, port)
                            .and_then(|e| e.http.as_ref())
                            .and_then(|ms| ms.get(*j))
                            .is_some_and(|m| m.check(req).is_ok())
                    }
                }
            }
            _ => false,
        }
    })
}

fn check_access(old: &Policy, new: &Policy, r: &Report) -> Result<(), TestCaseError> {
    let mut any_widen = false;
    let mut any_change = false;
    for from in NAMES {
        for to in NAMES {
            for port in PORTS {
                for proto in [L4::Tcp, L4::Udp] {
                    let (a, b) = (
                        allowed(old, from, to, proto, port, None),
                        allowed(new, from, to, proto, port, None),
                    );
                    any_change |= a != b;
                    if !a && b {
                        any_widen = true;
                        prop_assert!(
                            covered(r, new, from, to, proto, port, None),
                            "{from} -> {to}:{port}/{proto:?} went deny -> allow, not reported as a widening"
                        );
                    }
                    let http = |p: &Policy| {
                        let (Some(f), Some(t)) = (p.container_id(from), p.container_id(to)) else {
                            return false;
                        };
                        p.flow(f, t, proto, port).is_some_and(|e| e.http.is_some())
                    };
                    // Otherwise a request probe is decided like the flow.
                    if !http(old) && !http(new) {
                        continue;
                    }
                    for method in METHODS {
                        for path in PATHS {
                            for hs in HEADER_SETS {
                                let headers: Vec<httparse::Header> = hs
                                    .iter()
                                    .map(|(n, v)| httparse::Header {
                                        name: n,
                                        value: v.as_bytes(),
                                    })
                                    .collect();
                                let probe = RequestProbe {
                                    method,
                                    target: path,
                                    headers: &headers,
                                };
                                let a = allowed(old, from, to, proto, port, Some(&probe));
                                let b = allowed(new, from, to, proto, port, Some(&probe));
                                any_change |= a != b;
                                if !a && b {
                                    any_widen = true;
                                    let view = RequestView {
                                        method,
                                        path,
                                        headers: &headers,
                                    };
                                    prop_assert!(
                                        covered(r, new, from, to, proto, port, Some(&view)),
                                        "{from} -> {to}:{port}: {method} {path} {hs:?} went deny -> allow, not reported as a widening"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    if any_widen {
        prop_assert_eq!(r.verdict(), diff::Verdict::Widening);
    }
    if any_change {
        prop_assert_ne!(
            r.verdict(),
            diff::Verdict::None,
            "a verdict changed, diff reports no change"
        );
    }
    Ok(())
}

fn table(p: &Policy) -> Option<RouteTable> {
    let names: Vec<&String> = p.source.rules.pools.keys().collect();
    (!p.source.rules.frontends.is_empty()).then(|| {
        RouteTable::compile(&p.source, 0, &|n| {
            names.iter().position(|x| *x == n).unwrap_or(99)
        })
    })
}

fn pool_of(t: &Option<RouteTable>, host: Option<&str>, path: &str) -> Option<String> {
    let t = t.as_ref()?;
    let m = t.lookup(host, path)?;
    Some(format!("p{}", m.pool()))
}

fn check_frontend(old: &Policy, new: &Policy, r: &Report) -> Result<(), TestCaseError> {
    let (ta, tb) = (table(old), table(new));
    if ta.is_none() || tb.is_none() {
        return Ok(());
    }
    let hosts = [
        None,
        Some("a.example"),
        Some("c.example"),
        Some("b.a.example"),
        Some("z.b.a.example"),
        Some("example"),
        Some("other.test"),
    ];
    for host in hosts {
        for path in PATHS {
            let h = host.map(|h| route_host(h.as_bytes()).expect("valid host").into_owned());
            let (a, b) = (
                pool_of(&ta, h.as_deref(), path),
                pool_of(&tb, h.as_deref(), path),
            );
            if a == b {
                continue;
            }
            let want = if b.is_none() {
                Class::Narrow
            } else {
                Class::Widen
            };
            // The reported inputs are representatives: the probe must route
            // like one of them on both sides.
            let reported = r.changes.iter().any(|c| {
                c.class == want
                    && matches!(&c.scope, Scope::Inputs { inputs, .. } if inputs.iter().any(|(rh, rp)| {
                        pool_of(&ta, rh.as_deref(), rp) == a && pool_of(&tb, rh.as_deref(), rp) == b
                    }))
            });
            prop_assert!(
                reported,
                "frontend input {host:?} {path}: {a:?} -> {b:?} not reported as {want:?}"
            );
            if want == Class::Widen {
                prop_assert_eq!(r.verdict(), diff::Verdict::Widening);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    /// One flow, its matchers and small edits of their fields: dense
    /// coverage of the containment rules (cheap, so many cases).
    #[test]
    fn http_diff_agrees_with_explain(
        ms in proptest::collection::vec(matcher(), 1..=2),
        tweaks in proptest::collection::vec((any::<usize>(), field()), 1..=2),
        extra in proptest::option::weighted(0.3, matcher()),
    ) {
        let old = Spec {
            audit: false,
            present: [true; 4],
            entries: vec![E { from: vec![0], to: 1, ports: vec![0], udp: false, http: Some(ms), audit: None }],
            routes: Vec::new(),
            default_pool: None,
        };
        let mut edits: Vec<Edit> = tweaks.into_iter().map(|(j, f)| Edit::Tweak(0, j, f)).collect();
        edits.extend(extra.map(|m| Edit::AddMatcher(0, m)));
        run_case(old, &edits)?;
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whole rule files and edits of any part.
    #[test]
    fn diff_agrees_with_explain(old in spec(), edits in proptest::collection::vec(edit(), 1..4)) {
        run_case(old, &edits)?;
    }
}

fn run_case(old: Spec, edits: &[Edit]) -> Result<(), TestCaseError> {
    let new = apply(old.clone(), edits);
    let (ta, tb) = (render(&old), render(&new));
    let pa = portcullis::rules::parse("old.json", &ta).and_then(Policy::compile);
    let pb = portcullis::rules::parse("new.json", &tb).and_then(Policy::compile);
    let (pa, pb) = match (pa, pb) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            // The generator is meant to produce valid files only.
            return Err(TestCaseError::fail(format!(
                "generated file refused: {e}\n{ta}\n{tb}"
            )));
        }
    };
    let report = diff::diff(&pa, &pb);
    check_access(&pa, &pb, &report)?;
    check_frontend(&pa, &pb, &report)?;
    // Nothing changed in the files: nothing reported.
    let same = diff::diff(&pa, &pa);
    prop_assert!(same.changes.is_empty(), "{:?}", same.changes);
    Ok(())
}

fn one_flow(ms: Vec<M>) -> Spec {
    Spec {
        audit: false,
        present: [true; 4],
        entries: vec![E {
            from: vec![0],
            to: 1,
            ports: vec![0],
            udp: false,
            http: Some(ms),
            audit: None,
        }],
        routes: Vec::new(),
        default_pool: None,
    }
}

/// Every pair of values of one matcher component (the others fixed):
/// methods, header conditions, and path conditions without regexes and
/// with them. Exhaustive where proptest would only sample.
#[test]
fn every_component_pair_agrees_with_explain() {
    let base = M {
        methods: Some(vec![0]),
        prefix: Some(1),
        exact: None,
        regex: None,
        header: None,
    };
    let mut variants: Vec<Vec<M>> = Vec::new();
    let methods = [
        None,
        Some(vec![0]),
        Some(vec![0, 1]),
        Some(vec![1]),
        Some(vec![1, 2]),
    ];
    variants.push(
        methods
            .iter()
            .map(|m| M {
                methods: m.clone(),
                ..base.clone()
            })
            .collect(),
    );
    let conds = [
        None,
        Some(Cond::Exact("1")),
        Some(Cond::Exact("12")),
        Some(Cond::Present),
        Some(Cond::Absent),
        Some(Cond::Prefix("1")),
        Some(Cond::Prefix("12")),
        Some(Cond::Suffix("2")),
        Some(Cond::Suffix("12")),
        Some(Cond::Regex("[0-9]+")),
        Some(Cond::Regex("1.*")),
    ];
    variants.push(
        conds
            .iter()
            .map(|c| M {
                header: c.clone(),
                ..base.clone()
            })
            .collect(),
    );
    let mut paths = Vec::new();
    for prefix in [None, Some(1), Some(2), Some(3), Some(4)] {
        for exact in [None, Some(0), Some(1)] {
            for regex in [None, Some(0), Some(1)] {
                // Regexes only with no prefix or /a ("/" is no prefix).
                if regex.is_some() && (exact.is_some() || prefix.is_some_and(|p| p != 1)) {
                    continue;
                }
                paths.push(M {
                    prefix,
                    exact,
                    regex,
                    ..base.clone()
                });
            }
        }
    }
    variants.push(paths);
    let mut n = 0;
    for vs in &variants {
        for a in vs {
            for b in vs {
                n += 1;
                if let Err(e) = run_case(
                    one_flow(vec![a.clone()]),
                    &[Edit::ReplaceMatcher(0, 0, b.clone())],
                ) {
                    panic!("{a:?} -> {b:?}: {e}");
                }
            }
        }
    }
    assert!(n > 400, "{n} pairs");
}
