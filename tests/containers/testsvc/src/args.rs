//! A tiny command-line parser: `--flag value`, `--flag=value` and positionals.

use std::str::FromStr;

/// One command-line item.
pub enum Arg {
    /// `--name` (an inline `=value` is kept for [`Args::value`]).
    Flag(String),
    Positional(String),
}

pub struct Args {
    items: std::vec::IntoIter<String>,
    inline: Option<String>,
}

impl Args {
    pub fn new(items: Vec<String>) -> Self {
        Args {
            items: items.into_iter(),
            inline: None,
        }
    }

    /// The next item; a flag's inline value must be taken (or refused) before calling again.
    pub fn next_arg(&mut self) -> Result<Option<Arg>, String> {
        if let Some(v) = self.inline.take() {
            return Err(format!("unexpected value `{v}`"));
        }
        let Some(item) = self.items.next() else {
            return Ok(None);
        };
        if item == "-h" {
            return Ok(Some(Arg::Flag("--help".into())));
        }
        if item.len() > 2 && item.starts_with("--") {
            if let Some((name, value)) = item.split_once('=') {
                self.inline = Some(value.to_string());
                return Ok(Some(Arg::Flag(name.to_string())));
            }
            return Ok(Some(Arg::Flag(item)));
        }
        Ok(Some(Arg::Positional(item)))
    }

    /// The value of `flag`: inline (`--flag=v`) or the next item.
    pub fn value(&mut self, flag: &str) -> Result<String, String> {
        if let Some(v) = self.inline.take() {
            return Ok(v);
        }
        self.items
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))
    }

    /// The value of `flag`, parsed.
    pub fn parsed<T: FromStr>(&mut self, flag: &str) -> Result<T, String> {
        let v = self.value(flag)?;
        v.parse()
            .map_err(|_| format!("{flag}: invalid value `{v}`"))
    }
}
