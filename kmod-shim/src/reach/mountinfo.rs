//! `/proc/PID/mountinfo` parsed, and the object behind a path told apart
//! by its filesystem (`major:minor`) and its path inside that filesystem
//! ([`FsPath`]), which no bind mount or mount namespace can disguise.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Component, Path, PathBuf};

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub id: u64,
    pub parent: u64,
    /// The superblock's device, "major:minor".
    pub dev: String,
    /// The mount's root inside its filesystem.
    pub root: PathBuf,
    /// The mount point, in the frame of the namespace's root (see
    /// [`Table::read`]).
    pub mount_point: PathBuf,
    /// Filesystem type (`ext4`, `fuse.secfs`, ...).
    pub fstype: String,
    pub source: String,
}

/// Octal escapes (`\040`) of mountinfo undone.
pub fn unescape(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse one mountinfo line; mount points are prefixed with `frame`.
fn parse_line(line: &str, frame: &Path) -> Option<Mount> {
    let (pre, post) = line.split_once(" - ")?;
    let mut f = pre.split_whitespace();
    let id = f.next()?.parse().ok()?;
    let parent = f.next()?.parse().ok()?;
    let dev = f.next()?.to_owned();
    let root = PathBuf::from(unescape(f.next()?));
    let mp = unescape(f.next()?);
    let mut p = post.split_whitespace();
    let fstype = p.next()?.to_owned();
    let source = p.next().map(unescape).unwrap_or_default();
    Some(Mount {
        id,
        parent,
        dev,
        root,
        mount_point: join_abs(frame, Path::new(&mp)),
        fstype,
        source,
    })
}

/// `base` + `rel` where `rel` is absolute ("/" + "/a" = "/a").
pub fn join_abs(base: &Path, rel: &Path) -> PathBuf {
    let mut out = base.to_path_buf();
    for c in rel.components() {
        if let Component::Normal(n) = c {
            out.push(n);
        }
    }
    out
}

/// `path` relative to `prefix`, component-wise ("/a/b" in "/a" is "/b",
/// "/a" in "/a" is "/"); `None` when `path` is not under `prefix`.
pub fn under(path: &Path, prefix: &Path) -> Option<PathBuf> {
    let rest = path.strip_prefix(prefix).ok()?;
    Some(join_abs(Path::new("/"), rest))
}

/// A process's mount table, with mount points in the frame of its mount
/// namespace's root (a chrooted process's own mountinfo is relative to
/// its root; the root's path is put in front).
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub mounts: Vec<Mount>,
}

impl Table {
    /// The mount table as `pid` (or this process) sees it.
    pub fn read(pid: Option<u32>) -> std::io::Result<Table> {
        let base = match pid {
            Some(p) => format!("/proc/{p}"),
            None => "/proc/self".to_owned(),
        };
        let frame = std::fs::read_link(format!("{base}/root"))?;
        let text = std::fs::read_to_string(format!("{base}/mountinfo"))?;
        Ok(Self::parse(&text, &frame))
    }

    /// Parse mountinfo text, mount points put under `frame`.
    pub fn parse(text: &str, frame: &Path) -> Table {
        Table {
            mounts: text.lines().filter_map(|l| parse_line(l, frame)).collect(),
        }
    }

    pub fn by_id(&self, id: u64) -> Option<&Mount> {
        self.mounts.iter().find(|m| m.id == id)
    }

    /// The mount a path lookup of `path` (absolute, in this table's frame)
    /// ends on, walking the tree as the kernel does: from the root mount,
    /// the first mount met along the path wins (a mount whose mount point
    /// lies under a path that another mount covers is hidden), and on one
    /// mount point the mount stacked last. Returns the mount and the path
    /// inside its filesystem.
    pub fn resolve(&self, path: &Path) -> Option<(&Mount, PathBuf)> {
        let ids: std::collections::HashSet<u64> = self.mounts.iter().map(|m| m.id).collect();
        // The namespace root: its parent is not in the table.
        let mut cur = self
            .mounts
            .iter()
            .find(|m| !ids.contains(&m.parent) || m.parent == m.id)?;
        loop {
            let next = self
                .mounts
                .iter()
                .filter(|m| m.parent == cur.id && m.id != cur.id)
                .filter(|m| path.starts_with(&m.mount_point))
                .filter(|m| m.mount_point.starts_with(&cur.mount_point))
                // Shortest mount point first; among equals, the last one.
                .fold(None::<&Mount>, |best, m| match best {
                    Some(b)
                        if b.mount_point.components().count()
                            < m.mount_point.components().count() =>
                    {
                        Some(b)
                    }
                    _ => Some(m),
                });
            match next {
                Some(n) => cur = n,
                None => break,
            }
        }
        let inside = under(path, &cur.mount_point)?;
        Some((cur, join_abs(&cur.root, &inside)))
    }
}

/// An object named by its filesystem and its path inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsPath {
    /// "major:minor" of the superblock.
    pub dev: String,
    /// Path from the filesystem's root.
    pub rel: PathBuf,
    /// The directory's inode when known (0: unknown); lets objects on
    /// detached mounts, whose path in the filesystem is unknown, be
    /// compared by identity.
    pub ino: u64,
}

impl std::fmt::Display for FsPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.dev, self.rel.display())
    }
}

impl FsPath {
    /// Whether `self` is `other` or inside it (same filesystem).
    pub fn within(&self, other: &FsPath) -> bool {
        self.dev == other.dev && self.rel.starts_with(&other.rel)
    }

    /// The object a path refers to in this process's namespace, found by
    /// opening it (`O_PATH`, no FUSE request) and asking the kernel which
    /// mount it was reached through.
    pub fn of_path(path: &Path) -> std::io::Result<FsPath> {
        let fd = nix::fcntl::open(
            path,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        use std::os::fd::AsFd;
        Self::of_fd(fd.as_fd(), &Table::read(None)?)
    }

    /// The object an fd of this process refers to, with `table` this
    /// process's mount table.
    pub fn of_fd(fd: BorrowedFd<'_>, table: &Table) -> std::io::Result<FsPath> {
        let n = fd.as_raw_fd();
        let mnt = mnt_id(&format!("/proc/self/fdinfo/{n}"))?;
        let path = link_path(&format!("/proc/self/fd/{n}"))?;
        let ino = super::raw::dev_ino(fd).map(|(_, i)| i).unwrap_or(0);
        resolve_in(table, mnt, &path)
            .map(|f| FsPath { ino, ..f })
            .ok_or_else(|| {
                std::io::Error::other(format!(
                    "{}: mount {mnt} not found in the mount table",
                    path.display()
                ))
            })
    }
}

/// The `mnt_id` in an fdinfo file.
pub fn mnt_id(fdinfo: &str) -> std::io::Result<u64> {
    std::fs::read_to_string(fdinfo)?
        .lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("{fdinfo}: no mnt_id")))
}

/// The target of a `/proc` magic link as a path, " (deleted)" removed.
pub fn link_path(link: &str) -> std::io::Result<PathBuf> {
    let p = std::fs::read_link(link)?;
    let s = p.to_string_lossy();
    Ok(PathBuf::from(
        s.strip_suffix(" (deleted)").unwrap_or(&s).to_owned(),
    ))
}

/// The object reached through mount `mnt` at `path` (both in `table`'s
/// frame), as an [`FsPath`].
pub fn resolve_in(table: &Table, mnt: u64, path: &Path) -> Option<FsPath> {
    let m = table.by_id(mnt)?;
    let inside = under(path, &m.mount_point)?;
    Some(FsPath {
        dev: m.dev.clone(),
        rel: join_abs(&m.root, &inside),
        ino: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(lines: &[&str]) -> Table {
        Table {
            mounts: lines
                .iter()
                .filter_map(|l| parse_line(l, Path::new("/")))
                .collect(),
        }
    }

    #[test]
    fn resolution_follows_the_first_mount_on_the_path() {
        let t = table(&[
            "1 0 8:1 / / rw - ext4 /dev/sda1 rw",
            // A bind of a subdirectory of the GuardPoint, made before the guard.
            "2 1 8:1 /data/gp/sub /data/gp/sub rw - ext4 /dev/sda1 rw",
            // The GuardPoint, mounted after: hides the bind above.
            "3 1 0:50 / /data/gp rw - fuse.secfs guardfs rw",
            // A bind of the parent elsewhere.
            "4 1 8:1 /data /mnt/data rw - ext4 /dev/sda1 rw",
            // Stacked on /mnt/data.
            "5 4 0:50 / /mnt/data/gp rw - fuse.secfs guardfs rw",
            "6 1 0:60 / /srv rw - tmpfs tmpfs rw",
            "7 6 0:61 / /srv rw - tmpfs tmpfs rw",
        ]);
        let r = |p: &str| {
            let (m, rel) = t.resolve(Path::new(p)).unwrap();
            (m.id, rel.display().to_string())
        };
        assert_eq!(r("/data/gp/sub/x"), (3, "/sub/x".into()));
        assert_eq!(r("/data/gp"), (3, "/".into()));
        assert_eq!(r("/data/other"), (1, "/data/other".into()));
        assert_eq!(r("/mnt/data/gp"), (5, "/".into()));
        assert_eq!(r("/mnt/data/x"), (4, "/data/x".into()));
        assert_eq!(r("/srv/a"), (7, "/a".into()));
        assert_eq!(r("/"), (1, "/".into()));
    }

    #[test]
    fn escapes_and_within() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        let a = FsPath {
            dev: "8:1".into(),
            rel: "/data/gp".into(),
            ino: 0,
        };
        let b = FsPath {
            dev: "8:1".into(),
            rel: "/data/gp2".into(),
            ino: 0,
        };
        assert!(!b.within(&a));
        assert!(a.within(&a));
        assert_eq!(under(Path::new("/a/b"), Path::new("/a")), Some("/b".into()));
        assert_eq!(under(Path::new("/a"), Path::new("/a")), Some("/".into()));
        assert_eq!(under(Path::new("/ab"), Path::new("/a")), None);
    }
}
