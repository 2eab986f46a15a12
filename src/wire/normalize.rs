//! Path normalisation: the one implementation shared by the proxy and
//! `portcullis explain`, so what an operator is told is what is enforced.
//!
//! Rules are written against clean paths (`/foo`), while clients may send
//! `/%66oo`, `/x/../foo` or `//foo`. Matching the raw target would let a
//! client walk around a prefix rule, so every path is normalised first:
//! unreserved percent-escapes are decoded, `.`/`..` segments removed, `//`
//! merged. What cannot be made safe is refused outright (→ `400`) before any
//! rule is consulted: an encoded `/` or `\` (upstreams disagree on whether it
//! separates segments), a raw `\`, NUL or control bytes, non-ASCII bytes,
//! `..` above the root, and a segment that is a dot segment once its
//! `;parameters` are removed (`..;`, `%2e%2e;x=1`, `.;`): Tomcat, Jetty and
//! older Spring strip path parameters before removing dot segments, so
//! `/foo/..;/admin` is `/admin` to them while it is under `/foo` here.

use std::borrow::Cow;
use std::fmt;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    Empty,
    NotAbsolute,
    EncodedSlash,
    Backslash,
    ControlByte,
    NonAscii,
    BadEscape,
    AboveRoot,
    DotSegmentParameters,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::Empty => "empty path",
            PathError::NotAbsolute => "path does not start with '/'",
            PathError::EncodedSlash => "encoded '/' or '\\' in path",
            PathError::Backslash => "backslash in path",
            PathError::ControlByte => "NUL or control byte in path",
            PathError::NonAscii => "non-ASCII byte in path",
            PathError::BadEscape => "malformed percent-escape in path",
            PathError::AboveRoot => "'..' above the root in path",
            PathError::DotSegmentParameters => {
                "a '.' or '..' segment with ';' parameters in path (servers disagree on it)"
            }
        })
    }
}

impl std::error::Error for PathError {}

/// Splits a request-target in origin form into (path, query) at the first `?`.
pub fn split_target(target: &str) -> (&str, Option<&str>) {
    match target.find('?') {
        Some(i) => (&target[..i], Some(&target[i + 1..])),
        None => (target, None),
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Is `seg` a dot segment (`.`, `..`, also as `%2e`) once everything
/// from its first `;` (or `%3B`) on is removed — and does it have one?
fn dot_segment_with_parameters(seg: &[u8]) -> bool {
    let mut dots = 0;
    let mut i = 0;
    while i < seg.len() {
        match seg[i] {
            b';' => return (1..=2).contains(&dots),
            b'.' => {
                dots += 1;
                i += 1;
            }
            b'%' if seg.len() >= i + 3 => {
                match (seg[i + 1], seg[i + 2].to_ascii_lowercase()) {
                    (b'2', b'e') => dots += 1,
                    (b'3', b'b') => return (1..=2).contains(&dots),
                    _ => return false,
                }
                i += 3;
            }
            _ => return false,
        }
    }
    false
}

/// Normalises a path (no query). Returns the input unchanged (borrowed) in
/// the common case that it is already normal, so the hot path allocates
/// nothing.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    let b = path.as_bytes();
    if b.is_empty() {
        return Err(PathError::Empty);
    }
    if b[0] != b'/' {
        return Err(PathError::NotAbsolute);
    }
    if memchr::memchr2(b';', b'%', b).is_some()
        && b.split(|&c| c == b'/').any(dot_segment_with_parameters)
    {
        return Err(PathError::DotSegmentParameters);
    }
    // Validate bytes and find whether any rewriting is needed.
    let mut needs_work = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\\' => return Err(PathError::Backslash),
            0..=0x1f | 0x7f => return Err(PathError::ControlByte),
            0x80..=0xff => return Err(PathError::NonAscii),
            b'%' => {
                let (Some(h), Some(l)) = (
                    b.get(i + 1).copied().and_then(hex),
                    b.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let v = h * 16 + l;
                match v {
                    b'/' | b'\\' => return Err(PathError::EncodedSlash),
                    0..=0x1f | 0x7f => return Err(PathError::ControlByte),
                    _ => {}
                }
                if is_unreserved(v)
                    || b[i + 1].is_ascii_lowercase()
                    || b[i + 2].is_ascii_lowercase()
                {
                    needs_work = true;
                }
                i += 3;
                continue;
            }
            b'/' => {
                let next = b.get(i + 1).copied();
                if next == Some(b'/') {
                    needs_work = true;
                }
                if next == Some(b'.') {
                    let after = b.get(i + 2).copied();
                    if matches!(after, None | Some(b'/'))
                        || (after == Some(b'.') && matches!(b.get(i + 3), None | Some(b'/')))
                    {
                        needs_work = true;
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    if !needs_work {
        return Ok(Cow::Borrowed(path));
    }
    // Decode unreserved escapes, upper-case the rest.
    let mut decoded = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            // Validated above: two hex digits follow.
            let v = hex(b[i + 1]).unwrap_or(0) * 16 + hex(b[i + 2]).unwrap_or(0);
            if is_unreserved(v) {
                decoded.push(v as char);
            } else {
                decoded.push('%');
                decoded.push(b[i + 1].to_ascii_uppercase() as char);
                decoded.push(b[i + 2].to_ascii_uppercase() as char);
            }
            i += 3;
        } else {
            decoded.push(b[i] as char);
            i += 1;
        }
    }
    // Remove dot segments and empty segments.
    let trailing_slash = decoded.len() > 1 && decoded.ends_with('/');
    let mut segs: Vec<&str> = Vec::new();
    let ends_with_dot = decoded.ends_with("/.") || decoded.ends_with("/..");
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if segs.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            s => segs.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segs {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || ((trailing_slash || ends_with_dot) && !segs.is_empty()) {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// Segment-aware prefix test on normalised paths: `/foo` matches `/foo`,
/// `/foo/`, `/foo/x`; not `/foobar`. `/` matches everything.
pub fn has_path_prefix(path: &str, prefix: &str) -> bool {
    let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
    if prefix.is_empty() {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_paths_are_borrowed() {
        for p in ["/", "/foo", "/foo/", "/foo/bar.txt", "/a%20b", "/a-b_c~d"] {
            assert!(matches!(normalize_path(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn table() {
        let ok = [
            ("/foo/../admin", "/admin"),
            ("/foo/./x", "/foo/x"),
            ("//foo///x", "/foo/x"),
            ("/%66oo", "/foo"),
            ("/foo/%2e%2e/admin", "/admin"),
            ("/a%7e", "/a~"),
            ("/a%3a", "/a%3A"),
            ("/foo/..", "/"),
            ("/foo/.", "/foo/"),
            ("/foo/bar/..", "/foo/"),
            ("/.", "/"),
            ("/x/", "/x/"),
            // Parameters on other segments are kept as they are.
            ("/foo;v=1/x", "/foo;v=1/x"),
            ("/foo/...;/x", "/foo/...;/x"),
            ("/foo/;/x", "/foo/;/x"),
            ("/foo/a..;/x", "/foo/a..;/x"),
        ];
        for (input, want) in ok {
            assert_eq!(normalize_path(input).as_deref(), Ok(want), "{input}");
        }
        let bad = [
            ("", PathError::Empty),
            ("foo", PathError::NotAbsolute),
            ("/a%2Fb", PathError::EncodedSlash),
            ("/a%2fb", PathError::EncodedSlash),
            ("/a%5cb", PathError::EncodedSlash),
            ("/a\\b", PathError::Backslash),
            ("/a%00", PathError::ControlByte),
            ("/a\u{1}", PathError::ControlByte),
            ("/a%0a", PathError::ControlByte),
            ("/é", PathError::NonAscii),
            ("/a%zz", PathError::BadEscape),
            ("/a%4", PathError::BadEscape),
            ("/..", PathError::AboveRoot),
            ("/foo/../../x", PathError::AboveRoot),
            ("/%2e%2e/x", PathError::AboveRoot),
            ("/foo/..;/admin", PathError::DotSegmentParameters),
            ("/foo/%2e%2e;/admin", PathError::DotSegmentParameters),
            ("/foo/%2E.;x=1/admin", PathError::DotSegmentParameters),
            ("/foo/.;/x", PathError::DotSegmentParameters),
            ("/foo/..;", PathError::DotSegmentParameters),
            ("/foo/..%3b/admin", PathError::DotSegmentParameters),
            (
                "/foo/.%2E%3Bjsessionid=1/admin",
                PathError::DotSegmentParameters,
            ),
            ("/..;/foo", PathError::DotSegmentParameters),
        ];
        for (input, want) in bad {
            assert_eq!(normalize_path(input), Err(want), "{input:?}");
        }
    }

    #[test]
    fn prefixes_are_segment_aware() {
        assert!(has_path_prefix("/foo", "/foo"));
        assert!(has_path_prefix("/foo/", "/foo"));
        assert!(has_path_prefix("/foo/x", "/foo"));
        assert!(has_path_prefix("/foo/x", "/foo/"));
        assert!(!has_path_prefix("/foobar", "/foo"));
        assert!(!has_path_prefix("/fo", "/foo"));
        assert!(has_path_prefix("/anything", "/"));
    }

    #[test]
    fn split_target_at_query() {
        assert_eq!(split_target("/foo/x?y=1"), ("/foo/x", Some("y=1")));
        assert_eq!(split_target("/foo"), ("/foo", None));
    }

    proptest::proptest! {
        #[test]
        fn normalising_is_idempotent(s in "/[a-z./%0-9A-F]{0,24}") {
            if let Ok(n) = normalize_path(&s) {
                let again = normalize_path(&n).map(|c| c.into_owned());
                proptest::prop_assert_eq!(again, Ok(n.clone().into_owned()));
                proptest::prop_assert!(!n.contains("/../") && !n.contains("/./") && !n.contains("//"));
            }
        }
    }
}
