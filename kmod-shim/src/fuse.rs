//! The FUSE binding: adapts `fuser` requests to [`VnodeOps`] calls. This is
//! the only module that knows FUSE types.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    BackingId, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::vfs::{self, Caller, DirSink, Fh, Ino, SetAttr, SetTime, VnodeOps};

/// Largest read or write request (1 MiB).
pub const MAX_IO: u32 = 1 << 20;

/// Tuning of one mount.
#[derive(Debug, Clone, Copy)]
pub struct FuseOptions {
    /// Let the kernel cache writes (FUSE writeback cache).
    pub writeback_cache: bool,
    /// Negotiate FUSE passthrough (the kernel refuses it together with
    /// the writeback cache, so this wins over `writeback_cache`).
    pub passthrough: bool,
    /// How long the kernel may cache attributes and entries.
    pub ttl: Duration,
}

impl Default for FuseOptions {
    fn default() -> Self {
        FuseOptions {
            writeback_cache: true,
            passthrough: false,
            ttl: Duration::from_secs(1),
        }
    }
}

/// A [`VnodeOps`] implementation served over FUSE.
pub struct FuseBinding<V: VnodeOps> {
    ops: Arc<V>,
    opts: FuseOptions,
    /// Passthrough backing files, one per inode while it has passthrough
    /// handles open (the kernel wants the same backing id for every open of
    /// an inode), counted by handle.
    backing: std::sync::Mutex<std::collections::HashMap<u64, (Arc<BackingId>, usize)>>,
    /// Which handles hold a backing reference, and on which inode.
    backed: std::sync::Mutex<std::collections::HashMap<u64, u64>>,
}

impl<V: VnodeOps> FuseBinding<V> {
    pub fn new(ops: Arc<V>, mut opts: FuseOptions) -> Self {
        if opts.passthrough {
            opts.writeback_cache = false;
        }
        FuseBinding {
            ops,
            opts,
            backing: Default::default(),
            backed: Default::default(),
        }
    }

    /// The permission bits of a new object in `parent`: the caller's umask
    /// applies unless the directory has a default ACL, which the lower
    /// file system applies instead (POSIX; with FUSE_DONT_MASK the kernel
    /// leaves both to the file system, and without it has masked already,
    /// so masking again changes nothing).
    fn masked(&self, parent: INodeNo, mode: u32, umask: u32) -> u32 {
        if self.ops.inherits_acl(Ino(parent.0)) {
            mode
        } else {
            mode & !(umask & 0o777)
        }
    }

    /// The backing id for a passthrough open of `ino` by handle `fh`.
    fn backing_for(
        &self,
        ino: u64,
        fh: Fh,
        open: impl FnOnce(std::os::fd::OwnedFd) -> io::Result<BackingId>,
    ) -> Option<Arc<BackingId>> {
        let mut map = self.backing.lock().unwrap_or_else(|e| e.into_inner());
        let id = match map.get_mut(&ino) {
            Some((id, n)) => {
                *n += 1;
                id.clone()
            }
            None => {
                let fd = self.ops.backing_fd(fh)?;
                let id = Arc::new(
                    open(fd)
                        .map_err(|e| log::warn!("secfs: passthrough refused: {e}"))
                        .ok()?,
                );
                map.insert(ino, (id.clone(), 1));
                id
            }
        };
        self.backed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fh.0, ino);
        Some(id)
    }

    /// How long the kernel may keep the attributes of `ino`.
    fn attr_ttl(&self, ino: Ino) -> Duration {
        if self.ops.attrs_cacheable(ino) {
            self.opts.ttl
        } else {
            Duration::ZERO
        }
    }

    /// Drop the backing reference of handle `fh`, if it has one.
    fn release_backing(&self, fh: u64) {
        let Some(ino) = self
            .backed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh)
        else {
            return;
        };
        let mut map = self.backing.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, n)) = map.get_mut(&ino) {
            *n -= 1;
            if *n == 0 {
                map.remove(&ino);
            }
        }
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

fn errno(e: vfs::Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e.0)
}

fn kind(k: vfs::FileKind) -> FileType {
    match k {
        vfs::FileKind::Regular => FileType::RegularFile,
        vfs::FileKind::Directory => FileType::Directory,
        vfs::FileKind::Symlink => FileType::Symlink,
        vfs::FileKind::Fifo => FileType::NamedPipe,
        vfs::FileKind::Socket => FileType::Socket,
        vfs::FileKind::CharDevice => FileType::CharDevice,
        vfs::FileKind::BlockDevice => FileType::BlockDevice,
    }
}

/// FUSE reports the node id as st_ino; the stacking layer makes node ids
/// equal the lower inode numbers wherever it can.
fn attr(ino: Ino, a: &vfs::Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino.0),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: SystemTime::UNIX_EPOCH,
        kind: kind(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: 0,
    }
}

fn open_flags(o: &vfs::Opened) -> FopenFlags {
    let mut f = FopenFlags::empty();
    if o.keep_cache {
        f |= FopenFlags::FOPEN_KEEP_CACHE;
    }
    if o.direct_io {
        f |= FopenFlags::FOPEN_DIRECT_IO;
    }
    f
}

fn set_time(t: TimeOrNow) -> SetTime {
    match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(t) => SetTime::At(t),
    }
}

thread_local! {
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

struct PlainSink<'a> {
    reply: &'a mut ReplyDirectory,
}

impl DirSink for PlainSink<'_> {
    fn add(&mut self, e: &vfs::DirEntry<'_>, _plus: Option<&vfs::Entry>) -> bool {
        self.reply
            .add(INodeNo(e.st_ino), e.offset, kind(e.kind), e.name)
    }
}

struct PlusSink<'a> {
    reply: &'a mut ReplyDirectoryPlus,
    ttl: Duration,
}

impl DirSink for PlusSink<'_> {
    fn add(&mut self, e: &vfs::DirEntry<'_>, plus: Option<&vfs::Entry>) -> bool {
        match plus {
            Some(p) => {
                let a = attr(p.ino, &p.attr);
                let ttl = if p.cacheable {
                    self.ttl
                } else {
                    Duration::ZERO
                };
                self.reply.add(
                    INodeNo(p.ino.0),
                    e.offset,
                    e.name,
                    &ttl,
                    &a,
                    Generation(p.generation),
                )
            }
            None => {
                // "." and "..": node id 0 tells the kernel not to
                // instantiate an inode for the entry.
                let a = FileAttr {
                    ino: INodeNo(e.st_ino),
                    size: 0,
                    blocks: 0,
                    atime: SystemTime::UNIX_EPOCH,
                    mtime: SystemTime::UNIX_EPOCH,
                    ctime: SystemTime::UNIX_EPOCH,
                    crtime: SystemTime::UNIX_EPOCH,
                    kind: kind(e.kind),
                    perm: 0,
                    nlink: 0,
                    uid: 0,
                    gid: 0,
                    rdev: 0,
                    blksize: 0,
                    flags: 0,
                };
                self.reply.add(
                    INodeNo(0),
                    e.offset,
                    e.name,
                    &Duration::ZERO,
                    &a,
                    Generation(0),
                )
            }
        }
    }
}

impl<V: VnodeOps + 'static> Filesystem for FuseBinding<V> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.set_max_write(MAX_IO);
        if self.opts.passthrough {
            // The lower filesystem is one level below this one.
            let ok = config.set_max_stack_depth(1).is_ok()
                && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok();
            if !ok {
                log::warn!("secfs: kernel lacks FUSE passthrough; clear files go through secfs");
                self.opts.passthrough = false;
            }
        }
        let _ = config.set_max_background(64);
        let wanted = [
            (InitFlags::FUSE_WRITEBACK_CACHE, self.opts.writeback_cache),
            (InitFlags::FUSE_DO_READDIRPLUS, true),
            (InitFlags::FUSE_READDIRPLUS_AUTO, true),
            (InitFlags::FUSE_PARALLEL_DIROPS, true),
            (InitFlags::FUSE_CACHE_SYMLINKS, true),
            // dataxform's ioctl is sent on a directory.
            (InitFlags::FUSE_HAS_IOCTL_DIR, true),
            // secfs clears set-id bits and file capabilities itself on write
            // and truncate, which spares the kernel a GETXATTR round trip
            // for security.capability on every write(2). (Files that carry
            // either are never opened in passthrough, see the stack.)
            (InitFlags::FUSE_HANDLE_KILLPRIV_V2, true),
            // POSIX ACLs of the lower files are enforced by the kernel
            // (with default_permissions), which fetches them through
            // getxattr; new objects get a directory's default ACL from
            // the lower file system, so the umask is applied here, and
            // only where there is none (see `masked`).
            (InitFlags::FUSE_POSIX_ACL, true),
            (InitFlags::FUSE_DONT_MASK, true),
        ];
        for (flag, on) in wanted {
            if on && let Err(e) = config.add_capabilities(flag) {
                log::warn!("secfs: kernel lacks FUSE capability {e:?}");
            }
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.ops.lookup(&caller(req), Ino(parent.0), name) {
            Ok(e) => reply.entry(
                &entry_ttl(&self.opts, &e),
                &entry_attr(&e),
                Generation(e.generation),
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.ops.forget(Ino(ino.0), nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self
            .ops
            .getattr(&caller(req), Ino(ino.0), fh.map(|f| Fh(f.0)))
        {
            Ok(a) => reply.attr(&self.attr_ttl(Ino(ino.0)), &attr(Ino(ino.0), &a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(set_time),
            mtime: mtime.map(set_time),
            fh: fh.map(|f| Fh(f.0)),
        };
        match self.ops.setattr(&caller(req), Ino(ino.0), &set) {
            Ok(a) => reply.attr(&self.attr_ttl(Ino(ino.0)), &attr(Ino(ino.0), &a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.ops.readlink(&caller(req), Ino(ino.0)) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let mode = self.masked(parent, mode, umask);
        match self
            .ops
            .mknod(&caller(req), Ino(parent.0), name, mode, rdev)
        {
            Ok(e) => reply.entry(
                &entry_ttl(&self.opts, &e),
                &entry_attr(&e),
                Generation(e.generation),
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mode = self.masked(parent, mode, umask);
        match self.ops.mkdir(&caller(req), Ino(parent.0), name, mode) {
            Ok(e) => reply.entry(
                &entry_ttl(&self.opts, &e),
                &entry_attr(&e),
                Generation(e.generation),
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.ops.unlink(&caller(req), Ino(parent.0), name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.ops.rmdir(&caller(req), Ino(parent.0), name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        match self
            .ops
            .symlink(&caller(req), Ino(parent.0), link_name, target)
        {
            Ok(e) => reply.entry(
                &entry_ttl(&self.opts, &e),
                &entry_attr(&e),
                Generation(e.generation),
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        let f = vfs::RenameFlags(flags.bits());
        match self.ops.rename(
            &caller(req),
            Ino(parent.0),
            name,
            Ino(newparent.0),
            newname,
            f,
        ) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        match self
            .ops
            .link(&caller(req), Ino(ino.0), Ino(newparent.0), newname)
        {
            Ok(e) => reply.entry(
                &entry_ttl(&self.opts, &e),
                &entry_attr(&e),
                Generation(e.generation),
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.ops.open(&caller(req), Ino(ino.0), flags.0) {
            Ok(o) if o.passthrough && self.opts.passthrough => {
                match self.backing_for(ino.0, o.fh, |fd| reply.open_backing(fd)) {
                    Some(id) => reply.opened_passthrough(FileHandle(o.fh.0), open_flags(&o), &id),
                    None => reply.opened(FileHandle(o.fh.0), open_flags(&o)),
                }
            }
            Ok(o) => reply.opened(FileHandle(o.fh.0), open_flags(&o)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let size = size.min(MAX_IO) as usize;
        READ_BUF.with(|b| {
            let mut b = b.borrow_mut();
            if b.len() < size {
                b.resize(size, 0);
            }
            match self
                .ops
                .read(&caller(req), Ino(ino.0), Fh(fh.0), offset, &mut b[..size])
            {
                Ok(n) => reply.data(&b[..n]),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let kill = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        match self
            .ops
            .write(&caller(req), Ino(ino.0), Fh(fh.0), offset, data, kill)
        {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        match self.ops.flush(&caller(req), Ino(ino.0), Fh(fh.0)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.release_backing(fh.0);
        match self.ops.release(Ino(ino.0), Fh(fh.0)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.ops.fsync(&caller(req), Ino(ino.0), Fh(fh.0), datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.ops.opendir(&caller(req), Ino(ino.0)) {
            Ok(o) => reply.opened(FileHandle(o.fh.0), open_flags(&o)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut sink = PlainSink { reply: &mut reply };
        match self
            .ops
            .readdir(&caller(req), Ino(ino.0), Fh(fh.0), offset, false, &mut sink)
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let mut sink = PlusSink {
            reply: &mut reply,
            ttl: self.opts.ttl,
        };
        match self
            .ops
            .readdir(&caller(req), Ino(ino.0), Fh(fh.0), offset, true, &mut sink)
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        match self.ops.releasedir(Ino(ino.0), Fh(fh.0)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self
            .ops
            .fsyncdir(&caller(req), Ino(ino.0), Fh(fh.0), datasync)
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        match self.ops.statfs(&caller(req), Ino(ino.0)) {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        match self
            .ops
            .setxattr(&caller(req), Ino(ino.0), name, value, flags)
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.ops.getxattr(&caller(req), Ino(ino.0), name) {
            Ok(v) => xattr_reply(reply, size, &v),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.ops.listxattr(&caller(req), Ino(ino.0)) {
            Ok(v) => xattr_reply(reply, size, &v),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.ops.removexattr(&caller(req), Ino(ino.0), name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mode = self.masked(parent, mode, umask);
        match self
            .ops
            .create(&caller(req), Ino(parent.0), name, mode, flags)
        {
            Ok((e, o)) if o.passthrough && self.opts.passthrough => {
                let ttl = entry_ttl(&self.opts, &e);
                match self.backing_for(e.ino.0, o.fh, |fd| reply.open_backing(fd)) {
                    Some(id) => reply.created_passthrough(
                        &ttl,
                        &entry_attr(&e),
                        Generation(e.generation),
                        FileHandle(o.fh.0),
                        open_flags(&o),
                        &id,
                    ),
                    None => reply.created(
                        &ttl,
                        &entry_attr(&e),
                        Generation(e.generation),
                        FileHandle(o.fh.0),
                        open_flags(&o),
                    ),
                }
            }
            Ok((e, o)) => reply.created(
                &entry_ttl(&self.opts, &e),
                &entry_attr(&e),
                Generation(e.generation),
                FileHandle(o.fh.0),
                open_flags(&o),
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn ioctl(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: fuser::IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        match self
            .ops
            .ioctl(&caller(req), Ino(ino.0), Fh(fh.0), cmd, in_data, out_size)
        {
            Ok((r, d)) => reply.ioctl(r, &d),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        match self
            .ops
            .fallocate(&caller(req), Ino(ino.0), Fh(fh.0), offset, length, mode)
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn lseek(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        // With the writeback cache the kernel holds writes the stacking
        // layer has not seen yet, so only the kernel knows where data ends:
        // ENOSYS makes it answer SEEK_DATA/SEEK_HOLE itself (all data up to
        // its EOF), which is correct, if not sparse-aware.
        if self.opts.writeback_cache {
            return reply.error(fuser::Errno::ENOSYS);
        }
        let w = match whence {
            libc::SEEK_DATA => vfs::Whence::Data,
            libc::SEEK_HOLE => vfs::Whence::Hole,
            _ => return reply.error(fuser::Errno::EINVAL),
        };
        if offset < 0 {
            return reply.error(fuser::Errno::ENXIO);
        }
        match self
            .ops
            .lseek(&caller(req), Ino(ino.0), Fh(fh.0), offset as u64, w)
        {
            Ok(o) => reply.offset(o as i64),
            Err(e) => reply.error(errno(e)),
        }
    }
}

/// The attributes of an entry.
fn entry_attr(e: &vfs::Entry) -> FileAttr {
    attr(e.ino, &e.attr)
}

/// How long the kernel may keep an entry.
fn entry_ttl(opts: &FuseOptions, e: &vfs::Entry) -> Duration {
    if e.cacheable {
        opts.ttl
    } else {
        Duration::ZERO
    }
}

fn xattr_reply(reply: ReplyXattr, size: u32, v: &[u8]) {
    if size == 0 {
        reply.size(v.len() as u32);
    } else if v.len() > size as usize {
        reply.error(fuser::Errno::from_i32(libc::ERANGE));
    } else {
        reply.data(v);
    }
}
