//! Secrets at rest: the server master key that seals key material
//! (AES-256-GCM, AAD binding key id and version) and clients' escrow keys
//! (AAD `escrow|<client id>`), and administrator password hashes
//! (PBKDF2-HMAC-SHA256).

use std::num::NonZeroU32;
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::pbkdf2;
use zeroize::Zeroizing;

use crate::util::random_bytes;

/// Length of key material handed to agents: one AES-256 policy key.
pub const MATERIAL_LEN: usize = 32;
const MASTER_LEN: usize = 32;
const PBKDF2_ITERATIONS: u32 = 600_000;

/// The server master key. Zeroized on drop; never printed.
pub struct MasterKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

fn aad(key_id: &str, version: u32) -> Vec<u8> {
    format!("guardfs-keymgr key material v1\0{key_id}\0{version}").into_bytes()
}

/// AAD of a sealed escrow key: purpose label and client id. Cannot collide
/// with [`aad`], which starts with `guardfs-keymgr`.
fn escrow_aad(client_id: &str) -> Vec<u8> {
    format!("escrow|{client_id}").into_bytes()
}

impl MasterKey {
    /// Create `path` (mode 0600, must not exist) holding 32 random bytes.
    ///
    /// # Errors
    /// When the file exists or cannot be written.
    pub fn create(path: &Path) -> Result<(), String> {
        let mut bytes = Zeroizing::new([0u8; MASTER_LEN]);
        random_bytes(&mut bytes[..])?;
        crate::ca::write_private(path, &bytes[..])
    }

    /// Load the key from `path`.
    ///
    /// # Errors
    /// When the file is missing, unreadable, of the wrong size or readable
    /// by group/others.
    pub fn load(path: &Path) -> Result<MasterKey, String> {
        crate::ca::check_private_mode(path)?;
        let bytes = Zeroizing::new(
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        );
        if bytes.len() != MASTER_LEN {
            return Err(format!("{} is not a {MASTER_LEN}-byte key", path.display()));
        }
        Self::from_bytes(&bytes)
    }

    fn from_bytes(bytes: &[u8]) -> Result<MasterKey, String> {
        let key = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| "bad master key".to_owned())?;
        Ok(MasterKey {
            key: LessSafeKey::new(key),
        })
    }

    /// Seal `material` for key `key_id` version `version`:
    /// `nonce || ciphertext || tag`.
    ///
    /// # Errors
    /// When the random generator or the cipher fails.
    pub fn seal(&self, key_id: &str, version: u32, material: &[u8]) -> Result<Vec<u8>, String> {
        self.seal_aad(&aad(key_id, version), material)
    }

    /// Seal a client's escrow key (AAD `escrow|<client id>`).
    ///
    /// # Errors
    /// As [`MasterKey::seal`].
    pub fn seal_escrow(&self, client_id: &str, escrow: &[u8]) -> Result<Vec<u8>, String> {
        self.seal_aad(&escrow_aad(client_id), escrow)
    }

    /// Open what [`MasterKey::seal_escrow`] made for the same client.
    ///
    /// # Errors
    /// As [`MasterKey::open`].
    pub fn open_escrow(
        &self,
        client_id: &str,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, String> {
        self.open_aad(&escrow_aad(client_id), sealed)
    }

    fn seal_aad(&self, aad: &[u8], material: &[u8]) -> Result<Vec<u8>, String> {
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce)?;
        let mut buf = material.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| "seal failed".to_owned())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        zeroize::Zeroize::zeroize(&mut buf);
        Ok(out)
    }

    /// Open what [`MasterKey::seal`] made for the same key id and version.
    ///
    /// # Errors
    /// When the blob is damaged, was sealed for another key/version, or
    /// under another master key.
    pub fn open(
        &self,
        key_id: &str,
        version: u32,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, String> {
        self.open_aad(&aad(key_id, version), sealed)
    }

    fn open_aad(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
        if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err("sealed material too short".into());
        }
        let (n, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(n).map_err(|_| "bad nonce".to_owned())?;
        let mut buf = Zeroizing::new(ct.to_vec());
        let len = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut buf[..])
            .map_err(|_| "sealed material does not authenticate".to_owned())?
            .len();
        buf.truncate(len);
        Ok(buf)
    }

    /// Fresh random material sealed for `key_id`/`version`.
    ///
    /// # Errors
    /// As [`MasterKey::seal`].
    pub fn seal_new(&self, key_id: &str, version: u32) -> Result<Vec<u8>, String> {
        let mut m = Zeroizing::new([0u8; MATERIAL_LEN]);
        random_bytes(&mut m[..])?;
        self.seal(key_id, version, &m[..])
    }
}

/// Hash a password for storage.
///
/// # Errors
/// When the random generator fails.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    random_bytes(&mut salt)?;
    let iters = NonZeroU32::new(PBKDF2_ITERATIONS).ok_or("zero iterations")?;
    let mut out = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iters,
        &salt,
        password.as_bytes(),
        &mut out,
    );
    Ok(format!(
        "pbkdf2-sha256${PBKDF2_ITERATIONS}${}${}",
        hex::encode(salt),
        hex::encode(out)
    ))
}

/// Check a password against a stored hash (constant time compare).
pub fn verify_password(password: &str, stored: &str) -> bool {
    let mut parts = stored.split('$');
    let (Some("pbkdf2-sha256"), Some(iters), Some(salt), Some(hash), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let (Some(iters), Ok(salt), Ok(hash)) = (
        iters.parse::<u32>().ok().and_then(NonZeroU32::new),
        hex::decode(salt),
        hex::decode(hash),
    ) else {
        return false;
    };
    pbkdf2::verify(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iters,
        &salt,
        password.as_bytes(),
        &hash,
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_binds_id_and_version() {
        let mk = MasterKey::from_bytes(&[9u8; 32]).unwrap();
        let s = mk
            .seal("k1", 1, b"0123456789abcdef0123456789abcdef")
            .unwrap();
        assert_eq!(
            &mk.open("k1", 1, &s).unwrap()[..],
            b"0123456789abcdef0123456789abcdef"
        );
        assert!(mk.open("k1", 2, &s).is_err());
        assert!(mk.open("k2", 1, &s).is_err());
        let mut bad = s.clone();
        bad[20] ^= 1;
        assert!(mk.open("k1", 1, &bad).is_err());
        assert!(mk.open("k1", 1, &s[..10]).is_err());
        let other = MasterKey::from_bytes(&[8u8; 32]).unwrap();
        assert!(other.open("k1", 1, &s).is_err());
    }

    #[test]
    fn escrow_seal_binds_client() {
        let mk = MasterKey::from_bytes(&[9u8; 32]).unwrap();
        let s = mk.seal_escrow("c1", &[7u8; 32]).unwrap();
        assert_eq!(&mk.open_escrow("c1", &s).unwrap()[..], &[7u8; 32]);
        assert!(mk.open_escrow("c2", &s).is_err());
        assert!(mk.open("c1", 1, &s).is_err());
        let k = mk.seal("c1", 1, &[7u8; 32]).unwrap();
        assert!(mk.open_escrow("c1", &k).is_err());
    }

    #[test]
    fn passwords() {
        let h = hash_password("s3cret").unwrap();
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("s3cret!", &h));
        assert!(!verify_password("s3cret", "garbage"));
        assert!(!verify_password("s3cret", "pbkdf2-sha256$0$00$00"));
    }
}
