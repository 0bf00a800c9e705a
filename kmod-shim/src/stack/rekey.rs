//! Online deep rekey of one file, in place, while applications keep it
//! open: a new data key (under the target policy key) replaces the old one
//! a few units at a time. See `TRANSFORM.md` ("Online rekey") for the
//! on-disk protocol and why a crash at any instant loses nothing.
//!
//! Owns: the rekey record (`trusted.guardfs.rekey` on the file: the new
//! header and how many units are already in it), the step journal (the
//! new lower bytes of the step under way, in `.guardfs-xform/`), a step
//! (re-encrypt the next units under an exclusive lock on just those
//! units), recovery at load (redo a step a crash interrupted, put the new
//! header in place once every unit is new), and the switch to the new
//! header at the end.
//!
//! Must not: change the layout (only a file whose target mode is its own
//! mode is rekeyed online: units stay where they are), hold any lock
//! longer than one step, or decide who may rekey (the stack checks
//! `key_op`).
//!
//! While a rekey runs the file is read and written with both ciphers:
//! units below the record's mark with the new one, the others with the
//! old one ([`Crypt::next`](super::file::Crypt)).

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use guardfs_crypto::{ContentCipher, HEADER_LEN, Header, Layout, LowerOff, PlainOff, UnitNo};
use log::{error, info};
use nix::fcntl::OFlag;

use crate::stack::file::{
    Contents, Crypt, FileState, Io, NewKey, Next, lower_size, pread_full, pwrite_all,
};
use crate::stack::xform::{InFlight, crash_point, io_err, open_side, side_dir};
use crate::sys;
use crate::vfs::{Errno, VfsResult};

/// The rekey record: present from the start of an online rekey until the
/// file's header is the new one, durably.
pub const REKEY_XATTR: &CStr = c"trusted.guardfs.rekey";
const MAGIC: &[u8; 4] = b"GFrk";
const JOURNAL_MAGIC: &[u8; 4] = b"GFrj";
const VERSION: u8 = 1;
/// Header bytes a record keeps: everything but the reserved zeros.
const HEADER_KEPT: usize = 212;
const RECORD_LEN: usize = 4 + 1 + 16 + 8 + 16 + HEADER_KEPT;
/// Units re-encrypted per step: the longest any read or write of those
/// units waits (1 MiB of xts, cbc-cs1; 1017 KiB of gcm).
pub const STEP_UNITS: u64 = 256;
/// Units per step: [`STEP_UNITS`], or fewer for tests
/// (`GUARDFS_TEST_REKEY_STEP_UNITS`, 1..=256: many step boundaries inside
/// small files).
fn step_units() -> u64 {
    static UNITS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *UNITS.get_or_init(|| {
        std::env::var("GUARDFS_TEST_REKEY_STEP_UNITS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| (1..=STEP_UNITS).contains(n))
            .unwrap_or(STEP_UNITS)
    })
}

/// The journal's head; its data starts at this offset.
const JOURNAL_HEAD: usize = 4096;

/// The rekey record (see TRANSFORM.md for the byte layout).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    /// Random; binds the step journal to this rekey.
    id: [u8; 16],
    /// Units `0..done` are in the new key.
    done: u64,
    /// The file id of the header the rekey replaces: a record whose file
    /// no longer has that header (rewritten since) is not applied.
    old_id: [u8; 16],
    /// The new header.
    header: [u8; HEADER_LEN],
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(RECORD_LEN);
        v.extend_from_slice(MAGIC);
        v.push(VERSION);
        v.extend_from_slice(&self.id);
        v.extend_from_slice(&self.done.to_le_bytes());
        v.extend_from_slice(&self.old_id);
        v.extend_from_slice(&self.header[..HEADER_KEPT]);
        v
    }

    fn parse(v: &[u8]) -> Result<(Record, Header), String> {
        if v.len() != RECORD_LEN || &v[..4] != MAGIC {
            return Err("the rekey record is damaged".into());
        }
        if v[4] != VERSION {
            return Err(format!("rekey record version {} is not known", v[4]));
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&v[5..21]);
        let mut done = [0u8; 8];
        done.copy_from_slice(&v[21..29]);
        let mut old_id = [0u8; 16];
        old_id.copy_from_slice(&v[29..45]);
        let mut header = [0u8; HEADER_LEN];
        header[..HEADER_KEPT].copy_from_slice(&v[45..]);
        let h = Header::parse(&header)
            .map_err(|e| format!("the rekey record's header is not valid: {e}"))?;
        Ok((
            Record {
                id,
                done: u64::from_le_bytes(done),
                old_id,
                header,
            },
            h,
        ))
    }

    fn write(&self, fd: BorrowedFd<'_>) -> VfsResult<()> {
        sys::fsetxattr(fd, REKEY_XATTR, &self.encode())?;
        nix::unistd::fsync(fd)?;
        Ok(())
    }
}

/// Parse a rekey record as recovery would (for the fuzz target).
#[doc(hidden)]
pub fn fuzz_record(v: &[u8]) -> Result<Vec<u8>, String> {
    let (r, _) = Record::parse(v)?;
    Ok(r.encode())
}

fn read_record(fd: BorrowedFd<'_>) -> Result<Option<(Record, Header)>, String> {
    match sys::fgetxattr(fd, REKEY_XATTR) {
        Ok(v) => Record::parse(&v).map(Some),
        Err(e) if e == Errno::ENODATA || e == Errno(libc::ENOTSUP) => Ok(None),
        Err(e) => Err(io_err("reading the rekey record", e)),
    }
}

/// The step journal's name in the side directory.
fn journal_name(fd: BorrowedFd<'_>) -> VfsResult<String> {
    Ok(format!("{}.rk", super::xform::side_name(fd)?))
}

fn digest(id: &[u8; 16], first: u64, data: &[u8]) -> [u8; 32] {
    let mut d = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    d.update(b"guardfs rekey journal v1");
    d.update(id);
    d.update(&first.to_le_bytes());
    d.update(&(data.len() as u64).to_le_bytes());
    d.update(data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.finish().as_ref());
    out
}

/// Write a step's new lower bytes (`data`, from unit `first`) to the
/// journal and make them durable.
fn journal_write(j: BorrowedFd<'_>, id: &[u8; 16], first: u64, data: &[u8]) -> VfsResult<()> {
    let mut head = [0u8; JOURNAL_HEAD];
    head[..4].copy_from_slice(JOURNAL_MAGIC);
    head[4] = VERSION;
    head[8..24].copy_from_slice(id);
    head[24..32].copy_from_slice(&first.to_le_bytes());
    head[32..40].copy_from_slice(&(data.len() as u64).to_le_bytes());
    head[40..72].copy_from_slice(&digest(id, first, data));
    pwrite_all(j, &head, 0)?;
    pwrite_all(j, data, JOURNAL_HEAD as u64)?;
    nix::unistd::ftruncate(j, (JOURNAL_HEAD + data.len()) as i64)?;
    nix::unistd::fdatasync(j)?;
    Ok(())
}

/// The step a journal holds, if it is whole and belongs to rekey `id`:
/// its first unit and the new lower bytes.
fn journal_read(j: BorrowedFd<'_>, id: &[u8; 16]) -> Option<(u64, Vec<u8>)> {
    let mut head = [0u8; 72];
    if pread_full(j, &mut head, 0).ok()? != head.len() || &head[..4] != JOURNAL_MAGIC {
        return None;
    }
    if head[4] != VERSION || head[8..24] != id[..] {
        return None;
    }
    let first = u64::from_le_bytes(head[24..32].try_into().ok()?);
    let len = u64::from_le_bytes(head[32..40].try_into().ok()?);
    if len > STEP_UNITS * 4096 {
        return None;
    }
    let mut data = vec![0u8; len as usize];
    if pread_full(j, &mut data, JOURNAL_HEAD as u64).ok()? != data.len() {
        return None;
    }
    (digest(id, first, &data)[..] == head[40..72]).then_some((first, data))
}

/// Write a step's new lower bytes over units `first..`, leaving all-zero
/// units that can be holes unwritten (they were holes and stay holes).
fn write_in_place(l: &Layout, fd: BorrowedFd<'_>, first: u64, data: &[u8]) -> VfsResult<()> {
    super::holes::write_skipping(fd, data, l.unit_lower_start(UnitNo(first)).0, 4096, |i| {
        let unit = &data[i * 4096..((i + 1) * 4096).min(data.len())];
        l.unit_may_be_hole(unit.len()) && unit.iter().all(|&b| b == 0)
    })
}

fn unlink_journal(root: BorrowedFd<'_>, name: &str) {
    let path = format!("{}/{name}", crate::stack::xform::SIDE_DIR);
    match nix::unistd::unlinkat(root, path.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => error!("secfs: cannot remove rekey journal {name}: {e}"),
    }
}

/// What recovery at load found.
pub(super) struct Pending {
    record: Record,
    header: Header,
}

/// Before a file is loaded: redo the step a crash interrupted (its journal
/// is whole and starts where the record's mark is), and if every unit is
/// already new, put the new header in place and drop the record. Returns
/// the rekey still under way, if any. `Err` leaves the file as it is (it
/// is then refused). Needs no key: everything it writes is ciphertext
/// already made.
pub(super) fn recover(io: &Io<'_>) -> Result<Option<Pending>, String> {
    let Some((mut rec, header)) = read_record(io.fd)? else {
        return Ok(None);
    };
    let reopened = super::file::writable(io.fd, io.proc_fd)
        .map_err(|e| io_err("opening it for writing to finish a rekey", e))?;
    let fd = reopened.as_ref().map_or(io.fd, |f| f.as_fd());
    let l = Layout::of(header.mode);
    let name = journal_name(fd).map_err(|e| io_err("fstat", e))?;
    let units = |fd| -> Result<u64, String> {
        let lower = lower_size(fd).map_err(|e| io_err("fstat", e))?;
        Ok(l.unit_count(l.plain_size(LowerOff(lower))))
    };
    // Whose header is in place: the one the rekey replaces, the new one
    // (a crash after the switch), or neither.
    let mut block = [0u8; HEADER_LEN];
    let got = pread_full(fd, &mut block, 0).map_err(|e| io_err("reading the header", e))?;
    match Header::parse(&block[..got]) {
        Ok(h) if h.file_id.0 == rec.old_id => {}
        Ok(h) if h.file_id == header.file_id && h.key_name == header.key_name => {
            drop_record(fd, io.root, &name)?;
            info!(
                "secfs: {}: finished an interrupted rekey",
                io.node.display_path()
            );
            return Ok(None);
        }
        // Torn while the new header was written: every unit is new.
        Err(_) if rec.done >= units(fd)? => {}
        _ => {
            // The file was rewritten since (emptied and written anew, or
            // replaced): the record describes contents that are gone.
            drop_record(fd, io.root, &name)?;
            log::warn!(
                "secfs: {}: dropped a rekey record that no longer fits the file",
                io.node.display_path()
            );
            return Ok(None);
        }
    }
    if let Ok(j) = open_side(io.root, &name, OFlag::O_RDONLY)
        && let Some((first, data)) = journal_read(j.as_fd(), &rec.id)
        && first == rec.done
    {
        // All of it, whatever the file's size now: a step's bytes end at
        // the end it saw, which an unsynced extension lost to a power
        // failure may have taken away; redone, the file is whole again.
        write_in_place(&l, fd, first, &data).map_err(|e| io_err("redoing a step", e))?;
        nix::unistd::fdatasync(fd).map_err(|e| io_err("fdatasync", e))?;
        rec.done = first + data.len().div_ceil(4096) as u64;
        rec.write(fd)
            .map_err(|e| io_err("advancing the rekey record", e))?;
        info!(
            "secfs: {}: redid an interrupted rekey step",
            io.node.display_path()
        );
    }
    if rec.done >= units(fd)? {
        finish(fd, io.root, &rec, &name)?;
        info!(
            "secfs: {}: finished an interrupted rekey",
            io.node.display_path()
        );
        return Ok(None);
    }
    Ok(Some(Pending {
        record: rec,
        header,
    }))
}

/// The record and the journal go (durably).
fn drop_record(fd: BorrowedFd<'_>, root: BorrowedFd<'_>, journal: &str) -> Result<(), String> {
    match sys::fremovexattr(fd, REKEY_XATTR) {
        Ok(()) | Err(Errno::ENODATA) => {}
        Err(e) => return Err(io_err("removing the rekey record", e)),
    }
    nix::unistd::fsync(fd).map_err(|e| io_err("fsync", e))?;
    unlink_journal(root, journal);
    Ok(())
}

/// Remove the journal of the file `io` names, if any (its record is gone).
pub(super) fn drop_journal(io: &Io<'_>) {
    if let Ok(name) = journal_name(io.fd) {
        unlink_journal(io.root, &name);
    }
}

/// The new header in place, durably, then the record and journal go.
fn finish(
    fd: BorrowedFd<'_>,
    root: BorrowedFd<'_>,
    rec: &Record,
    journal: &str,
) -> Result<(), String> {
    pwrite_all(fd, &rec.header, 0).map_err(|e| io_err("writing the new header", e))?;
    nix::unistd::fdatasync(fd).map_err(|e| io_err("fdatasync", e))?;
    crash_point("rk-header");
    drop_record(fd, root, journal)
}

/// After the old header opened (cipher `crypt`): attach the rekey under
/// way, checked against what the key rule accepts. `Err` says why the file
/// is refused.
pub(super) fn attach(
    io: &Io<'_>,
    crypt: &Crypt,
    p: Pending,
    accepted: &[String],
) -> Result<(), String> {
    let h = p.header;
    if h.mode != crypt.header.mode {
        return Err("the rekey record's header changes the mode".into());
    }
    if !accepted.contains(&h.key_name) {
        return Err(format!(
            "a rekey under way to key {}, which the key rule does not accept",
            h.key_name
        ));
    }
    let pk = io.keys.get(&h.key_name, h.key_version).ok_or_else(|| {
        format!(
            "a rekey under way to key {} version {}, which is not available",
            h.key_name, h.key_version
        )
    })?;
    let dk = h
        .unwrap_key(&pk)
        .map_err(|e| format!("the rekey record's header does not open: {e}"))?;
    let cipher = ContentCipher::for_header(&h, &dk).map_err(|e| e.to_string())?;
    let _ = crypt.next.set(Next {
        header: h,
        cipher,
        done: p.record.done.into(),
    });
    Ok(())
}

/// Where a file's online rekey stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Plaintext bytes in the new key.
    pub done: u64,
    /// Logical size.
    pub size: u64,
    /// Every unit is new and the header is the new one.
    pub finished: bool,
}

fn progress(l: &Layout, done: u64, size: u64, finished: bool) -> Progress {
    Progress {
        done: if finished {
            size
        } else {
            l.unit_plain_start(UnitNo(done)).0.min(size)
        },
        size,
        finished,
    }
}

/// Start an online rekey of a loaded encrypted file (contents `c`, held
/// for writing) to `target` (same mode): a new data key, the record with
/// its header, durable; then the file is read with both ciphers.
pub(super) fn start(c: &mut Contents, io: &Io<'_>, target: &NewKey) -> VfsResult<()> {
    let Contents::Encrypted(crypt, _) = &*c else {
        return Err(Errno::EINVAL);
    };
    let (name, version, pk, mode) = target;
    if *mode != crypt.header.mode || crypt.next.get().is_some() {
        return Err(Errno::EINVAL);
    }
    let (h, dk) = Header::create(*mode, name, *version, pk).map_err(|e| {
        error!(
            "secfs: {}: header creation failed: {e}",
            io.node.display_path()
        );
        Errno::EIO
    })?;
    let cipher = ContentCipher::for_header(&h, &dk).map_err(|_| Errno::EIO)?;
    let mut id = [0u8; 16];
    guardfs_crypto::random_bytes(&mut id).map_err(|_| Errno::EIO)?;
    let rec = Record {
        id,
        done: 0,
        old_id: crypt.header.file_id.0,
        header: h.to_bytes(),
    };
    rec.write(io.fd)?;
    let _ = crypt.next.set(Next {
        header: h,
        cipher,
        done: 0.into(),
    });
    Ok(())
}

/// The online rekey under way in `c`: the file's cipher, the side it
/// moves to, the size, the layout, the units and the mark; `Err(progress)`
/// when none is (finished). Not encrypted: EIO.
#[allow(clippy::type_complexity)]
fn under_way(c: &Contents) -> VfsResult<Result<(&Crypt, &Next, u64, Layout, u64, u64), Progress>> {
    let Contents::Encrypted(crypt, size) = c else {
        return Err(Errno::EIO);
    };
    let l = *crypt.layout();
    Ok(match crypt.next.get() {
        None => Err(progress(&l, 0, *size, true)),
        Some(n) => {
            let units = l.unit_count(PlainOff(*size));
            Ok((crypt, n, *size, l, units, n.done.load(Ordering::Acquire)))
        }
    })
}

impl FileState {
    /// Re-encrypt up to `budget` plaintext bytes of the online rekey under
    /// way (at least one step), a step of [`STEP_UNITS`] units at a time,
    /// each under an exclusive lock on just its units; switch to the new
    /// header when every unit is new. `io.fd` is open for writing.
    pub fn rekey_step(&self, io: &Io<'_>, budget: u64) -> VfsResult<Progress> {
        let name = journal_name(io.fd)?;
        let _in_flight = InFlight::new(&name);
        let mut journal: Option<OwnedFd> = None;
        let mut spent = 0u64;
        loop {
            let contents = self.read_contents();
            let (c, next, size, l, units, a) = match under_way(&contents)? {
                Err(finished) => return Ok(finished),
                Ok(w) => w,
            };
            if a >= units {
                drop(contents);
                return self.rekey_finish(io, &name);
            }
            if spent >= budget {
                return Ok(progress(&l, a, size, false));
            }
            let b = units.min(a + step_units());
            let _g = self.ranges.lock(a, b - 1, true);
            let plain_len = (l.unit_plain_start(UnitNo(b)).0.min(size)
                - l.unit_plain_start(UnitNo(a)).0) as usize;
            let lower_len = l.run_lower_len(plain_len);
            let mut old = vec![0u8; lower_len];
            let got = pread_full(io.fd, &mut old, l.unit_lower_start(UnitNo(a)).0)?;
            old[got..].fill(0);
            let mut plain = zeroize::Zeroizing::new(vec![0u8; plain_len]);
            c.cipher.decrypt(UnitNo(a), &old, &mut plain).map_err(|e| {
                error!("secfs: {}: {e} (EIO)", io.node.display_path());
                Errno::EIO
            })?;
            let mut new = vec![0u8; lower_len];
            next.cipher
                .encrypt(UnitNo(a), &plain, &mut new)
                .map_err(|e| {
                    error!("secfs: encryption failed: {e}");
                    Errno::EIO
                })?;
            // Holes stay holes.
            for (o, n) in old.chunks(4096).zip(new.chunks_mut(4096)) {
                if l.unit_may_be_hole(o.len()) && o.iter().all(|&x| x == 0) {
                    n.fill(0);
                }
            }
            let rec = match read_record(io.fd) {
                Ok(Some((r, _))) if r.done == a => r,
                _ => {
                    error!(
                        "secfs: {}: the rekey record does not match the rekey under way",
                        io.node.display_path()
                    );
                    return Err(Errno::EIO);
                }
            };
            if journal.is_none() {
                let dir = side_dir(io.root).map_err(|why| {
                    error!("secfs: {}: {why}", io.node.display_path());
                    Errno::EIO
                })?;
                let j = open_side(io.root, &name, OFlag::O_RDWR | OFlag::O_CREAT)
                    .map_err(|e| Errno(e as i32))?;
                // Its name, durable: a journal whose data is durable but
                // whose entry is not would be lost with the step.
                nix::unistd::fsync(dir)?;
                journal = Some(j);
            }
            let j = journal.as_ref().ok_or(Errno::EIO)?;
            // 1. The new bytes, durable in the journal.
            journal_write(j.as_fd(), &rec.id, a, &new)?;
            crash_point("rk-journal");
            let steps = || -> VfsResult<()> {
                // 2. In place, durable.
                write_in_place(&l, io.fd, a, &new)?;
                nix::unistd::fdatasync(io.fd)?;
                crash_point("rk-write");
                // 3. The mark moves, durably.
                Record {
                    done: b,
                    ..rec.clone()
                }
                .write(io.fd)
            };
            if let Err(e) = steps() {
                // Readers still use the old cipher for these units: put
                // the old bytes and mark back and disarm the journal
                // before the lock goes; if even that fails, the file is
                // decided again from disk (where the journal redoes it).
                let undone = write_in_place(&l, io.fd, a, &old)
                    .and_then(|()| Ok(nix::unistd::fdatasync(io.fd)?))
                    .and_then(|()| {
                        Record {
                            done: a,
                            ..rec.clone()
                        }
                        .write(io.fd)
                    })
                    .and_then(|()| Ok(nix::unistd::ftruncate(j.as_fd(), 0)?))
                    .and_then(|()| Ok(nix::unistd::fdatasync(j.as_fd())?));
                error!(
                    "secfs: {}: a rekey step failed ({e:?}){}",
                    io.node.display_path(),
                    if undone.is_ok() {
                        "; undone"
                    } else {
                        "; left for recovery at the next load"
                    }
                );
                drop(_g);
                drop(contents);
                if undone.is_err() {
                    *self.write_contents() = Contents::Unloaded;
                }
                return Err(e);
            }
            // Then readers use the new cipher for these units.
            next.done.store(b, Ordering::Release);
            crash_point("rk-record");
            spent += plain_len as u64;
        }
    }

    /// Every unit is new: the header, under the contents lock.
    fn rekey_finish(&self, io: &Io<'_>, journal: &str) -> VfsResult<Progress> {
        let mut c = self.write_contents();
        let (_, next, size, l, units, done) = match under_way(&c)? {
            Err(finished) => return Ok(finished),
            Ok(w) => w,
        };
        if done < units {
            // Grown meanwhile: more steps.
            return Ok(progress(&l, done, size, false));
        }
        let rec = match read_record(io.fd) {
            Ok(Some((r, _))) => r,
            _ => return Err(Errno::EIO),
        };
        let h = next.header.clone();
        let pk = io.keys.get(&h.key_name, h.key_version).ok_or(Errno::EIO)?;
        let dk = h.unwrap_key(&pk).map_err(|_| Errno::EIO)?;
        let cipher = ContentCipher::for_header(&h, &dk).map_err(|_| Errno::EIO)?;
        if let Err(why) = finish(io.fd, io.root, &rec, journal) {
            error!("secfs: {}: {why}", io.node.display_path());
            // Decided again from disk at the next load.
            *c = Contents::Unloaded;
            return Err(Errno::EIO);
        }
        *c = Contents::Encrypted(Arc::new(Crypt::new(h, cipher)), size);
        Ok(progress(&l, units, size, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_misfits_are_refused() {
        let pk = guardfs_crypto::PolicyKey::from_bytes([7u8; 32]);
        let (h, _) = Header::create(guardfs_crypto::Mode::Xts, "k", 3, &pk).unwrap();
        let r = Record {
            id: [9; 16],
            done: 77,
            old_id: [3; 16],
            header: h.to_bytes(),
        };
        let v = r.encode();
        assert_eq!(v.len(), RECORD_LEN);
        let (back, hh) = Record::parse(&v).unwrap();
        assert_eq!(back, r);
        assert_eq!(hh.key_version, 3);
        for cut in [0, 4, RECORD_LEN - 1] {
            assert!(Record::parse(&v[..cut]).is_err());
        }
        let mut bad = v.clone();
        bad[4] = 2;
        assert!(Record::parse(&bad).unwrap_err().contains("version"));
        // The header's magic: refused here; damage to its authenticated
        // bytes is refused where it is opened (`attach`).
        let mut bad = v.clone();
        bad[45] ^= 1;
        assert!(Record::parse(&bad).is_err(), "a damaged header is refused");
    }

    #[test]
    fn a_journal_opens_only_whole_and_for_its_own_rekey() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("j"))
            .unwrap();
        let data: Vec<u8> = (0..3 * 4096 + 100).map(|i| i as u8).collect();
        journal_write(f.as_fd(), &[1; 16], 5, &data).unwrap();
        assert_eq!(journal_read(f.as_fd(), &[1; 16]), Some((5, data.clone())));
        assert_eq!(journal_read(f.as_fd(), &[2; 16]), None, "another rekey's");
        // Torn: the data does not match the digest.
        pwrite_all(f.as_fd(), &[0xff], JOURNAL_HEAD as u64 + 9000).unwrap();
        assert_eq!(journal_read(f.as_fd(), &[1; 16]), None);
        nix::unistd::ftruncate(f.as_fd(), 100).unwrap();
        assert_eq!(journal_read(f.as_fd(), &[1; 16]), None);
    }

    #[test]
    fn holes_are_not_written_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        let l = Layout::of(guardfs_crypto::Mode::Xts);
        let mut data = vec![0u8; 3 * 4096 + 10];
        data[..4096].fill(1);
        data[3 * 4096..].fill(0); // a 10-byte tail is never a hole
        write_in_place(&l, f.as_fd(), 0, &data).unwrap();
        let mut back = vec![0u8; 4096 + 3 * 4096 + 10];
        assert_eq!(pread_full(f.as_fd(), &mut back, 0).unwrap(), back.len());
        assert!(back[4096..8192].iter().all(|&b| b == 1));
        let st = nix::sys::stat::fstat(f.as_fd()).unwrap();
        assert_eq!(st.st_size as usize, back.len());
        // Units 1 and 2 were never written: a hole (blocks for unit 0 and
        // the tail only).
        assert!(st.st_blocks * 512 < 4 * 4096, "blocks {}", st.st_blocks);
    }
}
