//! The two forms of a [`Report`]: text for people (one line per change,
//! then a summary line) and one JSON object for tools. The JSON field
//! names are part of the documented interface (docs/wiki/reviewing-changes.md).

use serde_json::{json, Value};

use super::{Change, Class, Report, Scope};
use crate::rules::RuleRef;

fn pos(r: &Option<RuleRef>) -> String {
    r.as_ref()
        .map_or_else(|| "-".to_owned(), ToString::to_string)
}

/// `widen    flow  app3 -> app1:80/tcp: newly allowed …` then the
/// positions on an indented line.
pub fn text(r: &Report) -> String {
    let mut s = format!("diff {} -> {}\n", r.old_file, r.new_file);
    for c in &r.changes {
        s.push_str(&format!(
            "{:<7} {:<9} {}: {}\n        old {}\n        new {}\n",
            c.class.name(),
            c.area.name(),
            c.subject,
            c.what,
            pos(&c.old),
            pos(&c.new)
        ));
    }
    s.push_str(&format!(
        "{}: {} widen, {} narrow, {} unknown, {} neutral change(s)\n",
        r.verdict().name(),
        r.count(Class::Widen),
        r.count(Class::Narrow),
        r.count(Class::Unknown),
        r.count(Class::Change)
    ));
    s
}

fn rule_json(r: &Option<RuleRef>) -> Value {
    match r {
        None => Value::Null,
        Some(r) => json!({
            "file": r.file.to_string(),
            "line": r.pos.line,
            "column": r.pos.col,
            "path": r.path,
            "text": r.to_string(),
        }),
    }
}

fn change_json(c: &Change) -> Value {
    let mut v = json!({
        "class": c.class.name(),
        "area": c.area.name(),
        "subject": c.subject,
        "what": c.what,
        "old": rule_json(&c.old),
        "new": rule_json(&c.new),
    });
    let scope = match &c.scope {
        Scope::Everything => json!({"kind": "everything"}),
        Scope::Container(n) => json!({"kind": "container", "container": n}),
        Scope::Flows { flows, matcher } => json!({
            "kind": "flows",
            "flows": flows.iter().map(|f| json!({
                "from": f.from, "to": f.to, "port": f.port, "proto": f.proto.name(),
            })).collect::<Vec<_>>(),
            "http": matcher.map(|(side, i)| json!({"file": side.name(), "index": i})),
        }),
        Scope::Inputs { frontend, inputs } => json!({
            "kind": "inputs",
            "frontend": frontend,
            "inputs": inputs.iter().map(|(h, p)| json!({"host": h, "path": p})).collect::<Vec<_>>(),
        }),
        Scope::Frontend(n) => json!({"kind": "frontend", "frontend": n}),
        Scope::Other => json!({"kind": "other"}),
    };
    v["scope"] = scope;
    v
}

/// One JSON object (pretty-printed).
pub fn json(r: &Report, exit: i32) -> String {
    let v = json!({
        "old": r.old_file,
        "new": r.new_file,
        "verdict": r.verdict().name(),
        "exit": exit,
        "counts": {
            "widen": r.count(Class::Widen),
            "narrow": r.count(Class::Narrow),
            "unknown": r.count(Class::Unknown),
            "change": r.count(Class::Change),
        },
        "changes": r.changes.iter().map(change_json).collect::<Vec<_>>(),
    });
    serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
}
