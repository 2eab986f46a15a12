//! Request fields the proxy and the rules rely on, and the checks that keep
//! a client from changing them after the decision.
//!
//! Two tricks make an upstream see something other than what was checked:
//! naming a field in `Connection` (a proxy drops such fields, RFC 9110
//! §7.6.1, so a field a rule required, or the body's framing, would vanish
//! after the check), and spelling a name with `_` (CGI-style servers read
//! `X_Foo` as `X-Foo`, so `X-Portcullis_Source` could forge the source, or
//! `X_Bar` defeat a rule requiring `X-Bar` to be absent). The *protected*
//! names are `Host`, `Content-Length`, `Transfer-Encoding`,
//! `X-Portcullis-Source`, every header an access matcher names and every
//! `hash_key` header of a pool. [`FieldGuard::check`] refuses (`400`) a
//! request that names a protected field in `Connection` in any spelling,
//! and applies `proxy.headers_with_underscores` to underscore names.
//! Shared by the proxy (HTTP/1 and HTTP/2, access flows and frontends) and
//! `portcullis explain`. Allocation-free per request.

use std::fmt;

pub use crate::rules::model::HeadersWithUnderscores as Underscores;
use crate::rules::model::RuleFile;
pub use crate::wire::head::{is_hop_by_hop, trim};

/// Names the proxy itself relies on, whatever the rules say.
const ALWAYS: [&str; 4] = [
    "host",
    "content-length",
    "transfer-encoding",
    "x-portcullis-source",
];

/// Why a request's fields were refused (→ `400`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldError {
    /// `Connection` names a protected field (`protected` as the rules spell it).
    ConnectionNames { token: String, protected: String },
    /// An underscore spelling of a protected field.
    Lookalike { name: String, protected: String },
    /// A name with `_` under `headers_with_underscores: "reject"`.
    Underscore(String),
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldError::ConnectionNames { token, protected } => write!(
                f,
                "Connection names {token:?}, which would drop {protected} after the checks (fields the proxy or a rule relies on cannot be hop-by-hop)"
            ),
            FieldError::Lookalike { name, protected } => write!(
                f,
                "header {name:?} is an underscore spelling of {protected} (proxy.headers_with_underscores)"
            ),
            FieldError::Underscore(name) => write!(
                f,
                "header name {name:?} contains '_' (proxy.headers_with_underscores is \"reject\")"
            ),
        }
    }
}

impl std::error::Error for FieldError {}

/// The protected names of one policy and its underscore setting.
#[derive(Debug, Clone)]
pub struct FieldGuard {
    /// Lower-case, as the rules spell them (deduplicated).
    protected: Vec<Box<str>>,
    pub underscores: Underscores,
}

/// Do two names read the same to a server that maps `_` to `-` and
/// ignores case?
pub fn same_field(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes().zip(b.bytes()).all(|(x, y)| {
            let n = |c: u8| {
                if c == b'_' {
                    b'-'
                } else {
                    c.to_ascii_lowercase()
                }
            };
            n(x) == n(y)
        })
}

/// The `Connection` options of a request, trimmed (empty ones skipped).
pub fn connection_options<'a>(
    headers: &'a [httparse::Header<'a>],
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(trim)
        .filter(|t| !t.is_empty())
}

impl Default for FieldGuard {
    fn default() -> Self {
        FieldGuard::new(std::iter::empty(), Underscores::default())
    }
}

impl FieldGuard {
    /// The guard for `ALWAYS` plus `names` (header names from the rules).
    pub fn new<'a>(names: impl Iterator<Item = &'a str>, underscores: Underscores) -> FieldGuard {
        let mut protected: Vec<Box<str>> = ALWAYS.iter().map(|&n| n.into()).collect();
        for n in names {
            let n = n.to_ascii_lowercase();
            if !protected.iter().any(|p| **p == *n) {
                protected.push(n.into());
            }
        }
        FieldGuard {
            protected,
            underscores,
        }
    }

    /// The guard of a rule file: the header names of every access matcher
    /// and of every `hash_key: "header:NAME"`.
    pub fn of_rules(r: &RuleFile) -> FieldGuard {
        let matchers = r
            .access
            .iter()
            .flat_map(|e| e.http.iter().flatten())
            .flat_map(|m| m.headers.iter().flatten())
            .map(|(name, _)| name.as_str());
        let hashed = r
            .pools
            .values()
            .filter_map(|p| p.hash_key.as_deref()?.strip_prefix("header:"));
        FieldGuard::new(
            matchers.chain(hashed),
            r.proxy
                .as_ref()
                .and_then(|p| p.headers_with_underscores)
                .unwrap_or_default(),
        )
    }

    /// The protected names (lower-case).
    pub fn protected(&self) -> impl Iterator<Item = &str> {
        self.protected.iter().map(|p| &**p)
    }

    /// The protected field `name` reads as, in any spelling.
    fn protected_like(&self, name: &[u8]) -> Option<&str> {
        let name = std::str::from_utf8(name).ok()?;
        self.protected().find(|p| same_field(name, p))
    }

    /// Checks a request's fields before any rule sees them.
    pub fn check(&self, headers: &[httparse::Header<'_>]) -> Result<(), FieldError> {
        for token in connection_options(headers) {
            if let Some(p) = self.protected_like(token) {
                return Err(FieldError::ConnectionNames {
                    token: String::from_utf8_lossy(token).into_owned(),
                    protected: p.to_owned(),
                });
            }
        }
        for h in headers {
            let name = h.name;
            let underscore = name.contains('_');
            if underscore && self.underscores == Underscores::Reject {
                return Err(FieldError::Underscore(name.to_owned()));
            }
            if self.underscores == Underscores::Drop && underscore {
                // Removed before the rules look (validation keeps `_` out
                // of the names they consult) and never forwarded.
                continue;
            }
            if let Some(p) = self
                .protected()
                .find(|p| same_field(name, p) && !name.eq_ignore_ascii_case(p))
            {
                return Err(FieldError::Lookalike {
                    name: name.to_owned(),
                    protected: p.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Is a request field with this name removed before forwarding, under
    /// `headers_with_underscores: "drop"`?
    pub fn drops(&self, name: &str) -> bool {
        self.underscores == Underscores::Drop && name.contains('_')
    }

    /// May a request *trailer* field with this name be forwarded? Rules
    /// never see trailers, and some servers merge them into the header
    /// section, so a trailer that is protected (in any spelling),
    /// hop-by-hop or framing, or a name with `_` under "drop"/"reject",
    /// is dropped.
    pub fn trailer_allowed(&self, name: &str) -> bool {
        !(self.protected().any(|p| same_field(name, p))
            || is_hop_by_hop(name)
            || (self.underscores != Underscores::RejectLookalikes && name.contains('_')))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(name: &'a str, value: &'a str) -> httparse::Header<'a> {
        httparse::Header {
            name,
            value: value.as_bytes(),
        }
    }

    #[test]
    fn connection_may_not_name_protected_fields() {
        let g = FieldGuard::new(["X-Bar"].into_iter(), Underscores::RejectLookalikes);
        for token in [
            "Content-Length",
            "content_length",
            "Transfer-Encoding",
            "Host",
            "X-Portcullis-Source",
            "x-portcullis_source",
            "X-Bar",
            "x_bar",
        ] {
            let value = format!("keep-alive, {token}");
            let hs = [h("Host", "a"), h("Connection", &value)];
            assert!(
                matches!(g.check(&hs), Err(FieldError::ConnectionNames { .. })),
                "{token}"
            );
        }
        let hs = [h("Connection", "close, X-Other"), h("X-Other", "1")];
        assert_eq!(g.check(&hs), Ok(()));
    }

    #[test]
    fn underscore_lookalikes() {
        let g = FieldGuard::new(["X-Bar"].into_iter(), Underscores::RejectLookalikes);
        for name in [
            "X-Portcullis_Source",
            "x_portcullis_source",
            "X_Bar",
            "HOST_",
        ] {
            let hs = [h(name, "v")];
            let r = g.check(&hs);
            if name == "HOST_" {
                assert_eq!(r, Ok(()));
            } else {
                assert!(matches!(r, Err(FieldError::Lookalike { .. })), "{name}");
            }
        }
        assert_eq!(g.check(&[h("X_Other", "1"), h("X-Bar", "1")]), Ok(()));
        // A rule naming `X_Tok` makes `X-Tok` the lookalike.
        let g = FieldGuard::new(["X_Tok"].into_iter(), Underscores::RejectLookalikes);
        assert!(g.check(&[h("X-Tok", "1")]).is_err());
        assert_eq!(g.check(&[h("x_tok", "1")]), Ok(()));
    }

    #[test]
    fn drop_and_reject_modes() {
        let drop = FieldGuard::new(["X-Bar"].into_iter(), Underscores::Drop);
        assert_eq!(drop.check(&[h("X-Portcullis_Source", "app3")]), Ok(()));
        assert!(drop.drops("X-Portcullis_Source") && !drop.drops("X-Bar"));
        let reject = FieldGuard::new(std::iter::empty(), Underscores::Reject);
        assert_eq!(
            reject.check(&[h("X_Other", "1")]),
            Err(FieldError::Underscore("X_Other".into()))
        );
    }

    #[test]
    fn trailers() {
        let g = FieldGuard::new(["X-Bar"].into_iter(), Underscores::RejectLookalikes);
        for bad in [
            "x-portcullis-source",
            "X-Portcullis_Source",
            "content-length",
            "host",
            "x-bar",
            "x_bar",
            "transfer-encoding",
            "connection",
        ] {
            assert!(!g.trailer_allowed(bad), "{bad}");
        }
        assert!(g.trailer_allowed("grpc-status"));
        assert!(g.trailer_allowed("x_other"));
        let drop = FieldGuard::new(std::iter::empty(), Underscores::Drop);
        assert!(!drop.trailer_allowed("x_other"));
    }
}
