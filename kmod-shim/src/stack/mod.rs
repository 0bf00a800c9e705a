//! The stacking layer: GuardPoint semantics over a lower directory.
//!
//! Every operation works relative to fds this layer holds, so nothing here
//! ever resolves a path through the mount itself: the lower root (opened
//! before the mount covered it), an `O_PATH | O_NOFOLLOW` fd per node, and
//! an fd on `/proc/self/fd`. Precisely:
//! * names are looked up, created, linked, renamed and removed with
//!   `*at()` calls on the parent node's fd (`fstatat`, `openat`,
//!   `mknodat`, `mkdirat`, `symlinkat`, `linkat`, `renameat2`,
//!   `unlinkat`; `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`
//!   for control-channel paths);
//! * a node's own object is reached through its fd: `fstat`, `fstatvfs`,
//!   and `fstatat`, `fchownat`, `linkat`, `readlinkat` (a symlink's
//!   target) with an empty path, `openat(fd, ".")` for a directory's
//!   entries and fsync;
//! * what an `O_PATH` fd cannot do goes through the fd's magic link in
//!   `/proc/self/fd`, named by the fd's number relative to the held fd on
//!   that directory (the link resolves to the object itself, a symlink
//!   node included): re-opens for I/O (`openat`), `fchmodat`, `utimensat`,
//!   `readlinkat` of the link (the node's path, for policies), and the
//!   xattr calls (`*xattrat`, or on kernels before 6.13 the path calls on
//!   `/proc/self/fd/N`; see [`sys::ProcLink`]);
//! * open files use their own fds (`pread`, `pwrite`, `ftruncate`,
//!   `fallocate`, `lseek`, `f*xattr`, `fsync`).
//!
//! Names and directories pass through in clear (as in CTE); regular file
//! contents go through [`file`](mod@file), the only module here that knows about
//! headers, modes and ciphers: this one sees a file's [`Class`] and asks
//! [`file`](mod@file) for sizes and header facts.
//!
//! Open files, the handle table and what a policy change does to them are
//! in `handles`; access decisions in [`access`].
//!
//! Permissions: the FUSE binding mounts with `default_permissions`, so the
//! kernel checks every access against the attributes returned here before
//! calling in. Objects are created with the caller's filesystem
//! credentials (fsuid, fsgid, groups) so ownership and setgid-directory
//! inheritance follow the lower filesystem's own rules.

pub mod access;
pub mod file;
mod handles;
mod holes;
pub mod keys;
pub mod nodes;
pub mod procinfo;
pub mod rekey;
mod tail;
mod transform;
pub mod xform;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode as StatMode, SFlag};

use guardfs_policy::Action;

use crate::stack::access::{Access, Grant, Opener, RuleKey, View};
use crate::stack::file::{HeaderBlock, Io, MODE_XATTR, Mode, PRIVATE_XATTR_PREFIX};
use crate::stack::keys::KeySource;
use crate::stack::nodes::{Class, Node, Nodes, Standing};
use crate::sys;
use crate::vfs::*;

/// Static configuration of one GuardPoint.
#[derive(Clone)]
pub struct GuardConfig {
    /// Mode for new files.
    pub mode: Mode,
    /// Policy keys.
    pub keys: Arc<dyn KeySource>,
    /// Access control (a policy, or none: everyone gets plaintext).
    pub access: Arc<Access>,
    /// Offer FUSE passthrough for untransformed files (the binding must
    /// have negotiated it; `clear` GuardPoints).
    pub passthrough: bool,
}

impl std::fmt::Debug for GuardConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardConfig")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

enum Handle {
    File(FileHandle),
    Dir {
        node: Arc<Node>,
        entries: Mutex<Option<Vec<DirRec>>>,
    },
}

/// An open file: the lower fd and the decision made at open.
struct FileHandle {
    node: Arc<Node>,
    fd: OwnedFd,
    view: View,
    rule: RuleKey,
    /// Who opened it, for deciding again after a policy change: the
    /// request's ids and the identity judged at open (see
    /// `Access::recheck`).
    caller: Caller,
    opener: Option<Opener>,
    reads: bool,
    writes: bool,
    append: bool,
    /// Appends are granted, writes elsewhere are not (`f_wr_app` without
    /// `f_wr`): every write must land at the end of the file.
    append_only: bool,
    /// The policy generation the decision was made under (taken from the
    /// same snapshot as the decision, see `access`).
    generation: AtomicU64,
}

/// An open decided: the grant, who was judged, and whether its writes are
/// limited to appending.
struct Decided {
    grant: Grant,
    opener: Option<Opener>,
    append_only: bool,
}

struct DirRec {
    name: OsString,
    st_ino: u64,
    kind: FileKind,
}

/// The stacking layer of one GuardPoint.
pub struct Stack {
    nodes: Nodes,
    handles: RwLock<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    proc_fd: OwnedFd,
    /// The lower root (the root node's fd, shared): where transformation
    /// side files live.
    root_fd: OwnedFd,
    cfg: GuardConfig,
}

fn key_of(st: &FileStat) -> (u64, u64) {
    (st.st_dev, st.st_ino)
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

fn check_name(name: &OsStr) -> VfsResult<()> {
    let b = name.as_bytes();
    if b.is_empty() || b.contains(&b'/') || b.contains(&0) || b == b"." || b == b".." {
        return Err(Errno::EINVAL);
    }
    if b.len() > 255 {
        return Err(Errno(libc::ENAMETOOLONG));
    }
    Ok(())
}

/// The transformation side directory in the lower root is secfs's own:
/// invisible (`hidden`) and untouchable through the GuardPoint.
fn reserved(parent: Ino, name: &OsStr, hidden: Errno) -> VfsResult<()> {
    if parent == Ino::ROOT && name.as_bytes() == xform::SIDE_DIR.as_bytes() {
        return Err(hidden);
    }
    Ok(())
}

impl Stack {
    /// A stacking layer over the directory `lower` (an fd opened before the
    /// mount covers it; `O_PATH` is enough).
    pub fn new(lower: OwnedFd, cfg: GuardConfig) -> VfsResult<Stack> {
        let st = nix::sys::stat::fstat(lower.as_fd())?;
        if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFDIR {
            return Err(Errno::ENOTDIR);
        }
        let proc_fd = nix::fcntl::open(
            "/proc/self/fd",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            StatMode::empty(),
        )?;
        let root_fd = lower.try_clone()?;
        Ok(Stack {
            root_fd,
            nodes: Nodes::with_root(lower, key_of(&st)),
            handles: RwLock::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            proc_fd,
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &GuardConfig {
        &self.cfg
    }

    /// Number of inodes the kernel holds.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    fn stat_node(&self, node: &Node) -> VfsResult<FileStat> {
        Ok(nix::sys::stat::fstatat(
            node.fd(),
            c"",
            AtFlags::AT_EMPTY_PATH | AtFlags::AT_SYMLINK_NOFOLLOW,
        )?)
    }

    /// Re-open a node's lower object with real access modes.
    fn reopen(&self, node: &Node, flags: OFlag) -> VfsResult<OwnedFd> {
        self.reopen_fd(node.fd(), flags)
    }

    /// The xattrs of the lower object an `O_PATH` fd refers to.
    fn xattrs<'a>(&'a self, fd: BorrowedFd<'a>) -> sys::ProcLink<'a> {
        sys::ProcLink::new(self.proc_fd.as_fd(), fd)
    }

    /// Re-open the lower object an `O_PATH` fd refers to.
    fn reopen_fd(&self, fd: BorrowedFd<'_>, flags: OFlag) -> VfsResult<OwnedFd> {
        let name = fd.as_raw_fd().to_string();
        Ok(nix::fcntl::openat(
            self.proc_fd.as_fd(),
            name.as_str(),
            flags | OFlag::O_CLOEXEC,
            StatMode::empty(),
        )?)
    }

    /// The class of a regular file, from its marker xattr (cached per node).
    fn class_of(&self, node: &Node) -> Class {
        let c = node.class();
        if c != Class::Unknown {
            return c;
        }
        let marker = self
            .xattrs(node.fd())
            .getxattr(OsStr::from_bytes(MODE_XATTR.to_bytes()));
        let c = match marker {
            Ok(v) => file::marker_class(&v).unwrap_or(Class::Plain),
            // No marker (xattrs unsupported, or lost, e.g. by a restore
            // without xattrs): the header magic decides.
            Err(e) if e == Errno(libc::ENOTSUP) || e == Errno(libc::ENODATA) => {
                self.class_from_header(node)
            }
            Err(_) => Class::Plain,
        };
        node.set_class(c);
        c
    }

    /// Finish a transformation of `node` that a crash interrupted, if its
    /// lower file carries a transformation record; whether one was. Holds
    /// the file's contents meanwhile: a batch that is running holds them
    /// too, so its own records are never taken for a crash's.
    fn finish_interrupted_transformation(&self, node: &Node) -> bool {
        let probe = self
            .xattrs(node.fd())
            .getxattr(OsStr::from_bytes(xform::XFORM_XATTR.to_bytes()));
        if probe.is_err() {
            return false;
        }
        let Ok(fd) = self.reopen(node, OFlag::O_RDWR) else {
            return false;
        };
        let state = node.file();
        let mut c = state.write_contents();
        match xform::finish(fd.as_fd(), self.root_fd.as_fd()) {
            Ok(done) => {
                if done {
                    // Whatever was loaded describes the old bytes.
                    *c = file::Contents::Unloaded;
                    node.set_class(Class::Unknown);
                    log::info!(
                        "secfs: {}: finished an interrupted transformation",
                        node.display_path()
                    );
                }
                done
            }
            Err(why) => {
                // Reported (and the file refused) when it is opened.
                log::error!("secfs: {}: {why}", node.display_path());
                false
            }
        }
    }

    /// Finish a truncate of `node` that a crash interrupted, if its lower
    /// file carries a tail record (see `file::TAIL_XATTR`); whether one was.
    fn finish_interrupted_truncate(&self, node: &Node) -> bool {
        let probe = self
            .xattrs(node.fd())
            .getxattr(OsStr::from_bytes(file::TAIL_XATTR.to_bytes()));
        if probe.is_err() {
            return false;
        }
        // A record that cannot be applied here is reported when the file
        // is opened (`FileState::load` refuses it).
        let Ok(fd) = self.reopen(node, OFlag::O_RDWR) else {
            return false;
        };
        node.file()
            .finish_interrupted_truncate(node, fd.as_fd(), self.proc_fd.as_fd())
    }

    /// Test hook: a truncate of `ino` to `new` cut short as by a crash right
    /// after its in-place write (see
    /// `FileState::truncate_interrupted_for_test`). Not for use outside
    /// tests.
    #[doc(hidden)]
    pub fn truncate_interrupted_for_test(&self, ino: Ino, new: u64) -> VfsResult<bool> {
        let node = self.nodes.get(ino)?;
        let fd = self.reopen(&node, OFlag::O_RDWR)?;
        let io = self.io(&node, fd.as_fd(), &RuleKey::Default);
        node.file().load(&io)?;
        node.file().truncate_interrupted_for_test(&io, new)
    }

    /// Fallback for files without a marker: peek the header.
    fn class_from_header(&self, node: &Node) -> Class {
        let Ok(fd) = self.reopen(node, OFlag::O_RDONLY) else {
            return Class::Plain;
        };
        file::header_class(fd.as_fd())
    }

    /// The attributes of `node` as its view shows them, for a file under
    /// the key rule `rule` (which decides whether the lower bytes are
    /// served as they are or decrypted, and so the size).
    fn attr_of(&self, node: &Node, st: &FileStat, rule: &RuleKey) -> Attr {
        let kind = FileKind::from_mode(st.st_mode);
        let restat;
        let mut st = st;
        // The first time a file's size is shown, a transformation a crash
        // interrupted is finished, so that neither its half-copied bytes
        // nor a size from before it shows (the kernel keeps that size).
        if kind == FileKind::Regular
            && node.first_settle()
            && self.finish_interrupted_transformation(node)
            && let Ok(s) = self.stat_node(node)
        {
            restat = s;
            st = &restat;
        }
        let restat2;
        let mut size = st.st_size as u64;
        if kind == FileKind::Regular && !file::verbatim(rule, self.cfg.mode, &*self.cfg.keys) {
            // Under a transformation rule, whether a file is encrypted is
            // decided by its authenticated header, not by its marker or
            // magic: decide it (load) before its size is first shown.
            if matches!(rule, RuleKey::Transform(_))
                && node.class() == Class::Unknown
                && node.view == View::Plain
                && let Ok(fd) = self.reopen(node, OFlag::O_RDONLY)
            {
                let _ = node.file().load(&self.io(node, fd.as_fd(), rule));
            }
            let first = node.class() == Class::Unknown;
            let class = self.class_of(node);
            // The first time a file's size is shown, in either view, a
            // truncate a crash interrupted is finished, so no size (and,
            // for a backup reading the raw view, no half-rewritten tail)
            // from before it shows.
            if first
                && class != Class::Plain
                && self.finish_interrupted_truncate(node)
                && let Ok(s) = self.stat_node(node)
            {
                restat2 = s;
                st = &restat2;
                size = st.st_size as u64;
            }
            if node.view == View::Plain {
                size = file::logical_size(class, size);
            }
        }
        Attr {
            st_ino: st.st_ino,
            size,
            blocks: st.st_blocks as u64,
            atime: time(st.st_atime, st.st_atime_nsec),
            mtime: time(st.st_mtime, st.st_mtime_nsec),
            ctime: time(st.st_ctime, st.st_ctime_nsec),
            kind,
            perm: (st.st_mode & 0o7777) as u16,
            nlink: st.st_nlink as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev as u32,
            blksize: st.st_blksize as u32,
        }
    }

    /// Look `name` up in `parent` and count one lookup of it, for a caller
    /// of the plaintext view; `rule` is the key rule's key at its path.
    fn do_lookup(&self, parent: &Node, name: &OsStr, rule: &RuleKey) -> VfsResult<Entry> {
        self.lookup_view(parent, name, rule, |_, _| Ok(View::Plain))
    }

    /// The key rule's key for a node.
    fn node_rule(&self, node: &Node) -> VfsResult<RuleKey> {
        if self.cfg.access.generation() == 0 {
            return Ok(RuleKey::Default);
        }
        Ok(self.cfg.access.rule_at(&self.rel_path(node)?))
    }

    /// `EXDEV` unless `name` in `parent` and `new_name` in `new_parent`
    /// fall under the same key rules (for a directory, everything below
    /// it too).
    fn same_key_rules(
        &self,
        parent: &Node,
        name: &OsStr,
        new_parent: &Node,
        new_name: &OsStr,
        dir: bool,
    ) -> VfsResult<()> {
        let from = self.child_path(parent, name)?;
        let to = self.child_path(new_parent, new_name)?;
        if self.cfg.access.same_key_rules(&from, &to, dir) {
            Ok(())
        } else {
            Err(exdev(&from, &to))
        }
    }

    /// Look `name` up; `view_of(kind, key)` picks the view (and may
    /// refuse); `key` is the lower object's (st_dev, st_ino); `rule` is the
    /// key rule's key at its path (see [`Stack::attr_of`]).
    fn lookup_view(
        &self,
        parent: &Node,
        name: &OsStr,
        rule: &RuleKey,
        view_of: impl Fn(FileKind, (u64, u64)) -> VfsResult<View>,
    ) -> VfsResult<Entry> {
        for _ in 0..4 {
            let st = nix::sys::stat::fstatat(parent.fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
            let key = key_of(&st);
            let kind = FileKind::from_mode(st.st_mode);
            let view = view_of(kind, key)?;
            let res = self.nodes.lookup(key, view, kind, || {
                let fd = nix::fcntl::openat(
                    parent.fd(),
                    name,
                    OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    StatMode::empty(),
                )?;
                // The entry may have been replaced between stat and open.
                let st2 = nix::sys::stat::fstat(fd.as_fd())?;
                if key_of(&st2) != key {
                    return Err(Errno(libc::EAGAIN));
                }
                Ok(fd)
            });
            match res {
                Ok(node) => {
                    // One lower file with names under two key rules (hard
                    // links made on the lower file system): the kernel has
                    // one inode for it, decided by the first name; the
                    // other names are refused while it lives.
                    if kind == FileKind::Regular
                        && st.st_nlink > 1
                        && self.cfg.access.generation() != 0
                    {
                        let first = self.node_rule(&node);
                        if first.as_ref() != Ok(rule) {
                            self.nodes.forget(node.ino, 1);
                            let path = self.child_path(parent, name).unwrap_or_default();
                            let found = first.map(|r| r.label().to_owned());
                            self.cfg.access.refused_file(
                                &path,
                                rule.label(),
                                found.as_deref().unwrap_or("?"),
                                "a hard link of a file under another key rule",
                            );
                            return Err(Errno::EIO);
                        }
                    }
                    let attr = self.attr_of(&node, &st, rule);
                    let cacheable = !(kind == FileKind::Regular && self.cfg.access.isolated());
                    return Ok(Entry {
                        ino: node.ino,
                        attr,
                        generation: 0,
                        cacheable,
                    });
                }
                Err(Errno(libc::EAGAIN)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Errno::EIO)
    }

    fn io<'a>(&'a self, node: &'a Node, fd: BorrowedFd<'a>, rule: &'a RuleKey) -> Io<'a> {
        Io {
            node,
            fd,
            keys: &*self.cfg.keys,
            mode: self.cfg.mode,
            rule,
            proc_fd: self.proc_fd.as_fd(),
            root: self.root_fd.as_fd(),
        }
    }

    /// The path of a node relative to the GuardPoint, written absolute
    /// (`/` is the GuardPoint), as policies name resources.
    ///
    /// A node whose path cannot be read, or lies outside the GuardPoint
    /// (moved out of it by a rename on the lower file system), has no
    /// resource path the policy could judge: `EACCES`.
    fn rel_path(&self, node: &Node) -> VfsResult<Vec<u8>> {
        use std::os::unix::ffi::OsStringExt;
        if node.ino == Ino::ROOT {
            return Ok(b"/".to_vec());
        }
        // The path is the target of the node fd's magic link (the kernel's
        // d_path of the object); no other call names the path of an fd.
        // Read relative to the held `/proc/self/fd` fd, like the re-opens.
        let link = node.fd.as_raw_fd().to_string();
        let Ok(p) = nix::fcntl::readlinkat(self.proc_fd.as_fd(), link.as_str()) else {
            log::warn!(
                "secfs: {}: path unknown; access refused",
                node.display_path()
            );
            return Err(Errno::EACCES);
        };
        let mut p = p.into_vec();
        if p.ends_with(b" (deleted)") {
            p.truncate(p.len() - b" (deleted)".len());
        }
        let gp = self.cfg.access.guard_point();
        match p.strip_prefix(gp) {
            Some(rest) if rest.starts_with(b"/") => Ok(rest.to_vec()),
            Some([]) => Ok(b"/".to_vec()),
            _ => {
                log::warn!(
                    "secfs: {} is outside the GuardPoint; access refused",
                    String::from_utf8_lossy(&p)
                );
                Err(Errno::EACCES)
            }
        }
    }

    /// The path of `name` in `parent`, relative to the GuardPoint.
    fn child_path(&self, parent: &Node, name: &OsStr) -> VfsResult<Vec<u8>> {
        let mut p = self.rel_path(parent)?;
        if p != b"/" {
            p.push(b'/');
        }
        p.extend_from_slice(name.as_bytes());
        Ok(p)
    }

    /// Ask the policy about `action` on `node` (skipping path work when no
    /// policy is loaded).
    fn check_node(&self, c: &Caller, node: &Node, action: Action) -> VfsResult<Grant> {
        if self.cfg.access.generation() == 0 {
            return Ok(Grant::unrestricted());
        }
        self.cfg.access.check(c, &self.rel_path(node)?, action)
    }

    /// [`Stack::check_node`] for an open: also the opener's identity.
    fn check_node_open(
        &self,
        c: &Caller,
        node: &Node,
        action: Action,
    ) -> VfsResult<(Grant, Option<Opener>)> {
        if self.cfg.access.generation() == 0 {
            return Ok((Grant::unrestricted(), None));
        }
        self.cfg.access.check_open(c, &self.rel_path(node)?, action)
    }

    fn check_child(
        &self,
        c: &Caller,
        parent: &Node,
        name: &OsStr,
        action: Action,
    ) -> VfsResult<Grant> {
        if self.cfg.access.generation() == 0 {
            return Ok(Grant::unrestricted());
        }
        self.cfg
            .access
            .check(c, &self.child_path(parent, name)?, action)
    }

    /// The first 4096 bytes of the lower file at `rel` (relative to the
    /// GuardPoint, resolved beneath it without following any symlink), for
    /// `voradmin secfs iv get`. Only regular files (a FIFO must not block
    /// the control channel); shorter files are padded with zeros.
    pub fn lower_header(&self, rel: &str) -> VfsResult<HeaderBlock> {
        use nix::fcntl::{OpenHow, ResolveFlag};
        let root = self.nodes.get(Ino::ROOT)?;
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        let fd = nix::fcntl::openat2(root.fd(), rel, how)?;
        let st = nix::sys::stat::fstat(fd.as_fd())?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(Errno::EINVAL);
        }
        file::read_header_block(fd.as_fd())
    }

    /// Forget every data key unwrapped with version `version` of the
    /// policy key `name` (it was revoked). The caller invalidates the
    /// kernel's caches around this.
    pub fn forget_key(&self, name: &str, version: u32) {
        for ino in self.nodes.all() {
            if let Ok(node) = self.nodes.get(ino) {
                node.file().forget_key(name, version);
            }
        }
    }

    pub fn access(&self) -> &Access {
        &self.cfg.access
    }

    /// Run a creating operation with the caller's filesystem credentials.
    fn as_caller<T>(
        &self,
        c: &Caller,
        parent: &Node,
        f: impl FnOnce() -> VfsResult<T>,
    ) -> VfsResult<T> {
        // The daemon's own credentials are root's: only a caller that is
        // root with root's group may skip the switch (root with another
        // group creates files owned by that group).
        if c.uid == 0 && c.gid == 0 {
            return f();
        }
        // Supplementary groups matter only when the parent's group is not
        // the caller's primary group: the permission check, and whether a
        // new file in a setgid directory keeps its S_ISGID bit (it does
        // when the caller is a member of the directory's group, even when
        // the caller owns the directory).
        let pst = self.stat_node(parent)?;
        let groups = if pst.st_gid != c.gid {
            procinfo::groups_of(c.pid)
        } else {
            Vec::new()
        };
        sys::as_caller(c.uid, c.gid, &groups, f)?
    }

    /// The node of an xattr operation on `name`, after refusing GuardFS's
    /// own attributes (with `private`) and asking the policy.
    fn xattr_node(
        &self,
        c: &Caller,
        ino: Ino,
        name: &OsStr,
        write: bool,
        private: Errno,
    ) -> VfsResult<Arc<Node>> {
        if is_private(name) {
            return Err(private);
        }
        let node = self.nodes.get(ino)?;
        self.check_node(
            c,
            &node,
            attr_action(node.kind, write, is_security_xattr(name)),
        )?;
        Ok(node)
    }
}

/// `EXDEV` for a rename or link from `from` to `to` across key rules: the
/// bytes would stay encrypted (or clear) as the source's key rule has them
/// where the destination's names another, so tools copy instead, and the
/// copy is written under the destination's key.
fn exdev(from: &[u8], to: &[u8]) -> Errno {
    log::info!(
        "secfs: {} -> {}: across key rules (EXDEV; the data is copied and re-encrypted instead)",
        String::from_utf8_lossy(from),
        String::from_utf8_lossy(to)
    );
    Errno(libc::EXDEV)
}

fn handle_fd(h: &Handle) -> VfsResult<BorrowedFd<'_>> {
    match h {
        Handle::File(f) => Ok(f.fd.as_fd()),
        Handle::Dir { .. } => Err(Errno::EISDIR),
    }
}

/// The action that reads or changes metadata of a kind of node.
fn attr_action(kind: FileKind, write: bool, security: bool) -> Action {
    let dir = kind == FileKind::Directory;
    match (dir, write, security) {
        (false, false, false) => Action::FRdAtt,
        (false, false, true) => Action::FRdSec,
        (false, true, false) => Action::FWrAtt,
        (false, true, true) => Action::FChgSec,
        (true, false, _) => Action::DRdAtt,
        (true, true, false) => Action::DWrAtt,
        (true, true, true) => Action::DChgSec,
    }
}

/// A policy refusal (EACCES) as EPERM, for operations POSIX refuses with
/// EPERM (chmod, chown, utimes with explicit times).
fn eperm(e: Errno) -> Errno {
    if e == Errno::EACCES { Errno::EPERM } else { e }
}

fn is_security_xattr(name: &OsStr) -> bool {
    name.as_bytes().starts_with(b"security.") || name.as_bytes().starts_with(b"system.posix_acl")
}

fn is_private(name: &OsStr) -> bool {
    name.as_bytes().starts_with(PRIVATE_XATTR_PREFIX)
}

fn timespec(t: SetTime) -> nix::sys::time::TimeSpec {
    match t {
        SetTime::Now => nix::sys::time::TimeSpec::UTIME_NOW,
        SetTime::At(t) => {
            let (s, n) = match t.duration_since(UNIX_EPOCH) {
                Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
                Err(e) => {
                    let d = e.duration();
                    let mut s = -(d.as_secs() as i64);
                    let mut n = -(d.subsec_nanos() as i64);
                    if n < 0 {
                        s -= 1;
                        n += 1_000_000_000;
                    }
                    (s, n)
                }
            };
            nix::sys::time::TimeSpec::new(s, n)
        }
    }
}

impl Stack {
    /// Look `name` up in `parent` for `c`: its attributes are read with
    /// `f_rd_att`/`d_rd_att` (decided and audited when `audit`, else
    /// probed), and, when views are isolated, the caller's read decision
    /// picks the inode it reaches (a refused reader reaches the plaintext
    /// inode, which it cannot open). The read decision is a probe, not an
    /// operation: it is not audited (the open is).
    fn lookup_as(&self, c: &Caller, p: &Node, name: &OsStr, audit: bool) -> VfsResult<Entry> {
        if self.cfg.access.generation() == 0 {
            return self.do_lookup(p, name, &RuleKey::Default);
        }
        let path = self.child_path(p, name)?;
        self.lookup_at(c, p, name, &path, audit)
    }

    /// [`Stack::lookup_as`] with the child's path (relative to the
    /// GuardPoint) already known; a policy is loaded.
    fn lookup_at(
        &self,
        c: &Caller,
        p: &Node,
        name: &OsStr,
        path: &[u8],
        audit: bool,
    ) -> VfsResult<Entry> {
        let rule = self.cfg.access.rule_at(path);
        self.lookup_view(p, name, &rule, |kind, _key| {
            let action = attr_action(kind, false, false);
            if audit {
                self.cfg.access.check(c, path, action)?;
            } else {
                self.cfg.access.probe(c, path, action)?;
            }
            if kind == FileKind::Regular && self.cfg.access.isolated() {
                return Ok(match self.cfg.access.probe(c, path, Action::FRd) {
                    Ok(g) => g.view,
                    Err(_) => View::Plain,
                });
            }
            Ok(View::Plain)
        })
    }
}

impl VnodeOps for Stack {
    fn lookup(&self, c: &Caller, parent: Ino, name: &OsStr) -> VfsResult<Entry> {
        check_name(name)?;
        reserved(parent, name, Errno::ENOENT)?;
        let p = self.nodes.get(parent)?;
        self.lookup_as(c, &p, name, true)
    }

    fn forget(&self, ino: Ino, nlookup: u64) {
        self.nodes.forget(ino, nlookup);
    }

    /// Not the attributes of a retired node: every use of them asks
    /// secfs again (and is refused once it is revoked).
    fn attrs_cacheable(&self, ino: Ino) -> bool {
        self.nodes
            .get(ino)
            .is_ok_and(|n| n.standing() == Standing::Live)
    }

    fn getattr(&self, c: &Caller, ino: Ino, fh: Option<Fh>) -> VfsResult<Attr> {
        let node = self.nodes.get(ino)?;
        // The kernel asks with the handle (FUSE_GETATTR_FH) before a
        // write(2) in writeback-cache mode: refused on a revoked node, so
        // nothing is written into its page cache.
        self.gate(&node, fh)?;
        // Reading attributes is f_rd_att / d_rd_att (browsing applies).
        let g = self.check_node(c, &node, attr_action(node.kind, false, false))?;
        let st = self.stat_node(&node)?;
        Ok(self.attr_of(&node, &st, &g.key))
    }

    fn setattr(&self, c: &Caller, ino: Ino, set: &SetAttr) -> VfsResult<Attr> {
        let node = self.nodes.get(ino)?;
        self.gate(&node, set.fh)?;
        // chmod, chown and utimes that the policy refuses fail as POSIX
        // has them fail for a caller without the right: EPERM.
        if set.mode.is_some() || set.uid.is_some() || set.gid.is_some() {
            self.check_node(c, &node, attr_action(node.kind, true, true))
                .map_err(eperm)?;
        }
        // With the writeback cache the kernel keeps a file's times itself
        // and sends the modification time of writes through a handle open
        // for writing (mtime only, with that handle): part of the writes
        // that handle was granted (f_wr or f_wr_app), decided again as the
        // handle is, not as a change of attributes. Refusing it would fail
        // the writes themselves (the kernel reports EIO).
        let write_times = set.mtime.is_some()
            && set.atime.is_none()
            && set.mode.is_none()
            && set.uid.is_none()
            && set.gid.is_none()
            && set.size.is_none()
            && set.fh.is_some_and(|fh| {
                self.with_file(fh, |f| {
                    if !f.writes || f.view != View::Plain {
                        return Err(Errno::EACCES);
                    }
                    // As opened, without looking at the caller: the kernel
                    // sends these from the writer's context, also while it
                    // is in execve closing its close-on-exec files (see
                    // `Access::recheck`).
                    self.recheck(f, true)
                })
                .is_ok()
            });
        if (set.atime.is_some() || set.mtime.is_some()) && !write_times {
            // Setting the times to "now" needs only write access in POSIX
            // (EACCES); explicit times need ownership (EPERM).
            let explicit = [set.atime, set.mtime]
                .iter()
                .any(|t| matches!(t, Some(SetTime::At(_))));
            self.check_node(c, &node, attr_action(node.kind, true, false))
                .map_err(|e| if explicit { eperm(e) } else { e })?;
        }
        let mut grant = None;
        if set.size.is_some() {
            // Truncation changes contents: a write (never an append), in
            // the plaintext view.
            let g = self.check_node(c, &node, Action::FWr)?;
            if g.view != View::Plain || node.view != View::Plain {
                return Err(Errno::EACCES);
            }
            grant = Some(g);
        }
        let rule = match &grant {
            Some(g) => g.key.clone(),
            None if node.kind == FileKind::Regular => self.node_rule(&node)?,
            None => RuleKey::Default,
        };
        if let Some(mode) = set.mode {
            if node.kind == FileKind::Symlink {
                return Err(Errno::EOPNOTSUPP);
            }
            nix::sys::stat::fchmodat(
                self.proc_fd.as_fd(),
                node.fd.as_raw_fd().to_string().as_str(),
                StatMode::from_bits_truncate(mode & 0o7777),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )?;
        }
        if set.uid.is_some() || set.gid.is_some() {
            nix::unistd::fchownat(
                node.fd(),
                c"",
                set.uid.map(nix::unistd::Uid::from_raw),
                set.gid.map(nix::unistd::Gid::from_raw),
                AtFlags::AT_EMPTY_PATH,
            )?;
        }
        if let Some(size) = set.size {
            if node.kind != FileKind::Regular {
                return Err(Errno::EINVAL);
            }
            let (h, own) = self.writable_fd(&node, set.fh)?;
            let fd = match (&h, &own) {
                (Some(h), _) => handle_fd(h)?,
                (None, Some(fd)) => fd.as_fd(),
                (None, None) => return Err(Errno::EBADF),
            };
            let f = node.file();
            let io = self.io(&node, fd, &rule);
            // A file refused under its key rule can only be emptied (see
            // `FileState::resize`); one loaded under another key rule is
            // left alone.
            if f.load(&io)? == file::Load::OtherRule {
                return Err(Errno::EIO);
            }
            f.truncate(&io, size)?;
            // Truncation kills privileges like a write; the kernel's own
            // flag for it is not passed through, so a caller other than
            // root (CAP_FSETID) loses the set-id bits.
            f.kill_privs(fd, c.uid != 0)?;
        }
        if set.atime.is_some() || set.mtime.is_some() {
            let omit = nix::sys::time::TimeSpec::UTIME_OMIT;
            let a = set.atime.map(timespec).unwrap_or(omit);
            let m = set.mtime.map(timespec).unwrap_or(omit);
            // Through the magic link: for a symlink node it resolves to the
            // symlink itself, so this sets the symlink's own times.
            nix::sys::stat::utimensat(
                self.proc_fd.as_fd(),
                node.fd.as_raw_fd().to_string().as_str(),
                &a,
                &m,
                nix::sys::stat::UtimensatFlags::FollowSymlink,
            )?;
        }
        let st = self.stat_node(&node)?;
        Ok(self.attr_of(&node, &st, &rule))
    }

    fn readlink(&self, c: &Caller, ino: Ino) -> VfsResult<Vec<u8>> {
        let node = self.nodes.get(ino)?;
        // A symlink's target is its contents: f_rd.
        self.check_node(c, &node, Action::FRd)?;
        Ok(std::os::unix::ffi::OsStringExt::into_vec(
            nix::fcntl::readlinkat(node.fd(), c"")?,
        ))
    }

    fn mknod(
        &self,
        c: &Caller,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        rdev: u32,
    ) -> VfsResult<Entry> {
        check_name(name)?;
        reserved(parent, name, Errno::EPERM)?;
        let p = self.nodes.get(parent)?;
        let kind = SFlag::from_bits_truncate(mode & libc::S_IFMT);
        let perm = StatMode::from_bits_truncate(mode & 0o7777);
        let grant = self.check_child(c, &p, name, Action::FCre)?;
        // A new regular file gets a header with the key: only for a
        // caller granted the key (or under clear_key, where it stays
        // headerless).
        if kind == SFlag::S_IFREG && grant.view != View::Plain {
            return Err(Errno::EACCES);
        }
        self.as_caller(c, &p, || {
            Ok(nix::sys::stat::mknodat(
                p.fd(),
                name,
                kind,
                perm,
                rdev as libc::dev_t,
            )?)
        })?;
        let e = self.do_lookup(&p, name, &grant.key)?;
        if kind == SFlag::S_IFREG {
            let node = self.nodes.get(e.ino)?;
            let fd = self.reopen(&node, OFlag::O_RDWR)?;
            node.file()
                .create_header(&self.io(&node, fd.as_fd(), &grant.key))?;
            return Ok(Entry {
                attr: self.attr_of(&node, &self.stat_node(&node)?, &grant.key),
                ..e
            });
        }
        Ok(e)
    }

    fn mkdir(&self, c: &Caller, parent: Ino, name: &OsStr, mode: u32) -> VfsResult<Entry> {
        check_name(name)?;
        reserved(parent, name, Errno::EPERM)?;
        let p = self.nodes.get(parent)?;
        self.check_child(c, &p, name, Action::DMkdir)?;
        self.as_caller(c, &p, || {
            Ok(nix::sys::stat::mkdirat(
                p.fd(),
                name,
                StatMode::from_bits_truncate(mode & 0o7777),
            )?)
        })?;
        self.do_lookup(&p, name, &RuleKey::Default)
    }

    fn unlink(&self, c: &Caller, parent: Ino, name: &OsStr) -> VfsResult<()> {
        check_name(name)?;
        reserved(parent, name, Errno::ENOENT)?;
        let p = self.nodes.get(parent)?;
        self.check_child(c, &p, name, Action::FRm)?;
        Ok(nix::unistd::unlinkat(
            p.fd(),
            name,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        )?)
    }

    fn rmdir(&self, c: &Caller, parent: Ino, name: &OsStr) -> VfsResult<()> {
        check_name(name)?;
        reserved(parent, name, Errno::ENOENT)?;
        let p = self.nodes.get(parent)?;
        self.check_child(c, &p, name, Action::DRmdir)?;
        Ok(nix::unistd::unlinkat(
            p.fd(),
            name,
            nix::unistd::UnlinkatFlags::RemoveDir,
        )?)
    }

    fn symlink(&self, c: &Caller, parent: Ino, name: &OsStr, target: &Path) -> VfsResult<Entry> {
        check_name(name)?;
        reserved(parent, name, Errno::EPERM)?;
        let p = self.nodes.get(parent)?;
        self.check_child(c, &p, name, Action::FLink)?;
        self.as_caller(c, &p, || Ok(nix::unistd::symlinkat(target, p.fd(), name)?))?;
        self.do_lookup(&p, name, &RuleKey::Default)
    }

    fn rename(
        &self,
        c: &Caller,
        parent: Ino,
        name: &OsStr,
        new_parent: Ino,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> VfsResult<()> {
        check_name(name)?;
        check_name(new_name)?;
        reserved(parent, name, Errno::ENOENT)?;
        reserved(new_parent, new_name, Errno::EPERM)?;
        let p = self.nodes.get(parent)?;
        let np = self.nodes.get(new_parent)?;
        let f = nix::fcntl::RenameFlags::from_bits(flags.0).ok_or(Errno::EINVAL)?;
        if self.cfg.access.generation() != 0 {
            let is_dir = |dir: &Node, name: &OsStr| {
                nix::sys::stat::fstatat(dir.fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map(|st| FileKind::from_mode(st.st_mode) == FileKind::Directory)
            };
            let dir = is_dir(&p, name)?;
            let action = if dir { Action::DRen } else { Action::FRen };
            self.check_child(c, &p, name, action)?;
            self.check_child(c, &np, new_name, action)?;
            // An exchange moves the destination too.
            let dir = dir
                || (f.contains(nix::fcntl::RenameFlags::RENAME_EXCHANGE) && is_dir(&np, new_name)?);
            self.same_key_rules(&p, name, &np, new_name, dir)?;
        }
        Ok(nix::fcntl::renameat2(p.fd(), name, np.fd(), new_name, f)?)
    }

    fn link(&self, c: &Caller, ino: Ino, new_parent: Ino, new_name: &OsStr) -> VfsResult<Entry> {
        check_name(new_name)?;
        reserved(new_parent, new_name, Errno::EPERM)?;
        let node = self.nodes.get(ino)?;
        let np = self.nodes.get(new_parent)?;
        self.check_node(c, &node, Action::FLink)?;
        let grant = self.check_child(c, &np, new_name, Action::FLink)?;
        if self.cfg.access.generation() != 0 {
            let from = self.rel_path(&node)?;
            let to = self.child_path(&np, new_name)?;
            if !self.cfg.access.same_key_rules(&from, &to, false) {
                return Err(exdev(&from, &to));
            }
        }
        nix::unistd::linkat(node.fd(), c"", np.fd(), new_name, AtFlags::AT_EMPTY_PATH)?;
        self.do_lookup(&np, new_name, &grant.key)
    }

    fn open(&self, c: &Caller, ino: Ino, flags: i32) -> VfsResult<Opened> {
        let node = self.nodes.get(ino)?;
        if node.kind != FileKind::Regular {
            return Err(Errno::EINVAL);
        }
        // A retired node is reached only through a dentry the kernel
        // cached before the reload: ESTALE makes it look the path up
        // again (and reach the fresh node).
        self.gate(&node, None)?;
        let grant = self.decide_open(c, &node, flags)?;
        self.open_node(c, node, flags, grant)
    }

    fn create(
        &self,
        c: &Caller,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> VfsResult<(Entry, Opened)> {
        check_name(name)?;
        reserved(parent, name, Errno::EPERM)?;
        let p = self.nodes.get(parent)?;
        let perm = StatMode::from_bits_truncate(mode & 0o7777);
        let grant = self.check_child(c, &p, name, Action::FCre)?;
        if grant.view != View::Plain {
            return Err(Errno::EACCES);
        }
        let created = match self.as_caller(c, &p, || {
            Ok(nix::sys::stat::mknodat(
                p.fd(),
                name,
                SFlag::S_IFREG,
                perm,
                0,
            )?)
        }) {
            Ok(()) => true,
            Err(Errno(libc::EEXIST)) if flags & libc::O_EXCL == 0 => false,
            Err(e) => return Err(e),
        };
        let rule = grant.key;
        let e = self.do_lookup(&p, name, &rule)?;
        let node = self.nodes.get(e.ino)?;
        if node.kind != FileKind::Regular {
            self.nodes.forget(e.ino, 1);
            return Err(Errno::EISDIR);
        }
        if created {
            let fd = self.reopen(&node, OFlag::O_RDWR)?;
            node.file()
                .create_header(&self.io(&node, fd.as_fd(), &rule))?;
        }
        // Creating is f_cre; the open that comes with it is decided like
        // any open (f_wr for writing, f_rd for reading), whether the name
        // was created now or existed already.
        let open_flags = if created {
            flags & !libc::O_TRUNC
        } else {
            flags
        };
        let grant = match self.decide_open(c, &node, open_flags) {
            Ok(g) => g,
            Err(err) => {
                self.nodes.forget(e.ino, 1);
                return Err(err);
            }
        };
        let opened = match self.open_node(c, node.clone(), flags, grant) {
            Ok(o) => o,
            Err(err) => {
                self.nodes.forget(e.ino, 1);
                return Err(err);
            }
        };
        let attr = self.attr_of(&node, &self.stat_node(&node)?, &rule);
        Ok((Entry { attr, ..e }, opened))
    }

    fn read(&self, c: &Caller, _ino: Ino, fh: Fh, offset: u64, buf: &mut [u8]) -> VfsResult<usize> {
        self.with_file(fh, |f| {
            self.recheck(f, c.pid == 0)?;
            if f.view == View::Raw {
                return file::pread_full(f.fd.as_fd(), buf, offset);
            }
            f.node
                .file()
                .read(&self.io(&f.node, f.fd.as_fd(), &f.rule), offset, buf)
        })
    }

    fn write(
        &self,
        c: &Caller,
        _ino: Ino,
        fh: Fh,
        offset: u64,
        data: &[u8],
        kill_suidgid: bool,
    ) -> VfsResult<usize> {
        self.with_file(fh, |f| {
            self.recheck(f, c.pid == 0)?;
            if f.view != View::Plain {
                return Err(Errno::EACCES);
            }
            f.node.file().kill_privs(f.fd.as_fd(), kill_suidgid)?;
            let io = self.io(&f.node, f.fd.as_fd(), &f.rule);
            if f.append_only {
                if let Some(n) = f.node.file().append(&io, offset, data)? {
                    return Ok(n);
                }
                // Anywhere but at the end (O_APPEND cleared with fcntl,
                // then pwrite): a write, which the opener was not granted.
                self.writes_granted(f, c.pid == 0)?;
            }
            f.node.file().write(&io, offset, data)
        })
    }

    fn flush(&self, _c: &Caller, _ino: Ino, _fh: Fh) -> VfsResult<()> {
        // Nothing happens at close(2): data is written through (or by the
        // kernel's writeback before it flushes), locks are the kernel's.
        // ENOSYS tells the kernel so once, and it stops sending FLUSH,
        // which saves a round trip per close.
        Err(Errno::ENOSYS)
    }

    fn release(&self, _ino: Ino, fh: Fh) -> VfsResult<()> {
        self.handles
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh.0);
        Ok(())
    }

    fn fsync(&self, _c: &Caller, _ino: Ino, fh: Fh, datasync: bool) -> VfsResult<()> {
        let (h, node) = self.file_handle(fh)?;
        self.gate(&node, Some(fh))?;
        let fd = handle_fd(&h)?;
        if datasync {
            nix::unistd::fdatasync(fd)?;
        } else {
            nix::unistd::fsync(fd)?;
        }
        Ok(())
    }

    fn opendir(&self, c: &Caller, ino: Ino) -> VfsResult<Opened> {
        let node = self.nodes.get(ino)?;
        if node.kind != FileKind::Directory {
            return Err(Errno::ENOTDIR);
        }
        self.check_node(c, &node, Action::DRd)?;
        let fh = self.add_handle(Handle::Dir {
            node,
            entries: Mutex::new(None),
        });
        Ok(Opened {
            fh,
            keep_cache: false,
            direct_io: false,
            passthrough: false,
        })
    }

    fn readdir(
        &self,
        c: &Caller,
        _ino: Ino,
        fh: Fh,
        offset: u64,
        plus: bool,
        sink: &mut dyn DirSink,
    ) -> VfsResult<()> {
        let h = self.handle(fh)?;
        let Handle::Dir { node, entries } = &*h else {
            return Err(Errno::ENOTDIR);
        };
        let mut entries = entries.lock().unwrap_or_else(|e| e.into_inner());
        if offset == 0 || entries.is_none() {
            // Snapshot the directory; offsets are indexes into it.
            let fd = nix::fcntl::openat(
                node.fd(),
                c".",
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                StatMode::empty(),
            )?;
            let mut dir = nix::dir::Dir::from_fd(fd)?;
            let mut v = Vec::new();
            for ent in dir.iter() {
                let ent = ent?;
                let name = OsStr::from_bytes(ent.file_name().to_bytes()).to_owned();
                if reserved(node.ino, &name, Errno::ENOENT).is_err() {
                    continue;
                }
                let kind = match ent.file_type() {
                    Some(t) => match t {
                        nix::dir::Type::Directory => FileKind::Directory,
                        nix::dir::Type::Symlink => FileKind::Symlink,
                        nix::dir::Type::Fifo => FileKind::Fifo,
                        nix::dir::Type::Socket => FileKind::Socket,
                        nix::dir::Type::CharacterDevice => FileKind::CharDevice,
                        nix::dir::Type::BlockDevice => FileKind::BlockDevice,
                        nix::dir::Type::File => FileKind::Regular,
                    },
                    None => nix::sys::stat::fstatat(
                        node.fd(),
                        name.as_os_str(),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                    .map(|st| FileKind::from_mode(st.st_mode))
                    .unwrap_or(FileKind::Regular),
                };
                v.push(DirRec {
                    name,
                    st_ino: ent.ino(),
                    kind,
                });
            }
            *entries = Some(v);
        }
        let list = entries.as_ref().map(|v| &v[..]).unwrap_or(&[]);
        // Policies name paths: the directory's, once per call.
        let dir_path = if plus && self.cfg.access.generation() != 0 {
            Some(self.rel_path(node)?)
        } else {
            None
        };
        for (i, rec) in list.iter().enumerate().skip(offset as usize) {
            let de = DirEntry {
                st_ino: rec.st_ino,
                offset: i as u64 + 1,
                kind: rec.kind,
                name: &rec.name,
            };
            let dot = rec.name == "." || rec.name == "..";
            if plus && !dot {
                // Every entry of a READDIRPLUS reply creates (or updates) a
                // kernel inode, so it carries that inode's true attributes:
                // each is a lookup for the lister, choosing its view as a
                // lookup would (see `access`), without an audit record. An
                // entry whose attributes the lister may not read still gets
                // the plaintext inode's true attributes, as any lookup
                // would show them (the kernel has no way to list a name
                // without an inode in a READDIRPLUS reply).
                let looked = match &dir_path {
                    Some(dp) => {
                        let mut path = dp.clone();
                        if path != b"/" {
                            path.push(b'/');
                        }
                        path.extend_from_slice(rec.name.as_bytes());
                        match self.lookup_at(c, node, &rec.name, &path, false) {
                            Err(Errno::EACCES) => {
                                let rule = self.cfg.access.rule_at(&path);
                                self.do_lookup(node, &rec.name, &rule)
                            }
                            r => r,
                        }
                    }
                    None => self.do_lookup(node, &rec.name, &RuleKey::Default),
                };
                let e = match looked {
                    Ok(e) => e,
                    Err(Errno(libc::ENOENT)) => continue, // removed since the snapshot
                    // Refused by name (a lower hard link under another key
                    // rule): left out of this listing rather than failing
                    // the whole listing; a lookup of it fails the same way.
                    Err(Errno::EIO) => continue,
                    Err(e) => return Err(e),
                };
                if sink.add(&de, Some(&e)) {
                    self.nodes.forget(e.ino, 1);
                    break;
                }
            } else if sink.add(&de, None) {
                break;
            }
        }
        Ok(())
    }

    fn releasedir(&self, _ino: Ino, fh: Fh) -> VfsResult<()> {
        self.handles
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh.0);
        Ok(())
    }

    fn fsyncdir(&self, _c: &Caller, ino: Ino, _fh: Fh, datasync: bool) -> VfsResult<()> {
        let node = self.nodes.get(ino)?;
        let fd = nix::fcntl::openat(
            node.fd(),
            c".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            StatMode::empty(),
        )?;
        if datasync {
            nix::unistd::fdatasync(fd.as_fd())?;
        } else {
            nix::unistd::fsync(fd.as_fd())?;
        }
        Ok(())
    }

    fn statfs(&self, _c: &Caller, ino: Ino) -> VfsResult<StatFs> {
        let node = self.nodes.get(ino)?;
        let s = nix::sys::statvfs::fstatvfs(node.fd())?;
        Ok(StatFs {
            blocks: s.blocks(),
            bfree: s.blocks_free(),
            bavail: s.blocks_available(),
            files: s.files(),
            ffree: s.files_free(),
            bsize: s.block_size() as u32,
            namelen: s.name_max() as u32,
            frsize: s.fragment_size() as u32,
        })
    }

    fn setxattr(
        &self,
        c: &Caller,
        ino: Ino,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> VfsResult<()> {
        let node = self.xattr_node(c, ino, name, true, Errno::EPERM)?;
        self.xattrs(node.fd()).setxattr(name, value, flags)?;
        if node.kind == FileKind::Regular && name.as_bytes() == b"security.capability" {
            node.file().caps_may_exist();
        }
        Ok(())
    }

    fn getxattr(&self, c: &Caller, ino: Ino, name: &OsStr) -> VfsResult<Vec<u8>> {
        let node = self.xattr_node(c, ino, name, false, Errno::ENODATA)?;
        self.xattrs(node.fd()).getxattr(name)
    }

    fn listxattr(&self, c: &Caller, ino: Ino) -> VfsResult<Vec<u8>> {
        let node = self.nodes.get(ino)?;
        self.check_node(c, &node, attr_action(node.kind, false, false))?;
        let raw = self.xattrs(node.fd()).listxattr()?;
        let mut out = Vec::with_capacity(raw.len());
        for n in raw.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            if !n.starts_with(PRIVATE_XATTR_PREFIX) {
                out.extend_from_slice(n);
                out.push(0);
            }
        }
        Ok(out)
    }

    fn removexattr(&self, c: &Caller, ino: Ino, name: &OsStr) -> VfsResult<()> {
        let node = self.xattr_node(c, ino, name, true, Errno::EPERM)?;
        self.xattrs(node.fd()).removexattr(name)
    }

    fn fallocate(
        &self,
        c: &Caller,
        _ino: Ino,
        fh: Fh,
        offset: u64,
        len: u64,
        mode: i32,
    ) -> VfsResult<()> {
        self.with_file(fh, |f| {
            self.recheck(f, c.pid == 0)?;
            if f.view != View::Plain || !f.writes {
                return Err(Errno::EACCES);
            }
            // Allocating, punching, zeroing, collapsing, inserting: none
            // of them is an append.
            if f.append_only {
                self.writes_granted(f, c.pid == 0)?;
            }
            f.node
                .file()
                .fallocate(&self.io(&f.node, f.fd.as_fd(), &f.rule), offset, len, mode)
        })
    }

    fn lseek(&self, _c: &Caller, _ino: Ino, fh: Fh, offset: u64, whence: Whence) -> VfsResult<u64> {
        self.with_file(fh, |f| {
            self.gate(&f.node, Some(fh))?;
            if f.view == View::Raw {
                let w = match whence {
                    Whence::Data => nix::unistd::Whence::SeekData,
                    Whence::Hole => nix::unistd::Whence::SeekHole,
                };
                return Ok(nix::unistd::lseek(f.fd.as_fd(), offset as i64, w)? as u64);
            }
            f.node.file().lseek(f.fd.as_fd(), offset, whence)
        })
    }

    fn inherits_acl(&self, dir: Ino) -> bool {
        let Ok(node) = self.nodes.get(dir) else {
            return false;
        };
        node.kind == FileKind::Directory
            && self
                .xattrs(node.fd())
                .getxattr(OsStr::new("system.posix_acl_default"))
                .is_ok_and(|v| !v.is_empty())
    }

    fn backing_fd(&self, fh: Fh) -> Option<OwnedFd> {
        let h = self.handle(fh).ok()?;
        match &*h {
            Handle::File(f) => f.fd.try_clone().ok(),
            Handle::Dir { .. } => None,
        }
    }

    fn ioctl(
        &self,
        c: &Caller,
        ino: Ino,
        fh: Fh,
        cmd: u32,
        input: &[u8],
        out_size: u32,
    ) -> VfsResult<(i32, Vec<u8>)> {
        self.transform_ioctl(c, ino, fh, cmd, input, out_size)
    }
}
