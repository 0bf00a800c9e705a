//! Helpers for the end-to-end tests: real `secfs` daemons on real FUSE
//! mounts. These tests need root and /dev/fuse (CI has both); they fail,
//! never skip, without them.
#![allow(dead_code)]

pub mod policy;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const SECFS: &str = env!("CARGO_BIN_EXE_secfs");

pub fn run(args: &[&str]) -> Output {
    Command::new(SECFS).args(args).output().expect("run secfs")
}

pub fn sh(cmd: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("run sh")
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// `/proc/PID/fd/N` of the secfs daemon `pid`'s fd on the lower directory
/// `dir` (an fd whose link is `dir` and which is not on the FUSE mount).
pub fn lower_fd_of(pid: u32, dir: &Path) -> PathBuf {
    let fuse_mnt: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" - fuse.secfs "))
        .map(|l| l.split_whitespace().next().unwrap_or("").to_owned())
        .collect();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).expect("daemon fds") {
        let e = e.unwrap();
        if std::fs::read_link(e.path()).ok().as_deref() != Some(dir) {
            continue;
        }
        let n = e.file_name().into_string().unwrap();
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{n}")).unwrap_or_default();
        let mnt = info
            .lines()
            .find_map(|l| l.strip_prefix("mnt_id:"))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default();
        if !fuse_mnt.contains(&mnt) {
            return e.path();
        }
    }
    panic!(
        "secfs {pid} holds no fd on the lower directory {}",
        dir.display()
    );
}

pub fn is_mounted(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            l.split_whitespace().nth(4) == Some(dir.to_str().unwrap())
                && l.contains(" - fuse.secfs ")
        })
}

pub fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A GuardPoint in a temporary directory. `lower(name)` reads what is
/// really on disk: through the daemon's own fd on the lower directory
/// (root may; a test process holding the lower directory itself would make
/// the guard refuse it as busy).
pub struct Gp {
    pub base: tempfile::TempDir,
    pub dir: PathBuf,
    pub key: PathBuf,
    pub log: PathBuf,
    pub pid: Option<u32>,
}

impl Gp {
    /// A new, empty GuardPoint mounted in `mode`.
    pub fn new(mode: &str) -> Gp {
        Self::new_with(mode, &[], |_| {})
    }

    /// Prepare the directory with `before` (writing lower files directly),
    /// then mount with extra arguments.
    pub fn new_with(mode: &str, extra: &[&str], before: impl FnOnce(&Path)) -> Gp {
        assert!(
            nix::unistd::geteuid().is_root(),
            "end-to-end tests need root (CI runs them as root)"
        );
        let base = tempfile::Builder::new()
            .prefix("guardfs-e2e")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        let dir = base.path().join("gp");
        std::fs::create_dir(&dir).unwrap();
        let key = base.path().join("key");
        let out = run(&["genkey", key.to_str().unwrap()]);
        assert!(out.status.success(), "{out:?}");
        before(&dir);
        let log = base.path().join("secfs.log");
        let mut gp = Gp {
            base,
            dir,
            key,
            log,
            pid: None,
        };
        gp.mount(mode, extra);
        gp
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The lower (on-disk) path of `name`: through the daemon's fd on the
    /// lower directory while it runs, else the directory itself.
    pub fn lower(&self, name: &str) -> PathBuf {
        match self.pid {
            Some(pid) => lower_fd_of(pid, &self.dir).join(name),
            None => self.dir.join(name),
        }
    }

    pub fn mount(&mut self, mode: &str, extra: &[&str]) {
        let mut args = vec![
            "mount",
            self.dir.to_str().unwrap(),
            "--key-file",
            self.key.to_str().unwrap(),
            "--mode",
            mode,
            "--log-file",
            self.log.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = run(&args);
        assert!(
            out.status.success(),
            "mount failed: {out:?}\nlog:\n{}",
            self.log_text()
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let pid = text
            .split("daemon pid ")
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|s| s.parse().ok())
            .expect("daemon pid in output");
        self.pid = Some(pid);
        assert!(is_mounted(&self.dir));
    }

    pub fn unmount(&mut self) {
        let out = run(&["umount", self.dir.to_str().unwrap()]);
        assert!(out.status.success(), "umount failed: {out:?}");
        if let Some(pid) = self.pid.take() {
            wait_until("daemon exit", || !pid_alive(pid));
        }
        assert!(!is_mounted(&self.dir));
    }

    /// Unmount and mount again, so every read that follows decrypts what
    /// is on disk (the kernel's page and attribute caches of the old mount
    /// are gone). Files must be closed first.
    pub fn remount(&mut self, mode: &str, extra: &[&str]) {
        self.unmount();
        self.mount(mode, extra);
    }

    /// Stop the daemon with SIGTERM (it unmounts cleanly) and wait for it.
    pub fn sigterm(&mut self) {
        let pid = self.pid.take().expect("running daemon");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        wait_until("daemon exit", || !pid_alive(pid));
    }

    pub fn kill9(&mut self) {
        let pid = self.pid.take().expect("running daemon");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        wait_until("daemon death", || !pid_alive(pid));
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Gp {
    fn drop(&mut self) {
        if is_mounted(&self.dir) {
            let _ = Command::new(SECFS)
                .args(["umount", "--lazy", self.dir.to_str().unwrap()])
                .output();
        }
        if let Some(pid) = self.pid.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

pub const ENCRYPTED_MODES: [&str; 3] = ["xts", "cbc-cs1", "gcm"];
pub const ALL_MODES: [&str; 4] = ["xts", "cbc-cs1", "gcm", "clear"];

/// The logical-to-lower size of each encrypted mode (FORMAT.md).
pub fn lower_size(mode: &str, plain: u64) -> u64 {
    let m: guardfs_crypto::Mode = mode.parse().unwrap();
    guardfs_crypto::Layout::of(m)
        .lower_size(guardfs_crypto::PlainOff(plain))
        .0
}

/// Write back and drop the kernel's clean page, dentry and inode caches
/// (of every file system), so the next reads go to the daemon.
pub fn drop_caches() {
    nix::unistd::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").expect("drop_caches");
}

/// A manifest of the tree under `dir`: the sha256 of every regular file,
/// then the mode and size of every regular file and the type of every
/// other entry, each sorted by path.
pub fn manifest(dir: &Path) -> String {
    let d = dir.display();
    let out = sh(&format!(
        "set -e; cd '{d}'; find . -type f -print0 | sort -z | xargs -0r sha256sum; \
         find . -type f -printf '%m %s %p\\n' | sort -k3; \
         find . ! -type f -printf '%y %m %p\\n' | sort -k3"
    ));
    assert!(out.status.success(), "manifest of {d}: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8 manifest")
}
