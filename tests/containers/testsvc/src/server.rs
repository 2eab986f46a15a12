//! `serve`: a threaded HTTP/1.1 echo server and a UDP echo, sharing one request counter.

use std::io::{self, BufWriter, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime};

use crate::args::{Arg, Args};
use crate::http::{self, Framing, ReadError, Reader, Sink};
use crate::json::Json;

/// A connection with no traffic for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_SIZE_KNOB: u64 = 1 << 30;
const MAX_DELAY_MS: u64 = 600_000;

pub const USAGE: &str = "\
Usage: testsvc serve --name NAME --http PORT [--http PORT]... [--udp PORT]... [--bind IP] [--quiet]

Serves HTTP/1.1 on every --http port and a UDP echo on every --udp port.
Each request is answered 200 application/json:
  {\"service\",\"port\",\"method\",\"target\",\"path\",\"query\",\"headers\":[[n,v]..],
   \"body_bytes\",\"counter\",\"peer\",\"version\"}
`counter` counts requests and datagrams on all ports, this one included.
Not counted: GET /healthz (answers `ok`) and GET /__stats ({\"service\",\"counter\"}).
Query knobs: status=NNN  cc=VALUE (Cache-Control)  vary=HEADER  etag=X (304 on a
matching If-None-Match)  size=N (N body bytes)  delay_ms=N  chunked=1  set_cookie=1
UDP: each datagram is answered with `NAME:` + the datagram.

Options:
  --name NAME   service name echoed in every answer (required)
  --http PORT   TCP port for HTTP (repeatable; 0 picks a free port)
  --udp PORT    UDP port for the echo (repeatable)
  --bind IP     address to listen on (default 0.0.0.0)
  --quiet       no log line per request on stderr
";

pub struct Config {
    pub name: String,
    pub http: Vec<u16>,
    pub udp: Vec<u16>,
    pub bind: IpAddr,
    pub quiet: bool,
}

impl Config {
    fn parse(args: Vec<String>) -> Result<Option<Config>, String> {
        let mut cfg = Config {
            name: String::new(),
            http: Vec::new(),
            udp: Vec::new(),
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            quiet: false,
        };
        let mut args = Args::new(args);
        while let Some(arg) = args.next_arg()? {
            match arg {
                Arg::Flag(f) => match f.as_str() {
                    "--help" => return Ok(None),
                    "--name" => cfg.name = args.value(&f)?,
                    "--http" => cfg.http.push(args.parsed(&f)?),
                    "--udp" => cfg.udp.push(args.parsed(&f)?),
                    "--bind" => cfg.bind = args.parsed(&f)?,
                    "--quiet" => cfg.quiet = true,
                    _ => return Err(format!("unknown option {f}")),
                },
                Arg::Positional(p) => return Err(format!("unexpected argument `{p}`")),
            }
        }
        if cfg.name.is_empty() {
            return Err("--name is required".into());
        }
        if cfg.http.is_empty() && cfg.udp.is_empty() {
            return Err("give at least one --http or --udp port".into());
        }
        Ok(Some(cfg))
    }
}

/// State shared by every listener of one server.
struct Shared {
    name: String,
    counter: AtomicU64,
    quiet: bool,
}

impl Shared {
    fn count(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// A running server: its bound addresses and its counter.
pub struct Server {
    pub http_addrs: Vec<SocketAddr>,
    pub udp_addrs: Vec<SocketAddr>,
    shared: Arc<Shared>,
}

impl Server {
    /// Binds every port (failing if any cannot be bound), then serves each on its own thread.
    pub fn start(cfg: Config) -> io::Result<Server> {
        let shared = Arc::new(Shared {
            name: cfg.name,
            counter: AtomicU64::new(0),
            quiet: cfg.quiet,
        });
        let bind = |port| SocketAddr::new(cfg.bind, port);
        let with_port =
            |port: u16| move |e: io::Error| io::Error::new(e.kind(), format!("port {port}: {e}"));
        let tcp = cfg
            .http
            .iter()
            .map(|&p| TcpListener::bind(bind(p)).map_err(with_port(p)))
            .collect::<io::Result<Vec<_>>>()?;
        let udp = cfg
            .udp
            .iter()
            .map(|&p| UdpSocket::bind(bind(p)).map_err(with_port(p)))
            .collect::<io::Result<Vec<_>>>()?;
        let server = Server {
            http_addrs: tcp
                .iter()
                .map(TcpListener::local_addr)
                .collect::<io::Result<_>>()?,
            udp_addrs: udp
                .iter()
                .map(UdpSocket::local_addr)
                .collect::<io::Result<_>>()?,
            shared: shared.clone(),
        };
        for listener in tcp {
            let shared = shared.clone();
            thread::spawn(move || accept_loop(listener, shared));
        }
        for socket in udp {
            let shared = shared.clone();
            thread::spawn(move || udp_loop(socket, shared));
        }
        Ok(server)
    }

    pub fn counter(&self) -> u64 {
        self.shared.counter.load(Ordering::SeqCst)
    }
}

/// `testsvc serve ...`
pub fn main(args: Vec<String>) -> i32 {
    let cfg = match Config::parse(args) {
        Ok(Some(cfg)) => cfg,
        Ok(None) => {
            print!("{USAGE}");
            return 0;
        }
        Err(e) => {
            eprintln!("testsvc serve: {e} (see --help)");
            return 2;
        }
    };
    let name = cfg.name.clone();
    let server = match Server::start(cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("testsvc serve: cannot listen: {e}");
            return 1;
        }
    };
    crate::signals::exit_zero_on_term();
    eprintln!(
        "testsvc {name}: http {:?} udp {:?}",
        server.http_addrs, server.udp_addrs
    );
    loop {
        thread::park();
    }
}

// === TCP ===

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let shared = shared.clone();
                thread::spawn(move || serve_connection(stream, &shared));
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn serve_connection(stream: TcpStream, shared: &Shared) {
    let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) else {
        return;
    };
    if stream.set_read_timeout(Some(IDLE_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(IDLE_TIMEOUT)).is_err()
    {
        return;
    }
    let _ = stream.set_nodelay(true);
    let conn = ConnInfo {
        port: local.port(),
        peer,
    };
    let mut reader = Reader::new(stream, None);
    while let Ok(true) = serve_request(&mut reader, shared, &conn) {}
}

struct ConnInfo {
    port: u16,
    peer: SocketAddr,
}

/// A parsed request, its body already read.
struct Request {
    method: String,
    target: String,
    version: &'static str,
    headers: Vec<(String, String)>,
    body_bytes: u64,
    keep_alive: bool,
}

impl Request {
    fn path_and_query(&self) -> (&str, &str) {
        let t = self.target.as_str();
        let origin = ["http://", "https://"]
            .iter()
            .find(|s| t.len() >= s.len() && t[..s.len()].eq_ignore_ascii_case(s))
            .map(|s| {
                let after = &t[s.len()..];
                after.find(['/', '?']).map_or("", |i| &after[i..])
            })
            .unwrap_or(t);
        origin.split_once('?').unwrap_or((origin, ""))
    }
}

/// Serves one request; `Ok(true)` if the connection stays open for another.
fn serve_request(r: &mut Reader, shared: &Shared, conn: &ConnInfo) -> io::Result<bool> {
    let req = match read_request(r) {
        Ok(Some(req)) => req,
        Ok(None) | Err(ReadError::Eof) => return Ok(false),
        Err(ReadError::Io(e)) => return Err(e),
        Err(ReadError::TooLarge) => return reject(r.stream(), 431, "request head too large"),
        Err(ReadError::Malformed(why)) => return reject(r.stream(), 400, &why),
    };
    let (path, query) = req.path_and_query();
    let reading = req.method == "GET" || req.method == "HEAD";
    let response = match path {
        "/healthz" if reading => Response::text(200, "ok"),
        "/__stats" if reading => Response::json(
            200,
            Json::Obj(vec![
                ("service", Json::str(&shared.name)),
                ("counter", Json::Num(counter_of(shared))),
            ]),
        ),
        _ => {
            let knobs = match Knobs::parse(query) {
                Ok(k) => k,
                Err(why) => return reject(r.stream(), 400, &why),
            };
            let counter = shared.count();
            if knobs.delay_ms > 0 {
                thread::sleep(Duration::from_millis(knobs.delay_ms));
            }
            echo(&req, shared, conn, &knobs, counter)
        }
    };
    if !shared.quiet {
        eprintln!(
            "{} :{} {} {} {} -> {}",
            shared.name, conn.port, conn.peer, req.method, req.target, response.status
        );
    }
    response.write(r.stream(), req.method == "HEAD", req.keep_alive)?;
    Ok(req.keep_alive)
}

fn counter_of(shared: &Shared) -> i64 {
    shared.counter.load(Ordering::SeqCst) as i64
}

fn read_request(r: &mut Reader) -> Result<Option<Request>, ReadError> {
    let Some(head) = http::read_head(r)? else {
        return Ok(None);
    };
    let mut parts = head.first.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Malformed(
            "request line is not `METHOD TARGET VERSION`".into(),
        ));
    };
    if !http::is_token(method.as_bytes()) || target.is_empty() {
        return Err(ReadError::Malformed("bad method or request target".into()));
    }
    let (version, keep_alive) = match version {
        "HTTP/1.1" => (
            "HTTP/1.1",
            !http::has_token(&head.headers, "connection", "close"),
        ),
        "HTTP/1.0" => (
            "HTTP/1.0",
            http::has_token(&head.headers, "connection", "keep-alive"),
        ),
        _ => {
            return Err(ReadError::Malformed(format!(
                "unsupported version `{version}`"
            )))
        }
    };
    let framing = http::request_framing(&head.headers).map_err(ReadError::Malformed)?;
    if framing != Framing::Empty
        && http::has_token(&head.headers, "expect", "100-continue")
        && version == "HTTP/1.1"
    {
        r.stream().write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let mut body = Sink::counting();
    r.read_body(framing, &mut body)?;
    Ok(Some(Request {
        method: method.to_string(),
        target: target.to_string(),
        version,
        headers: head.headers,
        body_bytes: body.total,
        keep_alive,
    }))
}

/// Answers a request that cannot be served and closes the connection.
fn reject(stream: &TcpStream, status: u16, why: &str) -> io::Result<bool> {
    Response::text(
        status,
        &format!("{}: {why}\n", http::reason(status).to_lowercase()),
    )
    .write(stream, false, false)?;
    lingering_close(stream);
    Ok(false)
}

/// Closing with unread input makes the kernel send a RST, which can destroy the
/// response before the client reads it: stop writing, then drain for a while.
fn lingering_close(mut stream: &TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 16 * 1024];
    let mut drained = 0;
    while drained < (1 << 20) {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

// === the echo and its knobs ===

#[derive(Default)]
struct Knobs {
    status: Option<u16>,
    cache_control: Option<String>,
    vary: Option<String>,
    etag: Option<String>,
    size: Option<u64>,
    delay_ms: u64,
    chunked: bool,
    set_cookie: bool,
}

impl Knobs {
    fn parse(query: &str) -> Result<Knobs, String> {
        let mut k = Knobs::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let value = http::percent_decode(raw);
            if value.chars().any(char::is_control) {
                return Err(format!("knob {key}: control character"));
            }
            let number = |max: u64| match value.parse::<u64>() {
                Ok(n) if n <= max => Ok(n),
                _ => Err(format!("knob {key}: `{value}` is not a number up to {max}")),
            };
            match key {
                "status" => match number(599)? {
                    n @ 200..=599 => k.status = Some(n as u16),
                    n => return Err(format!("knob status: {n} is not in 200..=599")),
                },
                "cc" => k.cache_control = Some(value),
                "vary" => k.vary = Some(value),
                "etag" => k.etag = Some(value),
                "size" => k.size = Some(number(MAX_SIZE_KNOB)?),
                "delay_ms" => k.delay_ms = number(MAX_DELAY_MS)?,
                "chunked" => k.chunked = value != "0",
                "set_cookie" => k.set_cookie = value != "0",
                _ => {}
            }
        }
        Ok(k)
    }

    /// The ETag as sent: quoted unless already a quoted or weak tag.
    fn etag(&self) -> Option<String> {
        self.etag.as_ref().map(|e| {
            if e.starts_with('"') || e.starts_with("W/") {
                e.clone()
            } else {
                format!("\"{e}\"")
            }
        })
    }
}

/// Weak comparison of an If-None-Match list against `etag` (RFC 9110 §13.1.2).
fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    let opaque = |t: &str| t.trim().trim_start_matches("W/").to_string();
    if_none_match
        .split(',')
        .any(|t| t.trim() == "*" || opaque(t) == opaque(etag))
}

fn echo(req: &Request, shared: &Shared, conn: &ConnInfo, knobs: &Knobs, counter: u64) -> Response {
    let (path, query) = req.path_and_query();
    let etag = knobs.etag();
    let not_modified = etag.as_ref().is_some_and(|e| {
        let inm: Vec<&str> = http::header_values(&req.headers, "if-none-match").collect();
        !inm.is_empty() && etag_matches(&inm.join(","), e)
    });
    let mut resp = if not_modified {
        Response {
            status: 304,
            headers: Vec::new(),
            body: Body::Empty,
            chunked: false,
        }
    } else if let Some(size) = knobs.size {
        Response {
            status: 200,
            headers: vec![("Content-Type".into(), "application/octet-stream".into())],
            body: Body::Pattern(size),
            chunked: false,
        }
    } else {
        Response::json(
            200,
            Json::Obj(vec![
                ("service", Json::str(&shared.name)),
                ("port", Json::Num(conn.port.into())),
                ("method", Json::str(&req.method)),
                ("target", Json::str(&req.target)),
                ("path", Json::str(path)),
                ("query", Json::str(query)),
                ("headers", Json::pairs(&req.headers)),
                ("body_bytes", Json::Num(req.body_bytes as i64)),
                ("counter", Json::Num(counter as i64)),
                ("peer", Json::str(conn.peer.to_string())),
                ("version", Json::str(req.version)),
            ]),
        )
    };
    if !not_modified {
        resp.status = knobs.status.unwrap_or(200);
        resp.chunked = knobs.chunked && req.version == "HTTP/1.1";
    }
    let extra = [
        ("Cache-Control", knobs.cache_control.clone()),
        ("Vary", knobs.vary.clone()),
        ("ETag", etag),
        (
            "Set-Cookie",
            knobs
                .set_cookie
                .then(|| format!("testsvc={counter}; Path=/")),
        ),
        ("X-Service", Some(shared.name.clone())),
        ("X-Counter", Some(counter.to_string())),
    ];
    resp.headers.extend(
        extra
            .into_iter()
            .filter_map(|(n, v)| v.map(|v| (n.to_string(), v))),
    );
    resp
}

// === impl Response ===

enum Body {
    Empty,
    Bytes(Vec<u8>),
    /// N bytes of `abc...z` repeated.
    Pattern(u64),
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
    chunked: bool,
}

impl Response {
    fn text(status: u16, text: &str) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: Body::Bytes(text.as_bytes().to_vec()),
            chunked: false,
        }
    }

    fn json(status: u16, json: Json) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: Body::Bytes(json.to_string().into_bytes()),
            chunked: false,
        }
    }

    fn body_len(&self) -> u64 {
        match &self.body {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::Pattern(n) => *n,
        }
    }

    fn write(&self, stream: &TcpStream, head_request: bool, keep_alive: bool) -> io::Result<()> {
        let mut w = BufWriter::with_capacity(64 * 1024, stream);
        write!(
            w,
            "HTTP/1.1 {} {}\r\nDate: {}\r\n",
            self.status,
            http::reason(self.status),
            http::http_date(SystemTime::now())
        )?;
        for (name, value) in &self.headers {
            write!(w, "{name}: {value}\r\n")?;
        }
        let bodiless = self.status == 204 || self.status == 304;
        if !bodiless {
            if self.chunked {
                w.write_all(b"Transfer-Encoding: chunked\r\n")?;
            } else {
                write!(w, "Content-Length: {}\r\n", self.body_len())?;
            }
        }
        if !keep_alive {
            w.write_all(b"Connection: close\r\n")?;
        }
        w.write_all(b"\r\n")?;
        if !bodiless && !head_request {
            self.write_body(&mut w)?;
        }
        w.flush()
    }

    /// The body in pieces; chunked bodies use at least two chunks when they can.
    fn write_body(&self, w: &mut impl Write) -> io::Result<()> {
        let len = self.body_len();
        let piece = if self.chunked {
            len.div_ceil(2).clamp(1, 16 * 1024)
        } else {
            64 * 1024
        };
        let mut offset = 0;
        while offset < len {
            let n = piece.min(len - offset);
            let bytes: Vec<u8> = match &self.body {
                Body::Bytes(b) => b[offset as usize..(offset + n) as usize].to_vec(),
                Body::Pattern(_) => (offset..offset + n)
                    .map(|i| b'a' + (i % 26) as u8)
                    .collect(),
                Body::Empty => Vec::new(),
            };
            if self.chunked {
                write!(w, "{n:x}\r\n")?;
                w.write_all(&bytes)?;
                w.write_all(b"\r\n")?;
            } else {
                w.write_all(&bytes)?;
            }
            offset += n;
        }
        if self.chunked {
            w.write_all(b"0\r\n\r\n")?;
        }
        Ok(())
    }
}

// === UDP ===

fn udp_loop(socket: UdpSocket, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf) else {
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        let counter = shared.count();
        let mut reply = format!("{}:", shared.name).into_bytes();
        reply.extend_from_slice(&buf[..n]);
        reply.truncate(65_507);
        let _ = socket.send_to(&reply, peer);
        if !shared.quiet {
            eprintln!("{} udp {} {} bytes counter={counter}", shared.name, peer, n);
        }
    }
}
