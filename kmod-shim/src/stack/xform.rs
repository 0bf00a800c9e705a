//! Transforming one file's contents to another key, mode or version
//! (`dataxform`): encrypt a clear file, rekey, decrypt, convert modes,
//! crash-safe at every instant. See `TRANSFORM.md` at the top of the
//! repository for the on-disk protocol and why it is safe.
//!
//! Owns: the side file (the new lower bytes, written and made durable
//! first, in `.guardfs-xform/` under the GuardPoint's lower root, which
//! secfs hides), the intent record (`trusted.guardfs.xform` on the file,
//! set once the side file is durable), the copy back in place, and
//! recovery of an interrupted copy back. The file keeps its inode: hard
//! links, owner, mode, ACLs, other xattrs and open handles stay as they
//! are, and the plaintext never changes, so no cache goes stale.
//!
//! Must not: decide who may transform (the stack checks `key_op`), or
//! touch a file while anything could see it half done: all of it runs with
//! the file's contents locked for writing.

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use guardfs_crypto::{ContentCipher, HEADER_LEN, Header, Layout, Mode, PlainOff, UnitNo};
use log::{error, info};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode as Perm;

use crate::stack::file::{
    self, Contents, Crypt, FileState, Io, Load, MODE_XATTR, class_of_mode, lower_size, pread_full,
    pwrite_all,
};
use crate::stack::holes;
use crate::stack::nodes::Class;
use crate::sys;
use crate::vfs::{Errno, VfsResult};

/// The directory under the lower root that holds side files. Hidden from
/// and refused to every user of the GuardPoint.
pub const SIDE_DIR: &str = ".guardfs-xform";
/// The intent record: present from the moment the side file is durable
/// until the file holds the side file's bytes durably.
pub const XFORM_XATTR: &CStr = c"trusted.guardfs.xform";
const MAGIC: &[u8; 4] = b"GFxf";
/// Plaintext moved per step (a whole number of units in every mode).
const CHUNK_UNITS: usize = 256;

/// What to do with one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// To the key rule's transformation key (`dataxform --rekey`).
    Rekey,
    /// To the newest version of the file's own key, new data key.
    Deep,
    /// To the newest version of the file's own key, same data key: only
    /// the header is rewrapped.
    Shallow,
}

/// What happened to one file (the ioctl's status code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    /// Transformed.
    Done = 0,
    /// Already in the target key, version and mode: left alone.
    Current = 1,
    /// Open through a handle that bypasses secfs (passthrough): skipped.
    InUse = 2,
    /// Its bytes do not fit the key rule (or are damaged): skipped.
    Refused = 3,
    /// `--rekey` where no data transformation rule covers the file.
    NoRule = 4,
    /// Not enough free space for the side file: skipped, nothing changed.
    NoSpace = 5,
    /// Not a regular file.
    NotRegular = 6,
    /// Stored as it is, and the operation keeps it so (shallow or deep
    /// rekey of a clear file).
    Clear = 7,
    /// `--scan`: would be transformed (needs `lower_bytes` free).
    WouldChange = 8,
    /// The key needed is not available.
    NoKey = 9,
    /// Rekeyed online, step by step ([`online_step`]): the file is large
    /// or open, or an online rekey of it is under way. In a step's reply:
    /// not finished yet (`lower_bytes` = plaintext bytes already new).
    Online = 10,
}

/// The outcome for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    /// The key (`name:version:mode`, `clear`, `empty`) before and after.
    pub from: String,
    pub to: String,
    /// Logical size of the file.
    pub size: u64,
    /// Bytes the side file needs (free space asked for).
    pub lower_bytes: u64,
    /// Why it was skipped, for the report.
    pub why: String,
}

impl Outcome {
    fn skip(status: Status, from: String, why: impl Into<String>) -> Outcome {
        Outcome {
            status,
            from,
            to: String::new(),
            size: 0,
            lower_bytes: 0,
            why: why.into(),
        }
    }
}

/// The target of a transformation.
enum Target {
    Clear,
    Encrypted(Box<Crypt>),
}

/// Where the new bytes of a file are while it is being transformed.
#[derive(Debug, PartialEq, Eq)]
enum Source {
    /// A side file's name in [`SIDE_DIR`].
    Side(String),
    /// In the record itself, followed by zeros up to `side_len` (a
    /// shallow rekey: the new header's non-zero bytes).
    Inline(Vec<u8>),
}

/// Side files a batch in this process is using right now: `cleanup`
/// leaves them alone, whoever asks (two `dataxform` runs on one
/// GuardPoint, or a cleanup racing a batch).
static IN_FLIGHT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// A side file's name registered in [`IN_FLIGHT`] while this lives.
pub(super) struct InFlight(String);

impl InFlight {
    pub(super) fn new(name: &str) -> InFlight {
        IN_FLIGHT
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.to_owned());
        InFlight(name.to_owned())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut v = IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = v.iter().position(|n| *n == self.0) {
            v.swap_remove(i);
        }
    }
}

fn in_flight(name: &[u8]) -> bool {
    IN_FLIGHT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|n| n.as_bytes() == name)
}

/// Most bytes a record holds inline (a header's non-reserved part).
const MAX_INLINE: usize = 256;

/// The intent record, as stored.
#[derive(Debug, PartialEq, Eq)]
struct Intent {
    /// Bytes `0..side_len` of the file are the new bytes.
    side_len: u64,
    /// The file's lower size afterwards.
    new_size: u64,
    /// The mode marker afterwards (`None`: no marker, stored as is).
    mode: Option<Mode>,
    source: Source,
}

impl Intent {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(32 + MAX_INLINE);
        v.extend_from_slice(MAGIC);
        v.push(1);
        v.extend_from_slice(&self.side_len.to_le_bytes());
        v.extend_from_slice(&self.new_size.to_le_bytes());
        v.push(self.mode.and_then(|m| m.header_code()).unwrap_or(0));
        match &self.source {
            Source::Side(name) => {
                v.push(name.len() as u8);
                v.extend_from_slice(name.as_bytes());
            }
            Source::Inline(bytes) => {
                v.push(0);
                v.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
                v.extend_from_slice(bytes);
            }
        }
        v
    }

    fn parse(v: &[u8]) -> Result<Intent, String> {
        if v.len() < 23 || &v[..4] != MAGIC || v[4] != 1 {
            return Err("unknown transformation record".into());
        }
        let u = |o: usize| u64::from_le_bytes(v[o..o + 8].try_into().unwrap_or([0; 8]));
        let mode = match v[21] {
            0 => None,
            c => Some(Mode::from_header_code(c).ok_or("bad mode in transformation record")?),
        };
        let (side_len, new_size) = (u(5), u(13));
        let n = usize::from(v[22]);
        let source = if n == 0 {
            let len = v
                .get(23..25)
                .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
                .ok_or("short transformation record")?;
            if v.len() != 25 + len || len > MAX_INLINE || len as u64 > side_len {
                return Err("bad inline bytes in transformation record".into());
            }
            Source::Inline(v[25..].to_vec())
        } else {
            let side = std::str::from_utf8(v.get(23..23 + n).ok_or("short transformation record")?)
                .map_err(|_| "bad side file name")?;
            if v.len() != 23 + n || !side.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err("bad side file name in transformation record".into());
            }
            Source::Side(side.to_owned())
        };
        if side_len > new_size.max(HEADER_LEN as u64) {
            return Err("transformation record out of range".into());
        }
        Ok(Intent {
            side_len,
            new_size,
            mode,
            source,
        })
    }

    fn side(&self) -> Option<&str> {
        match &self.source {
            Source::Side(n) => Some(n),
            Source::Inline(_) => None,
        }
    }
}

/// For the fuzz target: parse an intent record and encode it back.
#[doc(hidden)]
pub fn fuzz_intent(v: &[u8]) -> Result<Vec<u8>, String> {
    Intent::parse(v).map(|i| i.encode())
}

/// Test hook: `GUARDFS_TEST_XFORM_ABORT=PHASE` in secfs's environment makes
/// it abort (as `kill -9` would, at a chosen instant) when a
/// transformation reaches `PHASE`: `side` (side file durable, no record),
/// `intent` (record durable, file untouched), `copy` (part of the copy
/// back written), `record` (copy back durable, record still there). The
/// crash tests use it to reach each instant for certain; random kills
/// cover the rest.
pub(super) fn crash_point(phase: &str) {
    static WANTED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let wanted = WANTED.get_or_init(|| std::env::var("GUARDFS_TEST_XFORM_ABORT").ok());
    if wanted.as_deref() == Some(phase) {
        error!("secfs: aborting at transformation phase {phase} (GUARDFS_TEST_XFORM_ABORT)");
        std::process::abort();
    }
}

pub(super) fn io_err(what: &str, e: impl std::fmt::Debug) -> String {
    format!("{what}: {e:?}")
}

/// Finish a transformation a crash interrupted: if `fd` (the lower file,
/// opened for writing) carries an intent record, copy the side file back
/// (again), set the size and marker, make it durable, drop the record and
/// the side file. `Ok(false)`: there was nothing to finish. An `Err`
/// leaves everything as it is (the file is then refused).
pub fn finish(fd: BorrowedFd<'_>, root: BorrowedFd<'_>) -> Result<bool, String> {
    let rec = match sys::fgetxattr(fd, XFORM_XATTR) {
        Ok(v) => v,
        Err(e) if e == Errno::ENODATA || e == Errno(libc::ENOTSUP) => return Ok(false),
        Err(e) => return Err(io_err("reading the transformation record", e)),
    };
    let intent = Intent::parse(&rec)?;
    let side = match intent.side() {
        Some(name) => {
            let side = open_side(root, name, OFlag::O_RDONLY)
                .map_err(|e| io_err("opening the side file of an interrupted transformation", e))?;
            let have = lower_size(side.as_fd()).map_err(|e| io_err("side file", e))?;
            if have < intent.side_len {
                return Err(format!(
                    "side file {name} holds {have} bytes, the record says {}",
                    intent.side_len
                ));
            }
            Some(side)
        }
        None => None,
    };
    copy_back(fd, side.as_ref().map(|s| s.as_fd()), &intent)?;
    nix::unistd::fsync(fd).map_err(|e| io_err("fsync", e))?;
    finish_record(fd, root, &intent)?;
    Ok(true)
}

/// [`finish`] for a file being loaded through `io` (whose fd may be
/// read-only): one getxattr when there is nothing to finish.
pub fn finish_for_load(io: &Io<'_>) -> Result<(), String> {
    match sys::fgetxattr(io.fd, XFORM_XATTR) {
        Err(e) if e == Errno::ENODATA || e == Errno(libc::ENOTSUP) => return Ok(()),
        _ => {}
    }
    let reopened = file::writable(io.fd, io.proc_fd)
        .map_err(|e| io_err("opening it for writing to finish a transformation", e))?;
    let fd = reopened.as_ref().map_or(io.fd, |f| f.as_fd());
    if finish(fd, io.root)? {
        info!(
            "secfs: {}: finished an interrupted transformation",
            io.node.display_path()
        );
    }
    Ok(())
}

pub(super) fn open_side(root: BorrowedFd<'_>, name: &str, flags: OFlag) -> nix::Result<OwnedFd> {
    let path = format!("{SIDE_DIR}/{name}");
    nix::fcntl::openat(
        root,
        path.as_str(),
        flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Perm::from_bits_truncate(0o600),
    )
}

/// A file's name in the side directory: its device and inode (a side
/// file; with `.rk`, an online rekey's journal).
pub(super) fn side_name(fd: BorrowedFd<'_>) -> VfsResult<String> {
    let st = nix::sys::stat::fstat(fd)?;
    Ok(format!("{:x}-{:x}", st.st_dev, st.st_ino))
}

/// The side directory, created (0700) if missing; a directory fd.
pub(super) fn side_dir(root: BorrowedFd<'_>) -> Result<OwnedFd, String> {
    match nix::sys::stat::mkdirat(root, SIDE_DIR, Perm::from_bits_truncate(0o700)) {
        Ok(()) => {
            // Its name in the root, durable (the root fd may be O_PATH).
            let dot = nix::fcntl::openat(
                root,
                ".",
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Perm::empty(),
            )
            .map_err(|e| io_err("opening the lower root", e))?;
            nix::unistd::fsync(dot).map_err(|e| io_err("fsync of the lower root", e))?;
        }
        Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => return Err(io_err("creating the side directory", e)),
    }
    nix::fcntl::openat(
        root,
        SIDE_DIR,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Perm::empty(),
    )
    .map_err(|e| io_err("opening the side directory", e))
}

/// Bytes `0..side_len` of the side file over the file, then the size and
/// marker (durable after the caller's fsync or barrier).
fn copy_back(
    fd: BorrowedFd<'_>,
    side: Option<BorrowedFd<'_>>,
    intent: &Intent,
) -> Result<(), String> {
    if let (Source::Side(_), Some(side)) = (&intent.source, side) {
        // A side file's holes (the file's own, kept) are punched, not
        // copied as zeros.
        let have = lower_size(side).map_err(|e| io_err("side file", e))?;
        if have < intent.side_len {
            return Err("side file shorter than its record".into());
        }
        holes::copy_sparse(fd, side, intent.side_len, &mut || crash_point("copy"))
            .map_err(|e| io_err("copying back", e))?;
        return finish_copy(fd, intent);
    }
    let mut buf = vec![0u8; (1 << 20).min(intent.side_len as usize)];
    let mut off = 0u64;
    while off < intent.side_len {
        let want = ((intent.side_len - off) as usize).min(buf.len());
        let n = match (&intent.source, side) {
            (Source::Side(_), Some(side)) => {
                pread_full(side, &mut buf[..want], off).map_err(|e| io_err("reading side", e))?
            }
            (Source::Inline(bytes), _) => {
                buf[..want].fill(0);
                let o = off as usize;
                if o < bytes.len() {
                    let k = (bytes.len() - o).min(want);
                    buf[..k].copy_from_slice(&bytes[o..o + k]);
                }
                want
            }
            (Source::Side(_), None) => return Err("side file not open".into()),
        };
        if n < want {
            return Err("side file shorter than its record".into());
        }
        pwrite_all(fd, &buf[..n], off).map_err(|e| io_err("copying back", e))?;
        off += n as u64;
        crash_point("copy");
    }
    finish_copy(fd, intent)
}

/// After the bytes: the size and the mode marker.
fn finish_copy(fd: BorrowedFd<'_>, intent: &Intent) -> Result<(), String> {
    nix::unistd::ftruncate(fd, intent.new_size as i64).map_err(|e| io_err("resizing", e))?;
    match intent.mode {
        Some(m) => sys::fsetxattr(fd, MODE_XATTR, m.name().as_bytes())
            .map_err(|e| io_err("setting the mode marker", e))?,
        None => match sys::fremovexattr(fd, MODE_XATTR) {
            Ok(()) => {}
            Err(e) if e == Errno::ENODATA || e == Errno(libc::ENOTSUP) => {}
            Err(e) => return Err(io_err("removing the mode marker", e)),
        },
    }
    Ok(())
}

/// The file holds its new bytes durably: drop the record durably (so a
/// crash cannot redo it once the side file is gone), then the side file.
fn finish_record(fd: BorrowedFd<'_>, root: BorrowedFd<'_>, intent: &Intent) -> Result<(), String> {
    sys::fremovexattr(fd, XFORM_XATTR).map_err(|e| io_err("removing the record", e))?;
    nix::unistd::fsync(fd).map_err(|e| io_err("fsync", e))?;
    if let Some(name) = intent.side() {
        unlink_side(root, name);
    }
    Ok(())
}

fn unlink_side(root: BorrowedFd<'_>, name: &str) {
    if name.is_empty() {
        return;
    }
    let path = format!("{SIDE_DIR}/{name}");
    let _ = nix::unistd::unlinkat(root, path.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
}

/// The write barrier between protocol steps: everything written so far on
/// each file system in `fds` (one fd per file system is enough) is
/// durable. One `syncfs` per file system for a whole batch, where a
/// per-file `fsync` would cost one journal commit per file.
fn barrier(fds: &[BorrowedFd<'_>]) -> Result<(), String> {
    let mut seen = Vec::new();
    for fd in fds {
        let dev = nix::sys::stat::fstat(*fd)
            .map_err(|e| io_err("fstat", e))?
            .st_dev;
        if seen.contains(&dev) {
            continue;
        }
        seen.push(dev);
        nix::unistd::syncfs(*fd).map_err(|e| io_err("syncfs", e))?;
    }
    Ok(())
}

/// Remove side files last modified before `before` (unix seconds), then
/// the side directory if it is empty; how many were removed. Only after a
/// pass that reached every file of the GuardPoint: each reached file had
/// any interrupted transformation finished first, so no record refers to
/// an older side file.
pub fn cleanup(root: BorrowedFd<'_>, before: u64) -> Result<u64, String> {
    let dir = match nix::fcntl::openat(
        root,
        SIDE_DIR,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Perm::empty(),
    ) {
        Ok(d) => d,
        Err(nix::errno::Errno::ENOENT) => return Ok(0),
        Err(e) => return Err(io_err("opening the side directory", e)),
    };
    let dfd = dir.try_clone().map_err(|e| io_err("side directory", e))?;
    let mut d = nix::dir::Dir::from_fd(dir).map_err(|e| io_err("side directory", e))?;
    let mut removed = 0;
    for ent in d.iter() {
        let ent = ent.map_err(|e| io_err("listing the side directory", e))?;
        let name = ent.file_name().to_bytes();
        if name == b"." || name == b".." || in_flight(name) {
            continue;
        }
        let Ok(st) = nix::sys::stat::fstatat(
            &dfd,
            ent.file_name(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) else {
            continue;
        };
        if (st.st_mtime as u64) < before
            && nix::unistd::unlinkat(
                &dfd,
                ent.file_name(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            )
            .is_ok()
        {
            removed += 1;
        }
    }
    let _ = nix::unistd::unlinkat(root, SIDE_DIR, nix::unistd::UnlinkatFlags::RemoveDir);
    Ok(removed)
}

/// What is asked of one file.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub op: Op,
    /// `--scan`: report, change nothing.
    pub scan: bool,
    /// Keep the lower file's access and modification times.
    pub preserve_times: bool,
    /// The caller can rekey files online ([`Status::Online`]); without
    /// it every file goes through the batch.
    pub online: bool,
}

/// Files larger than this are rekeyed online (when the mode stays): the
/// batch would hold them for the whole copy.
pub const ONLINE_ABOVE: u64 = crate::stack::rekey::STEP_UNITS * 4096;

fn describe(c: &Contents) -> String {
    match c {
        Contents::Plain => "clear".into(),
        Contents::Empty => "empty".into(),
        Contents::Encrypted(c, _) => format!(
            "{}:{}:{}",
            c.header.key_name,
            c.header.key_version,
            c.header.mode.name()
        ),
        Contents::Refused | Contents::Unloaded => "refused".into(),
    }
}

/// Who is using a file: written without secfs (`busy`: skipped), open
/// through secfs (`open`: rekeyed online where it can be).
#[derive(Debug, Clone, Copy)]
struct Using {
    busy: bool,
    open: bool,
}

/// What step 1 left for one file.
enum Prepared {
    /// Nothing more to do (skipped, already done, or a scan).
    Done(Outcome),
    /// Its side file is written: steps 2 to 4 remain.
    Change(Box<Change>),
}

struct Change {
    out: Outcome,
    tgt: Target,
    /// Logical size.
    size: u64,
    /// Times to put back (`--preserve_modified_time`).
    times: Option<nix::sys::stat::FileStat>,
    /// The side file (none when the record holds the bytes).
    side: Option<OwnedFd>,
    intent: Intent,
    /// Keeps `cleanup` away from the side file until the batch is done.
    _in_flight: Option<InFlight>,
}

/// One file of a batch.
pub struct Item<'a> {
    pub state: Arc<FileState>,
    /// Open through secfs right now (rekeyed online where it can be).
    pub open: bool,
    /// The file, opened for reading and writing, and how to read it.
    pub io: Io<'a>,
}

/// Transform a batch of files as `plan` says, crash-safely (TRANSFORM.md):
/// every file's contents are held for writing from start to end, so no
/// reader or writer sees a file half done; the steps of all files share
/// four write barriers. `busy(state)`, asked with the contents held, says
/// whether something outside secfs can write that file (it is skipped).
/// One result per item, in order. Two items of one lower file (hard links)
/// are transformed once; the second reports it done.
pub fn transform_batch(
    items: &[Item<'_>],
    root: BorrowedFd<'_>,
    plan: Plan,
    busy: &dyn Fn(&Arc<FileState>) -> bool,
) -> Vec<VfsResult<Outcome>> {
    let n = items.len();
    let mut results: Vec<Option<VfsResult<Outcome>>> = vec![None; n];
    // A fixed lock order (by address) so that concurrent batches cannot
    // deadlock; hard links of one file follow their first.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| Arc::as_ptr(&items[i].state) as usize);
    let mut guards: Vec<(usize, std::sync::RwLockWriteGuard<'_, Contents>)> = Vec::with_capacity(n);
    let mut dup_of = vec![None; n];
    for &i in &order {
        if let Some((p, _)) = guards.last()
            && Arc::ptr_eq(&items[*p].state, &items[i].state)
        {
            dup_of[i] = Some(*p);
            continue;
        }
        guards.push((i, items[i].state.write_contents()));
    }
    // Step 1: decide, write side files.
    let mut changes: Vec<(usize, Box<Change>)> = Vec::new();
    let mut dir = None;
    for (gi, (i, g)) in guards.iter_mut().enumerate() {
        let it = &items[*i];
        match it.state.prepare(
            g,
            &it.io,
            root,
            &mut dir,
            plan,
            Using {
                busy: busy(&it.state),
                open: it.open,
            },
        ) {
            Ok(Prepared::Done(o)) => results[*i] = Some(Ok(o)),
            Ok(Prepared::Change(ch)) => changes.push((gi, ch)),
            Err(e) => results[*i] = Some(Err(e)),
        }
    }
    if !changes.is_empty() {
        // The lower root may be an O_PATH fd, which syncfs refuses.
        let root_dir = nix::fcntl::openat(
            root,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Perm::empty(),
        );
        let mut fds: Vec<BorrowedFd<'_>> = root_dir.iter().map(|d| d.as_fd()).collect();
        fds.extend(changes.iter().map(|(gi, _)| items[guards[*gi].0].io.fd));
        commit(items, &mut guards, &mut changes, root, &fds, &mut results);
    }
    drop(guards);
    for i in 0..n {
        if let Some(p) = dup_of[i] {
            results[i] = Some(match &results[p] {
                Some(Ok(o)) => Ok(Outcome {
                    status: if o.status == Status::Done {
                        Status::Current
                    } else {
                        o.status
                    },
                    from: o.to.clone(),
                    ..o.clone()
                }),
                Some(Err(e)) => Err(*e),
                None => Err(Errno::EIO),
            });
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or(Err(Errno::EIO)))
        .collect()
}

/// Steps 2 to 4 for the files of `changes`, whose contents `guards` hold.
fn commit(
    items: &[Item<'_>],
    guards: &mut [(usize, std::sync::RwLockWriteGuard<'_, Contents>)],
    changes: &mut Vec<(usize, Box<Change>)>,
    root: BorrowedFd<'_>,
    fds: &[BorrowedFd<'_>],
    results: &mut [Option<VfsResult<Outcome>>],
) {
    let path = |gi: usize| items[guards[gi].0].io.node.display_path();
    let fail = |gi: usize, e: Errno, results: &mut [Option<VfsResult<Outcome>>]| {
        results[guards[gi].0] = Some(Err(e));
    };
    // Step 1's side files, durable; then step 2: the records.
    if let Err(why) = barrier(fds) {
        error!("secfs: transformation batch abandoned before any change: {why}");
        for (gi, ch) in changes.drain(..) {
            unlink_side(root, ch.intent.side().unwrap_or_default());
            fail(gi, Errno::EIO, results);
        }
        return;
    }
    crash_point("side");
    changes.retain(|(gi, ch)| {
        let fd = items[guards[*gi].0].io.fd;
        match sys::fsetxattr(fd, XFORM_XATTR, &ch.intent.encode()) {
            Ok(()) => true,
            Err(e) => {
                error!(
                    "secfs: {}: cannot set the transformation record: {e:?}",
                    path(*gi)
                );
                unlink_side(root, ch.intent.side().unwrap_or_default());
                results[guards[*gi].0] = Some(Err(e));
                false
            }
        }
    });
    // From here a file whose step fails keeps its record: the next load
    // finishes it. Its contents are forgotten so that it is reloaded.
    let left_to_finish = |gi: usize,
                          why: &str,
                          guards: &mut [(usize, std::sync::RwLockWriteGuard<'_, Contents>)],
                          results: &mut [Option<VfsResult<Outcome>>]| {
        error!(
            "secfs: {}: transformation left to finish: {why}",
            items[guards[gi].0].io.node.display_path()
        );
        *guards[gi].1 = Contents::Unloaded;
        results[guards[gi].0] = Some(Err(Errno::EIO));
    };
    if let Err(why) = barrier(fds) {
        for (gi, _) in changes.drain(..) {
            left_to_finish(gi, &why, guards, results);
        }
        return;
    }
    crash_point("intent");
    // Step 3: copy back.
    let mut copied = Vec::new();
    for (gi, ch) in changes.drain(..) {
        let fd = items[guards[gi].0].io.fd;
        match copy_back(fd, ch.side.as_ref().map(|s| s.as_fd()), &ch.intent) {
            Ok(()) => copied.push((gi, ch)),
            Err(why) => left_to_finish(gi, &why, guards, results),
        }
    }
    if let Err(why) = barrier(fds) {
        for (gi, _) in copied.drain(..) {
            left_to_finish(gi, &why, guards, results);
        }
        return;
    }
    crash_point("record");
    // Step 4: the records go, durably, then the side files.
    let mut recorded = Vec::new();
    for (gi, ch) in copied.drain(..) {
        let fd = items[guards[gi].0].io.fd;
        match sys::fremovexattr(fd, XFORM_XATTR) {
            Ok(()) => recorded.push((gi, ch)),
            Err(e) => left_to_finish(gi, &format!("removing the record: {e:?}"), guards, results),
        }
    }
    let durable = barrier(fds);
    for (gi, ch) in recorded {
        let Change {
            mut out,
            tgt,
            size,
            times,
            intent,
            ..
        } = *ch;
        let it = &items[guards[gi].0];
        if durable.is_ok() {
            unlink_side(root, intent.side().unwrap_or_default());
        }
        if let Some(st) = times {
            let at = nix::sys::time::TimeSpec::new(st.st_atime, st.st_atime_nsec);
            let mt = nix::sys::time::TimeSpec::new(st.st_mtime, st.st_mtime_nsec);
            let _ = nix::sys::stat::futimens(it.io.fd, &at, &mt);
        }
        *guards[gi].1 = match tgt {
            Target::Clear => {
                it.io.node.set_class(Class::Plain);
                Contents::Plain
            }
            Target::Encrypted(t) => {
                it.io.node.set_class(class_of_mode(t.header.mode));
                Contents::Encrypted(Arc::new(*t), size)
            }
        };
        out.status = Status::Done;
        results[guards[gi].0] = Some(Ok(out));
    }
}

/// The key, version and mode `op` takes a file to (`None`: stored as it
/// is), from what the file holds now (`old`: `None` for a clear or empty
/// file); or why the file is skipped.
#[allow(clippy::type_complexity)]
fn target_of(
    op: Op,
    io: &Io<'_>,
    old: Option<&Crypt>,
) -> Result<Option<file::NewKey>, (Status, String)> {
    match op {
        Op::Rekey => {
            if !matches!(io.rule, crate::stack::access::RuleKey::Transform(_)) {
                return Err((
                    Status::NoRule,
                    "no data transformation rule covers this file".into(),
                ));
            }
            io.key_for_new().map_err(|_| {
                (
                    Status::NoKey,
                    "the transformation key is not available".into(),
                )
            })
        }
        Op::Deep | Op::Shallow => {
            let Some(o) = old else {
                return Err((Status::Clear, "stored as it is; nothing to rekey".into()));
            };
            let name = o.header.key_name.clone();
            let Some((v, pk)) = io.keys.latest(&name) else {
                return Err((Status::NoKey, format!("key {name} is not available")));
            };
            Ok(Some((name, v, pk, o.header.mode)))
        }
    }
}

/// One call of an online rekey of the file `io` names (`op`: `Rekey` or
/// `Deep`): start it if none is under way (after finishing anything a
/// crash left), then re-encrypt about `budget` plaintext bytes. `Done`
/// once the file is wholly in the new key; `Online` with `lower_bytes` =
/// bytes done while it is not. A file whose target changes its mode is
/// refused here (the batch converts it).
pub fn online_step(state: &FileState, io: &Io<'_>, op: Op, budget: u64) -> VfsResult<Outcome> {
    let (from, to) = {
        let mut c = state.write_contents();
        let under_way = matches!(&*c, Contents::Encrypted(k, _) if k.next.get().is_some());
        if !under_way {
            if let Err(why) = finish(io.fd, io.root) {
                return Ok(Outcome::skip(Status::Refused, "none".into(), why));
            }
            if let Load::Refused { found, why } = state.load_locked(io, &mut c)? {
                return Ok(Outcome::skip(Status::Refused, found, why));
            }
        }
        let from = describe(&c);
        let (old, size) = match &*c {
            Contents::Encrypted(k, size) => (k.clone(), *size),
            _ => return Ok(Outcome::skip(Status::Clear, from, "not encrypted")),
        };
        let to = match old.next.get() {
            Some(n) => n.header.clone(),
            None => {
                let target = match target_of(op, io, Some(&old)) {
                    Ok(Some(t)) => t,
                    Ok(None) => {
                        return Ok(Outcome::skip(
                            Status::Refused,
                            from,
                            "to clear: not an online rekey",
                        ));
                    }
                    Err((status, why)) => return Ok(Outcome::skip(status, from, why)),
                };
                if target.0 == old.header.key_name
                    && target.1 == old.header.key_version
                    && target.3 == old.header.mode
                {
                    return Ok(Outcome {
                        status: Status::Current,
                        to: from.clone(),
                        from,
                        size,
                        lower_bytes: 0,
                        why: String::new(),
                    });
                }
                if target.3 != old.header.mode {
                    return Ok(Outcome::skip(
                        Status::Refused,
                        from,
                        "the mode changes: not an online rekey",
                    ));
                }
                crate::stack::rekey::start(&mut c, io, &target)?;
                old.next.get().map(|n| n.header.clone()).ok_or(Errno::EIO)?
            }
        };
        let to = format!("{}:{}:{}", to.key_name, to.key_version, to.mode.name());
        (from, to)
    };
    let p = state.rekey_step(io, budget)?;
    Ok(Outcome {
        status: if p.finished {
            Status::Done
        } else {
            Status::Online
        },
        from,
        to,
        size: p.size,
        lower_bytes: p.done,
        why: String::new(),
    })
}

impl FileState {
    /// Step 1 for one file whose contents `c` the caller holds for
    /// writing: finish anything a crash left, decide, and write the side
    /// file (not yet durable). `Prepared::Done` when nothing more is to be
    /// done for it.
    fn prepare(
        &self,
        c: &mut Contents,
        io: &Io<'_>,
        root: BorrowedFd<'_>,
        dir: &mut Option<OwnedFd>,
        plan: Plan,
        using: Using,
    ) -> VfsResult<Prepared> {
        let Using { busy, open } = using;
        if busy {
            return Ok(Prepared::Done(Outcome::skip(
                Status::InUse,
                describe(c),
                "open without secfs (passthrough)",
            )));
        }
        // Anything a crash left half done is finished first.
        match finish(io.fd, root) {
            Ok(true) => info!(
                "secfs: {}: finished an interrupted transformation",
                io.node.display_path()
            ),
            Ok(false) => {}
            Err(why) => {
                error!("secfs: {}: {why}", io.node.display_path());
                return Ok(Prepared::Done(Outcome::skip(
                    Status::Refused,
                    "none".into(),
                    why,
                )));
            }
        }
        if let Load::Refused { found, why } = self.load_locked(io, c)? {
            return Ok(Prepared::Done(Outcome::skip(Status::Refused, found, why)));
        }
        let from = describe(c);
        let lower = lower_size(io.fd)?;
        let (size, old) = match &*c {
            Contents::Plain => (lower, None),
            Contents::Empty => (0, None),
            Contents::Encrypted(crypt, size) => (*size, Some(crypt.clone())),
            Contents::Refused | Contents::Unloaded => {
                return Ok(Prepared::Done(Outcome::skip(
                    Status::Refused,
                    from,
                    "not readable",
                )));
            }
        };
        // The target.
        let target = match target_of(plan.op, io, old.as_deref()) {
            Ok(t) => t,
            Err((status, why)) => return Ok(Prepared::Done(Outcome::skip(status, from, why))),
        };
        // An online rekey under way is finished online, whatever is asked.
        if let Some(o) = &old
            && let Some(n) = o.next.get()
        {
            let to = format!(
                "{}:{}:{}",
                n.header.key_name,
                n.header.key_version,
                n.header.mode.name()
            );
            let status = if plan.scan {
                Status::WouldChange
            } else {
                Status::Online
            };
            return Ok(Prepared::Done(Outcome {
                status,
                from,
                to,
                size,
                lower_bytes: 0,
                why: "an online rekey is under way".into(),
            }));
        }
        // Already there?
        let current = match (&target, &old) {
            (None, None) => !matches!(&*c, Contents::Empty) || lower == 0,
            (Some((n, v, _, m)), Some(o)) => {
                o.header.key_name == *n
                    && o.header.key_version == *v
                    && o.header.mode == *m
                    && plan.op != Op::Deep
            }
            _ => false,
        };
        // A deep rekey of a file already at the newest version is done
        // too (how a rerun resumes): only a file behind it is re-encrypted.
        let current = current
            || (plan.op == Op::Deep
                && matches!((&target, &old), (Some((n, v, _, _)), Some(o))
                    if o.header.key_name == *n && o.header.key_version == *v));
        if current {
            return Ok(Prepared::Done(Outcome {
                status: Status::Current,
                to: from.clone(),
                from,
                size,
                lower_bytes: 0,
                why: String::new(),
            }));
        }
        let shallow = plan.op == Op::Shallow;
        // A large or open file keeping its mode is rekeyed online: no lock
        // longer than one step (rekey.rs).
        if let (Some((name, version, _, mode)), Some(o)) = (&target, &old)
            && plan.online
            && !plan.scan
            && !shallow
            && *mode == o.header.mode
            && (open || size > ONLINE_ABOVE)
        {
            return Ok(Prepared::Done(Outcome {
                status: Status::Online,
                from,
                to: format!("{name}:{version}:{}", mode.name()),
                size,
                lower_bytes: 0,
                why: String::new(),
            }));
        }
        let (tgt, to) = match &target {
            None => (Target::Clear, "clear".to_owned()),
            Some((name, version, pk, mode)) => {
                let (header, dk) = if shallow {
                    let o = old.as_ref().ok_or(Errno::EIO)?;
                    let opk = io
                        .keys
                        .get(&o.header.key_name, o.header.key_version)
                        .ok_or(Errno::EIO)?;
                    let h = o.header.rewrap(&opk, name, *version, pk).map_err(|e| {
                        error!("secfs: {}: rewrap failed: {e}", io.node.display_path());
                        Errno::EIO
                    })?;
                    let dk = h.unwrap_key(pk).map_err(|_| Errno::EIO)?;
                    (h, dk)
                } else {
                    Header::create(*mode, name, *version, pk).map_err(|e| {
                        error!(
                            "secfs: {}: header creation failed: {e}",
                            io.node.display_path()
                        );
                        Errno::EIO
                    })?
                };
                let cipher = ContentCipher::for_header(&header, &dk).map_err(|_| Errno::EIO)?;
                let to = format!("{name}:{version}:{}", mode.name());
                (Target::Encrypted(Box::new(Crypt::new(header, cipher))), to)
            }
        };
        let (new_size, side_len, mode) = match &tgt {
            Target::Clear => (size, size, None),
            Target::Encrypted(t) => {
                let new_size = t.cipher.layout().lower_size(PlainOff(size)).0;
                let side_len = if shallow { HEADER_LEN as u64 } else { new_size };
                (new_size, side_len, Some(t.header.mode))
            }
        };
        let mut out = Outcome {
            status: Status::WouldChange,
            from,
            to,
            size,
            lower_bytes: side_len,
            why: String::new(),
        };
        if plan.scan {
            return Ok(Prepared::Done(out));
        }
        // Space for the side file, with a margin for metadata.
        if let Ok(st) = nix::sys::statvfs::fstatvfs(root) {
            let free = st.blocks_available().saturating_mul(st.fragment_size());
            if free < side_len.saturating_add(1 << 20) {
                out.status = Status::NoSpace;
                out.why = format!("needs {side_len} bytes, {free} free");
                return Ok(Prepared::Done(out));
            }
        }
        let times = if plan.preserve_times {
            nix::sys::stat::fstat(io.fd).ok()
        } else {
            None
        };
        // 1. The new bytes: in the record itself for a shallow rekey (the
        // header's non-reserved bytes), else a side file (made durable by
        // the caller's barrier).
        if let (true, Target::Encrypted(t)) = (shallow, &tgt) {
            let inline = t.header.to_bytes()[..MAX_INLINE].to_vec();
            return Ok(Prepared::Change(Box::new(Change {
                out,
                tgt,
                size,
                times,
                side: None,
                intent: Intent {
                    side_len: HEADER_LEN as u64,
                    new_size,
                    mode,
                    source: Source::Inline(inline),
                },
                _in_flight: None,
            })));
        }
        if dir.is_none() {
            *dir = Some(side_dir(root).map_err(|why| {
                error!("secfs: {}: {why}", io.node.display_path());
                Errno::EIO
            })?);
        }
        let dir = dir.as_ref().ok_or(Errno::EIO)?;
        let name = side_name(io.fd).map_err(|_| Errno::EIO)?;
        let in_flight = InFlight::new(&name);
        let side = nix::fcntl::openat(
            dir,
            name.as_str(),
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Perm::from_bits_truncate(0o600),
        )
        .map_err(|e| Errno(e as i32))?;
        let written = self.write_side(io, old.as_deref(), size, &tgt, side.as_fd());
        if let Err(e) = written {
            let _ =
                nix::unistd::unlinkat(dir, name.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
            if e == Errno(libc::ENOSPC) {
                out.status = Status::NoSpace;
                out.why = "the disk filled up while writing the side file".into();
                return Ok(Prepared::Done(out));
            }
            return Err(e);
        }
        Ok(Prepared::Change(Box::new(Change {
            out,
            tgt,
            size,
            times,
            side: Some(side),
            intent: Intent {
                side_len,
                new_size,
                mode,
                source: Source::Side(name),
            },
            _in_flight: Some(in_flight),
        })))
    }

    /// Write the whole new lower file (`size` plaintext bytes, read from
    /// the file as `old` describes) to `side`.
    fn write_side(
        &self,
        io: &Io<'_>,
        old: Option<&Crypt>,
        size: u64,
        tgt: &Target,
        side: BorrowedFd<'_>,
    ) -> VfsResult<()> {
        let crypt = match tgt {
            Target::Clear => None,
            Target::Encrypted(t) => Some(t),
        };
        if let Some(t) = crypt {
            pwrite_all(side, &t.header.to_bytes(), 0)?;
        }
        let layout = crypt.map(|t| *t.cipher.layout());
        let step = layout.map_or(Layout::of(Mode::Xts).unit_plain_len(), |l| {
            l.unit_plain_len()
        }) * CHUNK_UNITS;
        let mut plain = vec![0u8; step];
        let mut lower = vec![0u8; Layout::of(Mode::Gcm).run_lower_len(step).max(step + 4096)];
        // The file's holes stay holes (whole units of the new layout that
        // lie in a hole of the old lower file are left unwritten).
        let holes = holes::plain_holes(io.fd, old.map(|c| c.layout()), size)?;
        let mut off = 0u64;
        while off < size {
            let n = ((size - off) as usize).min(step);
            read_plain(io, old, size, off, &mut plain[..n])?;
            // Plaintext bytes per block written (a unit; 4096 when clear).
            let pu = layout.map_or(4096, |l| l.unit_plain_len()) as u64;
            let in_hole = |i: usize| {
                let a = off + i as u64 * pu;
                a + pu <= size && holes::covered(&holes, a, a + pu)
            };
            match (crypt, layout) {
                (Some(t), Some(l)) => {
                    let first = l.unit_of(PlainOff(off)).0;
                    let ll = l.run_lower_len(n);
                    file::encrypt(t, first, &plain[..n], &mut lower[..ll])?;
                    holes::write_skipping(
                        side,
                        &lower[..ll],
                        l.unit_lower_start(first).0,
                        4096,
                        in_hole,
                    )?;
                }
                _ => holes::write_skipping(side, &plain[..n], off, 4096, in_hole)?,
            }
            off += n as u64;
        }
        // Its full length, holes at the end included.
        let total = layout.map_or(size, |l| l.lower_size(PlainOff(size)).0);
        nix::unistd::ftruncate(side, total as i64)?;
        Ok(())
    }
}

/// Plaintext `off..off + out.len()` of a file: its lower bytes (stored as
/// is) or decrypted with `old`.
fn read_plain(
    io: &Io<'_>,
    old: Option<&Crypt>,
    size: u64,
    off: u64,
    out: &mut [u8],
) -> VfsResult<()> {
    let Some(c) = old else {
        let n = pread_full(io.fd, out, off)?;
        out[n..].fill(0);
        return Ok(());
    };
    let l = *c.cipher.layout();
    let (first, _) = l.unit_of(PlainOff(off));
    let end = off + out.len() as u64;
    let (last, _) = l.unit_of(PlainOff(end - 1));
    let run_start = l.unit_plain_start(first).0;
    let run_end = l.unit_plain_start(UnitNo(last.0 + 1)).0.min(size);
    let lower_len = l.run_lower_len((run_end - run_start) as usize);
    let mut lower = vec![0u8; lower_len];
    let got = pread_full(io.fd, &mut lower, l.unit_lower_start(first).0)?;
    lower[got..].fill(0);
    let mut plain = vec![0u8; (run_end - run_start) as usize];
    file::decrypt(io.node, c, first, &lower, &mut plain)?;
    let s = (off - run_start) as usize;
    out.copy_from_slice(&plain[s..s + out.len()]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_leaves_side_files_in_flight_alone() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::File::open(dir.path()).unwrap();
        std::fs::create_dir(dir.path().join(SIDE_DIR)).unwrap();
        for n in ["801-1", "801-2"] {
            std::fs::write(dir.path().join(SIDE_DIR).join(n), b"x").unwrap();
        }
        let busy = InFlight::new("801-2");
        let far = u64::MAX;
        assert_eq!(cleanup(root.as_fd(), far).unwrap(), 1);
        assert!(dir.path().join(SIDE_DIR).join("801-2").exists());
        drop(busy);
        assert_eq!(cleanup(root.as_fd(), far).unwrap(), 1);
        assert!(
            !dir.path().join(SIDE_DIR).exists(),
            "empty side directory left"
        );
    }

    #[test]
    fn intent_records_round_trip_and_misfits_are_refused() {
        let i = Intent {
            side_len: 8192,
            new_size: 8192,
            mode: Some(Mode::Gcm),
            source: Source::Side("801-2a".into()),
        };
        assert_eq!(Intent::parse(&i.encode()).unwrap(), i);
        let c = Intent { mode: None, ..i };
        assert_eq!(Intent::parse(&c.encode()).unwrap(), c);
        let mut bad = c.encode();
        bad[0] = b'x';
        assert!(Intent::parse(&bad).is_err());
        let mut bad = c.encode();
        bad.push(b'/');
        assert!(Intent::parse(&bad).is_err());
        let evil = Intent {
            source: Source::Side("../x".into()),
            ..c
        };
        assert!(Intent::parse(&evil.encode()).is_err());
        let inline = Intent {
            side_len: 4096,
            new_size: 9000,
            mode: Some(Mode::Xts),
            source: Source::Inline(vec![7; 212]),
        };
        assert_eq!(Intent::parse(&inline.encode()).unwrap(), inline);
        let mut long = inline.encode();
        long.push(0);
        assert!(Intent::parse(&long).is_err());
        let too_big = Intent {
            source: Source::Inline(vec![7; MAX_INLINE + 1]),
            ..inline
        };
        assert!(Intent::parse(&too_big.encode()).is_err());
        assert!(Intent::parse(&[]).is_err());
    }
}
