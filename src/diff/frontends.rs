//! Frontends and pools: which (host, path) inputs reach which pool, and
//! what a pool is made of.
//!
//! Route precedence is never re-implemented here: both files' frontends
//! are compiled with [`RouteTable::compile`] and asked with
//! [`RouteTable::lookup`], the proxy's own lookup, for a set of inputs that
//! represents every region of the (host, path) space the two route lists
//! distinguish: each exact host, one name under each wildcard, an
//! unlisted host and no host, crossed with each route prefix, `/` and a
//! path under no prefix. An input that goes to a different pool (or from
//! 404 to a pool) is a widening — its clients reach members they did not
//! reach before; from a pool to 404 a narrowing.

use std::collections::{BTreeMap, BTreeSet};

use super::{Area, Change, Class, Scope};
use crate::policy::routes::{RouteMatch, RouteTable};
use crate::policy::Policy;
use crate::rules::model::{Balance, Pool};
use crate::rules::RuleRef;

/// A host under no route pattern, for the "any other host" region.
pub const OTHER_HOST: &str = "other.invalid";
/// A path under no route prefix.
pub const OTHER_PATH: &str = "/zz-unrouted";

fn tables(p: &Policy) -> BTreeMap<String, (usize, RouteTable)> {
    // Pool ids only need to be stable within one file: names are compared.
    let names: Vec<&String> = p.source.rules.pools.keys().collect();
    let pool_id = |n: &str| names.iter().position(|x| *x == n).unwrap_or(usize::MAX);
    (0..p.source.rules.frontends.len())
        .map(|i| {
            let t = RouteTable::compile(&p.source, i, &pool_id);
            (t.name.clone(), (i, t))
        })
        .collect()
}

/// Where an input goes: the pool name and the route (or default) deciding.
fn route(t: &RouteTable, host: Option<&str>, path: &str) -> Option<(String, RuleRef)> {
    match t.lookup(host, path)? {
        RouteMatch::Route { index, .. } => {
            let r = t.routes.get(index)?;
            Some((r.pool_name.clone(), r.rule.clone()))
        }
        RouteMatch::Default { .. } => {
            let (_, name) = t.default_pool.as_ref()?;
            let mut rule = t.rule.clone();
            rule.path.push_str(".default_pool");
            Some((name.clone(), rule))
        }
    }
}

/// The representative inputs of two route tables.
pub fn inputs(a: &RouteTable, b: &RouteTable) -> Vec<(Option<String>, String)> {
    let mut hosts: BTreeSet<Option<String>> = BTreeSet::new();
    let mut paths: BTreeSet<String> = BTreeSet::new();
    hosts.insert(None);
    hosts.insert(Some(OTHER_HOST.to_owned()));
    paths.insert("/".to_owned());
    paths.insert(OTHER_PATH.to_owned());
    for r in a.routes.iter().chain(&b.routes) {
        if let Some(h) = &r.host {
            hosts.insert(Some(match h.strip_prefix("*.") {
                Some(suffix) => format!("x.{suffix}"),
                None => h.clone(),
            }));
        }
        if let Some(p) = &r.path_prefix {
            let p = p.strip_suffix('/').unwrap_or(p);
            paths.insert(if p.is_empty() {
                "/".into()
            } else {
                p.to_owned()
            });
        }
    }
    hosts
        .iter()
        .flat_map(|h| paths.iter().map(move |p| (h.clone(), p.clone())))
        .collect()
}

pub fn diff(old: &Policy, new: &Policy, out: &mut Vec<Change>) {
    let (ta, tb) = (tables(old), tables(new));
    for (name, (i, a)) in &ta {
        let fref = |p: &Policy, i: usize| p.source.rule_ref(&format!("frontends[{i}]"));
        let Some((j, b)) = tb.get(name) else {
            out.push(Change {
                class: Class::Narrow,
                area: Area::Frontend,
                subject: name.clone(),
                what: format!("removed: nothing listens on {} any more", a.listen),
                old: Some(fref(old, *i)),
                new: None,
                scope: Scope::Frontend(name.clone()),
            });
            continue;
        };
        if a.listen != b.listen {
            out.push(Change {
                class: Class::Widen,
                area: Area::Frontend,
                subject: name.clone(),
                what: format!("listens on {} instead of {}", b.listen, a.listen),
                old: Some(old.source.rule_ref(&format!("frontends[{i}].listen"))),
                new: Some(new.source.rule_ref(&format!("frontends[{j}].listen"))),
                scope: Scope::Frontend(name.clone()),
            });
        }
        route_list(name, a, b, out);
        let mut moved: Vec<Change> = Vec::new();
        for (host, path) in inputs(a, b) {
            let (ra, rb) = (
                route(a, host.as_deref(), &path),
                route(b, host.as_deref(), &path),
            );
            let pool = |r: &Option<(String, RuleRef)>| {
                r.as_ref()
                    .map_or("404 (no route)".to_owned(), |(p, _)| format!("pool {p}"))
            };
            let class = match (&ra, &rb) {
                (Some(x), Some(y)) if x.0 == y.0 => continue,
                (None, None) => continue,
                (Some(_), None) => Class::Narrow,
                _ => Class::Widen,
            };
            let what = format!("goes to {} instead of {}", pool(&rb), pool(&ra));
            let (old_ref, new_ref) = (ra.map(|r| r.1), rb.map(|r| r.1));
            // Inputs with the same outcome through the same routes: one line.
            if let Some(c) = moved
                .iter_mut()
                .find(|c| c.what == what && c.old == old_ref && c.new == new_ref)
            {
                if let Scope::Inputs { inputs, .. } = &mut c.scope {
                    inputs.push((host, path));
                    c.subject = inputs_subject(name, inputs);
                }
                continue;
            }
            let inputs = vec![(host, path)];
            moved.push(Change {
                class,
                area: Area::Route,
                subject: inputs_subject(name, &inputs),
                what,
                old: old_ref,
                new: new_ref,
                scope: Scope::Inputs {
                    frontend: name.clone(),
                    inputs,
                },
            });
        }
        out.extend(moved);
    }
    for (name, (j, b)) in &tb {
        if !ta.contains_key(name) {
            out.push(Change {
                class: Class::Widen,
                area: Area::Frontend,
                subject: name.clone(),
                what: format!("added: listens on {}", b.listen),
                old: None,
                new: Some(new.source.rule_ref(&format!("frontends[{j}]"))),
                scope: Scope::Frontend(name.clone()),
            });
        }
    }
    pools(old, new, out);
}

/// Routes added, removed or moved (their effect is reported per input).
fn route_list(name: &str, a: &RouteTable, b: &RouteTable, out: &mut Vec<Change>) {
    let key = |r: &crate::policy::routes::RouteInfo| {
        (r.host.clone(), r.path_prefix.clone(), r.pool_name.clone())
    };
    let show = |r: &crate::policy::routes::RouteInfo| {
        format!(
            "host {} prefix {} -> pool {}",
            r.host.as_deref().unwrap_or("(any)"),
            r.path_prefix.as_deref().unwrap_or("/"),
            r.pool_name
        )
    };
    let mut push = |what: String, old, new| {
        out.push(Change {
            class: Class::Change,
            area: Area::Route,
            subject: name.to_owned(),
            what,
            old,
            new,
            scope: Scope::Frontend(name.to_owned()),
        })
    };
    // Pair equal routes in order (a route may appear twice as written,
    // e.g. once without a prefix and once with "/").
    let mut used = vec![false; b.routes.len()];
    for (i, r) in a.routes.iter().enumerate() {
        let found = (0..b.routes.len()).find(|&j| !used[j] && key(&b.routes[j]) == key(r));
        match found {
            None => push(
                format!("route removed: {}", show(r)),
                Some(r.rule.clone()),
                None,
            ),
            Some(j) => {
                used[j] = true;
                if j != i {
                    push(
                        format!("route moved from routes[{i}] to routes[{j}]: {}", show(r)),
                        Some(r.rule.clone()),
                        Some(b.routes[j].rule.clone()),
                    );
                }
            }
        }
    }
    for (j, r) in b.routes.iter().enumerate() {
        if !used[j] {
            push(
                format!("route added: {}", show(r)),
                None,
                Some(r.rule.clone()),
            );
        }
    }
    let dp = |t: &RouteTable| t.default_pool.as_ref().map(|(_, n)| n.clone());
    if dp(a) != dp(b) {
        let show = |d: Option<String>| d.unwrap_or_else(|| "none".to_owned());
        let dref = |t: &RouteTable| {
            t.default_pool.as_ref().map(|_| {
                let mut r = t.rule.clone();
                r.path.push_str(".default_pool");
                r
            })
        };
        push(
            format!("default_pool {} -> {}", show(dp(a)), show(dp(b))),
            dref(a),
            dref(b),
        );
    }
}

fn pools(old: &Policy, new: &Policy, out: &mut Vec<Change>) {
    let (pa, pb) = (&old.source.rules.pools, &new.source.rules.pools);
    let pref = |p: &Policy, n: &str, f: &str| p.source.rule_ref(&format!("pools.{n}{f}"));
    for (name, a) in pa {
        let mut push = |class, what: String, field: &str| {
            out.push(Change {
                class,
                area: Area::Pool,
                subject: name.clone(),
                what,
                old: Some(pref(old, name, field)),
                new: pb.contains_key(name).then(|| pref(new, name, field)),
                scope: Scope::Other,
            })
        };
        let Some(b) = pb.get(name) else {
            push(Class::Change, "removed".to_owned(), "");
            continue;
        };
        for (class, what) in pool_fields(a, b) {
            push(class, what, "");
        }
    }
    for name in pb.keys().filter(|n| !pa.contains_key(*n)) {
        out.push(Change {
            class: Class::Change,
            area: Area::Pool,
            subject: name.clone(),
            what: "added (reached only through the routes that name it)".to_owned(),
            old: None,
            new: Some(pref(new, name, "")),
            scope: Scope::Other,
        });
    }
}

fn pool_fields(a: &Pool, b: &Pool) -> Vec<(Class, String)> {
    let mut out = Vec::new();
    let weights = |p: &Pool| -> BTreeMap<String, u64> {
        p.members
            .iter()
            .map(|m| (m.target.clone(), m.weight))
            .collect()
    };
    let (wa, wb) = (weights(a), weights(b));
    for (t, w) in &wa {
        match wb.get(t) {
            None => out.push((Class::Narrow, format!("member {t} removed"))),
            Some(v) if v != w => out.push((Class::Change, format!("member {t} weight {w} -> {v}"))),
            Some(_) => {}
        }
    }
    for (t, w) in &wb {
        if !wa.contains_key(t) {
            out.push((
                Class::Widen,
                format!("member {t} added (weight {w}): it receives traffic now"),
            ));
        }
    }
    let opt = |v: Option<u64>| v.map_or("unset".to_owned(), |v| v.to_string());
    if a.balance != b.balance || a.hash_key != b.hash_key {
        out.push((
            Class::Change,
            format!(
                "balance {}{} -> {}{}",
                balance(a.balance),
                a.hash_key
                    .as_ref()
                    .map(|k| format!(" on {k}"))
                    .unwrap_or_default(),
                balance(b.balance),
                b.hash_key
                    .as_ref()
                    .map(|k| format!(" on {k}"))
                    .unwrap_or_default()
            ),
        ));
    }
    let health = |p: &Pool| {
        p.health.as_ref().map_or("none".to_owned(), |h| {
            format!(
                "path {} interval_ms {} timeout_ms {} unhealthy_after {} healthy_after {}",
                h.path.as_deref().unwrap_or("unset"),
                opt(h.interval_ms),
                opt(h.timeout_ms),
                opt(h.unhealthy_after.map(u64::from)),
                opt(h.healthy_after.map(u64::from))
            )
        })
    };
    if health(a) != health(b) {
        out.push((
            Class::Change,
            format!("health check {} -> {}", health(a), health(b)),
        ));
    }
    for (field, x, y) in [
        (
            "retries",
            a.retries.map(u64::from),
            b.retries.map(u64::from),
        ),
        (
            "connect_timeout_ms",
            a.connect_timeout_ms,
            b.connect_timeout_ms,
        ),
        ("timeout_ms", a.timeout_ms, b.timeout_ms),
    ] {
        if x != y {
            out.push((Class::Change, format!("{field} {} -> {}", opt(x), opt(y))));
        }
    }
    out
}

fn balance(b: Balance) -> &'static str {
    match b {
        Balance::RoundRobin => "round_robin",
        Balance::LeastConnections => "least_connections",
        Balance::Hash => "hash",
    }
}

/// `edge: host (none) or other.invalid, path /one`.
fn inputs_subject(frontend: &str, inputs: &[(Option<String>, String)]) -> String {
    let mut hosts: Vec<&str> = Vec::new();
    let mut paths: Vec<&str> = Vec::new();
    for (h, p) in inputs {
        let h = match h.as_deref() {
            None => "(none)",
            Some(OTHER_HOST) => "(any other)",
            Some(h) => h,
        };
        let p = if p == OTHER_PATH {
            "(any other)"
        } else {
            p.as_str()
        };
        if !hosts.contains(&h) {
            hosts.push(h);
        }
        if !paths.contains(&p) {
            paths.push(p);
        }
    }
    format!(
        "{frontend}: host {}, path {}",
        hosts.join(" or "),
        paths.join(" or ")
    )
}
