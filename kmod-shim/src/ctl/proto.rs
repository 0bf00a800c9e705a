//! The ioctl channel between vmd and secfs: fixed-size, versioned request
//! structs, one ioctl command per operation, validated field by field.
//!
//! Every request starts with the same 32-byte header (little-endian):
//!
//! ```text
//! off len field
//!   0   4 magic "GFC1"
//!   4   2 version = 1
//!   6   2 op (1 push key, 2 revoke key, 3 load policy, 4 guard, 5 unguard, 6 status,
//!         7 file info, 8 key at)
//!   8   8 seq: strictly increasing per secfs process; a repeated or older seq is a replay
//!  16   4 payload length: exactly the op's payload size
//!  20  12 reserved, zero
//! ```
//!
//! Strings (key names, paths) are UTF-8 in fixed fields, padded with zeros;
//! a field must not contain a zero byte before its end of text or anything
//! but zeros after it. Paths are absolute and normalized. Larger data
//! (policies, host settings) never travels in a struct: vmd writes it to a
//! root-only file named by its SHA-256 in the blob directory and sends the
//! digest, which secfs verifies before use.
//!
//! Decoding is total: any byte string gives a request or a typed error.

use std::fmt;

use guardfs_crypto::Mode;

pub const MAGIC: [u8; 4] = *b"GFC1";
pub const VERSION: u16 = 1;
pub const HEADER_LEN: usize = 32;
pub const NAME_LEN: usize = 64;
pub const PATH_LEN: usize = 1024;

/// The ioctl type byte of the channel.
pub const IOC_TYPE: u8 = b'G';

/// Operations, by code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Op {
    PushKey = 1,
    RevokeKey = 2,
    LoadPolicy = 3,
    Guard = 4,
    Unguard = 5,
    Status = 6,
    FileInfo = 7,
    KeyAt = 8,
}

impl Op {
    pub const ALL: [Op; 8] = [
        Op::PushKey,
        Op::RevokeKey,
        Op::LoadPolicy,
        Op::Guard,
        Op::Unguard,
        Op::Status,
        Op::FileInfo,
        Op::KeyAt,
    ];

    /// Size of the whole struct (header included) of this op.
    pub const fn size(self) -> usize {
        HEADER_LEN
            + match self {
                Op::PushKey => NAME_LEN + 8 + 32,
                Op::RevokeKey => NAME_LEN + 8,
                Op::LoadPolicy => PATH_LEN + 64,
                Op::Guard => PATH_LEN + 8 + NAME_LEN + 64,
                Op::Unguard => PATH_LEN + 8,
                Op::Status => STATUS_FIXED + PATH_LEN + NAME_LEN,
                Op::FileInfo => PATH_LEN + guardfs_crypto::HEADER_LEN,
                // index u32, version u32 (reply), name (reply)
                Op::KeyAt => 8 + NAME_LEN,
            }
    }

    /// The ioctl command number: `_IOW('G', op, size)`, or `_IOWR` for
    /// status and file info, which return data.
    pub const fn ioctl_cmd(self) -> u32 {
        let dir: u32 = if matches!(self, Op::Status | Op::FileInfo | Op::KeyAt) {
            3
        } else {
            1
        };
        (dir << 30) | ((self.size() as u32) << 16) | ((IOC_TYPE as u32) << 8) | (self as u32)
    }

    fn from_code(c: u16) -> Option<Op> {
        Op::ALL.into_iter().find(|o| *o as u16 == c)
    }

    /// The op an ioctl command number names, if any.
    pub fn from_cmd(cmd: u32) -> Option<Op> {
        Op::ALL.into_iter().find(|o| o.ioctl_cmd() == cmd)
    }
}

/// index u32, state u8, mode u8, pad 2, generation u64, last_seq u64, keys u32, pad 4.
const STATUS_FIXED: usize = 4 + 1 + 1 + 2 + 8 + 8 + 4 + 4;

/// Why bytes are not a valid request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("request is {got} bytes, the {op:?} struct is {want}")]
    Size { op: Op, got: usize, want: usize },
    #[error("bad magic")]
    Magic,
    #[error("unsupported version {0}")]
    Version(u16),
    #[error("op field {got} does not match the ioctl command ({want:?})")]
    OpMismatch { got: u16, want: Op },
    #[error("payload length {got}, expected {want}")]
    Length { got: u32, want: u32 },
    #[error("reserved or padding bytes are not zero ({0})")]
    Reserved(&'static str),
    #[error("sequence number 0 is not allowed")]
    Seq,
    #[error("field {0}: {1}")]
    Field(&'static str, &'static str),
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn zeros(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// Read a zero-padded UTF-8 text field.
fn text(field: &'static str, b: &[u8], allow_empty: bool) -> Result<String, ProtoError> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    if !zeros(&b[end..]) {
        return Err(ProtoError::Field(field, "bytes after the terminating zero"));
    }
    if end == 0 && !allow_empty {
        return Err(ProtoError::Field(field, "empty"));
    }
    std::str::from_utf8(&b[..end])
        .map(str::to_owned)
        .map_err(|_| ProtoError::Field(field, "not UTF-8"))
}

fn put_text(b: &mut [u8], s: &str) -> Result<(), ProtoError> {
    if s.len() > b.len() || s.as_bytes().contains(&0) {
        return Err(ProtoError::Field(
            "text",
            "too long or contains a zero byte",
        ));
    }
    b[..s.len()].copy_from_slice(s.as_bytes());
    Ok(())
}

/// A path field: absolute, normalized (no `.`, `..`, `//`, trailing `/`).
fn path(field: &'static str, b: &[u8]) -> Result<String, ProtoError> {
    let p = text(field, b, false)?;
    if !p.starts_with('/') {
        return Err(ProtoError::Field(field, "not absolute"));
    }
    if p.len() > 1
        && (p.ends_with('/')
            || p.split('/')
                .skip(1)
                .any(|c| c.is_empty() || c == "." || c == ".."))
    {
        return Err(ProtoError::Field(field, "not normalized"));
    }
    Ok(p)
}

fn key_name(b: &[u8]) -> Result<String, ProtoError> {
    let n = text("key name", b, false)?;
    if !n
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
    {
        return Err(ProtoError::Field(
            "key name",
            "characters outside [A-Za-z0-9._-]",
        ));
    }
    Ok(n)
}

fn mode_of(code: u8) -> Result<Mode, ProtoError> {
    Mode::from_header_code(code).ok_or(ProtoError::Field("mode", "unknown mode code"))
}

/// SHA-256 digest of a blob, or none (all zeros).
fn digest(b: &[u8]) -> Option<[u8; 32]> {
    let mut d = [0u8; 32];
    d.copy_from_slice(b);
    (!zeros(&d)).then_some(d)
}

/// A decoded request.
#[derive(Clone, PartialEq, Eq)]
pub enum Request {
    PushKey {
        name: String,
        version: u32,
        mode: Mode,
        material: [u8; 32],
    },
    RevokeKey {
        name: String,
        version: u32,
    },
    LoadPolicy {
        path: String,
        policy: [u8; 32],
        host: Option<[u8; 32]>,
    },
    /// `key`: the GuardPoint's key for new files (none for `clear`).
    Guard {
        path: String,
        mode: Mode,
        key: Option<String>,
        policy: Option<[u8; 32]>,
        host: Option<[u8; 32]>,
    },
    Unguard {
        path: String,
        lazy: bool,
    },
    Status {
        index: u32,
    },
    /// The raw header of a file in a GuardPoint (the reply carries its
    /// 4096 bytes after the path).
    FileInfo {
        path: String,
    },
    /// The `index`-th key version the service holds (name, version; never
    /// material), so a restarted vmd can revoke what it no longer holds.
    KeyAt {
        index: u32,
    },
}

impl fmt::Debug for Request {
    /// Never prints key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::PushKey {
                name,
                version,
                mode,
                ..
            } => {
                write!(
                    f,
                    "PushKey {{ name: {name:?}, version: {version}, mode: {mode}, material: <redacted> }}"
                )
            }
            Request::RevokeKey { name, version } => {
                write!(f, "RevokeKey {{ {name:?} v{version} }}")
            }
            Request::LoadPolicy { path, .. } => write!(f, "LoadPolicy {{ {path:?} }}"),
            Request::Guard {
                path,
                mode,
                key,
                policy,
                ..
            } => {
                write!(
                    f,
                    "Guard {{ {path:?}, {mode}, key: {key:?}, policy: {} }}",
                    policy.is_some()
                )
            }
            Request::Unguard { path, lazy } => write!(f, "Unguard {{ {path:?}, lazy: {lazy} }}"),
            Request::Status { index } => write!(f, "Status {{ {index} }}"),
            Request::FileInfo { path } => write!(f, "FileInfo {{ {path:?} }}"),
            Request::KeyAt { index } => write!(f, "KeyAt {{ {index} }}"),
        }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if let Request::PushKey { material, .. } = self {
            zeroize::Zeroize::zeroize(material);
        }
    }
}

impl Request {
    pub fn op(&self) -> Op {
        match self {
            Request::PushKey { .. } => Op::PushKey,
            Request::RevokeKey { .. } => Op::RevokeKey,
            Request::LoadPolicy { .. } => Op::LoadPolicy,
            Request::Guard { .. } => Op::Guard,
            Request::Unguard { .. } => Op::Unguard,
            Request::Status { .. } => Op::Status,
            Request::FileInfo { .. } => Op::FileInfo,
            Request::KeyAt { .. } => Op::KeyAt,
        }
    }

    /// Encode with sequence number `seq`.
    ///
    /// # Errors
    /// A field that does not fit its slot.
    pub fn encode(&self, seq: u64) -> Result<Vec<u8>, ProtoError> {
        let op = self.op();
        let mut b = vec![0u8; op.size()];
        b[..4].copy_from_slice(&MAGIC);
        b[4..6].copy_from_slice(&VERSION.to_le_bytes());
        b[6..8].copy_from_slice(&(op as u16).to_le_bytes());
        b[8..16].copy_from_slice(&seq.to_le_bytes());
        b[16..20].copy_from_slice(&((op.size() - HEADER_LEN) as u32).to_le_bytes());
        let p = &mut b[HEADER_LEN..];
        let code = |m: &Mode| {
            m.header_code()
                .ok_or(ProtoError::Field("mode", "clear has no code"))
        };
        match self {
            Request::PushKey {
                name,
                version,
                mode,
                material,
            } => {
                put_text(&mut p[..NAME_LEN], name)?;
                p[64..68].copy_from_slice(&version.to_le_bytes());
                // Mode code 0: a key of mode clear, which has no material.
                p[68] = match mode {
                    Mode::Clear if zeros(material) => 0,
                    Mode::Clear => {
                        return Err(ProtoError::Field("material", "a clear key has none"));
                    }
                    m => code(m)?,
                };
                p[72..104].copy_from_slice(material);
            }
            Request::RevokeKey { name, version } => {
                put_text(&mut p[..NAME_LEN], name)?;
                p[64..68].copy_from_slice(&version.to_le_bytes());
            }
            Request::LoadPolicy { path, policy, host } => {
                put_text(&mut p[..PATH_LEN], path)?;
                p[PATH_LEN..PATH_LEN + 32].copy_from_slice(policy);
                p[PATH_LEN + 32..PATH_LEN + 64].copy_from_slice(&host.unwrap_or_default());
            }
            Request::Guard {
                path,
                mode,
                key,
                policy,
                host,
            } => {
                put_text(&mut p[..PATH_LEN], path)?;
                p[PATH_LEN] = mode.header_code().unwrap_or(0);
                p[PATH_LEN + 1] = u8::from(policy.is_some());
                put_text(
                    &mut p[GUARD_KEY..GUARD_KEY + NAME_LEN],
                    key.as_deref().unwrap_or(""),
                )?;
                p[GUARD_DIGESTS..GUARD_DIGESTS + 32].copy_from_slice(&policy.unwrap_or_default());
                p[GUARD_DIGESTS + 32..GUARD_DIGESTS + 64]
                    .copy_from_slice(&host.unwrap_or_default());
            }
            Request::Unguard { path, lazy } => {
                put_text(&mut p[..PATH_LEN], path)?;
                p[PATH_LEN] = u8::from(*lazy);
            }
            Request::Status { index } => p[..4].copy_from_slice(&index.to_le_bytes()),
            Request::FileInfo { path } => put_text(&mut p[..PATH_LEN], path)?,
            Request::KeyAt { index } => p[..4].copy_from_slice(&index.to_le_bytes()),
        }
        Ok(b)
    }

    /// Decode the struct of ioctl `op`; returns the request and its seq.
    ///
    /// # Errors
    /// Every malformed field is refused.
    pub fn decode(op: Op, b: &[u8]) -> Result<(Request, u64), ProtoError> {
        if b.len() != op.size() {
            return Err(ProtoError::Size {
                op,
                got: b.len(),
                want: op.size(),
            });
        }
        if b[..4] != MAGIC {
            return Err(ProtoError::Magic);
        }
        let version = le_u16(b, 4);
        if version != VERSION {
            return Err(ProtoError::Version(version));
        }
        let code = le_u16(b, 6);
        if Op::from_code(code) != Some(op) {
            return Err(ProtoError::OpMismatch {
                got: code,
                want: op,
            });
        }
        let seq = le_u64(b, 8);
        if seq == 0 {
            return Err(ProtoError::Seq);
        }
        let want = (op.size() - HEADER_LEN) as u32;
        if le_u32(b, 16) != want {
            return Err(ProtoError::Length {
                got: le_u32(b, 16),
                want,
            });
        }
        if !zeros(&b[20..32]) {
            return Err(ProtoError::Reserved("header"));
        }
        let p = &b[HEADER_LEN..];
        let req = match op {
            Op::PushKey => {
                if !zeros(&p[69..72]) {
                    return Err(ProtoError::Reserved("push key"));
                }
                let mut material = [0u8; 32];
                material.copy_from_slice(&p[72..104]);
                // Mode code 0 is a key of mode clear: no material; any
                // other code needs material.
                let mode = if p[68] == 0 {
                    Mode::Clear
                } else {
                    mode_of(p[68])?
                };
                if zeros(&material) != (mode == Mode::Clear) {
                    return Err(ProtoError::Field(
                        "material",
                        "all zeros, or given for a clear key",
                    ));
                }
                let version = le_u32(p, 64);
                if version == 0 {
                    return Err(ProtoError::Field("version", "zero"));
                }
                Request::PushKey {
                    name: key_name(&p[..NAME_LEN])?,
                    version,
                    mode,
                    material,
                }
            }
            Op::RevokeKey => {
                if !zeros(&p[68..72]) {
                    return Err(ProtoError::Reserved("revoke key"));
                }
                Request::RevokeKey {
                    name: key_name(&p[..NAME_LEN])?,
                    version: le_u32(p, 64),
                }
            }
            Op::LoadPolicy => Request::LoadPolicy {
                path: path("path", &p[..PATH_LEN])?,
                policy: digest(&p[PATH_LEN..PATH_LEN + 32])
                    .ok_or(ProtoError::Field("policy digest", "missing"))?,
                host: digest(&p[PATH_LEN + 32..PATH_LEN + 64]),
            },
            Op::Guard => {
                let flags = p[PATH_LEN + 1];
                if flags & !1 != 0 || !zeros(&p[PATH_LEN + 2..PATH_LEN + 8]) {
                    return Err(ProtoError::Reserved("guard"));
                }
                let policy = digest(&p[GUARD_DIGESTS..GUARD_DIGESTS + 32]);
                if policy.is_some() != (flags & 1 == 1) {
                    return Err(ProtoError::Field(
                        "policy digest",
                        "does not agree with the policy flag",
                    ));
                }
                let gp = path("path", &p[..PATH_LEN])?;
                if gp == "/" {
                    return Err(ProtoError::Field(
                        "path",
                        "the root directory cannot be a GuardPoint",
                    ));
                }
                // 0 = clear (no header code), else the header's code.
                let mode = if p[PATH_LEN] == 0 {
                    Mode::Clear
                } else {
                    mode_of(p[PATH_LEN])?
                };
                let key_field = &p[GUARD_KEY..GUARD_KEY + NAME_LEN];
                let key = if mode == Mode::Clear {
                    if !zeros(key_field) {
                        return Err(ProtoError::Field(
                            "key name",
                            "a clear GuardPoint has no key",
                        ));
                    }
                    None
                } else {
                    Some(key_name(key_field)?)
                };
                Request::Guard {
                    path: gp,
                    mode,
                    key,
                    policy,
                    host: digest(&p[GUARD_DIGESTS + 32..GUARD_DIGESTS + 64]),
                }
            }
            Op::Unguard => {
                if p[PATH_LEN] > 1 || !zeros(&p[PATH_LEN + 1..PATH_LEN + 8]) {
                    return Err(ProtoError::Reserved("unguard"));
                }
                Request::Unguard {
                    path: path("path", &p[..PATH_LEN])?,
                    lazy: p[PATH_LEN] == 1,
                }
            }
            Op::Status => {
                if !zeros(&p[4..]) {
                    return Err(ProtoError::Reserved("status request"));
                }
                Request::Status {
                    index: le_u32(p, 0),
                }
            }
            Op::FileInfo => {
                if !zeros(&p[PATH_LEN..]) {
                    return Err(ProtoError::Reserved("file info request"));
                }
                Request::FileInfo {
                    path: path("path", &p[..PATH_LEN])?,
                }
            }
            Op::KeyAt => {
                if !zeros(&p[4..]) {
                    return Err(ProtoError::Reserved("key at request"));
                }
                Request::KeyAt {
                    index: le_u32(p, 0),
                }
            }
        };
        Ok((req, seq))
    }
}

/// Fill a `KeyAt` reply: version at payload offset 4, name after it.
pub fn encode_key_at(
    req: &Request,
    seq: u64,
    name: &str,
    version: u32,
) -> Result<Vec<u8>, ProtoError> {
    let mut b = req.encode(seq)?;
    let p = &mut b[HEADER_LEN..];
    p[4..8].copy_from_slice(&version.to_le_bytes());
    put_text(&mut p[8..8 + NAME_LEN], name)?;
    Ok(b)
}

/// Read a `KeyAt` reply: (name, version).
pub fn decode_key_at(b: &[u8]) -> Result<(String, u32), ProtoError> {
    if b.len() != Op::KeyAt.size() || b[..4] != MAGIC {
        return Err(ProtoError::Magic);
    }
    let p = &b[HEADER_LEN..];
    Ok((key_name(&p[8..8 + NAME_LEN])?, le_u32(p, 4)))
}

/// Offsets in the guard payload: path, mode, flags, 6 pad, key name, digests.
const GUARD_KEY: usize = PATH_LEN + 8;
const GUARD_DIGESTS: usize = GUARD_KEY + NAME_LEN;

/// `Status` index that asks for the service itself (key count, last seq,
/// number of GuardPoints in `generation`) rather than a GuardPoint.
pub const SERVICE_INDEX: u32 = u32::MAX;

/// One GuardPoint as `Status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusEntry {
    pub index: u32,
    /// 1 = guarded.
    pub state: u8,
    pub mode: Mode,
    pub generation: u64,
    pub last_seq: u64,
    pub keys: u32,
    pub path: String,
    pub policy: String,
}

impl StatusEntry {
    /// Fill the reply struct (same size as the status request).
    pub fn encode(&self, seq: u64) -> Result<Vec<u8>, ProtoError> {
        let mut b = Request::Status { index: self.index }.encode(seq)?;
        let p = &mut b[HEADER_LEN..];
        p[4] = self.state;
        p[5] = self.mode.header_code().unwrap_or(0);
        p[8..16].copy_from_slice(&self.generation.to_le_bytes());
        p[16..24].copy_from_slice(&self.last_seq.to_le_bytes());
        p[24..28].copy_from_slice(&self.keys.to_le_bytes());
        put_text(&mut p[STATUS_FIXED..STATUS_FIXED + PATH_LEN], &self.path)?;
        put_text(&mut p[STATUS_FIXED + PATH_LEN..], &self.policy)?;
        Ok(b)
    }

    /// Read a status reply.
    pub fn decode(b: &[u8]) -> Result<StatusEntry, ProtoError> {
        if b.len() != Op::Status.size() || b[..4] != MAGIC {
            return Err(ProtoError::Magic);
        }
        let p = &b[HEADER_LEN..];
        Ok(StatusEntry {
            index: le_u32(p, 0),
            state: p[4],
            mode: Mode::from_header_code(p[5]).unwrap_or(Mode::Clear),
            generation: le_u64(p, 8),
            last_seq: le_u64(p, 16),
            keys: le_u32(p, 24),
            path: text("path", &p[STATUS_FIXED..STATUS_FIXED + PATH_LEN], true)?,
            policy: text("policy", &p[STATUS_FIXED + PATH_LEN..], true)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_requests() -> Vec<Request> {
        vec![
            Request::PushKey {
                name: "k1".into(),
                version: 2,
                mode: Mode::Gcm,
                material: [7; 32],
            },
            Request::RevokeKey {
                name: "k1".into(),
                version: 0,
            },
            Request::LoadPolicy {
                path: "/data".into(),
                policy: [1; 32],
                host: None,
            },
            Request::Guard {
                path: "/data/gp".into(),
                mode: Mode::Xts,
                key: Some("k1".into()),
                policy: Some([2; 32]),
                host: Some([3; 32]),
            },
            Request::Guard {
                path: "/c".into(),
                mode: Mode::Clear,
                key: None,
                policy: None,
                host: None,
            },
            Request::Unguard {
                path: "/data/gp".into(),
                lazy: true,
            },
            Request::Status { index: 3 },
            Request::FileInfo {
                path: "/data/f".into(),
            },
        ]
    }

    #[test]
    fn round_trip_every_op() {
        for r in all_requests() {
            let b = r.encode(42).unwrap();
            assert_eq!(b.len(), r.op().size());
            let (back, seq) = Request::decode(r.op(), &b).unwrap();
            assert_eq!(back, r);
            assert_eq!(seq, 42);
            assert_eq!(Op::from_cmd(r.op().ioctl_cmd()), Some(r.op()));
        }
    }

    /// The push-key struct, byte by byte.
    #[test]
    fn push_key_layout() {
        let r = Request::PushKey {
            name: "ab".into(),
            version: 0x0102_0304,
            mode: Mode::CbcCs1,
            material: [9; 32],
        };
        let b = r.encode(5).unwrap();
        assert_eq!(&b[0..4], b"GFC1"); // magic
        assert_eq!(&b[4..6], &[1, 0]); // version 1
        assert_eq!(&b[6..8], &[1, 0]); // op 1 = push key
        assert_eq!(&b[8..16], &[5, 0, 0, 0, 0, 0, 0, 0]); // seq
        assert_eq!(&b[16..20], &[104, 0, 0, 0]); // payload length
        assert_eq!(&b[32..34], b"ab"); // key name, zero padded to 64
        assert_eq!(&b[96..100], &[4, 3, 2, 1]); // version
        assert_eq!(b[100], 2); // mode cbc-cs1
        assert_eq!(&b[104..136], &[9; 32]); // material
        assert_eq!(
            Op::PushKey.ioctl_cmd(),
            (1 << 30) | (136 << 16) | (0x47 << 8) | 1
        );
        assert!(
            !format!("{r:?}").contains("9, 9") && format!("{r:?}").contains("redacted"),
            "Debug must not show material"
        );
    }

    #[test]
    fn malformed_structs_are_refused_field_by_field() {
        let good = Request::Guard {
            path: "/gp".into(),
            mode: Mode::Xts,
            key: Some("k".into()),
            policy: None,
            host: None,
        }
        .encode(1)
        .unwrap();
        let op = Op::Guard;
        let bad = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            f(&mut b);
            Request::decode(op, &b).unwrap_err()
        };
        assert!(matches!(
            Request::decode(op, &good[..100]),
            Err(ProtoError::Size { .. })
        ));
        assert_eq!(bad(&|b| b[0] = b'X'), ProtoError::Magic);
        assert_eq!(bad(&|b| b[4] = 2), ProtoError::Version(2));
        assert!(matches!(bad(&|b| b[6] = 5), ProtoError::OpMismatch { .. }));
        assert_eq!(bad(&|b| b[8..16].fill(0)), ProtoError::Seq);
        assert!(matches!(bad(&|b| b[16] = 1), ProtoError::Length { .. }));
        assert_eq!(bad(&|b| b[25] = 1), ProtoError::Reserved("header"));
        assert!(matches!(
            bad(&|b| b[32] = b'x'),
            ProtoError::Field("path", "not absolute")
        ));
        assert!(matches!(
            bad(&|b| b[35..38].copy_from_slice(b"/..")),
            ProtoError::Field("path", "not normalized")
        ));
        assert!(matches!(
            bad(&|b| b[40] = b'z'),
            ProtoError::Field("path", _)
        ));
        assert!(matches!(
            bad(&|b| b[32 + PATH_LEN] = 9),
            ProtoError::Field("mode", _)
        ));
        assert!(matches!(
            bad(&|b| b[32 + PATH_LEN + 1] = 1),
            ProtoError::Field("policy digest", _)
        ));
        assert!(matches!(
            bad(&|b| b[32 + PATH_LEN + 3] = 1),
            ProtoError::Reserved("guard")
        ));
        assert!(matches!(
            bad(&|b| b[32 + GUARD_KEY] = 0),
            ProtoError::Field("key name", "empty")
        ));
        assert!(matches!(
            bad(&|b| b[32 + PATH_LEN] = 0),
            ProtoError::Field("key name", _)
        ));
        let root = Request::Guard {
            path: "/".into(),
            mode: Mode::Xts,
            key: Some("k".into()),
            policy: None,
            host: None,
        }
        .encode(1)
        .unwrap();
        assert!(Request::decode(op, &root).is_err());
    }

    #[test]
    fn key_names_and_material_are_checked() {
        let mk = |name: &str, material: [u8; 32], version: u32| {
            Request::PushKey {
                name: name.into(),
                version,
                mode: Mode::Xts,
                material,
            }
            .encode(1)
            .unwrap()
        };
        assert!(Request::decode(Op::PushKey, &mk("ok.name-1", [1; 32], 1)).is_ok());
        assert!(Request::decode(Op::PushKey, &mk("bad name", [1; 32], 1)).is_err());
        assert!(Request::decode(Op::PushKey, &mk("k", [0; 32], 1)).is_err());
        assert!(Request::decode(Op::PushKey, &mk("k", [1; 32], 0)).is_err());
    }

    #[test]
    fn status_reply_round_trips() {
        let e = StatusEntry {
            index: 1,
            state: 1,
            mode: Mode::Gcm,
            generation: 3,
            last_seq: 99,
            keys: 2,
            path: "/data".into(),
            policy: "pol".into(),
        };
        assert_eq!(StatusEntry::decode(&e.encode(7).unwrap()).unwrap(), e);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics() {
        let mut x: u64 = 0x1234_5678;
        for op in Op::ALL {
            for _ in 0..2000 {
                let mut b = Request::Status { index: 0 }.encode(1).unwrap();
                b.resize(op.size(), 0);
                b[6..8].copy_from_slice(&(op as u16).to_le_bytes());
                b[16..20].copy_from_slice(&((op.size() - HEADER_LEN) as u32).to_le_bytes());
                for _ in 0..4 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let at = (x as usize) % b.len();
                    b[at] = (x >> 32) as u8;
                }
                let _ = Request::decode(op, &b);
            }
        }
    }
}
