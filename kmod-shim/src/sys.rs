//! Syscalls that `nix` does not wrap the way the stacking layer needs them:
//! extended attributes on fds and `/proc/self/fd` paths, and per-thread
//! credentials. Every `unsafe` block of the crate is in this module.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

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
