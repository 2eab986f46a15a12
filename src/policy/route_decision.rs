//! The frontend decision for one request: which route and pool it takes, or
//! which status refuses it. One function, [`RouteTable::decide`], answers
//! for the proxy (`proxy/frontend.rs`), `portcullis explain --frontend` and
//! the demo's frontend probes, so the three cannot disagree on a host, a
//! hostile path or an absolute-form target.
//!
//! The steps, in the order the proxy has always taken them:
//!
//! 1. `CONNECT` → `501`: a frontend routes by path and is no forward proxy;
//! 2. fields that would change after the decision ([`FieldGuard`]) → `400`;
//! 3. the target: origin form, or absolute form whose authority agrees
//!    with `Host` ([`head::origin_form`]) → else `400`;
//! 4. the host: `Host` (HTTP/2's `:authority` arrives as `host`), else the
//!    absolute-form authority, in routing form ([`route_host`]) → else `400`;
//! 5. the path, normalised like every path the rules see
//!    ([`normalize_path`]) → else `400`;
//! 6. [`RouteTable::lookup`] → the route or the `default_pool`, else `404`.
//!
//! Nothing is allocated for a request that is routed unless its host has
//! upper-case letters or its path needs normalising; the refusal carries
//! what the caller needs for its log line and message, not a formatted text.

use std::borrow::Cow;
use std::fmt;

use super::fields::{FieldError, FieldGuard};
use super::routes::{route_host, BadHost, RouteMatch, RouteTable};
use crate::wire::head::{self, HeadError};
use crate::wire::normalize::{normalize_path, split_target, PathError};

/// The parts of a request a frontend decides on.
#[derive(Debug, Clone, Copy)]
pub struct FrontendRequest<'a> {
    pub method: &'a str,
    /// The request target as sent (origin or absolute form).
    pub target: &'a str,
    /// The request's fields; `host` (or HTTP/2's `:authority`) among them.
    pub headers: &'a [httparse::Header<'a>],
}

/// A routed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed<'a> {
    pub matched: RouteMatch,
    /// The host in routing form (lower-cased, port and trailing dot gone).
    pub host: Option<Cow<'a, str>>,
    /// The `Host` field as sent (trimmed), if there is one.
    pub host_header: Option<&'a [u8]>,
    /// The host as sent: the `Host` field, else the absolute-form authority.
    pub raw_host: Option<&'a [u8]>,
    /// The normalised path (what the route saw, what the member receives).
    pub path: Cow<'a, str>,
    /// The query as sent.
    pub query: Option<&'a str>,
}

/// Why a frontend refuses a request; [`RouteRefusal::status`] is the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteRefusal<'a> {
    /// `CONNECT` (501).
    Connect,
    /// A field that would change after the decision (400).
    Fields(FieldError),
    /// A target in neither origin nor absolute form, or disagreeing with
    /// `Host` (400).
    Target(HeadError),
    /// A host that has no routing form (400).
    Host(BadHost),
    /// A path that cannot be normalised (400).
    Path { raw: &'a str, error: PathError },
    /// No route and no `default_pool` (404).
    NoRoute {
        host: Option<Cow<'a, str>>,
        path: Cow<'a, str>,
    },
}

impl RouteRefusal<'_> {
    /// The HTTP status the proxy answers with.
    pub fn status(&self) -> u16 {
        match self {
            RouteRefusal::Connect => 501,
            RouteRefusal::NoRoute { .. } => 404,
            _ => 400,
        }
    }
}

impl fmt::Display for RouteRefusal<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteRefusal::Connect => f.write_str(
                "CONNECT is not supported on frontends (they route by path; no forward proxying)",
            ),
            RouteRefusal::Fields(e) => write!(f, "bad request: {e}"),
            RouteRefusal::Target(e) => write!(f, "bad request: {e}"),
            RouteRefusal::Host(e) => write!(f, "bad request: {e}"),
            RouteRefusal::Path { error, .. } => write!(f, "bad request: {error}"),
            RouteRefusal::NoRoute { host, path } => write!(
                f,
                "no route for host {} and path {path}",
                host.as_deref().unwrap_or("(none)")
            ),
        }
    }
}

/// The authority of an absolute-form target (`http://host[:port]/…`).
pub fn target_authority(target: &str) -> Option<&str> {
    let rest = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("HTTP://"))?;
    Some(rest.find(['/', '?']).map_or(rest, |i| &rest[..i]))
}

impl RouteTable {
    /// The frontend's decision for one request (see the module docs for
    /// the steps). `fields` is the rule file's field guard
    /// (`Policy::fields`).
    pub fn decide<'a>(
        &self,
        fields: &FieldGuard,
        req: &FrontendRequest<'a>,
    ) -> Result<Routed<'a>, RouteRefusal<'a>> {
        if req.method == "CONNECT" {
            return Err(RouteRefusal::Connect);
        }
        fields.check(req.headers).map_err(RouteRefusal::Fields)?;
        let target = head::origin_form(req.target, req.headers).map_err(RouteRefusal::Target)?;
        let host_header = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("host"))
            .map(|h| head::trim(h.value));
        let raw_host = host_header
            .or_else(|| target_authority(req.target).map(str::as_bytes))
            .filter(|h| !h.is_empty());
        let host = raw_host
            .map(route_host)
            .transpose()
            .map_err(RouteRefusal::Host)?;
        let (raw, query) = split_target(target);
        let path = normalize_path(raw).map_err(|error| RouteRefusal::Path { raw, error })?;
        match self.lookup(host.as_deref(), &path) {
            Some(matched) => Ok(Routed {
                matched,
                host,
                host_header,
                raw_host,
                path,
                query,
            }),
            None => Err(RouteRefusal::NoRoute { host, path }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> (crate::policy::Policy, Vec<String>) {
        let set = crate::rules::parse("rules.json", include_str!("../../rules/example.json"))
            .expect("valid");
        let names = set.rules.pools.keys().cloned().collect();
        (
            crate::policy::Policy::compile(set).expect("compiles"),
            names,
        )
    }

    fn decide(method: &str, target: &str, host: Option<&str>) -> Result<String, u16> {
        let (policy, names) = table();
        let t = RouteTable::compile(&policy.source, 0, &|n| {
            names.iter().position(|x| x == n).unwrap_or(usize::MAX)
        });
        let headers: Vec<httparse::Header> = host
            .map(|h| httparse::Header {
                name: "Host",
                value: h.as_bytes(),
            })
            .into_iter()
            .collect();
        t.decide(
            &policy.fields,
            &FrontendRequest {
                method,
                target,
                headers: &headers,
            },
        )
        .map(|r| names[r.matched.pool()].clone())
        .map_err(|e| e.status())
    }

    #[test]
    fn each_step_has_its_status() {
        let ok = |p: &str| Ok(p.to_owned());
        assert_eq!(decide("GET", "/", Some("TWO.example:8080")), ok("two"));
        assert_eq!(decide("GET", "/two/x?y", Some("other.test")), ok("two"));
        assert_eq!(decide("GET", "http://two.example/", None), ok("two"));
        assert_eq!(
            decide("GET", "http://two.example/", Some("two.example")),
            ok("two")
        );
        assert_eq!(
            decide("GET", "/x/../two/%61", Some("other.test")),
            ok("two")
        );
        assert_eq!(decide("CONNECT", "two.example:443", None), Err(501));
        assert_eq!(
            decide("GET", "http://two.example/", Some("three.example")),
            Err(400),
            "absolute form and Host disagree"
        );
        assert_eq!(decide("GET", "/", Some("a b")), Err(400), "bad host");
        assert_eq!(decide("GET", "/a%2fb", Some("x")), Err(400), "encoded /");
        assert_eq!(decide("GET", "/..", Some("x")), Err(400), "above root");
        assert_eq!(decide("GET", "*", Some("x")), Err(400), "not a path");
        assert_eq!(decide("GET", "/four", Some("other.test")), Err(404));
    }

    #[test]
    fn a_clean_request_borrows() {
        let (policy, _) = table();
        let t = RouteTable::compile(&policy.source, 0, &|_| 0);
        let headers = [httparse::Header {
            name: "host",
            value: b" two.example ",
        }];
        let r = t
            .decide(
                &policy.fields,
                &FrontendRequest {
                    method: "GET",
                    target: "/x?q",
                    headers: &headers,
                },
            )
            .expect("routed");
        assert!(matches!(r.path, Cow::Borrowed("/x")));
        assert!(matches!(r.host, Some(Cow::Borrowed("two.example"))));
        assert_eq!(r.host_header, Some(&b"two.example"[..]));
        assert_eq!(r.query, Some("q"));
    }

    #[test]
    fn absolute_form_authority() {
        assert_eq!(
            target_authority("http://a.example:81/x?y"),
            Some("a.example:81")
        );
        assert_eq!(target_authority("http://a.example"), Some("a.example"));
        assert_eq!(target_authority("/x"), None);
    }
}
