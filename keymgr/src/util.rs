//! Small helpers: random identifiers, time, names, hashing.

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

/// Fill `buf` with random bytes.
///
/// # Errors
/// When the system random generator fails.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), String> {
    SystemRandom::new()
        .fill(buf)
        .map_err(|_| "system random generator failed".to_owned())
}

/// A random UUID (version 4), the shape CipherTrust uses for ids.
///
/// # Errors
/// When the system random generator fails.
pub fn new_id() -> Result<String, String> {
    let mut b = [0u8; 16];
    random_bytes(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// `n` random bytes as lowercase hex.
///
/// # Errors
/// When the system random generator fails.
pub fn random_hex(n: usize) -> Result<String, String> {
    let mut b = vec![0u8; n];
    random_bytes(&mut b)?;
    Ok(hex::encode(b))
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// RFC 3339 rendering of a Unix time (UTC).
pub fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// SHA-256 as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data).as_ref())
}

/// A resource name: 1..=`max` characters, first alphanumeric, the rest
/// alphanumeric or `.`, `_`, `-`. Keeps names safe in URLs, logs and shells.
pub fn valid_name(s: &str, max: usize) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    s.len() <= max && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A path segment naming a resource by id or name (see [`valid_name`]).
pub fn valid_ref(s: &str) -> bool {
    valid_name(s, 253)
}

/// A GuardPoint path: absolute, normalised (no `.`/`..`/empty components,
/// no trailing slash), not `/` itself, printable, at most 4096 bytes.
pub fn valid_guard_path(p: &str) -> bool {
    if p.len() > 4096 || !p.starts_with('/') || p == "/" || p.ends_with('/') {
        return false;
    }
    if p.chars().any(|c| c.is_control()) {
        return false;
    }
    p[1..]
        .split('/')
        .all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("db-key_1.v2", 64));
        assert!(!valid_name("", 64));
        assert!(!valid_name("-x", 64));
        assert!(!valid_name("x'; DROP TABLE keys;--", 64));
        assert!(!valid_name("..", 64));
        assert!(!valid_name("a/b", 64));
        assert!(!valid_name(&"a".repeat(65), 64));
    }

    #[test]
    fn guard_paths() {
        assert!(valid_guard_path("/data"));
        assert!(valid_guard_path("/srv/a b/c"));
        assert!(!valid_guard_path("/"));
        assert!(!valid_guard_path("data"));
        assert!(!valid_guard_path("/data/"));
        assert!(!valid_guard_path("/data/../etc"));
        assert!(!valid_guard_path("/data//x"));
        assert!(!valid_guard_path("/data/./x"));
        assert!(!valid_guard_path("/da\nta"));
    }

    #[test]
    fn ids() {
        let id = new_id().unwrap();
        assert_eq!(id.len(), 36);
        assert!(valid_ref(&id));
    }
}
