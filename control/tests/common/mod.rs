//! Helpers for the agent end-to-end tests: an agent (install root, vmd,
//! secfs) per test, the admin commands under their CTE names.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const VMD: &str = env!("CARGO_BIN_EXE_vmd");
pub const VORADMIN: &str = env!("CARGO_BIN_EXE_voradmin");

pub fn secfs_bin() -> PathBuf {
    let p = Path::new(VMD).with_file_name("secfs");
    assert!(
        p.is_file(),
        "{} missing: build the workspace (cargo test --workspace builds it)",
        p.display()
    );
    p
}

pub fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// One agent: install root, its daemons, and CLI helpers.
pub struct Agent {
    pub base: tempfile::TempDir,
    pub root: PathBuf,
    pub bin: PathBuf,
}

impl Agent {
    pub fn new() -> Agent {
        Self::with_conf("")
    }

    /// An agent whose agent.conf gets `extra` lines too.
    pub fn with_conf(extra: &str) -> Agent {
        assert!(
            nix::unistd::geteuid().is_root(),
            "needs root (CI runs as root)"
        );
        let base = tempfile::Builder::new()
            .prefix("guardfs-agent")
            .tempdir_in("/var/tmp")
            .unwrap();
        let root = base.path().join("agent");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(
            root.join("etc/agent.conf"),
            format!(
                "# test agent\nrun_dir={b}/run\nlog_dir={b}/log\nsecfs_path={}\n{extra}",
                secfs_bin().display(),
                b = base.path().display()
            ),
        )
        .unwrap();
        // The CTE names are the same binary under other names.
        let bin = base.path().join("bin");
        fs::create_dir(&bin).unwrap();
        for name in ["voradmin", "secfsd", "vmsec", "dataxform"] {
            std::os::unix::fs::symlink(VORADMIN, bin.join(name)).unwrap();
        }
        Agent { base, root, bin }
    }

    pub fn run_dir(&self) -> PathBuf {
        self.base.path().join("run")
    }

    pub fn log(&self, name: &str) -> String {
        fs::read_to_string(self.base.path().join("log").join(name)).unwrap_or_default()
    }

    pub fn cmd(&self, prog: &str, args: &[&str]) -> Output {
        let exe = if prog == "vmd" {
            PathBuf::from(VMD)
        } else {
            self.bin.join(prog)
        };
        Command::new(exe)
            .args(args)
            .env("GUARDFS_ROOT", &self.root)
            .env("GUARDFS_PBKDF2_ITERATIONS", "1000")
            .output()
            .unwrap()
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, prog: &str, args: &[&str]) -> String {
        let o = self.cmd(prog, args);
        assert!(
            o.status.success(),
            "{prog} {args:?}: {}\nvmd log:\n{}",
            text(&o),
            self.log("vmd.log")
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn start(&self) {
        self.ok("vmd", &[]);
    }

    pub fn dir(&self, name: &str) -> PathBuf {
        let d = self.base.path().join(name);
        fs::create_dir_all(&d).unwrap();
        d
    }

    pub fn pid(&self, name: &str) -> u32 {
        fs::read_to_string(self.run_dir().join(format!("{name}.pid")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// The key version in a file's header (`voradmin secfs iv get`).
    pub fn key_version(&self, file: &Path) -> u64 {
        let iv = self.ok(
            "voradmin",
            &["--json", "secfs", "iv", "get", file.to_str().unwrap()],
        );
        serde_json::from_str::<serde_json::Value>(&iv).unwrap()["key_version"]
            .as_u64()
            .unwrap()
    }

    /// Send `sig` to the daemon `name` ("vmd" or "secfs").
    pub fn signal(&self, name: &str, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid(name) as i32), sig).unwrap();
    }

    pub fn status_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok("voradmin", &["status", "--json"])).unwrap()
    }

    pub fn gp_status(&self, path: &Path) -> (String, String) {
        let v = self.status_json();
        let g = v["guardpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["path"] == path.to_str().unwrap())
            .cloned()
            .unwrap_or_default();
        (
            g["status"].as_str().unwrap_or("").to_owned(),
            g["reason"].as_str().unwrap_or("").to_owned(),
        )
    }

    pub fn guarded(&self, path: &Path) -> bool {
        self.gp_status(path).0 == "guarded"
    }

    /// A key, a policy using it, and `dir` guarded with it.
    pub fn guard_with_key(&self, dir: &Path, key: &str, mode: &str) {
        self.ok("voradmin", &["key", "create", key, "--mode", mode]);
        let policy = self.base.path().join(format!("{key}.json"));
        fs::write(&policy, policy_json(&format!("p_{key}"), key)).unwrap();
        self.ok("voradmin", &["policy", "apply", policy.to_str().unwrap()]);
        let out = self.ok(
            "voradmin",
            &[
                "guard",
                dir.to_str().unwrap(),
                "--policy",
                &format!("p_{key}"),
            ],
        );
        assert!(out.contains(": guarded"), "{out}");
    }

    /// The lower (on-disk) bytes of a file, read in a private mount
    /// namespace where the GuardPoint is unmounted.
    pub fn lower(&self, gp: &Path, name: &str) -> Vec<u8> {
        let o = Command::new("unshare")
            .args([
                "-m",
                "sh",
                "-c",
                &format!(
                    "umount -l '{}' && cat '{}/{name}'",
                    gp.display(),
                    gp.display()
                ),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        o.stdout
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.cmd("voradmin", &["shutdown"]);
        for name in ["vmd", "secfs"] {
            if let Ok(pid) = fs::read_to_string(self.run_dir().join(format!("{name}.pid")))
                && let Ok(pid) = pid.trim().parse::<i32>()
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        // Lazy-unmount anything left under the base.
        let base = self.base.path().to_str().unwrap().to_owned();
        for line in fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
        {
            if let Some(mp) = line.split_whitespace().nth(4)
                && mp.starts_with(&base)
            {
                let _ = nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

pub fn policy_json(name: &str, key: &str) -> String {
    format!(
        r#"{{ "name": "{name}", "authenticated_users_only": false,
  "security_rules": [ {{ "order_number": 1, "action": "all_ops", "effect": "permit,applykey,audit" }} ],
  "key_rules": [ {{ "key_id": "{key}" }} ] }}"#
    )
}

pub const SECRET: &[u8] = b"GUARDFS-AGENT-PLAINTEXT-CANARY";

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
