//! Mounting a GuardPoint over its own directory, serving it, and
//! unmounting it.
//!
//! Order matters: the lower directory is opened (`O_PATH`) *before* the
//! FUSE filesystem is mounted on the same path, so applications keep their
//! paths while the lower files stay reachable only through this process.
//! Mounting uses mount(2) directly (root only; no fusermount).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::{Config, Session, SessionACL};
use log::{info, warn};
use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::Mode as StatMode;

use crate::exitcode;
use crate::fuse::{FuseBinding, FuseOptions};
use crate::reach;
use crate::stack::{GuardConfig, Stack};

/// The filesystem type shown in /proc/mounts is `fuse.secfs`.
pub const FS_SUBTYPE: &str = "secfs";

/// Why a mount or unmount failed; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("secfs must run as root")]
    NotRoot,
    #[error("/dev/fuse is not available: {0}")]
    NoFuse(String),
    #[error("{path}: {why}")]
    BadDir { path: String, why: String },
    #[error("{0} is already a GuardPoint (secfs is mounted there)")]
    AlreadyMounted(String),
    #[error("mounting {path} failed: {why}")]
    MountFailed { path: String, why: String },
    #[error("{0} is not a secfs GuardPoint")]
    NotMounted(String),
    #[error("{0} is busy (files are open); close them or use --lazy")]
    Busy(String),
    /// Guard refused: processes hold the lower directory.
    #[error("{path}: not guarded, busy: in use by pid {users}")]
    InUse { path: String, users: String },
    /// Guard refused: the lower directory would stay reachable elsewhere.
    #[error("{path}: not guarded: {why}")]
    Unreachable { path: String, why: String },
    /// Guard refused: the directory must never be a GuardPoint.
    #[error("{0}")]
    Forbidden(String),
}

impl MountError {
    /// The exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            MountError::NotRoot => exitcode::NOT_ROOT,
            MountError::NoFuse(_) => exitcode::NO_FUSE,
            MountError::BadDir { .. } => exitcode::BAD_DIR,
            MountError::AlreadyMounted(_) => exitcode::ALREADY_MOUNTED,
            MountError::MountFailed { .. } => exitcode::MOUNT_FAILED,
            MountError::NotMounted(_) => exitcode::NOT_MOUNTED,
            MountError::Busy(_) | MountError::InUse { .. } => exitcode::BUSY,
            MountError::Unreachable { .. } => exitcode::UNREACHABLE,
            MountError::Forbidden(_) => exitcode::BAD_DIR,
        }
    }
}

/// Fail unless running as root.
pub fn require_root() -> Result<(), MountError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(MountError::NotRoot)
    }
}

/// The secfs mounts in this mount namespace, from mountinfo: each mount
/// point with its "major:minor" device number.
fn secfs_mountinfo() -> Vec<(PathBuf, String)> {
    let Ok(f) = File::open("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let want = format!("fuse.{FS_SUBTYPE}");
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let mut fields = pre.split_whitespace();
            let devno = fields.nth(2)?.to_owned();
            let mp = fields.nth(1)?;
            (post.split_whitespace().next()? == want)
                .then(|| (PathBuf::from(crate::reach::mountinfo::unescape(mp)), devno))
        })
        .collect()
}

/// The secfs mount points in this mount namespace.
pub fn secfs_mounts() -> Vec<PathBuf> {
    secfs_mountinfo().into_iter().map(|(p, _)| p).collect()
}

/// Resolve `dir` to an absolute path without touching a dead mount on it.
pub fn absolute(dir: &Path) -> Result<PathBuf, MountError> {
    let bad = |why: String| MountError::BadDir {
        path: dir.display().to_string(),
        why,
    };
    let abs = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| bad(e.to_string()))?
            .join(dir)
    };
    // Canonicalize the parent (a dead FUSE mount on `dir` itself would
    // fail with ENOTCONN), then append the last component.
    let name = abs.file_name().map(|n| n.to_owned());
    match (abs.parent(), name) {
        (Some(parent), Some(name)) => {
            let p = parent
                .canonicalize()
                .map_err(|e| bad(format!("parent directory: {e}")))?;
            Ok(p.join(name))
        }
        _ => Ok(PathBuf::from("/")),
    }
}

/// Check the directory and recover a dead secfs mount on it (a daemon that
/// died leaves ENOTCONN behind; a new mount detaches it first).
pub fn prepare_dir(dir: &Path) -> Result<PathBuf, MountError> {
    let path = absolute(dir)?;
    let shown = path.display().to_string();
    if secfs_mounts().iter().any(|m| m == &path) {
        match std::fs::metadata(&path) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
                warn!("secfs: {shown}: previous secfs daemon is gone; detaching its dead mount");
                nix::mount::umount2(&path, MntFlags::MNT_DETACH).map_err(|e| {
                    MountError::MountFailed {
                        path: shown.clone(),
                        why: format!("detaching dead mount: {e}"),
                    }
                })?;
            }
            _ => return Err(MountError::AlreadyMounted(shown)),
        }
    }
    match std::fs::metadata(&path) {
        Ok(m) if m.is_dir() => Ok(path),
        Ok(_) => Err(MountError::BadDir {
            path: shown,
            why: "not a directory".into(),
        }),
        Err(e) => Err(MountError::BadDir {
            path: shown,
            why: e.to_string(),
        }),
    }
}

/// Open /dev/fuse, with a clear error if it is missing.
pub fn open_fuse_device() -> Result<OwnedFd, MountError> {
    nix::fcntl::open(
        "/dev/fuse",
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        StatMode::empty(),
    )
    .map_err(|e| MountError::NoFuse(e.desc().to_owned()))
}

/// A GuardPoint to mount.
#[derive(Debug, Clone)]
pub struct MountSpec {
    pub dir: PathBuf,
    pub guard: GuardConfig,
    pub fuse: FuseOptions,
    /// Worker threads (each with its own cloned /dev/fuse fd).
    pub threads: usize,
    /// Processes allowed to hold the lower directory (besides this one).
    pub exclude: Vec<u32>,
}

/// A mounted GuardPoint whose session has not started serving yet.
pub struct Mounted {
    pub path: PathBuf,
    pub stack: Arc<Stack>,
    session: Session<FuseBinding<Stack>>,
    lower: reach::mountinfo::FsPath,
    exclude: Vec<u32>,
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounted")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Open the lower directory, mount FUSE over it and complete the FUSE
/// handshake.
pub fn mount(spec: &MountSpec) -> Result<Mounted, MountError> {
    require_root()?;
    let path = prepare_dir(&spec.dir)?;
    let shown = path.display().to_string();
    crate::forbidden::Forbidden::host()
        .check(&path)
        .map_err(MountError::Forbidden)?;
    let failed = |why: String| MountError::MountFailed {
        path: shown.clone(),
        why,
    };
    // No symlink anywhere in the path (it is canonical already): a path
    // swapped for a symlink between the checks and the mount must not
    // make secfs guard, or serve, some other directory.
    let how = nix::fcntl::OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(nix::fcntl::ResolveFlag::RESOLVE_NO_SYMLINKS);
    let lower =
        nix::fcntl::openat2(nix::fcntl::AT_FDCWD, &path, how).map_err(|e| MountError::BadDir {
            path: shown.clone(),
            why: if e == nix::errno::Errno::ELOOP {
                "the path contains a symbolic link".to_owned()
            } else {
                e.desc().to_owned()
            },
        })?;
    // The lower directory as the kernel names it (filesystem and path
    // inside it), and the busy check before mounting (again once serving,
    // see `Mounted::start`).
    let lower_fs = {
        use std::os::fd::AsFd;
        let table = reach::mountinfo::Table::read(None).map_err(|e| failed(e.to_string()))?;
        reach::mountinfo::FsPath::of_fd(lower.as_fd(), &table)
            .map_err(|e| failed(format!("locating the lower directory: {e}")))?
    };
    reach::check_busy(&lower_fs, None, &spec.exclude).map_err(|e| refused(&shown, e))?;
    // Mount on the directory just opened, not on the path again.
    let target = PathBuf::from(format!("/proc/self/fd/{}", lower.as_raw_fd()));
    let stack =
        Arc::new(Stack::new(lower, spec.guard.clone()).map_err(|e| failed(format!("{e:?}")))?);
    let binding = FuseBinding::new(stack.clone(), spec.fuse);
    let session = mount_fuse(
        &path,
        &target,
        binding,
        &format!("guardfs:{shown}"),
        FS_SUBTYPE,
        spec.threads,
    )?;
    raise_readahead(&path);
    info!("secfs: mounted {shown} (mode {})", spec.guard.mode);
    Ok(Mounted {
        path,
        stack,
        session,
        lower: lower_fs,
        exclude: spec.exclude.clone(),
    })
}

fn refused(shown: &str, e: reach::ReachError) -> MountError {
    match e {
        reach::ReachError::Busy(users) => MountError::InUse {
            path: shown.to_owned(),
            users,
        },
        reach::ReachError::Uncovered(_) => MountError::Unreachable {
            path: shown.to_owned(),
            why: e.to_string(),
        },
    }
}

/// Mount a FUSE filesystem `fs` on `path` with mount(2) (root, no
/// fusermount) and complete the FUSE handshake. `target` is what mount(2)
/// is given: `path` itself, or `/proc/self/fd/N` of the directory already
/// opened, so that the directory checked is the directory mounted on. The kernel checks
/// permissions itself (`default_permissions`) and every user may enter
/// (`allow_other`).
pub fn mount_fuse<F: fuser::Filesystem>(
    path: &Path,
    target: &Path,
    fs: F,
    source: &str,
    subtype: &str,
    threads: usize,
) -> Result<Session<F>, MountError> {
    let shown = path.display().to_string();
    let failed = |why: String| MountError::MountFailed {
        path: shown.clone(),
        why,
    };
    let dev = open_fuse_device()?;
    let root_mode = std::fs::metadata(target)
        .map(|m| m.mode())
        .unwrap_or(0o40755)
        & libc::S_IFMT;
    let data = format!(
        "fd={},rootmode={:o},user_id=0,group_id=0,default_permissions,allow_other",
        dev.as_raw_fd(),
        root_mode
    );
    nix::mount::mount(
        Some(source),
        target,
        Some(format!("fuse.{subtype}").as_str()),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|e| failed(format!("mount(2): {}", e.desc())))?;
    let config = {
        let mut c = Config::default();
        c.acl = SessionACL::All;
        c.n_threads = Some(threads.max(1));
        c.clone_fd = true;
        c
    };
    Session::from_fd(fs, dev, SessionACL::All, config).map_err(|e| {
        let _ = nix::mount::umount2(path, MntFlags::MNT_DETACH);
        failed(format!("FUSE handshake: {e}"))
    })
}

/// fuser caps readahead at the kernel's initial 128 KiB; raise the mount's
/// bdi to 1 MiB so sequential reads arrive in 1 MiB requests. The device
/// number comes from mountinfo: stat(2) on the mount point would wait for
/// this process, which is not serving yet.
fn raise_readahead(path: &Path) {
    let Some(devno) = mount_devno(path) else {
        return;
    };
    let bdi = format!("/sys/class/bdi/{devno}/read_ahead_kb");
    if let Err(e) = std::fs::write(&bdi, "1024") {
        warn!("secfs: cannot raise readahead ({bdi}): {e}");
    }
}

/// The "major:minor" of the secfs mount at `path`.
fn mount_devno(path: &Path) -> Option<String> {
    secfs_mountinfo()
        .into_iter()
        .find(|(p, _)| p == path)
        .map(|(_, d)| d)
}

impl Mounted {
    /// A function that drops everything the kernel caches for an inode
    /// (pages, attributes), for use after a policy change.
    pub fn invalidator(&self) -> impl Fn(crate::vfs::Ino) + Send + Sync + 'static {
        let n = self.session.notifier();
        move |ino| {
            // Offset 0, length 0: every page of the inode, and its attributes.
            let _ = n.inval_inode(fuser::INodeNo(ino.0), 0, 0);
        }
    }

    /// Start serving (on a thread of its own), then close every other way
    /// to the lower tree ([`crate::reach`]): check again that no process
    /// holds the lower directory, and make every other place where it
    /// shows (mount points, mount namespaces) show this GuardPoint. On
    /// failure the mount is rolled back (detached) and the reason names
    /// the pids or the places.
    pub fn start(self) -> Result<Serving, MountError> {
        let shown = self.path.display().to_string();
        let Some((main_id, fuse_dev)) = secfs_mount_at(&self.path) else {
            return Err(MountError::MountFailed {
                path: shown,
                why: "the new mount is not in the mount table".into(),
            });
        };
        let session = self.session;
        let p = self.path.clone();
        let thread = std::thread::Builder::new()
            .name("secfs-session".into())
            .spawn(move || {
                let r = session.run();
                info!("secfs: {} unmounted, session ended", p.display());
                r
            })
            .map_err(|e| MountError::MountFailed {
                path: shown.clone(),
                why: format!("starting the session: {e}"),
            })?;
        // Cover first, then look for holders: of the lower directory, and
        // of anything above it from which it is reached uncovered.
        let checked = reach::cover(&self.path, &self.lower, &fuse_dev).and_then(|mut a| {
            match reach::check_busy(&self.lower, Some(&fuse_dev), &self.exclude) {
                Ok(()) => Ok(a),
                Err(e) => {
                    a.detach_all();
                    Err(e)
                }
            }
        });
        let attachments = match checked {
            Ok(a) => Arc::new(std::sync::Mutex::new(a)),
            Err(e) => {
                warn!("secfs: {shown}: {e}; rolling the mount back");
                let _ = nix::mount::umount2(&self.path, MntFlags::MNT_DETACH);
                return Err(refused(&shown, e));
            }
        };
        let serving = Serving {
            path: self.path,
            stack: self.stack,
            fuse_dev,
            attachments,
            thread,
        };
        serving.watch(main_id);
        Ok(serving)
    }
}

/// The topmost secfs mount at `path` in this namespace: mount id and
/// "major:minor".
fn secfs_mount_at(path: &Path) -> Option<(u64, String)> {
    let table = reach::mountinfo::Table::read(None).ok()?;
    let (m, rel) = table.resolve(path)?;
    (m.fstype == format!("fuse.{FS_SUBTYPE}") && rel == Path::new("/"))
        .then(|| (m.id, m.dev.clone()))
}

/// A GuardPoint being served, with the clones attached elsewhere.
pub struct Serving {
    pub path: PathBuf,
    pub stack: Arc<Stack>,
    /// The FUSE mount's device, "major:minor".
    pub fuse_dev: String,
    attachments: Arc<std::sync::Mutex<reach::Attachments>>,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Serving {
    /// A function that removes the GuardPoint from every place it was
    /// attached to besides its own path (call before unmounting it).
    pub fn remover(&self) -> impl Fn() + Send + Sync + 'static {
        let a = self.attachments.clone();
        move || a.lock().unwrap_or_else(|e| e.into_inner()).detach_all()
    }

    /// Whether clones were attached elsewhere.
    pub fn attached_elsewhere(&self) -> bool {
        !self
            .attachments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// When the GuardPoint's own mount goes away behind our back
    /// (`secfs umount`, `umount`), remove the clones too, so that the
    /// session ends instead of serving them on.
    fn watch(&self, main_id: u64) {
        if !self.attached_elsewhere() {
            return;
        }
        let remove = self.remover();
        let path = self.path.clone();
        let _ = std::thread::Builder::new()
            .name("secfs-watch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    let gone = reach::mountinfo::Table::read(None)
                        .map(|t| t.by_id(main_id).is_none())
                        .unwrap_or(false);
                    if gone {
                        info!(
                            "secfs: {} was unmounted; removing its other mounts",
                            path.display()
                        );
                        remove();
                        return;
                    }
                }
            });
    }

    /// Serve until the session ends (every mount of it gone).
    pub fn wait(self) -> std::io::Result<()> {
        self.thread
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("session thread panicked")))
    }
}

/// Unmount a secfs GuardPoint.
pub fn unmount(dir: &Path, lazy: bool) -> Result<(), MountError> {
    require_root()?;
    let path = absolute(dir)?;
    let shown = path.display().to_string();
    if !secfs_mounts().iter().any(|m| m == &path) {
        return Err(MountError::NotMounted(shown));
    }
    let flags = if lazy {
        MntFlags::MNT_DETACH
    } else {
        MntFlags::empty()
    };
    match nix::mount::umount2(&path, flags) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => Err(MountError::Busy(shown)),
        Err(e) => Err(MountError::MountFailed {
            path: shown,
            why: format!("umount2: {}", e.desc()),
        }),
    }
}

/// Keep keys out of swap and core dumps: lock memory and mark the process
/// not dumpable.
/// secfs keeps an `O_PATH` fd per inode the kernel holds (see
/// `stack::nodes`), and dataxform batches hold more: raise the open-file
/// limit from the default 1024 to what the kernel allows a root process
/// (`fs.nr_open`), or at least to the hard limit. Logged.
pub fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let want = nr_open.max(hard);
    let got = match setrlimit(Resource::RLIMIT_NOFILE, want, want) {
        Ok(()) => want,
        Err(_) => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(_) => soft,
        },
    };
    log::info!("secfs: open files limit {got} (was {soft})");
}

pub fn protect_process_memory() {
    raise_open_files_limit();
    crate::harden::protect_process_memory("secfs");
}

/// The signals the daemon handles itself.
fn handled_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGHUP);
    set
}

/// Block SIGTERM, SIGINT and SIGHUP in this thread and every thread it
/// starts later. Call first thing in the daemon, before any thread exists,
/// so that no thread takes a signal's default action (termination).
pub fn block_signals() -> std::io::Result<()> {
    handled_signals()
        .thread_block()
        .map_err(std::io::Error::from)
}

/// Call `before` and then unmount `path` (lazily) when SIGTERM or SIGINT
/// arrives (SIGHUP is ignored). Requires [`block_signals`] first.
pub fn unmount_on_signal_then(path: PathBuf, before: Box<dyn Fn() + Send>) -> std::io::Result<()> {
    signal_thread(path, Box::new(|| {}), before)
}

/// Call `before` and then unmount `path` (lazily) when SIGTERM or SIGINT
/// arrives; call `on_hup` on SIGHUP. Requires [`block_signals`] first.
pub fn unmount_on_signal_with(
    path: PathBuf,
    on_hup: Box<dyn Fn() + Send>,
    before: Box<dyn Fn() + Send>,
) -> std::io::Result<()> {
    signal_thread(path, on_hup, before)
}

/// Unmount `path` (lazily) when SIGTERM or SIGINT arrives, and call
/// `on_hup` on SIGHUP, from a dedicated thread; after an unmount the
/// serving loop ends. Requires [`block_signals`] to have run first.
pub fn unmount_on_signal(path: PathBuf, on_hup: Box<dyn Fn() + Send>) -> std::io::Result<()> {
    signal_thread(path, on_hup, Box::new(|| {}))
}

fn signal_thread(
    path: PathBuf,
    on_hup: Box<dyn Fn() + Send>,
    before_unmount: Box<dyn Fn() + Send>,
) -> std::io::Result<()> {
    use nix::sys::signal::Signal;
    let set = handled_signals();
    std::thread::Builder::new()
        .name("secfs-signals".into())
        .spawn(move || {
            loop {
                match set.wait() {
                    Ok(Signal::SIGHUP) => on_hup(),
                    Ok(sig) => {
                        info!("secfs: {sig:?}: unmounting {}", path.display());
                        before_unmount();
                        if let Err(e) = nix::mount::umount2(&path, MntFlags::MNT_DETACH) {
                            warn!("secfs: unmount on signal failed: {e}");
                        }
                        return;
                    }
                    Err(_) => return,
                }
            }
        })?;
    Ok(())
}

/// The filesystem type of the control node: `fuse.secfs-ctl`.
pub const CTL_SUBTYPE: &str = "secfs-ctl";

/// The control node of the secfs service, mounted, not serving yet.
pub struct ControlMount {
    pub path: PathBuf,
    session: Session<FuseBinding<crate::ctl::node::ControlNode>>,
}

impl std::fmt::Debug for ControlMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlMount")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ControlMount {
    /// Serve ioctls until the control node is unmounted.
    pub fn serve(self) -> std::io::Result<()> {
        self.session.run()
    }
}

/// Whether a live control node is mounted on `dir`; a dead one (its
/// service was killed) is detached first.
fn control_mounted(dir: &Path) -> Result<bool, MountError> {
    let Ok(f) = File::open("/proc/self/mountinfo") else {
        return Ok(false);
    };
    let want = format!("fuse.{CTL_SUBTYPE}");
    let mounted = BufReader::new(f).lines().map_while(Result::ok).any(|line| {
        line.split_once(" - ").is_some_and(|(pre, post)| {
            post.split_whitespace().next() == Some(want.as_str())
                && pre
                    .split_whitespace()
                    .nth(4)
                    .map(crate::reach::mountinfo::unescape)
                    .as_deref()
                    == dir.to_str()
        })
    });
    if !mounted {
        return Ok(false);
    }
    match std::fs::metadata(dir) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            warn!(
                "secfs: {}: previous secfs service is gone; detaching its control node",
                dir.display()
            );
            nix::mount::umount2(dir, MntFlags::MNT_DETACH).map_err(|e| {
                MountError::MountFailed {
                    path: dir.display().to_string(),
                    why: format!("detaching dead control node: {e}"),
                }
            })?;
            Ok(false)
        }
        _ => Ok(true),
    }
}

/// Mount the control node of `service` on `dir` (created 0700 if missing).
pub fn mount_control(
    dir: &Path,
    service: Arc<crate::ctl::service::Service>,
) -> Result<ControlMount, MountError> {
    require_root()?;
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| MountError::BadDir {
            path: parent.display().to_string(),
            why: e.to_string(),
        })?;
    }
    let path = absolute(dir)?;
    // First: a dead control node on the path fails every other check.
    if control_mounted(&path)? {
        return Err(MountError::AlreadyMounted(format!(
            "{} (another secfs service is running)",
            path.display()
        )));
    }
    match std::fs::create_dir(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(MountError::BadDir {
                path: path.display().to_string(),
                why: e.to_string(),
            });
        }
    }
    let _ = std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o700));
    let node = Arc::new(crate::ctl::node::ControlNode::new(service));
    let opts = FuseOptions {
        writeback_cache: false,
        passthrough: false,
        ttl: std::time::Duration::from_secs(60),
    };
    let session = mount_fuse(
        &path,
        &path,
        FuseBinding::new(node, opts),
        "guardfs-control",
        CTL_SUBTYPE,
        2,
    )?;
    info!("secfs: control node at {}", path.display());
    Ok(ControlMount { path, session })
}
