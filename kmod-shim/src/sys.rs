//! Syscalls that `nix` does not wrap the way the stacking layer needs them:
//! extended attributes on open fds and on `O_PATH` fds (see [`ProcLink`]),
//! and per-thread credentials. Every `unsafe` block of the crate is in this
//! module.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::vfs::{Errno, VfsResult};

fn cstr(s: &OsStr) -> VfsResult<CString> {
    CString::new(s.as_bytes()).map_err(|_| Errno::EINVAL)
}

/// Grow `buf` and call `f` until the value fits. `f` returns the size
/// needed (when passed an empty buffer) or the bytes written.
fn sized_read(mut f: impl FnMut(&mut [u8]) -> isize) -> VfsResult<Vec<u8>> {
    loop {
        let need = f(&mut []);
        if need < 0 {
            return Err(Errno::last());
        }
        let mut buf = vec![0u8; need as usize];
        let got = f(&mut buf);
        if got < 0 {
            let e = Errno::last();
            if e == Errno::ERANGE {
                continue; // it grew between the two calls
            }
            return Err(e);
        }
        buf.truncate(got as usize);
        return Ok(buf);
    }
}

// The `*xattrat` syscalls (Linux 6.13) have these numbers on every
// architecture (they were added after the syscall tables were unified);
// the `libc` crate (0.2.191) defines them only for m68k.
const SYS_SETXATTRAT: libc::c_long = 463;
const SYS_GETXATTRAT: libc::c_long = 464;
const SYS_LISTXATTRAT: libc::c_long = 465;
const SYS_REMOVEXATTRAT: libc::c_long = 466;

/// `struct xattr_args` of `<linux/xattr.h>` (`XATTR_ARGS_SIZE_VER0`).
#[repr(C)]
struct XattrArgs {
    /// `__aligned_u64`: a pointer to the value buffer.
    value: u64,
    size: u32,
    /// `XATTR_CREATE` / `XATTR_REPLACE` for setxattrat; 0 for getxattrat.
    flags: u32,
}

/// The size of [`XattrArgs`] as the syscalls take it.
const XATTR_ARGS_SIZE: usize = std::mem::size_of::<XattrArgs>();

/// `getxattrat(2)`: `name` of `path` relative to `dirfd`.
pub fn getxattrat(
    dirfd: BorrowedFd<'_>,
    path: &CStr,
    at_flags: libc::c_int,
    name: &OsStr,
) -> VfsResult<Vec<u8>> {
    let name = cstr(name)?;
    sized_read(|buf| {
        let mut args = XattrArgs {
            value: buf.as_mut_ptr() as u64,
            size: u32::try_from(buf.len()).unwrap_or(u32::MAX),
            flags: 0,
        };
        // SAFETY: valid fd for the call's duration; NUL-terminated path
        // and name; `args` points at `buf` (possibly empty, which only
        // queries the size) with its length, and its own size is passed.
        unsafe {
            libc::syscall(
                SYS_GETXATTRAT,
                libc::c_long::from(dirfd.as_raw_fd()),
                path.as_ptr(),
                libc::c_long::from(at_flags),
                name.as_ptr(),
                &mut args as *mut XattrArgs,
                XATTR_ARGS_SIZE,
            ) as isize
        }
    })
}

/// `setxattrat(2)`: set `name` of `path` relative to `dirfd` to `value`
/// (`flags`: `XATTR_CREATE`, `XATTR_REPLACE`).
pub fn setxattrat(
    dirfd: BorrowedFd<'_>,
    path: &CStr,
    at_flags: libc::c_int,
    name: &OsStr,
    value: &[u8],
    flags: i32,
) -> VfsResult<()> {
    let name = cstr(name)?;
    let args = XattrArgs {
        value: value.as_ptr() as u64,
        size: u32::try_from(value.len()).map_err(|_| Errno(libc::E2BIG))?,
        flags: flags as u32,
    };
    // SAFETY: valid fd for the call's duration; NUL-terminated path and
    // name; `args` describes `value` (only read) and its own size is passed.
    let r = unsafe {
        libc::syscall(
            SYS_SETXATTRAT,
            libc::c_long::from(dirfd.as_raw_fd()),
            path.as_ptr(),
            libc::c_long::from(at_flags),
            name.as_ptr(),
            &args as *const XattrArgs,
            XATTR_ARGS_SIZE,
        )
    };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// `listxattrat(2)`: the NUL-separated attribute names of `path` relative
/// to `dirfd`.
pub fn listxattrat(
    dirfd: BorrowedFd<'_>,
    path: &CStr,
    at_flags: libc::c_int,
) -> VfsResult<Vec<u8>> {
    sized_read(|buf| {
        // SAFETY: valid fd for the call's duration; NUL-terminated path;
        // buffer pointer and length describe `buf`.
        unsafe {
            libc::syscall(
                SYS_LISTXATTRAT,
                libc::c_long::from(dirfd.as_raw_fd()),
                path.as_ptr(),
                libc::c_long::from(at_flags),
                buf.as_mut_ptr(),
                buf.len(),
            ) as isize
        }
    })
}

/// `removexattrat(2)`: remove `name` of `path` relative to `dirfd`.
pub fn removexattrat(
    dirfd: BorrowedFd<'_>,
    path: &CStr,
    at_flags: libc::c_int,
    name: &OsStr,
) -> VfsResult<()> {
    let name = cstr(name)?;
    // SAFETY: valid fd for the call's duration; NUL-terminated path and name.
    let r = unsafe {
        libc::syscall(
            SYS_REMOVEXATTRAT,
            libc::c_long::from(dirfd.as_raw_fd()),
            path.as_ptr(),
            libc::c_long::from(at_flags),
            name.as_ptr(),
        )
    };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// Whether the kernel has the `*xattrat` syscalls: assumed until one
/// answers ENOSYS (a kernel before 6.13), then never tried again.
static XATTRAT: AtomicBool = AtomicBool::new(true);

/// Run `at` (a `*xattrat` call) unless the kernel lacks those syscalls,
/// else `path` (the equivalent path call).
fn at_or_path<T>(
    at: impl FnOnce() -> VfsResult<T>,
    path: impl FnOnce() -> VfsResult<T>,
) -> VfsResult<T> {
    if XATTRAT.load(Ordering::Relaxed) {
        match at() {
            Err(Errno(libc::ENOSYS)) => XATTRAT.store(false, Ordering::Relaxed),
            r => return r,
        }
    }
    path()
}

/// The extended attributes of the object an `O_PATH` fd refers to.
///
/// No syscall takes an `O_PATH` fd for xattrs: `f*xattr` refuse it
/// (EBADF), and so does the fd form of `*xattrat` (empty path with
/// `AT_EMPTY_PATH`: the kernel gets the file with `fdget`, which skips
/// `O_PATH` files; EBADF on 6.18). What works is the fd's magic link in
/// `/proc/self/fd`, which resolves to the object itself (for a symlink
/// node, the symlink, not its target). So these calls are `*xattrat`
/// relative to an fd on the `/proc/self/fd` directory with the fd's number
/// as the path, following the link (`AT_SYMLINK_NOFOLLOW` would name the
/// magic link itself); on kernels without `*xattrat` (before 6.13, probed
/// once) the path calls on `/proc/self/fd/N`, which resolve the same way.
#[derive(Clone, Copy, Debug)]
pub struct ProcLink<'a> {
    /// An fd on `/proc/self/fd` (any access mode, `O_PATH` is enough).
    dir: BorrowedFd<'a>,
    fd: RawFd,
}

impl<'a> ProcLink<'a> {
    /// The object `fd` refers to, reached through `proc_dir` (an fd on this
    /// process's `/proc/self/fd`).
    pub fn new(proc_dir: BorrowedFd<'a>, fd: BorrowedFd<'a>) -> ProcLink<'a> {
        ProcLink {
            dir: proc_dir,
            fd: fd.as_raw_fd(),
        }
    }

    /// The fd's name in `/proc/self/fd`.
    fn name(&self) -> CString {
        // A decimal number never holds a NUL.
        CString::new(self.fd.to_string()).unwrap_or_default()
    }

    /// `/proc/self/fd/N`, for the path calls.
    fn path(&self) -> CString {
        CString::new(format!("/proc/self/fd/{}", self.fd)).unwrap_or_default()
    }

    pub fn getxattr(&self, name: &OsStr) -> VfsResult<Vec<u8>> {
        at_or_path(
            || getxattrat(self.dir, &self.name(), 0, name),
            || getxattr(&self.path(), name),
        )
    }

    pub fn setxattr(&self, name: &OsStr, value: &[u8], flags: i32) -> VfsResult<()> {
        at_or_path(
            || setxattrat(self.dir, &self.name(), 0, name, value, flags),
            || setxattr(&self.path(), name, value, flags),
        )
    }

    pub fn listxattr(&self) -> VfsResult<Vec<u8>> {
        at_or_path(
            || listxattrat(self.dir, &self.name(), 0),
            || listxattr(&self.path()),
        )
    }

    pub fn removexattr(&self, name: &OsStr) -> VfsResult<()> {
        at_or_path(
            || removexattrat(self.dir, &self.name(), 0, name),
            || removexattr(&self.path(), name),
        )
    }
}

/// `getxattr(2)` on a path (following a final magic link, as `/proc/self/fd/N` needs).
pub fn getxattr(path: &CStr, name: &OsStr) -> VfsResult<Vec<u8>> {
    let name = cstr(name)?;
    sized_read(|buf| {
        // SAFETY: both strings are NUL-terminated; the buffer pointer and
        // length describe `buf` (possibly empty, which only queries the size).
        unsafe {
            libc::getxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        }
    })
}

/// `setxattr(2)` on a path.
pub fn setxattr(path: &CStr, name: &OsStr, value: &[u8], flags: i32) -> VfsResult<()> {
    let name = cstr(name)?;
    // SAFETY: NUL-terminated strings; `value` is readable for its length.
    let r = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// `listxattr(2)` on a path.
pub fn listxattr(path: &CStr) -> VfsResult<Vec<u8>> {
    sized_read(|buf| {
        // SAFETY: NUL-terminated path; buffer pointer and length describe `buf`.
        unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }
    })
}

/// `removexattr(2)` on a path.
pub fn removexattr(path: &CStr, name: &OsStr) -> VfsResult<()> {
    let name = cstr(name)?;
    // SAFETY: both strings are NUL-terminated.
    let r = unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// `fgetxattr(2)` on an open (not O_PATH) fd.
pub fn fgetxattr(fd: BorrowedFd<'_>, name: &CStr) -> VfsResult<Vec<u8>> {
    sized_read(|buf| {
        // SAFETY: valid fd for the call's duration; NUL-terminated name;
        // buffer pointer and length describe `buf`.
        unsafe {
            libc::fgetxattr(
                fd.as_raw_fd(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        }
    })
}

/// `fsetxattr(2)` on an open fd.
pub fn fsetxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> VfsResult<()> {
    // SAFETY: valid fd; NUL-terminated name; `value` readable for its length.
    let r = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// Run `f` with this thread's filesystem credentials set to the caller's
/// (fsuid, fsgid and supplementary groups), so the lower filesystem applies
/// ownership, setgid-directory and permission rules exactly as for the
/// caller. Linux keeps these per thread when set with raw syscalls (glibc's
/// `setgroups` would change every thread of the process).
pub fn as_caller<T>(uid: u32, gid: u32, groups: &[u32], f: impl FnOnce() -> T) -> VfsResult<T> {
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: raw per-thread credential syscalls back to root;
            // setgroups gets a valid (empty) list.
            unsafe {
                libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>());
                libc::syscall(libc::SYS_setfsgid, 0);
                libc::syscall(libc::SYS_setfsuid, 0);
            }
        }
    }
    // SAFETY: `groups` is a valid array of gid_t for its length.
    let r = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if r < 0 {
        return Err(Errno::last());
    }
    let restore = Restore;
    // SAFETY: setfsgid/setfsuid take any id and only affect this thread.
    unsafe {
        libc::syscall(libc::SYS_setfsgid, gid);
        libc::syscall(libc::SYS_setfsuid, uid);
    }
    let out = f();
    drop(restore);
    Ok(out)
}

/// Take ownership of an fd number inherited across exec (the daemon's
/// readiness pipe). `None` if no such fd is open.
pub fn take_inherited_fd(fd: i32) -> Option<OwnedFd> {
    if fd < 3 {
        return None;
    }
    // SAFETY: F_GETFD on any integer is harmless; it only tells whether the
    // fd is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the fd is open, was created for this process by its parent
    // for this one purpose, and nothing else in the process refers to it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fremovexattr(2)` on an open fd.
pub fn fremovexattr(fd: BorrowedFd<'_>, name: &CStr) -> VfsResult<()> {
    // SAFETY: valid fd for the call's duration; NUL-terminated name.
    let r = unsafe { libc::fremovexattr(fd.as_raw_fd(), name.as_ptr()) };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// `ioctl(2)` with a command whose size field (`_IOC_SIZE`) is `buf.len()`:
/// the kernel copies `buf` in (and, for `_IOWR`, the reply back into it).
pub fn ioctl_buf(fd: BorrowedFd<'_>, cmd: u32, buf: &mut [u8]) -> VfsResult<i32> {
    if ((cmd >> 16) & 0x3fff) as usize != buf.len() {
        return Err(Errno::EINVAL);
    }
    // SAFETY: valid fd for the call's duration; the command's size field
    // equals the buffer's length, so the kernel reads and writes within it.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), cmd as libc::Ioctl, buf.as_mut_ptr()) };
    if r < 0 { Err(Errno::last()) } else { Ok(r) }
}

/// A netlink socket subscribed to the kernel's process events (the proc
/// connector: fork, exec, exit of every process), non-blocking and
/// close-on-exec, with a receive buffer of `rcvbuf` bytes. Needs
/// `CAP_NET_ADMIN` (root).
pub fn proc_events_socket(rcvbuf: i32) -> std::io::Result<OwnedFd> {
    const CN_IDX_PROC: u32 = 1;
    const CN_VAL_PROC: u32 = 1;
    const PROC_CN_MCAST_LISTEN: u32 = 1;
    // SAFETY: plain syscall with constant arguments; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::NETLINK_CONNECTOR,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_nl is valid; fields are set below.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = CN_IDX_PROC;
    // SAFETY: `addr` is a valid sockaddr_nl of the size passed.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the option value is a c_int of the size passed. Failure only
    // leaves the default buffer (more risk of lost events), so it is
    // ignored.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&rcvbuf as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        );
    }
    // nlmsghdr (16) + cn_msg (20) + the operation (4).
    let mut msg = Vec::with_capacity(40);
    msg.extend_from_slice(&40u32.to_ne_bytes());
    msg.extend_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes());
    msg.extend_from_slice(&0u16.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&std::process::id().to_ne_bytes());
    msg.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
    msg.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
    msg.extend_from_slice(&[0; 8]); // seq, ack
    msg.extend_from_slice(&4u16.to_ne_bytes());
    msg.extend_from_slice(&0u16.to_ne_bytes());
    msg.extend_from_slice(&PROC_CN_MCAST_LISTEN.to_ne_bytes());
    nix::unistd::write(&fd, &msg).map_err(std::io::Error::from)?;
    Ok(fd)
}

/// Wait at most `ms` milliseconds for `fd` to be readable.
pub fn wait_readable(fd: BorrowedFd<'_>, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;
    use std::os::fd::AsFd;

    fn open(p: &std::path::Path, flags: OFlag) -> OwnedFd {
        nix::fcntl::open(p, flags | OFlag::O_CLOEXEC, Mode::empty()).unwrap()
    }

    /// Sorted names of a listxattr answer.
    fn names(list: &[u8]) -> Vec<&[u8]> {
        let mut v: Vec<&[u8]> = list.split(|&b| b == 0).filter(|n| !n.is_empty()).collect();
        v.sort();
        v
    }

    #[test]
    fn xattrs_of_an_o_path_fd_through_xattrat_and_the_path_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let fd = open(&f, OFlag::O_PATH | OFlag::O_NOFOLLOW);
        let proc_dir = open(
            std::path::Path::new("/proc/self/fd"),
            OFlag::O_PATH | OFlag::O_DIRECTORY,
        );
        let link = ProcLink::new(proc_dir.as_fd(), fd.as_fd());
        let (a, b) = (OsStr::new("user.a"), OsStr::new("user.b"));
        let path = link.path();

        // The fd form of *xattrat does not take an O_PATH fd (see
        // `ProcLink`), whatever the kernel: EBADF, or ENOSYS before 6.13.
        let e = getxattrat(fd.as_fd(), c"", libc::AT_EMPTY_PATH, a).unwrap_err();
        assert!(e == Errno::EBADF || e == Errno::ENOSYS, "{e:?}");
        let has_at = e == Errno::EBADF;
        if !has_at {
            eprintln!("kernel without *xattrat: only the path calls are checked");
        }

        // Set through the wrappers (xattrat where the kernel has it).
        link.setxattr(a, b"one", 0).unwrap();
        link.setxattr(b, b"", libc::XATTR_CREATE).unwrap();
        assert_eq!(
            link.setxattr(b, b"again", libc::XATTR_CREATE).unwrap_err(),
            Errno(libc::EEXIST)
        );
        assert_eq!(link.getxattr(a).unwrap(), b"one");
        assert_eq!(link.getxattr(b).unwrap(), b"");
        assert_eq!(
            link.getxattr(OsStr::new("user.none")).unwrap_err(),
            Errno::ENODATA
        );
        let list = link.listxattr().unwrap();
        assert_eq!(names(&list), [&b"user.a"[..], b"user.b"]);
        // The lower file itself has them (not the magic link).
        assert_eq!(xattr_of_file(&f, "user.a"), Some(b"one".to_vec()));

        // The path calls (the fallback) give the same answers.
        assert_eq!(getxattr(&path, a).unwrap(), b"one");
        assert_eq!(getxattr(&path, b).unwrap(), b"");
        assert_eq!(names(&listxattr(&path).unwrap()), names(&list));
        if has_at {
            // And so do the raw *xattrat calls, asked directly.
            let name = link.name();
            assert_eq!(getxattrat(proc_dir.as_fd(), &name, 0, a).unwrap(), b"one");
            assert_eq!(
                names(&listxattrat(proc_dir.as_fd(), &name, 0).unwrap()),
                names(&list)
            );
        }

        // Replace through the fallback, read through the wrapper.
        setxattr(&path, a, b"two", libc::XATTR_REPLACE).unwrap();
        assert_eq!(link.getxattr(a).unwrap(), b"two");
        // A value larger than the first guess of any buffer.
        let big = vec![7u8; 3000];
        link.setxattr(a, &big, libc::XATTR_REPLACE).unwrap();
        assert_eq!(link.getxattr(a).unwrap(), big);
        assert_eq!(getxattr(&path, a).unwrap(), big);

        // Remove one each way.
        link.removexattr(a).unwrap();
        assert_eq!(link.getxattr(a).unwrap_err(), Errno::ENODATA);
        assert_eq!(getxattr(&path, a).unwrap_err(), Errno::ENODATA);
        removexattr(&path, b).unwrap();
        assert_eq!(link.getxattr(b).unwrap_err(), Errno::ENODATA);
        assert_eq!(link.removexattr(b).unwrap_err(), Errno::ENODATA);
        assert!(names(&link.listxattr().unwrap()).is_empty());
        assert!(names(&listxattr(&path).unwrap()).is_empty());
    }

    #[test]
    fn xattrs_of_a_symlink_node_are_the_symlinks_own() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let l = dir.path().join("l");
        std::os::unix::fs::symlink("f", &l).unwrap();
        let fd = open(&l, OFlag::O_PATH | OFlag::O_NOFOLLOW);
        let proc_dir = open(
            std::path::Path::new("/proc/self/fd"),
            OFlag::O_PATH | OFlag::O_DIRECTORY,
        );
        let link = ProcLink::new(proc_dir.as_fd(), fd.as_fd());
        // trusted.* (root) is allowed on symlinks, user.* is not.
        let t = OsStr::new("trusted.guardfs.test");
        match link.setxattr(t, b"v", 0) {
            Ok(()) => {
                assert_eq!(getxattr(&link.path(), t).unwrap(), b"v");
                assert_eq!(xattr_of_file(&f, "trusted.guardfs.test"), None);
            }
            // Not root, or no trusted.* here: nothing to compare.
            Err(e) => assert!(e == Errno::EPERM || e == Errno(libc::ENOTSUP), "{e:?}"),
        }
        assert_eq!(
            link.setxattr(OsStr::new("user.a"), b"v", 0).unwrap_err(),
            Errno::EPERM
        );
    }

    fn xattr_of_file(p: &std::path::Path, name: &str) -> Option<Vec<u8>> {
        let p = CString::new(p.as_os_str().as_bytes()).unwrap();
        getxattr(&p, OsStr::new(name)).ok()
    }
}
