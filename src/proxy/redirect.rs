//! The plain-HTTP listener of a TLS frontend (`tls.redirect_http`): every
//! request is answered `308 Permanent Redirect` to the same host and
//! target over HTTPS, and the connection closes. Nothing is routed or
//! forwarded here, so nothing reaches a member over plain HTTP.
//!
//! The head is read and parsed as strictly as on any frontend (the
//! frontend's limits: `header_timeout_ms`, `max_header_bytes`), and the
//! host must be a valid one: a request that is malformed, has no usable
//! `Host` or a target that is not a path gets `400`, so no client text
//! other than a checked host and path ever lands in `Location`.

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tracing::debug;

use super::body::{HeadWait, Inbound};
use super::client_io::{ClientIo, ConnLimits};
use super::connection::close_lingering;
use super::respond;
use crate::policy::routes::route_host;
use crate::wire::head::{self, MAX_HEADERS};

/// Serves one connection of a redirect listener: one request, one answer.
pub async fn serve(io: ClientIo, peer: SocketAddr, https_port: u16, lim: ConnLimits) {
    let mut inbound = Inbound::new(io);
    let answer = match inbound
        .next_head(lim.idle_timeout, lim.header_timeout, lim.max_header_bytes)
        .await
    {
        Ok(HeadWait::Head(n)) => {
            let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match head::parse_request(&inbound.buf[..n], &mut storage) {
                Ok(req) => match location(&req, https_port) {
                    Ok(to) => redirect(&to),
                    Err(why) => respond::simple(400, why, true),
                },
                Err(e) => respond::simple(respond::request_head_status(&e), &e.to_string(), true),
            }
        }
        Ok(HeadWait::HeaderTimeout) => respond::simple(408, "no request head in time", true),
        Ok(HeadWait::Bad(e)) => {
            respond::simple(respond::request_head_status(&e), &e.to_string(), true)
        }
        Ok(HeadWait::Closed | HeadWait::Idle) | Err(_) => return,
    };
    if let Err(e) = inbound.io.write_all(&answer).await {
        debug!(peer = %peer, error = %e, "redirect not delivered");
        return;
    }
    close_lingering(&mut inbound).await;
}

/// `https://HOST[:PORT]PATH?QUERY` for a request, from its checked host
/// (`Host`, or the absolute-form authority) and origin-form target.
fn location(req: &head::RequestHead<'_, '_>, https_port: u16) -> Result<String, &'static str> {
    // Absolute form: the path after the authority, which must name the
    // same host as `Host` (as on frontends).
    let (authority, target) = match req.target.strip_prefix("http://") {
        Some(rest) => match rest.find('/') {
            Some(i) => (Some(&rest[..i]), &rest[i..]),
            None => (Some(rest), "/"),
        },
        None => (None, req.target),
    };
    if !target.starts_with('/') || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err("a redirect needs a path (origin-form target)");
    }
    let mut hosts = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"));
    let raw = match (hosts.next(), hosts.next()) {
        (Some(h), None) => head::trim(h.value),
        _ => return Err("a redirect needs exactly one Host"),
    };
    let host = route_host(raw).map_err(|_| "a redirect needs a valid Host")?;
    if host.is_empty() {
        return Err("a redirect needs a valid Host");
    }
    if let Some(a) = authority {
        if route_host(a.as_bytes()).ok().as_deref() != Some(&*host) {
            return Err("the request target's authority and Host disagree");
        }
    }
    Ok(match https_port {
        443 => format!("https://{host}{target}"),
        port => format!("https://{host}:{port}{target}"),
    })
}

fn redirect(to: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 308 Permanent Redirect\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use crate::wire::head::{self, MAX_HEADERS};

    fn location(raw: &str, port: u16) -> Result<String, &'static str> {
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        // A head the parser refuses never gets a Location either.
        let req = head::parse_request(raw.as_bytes(), &mut storage)
            .map_err(|_| "refused by the parser")?;
        super::location(&req, port)
    }

    #[test]
    fn same_host_and_target_over_https() {
        let get = |host: &str, target: &str, port| {
            location(
                &format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n"),
                port,
            )
        };
        assert_eq!(
            get("Shop.Example:80", "/a/b?c=1", 443),
            Ok("https://shop.example/a/b?c=1".into())
        );
        assert_eq!(
            get("shop.example", "/", 8443),
            Ok("https://shop.example:8443/".into())
        );
        assert_eq!(
            get("shop.example", "http://shop.example/x?y", 443),
            Ok("https://shop.example/x?y".into())
        );
        assert!(get("shop.example", "*", 443).is_err());
        assert!(get("shop.example", "http://evil.example/x", 443).is_err());
        assert!(get("bad host", "/", 443).is_err());
        assert!(get("a@evil.example", "/", 443).is_err());
        assert!(location("GET / HTTP/1.1\r\n\r\n", 443).is_err());
    }
}
