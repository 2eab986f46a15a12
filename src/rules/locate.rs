//! Positions of JSON values, so that errors found *after* deserialisation
//! (unknown container, overlapping entries…) can still name `file:line:col`.
//!
//! serde_json reports positions for syntax, type and unknown-field errors,
//! but typed values carry no spans. This scanner walks the (already valid)
//! text once and records where each value starts, keyed by its JSON path
//! (`access[0].http[1]`, `containers.app1`). It also catches duplicate object
//! keys, which serde_json would otherwise resolve silently by keeping the
//! last one — unacceptable in a firewall rule file.

use std::collections::HashMap;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// Where every value of a JSON document starts.
#[derive(Debug, Clone, Default)]
pub struct Locations {
    map: HashMap<String, Pos>,
    /// The first duplicate key found: (path of the duplicate, its position).
    pub duplicate: Option<(String, Pos)>,
}

impl Locations {
    /// Position of the value at `path` or, failing that, of its nearest
    /// enclosing value (so an error always has some position).
    pub fn of(&self, path: &str) -> Pos {
        let mut p = path;
        loop {
            if let Some(pos) = self.map.get(p) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return self.map.get("").copied().unwrap_or(Pos { line: 1, col: 1 }),
            }
        }
    }

    /// Is there a value at exactly `path` (no fallback to a parent)?
    pub fn contains(&self, path: &str) -> bool {
        self.map.contains_key(path)
    }

    /// Scan `text`. Invalid JSON yields whatever was found before the error;
    /// syntax errors are reported by serde_json, not here.
    pub fn scan(text: &str) -> Locations {
        let mut s = Scanner {
            b: text.as_bytes(),
            i: 0,
            line: 1,
            line_start: 0,
            out: Locations::default(),
        };
        s.skip_ws();
        s.value(String::new());
        s.out
    }
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    line: usize,
    line_start: usize,
    out: Locations,
}

impl Scanner<'_> {
    fn pos(&self) -> Pos {
        // Columns count characters, not bytes.
        let col = String::from_utf8_lossy(&self.b[self.line_start..self.i])
            .chars()
            .count()
            + 1;
        Pos {
            line: self.line,
            col,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn bump(&mut self) {
        if self.peek() == Some(b'\n') {
            self.line += 1;
            self.line_start = self.i + 1;
        }
        self.i += 1;
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.bump();
        }
    }

    fn value(&mut self, path: String) {
        let pos = self.pos();
        self.out.map.insert(path.clone(), pos);
        match self.peek() {
            Some(b'{') => self.object(&path),
            Some(b'[') => self.array(&path),
            Some(b'"') => {
                self.string();
            }
            Some(_) => {
                while matches!(self.peek(), Some(c) if !matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n'))
                {
                    self.bump();
                }
            }
            None => {}
        }
    }

    fn object(&mut self, path: &str) {
        self.bump(); // '{'
        let mut seen = std::collections::HashSet::new();
        loop {
            self.skip_ws();
            match self.peek() {
                Some(b'}') => {
                    self.bump();
                    return;
                }
                Some(b'"') => {
                    let key_pos = self.pos();
                    let key = self.string();
                    let child = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    if !seen.insert(key) && self.out.duplicate.is_none() {
                        self.out.duplicate = Some((child.clone(), key_pos));
                    }
                    self.skip_ws();
                    if self.peek() != Some(b':') {
                        return;
                    }
                    self.bump();
                    self.skip_ws();
                    self.value(child);
                    self.skip_ws();
                    if self.peek() == Some(b',') {
                        self.bump();
                    }
                }
                _ => return,
            }
        }
    }

    fn array(&mut self, path: &str) {
        self.bump(); // '['
        let mut n = 0usize;
        loop {
            self.skip_ws();
            match self.peek() {
                Some(b']') => {
                    self.bump();
                    return;
                }
                None => return,
                Some(_) => {
                    self.value(format!("{path}[{n}]"));
                    n += 1;
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => self.bump(),
                        Some(b']') => {}
                        _ => return,
                    }
                }
            }
        }
    }

    /// Reads a string token and returns its decoded content (escapes of
    /// keys are rare; `\"` and `\\` are handled, others kept verbatim).
    fn string(&mut self) -> String {
        self.bump(); // opening quote
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            match c {
                b'"' => {
                    self.bump();
                    break;
                }
                b'\\' => {
                    self.bump();
                    if let Some(e) = self.peek() {
                        out.push(e);
                        self.bump();
                    }
                }
                _ => {
                    out.push(c);
                    self.bump();
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_positions() {
        let text = "{\n  \"a\": [1, {\"b\": true}],\n  \"c\": \"x\"\n}";
        let l = Locations::scan(text);
        assert_eq!(l.of("a"), Pos { line: 2, col: 8 });
        assert_eq!(l.of("a[1].b"), Pos { line: 2, col: 18 });
        assert_eq!(l.of("c"), Pos { line: 3, col: 8 });
        // Unknown paths fall back to the nearest known parent.
        assert_eq!(l.of("a[1].zzz"), Pos { line: 2, col: 12 });
        assert!(l.duplicate.is_none());
    }

    #[test]
    fn reports_duplicate_keys() {
        let l = Locations::scan("{\"x\": {\"k\": 1,\n \"k\": 2}}");
        let (path, pos) = l.duplicate.expect("duplicate found");
        assert_eq!(path, "x.k");
        assert_eq!(pos, Pos { line: 2, col: 2 });
    }
}
