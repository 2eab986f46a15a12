//! Compiled HTTP request matchers: one per `http` item of an access entry.
//!
//! Built once when rules load; matching borrows the parsed request
//! (`httparse` headers) and allocates nothing.

use crate::rules::model::{HeaderCond, HttpMatcher};
use crate::rules::RuleRef;
use regex::bytes::Regex as BytesRegex;
use regex::Regex;

use crate::wire::normalize::has_path_prefix;

/// The parts of a request the access rules look at. `path` is already
/// normalised (see [`super::normalize`]); query excluded.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a [httparse::Header<'a>],
}

#[derive(Debug)]
enum Cond {
    Exact(Vec<u8>),
    Present,
    Absent,
    Prefix(Vec<u8>),
    Suffix(Vec<u8>),
    Regex(BytesRegex),
}

/// Why one matcher did not match (for explanations; built only on denial).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    Method,
    Path,
    Header(String),
}

#[derive(Debug)]
pub struct Matcher {
    pub rule: RuleRef,
    methods: Option<Vec<String>>,
    prefix: Option<String>,
    exact: Option<String>,
    regex: Option<Regex>,
    headers: Vec<(String, Cond)>,
}

fn anchored(re: &str) -> String {
    format!("^(?:{re})$")
}

impl Matcher {
    /// Compiles a validated matcher. Regexes were checked by validation,
    /// but an error is still reported rather than assumed away.
    pub fn compile(rule: RuleRef, m: &HttpMatcher) -> Result<Matcher, regex::Error> {
        let regex = m
            .path_regex
            .as_deref()
            .map(|r| Regex::new(&anchored(r)))
            .transpose()?;
        let mut headers = Vec::new();
        for (name, c) in m.headers.iter().flatten() {
            let cond = match c {
                HeaderCond::Exact(v) => Cond::Exact(v.as_bytes().to_vec()),
                HeaderCond::Present => Cond::Present,
                HeaderCond::Absent => Cond::Absent,
                HeaderCond::Prefix(v) => Cond::Prefix(v.as_bytes().to_vec()),
                HeaderCond::Suffix(v) => Cond::Suffix(v.as_bytes().to_vec()),
                HeaderCond::Regex(r) => Cond::Regex(BytesRegex::new(&anchored(r))?),
            };
            headers.push((name.to_ascii_lowercase(), cond));
        }
        Ok(Matcher {
            rule,
            methods: m.methods.clone(),
            prefix: m.path_prefix.clone(),
            exact: m.path.clone(),
            regex,
            headers,
        })
    }

    /// Does this matcher allow the request? The first failed condition is
    /// returned so a denial can say why.
    pub fn check(&self, req: &RequestView<'_>) -> Result<(), Miss> {
        match &self.methods {
            Some(ms) if !ms.iter().any(|m| m == req.method) => return Err(Miss::Method),
            // CONNECT opens a tunnel the proxy cannot look into: only a
            // matcher that names it allows it, never one that omits
            // `methods`. Here, so the proxy, `explain` and the demo agree.
            None if req.method == "CONNECT" => return Err(Miss::Method),
            _ => {}
        }
        if let Some(p) = &self.prefix {
            if !has_path_prefix(req.path, p) {
                return Err(Miss::Path);
            }
        }
        if let Some(p) = &self.exact {
            if req.path != p {
                return Err(Miss::Path);
            }
        }
        if let Some(re) = &self.regex {
            if !re.is_match(req.path) {
                return Err(Miss::Path);
            }
        }
        for (name, cond) in &self.headers {
            if !header_holds(req.headers, name, cond) {
                return Err(Miss::Header(name.clone()));
            }
        }
        Ok(())
    }

    /// A short description for explanations, e.g. `GET /foo*`.
    pub fn describe(&self) -> String {
        let mut s = match &self.methods {
            Some(m) => m.join("|"),
            None => "any method".to_owned(),
        };
        if let Some(p) = &self.prefix {
            s.push_str(&format!(" {p}*"));
        }
        if let Some(p) = &self.exact {
            s.push_str(&format!(" ={p}"));
        }
        if let Some(r) = &self.regex {
            s.push_str(&format!(" ~{}", r.as_str()));
        }
        for (n, _) in &self.headers {
            s.push_str(&format!(" [{n}]"));
        }
        s
    }
}

fn header_holds(headers: &[httparse::Header<'_>], name: &str, cond: &Cond) -> bool {
    let mut found: Option<&[u8]> = None;
    let mut count = 0usize;
    for h in headers {
        if h.name.eq_ignore_ascii_case(name) {
            count += 1;
            found = Some(h.value);
        }
    }
    match cond {
        Cond::Present => count > 0,
        Cond::Absent => count == 0,
        // A header sent more than once never matches on value.
        _ if count != 1 => false,
        Cond::Exact(v) => found == Some(v.as_slice()),
        Cond::Prefix(v) => found.is_some_and(|f| f.starts_with(v)),
        Cond::Suffix(v) => found.is_some_and(|f| f.ends_with(v)),
        Cond::Regex(re) => found.is_some_and(|f| re.is_match(f)),
    }
}
