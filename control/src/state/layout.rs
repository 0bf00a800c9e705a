//! The install layout: where the agent keeps its configuration, secrets,
//! binaries, runtime files and logs.
//!
//! `root` holds `etc/` (configuration, policies, GuardPoints), `.sec/`
//! (host key and key store, 0700) and `bin/`. The runtime directory
//! (`run_dir`, default `/run/guardfs`, with `blobs/` at 0700) and the log
//! directory (`log_dir`, default `/var/log/guardfs`) can be moved with
//! `run_dir=` and `log_dir=` in `etc/agent.conf`.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{AgentConf, Result, StateError};

/// The default install root.
pub const DEFAULT_ROOT: &str = "/opt/guardfs/agent";
/// The default runtime directory.
pub const DEFAULT_RUN_DIR: &str = "/run/guardfs";
/// The default log directory.
pub const DEFAULT_LOG_DIR: &str = "/var/log/guardfs";

/// The install root: `$GUARDFS_ROOT` if set and not empty, else
/// [`DEFAULT_ROOT`].
pub fn default_root() -> PathBuf {
    match std::env::var_os("GUARDFS_ROOT") {
        Some(r) if !r.is_empty() => PathBuf::from(r),
        _ => PathBuf::from(DEFAULT_ROOT),
    }
}

/// Resolved paths of one installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The install root.
    pub root: PathBuf,
    /// `root/etc`.
    pub etc: PathBuf,
    /// `root/.sec` (0700).
    pub sec: PathBuf,
    /// `root/bin`.
    pub bin: PathBuf,
    /// Runtime directory.
    pub run_dir: PathBuf,
    /// Log directory.
    pub log_dir: PathBuf,
    /// `run_dir/blobs` (0700): blobs handed to `secfs`.
    pub blob_dir: PathBuf,
}

impl Layout {
    /// Resolve the layout under `root`, reading `root/etc/agent.conf` if it
    /// exists.
    ///
    /// # Errors
    /// A malformed `agent.conf`, or a `run_dir`/`log_dir` that is not an
    /// absolute path.
    pub fn open(root: &Path) -> Result<Layout> {
        let etc = root.join("etc");
        let conf_path = etc.join("agent.conf");
        let conf = AgentConf::load(&conf_path)?;
        let dir = |key: &str, default: &str| -> Result<PathBuf> {
            match conf.get(key) {
                None => Ok(PathBuf::from(default)),
                Some(v) if v.starts_with('/') => Ok(PathBuf::from(v)),
                Some(v) => Err(StateError::invalid(
                    &conf_path,
                    format!("`{key}` must be an absolute path, found {v:?}"),
                )),
            }
        };
        let run_dir = dir("run_dir", DEFAULT_RUN_DIR)?;
        let log_dir = dir("log_dir", DEFAULT_LOG_DIR)?;
        Ok(Layout {
            root: root.to_owned(),
            sec: root.join(".sec"),
            bin: root.join("bin"),
            blob_dir: run_dir.join("blobs"),
            etc,
            run_dir,
            log_dir,
        })
    }

    /// `etc/agent.conf`.
    pub fn agent_conf(&self) -> PathBuf {
        self.etc.join("agent.conf")
    }

    /// `etc/guardpoints.json`.
    pub fn guardpoints(&self) -> PathBuf {
        self.etc.join("guardpoints.json")
    }

    /// `.sec/keys.json`.
    pub fn keys(&self) -> PathBuf {
        self.sec.join("keys.json")
    }

    /// Create every directory that is missing (`.sec` and `blobs` 0700,
    /// the others 0755), and force `.sec` and `blobs` to 0700 if they exist.
    ///
    /// # Errors
    /// I/O errors, or `.sec`/`blobs` being something other than a real
    /// directory (a symlink is refused).
    pub fn create_dirs(&self) -> Result<()> {
        for (dir, secret) in [
            (&self.root, false),
            (&self.etc, false),
            (&self.sec, true),
            (&self.bin, false),
            (&self.run_dir, false),
            (&self.log_dir, false),
            (&self.blob_dir, true),
        ] {
            let mode = if secret { 0o700 } else { 0o755 };
            match fs::symlink_metadata(dir) {
                Ok(m) => {
                    if secret && !m.file_type().is_dir() {
                        return Err(StateError::invalid(
                            dir,
                            "must be a directory (not a symlink or file)",
                        ));
                    }
                    if secret && m.permissions().mode() & 0o7777 != mode {
                        fs::set_permissions(dir, fs::Permissions::from_mode(mode))
                            .map_err(|e| StateError::io(dir, "cannot set mode", e))?;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    fs::DirBuilder::new()
                        .recursive(true)
                        .mode(mode)
                        .create(dir)
                        .map_err(|e| StateError::io(dir, "cannot create directory", e))?;
                    // The umask may have narrowed the mode; set it exactly.
                    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
                        .map_err(|e| StateError::io(dir, "cannot set mode", e))?;
                }
                Err(e) => return Err(StateError::io(dir, "cannot inspect", e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn defaults() {
        let l = Layout::open(Path::new("/nonexistent/root")).unwrap();
        assert_eq!(l.etc, Path::new("/nonexistent/root/etc"));
        assert_eq!(l.sec, Path::new("/nonexistent/root/.sec"));
        assert_eq!(l.bin, Path::new("/nonexistent/root/bin"));
        assert_eq!(l.run_dir, Path::new(DEFAULT_RUN_DIR));
        assert_eq!(l.log_dir, Path::new(DEFAULT_LOG_DIR));
        assert_eq!(l.blob_dir, Path::new("/run/guardfs/blobs"));
        assert!(!default_root().as_os_str().is_empty());
    }

    #[test]
    fn conf_overrides_and_create_dirs() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("agent");
        fs::create_dir_all(root.join("etc")).unwrap();
        let run = d.path().join("run");
        let log = d.path().join("log");
        fs::write(
            root.join("etc/agent.conf"),
            format!(
                "# test\nrun_dir={}\nlog_dir={}\n",
                run.display(),
                log.display()
            ),
        )
        .unwrap();
        let l = Layout::open(&root).unwrap();
        assert_eq!(l.run_dir, run);
        assert_eq!(l.blob_dir, run.join("blobs"));
        fs::create_dir(&l.sec).unwrap();
        fs::set_permissions(&l.sec, fs::Permissions::from_mode(0o755)).unwrap();
        l.create_dirs().unwrap();
        assert_eq!(mode(&l.sec), 0o700);
        assert_eq!(mode(&l.blob_dir), 0o700);
        for p in [&l.root, &l.etc, &l.bin, &l.run_dir, &l.log_dir] {
            assert_eq!(mode(p), 0o755, "{}", p.display());
        }
        l.create_dirs().unwrap();
    }

    #[test]
    fn relative_run_dir_is_refused() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("etc")).unwrap();
        fs::write(d.path().join("etc/agent.conf"), "run_dir=run\n").unwrap();
        let e = Layout::open(d.path()).unwrap_err().to_string();
        assert!(e.contains("agent.conf") && e.contains("absolute"), "{e}");
        fs::write(d.path().join("etc/agent.conf"), "run_dir\n").unwrap();
        let e = Layout::open(d.path()).unwrap_err().to_string();
        assert!(e.contains("agent.conf: line 1:"), "{e}");
    }

    #[test]
    fn symlinked_sec_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(
            root.join("etc/agent.conf"),
            format!("run_dir={0}/run\nlog_dir={0}/log\n", root.display()),
        )
        .unwrap();
        std::os::unix::fs::symlink("/tmp", root.join(".sec")).unwrap();
        let e = Layout::open(root)
            .unwrap()
            .create_dirs()
            .unwrap_err()
            .to_string();
        assert!(e.contains(".sec") && e.contains("symlink"), "{e}");
    }
}
