//! The raw mount syscalls behind attaching a GuardPoint in other places:
//! `open_tree(OPEN_TREE_CLONE)`, `move_mount`, and doing either in another
//! mount namespace from a forked child. The only `unsafe` of [`super`].
//!
//! A multithreaded process cannot `setns` into a mount namespace (its
//! `fs_struct` is shared), so the work in another namespace is done by a
//! child from `fork`, which runs only async-signal-safe raw syscalls
//! (`setns`, `statx`, `move_mount`, `umount2`, `_exit`) on data prepared
//! before the fork, then exits with 0 or the errno.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;

const OPEN_TREE_CLONE: libc::c_uint = 1;
const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x0000_0004;

fn cpath(p: &Path) -> Result<CString, Errno> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

/// A detached copy of the mount at `path` (its root dentry is the object
/// at `path`: a subdirectory gives a bind of that subdirectory).
pub fn clone_tree(path: &Path) -> Result<OwnedFd, Errno> {
    let c = cpath(path)?;
    // SAFETY: NUL-terminated path; the call returns a new fd or -1.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC,
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `r` is a new fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(r as libc::c_int) })
}

/// Attach the detached tree `tree` at `target` in this process's mount
/// namespace.
pub fn attach_here(tree: BorrowedFd<'_>, target: &Path) -> Result<(), Errno> {
    let t = cpath(target)?;
    // SAFETY: valid fd; NUL-terminated strings (the empty source path with
    // MOVE_MOUNT_F_EMPTY_PATH names the fd itself).
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// The mount id of the object at `target` (statx `STATX_MNT_ID`, without
/// asking a FUSE server: `AT_STATX_DONT_SYNC`).
pub fn mnt_id_here(target: &Path) -> Result<u64, Errno> {
    let t = cpath(target)?;
    // SAFETY: zeroed statx is a valid value of a plain C struct.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: NUL-terminated path; `stx` is writable.
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::AT_STATX_DONT_SYNC | libc::AT_NO_AUTOMOUNT | libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_MNT_ID,
            &mut stx,
        )
    };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(stx.stx_mnt_id)
    }
}

/// Detach the mount at `target` in this namespace if it is mount `id`.
pub fn detach_here(target: &Path, id: u64) -> Result<(), Errno> {
    if mnt_id_here(target)? != id {
        return Err(Errno::ESTALE);
    }
    nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH)
}

/// What the child does in the other namespace.
enum Job<'a> {
    Attach(BorrowedFd<'a>),
    Detach(u64),
}

/// Run `job` at `target` inside the mount namespace `ns` (an fd on
/// `/proc/PID/ns/mnt`) from a forked child.
fn in_ns(ns: BorrowedFd<'_>, target: &Path, job: Job<'_>) -> Result<(), Errno> {
    let t = cpath(target)?;
    let nsfd = ns.as_raw_fd();
    let (tree, id) = match job {
        Job::Attach(fd) => (fd.as_raw_fd(), 0),
        Job::Detach(id) => (-1, id),
    };
    // SAFETY: between fork and _exit the child only issues raw syscalls on
    // values computed before the fork (fds, a NUL-terminated path, a
    // zeroed statx buffer on its own stack); it never allocates, locks or
    // returns into Rust code of the parent's threads.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Errno::last());
    }
    if pid == 0 {
        // SAFETY: see above; each call is async-signal-safe.
        unsafe {
            if libc::syscall(libc::SYS_setns, nsfd, libc::CLONE_NEWNS) < 0 {
                child_fail();
            }
            if tree >= 0 {
                if libc::syscall(
                    libc::SYS_move_mount,
                    tree,
                    c"".as_ptr(),
                    libc::AT_FDCWD,
                    t.as_ptr(),
                    MOVE_MOUNT_F_EMPTY_PATH,
                ) < 0
                {
                    child_fail();
                }
            } else {
                let mut stx: libc::statx = std::mem::zeroed();
                if libc::syscall(
                    libc::SYS_statx,
                    libc::AT_FDCWD,
                    t.as_ptr(),
                    libc::AT_STATX_DONT_SYNC | libc::AT_NO_AUTOMOUNT | libc::AT_SYMLINK_NOFOLLOW,
                    libc::STATX_MNT_ID,
                    &mut stx as *mut libc::statx,
                ) < 0
                {
                    child_fail();
                }
                if stx.stx_mnt_id != id {
                    libc::_exit(libc::ESTALE);
                }
                if libc::syscall(libc::SYS_umount2, t.as_ptr(), libc::MNT_DETACH) < 0 {
                    child_fail();
                }
            }
            libc::_exit(0);
        }
    }
    let pid = nix::unistd::Pid::from_raw(pid);
    loop {
        match nix::sys::wait::waitpid(pid, None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => return Ok(()),
            Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => return Err(Errno::from_raw(c)),
            Ok(nix::sys::wait::WaitStatus::Signaled(..)) => return Err(Errno::EINTR),
            Ok(_) => continue,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// In the forked child: exit with the last errno.
fn child_fail() -> ! {
    // SAFETY: reading this thread's errno and exiting are async-signal-safe.
    unsafe {
        let e = *libc::__errno_location();
        libc::_exit(if e > 0 && e < 256 { e } else { 255 })
    }
}

/// Attach `tree` at `target` in the mount namespace `ns`.
pub fn attach_in(ns: BorrowedFd<'_>, tree: BorrowedFd<'_>, target: &Path) -> Result<(), Errno> {
    in_ns(ns, target, Job::Attach(tree))
}

/// Detach mount `id` at `target` in the mount namespace `ns`.
pub fn detach_in(ns: BorrowedFd<'_>, target: &Path, id: u64) -> Result<(), Errno> {
    in_ns(ns, target, Job::Detach(id))
}

/// Device ("major:minor") and inode of the object an fd refers to, from
/// statx without asking a FUSE server (`AT_STATX_DONT_SYNC`).
pub fn dev_ino(fd: BorrowedFd<'_>) -> Result<(String, u64), Errno> {
    // SAFETY: zeroed statx is a valid value of a plain C struct.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd; empty NUL-terminated path with AT_EMPTY_PATH names
    // the fd itself; `stx` is writable.
    let r = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_DONT_SYNC | libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_TYPE | libc::STATX_INO,
            &mut stx,
        )
    };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok((
            format!("{}:{}", stx.stx_dev_major, stx.stx_dev_minor),
            stx.stx_ino,
        ))
    }
}

/// The mount table (`/proc/self/mountinfo` text, in the namespace root's
/// frame) of the mount namespace `ns`, read by a forked child that enters
/// it: for namespaces no process is in (pinned by a bind-mounted nsfs
/// file). At most 4 MiB.
pub fn mountinfo_in(ns: BorrowedFd<'_>) -> Result<String, Errno> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let nsfd = ns.as_raw_fd();
    let wfd = w.as_raw_fd();
    // The child's buffer, allocated before the fork.
    let mut buf = vec![0u8; 64 * 1024];
    let bufp = buf.as_mut_ptr();
    let cap = buf.len();
    // SAFETY: between fork and _exit the child only issues raw syscalls
    // (setns, open, read, write, _exit) on values computed before the fork
    // (fds, a static NUL-terminated path, a buffer allocated before the
    // fork); it never allocates, locks or returns into Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Errno::last());
    }
    if pid == 0 {
        // SAFETY: see above; each call is async-signal-safe.
        unsafe {
            if libc::syscall(libc::SYS_setns, nsfd, libc::CLONE_NEWNS) < 0 {
                child_fail();
            }
            let fd = libc::open(
                c"/proc/thread-self/mountinfo".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            );
            if fd < 0 {
                child_fail();
            }
            loop {
                let n = libc::read(fd, bufp.cast(), cap);
                if n < 0 {
                    child_fail();
                }
                if n == 0 {
                    break;
                }
                let mut off = 0isize;
                while off < n {
                    let m = libc::write(wfd, bufp.offset(off).cast(), (n - off) as usize);
                    if m <= 0 {
                        child_fail();
                    }
                    off += m;
                }
            }
            libc::_exit(0);
        }
    }
    drop(w);
    let mut out = Vec::new();
    let mut f = std::fs::File::from(r);
    use std::io::Read;
    let read = f.by_ref().take(4 << 20).read_to_end(&mut out);
    let pid = nix::unistd::Pid::from_raw(pid);
    let status = loop {
        match nix::sys::wait::waitpid(pid, None) {
            Err(Errno::EINTR) => continue,
            other => break other,
        }
    };
    drop(buf);
    read.map_err(|_| Errno::EIO)?;
    match status {
        Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => {
            String::from_utf8(out).map_err(|_| Errno::EILSEQ)
        }
        Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => Err(Errno::from_raw(c)),
        Ok(_) => Err(Errno::EINTR),
        Err(e) => Err(e),
    }
}
