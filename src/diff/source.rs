//! Reading the two sides of a diff: a file path, or `REV:PATH` read
//! through `git show` (so `main:rules/prod.json` is the file as committed
//! on `main`). Both are validated and compiled whole before any comparison.

use std::path::Path;
use std::process::Command;

use crate::policy::Policy;
use crate::rules;

/// Why a side could not be read (one sentence each).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot run git to read {spec}: {reason}")]
    NoGit { spec: String, reason: String },
    #[error("cannot read {spec} from git: {reason}")]
    Git { spec: String, reason: String },
    #[error("{0}")]
    Rules(#[from] rules::RuleError),
}

/// Loads and compiles one side. An existing file wins over the `REV:PATH`
/// reading (a path may contain `:`).
pub fn load(spec: &str) -> Result<Policy, SourceError> {
    let set = if Path::new(spec).exists() || !spec.contains(':') {
        rules::load(Path::new(spec))?
    } else {
        let text = git_show(spec)?;
        rules::parse(spec, &text)?
    };
    Ok(Policy::compile(set)?)
}

fn git_show(spec: &str) -> Result<String, SourceError> {
    let out = Command::new("git")
        .args(["show", "--no-textconv", spec])
        .output()
        .map_err(|e| SourceError::NoGit {
            spec: spec.to_owned(),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("git show failed")
            .trim()
            .trim_start_matches("fatal: ")
            .to_owned();
        return Err(SourceError::Git {
            spec: spec.to_owned(),
            reason: first,
        });
    }
    String::from_utf8(out.stdout).map_err(|_| SourceError::Git {
        spec: spec.to_owned(),
        reason: "the file is not UTF-8".to_owned(),
    })
}
