//! docs/wiki/routing.md runs: every ```json block is put through the real
//! `portcullis check`, and every `$ portcullis …` line of a ```console
//! block is run against the rule file shown just before it, its output
//! compared with what the page says. (tests/wiki_examples.rs checks the
//! JSON of every wiki page through the library as well.)

use std::path::Path;
use std::process::Command;

const PAGE: &str = include_str!("../docs/wiki/routing.md");

enum Block {
    Json(String),
    Console(String),
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut current: Option<(bool, String)> = None;
    for line in text.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```json") => current = Some((true, String::new())),
            (None, "```console") => current = Some((false, String::new())),
            (Some((json, body)), "```") => {
                let body = std::mem::take(body);
                out.push(if *json {
                    Block::Json(body)
                } else {
                    Block::Console(body)
                });
                current = None;
            }
            (Some((_, body)), l) => {
                body.push_str(l);
                body.push('\n');
            }
            (None, _) => {}
        }
    }
    out
}

fn portcullis(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("portcullis runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn routing_page_examples_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut files, mut commands) = (0, 0);
    for block in blocks(PAGE) {
        match block {
            Block::Json(text) => {
                files += 1;
                std::fs::write(dir.path().join("rules.json"), text).unwrap();
                let (code, out, err) = portcullis(dir.path(), &["check", "rules.json"]);
                assert_eq!(
                    code, 0,
                    "example {files} refused by portcullis check: {err}"
                );
                assert!(out.starts_with("rules.json: valid:"), "{out}");
            }
            Block::Console(text) => {
                let mut lines = text.lines().peekable();
                while let Some(cmd) = lines.next() {
                    let args: Vec<&str> = cmd
                        .strip_prefix("$ portcullis ")
                        .unwrap_or_else(|| panic!("console line is no command: {cmd}"))
                        .split_whitespace()
                        .collect();
                    let mut want = String::new();
                    while let Some(l) = lines.next_if(|l| !l.starts_with("$ ")) {
                        want.push_str(l);
                        want.push('\n');
                    }
                    commands += 1;
                    let (code, out, err) = portcullis(dir.path(), &args);
                    assert_eq!(out, want, "output of `{cmd}` (stderr: {err})");
                    let want_code = if want.starts_with("routed") { 0 } else { 1 };
                    assert_eq!(code, want_code, "exit code of `{cmd}`");
                }
            }
        }
    }
    assert!(
        files >= 2 && commands >= 4,
        "{files} rule files, {commands} commands"
    );
}
