//! Key types. Every key zeroizes its bytes on drop and never prints them:
//! `Debug` shows a fingerprint (a truncated SHA-256 under a domain label),
//! which identifies a key in logs without revealing it.
//!
//! Keeping keys out of swap and core dumps is the job of the processes that
//! hold them (`mlockall`, `PR_SET_DUMPABLE`); this crate does no I/O.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of a policy key: AES-256.
pub const POLICY_KEY_LEN: usize = 32;
/// Length of a per-file data key: two AES-256 keys (XTS needs both; CBC-CS1
/// uses the second for segment IVs; GCM uses the first).
pub const DATA_KEY_LEN: usize = 64;

/// A short, non-secret identifier of a key: the first 8 bytes of
/// SHA-256("guardfs key fingerprint v1" || key).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyFingerprint([u8; 8]);

impl KeyFingerprint {
    fn of(key: &[u8]) -> Self {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(b"guardfs key fingerprint v1");
        ctx.update(key);
        let digest = ctx.finish();
        let mut fp = [0u8; 8];
        fp.copy_from_slice(&digest.as_ref()[..8]);
        KeyFingerprint(fp)
    }

    /// The fingerprint as 16 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Display for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

macro_rules! secret_key {
    ($(#[$doc:meta])* $name:ident, $len:expr, $label:literal) => {
        $(#[$doc])*
        #[derive(Clone, Zeroize, ZeroizeOnDrop)]
        pub struct $name {
            bytes: [u8; $len],
        }

        impl $name {
            /// Length of the key in bytes.
            pub const LEN: usize = $len;

            /// Take ownership of key bytes. The caller should zeroize its copy.
            pub fn from_bytes(bytes: [u8; $len]) -> Self {
                Self { bytes }
            }

            /// Copy key bytes from a slice of exactly [`Self::LEN`] bytes.
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                let arr: [u8; $len] = bytes.try_into().ok()?;
                Some(Self { bytes: arr })
            }

            /// A fresh key from the system CSPRNG.
            ///
            /// # Errors
            /// Fails only if the system random source fails.
            pub fn generate() -> Result<Self, crate::RandomError> {
                let mut k = Self { bytes: [0u8; $len] };
                crate::random_bytes(&mut k.bytes)?;
                Ok(k)
            }

            /// The key bytes. Only cipher constructors should call this.
            pub fn expose(&self) -> &[u8; $len] {
                &self.bytes
            }

            /// A printable identifier that does not reveal the key.
            pub fn fingerprint(&self) -> KeyFingerprint {
                KeyFingerprint::of(&self.bytes)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($label, "(fp:{})"), self.fingerprint())
            }
        }

        impl PartialEq for $name {
            /// Constant-time comparison.
            fn eq(&self, other: &Self) -> bool {
                aws_lc_rs::constant_time::verify_slices_are_equal(&self.bytes, &other.bytes)
                    .is_ok()
            }
        }
        impl Eq for $name {}
    };
}

secret_key!(
    /// An AES-256 policy key (CTE's "key" in a key rule). It never encrypts
    /// file contents itself: it wraps per-file data keys in headers.
    PolicyKey,
    POLICY_KEY_LEN,
    "PolicyKey"
);

secret_key!(
    /// A per-file random data key, stored only wrapped in the file's header.
    DataKey,
    DATA_KEY_LEN,
    "DataKey"
);

impl DataKey {
    /// The first AES-256 key (XTS data key, CBC key, GCM key).
    pub(crate) fn first(&self) -> &[u8; 32] {
        &self.bytes.as_chunks::<32>().0[0]
    }

    /// The second AES-256 key (XTS tweak key, CBC-CS1 IV key).
    pub(crate) fn second(&self) -> &[u8; 32] {
        &self.bytes.as_chunks::<32>().0[1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_fingerprint_not_bytes() {
        let k = PolicyKey::from_bytes([0xab; 32]);
        let s = format!("{k:?}");
        assert!(s.starts_with("PolicyKey(fp:"), "{s}");
        assert!(!s.contains("abab"), "{s}");
        assert!(!s.contains("171, 171"), "{s}");
        assert_eq!(k.fingerprint().to_hex().len(), 16);
    }

    #[test]
    fn fingerprints_differ_and_are_stable() {
        let a = PolicyKey::from_bytes([1; 32]);
        let b = PolicyKey::from_bytes([2; 32]);
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(
            a.fingerprint(),
            PolicyKey::from_bytes([1; 32]).fingerprint()
        );
    }

    #[test]
    fn generated_keys_differ() {
        let a = DataKey::generate().unwrap();
        let b = DataKey::generate().unwrap();
        assert_ne!(a, b);
        assert_ne!(a.first(), a.second());
    }

    #[test]
    fn from_slice_checks_length() {
        assert!(PolicyKey::from_slice(&[0u8; 31]).is_none());
        assert!(PolicyKey::from_slice(&[0u8; 32]).is_some());
    }
}
