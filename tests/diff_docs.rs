//! docs/wiki/reviewing-changes.md runs: each ```json block preceded by
//! `<!-- file: PATH -->` must be exactly that file of the repository (the
//! page shows what the commands read), and every `$ portcullis …` line of a
//! ```console block is run from the repository root, its output compared
//! with the page; a following `$ echo $?` line gives its exit status.

use std::path::Path;
use std::process::Command;

const PAGE: &str = include_str!("../docs/wiki/reviewing-changes.md");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// (kind, file named before it, body) of each fenced block.
fn blocks(text: &str) -> Vec<(String, Option<String>, String)> {
    let mut out = Vec::new();
    let mut file: Option<String> = None;
    let mut current: Option<(String, Option<String>, String)> = None;
    for line in text.lines() {
        match &mut current {
            None => {
                if let Some(f) = line
                    .strip_prefix("<!-- file: ")
                    .and_then(|l| l.strip_suffix(" -->"))
                {
                    file = Some(f.to_owned());
                } else if let Some(kind) = line.strip_prefix("```") {
                    current = Some((kind.to_owned(), file.take(), String::new()));
                }
            }
            Some(_) if line == "```" => out.extend(current.take()),
            Some((_, _, body)) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    out
}

#[test]
fn reviewing_changes_page_runs() {
    let (mut files, mut commands, mut codes) = (0, 0, 0);
    for (kind, file, body) in blocks(PAGE) {
        match kind.as_str() {
            "json" => {
                let f = file.expect("every rule file on the page names its file");
                let disk = std::fs::read_to_string(root().join(&f)).expect("named file exists");
                assert_eq!(body, disk, "the page shows {f} as it is in the repository");
                files += 1;
            }
            "console" => {
                let mut last: Option<(String, i32)> = None;
                let mut lines = body.lines().peekable();
                while let Some(cmd) = lines.next() {
                    let mut want = String::new();
                    while let Some(l) = lines.next_if(|l| !l.starts_with("$ ")) {
                        want.push_str(l);
                        want.push('\n');
                    }
                    if cmd == "$ echo $?" {
                        let (c, code) = last.take().expect("`echo $?` follows a command");
                        assert_eq!(format!("{code}\n"), want, "exit status of `{c}`");
                        codes += 1;
                        continue;
                    }
                    let args: Vec<&str> = cmd
                        .strip_prefix("$ portcullis ")
                        .unwrap_or_else(|| panic!("console line is no command: {cmd}"))
                        .split_whitespace()
                        .collect();
                    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
                        .args(&args)
                        .current_dir(root())
                        .output()
                        .expect("portcullis runs");
                    let stdout = String::from_utf8_lossy(&out.stdout);
                    assert_eq!(
                        stdout,
                        want,
                        "output of `{cmd}` (stderr: {})",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    last = Some((cmd.to_owned(), out.status.code().unwrap_or(-1)));
                    commands += 1;
                }
            }
            _ => {}
        }
    }
    assert!(
        files >= 2 && commands >= 2 && codes >= 2,
        "{files} files, {commands} commands, {codes} exit codes"
    );
}

#[test]
fn wiki_index_and_readme_mention_diff() {
    let index = include_str!("../docs/wiki/README.md");
    assert!(
        index.contains("(reviewing-changes.md)"),
        "wiki index links the page"
    );
    let readme = include_str!("../README.md");
    assert!(
        readme.contains("| `portcullis diff "),
        "README command table has diff"
    );
}
