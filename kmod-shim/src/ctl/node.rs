//! The control node: a one-file filesystem that the secfs service mounts
//! on a root-only directory (by default `/run/guardfs/ctl`). Its single
//! file, `control`, does nothing but take the channel's ioctls, which go
//! to the [`Service`] together with the caller's pid and uid as the kernel
//! reports them in the FUSE request (they cannot be forged by the caller).

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::ctl::service::Service;
use crate::vfs::{
    Attr, Caller, DirEntry, DirSink, Entry, Errno, Fh, FileKind, Ino, Opened, VfsResult, VnodeOps,
};

/// Name of the control file inside the mounted directory.
pub const CONTROL_FILE: &str = "control";
const CONTROL_INO: Ino = Ino(2);

/// The control node's vnode operations.
#[derive(Debug)]
pub struct ControlNode {
    service: Arc<Service>,
    started: SystemTime,
}

impl ControlNode {
    pub fn new(service: Arc<Service>) -> ControlNode {
        ControlNode {
            service,
            started: SystemTime::now(),
        }
    }

    fn attr(&self, ino: Ino) -> VfsResult<Attr> {
        let (kind, perm, nlink) = match ino {
            Ino::ROOT => (FileKind::Directory, 0o700, 2),
            CONTROL_INO => (FileKind::Regular, 0o600, 1),
            _ => return Err(Errno::ENOENT),
        };
        Ok(Attr {
            st_ino: ino.0,
            size: 0,
            blocks: 0,
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
        })
    }
}

impl VnodeOps for ControlNode {
    fn lookup(&self, _c: &Caller, parent: Ino, name: &OsStr) -> VfsResult<Entry> {
        if parent != Ino::ROOT || name != CONTROL_FILE {
            return Err(Errno::ENOENT);
        }
        Ok(Entry {
            ino: CONTROL_INO,
            attr: self.attr(CONTROL_INO)?,
            generation: 0,
            cacheable: true,
        })
    }

    fn forget(&self, _ino: Ino, _nlookup: u64) {}

    fn getattr(&self, _c: &Caller, ino: Ino, _fh: Option<Fh>) -> VfsResult<Attr> {
        self.attr(ino)
    }

    fn open(&self, c: &Caller, ino: Ino, _flags: i32) -> VfsResult<Opened> {
        // The kernel checks the 0600 root mode too (default_permissions).
        if ino != CONTROL_INO {
            return Err(Errno::EISDIR);
        }
        if c.uid != 0 {
            return Err(Errno::EACCES);
        }
        Ok(Opened {
            direct_io: true,
            ..Opened::default()
        })
    }

    fn read(
        &self,
        _c: &Caller,
        _ino: Ino,
        _fh: Fh,
        _offset: u64,
        _buf: &mut [u8],
    ) -> VfsResult<usize> {
        Ok(0)
    }

    fn flush(&self, _c: &Caller, _ino: Ino, _fh: Fh) -> VfsResult<()> {
        Ok(())
    }

    fn release(&self, _ino: Ino, _fh: Fh) -> VfsResult<()> {
        Ok(())
    }

    fn opendir(&self, _c: &Caller, ino: Ino) -> VfsResult<Opened> {
        if ino != Ino::ROOT {
            return Err(Errno::ENOTDIR);
        }
        Ok(Opened::default())
    }

    fn readdir(
        &self,
        _c: &Caller,
        ino: Ino,
        _fh: Fh,
        offset: u64,
        plus: bool,
        sink: &mut dyn DirSink,
    ) -> VfsResult<()> {
        if ino != Ino::ROOT {
            return Err(Errno::ENOTDIR);
        }
        let entries = [
            (1, FileKind::Directory, "."),
            (1, FileKind::Directory, ".."),
            (CONTROL_INO.0, FileKind::Regular, CONTROL_FILE),
        ];
        for (i, (st_ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            let e = DirEntry {
                st_ino,
                offset: i as u64 + 1,
                kind,
                name: OsStr::new(name),
            };
            let entry = match plus && st_ino == CONTROL_INO.0 {
                true => Some(self.lookup(&Caller::ROOT, Ino::ROOT, OsStr::new(CONTROL_FILE))?),
                false => None,
            };
            if sink.add(&e, entry.as_ref()) {
                break;
            }
        }
        Ok(())
    }

    fn releasedir(&self, _ino: Ino, _fh: Fh) -> VfsResult<()> {
        Ok(())
    }

    fn ioctl(
        &self,
        c: &Caller,
        ino: Ino,
        _fh: Fh,
        cmd: u32,
        input: &[u8],
        out_size: u32,
    ) -> VfsResult<(i32, Vec<u8>)> {
        if ino != CONTROL_INO {
            return Err(Errno::ENOTTY);
        }
        let out = self.service.handle(c.pid, c.uid, cmd, input)?;
        if out.len() > out_size as usize {
            return Err(Errno::EINVAL);
        }
        Ok((0, out))
    }
}
