//! L7: the requests one flow's `http` matchers allow, old against new.
//!
//! A matcher allows a product set: methods × paths × header conditions.
//! For each new matcher we ask whether the old matchers already allow all
//! of it (and the other way round for narrowings):
//!
//! 1. contained in one old matcher, decided per component — segment-aware
//!    prefixes (`/foo/bar` ⊆ `/foo`, `/` ⊄ `/foo`), exact paths evaluated
//!    by the compiled matcher itself, header conditions by kind; two
//!    different regexes cannot be compared and give *unknown*;
//! 2. split by method, each method contained in some old matcher;
//! 3. otherwise we look for a witness: a concrete request the new matcher
//!    allows and no old matcher does (checked with the same
//!    [`Matcher::check`] the proxy runs). With one, the widening is
//!    certain and printed as an example; without one the answer is
//!    *unknown* — never "no change", never "narrowing".

use crate::policy::matcher::{Matcher, RequestView};
use crate::policy::{Entry, Policy};
use crate::rules::model::{HeaderCond, HttpMatcher};
use crate::rules::RuleRef;

use super::{Class, FileSide};

/// One L7 statement about a flow.
#[derive(Debug)]
pub struct HttpChange {
    pub class: Class,
    pub what: String,
    pub old: Option<RuleRef>,
    pub new: Option<RuleRef>,
    /// The matcher the statement is about: a new one for what may be
    /// newly allowed, an old one for what may be newly refused.
    pub matcher: Option<(FileSide, usize)>,
}

/// A matcher as written and as compiled.
#[derive(Clone, Copy)]
struct M<'a> {
    raw: &'a HttpMatcher,
    compiled: &'a Matcher,
}

fn matchers<'a>(p: &'a Policy, e: &'a Entry, i: usize) -> Vec<M<'a>> {
    let raw = p
        .source
        .rules
        .access
        .get(i)
        .and_then(|a| a.http.as_deref())
        .unwrap_or(&[]);
    e.http
        .iter()
        .flatten()
        .zip(raw)
        .map(|(compiled, raw)| M { raw, compiled })
        .collect()
}

/// Three-valued containment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tri {
    Yes,
    No,
    Unknown(String),
}

fn all(parts: impl IntoIterator<Item = Tri>) -> Tri {
    let mut unknown = None;
    for p in parts {
        match p {
            Tri::No => return Tri::No,
            Tri::Unknown(w) => unknown = unknown.or(Some(w)),
            Tri::Yes => {}
        }
    }
    unknown.map_or(Tri::Yes, Tri::Unknown)
}

/// The outcome for one matcher against the other side's matchers.
enum Cover {
    Covered,
    /// Certainly not covered: an example request.
    Witness(String),
    Unknown(String),
}

/// Compares the matchers of one flow's entries.
pub fn diff(
    old: &Policy,
    ea: &Entry,
    ia: usize,
    new: &Policy,
    eb: &Entry,
    ib: usize,
) -> Vec<HttpChange> {
    let (ma, mb) = (matchers(old, ea, ia), matchers(new, eb, ib));
    let mut out = Vec::new();
    for (j, n) in mb.iter().enumerate() {
        let (class, what) = match cover(n, &ma) {
            Cover::Covered => continue,
            Cover::Witness(w) => (
                Class::Widen,
                format!("newly allowed: {} (e.g. {w})", describe(n.raw)),
            ),
            Cover::Unknown(why) => (
                Class::Unknown,
                format!(
                    "cannot decide whether {} allows more than before: {why}",
                    describe(n.raw)
                ),
            ),
        };
        out.push(HttpChange {
            class,
            what,
            old: Some(ea.rule.clone()),
            new: Some(n.compiled.rule.clone()),
            matcher: Some((FileSide::New, j)),
        });
    }
    for (j, o) in ma.iter().enumerate() {
        let (class, what) = match cover(o, &mb) {
            Cover::Covered => continue,
            Cover::Witness(w) => (
                Class::Narrow,
                format!("no longer allowed: {} (e.g. {w})", describe(o.raw)),
            ),
            Cover::Unknown(why) => (
                Class::Unknown,
                format!(
                    "cannot decide whether all of {} is still allowed: {why}",
                    describe(o.raw)
                ),
            ),
        };
        out.push(HttpChange {
            class,
            what,
            old: Some(o.compiled.rule.clone()),
            new: Some(eb.rule.clone()),
            matcher: Some((FileSide::Old, j)),
        });
    }
    out
}

fn cover(a: &M, bs: &[M]) -> Cover {
    let mut why = None;
    for b in bs {
        match contains(a.raw, b) {
            Tri::Yes => return Cover::Covered,
            Tri::Unknown(w) => why = why.or(Some(w)),
            Tri::No => {}
        }
    }
    // Split by method: each method may be covered by a different matcher.
    if let Some(ms) = a.raw.methods.as_ref().filter(|ms| ms.len() > 1) {
        let each = ms.iter().all(|m| {
            let one = HttpMatcher {
                methods: Some(vec![m.clone()]),
                ..a.raw.clone()
            };
            bs.iter().any(|b| contains(&one, b) == Tri::Yes)
        });
        if each {
            return Cover::Covered;
        }
    }
    match witness(a, bs) {
        Some(w) => Cover::Witness(w),
        None => Cover::Unknown(why.unwrap_or_else(|| {
            "it is not contained in any single matcher of the other file, and no example request outside them was found".to_owned()
        })),
    }
}

/// The paths a matcher allows.
enum Paths<'a> {
    Exact(&'a str),
    Prefix(&'a str, Option<&'a str>),
}

fn paths(m: &HttpMatcher) -> Paths<'_> {
    match &m.path {
        Some(e) => Paths::Exact(e),
        None => Paths::Prefix(
            m.path_prefix.as_deref().unwrap_or("/"),
            m.path_regex.as_deref(),
        ),
    }
}

/// Is every path under prefix `p` under prefix `q` (segment-aware)?
fn prefix_within(p: &str, q: &str) -> bool {
    let p = p.strip_suffix('/').unwrap_or(p);
    let p = if p.is_empty() { "/" } else { p };
    crate::wire::normalize::has_path_prefix(p, q)
}

/// Does `b` allow every request `a` allows?
fn contains(a: &HttpMatcher, b: &M) -> Tri {
    let methods = match (&a.methods, &b.raw.methods) {
        (_, None) => {
            // Without `methods` the proxy still refuses CONNECT.
            if a.methods.iter().flatten().any(|m| m == "CONNECT") {
                Tri::No
            } else {
                Tri::Yes
            }
        }
        (None, Some(_)) => Tri::No,
        (Some(x), Some(y)) => {
            if x.iter().all(|m| y.contains(m)) {
                Tri::Yes
            } else {
                Tri::No
            }
        }
    };
    let path = match paths(a) {
        Paths::Exact(e) => {
            if !path_allowed(a, e) {
                return Tri::Yes; // `a` allows nothing at all.
            }
            if path_allowed(b.raw, e) {
                Tri::Yes
            } else {
                Tri::No
            }
        }
        Paths::Prefix(p, ra) => match paths(b.raw) {
            Paths::Exact(_) => match ra {
                Some(_) => Tri::Unknown(regex_note(ra, None)),
                None => Tri::No,
            },
            Paths::Prefix(q, rb) => {
                if prefix_within(p, q) {
                    match rb {
                        None => Tri::Yes,
                        Some(r) if ra == Some(r) => Tri::Yes,
                        Some(_) => Tri::Unknown(regex_note(ra, rb)),
                    }
                } else if ra.is_some() {
                    Tri::Unknown(regex_note(ra, rb))
                } else {
                    Tri::No
                }
            }
        },
    };
    let no_headers = Default::default();
    let ha = a.headers.as_ref().unwrap_or(&no_headers);
    let hb = b.raw.headers.as_ref().unwrap_or(&no_headers);
    let headers = all(hb.iter().map(|(name, cb)| {
        let ca = ha
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, c)| c);
        header_within(&name.to_ascii_lowercase(), ca, cb)
    }));
    all([methods, path, headers])
}

fn regex_note(a: Option<&str>, b: Option<&str>) -> String {
    match (a, b) {
        (Some(x), Some(y)) => format!("path_regex {x:?} and path_regex {y:?} cannot be compared"),
        (Some(x), None) | (None, Some(x)) => {
            format!("path_regex {x:?} cannot be compared with a path or prefix")
        }
        (None, None) => "paths cannot be compared".to_owned(),
    }
}

/// Do `a`'s path conditions all hold for the concrete path `path`?
fn path_allowed(m: &HttpMatcher, path: &str) -> bool {
    let probe = HttpMatcher {
        methods: None,
        headers: None,
        ..m.clone()
    };
    // Evaluate with a compiled copy so regexes are anchored exactly as the
    // proxy anchors them.
    let rule = RuleRef {
        file: "".into(),
        pos: Default::default(),
        path: String::new(),
    };
    match Matcher::compile(rule, &probe) {
        Ok(c) => c
            .check(&RequestView {
                method: "GET",
                path,
                headers: &[],
            })
            .is_ok(),
        Err(_) => false,
    }
}

/// Is every value (or absence) header condition `a` admits admitted by `b`?
/// `None`: no condition.
fn header_within(name: &str, a: Option<&HeaderCond>, b: &HeaderCond) -> Tri {
    use HeaderCond::*;
    let yes = |c: bool| if c { Tri::Yes } else { Tri::No };
    let Some(a) = a else {
        return Tri::No;
    };
    match (a, b) {
        (Absent, Absent) | (Present, Present) => Tri::Yes,
        (Absent, _) | (Present, _) | (_, Absent) => Tri::No,
        (_, Present) => Tri::Yes,
        (Exact(v), Exact(w)) => yes(v == w),
        (Exact(v), Prefix(p)) => yes(v.starts_with(p.as_str())),
        (Exact(v), Suffix(s)) => yes(v.ends_with(s.as_str())),
        (Exact(v), Regex(r)) => {
            yes(regex::Regex::new(&format!("^(?:{r})$")).is_ok_and(|re| re.is_match(v)))
        }
        (Prefix(p), Prefix(q)) => yes(p.starts_with(q.as_str())),
        (Suffix(s), Suffix(t)) => yes(s.ends_with(t.as_str())),
        (Prefix(_), Suffix(s)) | (Suffix(_), Prefix(s)) => yes(s.is_empty()),
        (Prefix(_) | Suffix(_), Exact(_)) => Tri::No,
        (Regex(r), Regex(q)) if r == q => Tri::Yes,
        (Regex(_), Exact(_) | Prefix(_) | Suffix(_) | Regex(_))
        | (Prefix(_) | Suffix(_), Regex(_)) => Tri::Unknown(format!(
            "header {name}: {} and {} cannot be compared",
            cond(a),
            cond(b)
        )),
    }
}

// === witnesses ===

const COMMON_METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

/// A request `a` allows and none of `bs` does, as `METHOD /path [h: v]`.
fn witness(a: &M, bs: &[M]) -> Option<String> {
    let mut methods: Vec<&str> = match &a.raw.methods {
        Some(ms) => ms.iter().map(String::as_str).collect(),
        None => COMMON_METHODS.to_vec(),
    };
    methods.dedup();
    let mut cands: Vec<String> = Vec::new();
    match paths(a.raw) {
        Paths::Exact(e) => cands.push(e.to_owned()),
        Paths::Prefix(p, _) => {
            let base = p.strip_suffix('/').unwrap_or(p);
            cands.push(if base.is_empty() {
                "/".into()
            } else {
                base.into()
            });
            cands.push(format!("{base}/zz"));
            for b in bs {
                for q in [b.raw.path.as_deref(), b.raw.path_prefix.as_deref()]
                    .into_iter()
                    .flatten()
                {
                    let q = q.strip_suffix('/').unwrap_or(q);
                    if !q.is_empty() && prefix_within(q, p) {
                        cands.push(q.to_owned());
                        cands.push(format!("{q}/zz"));
                        cands.push(format!("{q}zz"));
                    }
                }
            }
        }
    }
    // Header sets: only what `a` requires, then also every header the other
    // side names (with a value `a` does not constrain).
    let mut minimal: Vec<(String, String)> = Vec::new();
    for (n, c) in a.raw.headers.iter().flatten() {
        let v = match c {
            HeaderCond::Exact(v) | HeaderCond::Prefix(v) | HeaderCond::Suffix(v) => v.clone(),
            HeaderCond::Present => "zz".to_owned(),
            HeaderCond::Absent => continue,
            HeaderCond::Regex(_) => return None,
        };
        minimal.push((n.to_ascii_lowercase(), v));
    }
    let mut full = minimal.clone();
    for b in bs {
        for (n, _) in b.raw.headers.iter().flatten() {
            let n = n.to_ascii_lowercase();
            let constrained = a
                .raw
                .headers
                .iter()
                .flatten()
                .any(|(x, _)| x.eq_ignore_ascii_case(&n));
            if !constrained && !full.iter().any(|(x, _)| *x == n) {
                full.push((n, "zz".to_owned()));
            }
        }
    }
    for hs in [&minimal, &full] {
        let headers: Vec<httparse::Header> = hs
            .iter()
            .map(|(n, v)| httparse::Header {
                name: n,
                value: v.as_bytes(),
            })
            .collect();
        for m in &methods {
            for path in &cands {
                let req = RequestView {
                    method: m,
                    path,
                    headers: &headers,
                };
                // `check` is the proxy's own test, CONNECT rule included.
                let allowed_by = |x: &M| x.compiled.check(&req).is_ok();
                if allowed_by(a) && !bs.iter().any(allowed_by) {
                    let mut s = format!("{m} {path}");
                    for (n, v) in hs.iter() {
                        s.push_str(&format!(" [{n}: {v}]"));
                    }
                    return Some(s);
                }
            }
        }
    }
    None
}

// === descriptions ===

fn cond(c: &HeaderCond) -> String {
    match c {
        HeaderCond::Exact(v) => format!("= {v:?}"),
        HeaderCond::Present => "present".to_owned(),
        HeaderCond::Absent => "absent".to_owned(),
        HeaderCond::Prefix(v) => format!("starts with {v:?}"),
        HeaderCond::Suffix(v) => format!("ends with {v:?}"),
        HeaderCond::Regex(v) => format!("matches {v:?}"),
    }
}

/// A matcher in words: `GET,HEAD under /foo with x-bar = "bar"`.
pub fn describe(m: &HttpMatcher) -> String {
    let mut s = match &m.methods {
        Some(ms) => ms.join(","),
        None => "any method".to_owned(),
    };
    match (&m.path, &m.path_prefix) {
        (Some(p), _) => s.push_str(&format!(" path {p}")),
        (None, Some(p)) if p != "/" => s.push_str(&format!(" under {p}")),
        _ if m.path_regex.is_none() => s.push_str(" any path"),
        _ => {}
    }
    if let Some(r) = &m.path_regex {
        s.push_str(&format!(" path ~ {r:?}"));
    }
    let hs: Vec<String> = m
        .headers
        .iter()
        .flatten()
        .map(|(n, c)| format!("{} {}", n.to_ascii_lowercase(), cond(c)))
        .collect();
    if !hs.is_empty() {
        s.push_str(&format!(" with {}", hs.join(" and ")));
    }
    s
}

/// All matchers of an entry, `a or b`.
pub fn describe_entry(p: &Policy, e: &Entry, i: usize) -> String {
    matchers(p, e, i)
        .iter()
        .map(|m| describe(m.raw))
        .collect::<Vec<_>>()
        .join(" or ")
}
