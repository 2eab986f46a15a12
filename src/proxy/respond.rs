//! Every response the proxy writes itself (denials, malformed requests,
//! upstream failures) is built here, so statuses and bodies are uniform:
//! one line of plain text saying who refused and why.

use crate::wire::head::HeadError;

/// Reason phrase for the statuses the proxy produces.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// The one-line body of every self-made response.
pub fn body_text(reason: &str) -> String {
    let line: String = reason.chars().filter(|c| !c.is_control()).collect();
    format!("portcullis: {line}\n")
}

/// A complete response with a one-line `text/plain` body.
pub fn simple(code: u16, reason: &str, close: bool) -> Vec<u8> {
    let body = body_text(reason);
    format!(
        "HTTP/1.1 {code} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\ncache-control: no-store\r\n{}\r\n{body}",
        reason_phrase(code),
        body.len(),
        if close { "connection: close\r\n" } else { "" },
    )
    .into_bytes()
}

/// A response the proxy makes itself on an HTTP/2 stream.
pub fn h2_refuse(respond: &mut h2::server::SendResponse<bytes::Bytes>, code: u16, reason: &str) {
    use http::{HeaderValue, Response, StatusCode};
    let body = body_text(reason);
    let mut res = Response::new(());
    *res.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    let h = res.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    if let Ok(mut s) = respond.send_response(res, false) {
        let _ = s.send_data(bytes::Bytes::from(body), true);
    }
}

/// The status for a request head that was refused.
pub fn request_head_status(e: &HeadError) -> u16 {
    match e {
        HeadError::TooLarge | HeadError::TooManyHeaders => 431,
        HeadError::Malformed(_) => 400,
        HeadError::Unsupported(_) => 501,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_line_body_with_length() {
        let r = String::from_utf8(super::simple(403, "denied by\nrule", true)).unwrap();
        assert!(r.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(r.ends_with("\r\n\r\nportcullis: denied byrule\n"));
        assert!(r.contains("content-length: 26\r\n"));
        assert!(r.contains("connection: close\r\n"));
    }
}
