//! The rule file: loading with positions, and validation of the whole
//! contract of `spec/rules.md` before anything is applied.
//!
//! Loading never half-succeeds: the result is either a [`RuleSet`] whose
//! every cross-reference holds, or one [`RuleError`] naming `file:line:col`
//! and what was expected. The running daemon keeps its previous rules when a
//! reload fails.

pub mod locate;
pub mod model;
mod validate;

use std::fmt;
use std::path::Path;

pub use locate::{Locations, Pos};
pub use model::RuleFile;

/// A rule-file problem, as one sentence with a position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("cannot read rule file {file}: {reason}")]
    Io { file: String, reason: String },
    #[error("{file}:{}:{}: {message}", pos.line, pos.col)]
    At {
        file: String,
        pos: Pos,
        message: String,
    },
}

/// A position in a rule file together with the JSON path of the value,
/// e.g. `rules.json:12:9 (access[0].http[1])`. This is how rules are named
/// in logs, `explain` and nftables comments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    pub file: std::sync::Arc<str>,
    pub pos: Pos,
    pub path: String,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{} ({})",
            self.file, self.pos.line, self.pos.col, self.path
        )
    }
}

/// A loaded and fully validated rule file.
#[derive(Debug, Clone)]
pub struct RuleSet {
    /// The file name as given (used in positions).
    pub file: std::sync::Arc<str>,
    pub rules: RuleFile,
    pub locations: Locations,
}

impl RuleSet {
    /// Names the value at a JSON path (`access[0].http[1]`).
    pub fn rule_ref(&self, path: &str) -> RuleRef {
        RuleRef {
            file: self.file.clone(),
            pos: self.locations.of(path),
            path: path.to_owned(),
        }
    }

    /// A one-line summary for `portcullis check`.
    pub fn summary(&self) -> String {
        let r = &self.rules;
        format!(
            "{}: valid: {} containers, {} access entries, {} frontends, {} pools, {} cached services",
            self.file,
            r.containers.len(),
            r.access.len(),
            r.frontends.len(),
            r.pools.len(),
            r.cache.len()
        )
    }
}

/// Reads and validates a rule file.
pub fn load(path: &Path) -> Result<RuleSet, RuleError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| RuleError::Io {
        file: file.clone(),
        reason: e.to_string(),
    })?;
    parse(&file, &text)
}

/// Parses and validates rule-file text; `file` is used in messages only.
pub fn parse(file: &str, text: &str) -> Result<RuleSet, RuleError> {
    let rules: RuleFile = serde_json::from_str(text).map_err(|e| RuleError::At {
        file: file.to_owned(),
        pos: Pos {
            line: e.line().max(1),
            col: e.column().max(1),
        },
        message: serde_message(&e),
    })?;
    let locations = Locations::scan(text);
    if let Some((path, pos)) = &locations.duplicate {
        return Err(RuleError::At {
            file: file.to_owned(),
            pos: *pos,
            message: format!("duplicate key `{path}`: each key may appear only once"),
        });
    }
    let set = RuleSet {
        file: file.into(),
        rules,
        locations,
    };
    validate::validate(&set).map_err(|(path, message)| RuleError::At {
        file: file.to_owned(),
        pos: set.locations.of(&path),
        message,
    })?;
    Ok(set)
}

/// serde_json's message without its trailing " at line L column C" (the
/// position is printed in front instead).
fn serde_message(e: &serde_json::Error) -> String {
    let s = e.to_string();
    let msg = match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    };
    match e.classify() {
        serde_json::error::Category::Eof => format!("unexpected end of file: {msg}"),
        _ => msg,
    }
}
