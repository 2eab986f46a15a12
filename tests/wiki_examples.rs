//! Every ```json block in docs/wiki is a complete rule file: it must pass the
//! same validation as `portcullis check` (or, fenced as ```json invalid, be
//! refused with a positioned one-line error; after a line
//! `<!-- refused: MESSAGE -->` the error must contain MESSAGE). Documentation
//! that rots fails here.
//!
//! `check` also reads the certificates of TLS frontends. Examples name
//! them by paths relative to the rule file; here each block's are made
//! (a fresh key and certificate per entry, at test time) in a directory
//! standing for the rule file's, and loaded as `check` loads them.

use std::path::Path;

/// A rule-file example: `None` if it must load, `Some(message)` if it must
/// be refused (an empty message: any positioned error).
type Block = (Option<String>, String);

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut current: Option<Block> = None;
    let mut refused: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_end()) {
            (None, l) if l.starts_with("<!-- refused: ") => {
                refused = l
                    .strip_prefix("<!-- refused: ")
                    .and_then(|r| r.strip_suffix(" -->"))
                    .map(str::to_owned);
            }
            (None, "```json") => current = Some((refused.take(), String::new())),
            (None, "```json invalid") => {
                current = Some((Some(refused.take().unwrap_or_default()), String::new()))
            }
            (Some(_), "```") => out.extend(current.take()),
            (Some((_, body)), l) => {
                body.push_str(l);
                body.push('\n');
            }
            (None, _) => {}
        }
    }
    out
}

/// A directory holding a certificate and its key at every (relative) path
/// the TLS frontends of `set` name.
fn certificates_for(name: &str, set: &portcullis::rules::RuleSet) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for fe in &set.rules.frontends {
        for c in fe.tls.iter().flat_map(|t| &t.certificates) {
            for p in [&c.cert, &c.key] {
                assert!(
                    Path::new(p).is_relative(),
                    "{name}: name certificates relative to the rule file ({p}), so the example can be checked"
                );
            }
            let key = rcgen::KeyPair::generate().expect("key");
            let cert = rcgen::CertificateParams::new(vec!["example.test".to_owned()])
                .expect("params")
                .self_signed(&key)
                .expect("certificate");
            for (p, pem) in [(&c.cert, cert.pem()), (&c.key, key.serialize_pem())] {
                let path = dir.path().join(p);
                std::fs::create_dir_all(path.parent().expect("a file in a directory"))
                    .expect("mkdir");
                std::fs::write(path, pem).expect("write");
            }
        }
    }
    dir
}

#[test]
fn wiki_rule_examples_are_checked() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/wiki");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("docs/wiki exists") {
        let path = entry.expect("readable dir").path();
        if path.extension().and_then(|e| e.to_str()) != Some("md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable page");
        for (i, (refused, body)) in blocks(&text).into_iter().enumerate() {
            seen += 1;
            let name = format!("{}#{}", path.display(), i);
            let result = portcullis::rules::parse(&name, &body).and_then(|set| {
                let dir = certificates_for(&name, &set);
                portcullis::tls::load(&set, dir.path(), std::time::SystemTime::now())?;
                portcullis::policy::Policy::compile(set)
            });
            match (refused, result) {
                (None, Err(e)) => panic!("{name}: documented as valid but refused: {e}"),
                (Some(_), Ok(_)) => panic!("{name}: documented as invalid but accepted"),
                (Some(want), Err(e)) => {
                    let msg = e.to_string();
                    assert!(
                        msg.starts_with(&format!("{name}:")) && !msg.contains('\n'),
                        "{msg}"
                    );
                    assert!(
                        msg.contains(&want),
                        "{name}: refused with {msg:?}, documented as {want:?}"
                    );
                }
                (None, Ok(_)) => {}
            }
        }
    }
    assert!(
        seen >= 4,
        "expected rule examples in docs/wiki, found {seen}"
    );
}
