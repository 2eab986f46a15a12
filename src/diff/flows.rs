//! L3/L4: top-level mode, containers and their addresses, and every flow
//! an access entry of either file names.
//!
//! A flow's allowed set on one side is one of: nothing (default deny),
//! everything (an L4 entry, an audit-mode entry or the audit-mode default),
//! or the requests its `http` matchers allow — exactly the cases
//! [`Policy::probe`] distinguishes. Two HTTP sides go to [`super::http`].
//! Flows that involve a container present on one side only are described
//! once, by the container change (an unmanaged container's traffic is not
//! filtered at all).

use std::collections::{BTreeMap, BTreeSet};

use super::{http, Area, Change, Class, FlowKey, Proto, Scope};
use crate::policy::{Entry, Policy};
use crate::rules::RuleRef;

/// What one side allows on one flow.
#[derive(Debug)]
pub(crate) enum Side<'a> {
    /// Default deny: no entry.
    Denied,
    /// No entry, but the top-level mode is audit: let through.
    AuditDefault,
    /// An entry without `http`: allowed at L4.
    L4(&'a Entry),
    /// An entry with `http` in audit mode: every request let through.
    AuditHttp(&'a Entry),
    /// An entry with `http` in enforce mode; its index in `access`.
    Http(&'a Entry, usize),
}

impl Side<'_> {
    fn allows_all(&self) -> bool {
        matches!(self, Side::AuditDefault | Side::L4(_) | Side::AuditHttp(_))
    }

    fn rule(&self) -> Option<RuleRef> {
        match self {
            Side::Denied | Side::AuditDefault => None,
            Side::L4(e) | Side::AuditHttp(e) | Side::Http(e, _) => Some(e.rule.clone()),
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Side::Denied => "denied by default",
            Side::AuditDefault => "let through by the audit-mode default",
            Side::L4(_) => "allowed at L4",
            Side::AuditHttp(_) => "let through whole (audit mode)",
            Side::Http(..) => "checked by the proxy",
        }
    }
}

/// The side of a flow whose containers both exist in `p`.
pub(crate) fn side<'a>(p: &'a Policy, k: &FlowKey) -> Option<Side<'a>> {
    let from = p.container_id(&k.from)?;
    let to = p.container_id(&k.to)?;
    let proto = k.proto.l4();
    Some(match p.flow_index(from, to, proto, k.port) {
        None if p.audit => Side::AuditDefault,
        None => Side::Denied,
        Some(i) => {
            let e = &p.entries[i as usize];
            match &e.http {
                None => Side::L4(e),
                Some(_) if e.audit => Side::AuditHttp(e),
                Some(_) => Side::Http(e, i as usize),
            }
        }
    })
}

fn keys(p: &Policy) -> BTreeSet<FlowKey> {
    let mut out = BTreeSet::new();
    for e in &p.entries {
        for &f in &e.from {
            for &port in &e.ports {
                out.insert(FlowKey {
                    from: p.container_name(f).to_owned(),
                    to: p.container_name(e.to).to_owned(),
                    proto: Proto::from_l4(e.proto),
                    port,
                });
            }
        }
    }
    out
}

fn mode_ref(p: &Policy) -> Option<RuleRef> {
    super::at(p, "mode")
}

pub fn diff(old: &Policy, new: &Policy, out: &mut Vec<Change>) {
    mode(old, new, out);
    containers(old, new, out);
    let all: BTreeSet<FlowKey> = keys(old).union(&keys(new)).cloned().collect();
    for k in &all {
        if let (Some(a), Some(b)) = (side(old, k), side(new, k)) {
            flow(old, new, k, &a, &b, out);
        }
    }
}

fn mode(old: &Policy, new: &Policy, out: &mut Vec<Change>) {
    let (class, what) = match (old.audit, new.audit) {
        (false, true) => (
            Class::Widen,
            "enforce -> audit: nothing is blocked any more; what enforce mode drops or refuses is only logged as audit_deny",
        ),
        (true, false) => (
            Class::Narrow,
            "audit -> enforce: what was only logged as audit_deny is dropped or refused now",
        ),
        _ => return,
    };
    out.push(Change {
        class,
        area: Area::Mode,
        subject: "top level".to_owned(),
        what: what.to_owned(),
        old: mode_ref(old),
        new: mode_ref(new),
        scope: Scope::Everything,
    });
}

/// Where a container is: its fixed addresses and Docker name.
fn places(p: &Policy) -> BTreeMap<String, BTreeSet<String>> {
    p.containers
        .iter()
        .map(|c| {
            let mut s: BTreeSet<String> = c.addresses.iter().map(|a| a.to_string()).collect();
            if let Some(d) = &c.docker {
                s.insert(format!("docker:{d}"));
            }
            (c.name.clone(), s)
        })
        .collect()
}

fn containers(old: &Policy, new: &Policy, out: &mut Vec<Change>) {
    let (po, pn) = (places(old), places(new));
    let cref = |p: &Policy, n: &str| p.source.rule_ref(&format!("containers.{n}"));
    let owner = |m: &BTreeMap<String, BTreeSet<String>>, place: &str| {
        m.iter()
            .find(|(_, s)| s.contains(place))
            .map(|(n, _)| n.clone())
    };
    for (name, places_old) in &po {
        match pn.get(name) {
            None => out.push(Change {
                class: if old.audit { Class::Change } else { Class::Widen },
                area: Area::Container,
                subject: name.clone(),
                what: "removed: it is no longer managed, so its traffic to and from the other containers is no longer filtered".to_owned(),
                old: Some(cref(old, name)),
                new: None,
                scope: Scope::Container(name.clone()),
            }),
            Some(places_new) => {
                let gone = places_old.difference(places_new).map(|gone| match owner(&pn, gone) {
                    Some(o) => (Class::Widen, format!("{gone} is no longer {name}: it belongs to {o} now and gets {o}'s access")),
                    None => (Class::Widen, format!("{gone} is no longer {name}: traffic to and from it is no longer filtered")),
                });
                let added = places_new.difference(places_old).map(|added| match owner(&po, added) {
                    Some(o) => (Class::Widen, format!("{added} was {o} and is {name} now: it gets {name}'s access")),
                    None => (Class::Narrow, format!("{added} is {name} now: its traffic is filtered by {name}'s rules")),
                });
                for (class, what) in gone.chain(added) {
                    out.push(Change {
                        class,
                        area: Area::Container,
                        subject: name.clone(),
                        what,
                        old: Some(cref(old, name)),
                        new: Some(cref(new, name)),
                        scope: Scope::Container(name.clone()),
                    });
                }
            }
        }
    }
    for name in pn.keys().filter(|n| !po.contains_key(*n)) {
        out.push(Change {
            class: if new.audit { Class::Change } else { Class::Narrow },
            area: Area::Container,
            subject: name.clone(),
            what: "added: it is managed now, so its traffic to and from the other containers is dropped unless an access entry allows it".to_owned(),
            old: None,
            new: Some(cref(new, name)),
            scope: Scope::Container(name.clone()),
        });
    }
}

fn flow(old: &Policy, new: &Policy, k: &FlowKey, a: &Side, b: &Side, out: &mut Vec<Change>) {
    let flows = vec![k.clone()];
    let subject = super::flows_subject(&flows);
    let mut push = |class, area, what: String, old_ref, new_ref, matcher| {
        out.push(Change {
            class,
            area,
            subject: subject.clone(),
            what,
            old: old_ref,
            new: new_ref,
            scope: Scope::Flows {
                flows: flows.clone(),
                matcher,
            },
        })
    };
    match (a, b) {
        (Side::Denied, Side::Denied) => {}
        (Side::Http(ea, ia), Side::Http(eb, ib)) => {
            for c in http::diff(old, ea, *ia, new, eb, *ib) {
                push(c.class, Area::Http, c.what, c.old, c.new, c.matcher);
            }
        }
        (x, y) if x.allows_all() && y.allows_all() => {
            if std::mem::discriminant(x) != std::mem::discriminant(y) {
                push(
                    Class::Change,
                    Area::Flow,
                    format!("still allowed whole: {} -> {}", x.describe(), y.describe()),
                    x.rule(),
                    y.rule(),
                    None,
                );
            }
        }
        (Side::Denied, y) => {
            let what = match y {
                Side::Http(e, i) => format!(
                    "newly allowed, for requests matching {}",
                    http::describe_entry(new, e, *i)
                ),
                Side::L4(_) => "newly allowed at L4 (every connection)".to_owned(),
                _ => format!("newly {}", y.describe()),
            };
            push(Class::Widen, Area::Flow, what, None, y.rule(), None);
        }
        (x, Side::Denied) => push(
            Class::Narrow,
            Area::Flow,
            format!("no longer allowed (was {})", x.describe()),
            x.rule(),
            None,
            None,
        ),
        (x, Side::Http(e, i)) => push(
            Class::Narrow,
            Area::Flow,
            format!(
                "was {}, now only requests matching {}",
                x.describe(),
                http::describe_entry(new, e, *i)
            ),
            x.rule(),
            Some(e.rule.clone()),
            None,
        ),
        (Side::Http(e, i), y) => push(
            Class::Widen,
            Area::Flow,
            format!(
                "was only requests matching {}, now {}",
                http::describe_entry(old, e, *i),
                y.describe()
            ),
            Some(e.rule.clone()),
            y.rule(),
            None,
        ),
        // Every pair is handled above; kept for the compiler.
        (x, y) => push(
            Class::Unknown,
            Area::Flow,
            format!("{} -> {}", x.describe(), y.describe()),
            x.rule(),
            y.rule(),
            None,
        ),
    }
    // Per-flow limits set on the entry itself.
    if let (Some(ea), Some(eb)) = (entry_of(a), entry_of(b)) {
        for (class, what) in super::settings::limits_diff(
            &old.limits,
            Some(&ea.limits),
            &new.limits,
            Some(&eb.limits),
            true,
        ) {
            push(
                class,
                Area::Limits,
                what,
                Some(ea.rule.clone()),
                Some(eb.rule.clone()),
                None,
            );
        }
    }
}

fn entry_of<'a>(s: &Side<'a>) -> Option<&'a Entry> {
    match s {
        Side::L4(e) | Side::AuditHttp(e) | Side::Http(e, _) => Some(e),
        _ => None,
    }
}
