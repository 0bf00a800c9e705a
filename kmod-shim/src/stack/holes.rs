//! Holes through a transformation: which plaintext ranges of a file are
//! holes in its lower file (`SEEK_HOLE`), writing new contents with those
//! ranges left unwritten, and copying a sparse side file back as sparse.
//!
//! Only holes the file already has are kept: a range of zeros that was
//! written is encrypted like any data (turning it into a hole would show
//! where a file holds zeros). A kept hole reads as zeros in every mode
//! (FORMAT.md, "Holes"): only whole units are left as holes.
//!
//! Must not: change contents (a hole and the zeros it stands for read the
//! same), or leave the short last unit of an `xts`/`cbc-cs1` file as a hole.

use std::os::fd::BorrowedFd;

use guardfs_crypto::{Layout, UnitNo};
use nix::unistd::Whence;

use crate::stack::file::{pread_full, pwrite_all};
use crate::vfs::{Errno, VfsResult};

/// Lower byte ranges of `fd` in `from..end` that are holes.
fn lower_holes(fd: BorrowedFd<'_>, from: u64, end: u64) -> VfsResult<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut pos = from;
    while pos < end {
        let hole = match nix::unistd::lseek(fd, pos as i64, Whence::SeekHole) {
            Ok(h) => (h as u64).min(end),
            // No hole information (or past the end): all data.
            Err(nix::errno::Errno::ENXIO | nix::errno::Errno::EINVAL) => break,
            Err(e) => return Err(e.into()),
        };
        if hole >= end {
            break;
        }
        let data = match nix::unistd::lseek(fd, hole as i64, Whence::SeekData) {
            Ok(d) => (d as u64).min(end),
            Err(nix::errno::Errno::ENXIO) => end,
            Err(e) => return Err(e.into()),
        };
        if data > hole {
            out.push((hole, data));
        }
        pos = data.max(hole + 1);
    }
    Ok(out)
}

/// The plaintext ranges of a file of logical size `size` whose lower
/// bytes are holes: `layout` is the file's (`None`: stored as it is).
pub(super) fn plain_holes(
    fd: BorrowedFd<'_>,
    layout: Option<&Layout>,
    size: u64,
) -> VfsResult<Vec<(u64, u64)>> {
    let Some(l) = layout else {
        return lower_holes(fd, 0, size);
    };
    let end = l.lower_size(guardfs_crypto::PlainOff(size)).0;
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (h, d) in lower_holes(fd, l.header_len(), end)? {
        // Whole units inside the hole.
        let first = (h - l.header_len()).div_ceil(4096);
        let last = (d - l.header_len()) / 4096; // exclusive
        if last <= first {
            continue;
        }
        let a = l.unit_plain_start(UnitNo(first)).0;
        let b = l.unit_plain_start(UnitNo(last)).0.min(size);
        match out.last_mut() {
            Some(p) if p.1 == a => p.1 = b,
            _ => out.push((a, b)),
        }
    }
    Ok(out)
}

/// Whether `a..b` lies inside one of `holes` (sorted, disjoint).
pub(super) fn covered(holes: &[(u64, u64)], a: u64, b: u64) -> bool {
    let i = holes.partition_point(|h| h.1 <= a);
    holes.get(i).is_some_and(|h| h.0 <= a && b <= h.1)
}

/// Write `data` at `off` in blocks of `block` bytes (the last may be
/// short), leaving unwritten the blocks `skip(index)` names.
pub(super) fn write_skipping(
    fd: BorrowedFd<'_>,
    data: &[u8],
    off: u64,
    block: usize,
    skip: impl Fn(usize) -> bool,
) -> VfsResult<()> {
    let mut run: Option<usize> = None;
    for (i, _) in data.chunks(block).enumerate() {
        let at = i * block;
        match (skip(i), run) {
            (false, None) => run = Some(at),
            (true, Some(s)) => {
                pwrite_all(fd, &data[s..at], off + s as u64)?;
                run = None;
            }
            _ => {}
        }
    }
    if let Some(s) = run {
        pwrite_all(fd, &data[s..], off + s as u64)?;
    }
    Ok(())
}

/// Copy `src` bytes `0..len` over `dst` at the same offsets, keeping
/// `src`'s holes as holes in `dst` (punched, or zeros written where the
/// file system cannot punch). `each` runs after every piece written.
pub(super) fn copy_sparse(
    dst: BorrowedFd<'_>,
    src: BorrowedFd<'_>,
    len: u64,
    each: &mut dyn FnMut(),
) -> VfsResult<()> {
    let holes = lower_holes(src, 0, len)?;
    let mut buf = vec![0u8; (1 << 20).min(len as usize).max(1)];
    let mut pos = 0u64;
    // Data runs between the holes, then the holes.
    let mut pieces: Vec<(u64, u64, bool)> = Vec::new();
    for (h, d) in holes {
        pieces.push((pos, h, false));
        pieces.push((h, d, true));
        pos = d;
    }
    pieces.push((pos, len, false));
    for (from, to, hole) in pieces {
        if hole {
            punch(dst, from, to)?;
            each();
            continue;
        }
        let mut off = from;
        while off < to {
            let want = ((to - off) as usize).min(buf.len());
            let n = pread_full(src, &mut buf[..want], off)?;
            if n < want {
                return Err(Errno::EIO);
            }
            pwrite_all(dst, &buf[..n], off)?;
            off += n as u64;
            each();
        }
    }
    Ok(())
}

/// Make `a..b` of `fd` a hole (zeros where punching is not supported).
fn punch(fd: BorrowedFd<'_>, a: u64, b: u64) -> VfsResult<()> {
    use nix::fcntl::FallocateFlags as F;
    match nix::fcntl::fallocate(
        fd,
        F::FALLOC_FL_PUNCH_HOLE | F::FALLOC_FL_KEEP_SIZE,
        a as i64,
        (b - a) as i64,
    ) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EOPNOTSUPP) => {
            let zeros = vec![0u8; (1 << 20).min((b - a) as usize)];
            let mut off = a;
            while off < b {
                let n = ((b - off) as usize).min(zeros.len());
                pwrite_all(fd, &zeros[..n], off)?;
                off += n as u64;
            }
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileExt;

    fn sparse_file(dir: &std::path::Path, name: &str) -> std::fs::File {
        let f = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join(name))
            .unwrap();
        f.write_all_at(&[7u8; 5000], 0).unwrap();
        f.write_all_at(&[9u8; 100], 10 << 20).unwrap();
        f
    }

    #[test]
    fn holes_are_found_kept_and_copied_back_sparse() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let f = sparse_file(dir.path(), "clear");
        let size = (10 << 20) + 100;
        let holes = plain_holes(f.as_fd(), None, size).unwrap();
        assert!(!holes.is_empty(), "no hole found");
        assert!(covered(&holes, 1 << 20, 2 << 20));
        assert!(!covered(&holes, 0, 4096), "data is not a hole");
        assert!(!covered(&holes, (10 << 20) - 4096, (10 << 20) + 1));
        // Through an xts layout: only whole units inside the hole count.
        let l = Layout::of(guardfs_crypto::Mode::Xts);
        let g = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("enc"))
            .unwrap();
        g.write_all_at(&[1u8; 4096 * 3], 0).unwrap(); // header + units 0, 1
        g.write_all_at(&[1u8; 4096], 4096 + (200 * 4096)).unwrap(); // unit 200
        let ph = plain_holes(g.as_fd(), Some(&l), 201 * 4096).unwrap();
        assert!(covered(&ph, 2 * 4096, 200 * 4096), "{ph:?}");
        assert!(!covered(&ph, 4096, 2 * 4096));
        assert!(!covered(&ph, 200 * 4096, 201 * 4096));
        // Copy back: data copied, holes punched in the destination.
        let dst = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("dst"))
            .unwrap();
        dst.write_all_at(&vec![5u8; size as usize], 0).unwrap();
        let mut pieces = 0;
        copy_sparse(dst.as_fd(), f.as_fd(), size, &mut || pieces += 1).unwrap();
        let mut back = vec![0u8; size as usize];
        assert_eq!(pread_full(dst.as_fd(), &mut back, 0).unwrap(), back.len());
        let mut want = vec![0u8; size as usize];
        want[..5000].fill(7);
        want[10 << 20..].fill(9);
        assert!(back == want, "contents differ after a sparse copy");
        let st = nix::sys::stat::fstat(dst.as_fd()).unwrap();
        assert!(
            st.st_blocks * 512 < 1 << 20,
            "not sparse: {} blocks",
            st.st_blocks
        );
        assert!(pieces >= 2);
        // Blocks named are left unwritten.
        let w = std::fs::File::create(dir.path().join("w")).unwrap();
        write_skipping(w.as_fd(), &[3u8; 4 * 4096 + 10], 0, 4096, |i| {
            i == 1 || i == 2
        })
        .unwrap();
        let mut got = vec![0u8; 4 * 4096 + 10];
        let r = std::fs::read(dir.path().join("w")).unwrap();
        got.copy_from_slice(&r);
        assert!(got[4096..3 * 4096].iter().all(|&b| b == 0));
        assert!(got[..4096].iter().all(|&b| b == 3) && got[3 * 4096..].iter().all(|&b| b == 3));
    }
}
