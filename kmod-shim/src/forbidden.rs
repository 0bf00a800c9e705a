//! Directories that must never become GuardPoints, because guarding them
//! would break the host or the agent itself: `/`, the system directories,
//! the agent's install root, its log, run and state directories — each
//! of them, anything inside them, and their parents (guarding `/var`
//! would guard `/var/lib/dpkg`).
//!
//! Used by vmd (at registration, `voradmin guard`) and by secfs (every
//! mount, standalone or for vmd). A directory is compared three ways, so
//! neither a symlink nor a bind mount disguises it:
//! * canonical paths (symlinks resolved: `/lib` is `/usr/lib` on
//!   merged-`/usr` systems);
//! * (device, inode) of the directory against each forbidden directory;
//! * the path inside its filesystem ([`FsPath`]), from the mount it is
//!   reached through, against each forbidden directory's on the same
//!   filesystem: a bind mount of `/etc` (or of `/usr/share`, or of `/`) at
//!   `/tmp/x` is `/etc` (inside `/usr`, an ancestor of `/etc`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::reach::mountinfo::FsPath;

/// The system directories (and, by the ancestor rule, their parents).
pub const SYSTEM_DIRS: &[&str] = &[
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib64",
    "/proc",
    "/sbin",
    "/sys",
    "/usr",
    "/run",
    "/var/lib/dpkg",
];

/// Where every GuardFS install lives, and the agent's default log and run
/// directories.
pub const AGENT_DIRS: &[(&str, &str)] = &[
    ("/opt/guardfs", "the GuardFS install root"),
    ("/var/log/guardfs", "the agent's log directory"),
    ("/run/guardfs", "the agent's run directory"),
];

#[derive(Debug, Clone)]
struct Entry {
    path: PathBuf,
    why: String,
    /// Only the directory itself (`/`), not what is inside.
    exact: bool,
}

/// The forbidden directories.
#[derive(Debug, Clone)]
pub struct Forbidden {
    entries: Vec<Entry>,
}

impl Default for Forbidden {
    fn default() -> Self {
        Self::host()
    }
}

impl Forbidden {
    /// `/`, the system directories and the agent's default directories,
    /// plus the install root of the running executable when it is under
    /// `/opt/guardfs`.
    pub fn host() -> Forbidden {
        let mut f = Forbidden {
            entries: vec![Entry {
                path: "/".into(),
                why: "the root directory".into(),
                exact: true,
            }],
        };
        for d in SYSTEM_DIRS {
            f = f.with(Path::new(d), "a system directory");
        }
        for (d, why) in AGENT_DIRS {
            f = f.with(Path::new(d), why);
        }
        if let Ok(exe) = std::env::current_exe().and_then(|e| e.canonicalize())
            && exe.starts_with("/opt/guardfs")
        {
            // .../bin/secfs: the install root is above bin/.
            if let Some(root) = exe.parent().and_then(Path::parent) {
                f = f.with(root, "the agent's install root");
            }
        }
        f
    }

    /// Add a directory (forbidden with everything inside and its parents).
    pub fn with(mut self, path: &Path, why: &str) -> Forbidden {
        self.entries.push(Entry {
            path: path.to_path_buf(),
            why: why.to_owned(),
            exact: false,
        });
        self
    }

    /// Refuse `dir` (absolute) with the reason, or accept it.
    pub fn check(&self, dir: &Path) -> Result<(), String> {
        let canon = canonical(dir);
        let meta = std::fs::metadata(&canon).ok();
        let fsp = FsPath::of_path(&canon).ok();
        let refuse = |what: String| Err(format!("{}: refusing to guard {what}", dir.display()));
        for e in &self.entries {
            let ep = canonical(&e.path);
            let name = if ep == e.path {
                format!("{} ({})", e.path.display(), e.why)
            } else {
                format!("{} ({}, {})", e.path.display(), ep.display(), e.why)
            };
            if canon == ep {
                return refuse(name.clone());
            }
            if !e.exact && canon.starts_with(&ep) {
                return refuse(format!("a directory inside {name}"));
            }
            if !e.exact && ep.starts_with(&canon) {
                return refuse(format!("a directory containing {name}"));
            }
            let Ok(em) = std::fs::metadata(&ep) else {
                continue;
            };
            if let Some(m) = &meta
                && (m.dev(), m.ino()) == (em.dev(), em.ino())
            {
                return refuse(format!("{name} under another name (same inode)"));
            }
            let (Some(d), Ok(f)) = (&fsp, FsPath::of_path(&ep)) else {
                continue;
            };
            if d.dev != f.dev {
                continue;
            }
            if d.rel == f.rel {
                return refuse(format!("{name} under another name (a bind mount)"));
            }
            if !e.exact && d.within(&f) {
                return refuse(format!("a directory inside {name} (through a bind mount)"));
            }
            if !e.exact && f.within(d) {
                return refuse(format!(
                    "a directory containing {name} (through a bind mount)"
                ));
            }
        }
        Ok(())
    }
}

/// Symlinks resolved as far as the path exists.
fn canonical(p: &Path) -> PathBuf {
    if let Ok(c) = p.canonicalize() {
        return c;
    }
    match (p.parent(), p.file_name()) {
        (Some(parent), Some(name)) => canonical(parent).join(name),
        _ => p.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(f: &Forbidden, p: &str) -> String {
        f.check(Path::new(p)).expect_err(p)
    }

    #[test]
    fn system_directories_their_parents_and_insides_are_refused() {
        let f = Forbidden::host();
        assert!(refused(&f, "/").contains("the root directory"));
        assert!(refused(&f, "/etc").contains("/etc (a system directory)"));
        assert!(refused(&f, "/etc/ssl").contains("inside /etc"));
        assert!(refused(&f, "/usr/share").contains("inside /usr"));
        assert!(refused(&f, "/var").contains("containing /var/lib/dpkg"));
        assert!(refused(&f, "/var/lib").contains("containing /var/lib/dpkg"));
        assert!(refused(&f, "/opt").contains("containing /opt/guardfs"));
        assert!(refused(&f, "/opt/guardfs/agent/etc").contains("inside /opt/guardfs"));
        assert!(refused(&f, "/var/log/guardfs").contains("log directory"));
        assert!(refused(&f, "/run/anything").contains("inside /run"));
        let tmp = tempfile::tempdir_in("/var/tmp").unwrap();
        f.check(tmp.path()).unwrap();
        f.check(Path::new("/var/lib/mysql")).unwrap();
        f.check(Path::new("/srv/data")).unwrap();
        let extra = f.clone().with(tmp.path(), "the agent's install root");
        assert!(refused(&extra, tmp.path().join("etc").to_str().unwrap()).contains("install root"));
    }

    #[test]
    fn a_symlink_to_a_system_directory_is_refused() {
        let tmp = tempfile::tempdir_in("/var/tmp").unwrap();
        let l = tmp.path().join("l");
        std::os::unix::fs::symlink("/etc", &l).unwrap();
        assert!(refused(&Forbidden::host(), l.to_str().unwrap()).contains("/etc"));
    }
}
