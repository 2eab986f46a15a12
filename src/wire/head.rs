//! Strict HTTP/1.1 message heads (RFC 9112), for requests from clients and
//! responses from upstreams.
//!
//! `httparse` does the tokenising; this module adds what a security
//! boundary needs on top: exactly one unambiguous body framing, CRLF-only
//! line ends, one Host, bounded sizes, and the list of hop-by-hop headers
//! to drop. Anything ambiguous is refused rather than guessed, because the
//! proxy and the upstream must never disagree about where a request ends.

use std::fmt;

/// Most header lines accepted in one head.
pub const MAX_HEADERS: usize = 100;

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Response only: the body runs until the upstream closes.
    UntilClose,
}

/// Why a head was refused. Each maps to one status in [`super::respond`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// The head is larger than the limit (→ 431).
    TooLarge,
    /// More header lines than [`MAX_HEADERS`] (→ 431).
    TooManyHeaders,
    /// Malformed or ambiguous (→ 400 for requests, 502 for responses).
    Malformed(&'static str),
    /// Well-formed but not something this proxy forwards (→ 501).
    Unsupported(&'static str),
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::TooLarge => f.write_str("header section too large"),
            HeadError::TooManyHeaders => f.write_str("too many header fields"),
            HeadError::Malformed(why) | HeadError::Unsupported(why) => f.write_str(why),
        }
    }
}

/// Finds the end of a head (the byte after `\r\n\r\n`), if complete.
/// Bare LF or bare CR line ends are refused (RFC 9112 §2.2 allows a
/// recipient to accept them; a proxy that does invites smuggling).
pub fn head_end(buf: &[u8]) -> Result<Option<usize>, HeadError> {
    let mut start = 0;
    for i in memchr::memchr2_iter(b'\r', b'\n', buf) {
        if buf[i] == b'\r' {
            match buf.get(i + 1) {
                Some(b'\n') => {}
                Some(_) => return Err(HeadError::Malformed("bare CR in header section")),
                None => return Ok(None),
            }
        } else {
            if i == 0 || buf[i - 1] != b'\r' {
                return Err(HeadError::Malformed("bare LF in header section"));
            }
            // An empty line ends the head.
            if i + 1 - start == 2 {
                return Ok(Some(i + 1));
            }
            start = i + 1;
        }
    }
    Ok(None)
}

/// Whether `method` is idempotent (RFC 9110 §9.2.2): sending it twice has
/// the effect of once. Methods are case-sensitive: `get` is not `GET`.
pub fn idempotent(method: &[u8]) -> bool {
    matches!(
        method,
        b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE" | b"PUT" | b"DELETE"
    )
}

/// Header names a proxy must not forward (RFC 9110 §7.6.1), plus our own.
pub fn is_hop_by_hop(name: &str) -> bool {
    const HOP: [&str; 8] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
    ];
    HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// Is `name` listed as a token in any `Connection` header?
pub fn named_by_connection(headers: &[httparse::Header<'_>], name: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .any(|tok| trim(tok).eq_ignore_ascii_case(name.as_bytes()))
}

/// [`trim`] for text.
pub fn trim_str(v: &str) -> &str {
    v.trim_matches([' ', '\t'])
}

/// Optional whitespace (SP, HTAB) around a field value removed.
pub fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// Body framing from Content-Length / Transfer-Encoding, strictly.
fn framing(headers: &[httparse::Header<'_>], http10: bool) -> Result<Option<Framing>, HeadError> {
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut te_seen = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            if length.is_some() {
                return Err(HeadError::Malformed("repeated Content-Length"));
            }
            let v = trim(h.value);
            if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
                return Err(HeadError::Malformed("invalid Content-Length"));
            }
            length = Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')));
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if te_seen {
                return Err(HeadError::Malformed("repeated Transfer-Encoding"));
            }
            te_seen = true;
            let last = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .map(trim)
                .unwrap_or_default();
            if !last.eq_ignore_ascii_case(b"chunked") {
                return Err(HeadError::Malformed(
                    "Transfer-Encoding whose last coding is not chunked",
                ));
            }
            if h.value.contains(&b',') {
                // `chunked` may be applied once, and only last (RFC 9112 §6.1).
                let earlier_chunked = h
                    .value
                    .rsplit(|&b| b == b',')
                    .skip(1)
                    .any(|c| trim(c).eq_ignore_ascii_case(b"chunked"));
                if earlier_chunked {
                    return Err(HeadError::Malformed("chunked applied more than once"));
                }
                return Err(HeadError::Unsupported(
                    "transfer codings other than chunked",
                ));
            }
            chunked = true;
        }
    }
    if te_seen && length.is_some() {
        return Err(HeadError::Malformed(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    if te_seen && http10 {
        return Err(HeadError::Malformed(
            "Transfer-Encoding in an HTTP/1.0 message",
        ));
    }
    Ok(if chunked {
        Some(Framing::Chunked)
    } else {
        length.map(Framing::Length)
    })
}

/// Names that some servers read as a framing header after mapping
/// `_` to `-` (CGI-style); a proxy that forwards them invites a disagreement.
fn framing_lookalike(name: &str) -> bool {
    const CRITICAL: [&str; 2] = ["content-length", "transfer-encoding"];
    name.contains('_')
        && CRITICAL.iter().any(|c| {
            c.len() == name.len()
                && c.bytes()
                    .zip(name.bytes())
                    .all(|(a, b)| a == b.to_ascii_lowercase() || (a == b'-' && b == b'_'))
        })
}

/// A Host value: `host[:port]` with a DNS-style name or an IPv4 address,
/// or `[IPv6]` with an optional port. Stricter than RFC 3986's reg-name
/// (no sub-delims, no percent-escapes): a Host that two parsers could read
/// differently is refused.
pub fn valid_host(v: &[u8]) -> bool {
    if v.is_empty() {
        return true;
    }
    let (host_ok, port) = if let Some(rest) = v.strip_prefix(b"[") {
        let Some(close) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let (inside, after) = rest.split_at(close);
        let after = &after[1..];
        let ok = !inside.is_empty()
            && inside
                .iter()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
        match after {
            [] => (ok, None),
            [b':', port @ ..] => (ok, Some(port)),
            _ => return false,
        }
    } else {
        let (name, port) = match v.iter().position(|&b| b == b':') {
            Some(i) => (&v[..i], Some(&v[i + 1..])),
            None => (v, None),
        };
        let ok = !name.is_empty()
            && name
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        (ok, port)
    };
    host_ok
        && port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.iter().all(u8::is_ascii_digit))
}

fn check_values(headers: &[httparse::Header<'_>]) -> Result<(), HeadError> {
    for h in headers {
        if framing_lookalike(h.name) {
            return Err(HeadError::Malformed(
                "header name spelled like Content-Length or Transfer-Encoding with '_'",
            ));
        }
        // httparse allows obs-text; refuse NUL and other controls except HTAB.
        if h.value
            .iter()
            .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
        {
            return Err(HeadError::Malformed("control byte in a header value"));
        }
    }
    Ok(())
}

fn map_parse_err(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        httparse::Error::HeaderName => HeadError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => HeadError::Malformed("invalid header value"),
        httparse::Error::Token => HeadError::Malformed("invalid method"),
        httparse::Error::Version => HeadError::Malformed("invalid HTTP version"),
        httparse::Error::Status => HeadError::Malformed("invalid status"),
        httparse::Error::NewLine => HeadError::Malformed("invalid line ending"),
    }
}

/// A parsed, validated request head borrowing the read buffer.
#[derive(Debug)]
pub struct RequestHead<'b, 'h> {
    pub method: &'b str,
    /// The request target as sent.
    pub target: &'b str,
    pub http10: bool,
    pub headers: &'h [httparse::Header<'b>],
    pub framing: Framing,
    /// The client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// A CONNECT or a WebSocket upgrade: tunnelled if the rules allow it.
    pub tunnel: Option<Tunnel>,
}

/// A request that asks to turn the connection into a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tunnel {
    /// `CONNECT host:port`: the upstream is asked to open a tunnel.
    Connect,
    /// `Upgrade: websocket` (other upgrades, such as `h2c`, are ignored:
    /// the Upgrade header is hop-by-hop and is not forwarded).
    WebSocket,
}

/// Parses a complete request head (`buf` ends at the blank line).
pub fn parse_request<'b, 'h>(
    buf: &'b [u8],
    storage: &'h mut [httparse::Header<'b>],
) -> Result<RequestHead<'b, 'h>, HeadError> {
    let mut req = httparse::Request::new(storage);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(HeadError::Malformed("incomplete request head"))
        }
        Err(e) => return Err(map_parse_err(e)),
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed("incomplete request line"));
    };
    let headers: &'h [httparse::Header<'b>] = req.headers;
    check_values(headers)?;
    let http10 = version == 0;
    let hosts = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .count();
    if hosts > 1 {
        return Err(HeadError::Malformed("more than one Host header"));
    }
    if hosts == 0 && !http10 {
        return Err(HeadError::Malformed("missing Host header"));
    }
    if headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("host") && !valid_host(trim(h.value)))
    {
        return Err(HeadError::Malformed("invalid Host header"));
    }
    if target.is_empty() || target.bytes().any(|b| b <= 0x20 || b >= 0x7f || b == b'#') {
        return Err(HeadError::Malformed("invalid request target"));
    }
    let framing = framing(headers, http10)?.unwrap_or(Framing::None);
    let close = named_by_connection(headers, "close");
    let keep_alive = if http10 {
        named_by_connection(headers, "keep-alive") && !close
    } else {
        !close
    };
    let expect_continue = headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("expect") && trim(h.value).eq_ignore_ascii_case(b"100-continue")
    });
    let websocket = named_by_connection(headers, "upgrade")
        && headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("upgrade")
                && h.value
                    .split(|&b| b == b',')
                    .any(|t| trim(t).eq_ignore_ascii_case(b"websocket"))
        });
    let tunnel = if method == "CONNECT" {
        Some(Tunnel::Connect)
    } else if websocket && method == "GET" && !http10 {
        Some(Tunnel::WebSocket)
    } else {
        None
    };
    Ok(RequestHead {
        method,
        target,
        http10,
        headers,
        framing,
        keep_alive,
        expect_continue,
        tunnel,
    })
}

/// The checks of [`parse_request`] that still apply to an HTTP/2 request
/// (whose framing and line syntax `h2` already enforced): an origin-form
/// target without stray bytes, no control bytes in values, one valid Host.
pub fn check_h2_request(target: &str, headers: &[httparse::Header<'_>]) -> Result<(), HeadError> {
    if !target.starts_with('/') || target.bytes().any(|b| b <= 0x20 || b >= 0x7f || b == b'#') {
        return Err(HeadError::Malformed("invalid request target"));
    }
    check_values(headers)?;
    let mut hosts = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"));
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => Err(HeadError::Malformed("more than one Host header")),
        (Some(h), None) if !valid_host(trim(h.value)) => {
            Err(HeadError::Malformed("invalid Host header"))
        }
        _ => Ok(()),
    }
}

/// The path and query of a request target, accepting origin form and
/// absolute form (`http://host/path`, whose host must agree with `Host`).
pub fn origin_form<'a>(
    target: &'a str,
    headers: &[httparse::Header<'_>],
) -> Result<&'a str, HeadError> {
    if target.starts_with('/') {
        return Ok(target);
    }
    let rest = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("HTTP://"))
        .ok_or(HeadError::Malformed(
            "request target is not in origin or absolute form",
        ))?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(HeadError::Malformed("invalid authority in request target"));
    }
    let host = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .map(|h| trim(h.value));
    if host.is_some_and(|h| !h.eq_ignore_ascii_case(authority.as_bytes())) {
        return Err(HeadError::Malformed(
            "absolute-form target and Host disagree",
        ));
    }
    if path.starts_with('?') {
        return Err(HeadError::Malformed(
            "request target has a query but no path",
        ));
    }
    Ok(path)
}

/// A parsed, validated response head.
#[derive(Debug)]
pub struct ResponseHead<'b, 'h> {
    pub code: u16,
    pub reason: &'b str,
    pub headers: &'h [httparse::Header<'b>],
    pub framing: Framing,
    /// The upstream will close after this response.
    pub close: bool,
}

/// Parses a complete response head; `head_request` and the status decide
/// whether a body follows.
pub fn parse_response<'b, 'h>(
    buf: &'b [u8],
    storage: &'h mut [httparse::Header<'b>],
    head_request: bool,
) -> Result<ResponseHead<'b, 'h>, HeadError> {
    let mut res = httparse::Response::new(storage);
    match res.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(HeadError::Malformed("incomplete response head"))
        }
        Err(e) => return Err(map_parse_err(e)),
    }
    let (Some(code), Some(version)) = (res.code, res.version) else {
        return Err(HeadError::Malformed("incomplete status line"));
    };
    let reason = res.reason.unwrap_or("");
    let headers: &'h [httparse::Header<'b>] = res.headers;
    check_values(headers)?;
    let http10 = version == 0;
    let declared = framing(headers, http10)?;
    let bodyless = head_request || (100..200).contains(&code) || code == 204 || code == 304;
    let framing = match (bodyless, declared) {
        (true, _) => Framing::None,
        (false, Some(f)) => f,
        (false, None) => Framing::UntilClose,
    };
    let close = named_by_connection(headers, "close")
        || (http10 && !named_by_connection(headers, "keep-alive"))
        || framing == Framing::UntilClose;
    Ok(ResponseHead {
        code,
        reason,
        headers,
        framing,
        close,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(raw: &str) -> Result<(Framing, bool), HeadError> {
        let mut st = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let b = raw.as_bytes();
        let end = head_end(b)?.ok_or(HeadError::Malformed("incomplete"))?;
        parse_request(&b[..end], &mut st).map(|h| (h.framing, h.keep_alive))
    }

    #[test]
    fn accepts_plain_requests() {
        assert_eq!(
            req("GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok((Framing::None, true))
        );
        assert_eq!(
            req("PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"),
            Ok((Framing::Length(5), true))
        );
        assert_eq!(req("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"), Ok((Framing::Chunked, false)));
        assert_eq!(req("GET / HTTP/1.0\r\n\r\n"), Ok((Framing::None, false)));
    }

    #[test]
    fn refuses_ambiguous_framing() {
        let bad = [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 33, 33\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ];
        for raw in bad {
            assert!(req(raw).is_err(), "{raw:?} must be refused");
        }
    }

    #[test]
    fn host_values() {
        for ok in [
            &b""[..],
            b"app1",
            b"app1:80",
            b"198.19.0.2:8080",
            b"[::1]",
            b"[fd00::2]:80",
            b"a-b.c_d~e",
        ] {
            assert!(valid_host(ok), "{:?}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b"a b"[..],
            b"a,b",
            b"u@a",
            b"a/b",
            b"a:",
            b"a:123456",
            b"a:8x",
            b":80",
            b"[::1",
            b"[::1]x",
            b"[]",
            b"[::g]",
            b"a%41",
        ] {
            assert!(!valid_host(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn underscore_spellings_of_framing_headers() {
        assert!(framing_lookalike("Content_Length"));
        assert!(framing_lookalike("transfer_encoding"));
        assert!(framing_lookalike("TRANSFER_ENCODING"));
        assert!(!framing_lookalike("Content-Length"));
        assert!(!framing_lookalike("X_Custom"));
        assert!(!framing_lookalike("content_lengths"));
    }

    #[test]
    fn tunnels_are_recognised() {
        let tunnel = |raw: &str| {
            let mut st = [httparse::EMPTY_HEADER; MAX_HEADERS];
            parse_request(raw.as_bytes(), &mut st).map(|h| h.tunnel)
        };
        assert_eq!(
            tunnel("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n"),
            Ok(Some(Tunnel::WebSocket))
        );
        assert_eq!(
            tunnel("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"),
            Ok(Some(Tunnel::Connect))
        );
        // Upgrade not named by Connection, h2c, or not a GET: no tunnel.
        for raw in [
            "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
            "POST /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        ] {
            assert_eq!(tunnel(raw), Ok(None), "{raw}");
        }
    }

    #[test]
    fn absolute_form_must_agree_with_host() {
        let h = [httparse::Header {
            name: "Host",
            value: b"app1",
        }];
        assert_eq!(origin_form("http://app1/foo?x", &h), Ok("/foo?x"));
        assert_eq!(origin_form("http://app1", &h), Ok("/"));
        assert!(origin_form("http://evil/foo", &h).is_err());
        assert!(origin_form("*", &h).is_err());
    }

    #[test]
    fn response_framing() {
        let mut st = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
            &mut st,
            false,
        )
        .unwrap();
        assert_eq!((r.framing, r.close), (Framing::Length(3), false));
        let mut st = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
            &mut st,
            true,
        )
        .unwrap();
        assert_eq!(r.framing, Framing::None);
        let mut st = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let r = parse_response(b"HTTP/1.1 200 OK\r\n\r\n", &mut st, false).unwrap();
        assert_eq!((r.framing, r.close), (Framing::UntilClose, true));
        let mut st = [httparse::EMPTY_HEADER; MAX_HEADERS];
        assert!(parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            &mut st,
            false
        )
        .is_err());
    }
}
