//! The `dataxform` ioctl: one request per file, sent on a directory of a
//! GuardPoint (through the mount, so secfs sees who asks and the policy's
//! `key_op` rule applies) naming one entry of it. Fixed 1024-byte struct,
//! the same in and out; encoding and decoding live here so that secfs and
//! `dataxform` cannot disagree.

use crate::stack::xform::{Op, Outcome, Status};

/// Size of the request/reply struct.
pub const SIZE: usize = 1024;
/// `_IOWR('G', 0x58, [u8; 1024])`.
pub const CMD: u32 = nix::request_code_readwrite!(b'G', 0x58, SIZE) as u32;

const NAME: std::ops::Range<usize> = 0..256;
const NAME_LEN: usize = 256;
const OP: usize = 258;
const FLAGS: usize = 259;
const STATUS: usize = 260;
const FILE_SIZE: usize = 264;
const LOWER_BYTES: usize = 272;
const FROM: std::ops::Range<usize> = 280..408;
const TO: std::ops::Range<usize> = 408..536;
const WHY: std::ops::Range<usize> = 536..1024;

/// `flags`: report, change nothing.
pub const SCAN: u8 = 1;
/// `flags`: keep the file's access and modification times.
pub const PRESERVE_TIMES: u8 = 2;

/// What a request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// Transform the entry `name` of the directory.
    File(Op),
    /// On the GuardPoint's root, after a pass that reached every file:
    /// remove side files older than `before` (unix seconds) that no file
    /// can need any more, and their directory.
    Cleanup { before: u64 },
}

/// A request, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The entry (ignored by `Cleanup`, which sends `.`).
    pub name: Vec<u8>,
    pub ask: Ask,
    pub flags: u8,
}

fn op_code(ask: Ask) -> u8 {
    match ask {
        Ask::File(Op::Rekey) => 1,
        Ask::File(Op::Deep) => 2,
        Ask::File(Op::Shallow) => 3,
        Ask::Cleanup { .. } => 4,
    }
}

impl Request {
    pub fn encode(&self) -> Result<[u8; SIZE], &'static str> {
        if self.name.is_empty()
            || self.name.len() > 255
            || self.name.contains(&b'/')
            || self.name.contains(&0)
        {
            return Err("bad file name");
        }
        let mut b = [0u8; SIZE];
        b[..self.name.len()].copy_from_slice(&self.name);
        b[NAME_LEN..NAME_LEN + 2].copy_from_slice(&(self.name.len() as u16).to_le_bytes());
        b[OP] = op_code(self.ask);
        b[FLAGS] = self.flags;
        if let Ask::Cleanup { before } = self.ask {
            b[FILE_SIZE..FILE_SIZE + 8].copy_from_slice(&before.to_le_bytes());
        }
        Ok(b)
    }

    pub fn decode(b: &[u8]) -> Result<Request, &'static str> {
        if b.len() != SIZE {
            return Err("wrong size");
        }
        let n = usize::from(u16::from_le_bytes([b[NAME_LEN], b[NAME_LEN + 1]]));
        if n == 0 || n > 255 {
            return Err("bad name length");
        }
        let name = b[NAME][..n].to_vec();
        let ask = match b[OP] {
            1 => Ask::File(Op::Rekey),
            2 => Ask::File(Op::Deep),
            3 => Ask::File(Op::Shallow),
            4 => {
                let mut x = [0u8; 8];
                x.copy_from_slice(&b[FILE_SIZE..FILE_SIZE + 8]);
                Ask::Cleanup {
                    before: u64::from_le_bytes(x),
                }
            }
            _ => return Err("unknown operation"),
        };
        let dot = matches!(ask, Ask::Cleanup { .. });
        if name.contains(&b'/') || name.contains(&0) || (name == b"." && !dot) || name == b".." {
            return Err("bad file name");
        }
        if b[FLAGS] & !(SCAN | PRESERVE_TIMES) != 0 {
            return Err("unknown flags");
        }
        Ok(Request {
            name,
            ask,
            flags: b[FLAGS],
        })
    }
}

fn put_str(b: &mut [u8], s: &str) {
    let n = s.len().min(b.len() - 1);
    // Cut on a character boundary.
    let n = (0..=n).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
    b[..n].copy_from_slice(&s.as_bytes()[..n]);
    b[n..].fill(0);
}

fn get_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Write `o` into the reply (the request's bytes stay in front).
pub fn encode_outcome(b: &mut [u8; SIZE], o: &Outcome) {
    b[STATUS..STATUS + 4].copy_from_slice(&(o.status as u32).to_le_bytes());
    b[FILE_SIZE..FILE_SIZE + 8].copy_from_slice(&o.size.to_le_bytes());
    b[LOWER_BYTES..LOWER_BYTES + 8].copy_from_slice(&o.lower_bytes.to_le_bytes());
    put_str(&mut b[FROM], &o.from);
    put_str(&mut b[TO], &o.to);
    put_str(&mut b[WHY], &o.why);
}

/// Read the outcome from a reply.
pub fn decode_outcome(b: &[u8; SIZE]) -> Result<Outcome, &'static str> {
    let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let u64_at = |o: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(x)
    };
    let status = match u32_at(STATUS) {
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
        _ => return Err("unknown status"),
    };
    Ok(Outcome {
        status,
        size: u64_at(FILE_SIZE),
        lower_bytes: u64_at(LOWER_BYTES),
        from: get_str(&b[FROM]),
        to: get_str(&b[TO]),
        why: get_str(&b[WHY]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_outcomes_round_trip() {
        let r = Request {
            name: b"a file".to_vec(),
            ask: Ask::File(Op::Deep),
            flags: SCAN,
        };
        let mut b = r.encode().unwrap();
        assert_eq!(Request::decode(&b).unwrap(), r);
        let c = Request {
            name: b".".to_vec(),
            ask: Ask::Cleanup { before: 77 },
            flags: 0,
        };
        assert_eq!(Request::decode(&c.encode().unwrap()).unwrap(), c);
        let dot = Request {
            name: b".".to_vec(),
            ..r.clone()
        };
        assert!(Request::decode(&dot.encode().unwrap()).is_err());
        let o = Outcome {
            status: Status::Done,
            from: "clear".into(),
            to: "k:2:gcm".into(),
            size: 5,
            lower_bytes: 4125,
            why: "é".repeat(400),
        };
        encode_outcome(&mut b, &o);
        let back = decode_outcome(&b).unwrap();
        assert_eq!(back.to, o.to);
        assert!(back.why.len() < 488 && o.why.starts_with(&back.why));
        assert!(Request::decode(&[0u8; SIZE]).is_err());
        let mut bad = r.encode().unwrap();
        bad[OP] = 9;
        assert!(Request::decode(&bad).is_err());
        assert!(
            Request {
                name: b"a/b".to_vec(),
                ..r
            }
            .encode()
            .is_err()
        );
    }
}
