//! `portcullis diff`: what a rule change does to traffic, not to JSON.
//!
//! Both rule files are validated and compiled whole first; then each layer
//! is compared by its own module, each producing [`Change`]s that say what
//! is newly allowed ([`Class::Widen`]), newly refused ([`Class::Narrow`]),
//! what could not be decided ([`Class::Unknown`], counted as a possible
//! widening, never as a narrowing) and what changed without changing what
//! is allowed ([`Class::Change`]):
//!
//! - [`flows`]: containers, addresses, modes and the L3/L4 flows;
//! - [`http`]: per flow, the HTTP matchers (segment-aware containment);
//! - [`frontends`]: frontends, route precedence (through the proxy's own
//!   route lookup), pools;
//! - [`settings`]: cache services, limits, proxy settings;
//! - [`render`]: the text and JSON forms; [`source`]: reading `REV:PATH`.
//!
//! Every change names the rule-file positions on both sides. The property
//! test (`tests/diff_props.rs`) checks every statement against
//! [`Policy::probe`], the function behind `explain`.

pub mod flows;
pub mod frontends;
pub mod http;
pub mod render;
pub mod settings;
pub mod source;

#[cfg(test)]
mod tests;

use crate::policy::{Policy, L4};
use crate::rules::RuleRef;

/// How a change affects what is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// Something is newly allowed (or reaches something new).
    Widen,
    /// It cannot be decided whether something is newly allowed (e.g. two
    /// different regexes): treated as a possible widening.
    Unknown,
    /// Something allowed before is refused now.
    Narrow,
    /// A change that allows and refuses nothing new (weights, TTLs…).
    Change,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::Widen => "widen",
            Class::Unknown => "unknown",
            Class::Narrow => "narrow",
            Class::Change => "change",
        }
    }
}

/// The part of the rule file a change is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    Mode,
    Container,
    Flow,
    Http,
    Frontend,
    Route,
    Pool,
    Cache,
    Limits,
    Proxy,
}

impl Area {
    pub fn name(self) -> &'static str {
        match self {
            Area::Mode => "mode",
            Area::Container => "container",
            Area::Flow => "flow",
            Area::Http => "http",
            Area::Frontend => "frontend",
            Area::Route => "route",
            Area::Pool => "pool",
            Area::Cache => "cache",
            Area::Limits => "limits",
            Area::Proxy => "proxy",
        }
    }
}

/// One access flow, by container names (ids differ between two files).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    pub from: String,
    pub to: String,
    pub proto: Proto,
    pub port: u16,
}

/// [`L4`] with an order, for sorting flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn l4(self) -> L4 {
        match self {
            Proto::Tcp => L4::Tcp,
            Proto::Udp => L4::Udp,
        }
    }

    pub fn from_l4(p: L4) -> Proto {
        match p {
            L4::Tcp => Proto::Tcp,
            L4::Udp => Proto::Udp,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// What a change covers, so that tools (and the property test) can tell
/// which connections and requests it speaks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every flow between managed containers (a top-level mode change).
    Everything,
    /// Every flow to or from this container.
    Container(String),
    /// These flows (same source, destination and protocol; several ports).
    /// `matcher`: only the requests that `http[index]` of the flow's entry
    /// in the old or new file allows; `None`: the whole flow.
    Flows {
        flows: Vec<FlowKey>,
        matcher: Option<(FileSide, usize)>,
    },
    /// Frontend inputs: (host, normalised path); `host` `None` = no Host.
    /// Each stands for its region (see [`frontends`]).
    Inputs {
        frontend: String,
        inputs: Vec<(Option<String>, String)>,
    },
    /// A whole frontend.
    Frontend(String),
    /// A pool, a cached service, the limits, the proxy settings.
    Other,
}

/// Which of the two files an index refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileSide {
    Old,
    New,
}

impl FileSide {
    pub fn name(self) -> &'static str {
        match self {
            FileSide::Old => "old",
            FileSide::New => "new",
        }
    }
}

/// One statement of the diff.
#[derive(Debug, Clone)]
pub struct Change {
    pub class: Class,
    pub area: Area,
    /// What it is about: `app2 -> app1:80/tcp`, `frontend edge`, `pool two`.
    pub subject: String,
    /// What changed, in terms of traffic.
    pub what: String,
    /// Position in the old file (`None`: nothing there).
    pub old: Option<RuleRef>,
    /// Position in the new file.
    pub new: Option<RuleRef>,
    pub scope: Scope,
}

/// The overall verdict, the basis of the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing allowed or refused changed (there may be neutral changes).
    None,
    /// Only narrowings.
    Narrowing,
    /// Something newly allowed, or undecidable.
    Widening,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::None => "none",
            Verdict::Narrowing => "narrowing",
            Verdict::Widening => "widening",
        }
    }
}

/// When `diff` exits non-zero (`--fail-on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailOn {
    /// 2 on a widening (or undecidable), else 1 on a narrowing, else 0.
    #[default]
    Any,
    /// 2 on a widening (or undecidable), else 0.
    Widen,
    /// 1 on a narrowing (whatever else), else 0.
    Narrow,
    /// Always 0 (report only).
    Never,
}

/// Exit status for an error (unreadable or invalid rule file, git
/// failure, bad arguments): distinct from every verdict.
pub const EXIT_ERROR: i32 = 3;

/// All the changes between two compiled policies.
#[derive(Debug)]
pub struct Report {
    pub old_file: String,
    pub new_file: String,
    pub changes: Vec<Change>,
}

impl Report {
    pub fn count(&self, class: Class) -> usize {
        self.changes.iter().filter(|c| c.class == class).count()
    }

    pub fn verdict(&self) -> Verdict {
        if self.count(Class::Widen) + self.count(Class::Unknown) > 0 {
            Verdict::Widening
        } else if self.count(Class::Narrow) > 0 {
            Verdict::Narrowing
        } else {
            Verdict::None
        }
    }

    pub fn exit_code(&self, fail_on: FailOn) -> i32 {
        let widen = self.verdict() == Verdict::Widening;
        let narrow = self.count(Class::Narrow) > 0;
        match fail_on {
            FailOn::Any if widen => 2,
            FailOn::Any if narrow => 1,
            FailOn::Widen if widen => 2,
            FailOn::Narrow if narrow => 1,
            _ => 0,
        }
    }
}

/// Compares two compiled policies.
pub fn diff(old: &Policy, new: &Policy) -> Report {
    let mut changes = Vec::new();
    flows::diff(old, new, &mut changes);
    frontends::diff(old, new, &mut changes);
    settings::diff(old, new, &mut changes);
    Report {
        old_file: old.file.to_string(),
        new_file: new.file.to_string(),
        changes: merge_ports(changes),
    }
}

/// Joins changes that differ only in the port of their flows (one line
/// for `app2 -> app1:80,443/tcp` instead of one per port).
fn merge_ports(changes: Vec<Change>) -> Vec<Change> {
    let mut out: Vec<Change> = Vec::with_capacity(changes.len());
    for c in changes {
        if let Some(last) = out.last_mut() {
            if let (
                Scope::Flows {
                    flows: a,
                    matcher: ma,
                },
                Scope::Flows {
                    flows: b,
                    matcher: mb,
                },
            ) = (&mut last.scope, &c.scope)
            {
                let same_pair = match (a.first(), b.first()) {
                    (Some(x), Some(y)) => x.from == y.from && x.to == y.to && x.proto == y.proto,
                    _ => false,
                };
                if same_pair
                    && ma == mb
                    && last.class == c.class
                    && last.area == c.area
                    && last.what == c.what
                    && last.old == c.old
                    && last.new == c.new
                {
                    a.extend(b.iter().cloned());
                    last.subject = flows_subject(a);
                    continue;
                }
            }
        }
        out.push(c);
    }
    out
}

/// The position of `path` in `p`'s file, if the file has that value.
pub(crate) fn at(p: &Policy, path: &str) -> Option<RuleRef> {
    p.source
        .locations
        .contains(path)
        .then(|| p.source.rule_ref(path))
}

/// `app2 -> app1:80,443/tcp`.
pub fn flows_subject(flows: &[FlowKey]) -> String {
    let Some(f) = flows.first() else {
        return String::new();
    };
    let ports: Vec<String> = flows.iter().map(|k| k.port.to_string()).collect();
    format!(
        "{} -> {}:{}/{}",
        f.from,
        f.to,
        ports.join(","),
        f.proto.name()
    )
}
