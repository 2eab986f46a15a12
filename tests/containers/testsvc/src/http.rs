//! HTTP/1.x wire handling shared by the server and the probe: a buffered
//! reader with an optional deadline, message heads, body framing.

use std::io::{self, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Largest message head (start line + headers) accepted.
pub const MAX_HEAD: usize = 64 * 1024;
const MAX_CHUNK_LINE: usize = 4096;

#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    /// The peer closed the connection in the middle of a message.
    Eof,
    Malformed(String),
    TooLarge,
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

fn malformed(what: impl Into<String>) -> ReadError {
    ReadError::Malformed(what.into())
}

// === impl Reader ===

/// A buffered reader over a TCP stream; with a deadline, every read is bounded by it.
pub struct Reader {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    deadline: Option<Instant>,
}

impl Reader {
    pub fn new(stream: TcpStream, deadline: Option<Instant>) -> Self {
        Reader {
            stream,
            buf: vec![0; 16 * 1024],
            start: 0,
            end: 0,
            deadline,
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Reads more bytes into the buffer; 0 means end of stream.
    fn fill(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
            }
            self.stream.set_read_timeout(Some(left))?;
        }
        loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "read timed out"))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One line without its `\n` (and `\r`), charged to `budget`;
    /// `None` at a clean end of stream.
    pub fn read_line(&mut self, budget: &mut usize) -> Result<Option<Vec<u8>>, ReadError> {
        let mut scanned = 0;
        loop {
            let window = &self.buf[self.start + scanned..self.end];
            if let Some(i) = window.iter().position(|&b| b == b'\n') {
                let line_end = self.start + scanned + i;
                let len = line_end + 1 - self.start;
                if len > *budget {
                    return Err(ReadError::TooLarge);
                }
                *budget -= len;
                let mut line = self.buf[self.start..line_end].to_vec();
                self.start = line_end + 1;
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(line));
            }
            scanned = self.end - self.start;
            if scanned > *budget {
                return Err(ReadError::TooLarge);
            }
            if self.fill()? == 0 {
                return if scanned == 0 {
                    Ok(None)
                } else {
                    Err(ReadError::Eof)
                };
            }
        }
    }

    /// Exactly `n` body bytes into `sink`.
    pub fn read_exact_into(&mut self, mut n: u64, sink: &mut Sink) -> Result<(), ReadError> {
        while n > 0 {
            if self.start == self.end && self.fill()? == 0 {
                return Err(ReadError::Eof);
            }
            let take = n.min((self.end - self.start) as u64) as usize;
            sink.push(&self.buf[self.start..self.start + take]);
            self.start += take;
            n -= take as u64;
        }
        Ok(())
    }

    /// Everything until the peer closes.
    pub fn read_to_end_into(&mut self, sink: &mut Sink) -> Result<(), ReadError> {
        loop {
            if self.start == self.end && self.fill()? == 0 {
                return Ok(());
            }
            sink.push(&self.buf[self.start..self.end]);
            self.start = self.end;
        }
    }

    /// A chunked body (RFC 9112 §7.1), trailers read and discarded.
    pub fn read_chunked_into(&mut self, sink: &mut Sink) -> Result<(), ReadError> {
        loop {
            let line = self.chunk_line()?;
            let line = String::from_utf8(line).map_err(|_| malformed("bad chunk size line"))?;
            let size = line
                .split(';')
                .next()
                .unwrap_or("")
                .trim_end_matches([' ', '\t']);
            if size.is_empty() || size.len() > 15 || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(malformed(format!("bad chunk size `{size}`")));
            }
            let size = u64::from_str_radix(size, 16).map_err(|_| malformed("bad chunk size"))?;
            if size == 0 {
                let mut budget = MAX_HEAD;
                loop {
                    let trailer = self.read_line(&mut budget)?.ok_or(ReadError::Eof)?;
                    if trailer.is_empty() {
                        return Ok(());
                    }
                    parse_header_line(&trailer)?;
                }
            }
            self.read_exact_into(size, sink)?;
            if !self.chunk_line()?.is_empty() {
                return Err(malformed("chunk data not followed by CRLF"));
            }
        }
    }

    fn chunk_line(&mut self) -> Result<Vec<u8>, ReadError> {
        let mut budget = MAX_CHUNK_LINE;
        match self.read_line(&mut budget) {
            Ok(Some(line)) => Ok(line),
            Ok(None) => Err(ReadError::Eof),
            Err(ReadError::TooLarge) => Err(malformed("chunk line too long")),
            Err(e) => Err(e),
        }
    }

    /// Reads a body framed as `framing`.
    pub fn read_body(&mut self, framing: Framing, sink: &mut Sink) -> Result<(), ReadError> {
        match framing {
            Framing::Empty => Ok(()),
            Framing::Length(n) => self.read_exact_into(n, sink),
            Framing::Chunked => self.read_chunked_into(sink),
            Framing::UntilClose => self.read_to_end_into(sink),
        }
    }
}

/// Where body bytes go: counted always, kept up to `keep_max`.
pub struct Sink {
    pub total: u64,
    pub kept: Vec<u8>,
    keep_max: usize,
}

impl Sink {
    pub fn counting() -> Self {
        Sink::keeping(0)
    }

    pub fn keeping(keep_max: usize) -> Self {
        Sink {
            total: 0,
            kept: Vec::new(),
            keep_max,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let room = self.keep_max - self.kept.len();
        self.kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

// === message heads ===

/// A start line and the header fields in the order received.
pub struct Head {
    pub first: String,
    pub headers: Vec<(String, String)>,
}

/// Reads a message head; `None` if the stream ends before its first byte.
/// Leading empty lines are skipped (RFC 9112 §2.2).
pub fn read_head(r: &mut Reader) -> Result<Option<Head>, ReadError> {
    let mut budget = MAX_HEAD;
    let first = loop {
        match r.read_line(&mut budget)? {
            None => return Ok(None),
            Some(line) if line.is_empty() => continue,
            Some(line) => break line,
        }
    };
    if first.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(malformed("control character in the start line"));
    }
    let first = String::from_utf8(first).map_err(|_| malformed("start line is not UTF-8"))?;
    let mut headers = Vec::new();
    loop {
        let line = r.read_line(&mut budget)?.ok_or(ReadError::Eof)?;
        if line.is_empty() {
            return Ok(Some(Head { first, headers }));
        }
        headers.push(parse_header_line(&line)?);
    }
}

fn parse_header_line(line: &[u8]) -> Result<(String, String), ReadError> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(malformed("obsolete line folding"));
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| malformed("header line without a colon"))?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if !is_token(name) {
        return Err(malformed("invalid header name"));
    }
    let value = trim_ows(value);
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(malformed("control character in a header value"));
    }
    Ok((
        String::from_utf8_lossy(name).into_owned(),
        String::from_utf8_lossy(value).into_owned(),
    ))
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// RFC 9110 `token`.
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// All values of header `name` (case-insensitive).
pub fn header_values<'a>(
    headers: &'a [(String, String)],
    name: &'a str,
) -> impl Iterator<Item = &'a str> {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Whether the comma-separated list header `name` holds `token` (case-insensitive).
pub fn has_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    header_values(headers, name)
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

// === body framing ===

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Transfer-Encoding (`Some(true)` if chunked is last) and Content-Length.
fn te_and_cl(headers: &[(String, String)]) -> Result<(Option<bool>, Option<u64>), String> {
    let codings: Vec<String> = header_values(headers, "transfer-encoding")
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    let te = (!codings.is_empty()).then(|| codings.last().map(String::as_str) == Some("chunked"));
    let mut cl = None;
    for v in header_values(headers, "content-length").flat_map(|v| v.split(',')) {
        let v = v.trim();
        if v.is_empty() || v.len() > 18 || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("invalid Content-Length `{v}`"));
        }
        let n: u64 = v
            .parse()
            .map_err(|_| format!("invalid Content-Length `{v}`"))?;
        if cl.is_some_and(|c| c != n) {
            return Err("conflicting Content-Length values".into());
        }
        cl = Some(n);
    }
    Ok((te, cl))
}

/// How a request body is framed (RFC 9112 §6.3); ambiguity is an error.
pub fn request_framing(headers: &[(String, String)]) -> Result<Framing, String> {
    match te_and_cl(headers)? {
        (Some(_), Some(_)) => Err("both Transfer-Encoding and Content-Length".into()),
        (Some(true), None) => Ok(Framing::Chunked),
        (Some(false), None) => Err("Transfer-Encoding without chunked last".into()),
        (None, Some(n)) => Ok(Framing::Length(n)),
        (None, None) => Ok(Framing::Empty),
    }
}

/// How a response body is framed, given the request method and the status.
pub fn response_framing(
    headers: &[(String, String)],
    status: u16,
    head_request: bool,
) -> Result<Framing, String> {
    if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Framing::Empty);
    }
    match te_and_cl(headers)? {
        (Some(true), _) => Ok(Framing::Chunked),
        (Some(false), _) => Ok(Framing::UntilClose),
        (None, Some(n)) => Ok(Framing::Length(n)),
        (None, None) => Ok(Framing::UntilClose),
    }
}

// === small helpers ===

/// Percent-decodes a query value (`+` is a space), lossy UTF-8.
pub fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An IMF-fixdate (RFC 9110 §5.6.7) for the `Date` header.
pub fn http_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{weekday}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        months[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The reason phrase sent with `status`.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        418 => "I'm a teapot",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}
