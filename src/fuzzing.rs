//! Entry points shared by the fuzz targets (`fuzz/`), the property tests
//! and the replay of saved crash inputs (`fuzz/regressions/`): each runs
//! one parser on arbitrary bytes and checks what must hold whatever the
//! input. A panic here is a finding; nothing in this module is reachable
//! from the network.

use crate::proxy::body::{copy_body, BodyError, Inbound};
use crate::wire::head::{self, Framing, HeadError, MAX_HEADERS};
use crate::wire::normalize::{has_path_prefix, normalize_path, split_target};

/// The HTTP/1 request reader: head boundary, strict parse, target and path
/// handling, then the body per the parsed framing (chunked decoding
/// included). Checks: a parsed head is never refused by a split read, the
/// re-encoded body is well-formed chunked, and no limit is exceeded.
pub fn request_head(data: &[u8]) {
    let Ok(Some(end)) = head::head_end(data) else {
        return;
    };
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let parsed = match head::parse_request(&data[..end], &mut storage) {
        Ok(h) => h,
        Err(HeadError::Malformed(_) | HeadError::Unsupported(_) | HeadError::TooManyHeaders) => {
            return
        }
        Err(HeadError::TooLarge) => panic!("parse_request does not judge sizes"),
    };
    assert!(parsed.target.bytes().all(|b| b > 0x20 && b < 0x7f));
    if let Ok(target) = head::origin_form(parsed.target, parsed.headers) {
        assert!(target.starts_with('/'));
        let (path, _) = split_target(target);
        if let Ok(n) = normalize_path(path) {
            assert!(n.starts_with('/'));
        }
    }
    let framing = parsed.framing;
    let rest = &data[end..];
    let rt = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(_) => return,
    };
    let (result, out) = rt.block_on(async {
        let mut src = Inbound::new(rest);
        let mut out = Vec::new();
        let r = copy_body(&mut src, &mut out, framing, Some(1 << 20)).await;
        (r, out)
    });
    match (framing, result) {
        (Framing::Length(n), Ok(copied)) => {
            assert_eq!(copied, n);
            assert_eq!(out.len() as u64, n);
        }
        (Framing::Chunked, Ok(copied)) => {
            assert!(copied <= 1 << 20, "the body limit holds");
            assert!(out.ends_with(b"0\r\n\r\n"), "a complete chunked body");
            // The re-encoded body parses back to the same payload size.
            let again = rt.block_on(async {
                let mut src = Inbound::new(&out[..]);
                copy_body(&mut src, &mut tokio::io::sink(), Framing::Chunked, None).await
            });
            assert_eq!(again.ok(), Some(copied));
        }
        (_, Err(BodyError::TooLarge)) => {}
        (_, Err(_)) | (_, Ok(_)) => {}
    }
}

/// The rule files of [`forwarded_head`], one per `headers_with_underscores`.
const FORWARD_RULES: &str = r#"{"version": 1,
  "containers": { "app": { "address": "198.19.0.2" }, "svc": { "address": "198.19.0.3" } },
  "access": [ { "from": "app", "to": "svc", "ports": [80], "http": [
    { "path_prefix": "/", "headers": { "X-Bar": false } },
    { "methods": ["GET", "POST", "PUT"], "path_prefix": "/t", "headers": { "X-Token": { "prefix": "t" } } },
    { "methods": ["CONNECT"] } ] } ],
  "proxy": { "headers_with_underscores": "MODE" } }"#;

struct Forwarding {
    policy: std::sync::Arc<crate::policy::Policy>,
    metrics: crate::state::metrics::Metrics,
    series: crate::state::metrics::series::Series,
    sources: crate::proxy::limits::SourceTable,
}

fn forwarding(mode: usize) -> &'static Forwarding {
    static ALL: std::sync::OnceLock<Vec<Forwarding>> = std::sync::OnceLock::new();
    let all = ALL.get_or_init(|| {
        ["reject_lookalikes", "drop", "reject"]
            .iter()
            .map(|m| {
                let text = FORWARD_RULES.replace("MODE", m);
                let set = crate::rules::parse("fuzz.json", &text)
                    .unwrap_or_else(|e| panic!("the fuzz rule file is valid: {e}"));
                let policy = std::sync::Arc::new(
                    crate::policy::Policy::compile(set)
                        .unwrap_or_else(|e| panic!("the fuzz rule file compiles: {e}")),
                );
                let lb = std::sync::Arc::new(crate::balance::Balancer::compile(&policy));
                let metrics = crate::state::metrics::Metrics::default();
                Forwarding {
                    series: crate::state::metrics::series::Series::build(
                        &policy,
                        &lb,
                        &metrics.labelled,
                    ),
                    policy,
                    metrics,
                    sources: Default::default(),
                }
            })
            .collect()
    });
    &all[mode % all.len()]
}

/// Differential check of the upstream head (issue 9): the first byte picks
/// `headers_with_underscores`, the rest is a request head. For any request
/// the access-flow authorise step ([`crate::proxy::conn::authorise`], the
/// code the proxy runs) forwards, the head it wrote, parsed by `httparse`
/// on its own, has the client's method, the normalised path and the query,
/// exactly the framing the proxy streams the body by, the same values for
/// every field a rule or the proxy relies on, one `X-Portcullis-Source`
/// set by the proxy, and no underscore lookalike of a protected field.
pub fn forwarded_head(data: &[u8]) {
    use crate::policy::fields::{same_field, Underscores};
    use crate::proxy::conn::{authorise, Check, Flow, Plan, Resolved};
    use crate::proxy::limits::{self, Key, Scope, Source};
    use crate::wire::head::Tunnel;

    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let Ok(Some(end)) = head::head_end(data) else {
        return;
    };
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let Ok(req) = head::parse_request(&data[..end], &mut storage) else {
        return;
    };
    let fw = forwarding(mode as usize);
    let policy = &fw.policy;
    let resolved = Resolved {
        from: Some(0),
        entry: policy.entries.first(),
        key: Key {
            source: Source::Container(0),
            scope: Scope::Access(0),
        },
    };
    let flow = Flow {
        peer: ([198, 19, 0, 2], 40000).into(),
        dst: ([198, 19, 0, 3], 80).into(),
    };
    let lim = limits::effective(policy, resolved.entry);
    let check = Check {
        policy,
        resolved: &resolved,
        flow: &flow,
        limits: &lim,
        metrics: &fw.metrics,
        series: &fw.series,
        sources: &fw.sources,
        client: crate::proxy::downstream::ClientProtocol::Http1,
    };
    let mut out = Vec::new();
    let exchange = match authorise(&check, &req, &mut out) {
        Plan::Forward(x) => x,
        Plan::Refuse { refusal, .. } => {
            let code = refusal.status();
            assert!(matches!(code, 400 | 403 | 413 | 429), "status {code}");
            return;
        }
    };
    assert_eq!(
        exchange.framing, req.framing,
        "the body is streamed as parsed"
    );

    // The forwarded head, read by an independent parser.
    let mut fstorage = [httparse::EMPTY_HEADER; MAX_HEADERS + 8];
    let mut fwd = httparse::Request::new(&mut fstorage);
    let used = match fwd.parse(&out) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!(
            "the forwarded head does not parse: {other:?} {:?}",
            String::from_utf8_lossy(&out)
        ),
    };
    assert_eq!(used, out.len(), "the head ends where the proxy thinks");
    assert_eq!(fwd.method, Some(req.method));
    assert_eq!(fwd.version, Some(1));
    let target = fwd.path.unwrap_or_default();
    if req.tunnel == Some(Tunnel::Connect) {
        assert_eq!(target, req.target);
    } else {
        let client = head::origin_form(req.target, req.headers)
            .unwrap_or_else(|e| panic!("a forwarded target was in origin form: {e}"));
        let (cpath, cquery) = split_target(client);
        let (fpath, fquery) = split_target(target);
        let normal = normalize_path(cpath).unwrap_or_else(|e| panic!("normalised: {e}"));
        assert_eq!(fpath, normal, "the normalised path is forwarded");
        assert_eq!(
            normalize_path(fpath).as_deref(),
            Ok(fpath),
            "and it stays itself"
        );
        assert_eq!(fquery, cquery, "the query is forwarded as sent");
    }
    let fheaders = &*fwd.headers;
    let values = |hs: &[httparse::Header<'_>], name: &str| -> Vec<Vec<u8>> {
        hs.iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.to_vec())
            .collect()
    };
    // Framing: exactly the proxy's decision.
    let cl = values(fheaders, "content-length");
    let te = values(fheaders, "transfer-encoding");
    match req.framing {
        Framing::Length(n) => {
            assert_eq!(cl, [n.to_string().into_bytes()]);
            assert!(te.is_empty());
        }
        Framing::Chunked => {
            assert!(cl.is_empty());
            assert_eq!(te, [b"chunked".to_vec()]);
        }
        Framing::None | Framing::UntilClose => assert!(cl.is_empty() && te.is_empty()),
    }
    // Every field a rule or the proxy relies on, as the rules saw it.
    for p in policy.fields.protected() {
        match p {
            "content-length" | "transfer-encoding" => {}
            "x-portcullis-source" => {
                let all: Vec<&httparse::Header<'_>> =
                    fheaders.iter().filter(|h| same_field(h.name, p)).collect();
                assert_eq!(all.len(), 1, "one source header");
                assert_eq!((all[0].name, all[0].value), (p, &b"app"[..]));
            }
            "host" if values(req.headers, p).is_empty() => {
                assert_eq!(values(fheaders, p), [flow.dst.to_string().into_bytes()]);
            }
            _ => assert_eq!(
                values(fheaders, p),
                values(req.headers, p),
                "{p} reaches the upstream as checked"
            ),
        }
        for h in fheaders {
            assert!(
                !same_field(h.name, p) || h.name.eq_ignore_ascii_case(p),
                "lookalike {} of {p} forwarded",
                h.name
            );
        }
    }
    if policy.fields.underscores != Underscores::RejectLookalikes {
        assert!(fheaders.iter().all(|h| !h.name.contains('_')));
    }
    // Nothing hop-by-hop from the client (the proxy's own upgrade pair aside).
    for h in fheaders {
        if req.tunnel == Some(Tunnel::WebSocket) && (h.name == "connection" || h.name == "upgrade")
        {
            continue;
        }
        assert!(
            !head::is_hop_by_hop(h.name) || h.name == "transfer-encoding",
            "hop-by-hop {} forwarded",
            h.name
        );
    }
}

/// Path normalisation: a normalised path is absolute, has no dot or empty
/// segments, normalises to itself, and agrees with the prefix test.
pub fn path(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (raw, _) = split_target(text);
    let Ok(n) = normalize_path(raw) else {
        return;
    };
    assert!(n.starts_with('/'), "{n:?}");
    assert!(
        !n.contains("//") && !n.contains("/./") && !n.contains("/../"),
        "{n:?}"
    );
    assert!(!n.ends_with("/.") && !n.ends_with("/.."), "{n:?}");
    assert!(!n.bytes().any(|b| b == b'\\' || !(0x20..0x7f).contains(&b)));
    let again = normalize_path(&n);
    assert_eq!(again.as_deref(), Ok(&*n), "idempotent");
    assert!(has_path_prefix(&n, "/"));
    assert!(has_path_prefix(&n, &n));
}

/// The rule-file loader: any text either loads and compiles into a policy,
/// or is refused with a positioned error; never a panic.
pub fn rule_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match crate::rules::parse("fuzz.json", text) {
        Ok(set) => {
            let _ = crate::policy::Policy::compile(set);
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("fuzz.json"), "{msg}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Saved crash inputs (`fuzz/regressions/TARGET/*`) stay fixed.
    #[test]
    fn regressions_replay() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
        type Target = fn(&[u8]);
        let targets: [(&str, Target); 4] = [
            ("request_head", request_head),
            ("forwarded_head", forwarded_head),
            ("path", path),
            ("rule_file", rule_file),
        ];
        let mut replayed = 0;
        for (name, f) in targets {
            let dir = root.join(name);
            let entries =
                std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            for entry in entries.flatten() {
                let data = std::fs::read(entry.path()).expect("read a regression input");
                f(&data);
                replayed += 1;
            }
        }
        assert!(replayed >= 3, "the seed regressions are there");
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(500))]

        #[test]
        fn request_head_never_panics(
            head in "(GET|POST|PUT|CONNECT|G T|PRI) [ -~]{0,24} HTTP/1\\.[01]\r\n([A-Za-z_-]{1,16}:[ -~\t]{0,20}\r\n){0,6}\r\n",
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let mut data = head.into_bytes();
            data.extend_from_slice(&body);
            request_head(&data);
        }

        #[test]
        fn forwarded_heads_agree_with_the_checked_request(
            mode in 0u8..3,
            head in "(GET|POST|PUT|CONNECT) (/[a-zA-Z0-9./%;_-]{0,16}|[a-z]{1,4}:[0-9]{1,3}) HTTP/1\\.[01]\r\n((Host|X-Bar|X_Bar|X-Token|x_token|Connection|Content-Length|Transfer-Encoding|X-Portcullis[-_]Source|Upgrade|X-Other): ?[ -~]{0,12}\r\n){0,6}\r\n",
        ) {
            let mut data = vec![mode];
            data.extend_from_slice(head.as_bytes());
            forwarded_head(&data);
        }

        #[test]
        fn chunked_bodies_never_panic(
            chunks in proptest::collection::vec("[0-9a-fA-F;= x]{0,18}\r\n[a-z]{0,20}\r\n", 0..6),
        ) {
            let mut data = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            data.extend(chunks.concat().into_bytes());
            data.extend_from_slice(b"0\r\n\r\n");
            request_head(&data);
        }

        #[test]
        fn paths_normalise_safely(p in "/[a-z./%0-9A-F\\\\]{0,32}") {
            path(p.as_bytes());
        }

        #[test]
        fn rule_files_never_panic(
            text in r#"\{"version": ?1, ?"containers": ?\{("[a-z]{1,3}": ?\{"address": ?"[0-9.:a-f]{0,15}"\},? ?){0,3}\}(, ?"access": ?\[\{"from": ?"[a-z]{1,3}", ?"to": ?"[a-z]{1,3}", ?"ports": ?\[[0-9-]{1,6}\](, ?"http": ?\[\{"path_regex": ?"[()a-z*+?\\|]{0,8}"\}\])?\}\])?\}"#,
        ) {
            rule_file(text.as_bytes());
        }
    }
}
