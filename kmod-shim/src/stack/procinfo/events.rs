//! `|path_no_trust|` marks that follow the real process tree, whatever a
//! process does to its session or parent (`setsid`, double fork, its
//! parent exiting).
//!
//! The live ancestry in /proc forgets a parent once it exits, so a
//! program started by an untrusted shell could escape by daemonising
//! before it touches a GuardPoint. secfs therefore records untrusted
//! processes as the kernel creates them:
//! * an **exec** of a `|path_no_trust|` program is seen synchronously:
//!   each listed file (its inode, as the path resolves in secfs's mount
//!   namespace) carries a fanotify `FAN_OPEN_EXEC_PERM` mark, so the
//!   exec waits until secfs has marked the process (by thread-group id)
//!   and allowed it. Before marking, the pending process events are
//!   applied, so a stale exit of an earlier process with the same pid can
//!   never remove the new mark;
//! * every **fork** of a marked process marks the child, and an **exit**
//!   removes the mark, from the kernel's process events (the netlink proc
//!   connector). Events are applied in the order the kernel produced them,
//!   and all pending events are applied before a process is judged, so
//!   the fork that created the caller is always known by then;
//! * when the marks start (or the list changes), the live processes
//!   running a listed program, and their live descendants, are marked
//!   from /proc.
//!
//! A mark survives exec (an untrusted process stays untrusted whatever it
//! runs next), as the rest of procinfo does. Limits: a listed file
//! replaced by a new inode is marked again only when secfs next judges a
//! process (it checks the paths then); a program run without exec (a
//! loader invoked as `ld.so /path/shell`) is not seen; if the kernel drops
//! process events (receive buffer overflow), the marks are rebuilt from
//! /proc, and orphans whose history fell in the gap are unknown (logged).

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use guardfs_policy::{HostKeyword, HostSettings};
use log::warn;
use nix::sys::fanotify::{
    EventFFlags, Fanotify, FanotifyResponse, InitFlags, MarkFlags, MaskFlags, Response,
};

/// Receive buffer for process events (bytes): room for tens of thousands
/// of forks between two drains.
const RCVBUF: i32 = 16 << 20;

/// The marks, and the kernel sources that feed them.
#[derive(Default)]
pub(super) struct ProcEvents {
    inner: Mutex<Option<Arc<Inner>>>,
    /// The kernel refused the sources once: not tried again.
    failed: AtomicBool,
}

struct Inner {
    state: Mutex<State>,
    sock: OwnedFd,
    fan: Fanotify,
}

/// The listed paths and the (device, inode) each resolved to.
type Listed = Vec<(Box<[u8]>, Option<(u64, u64)>)>;

#[derive(Default)]
struct State {
    /// Thread-group ids of untrusted processes.
    marked: HashSet<u32>,
    /// The listed paths and the (device, inode) each resolved to when
    /// marked.
    listed: Listed,
}

impl ProcEvents {
    /// Follow `no_trust` (the `|path_no_trust|` paths). Cheap when nothing
    /// changed: one `stat` per listed path. Starts the sources on first
    /// use; if the kernel refuses them, logs once and stays off (ancestry
    /// in /proc still decides).
    pub(super) fn sync(&self, host: &HostSettings) {
        let no_trust = || host.paths(HostKeyword::PathNoTrust);
        let mut slot = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            if no_trust().next().is_none() || self.failed.load(Ordering::Relaxed) {
                return;
            }
            match Inner::start() {
                Ok(i) => *slot = Some(i),
                Err(e) => {
                    warn!(
                        "secfs: cannot follow process events ({e}); |path_no_trust| relies on \
                         the live ancestry only (a daemonised descendant may escape it)"
                    );
                    self.failed.store(true, Ordering::Relaxed);
                    return;
                }
            }
        }
        let Some(inner) = slot.clone() else { return };
        drop(slot);
        let now: Listed = no_trust().map(|p| (Box::from(p), file_id(p))).collect();
        let mut st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.listed == now {
            return;
        }
        inner.remark(&mut st, now);
    }

    /// Whether the process with thread-group id `tgid` is marked untrusted
    /// (after applying every pending process event).
    pub(super) fn untrusted(&self, tgid: u32) -> bool {
        let Some(inner) = self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return false;
        };
        let mut st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
        inner.drain(&mut st);
        st.marked.contains(&tgid)
    }
}

fn file_id(p: &[u8]) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let m = std::fs::metadata(std::ffi::OsStr::from_bytes(p)).ok()?;
    Some((m.dev(), m.ino()))
}

impl Inner {
    fn start() -> std::io::Result<Arc<Inner>> {
        let sock = crate::sys::proc_events_socket(RCVBUF)?;
        let fan = Fanotify::init(
            InitFlags::FAN_CLASS_CONTENT
                | InitFlags::FAN_CLOEXEC
                | InitFlags::FAN_NONBLOCK
                | InitFlags::FAN_UNLIMITED_QUEUE,
            EventFFlags::O_RDONLY | EventFFlags::O_CLOEXEC | EventFFlags::O_LARGEFILE,
        )
        .map_err(std::io::Error::from)?;
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            sock,
            fan,
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("secfs-procev".into())
            .spawn(move || events_loop(weak))?;
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("secfs-exec".into())
            .spawn(move || exec_loop(weak))?;
        Ok(inner)
    }

    /// Apply every pending process event.
    fn drain(&self, st: &mut State) {
        let mut buf = [0u8; 1024];
        loop {
            match nix::unistd::read(&self.sock, &mut buf) {
                Ok(n) => apply(&mut st.marked, &buf[..n]),
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(nix::errno::Errno::ENOBUFS) => {
                    warn!(
                        "secfs: process events were lost; |path_no_trust| marks rebuilt from \
                         /proc (orphans of untrusted processes in the gap are not known)"
                    );
                    let listed = std::mem::take(&mut st.listed);
                    self.remark(st, listed);
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    warn!("secfs: reading process events: {e}");
                    return;
                }
            }
        }
    }

    /// Mark the listed files for exec and the processes running them (and
    /// their descendants) from /proc.
    fn remark(&self, st: &mut State, listed: Listed) {
        let _ = self.fan.mark(
            MarkFlags::FAN_MARK_FLUSH,
            MaskFlags::empty(),
            nix::fcntl::AT_FDCWD,
            None::<&std::path::Path>,
        );
        for (p, _) in &listed {
            use std::os::unix::ffi::OsStrExt;
            let path = std::path::Path::new(std::ffi::OsStr::from_bytes(p));
            if let Err(e) = self.fan.mark(
                MarkFlags::FAN_MARK_ADD,
                MaskFlags::FAN_OPEN_EXEC_PERM,
                nix::fcntl::AT_FDCWD,
                Some(path),
            ) && path.exists()
            {
                warn!("secfs: cannot watch execs of {}: {e}", path.display());
            }
        }
        // Events queued before the scan are older than what it sees.
        self.drain_events_only(&mut st.marked);
        let ids: HashSet<(u64, u64)> = listed.iter().filter_map(|(_, id)| *id).collect();
        let mut parent = HashMap::new();
        let mut marked = HashSet::new();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                let exe = std::fs::metadata(format!("/proc/{pid}/exe")).ok();
                let runs_listed = exe.is_some_and(|m| ids.contains(&(m.dev(), m.ino())))
                    || std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|l| {
                        use std::os::unix::ffi::OsStrExt;
                        let l = l.as_os_str().as_bytes();
                        let l = l.strip_suffix(b" (deleted)").unwrap_or(l);
                        listed.iter().any(|(p, _)| **p == *l)
                    });
                if runs_listed {
                    marked.insert(pid);
                }
                if let Some(pp) = super::stat_fields(pid)
                    .and_then(|r| r.split_whitespace().nth(1)?.parse::<u32>().ok())
                {
                    parent.insert(pid, pp);
                }
            }
        }
        let pids: Vec<u32> = parent.keys().copied().collect();
        for pid in pids {
            let mut p = pid;
            for _ in 0..256 {
                if marked.contains(&p) {
                    marked.insert(pid);
                    break;
                }
                match parent.get(&p) {
                    Some(&pp) if pp != 0 && pp != p => p = pp,
                    _ => break,
                }
            }
        }
        // Marks recorded by events (orphans the scan cannot see) are kept
        // while the list only grows; a shrunk list starts afresh.
        let grew = st
            .listed
            .iter()
            .all(|(p, _)| listed.iter().any(|(q, _)| q == p));
        if !grew {
            st.marked.clear();
        }
        st.marked.extend(marked);
        st.listed = listed;
    }

    /// [`Inner::drain`] without the rebuild on loss (used by it).
    fn drain_events_only(&self, marked: &mut HashSet<u32>) {
        let mut buf = [0u8; 1024];
        while let Ok(n) = nix::unistd::read(&self.sock, &mut buf) {
            apply(marked, &buf[..n]);
        }
    }
}

/// Apply one proc connector message: nlmsghdr (16 bytes), cn_msg (20),
/// then `proc_event`: what (4), cpu (4), timestamp (8), and the event.
fn apply(marked: &mut HashSet<u32>, msg: &[u8]) {
    const FORK: u32 = 1;
    const EXIT: u32 = 0x8000_0000;
    let u32_at = |o: usize| {
        msg.get(o..o + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    let (Some(what), Some(a), Some(b)) = (u32_at(36), u32_at(52), u32_at(56)) else {
        return;
    };
    match what {
        FORK => {
            // parent pid, parent tgid, child pid, child tgid.
            let (Some(child), Some(child_tgid)) = (u32_at(60), u32_at(64)) else {
                return;
            };
            if child == child_tgid && marked.contains(&b) {
                marked.insert(child_tgid);
            }
        }
        // Process pid, process tgid: the whole process is gone when its
        // leader exits (a thread exiting is not).
        EXIT if a == b => {
            marked.remove(&b);
        }
        _ => {}
    }
}

/// Drain process events now and then, so the socket never overflows.
fn events_loop(weak: Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if crate::sys::wait_readable(inner.sock.as_fd(), 500) {
            let mut st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
            inner.drain(&mut st);
        }
    }
}

/// Mark each process that execs a listed file, then let the exec go on.
fn exec_loop(weak: Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if !crate::sys::wait_readable(inner.fan.as_fd(), 500) {
            continue;
        }
        let Ok(events) = inner.fan.read_events() else {
            continue;
        };
        for ev in &events {
            if ev.mask().contains(MaskFlags::FAN_OPEN_EXEC_PERM) {
                let mut st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
                inner.drain(&mut st);
                if let Ok(pid) = u32::try_from(ev.pid()) {
                    st.marked.insert(pid);
                }
            }
            if let Some(fd) = ev.fd() {
                let _ = inner
                    .fan
                    .write_response(FanotifyResponse::new(fd, Response::FAN_ALLOW));
            }
        }
    }
}
