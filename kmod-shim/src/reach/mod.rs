//! Reachability of the lower tree: once a directory is guarded, its lower
//! files are reachable through no path, mount point or mount namespace
//! but secfs (security invariant 7).
//!
//! The FUSE mount covers one path in one mount namespace. Three other ways
//! to the lower tree exist at guard time, and each is closed here:
//!
//! 1. **Processes holding it** ([`busy`]): a cwd, root, open fd or mapping
//!    inside the directory keeps the lower objects in hand whatever is
//!    mounted later. Guard refuses, naming the pids, before mounting, and
//!    checks again once the mount is serving (anything opened in between
//!    is still found: every lookup after the mount goes through FUSE, so a
//!    lower object held then was taken before), rolling the mount back.
//!    Objects are told apart by the kernel's view, not by path text: the
//!    mount each object was reached through (`mnt_id`), that mount's
//!    filesystem (`major:minor`) and root inside the filesystem from the
//!    holder's own mount table, so the object's path inside its filesystem
//!    ([`FsPath`]) is compared with the lower directory's. A FUSE object at
//!    the same path has another device; a lower object reached through a
//!    bind mount or from another mount namespace has the same `FsPath`.
//! 2. **Other mount points and mount namespaces** ([`uncovered`],
//!    [`cover`]): every mount namespace (distinct `/proc/*/ns/mnt`) is read
//!    through a member's mountinfo; every mount of the lower filesystem
//!    whose root is an ancestor of, equal to, or inside the directory shows
//!    the directory (or a subdirectory of it) at some place. That place
//!    must resolve, as a path lookup there would, to our `fuse.secfs`
//!    mount (same device, the matching directory of it): mount propagation
//!    from a shared parent does this by itself; otherwise a clone of our
//!    mount (`open_tree(OPEN_TREE_CLONE)` of the GuardPoint, or of the
//!    subdirectory a bind mount shows) is attached there with `move_mount`
//!    — in another namespace from a forked child that `setns`es into it
//!    (`raw`). Namespaces no process is in, pinned by a bind-mounted
//!    nsfs file or an fd some process holds, are read from inside by a
//!    forked child and covered the same way. Then everything is read
//!    again; a place still uncovered rolls the whole guard back and is
//!    named in the refusal.
//!
//! Reading another process's `/proc` entries can block in the kernel (a
//! process stuck in exec or in a page fault on a hung FUSE server); every
//! such inspection runs on a helper thread with a timeout
//! ([`with_timeout`]): a process that does not answer counts as busy, a
//! namespace whose table does not answer is logged and skipped.
//! 3. **Unguard** ([`Attachments::detach_all`]): every clone attached is
//!    detached again (the namespace fds are kept to reach namespaces
//!    later; a clone is detached only if it is still the mount at its
//!    place), so no GuardPoint lives on with an old policy. If secfs dies,
//!    the clones stay as dead mounts (ENOTCONN), still covering the lower
//!    tree; a new guard covers them again (a dead `fuse.secfs` at a place
//!    counts as uncovered, and the new clone is stacked on it).
//!
//! What this cannot close (root with `CAP_SYS_ADMIN` unmounting, handles,
//! NFS exports) is listed in `SECURITY.md`, "Reachability of the lower
//! tree".

pub mod busy;
pub mod mountinfo;
pub(crate) mod raw;

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use log::{info, warn};

use mountinfo::{FsPath, Table, join_abs, under};

/// Run `f` on a helper thread and wait at most `limit` for its answer.
/// Reading another process's /proc entries can block in the kernel (a
/// process stuck in exec, a page fault on a hung FUSE server); the helper
/// is then left behind and `None` returned.
pub fn with_timeout<T: Send + 'static>(
    limit: std::time::Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("secfs-inspect".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .ok()?;
    rx.recv_timeout(limit).ok()
}

/// Wait (at most 10 s) until `f` holds; for tests and settling.
pub fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    let t = std::time::Instant::now();
    while !f() {
        if t.elapsed() > std::time::Duration::from_secs(10) {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    true
}

/// A place where the lower directory (or a subdirectory) shows without
/// our FUSE mount on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// Mount namespace inode, and a member process.
    pub ns: u64,
    pub pid: u32,
    /// Whether it is this process's namespace.
    pub own: bool,
    /// The path there, from the namespace's root.
    pub target: PathBuf,
    /// Which directory of the GuardPoint shows there ("/" for itself).
    pub sub: PathBuf,
    /// For a namespace no process is in: the nsfs file pinning it.
    pub pinned: Option<PathBuf>,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.own {
            write!(f, "mount point {}", self.target.display())?;
        } else if let Some(pin) = &self.pinned {
            write!(
                f,
                "mount namespace mnt:[{}] (pinned at {}) at {}",
                self.ns,
                pin.display(),
                self.target.display()
            )?;
        } else {
            write!(
                f,
                "mount namespace mnt:[{}] (pid {}) at {}",
                self.ns,
                self.pid,
                self.target.display()
            )?;
        }
        if self.sub != Path::new("/") {
            write!(f, " (shows {})", self.sub.display())?;
        }
        Ok(())
    }
}

/// Mount namespaces by inode, each with its member pids (this process's
/// own namespace included).
fn namespaces() -> BTreeMap<u64, Vec<u32>> {
    let mut out: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for pid in procs
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
    {
        if let Some(ino) = busy::ns_ino(Some(pid)) {
            out.entry(ino).or_default().push(pid);
        }
    }
    out
}

/// The places where `lower` shows without the FUSE mount `fuse_dev` on
/// it, in every mount namespace.
pub fn uncovered(lower: &FsPath, fuse_dev: &str) -> Vec<Place> {
    let own_ns = busy::ns_ino(None);
    let me = std::process::id();
    let mut out = Vec::new();
    let members = namespaces();
    for (ns, pids) in &members {
        let ns = *ns;
        let own = Some(ns) == own_ns;
        // A member whose root is the namespace's root sees every mount.
        let pids = pids.clone();
        let found = with_timeout(std::time::Duration::from_secs(2), move || {
            let pid = if own {
                me
            } else {
                pids.iter()
                    .copied()
                    .find(|p| {
                        std::fs::read_link(format!("/proc/{p}/root")).ok() == Some("/".into())
                    })
                    .unwrap_or(pids[0])
            };
            Table::read(if own { None } else { Some(pid) })
                .ok()
                .map(|t| (pid, t))
        })
        .flatten();
        let Some((pid, table)) = found else {
            warn!("secfs: mount namespace mnt:[{ns}]: its mount table does not answer");
            continue;
        };
        for place in places_in(&table, lower, fuse_dev) {
            let (target, sub) = place;
            let p = Place {
                ns,
                pid,
                own,
                target,
                sub,
                pinned: None,
            };
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out.extend(uncovered_pinned(lower, fuse_dev, &members));
    out
}

/// Mount namespaces that no process is in but a bind-mounted nsfs file
/// (`unshare --mount=FILE`) or an fd held by some process pins: whoever
/// enters one later finds what it shows. Their tables are read from inside (a forked child); one that
/// cannot be read counts as uncovered (fail closed).
fn uncovered_pinned(
    lower: &FsPath,
    fuse_dev: &str,
    members: &BTreeMap<u64, Vec<u32>>,
) -> Vec<Place> {
    let mut out = Vec::new();
    let Ok(own) = Table::read(None) else {
        return out;
    };
    let mnt_ino =
        |s: &str| -> Option<u64> { s.strip_prefix("mnt:[")?.strip_suffix(']')?.parse().ok() };
    // Pinned by a bind-mounted nsfs file, or by an fd a process holds.
    let mut pins: Vec<(u64, PathBuf)> = own
        .mounts
        .iter()
        .filter(|m| m.fstype == "nsfs")
        .filter_map(|m| Some((mnt_ino(m.root.to_str()?)?, m.mount_point.clone())))
        .collect();
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for pid in procs
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        {
            let held = with_timeout(std::time::Duration::from_secs(1), move || {
                let mut v = Vec::new();
                let mnt_ino = |s: &str| -> Option<u64> {
                    s.strip_prefix("mnt:[")?.strip_suffix(']')?.parse().ok()
                };
                if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
                    for e in fds.filter_map(Result::ok) {
                        if let Some(ino) = std::fs::read_link(e.path())
                            .ok()
                            .and_then(|l| mnt_ino(l.to_str()?))
                        {
                            v.push((ino, e.path()));
                        }
                    }
                }
                v
            });
            pins.extend(held.unwrap_or_default());
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (ino, pin) in pins {
        if members.contains_key(&ino) || !seen.insert(ino) {
            continue;
        }
        let place = |target: PathBuf, sub: PathBuf| Place {
            ns: ino,
            pid: 0,
            own: false,
            target,
            sub,
            pinned: Some(pin.clone()),
        };
        let table = open_ns(&pin)
            .and_then(|fd| raw::mountinfo_in(fd.as_fd()).map_err(|e| e.desc().to_owned()))
            .map(|text| Table::parse(&text, Path::new("/")));
        match table {
            Ok(t) => {
                for (target, sub) in places_in(&t, lower, fuse_dev) {
                    out.push(place(target, sub));
                }
            }
            Err(e) => {
                warn!("secfs: mount namespace pinned at {}: {e}", pin.display());
                out.push(place(PathBuf::from("(unreadable)"), PathBuf::from("/")));
            }
        }
    }
    out
}

/// Open a mount namespace file read-only.
fn open_ns(path: &Path) -> Result<OwnedFd, String> {
    nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| e.desc().to_owned())
}

/// In one mount table: (place, subdirectory shown) for every place where
/// the lower directory shows uncovered.
fn places_in(table: &Table, lower: &FsPath, fuse_dev: &str) -> Vec<(PathBuf, PathBuf)> {
    let mut out = Vec::new();
    // Every mount of the lower filesystem (whatever its type: it may be
    // FUSE itself, e.g. sshfs; our mount has its own device).
    for m in table.mounts.iter().filter(|m| m.dev == lower.dev) {
        let (target, sub) = if let Some(inside) = under(&lower.rel, &m.root) {
            (join_abs(&m.mount_point, &inside), PathBuf::from("/"))
        } else if let Some(sub) = under(&m.root, &lower.rel) {
            (m.mount_point.clone(), sub)
        } else {
            continue;
        };
        let Some((r, rel)) = table.resolve(&target) else {
            continue;
        };
        let covered = r.dev == fuse_dev && rel == sub;
        let lower_shows = r.dev == lower.dev && rel == join_abs(&lower.rel, &sub);
        // A dead (or older) GuardPoint of this directory: cover it again.
        let stale = r.fstype == "fuse.secfs" && r.dev != fuse_dev && rel == sub;
        if !covered && (lower_shows || stale) && !out.iter().any(|(t, _)| *t == target) {
            out.push((target, sub));
        }
    }
    out
}

/// A clone of the GuardPoint attached somewhere.
#[derive(Debug)]
struct Attached {
    /// The namespace (`None`: this process's own).
    ns: Option<OwnedFd>,
    place: Place,
    /// The mount id it got there (0 if unknown).
    mnt_id: u64,
}

/// The clones attached for one GuardPoint, detached again at unguard.
#[derive(Debug, Default)]
pub struct Attachments {
    list: Vec<Attached>,
}

impl Attachments {
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The places, for logs.
    pub fn describe(&self) -> String {
        self.list
            .iter()
            .map(|a| a.place.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Detach every clone that is still the mount at its place.
    pub fn detach_all(&mut self) {
        for a in self.list.drain(..) {
            let r = match &a.ns {
                None => raw::detach_here(&a.place.target, a.mnt_id),
                Some(ns) => raw::detach_in(ns.as_fd(), &a.place.target, a.mnt_id),
            };
            match r {
                Ok(()) => info!("secfs: GuardPoint removed from {}", a.place),
                Err(e) => warn!("secfs: removing the GuardPoint from {}: {e}", a.place),
            }
        }
    }
}

impl Drop for Attachments {
    fn drop(&mut self) {
        if !self.list.is_empty() {
            self.detach_all();
        }
    }
}

/// Attach a clone of the GuardPoint mounted at `gp` (our FUSE mount
/// `fuse_dev`, serving) at one place.
fn attach(gp: &Path, fuse_dev: &str, place: &Place) -> Result<Attached, String> {
    let src = join_abs(gp, &place.sub);
    let tree = raw::clone_tree(&src).map_err(|e| format!("open_tree {}: {e}", src.display()))?;
    if place.own {
        raw::attach_here(tree.as_fd(), &place.target)
            .map_err(|e| format!("move_mount: {}", e.desc()))?;
        let mnt_id = raw::mnt_id_here(&place.target).unwrap_or(0);
        return Ok(Attached {
            ns: None,
            place: place.clone(),
            mnt_id,
        });
    }
    let ns_path = match &place.pinned {
        Some(pin) => pin.clone(),
        None => PathBuf::from(format!("/proc/{}/ns/mnt", place.pid)),
    };
    let ns = open_ns(&ns_path).map_err(|e| format!("opening the namespace: {e}"))?;
    // The pid may have been reused by a process of another namespace.
    let ino = nix::sys::stat::fstat(&ns).map(|s| s.st_ino).unwrap_or(0);
    if ino != place.ns {
        return Err("the namespace's member exited".into());
    }
    raw::attach_in(ns.as_fd(), tree.as_fd(), &place.target)
        .map_err(|e| format!("move_mount in the namespace: {}", e.desc()))?;
    let table = match &place.pinned {
        Some(_) => raw::mountinfo_in(ns.as_fd())
            .ok()
            .map(|text| Table::parse(&text, Path::new("/"))),
        None => Table::read(Some(place.pid)).ok(),
    };
    let mnt_id = table
        .and_then(|t| {
            t.resolve(&place.target)
                .filter(|(m, _)| m.dev == fuse_dev)
                .map(|(m, _)| m.id)
        })
        .unwrap_or(0);
    Ok(Attached {
        ns: Some(ns),
        place: place.clone(),
        mnt_id,
    })
}

/// Why a guard was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReachError {
    /// Processes hold the lower directory.
    #[error("busy: in use by pid {0}")]
    Busy(String),
    /// Places that could not be covered.
    #[error("the lower directory stays reachable without secfs through: {0}")]
    Uncovered(String),
}

/// Make every place where `lower` shows resolve to our FUSE mount
/// `fuse_dev` at `gp` (serving), then verify. On failure everything
/// attached is detached again and the places are named.
pub fn cover(gp: &Path, lower: &FsPath, fuse_dev: &str) -> Result<Attachments, ReachError> {
    let mut done = Attachments::default();
    let mut failures: Vec<String> = Vec::new();
    for round in 0..3 {
        let todo = uncovered(lower, fuse_dev);
        if todo.is_empty() {
            if !done.is_empty() {
                info!(
                    "secfs: {}: GuardPoint also attached at {}",
                    gp.display(),
                    done.describe()
                );
            }
            return Ok(done);
        }
        if round == 2 {
            let mut names: Vec<String> = todo.iter().map(ToString::to_string).collect();
            names.extend(failures);
            done.detach_all();
            return Err(ReachError::Uncovered(names.join("; ")));
        }
        for place in todo {
            match attach(gp, fuse_dev, &place) {
                Ok(a) => done.list.push(a),
                Err(e) => {
                    warn!("secfs: {}: attaching at {place}: {e}", gp.display());
                    failures.push(format!("{place}: {e}"));
                }
            }
        }
    }
    done.detach_all();
    Err(ReachError::Uncovered(failures.join("; ")))
}

/// The busy check: every process (but this one and `exclude`) holding
/// the lower directory `lower` — and, once the GuardPoint is mounted with
/// device `covered_by` and attached everywhere, every process holding a
/// directory above it from which the lower directory is reached without
/// meeting the GuardPoint (see [`busy::Target::Tree`]).
pub fn check_busy(
    lower: &FsPath,
    covered_by: Option<&str>,
    exclude: &[u32],
) -> Result<(), ReachError> {
    let users = busy::users(&busy::Target::Tree { lower, covered_by }, exclude);
    if users.is_empty() {
        Ok(())
    } else {
        Err(ReachError::Busy(busy::describe(&users)))
    }
}

/// The lower directory of a path in this namespace, as an [`FsPath`]
/// (call before mounting on it).
pub fn lower_of(path: &Path) -> std::io::Result<FsPath> {
    FsPath::of_path(path)
}
