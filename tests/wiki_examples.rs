//! Every ```json block in docs/wiki is a complete rule file: it must pass the
//! same validation as `portcullis check` (or, fenced as ```json invalid, be
//! refused with a positioned one-line error; after a line
//! `<!-- refused: MESSAGE -->` the error must contain MESSAGE). Documentation
//! that rots fails here.

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
            let result = portcullis::rules::parse(&name, &body)
                .and_then(portcullis::policy::Policy::compile);
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
