//! The `dataxform` ioctl: one request per batch of files of one directory,
//! sent on that directory through the mount (so secfs sees who asks and the
//! policy's `key_op` rule applies). A fixed 12 KiB buffer, request in,
//! reply out; encoding and decoding live here so that secfs and
//! `dataxform` cannot disagree.
//!
//! Request: `op` u8, `flags` u8, `count` u16, `before` u64 (cleanup: unix
//! seconds; online step: the byte budget), 4 reserved bytes, then `count`
//! names as `len` u8 + bytes.
//! Reply: the same 16-byte head (`before` = side files removed, for a
//! cleanup), then `count` records of 24 bytes (`status` u8, `from`, `to`,
//! `why` string indexes u8 (255: none), `errno` i32 (status 255: the
//! request failed for that file), logical `size` u64, `lower_bytes` u64),
//! then the strings, each `len` u16 + bytes, indexed in order.

use crate::stack::xform::{Op, Outcome, Status};

/// Size of the request/reply buffer: three pages (an ioctl's size field
/// has 14 bits, so 16 KiB itself does not fit).
pub const SIZE: usize = 12288;
/// `_IOWR('G', 0x58, [u8; 12288])`.
pub const CMD: u32 = nix::request_code_readwrite!(b'G', 0x58, SIZE) as u32;
/// Most files in one request.
pub const MAX_FILES: usize = 256;

const HEAD: usize = 16;
const REC: usize = 24;
const NONE: u8 = 255;
const FAILED: u8 = 255;
/// Longest string kept in a reply.
const MAX_STR: usize = 240;

/// `flags`: report, change nothing.
pub const SCAN: u8 = 1;
/// `flags`: keep the file's access and modification times.
pub const PRESERVE_TIMES: u8 = 2;
/// `flags`: the caller rekeys large or open files online (they come back
/// as `Status::Online`, to be stepped with [`Ask::Step`]).
pub const ONLINE: u8 = 4;

/// What a request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// Transform the named entries of the directory.
    Files(Op),
    /// On the GuardPoint's root, after a pass that reached every file:
    /// remove side files older than `before` (unix seconds) and their
    /// directory.
    Cleanup { before: u64 },
    /// One online rekey step (about `budget` plaintext bytes) of the one
    /// named file: `Rekey` or `Deep`.
    Step { op: Op, budget: u64 },
}

/// A request, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub ask: Ask,
    pub flags: u8,
    /// Entries of the directory (none for a cleanup).
    pub names: Vec<Vec<u8>>,
}

fn op_code(ask: Ask) -> u8 {
    match ask {
        Ask::Files(Op::Rekey) => 1,
        Ask::Files(Op::Deep) => 2,
        Ask::Files(Op::Shallow) => 3,
        Ask::Cleanup { .. } => 4,
        Ask::Step { op: Op::Rekey, .. } => 5,
        Ask::Step { op: Op::Deep, .. } => 6,
        // Not a request: refused by `encode`.
        Ask::Step {
            op: Op::Shallow, ..
        } => 0,
    }
}

fn bad_name(n: &[u8]) -> bool {
    n.is_empty() || n.len() > 255 || n.contains(&b'/') || n.contains(&0) || n == b"." || n == b".."
}

/// Bytes the names take in a request.
pub fn names_len<'a>(names: impl IntoIterator<Item = &'a [u8]>) -> usize {
    names.into_iter().map(|n| 1 + n.len()).sum()
}

/// Whether `count` names taking `bytes` (see [`names_len`]) fit one request.
pub fn fits(count: usize, bytes: usize) -> bool {
    count <= MAX_FILES && HEAD + bytes <= SIZE
}

impl Request {
    pub fn encode(&self) -> Result<Box<[u8; SIZE]>, &'static str> {
        if self.names.iter().any(|n| bad_name(n)) {
            return Err("bad file name");
        }
        if !fits(
            self.names.len(),
            names_len(self.names.iter().map(Vec::as_slice)),
        ) {
            return Err("too many names for one request");
        }
        if matches!(self.ask, Ask::Cleanup { .. }) != self.names.is_empty() {
            return Err("a cleanup names no files; a transformation names some");
        }
        if matches!(self.ask, Ask::Step { .. }) && self.names.len() != 1 {
            return Err("an online step names one file");
        }
        if op_code(self.ask) == 0 {
            return Err("a shallow rekey has no online steps");
        }
        let mut b = Box::new([0u8; SIZE]);
        b[0] = op_code(self.ask);
        b[1] = self.flags;
        b[2..4].copy_from_slice(&(self.names.len() as u16).to_le_bytes());
        match self.ask {
            Ask::Cleanup { before } => b[4..12].copy_from_slice(&before.to_le_bytes()),
            Ask::Step { budget, .. } => b[4..12].copy_from_slice(&budget.to_le_bytes()),
            Ask::Files(_) => {}
        }
        let mut at = HEAD;
        for n in &self.names {
            b[at] = n.len() as u8;
            b[at + 1..at + 1 + n.len()].copy_from_slice(n);
            at += 1 + n.len();
        }
        Ok(b)
    }

    pub fn decode(b: &[u8]) -> Result<Request, &'static str> {
        if b.len() != SIZE {
            return Err("wrong size");
        }
        let count = usize::from(u16::from_le_bytes([b[2], b[3]]));
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[4..12]);
        let ask = match b[0] {
            1 => Ask::Files(Op::Rekey),
            2 => Ask::Files(Op::Deep),
            3 => Ask::Files(Op::Shallow),
            4 => Ask::Cleanup {
                before: u64::from_le_bytes(x),
            },
            5 | 6 => Ask::Step {
                op: if b[0] == 5 { Op::Rekey } else { Op::Deep },
                budget: u64::from_le_bytes(x),
            },
            _ => return Err("unknown operation"),
        };
        if b[1] & !(SCAN | PRESERVE_TIMES | ONLINE) != 0 {
            return Err("unknown flags");
        }
        if matches!(ask, Ask::Step { .. }) && count != 1 {
            return Err("an online step names one file");
        }
        if count > MAX_FILES || matches!(ask, Ask::Cleanup { .. }) != (count == 0) {
            return Err("bad file count");
        }
        let mut names = Vec::with_capacity(count);
        let mut at = HEAD;
        for _ in 0..count {
            let n = usize::from(*b.get(at).ok_or("names overrun")?);
            let name = b.get(at + 1..at + 1 + n).ok_or("names overrun")?;
            if bad_name(name) {
                return Err("bad file name");
            }
            names.push(name.to_vec());
            at += 1 + n;
        }
        Ok(Request {
            ask,
            flags: b[1],
            names,
        })
    }
}

fn status_code(s: Status) -> u8 {
    s as u32 as u8
}

fn status_of(c: u8) -> Option<Status> {
    Some(match c {
        0 => Status::Done,
        1 => Status::Current,
        2 => Status::InUse,
        3 => Status::Refused,
        4 => Status::NoRule,
        5 => Status::NoSpace,
        6 => Status::NotRegular,
        7 => Status::Clear,
        8 => Status::WouldChange,
        9 => Status::NoKey,
        10 => Status::Online,
        _ => return None,
    })
}

/// Write the results (one per name, `Err(errno)` where the request failed
/// for that file) into the reply; `removed` for a cleanup.
pub fn encode_reply(b: &mut [u8; SIZE], results: &[Result<Outcome, i32>], removed: u64) {
    b[2..4].copy_from_slice(&(results.len() as u16).to_le_bytes());
    b[4..12].copy_from_slice(&removed.to_le_bytes());
    let mut strings: Vec<String> = Vec::new();
    let mut table_at = HEAD + results.len() * REC;
    let mut intern = |s: &str, b: &mut [u8; SIZE]| -> u8 {
        if s.is_empty() {
            return NONE;
        }
        let mut end = s.len().min(MAX_STR);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let s = &s[..end];
        if let Some(i) = strings.iter().position(|x| x == s) {
            return i as u8;
        }
        if strings.len() >= usize::from(NONE) || table_at + 2 + s.len() > SIZE {
            return NONE;
        }
        b[table_at..table_at + 2].copy_from_slice(&(s.len() as u16).to_le_bytes());
        b[table_at + 2..table_at + 2 + s.len()].copy_from_slice(s.as_bytes());
        table_at += 2 + s.len();
        strings.push(s.to_owned());
        (strings.len() - 1) as u8
    };
    for (i, r) in results.iter().enumerate() {
        let at = HEAD + i * REC;
        let mut rec = [0u8; REC];
        match r {
            Ok(o) => {
                rec[0] = status_code(o.status);
                rec[1] = intern(&o.from, b);
                rec[2] = intern(&o.to, b);
                rec[3] = intern(&o.why, b);
                rec[8..16].copy_from_slice(&o.size.to_le_bytes());
                rec[16..24].copy_from_slice(&o.lower_bytes.to_le_bytes());
            }
            Err(e) => {
                rec[0] = FAILED;
                rec[1..4].fill(NONE);
                rec[4..8].copy_from_slice(&e.to_le_bytes());
            }
        }
        b[at..at + REC].copy_from_slice(&rec);
    }
}

/// The results of a reply, and `removed` (cleanup).
#[allow(clippy::type_complexity)]
pub fn decode_reply(b: &[u8; SIZE]) -> Result<(Vec<Result<Outcome, i32>>, u64), &'static str> {
    let count = usize::from(u16::from_le_bytes([b[2], b[3]]));
    if count > MAX_FILES {
        return Err("bad count in reply");
    }
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[4..12]);
    let removed = u64::from_le_bytes(x);
    let mut strings = Vec::new();
    let mut at = HEAD + count * REC;
    while at + 2 <= SIZE {
        let n = usize::from(u16::from_le_bytes([b[at], b[at + 1]]));
        if n == 0 || at + 2 + n > SIZE {
            break;
        }
        strings.push(String::from_utf8_lossy(&b[at + 2..at + 2 + n]).into_owned());
        at += 2 + n;
    }
    let string = |i: u8| strings.get(usize::from(i)).cloned().unwrap_or_default();
    let u64_at = |o: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(x)
    };
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let r = HEAD + i * REC;
        if b[r] == FAILED {
            out.push(Err(i32::from_le_bytes([
                b[r + 4],
                b[r + 5],
                b[r + 6],
                b[r + 7],
            ])));
            continue;
        }
        let status = status_of(b[r]).ok_or("unknown status in reply")?;
        out.push(Ok(Outcome {
            status,
            from: string(b[r + 1]),
            to: string(b[r + 2]),
            why: string(b[r + 3]),
            size: u64_at(r + 8),
            lower_bytes: u64_at(r + 16),
        }));
    }
    Ok((out, removed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip() {
        let r = Request {
            ask: Ask::Files(Op::Deep),
            flags: SCAN,
            names: vec![b"a file".to_vec(), "ünï".as_bytes().to_vec()],
        };
        let mut b = r.encode().unwrap();
        assert_eq!(Request::decode(&b[..]).unwrap(), r);
        let o = Outcome {
            status: Status::Done,
            from: "clear".into(),
            to: "k:2:gcm".into(),
            size: 5,
            lower_bytes: 4125,
            why: "é".repeat(400),
        };
        let results = vec![Ok(o.clone()), Err(libc::EIO), Ok(o.clone())];
        encode_reply(&mut b, &results, 0);
        let (back, _) = decode_reply(&b).unwrap();
        assert_eq!(back.len(), 3);
        let b0 = back[0].as_ref().unwrap();
        assert_eq!((b0.status, &b0.to, b0.size), (Status::Done, &o.to, 5));
        assert!(b0.why.len() <= MAX_STR && o.why.starts_with(&b0.why));
        assert_eq!(back[1], Err(libc::EIO));
        assert_eq!(back[2].as_ref().unwrap().to, o.to);
        // A cleanup names nothing; a transformation names something.
        let c = Request {
            ask: Ask::Cleanup { before: 77 },
            flags: 0,
            names: vec![],
        };
        assert_eq!(Request::decode(&c.encode().unwrap()[..]).unwrap(), c);
        assert!(
            Request {
                names: vec![],
                ..r.clone()
            }
            .encode()
            .is_err()
        );
        for bad in [&b"a/b"[..], b".", b"..", b"", b"a\0b"] {
            assert!(
                Request {
                    names: vec![bad.to_vec()],
                    ..r.clone()
                }
                .encode()
                .is_err()
            );
        }
        let mut raw = r.encode().unwrap();
        raw[0] = 9;
        assert!(Request::decode(&raw[..]).is_err());
        let mut raw = r.encode().unwrap();
        raw[2] = 200; // more names than there are
        assert!(Request::decode(&raw[..]).is_err());
        assert!(Request::decode(&[0u8; 10]).is_err());
        // Many names: up to the limit.
        let many: Vec<Vec<u8>> = (0..MAX_FILES)
            .map(|i| format!("f{i}").into_bytes())
            .collect();
        let r = Request { names: many, ..r };
        assert_eq!(Request::decode(&r.encode().unwrap()[..]).unwrap(), r);
    }
}
