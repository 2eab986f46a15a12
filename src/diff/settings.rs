//! Cache services, limits and proxy settings.
//!
//! Limits compare effective values (own over global over the defaults the
//! proxy uses): a larger bound, a longer timeout or a removed bound is a
//! loosening (widening: requests refused before may pass), the reverse a
//! tightening. Cache and proxy settings change no verdict and are neutral.

use super::{Area, Change, Class, Scope};
use crate::policy::limits::{
    DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS_PER_SOURCE, DEFAULT_MAX_HEADER_BYTES, DEFAULT_REQUEST_BUFFER_BYTES,
    DEFAULT_SEND_TIMEOUT,
};
use crate::policy::Policy;
use crate::rules::model::Limits;

pub fn diff(old: &Policy, new: &Policy, out: &mut Vec<Change>) {
    cache(old, new, out);
    let (ga, gb) = (&old.limits, &new.limits);
    for (class, what) in limits_diff(ga, None, gb, None, false) {
        out.push(Change {
            class,
            area: Area::Limits,
            subject: "top level".to_owned(),
            what,
            old: super::at(old, "limits"),
            new: super::at(new, "limits"),
            scope: Scope::Other,
        });
    }
    for (i, fa) in old.source.rules.frontends.iter().enumerate() {
        let Some((j, fb)) = new
            .source
            .rules
            .frontends
            .iter()
            .enumerate()
            .find(|(_, f)| f.name == fa.name)
        else {
            continue;
        };
        for (class, what) in limits_diff(ga, fa.limits.as_ref(), gb, fb.limits.as_ref(), true) {
            out.push(Change {
                class,
                area: Area::Limits,
                subject: fa.name.clone(),
                what,
                old: super::at(old, &format!("frontends[{i}].limits"))
                    .or_else(|| super::at(old, &format!("frontends[{i}]"))),
                new: super::at(new, &format!("frontends[{j}].limits"))
                    .or_else(|| super::at(new, &format!("frontends[{j}]"))),
                scope: Scope::Frontend(fa.name.clone()),
            });
        }
    }
    proxy(old, new, out);
}

/// Field-by-field comparison of effective limits. With `own_only`, only
/// the fields set by `own` on either side are compared (the global ones
/// are reported once, not per entry).
pub fn limits_diff(
    ga: &Limits,
    oa: Option<&Limits>,
    gb: &Limits,
    ob: Option<&Limits>,
    own_only: bool,
) -> Vec<(Class, String)> {
    type Field = (&'static str, fn(&Limits) -> Option<u64>, Option<u64>);
    let fields: [Field; 10] = [
        (
            "max_header_bytes",
            |l| l.max_header_bytes,
            Some(DEFAULT_MAX_HEADER_BYTES),
        ),
        ("max_body_bytes", |l| l.max_body_bytes, None),
        (
            "header_timeout_ms",
            |l| l.header_timeout_ms,
            Some(DEFAULT_HEADER_TIMEOUT.as_millis() as u64),
        ),
        (
            "idle_timeout_ms",
            |l| l.idle_timeout_ms,
            Some(DEFAULT_IDLE_TIMEOUT.as_millis() as u64),
        ),
        (
            "max_connections_per_source",
            |l| l.max_connections_per_source,
            Some(DEFAULT_MAX_CONNECTIONS_PER_SOURCE),
        ),
        (
            "request_buffer_bytes",
            |l| l.request_buffer_bytes,
            Some(DEFAULT_REQUEST_BUFFER_BYTES as u64),
        ),
        (
            "body_timeout_ms",
            |l| l.body_timeout_ms,
            Some(DEFAULT_BODY_TIMEOUT.as_millis() as u64),
        ),
        (
            "send_timeout_ms",
            |l| l.send_timeout_ms,
            Some(DEFAULT_SEND_TIMEOUT.as_millis() as u64),
        ),
        ("requests_per_second", |l| l.requests_per_second, None),
        ("burst", |l| l.burst, None),
    ];
    let mut out = Vec::new();
    for (name, f, default) in fields {
        if own_only && oa.and_then(f).is_none() && ob.and_then(f).is_none() {
            continue;
        }
        let eff = |g: &Limits, o: Option<&Limits>| {
            let v = o.and_then(f).or_else(|| f(g)).or(default);
            // `burst` defaults to `requests_per_second`.
            if name == "burst" {
                v.or_else(|| {
                    o.and_then(|l| l.requests_per_second)
                        .or(g.requests_per_second)
                })
            } else {
                v
            }
        };
        let (a, b) = (eff(ga, oa), eff(gb, ob));
        let show = |v: Option<u64>| v.map_or("unlimited".to_owned(), |v| v.to_string());
        let class = match (a, b) {
            (x, y) if x == y => continue,
            (_, None) => Class::Widen,
            (None, Some(_)) => Class::Narrow,
            (Some(x), Some(y)) if y > x => Class::Widen,
            _ => Class::Narrow,
        };
        let word = if class == Class::Widen {
            "loosened"
        } else {
            "tightened"
        };
        out.push((class, format!("{name} {word}: {} -> {}", show(a), show(b))));
    }
    out
}

fn cache(old: &Policy, new: &Policy, out: &mut Vec<Change>) {
    let (ca, cb) = (&old.source.rules.cache, &new.source.rules.cache);
    let cref = |p: &Policy, n: &str| p.source.rule_ref(&format!("cache.{n}"));
    let ttl = |t: Option<u64>| t.map_or("unset".to_owned(), |t| format!("{t}s"));
    let mut push = |svc: &str, what: String, old_ref, new_ref| {
        out.push(Change {
            class: Class::Change,
            area: Area::Cache,
            subject: svc.to_owned(),
            what,
            old: old_ref,
            new: new_ref,
            scope: Scope::Other,
        })
    };
    for (svc, a) in ca {
        match cb.get(svc) {
            None => push(
                svc,
                "no longer cached".to_owned(),
                Some(cref(old, svc)),
                None,
            ),
            Some(b) => {
                let mut what = Vec::new();
                if a.max_bytes != b.max_bytes {
                    what.push(format!("max_bytes {} -> {}", a.max_bytes, b.max_bytes));
                }
                if a.default_ttl_s != b.default_ttl_s {
                    what.push(format!(
                        "default_ttl_s {} -> {}",
                        ttl(a.default_ttl_s),
                        ttl(b.default_ttl_s)
                    ));
                }
                if !what.is_empty() {
                    push(
                        svc,
                        what.join(", "),
                        Some(cref(old, svc)),
                        Some(cref(new, svc)),
                    );
                }
            }
        }
    }
    for (svc, b) in cb {
        if !ca.contains_key(svc) {
            push(
                svc,
                format!(
                    "newly cached (max_bytes {}, default_ttl_s {})",
                    b.max_bytes,
                    ttl(b.default_ttl_s)
                ),
                None,
                Some(cref(new, svc)),
            );
        }
    }
}

fn proxy(old: &Policy, new: &Policy, out: &mut Vec<Change>) {
    use crate::rules::model::HeadersWithUnderscores as U;
    // From the setting that refuses most requests to the one that refuses
    // fewest (`drop` lets through what `reject_lookalikes` refuses).
    let openness = |p: &Policy| match p
        .source
        .rules
        .proxy
        .as_ref()
        .and_then(|p| p.headers_with_underscores)
        .unwrap_or_default()
    {
        U::Reject => 0,
        U::RejectLookalikes => 1,
        U::Drop => 2,
    };
    let (ua, ub) = (openness(old), openness(new));
    let mut push = |what: String, field: &str| {
        let class = match field {
            "headers_with_underscores" if ub > ua => Class::Widen,
            "headers_with_underscores" => Class::Narrow,
            _ => Class::Change,
        };
        out.push(Change {
            class,
            area: Area::Proxy,
            subject: "proxy".to_owned(),
            what,
            old: super::at(old, &format!("proxy.{field}")),
            new: super::at(new, &format!("proxy.{field}")),
            scope: Scope::Other,
        })
    };
    if old.proxy_port != new.proxy_port {
        push(
            format!("listen_port {} -> {}", old.proxy_port, new.proxy_port),
            "listen_port",
        );
    }
    if old.admin != new.admin {
        push(format!("admin {} -> {}", old.admin, new.admin), "admin");
    }
    if ua != ub {
        const NAMES: [&str; 3] = ["reject", "reject_lookalikes", "drop"];
        push(
            format!("headers_with_underscores {} -> {}", NAMES[ua], NAMES[ub]),
            "headers_with_underscores",
        );
    }
}
