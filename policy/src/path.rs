//! Path checks and the file-name patterns of resource and process sets.
//!
//! Paths are handled as bytes (Linux paths need not be UTF-8) and nothing
//! here allocates.

/// Why a path is not an absolute, normalized path.
pub(crate) fn path_problem(path: &[u8]) -> Option<&'static str> {
    if path.is_empty() {
        return Some("it is empty");
    }
    if path[0] != b'/' {
        return Some("it does not start with `/`");
    }
    if path.contains(&0) {
        return Some("it contains a NUL byte");
    }
    if path.len() == 1 {
        return None;
    }
    if path.ends_with(b"/") {
        return Some("it ends with `/`");
    }
    for component in path[1..].split(|&b| b == b'/') {
        match component {
            b"" => return Some("it contains `//`"),
            b"." => return Some("it contains a `.` component"),
            b".." => return Some("it contains a `..` component"),
            _ => {}
        }
    }
    None
}

/// Whether `path` is absolute and normalized: starts with `/`, no empty,
/// `.` or `..` component, no trailing `/` (except the root itself), no NUL.
pub fn is_normalized_absolute(path: &[u8]) -> bool {
    path_problem(path).is_none()
}

/// Split a normalized absolute path into its parent directory and last
/// component. `None` for the root `/`.
pub(crate) fn split_parent(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 1 {
        return None;
    }
    let slash = path.iter().rposition(|&b| b == b'/')?;
    let parent = if slash == 0 {
        &path[..1]
    } else {
        &path[..slash]
    };
    Some((parent, &path[slash + 1..]))
}

/// Whether `path` is `dir` or lies under it (`dir` normalized absolute).
pub(crate) fn is_within(path: &[u8], dir: &[u8]) -> bool {
    if dir == b"/" {
        return true;
    }
    path.starts_with(dir) && (path.len() == dir.len() || path[dir.len()] == b'/')
}

/// Why a file-name pattern is not acceptable.
pub(crate) fn pattern_problem(pattern: &str) -> Option<&'static str> {
    if pattern.is_empty() {
        return Some("it is empty");
    }
    if pattern.contains('/') {
        return Some("it contains `/` (put directories in `directory`)");
    }
    if pattern.contains('\0') {
        return Some("it contains a NUL byte");
    }
    if pattern == "." || pattern == ".." {
        return Some("`.` and `..` are not file names");
    }
    None
}

/// Match a file name against a pattern where `*` matches any run of
/// characters (including none) and `?` exactly one character; every other
/// character matches itself. Characters are UTF-8 sequences where the name
/// is valid UTF-8, single bytes where it is not.
pub(crate) fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0usize, 0usize);
    // Position of the last `*` seen and the name position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, n));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    n += char_len(name, n);
                    continue;
                }
                c if c == name[n] => {
                    p += 1;
                    n += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sn)) => {
                let next = sn + char_len(name, sn);
                star = Some((sp, next));
                p = sp + 1;
                n = next;
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Length of the character starting at `name[i]`: a whole UTF-8 sequence
/// when one is there, else one byte.
fn char_len(name: &[u8], i: usize) -> usize {
    let lead = name[i];
    let want = match lead {
        0x00..=0x7f => return 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return 1,
    };
    let end = i + want;
    if end <= name.len() && std::str::from_utf8(&name[i..end]).is_ok() {
        want
    } else {
        1
    }
}

/// Whether a pattern matches every name (`*`, `**`, ...).
pub(crate) fn matches_everything(pattern: &[u8]) -> bool {
    pattern.iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalized_paths() {
        for ok in ["/", "/a", "/a/b", "/a b/c.d", "/.hidden", "/a/..b"] {
            assert!(is_normalized_absolute(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "", "a", "a/b", "/a/", "//", "/a//b", "/./a", "/a/..", "/a/./b", "/a\0",
        ] {
            assert!(!is_normalized_absolute(bad.as_bytes()), "{bad:?}");
        }
        assert!(is_normalized_absolute(b"/bin/\xff\xfe"));
    }

    #[test]
    fn parents() {
        assert_eq!(split_parent(b"/"), None);
        assert_eq!(split_parent(b"/a"), Some((&b"/"[..], &b"a"[..])));
        assert_eq!(split_parent(b"/a/b/c"), Some((&b"/a/b"[..], &b"c"[..])));
        assert!(is_within(b"/a/b", b"/a"));
        assert!(is_within(b"/a", b"/a"));
        assert!(!is_within(b"/ab", b"/a"));
        assert!(is_within(b"/anything", b"/"));
    }

    #[test]
    fn globs() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "anything", true),
            ("*", "", true),
            ("*.txt", "a.txt", true),
            ("*.txt", "a.txt.bak", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("?.log", "1.log", true),
            ("?.log", "12.log", false),
            ("?", "é", true),
            ("??", "é", false),
            ("data", "data", true),
            ("data", "Data", false),
            ("[ab]", "[ab]", true),
            ("*a", "aaaa", true),
            ("a*", "b", false),
            ("*x*", "abc", false),
        ];
        for &(p, n, want) in cases {
            assert_eq!(glob_match(p.as_bytes(), n.as_bytes()), want, "{p} vs {n}");
        }
        assert!(glob_match(b"?", b"\xff"));
        assert!(glob_match(b"a?c", b"a\xe9c"));
        assert!(matches_everything(b"**"));
        assert!(!matches_everything(b"*.x"));
    }

    #[test]
    fn patterns() {
        assert!(pattern_problem("*.db").is_none());
        assert!(pattern_problem("").is_some());
        assert!(pattern_problem("a/b").is_some());
        assert!(pattern_problem("..").is_some());
    }
}
