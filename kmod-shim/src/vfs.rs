//! The VFS interception interface: a vnode-operations table.
//!
//! This is the seam between an OS binding (today FUSE, in `fuse.rs`) and the
//! stacking layer that implements GuardPoint semantics (`stack/`). It is
//! shaped like the kernel's inode and file operations and uses only plain
//! types: no FUSE types appear below the binding, and no crypto types
//! appear in this interface.
//!
//! Inodes are identified by [`Ino`] node ids that the implementation hands
//! out in [`Entry`] replies and that the binding counts with `forget`,
//! exactly as the kernel's lookup counts work.

use std::ffi::OsStr;
use std::fmt;
use std::path::Path;
use std::time::SystemTime;

/// A node id handed to the kernel. `Ino::ROOT` is the GuardPoint's root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ino(pub u64);

impl Ino {
    /// The root directory of the mount.
    pub const ROOT: Ino = Ino(1);
}

/// An open file or directory handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Fh(pub u64);

/// A positive errno value; the only error type of this interface.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    pub const EPERM: Errno = Errno(libc::EPERM);
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    pub const EIO: Errno = Errno(libc::EIO);
    pub const EBADF: Errno = Errno(libc::EBADF);
    pub const EACCES: Errno = Errno(libc::EACCES);
    pub const EEXIST: Errno = Errno(libc::EEXIST);
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    pub const EFBIG: Errno = Errno(libc::EFBIG);
    pub const ENOSPC: Errno = Errno(libc::ENOSPC);
    pub const ENOSYS: Errno = Errno(libc::ENOSYS);
    pub const ENOTTY: Errno = Errno(libc::ENOTTY);
    pub const ENODATA: Errno = Errno(libc::ENODATA);
    pub const ENXIO: Errno = Errno(libc::ENXIO);
    pub const EOPNOTSUPP: Errno = Errno(libc::EOPNOTSUPP);
    pub const ERANGE: Errno = Errno(libc::ERANGE);
    pub const ENOTDIR: Errno = Errno(libc::ENOTDIR);
    pub const EISDIR: Errno = Errno(libc::EISDIR);
    pub const ENOMEM: Errno = Errno(libc::ENOMEM);

    /// The errno of the last failed libc call on this thread.
    pub fn last() -> Errno {
        Errno(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        )
    }
}

impl From<nix::errno::Errno> for Errno {
    fn from(e: nix::errno::Errno) -> Errno {
        Errno(e as i32)
    }
}

impl From<std::io::Error> for Errno {
    fn from(e: std::io::Error) -> Errno {
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", nix::errno::Errno::from_raw(self.0))
    }
}

/// Result of a vnode operation.
pub type VfsResult<T> = Result<T, Errno>;

/// Who is asking: taken from the request, never from the file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

impl Caller {
    /// The mount's own administrative caller (tests, internal work).
    pub const ROOT: Caller = Caller {
        uid: 0,
        gid: 0,
        pid: 0,
    };
}

/// The type of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl FileKind {
    /// The kind of an `st_mode`.
    pub fn from_mode(mode: u32) -> FileKind {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => FileKind::Directory,
            libc::S_IFLNK => FileKind::Symlink,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFSOCK => FileKind::Socket,
            libc::S_IFCHR => FileKind::CharDevice,
            libc::S_IFBLK => FileKind::BlockDevice,
            _ => FileKind::Regular,
        }
    }
}

/// Attributes of a file as the application sees them (logical size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// The inode number `stat` reports (the lower file's).
    pub st_ino: u64,
    pub size: u64,
    pub blocks: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub kind: FileKind,
    /// Permission bits including setuid/setgid/sticky.
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
}

/// A looked-up or created directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub ino: Ino,
    pub attr: Attr,
    pub generation: u64,
    /// Whether the kernel may cache this name-to-inode answer. False when
    /// the answer depends on who asks (views isolated per caller).
    pub cacheable: bool,
}

/// How the kernel may cache an opened file's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Opened {
    pub fh: Fh,
    /// Keep the page cache from earlier opens (the file did not change
    /// behind the kernel's back).
    pub keep_cache: bool,
    /// Bypass the page cache for this handle.
    pub direct_io: bool,
    /// Let the kernel do this handle's I/O on the lower file directly
    /// (FUSE passthrough); the binding gets the fd from `backing_fd`.
    pub passthrough: bool,
}

/// A time to set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTime {
    Now,
    At(SystemTime),
}

/// Attribute changes of a `setattr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
    pub fh: Option<Fh>,
}

/// `rename` flags (RENAME_NOREPLACE, RENAME_EXCHANGE), as in renameat2(2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RenameFlags(pub u32);

/// Filesystem statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

/// One directory entry for `readdir`.
#[derive(Debug, Clone, Copy)]
pub struct DirEntry<'a> {
    pub st_ino: u64,
    /// Cookie to resume after this entry.
    pub offset: u64,
    pub kind: FileKind,
    pub name: &'a OsStr,
}

/// Where `readdir` puts entries. `add` returns true when the reply is full;
/// the entry was then not added. With `plus`, `entry` carries a lookup the
/// sink now owns (counted as one lookup).
pub trait DirSink {
    fn add(&mut self, entry: &DirEntry<'_>, plus: Option<&Entry>) -> bool;
}

/// `lseek` whence values the interface supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whence {
    Data,
    Hole,
}

/// The vnode operations. Every method is called concurrently from several
/// worker threads. An operation a filesystem does not implement answers
/// ENOSYS (ENOTTY for ioctl), as a kernel filesystem without the method
/// would; the stacking layer implements every one.
#[allow(unused_variables)] // default bodies ignore their arguments
pub trait VnodeOps: Send + Sync {
    fn lookup(&self, c: &Caller, parent: Ino, name: &OsStr) -> VfsResult<Entry>;
    fn forget(&self, ino: Ino, nlookup: u64);
    fn getattr(&self, c: &Caller, ino: Ino, fh: Option<Fh>) -> VfsResult<Attr>;
    /// Whether the kernel may cache the attributes of `ino` for the
    /// mount's attribute lifetime (else it asks again on every use).
    fn attrs_cacheable(&self, ino: Ino) -> bool {
        true
    }
    fn setattr(&self, c: &Caller, ino: Ino, set: &SetAttr) -> VfsResult<Attr> {
        Err(Errno::ENOSYS)
    }
    fn readlink(&self, c: &Caller, ino: Ino) -> VfsResult<Vec<u8>> {
        Err(Errno::ENOSYS)
    }
    fn mknod(
        &self,
        c: &Caller,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        rdev: u32,
    ) -> VfsResult<Entry> {
        Err(Errno::ENOSYS)
    }
    fn mkdir(&self, c: &Caller, parent: Ino, name: &OsStr, mode: u32) -> VfsResult<Entry> {
        Err(Errno::ENOSYS)
    }
    fn unlink(&self, c: &Caller, parent: Ino, name: &OsStr) -> VfsResult<()> {
        Err(Errno::ENOSYS)
    }
    fn rmdir(&self, c: &Caller, parent: Ino, name: &OsStr) -> VfsResult<()> {
        Err(Errno::ENOSYS)
    }
    fn symlink(&self, c: &Caller, parent: Ino, name: &OsStr, target: &Path) -> VfsResult<Entry> {
        Err(Errno::ENOSYS)
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
        Err(Errno::ENOSYS)
    }
    fn link(&self, c: &Caller, ino: Ino, new_parent: Ino, new_name: &OsStr) -> VfsResult<Entry> {
        Err(Errno::ENOSYS)
    }
    fn open(&self, c: &Caller, ino: Ino, flags: i32) -> VfsResult<Opened>;
    fn create(
        &self,
        c: &Caller,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> VfsResult<(Entry, Opened)> {
        Err(Errno::ENOSYS)
    }
    /// Read up to `buf.len()` bytes at `offset`; returns the count (short at EOF).
    fn read(&self, c: &Caller, ino: Ino, fh: Fh, offset: u64, buf: &mut [u8]) -> VfsResult<usize> {
        Err(Errno::ENOSYS)
    }
    /// Write `data` at `offset`. `kill_suidgid`: the kernel asks to clear
    /// set-user-id and set-group-id bits (the writer lacks CAP_FSETID).
    fn write(
        &self,
        c: &Caller,
        ino: Ino,
        fh: Fh,
        offset: u64,
        data: &[u8],
        kill_suidgid: bool,
    ) -> VfsResult<usize> {
        Err(Errno::ENOSYS)
    }
    fn flush(&self, c: &Caller, ino: Ino, fh: Fh) -> VfsResult<()> {
        Err(Errno::ENOSYS)
    }
    fn release(&self, ino: Ino, fh: Fh) -> VfsResult<()>;
    fn fsync(&self, c: &Caller, ino: Ino, fh: Fh, datasync: bool) -> VfsResult<()> {
        Err(Errno::ENOSYS)
    }
    fn opendir(&self, c: &Caller, ino: Ino) -> VfsResult<Opened>;
    fn readdir(
        &self,
        c: &Caller,
        ino: Ino,
        fh: Fh,
        offset: u64,
        plus: bool,
        sink: &mut dyn DirSink,
    ) -> VfsResult<()>;
    fn releasedir(&self, ino: Ino, fh: Fh) -> VfsResult<()>;
    fn fsyncdir(&self, c: &Caller, ino: Ino, fh: Fh, datasync: bool) -> VfsResult<()> {
        Err(Errno::ENOSYS)
    }
    fn statfs(&self, c: &Caller, ino: Ino) -> VfsResult<StatFs> {
        Ok(StatFs::default())
    }
    fn setxattr(
        &self,
        c: &Caller,
        ino: Ino,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> VfsResult<()> {
        Err(Errno::ENOSYS)
    }
    fn getxattr(&self, c: &Caller, ino: Ino, name: &OsStr) -> VfsResult<Vec<u8>> {
        Err(Errno::ENOSYS)
    }
    /// The NUL-separated list of attribute names.
    fn listxattr(&self, c: &Caller, ino: Ino) -> VfsResult<Vec<u8>> {
        Ok(Vec::new())
    }
    fn removexattr(&self, c: &Caller, ino: Ino, name: &OsStr) -> VfsResult<()> {
        Err(Errno::ENOSYS)
    }
    fn fallocate(
        &self,
        c: &Caller,
        ino: Ino,
        fh: Fh,
        offset: u64,
        len: u64,
        mode: i32,
    ) -> VfsResult<()> {
        Err(Errno::ENOSYS)
    }
    fn lseek(&self, c: &Caller, ino: Ino, fh: Fh, offset: u64, whence: Whence) -> VfsResult<u64> {
        Err(Errno::ENOSYS)
    }
    /// Whether new objects in the directory `dir` take their permissions
    /// from its default POSIX ACL, so the creator's umask does not apply
    /// (as on the lower file system).
    fn inherits_acl(&self, dir: Ino) -> bool {
        false
    }
    /// A duplicate of the lower fd of an open file, for passthrough.
    fn backing_fd(&self, fh: Fh) -> Option<std::os::fd::OwnedFd> {
        None
    }
    /// Returns (result, output bytes).
    fn ioctl(
        &self,
        c: &Caller,
        ino: Ino,
        fh: Fh,
        cmd: u32,
        input: &[u8],
        out_size: u32,
    ) -> VfsResult<(i32, Vec<u8>)> {
        Err(Errno::ENOTTY)
    }
}
