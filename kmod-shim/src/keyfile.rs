//! Key files for `secfs mount --key-file`: 64 hex digits (a 256-bit key)
//! and an optional newline, mode 0600.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use guardfs_crypto::PolicyKey;
use zeroize::Zeroize;

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("key file {path} is malformed: expected 64 hex digits (a 256-bit key)")]
    Malformed { path: String },
    #[error("key file {path} is readable by other users (mode {mode:o}); chmod 600 it")]
    TooOpen { path: String, mode: u32 },
    #[error("refusing to overwrite existing file {path}")]
    Exists { path: String },
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Parse the text of a key file.
pub fn parse(text: &[u8]) -> Option<PolicyKey> {
    let t = text.trim_ascii();
    if t.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, pair) in t.chunks_exact(2).enumerate() {
        key[i] = hex_digit(pair[0])? << 4 | hex_digit(pair[1])?;
    }
    let k = PolicyKey::from_bytes(key);
    key.zeroize();
    Some(k)
}

/// Load a key file, refusing files other users can read.
pub fn load(path: &Path) -> Result<PolicyKey, KeyFileError> {
    let p = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| KeyFileError::Read {
        path: p.clone(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen { path: p, mode });
    }
    let mut text = std::fs::read(path).map_err(|source| KeyFileError::Read {
        path: p.clone(),
        source,
    })?;
    let key = parse(&text).ok_or(KeyFileError::Malformed { path: p });
    text.zeroize();
    key
}

/// Write a new random key to `path` (mode 0600); never overwrites.
pub fn generate(path: &Path) -> Result<(), KeyFileError> {
    let p = path.display().to_string();
    let key = PolicyKey::generate().map_err(|e| KeyFileError::Write {
        path: p.clone(),
        source: std::io::Error::other(e),
    })?;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KeyFileError::Exists { path: p.clone() }
            } else {
                KeyFileError::Write {
                    path: p.clone(),
                    source,
                }
            }
        })?;
    let mut hex = String::with_capacity(65);
    for b in key.expose() {
        hex.push_str(&format!("{b:02x}"));
    }
    hex.push('\n');
    let res = f.write_all(hex.as_bytes()).and_then(|()| f.sync_all());
    hex.zeroize();
    res.map_err(|source| KeyFileError::Write { path: p, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_hex_and_newline() {
        let k = parse(format!("{}\n", "ab".repeat(32)).as_bytes()).unwrap();
        assert_eq!(k.expose(), &[0xab; 32]);
        assert!(parse(b"abc").is_none());
        assert!(parse("zz".repeat(32).as_bytes()).is_none());
        assert!(parse("ab".repeat(33).as_bytes()).is_none());
    }

    #[test]
    fn generate_refuses_overwrite_and_is_private() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        generate(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(load(&p).is_ok());
        assert!(matches!(generate(&p), Err(KeyFileError::Exists { .. })));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(load(&p), Err(KeyFileError::TooOpen { .. })));
    }
}
