//! The agent end to end: real vmd and secfs daemons, real FUSE mounts,
//! the admin commands as an administrator runs them. Each test has its own
//! install root, runtime and log directories, so tests run side by side.
//! Needs root and /dev/fuse (CI has both); never skipped.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn quickstart_is_idempotent_and_encrypts() {
    let a = Agent::new();
    let dir = a.base.path().join("demo");
    let d = dir.to_str().unwrap();
    let first = a.ok("voradmin", &["quickstart", d]);
    assert!(
        first.contains("created local key quickstart_key"),
        "{first}"
    );
    let second = a.ok("voradmin", &["quickstart", d]);
    assert!(
        second.contains(": guarded") && !second.contains("created"),
        "{second}"
    );
    fs::write(dir.join("hello.txt"), SECRET).unwrap();
    assert_eq!(fs::read(dir.join("hello.txt")).unwrap(), SECRET);
    let lower = a.lower(&dir, "hello.txt");
    assert_eq!(&lower[..8], b"GuardFS\0");
    assert!(!contains(&lower, SECRET));
    let table = a.ok("secfsd", &["-status", "guard"]);
    assert!(
        table.contains("GuardPoint") && table.contains(d) && table.contains("quickstart_policy"),
        "{table}"
    );
    let iv = a.ok(
        "voradmin",
        &[
            "secfs",
            "iv",
            "get",
            dir.join("hello.txt").to_str().unwrap(),
        ],
    );
    assert!(
        iv.contains("key_name: quickstart_key") && iv.contains("mode: xts"),
        "{iv}"
    );
}

#[test]
fn guard_unguard_round_trip_keeps_data() {
    let a = Agent::new();
    a.start();
    let dir = a.dir("gp");
    a.guard_with_key(&dir, "k_rt", "gcm");
    let files: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| {
            (
                format!("f{i}"),
                SECRET.iter().copied().cycle().take(i * 3000 + 1).collect(),
            )
        })
        .collect();
    for (n, data) in &files {
        fs::write(dir.join(n), data).unwrap();
    }
    a.ok("voradmin", &["unguard", dir.to_str().unwrap()]);
    // Unguarded: the directory holds ciphertext only.
    for (n, _) in &files {
        let raw = fs::read(dir.join(n)).unwrap();
        assert_eq!(&raw[..8], b"GuardFS\0", "{n}");
        assert!(!contains(&raw, SECRET), "{n}");
    }
    a.ok(
        "voradmin",
        &["guard", dir.to_str().unwrap(), "--policy", "p_k_rt"],
    );
    for (n, data) in &files {
        assert_eq!(&fs::read(dir.join(n)).unwrap(), data, "{n}");
    }
    // secfsd -unguard keeps it registered; -guard brings it back.
    a.ok("secfsd", &["-unguard", dir.to_str().unwrap()]);
    assert_eq!(a.gp_status(&dir), ("not guarded".into(), "Inactive".into()));
    a.ok("secfsd", &["-guard", dir.to_str().unwrap()]);
    assert!(a.guarded(&dir));
    assert_eq!(fs::read(dir.join("f1")).unwrap(), files[1].1);
}

#[test]
fn key_rotation_keeps_old_files_readable() {
    let a = Agent::new();
    a.start();
    let dir = a.dir("gp");
    a.guard_with_key(&dir, "k_rot", "xts");
    fs::write(dir.join("old"), b"before rotation").unwrap();
    let out = a.ok("voradmin", &["key", "rotate", "k_rot"]);
    assert!(out.contains("version 2"), "{out}");
    fs::write(dir.join("new"), b"after rotation").unwrap();
    let version = |f: &str| a.key_version(&dir.join(f));
    assert_eq!((version("old"), version("new")), (1, 2));
    // Across a full restart of the agent too.
    a.ok("voradmin", &["shutdown"]);
    a.start();
    wait_until("re-guard", 20, || a.guarded(&dir));
    assert_eq!(fs::read(dir.join("old")).unwrap(), b"before rotation");
    assert_eq!(fs::read(dir.join("new")).unwrap(), b"after rotation");
    let show = a.ok("voradmin", &["key", "show", "k_rot"]);
    assert!(
        show.contains("versions=1,2") && show.contains("latest=2"),
        "{show}"
    );
}

#[test]
fn vmd_restart_and_kill9_leave_guardpoints_up() {
    let a = Agent::new();
    a.start();
    let dir = a.dir("gp");
    a.guard_with_key(&dir, "k_vmd", "cbc-cs1");
    fs::write(dir.join("f"), b"one").unwrap();
    let secfs = a.pid("secfs");
    a.signal("vmd", nix::sys::signal::Signal::SIGKILL);
    // vmd is gone: the GuardPoint keeps working with the keys it has.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        a.cmd("voradmin", &["status"]).status.code(),
        Some(4),
        "vmd not running"
    );
    fs::write(dir.join("g"), b"two").unwrap();
    assert_eq!(fs::read(dir.join("f")).unwrap(), b"one");
    // A new vmd adopts the running secfs (same process) and its GuardPoints.
    a.start();
    assert_eq!(a.pid("secfs"), secfs);
    assert!(a.guarded(&dir));
    assert_eq!(fs::read(dir.join("g")).unwrap(), b"two");
    // SIGTERM to vmd: same story.
    a.signal("vmd", nix::sys::signal::Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fs::read(dir.join("f")).unwrap(), b"one");
    a.start();
    assert!(a.guarded(&dir));
    assert!(a.ok("vmsec", &["checkinstall"]).contains("running"));
}

#[test]
fn secfs_kill9_is_recovered_within_seconds() {
    let a = Agent::new();
    a.start();
    let dir = a.dir("gp");
    a.guard_with_key(&dir, "k_kill", "xts");
    fs::write(dir.join("f"), b"survives").unwrap();
    let old = a.pid("secfs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let t = Instant::now();
    wait_until("secfs restarted and GuardPoint back", 15, || {
        fs::read(dir.join("f")).is_ok_and(|d| d == b"survives")
    });
    eprintln!("recovered in {:?}", t.elapsed());
    assert_ne!(a.pid("secfs"), old);
    assert!(a.guarded(&dir));
    fs::write(dir.join("g"), b"after").unwrap();
    assert!(!contains(&a.lower(&dir, "g"), b"after"));
    // Unmounted behind vmd's back: no longer reported guarded, and
    // guarded again within seconds.
    let o = Command::new("umount").arg("-l").arg(&dir).output().unwrap();
    assert!(o.status.success(), "{o:?}");
    wait_until("re-guarded after a foreign umount", 15, || {
        fs::read(dir.join("f")).is_ok_and(|d| d == b"survives")
    });
    assert!(a.guarded(&dir));
}

#[test]
fn guard_is_refused_while_a_process_is_inside() {
    let a = Agent::new();
    a.start();
    let dir = a.dir("busy");
    fs::write(dir.join("plain"), b"x").unwrap();
    let mut sleeper = Command::new("sleep")
        .arg("60")
        .current_dir(&dir)
        .spawn()
        .unwrap();
    a.ok("voradmin", &["key", "create", "k_busy"]);
    let policy = a.base.path().join("p.json");
    fs::write(&policy, policy_json("p_busy", "k_busy")).unwrap();
    a.ok("voradmin", &["policy", "apply", policy.to_str().unwrap()]);
    let out = a.ok(
        "voradmin",
        &["guard", dir.to_str().unwrap(), "--policy", "p_busy"],
    );
    assert!(out.contains("not guarded"), "{out}");
    let (status, reason) = a.gp_status(&dir);
    assert_eq!(status, "not guarded");
    assert!(
        reason.contains(&sleeper.id().to_string()) && reason.contains("sleep"),
        "{reason}"
    );
    let table = a.ok("secfsd", &["-status", "guard"]);
    assert!(
        table.contains("not guarded") && table.contains(&sleeper.id().to_string()),
        "{table}"
    );
    // Retried: once the process leaves, vmd guards it.
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    wait_until("guarded after the process left", 15, || a.guarded(&dir));
    let kv = a.ok("vmsec", &["status"]);
    assert!(
        kv.contains("GP_1_status=guarded") && kv.contains("TOTAL_GP=1"),
        "{kv}"
    );
}

/// A root process other than vmd is refused by the agent's secfs, and the
/// refusal lands in the audit log.
#[test]
fn ioctl_from_non_vmd_is_refused_and_audited() {
    let a = Agent::new();
    a.start();
    let control = a.run_dir().join("ctl/control");
    // A status request (op 6), well formed: refused because of who sends it.
    let status = guardfs_shim::ctl::proto::Request::Status { index: u32::MAX }
        .encode(1)
        .unwrap();
    let py = format!(
        "import fcntl\nf=open('{}','r+b',buffering=0)\nb=bytearray(bytes.fromhex('{}'))\n\
         try:\n    fcntl.ioctl(f,{},b,True)\n    print('ALLOWED')\nexcept OSError as e:\n    print('ERR', e.errno)\n",
        control.display(),
        hex::encode(&status),
        guardfs_shim::ctl::proto::Op::Status.ioctl_cmd()
    );
    let o = Command::new("python3").arg("-c").arg(py).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("ERR {}", libc_eperm()),
        "{}",
        text(&o)
    );
    wait_until("audit record", 10, || {
        a.log("audit.log").contains("control ioctl refused")
    });
    assert!(
        a.log("audit.log")
            .contains("caller is not the installed vmd")
    );
    // vmd itself still gets through.
    assert!(a.ok("vmsec", &["checkinstall"]).contains("running"));
}

fn libc_eperm() -> i32 {
    nix::errno::Errno::EPERM as i32
}

/// Key material never appears outside `.sec/`: not in logs, status
/// output, policy blobs, the registry, or the lower files.
#[test]
fn key_material_never_leaves_sec() {
    use guardfs_control::state::{HostKeyStore, KeyStore, Unlock};
    let a = Agent::new();
    a.start();
    let dir = a.dir("gp");
    a.guard_with_key(&dir, "k_leak", "xts");
    a.ok("voradmin", &["key", "rotate", "k_leak"]);
    fs::write(dir.join("f"), SECRET).unwrap();
    // The test unseals the keys itself, with the host key from .sec.
    let sec = a.root.join(".sec");
    let Unlock::Ready(hk) = HostKeyStore::new(&sec).init_or_load_auto().unwrap() else {
        panic!("auto host key")
    };
    let store = KeyStore::load(&sec.join("keys.json"), &hk).unwrap();
    let mut needles: Vec<Vec<u8>> = Vec::new();
    for v in [1, 2] {
        let k = store.material("k_leak", v).unwrap();
        needles.push(k.expose().to_vec());
        needles.push(hex::encode(k.expose()).into_bytes());
        needles.push(hex::encode_upper(k.expose()).into_bytes());
    }
    let mut outputs = vec![
        a.ok("voradmin", &["status"]),
        a.ok("voradmin", &["status", "--json"]),
        a.ok("voradmin", &["key", "list", "--json"]),
        a.ok("voradmin", &["key", "show", "k_leak"]),
        a.ok("vmsec", &["status"]),
        a.ok("vmsec", &["vmdconfig"]),
        a.ok("secfsd", &["-status", "guard", "-v"]),
        a.ok("secfsd", &["-status", "keys"]),
    ];
    outputs.push(String::from_utf8_lossy(&a.lower(&dir, "f")).into_owned());
    let mut checked = 0;
    let mut check = |what: &str, bytes: &[u8]| {
        checked += 1;
        for n in &needles {
            assert!(!contains(bytes, n), "key material in {what}");
        }
    };
    for (i, o) in outputs.iter().enumerate() {
        check(&format!("output {i}"), o.as_bytes());
    }
    check("lower file", &a.lower(&dir, "f"));
    fn walk(p: &Path, sec: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(p).into_iter().flatten().flatten() {
            let path = e.path();
            let ft = e.file_type().unwrap();
            if path.starts_with(sec) || ft.is_symlink() {
                continue;
            }
            if ft.is_dir() {
                // Not into mounted GuardPoints or the control node.
                if fs::metadata(&path).map(|m| m.dev()).ok()
                    == fs::metadata(p).map(|m| m.dev()).ok()
                {
                    walk(&path, sec, out);
                }
            } else if ft.is_file() {
                out.push(path);
            }
        }
    }
    use std::os::unix::fs::MetadataExt;
    let mut files = Vec::new();
    walk(a.base.path(), &sec, &mut files);
    assert!(
        files.iter().any(|f| f.ends_with("vmd.log"))
            && files.iter().any(|f| f.ends_with("guardpoints.json"))
    );
    for f in &files {
        check(&f.display().to_string(), &fs::read(f).unwrap_or_default());
    }
    assert!(checked > 10);
}

#[test]
fn password_protected_host_key() {
    let a = Agent::new();
    a.start();
    let dir = a.dir("gp");
    a.guard_with_key(&dir, "k_pw", "gcm");
    fs::write(dir.join("f"), b"locked away").unwrap();
    // Too short a password is refused, nothing changes.
    assert_eq!(
        a.cmd("voradmin", &["hostkey", "password", "-p", "short"])
            .status
            .code(),
        Some(1)
    );
    a.ok(
        "voradmin",
        &["hostkey", "password", "-p", "correct horse battery"],
    );
    a.ok("voradmin", &["shutdown"]);
    a.start();
    // Locked: guarded, but keys unavailable and files unreadable.
    wait_until("re-guard", 20, || a.guarded(&dir));
    let kv = a.ok("vmsec", &["status"]);
    assert!(
        kv.contains("KEYS_AVAILABLE=FALSE") && kv.contains("GP_1_reason=keys unavailable"),
        "{kv}"
    );
    assert!(
        a.ok("secfsd", &["-status", "keys"])
            .contains("not available")
    );
    assert!(fs::read(dir.join("f")).is_err());
    assert!(a.cmd("voradmin", &["key", "list"]).status.code() == Some(1));
    let wrong = a.cmd("vmsec", &["passwd", "-p", "wrong password"]);
    assert_eq!(wrong.status.code(), Some(1), "{}", text(&wrong));
    assert!(text(&wrong).contains("wrong password"));
    assert!(fs::read(dir.join("f")).is_err());
    assert_eq!(
        a.ok("vmsec", &["passwd", "-p", "correct horse battery"])
            .trim(),
        "OK passwd"
    );
    assert!(a.ok("vmsec", &["status"]).contains("KEYS_AVAILABLE=TRUE"));
    assert_eq!(fs::read(dir.join("f")).unwrap(), b"locked away");
    // Guarded while locked, yet new files get the key's mode (gcm).
    fs::write(dir.join("g"), b"new").unwrap();
    let iv = a.ok(
        "voradmin",
        &["secfs", "iv", "get", dir.join("g").to_str().unwrap()],
    );
    assert!(iv.contains("mode: gcm"), "{iv}");
    // The password never reaches the logs.
    assert!(!a.log("vmd.log").contains("correct horse"));
}

#[test]
fn bad_input_gets_clear_errors_and_changes_nothing() {
    let a = Agent::new();
    assert_eq!(
        a.cmd("voradmin", &["status"]).status.code(),
        Some(4),
        "vmd not running"
    );
    a.start();
    assert_eq!(a.cmd("voradmin", &["frobnicate"]).status.code(), Some(2));
    assert_eq!(
        a.cmd("secfsd", &["-status", "nonsense"]).status.code(),
        Some(2)
    );
    assert_eq!(a.cmd("vmsec", &["bogus"]).status.code(), Some(2));
    let bad = a.base.path().join("bad.json");
    fs::write(&bad, r#"{ "name": "x", "security_rules": [ { "order_number": 1, "action": "fly", "effect": "permit" } ] }"#)
        .unwrap();
    let o = a.cmd("voradmin", &["policy", "apply", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("fly"), "{}", text(&o));
    assert_eq!(a.ok("voradmin", &["policy", "list"]).trim(), "");
    let dir = a.dir("gp");
    let o = a.cmd(
        "voradmin",
        &["guard", dir.to_str().unwrap(), "--policy", "missing"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("no policy"), "{}", text(&o));
    let o = a.cmd("voradmin", &["key", "create", "bad name"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = a.cmd("voradmin", &["key", "create", "k", "--mode", "rot13"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("rot13"));
    let o = a.cmd("voradmin", &["secfs", "config", "turbo", "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("unknown secfs parameter"));
    a.ok("voradmin", &["secfs", "config", "pagecache_writeback", "0"]);
    assert!(
        a.ok("vmsec", &["vmdconfig"])
            .contains("secfs_pagecache_writeback=0")
    );
    a.ok("voradmin", &["secfs", "config", "concise_logging", "1"]);
    assert!(
        a.ok("vmsec", &["vmdconfig"])
            .contains("secfs_concise_logging=1")
    );
    let o = a.cmd("voradmin", &["secfs", "config", "concise_logging", "yes"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("0 or 1"), "{}", text(&o));
    assert_eq!(a.ok("voradmin", &["key", "list"]).trim(), "no keys");
    assert!(
        a.status_json()["guardpoints"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // Only root may administer.
    let o = Command::new("su")
        .args([
            "nobody",
            "-s",
            "/bin/sh",
            "-c",
            &format!("{} status; echo rc=$?", a.bin.join("voradmin").display()),
        ])
        .output()
        .unwrap();
    assert!(text(&o).contains("rc=3"), "{}", text(&o));
    // A corrupt state file is reported, not overwritten.
    let gps = a.root.join("etc/guardpoints.json");
    fs::write(&gps, b"[{\"path\": ").unwrap();
    a.ok("voradmin", &["shutdown"]);
    let o = a.cmd("vmd", &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("guardpoints.json"), "{}", text(&o));
    assert_eq!(fs::read(&gps).unwrap(), b"[{\"path\": ");
}

#[test]
fn concise_logging_setting_reaches_secfs() {
    let a = Agent::with_conf("secfs_concise_logging=1");
    a.start();
    let cmdline = fs::read(format!("/proc/{}/cmdline", a.pid("secfs"))).unwrap();
    assert!(contains(&cmdline, b"--concise-logging"), "{cmdline:?}");
    let dir = a.dir("gp");
    a.guard_with_key(&dir, "k_concise", "xts");
    let f = dir.join("concise.txt");
    fs::write(&f, b"once").unwrap();
    for _ in 0..3 {
        let o = Command::new("/usr/bin/cat").arg(&f).output().unwrap();
        assert_eq!(o.stdout, b"once");
    }
    let res = format!("Res[{}]", f.display());
    let reads = |log: &str| {
        log.lines()
            .filter(|l| {
                l.contains("Process[/usr/bin/cat]")
                    && l.contains("Action[read_file]")
                    && l.contains(&res)
            })
            .count()
    };
    wait_until("cat's read audited", 10, || reads(&a.log("audit.log")) >= 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(reads(&a.log("audit.log")), 1, "{}", a.log("audit.log"));
}

#[test]
fn a_policy_naming_a_clear_key_can_be_changed_while_guarded() {
    // A key of mode clear has no material to push; secfs must still take
    // a new version of the policy (here one that denies everything).
    let a = Agent::new();
    a.start();
    let dir = a.dir("gp");
    a.guard_with_key(&dir, "k_clear", "clear");
    fs::write(dir.join("f"), b"plain on disk").unwrap();
    assert_eq!(a.lower(&dir, "f"), b"plain on disk");
    let deny = r#"{ "name": "p_k_clear", "authenticated_users_only": false,
  "security_rules": [ { "order_number": 1, "action": "all_ops", "effect": "deny" } ],
  "key_rules": [ { "key_id": "k_clear" } ] }"#;
    let file = a.base.path().join("deny.json");
    fs::write(&file, deny).unwrap();
    a.ok("voradmin", &["policy", "apply", file.to_str().unwrap()]);
    wait_until("the denying policy applies", 10, || {
        fs::read(dir.join("f")).is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)
    });
}

/// Issue 14 F: guarding the agent's own install root (or anything inside
/// it, or a directory containing it), its log or run directory, or a
/// system directory is refused at registration with the reason (exit 1),
/// and nothing is registered.
#[test]
fn guarding_the_agent_or_the_host_is_refused_at_registration() {
    let a = Agent::new();
    a.start();
    a.ok("voradmin", &["key", "create", "k_f"]);
    let policy = a.base.path().join("p.json");
    fs::write(&policy, policy_json("p_f", "k_f")).unwrap();
    a.ok("voradmin", &["policy", "apply", policy.to_str().unwrap()]);
    let root = a.root.clone();
    let cases = [
        (root.clone(), "install root"),
        (root.join("etc"), "install root"),
        (a.base.path().to_path_buf(), "containing"),
        (a.base.path().join("log"), "log directory"),
        (a.run_dir(), "run directory"),
        (PathBuf::from("/etc"), "a system directory"),
        (PathBuf::from("/var/lib"), "/var/lib/dpkg"),
    ];
    for (dir, why) in cases {
        let o = a.cmd(
            "voradmin",
            &["guard", dir.to_str().unwrap(), "--policy", "p_f"],
        );
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{}: {t}", dir.display());
        assert!(
            t.contains("refusing to guard") && t.contains(why),
            "{}: {t}",
            dir.display()
        );
    }
    let v = a.status_json();
    assert!(
        v["guardpoints"].as_array().unwrap().is_empty(),
        "registered anyway: {v}"
    );
}

/// Issue 14 B through vmd: a mount namespace made before the guard and a
/// bind mount of the GuardPoint's parent both show the GuardPoint once vmd
/// guards it, and unguard removes it from both.
#[test]
fn vmd_guard_covers_other_namespaces_and_bind_mounts_and_unguard_removes_them() {
    let a = Agent::new();
    a.start();
    let parent = a.dir("parent");
    let dir = parent.join("gp");
    fs::create_dir(&dir).unwrap();
    let alias = a.dir("alias");
    assert!(
        Command::new("mount")
            .args(["--bind", parent.to_str().unwrap(), alias.to_str().unwrap()])
            .status()
            .unwrap()
            .success()
    );
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let ns = Kill(
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sleep", "1000"])
            .current_dir("/")
            .spawn()
            .unwrap(),
    );
    let pid = ns.0.id();
    let own = fs::read_link("/proc/self/ns/mnt").unwrap();
    wait_until("the namespace", 10, || {
        fs::read_link(format!("/proc/{pid}/ns/mnt")).is_ok_and(|n| n != own)
    });
    a.guard_with_key(&dir, "k_ns", "xts");
    fs::write(dir.join("secret"), SECRET).unwrap();
    let read_ns = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "cat"])
        .arg(dir.join("secret"))
        .output()
        .unwrap();
    assert_eq!(read_ns.stdout, SECRET, "{}", text(&read_ns));
    assert_eq!(fs::read(alias.join("gp/secret")).unwrap(), SECRET);
    fs::write(alias.join("gp/via-alias"), SECRET).unwrap();
    let lower = a.lower(&dir, "via-alias");
    assert!(!contains(&lower, SECRET), "written around secfs");
    a.ok("voradmin", &["unguard", dir.to_str().unwrap()]);
    let mounted_at = |mountinfo: &str, p: &Path| {
        mountinfo
            .lines()
            .any(|l| l.split_whitespace().nth(4) == p.to_str() && l.contains(" - fuse.secfs "))
    };
    let ns_info = fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    assert!(!mounted_at(&ns_info, &dir), "left in the namespace");
    let own_info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounted_at(&own_info, &alias.join("gp")),
        "left on the bind mount"
    );
    let _ = nix::mount::umount2(&alias, nix::mount::MntFlags::MNT_DETACH);
}

/// vmd and the secfs service it runs lock their memory and make
/// themselves not dumpable, and their logs (vmd, secfs, audit) are never
/// world-readable: created 0600, a pre-existing 0644 vmd log tightened to
/// 0640.
#[test]
fn agent_daemons_are_hardened_and_their_logs_private() {
    use std::os::unix::fs::PermissionsExt;
    let a = Agent::new();
    let logs = a.base.path().join("log");
    fs::create_dir_all(&logs).unwrap();
    fs::write(logs.join("vmd.log"), b"").unwrap();
    fs::set_permissions(logs.join("vmd.log"), fs::Permissions::from_mode(0o644)).unwrap();
    a.start();
    let dir = a.dir("gp");
    a.guard_with_key(&dir, "k_hard", "xts");
    fs::write(dir.join("f"), b"x").unwrap();
    let _ = fs::read(dir.join("f"));
    for (name, who) in [("vmd", "vmd"), ("secfs", "secfs")] {
        let pid = a.pid(name);
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let locked: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmLck:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap();
        assert!(locked > 0, "{name}: VmLck {locked} kB");
        let line = format!("{who}: memory locked, process not dumpable");
        wait_until("the hardening report", 10, || {
            a.log("vmd.log").contains(&line) || a.log("secfs.log").contains(&line)
        });
    }
    let mode = |n: &str| {
        fs::metadata(logs.join(n))
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or_else(|e| panic!("{n}: {e}"))
    };
    assert_eq!(mode("vmd.log"), 0o640, "pre-existing vmd log tightened");
    for n in ["secfs.log", "audit.log"] {
        if logs.join(n).exists() {
            assert_eq!(mode(n) & 0o077, 0, "{n} is {:o}", mode(n));
        }
    }
    assert!(logs.join("secfs.log").exists());
    a.ok("voradmin", &["shutdown"]);
}

/// `-p -` reads the host password from standard input (no argv, no
/// warning) for `voradmin hostkey password` and `vmsec passwd`; `-p PW`
/// still works but warns that argv is visible to other users.
#[test]
fn host_passwords_from_stdin_with_dash_p_dash() {
    use std::io::Write;
    use std::process::Stdio;
    let a = Agent::new();
    a.start();
    let with_stdin = |prog: &str, args: &[&str], input: &[u8]| {
        let mut child = Command::new(a.bin.join(prog))
            .args(args)
            .env("GUARDFS_ROOT", &a.root)
            .env("GUARDFS_PBKDF2_ITERATIONS", "1000")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(input);
        child.wait_with_output().unwrap()
    };
    let o = with_stdin(
        "voradmin",
        &["hostkey", "password", "-p", "-"],
        b"correct horse battery\n",
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("warning"), "{}", text(&o));
    a.ok("voradmin", &["shutdown"]);
    a.start();
    assert!(a.ok("vmsec", &["status"]).contains("KEYS_AVAILABLE=FALSE"));
    let o = with_stdin("vmsec", &["passwd", "-p", "-"], b"wrong password\n");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = with_stdin("vmsec", &["passwd", "-p", "-"], b"correct horse battery\n");
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("warning"), "{}", text(&o));
    assert!(a.ok("vmsec", &["status"]).contains("KEYS_AVAILABLE=TRUE"));
    // The old way works, with a warning.
    let o = a.cmd("vmsec", &["passwd", "-p", "correct horse battery"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("warning: -p on the command line is visible to other users"),
        "{}",
        text(&o)
    );
    a.ok("voradmin", &["shutdown"]);
}
