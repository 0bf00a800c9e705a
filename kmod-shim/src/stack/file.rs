//! File contents: the only place above the crypto crate that knows about
//! headers, units, layouts and ciphers.
//!
//! Every use of `guardfs_crypto` in the stacking layer is in this module
//! (apart from the opaque policy keys [`keys`](crate::stack::keys) hands
//! through). The rest of the layer sees plain answers: the [`Class`] of a
//! file from its marker or header bytes ([`marker_class`],
//! [`header_class`], [`has_header_magic`]), its logical size
//! ([`logical_size`]), the raw header block ([`read_header_block`]). Two
//! crypto types are re-exported for what the layer's users configure or
//! inspect: [`Mode`] (the mode for new files, named on the command line)
//! and [`Header`] (for status tools).
//!
//! Locking. Each regular-file inode has a reader-writer lock over its size
//! and contents state, and a range lock over units:
//! * reads, and writes that stay inside the current size, hold the size
//!   lock shared and lock only the units they touch (shared for reads,
//!   exclusive for writes), so writers to different units of one file run
//!   in parallel;
//! * writes that extend the file, truncates and header creation hold the
//!   size lock exclusively.
//!
//! Buffers. Each worker thread keeps two scratch buffers (lower and
//! plaintext runs) that grow to the largest request once; nothing is
//! allocated per request.

use std::cell::RefCell;
use std::ffi::CStr;
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Condvar, Mutex, RwLock};

use guardfs_crypto::offsets::MAX_PLAIN_SIZE;
use guardfs_crypto::{ContentCipher, HEADER_LEN, Layout, LowerOff, PlainOff, UnitNo};
use log::{error, warn};

use crate::stack::access::NewKey;
use crate::stack::keys::KeySource;
use crate::stack::nodes::{Class, Node};
use crate::sys;
use crate::vfs::{Errno, VfsResult, Whence};

/// A parsed file header (see [`FileState::header`]).
pub use guardfs_crypto::Header;
/// The mode of a GuardPoint's new files (`GuardConfig::mode`), and of a
/// file's header.
pub use guardfs_crypto::Mode;

/// The first [`HEADER_LEN`] bytes of a lower file, as they are.
pub type HeaderBlock = [u8; HEADER_LEN];

/// How many leading bytes tell whether a lower file has a header, and its
/// mode: the magic, the format version, and the mode code.
const HEADER_PEEK: usize = 16;
/// Offset of the mode code in a header (the crypto crate's header layout).
const HEADER_MODE_OFF: usize = 10;

/// The class that files of `mode` have (`clear` is plain).
fn class_of_mode(mode: Mode) -> Class {
    match mode {
        Mode::Xts => Class::Xts,
        Mode::CbcCs1 => Class::CbcCs1,
        Mode::Gcm => Class::Gcm,
        Mode::Clear => Class::Plain,
    }
}

/// The encrypted mode a class names, if any.
fn mode_of_class(class: Class) -> Option<Mode> {
    match class {
        Class::Xts => Some(Mode::Xts),
        Class::CbcCs1 => Some(Mode::CbcCs1),
        Class::Gcm => Some(Mode::Gcm),
        Class::Plain | Class::Unknown => None,
    }
}

/// The logical size of a file of class `class` whose lower file is
/// `lower` bytes long (an unencrypted class: `lower` itself).
pub fn logical_size(class: Class, lower: u64) -> u64 {
    match mode_of_class(class) {
        Some(mode) => Layout::of(mode).plain_size(LowerOff(lower)).0,
        None => lower,
    }
}

/// The class a mode marker's value names: `None` if it names no mode.
pub fn marker_class(value: &[u8]) -> Option<Class> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse::<Mode>().ok())
        .map(class_of_mode)
}

/// The class the leading bytes of a lower file show: an encrypted class
/// when they hold (at least the first 16 bytes of) a header
/// with a known mode, else plain.
pub fn class_of_header_bytes(bytes: &[u8]) -> Class {
    if bytes.len() < HEADER_PEEK || !Header::has_magic(bytes) {
        return Class::Plain;
    }
    Mode::from_header_code(bytes[HEADER_MODE_OFF])
        .map(class_of_mode)
        .unwrap_or(Class::Plain)
}

/// The class of an open lower file from its first bytes (see
/// [`class_of_header_bytes`]); plain if they cannot be read.
pub fn header_class(fd: BorrowedFd<'_>) -> Class {
    let mut hdr = [0u8; HEADER_PEEK];
    match pread_full(fd, &mut hdr, 0) {
        Ok(HEADER_PEEK) => class_of_header_bytes(&hdr),
        _ => Class::Plain,
    }
}

/// Whether an open lower file starts with the header magic.
pub fn has_header_magic(fd: BorrowedFd<'_>) -> VfsResult<bool> {
    let mut hdr = [0u8; HEADER_PEEK];
    let n = pread_full(fd, &mut hdr, 0)?;
    Ok(Header::has_magic(&hdr[..n]))
}

/// The first [`HEADER_LEN`] bytes of an open lower file, as they are
/// (a shorter file is padded with zeros).
pub fn read_header_block(fd: BorrowedFd<'_>) -> VfsResult<HeaderBlock> {
    let mut hdr = [0u8; HEADER_LEN];
    pread_full(fd, &mut hdr, 0)?;
    Ok(hdr)
}

/// The xattr on a lower file that records its mode, so `stat` can compute
/// the logical size without reading the header.
pub const MODE_XATTR: &CStr = c"trusted.guardfs.mode";
/// Prefix of every xattr GuardFS keeps for itself (hidden from users).
pub const PRIVATE_XATTR_PREFIX: &[u8] = b"trusted.guardfs.";

/// A file's header and cipher.
#[derive(Debug)]
pub struct Crypt {
    pub header: Header,
    pub cipher: ContentCipher,
}

impl Crypt {
    fn layout(&self) -> &Layout {
        self.cipher.layout()
    }
}

/// What the lower file holds.
#[derive(Debug, Default, Clone)]
enum Contents {
    #[default]
    Unloaded,
    /// Shown and written as is (`clear` GuardPoints).
    Plain,
    /// Encrypted, with its logical size.
    Encrypted(Arc<Crypt>, u64),
    /// Empty and headerless in an encrypted GuardPoint: gets a header on
    /// first write.
    Empty,
    /// Plaintext or a damaged header in an encrypted GuardPoint: reads and
    /// writes fail with EIO, `stat` shows the lower file as it is.
    Refused,
}

/// What an operation on a file's contents needs: the node (for log lines),
/// an open lower fd, the GuardPoint's keys and its mode for new files.
pub struct Io<'a> {
    pub node: &'a Node,
    pub fd: BorrowedFd<'a>,
    pub keys: &'a dyn KeySource,
    pub mode: Mode,
    /// The key rule's key for new contents at this file's path.
    pub new_key: &'a NewKey,
}

impl Io<'_> {
    /// Whether headerless files are plaintext here: a `clear` GuardPoint,
    /// or a resource whose key rule is `clear_key`.
    fn clear_allowed(&self) -> bool {
        self.mode == Mode::Clear || *self.new_key == NewKey::Clear
    }
}

#[derive(Debug, Default)]
pub struct FileState {
    contents: RwLock<Contents>,
    ranges: RangeLocks,
    /// The file has no security.capability xattr (checked since the last
    /// time one could have been set); writes need not look again.
    no_caps: std::sync::atomic::AtomicBool,
}

const CAPS_XATTR: &CStr = c"security.capability";

impl FileState {
    /// Clear what a write or truncate must clear (with the kernel's
    /// FUSE_HANDLE_KILLPRIV_V2 this is secfs's job): file capabilities
    /// always, and the set-user-id bit (and set-group-id when group-
    /// executable) when `suidgid`.
    pub fn kill_privs(&self, fd: BorrowedFd<'_>, suidgid: bool) -> VfsResult<()> {
        use std::sync::atomic::Ordering;
        if !self.no_caps.load(Ordering::Acquire) {
            match sys::fremovexattr(fd, CAPS_XATTR) {
                Ok(()) => {}
                Err(e) if e == Errno::ENODATA || e == Errno(libc::ENOTSUP) => {}
                Err(e) => return Err(e),
            }
            self.no_caps.store(true, Ordering::Release);
        }
        if suidgid {
            let mode = nix::sys::stat::fstat(fd)?.st_mode;
            let mut kill = libc::S_ISUID;
            if mode & libc::S_IXGRP != 0 {
                kill |= libc::S_ISGID;
            }
            if mode & kill != 0 {
                nix::sys::stat::fchmod(
                    fd,
                    nix::sys::stat::Mode::from_bits_truncate(mode & 0o7777 & !kill),
                )?;
            }
        }
        Ok(())
    }

    /// A capability xattr may have been set: look again on the next write.
    pub fn caps_may_exist(&self) {
        self.no_caps
            .store(false, std::sync::atomic::Ordering::Release);
    }
}

thread_local! {
    static LOWER_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static PLAIN_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn with_buf<T>(
    key: &'static std::thread::LocalKey<RefCell<Vec<u8>>>,
    len: usize,
    f: impl FnOnce(&mut [u8]) -> T,
) -> T {
    key.with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < len {
            b.resize(len, 0);
        }
        f(&mut b[..len])
    })
}

/// pread until `buf` is full or EOF; returns bytes read.
pub fn pread_full(fd: BorrowedFd<'_>, buf: &mut [u8], mut off: u64) -> VfsResult<usize> {
    let mut done = 0;
    while done < buf.len() {
        match nix::sys::uio::pread(fd, &mut buf[done..], off as i64) {
            Ok(0) => break,
            Ok(n) => {
                done += n;
                off += n as u64;
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}

/// pwrite all of `buf`.
pub fn pwrite_all(fd: BorrowedFd<'_>, buf: &[u8], mut off: u64) -> VfsResult<()> {
    let mut done = 0;
    while done < buf.len() {
        match nix::sys::uio::pwrite(fd, &buf[done..], off as i64) {
            Ok(0) => return Err(Errno::EIO),
            Ok(n) => {
                done += n;
                off += n as u64;
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn lower_size(fd: BorrowedFd<'_>) -> VfsResult<u64> {
    Ok(nix::sys::stat::fstat(fd)?.st_size as u64)
}

/// Read the mode marker of an open lower file.
pub fn read_marker(fd: BorrowedFd<'_>) -> Option<Mode> {
    let v = sys::fgetxattr(fd, MODE_XATTR).ok()?;
    std::str::from_utf8(&v).ok()?.parse().ok()
}

impl FileState {
    /// Decide what the lower file holds, once per inode. `mount_mode` is
    /// the GuardPoint's mode for new files.
    pub fn load(&self, io: &Io<'_>) -> VfsResult<()> {
        let (node, fd, keys) = (io.node, io.fd, io.keys);
        // A refused file is looked at again on every open: the key it
        // needs may have arrived since (vmd pushes keys after a restart).
        let settled = |c: &Contents| !matches!(c, Contents::Unloaded | Contents::Refused);
        if settled(&self.read_contents()) {
            return Ok(());
        }
        let mut c = self.write_contents();
        if settled(&c) {
            return Ok(());
        }
        let size = lower_size(fd)?;
        let marker = read_marker(fd);
        *c = if size < HEADER_LEN as u64 {
            if io.clear_allowed() && marker.is_none() {
                Contents::Plain
            } else if size == 0 || marker.is_some() {
                Contents::Empty
            } else {
                self.refuse(
                    node,
                    "plaintext file shorter than a header in an encrypted GuardPoint",
                )
            }
        } else {
            let mut hdr = [0u8; HEADER_LEN];
            let n = pread_full(fd, &mut hdr, 0)?;
            match Header::parse(&hdr[..n]) {
                Ok(h) => match keys.get(&h.key_name, h.key_version) {
                    Some(pk) => match h.unwrap_key(&pk) {
                        Ok(dk) => match ContentCipher::for_header(&h, &dk) {
                            Ok(cipher) => {
                                let plain = cipher.layout().plain_size(LowerOff(size)).0;
                                if marker != Some(h.mode) {
                                    // Restored without its marker: put it back so
                                    // stat shows the logical size.
                                    if let Err(e) =
                                        sys::fsetxattr(fd, MODE_XATTR, h.mode.name().as_bytes())
                                    {
                                        warn!(
                                            "{}: cannot set mode marker: {e:?}",
                                            node.display_path()
                                        );
                                    }
                                }
                                node.set_class(class_of_mode(h.mode));
                                Contents::Encrypted(Arc::new(Crypt { header: h, cipher }), plain)
                            }
                            Err(e) => self.refuse(node, &format!("cipher setup failed: {e}")),
                        },
                        Err(e) => self.refuse(node, &format!("header does not open: {e}")),
                    },
                    None => self.refuse(
                        node,
                        &format!(
                            "key {} version {} is not available",
                            h.key_name, h.key_version
                        ),
                    ),
                },
                Err(_) if io.clear_allowed() && marker.is_none() => Contents::Plain,
                Err(e) => self.refuse(node, &format!("no valid GuardFS header: {e}")),
            }
        };
        Ok(())
    }

    /// Drop the unwrapped data key if the file's header uses version
    /// `version` of the policy key `name` (after it is revoked): later reads and writes through
    /// open handles fail with EIO and a new open needs the key again.
    pub fn forget_key(&self, name: &str, version: u32) {
        let mut c = self.write_contents();
        if matches!(&*c, Contents::Encrypted(crypt, _)
            if crypt.header.key_name == name && crypt.header.key_version == version)
        {
            *c = Contents::Refused;
        }
    }

    fn refuse(&self, node: &Node, why: &str) -> Contents {
        error!("secfs: {}: I/O refused (EIO): {why}", node.display_path());
        Contents::Refused
    }

    fn read_contents(&self) -> std::sync::RwLockReadGuard<'_, Contents> {
        self.contents.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_contents(&self) -> std::sync::RwLockWriteGuard<'_, Contents> {
        self.contents.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the contents are passed through untransformed.
    pub fn is_plain(&self) -> bool {
        matches!(*self.read_contents(), Contents::Plain)
    }

    /// Write a fresh header (new key, new file id) over an empty file.
    fn init_header(&self, io: &Io<'_>) -> VfsResult<Contents> {
        let (node, fd, keys) = (io.node, io.fd, io.keys);
        // A `clear` GuardPoint never calls this for new files; an empty
        // file it finds with a marker is encrypted with the default mode.
        let mode = if io.mode == Mode::Clear {
            Mode::Xts
        } else {
            io.mode
        };
        let key = match io.new_key {
            NewKey::Default => keys.current(),
            NewKey::Named(n) => keys.latest(n).map(|(v, k)| (n.clone(), v, k)),
            // clear_key: new contents stay plaintext, without a header.
            NewKey::Clear => return Ok(Contents::Plain),
        };
        let (name, version, pk) = key.ok_or_else(|| {
            error!(
                "secfs: {}: the key for new files here is not available",
                node.display_path()
            );
            Errno::EIO
        })?;
        let (h, dk) = Header::create(mode, &name, version, &pk).map_err(|e| {
            error!(
                "secfs: {}: header creation failed: {e}",
                node.display_path()
            );
            Errno::EIO
        })?;
        let cipher = ContentCipher::for_header(&h, &dk).map_err(|_| Errno::EIO)?;
        // Marker first: a crash before the header leaves an empty file with
        // a marker, which reads as empty and gets a header on next write.
        sys::fsetxattr(fd, MODE_XATTR, mode.name().as_bytes())?;
        // The file is shorter than a header (empty, or cut short by a crash
        // before its header was written), so this leaves it exactly one
        // header long.
        pwrite_all(fd, &h.to_bytes(), 0)?;
        node.set_class(class_of_mode(mode));
        Ok(Contents::Encrypted(
            Arc::new(Crypt { header: h, cipher }),
            0,
        ))
    }

    /// Give a just-created empty file its header now, so that even an empty
    /// encrypted file carries one.
    pub fn create_header(&self, io: &Io<'_>) -> VfsResult<()> {
        let mode = io.mode;
        let mut c = self.write_contents();
        if mode == Mode::Clear {
            *c = Contents::Plain;
            return Ok(());
        }
        *c = self.init_header(io)?;
        Ok(())
    }

    /// The header of an encrypted file.
    pub fn header(&self) -> Option<Header> {
        match &*self.read_contents() {
            Contents::Encrypted(c, _) => Some(c.header.clone()),
            _ => None,
        }
    }

    pub fn read(&self, io: &Io<'_>, off: u64, out: &mut [u8]) -> VfsResult<usize> {
        let (node, fd) = (io.node, io.fd);
        let contents = self.read_contents();
        match &*contents {
            Contents::Plain => pread_full(fd, out, off),
            Contents::Empty => Ok(0),
            Contents::Refused | Contents::Unloaded => Err(Errno::EIO),
            Contents::Encrypted(c, size) => {
                let size = *size;
                if off >= size || out.is_empty() {
                    return Ok(0);
                }
                let end = size.min(off.saturating_add(out.len() as u64));
                let l = *c.layout();
                let (first, _) = l.unit_of(PlainOff(off));
                let (last, _) = l.unit_of(PlainOff(end - 1));
                let _g = self.ranges.lock(first.0, last.0, false);
                let run_start = l.unit_plain_start(first).0;
                let run_end = l.unit_plain_start(last.next()).0.min(size);
                let n = (end - off) as usize;
                let lower_len = l.run_lower_len((run_end - run_start) as usize);
                with_buf(&LOWER_BUF, lower_len, |lower| {
                    let got = pread_full(fd, lower, l.unit_lower_start(first).0)?;
                    lower[got..].fill(0);
                    if off == run_start && end == run_end {
                        decrypt(node, c, first, lower, &mut out[..n])?;
                    } else {
                        with_buf(&PLAIN_BUF, (run_end - run_start) as usize, |plain| {
                            decrypt(node, c, first, lower, plain)?;
                            let s = (off - run_start) as usize;
                            out[..n].copy_from_slice(&plain[s..s + n]);
                            Ok::<(), Errno>(())
                        })?;
                    }
                    Ok(n)
                })
            }
        }
    }

    pub fn write(&self, io: &Io<'_>, off: u64, data: &[u8]) -> VfsResult<usize> {
        let (node, fd) = (io.node, io.fd);
        if data.is_empty() {
            return Ok(0);
        }
        let end = off.checked_add(data.len() as u64).ok_or(Errno::EFBIG)?;
        if end > MAX_PLAIN_SIZE.0 {
            return Err(Errno::EFBIG);
        }
        {
            let contents = self.read_contents();
            match &*contents {
                Contents::Plain => return pwrite_all(fd, data, off).map(|()| data.len()),
                Contents::Refused | Contents::Unloaded => return Err(Errno::EIO),
                Contents::Encrypted(c, size) if end <= *size => {
                    let l = c.layout();
                    let (first, _) = l.unit_of(PlainOff(off));
                    let (last, _) = l.unit_of(PlainOff(end - 1));
                    let _g = self.ranges.lock(first.0, last.0, true);
                    rmw(node, c, fd, off, data, *size, *size)?;
                    return Ok(data.len());
                }
                _ => {}
            }
        }
        let mut contents = self.write_contents();
        if matches!(*contents, Contents::Empty) {
            *contents = self.init_header(io)?;
        }
        match &mut *contents {
            Contents::Plain => pwrite_all(fd, data, off).map(|()| data.len()),
            Contents::Encrypted(c, size) => {
                let old = *size;
                let new = old.max(end);
                grow_tail(node, c, fd, old, new, off)?;
                rmw(node, c, fd, off, data, old, new)?;
                *size = new;
                Ok(data.len())
            }
            _ => Err(Errno::EIO),
        }
    }

    /// Set the logical size.
    pub fn truncate(&self, io: &Io<'_>, new: u64) -> VfsResult<()> {
        self.resize(io, new, false)
    }

    /// Grow the logical size to at least `end`, never shrinking it: the size
    /// is checked under the contents lock, so a write that extended the file
    /// meanwhile is kept.
    fn grow_to(&self, io: &Io<'_>, end: u64) -> VfsResult<()> {
        self.resize(io, end, true)
    }

    fn resize(&self, io: &Io<'_>, new: u64, grow_only: bool) -> VfsResult<()> {
        let (node, fd) = (io.node, io.fd);
        if new > MAX_PLAIN_SIZE.0 {
            return Err(Errno::EFBIG);
        }
        let mut contents = self.write_contents();
        if grow_only && matches!(&*contents, Contents::Encrypted(_, size) if *size >= new) {
            return Ok(());
        }
        if matches!(*contents, Contents::Empty) {
            if new == 0 {
                return Ok(nix::unistd::ftruncate(fd, 0)?);
            }
            *contents = self.init_header(io)?;
        }
        if matches!(*contents, Contents::Refused) && new == 0 {
            // Emptying a refused (plaintext) file makes it a fresh file.
            nix::unistd::ftruncate(fd, 0)?;
            *contents = Contents::Empty;
            return Ok(());
        }
        match &mut *contents {
            Contents::Plain => {
                if grow_only && nix::sys::stat::fstat(fd)?.st_size as u64 >= new {
                    return Ok(());
                }
                Ok(nix::unistd::ftruncate(fd, new as i64)?)
            }
            Contents::Encrypted(c, size) => {
                let old = *size;
                let l = *c.layout();
                if new < old {
                    let (u, at) = l.unit_of(PlainOff(new));
                    if at != 0 {
                        // The new tail unit shrinks: re-encrypt it at its new length.
                        let len = l.unit_len_in_file(u, PlainOff(old));
                        with_buf(&PLAIN_BUF, len, |plain| {
                            read_unit(node, c, fd, u, plain)?;
                            write_units(c, fd, u, &plain[..at])
                        })?;
                    }
                } else if new > old {
                    grow_tail(node, c, fd, old, new, new)?;
                    write_new_tail(c, fd, old, new)?;
                }
                nix::unistd::ftruncate(fd, l.lower_size(PlainOff(new)).0 as i64)?;
                *size = new;
                Ok(())
            }
            _ => Err(Errno::EIO),
        }
    }

    /// fallocate(2): modes 0, KEEP_SIZE, PUNCH_HOLE|KEEP_SIZE, ZERO_RANGE.
    pub fn fallocate(&self, io: &Io<'_>, off: u64, len: u64, mode: i32) -> VfsResult<()> {
        let (node, fd) = (io.node, io.fd);
        use nix::fcntl::FallocateFlags as F;
        let flags = F::from_bits(mode).ok_or(Errno::EOPNOTSUPP)?;
        let end = off.checked_add(len).ok_or(Errno::EFBIG)?;
        if self.is_plain() {
            return Ok(nix::fcntl::fallocate(fd, flags, off as i64, len as i64)?);
        }
        let keep = flags.contains(F::FALLOC_FL_KEEP_SIZE);
        let zeroing = flags.intersects(F::FALLOC_FL_PUNCH_HOLE | F::FALLOC_FL_ZERO_RANGE);
        if flags
            .difference(F::FALLOC_FL_KEEP_SIZE | F::FALLOC_FL_PUNCH_HOLE | F::FALLOC_FL_ZERO_RANGE)
            != F::empty()
            || (flags.contains(F::FALLOC_FL_PUNCH_HOLE) && !keep)
        {
            return Err(Errno::EOPNOTSUPP);
        }
        if !keep {
            self.grow_to(io, end)?;
        }
        let contents = self.read_contents();
        let (c, size) = match &*contents {
            Contents::Encrypted(c, size) => (c, size),
            // An empty file under clear_key became plaintext while growing.
            Contents::Plain => {
                return Ok(nix::fcntl::fallocate(fd, flags, off as i64, len as i64)?);
            }
            _ => return Ok(()),
        };
        let size = *size;
        let l = *c.layout();
        if zeroing {
            let zend = end.min(size);
            if off >= zend {
                return Ok(());
            }
            let (first, _) = l.unit_of(PlainOff(off));
            let (last, _) = l.unit_of(PlainOff(zend - 1));
            let _g = self.ranges.lock(first.0, last.0, true);
            for span in l.spans(PlainOff(off), zend - off) {
                let start = l.unit_plain_start(span.unit).0 + span.start as u64;
                if span.is_whole(&l) {
                    let lo = l.unit_lower_start(span.unit).0;
                    nix::fcntl::fallocate(
                        fd,
                        F::FALLOC_FL_PUNCH_HOLE | F::FALLOC_FL_KEEP_SIZE,
                        lo as i64,
                        4096,
                    )?;
                } else {
                    let zeros = [0u8; 4096];
                    rmw(node, c, fd, start, &zeros[..span.len], size, size)?;
                }
            }
            return Ok(());
        }
        // Allocation only: reserve the lower blocks of the units in range.
        let (first, _) = l.unit_of(PlainOff(off));
        let (last, _) = l.unit_of(PlainOff(end.max(1) - 1));
        let lo = l.unit_lower_start(first).0;
        let hi = l
            .unit_lower_start(last.next())
            .0
            .min(l.lower_size(PlainOff(size.max(end))).0.max(lo));
        if hi > lo {
            nix::fcntl::fallocate(fd, F::FALLOC_FL_KEEP_SIZE, lo as i64, (hi - lo) as i64)?;
        }
        Ok(())
    }

    /// SEEK_DATA / SEEK_HOLE at unit granularity.
    pub fn lseek(&self, fd: BorrowedFd<'_>, off: u64, whence: Whence) -> VfsResult<u64> {
        use nix::unistd::Whence as W;
        let w = match whence {
            Whence::Data => W::SeekData,
            Whence::Hole => W::SeekHole,
        };
        let contents = self.read_contents();
        match &*contents {
            Contents::Encrypted(c, size) => {
                let size = *size;
                if off >= size {
                    return Err(Errno::ENXIO);
                }
                let l = c.layout();
                let (u, _) = l.unit_of(PlainOff(off));
                let lo = l.unit_lower_start(u).0;
                match nix::unistd::lseek(fd, lo as i64, w) {
                    Ok(r) => {
                        let r = r as u64;
                        let unit = UnitNo(r.saturating_sub(l.header_len()) / 4096);
                        let p = l.unit_plain_start(unit).0.max(off);
                        Ok(if whence == Whence::Hole {
                            p.min(size)
                        } else if p >= size {
                            return Err(Errno::ENXIO);
                        } else {
                            p
                        })
                    }
                    Err(nix::errno::Errno::ENXIO) if whence == Whence::Hole => Ok(size),
                    Err(e) => Err(e.into()),
                }
            }
            Contents::Empty => Err(Errno::ENXIO),
            _ => Ok(nix::unistd::lseek(fd, off as i64, w)? as u64),
        }
    }

    /// The logical size of an encrypted file.
    pub fn size(&self) -> Option<u64> {
        match &*self.read_contents() {
            Contents::Encrypted(_, s) => Some(*s),
            Contents::Empty => Some(0),
            _ => None,
        }
    }
}

fn decrypt(node: &Node, c: &Crypt, first: UnitNo, lower: &[u8], plain: &mut [u8]) -> VfsResult<()> {
    c.cipher.decrypt(first, lower, plain).map_err(|e| {
        error!("secfs: {}: {e} (EIO)", node.display_path());
        Errno::EIO
    })
}

/// Read and decrypt unit `u`; `plain.len()` is its length in the file.
fn read_unit(
    node: &Node,
    c: &Crypt,
    fd: BorrowedFd<'_>,
    u: UnitNo,
    plain: &mut [u8],
) -> VfsResult<()> {
    let l = c.layout();
    let ll = l.unit_lower_len(plain.len());
    let mut lower = [0u8; 4096];
    let got = pread_full(fd, &mut lower[..ll], l.unit_lower_start(u).0)?;
    lower[got..ll].fill(0);
    decrypt(node, c, u, &lower[..ll], plain)
}

/// Encrypt a run of plaintext units starting at `first` and write it.
fn write_units(c: &Crypt, fd: BorrowedFd<'_>, first: UnitNo, plain: &[u8]) -> VfsResult<()> {
    let l = c.layout();
    let ll = l.run_lower_len(plain.len());
    with_buf(&LOWER_BUF, ll, |lower| {
        c.cipher.encrypt(first, plain, lower).map_err(|e| {
            error!("secfs: encryption failed: {e}");
            Errno::EIO
        })?;
        pwrite_all(fd, lower, l.unit_lower_start(first).0)
    })
}

/// When a file grows from `old` to `new` and its old tail unit is partial
/// and lies before `write_off`'s unit, re-encrypt that unit at its new,
/// zero-padded length (length-preserving modes bind the length).
fn grow_tail(
    node: &Node,
    c: &Crypt,
    fd: BorrowedFd<'_>,
    old: u64,
    new: u64,
    write_off: u64,
) -> VfsResult<()> {
    let l = *c.layout();
    let (tail, at) = l.unit_of(PlainOff(old));
    if new <= old || at == 0 {
        return Ok(());
    }
    let (wu, _) = l.unit_of(PlainOff(write_off));
    if wu <= tail && write_off < new {
        return Ok(()); // the write itself rewrites the tail unit
    }
    let new_len = l.unit_len_in_file(tail, PlainOff(new));
    with_buf(&PLAIN_BUF, new_len, |plain| {
        read_unit(node, c, fd, tail, &mut plain[..at])?;
        plain[at..].fill(0);
        write_units(c, fd, tail, plain)
    })
}

/// When a file grows from `old` to `new` and its new tail unit is partial
/// and lies wholly beyond `old`, write that unit's encrypted zeros. A short
/// lower unit is never a hole (in `xts` and `cbc-cs1` a 1..=15-byte tail is
/// plaintext XOR a keystream, so all-zero lower bytes are a real value), so
/// it must not be left as the zeros `ftruncate` makes. Written before the
/// lower file is resized, so a crash in between leaves a zero-extended file.
fn write_new_tail(c: &Crypt, fd: BorrowedFd<'_>, old: u64, new: u64) -> VfsResult<()> {
    let l = *c.layout();
    let (last, at) = l.unit_of(PlainOff(new));
    let (old_tail, old_at) = l.unit_of(PlainOff(old));
    if at == 0 || (old_at != 0 && last == old_tail) {
        return Ok(()); // whole units only, or grow_tail rewrote this unit
    }
    write_units(c, fd, last, &[0u8; 4096][..at])
}

/// Read-modify-write the units covering `[off, off + data.len())` in a
/// file whose size goes from `old` to `new`.
fn rmw(
    node: &Node,
    c: &Crypt,
    fd: BorrowedFd<'_>,
    off: u64,
    data: &[u8],
    old: u64,
    new: u64,
) -> VfsResult<()> {
    let l = *c.layout();
    let end = off + data.len() as u64;
    let (first, _) = l.unit_of(PlainOff(off));
    let (last, _) = l.unit_of(PlainOff(end - 1));
    let run_start = l.unit_plain_start(first).0;
    let run_end = l.unit_plain_start(last.next()).0.min(new);
    let run_len = (run_end - run_start) as usize;
    with_buf(&PLAIN_BUF, run_len, |plain| {
        let edge = |u: UnitNo, plain: &mut [u8]| -> VfsResult<()> {
            let s = (l.unit_plain_start(u).0 - run_start) as usize;
            let new_len = l.unit_len_in_file(u, PlainOff(new));
            let old_len = l.unit_len_in_file(u, PlainOff(old));
            let unit = &mut plain[s..s + new_len];
            if old_len > 0 {
                read_unit(node, c, fd, u, &mut unit[..old_len])?;
            }
            unit[old_len..].fill(0);
            Ok(())
        };
        if off > run_start {
            edge(first, plain)?;
        }
        if end < run_end && (last != first || off == run_start) {
            edge(last, plain)?;
        }
        let s = (off - run_start) as usize;
        plain[s..s + data.len()].copy_from_slice(data);
        write_units(c, fd, first, plain)
    })
}

/// A per-file lock over unit ranges; shared holders may overlap.
#[derive(Debug, Default)]
pub struct RangeLocks {
    held: Mutex<Vec<(u64, u64, bool)>>,
    freed: Condvar,
}

pub struct RangeGuard<'a> {
    locks: &'a RangeLocks,
    range: (u64, u64, bool),
}

impl RangeLocks {
    pub fn lock(&self, first: u64, last: u64, exclusive: bool) -> RangeGuard<'_> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        while held
            .iter()
            .any(|&(a, b, x)| a <= last && first <= b && (x || exclusive))
        {
            held = self.freed.wait(held).unwrap_or_else(|e| e.into_inner());
        }
        held.push((first, last, exclusive));
        RangeGuard {
            locks: self,
            range: (first, last, exclusive),
        }
    }
}

impl Drop for RangeGuard<'_> {
    fn drop(&mut self) {
        let mut held = self.locks.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = held.iter().position(|r| *r == self.range) {
            held.swap_remove(i);
        }
        drop(held);
        self.locks.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_classes_from_markers_and_header_bytes() {
        for mode in [Mode::Xts, Mode::CbcCs1, Mode::Gcm] {
            let class = class_of_mode(mode);
            assert_eq!(mode_of_class(class), Some(mode));
            assert_eq!(marker_class(mode.name().as_bytes()), Some(class));
            let lower = 3 * 4096 + 1000;
            assert_eq!(
                logical_size(class, lower),
                Layout::of(mode).plain_size(LowerOff(lower)).0
            );
            assert!(logical_size(class, lower) < lower);
            let pk = guardfs_crypto::PolicyKey::from_bytes([7; 32]);
            let (h, _) = Header::create(mode, "k", 1, &pk).unwrap();
            let bytes = h.to_bytes();
            assert_eq!(class_of_header_bytes(&bytes), class);
            assert_eq!(class_of_header_bytes(&bytes[..HEADER_PEEK]), class);
            // Too short to tell the mode.
            assert_eq!(
                class_of_header_bytes(&bytes[..HEADER_PEEK - 1]),
                Class::Plain
            );
        }
        assert_eq!(marker_class(b"clear"), Some(Class::Plain));
        assert_eq!(marker_class(b"rot13"), None);
        assert_eq!(marker_class(&[0xff]), None);
        for c in [Class::Plain, Class::Unknown] {
            assert_eq!(logical_size(c, 12345), 12345);
        }
        assert_eq!(class_of_header_bytes(&[0u8; HEADER_LEN]), Class::Plain);
    }
}
