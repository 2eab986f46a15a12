//! The access decision for one request on a redirected flow: one function,
//! [`Policy::decide_access`], taken by the proxy (`proxy/conn.rs`, for
//! HTTP/1 and HTTP/2 alike) and, through [`Policy::probe`], by `portcullis
//! explain`, `portcullis diff`'s property test and the demo. Every step is
//! here, so none of them can skip one the proxy takes:
//!
//! 1. fields that would change after the decision ([`fields`]) → `400`;
//! 2. the target: `CONNECT`'s must be `host:port` (authority form); any
//!    other origin form, or absolute form agreeing with `Host`
//!    ([`head::origin_form`]) → else `400`;
//! 3. the path the matchers see ([`Policy::request_path`]: normalised, or
//!    `/` for CONNECT) → else `400`;
//! 4. the rules: the entry's matchers ([`Policy::check_request`]), or the
//!    default denial for a flow no entry owns ([`Policy::decide_unowned`]);
//!    a denial is explained ([`Decision`]) and, in audit mode, let through.
//!
//! An allowed request costs no explanation and, when its path is already
//! clean, no allocation: the proxy's hot path.
//!
//! [`fields`]: super::fields

use std::borrow::Cow;
use std::fmt;

use super::fields::FieldError;
use super::matcher::RequestView;
use super::normalize::PathError;
use super::{Decision, Entry, Policy, RequestCheck};
use crate::wire::head::{self, HeadError};

/// The parts of a request the access rules decide on.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    pub method: &'a str,
    /// Request target as sent (origin, absolute or, for CONNECT, authority
    /// form; normalised here).
    pub target: &'a str,
    pub headers: &'a [httparse::Header<'a>],
}

/// Who owns the flow a request arrived on.
#[derive(Clone, Copy)]
pub enum FlowOwner<'e> {
    /// The access entry of (source, destination, protocol, port).
    Entry(&'e Entry),
    /// No entry (the rules changed under an open connection, or an address
    /// moved): denied by default.
    Unowned {
        source: &'e str,
        destination: &'e dyn fmt::Display,
    },
}

/// Why a request cannot be checked at all (→ `400`, before any rule, never
/// audited: it is not a rule decision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadRequest {
    Fields(FieldError),
    Target(HeadError),
    ConnectTarget,
    Path(PathError),
}

impl fmt::Display for BadRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadRequest::Fields(e) => e.fmt(f),
            BadRequest::Target(e) => e.fmt(f),
            BadRequest::ConnectTarget => f.write_str("CONNECT target is not host:port"),
            BadRequest::Path(e) => e.fmt(f),
        }
    }
}

impl BadRequest {
    /// The decision `explain` prints for it.
    pub fn decision(&self) -> Decision {
        Policy::bad_request(self)
    }
}

/// The outcome of [`Policy::decide_access`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access<'a> {
    /// A matcher allows it (`matcher` indexes the entry's `http`; `0` for
    /// an entry without http rules). Nothing was explained.
    Allow {
        path: Cow<'a, str>,
        query: Option<&'a str>,
        matcher: usize,
    },
    /// Denied by the rules, let through in audit mode; `decision` says why.
    Audited {
        path: Cow<'a, str>,
        query: Option<&'a str>,
        decision: Decision,
    },
    /// Denied (`403`); `decision` says why.
    Deny {
        path: Cow<'a, str>,
        decision: Decision,
    },
    /// Cannot be checked (`400`).
    Bad(BadRequest),
}

impl Policy {
    /// The proxy's decision for one request on a flow owned by `owner`
    /// (see the module docs for the steps).
    pub fn decide_access<'a>(&self, owner: FlowOwner<'_>, req: &HttpRequest<'a>) -> Access<'a> {
        if let Err(e) = self.fields.check(req.headers) {
            return Access::Bad(BadRequest::Fields(e));
        }
        let target = if req.method == "CONNECT" {
            // Authority form: only the matchers that name CONNECT can allow
            // it, and their path conditions see "/".
            if !head::valid_host(req.target.as_bytes()) || !req.target.contains(':') {
                return Access::Bad(BadRequest::ConnectTarget);
            }
            req.target
        } else {
            match head::origin_form(req.target, req.headers) {
                Ok(t) => t,
                Err(e) => return Access::Bad(BadRequest::Target(e)),
            }
        };
        let (path, query) = match Policy::request_path(req.method, target) {
            Ok(pq) => pq,
            Err(e) => return Access::Bad(BadRequest::Path(e)),
        };
        let denial = match owner {
            FlowOwner::Unowned {
                source,
                destination,
            } => self.decide_unowned(source, destination),
            FlowOwner::Entry(entry) => {
                let view = RequestView {
                    method: req.method,
                    path: &path,
                    headers: req.headers,
                };
                match Policy::check_request(entry, &view) {
                    RequestCheck::Allowed(matcher) => {
                        return Access::Allow {
                            path,
                            query,
                            matcher,
                        }
                    }
                    RequestCheck::Denied => {
                        self.explain_request(entry, &view, RequestCheck::Denied)
                    }
                }
            }
        };
        if denial.audit_deny {
            Access::Audited {
                path,
                query,
                decision: denial,
            }
        } else {
            Access::Deny {
                path,
                decision: denial,
            }
        }
    }
}
