//! HTTP caching rules (RFC 9111) for a *shared* cache, as pure functions:
//! which responses may be stored, how long they stay fresh, how old a
//! stored response is, and whether a stored response may answer a request
//! as it is, only after revalidation, or not at all.
//!
//! Nothing here does I/O or reads a clock: the caller passes `now`, the
//! parsed header facts and the configured `default_ttl_s`, so every rule is
//! covered case by case by the table in the tests below.
//!
//! Deliberate choices, stricter than the RFC where it leaves room:
//! - a response to a request carrying `Authorization`, and a response
//!   carrying `Set-Cookie`, is stored only when marked `public` (the rule
//!   file contract says so; RFC 9111 §3.5 would also accept `s-maxage`);
//! - `private` and `no-cache` with a field list are treated like their
//!   unqualified forms;
//! - a response that would be stale at once and has no validator is not
//!   stored (it could never be used);
//! - `default_ttl_s` is the only heuristic: without it, a response without
//!   explicit freshness is not stored.

use std::fmt;
use std::time::{Duration, SystemTime};

/// Upper bound of any delta-seconds value (RFC 9111 §1.2.2).
pub const MAX_DELTA: u64 = 2_147_483_648;

/// The directives of one or more `Cache-Control` fields that matter here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub only_if_cached: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub min_fresh: Option<u64>,
    /// `Some(None)`: any staleness is acceptable.
    pub max_stale: Option<Option<u64>>,
}

/// A delta-seconds argument; anything unparsable counts as 0 (stale), an
/// overflow as [`MAX_DELTA`].
fn delta(v: Option<&str>) -> u64 {
    match v {
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
            v.parse::<u64>().map_or(MAX_DELTA, |n| n.min(MAX_DELTA))
        }
        _ => 0,
    }
}

/// With two values for one directive the smaller one wins (RFC 9111 §4.2.1
/// allows treating the response as stale; the smaller value is as safe).
fn keep_min(slot: &mut Option<u64>, v: u64) {
    *slot = Some(slot.map_or(v, |o| o.min(v)));
}

impl CacheControl {
    /// Parses every `Cache-Control` field value given (a list may span
    /// several lines). Unknown directives are ignored.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> CacheControl {
        let mut cc = CacheControl::default();
        for value in values {
            let Ok(value) = std::str::from_utf8(value) else {
                // Not a valid field value: be safe.
                cc.no_store = true;
                continue;
            };
            for item in split_list(value) {
                let (name, arg) = match item.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (item, None),
                };
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => cc.no_store = true,
                    "no-cache" => cc.no_cache = true,
                    "private" => cc.private = true,
                    "public" => cc.public = true,
                    "must-revalidate" => cc.must_revalidate = true,
                    "proxy-revalidate" => cc.proxy_revalidate = true,
                    "only-if-cached" => cc.only_if_cached = true,
                    "max-age" => keep_min(&mut cc.max_age, delta(arg)),
                    "s-maxage" => keep_min(&mut cc.s_maxage, delta(arg)),
                    "min-fresh" => keep_min(&mut cc.min_fresh, delta(arg)),
                    "max-stale" => {
                        cc.max_stale = Some(match (cc.max_stale, arg.map(|a| delta(Some(a)))) {
                            (Some(Some(old)), Some(new)) => Some(old.min(new)),
                            (Some(Some(old)), None) => Some(old),
                            (_, new) => new,
                        })
                    }
                    _ => {}
                }
            }
        }
        cc
    }
}

/// Splits a comma-separated field value, keeping quoted strings whole.
fn split_list(v: &str) -> impl Iterator<Item = &str> {
    let mut items = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in v.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                items.push(&v[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&v[start..]);
    items.into_iter().map(str::trim).filter(|s| !s.is_empty())
}

/// An HTTP-date (IMF-fixdate, RFC 850 or asctime form); `None` if invalid.
pub fn http_date(v: &[u8]) -> Option<SystemTime> {
    let s = std::str::from_utf8(v).ok()?;
    httpdate::parse_http_date(s.trim()).ok()
}

/// What the request says about caching.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFacts {
    /// GET (true) or HEAD (false); other methods never reach these rules.
    pub get: bool,
    pub cc: CacheControl,
    /// `Pragma: no-cache` without any `Cache-Control` (RFC 9111 §5.4).
    pub pragma_no_cache: bool,
    pub authorization: bool,
}

/// `Vary` of a response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Vary {
    #[default]
    None,
    /// `Vary: *`: no later request can be known to match.
    Any,
    /// Lower-cased field names, in order, without duplicates.
    Fields(Vec<String>),
}

impl Vary {
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Vary {
        let mut names: Vec<String> = Vec::new();
        for value in values {
            let Ok(value) = std::str::from_utf8(value) else {
                return Vary::Any;
            };
            for item in split_list(value) {
                if item == "*" {
                    return Vary::Any;
                }
                let n = item.to_ascii_lowercase();
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        if names.is_empty() {
            Vary::None
        } else {
            Vary::Fields(names)
        }
    }
}

/// What a response says about caching.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseFacts {
    pub status: u16,
    pub cc: CacheControl,
    /// `Some(None)`: an `Expires` field that is not a valid date (it means
    /// "already expired", RFC 9111 §5.3).
    pub expires: Option<Option<SystemTime>>,
    pub date: Option<SystemTime>,
    /// The `Age` field, in seconds.
    pub age: Option<u64>,
    pub set_cookie: bool,
    pub vary: Vary,
    pub etag: bool,
    pub last_modified: bool,
}

impl ResponseFacts {
    pub fn has_validator(&self) -> bool {
        self.etag || self.last_modified
    }
}

/// Why a response is not stored (logged at debug level, and tested).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStorable {
    Method,
    RequestNoStore,
    ResponseNoStore,
    Private,
    Authorization,
    SetCookie,
    VaryAny,
    Status(u16),
    NoFreshness,
    /// Stale at once (no-cache, max-age=0, past Expires) and no validator.
    UselessWithoutValidator,
}

impl fmt::Display for NotStorable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotStorable::Method => f.write_str("only GET responses are stored"),
            NotStorable::RequestNoStore => f.write_str("request has Cache-Control: no-store"),
            NotStorable::ResponseNoStore => f.write_str("response has Cache-Control: no-store"),
            NotStorable::Private => f.write_str("response has Cache-Control: private"),
            NotStorable::Authorization => {
                f.write_str("request has Authorization and the response is not public")
            }
            NotStorable::SetCookie => f.write_str("response has Set-Cookie and is not public"),
            NotStorable::VaryAny => f.write_str("response has Vary: *"),
            NotStorable::Status(s) => write!(f, "status {s} is not cacheable here"),
            NotStorable::NoFreshness => {
                f.write_str("no freshness information and no default_ttl_s")
            }
            NotStorable::UselessWithoutValidator => {
                f.write_str("stale at once and no validator to revalidate it")
            }
        }
    }
}

/// Statuses cacheable by default (RFC 9110 §15.1), the only ones that get
/// `default_ttl_s`.
pub fn heuristically_cacheable(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Explicit freshness lifetime (RFC 9111 §4.2.1): `s-maxage`, else
/// `max-age`, else `Expires` − `Date` (`Date` absent: the time the
/// response was received, `received`).
pub fn explicit_lifetime(res: &ResponseFacts, received: SystemTime) -> Option<Duration> {
    if let Some(s) = res.cc.s_maxage {
        return Some(Duration::from_secs(s));
    }
    if let Some(m) = res.cc.max_age {
        return Some(Duration::from_secs(m));
    }
    match res.expires {
        None => None,
        Some(None) => Some(Duration::ZERO),
        Some(Some(exp)) => Some(
            exp.duration_since(res.date.unwrap_or(received))
                .unwrap_or(Duration::ZERO),
        ),
    }
}

/// Decides whether a response may be stored; `Ok` is its freshness
/// lifetime.
pub fn storable(
    req: &RequestFacts,
    res: &ResponseFacts,
    default_ttl: Option<Duration>,
    received: SystemTime,
) -> Result<Duration, NotStorable> {
    if !req.get {
        return Err(NotStorable::Method);
    }
    if req.cc.no_store {
        return Err(NotStorable::RequestNoStore);
    }
    if res.cc.no_store {
        return Err(NotStorable::ResponseNoStore);
    }
    if res.cc.private {
        return Err(NotStorable::Private);
    }
    if req.authorization && !res.cc.public {
        return Err(NotStorable::Authorization);
    }
    if res.set_cookie && !res.cc.public {
        return Err(NotStorable::SetCookie);
    }
    if res.vary == Vary::Any {
        return Err(NotStorable::VaryAny);
    }
    // Final statuses only; 206 needs range support, a 304 is not a
    // representation.
    if !(200..=599).contains(&res.status) || res.status == 206 || res.status == 304 {
        return Err(NotStorable::Status(res.status));
    }
    let lifetime = match explicit_lifetime(res, received) {
        Some(l) => l,
        None if heuristically_cacheable(res.status) || res.cc.public => match default_ttl {
            Some(t) => t,
            None => return Err(NotStorable::NoFreshness),
        },
        None => return Err(NotStorable::Status(res.status)),
    };
    let stale_at_once = lifetime.is_zero() || res.cc.no_cache;
    if stale_at_once && !res.has_validator() {
        return Err(NotStorable::UselessWithoutValidator);
    }
    Ok(lifetime)
}

/// What is needed to compute a stored response's age (RFC 9111 §4.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgeFacts {
    pub date: Option<SystemTime>,
    pub age: Option<u64>,
    /// When the request that produced the response was sent.
    pub request_time: SystemTime,
    /// When the response was received.
    pub response_time: SystemTime,
}

/// The current age of a stored response at `now`.
pub fn current_age(a: &AgeFacts, now: SystemTime) -> Duration {
    let since = |later: SystemTime, earlier: SystemTime| {
        later.duration_since(earlier).unwrap_or(Duration::ZERO)
    };
    let apparent = a.date.map_or(Duration::ZERO, |d| since(a.response_time, d));
    let delay = since(a.response_time, a.request_time);
    let corrected_age_value = Duration::from_secs(a.age.unwrap_or(0)) + delay;
    let corrected_initial = apparent.max(corrected_age_value);
    corrected_initial + since(now, a.response_time)
}

/// The facts of a stored response that decide how it may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredFacts {
    pub lifetime: Duration,
    pub age: AgeFacts,
    pub no_cache: bool,
    /// `must-revalidate`, `proxy-revalidate` or `s-maxage`: never served
    /// stale by a shared cache.
    pub must_revalidate: bool,
    pub has_validator: bool,
}

/// How a stored response may answer a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Serve it; the value is its current age.
    Fresh(Duration),
    /// Ask the upstream with a conditional request first.
    Revalidate,
    /// Unusable: fetch a new response.
    Fetch,
}

/// Decides how a stored response may answer `req` at `now`.
pub fn usable(s: &StoredFacts, req: &RequestFacts, now: SystemTime) -> Use {
    let age = current_age(&s.age, now);
    let validate = || {
        if s.has_validator {
            Use::Revalidate
        } else {
            Use::Fetch
        }
    };
    if s.no_cache || req.cc.no_cache || req.pragma_no_cache {
        return validate();
    }
    if req.cc.max_age.is_some_and(|m| age > Duration::from_secs(m)) {
        return validate();
    }
    let wanted_fresh = age + Duration::from_secs(req.cc.min_fresh.unwrap_or(0));
    if s.lifetime > wanted_fresh {
        return Use::Fresh(age);
    }
    // Stale: only a client that accepts staleness may get it, and never
    // when the origin forbade it.
    let staleness = age.saturating_sub(s.lifetime);
    let accepted = match req.cc.max_stale {
        None => false,
        Some(None) => true,
        Some(Some(max)) => staleness <= Duration::from_secs(max),
    };
    if accepted && !s.must_revalidate && req.cc.min_fresh.is_none() {
        return Use::Fresh(age);
    }
    validate()
}

/// The `Age` value to send: whole seconds, capped as RFC 9111 §5.1 says.
pub fn age_header(age: Duration) -> u64 {
    age.as_secs().min(MAX_DELTA)
}

/// Weak comparison of an `If-None-Match` list with an entity tag
/// (RFC 9110 §13.1.2).
pub fn if_none_match(list: &[u8], etag: &[u8]) -> bool {
    let opaque = |t: &[u8]| {
        let t = crate::wire::head::trim(t);
        t.strip_prefix(b"W/").unwrap_or(t).to_vec()
    };
    let want = opaque(etag);
    list.split(|&b| b == b',').any(|t| {
        let t = crate::wire::head::trim(t);
        t == b"*" || opaque(t) == want
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn cc(s: &str) -> CacheControl {
        CacheControl::parse([s.as_bytes()])
    }

    fn get(c: &str) -> RequestFacts {
        RequestFacts {
            get: true,
            cc: cc(c),
            ..RequestFacts::default()
        }
    }

    fn res(status: u16, c: &str) -> ResponseFacts {
        ResponseFacts {
            status,
            cc: cc(c),
            date: Some(t(0)),
            ..ResponseFacts::default()
        }
    }

    const TTL: Option<Duration> = Some(Duration::from_secs(30));

    #[test]
    fn cache_control_parsing() {
        let c = cc("Public, MAX-AGE=60, s-maxage=\"10\", no-cache=\"Set-Cookie, X\"");
        assert!(c.public && c.no_cache && !c.private);
        assert_eq!((c.max_age, c.s_maxage), (Some(60), Some(10)));
        assert_eq!(cc("max-age=abc").max_age, Some(0));
        assert_eq!(cc("max-age=99999999999999999999").max_age, Some(MAX_DELTA));
        assert_eq!(cc("max-age=60, max-age=5").max_age, Some(5));
        assert_eq!(cc("max-stale").max_stale, Some(None));
        assert_eq!(cc("max-stale=7").max_stale, Some(Some(7)));
        assert!(cc("only-if-cached").only_if_cached);
        let two = CacheControl::parse([&b"no-store"[..], b"max-age=3"]);
        assert!(two.no_store);
        assert_eq!(two.max_age, Some(3));
        assert!(CacheControl::parse([&b"\xff"[..]]).no_store);
        assert_eq!(cc(""), CacheControl::default());
    }

    #[test]
    fn vary_parsing() {
        assert_eq!(
            Vary::parse([&b"Accept, accept ,X-Lang"[..]]),
            Vary::Fields(vec!["accept".into(), "x-lang".into()])
        );
        assert_eq!(Vary::parse([&b"accept, *"[..]]), Vary::Any);
        assert_eq!(Vary::parse([&b""[..]]), Vary::None);
    }

    /// The storability table: (case, request, response, expected).
    #[test]
    fn storability_table() {
        let with = |mut r: ResponseFacts, f: fn(&mut ResponseFacts)| {
            f(&mut r);
            r
        };
        let auth = RequestFacts {
            authorization: true,
            ..get("")
        };
        let head = RequestFacts {
            get: false,
            ..get("")
        };
        let secs = |s| Ok(Duration::from_secs(s));
        let cases: Vec<(
            &str,
            RequestFacts,
            ResponseFacts,
            Result<Duration, NotStorable>,
        )> = vec![
            ("max-age", get(""), res(200, "max-age=60"), secs(60)),
            (
                "s-maxage beats max-age",
                get(""),
                res(200, "max-age=60, s-maxage=5"),
                secs(5),
            ),
            ("no freshness: default ttl", get(""), res(200, ""), secs(30)),
            (
                "HEAD is not stored",
                head,
                res(200, "max-age=60"),
                Err(NotStorable::Method),
            ),
            (
                "request no-store",
                get("no-store"),
                res(200, "max-age=60"),
                Err(NotStorable::RequestNoStore),
            ),
            (
                "response no-store",
                get(""),
                res(200, "no-store, max-age=60"),
                Err(NotStorable::ResponseNoStore),
            ),
            (
                "private",
                get(""),
                res(200, "private, max-age=60"),
                Err(NotStorable::Private),
            ),
            (
                "qualified private",
                get(""),
                res(200, "private=\"x\", max-age=60"),
                Err(NotStorable::Private),
            ),
            (
                "authorization",
                auth.clone(),
                res(200, "max-age=60"),
                Err(NotStorable::Authorization),
            ),
            (
                "authorization + s-maxage is still not public",
                auth.clone(),
                res(200, "s-maxage=60"),
                Err(NotStorable::Authorization),
            ),
            (
                "authorization + public",
                auth,
                res(200, "public, max-age=60"),
                secs(60),
            ),
            (
                "set-cookie",
                get(""),
                with(res(200, "max-age=60"), |r| r.set_cookie = true),
                Err(NotStorable::SetCookie),
            ),
            (
                "set-cookie + public",
                get(""),
                with(res(200, "public, max-age=60"), |r| r.set_cookie = true),
                secs(60),
            ),
            (
                "vary *",
                get(""),
                with(res(200, "max-age=60"), |r| r.vary = Vary::Any),
                Err(NotStorable::VaryAny),
            ),
            (
                "vary fields",
                get(""),
                with(res(200, "max-age=60"), |r| {
                    r.vary = Vary::Fields(vec!["accept".into()])
                }),
                secs(60),
            ),
            (
                "206",
                get(""),
                res(206, "max-age=60"),
                Err(NotStorable::Status(206)),
            ),
            (
                "304",
                get(""),
                res(304, "max-age=60"),
                Err(NotStorable::Status(304)),
            ),
            ("404 heuristic", get(""), res(404, ""), secs(30)),
            (
                "500 without freshness",
                get(""),
                res(500, ""),
                Err(NotStorable::Status(500)),
            ),
            ("500 with max-age", get(""), res(500, "max-age=5"), secs(5)),
            (
                "302 public uses default ttl",
                get(""),
                res(302, "public"),
                secs(30),
            ),
            (
                "expires",
                get(""),
                with(res(200, ""), |r| r.expires = Some(Some(t(90)))),
                secs(90),
            ),
            (
                "max-age beats expires",
                get(""),
                with(res(200, "max-age=7"), |r| r.expires = Some(Some(t(90)))),
                secs(7),
            ),
            (
                "expires in the past, no validator",
                get(""),
                with(res(200, ""), |r| {
                    r.expires = Some(Some(t(0) - Duration::from_secs(9)))
                }),
                Err(NotStorable::UselessWithoutValidator),
            ),
            (
                "invalid expires with etag",
                get(""),
                with(res(200, ""), |r| {
                    r.expires = Some(None);
                    r.etag = true;
                }),
                secs(0),
            ),
            (
                "max-age=0 without validator",
                get(""),
                res(200, "max-age=0"),
                Err(NotStorable::UselessWithoutValidator),
            ),
            (
                "max-age=0 with etag",
                get(""),
                with(res(200, "max-age=0"), |r| r.etag = true),
                secs(0),
            ),
            (
                "no-cache without validator",
                get(""),
                res(200, "no-cache, max-age=60"),
                Err(NotStorable::UselessWithoutValidator),
            ),
            (
                "no-cache with last-modified",
                get(""),
                with(res(200, "no-cache"), |r| r.last_modified = true),
                secs(30),
            ),
        ];
        for (case, req, r, want) in cases {
            assert_eq!(storable(&req, &r, TTL, t(1)), want, "{case}");
        }
        assert_eq!(
            storable(&get(""), &res(200, ""), None, t(1)),
            Err(NotStorable::NoFreshness)
        );
        // Expires without Date is measured from reception.
        let mut nodate = res(200, "");
        nodate.date = None;
        nodate.expires = Some(Some(t(100)));
        assert_eq!(
            storable(&get(""), &nodate, None, t(40)),
            Ok(Duration::from_secs(60))
        );
    }

    #[test]
    fn age_calculation() {
        let a = |date: Option<u64>, age: Option<u64>, req: u64, resp: u64| AgeFacts {
            date: date.map(t),
            age,
            request_time: t(req),
            response_time: t(resp),
        };
        let secs = Duration::from_secs;
        // Fresh from the origin: age is only the time resident here.
        assert_eq!(current_age(&a(Some(10), None, 10, 10), t(25)), secs(15));
        // An upstream Age plus the response delay.
        assert_eq!(
            current_age(&a(Some(10), Some(100), 10, 12), t(12)),
            secs(102)
        );
        // A Date in the past (clock skew or an old copy) counts.
        assert_eq!(current_age(&a(Some(0), None, 50, 50), t(50)), secs(50));
        // A Date in the future counts as zero.
        assert_eq!(current_age(&a(Some(99), None, 50, 50), t(51)), secs(1));
        assert_eq!(current_age(&a(None, None, 50, 50), t(40)), secs(0));
        assert_eq!(age_header(secs(u64::MAX / 2)), MAX_DELTA);
    }

    /// The reuse table: (case, stored, request, now, expected).
    #[test]
    fn usability_table() {
        let stored = |lifetime: u64, f: fn(&mut StoredFacts)| {
            let mut s = StoredFacts {
                lifetime: Duration::from_secs(lifetime),
                age: AgeFacts {
                    date: Some(t(0)),
                    age: None,
                    request_time: t(0),
                    response_time: t(0),
                },
                no_cache: false,
                must_revalidate: false,
                has_validator: false,
            };
            f(&mut s);
            s
        };
        let none: fn(&mut StoredFacts) = |_| {};
        let validator: fn(&mut StoredFacts) = |s| s.has_validator = true;
        let fresh = |s| Use::Fresh(Duration::from_secs(s));
        let pragma = RequestFacts {
            pragma_no_cache: true,
            ..get("")
        };
        let cases: Vec<(&str, StoredFacts, RequestFacts, u64, Use)> = vec![
            ("fresh", stored(60, none), get(""), 10, fresh(10)),
            (
                "at the lifetime it is stale",
                stored(60, none),
                get(""),
                60,
                Use::Fetch,
            ),
            (
                "stale with validator",
                stored(60, validator),
                get(""),
                61,
                Use::Revalidate,
            ),
            (
                "request no-cache",
                stored(60, validator),
                get("no-cache"),
                1,
                Use::Revalidate,
            ),
            (
                "request no-cache, no validator",
                stored(60, none),
                get("no-cache"),
                1,
                Use::Fetch,
            ),
            (
                "pragma no-cache",
                stored(60, validator),
                pragma,
                1,
                Use::Revalidate,
            ),
            (
                "stored no-cache",
                stored(60, |s| {
                    s.no_cache = true;
                    s.has_validator = true;
                }),
                get(""),
                1,
                Use::Revalidate,
            ),
            (
                "request max-age satisfied",
                stored(60, none),
                get("max-age=20"),
                20,
                fresh(20),
            ),
            (
                "request max-age exceeded",
                stored(60, validator),
                get("max-age=20"),
                21,
                Use::Revalidate,
            ),
            (
                "request max-age=0",
                stored(60, validator),
                get("max-age=0"),
                1,
                Use::Revalidate,
            ),
            (
                "min-fresh satisfied",
                stored(60, none),
                get("min-fresh=10"),
                49,
                fresh(49),
            ),
            (
                "min-fresh not satisfied",
                stored(60, none),
                get("min-fresh=10"),
                50,
                Use::Fetch,
            ),
            (
                "max-stale any",
                stored(60, none),
                get("max-stale"),
                600,
                fresh(600),
            ),
            (
                "max-stale within",
                stored(60, none),
                get("max-stale=10"),
                70,
                fresh(70),
            ),
            (
                "max-stale exceeded",
                stored(60, validator),
                get("max-stale=10"),
                71,
                Use::Revalidate,
            ),
            (
                "max-stale vs must-revalidate",
                stored(60, |s| {
                    s.must_revalidate = true;
                    s.has_validator = true;
                }),
                get("max-stale"),
                61,
                Use::Revalidate,
            ),
            (
                "only-if-cached does not change freshness",
                stored(60, none),
                get("only-if-cached"),
                5,
                fresh(5),
            ),
            (
                "zero lifetime revalidates",
                stored(0, validator),
                get(""),
                0,
                Use::Revalidate,
            ),
        ];
        for (case, s, req, now, want) in cases {
            assert_eq!(usable(&s, &req, t(now)), want, "{case}");
        }
    }

    #[test]
    fn conditional_matching() {
        assert!(if_none_match(b"\"a\"", b"\"a\""));
        assert!(if_none_match(b"W/\"a\"", b"\"a\""));
        assert!(if_none_match(b"\"x\", \"a\"", b"W/\"a\""));
        assert!(if_none_match(b"*", b"\"a\""));
        assert!(!if_none_match(b"\"b\"", b"\"a\""));
        assert!(http_date(b"Sun, 06 Nov 1994 08:49:37 GMT").is_some());
        assert!(http_date(b"0").is_none());
    }
}
