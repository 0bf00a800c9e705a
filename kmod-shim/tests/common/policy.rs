//! Helpers for the policy end-to-end tests: binaries for process-set
//! rules, GuardPoints with a policy and an audit log, running as other
//! users.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::*;

pub const SECRET: &[u8] = b"TOP-SECRET-PLAINTEXT-CANARY ";

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Binaries for process-set rules, built from tests/data/probe.c and
/// copied under several names (same bytes, different paths).
pub struct Bins {
    dir: tempfile::TempDir,
}

impl Bins {
    pub fn new(names: &[&str]) -> Bins {
        let dir = tempfile::Builder::new()
            .prefix("guardfs-bins")
            .tempdir_in("/var/tmp")
            .unwrap();
        fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/probe.c");
        let first = dir.path().join(names[0]);
        let out = Command::new("gcc")
            .args(["-O1", "-o"])
            .arg(&first)
            .arg(&src)
            .output()
            .expect("gcc");
        assert!(out.status.success(), "{out:?}");
        for n in &names[1..] {
            copy_bin(&first, &dir.path().join(n));
        }
        Bins { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn dir(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }
}

/// Copy a binary with cp(1), not in this process: a writable fd held here
/// for a moment could be inherited by a child another test thread forks
/// meanwhile, and running the copy would then fail with ETXTBSY.
pub fn copy_bin(src: &Path, dst: &Path) {
    let st = Command::new("cp").arg(src).arg(dst).status().unwrap();
    assert!(st.success(), "cp {} {}", src.display(), dst.display());
}

/// Ask the daemon of `gp` to reload its policy files.
pub fn sighup(gp: &Gp) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(gp.pid.unwrap() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
}

/// Run `prog args...`, optionally as another uid.
pub fn run_as(uid: Option<u32>, prog: &Path, args: &[&str]) -> Output {
    let mut cmd = match uid {
        Some(u) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={u}"))
                .arg(format!("--regid={u}"))
                .arg("--clear-groups")
                .arg(prog);
            c
        }
        None => Command::new(prog),
    };
    cmd.args(args).output().unwrap()
}

pub fn is_denied(o: &Output) -> bool {
    !o.status.success() && String::from_utf8_lossy(&o.stdout).contains("ERR 13")
        || String::from_utf8_lossy(&o.stderr).contains("Permission denied")
}

/// A GuardPoint with `policy` (JSON) and extra mount arguments.
pub fn guarded(policy: &str, extra: &[&str]) -> (Gp, tempfile::TempDir) {
    guarded_in("xts", policy, extra)
}

/// [`guarded`] in `mode`.
pub fn guarded_in(mode: &str, policy: &str, extra: &[&str]) -> (Gp, tempfile::TempDir) {
    let cfg = tempfile::Builder::new()
        .prefix("guardfs-policy")
        .tempdir_in("/var/tmp")
        .unwrap();
    fs::write(cfg.path().join("policy.json"), policy).unwrap();
    let args = policy_args(&cfg, extra);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let gp = Gp::new_with(mode, &refs, |d| {
        fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap()
    });
    (gp, cfg)
}

/// The mount arguments of a GuardPoint made by [`guarded_in`] with `cfg`.
pub fn policy_args(cfg: &tempfile::TempDir, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--policy".into(),
        cfg.path().join("policy.json").display().to_string(),
        "--audit-log".into(),
        cfg.path().join("audit.log").display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Unmount and mount a GuardPoint made by [`guarded_in`] again.
pub fn remount(gp: &mut Gp, mode: &str, cfg: &tempfile::TempDir, extra: &[&str]) {
    let args = policy_args(cfg, extra);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    gp.remount(mode, &refs);
}

pub fn audit_text(cfg: &tempfile::TempDir) -> String {
    // The audit writer runs asynchronously.
    std::thread::sleep(std::time::Duration::from_millis(300));
    fs::read_to_string(cfg.path().join("audit.log")).unwrap_or_default()
}

pub fn write_secret(gp: &Gp, name: &str) -> Vec<u8> {
    let data: Vec<u8> = SECRET.iter().copied().cycle().take(20_000).collect();
    fs::write(gp.path(name), &data).unwrap();
    fs::set_permissions(
        gp.path(name),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    data
}

/// The errno of an I/O error.
pub fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}
