//! `probe` (one HTTP/1.1 request) and `udp-probe` (one datagram): each prints
//! one JSON line telling what happened, and exits with a code that says the same.

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::args::{Arg, Args};
use crate::http::{self, ReadError, Reader, Sink};
use crate::json::Json;

/// Response bodies are reported up to this many bytes.
pub const MAX_REPORTED_BODY: usize = 64 * 1024;

pub const USAGE: &str = "\
Usage: testsvc probe [--method M] [--header 'Name: value']... [--body STR]
                     [--timeout-ms 3000] [--connect IP:PORT] URL

Sends one HTTP/1.1 request (with `Connection: close`) to URL (http://HOST[:PORT]/path?query;
the request target is sent exactly as written, never normalised) and prints one JSON line:
  {\"result\":\"http\",\"status\":N,\"headers\":[[n,v]..],\"body\":\"..\",\"body_bytes\":N}   exit 0
  {\"result\":\"timeout\"}  (connect or read timed out, e.g. a kernel drop)         exit 3
  {\"result\":\"refused\"}                                                        exit 4
  {\"result\":\"reset\"} or {\"result\":\"error\",\"error\":\"..\"}                       exit 5
The body is lossy UTF-8, cut at 64 KiB. No DNS: a host name in URL is sent as Host
while connecting to --connect. A --header 'Host: x' replaces the Host header.

Options:
  --method M         request method (default GET)
  --header 'N: v'    extra header, repeatable, sent in order
  --body STR         request body (Content-Length is added)
  --timeout-ms N     overall deadline (default 3000)
  --connect IP:PORT  where to connect instead of the URL's host
";

pub const UDP_USAGE: &str = "\
Usage: testsvc udp-probe [--timeout-ms 2000] [--body STR] IP:PORT

Sends one datagram (default `ping`) and prints one JSON line:
  {\"result\":\"reply\",\"body\":\"..\"}  exit 0
  {\"result\":\"timeout\"}            exit 3
  {\"result\":\"refused\"}            exit 4 (ICMP port unreachable)
  {\"result\":\"error\",\"error\":\"..\"} exit 5
";

/// What one probe saw.
#[derive(Debug)]
pub enum Outcome {
    Http {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        body_bytes: u64,
    },
    Reply(Vec<u8>),
    Timeout,
    Refused,
    Reset,
    Error(String),
}

impl Outcome {
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Http { .. } | Outcome::Reply(_) => 0,
            Outcome::Timeout => 3,
            Outcome::Refused => 4,
            Outcome::Reset | Outcome::Error(_) => 5,
        }
    }

    pub fn to_json(&self) -> Json {
        let lossy = |b: &[u8]| Json::str(String::from_utf8_lossy(b));
        let result = |r: &str| ("result", Json::str(r));
        Json::Obj(match self {
            Outcome::Http {
                status,
                headers,
                body,
                body_bytes,
            } => vec![
                result("http"),
                ("status", Json::Num((*status).into())),
                ("headers", Json::pairs(headers)),
                ("body", lossy(body)),
                ("body_bytes", Json::Num(*body_bytes as i64)),
            ],
            Outcome::Reply(body) => vec![result("reply"), ("body", lossy(body))],
            Outcome::Timeout => vec![result("timeout")],
            Outcome::Refused => vec![result("refused")],
            Outcome::Reset => vec![result("reset")],
            Outcome::Error(e) => vec![result("error"), ("error", Json::str(e.as_str()))],
        })
    }

    /// The body as text (empty unless `Http` or `Reply`).
    pub fn body_text(&self) -> String {
        match self {
            Outcome::Http { body, .. } | Outcome::Reply(body) => {
                String::from_utf8_lossy(body).into_owned()
            }
            _ => String::new(),
        }
    }
}

fn from_io(e: &io::Error) -> Outcome {
    use io::ErrorKind::*;
    match e.kind() {
        TimedOut | WouldBlock => Outcome::Timeout,
        ConnectionRefused => Outcome::Refused,
        ConnectionReset | ConnectionAborted | BrokenPipe => Outcome::Reset,
        _ => Outcome::Error(e.to_string()),
    }
}

fn from_read(e: ReadError) -> Outcome {
    match e {
        ReadError::Io(e) => from_io(&e),
        ReadError::Eof => Outcome::Error("connection closed before a complete response".into()),
        ReadError::TooLarge => Outcome::Error("response head too large".into()),
        ReadError::Malformed(why) => Outcome::Error(format!("malformed response: {why}")),
    }
}

// === HTTP ===

#[derive(Clone, Debug)]
pub struct ProbeOpts {
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    pub timeout: Duration,
    pub connect: Option<SocketAddr>,
    pub url: String,
}

impl ProbeOpts {
    pub fn new(url: impl Into<String>) -> Self {
        ProbeOpts {
            method: "GET".into(),
            headers: Vec::new(),
            body: None,
            timeout: Duration::from_millis(3000),
            connect: None,
            url: url.into(),
        }
    }

    fn parse(args: Vec<String>) -> Result<Option<ProbeOpts>, String> {
        let mut opts = ProbeOpts::new("");
        let mut url = None;
        let mut args = Args::new(args);
        while let Some(arg) = args.next_arg()? {
            match arg {
                Arg::Flag(f) => match f.as_str() {
                    "--help" => return Ok(None),
                    "--method" => opts.method = args.value(&f)?,
                    "--header" => opts.headers.push(parse_header_arg(&args.value(&f)?)?),
                    "--body" => opts.body = Some(args.value(&f)?),
                    "--timeout-ms" => opts.timeout = Duration::from_millis(args.parsed(&f)?),
                    "--connect" => opts.connect = Some(args.parsed(&f)?),
                    "--http2" => return Err("--http2 is not implemented".into()),
                    _ => return Err(format!("unknown option {f}")),
                },
                Arg::Positional(p) if url.is_none() => url = Some(p),
                Arg::Positional(p) => return Err(format!("unexpected argument `{p}`")),
            }
        }
        opts.url = url.ok_or("a URL is required")?;
        if !http::is_token(opts.method.as_bytes()) {
            return Err(format!("invalid method `{}`", opts.method));
        }
        Ok(Some(opts))
    }
}

fn parse_header_arg(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("header `{s}` is not `Name: value`"))?;
    let name = name.trim();
    if !http::is_token(name.as_bytes()) || value.contains(['\r', '\n']) {
        return Err(format!("invalid header `{s}`"));
    }
    Ok((name.to_string(), value.trim().to_string()))
}

/// The parts of an `http://` URL the probe needs.
#[derive(Debug, PartialEq)]
pub struct Url {
    /// Host and port as written, for the Host header.
    pub authority: String,
    pub host: String,
    pub port: u16,
    /// Path and query exactly as written ("/" if absent).
    pub target: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Url, String> {
        let rest = url
            .get(..7)
            .filter(|s| s.eq_ignore_ascii_case("http://"))
            .map(|_| &url[7..])
            .ok_or_else(|| format!("`{url}` is not an http:// URL"))?;
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(split);
        let target = match target.chars().next() {
            None => "/".to_string(),
            Some('?') => format!("/{target}"),
            Some(_) => target.to_string(),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("`{url}`: bad host"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("`{url}`: unclosed ["))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = match port {
            None => 80,
            Some(p) => p.parse().map_err(|_| format!("`{url}`: bad port `{p}`"))?,
        };
        if target.chars().any(|c| c.is_control() || c == ' ') {
            return Err(format!("`{url}`: space or control character in the path"));
        }
        Ok(Url {
            authority: authority.to_string(),
            host: host.to_string(),
            port,
            target,
        })
    }
}

/// The request as sent on the wire.
fn request_bytes(opts: &ProbeOpts, url: &Url) -> Vec<u8> {
    let has = |name: &str| {
        opts.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    };
    let mut head = format!("{} {} HTTP/1.1\r\n", opts.method, url.target);
    let host = opts
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("host"));
    let host = host.map_or(url.authority.as_str(), |(_, v)| v.as_str());
    head += &format!("Host: {host}\r\n");
    for (name, value) in opts
        .headers
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("host"))
    {
        head += &format!("{name}: {value}\r\n");
    }
    let wants_length =
        opts.body.is_some() || matches!(opts.method.as_str(), "POST" | "PUT" | "PATCH");
    if wants_length && !has("content-length") && !has("transfer-encoding") {
        head += &format!(
            "Content-Length: {}\r\n",
            opts.body.as_ref().map_or(0, String::len)
        );
    }
    if !has("connection") {
        head += "Connection: close\r\n";
    }
    head += "\r\n";
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(opts.body.as_deref().unwrap_or("").as_bytes());
    bytes
}

/// Sends the request and reads the response, all within `opts.timeout`.
pub fn probe(opts: &ProbeOpts) -> Outcome {
    let url = match Url::parse(&opts.url) {
        Ok(u) => u,
        Err(e) => return Outcome::Error(e),
    };
    let addr = match opts.connect {
        Some(a) => a,
        None => match url.host.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, url.port),
            Err(_) => {
                return Outcome::Error(format!(
                    "host `{}` needs --connect IP:PORT (no DNS)",
                    url.host
                ))
            }
        },
    };
    let deadline = Instant::now() + opts.timeout;
    let stream = match TcpStream::connect_timeout(&addr, opts.timeout) {
        Ok(s) => s,
        Err(e) => return from_io(&e),
    };
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let sent = stream
        .set_write_timeout(Some(left))
        .and_then(|_| (&stream).write_all(&request_bytes(opts, &url)));
    if let Err(e) = sent {
        return from_io(&e);
    }
    let mut reader = Reader::new(stream, Some(deadline));
    read_response(&mut reader, opts.method.eq_ignore_ascii_case("HEAD")).unwrap_or_else(from_read)
}

fn read_response(r: &mut Reader, head_request: bool) -> Result<Outcome, ReadError> {
    loop {
        let head = http::read_head(r)?.ok_or(ReadError::Eof)?;
        let mut parts = head.first.splitn(3, ' ');
        let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let status = match (version.starts_with("HTTP/1."), code.parse::<u16>()) {
            (true, Ok(s)) if code.len() == 3 && (100..1000).contains(&s) => s,
            _ => {
                return Err(ReadError::Malformed(format!(
                    "bad status line `{}`",
                    head.first
                )))
            }
        };
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let framing = http::response_framing(&head.headers, status, head_request)
            .map_err(ReadError::Malformed)?;
        let mut body = Sink::keeping(MAX_REPORTED_BODY);
        r.read_body(framing, &mut body)?;
        return Ok(Outcome::Http {
            status,
            headers: head.headers,
            body: body.kept,
            body_bytes: body.total,
        });
    }
}

/// `testsvc probe ...`
pub fn main(args: Vec<String>) -> i32 {
    match ProbeOpts::parse(args) {
        Ok(Some(opts)) => report(&probe(&opts)),
        Ok(None) => {
            print!("{USAGE}");
            0
        }
        Err(e) => {
            eprintln!("testsvc probe: {e} (see --help)");
            2
        }
    }
}

fn report(outcome: &Outcome) -> i32 {
    println!("{}", outcome.to_json());
    outcome.exit_code()
}

// === UDP ===

/// Sends `body` to `addr` and waits up to `timeout` for one reply.
pub fn udp_probe(addr: SocketAddr, body: &[u8], timeout: Duration) -> Outcome {
    let local: IpAddr = if addr.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let attempt = || -> io::Result<Vec<u8>> {
        let socket = UdpSocket::bind(SocketAddr::new(local, 0))?;
        socket.connect(addr)?;
        socket.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        socket.send(body)?;
        let mut buf = vec![0u8; 65_536];
        let n = socket.recv(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    };
    attempt().map_or_else(|e| from_io(&e), Outcome::Reply)
}

/// `testsvc udp-probe ...`
pub fn udp_main(args: Vec<String>) -> i32 {
    let parsed = (|| -> Result<Option<(SocketAddr, String, Duration)>, String> {
        let (mut addr, mut body, mut timeout) =
            (None, "ping".to_string(), Duration::from_millis(2000));
        let mut args = Args::new(args);
        while let Some(arg) = args.next_arg()? {
            match arg {
                Arg::Flag(f) => match f.as_str() {
                    "--help" => return Ok(None),
                    "--timeout-ms" => timeout = Duration::from_millis(args.parsed(&f)?),
                    "--body" => body = args.value(&f)?,
                    _ => return Err(format!("unknown option {f}")),
                },
                Arg::Positional(p) if addr.is_none() => {
                    addr = Some(p.parse().map_err(|_| format!("`{p}` is not IP:PORT"))?)
                }
                Arg::Positional(p) => return Err(format!("unexpected argument `{p}`")),
            }
        }
        Ok(Some((addr.ok_or("IP:PORT is required")?, body, timeout)))
    })();
    match parsed {
        Ok(Some((addr, body, timeout))) => report(&udp_probe(addr, body.as_bytes(), timeout)),
        Ok(None) => {
            print!("{UDP_USAGE}");
            0
        }
        Err(e) => {
            eprintln!("testsvc udp-probe: {e} (see --help)");
            2
        }
    }
}
