//! Typed errors of the format. Callers map them to errno at their own edge.

use crate::offsets::UnitNo;

/// Why 4096 bytes are not a usable header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The buffer is not exactly one header long.
    #[error("a header is {expected} bytes, got {got}")]
    WrongLength { expected: usize, got: usize },
    /// The magic bytes are absent: plaintext or a foreign file.
    #[error("no GuardFS header (bad magic): the file is not encrypted by GuardFS")]
    NotAHeader,
    /// A format version this build does not read.
    #[error("unsupported header format version {0}")]
    UnsupportedVersion(u16),
    /// The mode byte names no known mode.
    #[error("unknown content mode code {0} in header")]
    UnknownMode(u8),
    /// The key name is empty, too long, not UTF-8, or not zero padded.
    #[error("malformed key name field: {0}")]
    BadKeyName(&'static str),
    /// Reserved bytes are not zero: the header is damaged.
    #[error("header is damaged: reserved bytes are not zero")]
    ReservedNotZero,
    /// The key check value (header bytes 112..120) does not match the policy
    /// key given, computed over the file id (bytes 80..96). This means the
    /// wrong policy key was offered, **or** the file id or key check bytes
    /// are damaged: format version 1 cannot tell those apart, because the
    /// check runs before the header tag. A file that reports this under the
    /// key named in its header is more likely damaged than misconfigured.
    #[error(
        "key check value does not match key {name} version {version}: wrong policy key, \
         or the header's file id or key check bytes are damaged"
    )]
    WrongKey { name: String, version: u32 },
    /// The policy key matches but the header does not authenticate: damaged
    /// or spliced from other headers.
    #[error("header authentication failed: the header is damaged or was altered")]
    AuthenticationFailed,
    /// The header names a different key than the one offered.
    #[error("header is keyed by {expected_name} v{expected_version}, not {name} v{version}")]
    KeyMismatch {
        expected_name: String,
        expected_version: u32,
        name: String,
        version: u32,
    },
    /// The system random generator failed while creating a header.
    #[error("random generator failed")]
    Random,
}

/// Why a unit could not be encrypted or decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    /// A `gcm` unit failed authentication: tampered, swapped, or from
    /// another file.
    #[error("unit {0} failed authentication")]
    UnitAuthentication(UnitNo),
    /// A lower unit has a length no plaintext can produce (e.g. a `gcm` unit
    /// shorter than its nonce and tag).
    #[error("unit {0} has an impossible lower length {1}")]
    BadUnitLength(UnitNo, usize),
    /// A unit number past the last unit of a file of `MAX_PLAIN_SIZE`
    /// bytes (or a run of units that would reach past it).
    #[error("unit {0} is beyond the largest file size")]
    UnitOutOfRange(UnitNo),
    /// Buffers handed in do not fit the run of units described.
    #[error("buffer sizes do not match the unit run: {0}")]
    BufferSize(&'static str),
    /// The hardware or library cipher refused the operation.
    #[error("cipher backend failure: {0}")]
    Backend(&'static str),
    /// The system random generator failed.
    #[error("random generator failed")]
    Random,
}
