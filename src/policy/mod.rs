//! The compiled policy: the rule file turned into lookup structures once,
//! and the decisions made from them. Pure: no I/O, no clocks.
//!
//! The access list is a hash map keyed by (from, to, protocol, port), so a
//! decision costs one lookup however long the rule file is; validation has
//! already guaranteed that at most one entry owns each key. The same
//! functions answer `portcullis explain`, the proxy and the nftables
//! compiler, so the three cannot disagree.

pub mod access;
pub mod fields;
pub mod guard;
pub mod limits;
pub mod matcher;
pub use crate::wire::normalize;
pub mod probe;
pub mod route_decision;
pub mod routes;

use crate::rules::model::{GuardNetwork, Limits, Mode, Protocol, UpstreamProtocol};
use crate::rules::{RuleRef, RuleSet};
use matcher::{Matcher, Miss, RequestView};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Index of a container in [`Policy::containers`].
pub type ContainerId = u16;

pub const DEFAULT_PROXY_PORT: u16 = 15001;
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

/// Layer-4 protocol of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L4 {
    Tcp,
    Udp,
}

impl L4 {
    /// IANA protocol number (what `meta l4proto` loads).
    pub fn number(self) -> u8 {
        match self {
            L4::Tcp => 6,
            L4::Udp => 17,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            L4::Tcp => "tcp",
            L4::Udp => "udp",
        }
    }
}

#[derive(Debug)]
pub struct Container {
    pub name: String,
    /// Fixed addresses from the rule file.
    pub addresses: Vec<IpAddr>,
    /// Docker container to resolve, if any.
    pub docker: Option<String>,
}

/// One compiled access entry.
#[derive(Debug)]
pub struct Entry {
    pub rule: RuleRef,
    /// The entry's `rule` label in the metrics: its `name`, or `rule`.
    pub label: Arc<str>,
    pub from: Vec<ContainerId>,
    pub to: ContainerId,
    pub proto: L4,
    pub ports: Vec<u16>,
    /// Audit mode (own or inherited from the top level).
    pub audit: bool,
    /// `None`: allowed at L4. `Some`: redirected into the proxy.
    pub http: Option<Vec<Matcher>>,
    pub limits: Limits,
    /// `upstream_protocol`; `None`: the client's.
    pub upstream: Option<UpstreamProtocol>,
}

/// Where and how fast the default deny's drops are logged (`log_drops`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropLog {
    pub per_second: u32,
    /// The NFLOG group the kernel sends them to.
    pub group: u16,
}

impl DropLog {
    pub const DEFAULT_PER_SECOND: u32 = 10;
    pub const DEFAULT_GROUP: u16 = 2121;
}

#[derive(Debug)]
pub struct Policy {
    pub file: Arc<str>,
    pub audit: bool,
    pub containers: Vec<Container>,
    by_name: HashMap<String, ContainerId>,
    pub entries: Vec<Entry>,
    flows: HashMap<(ContainerId, ContainerId, L4, u16), u32>,
    pub proxy_port: u16,
    pub admin: SocketAddr,
    pub limits: Limits,
    /// Fields the proxy and the rules rely on ([`fields`]).
    pub fields: fields::FieldGuard,
    /// Guarded networks (`guard.networks`), in file order.
    pub guard: Vec<guard::Guarded>,
    /// `log_drops`, defaults applied.
    pub log_drops: Option<DropLog>,
    /// The validated rule file, for the layers compiled elsewhere
    /// (frontends, pools, cache).
    pub source: RuleSet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    Nftables,
    Proxy,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        })
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layer::Nftables => "nftables",
            Layer::Proxy => "proxy",
        })
    }
}

/// A decision with its explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What happens: in audit mode a would-be denial is an `Allow` with
    /// `audit_deny` set.
    pub verdict: Verdict,
    pub layer: Layer,
    /// The rule that decided; `None` for a default.
    pub rule: Option<RuleRef>,
    pub reason: String,
    /// Enforce mode would have denied this; audit mode let it through.
    pub audit_deny: bool,
    /// The HTTP status the proxy answers with, for proxy denials.
    pub status: Option<u16>,
}

impl Decision {
    fn deny(
        layer: Layer,
        rule: Option<RuleRef>,
        reason: String,
        audit: bool,
        status: Option<u16>,
    ) -> Decision {
        Decision {
            verdict: if audit { Verdict::Allow } else { Verdict::Deny },
            layer,
            rule,
            reason: if audit {
                format!("audit_deny: {reason}")
            } else {
                reason
            },
            audit_deny: audit,
            status: if audit { None } else { status },
        }
    }
}

/// Outcome of the hot-path request check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestCheck {
    /// Allowed by matcher `n` of the entry.
    Allowed(usize),
    /// No matcher allows it.
    Denied,
}

impl Policy {
    /// Compiles a validated rule set.
    pub fn compile(set: RuleSet) -> Result<Policy, crate::rules::RuleError> {
        let r = &set.rules;
        let global_audit = r.mode == Some(Mode::Audit);
        let mut containers = Vec::with_capacity(r.containers.len());
        let mut by_name = HashMap::new();
        for (name, spec) in &r.containers {
            by_name.insert(name.clone(), containers.len() as ContainerId);
            containers.push(Container {
                name: name.clone(),
                addresses: spec
                    .address
                    .iter()
                    .flat_map(|a| a.0.iter())
                    .filter_map(|a| a.parse().ok())
                    .collect(),
                docker: spec.docker.clone(),
            });
        }
        let id = |n: &str| by_name.get(n).copied().unwrap_or(0);
        let mut entries = Vec::new();
        let mut flows = HashMap::new();
        for (i, e) in r.access.iter().enumerate() {
            let path = format!("access[{i}]");
            let proto = match e.protocol {
                Protocol::Tcp => L4::Tcp,
                Protocol::Udp => L4::Udp,
            };
            let http = match &e.http {
                None => None,
                Some(ms) => {
                    let mut out = Vec::with_capacity(ms.len());
                    for (j, m) in ms.iter().enumerate() {
                        let mpath = format!("{path}.http[{j}]");
                        let rule = set.rule_ref(&mpath);
                        out.push(Matcher::compile(rule, m).map_err(|err| {
                            crate::rules::RuleError::At {
                                file: set.file.to_string(),
                                pos: set.locations.of(&mpath),
                                message: format!("regex does not compile: {err}"),
                            }
                        })?);
                    }
                    Some(out)
                }
            };
            let from: Vec<ContainerId> = e.from.0.iter().map(|f| id(f)).collect();
            let to = id(&e.to);
            let ports: Vec<u16> = e
                .ports
                .iter()
                .filter_map(|&p| u16::try_from(p).ok())
                .collect();
            for &f in &from {
                for &p in &ports {
                    flows.insert((f, to, proto, p), entries.len() as u32);
                }
            }
            let rule = set.rule_ref(&path);
            entries.push(Entry {
                label: match &e.name {
                    Some(n) => Arc::from(n.as_str()),
                    None => Arc::from(rule.to_string()),
                },
                rule,
                from,
                to,
                proto,
                ports,
                audit: match e.mode {
                    Some(m) => m == Mode::Audit,
                    None => global_audit,
                },
                http,
                limits: e.limits.clone().unwrap_or_default(),
                upstream: e.upstream_protocol,
            });
        }
        let proxy = r.proxy.as_ref();
        let proxy_port = proxy
            .and_then(|p| p.listen_port)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(DEFAULT_PROXY_PORT);
        let admin = proxy
            .and_then(|p| p.admin.as_deref())
            .unwrap_or(DEFAULT_ADMIN)
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9901)));
        let guard = r
            .guard
            .iter()
            .flat_map(|g| g.networks.iter().enumerate())
            .filter_map(|(i, n)| {
                let path = format!("guard.networks[{i}]");
                let net = match n {
                    GuardNetwork::Cidr(s) => guard::GuardedNet::Cidr(guard::Cidr::parse(s).ok()?),
                    GuardNetwork::Docker(name) => guard::GuardedNet::Docker(name.clone()),
                };
                Some(guard::Guarded {
                    net,
                    rule: set.rule_ref(&path),
                })
            })
            .collect();
        Ok(Policy {
            file: set.file.clone(),
            audit: global_audit,
            containers,
            by_name,
            entries,
            flows,
            proxy_port,
            admin,
            limits: r.limits.clone().unwrap_or_default(),
            fields: fields::FieldGuard::of_rules(r),
            guard,
            log_drops: r.log_drops.as_ref().map(|l| DropLog {
                per_second: l.per_second.unwrap_or(DropLog::DEFAULT_PER_SECOND),
                group: l.nflog_group.unwrap_or(DropLog::DEFAULT_GROUP),
            }),
            source: set,
        })
    }

    /// Where the limit `field` in force for `entry` (its own `limits`, else
    /// the global ones) is set in the rule file; `None` when it is the
    /// default. For the log line of a refusal that limit decided.
    pub fn limit_ref(&self, entry: Option<&Entry>, field: &str) -> Option<RuleRef> {
        self.limit_ref_over(entry.map(|e| (&e.limits, &e.rule)), field)
    }

    /// Where `field` of the limits in force is set: in `own` (an access
    /// entry's or a frontend's `limits`, with that entry's or frontend's
    /// place) if set there, else in the top-level `limits`; `None` when it
    /// is the default.
    pub fn limit_ref_over(&self, own: Option<(&Limits, &RuleRef)>, field: &str) -> Option<RuleRef> {
        let set = |l: &Limits| limit_field(l, field).is_some();
        if let Some((_, rule)) = own.filter(|(l, _)| set(l)) {
            let path = format!("{}.limits.{field}", rule.path);
            return Some(self.source.rule_ref(&path));
        }
        set(&self.limits).then(|| self.source.rule_ref(&format!("limits.{field}")))
    }

    pub fn container_id(&self, name: &str) -> Option<ContainerId> {
        self.by_name.get(name).copied()
    }

    pub fn container_name(&self, id: ContainerId) -> &str {
        self.containers
            .get(id as usize)
            .map(|c| c.name.as_str())
            .unwrap_or("?")
    }

    /// The entry owning a flow, if any (one hash lookup).
    pub fn flow(&self, from: ContainerId, to: ContainerId, proto: L4, port: u16) -> Option<&Entry> {
        self.flows
            .get(&(from, to, proto, port))
            .and_then(|&i| self.entries.get(i as usize))
    }

    /// The index in [`Policy::entries`] of the entry owning a flow.
    pub fn flow_index(
        &self,
        from: ContainerId,
        to: ContainerId,
        proto: L4,
        port: u16,
    ) -> Option<u32> {
        self.flows.get(&(from, to, proto, port)).copied()
    }

    /// What nftables does with a new connection between two managed
    /// containers.
    pub fn decide_flow(
        &self,
        from: ContainerId,
        to: ContainerId,
        proto: L4,
        port: u16,
    ) -> Decision {
        let (f, t) = (self.container_name(from), self.container_name(to));
        match self.flow(from, to, proto, port) {
            None => Decision::deny(
                Layer::Nftables,
                None,
                format!(
                    "default deny between managed containers: no access entry allows {f} -> {t}:{port}/{}",
                    proto.name()
                ),
                self.audit,
                None,
            ),
            Some(e) => Decision {
                verdict: Verdict::Allow,
                layer: Layer::Nftables,
                rule: Some(e.rule.clone()),
                reason: match &e.http {
                    None => format!("{f} -> {t}:{port}/{} is allowed at L4", proto.name()),
                    Some(ms) => format!(
                        "{f} -> {t}:{port}/tcp is redirected to the proxy, which checks each request against {} http matcher(s)",
                        ms.len()
                    ),
                },
                audit_deny: false,
                status: None,
            },
        }
    }

    /// Hot path: does any matcher of `entry` allow the request?
    pub fn check_request(entry: &Entry, req: &RequestView<'_>) -> RequestCheck {
        match &entry.http {
            None => RequestCheck::Allowed(0),
            Some(ms) => ms
                .iter()
                .position(|m| m.check(req).is_ok())
                .map_or(RequestCheck::Denied, RequestCheck::Allowed),
        }
    }

    /// The full decision for a request on an entry's flow, with reasons.
    pub fn decide_request(&self, entry: &Entry, req: &RequestView<'_>) -> Decision {
        self.explain_request(entry, req, Self::check_request(entry, req))
    }

    /// The decision `check` (of [`Policy::check_request`] on the same
    /// request) explained.
    pub fn explain_request(
        &self,
        entry: &Entry,
        req: &RequestView<'_>,
        check: RequestCheck,
    ) -> Decision {
        let from = entry
            .from
            .iter()
            .map(|&i| self.container_name(i))
            .collect::<Vec<_>>()
            .join("|");
        match (check, &entry.http) {
            (RequestCheck::Allowed(i), Some(ms)) => Decision {
                verdict: Verdict::Allow,
                layer: Layer::Proxy,
                rule: ms.get(i).map(|m| m.rule.clone()),
                reason: format!(
                    "{} {} matches {}",
                    req.method,
                    req.path,
                    ms.get(i).map(|m| m.describe()).unwrap_or_default()
                ),
                audit_deny: false,
                status: None,
            },
            (_, None) => Decision {
                verdict: Verdict::Allow,
                layer: Layer::Nftables,
                rule: Some(entry.rule.clone()),
                reason: format!(
                    "{from} -> {} is allowed at L4 (no http rules)",
                    self.container_name(entry.to)
                ),
                audit_deny: false,
                status: None,
            },
            (RequestCheck::Denied, Some(ms)) => {
                let why: Vec<String> = ms
                    .iter()
                    .map(|m| {
                        let miss = match m.check(req) {
                            Err(Miss::Method) if req.method == "CONNECT" => {
                                "does not name CONNECT".to_owned()
                            }
                            Err(Miss::Method) => "method differs".to_owned(),
                            Err(Miss::Path) => "path differs".to_owned(),
                            Err(Miss::Header(h)) => format!("header {h} does not match"),
                            Ok(()) => "matches".to_owned(),
                        };
                        format!("{} ({miss})", m.describe())
                    })
                    .collect();
                Decision::deny(
                    Layer::Proxy,
                    Some(entry.rule.clone()),
                    format!(
                        "no http matcher allows {} {}: {}",
                        req.method,
                        req.path,
                        why.join("; ")
                    ),
                    entry.audit,
                    Some(403),
                )
            }
        }
    }

    /// A request on a redirected flow that no access entry owns (the rules
    /// changed under an open connection, or an address moved): denied by
    /// default, or let through and reported in audit mode like every other
    /// default denial.
    pub fn decide_unowned(&self, source: &str, destination: impl fmt::Display) -> Decision {
        Decision::deny(
            Layer::Proxy,
            None,
            format!("denied by default: no access entry allows {source} -> {destination}"),
            self.audit,
            Some(403),
        )
    }

    /// The path the access matchers see for a request target: the
    /// normalised path and the query, or `/` for CONNECT (whose target is
    /// an authority, checked by the proxy). One function, so the proxy,
    /// `explain` and the demo see the same path.
    pub fn request_path<'t>(
        method: &str,
        target: &'t str,
    ) -> Result<(Cow<'t, str>, Option<&'t str>), normalize::PathError> {
        if method == "CONNECT" {
            return Ok((Cow::Borrowed("/"), None));
        }
        let (raw, query) = normalize::split_target(target);
        Ok((normalize::normalize_path(raw)?, query))
    }

    /// A request whose fields would change after the decision (a protected
    /// field named in `Connection`, an underscore lookalike): refused
    /// before any rule is consulted, like a bad path.
    pub fn refuse_fields(err: &fields::FieldError) -> Decision {
        Self::bad_request(err)
    }

    /// A request whose path could not be normalised: refused before any
    /// rule is consulted (never audited: it is not a rule decision).
    pub fn refuse_path(err: normalize::PathError) -> Decision {
        Self::bad_request(err)
    }

    /// `400` before any rule: the request cannot be checked safely.
    fn bad_request(why: impl fmt::Display) -> Decision {
        Decision {
            verdict: Verdict::Deny,
            layer: Layer::Proxy,
            rule: None,
            reason: format!("bad request: {why}"),
            audit_deny: false,
            status: Some(400),
        }
    }
}

#[cfg(test)]
mod tests;

/// One field of a `limits` block by its rule-file name.
fn limit_field(l: &Limits, field: &str) -> Option<u64> {
    match field {
        "max_header_bytes" => l.max_header_bytes,
        "max_body_bytes" => l.max_body_bytes,
        "header_timeout_ms" => l.header_timeout_ms,
        "idle_timeout_ms" => l.idle_timeout_ms,
        "max_connections_per_source" => l.max_connections_per_source,
        "requests_per_second" => l.requests_per_second,
        "burst" => l.burst,
        "request_buffer_bytes" => l.request_buffer_bytes,
        "body_timeout_ms" => l.body_timeout_ms,
        "send_timeout_ms" => l.send_timeout_ms,
        _ => None,
    }
}
