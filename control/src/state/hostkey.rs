//! The host key: a random AES-256 key that seals local key material
//! (`.sec/keys.json`). It lives in `.sec/host.key` (0600) in one of two
//! forms:
//!
//! * **auto** (the default, so a host boots unattended):
//!   `{"version":1,"protection":"auto","key":"<hex>"}`. Protection then rests
//!   on file permissions and `.sec` being 0700.
//! * **password**, after [`HostKeyStore::set_password`]:
//!   `{"version":1,"protection":"password","salt":"<hex>","iterations":N,
//!   "wrapped":"<hex nonce|ciphertext|tag>","kcv":"<hex>"}` — the host key
//!   AES-256-GCM-wrapped under PBKDF2-HMAC-SHA256(password, salt, N). The
//!   agent then needs the password at start.
//!
//! The `kcv` (key check value, the first 8 bytes of
//! HMAC-SHA256(host key, "guardfs host key check v1")) identifies a host key
//! without revealing it; the key store records it to detect a foreign host
//! key.

use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::{Result, StateError, atomic};

/// PBKDF2 iterations for new password-protected host keys (OWASP's 2023
/// figure for PBKDF2-HMAC-SHA256).
pub const DEFAULT_PBKDF2_ITERATIONS: u32 = 210_000;
/// The fewest PBKDF2 iterations accepted, from the environment or a file.
pub const MIN_PBKDF2_ITERATIONS: u32 = 1000;
/// The most PBKDF2 iterations accepted from a file (a hostile file must not
/// stall the agent).
pub const MAX_PBKDF2_ITERATIONS: u32 = 100_000_000;
/// Length of a GCM tag.
const TAG_LEN: usize = 16;
/// Length of a sealed 32-byte key: nonce, ciphertext, tag.
pub(crate) const SEALED_KEY_LEN: usize = NONCE_LEN + 32 + TAG_LEN;
const WRAP_AAD: &[u8] = b"guardfs-host-key|v1";

/// The key that seals local key material. Zeroized on drop; `Debug` shows
/// only its key check value.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct HostKey([u8; 32]);

impl HostKey {
    /// A fresh random host key.
    ///
    /// # Errors
    /// Only if the system random source fails.
    pub fn generate() -> Result<HostKey> {
        let mut k = HostKey([0; 32]);
        guardfs_crypto::random_bytes(&mut k.0)?;
        Ok(k)
    }

    /// Take ownership of key bytes (the caller should zeroize its copy).
    pub fn from_bytes(bytes: [u8; 32]) -> HostKey {
        HostKey(bytes)
    }

    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key check value: 16 hex digits that identify the key without
    /// revealing it.
    pub fn kcv(&self) -> String {
        let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &self.0);
        let tag = aws_lc_rs::hmac::sign(&k, b"guardfs host key check v1");
        hex::encode(&tag.as_ref()[..8])
    }
}

impl PartialEq for HostKey {
    /// Constant-time comparison.
    fn eq(&self, other: &Self) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(&self.0, &other.0).is_ok()
    }
}
impl Eq for HostKey {}

impl fmt::Debug for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostKey(kcv:{})", self.kcv())
    }
}

/// AES-256-GCM seal `plain` under `key` with `aad`: nonce | ciphertext | tag.
pub(crate) fn seal(key: &[u8; 32], aad: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
    let k = UnboundKey::new(&AES_256_GCM, key).map_err(|_| StateError::Crypto("AES-GCM key"))?;
    let k = LessSafeKey::new(k);
    let mut nonce = [0u8; NONCE_LEN];
    guardfs_crypto::random_bytes(&mut nonce)?;
    let mut buf = Vec::with_capacity(NONCE_LEN + plain.len() + TAG_LEN);
    buf.extend_from_slice(&nonce);
    buf.extend_from_slice(plain);
    let mut body = buf.split_off(NONCE_LEN);
    k.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut body,
    )
    .map_err(|_| StateError::Crypto("AES-GCM seal"))?;
    buf.extend_from_slice(&body);
    body.zeroize();
    Ok(buf)
}

/// Open what [`seal`] made; `None` if it does not authenticate.
pub(crate) fn open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).ok()?);
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut buf = Zeroizing::new(body.to_vec());
    let n = k.open_in_place(nonce, Aad::from(aad), &mut buf).ok()?.len();
    buf.truncate(n);
    Some(buf)
}

/// How the host key file is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protection {
    /// Stored in the clear, readable by root only.
    Auto,
    /// Wrapped under a key derived from a password.
    Password,
}

impl fmt::Display for Protection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protection::Auto => "auto",
            Protection::Password => "password",
        })
    }
}

/// The outcome of [`HostKeyStore::init_or_load_auto`].
#[derive(Debug)]
pub enum Unlock {
    /// The host key, ready to use.
    Ready(HostKey),
    /// The host key is password protected: call
    /// [`HostKeyStore::unlock_with_password`].
    NeedsPassword,
}

#[derive(Deserialize)]
#[serde(tag = "protection", rename_all = "lowercase", deny_unknown_fields)]
enum FileIn {
    Auto {
        version: u32,
        key: Zeroizing<String>,
    },
    Password {
        version: u32,
        salt: String,
        iterations: u32,
        wrapped: String,
        kcv: String,
    },
}

#[derive(Serialize)]
struct AutoOut<'a> {
    version: u32,
    protection: &'static str,
    key: &'a str,
}

#[derive(Serialize)]
struct PasswordOut<'a> {
    version: u32,
    protection: &'static str,
    salt: &'a str,
    iterations: u32,
    wrapped: &'a str,
    kcv: &'a str,
}

/// A parsed and checked host key file.
enum Stored {
    Auto(HostKey),
    Password {
        salt: Vec<u8>,
        iterations: NonZeroU32,
        wrapped: Vec<u8>,
        kcv: String,
    },
}

/// The host key file `.sec/host.key`.
#[derive(Debug, Clone)]
pub struct HostKeyStore {
    path: PathBuf,
    iterations: u32,
}

/// PBKDF2 iterations for new password files: `$GUARDFS_PBKDF2_ITERATIONS`
/// if set to a number (raised to at least [`MIN_PBKDF2_ITERATIONS`]; meant
/// for tests, which cannot afford 210,000 iterations per case), else
/// [`DEFAULT_PBKDF2_ITERATIONS`].
pub fn pbkdf2_iterations() -> u32 {
    std::env::var("GUARDFS_PBKDF2_ITERATIONS")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .map_or(DEFAULT_PBKDF2_ITERATIONS, |n| n.max(MIN_PBKDF2_ITERATIONS))
}

fn check_password(pw: &str) -> Result<()> {
    if pw.is_empty() {
        return Err(StateError::WeakPassword("the password is empty"));
    }
    if pw.chars().count() < 8 {
        return Err(StateError::WeakPassword(
            "the password must be at least 8 characters long",
        ));
    }
    Ok(())
}

fn derive(pw: &str, salt: &[u8], iterations: NonZeroU32) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    aws_lc_rs::pbkdf2::derive(
        aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        pw.as_bytes(),
        &mut *out,
    );
    out
}

impl HostKeyStore {
    /// The host key file in `sec_dir` (normally `Layout::sec`). New
    /// password files use [`pbkdf2_iterations`] iterations.
    pub fn new(sec_dir: &Path) -> HostKeyStore {
        HostKeyStore {
            path: sec_dir.join("host.key"),
            iterations: pbkdf2_iterations(),
        }
    }

    /// Use `n` PBKDF2 iterations (at least [`MIN_PBKDF2_ITERATIONS`]) for
    /// new password files.
    #[must_use]
    pub fn with_iterations(mut self, n: u32) -> HostKeyStore {
        self.iterations = n.max(MIN_PBKDF2_ITERATIONS);
        self
    }

    /// The host key file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(&self) -> Result<Option<Stored>> {
        let Some(bytes) = atomic::read_file(&self.path)? else {
            return Ok(None);
        };
        let bytes = Zeroizing::new(bytes);
        let parsed: FileIn =
            serde_json::from_slice(&bytes).map_err(|e| StateError::json(&self.path, &e))?;
        let bad = |m: &str| StateError::invalid(&self.path, m);
        match parsed {
            FileIn::Auto { version, key } => {
                if version != 1 {
                    return Err(bad("unsupported version (expected 1)"));
                }
                let mut k = [0u8; 32];
                hex::decode_to_slice(key.as_bytes(), &mut k)
                    .map_err(|_| bad("`key` must be 64 hex digits"))?;
                Ok(Some(Stored::Auto(HostKey(k))))
            }
            FileIn::Password {
                version,
                salt,
                iterations,
                wrapped,
                kcv,
            } => {
                if version != 1 {
                    return Err(bad("unsupported version (expected 1)"));
                }
                let salt = hex::decode(&salt).map_err(|_| bad("`salt` must be hex"))?;
                if salt.len() < 16 {
                    return Err(bad("`salt` must be at least 16 bytes"));
                }
                let iterations = NonZeroU32::new(iterations)
                    .filter(|n| (MIN_PBKDF2_ITERATIONS..=MAX_PBKDF2_ITERATIONS).contains(&n.get()))
                    .ok_or_else(|| bad("`iterations` must be between 1000 and 100000000"))?;
                let wrapped = hex::decode(&wrapped).map_err(|_| bad("`wrapped` must be hex"))?;
                if wrapped.len() != SEALED_KEY_LEN {
                    return Err(bad("`wrapped` must be 60 bytes (nonce, key, tag)"));
                }
                if kcv.len() != 16 || !kcv.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad("`kcv` must be 16 hex digits"));
                }
                Ok(Some(Stored::Password {
                    salt,
                    iterations,
                    wrapped,
                    kcv: kcv.to_ascii_lowercase(),
                }))
            }
        }
    }

    fn auto_bytes(key: &HostKey) -> Result<Zeroizing<Vec<u8>>> {
        let hex = Zeroizing::new(hex::encode(key.expose()));
        let out = AutoOut {
            version: 1,
            protection: "auto",
            key: &hex,
        };
        let mut v = serde_json::to_vec_pretty(&out)
            .map_err(|_| StateError::Crypto("cannot serialize host key"))?;
        v.push(b'\n');
        Ok(Zeroizing::new(v))
    }

    /// How the host key is protected; `None` if there is no host key yet.
    ///
    /// # Errors
    /// A malformed or unreadable host key file.
    pub fn protection(&self) -> Result<Option<Protection>> {
        Ok(self.load()?.map(|s| match s {
            Stored::Auto(_) => Protection::Auto,
            Stored::Password { .. } => Protection::Password,
        }))
    }

    /// Load an auto-protected host key, creating one (0600) if there is no
    /// host key file; [`Unlock::NeedsPassword`] if it is password
    /// protected. The `.sec` directory must exist.
    ///
    /// # Errors
    /// A malformed or unreadable host key file, or failure to write one.
    pub fn init_or_load_auto(&self) -> Result<Unlock> {
        for _ in 0..2 {
            match self.load()? {
                Some(Stored::Auto(k)) => return Ok(Unlock::Ready(k)),
                Some(Stored::Password { .. }) => return Ok(Unlock::NeedsPassword),
                None => {
                    let key = HostKey::generate()?;
                    // Never replace a host key another process just made.
                    if atomic::create_atomic(&self.path, &Self::auto_bytes(&key)?, 0o600)? {
                        return Ok(Unlock::Ready(key));
                    }
                }
            }
        }
        Err(StateError::invalid(
            &self.path,
            "host key file keeps changing",
        ))
    }

    /// Unlock a password-protected host key. An auto-protected key is
    /// returned as is (it needs no password).
    ///
    /// # Errors
    /// [`StateError::WrongPassword`], a missing or malformed file.
    pub fn unlock_with_password(&self, pw: &str) -> Result<HostKey> {
        match self.load()? {
            None => Err(StateError::invalid(&self.path, "no host key file")),
            Some(Stored::Auto(k)) => Ok(k),
            Some(Stored::Password {
                salt,
                iterations,
                wrapped,
                kcv,
            }) => {
                let wk = derive(pw, &salt, iterations);
                let plain =
                    open(&wk, WRAP_AAD, &wrapped).ok_or_else(|| StateError::WrongPassword {
                        path: self.path.clone(),
                    })?;
                let bytes: [u8; 32] = plain.as_slice().try_into().map_err(|_| {
                    StateError::invalid(&self.path, "wrapped host key has the wrong length")
                })?;
                let key = HostKey(bytes);
                if key.kcv() != kcv {
                    return Err(StateError::invalid(
                        &self.path,
                        "`kcv` does not match the unwrapped host key (file damaged)",
                    ));
                }
                Ok(key)
            }
        }
    }

    /// Check that `current` is the stored host key (if there is one).
    fn check_current(&self, current: &HostKey) -> Result<()> {
        let same = match self.load()? {
            None => true,
            Some(Stored::Auto(k)) => k == *current,
            Some(Stored::Password { kcv, .. }) => kcv == current.kcv(),
        };
        if same {
            Ok(())
        } else {
            Err(StateError::WrongHostKey {
                path: self.path.clone(),
            })
        }
    }

    /// Protect the host key `current` (which must be the stored one) with
    /// `new_pw`, replacing the file atomically. Also changes an existing
    /// password.
    ///
    /// # Errors
    /// [`StateError::WeakPassword`] (empty or under 8 characters),
    /// [`StateError::WrongHostKey`] if `current` is not the stored key,
    /// I/O errors. Nothing changes on error.
    pub fn set_password(&self, current: &HostKey, new_pw: &str) -> Result<()> {
        check_password(new_pw)?;
        self.check_current(current)?;
        let mut salt = [0u8; 16];
        guardfs_crypto::random_bytes(&mut salt)?;
        let iterations = NonZeroU32::new(self.iterations.max(MIN_PBKDF2_ITERATIONS))
            .ok_or(StateError::Crypto("PBKDF2 iterations"))?;
        let wk = derive(new_pw, &salt, iterations);
        let wrapped = seal(&wk, WRAP_AAD, current.expose())?;
        let (salt_hex, wrapped_hex, kcv) = (hex::encode(salt), hex::encode(wrapped), current.kcv());
        let out = PasswordOut {
            version: 1,
            protection: "password",
            salt: &salt_hex,
            iterations: iterations.get(),
            wrapped: &wrapped_hex,
            kcv: &kcv,
        };
        let mut v = serde_json::to_vec_pretty(&out)
            .map_err(|_| StateError::Crypto("cannot serialize host key"))?;
        v.push(b'\n');
        atomic::write_atomic(&self.path, &v, 0o600)
    }

    /// Go back to auto protection for `current` (which must be the stored
    /// key), replacing the file atomically.
    ///
    /// # Errors
    /// [`StateError::WrongHostKey`] if `current` is not the stored key, I/O
    /// errors.
    pub fn remove_password(&self, current: &HostKey) -> Result<()> {
        self.check_current(current)?;
        atomic::write_atomic(&self.path, &Self::auto_bytes(current)?, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn store(d: &tempfile::TempDir) -> HostKeyStore {
        HostKeyStore::new(d.path()).with_iterations(1000)
    }

    fn ready(u: Unlock) -> HostKey {
        match u {
            Unlock::Ready(k) => k,
            Unlock::NeedsPassword => panic!("needs password"),
        }
    }

    #[test]
    fn auto_create_then_load() {
        let d = tempfile::tempdir().unwrap();
        let s = store(&d);
        assert_eq!(s.protection().unwrap(), None);
        let k1 = ready(s.init_or_load_auto().unwrap());
        assert_eq!(s.protection().unwrap(), Some(Protection::Auto));
        let k2 = ready(s.init_or_load_auto().unwrap());
        assert_eq!(k1, k2);
        let meta = fs::metadata(s.path()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = fs::read_to_string(s.path()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["protection"], "auto");
        assert_eq!(v["key"], hex::encode(k1.expose()));
        // Debug shows the kcv only.
        let dbg = format!("{k1:?}");
        assert!(dbg.starts_with("HostKey(kcv:"), "{dbg}");
        assert!(!dbg.contains(&hex::encode(&k1.expose()[..4])), "{dbg}");
    }

    #[test]
    fn password_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let s = store(&d);
        let k = ready(s.init_or_load_auto().unwrap());
        s.set_password(&k, "correct horse").unwrap();
        assert_eq!(s.protection().unwrap(), Some(Protection::Password));
        assert!(matches!(
            s.init_or_load_auto().unwrap(),
            Unlock::NeedsPassword
        ));
        let text = fs::read_to_string(s.path()).unwrap();
        assert!(!text.contains(&hex::encode(k.expose())), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["iterations"], 1000);
        assert_eq!(v["kcv"], k.kcv());
        assert_eq!(s.unlock_with_password("correct horse").unwrap(), k);
        let e = s.unlock_with_password("wrong horse").unwrap_err();
        assert!(matches!(e, StateError::WrongPassword { .. }), "{e}");
        assert!(e.to_string().contains("wrong password"), "{e}");
        // Change the password, then go back to auto.
        s.set_password(&k, "battery staple").unwrap();
        assert!(s.unlock_with_password("correct horse").is_err());
        assert_eq!(s.unlock_with_password("battery staple").unwrap(), k);
        s.remove_password(&k).unwrap();
        assert_eq!(ready(s.init_or_load_auto().unwrap()), k);
        assert_eq!(
            fs::metadata(s.path()).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn weak_passwords_and_foreign_keys_refused() {
        let d = tempfile::tempdir().unwrap();
        let s = store(&d);
        let k = ready(s.init_or_load_auto().unwrap());
        let before = fs::read(s.path()).unwrap();
        for pw in ["", "short", "1234567"] {
            let e = s.set_password(&k, pw).unwrap_err();
            assert!(matches!(e, StateError::WeakPassword(_)), "{e}");
        }
        assert!(
            s.set_password(&k, "")
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        let other = HostKey::generate().unwrap();
        let e = s.set_password(&other, "long enough pw").unwrap_err();
        assert!(matches!(e, StateError::WrongHostKey { .. }), "{e}");
        assert_eq!(fs::read(s.path()).unwrap(), before);
        s.set_password(&k, "long enough pw").unwrap();
        assert!(matches!(
            s.set_password(&other, "another one!").unwrap_err(),
            StateError::WrongHostKey { .. }
        ));
        assert!(s.remove_password(&other).is_err());
    }

    #[test]
    fn malformed_files_give_clear_errors_and_stay_unchanged() {
        let d = tempfile::tempdir().unwrap();
        let s = store(&d);
        let cases: &[(&str, &str)] = &[
            ("{not json", "not valid JSON"),
            (
                r#"{"version":1,"protection":"auto"}"#,
                "missing field `key`",
            ),
            (
                r#"{"version":1,"protection":"magic","key":"00"}"#,
                "unknown variant",
            ),
            (
                r#"{"version":2,"protection":"auto","key":"00"}"#,
                "unsupported version",
            ),
            (
                r#"{"version":1,"protection":"auto","key":"zz"}"#,
                "64 hex digits",
            ),
            (
                r#"{"version":1,"protection":"auto","key":"00","extra":1}"#,
                "unknown field",
            ),
            (
                r#"{"version":1,"protection":"password","salt":"00","iterations":1000,"wrapped":"00","kcv":"00"}"#,
                "salt",
            ),
            (
                r#"{"version":1,"protection":"password","salt":"00000000000000000000000000000000","iterations":0,"wrapped":"00","kcv":"00"}"#,
                "iterations",
            ),
        ];
        for (text, want) in cases {
            fs::write(s.path(), text).unwrap();
            let e = s.init_or_load_auto().unwrap_err().to_string();
            assert!(e.starts_with(&s.path().display().to_string()), "{e}");
            assert!(e.contains(want), "{text}: {e}");
            assert_eq!(fs::read_to_string(s.path()).unwrap(), *text);
            assert!(s.unlock_with_password("whatever pw").is_err());
        }
    }

    #[test]
    fn missing_sec_dir_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let s = HostKeyStore::new(&d.path().join("no-sec"));
        let e = s.init_or_load_auto().unwrap_err().to_string();
        assert!(e.contains("no-sec") && e.contains("cannot create"), "{e}");
        let e = s
            .unlock_with_password("long enough")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no host key file"), "{e}");
    }

    #[test]
    fn seal_open() {
        let k = [7u8; 32];
        let sealed = seal(&k, b"aad", b"secret").unwrap();
        assert_eq!(sealed.len(), NONCE_LEN + 6 + TAG_LEN);
        assert_eq!(&open(&k, b"aad", &sealed).unwrap()[..], b"secret");
        assert!(open(&k, b"other", &sealed).is_none());
        assert!(open(&[8u8; 32], b"aad", &sealed).is_none());
        assert!(open(&k, b"aad", &sealed[..10]).is_none());
    }
}
