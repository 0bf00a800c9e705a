//! Which processes hold a directory busy: their working directory, root,
//! an open fd or a mapped file is the directory or inside it.
//!
//! Decided by the object, not by path text: each object's mount comes from
//! the kernel (`mnt_id` in fdinfo; for cwd, root and mappings, of an
//! `O_PATH` fd opened through the `/proc` magic link, which refers to the
//! same mount and dentry), and the mount's filesystem and root come from
//! the mount table of the process's own namespace. So a process in another
//! mount namespace, or inside a bind mount of the directory, is found, and
//! after the GuardPoint is mounted, objects on the FUSE mount (another
//! device) are told apart from lower objects at the same path.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use super::mountinfo::{FsPath, Table, join_abs, link_path, mnt_id, under};

/// A process holding the directory busy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub pid: u32,
    pub comm: String,
    /// What it holds: "cwd", "root", "fd 3", "mapping".
    pub what: String,
}

/// "1234 (sleep), 5678 (bash)": pids and command names.
pub fn describe(users: &[User]) -> String {
    let mut seen = Vec::new();
    for u in users {
        let s = format!("{} ({})", u.pid, u.comm);
        if !seen.contains(&s) {
            seen.push(s);
        }
    }
    seen.join(", ")
}

/// What is being looked for.
pub enum Target<'a> {
    /// The lower directory and everything inside it. With `covered_by`
    /// (the GuardPoint's FUSE device, once it is mounted and attached
    /// everywhere), also every object above it on the lower filesystem
    /// from which a path lookup reaches the directory without meeting
    /// that mount: an object on a mount that is detached (lazily
    /// unmounted, or a clone held by an fd) or shadowed by another mount.
    Tree {
        lower: &'a FsPath,
        covered_by: Option<&'a str>,
    },
    /// Anything on this filesystem ("major:minor").
    Device(&'a str),
}

impl Target<'_> {
    fn dev(&self) -> &str {
        match self {
            Target::Tree { lower, .. } => &lower.dev,
            Target::Device(d) => d,
        }
    }
}

/// Every process holding `target`, except the pids in `exclude` (this
/// process is always excluded: the GuardPoint's server holds the lower
/// directory by design). Sorted by pid, one entry per process.
pub fn users(target: &Target<'_>, exclude: &[u32]) -> Vec<User> {
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = procs
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| *p != me && !exclude.contains(p))
        .collect();
    pids.sort_unstable();
    let own = Table::read(None).unwrap_or_default();
    let mut out = Vec::new();
    for pid in pids {
        // A process whose /proc entries do not answer (stuck in the
        // kernel, e.g. in an exec held by its tracer) is inspected on a
        // helper thread left behind after a timeout, and counts as busy
        // (fail closed).
        let owned = OwnedTarget::of(target);
        let o = own.clone();
        let found = super::with_timeout(INSPECT_TIMEOUT, move || {
            let mut tables: HashMap<u64, Table> = HashMap::new();
            holds(pid, &owned.borrow(), &o, &mut tables)
        })
        .unwrap_or_else(|| Some("not inspectable (its /proc entries do not answer)".to_owned()));
        if let Some(what) = found {
            out.push(User {
                pid,
                comm: std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_default(),
                what,
            });
        }
    }
    out
}

/// The inode number of a process's mount namespace (`None` also when the
/// process's /proc entry does not answer within a second).
pub fn ns_ino(pid: Option<u32>) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let p = match pid {
        Some(p) => format!("/proc/{p}/ns/mnt"),
        None => "/proc/self/ns/mnt".to_owned(),
    };
    super::with_timeout(std::time::Duration::from_secs(1), move || {
        std::fs::metadata(p).ok().map(|m| m.ino())
    })
    .flatten()
}

/// The object behind a `/proc` magic link, opened `O_PATH` (same mount,
/// same dentry; no FUSE request).
fn open_link(link: &str) -> Option<std::os::fd::OwnedFd> {
    nix::fcntl::open(
        link,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()
}

/// Whether the object reached through mount `mnt` at `path` (in `table`'s
/// frame, or `own`'s) is part of `target`. `link` reopens the object when
/// its mount is in no table (detached): then its device decides (fail
/// closed).
fn judge(
    target: &Target<'_>,
    table: &Table,
    own: &Table,
    mnt: u64,
    path: &Path,
    link: &str,
) -> bool {
    let found = table
        .by_id(mnt)
        .map(|m| (m, table))
        .or_else(|| own.by_id(mnt).map(|m| (m, own)));
    let Some((m, t)) = found else {
        // A mount in no namespace (detached): its path in the filesystem
        // is unknown, so the object is compared by identity.
        let Some(fd) = open_link(link) else {
            return false;
        };
        let Ok((dev, _)) = super::raw::dev_ino(fd.as_fd()) else {
            return false;
        };
        return match target {
            Target::Device(d) => dev == *d,
            Target::Tree { lower, .. } => dev == lower.dev && detached_reaches(&fd, lower),
        };
    };
    let Some(inside) = under(path, &m.mount_point) else {
        // Frames that do not agree: on the same filesystem, count it.
        return m.dev == target.dev();
    };
    let obj = FsPath {
        dev: m.dev.clone(),
        rel: join_abs(&m.root, &inside),
        ino: 0,
    };
    match target {
        Target::Device(d) => obj.dev == *d,
        Target::Tree { lower, covered_by } => {
            if obj.within(lower) {
                return true;
            }
            let (Some(fuse), true) = (covered_by, lower.within(&obj)) else {
                return false;
            };
            // Above the GuardPoint: where the directory shows in mount
            // `m` must resolve to the GuardPoint.
            let Some(rest) = under(&lower.rel, &m.root) else {
                return true;
            };
            let place = join_abs(&m.mount_point, &rest);
            !matches!(t.resolve(&place), Some((r, rel)) if r.dev == *fuse && rel == Path::new("/"))
        }
    }
}

/// Whether the object `fd` (on a detached mount of the lower filesystem)
/// is the lower directory, inside it, or above it with a path down to it:
/// its ancestors (`..`, up to the mount's root) and the trailing parts of
/// the lower directory's path below it are compared with the lower
/// directory by (device, inode). Without the lower directory's inode,
/// fail closed.
fn detached_reaches(fd: &std::os::fd::OwnedFd, lower: &FsPath) -> bool {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
    if lower.ino == 0 {
        return true;
    }
    let is_lower = |f: &std::os::fd::OwnedFd| {
        super::raw::dev_ino(f.as_fd()).is_ok_and(|(d, i)| d == lower.dev && i == lower.ino)
    };
    // No crossing into other mounts (no FUSE server is ever asked).
    let how = || {
        OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
            .resolve(ResolveFlag::RESOLVE_NO_XDEV | ResolveFlag::RESOLVE_NO_SYMLINKS)
    };
    // Inside (or the directory itself): walk up.
    let mut cur = match nix::unistd::dup(fd) {
        Ok(f) => f,
        Err(_) => return true,
    };
    for _ in 0..256 {
        if is_lower(&cur) {
            return true;
        }
        let Ok(up) = openat2(&cur, "..", how()) else {
            break;
        };
        let same = |a: &std::os::fd::OwnedFd, b: &std::os::fd::OwnedFd| {
            super::raw::dev_ino(a.as_fd()).ok() == super::raw::dev_ino(b.as_fd()).ok()
        };
        if same(&up, &cur) {
            break;
        }
        cur = up;
    }
    // Above it: try each trailing part of its path.
    let parts: Vec<_> = lower
        .rel
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.to_owned()),
            _ => None,
        })
        .collect();
    for k in 1..=parts.len() {
        let tail: PathBuf = parts[parts.len() - k..].iter().collect();
        if let Ok(f) = openat2(fd, &tail, how())
            && is_lower(&f)
        {
            return true;
        }
    }
    false
}

/// What `pid` holds of `target`, if anything.
fn holds(
    pid: u32,
    target: &Target<'_>,
    own: &Table,
    tables: &mut HashMap<u64, Table>,
) -> Option<String> {
    let base = format!("/proc/{pid}");
    // Kernel threads and processes gone meanwhile have no namespace.
    let ns = ns_ino(Some(pid))?;
    // This process's frame: its mountinfo, with its root's path in front.
    let table = match Table::read(Some(pid)) {
        Ok(t) => {
            tables.insert(ns, t.clone());
            t
        }
        Err(_) => tables.get(&ns).cloned()?,
    };
    // cwd, root and mappings: the mount comes from an O_PATH fd opened
    // through the magic link.
    let via_open = |link: &str| -> bool {
        let Ok(path) = link_path(link) else {
            return false;
        };
        if !path.is_absolute() {
            return false;
        }
        let Some(fd) = open_link(link) else {
            return false;
        };
        use std::os::fd::AsRawFd;
        let Ok(mnt) = mnt_id(&format!("/proc/self/fdinfo/{}", fd.as_raw_fd())) else {
            return false;
        };
        judge(target, &table, own, mnt, &path, link)
    };
    for what in ["cwd", "root"] {
        if via_open(&format!("{base}/{what}")) {
            return Some(what.to_owned());
        }
    }
    if let Ok(fds) = std::fs::read_dir(format!("{base}/fd")) {
        for e in fds.filter_map(Result::ok) {
            let name = e.file_name();
            let Some(n) = name.to_str() else { continue };
            let link = format!("{base}/fd/{n}");
            let Ok(path) = link_path(&link) else {
                continue;
            };
            // Sockets, pipes, anonymous inodes.
            if !path.is_absolute() {
                continue;
            }
            let Ok(mnt) = mnt_id(&format!("{base}/fdinfo/{n}")) else {
                continue;
            };
            if judge(target, &table, own, mnt, &path, &link) {
                return Some(format!("fd {n}"));
            }
        }
    }
    // Mappings: reading them takes the process's mmap lock, which a
    // process stuck in a page fault (on a FUSE file whose server waits
    // for something) can hold for long. Scanned on a helper thread; a
    // process that does not answer in time counts as busy (fail closed).
    let owned = OwnedTarget::of(target);
    let (tx, rx) = std::sync::mpsc::channel();
    let (t, o, b) = (table.clone(), own.clone(), base.clone());
    let spawned = std::thread::Builder::new()
        .name("secfs-maps".into())
        .spawn(move || {
            let target = owned.borrow();
            let _ = tx.send(maps_hit(&b, &target, &t, &o));
        });
    if spawned.is_err() {
        return Some("mappings (not inspected)".to_owned());
    }
    match rx.recv_timeout(MAPS_TIMEOUT) {
        Ok(true) => Some("mapping".to_owned()),
        Ok(false) => None,
        Err(_) => Some("mappings (not readable in time)".to_owned()),
    }
}

/// How long inspecting one process may take.
const INSPECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long reading one process's mappings may take.
const MAPS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// A [`Target`] that owns its data (for the mappings thread).
enum OwnedTarget {
    Tree {
        lower: FsPath,
        covered_by: Option<String>,
    },
    Device(String),
}

impl OwnedTarget {
    fn of(t: &Target<'_>) -> OwnedTarget {
        match t {
            Target::Tree { lower, covered_by } => OwnedTarget::Tree {
                lower: (*lower).clone(),
                covered_by: covered_by.map(str::to_owned),
            },
            Target::Device(d) => OwnedTarget::Device((*d).to_owned()),
        }
    }

    fn borrow(&self) -> Target<'_> {
        match self {
            OwnedTarget::Tree { lower, covered_by } => Target::Tree {
                lower,
                covered_by: covered_by.as_deref(),
            },
            OwnedTarget::Device(d) => Target::Device(d),
        }
    }
}

/// Whether a mapping of the process at `base` (`/proc/PID`) is part of
/// `target`.
fn maps_hit(base: &str, target: &Target<'_>, table: &Table, own: &Table) -> bool {
    let Ok(maps) = std::fs::read_dir(format!("{base}/map_files")) else {
        return false;
    };
    let mut seen: std::collections::HashSet<PathBuf> = Default::default();
    for e in maps.filter_map(Result::ok) {
        let link = e.path();
        let Some(link) = link.to_str() else { continue };
        let Ok(path) = link_path(link) else { continue };
        if !path.is_absolute() || !seen.insert(path.clone()) {
            continue;
        }
        let Some(fd) = open_link(link) else { continue };
        use std::os::fd::AsRawFd;
        let Ok(mnt) = mnt_id(&format!("/proc/self/fdinfo/{}", fd.as_raw_fd())) else {
            continue;
        };
        if judge(target, table, own, mnt, &path, link) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_sitting_inside_is_found_by_cwd_and_fd() {
        let dir = tempfile::tempdir().unwrap();
        let target = FsPath::of_path(dir.path()).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(dir.path())
            .spawn()
            .unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let f = dir.path().join("sub/f");
        std::fs::write(&f, b"x").unwrap();
        let mut holder = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("exec 7<'{}'; exec sleep 30", f.display()))
            .current_dir("/")
            .spawn()
            .unwrap();
        crate::reach::wait_for(|| {
            users(
                &Target::Tree {
                    lower: &target,
                    covered_by: None,
                },
                &[],
            )
            .iter()
            .any(|u| u.pid == holder.id())
        });
        let found = users(
            &Target::Tree {
                lower: &target,
                covered_by: None,
            },
            &[],
        );
        let _ = child.kill();
        let _ = child.wait();
        let _ = holder.kill();
        let _ = holder.wait();
        assert!(
            found
                .iter()
                .any(|u| u.pid == child.id() && u.comm == "sleep" && u.what == "cwd"),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|u| u.pid == holder.id() && u.what == "fd 7"),
            "{found:?}"
        );
        assert!(describe(&found).contains("(sleep)"));
        let after = users(
            &Target::Tree {
                lower: &target,
                covered_by: None,
            },
            &[],
        );
        assert!(after.iter().all(|u| u.pid != child.id()), "{after:?}");
        // A sibling directory with a common prefix is not inside.
        let other = FsPath {
            dev: target.dev.clone(),
            rel: PathBuf::from(format!("{}x", target.rel.display())),
            ino: 0,
        };
        assert!(
            users(
                &Target::Tree {
                    lower: &other,
                    covered_by: None
                },
                &[]
            )
            .is_empty()
        );
    }
}
