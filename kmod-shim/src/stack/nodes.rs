//! The inode table: node ids handed to the kernel, each holding an
//! `O_PATH` fd on its lower object so that renames and unlinks elsewhere
//! never make it refer to something else.
//!
//! Lower objects are identified by (st_dev, st_ino). While a node holds its
//! fd the lower inode cannot be freed, so its number cannot be reused: two
//! hard links always map to one node, and a new file never inherits an old
//! node.
//!
//! A node can be *retired* after a policy reload (see `access`, "Policy
//! generations and revocation"): it loses its place in the key map, so the
//! next lookup of the same lower object creates a fresh node id, while the
//! kernel keeps the retired id until it forgets it. Both nodes share the
//! lower file's [`FileState`] (sizes, range locks, contents state), so one
//! lower file is never tracked twice.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};

use crate::stack::access::View;
use crate::stack::file::FileState;
use crate::vfs::{Errno, FileKind, Ino, VfsResult};

/// What a regular file's contents are, as far as `stat` is concerned.
/// Cached per node: learned from the `trusted.guardfs.mode` marker, updated
/// when a header is written or found. Which crypto mode each class stands
/// for is known only to [`file`](crate::stack::file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Class {
    Unknown = 0,
    /// No marker: the lower bytes are shown as they are.
    Plain = 1,
    Xts = 2,
    CbcCs1 = 3,
    Gcm = 4,
}

impl Class {
    fn from_u8(v: u8) -> Class {
        match v {
            1 => Class::Plain,
            2 => Class::Xts,
            3 => Class::CbcCs1,
            4 => Class::Gcm,
            _ => Class::Unknown,
        }
    }
}

/// Where a node stands after policy reloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Standing {
    /// Reachable by lookups; handles work as decided.
    Live = 0,
    /// No longer reachable by lookups (a fresh node stands for the lower
    /// object); new opens are refused, existing handles still work.
    Retired = 1,
    /// Retired, and every handle on it is refused.
    Revoked = 2,
}

/// One inode known to the kernel.
#[derive(Debug)]
pub struct Node {
    pub ino: Ino,
    /// `O_PATH | O_NOFOLLOW` fd on the lower object.
    pub fd: OwnedFd,
    pub kind: FileKind,
    pub key: (u64, u64),
    /// Which view of the lower object this inode shows (see `access`).
    pub view: View,
    class: AtomicU8,
    /// A [`Standing`].
    standing: AtomicU8,
    /// Whether a transformation a crash interrupted was looked for (and
    /// finished) before this node's size was first shown.
    settled: std::sync::atomic::AtomicBool,
    /// Contents state of a regular file, created on first use (or shared
    /// with the retired node of the same lower object).
    file: OnceLock<Arc<FileState>>,
}

impl Node {
    fn new(
        ino: Ino,
        fd: OwnedFd,
        kind: FileKind,
        key: (u64, u64),
        view: View,
        class: Class,
    ) -> Node {
        Node {
            ino,
            fd,
            kind,
            key,
            view,
            class: AtomicU8::new(class as u8),
            standing: AtomicU8::new(Standing::Live as u8),
            settled: std::sync::atomic::AtomicBool::new(false),
            file: OnceLock::new(),
        }
    }

    pub fn standing(&self) -> Standing {
        match self.standing.load(Ordering::Acquire) {
            0 => Standing::Live,
            1 => Standing::Retired,
            _ => Standing::Revoked,
        }
    }

    /// True the first time it is called for this node.
    pub fn first_settle(&self) -> bool {
        !self.settled.swap(true, Ordering::AcqRel)
    }

    /// Refuse every handle on this (retired) node from now on.
    pub fn revoke(&self) {
        self.standing
            .store(Standing::Revoked as u8, Ordering::Release);
    }

    pub fn class(&self) -> Class {
        Class::from_u8(self.class.load(Ordering::Acquire))
    }

    pub fn set_class(&self, c: Class) {
        self.class.store(c as u8, Ordering::Release);
    }

    pub fn file(&self) -> &Arc<FileState> {
        self.file.get_or_init(|| Arc::new(FileState::default()))
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The lower path, best effort, for log lines: the target of the fd's
    /// magic link (no call names an fd's path otherwise). A node holds no
    /// fd on `/proc/self/fd`, so this reads the link by its path; the
    /// stack reads it relative to its own fd for policy decisions.
    pub fn display_path(&self) -> String {
        std::fs::read_link(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| format!("<inode {}>", self.key.1))
    }
}

struct Slot {
    node: Arc<Node>,
    nlookup: u64,
}

#[derive(Default)]
struct Inner {
    by_ino: HashMap<u64, Slot>,
    by_key: HashMap<(u64, u64, View), u64>,
    /// The contents state of lower objects that have a retired node, for
    /// the fresh node of the same object to share.
    shared: HashMap<(u64, u64, View), Weak<FileState>>,
    root_dev: u64,
    next_synthetic: u64,
}

/// Node ids for objects whose lower inode number cannot be used (another
/// device below the GuardPoint, or a number already taken).
const SYNTHETIC_BASE: u64 = 1 << 62;

/// The table. Lookups take the read lock; adding and forgetting take the
/// write lock briefly (never across a syscall on file contents).
#[derive(Default)]
pub struct Nodes {
    inner: RwLock<Inner>,
}

impl Nodes {
    /// A table holding the root node.
    pub fn with_root(fd: OwnedFd, key: (u64, u64)) -> Nodes {
        let root = Arc::new(Node::new(
            Ino::ROOT,
            fd,
            FileKind::Directory,
            key,
            View::Plain,
            Class::Plain,
        ));
        let mut inner = Inner {
            root_dev: key.0,
            next_synthetic: SYNTHETIC_BASE,
            ..Inner::default()
        };
        inner
            .by_key
            .insert((key.0, key.1, View::Plain), Ino::ROOT.0);
        // The root is never forgotten: its count starts at one and the
        // kernel never sends a forget for it.
        inner.by_ino.insert(
            Ino::ROOT.0,
            Slot {
                node: root,
                nlookup: 1,
            },
        );
        Nodes {
            inner: RwLock::new(inner),
        }
    }

    pub fn get(&self, ino: Ino) -> VfsResult<Arc<Node>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner
            .by_ino
            .get(&ino.0)
            .map(|s| s.node.clone())
            .ok_or(Errno::ENOENT)
    }

    /// Count one lookup of the lower object `key`, creating its node with
    /// `open_fd` if it is new. `open_fd` runs outside the lock.
    pub fn lookup(
        &self,
        key: (u64, u64),
        view: View,
        kind: FileKind,
        open_fd: impl FnOnce() -> VfsResult<OwnedFd>,
    ) -> VfsResult<Arc<Node>> {
        let vkey = (key.0, key.1, view);
        {
            let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
            if let Some(&ino) = inner.by_key.get(&vkey)
                && let Some(slot) = inner.by_ino.get_mut(&ino)
            {
                slot.nlookup += 1;
                return Ok(slot.node.clone());
            }
        }
        let fd = open_fd()?;
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        // Another thread may have added it meanwhile.
        if let Some(&ino) = inner.by_key.get(&vkey)
            && let Some(slot) = inner.by_ino.get_mut(&ino)
        {
            slot.nlookup += 1;
            return Ok(slot.node.clone());
        }
        // st_ino is the node id (FUSE shows node ids as st_ino), so use the
        // lower inode number when it is unambiguous.
        let ino = if view == View::Plain
            && key.0 == inner.root_dev
            && key.1 > 1
            && key.1 < SYNTHETIC_BASE
            && !inner.by_ino.contains_key(&key.1)
        {
            key.1
        } else {
            inner.next_synthetic += 1;
            inner.next_synthetic
        };
        let node = Node::new(Ino(ino), fd, kind, key, view, Class::Unknown);
        if let Some(state) = inner.shared.get(&vkey).and_then(Weak::upgrade) {
            let _ = node.file.set(state);
        }
        let node = Arc::new(node);
        inner.by_key.insert(vkey, ino);
        inner.by_ino.insert(
            ino,
            Slot {
                node: node.clone(),
                nlookup: 1,
            },
        );
        Ok(node)
    }

    /// Drop `n` lookups; the node goes when none remain.
    pub fn forget(&self, ino: Ino, n: u64) {
        if ino == Ino::ROOT {
            return;
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let gone = match inner.by_ino.get_mut(&ino.0) {
            Some(slot) => {
                slot.nlookup = slot.nlookup.saturating_sub(n);
                slot.nlookup == 0
            }
            None => false,
        };
        if gone && let Some(slot) = inner.by_ino.remove(&ino.0) {
            let n = &slot.node;
            let vkey = (n.key.0, n.key.1, n.view);
            // A retired node no longer owns its key: the fresh node does.
            if inner.by_key.get(&vkey) == Some(&ino.0) {
                inner.by_key.remove(&vkey);
            }
            if n.standing() != Standing::Live {
                inner.shared.retain(|_, w| w.strong_count() > 0);
            }
        }
    }

    /// Retire the regular-file node `ino`: the next lookup of its lower
    /// object gets a fresh node id sharing its contents state, new opens
    /// of it are refused, and the kernel keeps the id until it forgets it.
    /// Returns the node, or `None` if it is unknown, the root, not a
    /// regular file, or already retired.
    pub fn retire(&self, ino: Ino) -> Option<Arc<Node>> {
        if ino == Ino::ROOT {
            return None;
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let node = inner.by_ino.get(&ino.0)?.node.clone();
        if node.kind != FileKind::Regular || node.standing() != Standing::Live {
            return None;
        }
        let vkey = (node.key.0, node.key.1, node.view);
        if inner.by_key.get(&vkey) == Some(&ino.0) {
            inner.by_key.remove(&vkey);
        }
        let state = Arc::downgrade(node.file());
        inner.shared.insert(vkey, state);
        node.standing
            .store(Standing::Retired as u8, Ordering::Release);
        Some(node)
    }

    /// Every node id (to invalidate kernel caches after a policy change).
    pub fn all(&self) -> Vec<Ino> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.by_ino.keys().map(|&i| Ino(i)).collect()
    }

    /// Number of nodes (for tests and status).
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_ino
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;

    fn opath(p: &std::path::Path) -> OwnedFd {
        nix::fcntl::open(p, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).unwrap()
    }

    fn key(p: &std::path::Path) -> (u64, u64) {
        let st = nix::sys::stat::stat(p).unwrap();
        (st.st_dev, st.st_ino)
    }

    #[test]
    fn retired_nodes_give_way_to_fresh_ids_that_share_the_file_state() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let nodes = Nodes::with_root(opath(dir.path()), key(dir.path()));
        let k = key(&f);
        let open = || Ok(opath(&f));
        let old = nodes
            .lookup(k, View::Plain, FileKind::Regular, open)
            .unwrap();
        assert_eq!(old.ino, Ino(k.1), "the lower inode number when free");
        let state = old.file().clone();
        assert_eq!(old.standing(), Standing::Live);
        let retired = nodes.retire(old.ino).unwrap();
        assert!(Arc::ptr_eq(&retired, &old));
        assert_eq!(old.standing(), Standing::Retired);
        assert!(nodes.retire(old.ino).is_none(), "retired once");
        // The kernel still reaches the retired id...
        assert!(Arc::ptr_eq(&nodes.get(old.ino).unwrap(), &old));
        // ...but a lookup gets a fresh id with the same contents state.
        let fresh = nodes
            .lookup(k, View::Plain, FileKind::Regular, open)
            .unwrap();
        assert_ne!(fresh.ino, old.ino);
        assert_eq!(fresh.standing(), Standing::Live);
        assert!(Arc::ptr_eq(fresh.file(), &state));
        // Forgetting the retired id leaves the fresh node in place.
        old.revoke();
        assert_eq!(old.standing(), Standing::Revoked);
        nodes.forget(old.ino, 1);
        assert_eq!(nodes.get(old.ino).unwrap_err(), Errno::ENOENT);
        let again = nodes
            .lookup(k, View::Plain, FileKind::Regular, open)
            .unwrap();
        assert_eq!(again.ino, fresh.ino);
        // Directories and the root are never retired.
        assert!(nodes.retire(Ino::ROOT).is_none());
        nodes.forget(fresh.ino, 2);
        assert_eq!(nodes.len(), 1, "only the root is left");
    }
}
