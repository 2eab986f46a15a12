//! In-process tests: a server on 127.0.0.1 ephemeral ports, probed for real.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::probe::{self, Outcome, ProbeOpts, Url};
use crate::server::{Config, Server};

fn start(name: &str) -> Server {
    Server::start(Config {
        name: name.into(),
        http: vec![0, 0],
        udp: vec![0],
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        quiet: true,
    })
    .expect("server starts")
}

fn url(server: &Server, i: usize, target: &str) -> String {
    format!("http://{}{target}", server.http_addrs[i])
}

fn get(server: &Server, target: &str) -> Outcome {
    probe::probe(&ProbeOpts::new(url(server, 0, target)))
}

fn status(o: &Outcome) -> u16 {
    match o {
        Outcome::Http { status, .. } => *status,
        other => panic!("expected an HTTP response, got {other:?}"),
    }
}

fn header<'a>(o: &'a Outcome, name: &str) -> Option<&'a str> {
    match o {
        Outcome::Http { headers, .. } => headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str()),
        _ => None,
    }
}

/// Sends raw bytes and returns everything the server sends until it closes.
fn raw(server: &Server, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(server.http_addrs[0]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .expect("server closes the connection");
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn echo_reports_request_and_counts_all_ports_and_udp() {
    let server = start("t1");
    let mut opts = ProbeOpts::new(url(&server, 0, "/foo/x?y=1"));
    opts.headers = vec![("X-A".into(), "b".into()), ("x-a".into(), "c".into())];
    let first = probe::probe(&opts);
    assert_eq!(status(&first), 200);
    assert_eq!(header(&first, "content-type"), Some("application/json"));
    let body = first.body_text();
    let port = server.http_addrs[0].port();
    for want in [
        r#""service":"t1""#.to_string(),
        format!(r#""port":{port}"#),
        r#""method":"GET""#.into(),
        r#""target":"/foo/x?y=1""#.into(),
        r#""path":"/foo/x""#.into(),
        r#""query":"y=1""#.into(),
        format!(
            r#""headers":[["Host","127.0.0.1:{port}"],["X-A","b"],["x-a","c"],["Connection","close"]]"#
        ),
        r#""body_bytes":0"#.into(),
        r#""counter":1"#.into(),
    ] {
        assert!(body.contains(&want), "{want} not in {body}");
    }

    let second = probe::probe(&ProbeOpts::new(url(&server, 1, "/")));
    assert!(second.body_text().contains(r#""counter":2"#));
    match probe::udp_probe(server.udp_addrs[0], b"hello", Duration::from_secs(2)) {
        Outcome::Reply(r) => assert_eq!(r, b"t1:hello"),
        other => panic!("no UDP reply: {other:?}"),
    }
    assert_eq!(server.counter(), 3);

    let health = get(&server, "/healthz");
    assert_eq!((status(&health), health.body_text().as_str()), (200, "ok"));
    assert_eq!(
        get(&server, "/__stats").body_text(),
        r#"{"service":"t1","counter":3}"#
    );
    assert_eq!(server.counter(), 3, "healthz and __stats are not counted");
}

#[test]
fn request_target_is_sent_raw() {
    let server = start("raw");
    for target in ["/foo/../admin", "//a/./b/%2e%2e/c?q=%2F", "/foo%2Fbar"] {
        let body = get(&server, target).body_text();
        assert!(
            body.contains(&format!(r#""target":"{target}""#)),
            "{target}: {body}"
        );
    }
}

#[test]
fn bodies_keep_alive_and_connection_close() {
    let server = start("ka");
    let reply = raw(
        &server,
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: t\r\n\r\n\
          PUT /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
          GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n\
          GET /never HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(reply.matches("HTTP/1.1 200 OK").count(), 3, "{reply}");
    assert!(reply.contains(r#""body_bytes":11"#) && reply.contains(r#""body_bytes":3"#));
    assert!(
        !reply.contains("/never"),
        "requests after Connection: close are not served"
    );
    assert_eq!(reply.matches("Connection: close").count(), 1);
    assert_eq!(server.counter(), 3);

    let http10 = raw(&server, b"GET /old HTTP/1.0\r\n\r\n");
    assert!(
        http10.starts_with("HTTP/1.1 200") && http10.contains("Connection: close"),
        "{http10}"
    );
}

#[test]
fn expect_100_continue() {
    let server = start("cont");
    let mut s = TcpStream::connect(server.http_addrs[0]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"PUT /x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = [0u8; 25];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"ok").unwrap();
    let mut rest = String::new();
    s.read_to_string(&mut rest).unwrap();
    assert!(
        rest.starts_with("HTTP/1.1 200") && rest.contains(r#""body_bytes":2"#),
        "{rest}"
    );
}

#[test]
fn malformed_requests_get_400_and_close() {
    let server = start("bad");
    let cases: &[&[u8]] = &[
        b"GARBAGE\r\n\r\n",
        b"GET /\r\n\r\n",
        b"GET / HTTP/1.1 extra\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
        b"G\x00T / HTTP/1.1\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
        b"GET /?status=99 HTTP/1.1\r\n\r\n",
        b"GET /?size=lots HTTP/1.1\r\n\r\n",
        b"\xff\xfe / HTTP/1.1\r\n\r\n",
    ];
    for case in cases {
        let reply = raw(&server, case);
        assert!(
            reply.starts_with("HTTP/1.1 400 "),
            "{:?} -> {reply}",
            String::from_utf8_lossy(case)
        );
        assert!(reply.contains("Connection: close"));
        assert_eq!(reply.matches("HTTP/1.1").count(), 1);
    }
    let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(70_000));
    assert!(raw(&server, huge.as_bytes()).starts_with("HTTP/1.1 431 "));
    assert_eq!(server.counter(), 0, "rejected requests are not counted");
    assert_eq!(status(&get(&server, "/after")), 200, "the server survives");
}

#[test]
fn knobs() {
    let server = start("knobs");
    let teapot = get(
        &server,
        "/k?status=418&cc=max-age%3D60%2C%20public&vary=Accept&set_cookie=1",
    );
    assert_eq!(status(&teapot), 418);
    assert_eq!(header(&teapot, "cache-control"), Some("max-age=60, public"));
    assert_eq!(header(&teapot, "vary"), Some("Accept"));
    assert_eq!(header(&teapot, "set-cookie"), Some("testsvc=1; Path=/"));
    assert!(header(&teapot, "date").is_some_and(|d| d.ends_with(" GMT")));

    let sized = get(&server, "/k?size=100000&chunked=1");
    assert_eq!(header(&sized, "transfer-encoding"), Some("chunked"));
    match &sized {
        Outcome::Http {
            body, body_bytes, ..
        } => {
            assert_eq!(*body_bytes, 100_000);
            assert_eq!(body.len(), probe::MAX_REPORTED_BODY);
            assert!(body.starts_with(b"abcdefghijklmnopqrstuvwxyzabc"));
        }
        other => panic!("{other:?}"),
    }
    let small_chunked = get(&server, "/k?chunked=1");
    assert!(
        small_chunked.body_text().ends_with('}'),
        "{}",
        small_chunked.body_text()
    );

    let tagged = get(&server, "/k?etag=v1");
    assert_eq!(header(&tagged, "etag"), Some("\"v1\""));
    let mut revalidate = ProbeOpts::new(url(&server, 0, "/k?etag=v1&cc=max-age%3D5"));
    revalidate.headers = vec![("If-None-Match".into(), "\"v0\", W/\"v1\"".into())];
    let not_modified = probe::probe(&revalidate);
    assert_eq!(status(&not_modified), 304);
    assert_eq!(header(&not_modified, "cache-control"), Some("max-age=5"));
    assert_eq!(not_modified.body_text(), "");
    revalidate.headers = vec![("If-None-Match".into(), "\"v2\"".into())];
    assert_eq!(status(&probe::probe(&revalidate)), 200);

    let started = Instant::now();
    assert_eq!(status(&get(&server, "/k?delay_ms=200")), 200);
    assert!(started.elapsed() >= Duration::from_millis(200));

    let mut head = ProbeOpts::new(url(&server, 0, "/k?size=10"));
    head.method = "HEAD".into();
    let head = probe::probe(&head);
    assert_eq!(
        (header(&head, "content-length"), head.body_text().as_str()),
        (Some("10"), "")
    );
    assert_eq!(status(&get(&server, "/k?status=204")), 204);
    assert_eq!(server.counter(), 9);
}

#[test]
fn probe_sends_host_headers_and_body() {
    let server = start("host");
    let mut opts = ProbeOpts::new("http://two.example/x");
    opts.connect = Some(server.http_addrs[0]);
    let body = probe::probe(&opts).body_text();
    assert!(body.contains(r#"["Host","two.example"]"#), "{body}");

    let mut opts = ProbeOpts::new(url(&server, 0, "/y"));
    opts.method = "PUT".into();
    opts.headers = vec![
        ("X-Bar".into(), "bar".into()),
        ("host".into(), "three.example:8080".into()),
    ];
    opts.body = Some("payload".into());
    let body = probe::probe(&opts).body_text();
    assert!(
        body.contains(
            r#""headers":[["Host","three.example:8080"],["X-Bar","bar"],["Content-Length","7"]"#
        ),
        "{body}"
    );
    assert!(body.contains(r#""body_bytes":7"#));

    let no_dns = probe::probe(&ProbeOpts::new("http://name.invalid/"));
    assert!(
        matches!(no_dns, Outcome::Error(ref e) if e.contains("--connect")),
        "{no_dns:?}"
    );
}

#[test]
fn probe_outcomes_refused_timeout_reset() {
    let unused = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let refused = probe::probe(&ProbeOpts::new(format!("http://{unused}/")));
    assert!(matches!(refused, Outcome::Refused), "{refused:?}");
    assert_eq!(refused.exit_code(), 4);
    assert_eq!(refused.to_json().to_string(), r#"{"result":"refused"}"#);

    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let holder = thread::spawn(move || {
        let (conn, _) = silent.accept().unwrap();
        thread::sleep(Duration::from_millis(800));
        drop(conn);
    });
    let mut opts = ProbeOpts::new(format!("http://{silent_addr}/"));
    opts.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let timeout = probe::probe(&opts);
    assert!(matches!(timeout, Outcome::Timeout), "{timeout:?}");
    assert!(started.elapsed() < Duration::from_millis(700));
    assert_eq!(timeout.exit_code(), 3);
    holder.join().unwrap();

    // Closing a socket with unread input makes the kernel send a RST.
    let rude = TcpListener::bind("127.0.0.1:0").unwrap();
    let rude_addr = rude.local_addr().unwrap();
    let closer = thread::spawn(move || {
        let (conn, _) = rude.accept().unwrap();
        thread::sleep(Duration::from_millis(200));
        drop(conn);
    });
    let reset = probe::probe(&ProbeOpts::new(format!("http://{rude_addr}/")));
    assert!(matches!(reset, Outcome::Reset), "{reset:?}");
    closer.join().unwrap();

    let udp_silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp = probe::udp_probe(
        udp_silent.local_addr().unwrap(),
        b"x",
        Duration::from_millis(200),
    );
    assert!(matches!(udp, Outcome::Timeout), "{udp:?}");
}

#[test]
fn url_parsing() {
    let u = Url::parse("http://198.19.5.2:8080/foo/../a?x=1").unwrap();
    assert_eq!(
        (u.host.as_str(), u.port, u.target.as_str()),
        ("198.19.5.2", 8080, "/foo/../a?x=1")
    );
    assert_eq!(u.authority, "198.19.5.2:8080");
    let u = Url::parse("HTTP://[::1]?q").unwrap();
    assert_eq!(
        (u.host.as_str(), u.port, u.target.as_str()),
        ("::1", 80, "/?q")
    );
    assert_eq!(Url::parse("http://h").unwrap().target, "/");
    for bad in [
        "https://x/",
        "ftp://x",
        "http://",
        "http://u@h/",
        "http://h:99999/",
        "http://h/a b",
    ] {
        assert!(Url::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn cli_usage_and_errors() {
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(crate::run(args(&["serve", "--help"])), 0);
    assert_eq!(crate::run(args(&["probe", "--help"])), 0);
    assert_eq!(crate::run(args(&["udp-probe", "-h"])), 0);
    assert_eq!(crate::run(args(&["--help"])), 0);
    assert_eq!(crate::run(args(&["nope"])), 2);
    assert_eq!(
        crate::run(args(&["serve", "--http", "80"])),
        2,
        "--name is required"
    );
    assert_eq!(
        crate::run(args(&["probe", "--http2", "http://127.0.0.1/"])),
        2
    );
    assert_eq!(
        crate::run(args(&["probe", "--timeout-ms=x", "http://127.0.0.1/"])),
        2
    );
    let unused = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let unused = SocketAddr::new(unused.ip(), unused.port());
    assert_eq!(
        crate::run(args(&["probe", &format!("http://{unused}/")])),
        4
    );
}

#[test]
fn http_date_is_imf_fixdate() {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(784_111_777);
    assert_eq!(crate::http::http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
    let leap = std::time::UNIX_EPOCH + Duration::from_secs(951_782_400);
    assert_eq!(
        crate::http::http_date(leap),
        "Tue, 29 Feb 2000 00:00:00 GMT"
    );
}
