//! `portcullis diff` from the outside: `REV:PATH` through git, the error
//! sentences and their exit status (3, distinct from the verdicts), and
//! `--fail-on`.

use std::path::Path;
use std::process::Command;

const BEFORE: &str = include_str!("../rules/diff/before.json");
const NARROW: &str = include_str!("../rules/diff/narrow.json");
const AFTER: &str = include_str!("../rules/diff/after.json");

fn run(dir: &Path, args: &[&str], path_env: Option<&str>) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    c.args(args).current_dir(dir);
    if let Some(p) = path_env {
        c.env("PATH", p);
    }
    let out = c.output().expect("portcullis runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn git(dir: &Path, args: &[&str]) {
    let st = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git is installed (needed by this test)");
    assert!(
        st.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&st.stderr)
    );
}

fn one_sentence(err: &str) {
    assert!(err.starts_with("portcullis: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
}

#[test]
fn reads_the_old_side_from_git() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("rules")).unwrap();
    std::fs::write(d.join("rules/prod.json"), BEFORE).unwrap();
    git(d, &["init", "-q"]);
    git(d, &["add", "rules/prod.json"]);
    git(d, &["commit", "-qm", "rules"]);
    std::fs::write(d.join("rules/prod.json"), AFTER).unwrap();

    let (code, out, err) = run(
        d,
        &["diff", "main:rules/prod.json", "rules/prod.json"],
        None,
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.starts_with("diff main:rules/prod.json -> rules/prod.json\n"),
        "{out}"
    );
    assert!(
        out.contains("old main:rules/prod.json:11:9 (access[0].http[0])"),
        "{out}"
    );
    assert!(
        out.contains("new rules/prod.json:15:5 (access[1])"),
        "{out}"
    );

    // Unchanged: exit 0, nothing reported.
    let (code, out, _) = run(
        d,
        &["diff", "main:rules/prod.json", "main:rules/prod.json"],
        None,
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.ends_with("none: 0 widen, 0 narrow, 0 unknown, 0 neutral change(s)\n"),
        "{out}"
    );

    // A missing revision or path: one sentence, exit 3.
    for spec in ["nosuchbranch:rules/prod.json", "main:rules/nosuch.json"] {
        let (code, out, err) = run(d, &["diff", spec, "rules/prod.json"], None);
        assert_eq!(code, 3, "{spec}: {out}{err}");
        assert!(out.is_empty());
        one_sentence(&err);
        assert!(
            err.contains(&format!("cannot read {spec} from git: ")),
            "{err}"
        );
    }

    // No git at all.
    let (code, _, err) = run(
        d,
        &["diff", "main:rules/prod.json", "rules/prod.json"],
        Some(""),
    );
    assert_eq!(code, 3, "{err}");
    one_sentence(&err);
    assert!(
        err.contains("cannot run git to read main:rules/prod.json: "),
        "{err}"
    );
}

#[test]
fn bad_files_exit_3_with_their_position() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("good.json"), BEFORE).unwrap();
    std::fs::write(
        d.join("bad.json"),
        BEFORE.replace("\"ports\": [80]", "\"ports\": [0]"),
    )
    .unwrap();
    for args in [
        ["diff", "bad.json", "good.json"],
        ["diff", "good.json", "bad.json"],
    ] {
        let (code, out, err) = run(d, &args, None);
        assert_eq!(code, 3, "{out}{err}");
        assert!(out.is_empty(), "nothing compared: {out}");
        one_sentence(&err);
        assert!(err.starts_with("portcullis: bad.json:9:"), "{err}");
    }
    let (code, _, err) = run(d, &["diff", "good.json", "missing.json"], None);
    assert_eq!(code, 3);
    one_sentence(&err);
    // A usage error is 3 as well, not 2 ("widening").
    let (code, _, _) = run(d, &["diff", "good.json"], None);
    assert_eq!(code, 3);
    let (code, _, _) = run(
        d,
        &["diff", "--fail-on", "maybe", "good.json", "good.json"],
        None,
    );
    assert_eq!(code, 3);
}

#[test]
fn fail_on_chooses_the_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("before.json"), BEFORE).unwrap();
    std::fs::write(d.join("narrow.json"), NARROW).unwrap();
    std::fs::write(d.join("after.json"), AFTER).unwrap();
    let cases: &[(&str, &str, &str, i32)] = &[
        ("any", "before.json", "before.json", 0),
        ("any", "before.json", "narrow.json", 1),
        ("any", "before.json", "after.json", 2),
        ("any", "narrow.json", "before.json", 2),
        ("widen", "before.json", "narrow.json", 0),
        ("widen", "before.json", "after.json", 2),
        ("narrow", "before.json", "narrow.json", 1),
        ("narrow", "before.json", "after.json", 1),
        ("narrow", "narrow.json", "before.json", 0),
        ("never", "before.json", "after.json", 0),
    ];
    for &(fail_on, old, new, want) in cases {
        let (code, out, err) = run(d, &["diff", "--fail-on", fail_on, old, new], None);
        assert_eq!(code, want, "--fail-on {fail_on} {old} {new}: {out}{err}");
        let (code, out, _) = run(d, &["diff", "--json", "--fail-on", fail_on, old, new], None);
        assert_eq!(code, want);
        let v: serde_json::Value = serde_json::from_str(&out).expect("one JSON object");
        assert_eq!(v["exit"], want);
    }
}
