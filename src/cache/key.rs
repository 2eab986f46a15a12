//! The cache's view of a request, read back from the head the proxy is
//! about to send upstream.
//!
//! Every entry path (access flows, frontends) has already parsed,
//! authorised and normalised the request and written the upstream head;
//! re-reading that head here means the cache needs nothing from the entry
//! path but the bytes it forwards, and keys on exactly what the upstream
//! would see (the normalised path, the query as sent).
//!
//! Key = method class + authority + normalised path + query + calling
//! container (see [`Primary`]); a response's `Vary` adds the values of the
//! named request fields as a second part, so each variant is stored apart.

use std::fmt;
use std::ops::Range;

use super::freshness::{CacheControl, RequestFacts};
use crate::wire::head::{self, MAX_HEADERS};

/// How the cache treats a request's method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodClass {
    /// GET, or HEAD answered from the GET entry.
    Read { head: bool },
    /// POST, PUT, DELETE, PATCH and anything else not known to be safe:
    /// forwarded, then the stored responses of its URL are invalidated.
    Unsafe,
    /// OPTIONS, TRACE: forwarded untouched.
    Other,
}

impl MethodClass {
    /// The class of a request method (every entry path asks this).
    pub fn of(method: &str) -> MethodClass {
        match method {
            "GET" => MethodClass::Read { head: false },
            "HEAD" => MethodClass::Read { head: true },
            "OPTIONS" | "TRACE" => MethodClass::Other,
            _ => MethodClass::Unsafe,
        }
    }
}

/// The primary key of a stored response: one URL of one service, as
/// answered to one caller.
///
/// The caller is the `X-Portcullis-Source` the proxy set (never the
/// client's own: entry paths strip that). Services are told they can trust
/// that field, so one may answer each container differently; keying on it
/// means the cache never hands one container's answer to another.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Primary {
    /// Lower-cased `Host` value (the request's authority).
    pub authority: String,
    /// Normalised path plus `?query` when there is one.
    pub target: String,
    /// The proxy-set `X-Portcullis-Source`, empty when there is none.
    pub source: String,
}

impl fmt::Display for Primary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GET {}{}", self.authority, self.target)?;
        if !self.source.is_empty() {
            write!(f, " (for {})", self.source)?;
        }
        Ok(())
    }
}

/// Full key of one stored variant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub primary: Primary,
    /// The values of the request fields the response's `Vary` names,
    /// empty when it has none.
    pub variant: String,
}

/// One request header (name as sent, raw value).
pub type Field = (String, Vec<u8>);

/// What the cache needs of one request.
#[derive(Debug, Clone)]
pub struct CacheRequest {
    pub class: MethodClass,
    pub primary: Primary,
    pub facts: RequestFacts,
    /// Has a body, or asks for a range: never answered from or stored in
    /// the cache.
    pub bypass: bool,
    /// The upstream head the request was read from, and where each
    /// field's name and value are in it: one copy of the head instead of
    /// a `String` and a `Vec` per field (a cache hit allocated about two
    /// dozen times, most of them here).
    head: Box<[u8]>,
    fields: Vec<(Range<usize>, Range<usize>)>,
}

impl CacheRequest {
    /// Reads an upstream request head (as written by an entry path).
    /// `None` if it cannot be parsed; the caller then refuses the request
    /// (fails closed), because the cache cannot tell whether it would have
    /// to invalidate or bypass.
    ///
    /// Room is made for every line of the head: the head the proxy writes
    /// has the client's fields (up to [`MAX_HEADERS`]) plus the ones the
    /// proxy adds, so a fixed array of `MAX_HEADERS` once let a request
    /// with many fields skip the cache's invalidation.
    pub fn parse(out_head: &[u8]) -> Option<CacheRequest> {
        let lines = out_head.iter().filter(|&&b| b == b'\n').count();
        let mut on_stack = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut on_heap = Vec::new();
        let storage: &mut [httparse::Header<'_>] = if lines <= MAX_HEADERS {
            &mut on_stack
        } else {
            on_heap.resize(lines, httparse::EMPTY_HEADER);
            &mut on_heap
        };
        let mut req = httparse::Request::new(storage);
        match req.parse(out_head) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return None,
        }
        let method = req.method?;
        let target = req.path?;
        let class = MethodClass::of(method);
        // Each field as its place in `out_head` (httparse's slices point
        // into it).
        let base = out_head.as_ptr() as usize;
        let place = |b: &[u8]| {
            let start = (b.as_ptr() as usize).saturating_sub(base);
            start..start + b.len()
        };
        let places = req
            .headers
            .iter()
            .map(|h| (place(h.name.as_bytes()), place(h.value)))
            .collect();
        let fields: &[httparse::Header<'_>] = req.headers;
        fn pick<'h, 'b>(
            fields: &'h [httparse::Header<'b>],
            name: &'static str,
        ) -> impl Iterator<Item = &'b [u8]> + 'h {
            fields
                .iter()
                .filter(move |h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        }
        let values = |name: &'static str| pick(fields, name);
        let authority = values("host")
            .next()
            .map(|v| String::from_utf8_lossy(head::trim(v)).to_ascii_lowercase())
            .unwrap_or_default();
        let has_cc = values("cache-control").next().is_some();
        let facts = RequestFacts {
            get: class == MethodClass::Read { head: false },
            cc: CacheControl::parse(values("cache-control")),
            pragma_no_cache: !has_cc
                && values("pragma").any(|v| {
                    v.split(|&b| b == b',')
                        .any(|t| head::trim(t).eq_ignore_ascii_case(b"no-cache"))
                }),
            authorization: values("authorization").next().is_some(),
        };
        let bypass = values("content-length").any(|v| head::trim(v) != b"0")
            || values("transfer-encoding").next().is_some()
            || values("range").next().is_some();
        let source = values("x-portcullis-source")
            .next()
            .map(|v| String::from_utf8_lossy(head::trim(v)).into_owned())
            .unwrap_or_default();
        Some(CacheRequest {
            class,
            primary: Primary {
                authority,
                target: target.to_owned(),
                source,
            },
            facts,
            bypass,
            head: out_head.into(),
            fields: places,
        })
    }

    /// Values of one request field, in order.
    pub fn field<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields.iter().filter_map(move |(n, v)| {
            let field = self.head.get(n.clone())?;
            field
                .eq_ignore_ascii_case(name.as_bytes())
                .then(|| self.head.get(v.clone()))
                .flatten()
        })
    }

    /// The variant part of the key for the fields a `Vary` names: each
    /// field's values joined by `,` with whitespace trimmed; an absent
    /// field differs from an empty one.
    pub fn variant(&self, vary: &[String]) -> String {
        let mut out = String::new();
        for name in vary {
            out.push_str(name);
            let mut present = false;
            for v in self.field(name) {
                out.push(if present { ',' } else { '=' });
                present = true;
                out.push_str(&String::from_utf8_lossy(head::trim(v)));
            }
            if !present {
                out.push('\u{0}');
            }
            out.push('\n');
        }
        out
    }

    /// The head to send upstream when the cache fetches for storage:
    /// the client's own conditionals removed (a full response can serve
    /// every waiting client; the client's conditional is answered from the
    /// stored entry), plus the cache's validators when revalidating.
    pub fn fetch_head(
        out_head: &[u8],
        etag: Option<&[u8]>,
        last_modified: Option<&[u8]>,
    ) -> Vec<u8> {
        const CONDITIONALS: [&[u8]; 4] = [
            b"if-none-match",
            b"if-modified-since",
            b"if-match",
            b"if-unmodified-since",
        ];
        let mut out = Vec::with_capacity(out_head.len() + 64);
        let body = out_head.strip_suffix(b"\r\n\r\n").unwrap_or(out_head);
        for (i, line) in body.split(|&b| b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if i > 0 {
                let name = line.split(|&b| b == b':').next().unwrap_or_default();
                if CONDITIONALS
                    .iter()
                    .any(|c| head::trim(name).eq_ignore_ascii_case(c))
                {
                    continue;
                }
            }
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
        if let Some(e) = etag {
            out.extend_from_slice(b"if-none-match: ");
            out.extend_from_slice(e);
            out.extend_from_slice(b"\r\n");
        }
        if let Some(lm) = last_modified {
            out.extend_from_slice(b"if-modified-since: ");
            out.extend_from_slice(lm);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &[u8] = b"GET /foo/x?y=1 HTTP/1.1\r\nHost: App1\r\nAccept: text/html\r\nIf-None-Match: \"old\"\r\nCache-Control: max-age=5\r\nx-portcullis-source: app2\r\n\r\n";

    #[test]
    fn key_from_the_upstream_head() {
        let r = CacheRequest::parse(HEAD).unwrap();
        assert_eq!(r.class, MethodClass::Read { head: false });
        assert_eq!(r.primary.to_string(), "GET app1/foo/x?y=1 (for app2)");
        assert_eq!(r.facts.cc.max_age, Some(5));
        assert!(!r.bypass && !r.facts.authorization);
        assert_eq!(
            r.variant(&["accept".into(), "accept-language".into()]),
            "accept=text/html\naccept-language\u{0}\n"
        );
        let put = CacheRequest::parse(b"PUT /bar HTTP/1.1\r\nHost: a\r\ncontent-length: 3\r\n\r\n")
            .unwrap();
        assert_eq!(put.class, MethodClass::Unsafe);
        assert!(put.bypass);
        let range =
            CacheRequest::parse(b"GET / HTTP/1.1\r\nHost: a\r\nRange: bytes=0-1\r\n\r\n").unwrap();
        assert!(range.bypass);
        let pragma =
            CacheRequest::parse(b"GET / HTTP/1.1\r\nHost: a\r\nPragma: no-cache\r\n\r\n").unwrap();
        assert!(pragma.facts.pragma_no_cache);
        assert!(CacheRequest::parse(b"GET / HTTP/1.1\r\nHost: a\r\n").is_none());
    }

    #[test]
    fn a_head_with_more_fields_than_a_client_may_send_is_still_read() {
        let mut raw = String::from("POST /x HTTP/1.1\r\nHost: a\r\n");
        for i in 0..MAX_HEADERS + 10 {
            raw.push_str(&format!("x-f{i}: {i}\r\n"));
        }
        raw.push_str("x-portcullis-source: app2\r\ncontent-length: 0\r\n\r\n");
        let r = CacheRequest::parse(raw.as_bytes()).expect("every field has room");
        assert_eq!(r.class, MethodClass::Unsafe);
        assert_eq!(r.primary.to_string(), "GET a/x (for app2)");
    }

    #[test]
    fn fetch_head_replaces_conditionals() {
        let h = CacheRequest::fetch_head(HEAD, Some(b"\"v2\""), None);
        let s = String::from_utf8(h).unwrap();
        assert!(s.starts_with("GET /foo/x?y=1 HTTP/1.1\r\nHost: App1\r\n"));
        assert!(!s.contains("\"old\""));
        assert!(s.ends_with("x-portcullis-source: app2\r\nif-none-match: \"v2\"\r\n\r\n"));
    }
}
