//! Entry points shared by the fuzz targets (`fuzz/`), the property tests
//! and the replay of saved crash inputs (`fuzz/regressions/`): each runs
//! one parser on arbitrary bytes and checks what must hold whatever the
//! input. A panic here is a finding; nothing in this module is reachable
//! from the network.

use crate::policy::normalize::{has_path_prefix, normalize_path, split_target};
use crate::proxy::body::{copy_body, BodyError, Inbound};
use crate::proxy::head::{self, Framing, HeadError, MAX_HEADERS};

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
        let targets: [(&str, Target); 3] = [
            ("request_head", request_head),
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
