//! TLS frontends end to end on loopback: certificates made by a test CA
//! at test time (rcgen; no key is committed), a rustls client trusting
//! only that CA, the daemon's listeners and an HTTP/1.1 member that echoes
//! the headers it received. What is asserted is what a client and the
//! member see: the certificate served for an SNI name, the protocol
//! agreed by ALPN, the `X-Forwarded-Proto` the member got, and the
//! refusal of a bad certificate with the old one still served.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use portcullis::state::snapshot::Snapshot;
use support::*;

// === certificates ===

/// A CA made for one test, and the certificates it signs into `dir`.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    dir: tempfile::TempDir,
}

/// The files of one issued certificate and its leaf's DER.
#[derive(Clone)]
struct Issued {
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            cert,
            key,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A certificate for `names` (DNS names or IP addresses), saved as
    /// `FILE.pem` (leaf then CA: a full chain) and `FILE.key`.
    fn issue(&self, file: &str, names: &[&str]) -> Issued {
        self.issue_with(file, names, |_| {})
    }

    fn issue_with(
        &self,
        file: &str,
        names: &[&str],
        edit: impl FnOnce(&mut CertificateParams),
    ) -> Issued {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        edit(&mut params);
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let cert_path = self.dir.path().join(format!("{file}.pem"));
        let key_path = self.dir.path().join(format!("{file}.key"));
        std::fs::write(&cert_path, format!("{}{}", cert.pem(), self.cert.pem())).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Issued {
            cert: cert_path,
            key: key_path,
            der: cert.der().clone(),
        }
    }

    /// A client trusting only this CA, offering `alpn`.
    fn client(&self, alpn: &[&[u8]]) -> TlsConnector {
        self.client_of(alpn, rustls::DEFAULT_VERSIONS)
    }

    /// [`client`](Self::client) speaking only `versions`.
    fn client_of(
        &self,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }
}

/// `"tls": {...}` naming `certs` in order.
fn tls_json(certs: &[&Issued]) -> String {
    tls_json_with(certs, "")
}

/// [`tls_json`] with more fields of `tls` (`"name": value, `).
fn tls_json_with(certs: &[&Issued], fields: &str) -> String {
    let list: Vec<String> = certs
        .iter()
        .map(|c| format!(r#"{{ "cert": {:?}, "key": {:?} }}"#, c.cert, c.key))
        .collect();
    format!(
        r#""tls": {{ {fields}"certificates": [ {} ] }}"#,
        list.join(", ")
    )
}

/// The lab most tests here use: an HTTP/1.1 member, a test CA, its
/// certificate for `site.example` on the TLS frontend (with more `tls`
/// fields and `limits`, see [`tls_json_with`] and [`rules_with`]), and
/// the plain frontend beside it. Bind `_member` when taking it apart:
/// dropped, the member stops.
struct Site {
    _member: Upstream,
    ca: Ca,
    plain: SocketAddr,
    lab: Lab,
}

async fn site_lab(tls_fields: &str, limits: &str) -> Site {
    let member = Upstream::start(ip(2), "app2").await;
    let ca = Ca::new();
    let site = ca.issue("site", &["site.example"]);
    let plain = plain_addr();
    let tls = tls_json_with(&[&site], tls_fields);
    let lab = lab(&rules_with(member.addr, plain, &tls, limits)).await;
    Site {
        _member: member,
        ca,
        plain,
        lab,
    }
}

/// Writes `request` on `s` and reads until the server closes: the raw text.
async fn read_all<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, request: &str) -> String {
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("answered and closed in time");
    String::from_utf8_lossy(&out).into_owned()
}

/// A TLS connection to `front` asking for `name` (an IP address: no SNI).
async fn connect(tls: &TlsConnector, front: SocketAddr, name: &str) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(front).await.expect("connect frontend");
    let name = ServerName::try_from(name.to_owned()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), tls.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake")
}

/// The leaf certificate the server presented.
fn served(s: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    s.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// Rules with one TLS frontend (`@FRONT@`) routing everything to the
/// member, a plain one at `plain` to the same member, and `tls`.
fn rules(member: SocketAddr, plain: SocketAddr, tls: &str) -> String {
    rules_with(member, plain, tls, "")
}

/// [`rules`] with more `limits` of the TLS frontend (`, "name": value`).
fn rules_with(member: SocketAddr, plain: SocketAddr, tls: &str, limits: &str) -> String {
    format!(
        r#"{{ "version": 1,
  "containers": {{ "app2": {{ "docker": "127.0.0.2" }} }},
  "frontends": [
    {{ "name": "secure", "listen": "@FRONT@", "default_pool": "app", {tls},
       "limits": {{ "header_timeout_ms": 500{limits} }} }},
    {{ "name": "plain", "listen": "{plain}", "default_pool": "app" }} ],
  "pools": {{ "app": {{ "members": ["app2:{}"] }} }} }}"#,
        member.port()
    )
}

fn plain_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

fn render(lab: &Lab) -> String {
    let mut out = String::new();
    lab.metrics.labelled.render(&mut out);
    out
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_over_http1_and_h2_reaches_an_http1_member_as_https() {
    let Site {
        _member,
        ca,
        plain,
        lab,
        ..
    } = site_lab("", "").await;

    // HTTP/1.1, agreed by ALPN.
    let s = connect(&ca.client(&[b"http/1.1"]), lab.front, "site.example").await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, body) = exchange_on(
        s,
        "GET /a HTTP/1.1\r\nHost: site.example\r\nX-Forwarded-Proto: http\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], "app2");
    assert!(lines.contains(&"x-forwarded-proto: https"), "{body}");
    assert!(
        lines.contains(&"forwarded: for=127.0.0.1;proto=https;host=\"site.example\""),
        "{body}"
    );
    assert!(!lines.contains(&"x-forwarded-proto: http"), "{body}");

    // HTTP/2, agreed by ALPN (no prior-knowledge sniffing involved).
    let s = connect(&ca.client(&[b"h2", b"http/1.1"]), lab.front, "site.example").await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let got = get_h2_on(s, "https", &[("site.example", "/h2", None)]).await;
    assert_eq!(got[0].0, 200, "{}", got[0].1);
    let lines: Vec<&str> = got[0].1.lines().collect();
    assert_eq!(lines[..2], ["app2", "GET /h2 HTTP/1.1"], "{}", got[0].1);
    assert!(lines.contains(&"x-forwarded-proto: https"), "{}", got[0].1);
    assert!(
        lines.contains(&"forwarded: for=127.0.0.1;proto=https;host=\"site.example\""),
        "{}",
        got[0].1
    );

    // A client offering no ALPN: HTTP/1.1 by the first bytes, as on plain TCP.
    let s = connect(&ca.client(&[]), lab.front, "site.example").await;
    assert_eq!(s.get_ref().1.alpn_protocol(), None);
    let (status, body) = exchange_on(
        s,
        "GET / HTTP/1.1\r\nHost: site.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("x-forwarded-proto: https\n"), "{body}");

    // TLS 1.2 is served too, and counted as such.
    let s = connect(
        &ca.client_of(&[b"http/1.1"], &[&rustls::version::TLS12]),
        lab.front,
        "site.example",
    )
    .await;
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let (status, body) = exchange_on(
        s,
        "GET / HTTP/1.1\r\nHost: site.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // The plain frontend beside it still speaks plain HTTP, and says so.
    let (status, body) = get_host(plain, "site.example", "/").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("x-forwarded-proto: http\n"), "{body}");
    assert!(body.contains("proto=http;"), "{body}");

    let metrics = render(&lab);
    assert!(
        metrics.contains("portcullis_tls_handshakes_total{result=\"ok\",version=\"TLSv1.3\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_tls_handshakes_total{result=\"ok\",version=\"TLSv1.2\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("portcullis_tls_handshakes_total{result=\"failed\",version=\"unknown\"} 0"),
        "{metrics}"
    );
}

#[test]
fn portcullis_check_reads_the_certificates_relative_to_the_rule_file() {
    let ca = Ca::new();
    let site = ca.issue("site", &["site.example"]);
    let other = ca.issue("other", &["other.example"]);
    let rules = |key: &str| {
        format!(
            r#"{{ "version": 1,
  "containers": {{ "app": {{ "address": "198.19.0.2" }} }},
  "frontends": [ {{ "name": "secure", "listen": "127.0.0.1:8443", "default_pool": "app",
    "tls": {{ "certificates": [ {{ "cert": "site.pem", "key": "{key}" }} ] }} }} ],
  "pools": {{ "app": {{ "members": ["app:80"] }} }} }}"#
        )
    };
    let check = |text: String| {
        let path = ca.dir.path().join("rules.json");
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("check")
            .arg(&path)
            .output()
            .expect("run portcullis check");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The files are found beside the rule file, wherever check runs.
    let (code, out, err) = check(rules("site.key"));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("valid: 1 containers"), "{out}");
    let (code, _, err) = check(rules("other.key"));
    assert_eq!(code, Some(1), "{err}");
    let want = format!(
        "rules.json:4:61: key {} does not match certificate {}",
        other.key.display(),
        site.cert.display()
    );
    assert!(err.trim_end().ends_with(&want), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_exact_then_wildcard_then_the_first() {
    let member = Upstream::start(ip(2), "app2").await;
    let ca = Ca::new();
    // The first is the default: it also names the loopback address, which
    // a client connecting by address checks it against (sending no SNI).
    let a = ca.issue("a", &["a.example", "127.0.0.1"]);
    let b = ca.issue("b", &["b.example", "B2.example"]);
    let wild = ca.issue("wild", &["*.wild.example"]);
    let lab = lab(&rules(
        member.addr,
        plain_addr(),
        &tls_json(&[&a, &b, &wild]),
    ))
    .await;
    let client = ca.client(&[b"http/1.1"]);
    for (name, want) in [
        ("a.example", &a),
        ("b.example", &b),
        ("b2.example", &b),
        ("x.wild.example", &wild),
        ("127.0.0.1", &a),
    ] {
        let s = connect(&client, lab.front, name).await;
        assert!(served(&s) == want.der, "{name}: another certificate served");
        let (status, body) = exchange_on(
            s,
            &format!("GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 200, "{name}: {body}");
    }
    // A name no certificate has gets the first (the client refuses it:
    // not valid for that name), and a wildcard covers one label only.
    let snap = lab.state.load();
    let fe = snap.tls.at(lab.front).expect("a TLS frontend");
    assert_eq!(fe.certificate_for(Some("other.test")), 0);
    assert_eq!(fe.certificate_for(Some("x.y.wild.example")), 0);
    assert_eq!(fe.certificate_for(Some("wild.example")), 0);
    assert_eq!(fe.certificate_for(Some("X.Wild.Example.")), 2);
    assert_eq!(fe.certificate_for(None), 0);
    let tcp = TcpStream::connect(lab.front).await.unwrap();
    let err = client
        .connect(ServerName::try_from("other.test").unwrap(), tcp)
        .await
        .expect_err("the default certificate does not name other.test");
    assert!(err.to_string().contains("not valid for name"), "{err}");

    // Each certificate's expiry is a gauge, by frontend and file.
    let metrics = render(&lab);
    for c in [&a, &b, &wild] {
        let series = format!(
            "portcullis_tls_certificate_expiry_timestamp_seconds{{frontend=\"secure\",certificate=\"{}\"}} ",
            c.cert.display()
        );
        assert!(metrics.contains(&series), "{series} in {metrics}");
    }
}

/// The certificates `text` names, loaded as the daemon loads them.
fn load(text: &str) -> Result<portcullis::tls::Certificates, String> {
    let set = portcullis::rules::parse("rules.json", text).map_err(|e| e.to_string())?;
    portcullis::tls::load(&set, Path::new("."), SystemTime::now()).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificates_are_refused_and_a_good_one_swaps_without_dropping_a_connection() {
    let member = Upstream::start(ip(2), "app2").await;
    let ca = Ca::new();
    let old = ca.issue("old", &["site.example"]);
    let plain = plain_addr();
    let lab = lab(&rules(member.addr, plain, &tls_json(&[&old]))).await;
    let front = lab.front.to_string();
    let client = ca.client(&[b"http/1.1"]);
    let reloaded = |tls: &str| rules(member.addr, plain, tls).replace("@FRONT@", &front);

    // A key that belongs to another certificate.
    let other = ca.issue("other", &["site.example"]);
    let mismatched = Issued {
        key: other.key.clone(),
        ..ca.issue("new", &["site.example"])
    };
    let err = load(&reloaded(&tls_json(&[&old, &mismatched]))).unwrap_err();
    let want = format!(
        "key {} does not match certificate {}",
        other.key.display(),
        mismatched.cert.display()
    );
    assert!(err.starts_with("rules.json:4:"), "{err}");
    assert!(err.ends_with(&want), "{err}");

    // Expired (notAfter in the past).
    let expired = ca.issue_with("expired", &["site.example"], |p| {
        p.not_before = rcgen::date_time_ymd(2019, 1, 1);
        p.not_after = rcgen::date_time_ymd(2020, 1, 1);
    });
    let err = load(&reloaded(&tls_json(&[&expired]))).unwrap_err();
    assert!(
        err.contains(&format!(
            "certificate {} expired at",
            expired.cert.display()
        )),
        "{err}"
    );

    // A file that cannot be read, one without a certificate, no certificates.
    let missing = Issued {
        cert: ca.dir.path().join("missing.pem"),
        ..old.clone()
    };
    let err = load(&reloaded(&tls_json(&[&missing]))).unwrap_err();
    assert!(
        err.contains(&format!("cannot read cert file {}", missing.cert.display())),
        "{err}"
    );
    let empty = ca.dir.path().join("empty.pem");
    std::fs::write(&empty, "not PEM\n").unwrap();
    let no_cert = Issued {
        cert: empty.clone(),
        ..old.clone()
    };
    let err = load(&reloaded(&tls_json(&[&no_cert]))).unwrap_err();
    assert!(
        err.contains(&format!("no certificate in {}", empty.display())),
        "{err}"
    );
    let err = load(&reloaded(r#""tls": { "certificates": [] }"#)).unwrap_err();
    assert!(err.contains("at least one certificate"), "{err}");

    // None of that was published: the old certificate is still served.
    let s = connect(&client, lab.front, "site.example").await;
    assert!(served(&s) == old.der);
    drop(s);

    // A connection open before a good reload keeps its session.
    let mut kept = connect(&client, lab.front, "site.example").await;
    let ask = "GET / HTTP/1.1\r\nHost: site.example\r\n\r\n";
    assert_eq!(read_response(&mut kept, ask).await, 200);

    let new = ca.issue("renewed", &["site.example"]);
    let certs = load(&reloaded(&tls_json(&[&new]))).expect("a good certificate loads");
    let cur = lab.state.load_full();
    lab.state.store(Arc::new(Snapshot {
        policy: cur.policy.clone(),
        dir: cur.dir.clone(),
        version: cur.version + 1,
        lb: cur.lb.clone(),
        tls: Arc::new(certs),
    }));
    let s = connect(&client, lab.front, "site.example").await;
    assert!(
        served(&s) == new.der,
        "new connections get the new certificate"
    );
    assert!(served(&kept) == old.der);
    assert_eq!(
        read_response(&mut kept, ask).await,
        200,
        "the old session goes on"
    );
}

/// Sends `head` on a kept-alive TLS connection and reads one response
/// (its body has a content-length): the status.
async fn read_response(s: &mut TlsStream<TcpStream>, head: &str) -> u16 {
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("response in time")
            .expect("read");
        assert!(n > 0, "closed before a full response");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse().ok())
            .expect("content-length");
        if body.len() >= len {
            return head
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_slow_handshakes_are_closed_and_counted() {
    let Site {
        _member, ca, lab, ..
    } = site_lab("", "").await;

    // Plain HTTP to the TLS port: no handshake, closed.
    let s = TcpStream::connect(lab.front).await.unwrap();
    let got = read_all(s, "GET / HTTP/1.1\r\nHost: site.example\r\n\r\n").await;
    assert!(!got.contains("HTTP/1.1"), "{got}");

    // A client that says nothing: closed after header_timeout_ms (500).
    let mut s = TcpStream::connect(lab.front).await.unwrap();
    let started = std::time::Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut [0u8; 64]))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() >= Duration::from_millis(400));

    // A client that offers only an unknown ALPN protocol is refused.
    let tcp = TcpStream::connect(lab.front).await.unwrap();
    let name = ServerName::try_from("site.example").unwrap();
    assert!(ca.client(&[b"spdy/3"]).connect(name, tcp).await.is_err());

    let metrics = render(&lab);
    assert!(
        metrics
            .contains("portcullis_tls_handshakes_total{result=\"failed\",version=\"unknown\"} 3"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_per_source_bounds_handshakes() {
    let Site {
        _member, ca, lab, ..
    } = site_lab("", r#", "max_connections_per_source": 1"#).await;
    let client = ca.client(&[b"http/1.1"]);
    // One connection open, even before its handshake: the next one from the
    // same address is closed without one.
    let first = TcpStream::connect(lab.front).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let tcp = TcpStream::connect(lab.front).await.unwrap();
    let name = ServerName::try_from("site.example").unwrap();
    assert!(client.connect(name, tcp).await.is_err());
    drop(first);
    // Once it is gone, a client is admitted again.
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let tcp = TcpStream::connect(lab.front).await.unwrap();
        let name = ServerName::try_from("site.example").unwrap();
        if let Ok(s) = client.connect(name, tcp).await {
            let ask = "GET / HTTP/1.1\r\nHost: site.example\r\nConnection: close\r\n\r\n";
            assert_eq!(exchange_on(s, ask).await.0, 200);
            ok = true;
            break;
        }
    }
    assert!(ok, "admitted again once the first connection closed");
    let metrics = render(&lab);
    assert!(
        metrics.contains(
            "portcullis_refusals_total{status=\"429\",rule=\"limits.max_connections_per_source\"}"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_http_answers_308_to_the_same_host_and_target_over_https() {
    let redirect = plain_addr();
    let fields = format!(r#""redirect_http": "{redirect}", "#);
    let Site {
        _member, ca, lab, ..
    } = site_lab(&fields, "").await;
    let raw = |head: &'static str| async move {
        let s = TcpStream::connect(redirect)
            .await
            .expect("the redirect listener");
        read_all(s, head).await
    };
    let got = raw("GET /a/b?c=1 HTTP/1.1\r\nHost: Site.Example\r\n\r\n").await;
    let want = format!(
        "location: https://site.example:{}/a/b?c=1\r\n",
        lab.front.port()
    );
    assert!(
        got.starts_with("HTTP/1.1 308 Permanent Redirect\r\n"),
        "{got}"
    );
    assert!(got.contains(&want), "{got}");
    assert!(
        got.ends_with("\r\n\r\n"),
        "no body, nothing from the member: {got}"
    );
    // A POST keeps its method under 308; its body is not forwarded anywhere.
    let got =
        raw("POST /form HTTP/1.1\r\nHost: site.example\r\nContent-Length: 3\r\n\r\nabc").await;
    assert!(got.starts_with("HTTP/1.1 308 "), "{got}");
    // No usable Host, or a target that is no path: 400, no Location.
    for bad in [
        "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        "GET http://other.example/ HTTP/1.1\r\nHost: site.example\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: site.example\r\n\r\n",
    ] {
        let got = raw(bad).await;
        assert!(got.starts_with("HTTP/1.1 400 "), "{bad:?}: {got}");
        assert!(!got.contains("location:"), "{got}");
    }
    // Where it points, the frontend answers over TLS.
    let s = connect(&ca.client(&[b"http/1.1"]), lab.front, "site.example").await;
    let (status, body) = exchange_on(
        s,
        "GET /a/b?c=1 HTTP/1.1\r\nHost: site.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsts_is_added_to_responses_over_http1_and_h2_but_not_on_plain_frontends() {
    let hsts = r#""hsts": { "max_age_s": 31536000, "include_subdomains": true }, "#;
    let Site {
        _member,
        ca,
        plain,
        lab,
        ..
    } = site_lab(hsts, "").await;
    let ask = "GET / HTTP/1.1\r\nHost: site.example\r\nConnection: close\r\n\r\n";

    // HTTP/1.1: the field in the head the client reads.
    let s = connect(&ca.client(&[b"http/1.1"]), lab.front, "site.example").await;
    let text = read_all(s, ask).await;
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    assert!(head.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(
        head.matches("strict-transport-security: max-age=31536000; includeSubDomains\r\n")
            .count(),
        1,
        "{head}"
    );

    // HTTP/2: the same field on the stream's response.
    let s = connect(&ca.client(&[b"h2"]), lab.front, "site.example").await;
    let (client, conn) = h2::client::handshake(s).await.expect("h2 handshake");
    let driver = tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::builder()
        .uri("https://site.example/")
        .body(())
        .unwrap();
    let (response, _) = client.send_request(req, true).unwrap();
    let res = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("response in time")
        .expect("response");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()
            .get_all("strict-transport-security")
            .iter()
            .collect::<Vec<_>>(),
        ["max-age=31536000; includeSubDomains"]
    );
    driver.abort();

    // A plain frontend never says it (RFC 6797: only over a secure transport).
    let text = read_all(TcpStream::connect(plain).await.unwrap(), ask).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        !text
            .to_ascii_lowercase()
            .contains("strict-transport-security"),
        "{text}"
    );
}
