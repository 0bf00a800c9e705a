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
use std::ops::Range;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::{Arc, Condvar, Mutex, RwLock};

use guardfs_crypto::offsets::MAX_PLAIN_SIZE;
use guardfs_crypto::{ContentCipher, HEADER_LEN, Layout, LowerOff, PlainOff, UnitNo};
use log::{error, info, warn};

use crate::stack::access::RuleKey;
use crate::stack::keys::KeySource;
use crate::stack::nodes::{Class, Node};
use crate::sys;
use crate::vfs::{Errno, VfsResult, Whence};

pub use super::tail::fuzz_tail_record;
use super::tail::{Stop, finish_tail, shrink_tail};
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
pub(super) fn class_of_mode(mode: Mode) -> Class {
    match mode {
        Mode::Xts => Class::Xts,
        Mode::CbcCs1 => Class::CbcCs1,
        Mode::Gcm => Class::Gcm,
        Mode::Clear => Class::Plain,
    }
}

/// The encrypted mode a class names, if any.
pub(super) fn mode_of_class(class: Class) -> Option<Mode> {
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
/// The xattr that journals a truncate-down's in-place rewrite of the new
/// tail unit (the "tail record" of `crypto/FORMAT.md`; see `TailRecord`).
pub const TAIL_XATTR: &CStr = c"trusted.guardfs.tail";

/// A file's header and cipher.
#[derive(Debug)]
pub struct Crypt {
    pub header: Header,
    pub cipher: ContentCipher,
    /// While an online rekey of the file runs (`rekey.rs`): the header and
    /// cipher it moves to, and how far it got.
    pub next: std::sync::OnceLock<Next>,
}

/// The new side of an online rekey: units below `done` are encrypted with
/// `cipher` (under `header`), the others still with the file's own.
#[derive(Debug)]
pub struct Next {
    pub header: Header,
    pub cipher: ContentCipher,
    /// Units `0..done` are in the new key. Changed only while the unit
    /// range it moves over is locked exclusively, so a reader or writer
    /// holding any range reads a value that is right for its units.
    pub done: std::sync::atomic::AtomicU64,
}

impl Crypt {
    pub fn new(header: Header, cipher: ContentCipher) -> Crypt {
        Crypt {
            header,
            cipher,
            next: std::sync::OnceLock::new(),
        }
    }

    pub(super) fn layout(&self) -> &Layout {
        self.cipher.layout()
    }

    /// The cipher for unit `u`, and for how many units from `u` on it
    /// stays the one (`u64::MAX`: all).
    fn cipher_at(&self, u: UnitNo) -> (&ContentCipher, u64) {
        match self.next.get() {
            Some(n) => {
                let done = n.done.load(std::sync::atomic::Ordering::Acquire);
                if u.0 < done {
                    (&n.cipher, done - u.0)
                } else {
                    (&self.cipher, u64::MAX)
                }
            }
            None => (&self.cipher, u64::MAX),
        }
    }

    /// A run of units from `first` (`plain_len` plaintext bytes in
    /// `lower_len` lower bytes) in pieces of one cipher each: one piece,
    /// or two where an online rekey's mark falls inside the run (the new
    /// cipher below it, the file's own from it on). Each piece: its
    /// cipher, first unit, and its ranges in the plaintext and lower runs.
    #[allow(clippy::type_complexity)]
    fn pieces(
        &self,
        first: UnitNo,
        plain_len: usize,
        lower_len: usize,
    ) -> impl Iterator<Item = (&ContentCipher, UnitNo, Range<usize>, Range<usize>)> {
        let p = self.layout().unit_plain_len();
        let (cipher, n) = self.cipher_at(first);
        let cut = (n < plain_len.div_ceil(p) as u64).then_some(n as usize);
        let (hp, hl) = cut.map_or((plain_len, lower_len), |n| (n * p, n * 4096));
        let tail = cut.map(|n| {
            (
                &self.cipher,
                UnitNo(first.0 + n as u64),
                hp..plain_len,
                hl..lower_len,
            )
        });
        std::iter::once((cipher, first, 0..hp, 0..hl)).chain(tail)
    }

    /// Whether `name` version `version` is one of the keys the contents
    /// are read with.
    fn uses_key(&self, name: &str, version: u32) -> bool {
        let is = |h: &Header| h.key_name == name && h.key_version == version;
        is(&self.header) || self.next.get().is_some_and(|n| is(&n.header))
    }
}

/// What the lower file holds.
#[derive(Debug, Default, Clone)]
pub(super) enum Contents {
    #[default]
    Unloaded,
    /// Shown and written as is: the key rule is `clear_key`, or the
    /// GuardPoint is `clear` and no key rule names a key.
    Plain,
    /// Encrypted, with its logical size.
    Encrypted(Arc<Crypt>, u64),
    /// Empty and headerless in an encrypted GuardPoint: gets a header on
    /// first write.
    Empty,
    /// Bytes that do not fit the key rule (no header, a header for another
    /// key, a key version not available) or a damaged header: opens fail
    /// with EIO (but for emptying it), `stat` shows the lower size.
    Refused,
}

/// What an operation on a file's contents needs: the node (for log lines),
/// an open lower fd, the GuardPoint's keys and its mode for new files.
pub struct Io<'a> {
    pub node: &'a Node,
    pub fd: BorrowedFd<'a>,
    pub keys: &'a dyn KeySource,
    pub mode: Mode,
    /// The key rule's key at this file's path: how its contents are read,
    /// and what new contents are encrypted with.
    pub rule: &'a RuleKey,
    /// A directory fd on `/proc/self/fd`, to reopen `fd` for writing when
    /// an interrupted truncate must be finished through a read-only open.
    pub proc_fd: BorrowedFd<'a>,
    /// The GuardPoint's lower root (where transformation side files are).
    pub root: BorrowedFd<'a>,
}

impl Io<'_> {
    /// Whether the lower bytes are served as they are (see [`verbatim`]).
    fn verbatim(&self) -> bool {
        verbatim(self.rule, self.mode, self.keys)
    }

    /// The name of the key whose headers this file may carry (any version
    /// of it); `None` when no such key is held.
    fn required_key(&self) -> Option<String> {
        match self.rule {
            RuleKey::Named(n) => Some(n.clone()),
            RuleKey::Default => self.keys.current().map(|(n, _, _)| n),
            RuleKey::Clear | RuleKey::Transform(_) => None,
        }
    }

    /// The keys whose headers this file may carry, and whether it may be
    /// a file stored as it is (a key rule under transformation from or to
    /// `clear_key`).
    fn accepted(&self) -> (Vec<String>, bool) {
        match self.rule {
            RuleKey::Transform(t) => {
                let mut names = Vec::new();
                let mut clear = false;
                for k in [&t.0, &t.1] {
                    match k {
                        RuleKey::Named(n) if !self.keys.is_clear(n) => names.push(n.clone()),
                        _ => clear = true,
                    }
                }
                (names, clear)
            }
            _ => (self.required_key().into_iter().collect(), false),
        }
    }

    /// The key new contents are encrypted with, and their mode: `None`
    /// where new contents are stored as they are.
    pub(crate) fn key_for_new(&self) -> VfsResult<Option<NewKey>> {
        let gp_mode = if self.mode == Mode::Clear {
            Mode::Xts
        } else {
            self.mode
        };
        let target = match self.rule {
            RuleKey::Transform(t) => &t.1,
            r => r,
        };
        let key = match target {
            RuleKey::Default if self.mode == Mode::Clear => return Ok(None),
            RuleKey::Default => self.keys.current(),
            RuleKey::Named(n) if self.keys.is_clear(n) => return Ok(None),
            RuleKey::Named(n) => self.keys.latest(n).map(|(v, k)| (n.clone(), v, k)),
            RuleKey::Clear | RuleKey::Transform(_) => return Ok(None),
        };
        let (name, version, pk) = key.ok_or_else(|| {
            error!(
                "secfs: {}: the key for new files here is not available",
                self.node.display_path()
            );
            Errno::EIO
        })?;
        // A transformation key's own mode decides (modes convert through
        // a transformation); otherwise the GuardPoint's.
        let mode = match self.rule {
            RuleKey::Transform(_) => self
                .keys
                .mode(&name)
                .filter(|m| *m != Mode::Clear)
                .unwrap_or(gp_mode),
            _ => gp_mode,
        };
        Ok(Some((name, version, pk, mode)))
    }
}

/// Whether files under the key rule `rule` in a GuardPoint of mode `mode`
/// are served and stored exactly as the lower bytes are: under
/// `clear_key` or a key of mode `clear`, and under the GuardPoint's own key
/// when the GuardPoint is `clear`. Whatever those bytes look like (a
/// header included): the key rule decides how a file is read, never the
/// file.
pub fn verbatim(rule: &RuleKey, mode: Mode, keys: &dyn KeySource) -> bool {
    match rule {
        RuleKey::Clear => true,
        RuleKey::Default => mode == Mode::Clear,
        RuleKey::Named(n) => keys.is_clear(n),
        // Decided per file, by its header.
        RuleKey::Transform(_) => false,
    }
}

/// The key new contents are encrypted with: name, version, key, mode.
pub(crate) type NewKey = (String, u32, Arc<guardfs_crypto::PolicyKey>, Mode);

/// What [`FileState::load`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Load {
    /// The contents are ready to serve under the key rule asked for.
    Ready,
    /// The lower file does not fit the key rule, or is damaged: opens get
    /// EIO. `found` names the key its header carries (`none`: no valid
    /// header); `why` says what is wrong.
    Refused { found: String, why: String },
    /// The file is loaded under another key rule (the same lower file
    /// reached through another path: a hard link, or the key rules
    /// changed). See [`FileState::reset_if`].
    OtherRule,
}

#[derive(Debug, Default)]
pub struct FileState {
    contents: RwLock<Contents>,
    /// The key rule the contents were loaded under (`None`: not loaded).
    /// Written only while `contents` is held for writing.
    rule: Mutex<Option<RuleKey>>,
    pub(super) ranges: RangeLocks,
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
/// `fd` opened for writing: itself, or reopened through `/proc/self/fd`.
pub(super) fn writable(
    fd: BorrowedFd<'_>,
    proc_fd: BorrowedFd<'_>,
) -> nix::Result<Option<std::os::fd::OwnedFd>> {
    match nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL) {
        Ok(fl) if fl & libc::O_ACCMODE != libc::O_RDONLY => Ok(None),
        _ => nix::fcntl::openat(
            proc_fd,
            fd.as_raw_fd().to_string().as_str(),
            nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map(Some),
    }
}

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

pub(super) fn lower_size(fd: BorrowedFd<'_>) -> VfsResult<u64> {
    Ok(nix::sys::stat::fstat(fd)?.st_size as u64)
}

/// Read the mode marker of an open lower file.
pub fn read_marker(fd: BorrowedFd<'_>) -> Option<Mode> {
    let v = sys::fgetxattr(fd, MODE_XATTR).ok()?;
    std::str::from_utf8(&v).ok()?.parse().ok()
}

impl FileState {
    /// Decide what the lower file holds under the key rule `io.rule`, once
    /// per inode and key rule. A file refused before is looked at again
    /// (the key it needs may have arrived since: vmd pushes keys after a
    /// restart); a file loaded under another key rule is left as it is
    /// ([`Load::OtherRule`]).
    pub fn load(&self, io: &Io<'_>) -> VfsResult<Load> {
        let ready = |c: &Contents, rule: &Option<RuleKey>| match (c, rule) {
            (Contents::Unloaded, _) => None,
            (_, Some(r)) if r != io.rule => Some(Load::OtherRule),
            (Contents::Refused, _) => None,
            _ => Some(Load::Ready),
        };
        {
            let c = self.read_contents();
            if let Some(l) = ready(&c, &self.loaded_rule()) {
                return Ok(l);
            }
        }
        let mut c = self.write_contents();
        if let Some(l) = ready(&c, &self.loaded_rule()) {
            return Ok(l);
        }
        self.load_locked(io, &mut c)
    }

    /// The key rule the contents were loaded under, if any.
    pub fn loaded_rule(&self) -> Option<RuleKey> {
        self.rule.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_rule(&self, rule: Option<RuleKey>) {
        *self.rule.lock().unwrap_or_else(|e| e.into_inner()) = rule;
    }

    /// Forget what was loaded, if `unused()` says (while the contents are
    /// held, so no load or open can slip in between) that nothing relies on
    /// it; whether it was forgotten. For a file to be read under another
    /// key rule than the one it was loaded under.
    pub fn reset_if(&self, unused: impl FnOnce() -> bool) -> bool {
        let mut c = self.write_contents();
        if !unused() {
            return false;
        }
        *c = Contents::Unloaded;
        self.set_rule(None);
        true
    }

    /// [`FileState::load`] with the contents already locked for writing.
    pub(super) fn load_locked(&self, io: &Io<'_>, c: &mut Contents) -> VfsResult<Load> {
        self.set_rule(Some(io.rule.clone()));
        // A transformation a crash interrupted is finished first, whatever
        // the key rule says now (the record is secfs's own, never a user's).
        if let Err(why) = crate::stack::xform::finish_for_load(io) {
            *c = self.refuse(io.node, &why);
            return Ok(Load::Refused {
                found: "none".into(),
                why,
            });
        }
        if io.verbatim() {
            // Whatever the bytes are, and whatever records or markers they
            // carry: nothing is interpreted, nothing is rewritten.
            *c = Contents::Plain;
            return Ok(Load::Ready);
        }
        let (node, fd, keys) = (io.node, io.fd, io.keys);
        let refuse = |c: &mut Contents, found: &str, why: String| {
            *c = self.refuse(node, &why);
            Ok(Load::Refused {
                found: found.to_owned(),
                why,
            })
        };
        // Before the size is read: a truncate a crash interrupted is
        // finished first (or the file refused if its record does not fit).
        match finish_tail(fd, io.proc_fd) {
            Ok(false) => {}
            Ok(true) => info!(
                "secfs: {}: finished an interrupted truncate",
                node.display_path()
            ),
            Err(why) => return refuse(c, "none", why),
        }
        // An online rekey a crash interrupted: its step redone (or the
        // new header put in place if every unit is new) before anything
        // is read.
        let pending = match crate::stack::rekey::recover(io) {
            Ok(p) => p,
            Err(why) => return refuse(c, "none", why),
        };
        let size = lower_size(fd)?;
        let marker = read_marker(fd);
        // Under a key rule being transformed from or to clear_key, a file
        // whose header does not open under one of the rule's keys is one
        // stored as it is (the authenticated header decides, never a guess).
        let (required, clear_ok) = io.accepted();
        if size < HEADER_LEN as u64 {
            // Empty, or cut short by a crash before its header was written
            // (the marker goes first): gets a header with the rule's key on
            // its first write, which covers whatever short bytes are there.
            if size == 0 || marker.is_some() {
                *c = if marker.is_none() && io.key_for_new()?.is_none() {
                    Contents::Plain
                } else {
                    Contents::Empty
                };
                return Ok(Load::Ready);
            }
            if clear_ok {
                *c = Contents::Plain;
                return Ok(Load::Ready);
            }
            return refuse(
                c,
                "none",
                "no header (a clear file where the key rule names a key)".into(),
            );
        }
        let mut hdr = [0u8; HEADER_LEN];
        let n = pread_full(fd, &mut hdr, 0)?;
        let h = match Header::parse(&hdr[..n]) {
            Ok(h) if !clear_ok || required.contains(&h.key_name) => h,
            // Stored as it is, whatever its first bytes look like: sized
            // as such from now on (not by the header it seems to carry).
            Ok(_) | Err(_) if clear_ok => {
                node.set_class(Class::Plain);
                *c = Contents::Plain;
                return Ok(Load::Ready);
            }
            Ok(h) => h,
            Err(e) => return refuse(c, "none", format!("no valid GuardFS header: {e}")),
        };
        if required.is_empty() {
            return refuse(
                c,
                &h.key_name,
                "the key for this GuardPoint is not available".into(),
            );
        }
        if !required.contains(&h.key_name) {
            return refuse(
                c,
                &h.key_name,
                format!(
                    "header names key {}, the key rule requires {}",
                    h.key_name,
                    required.join(" or ")
                ),
            );
        }
        let Some(pk) = keys.get(&h.key_name, h.key_version) else {
            let why = format!(
                "key {} version {} is not available",
                h.key_name, h.key_version
            );
            return refuse(c, &h.key_name, why);
        };
        let dk = match h.unwrap_key(&pk) {
            Ok(dk) => dk,
            Err(e) => return refuse(c, &h.key_name, format!("header does not open: {e}")),
        };
        let cipher = match ContentCipher::for_header(&h, &dk) {
            Ok(cipher) => cipher,
            Err(e) => return refuse(c, &h.key_name, format!("cipher setup failed: {e}")),
        };
        let plain = cipher.layout().plain_size(LowerOff(size)).0;
        if marker != Some(h.mode) {
            // Restored without its marker: put it back so stat shows the
            // logical size.
            if let Err(e) = sys::fsetxattr(fd, MODE_XATTR, h.mode.name().as_bytes()) {
                warn!("{}: cannot set mode marker: {e:?}", node.display_path());
            }
        }
        node.set_class(class_of_mode(h.mode));
        let crypt = Crypt::new(h, cipher);
        if let Some(p) = pending
            && let Err(why) = crate::stack::rekey::attach(io, &crypt, p, &required)
        {
            return refuse(c, &crypt.header.key_name, why);
        }
        *c = Contents::Encrypted(Arc::new(crypt), plain);
        Ok(Load::Ready)
    }

    /// Drop the unwrapped data key if the file's header uses version
    /// `version` of the policy key `name` (after it is revoked): later reads and writes through
    /// open handles fail with EIO and a new open needs the key again.
    pub fn forget_key(&self, name: &str, version: u32) {
        let mut c = self.write_contents();
        if matches!(&*c, Contents::Encrypted(crypt, _) if crypt.uses_key(name, version)) {
            *c = Contents::Refused;
        }
    }

    fn refuse(&self, node: &Node, why: &str) -> Contents {
        error!("secfs: {}: I/O refused (EIO): {why}", node.display_path());
        Contents::Refused
    }

    pub(super) fn read_contents(&self) -> std::sync::RwLockReadGuard<'_, Contents> {
        self.contents.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn write_contents(&self) -> std::sync::RwLockWriteGuard<'_, Contents> {
        self.contents.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the contents are passed through untransformed.
    pub fn is_plain(&self) -> bool {
        matches!(*self.read_contents(), Contents::Plain)
    }

    /// Write a fresh header (new key, new file id) over an empty file.
    fn init_header(&self, io: &Io<'_>) -> VfsResult<Contents> {
        let (node, fd) = (io.node, io.fd);
        // Only files the key rule has encrypted get here; in a `clear`
        // GuardPoint that is a key rule naming a key, and its files use
        // the default mode. clear_key: new contents stay plaintext,
        // without a header.
        let Some((name, version, pk, mode)) = io.key_for_new()? else {
            return Ok(Contents::Plain);
        };
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
        Ok(Contents::Encrypted(Arc::new(Crypt::new(h, cipher)), 0))
    }

    /// Give a just-created empty file what its key rule asks for now: a
    /// header with the rule's key (so even an empty encrypted file carries
    /// one), or nothing where files are stored as they are.
    pub fn create_header(&self, io: &Io<'_>) -> VfsResult<()> {
        let mut c = self.write_contents();
        self.set_rule(Some(io.rule.clone()));
        *c = if io.verbatim() {
            Contents::Plain
        } else {
            self.init_header(io)?
        };
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
        self.write_locked(io, &mut contents, off, data)
    }

    /// [`FileState::write`] with the contents held for writing.
    fn write_locked(
        &self,
        io: &Io<'_>,
        contents: &mut Contents,
        off: u64,
        data: &[u8],
    ) -> VfsResult<usize> {
        let (node, fd) = (io.node, io.fd);
        let end = off.checked_add(data.len() as u64).ok_or(Errno::EFBIG)?;
        if end > MAX_PLAIN_SIZE.0 {
            return Err(Errno::EFBIG);
        }
        if matches!(*contents, Contents::Empty) {
            *contents = self.init_header(io)?;
        }
        match contents {
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

    /// A write that must land at the end of the file (a handle that may
    /// only append): written, and its length returned, only if `off` is
    /// the current size, checked and written under the size lock so no
    /// other write moves the end in between; else `None`, nothing written.
    pub fn append(&self, io: &Io<'_>, off: u64, data: &[u8]) -> VfsResult<Option<usize>> {
        let mut contents = self.write_contents();
        let size = match &*contents {
            Contents::Encrypted(_, size) => *size,
            Contents::Empty => 0,
            Contents::Plain => lower_size(io.fd)?,
            Contents::Refused | Contents::Unloaded => return Err(Errno::EIO),
        };
        if off != size {
            return Ok(None);
        }
        self.write_locked(io, &mut contents, off, data).map(Some)
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
            // Emptying a refused (plaintext) file makes it a fresh file,
            // and drops a tail record that did not fit it.
            // The record first: a crash after the cut must not leave an
            // empty file with a record that refuses it.
            // So does an online rekey's record (and its journal): it
            // describes contents that are gone.
            for x in [TAIL_XATTR, crate::stack::rekey::REKEY_XATTR] {
                match sys::fremovexattr(fd, x) {
                    Ok(()) => {}
                    Err(e) if e == Errno::ENODATA || e == Errno(libc::ENOTSUP) => {}
                    Err(e) => return Err(e),
                }
            }
            crate::stack::rekey::drop_journal(io);
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
                if new < old && l.unit_of(PlainOff(new)).1 != 0 {
                    // The new tail unit shrinks: re-encrypt it at its new
                    // length, journaled (see `shrink_tail`).
                    let c = c.clone();
                    if let Err(e) = shrink(node, &c, fd, old, new, Stop::Never) {
                        // The lower file may be half way (a record left to
                        // redo): decide it again from disk now, so open
                        // handles go on with what the lower file holds.
                        if self.load_locked(io, &mut contents).is_err() {
                            *contents = Contents::Unloaded;
                        }
                        return Err(e);
                    }
                } else {
                    // Truncate-up is not journaled: every step leaves a
                    // consistent file. `grow_tail` rewrites the old partial
                    // tail at its longer length in one pwrite, which itself
                    // extends the lower file to exactly that unit's new end;
                    // `write_new_tail` writes the new partial tail (encrypted
                    // zeros) beyond it, the gap reading as holes, and again
                    // extends the file to exactly its end; the `ftruncate`
                    // then only adds whole-unit holes or does nothing. After
                    // each step every unit is as long as the length its
                    // ciphertext was made for, and the file holds the old
                    // contents plus zeros. Writes are the same: `rmw` writes
                    // each changed run (the tail last) in one pwrite whose
                    // end is the file's new end. (A single pwrite over a
                    // unit is whole or absent after a process crash; under
                    // power loss, an in-place unit rewrite that was not
                    // fsynced can reach the disk torn, like any in-place
                    // block write; that is not what this journal is for.)
                    // A cut at a unit boundary rewrites nothing and is atomic.
                    if new > old {
                        grow_tail(node, c, fd, old, new, new)?;
                        write_new_tail(c, fd, old, new)?;
                    }
                    nix::unistd::ftruncate(fd, l.lower_size(PlainOff(new)).0 as i64)?;
                }
                if let Contents::Encrypted(_, size) = &mut *contents {
                    *size = new;
                }
                Ok(())
            }
            _ => Err(Errno::EIO),
        }
    }

    /// Test hook: a truncate-down to `new` (ending inside a unit) that
    /// stops, as if the daemon were killed, right after the in-place write
    /// of the new tail: the tail record is set and the lower file still
    /// has its old size. The contents state is dropped (as by the crash).
    /// Returns whether a record was written. Not for use outside tests.
    #[doc(hidden)]
    pub fn truncate_interrupted_for_test(&self, io: &Io<'_>, new: u64) -> VfsResult<bool> {
        let mut contents = self.write_contents();
        let r = match &*contents {
            Contents::Encrypted(c, size)
                if new < *size && c.layout().unit_of(PlainOff(new)).1 != 0 =>
            {
                shrink(io.node, c, io.fd, *size, new, Stop::AfterWrite)
            }
            _ => Err(Errno::EINVAL),
        };
        *contents = Contents::Unloaded;
        r
    }

    /// Finish a truncate a crash interrupted before the file's size is
    /// shown (a `stat` of a file not loaded yet); `fd` is the lower file
    /// opened for writing. Returns whether one was finished, or may have
    /// been by a load that held the contents meanwhile (the caller stats
    /// the lower file again). A record that does not fit is left for
    /// [`load`](Self::load) to report and refuse.
    pub fn finish_interrupted_truncate(
        &self,
        node: &Node,
        fd: BorrowedFd<'_>,
        proc_fd: BorrowedFd<'_>,
    ) -> bool {
        // Waits for a load or resize in progress (they finish the record
        // themselves); the caller then looks at the lower file again.
        let c = self.write_contents();
        if !matches!(*c, Contents::Unloaded) {
            return true;
        }
        let done = matches!(finish_tail(fd, proc_fd), Ok(true));
        if done {
            info!(
                "secfs: {}: finished an interrupted truncate",
                node.display_path()
            );
        }
        done
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

pub(super) fn decrypt(
    node: &Node,
    c: &Crypt,
    first: UnitNo,
    lower: &[u8],
    plain: &mut [u8],
) -> VfsResult<()> {
    let fail = |e: guardfs_crypto::ContentError| {
        error!("secfs: {}: {e} (EIO)", node.display_path());
        Errno::EIO
    };
    // During an online rekey a run may straddle the point it reached.
    for (cipher, u, pr, lr) in c.pieces(first, plain.len(), lower.len()) {
        cipher
            .decrypt(u, &lower[lr], &mut plain[pr])
            .map_err(fail)?;
    }
    Ok(())
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

/// Encrypt a run of plaintext units starting at `first` into `lower`.
pub(super) fn encrypt(c: &Crypt, first: UnitNo, plain: &[u8], lower: &mut [u8]) -> VfsResult<()> {
    let fail = |e: guardfs_crypto::ContentError| {
        error!("secfs: encryption failed: {e}");
        Errno::EIO
    };
    for (cipher, u, pr, lr) in c.pieces(first, plain.len(), lower.len()) {
        cipher
            .encrypt(u, &plain[pr], &mut lower[lr])
            .map_err(fail)?;
    }
    Ok(())
}

/// Encrypt a run of plaintext units starting at `first` and write it.
fn write_units(c: &Crypt, fd: BorrowedFd<'_>, first: UnitNo, plain: &[u8]) -> VfsResult<()> {
    let l = c.layout();
    let ll = l.run_lower_len(plain.len());
    with_buf(&LOWER_BUF, ll, |lower| {
        encrypt(c, first, plain, lower)?;
        pwrite_all(fd, lower, l.unit_lower_start(first).0)
    })
}

/// Truncate a file from `old` down to `new`, a size that ends inside a
/// unit: re-encrypt that unit at its new length and cut the lower file,
/// journaled by [`shrink_tail`]. Returns whether a record was written.
fn shrink(
    node: &Node,
    c: &Crypt,
    fd: BorrowedFd<'_>,
    old: u64,
    new: u64,
    stop: Stop,
) -> VfsResult<bool> {
    let l = *c.layout();
    let (u, at) = l.unit_of(PlainOff(new));
    let target = l.lower_size(PlainOff(new)).0;
    let len = l.unit_len_in_file(u, PlainOff(old));
    with_buf(&PLAIN_BUF, len, |plain| {
        read_unit(node, c, fd, u, plain)?;
        with_buf(&LOWER_BUF, l.unit_lower_len(at), |lower| {
            encrypt(c, u, &plain[..at], lower)?;
            shrink_tail(node, fd, &l, u, lower, target, stop)
        })
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
