//! The GuardFS file format: key types, the per-file header, the content modes
//! and the offset arithmetic between plaintext and lower (on-disk) files.
//!
//! This crate owns everything that decides which bytes end up in a lower
//! file: the 4096-byte header that wraps each file's data key under a policy
//! key ([`header`]), the content modes that encrypt independent 4 KiB-aligned
//! units ([`content`]), and the I/O-free arithmetic that maps plaintext
//! offsets to lower offsets ([`offsets`]). `FORMAT.md` beside this crate is
//! the byte-level specification.
//!
//! It must not do I/O, know about FUSE, policies or paths, or allocate on the
//! encrypt/decrypt path: callers hand in their own buffers.
//!
//! `unsafe` is confined to [`backend`], which binds two hardware paths that a
//! measurement justified (see its module doc); everything else is safe code.
#![deny(unsafe_code)]
// Format code must not panic on input: typed errors, never unwrap.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod backend;
pub mod content;
mod error;
pub mod header;
pub mod keys;
mod mode;
pub mod offsets;

#[cfg(test)]
mod kat;

pub use content::ContentCipher;
pub use error::{ContentError, HeaderError};
pub use header::{FileId, HEADER_LEN, Header};
pub use keys::{DataKey, KeyFingerprint, PolicyKey};
pub use mode::{Mode, ParseModeError};
pub use offsets::{Layout, LowerOff, PlainOff, UnitNo, UnitSpan};

/// Fill `buf` with bytes from the operating system's CSPRNG.
///
/// # Errors
/// Fails only if the system random source is unavailable.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), RandomError> {
    aws_lc_rs::rand::fill(buf).map_err(|_| RandomError)
}

/// The system random number generator failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;
