//! All arithmetic between plaintext offsets and lower-file offsets, in one
//! I/O-free place.
//!
//! A lower file is an optional 4096-byte header followed by units, each
//! starting on a 4096-byte boundary of the lower file:
//!
//! ```text
//! lower:  | header (4096) | unit 0 (4096) | unit 1 (4096) | ... | last unit (short) |
//! plain:                  | unit 0 (P)    | unit 1 (P)    | ... | tail              |
//! ```
//!
//! In the length-preserving modes (`xts`, `cbc-cs1`) a unit holds P = 4096
//! plaintext bytes; in `gcm` a lower unit is nonce (12) + P = 4068 ciphertext
//! bytes + tag (16); `clear` has no header and P = 4096. Only the file's last
//! unit may be short, and a short `gcm` unit keeps its nonce and tag. So the
//! logical size follows from the lower size and the mode (which the
//! filesystem keeps in the lower file's `trusted.guardfs.mode` xattr, see
//! FORMAT.md): stat and readdir never read headers.
//!
//! [`PlainOff`] and [`LowerOff`] are distinct types so that a plaintext
//! offset can never be passed where a lower offset is expected.

use std::fmt;

use crate::mode::Mode;

/// Size of a unit in the lower file, and of the header.
pub const LOWER_UNIT: u64 = 4096;
/// Bytes before the ciphertext in a `gcm` lower unit (the nonce).
pub const GCM_NONCE_LEN: usize = 12;
/// Bytes after the ciphertext in a `gcm` lower unit (the tag).
pub const GCM_TAG_LEN: usize = 16;
/// The largest logical file size GuardFS accepts (2^62 bytes), chosen so
/// that no lower size computation can overflow a u64.
pub const MAX_PLAIN_SIZE: PlainOff = PlainOff(1 << 62);
/// The shortest lower unit that can be a hole in `xts` and `cbc-cs1`: one
/// AES block. See [`Layout::unit_may_be_hole`].
pub const MIN_HOLE_LEN: usize = 16;

/// An offset or size in the plaintext view of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PlainOff(pub u64);

/// An offset or size in the lower (on-disk, encrypted) file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LowerOff(pub u64);

/// The index of a unit, counted from the first unit after the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UnitNo(pub u64);

impl fmt::Display for UnitNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl UnitNo {
    /// The unit after this one.
    pub fn next(self) -> UnitNo {
        UnitNo(self.0 + 1)
    }
}

/// The part of one unit that a byte range touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitSpan {
    /// Which unit.
    pub unit: UnitNo,
    /// First plaintext byte within the unit.
    pub start: usize,
    /// Number of plaintext bytes within the unit.
    pub len: usize,
}

impl UnitSpan {
    /// Whether the span covers a whole unit of `layout`.
    pub fn is_whole(&self, layout: &Layout) -> bool {
        self.start == 0 && self.len == layout.unit_plain_len()
    }
}

/// The geometry of one mode's lower files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    header: u64,
    unit_plain: u64,
    prefix: u64,
    suffix: u64,
    /// Shortest all-zero lower unit that reads as a hole.
    min_hole: usize,
}

impl Layout {
    /// The layout of files in `mode`.
    pub const fn of(mode: Mode) -> Layout {
        match mode {
            Mode::Xts | Mode::CbcCs1 => Layout {
                header: LOWER_UNIT,
                unit_plain: LOWER_UNIT,
                prefix: 0,
                suffix: 0,
                min_hole: MIN_HOLE_LEN,
            },
            // Every gcm unit carries nonce and tag; clear units are their
            // own plaintext, so zeros read as zeros either way.
            Mode::Gcm => Layout {
                header: LOWER_UNIT,
                unit_plain: LOWER_UNIT - (GCM_NONCE_LEN + GCM_TAG_LEN) as u64,
                prefix: GCM_NONCE_LEN as u64,
                suffix: GCM_TAG_LEN as u64,
                min_hole: 1,
            },
            Mode::Clear => Layout {
                header: 0,
                unit_plain: LOWER_UNIT,
                prefix: 0,
                suffix: 0,
                min_hole: 1,
            },
        }
    }

    /// Whether an all-zero lower unit of `lower_len` bytes (> 0) is a hole,
    /// which reads as zeros without being decrypted.
    ///
    /// In `xts` and `cbc-cs1` a unit shorter than one AES block
    /// ([`MIN_HOLE_LEN`], 16 bytes) is never a hole: it is the plaintext
    /// XORed with a fixed keystream, so some plaintext encrypts to all
    /// zeros. Writers must therefore never leave such a short final unit as
    /// a sparse gap or zero fill (a truncate-up or a write past the end must
    /// write it encrypted); longer units may stay holes. In `gcm` every
    /// unit carries a random nonce and tag and any all-zero unit is a hole;
    /// in `clear` zeros are plaintext zeros.
    pub const fn unit_may_be_hole(&self, lower_len: usize) -> bool {
        lower_len >= self.min_hole
    }

    /// The highest unit number a file of [`MAX_PLAIN_SIZE`] bytes has; the
    /// content ciphers refuse units beyond it.
    pub const fn last_unit(&self) -> UnitNo {
        UnitNo((MAX_PLAIN_SIZE.0 - 1) / self.unit_plain)
    }

    /// Bytes of header at the start of every lower file (4096 or 0).
    pub const fn header_len(&self) -> u64 {
        self.header
    }

    /// Plaintext bytes in a full unit.
    pub const fn unit_plain_len(&self) -> usize {
        self.unit_plain as usize
    }

    /// Lower bytes a unit adds beyond its plaintext (0, or 28 in `gcm`).
    pub const fn unit_overhead(&self) -> usize {
        (self.prefix + self.suffix) as usize
    }

    /// Bytes before the ciphertext inside a lower unit (the `gcm` nonce).
    pub const fn unit_prefix(&self) -> usize {
        self.prefix as usize
    }

    /// The lower file size of a file whose logical size is `plain`.
    /// Sizes above [`MAX_PLAIN_SIZE`] are clamped to it.
    pub fn lower_size(&self, plain: PlainOff) -> LowerOff {
        let plain = plain.min(MAX_PLAIN_SIZE).0;
        let full = plain / self.unit_plain;
        let rem = plain % self.unit_plain;
        let tail = if rem == 0 {
            0
        } else {
            rem + self.prefix + self.suffix
        };
        LowerOff(self.header + full * LOWER_UNIT + tail)
    }

    /// The logical size of a file whose lower size is `lower`. A lower file
    /// shorter than a header is empty; a `gcm` tail too short to hold a
    /// nonce and tag holds no plaintext (reading it reports the damage).
    pub fn plain_size(&self, lower: LowerOff) -> PlainOff {
        let body = lower.0.saturating_sub(self.header);
        let full = body / LOWER_UNIT;
        let rem = body % LOWER_UNIT;
        PlainOff(full * self.unit_plain + rem.saturating_sub(self.prefix + self.suffix))
    }

    /// The unit holding plaintext byte `off`, and the byte's index in it.
    pub fn unit_of(&self, off: PlainOff) -> (UnitNo, usize) {
        (
            UnitNo(off.0 / self.unit_plain),
            (off.0 % self.unit_plain) as usize,
        )
    }

    /// The plaintext offset where `unit` starts.
    pub fn unit_plain_start(&self, unit: UnitNo) -> PlainOff {
        PlainOff(unit.0.saturating_mul(self.unit_plain))
    }

    /// The lower offset where `unit` starts.
    pub fn unit_lower_start(&self, unit: UnitNo) -> LowerOff {
        LowerOff(
            self.header
                .saturating_add(unit.0.saturating_mul(LOWER_UNIT)),
        )
    }

    /// How many plaintext bytes of `unit` exist in a file of logical size
    /// `size` (0 if the unit lies past the end).
    pub fn unit_len_in_file(&self, unit: UnitNo, size: PlainOff) -> usize {
        let start = self.unit_plain_start(unit).0;
        size.0.saturating_sub(start).min(self.unit_plain) as usize
    }

    /// Lower bytes of a unit that holds `plain_len` plaintext bytes.
    pub fn unit_lower_len(&self, plain_len: usize) -> usize {
        if plain_len == 0 {
            0
        } else {
            plain_len + self.unit_overhead()
        }
    }

    /// Plaintext bytes held by a lower unit of `lower_len` bytes, or `None`
    /// if no plaintext encrypts to that length.
    pub fn unit_plain_len_of(&self, lower_len: usize) -> Option<usize> {
        match lower_len {
            0 => Some(0),
            n if n > LOWER_UNIT as usize => None,
            n => n.checked_sub(self.unit_overhead()),
        }
    }

    /// Lower bytes of a run of units starting on a unit boundary and holding
    /// `plain_len` plaintext bytes (all units full except possibly the last).
    pub fn run_lower_len(&self, plain_len: usize) -> usize {
        let full = plain_len / self.unit_plain_len();
        let rem = plain_len % self.unit_plain_len();
        full * LOWER_UNIT as usize + self.unit_lower_len(rem)
    }

    /// Number of units a file of logical size `size` has.
    pub fn unit_count(&self, size: PlainOff) -> u64 {
        size.0.div_ceil(self.unit_plain)
    }

    /// Split the plaintext byte range `[off, off + len)` into the parts of
    /// each unit it touches, in order.
    pub fn spans(&self, off: PlainOff, len: u64) -> UnitSpans {
        UnitSpans {
            unit_plain: self.unit_plain,
            pos: off.0,
            end: off.0.saturating_add(len),
        }
    }
}

/// Iterator over the [`UnitSpan`]s of a byte range; see [`Layout::spans`].
#[derive(Debug, Clone)]
pub struct UnitSpans {
    unit_plain: u64,
    pos: u64,
    end: u64,
}

impl Iterator for UnitSpans {
    type Item = UnitSpan;

    fn next(&mut self) -> Option<UnitSpan> {
        if self.pos >= self.end {
            return None;
        }
        let unit = self.pos / self.unit_plain;
        let start = self.pos % self.unit_plain;
        let len = (self.unit_plain - start).min(self.end - self.pos);
        self.pos += len;
        Some(UnitSpan {
            unit: UnitNo(unit),
            start: start as usize,
            len: len as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;

    /// Worked sizes, the same table as FORMAT.md.
    #[test]
    fn worked_lower_sizes() {
        // logical: (xts, cbc-cs1, gcm, clear)
        let table: &[(u64, [u64; 4])] = &[
            (0, [4096, 4096, 4096, 0]),
            (1, [4097, 4097, 4125, 1]),
            (15, [4111, 4111, 4139, 15]),
            (16, [4112, 4112, 4140, 16]),
            (4095, [8191, 8191, 8247, 4095]),
            (4096, [8192, 8192, 8248, 4096]),
            (5000, [9096, 9096, 9152, 5000]),
            (1024 * KIB, [1_052_672, 1_052_672, 1_059_896, 1_048_576]),
        ];
        for &(plain, lowers) in table {
            for (mode, lower) in [Mode::Xts, Mode::CbcCs1, Mode::Gcm, Mode::Clear]
                .into_iter()
                .zip(lowers)
            {
                let l = Layout::of(mode);
                assert_eq!(
                    l.lower_size(PlainOff(plain)),
                    LowerOff(lower),
                    "{mode} {plain}"
                );
                assert_eq!(
                    l.plain_size(LowerOff(lower)),
                    PlainOff(plain),
                    "{mode} {lower}"
                );
            }
        }
    }

    #[test]
    fn plain_size_of_odd_lower_sizes() {
        let g = Layout::of(Mode::Gcm);
        // Shorter than a header: empty.
        assert_eq!(g.plain_size(LowerOff(100)), PlainOff(0));
        // A tail that cannot hold nonce + tag holds nothing.
        assert_eq!(g.plain_size(LowerOff(4096 + 20)), PlainOff(0));
        assert_eq!(g.plain_size(LowerOff(4096 + 4096 + 28)), PlainOff(4068));
        assert!(g.plain_size(LowerOff(u64::MAX)).0 < u64::MAX);
    }

    #[test]
    fn unit_mapping() {
        let x = Layout::of(Mode::Xts);
        assert_eq!(x.unit_of(PlainOff(0)), (UnitNo(0), 0));
        assert_eq!(x.unit_of(PlainOff(4095)), (UnitNo(0), 4095));
        assert_eq!(x.unit_of(PlainOff(4096)), (UnitNo(1), 0));
        assert_eq!(x.unit_lower_start(UnitNo(0)), LowerOff(4096));
        assert_eq!(x.unit_lower_start(UnitNo(3)), LowerOff(4 * 4096));
        let g = Layout::of(Mode::Gcm);
        assert_eq!(g.unit_of(PlainOff(4068)), (UnitNo(1), 0));
        assert_eq!(g.unit_of(PlainOff(4067)), (UnitNo(0), 4067));
        assert_eq!(g.unit_plain_start(UnitNo(2)), PlainOff(8136));
        assert_eq!(g.unit_len_in_file(UnitNo(1), PlainOff(5000)), 932);
        assert_eq!(g.unit_len_in_file(UnitNo(2), PlainOff(5000)), 0);
        assert_eq!(g.unit_lower_len(932), 960);
        assert_eq!(g.unit_plain_len_of(960), Some(932));
        assert_eq!(g.unit_plain_len_of(20), None);
        assert_eq!(g.unit_plain_len_of(4097), None);
        let c = Layout::of(Mode::Clear);
        assert_eq!(c.unit_lower_start(UnitNo(1)), LowerOff(4096));
    }

    #[test]
    fn spans_split_ranges() {
        let x = Layout::of(Mode::Xts);
        let s: Vec<_> = x.spans(PlainOff(4000), 5000).collect();
        assert_eq!(
            s,
            vec![
                UnitSpan {
                    unit: UnitNo(0),
                    start: 4000,
                    len: 96
                },
                UnitSpan {
                    unit: UnitNo(1),
                    start: 0,
                    len: 4096
                },
                UnitSpan {
                    unit: UnitNo(2),
                    start: 0,
                    len: 808
                },
            ]
        );
        assert!(s[1].is_whole(&x));
        assert_eq!(x.spans(PlainOff(10), 0).count(), 0);
        let g = Layout::of(Mode::Gcm);
        let s: Vec<_> = g.spans(PlainOff(0), 4069).collect();
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[1],
            UnitSpan {
                unit: UnitNo(1),
                start: 0,
                len: 1
            }
        );
    }

    #[test]
    fn run_lengths() {
        let g = Layout::of(Mode::Gcm);
        assert_eq!(g.run_lower_len(4068 * 2 + 1), 8192 + 29);
        assert_eq!(g.run_lower_len(4068), 4096);
        let x = Layout::of(Mode::Xts);
        assert_eq!(x.run_lower_len(5000), 5000);
        assert_eq!(x.unit_count(PlainOff(4097)), 2);
        assert_eq!(x.unit_count(PlainOff(0)), 0);
    }

    #[test]
    fn hole_rule_and_last_unit() {
        for m in [Mode::Xts, Mode::CbcCs1] {
            let l = Layout::of(m);
            assert!(!l.unit_may_be_hole(1) && !l.unit_may_be_hole(15), "{m}");
            assert!(l.unit_may_be_hole(16) && l.unit_may_be_hole(4096), "{m}");
            assert_eq!(l.last_unit(), UnitNo((1 << 50) - 1));
        }
        for m in [Mode::Gcm, Mode::Clear] {
            assert!(Layout::of(m).unit_may_be_hole(1), "{m}");
        }
        for m in Mode::ALL {
            let l = Layout::of(m);
            // The last unit holds the last byte of the largest file.
            let (u, _) = l.unit_of(PlainOff(MAX_PLAIN_SIZE.0 - 1));
            assert_eq!(l.last_unit(), u, "{m}");
        }
    }

    #[test]
    fn huge_sizes_do_not_overflow() {
        for m in Mode::ALL {
            let l = Layout::of(m);
            let lower = l.lower_size(PlainOff(u64::MAX));
            assert_eq!(l.plain_size(lower), MAX_PLAIN_SIZE);
            // Past 4 GiB.
            let p = PlainOff(5 << 30);
            assert_eq!(l.plain_size(l.lower_size(p)), p);
        }
    }
}
