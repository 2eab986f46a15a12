//! The HTTP/1.1 head sent upstream, written from the parsed and checked
//! request (shared by access flows and frontends; HTTP/2 streams decided by
//! either read their target from it).
//!
//! Nothing about the message's framing is copied from the client: the
//! proxy states `Content-Length` or `Transfer-Encoding: chunked` from its
//! own framing decision, the one it also uses to stream the body, so the
//! upstream and the proxy cannot disagree on where the request ends. The
//! other fields are the client's, minus hop-by-hop ones (RFC 9110 §7.6.1:
//! the fixed list and whatever `Connection` names — which, by the time the
//! head is written, cannot be a field the proxy or a rule relies on, see
//! [`crate::policy::fields`]), any spelling of `X-Portcullis-Source`, and
//! names `proxy.headers_with_underscores: "drop"` removes. So every field a
//! rule checked reaches the upstream as it was checked.

use crate::policy::fields::{same_field, FieldGuard};
use crate::wire::head::{self, Framing, RequestHead};

/// The source header the proxy sets on access flows.
pub const SOURCE_HEADER: &str = "x-portcullis-source";

/// `METHOD SP target SP HTTP/1.1 CRLF`, the target being `path[?query]`.
pub fn request_line(out: &mut Vec<u8>, method: &str, path: &str, query: Option<&str>) {
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    if let Some(q) = query {
        out.push(b'?');
        out.extend_from_slice(q.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
}

/// The method and path (query left out) of a head [`request_line`] wrote,
/// for log lines about the request after it was decided: what the upstream
/// was sent, without keeping a copy of it per request.
pub fn method_and_path(out: &[u8]) -> (&str, &str) {
    let line = out.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.splitn(3, |&b| b == b' ');
    let mut text = || std::str::from_utf8(parts.next().unwrap_or_default()).unwrap_or("-");
    let method = text();
    let target = text();
    (method, target.split('?').next().unwrap_or(target))
}

/// Is this client field left out of the upstream head? `extra` names the
/// fields the caller restates itself (frontends: the forwarding fields).
pub fn withheld(req: &RequestHead<'_, '_>, guard: &FieldGuard, name: &str) -> bool {
    head::is_hop_by_hop(name)
        || name.eq_ignore_ascii_case("content-length")
        || same_field(name, SOURCE_HEADER)
        || (req.expect_continue && name.eq_ignore_ascii_case("expect"))
        || guard.drops(name)
        || head::named_by_connection(req.headers, name)
}

/// Copies the client's end-to-end fields (see [`withheld`]), except those
/// `skip` takes over; returns whether a `Host` was among them.
pub fn copy_fields(
    out: &mut Vec<u8>,
    req: &RequestHead<'_, '_>,
    guard: &FieldGuard,
    skip: impl Fn(&str) -> bool,
) -> bool {
    let mut has_host = false;
    for h in req.headers {
        if withheld(req, guard, h.name) || skip(h.name) {
            continue;
        }
        has_host |= h.name.eq_ignore_ascii_case("host");
        field(out, h.name.as_bytes(), h.value);
    }
    has_host
}

/// The framing fields, from the proxy's own decision.
pub fn framing_fields(out: &mut Vec<u8>, framing: Framing) {
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa(n, &mut [0u8; 20]));
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::UntilClose => {}
    }
}

/// One `name: value` line.
pub fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Decimal digits of `n` without allocating.
/// Appends `ip` as text: an IPv4 address digit by digit (`Ipv4Addr`'s
/// `Display` goes through the formatter machinery for every octet, about
/// a thousand instructions per address, twice per routed request), IPv6
/// through `Display`.
pub fn push_ip(out: &mut Vec<u8>, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(a) => {
            for (i, octet) in a.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(itoa(u64::from(octet), &mut [0; 20]));
            }
        }
        std::net::IpAddr::V6(a) => {
            use std::io::Write as _;
            let _ = write!(out, "{a}");
        }
    }
}

fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::fields::Underscores;

    #[test]
    fn the_written_request_line_reads_back_without_its_query() {
        let mut out = Vec::new();
        request_line(&mut out, "GET", "/a/b", Some("token=secret"));
        out.extend_from_slice(b"host: x\r\n\r\n");
        assert_eq!(method_and_path(&out), ("GET", "/a/b"));
        request_line(&mut out, "DELETE", "/", None);
        assert_eq!(method_and_path(&out), ("DELETE", "/"));
        assert_eq!(method_and_path(b""), ("", ""));
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "198.19.0.2",
            "255.255.255.255",
            "10.200.3.40",
            "fd00::2",
            "::ffff:1.2.3.4",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let mut out = b"x=".to_vec();
            push_ip(&mut out, ip);
            assert_eq!(out, format!("x={ip}").into_bytes());
        }
    }

    #[test]
    fn digits() {
        for n in [0u64, 7, 10, 1024, u64::MAX] {
            assert_eq!(itoa(n, &mut [0; 20]), n.to_string().as_bytes());
        }
    }

    #[test]
    fn framing_is_restated_and_hop_by_hop_fields_dropped() {
        let raw = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\nX-Keep: 2\r\nX-Portcullis-Source: evil\r\nKeep-Alive: 5\r\n\r\n";
        let mut st = [httparse::EMPTY_HEADER; head::MAX_HEADERS];
        let req = head::parse_request(raw, &mut st).unwrap();
        let guard = FieldGuard::new(std::iter::empty(), Underscores::RejectLookalikes);
        let mut out = Vec::new();
        request_line(&mut out, req.method, "/x", None);
        assert!(copy_fields(&mut out, &req, &guard, |_| false));
        framing_fields(&mut out, req.framing);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /x HTTP/1.1\r\nHost: a\r\nX-Keep: 2\r\ncontent-length: 5\r\n"
        );
    }
}
