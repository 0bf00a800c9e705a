//! The per-file header: the first 4096 bytes of every encrypted lower file.
//!
//! Byte map of format version 1 (all integers little-endian; FORMAT.md has
//! the same table with the reasoning):
//!
//! ```text
//! off   len   field
//!   0     8   magic "GuardFS\0"
//!   8     2   format version = 1
//!  10     1   mode: 1 = xts, 2 = cbc-cs1, 3 = gcm
//!  11     1   key name length n, 1..=64
//!  12     4   policy key version
//!  16    64   policy key name, UTF-8, n bytes then zeros
//!  80    16   file id (random)
//!  96    16   base IV (random; cbc-cs1 segment IVs derive from it)
//! 112     8   key check value: HMAC-SHA256(policy key, "guardfs kcv v1" || file id)[0..8]
//! 120    12   wrap nonce (random)
//! 132    64   data key, encrypted with AES-256-GCM
//! 196    16   GCM tag
//! 212  3884   reserved, zero
//! ```
//!
//! The data key is sealed with AES-256-GCM under a wrapping key derived per
//! file: HKDF-SHA256(ikm = policy key, salt = file id, info = "guardfs v1
//! header wrap"). The associated data is the whole 4096-byte header with
//! bytes 120..212 (nonce, wrapped key, tag) set to zero, so the one tag
//! authenticates every other header byte, reserved bytes included.
//!
//! Why an AEAD and not RFC 3394/5649 key wrap: key wrap authenticates only
//! the wrapped key, so binding mode, key name, version, file id and IV would
//! need a second primitive (a MAC) and a second key. One GCM seal with the
//! header as associated data does both. Deriving the wrapping key from the
//! file id means no two files share a (key, nonce) pair even if random
//! nonces collided, and a wrapped key moved into another file's header fails
//! authentication.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::{hkdf, hmac};
use zeroize::Zeroize;

use crate::error::HeaderError;
use crate::keys::{DATA_KEY_LEN, DataKey, PolicyKey};
use crate::mode::Mode;

/// Length of a header, and of the space it takes at the start of a lower file.
pub const HEADER_LEN: usize = 4096;
/// The magic bytes a header starts with.
pub const MAGIC: [u8; 8] = *b"GuardFS\0";
/// The format version this build writes.
pub const FORMAT_VERSION: u16 = 1;
/// Longest policy key name a header can hold.
pub const MAX_KEY_NAME: usize = 64;

const OFF_VERSION: usize = 8;
const OFF_MODE: usize = 10;
const OFF_NAME_LEN: usize = 11;
const OFF_KEY_VERSION: usize = 12;
const OFF_NAME: usize = 16;
const OFF_FILE_ID: usize = 80;
const OFF_BASE_IV: usize = 96;
const OFF_KCV: usize = 112;
const OFF_NONCE: usize = 120;
const OFF_WRAPPED: usize = 132;
const OFF_TAG: usize = 196;
const OFF_RESERVED: usize = 212;

/// A file's random identity, bound into its header and (in `gcm`) into
/// every unit's associated data.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId(pub [u8; 16]);

impl fmt::Debug for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A parsed header. Fields are public for inspection (`voradmin secfs iv
/// get`); the wrapped key only opens with [`Header::unwrap_key`].
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    /// Content mode of the file.
    pub mode: Mode,
    /// Name of the policy key that wraps the data key.
    pub key_name: String,
    /// Version of that policy key.
    pub key_version: u32,
    /// The file's random identity.
    pub file_id: FileId,
    /// Random base IV (used by `cbc-cs1`).
    pub base_iv: [u8; 16],
    kcv: [u8; 8],
    nonce: [u8; 12],
    wrapped: [u8; DATA_KEY_LEN],
    tag: [u8; 16],
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Header")
            .field("mode", &self.mode)
            .field("key_name", &self.key_name)
            .field("key_version", &self.key_version)
            .field("file_id", &self.file_id)
            .finish_non_exhaustive()
    }
}

fn read_u16(b: &[u8; HEADER_LEN], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn read_u32(b: &[u8; HEADER_LEN], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn read_arr<const N: usize>(b: &[u8; HEADER_LEN], off: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[off..off + N]);
    out
}

fn validate_key_name(name: &str) -> Result<(), HeaderError> {
    if name.is_empty() {
        return Err(HeaderError::BadKeyName("empty"));
    }
    if name.len() > MAX_KEY_NAME {
        return Err(HeaderError::BadKeyName("longer than 64 bytes"));
    }
    if name.bytes().any(|b| b == 0) {
        return Err(HeaderError::BadKeyName("contains NUL"));
    }
    Ok(())
}

/// The per-file wrapping key: HKDF-SHA256(policy key, salt = file id).
fn wrapping_key(policy: &PolicyKey, file_id: &FileId) -> Result<LessSafeKey, HeaderError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &file_id.0).extract(policy.expose());
    let mut okm = [0u8; 32];
    prk.expand(&[b"guardfs v1 header wrap"], &AES_256_GCM)
        .and_then(|o| o.fill(&mut okm))
        .map_err(|_| HeaderError::AuthenticationFailed)?;
    let key = UnboundKey::new(&AES_256_GCM, &okm).map_err(|_| HeaderError::AuthenticationFailed);
    okm.zeroize();
    Ok(LessSafeKey::new(key?))
}

fn key_check_value(policy: &PolicyKey, file_id: &FileId) -> [u8; 8] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, policy.expose());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(b"guardfs kcv v1");
    ctx.update(&file_id.0);
    let tag = ctx.sign();
    let mut kcv = [0u8; 8];
    kcv.copy_from_slice(&tag.as_ref()[..8]);
    kcv
}

impl Header {
    /// Create the header of a new file: a random file id, base IV and data
    /// key, the data key sealed under `policy`. Returns the header and the
    /// data key.
    ///
    /// # Errors
    /// `BadKeyName` for an invalid key name, `UnknownMode` for `clear`
    /// (clear files have no header), `Random` if the RNG fails.
    pub fn create(
        mode: Mode,
        key_name: &str,
        key_version: u32,
        policy: &PolicyKey,
    ) -> Result<(Header, DataKey), HeaderError> {
        let data_key = DataKey::generate().map_err(|_| HeaderError::Random)?;
        let mut file_id = FileId([0; 16]);
        let mut base_iv = [0u8; 16];
        crate::random_bytes(&mut file_id.0).map_err(|_| HeaderError::Random)?;
        crate::random_bytes(&mut base_iv).map_err(|_| HeaderError::Random)?;
        let header = Self::seal(
            mode,
            key_name,
            key_version,
            file_id,
            base_iv,
            &data_key,
            policy,
        )?;
        Ok((header, data_key))
    }

    /// Seal `data_key` into a header with the given fields. Used to create
    /// headers and to rewrap one under another policy key (shallow rekey).
    ///
    /// # Errors
    /// As [`Header::create`].
    pub fn seal(
        mode: Mode,
        key_name: &str,
        key_version: u32,
        file_id: FileId,
        base_iv: [u8; 16],
        data_key: &DataKey,
        policy: &PolicyKey,
    ) -> Result<Header, HeaderError> {
        let mut nonce = [0u8; 12];
        crate::random_bytes(&mut nonce).map_err(|_| HeaderError::Random)?;
        Self::seal_with_nonce(
            mode,
            key_name,
            key_version,
            file_id,
            base_iv,
            data_key,
            policy,
            nonce,
        )
    }

    /// [`Header::seal`] with a given wrap nonce: the known-answer tests use
    /// it; everything else must use a random one.
    #[expect(
        clippy::too_many_arguments,
        reason = "every header field plus the nonce; crate-private, used by seal and the KATs"
    )]
    pub(crate) fn seal_with_nonce(
        mode: Mode,
        key_name: &str,
        key_version: u32,
        file_id: FileId,
        base_iv: [u8; 16],
        data_key: &DataKey,
        policy: &PolicyKey,
        nonce: [u8; 12],
    ) -> Result<Header, HeaderError> {
        validate_key_name(key_name)?;
        if !mode.has_header() {
            return Err(HeaderError::UnknownMode(0));
        }
        let mut h = Header {
            mode,
            key_name: key_name.to_owned(),
            key_version,
            file_id,
            base_iv,
            kcv: key_check_value(policy, &file_id),
            nonce,
            wrapped: [0; DATA_KEY_LEN],
            tag: [0; 16],
        };
        let aad = h.associated_data();
        let key = wrapping_key(policy, &file_id)?;
        // `wrapped` holds the plaintext data key until the seal succeeds:
        // wipe it on every failure path, before `h` is dropped.
        h.wrapped.copy_from_slice(data_key.expose());
        let sealed = key.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&aad[..]),
            &mut h.wrapped,
        );
        match sealed {
            Ok(tag) => {
                h.tag.copy_from_slice(tag.as_ref());
                Ok(h)
            }
            Err(_) => {
                h.wrapped.zeroize();
                Err(HeaderError::AuthenticationFailed)
            }
        }
    }

    /// Rewrap this file's data key under another policy key: the shallow
    /// rekey. File id, IV, mode and contents stay as they are.
    ///
    /// # Errors
    /// As [`Header::unwrap_key`] for the old key, [`Header::seal`] for the new.
    pub fn rewrap(
        &self,
        old: &PolicyKey,
        key_name: &str,
        key_version: u32,
        new: &PolicyKey,
    ) -> Result<Header, HeaderError> {
        let data_key = self.unwrap_key(old)?;
        Self::seal(
            self.mode,
            key_name,
            key_version,
            self.file_id,
            self.base_iv,
            &data_key,
            new,
        )
    }

    /// Whether `bytes` start with the header magic. A cheap test; only
    /// [`Header::parse`] and [`Header::unwrap_key`] say a header is valid.
    pub fn has_magic(bytes: &[u8]) -> bool {
        bytes.len() >= MAGIC.len() && bytes[..MAGIC.len()] == MAGIC
    }

    /// Parse the structure of a header. Total: any input gives a header or a
    /// typed error. Authentication happens in [`Header::unwrap_key`].
    ///
    /// # Errors
    /// `WrongLength`, `NotAHeader`, `UnsupportedVersion`, `UnknownMode`,
    /// `BadKeyName`, `ReservedNotZero`.
    pub fn parse(bytes: &[u8]) -> Result<Header, HeaderError> {
        let b: &[u8; HEADER_LEN] = bytes.try_into().map_err(|_| HeaderError::WrongLength {
            expected: HEADER_LEN,
            got: bytes.len(),
        })?;
        if !Self::has_magic(b) {
            return Err(HeaderError::NotAHeader);
        }
        let version = read_u16(b, OFF_VERSION);
        if version != FORMAT_VERSION {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        let mode =
            Mode::from_header_code(b[OFF_MODE]).ok_or(HeaderError::UnknownMode(b[OFF_MODE]))?;
        let n = b[OFF_NAME_LEN] as usize;
        if n == 0 || n > MAX_KEY_NAME {
            return Err(HeaderError::BadKeyName("length out of range"));
        }
        let name_field = &b[OFF_NAME..OFF_NAME + MAX_KEY_NAME];
        if name_field[n..].iter().any(|&c| c != 0) {
            return Err(HeaderError::BadKeyName("not zero padded"));
        }
        let key_name = std::str::from_utf8(&name_field[..n])
            .map_err(|_| HeaderError::BadKeyName("not UTF-8"))?
            .to_owned();
        validate_key_name(&key_name)?;
        if b[OFF_RESERVED..].iter().any(|&c| c != 0) {
            return Err(HeaderError::ReservedNotZero);
        }
        Ok(Header {
            mode,
            key_name,
            key_version: read_u32(b, OFF_KEY_VERSION),
            file_id: FileId(read_arr(b, OFF_FILE_ID)),
            base_iv: read_arr(b, OFF_BASE_IV),
            kcv: read_arr(b, OFF_KCV),
            nonce: read_arr(b, OFF_NONCE),
            wrapped: read_arr(b, OFF_WRAPPED),
            tag: read_arr(b, OFF_TAG),
        })
    }

    /// The 4096 header bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = self.associated_data();
        b[OFF_NONCE..OFF_NONCE + 12].copy_from_slice(&self.nonce);
        b[OFF_WRAPPED..OFF_WRAPPED + DATA_KEY_LEN].copy_from_slice(&self.wrapped);
        b[OFF_TAG..OFF_TAG + 16].copy_from_slice(&self.tag);
        b
    }

    /// The header with nonce, wrapped key and tag zeroed: the GCM
    /// associated data.
    fn associated_data(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..8].copy_from_slice(&MAGIC);
        b[OFF_VERSION..OFF_VERSION + 2].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[OFF_MODE] = self.mode.header_code().unwrap_or(0);
        b[OFF_NAME_LEN] = self.key_name.len() as u8;
        b[OFF_KEY_VERSION..OFF_KEY_VERSION + 4].copy_from_slice(&self.key_version.to_le_bytes());
        b[OFF_NAME..OFF_NAME + self.key_name.len()].copy_from_slice(self.key_name.as_bytes());
        b[OFF_FILE_ID..OFF_FILE_ID + 16].copy_from_slice(&self.file_id.0);
        b[OFF_BASE_IV..OFF_BASE_IV + 16].copy_from_slice(&self.base_iv);
        b[OFF_KCV..OFF_KCV + 8].copy_from_slice(&self.kcv);
        debug_assert!(b[OFF_RESERVED..].iter().all(|&c| c == 0));
        b
    }

    /// Open the wrapped data key with `policy`.
    ///
    /// # Errors
    /// `WrongKey` if the key check value does not match `policy`: the wrong
    /// policy key, or damage to the file id or key check bytes (the check
    /// covers exactly those and runs first); `AuthenticationFailed` if the
    /// header was damaged or altered anywhere else (reserved bytes
    /// included).
    pub fn unwrap_key(&self, policy: &PolicyKey) -> Result<DataKey, HeaderError> {
        let kcv = key_check_value(policy, &self.file_id);
        if aws_lc_rs::constant_time::verify_slices_are_equal(&kcv, &self.kcv).is_err() {
            return Err(HeaderError::WrongKey {
                name: self.key_name.clone(),
                version: self.key_version,
            });
        }
        let key = wrapping_key(policy, &self.file_id)?;
        let aad = self.associated_data();
        let mut out = [0u8; DATA_KEY_LEN];
        let res = key.open_separate_gather(
            Nonce::assume_unique_for_key(self.nonce),
            Aad::from(&aad[..]),
            &self.wrapped,
            &self.tag,
            &mut out,
        );
        let dk = DataKey::from_bytes(out);
        out.zeroize();
        res.map_err(|_| HeaderError::AuthenticationFailed)?;
        Ok(dk)
    }

    /// Parse `bytes` and open the data key in one step.
    ///
    /// # Errors
    /// Any error of [`Header::parse`] or [`Header::unwrap_key`].
    pub fn open(bytes: &[u8], policy: &PolicyKey) -> Result<(Header, DataKey), HeaderError> {
        let h = Self::parse(bytes)?;
        let dk = h.unwrap_key(policy)?;
        Ok((h, dk))
    }

    /// Check that this header is keyed by `name` version `version`.
    ///
    /// # Errors
    /// `KeyMismatch` naming both keys.
    pub fn expect_key(&self, name: &str, version: u32) -> Result<(), HeaderError> {
        if self.key_name == name && self.key_version == version {
            Ok(())
        } else {
            Err(HeaderError::KeyMismatch {
                expected_name: self.key_name.clone(),
                expected_version: self.key_version,
                name: name.to_owned(),
                version,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pk(b: u8) -> PolicyKey {
        PolicyKey::from_bytes([b; 32])
    }

    #[test]
    fn create_parse_open_round_trip() {
        for mode in [Mode::Xts, Mode::CbcCs1, Mode::Gcm] {
            let (h, dk) = Header::create(mode, "k1", 3, &pk(1)).unwrap();
            let bytes = h.to_bytes();
            assert_eq!(&bytes[..8], b"GuardFS\0");
            let (h2, dk2) = Header::open(&bytes, &pk(1)).unwrap();
            assert_eq!(h, h2);
            assert_eq!(dk, dk2);
            assert_eq!(h2.mode, mode);
            assert_eq!(h2.key_name, "k1");
            assert_eq!(h2.key_version, 3);
        }
    }

    /// Annotated bytes of a fixed header (nonce, wrap and tag vary).
    #[test]
    fn byte_layout() {
        let dk = DataKey::from_bytes([7; 64]);
        let h = Header::seal(
            Mode::Gcm,
            "payroll",
            0x0102_0304,
            FileId([0xaa; 16]),
            [0xbb; 16],
            &dk,
            &pk(9),
        )
        .unwrap();
        let b = h.to_bytes();
        assert_eq!(&b[0..8], b"GuardFS\0"); // magic
        assert_eq!(&b[8..10], &[1, 0]); // format version 1, LE
        assert_eq!(b[10], 3); // mode gcm
        assert_eq!(b[11], 7); // key name length
        assert_eq!(&b[12..16], &[4, 3, 2, 1]); // key version, LE
        assert_eq!(&b[16..23], b"payroll"); // key name
        assert!(b[23..80].iter().all(|&c| c == 0)); // name padding
        assert_eq!(&b[80..96], &[0xaa; 16]); // file id
        assert_eq!(&b[96..112], &[0xbb; 16]); // base IV
        assert_ne!(&b[132..196], &[7; 64][..]); // wrapped key is not the key
        assert!(b[212..].iter().all(|&c| c == 0)); // reserved
    }

    #[test]
    fn wrong_key_is_typed() {
        let (h, _) = Header::create(Mode::Xts, "k", 1, &pk(1)).unwrap();
        let err = Header::open(&h.to_bytes(), &pk(2)).unwrap_err();
        assert_eq!(
            err,
            HeaderError::WrongKey {
                name: "k".into(),
                version: 1
            }
        );
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let (h, _) = Header::create(Mode::CbcCs1, "key-name", 1, &pk(1)).unwrap();
        let bytes = h.to_bytes();
        for byte in (0..HEADER_LEN).step_by(7).chain(OFF_NONCE..OFF_RESERVED) {
            for bit in [0u8, 3, 7] {
                let mut b = bytes;
                b[byte] ^= 1 << bit;
                assert!(
                    Header::open(&b, &pk(1)).is_err(),
                    "flip at {byte}:{bit} undetected"
                );
            }
        }
    }

    /// Damage to the file id or key check value reads as `WrongKey` (the
    /// check runs first and covers exactly those bytes, see the variant's
    /// doc); damage anywhere else is another typed error. Never `Ok`.
    #[test]
    fn every_byte_flip_gives_a_typed_error() {
        let (h, _) = Header::create(Mode::Gcm, "key-name", 4, &pk(1)).unwrap();
        let bytes = h.to_bytes();
        let kcv_covered =
            |i: usize| (OFF_FILE_ID..OFF_BASE_IV).contains(&i) || (OFF_KCV..OFF_NONCE).contains(&i);
        for byte in 0..HEADER_LEN {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = bytes;
                b[byte] ^= flip;
                let err = Header::open(&b, &pk(1)).unwrap_err();
                if kcv_covered(byte) {
                    assert_eq!(
                        err,
                        HeaderError::WrongKey {
                            name: "key-name".into(),
                            version: 4
                        },
                        "byte {byte} ^ {flip:#x}"
                    );
                } else {
                    assert!(
                        !matches!(err, HeaderError::WrongKey { .. }),
                        "byte {byte} ^ {flip:#x}: {err:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn spliced_headers_fail() {
        let (a, _) = Header::create(Mode::Gcm, "k", 1, &pk(1)).unwrap();
        let (b, _) = Header::create(Mode::Gcm, "k", 1, &pk(1)).unwrap();
        // A's wrapped key and tag moved into B's header.
        let mut spliced = b.to_bytes();
        spliced[OFF_NONCE..OFF_RESERVED].copy_from_slice(&a.to_bytes()[OFF_NONCE..OFF_RESERVED]);
        assert_eq!(
            Header::open(&spliced, &pk(1)).unwrap_err(),
            HeaderError::AuthenticationFailed
        );
        // B's file id written into A's header (and its key check value).
        let mut spliced = a.to_bytes();
        spliced[OFF_FILE_ID..OFF_NONCE].copy_from_slice(&b.to_bytes()[OFF_FILE_ID..OFF_NONCE]);
        assert_eq!(
            Header::open(&spliced, &pk(1)).unwrap_err(),
            HeaderError::AuthenticationFailed
        );
    }

    #[test]
    fn structural_errors() {
        assert!(matches!(
            Header::parse(&[0u8; 10]),
            Err(HeaderError::WrongLength { .. })
        ));
        assert_eq!(
            Header::parse(&[0u8; HEADER_LEN]).unwrap_err(),
            HeaderError::NotAHeader
        );
        let (h, _) = Header::create(Mode::Xts, "k", 1, &pk(1)).unwrap();
        let good = h.to_bytes();
        let mut b = good;
        b[8] = 2;
        assert_eq!(
            Header::parse(&b).unwrap_err(),
            HeaderError::UnsupportedVersion(2)
        );
        let mut b = good;
        b[10] = 9;
        assert_eq!(Header::parse(&b).unwrap_err(), HeaderError::UnknownMode(9));
        let mut b = good;
        b[11] = 0;
        assert!(matches!(Header::parse(&b), Err(HeaderError::BadKeyName(_))));
        let mut b = good;
        b[11] = 65;
        assert!(matches!(Header::parse(&b), Err(HeaderError::BadKeyName(_))));
        let mut b = good;
        b[16] = 0xff;
        assert!(matches!(Header::parse(&b), Err(HeaderError::BadKeyName(_))));
        let mut b = good;
        b[40] = b'x';
        assert!(matches!(Header::parse(&b), Err(HeaderError::BadKeyName(_))));
    }

    #[test]
    fn rewrap_keeps_data_key() {
        let (h, dk) = Header::create(Mode::Xts, "old", 1, &pk(1)).unwrap();
        let h2 = h.rewrap(&pk(1), "new", 2, &pk(2)).unwrap();
        assert_eq!(h2.file_id, h.file_id);
        assert_eq!(h2.base_iv, h.base_iv);
        assert_eq!(h2.unwrap_key(&pk(2)).unwrap(), dk);
        assert!(h2.unwrap_key(&pk(1)).is_err());
        assert!(h2.expect_key("new", 2).is_ok());
        assert!(h2.expect_key("old", 1).is_err());
    }

    #[test]
    fn bad_names_refused() {
        assert!(Header::create(Mode::Xts, "", 1, &pk(1)).is_err());
        assert!(Header::create(Mode::Xts, &"x".repeat(65), 1, &pk(1)).is_err());
        assert!(Header::create(Mode::Xts, "a\0b", 1, &pk(1)).is_err());
        assert!(Header::create(Mode::Clear, "k", 1, &pk(1)).is_err());
    }

    #[test]
    fn debug_hides_wrapped_key() {
        let (h, _) = Header::create(Mode::Xts, "k", 1, &pk(1)).unwrap();
        let s = format!("{h:?}");
        assert!(!s.contains("wrapped"), "{s}");
    }
}
