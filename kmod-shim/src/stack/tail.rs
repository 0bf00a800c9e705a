//! The tail record (`trusted.guardfs.tail`): the journal of a
//! truncate-down that re-encrypts the new tail unit in place, and its
//! recovery after a crash (`crypto/FORMAT.md`, "Tail record").
//!
//! Must not: need a key (everything it writes is ciphertext made before),
//! or apply a record that does not fit the file.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use guardfs_crypto::{Layout, LowerOff, Mode, UnitNo};
use log::warn;

use super::file::*;
use super::*;

/// The tail record: what a truncate-down is about to write over the new
/// tail unit in place, so that a crash between that write and the
/// `ftruncate` can be finished later (value of [`TAIL_XATTR`]; the layout
/// is specified in `crypto/FORMAT.md`, "Tail record").
///
/// A truncate to a size that ends inside a unit re-encrypts that unit at
/// its shorter length (xts ciphertext stealing, cbc-cs1 per segment and
/// the gcm tag all bind the length) and overwrites the old unit's first
/// bytes with it. Until the lower file is cut to the new size, those bytes
/// are ciphertext made for another length, and the bytes the truncate
/// keeps would read as garbage (or, in gcm, the whole unit as EIO). The
/// record holds the new lower bytes from the first one that differs from
/// the old unit (`start`) to the new end, so redoing it needs no key and
/// is idempotent whatever part of the in-place write landed: the bytes
/// before `start` are the same before and after.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct TailRecord<'a> {
    /// The unit the new size ends in.
    unit: UnitNo,
    /// The lower size after the truncate.
    target: u64,
    /// Offset in the unit's lower bytes where `bytes` go.
    start: usize,
    /// The new lower bytes `[start, target - unit start)` of the unit.
    bytes: &'a [u8],
}

/// Magic and version of a tail record.
const TAIL_MAGIC: &[u8; 4] = b"GFtl";
const TAIL_VERSION: u8 = 1;
/// Magic (4), version (1), unit (8), target lower size (8), start (2).
pub(super) const TAIL_FIXED: usize = 4 + 1 + 8 + 8 + 2;

impl<'a> TailRecord<'a> {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(TAIL_FIXED + self.bytes.len());
        v.extend_from_slice(TAIL_MAGIC);
        v.push(TAIL_VERSION);
        v.extend_from_slice(&self.unit.0.to_le_bytes());
        v.extend_from_slice(&self.target.to_le_bytes());
        // start < 4096 always (it is an offset in one lower unit).
        v.extend_from_slice(&(self.start as u16).to_le_bytes());
        v.extend_from_slice(self.bytes);
        v
    }

    /// Parse and check a record against the layout of the file it is on:
    /// the target must be a lower size ending inside `unit` (a partial
    /// tail), and the bytes must end exactly there.
    pub(super) fn parse(v: &'a [u8], l: &Layout) -> Result<TailRecord<'a>, String> {
        if v.len() < TAIL_FIXED || &v[..4] != TAIL_MAGIC {
            return Err(format!("malformed record ({} bytes, bad magic)", v.len()));
        }
        if v[4] != TAIL_VERSION {
            return Err(format!("record version {} is unknown", v[4]));
        }
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&v[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let unit = UnitNo(u64_at(5));
        let target = u64_at(13);
        let start = usize::from(u16::from_le_bytes([v[21], v[22]]));
        let bytes = &v[TAIL_FIXED..];
        let plain = l.plain_size(LowerOff(target));
        let (end_unit, at) = l.unit_of(plain);
        if target <= l.header_len()
            || at == 0
            || l.lower_size(plain).0 != target
            || end_unit != unit
            || unit > l.last_unit()
        {
            return Err(format!(
                "record names unit {} and lower size {target}, which do not fit",
                unit.0
            ));
        }
        let tail_len = target - l.unit_lower_start(unit).0;
        if start as u64 + bytes.len() as u64 != tail_len {
            return Err(format!(
                "record holds bytes {start}..{} of a {tail_len}-byte unit",
                start + bytes.len()
            ));
        }
        Ok(TailRecord {
            unit,
            target,
            start,
            bytes,
        })
    }
}

/// Fuzzing entry point (not an API): parse `v` as a tail record for a
/// file in `mode` and, when it parses, return it encoded again.
#[doc(hidden)]
pub fn fuzz_tail_record(v: &[u8], mode: Mode) -> Result<Vec<u8>, String> {
    TailRecord::parse(v, &Layout::of(mode)).map(|r| r.encode())
}

/// Whether setting a tail record failed because the lower file system
/// cannot keep one (no xattrs, `trusted.*` refused, or a value too large
/// for it: ext4 keeps all of an inode's xattrs in one block, about 4000
/// bytes, which a gcm tail near a full unit exceeds).
pub(super) fn journal_unavailable(e: Errno) -> bool {
    [
        libc::ENOTSUP,
        libc::EPERM,
        libc::ENOSPC,
        libc::E2BIG,
        libc::ERANGE,
    ]
    .contains(&e.0)
}

/// Where [`shrink_tail`] stops (tests build a crashed state with it).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// Run to the end.
    Never,
    /// As if the daemon died right after the in-place write.
    AfterWrite,
}

/// Truncate the lower file to `target`, whose new tail unit `u` holds
/// `new_lower` (encrypted at its new length), with the tail record as
/// journal. Returns whether a record was written. Order and why:
/// 1. the record is set and the file fsynced: the record is durable before
///    any byte of the unit changes;
/// 2. the changed bytes are written in place and the file cut to `target`;
/// 3. fdatasync: the new bytes and size are durable before the record
///    goes (else a power loss could keep the removal and lose the data);
/// 4. the record is removed and the file fsynced: once the truncate
///    returns, no record is left that a later crash could redo over newer
///    writes. So a record found later always means a crash inside these
///    steps, and redoing it is always right.
///
/// Without a record (see [`journal_unavailable`]) this is steps 2 only,
/// and a crash between the write and the cut leaves the kept bytes of the
/// unit unreadable, as documented in FORMAT.md.
pub(super) fn shrink_tail(
    node: &Node,
    fd: BorrowedFd<'_>,
    l: &Layout,
    u: UnitNo,
    new_lower: &[u8],
    target: u64,
    stop: Stop,
) -> VfsResult<bool> {
    let unit_start = l.unit_lower_start(u).0;
    let mut old = [0u8; 4096];
    let got = pread_full(fd, &mut old[..new_lower.len()], unit_start)?;
    old[got..new_lower.len()].fill(0);
    let start = new_lower
        .iter()
        .zip(&old[..new_lower.len()])
        .position(|(a, b)| a != b)
        .unwrap_or(new_lower.len());
    let changed = &new_lower[start..];
    if changed.is_empty() {
        // Nothing is rewritten (e.g. cbc-cs1 cut at a block boundary): the
        // cut alone is atomic.
        if stop == Stop::Never {
            nix::unistd::ftruncate(fd, target as i64)?;
        }
        return Ok(false);
    }
    let rec = TailRecord {
        unit: u,
        target,
        start,
        bytes: changed,
    };
    let journaled = match sys::fsetxattr(fd, TAIL_XATTR, &rec.encode()) {
        Ok(()) => {
            if let Err(e) = nix::unistd::fsync(fd) {
                // Nothing was rewritten yet: the truncate fails as a whole
                // and must not be finished later by a leftover record.
                let _ = sys::fremovexattr(fd, TAIL_XATTR);
                return Err(e.into());
            }
            true
        }
        Err(e) if journal_unavailable(e) => {
            warn_unjournaled(node, e);
            false
        }
        Err(e) => return Err(e),
    };
    pwrite_all(fd, changed, unit_start + start as u64)?;
    if stop == Stop::AfterWrite {
        return Ok(journaled);
    }
    nix::unistd::ftruncate(fd, target as i64)?;
    if journaled {
        nix::unistd::fdatasync(fd)?;
        sys::fremovexattr(fd, TAIL_XATTR)?;
        nix::unistd::fsync(fd)?;
    }
    Ok(journaled)
}

/// Say once per process that truncates run without their journal.
pub(super) fn warn_unjournaled(node: &Node, e: Errno) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        warn!(
            "secfs: {}: the lower file system cannot keep {} ({e:?}): truncates \
             run unjournaled (a crash inside one can garble the kept tail); \
             said once",
            node.display_path(),
            TAIL_XATTR.to_string_lossy()
        );
    }
}

/// Finish a truncate-down that a crash interrupted, if `fd`'s lower file
/// has a tail record: check it, redo the write and the cut, remove it
/// (same order and syncs as [`shrink_tail`]). `Ok(false)`: no record.
/// `Err`: a record that does not fit the file, or that could not be
/// applied; the file is left as it is and must be refused. `fd` may be
/// read-only: the lower file is then reopened for writing through
/// `proc_fd` (a directory fd on `/proc/self/fd`).
pub(super) fn finish_tail(fd: BorrowedFd<'_>, proc_fd: BorrowedFd<'_>) -> Result<bool, String> {
    let value = match sys::fgetxattr(fd, TAIL_XATTR) {
        Ok(v) => v,
        Err(e) if e == Errno::ENODATA || e == Errno(libc::ENOTSUP) => return Ok(false),
        Err(e) => return Err(format!("cannot read the tail record: {e:?}")),
    };
    let why = |what: &str| format!("interrupted truncate not finished: {what}");
    let Some(mode) = mode_of_class(header_class(fd)) else {
        return Err(why("tail record on a file without a valid header"));
    };
    let l = Layout::of(mode);
    let rec = TailRecord::parse(&value, &l).map_err(|e| why(&e))?;
    let size = lower_size(fd).map_err(|e| why(&format!("fstat: {e:?}")))?;
    if size < rec.target {
        return Err(why(&format!(
            "the lower file ({size} bytes) is already shorter than the record's {}",
            rec.target
        )));
    }
    let reopened;
    let wfd = match nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL) {
        Ok(fl) if fl & libc::O_ACCMODE != libc::O_RDONLY => fd,
        _ => {
            reopened = nix::fcntl::openat(
                proc_fd,
                fd.as_raw_fd().to_string().as_str(),
                nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| why(&format!("cannot open it for writing: {e}")))?;
            reopened.as_fd()
        }
    };
    let redo = || -> VfsResult<()> {
        pwrite_all(
            wfd,
            rec.bytes,
            l.unit_lower_start(rec.unit).0 + rec.start as u64,
        )?;
        nix::unistd::ftruncate(wfd, rec.target as i64)?;
        nix::unistd::fdatasync(wfd)?;
        // Another view of the same file (plain and raw nodes each finish
        // what they find) may have finished and removed it meanwhile; the
        // redo itself is idempotent.
        match sys::fremovexattr(wfd, TAIL_XATTR) {
            Ok(()) | Err(Errno::ENODATA) => {}
            Err(e) => return Err(e),
        }
        nix::unistd::fsync(wfd)?;
        Ok(())
    };
    redo().map_err(|e| why(&format!("{e:?}")))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use guardfs_crypto::PlainOff;

    #[test]
    fn tail_records_round_trip_and_misfits_are_refused() {
        for mode in [Mode::Xts, Mode::CbcCs1, Mode::Gcm] {
            let l = Layout::of(mode);
            let target = l.lower_size(PlainOff(5000)).0;
            let (unit, _) = l.unit_of(PlainOff(5000));
            let tail = (target - l.unit_lower_start(unit).0) as usize;
            let bytes = vec![0xa5; tail - 7];
            let rec = TailRecord {
                unit,
                target,
                start: 7,
                bytes: &bytes,
            };
            let v = rec.encode();
            assert_eq!(v.len(), TAIL_FIXED + bytes.len());
            assert_eq!(TailRecord::parse(&v, &l).unwrap(), rec);
            // Every shortening, and a byte more, misfits.
            for n in 0..v.len() {
                assert!(TailRecord::parse(&v[..n], &l).is_err(), "{mode} {n}");
            }
            let mut longer = v.clone();
            longer.push(0);
            assert!(TailRecord::parse(&longer, &l).is_err());
            for (i, b) in [(0, b'X'), (4, 2), (5, unit.0 as u8 + 1), (13, 0)] {
                let mut bad = v.clone();
                bad[i] = b;
                assert!(TailRecord::parse(&bad, &l).is_err(), "{mode} byte {i}");
            }
            // A target on a unit boundary has no partial tail to journal.
            let edge = TailRecord {
                unit: UnitNo(1),
                target: l.lower_size(PlainOff(2 * l.unit_plain_len() as u64)).0,
                start: 0,
                bytes: &[],
            };
            assert!(TailRecord::parse(&edge.encode(), &l).is_err());
        }
    }
}
