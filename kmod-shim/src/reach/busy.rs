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

use super::mountinfo::{FsPath, Table, link_path, mnt_id, resolve_in};

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
    /// The directory (and everything inside it).
    Tree(&'a FsPath),
    /// Anything on this filesystem ("major:minor").
    Device(&'a str),
}

impl Target<'_> {
    fn hit(&self, obj: &Option<FsPath>, dev_hint: Option<&str>) -> bool {
        match (self, obj) {
            (Target::Tree(t), Some(o)) => o.within(t),
            (Target::Device(d), Some(o)) => o.dev == *d,
            // The object's mount could not be placed (a chrooted process's
            // fd on a mount outside its root): on the same filesystem,
            // count it (fail closed).
            (Target::Tree(t), None) => dev_hint == Some(t.dev.as_str()),
            (Target::Device(d), None) => dev_hint == Some(*d),
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
    let mut tables: HashMap<u64, Table> = HashMap::new();
    let own = Table::read(None).unwrap_or_default();
    let mut out = Vec::new();
    for pid in pids {
        if let Some(what) = holds(pid, target, &own, &mut tables) {
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

/// The inode number of a process's mount namespace.
pub fn ns_ino(pid: Option<u32>) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let p = match pid {
        Some(p) => format!("/proc/{p}/ns/mnt"),
        None => "/proc/self/ns/mnt".to_owned(),
    };
    std::fs::metadata(p).ok().map(|m| m.ino())
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
    let place = |mnt: u64, path: &Path| -> (Option<FsPath>, Option<String>) {
        let m = table.by_id(mnt).or_else(|| own.by_id(mnt));
        let dev = m.map(|m| m.dev.clone());
        let obj = resolve_in(&table, mnt, path).or_else(|| resolve_in(own, mnt, path));
        (obj, dev)
    };
    // cwd, root and mappings: the mount comes from an O_PATH fd opened
    // through the magic link (same mount, same dentry; no FUSE request).
    let via_open = |link: &str| -> Option<(Option<FsPath>, Option<String>)> {
        let path = link_path(link).ok()?;
        if !path.is_absolute() {
            return None;
        }
        let fd = nix::fcntl::open(
            link,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok()?;
        use std::os::fd::AsRawFd;
        let mnt = mnt_id(&format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd())).ok()?;
        Some(place(mnt, &path))
    };
    for what in ["cwd", "root"] {
        if let Some((obj, dev)) = via_open(&format!("{base}/{what}"))
            && target.hit(&obj, dev.as_deref())
        {
            return Some(what.to_owned());
        }
    }
    if let Ok(fds) = std::fs::read_dir(format!("{base}/fd")) {
        for e in fds.filter_map(Result::ok) {
            let name = e.file_name();
            let Some(n) = name.to_str() else { continue };
            let Ok(path) = link_path(&format!("{base}/fd/{n}")) else {
                continue;
            };
            // Sockets, pipes, anonymous inodes.
            if !path.is_absolute() {
                continue;
            }
            let Ok(mnt) = mnt_id(&format!("{base}/fdinfo/{n}")) else {
                continue;
            };
            let (obj, dev) = place(mnt, &path);
            if target.hit(&obj, dev.as_deref()) {
                return Some(format!("fd {n}"));
            }
        }
    }
    if let Ok(maps) = std::fs::read_dir(format!("{base}/map_files")) {
        let mut seen: Vec<PathBuf> = Vec::new();
        for e in maps.filter_map(Result::ok) {
            let link = e.path();
            let Some(link) = link.to_str() else { continue };
            let Ok(path) = link_path(link) else { continue };
            if seen.contains(&path) {
                continue;
            }
            seen.push(path);
            if let Some((obj, dev)) = via_open(link)
                && target.hit(&obj, dev.as_deref())
            {
                return Some("mapping".to_owned());
            }
        }
    }
    None
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
            users(&Target::Tree(&target), &[])
                .iter()
                .any(|u| u.pid == holder.id())
        });
        let found = users(&Target::Tree(&target), &[]);
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
        let after = users(&Target::Tree(&target), &[]);
        assert!(after.iter().all(|u| u.pid != child.id()), "{after:?}");
        // A sibling directory with a common prefix is not inside.
        let other = FsPath {
            dev: target.dev.clone(),
            rel: PathBuf::from(format!("{}x", target.rel.display())),
        };
        assert!(users(&Target::Tree(&other), &[]).is_empty());
    }
}
