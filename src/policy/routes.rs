//! Frontend route tables: which pool a request entering a frontend goes to.
//!
//! Compiled once per rule file, so a lookup costs a handful of hash probes
//! however many routes there are, never a scan over the route list:
//!
//! 1. the request host (Host or absolute-form authority, lower-cased, port
//!    stripped) is looked up in the **exact** host map; then each of its
//!    parent domains in the **wildcard** map (`*.example` is stored under
//!    `example` and matches one or more labels below it); then the routes
//!    without a host;
//! 2. within each of those three classes, the normalised path is cut at
//!    each `/` from the longest to the shortest prefix and each cut is
//!    looked up in the class's prefix map, so the longest `path_prefix`
//!    (segment-aware, as in the access rules) is found first;
//! 3. remaining ties go to the earlier route (it is inserted first, later
//!    duplicates of a key are ignored; among wildcards the lowest route
//!    index of the same prefix length wins).
//!
//! This is exactly the precedence of `spec/rules.md`: exact host beats
//! wildcard beats no host; then the longest prefix; then the earlier route.
//! Without a match the frontend's `default_pool` answers, or nothing (404).

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;

use crate::rules::{RuleRef, RuleSet};

/// One route as written, for explanations and logs.
#[derive(Debug, Clone)]
pub struct RouteInfo {
    pub rule: RuleRef,
    /// The route's `rule` label in the metrics (its file position).
    pub label: std::sync::Arc<str>,
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub pool: usize,
    pub pool_name: String,
}

/// Which kind of host pattern decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostClass {
    Exact,
    Wildcard,
    Any,
}

/// The outcome of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteMatch {
    /// Route `index` of the frontend (into [`RouteTable::routes`]).
    Route {
        index: usize,
        pool: usize,
        class: HostClass,
    },
    /// No route matched; the frontend's `default_pool`.
    Default { pool: usize },
}

impl RouteMatch {
    pub fn pool(&self) -> usize {
        match *self {
            RouteMatch::Route { pool, .. } | RouteMatch::Default { pool } => pool,
        }
    }
}

/// Path prefix (without trailing `/`; `""` for `/` or no prefix) → route.
#[derive(Debug, Default)]
struct PrefixMap(HashMap<Box<str>, u32>);

impl PrefixMap {
    fn insert(&mut self, prefix: Option<&str>, route: u32) {
        let key = prefix
            .map(|p| p.strip_suffix('/').unwrap_or(p))
            .unwrap_or("");
        // The earlier route keeps a key (`/foo` and `/foo/` are one key).
        self.0.entry(key.into()).or_insert(route);
    }

    fn get(&self, cut: &str) -> Option<u32> {
        self.0.get(cut).copied()
    }
}

/// Cuts of a normalised path from longest to shortest, at segment
/// boundaries: `/a/b` → `/a/b`, `/a`, `""`.
fn cuts(path: &str) -> impl Iterator<Item = &str> {
    let mut end = Some(path.len());
    std::iter::from_fn(move || {
        let e = end?;
        let cut = path.get(..e)?;
        end = if e == 0 {
            None
        } else {
            Some(cut.rfind('/').unwrap_or(0))
        };
        Some(cut)
    })
}

/// The compiled routes of one frontend.
#[derive(Debug)]
pub struct RouteTable {
    pub name: String,
    /// `name`, as the metrics' `frontend` label.
    pub label: std::sync::Arc<str>,
    /// `rule`, as the metrics' `rule` label of requests routed to the
    /// `default_pool`.
    pub default_label: std::sync::Arc<str>,
    pub listen: SocketAddr,
    /// The frontend in the rule file (`frontends[i]`).
    pub rule: RuleRef,
    pub routes: Vec<RouteInfo>,
    pub default_pool: Option<(usize, String)>,
    /// The frontend's own `limits` (each unset field falls back to the
    /// global ones).
    pub limits: crate::rules::model::Limits,
    exact: HashMap<Box<str>, PrefixMap>,
    wildcard: HashMap<Box<str>, PrefixMap>,
    any_host: PrefixMap,
}

/// Why a request's host cannot be routed (→ 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid host {0:?}")]
pub struct BadHost(pub String);

/// The routing form of a Host value: port stripped, lower-cased, one
/// trailing dot dropped. Borrowed when nothing needs changing.
pub fn route_host(raw: &[u8]) -> Result<Cow<'_, str>, BadHost> {
    let bad = || BadHost(String::from_utf8_lossy(raw).into_owned());
    let s = std::str::from_utf8(raw).map_err(|_| bad())?;
    let name = if let Some(rest) = s.strip_prefix('[') {
        // An IPv6 literal: never matches a DNS pattern, but is valid.
        let (inside, after) = rest.split_once(']').ok_or_else(bad)?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return Err(bad());
        }
        return Ok(Cow::Owned(format!("[{}]", inside.to_ascii_lowercase())));
    } else {
        match s.rsplit_once(':') {
            Some((n, p)) if is_port(p) => n,
            Some(_) => return Err(bad()),
            None => s,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(bad());
    }
    Ok(if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    })
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

impl RouteTable {
    /// Compiles frontend `index` of a validated rule set; `pool_id` maps a
    /// pool name to its index in the balancer.
    pub fn compile(set: &RuleSet, index: usize, pool_id: &dyn Fn(&str) -> usize) -> RouteTable {
        let f = &set.rules.frontends[index];
        let fpath = format!("frontends[{index}]");
        let rule = set.rule_ref(&fpath);
        let mut t = RouteTable {
            name: f.name.clone(),
            label: f.name.as_str().into(),
            default_label: rule.to_string().into(),
            listen: f
                .listen
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0))),
            rule,
            routes: Vec::with_capacity(f.routes.len()),
            default_pool: f.default_pool.as_ref().map(|p| (pool_id(p), p.clone())),
            limits: f.limits.clone().unwrap_or_default(),
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            any_host: PrefixMap::default(),
        };
        for (j, r) in f.routes.iter().enumerate() {
            let host = r.host.as_ref().map(|h| h.to_ascii_lowercase());
            let map = match host.as_deref() {
                None => &mut t.any_host,
                Some(h) => match h.strip_prefix("*.") {
                    Some(suffix) => t.wildcard.entry(suffix.into()).or_default(),
                    None => t.exact.entry(h.into()).or_default(),
                },
            };
            map.insert(r.path_prefix.as_deref(), j as u32);
            let rule = set.rule_ref(&format!("{fpath}.routes[{j}]"));
            t.routes.push(RouteInfo {
                label: rule.to_string().into(),
                rule,
                host,
                path_prefix: r.path_prefix.clone(),
                pool: pool_id(&r.pool),
                pool_name: r.pool.clone(),
            });
        }
        t
    }

    /// The route for a request: `host` in routing form ([`route_host`]),
    /// `path` normalised (query excluded).
    pub fn lookup(&self, host: Option<&str>, path: &str) -> Option<RouteMatch> {
        let hit = |index: u32, class| {
            let index = index as usize;
            self.routes.get(index).map(|r| RouteMatch::Route {
                index,
                pool: r.pool,
                class,
            })
        };
        if let Some(h) = host {
            if let Some(m) = self.exact.get(h) {
                if let Some(i) = cuts(path).find_map(|c| m.get(c)) {
                    return hit(i, HostClass::Exact);
                }
            }
            if !self.wildcard.is_empty() {
                // Per matching wildcard, its longest matching prefix; across
                // wildcards the longest prefix, then the earlier route.
                let best = h
                    .match_indices('.')
                    .filter_map(|(dot, _)| self.wildcard.get(&h[dot + 1..]))
                    .filter_map(|m| cuts(path).find_map(|c| m.get(c).map(|i| (c.len(), i))))
                    .min_by_key(|&(len, i)| (std::cmp::Reverse(len), i));
                if let Some((_, i)) = best {
                    return hit(i, HostClass::Wildcard);
                }
            }
        }
        if let Some(i) = cuts(path).find_map(|c| self.any_host.get(c)) {
            return hit(i, HostClass::Any);
        }
        self.default_pool
            .as_ref()
            .map(|&(pool, _)| RouteMatch::Default { pool })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(routes: &str, default_pool: Option<&str>) -> RouteTable {
        let default = default_pool
            .map(|p| format!(", \"default_pool\": \"{p}\""))
            .unwrap_or_default();
        let text = format!(
            r#"{{ "version": 1,
  "containers": {{ "a": {{ "address": "198.19.0.2" }} }},
  "frontends": [ {{ "name": "edge", "listen": "127.0.0.1:8080", "routes": [{routes}]{default} }} ],
  "pools": {{ "p0": {{ "members": ["a:80"] }}, "p1": {{ "members": ["a:80"] }}, "p2": {{ "members": ["a:80"] }},
             "p3": {{ "members": ["a:80"] }}, "p4": {{ "members": ["a:80"] }}, "p5": {{ "members": ["a:80"] }},
             "dflt": {{ "members": ["a:80"] }} }} }}"#
        );
        let set = crate::rules::parse("rules.json", &text).expect("valid rules");
        RouteTable::compile(&set, 0, &|name| match name {
            "dflt" => 99,
            n => n[1..].parse().unwrap(),
        })
    }

    /// `Some(route index)`, `Some(99)` for the default pool, or `None`.
    fn route(t: &RouteTable, host: &str, path: &str) -> Option<usize> {
        let h = route_host(host.as_bytes()).expect("valid host");
        t.lookup(Some(&h), path).map(|m| match m {
            RouteMatch::Route { index, pool, .. } => {
                assert_eq!(pool, index, "route {index} goes to pool p{index}");
                index
            }
            RouteMatch::Default { pool } => pool,
        })
    }

    #[test]
    fn precedence_table() {
        // Route i goes to pool pi.
        let t = table(
            r#"
            { "path_prefix": "/api", "pool": "p0" },
            { "host": "*.example", "pool": "p1" },
            { "host": "shop.example", "path_prefix": "/cart", "pool": "p2" },
            { "host": "shop.example", "pool": "p3" },
            { "host": "*.example", "path_prefix": "/api/v2", "pool": "p4" },
            { "path_prefix": "/api/v2", "pool": "p5" }"#,
            None,
        );
        let cases: &[(&str, &str, Option<usize>, &str)] = &[
            (
                "shop.example",
                "/cart/x",
                Some(2),
                "exact host, longest prefix",
            ),
            ("shop.example", "/cart", Some(2), "prefix matches itself"),
            (
                "shop.example",
                "/cartoon",
                Some(3),
                "segment-aware: /cartoon is not under /cart",
            ),
            (
                "shop.example",
                "/api/v2/x",
                Some(3),
                "exact host beats a wildcard's longer prefix",
            ),
            (
                "SHOP.Example:8080",
                "/",
                Some(3),
                "case-insensitive, port stripped",
            ),
            ("shop.example.", "/", Some(3), "trailing dot"),
            (
                "a.example",
                "/api/v2/x",
                Some(4),
                "wildcard: longest prefix",
            ),
            (
                "a.b.example",
                "/x",
                Some(1),
                "wildcard spans several labels",
            ),
            (
                "example",
                "/api",
                Some(0),
                "the wildcard does not match its bare suffix",
            ),
            ("other.test", "/api/v2/", Some(5), "no host: longest prefix"),
            ("other.test", "/api/v3", Some(0), "no host: shorter prefix"),
            ("other.test", "/apiv2", None, "nothing matches"),
            ("xexample", "/x", None, "a wildcard needs a dot boundary"),
        ];
        for &(host, path, want, why) in cases {
            assert_eq!(route(&t, host, path), want, "{host} {path}: {why}");
        }
    }

    #[test]
    fn earlier_route_wins_ties() {
        let t = table(
            r#"
            { "host": "*.example", "path_prefix": "/x", "pool": "p0" },
            { "host": "*.b.example", "path_prefix": "/x", "pool": "p1" },
            { "path_prefix": "/y", "pool": "p2" },
            { "path_prefix": "/y/", "pool": "p3" }"#,
            Some("dflt"),
        );
        assert_eq!(route(&t, "a.b.example", "/x/1"), Some(0));
        assert_eq!(route(&t, "a.b.example", "/z"), Some(99), "default pool");
        assert_eq!(route(&t, "q", "/y/z"), Some(2), "/y and /y/ are one prefix");
        assert_eq!(
            t.lookup(None, "/y"),
            Some(RouteMatch::Route {
                index: 2,
                pool: 2,
                class: HostClass::Any
            })
        );
    }

    #[test]
    fn scenario_3_and_4_routes() {
        let set = crate::rules::parse("rules.json", include_str!("../../rules/example.json"))
            .expect("valid");
        let names: Vec<String> = set.rules.pools.keys().cloned().collect();
        let t = RouteTable::compile(&set, 0, &|n| names.iter().position(|x| x == n).unwrap());
        let pool = |h: &str, p: &str| {
            let h = route_host(h.as_bytes()).unwrap();
            t.lookup(Some(&h), p).map(|m| names[m.pool()].clone())
        };
        assert_eq!(pool("two.example", "/").as_deref(), Some("two"));
        assert_eq!(pool("three.example", "/two").as_deref(), Some("three"));
        assert_eq!(pool("x.test", "/two/a").as_deref(), Some("two"));
        assert_eq!(pool("x.test", "/three").as_deref(), Some("three"));
        assert_eq!(pool("x.test", "/one").as_deref(), Some("one"));
        assert_eq!(pool("x.test", "/four"), None);
    }

    #[test]
    fn hosts() {
        assert_eq!(route_host(b"A.Example:80").unwrap(), "a.example");
        assert!(matches!(
            route_host(b"a.example").unwrap(),
            Cow::Borrowed(_)
        ));
        assert_eq!(route_host(b"[::1]:8080").unwrap(), "[::1]");
        for bad in [&b""[..], b"a b", b"a:x", b"a:", b"[::1", b"a/b", b"\xff"] {
            assert!(route_host(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn path_cuts() {
        assert_eq!(cuts("/a/b").collect::<Vec<_>>(), ["/a/b", "/a", ""]);
        assert_eq!(cuts("/a/").collect::<Vec<_>>(), ["/a/", "/a", ""]);
        assert_eq!(cuts("/").collect::<Vec<_>>(), ["/", ""]);
    }
}
