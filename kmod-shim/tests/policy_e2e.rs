//! Policies enforced on a real mount against real processes: user sets,
//! process sets by path and by signature, ciphertext for backup processes,
//! deny, learn mode, audit lines, reload under load, and the leak test
//! (no plaintext through the shared page cache). Run as root (CI does).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

const SECRET: &[u8] = b"TOP-SECRET-PLAINTEXT-CANARY ";

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Binaries for process-set rules, built from tests/data/probe.c and
/// copied under several names (same bytes, different paths).
struct Bins {
    dir: tempfile::TempDir,
}

impl Bins {
    fn new(names: &[&str]) -> Bins {
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

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn dir(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }
}

/// Copy a binary with cp(1), not in this process: a writable fd held here
/// for a moment could be inherited by a child another test thread forks
/// meanwhile, and running the copy would then fail with ETXTBSY.
fn copy_bin(src: &Path, dst: &Path) {
    let st = Command::new("cp").arg(src).arg(dst).status().unwrap();
    assert!(st.success(), "cp {} {}", src.display(), dst.display());
}

/// Ask the daemon of `gp` to reload its policy files.
fn sighup(gp: &Gp) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(gp.pid.unwrap() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
}

/// Run `prog args...`, optionally as another uid.
fn run_as(uid: Option<u32>, prog: &Path, args: &[&str]) -> Output {
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

fn is_denied(o: &Output) -> bool {
    !o.status.success() && String::from_utf8_lossy(&o.stdout).contains("ERR 13")
        || String::from_utf8_lossy(&o.stderr).contains("Permission denied")
}

/// A GuardPoint with `policy` (JSON) and extra mount arguments.
fn guarded(policy: &str, extra: &[&str]) -> (Gp, tempfile::TempDir) {
    guarded_in("xts", policy, extra)
}

/// [`guarded`] in `mode`.
fn guarded_in(mode: &str, policy: &str, extra: &[&str]) -> (Gp, tempfile::TempDir) {
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
fn policy_args(cfg: &tempfile::TempDir, extra: &[&str]) -> Vec<String> {
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
fn remount(gp: &mut Gp, mode: &str, cfg: &tempfile::TempDir, extra: &[&str]) {
    let args = policy_args(cfg, extra);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    gp.remount(mode, &refs);
}

fn audit_text(cfg: &tempfile::TempDir) -> String {
    // The audit writer runs asynchronously.
    std::thread::sleep(std::time::Duration::from_millis(300));
    fs::read_to_string(cfg.path().join("audit.log")).unwrap_or_default()
}

fn write_secret(gp: &Gp, name: &str) -> Vec<u8> {
    let data: Vec<u8> = SECRET.iter().copied().cycle().take(20_000).collect();
    fs::write(gp.path(name), &data).unwrap();
    fs::set_permissions(
        gp.path(name),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    data
}

#[test]
fn user_set_rules_decide_by_uid_and_audit() {
    let policy = r#"{
      "name": "users", "authenticated_users_only": false,
      "security_rules": [
        { "order_number": 1, "user_set_id": "ops", "action": "all_ops", "effect": "permit,applykey,audit" },
        { "order_number": 2, "user_set_id": "admins", "action": "all_ops", "effect": "permit,applykey" },
        { "order_number": 3, "action": "all_ops", "effect": "deny,audit" } ],
      "user_sets": [ { "id": "ops", "users": [ { "uid": 4242 } ] }, { "id": "admins", "users": [ { "uid": 0 } ] } ] }"#;
    let (gp, cfg) = guarded(policy, &[]);
    let data = write_secret(&gp, "f");
    let cat = Path::new("/bin/cat");
    let ok = run_as(Some(4242), cat, &[gp.path("f").to_str().unwrap()]);
    assert!(ok.status.success(), "{ok:?}");
    assert_eq!(ok.stdout, data);
    let no = run_as(Some(4343), cat, &[gp.path("f").to_str().unwrap()]);
    assert!(is_denied(&no), "{no:?}");
    let audit = audit_text(&cfg);
    let gp_file = format!("Res[{}/f]", gp.dir.display());
    assert!(
        audit.lines().any(|l| l
            .contains("CGP2601I: [SecFS, 0] [AUDIT] Policy[users] User[4242,uid=4242,gid=4242")
            && l.contains("Action[read_file]")
            && l.contains(&gp_file)
            && l.contains("Effect[PERMIT Code (1M)]")),
        "{audit}"
    );
    assert!(
        audit
            .lines()
            .any(|l| l.contains("uid=4343") && l.contains("Effect[DENIED Code (1U,2U,3M)]")),
        "{audit}"
    );
}

#[test]
fn process_set_rules_by_path_and_by_signature() {
    let bins = Bins::new(&["good", "other"]);
    // A copy of cat elsewhere: the signature rule follows the bytes.
    copy_bin(Path::new("/bin/cat"), &bins.path("mycat"));
    let sig = {
        let out = Command::new("sha256sum").arg("/bin/cat").output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let policy = format!(
        r#"{{ "name": "procs", "authenticated_users_only": false,
      "security_rules": [
        {{ "order_number": 1, "process_set_id": "by-sig", "action": "all_ops", "effect": "permit,applykey" }},
        {{ "order_number": 2, "process_set_id": "by-path", "action": "all_ops", "effect": "permit,applykey" }},
        {{ "order_number": 3, "user_set_id": "root", "action": "all_ops", "effect": "permit,applykey" }},
        {{ "order_number": 4, "action": "all_ops", "effect": "deny" }} ],
      "user_sets": [ {{ "id": "root", "users": [ {{ "uid": 0 }} ] }} ],
      "process_sets": [
        {{ "id": "by-sig", "processes": [ {{ "signature": "{sig}" }} ] }},
        {{ "id": "by-path", "processes": [ {{ "directory": "{}", "file": "good" }} ] }} ] }}"#,
        bins.dir()
    );
    let (gp, _cfg) = guarded(&policy, &[]);
    let data = write_secret(&gp, "f");
    let f = gp.path("f");
    let f = f.to_str().unwrap();
    for prog in [bins.path("mycat"), PathBuf::from("/bin/cat")] {
        let o = run_as(Some(4242), &prog, &[f]);
        assert_eq!(o.stdout, data, "{prog:?}: {o:?}");
    }
    let o = run_as(Some(4242), &bins.path("good"), &["read", f]);
    assert_eq!(o.stdout, data, "{o:?}");
    let o = run_as(Some(4242), &bins.path("other"), &["read", f]);
    assert!(is_denied(&o), "same bytes, other path: {o:?}");
    let o = run_as(Some(4242), Path::new("/usr/bin/head"), &["-c", "10", f]);
    assert!(is_denied(&o), "{o:?}");
}

#[test]
fn backup_process_reads_ciphertext_while_an_application_reads_plaintext() {
    let bins = Bins::new(&["backup"]);
    let policy = format!(
        r#"{{ "name": "backup",
      "security_rules": [
        {{ "order_number": 1, "process_set_id": "backup", "action": "read", "effect": "permit,audit" }},
        {{ "order_number": 2, "process_set_id": "backup", "action": "all_ops", "effect": "deny" }},
        {{ "order_number": 3, "action": "all_ops", "effect": "permit,applykey" }} ],
      "process_sets": [ {{ "id": "backup", "processes": [ {{ "directory": "{}", "file": "backup" }} ] }} ] }}"#,
        bins.dir()
    );
    let (gp, _cfg) = guarded(&policy, &[]);
    let data = write_secret(&gp, "db.dat");
    let lower = fs::read(gp.lower("db.dat")).unwrap();
    let f = gp.path("db.dat");
    let reader = {
        let f = f.clone();
        let data = data.clone();
        std::thread::spawn(move || {
            for _ in 0..50 {
                assert_eq!(
                    fs::read(&f).unwrap(),
                    data,
                    "application must keep seeing plaintext"
                );
            }
        })
    };
    for _ in 0..10 {
        let o = run_as(None, &bins.path("backup"), &["read", f.to_str().unwrap()]);
        assert!(o.status.success(), "{o:?}");
        assert_eq!(
            o.stdout, lower,
            "backup must get the exact lower bytes, header included"
        );
        assert!(!contains(&o.stdout, SECRET));
    }
    reader.join().unwrap();
    let o = run_as(None, &bins.path("backup"), &["stat", f.to_str().unwrap()]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        lower.len().to_string(),
        "backup sees the lower size"
    );
    assert_eq!(
        fs::metadata(&f).unwrap().len(),
        data.len() as u64,
        "applications see the logical size"
    );
}

#[test]
fn learn_mode_permits_and_logs_would_deny() {
    let bins = Bins::new(&["intruder"]);
    let policy = format!(
        r#"{{ "name": "learning", "learn_mode": true,
      "security_rules": [
        {{ "order_number": 1, "process_set_id": "bad", "action": "all_ops", "effect": "deny,applykey,audit" }},
        {{ "order_number": 2, "action": "all_ops", "effect": "permit,applykey" }} ],
      "process_sets": [ {{ "id": "bad", "processes": [ {{ "directory": "{}", "file": "intruder" }} ] }} ] }}"#,
        bins.dir()
    );
    let (gp, cfg) = guarded(&policy, &[]);
    let data = write_secret(&gp, "f");
    let o = run_as(
        None,
        &bins.path("intruder"),
        &["read", gp.path("f").to_str().unwrap()],
    );
    assert_eq!(o.stdout, data, "learn mode permits: {o:?}");
    let audit = audit_text(&cfg);
    assert!(
        audit.contains("[LEARN MODE: WOULD DENY]") && audit.contains("intruder"),
        "{audit}"
    );
}

#[test]
fn deny_gives_eacces_and_writes_need_the_key_except_under_clear_key() {
    let bins = Bins::new(&["unused"]);
    // cp under another name: the process set matches the copy's path.
    copy_bin(Path::new("/bin/cp"), &bins.path("keyless"));
    copy_bin(Path::new("/bin/cp"), &bins.path("blocked"));
    let policy = format!(
        r#"{{ "name": "writes",
      "security_rules": [
        {{ "order_number": 1, "process_set_id": "blocked", "action": "all_ops", "effect": "deny,audit" }},
        {{ "order_number": 2, "process_set_id": "keyless", "action": "all_ops", "effect": "permit" }},
        {{ "order_number": 3, "action": "all_ops", "effect": "permit,applykey" }} ],
      "key_rules": [
        {{ "resource_set_id": "public", "key_id": "clear_key" }},
        {{ "key_id": "default" }} ],
      "resource_sets": [ {{ "id": "public", "resources": [ {{ "directory": "/public", "include_subfolders": true }} ] }} ],
      "process_sets": [
        {{ "id": "keyless", "processes": [ {{ "directory": "{d}", "file": "keyless" }} ] }},
        {{ "id": "blocked", "processes": [ {{ "directory": "{d}", "file": "blocked" }} ] }} ] }}"#,
        d = bins.dir()
    );
    let (gp, _cfg) = guarded(&policy, &[]);
    fs::create_dir(gp.path("public")).unwrap();
    let cp = |bin: &str, to: &str| {
        run_as(
            None,
            &bins.path(bin),
            &["/etc/hostname", gp.path(to).to_str().unwrap()],
        )
    };
    let denied = |o: &Output| {
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("Permission denied")
    };
    // deny: EACCES, nothing created
    assert!(denied(&cp("blocked", "a")));
    assert!(!gp.path("a").exists());
    // permit without applykey: writing would store plaintext, so refused
    assert!(denied(&cp("keyless", "b")));
    // ...except where the key rule is clear_key: access control only,
    // the file stays plaintext on disk.
    let o = cp("keyless", "public/c");
    assert!(o.status.success(), "{o:?}");
    let host = fs::read("/etc/hostname").unwrap();
    assert_eq!(fs::read(gp.lower("public/c")).unwrap(), host);
    assert_eq!(fs::read(gp.path("public/c")).unwrap(), host);
    // Elsewhere, files written with the key are encrypted as usual.
    let o = run_as(
        None,
        Path::new("/bin/cp"),
        &["/etc/hostname", gp.path("d").to_str().unwrap()],
    );
    assert!(o.status.success(), "{o:?}");
    assert_eq!(&fs::read(gp.lower("d")).unwrap()[..8], b"GuardFS\0");
}

#[test]
fn no_plaintext_through_shared_caches_either_order() {
    let bins = Bins::new(&["plainapp", "rawapp", "deniedapp"]);
    let policy = format!(
        r#"{{ "name": "leak",
      "security_rules": [
        {{ "order_number": 1, "process_set_id": "raw", "action": "read", "effect": "permit" }},
        {{ "order_number": 2, "process_set_id": "raw", "action": "all_ops", "effect": "deny" }},
        {{ "order_number": 3, "process_set_id": "denied", "action": "all_ops", "effect": "deny" }},
        {{ "order_number": 4, "action": "all_ops", "effect": "permit,applykey" }} ],
      "process_sets": [
        {{ "id": "raw", "processes": [ {{ "directory": "{d}", "file": "rawapp" }} ] }},
        {{ "id": "denied", "processes": [ {{ "directory": "{d}", "file": "deniedapp" }} ] }} ] }}"#,
        d = bins.dir()
    );
    let (gp, _cfg) = guarded(&policy, &[]);
    for (round, name) in ["a-first", "b-first"].iter().enumerate() {
        let data = write_secret(&gp, name);
        let lower = fs::read(gp.lower(name)).unwrap();
        let f = gp.path(name);
        let f = f.to_str().unwrap();
        let run = |bin: &str, mode: &str| run_as(None, &bins.path(bin), &[mode, f]);
        // Map the file, print it, keep the mapping, print it again.
        let hold = |bin: &str| {
            Command::new(bins.path(bin))
                .args(["hold2", f, "3"])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let held = |c: std::process::Child| {
            let o = c.wait_with_output().unwrap();
            assert!(o.status.success(), "{o:?}");
            let at = o
                .stdout
                .windows(9)
                .position(|w| w == b"--AGAIN--")
                .expect("second pass");
            (o.stdout[..at].to_vec(), o.stdout[at + 9..].to_vec())
        };
        if round == 0 {
            // A reads and maps plaintext, and keeps the mapping.
            assert_eq!(run("plainapp", "read").stdout, data);
            let a = hold("plainapp");
            std::thread::sleep(std::time::Duration::from_millis(300));
            for mode in ["read", "mmap", "read"] {
                let b = run("rawapp", mode);
                assert!(!contains(&b.stdout, SECRET), "B ({mode}) saw plaintext");
                assert_eq!(b.stdout, lower, "B ({mode}) gets the lower bytes");
                assert!(is_denied(&run("deniedapp", mode)), "denied ({mode})");
            }
            // A's mapping, read again after B ran, is still the plaintext.
            let (first, again) = held(a);
            assert_eq!(first, data);
            assert_eq!(again, data, "A's mapping re-read after B");
        } else {
            // B first, keeping its mapping; a denied process; then A;
            // then B again, by read and by mmap.
            let b = hold("rawapp");
            std::thread::sleep(std::time::Duration::from_millis(300));
            for mode in ["read", "mmap"] {
                assert!(is_denied(&run("deniedapp", mode)), "denied ({mode})");
            }
            assert_eq!(run("plainapp", "mmap").stdout, data);
            assert_eq!(run("plainapp", "read").stdout, data);
            for mode in ["read", "mmap"] {
                let b2 = run("rawapp", mode);
                assert!(!contains(&b2.stdout, SECRET), "B ({mode}) after A");
                assert_eq!(b2.stdout, lower, "B ({mode}) after A");
            }
            // B's held mapping, re-read after A mapped plaintext.
            let (first, again) = held(b);
            assert!(!contains(&first, SECRET) && !contains(&again, SECRET));
            assert_eq!(first, lower);
            assert_eq!(again, lower, "B's mapping re-read after A");
        }
    }
}

/// A mapping made under one policy generation, held across a reload that
/// denies its process: what we guarantee is that the reload drops the
/// cached pages and every later fetch through the old mapping or fd is
/// decided again under the new policy (refused: SIGBUS for a fault,
/// EACCES for a read). The process keeps what it already read.
#[test]
fn a_mapping_held_across_a_reload_is_rechecked() {
    let bins = Bins::new(&["app"]);
    let permit = r#"{ "name": "v1", "security_rules": [
        { "order_number": 1, "action": "all_ops", "effect": "permit,applykey" } ] }"#;
    let deny_app = format!(
        r#"{{ "name": "v2", "security_rules": [
        {{ "order_number": 1, "process_set_id": "app", "action": "all_ops", "effect": "deny" }},
        {{ "order_number": 2, "action": "all_ops", "effect": "permit,applykey" }} ],
      "process_sets": [ {{ "id": "app", "processes": [ {{ "directory": "{}", "file": "app" }} ] }} ] }}"#,
        bins.dir()
    );
    let (gp, cfg) = guarded(permit, &[]);
    let data = write_secret(&gp, "f");
    let app = Command::new(bins.path("app"))
        .args(["hold2", gp.path("f").to_str().unwrap(), "2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    fs::write(cfg.path().join("policy.json"), deny_app).unwrap();
    sighup(&gp);
    let out = app.wait_with_output().unwrap();
    assert!(out.stdout.starts_with(&data), "mapped under v1");
    let rest = &out.stdout[data.len()..];
    // Either the fault was refused (SIGBUS) before anything more was
    // printed, or nothing beyond the marker came out.
    use std::os::unix::process::ExitStatusExt;
    assert!(
        out.status.signal() == Some(libc::SIGBUS) || rest.len() <= b"--AGAIN--".len(),
        "the old mapping gave data after the reload: {:?} {} bytes",
        out.status,
        rest.len()
    );
    assert!(!contains(rest, SECRET));
}

/// A file encrypted elsewhere and renamed into a clear_key subtree stays
/// encrypted: a reader without applykey gets its ciphertext, never its
/// plaintext (nor the plaintext another reader put in the page cache);
/// clear files there are read as they are.
/// The errno of an I/O error.
fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// A policy with three key rules: `/hr` uses `hr-key`, `/public` is
/// `clear_key`, everything else the key named `default`; `keyless` (a
/// copy of the probe) may read without the key.
fn key_rules_policy(bins: &Bins) -> String {
    format!(
        r#"{{ "name": "keyrules",
      "security_rules": [
        {{ "order_number": 1, "process_set_id": "keyless", "action": "all_ops", "effect": "permit,audit" }},
        {{ "order_number": 2, "action": "all_ops", "effect": "permit,applykey,audit" }} ],
      "key_rules": [
        {{ "resource_set_id": "hr", "key_id": "hr-key" }},
        {{ "resource_set_id": "public", "key_id": "clear_key" }},
        {{ "resource_set_id": "db", "key_id": "db-key" }},
        {{ "key_id": "default" }} ],
      "resource_sets": [
        {{ "id": "hr", "resources": [ {{ "directory": "/hr", "include_subfolders": true }} ] }},
        {{ "id": "public", "resources": [ {{ "directory": "/public", "include_subfolders": true }} ] }},
        {{ "id": "db", "resources": [ {{ "directory": "/", "file": "*.dbf", "include_subfolders": true }} ] }} ],
      "process_sets": [ {{ "id": "keyless", "processes": [ {{ "directory": "{d}", "file": "keyless" }} ] }} ] }}"#,
        d = bins.dir()
    )
}

/// Key files `hr-key` and `db-key` and the mount arguments naming them.
fn extra_keys(dir: &Path) -> Vec<String> {
    let mut args = Vec::new();
    for name in ["hr-key", "db-key"] {
        let k = dir.join(name);
        assert!(run(&["genkey", k.to_str().unwrap()]).status.success());
        args.push("--key".to_owned());
        args.push(format!("{name}={}", k.display()));
    }
    args
}

/// Renames and links between key rules are EXDEV (so `mv` copies, and the
/// copy is encrypted under the destination's key); within one key rule
/// they work.
#[test]
fn renames_and_links_across_key_rules_are_exdev() {
    let bins = Bins::new(&["keyless"]);
    let keys = tempfile::tempdir_in("/var/tmp").unwrap();
    let extra = extra_keys(keys.path());
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    for mode in ALL_MODES {
        let (gp, _cfg) = guarded_in(mode, &key_rules_policy(&bins), &extra);
        for d in ["hr", "public", "d1", "hr/d2"] {
            fs::create_dir(gp.path(d)).unwrap();
        }
        let data = write_secret(&gp, "f");
        write_secret(&gp, "hr/s");
        write_secret(&gp, "a.txt");
        let exdev = |from: &str, to: &str| {
            let r = fs::rename(gp.path(from), gp.path(to));
            assert_eq!(r.map_err(errno), Err(libc::EXDEV), "{mode}: {from} -> {to}");
            assert!(gp.path(from).exists() && !gp.path(to).exists());
        };
        exdev("f", "public/f"); // keyed -> clear_key
        exdev("f", "hr/f"); // default -> hr-key
        exdev("hr/s", "s"); // hr-key -> default
        exdev("a.txt", "a.dbf"); // an included extension
        exdev("d1", "hr/d1"); // a directory into another key rule
        exdev("hr/d2", "d2"); // a directory out of one
        let link = fs::hard_link(gp.path("f"), gp.path("public/l"));
        assert_eq!(link.map_err(errno), Err(libc::EXDEV), "{mode}: link");
        let link = fs::hard_link(gp.path("a.txt"), gp.path("b.dbf"));
        assert_eq!(link.map_err(errno), Err(libc::EXDEV), "{mode}: link");
        // Within one key rule, as usual.
        fs::rename(gp.path("f"), gp.path("d1/g")).unwrap();
        fs::rename(gp.path("hr/s"), gp.path("hr/d2/s")).unwrap();
        fs::rename(gp.path("hr/d2"), gp.path("hr/d3")).unwrap();
        fs::hard_link(gp.path("d1/g"), gp.path("g2")).unwrap();
        // mv copies across: the copy is under the destination's key rule.
        let mv = Command::new("mv")
            .arg(gp.path("d1/g"))
            .arg(gp.path("public/g"))
            .output()
            .unwrap();
        assert!(mv.status.success(), "{mode}: {mv:?}");
        assert_eq!(
            fs::read(gp.lower("public/g")).unwrap(),
            data,
            "{mode}: clear"
        );
        let mv = Command::new("mv")
            .arg(gp.path("g2"))
            .arg(gp.path("hr/g"))
            .output()
            .unwrap();
        assert!(mv.status.success(), "{mode}: {mv:?}");
        let lower = fs::read(gp.lower("hr/g")).unwrap();
        let h = guardfs_crypto::Header::parse(&lower[..4096]).unwrap();
        assert_eq!(h.key_name, "hr-key", "{mode}");
        assert!(!contains(&lower, SECRET));
        assert_eq!(fs::read(gp.path("hr/g")).unwrap(), data);
    }
}

/// The key rule, not the file, decides how a file is read: encrypted bytes
/// placed (on the lower file system) where the key rule says `clear_key`
/// are served as they are, to every reader; where it names another key,
/// or where a key rule names a key and the file has no header, the open
/// fails with EIO and an audit record names the path, the key found and
/// the key required. A clear file that begins with header magic reads
/// back byte for byte. Nothing on disk is rewritten.
#[test]
fn the_key_rule_not_the_file_decides_how_it_is_read() {
    let bins = Bins::new(&["keyless"]);
    let keys = tempfile::tempdir_in("/var/tmp").unwrap();
    let extra = extra_keys(keys.path());
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    for mode in ALL_MODES {
        let (mut gp, cfg) = guarded_in(mode, &key_rules_policy(&bins), &extra);
        fs::create_dir(gp.path("hr")).unwrap();
        fs::create_dir(gp.path("public")).unwrap();
        let data = write_secret(&gp, "f");
        write_secret(&gp, "hr/s");
        let keyed = fs::read(gp.lower("f")).unwrap();
        let hr = fs::read(gp.lower("hr/s")).unwrap();
        assert!(!contains(&keyed, SECRET) && !contains(&hr, SECRET));
        // A clear file that starts like an encrypted one.
        let mut magic = keyed[..4096].to_vec();
        magic.extend_from_slice(b"and then some clear words");
        fs::write(gp.path("public/magic"), &magic).unwrap();
        // The attacker plants encrypted bytes under other key rules.
        fs::write(gp.lower("public/planted"), &keyed).unwrap();
        fs::write(gp.lower("hr/planted"), &keyed).unwrap();
        fs::write(gp.lower("planted-hr"), &hr).unwrap();
        fs::write(gp.lower("hr/clear"), b"a clear file where hr-key rules").unwrap();
        let lower_before: Vec<Vec<u8>> = ["public/planted", "hr/planted", "planted-hr", "hr/clear"]
            .iter()
            .map(|n| fs::read(gp.lower(n)).unwrap())
            .collect();
        // Once the nodes are built again (remount) and before.
        for round in 0..2 {
            if round == 1 {
                remount(&mut gp, mode, &cfg, &extra);
            }
            // clear_key: the lower bytes, whoever reads, by read or mmap.
            let planted = gp.path("public/planted");
            let planted = planted.to_str().unwrap();
            assert_eq!(fs::read(planted).unwrap(), keyed, "{mode}: verbatim");
            assert_eq!(fs::metadata(planted).unwrap().len(), keyed.len() as u64);
            for how in ["read", "mmap"] {
                for bin in [Path::new("/bin/cat"), &bins.path("keyless")] {
                    let args: &[&str] = if bin.ends_with("cat") {
                        &[planted]
                    } else {
                        &[how, planted]
                    };
                    let o = run_as(None, bin, args);
                    assert_eq!(o.stdout, keyed, "{mode} {how} {}", bin.display());
                }
            }
            assert_eq!(fs::read(gp.path("public/magic")).unwrap(), magic, "{mode}");
            // Another key, or no header, where a key rule names one: EIO.
            for name in ["hr/planted", "planted-hr", "hr/clear"] {
                let r = fs::read(gp.path(name));
                assert_eq!(
                    r.map_err(errno),
                    Err(libc::EIO),
                    "{mode} round {round}: {name}"
                );
                let o = run_as(
                    None,
                    &bins.path("keyless"),
                    &["mmap", gp.path(name).to_str().unwrap()],
                );
                assert!(!contains(&o.stdout, SECRET), "{mode}: {name}");
            }
            // The genuine files still read.
            assert_eq!(fs::read(gp.path("f")).unwrap(), data);
            assert_eq!(fs::read(gp.path("hr/s")).unwrap(), data);
            // One lower file under two key rules (a hard link made on the
            // lower file system): read under each rule in turn, refused
            // under the one its header does not fit, also while it is
            // open under the other.
            if round == 0 {
                fs::hard_link(gp.lower("hr/s"), gp.lower("linked")).unwrap();
            }
            let held = fs::File::open(gp.path("hr/s")).unwrap();
            let r = fs::read(gp.path("linked")).map(|b| contains(&b, SECRET));
            assert_eq!(
                r.map_err(errno),
                Err(libc::EIO),
                "{mode}: open under hr-key"
            );
            drop(held);
            let r = fs::read(gp.path("linked")).map(|b| contains(&b, SECRET));
            assert_eq!(
                r.map_err(errno),
                Err(libc::EIO),
                "{mode}: header names hr-key"
            );
            // Once the kernel forgets the inode, the first name decides.
            drop_caches();
            let r = fs::read(gp.path("linked")).map(|b| contains(&b, SECRET));
            assert_eq!(r.map_err(errno), Err(libc::EIO), "{mode}: linked first");
            drop_caches();
            let r = fs::read(gp.path("hr/s")).map(|b| b == data);
            assert_eq!(r.map_err(errno), Ok(true), "{mode}: hr/s again");
        }
        let audit = audit_text(&cfg);
        let gpd = gp.dir.display();
        for (name, required, found) in [
            ("hr/planted", "hr-key", "default"),
            ("planted-hr", "default", "hr-key"),
            ("hr/clear", "hr-key", "none"),
        ] {
            let want = format!("Res[{gpd}/{name}] Key[{required}] Found[{found}]");
            assert!(audit.contains(&want), "{mode}: no `{want}` in\n{audit}");
        }
        let lower_after: Vec<Vec<u8>> = ["public/planted", "hr/planted", "planted-hr", "hr/clear"]
            .iter()
            .map(|n| fs::read(gp.lower(n)).unwrap())
            .collect();
        assert_eq!(lower_before, lower_after, "{mode}: never rewritten");
        assert_eq!(fs::read(gp.lower("public/magic")).unwrap(), magic);
    }
}

/// An append-only grant (`f_wr_app` without `f_wr`) lets a process add at
/// the end and nothing else: clearing O_APPEND and writing at 0, every
/// fallocate mode, truncation and an O_TRUNC open are refused (EACCES)
/// and audited; the file keeps every byte it had.
#[test]
fn append_only_grants_allow_only_appends() {
    let bins = Bins::new(&["appender"]);
    let policy = format!(
        r#"{{ "name": "append",
      "security_rules": [
        {{ "order_number": 1, "process_set_id": "appender", "action": "f_wr_app,read", "effect": "permit,applykey,audit" }},
        {{ "order_number": 2, "process_set_id": "appender", "action": "all_ops", "effect": "deny,audit" }},
        {{ "order_number": 3, "action": "all_ops", "effect": "permit,applykey" }} ],
      "process_sets": [ {{ "id": "appender", "processes": [ {{ "directory": "{d}", "file": "appender" }} ] }} ] }}"#,
        d = bins.dir()
    );
    for mode in ALL_MODES {
        for cache in [&[][..], &["--no-writeback-cache"][..]] {
            let (gp, cfg) = guarded_in(mode, &policy, cache);
            let log = gp.path("log");
            let log = log.to_str().unwrap();
            let start: Vec<u8> = (0..6000u32).map(|i| (i % 251) as u8).collect();
            fs::write(log, &start).unwrap();
            let o = run_as(None, &bins.path("appender"), &["append", log, "LINE\n"]);
            let text = String::from_utf8_lossy(&o.stdout);
            // What reaches secfs is refused with EACCES (truncation, whose
            // time update the kernel sends with it, with EPERM); the kernel
            // itself refuses fallocate modes FUSE does not carry. The
            // times of the appends (which the kernel sends itself with the
            // writeback cache) are part of the appends: END would fail
            // with EIO if they were refused.
            let result = |what: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(what)?.strip_prefix(' '))
                    .unwrap_or_else(|| panic!("{mode}: no {what} in\n{text}"))
                    .to_owned()
            };
            let err = |e: i32| format!("ERR {e}");
            assert_eq!(result("APPEND"), "OK", "{mode} {cache:?}:\n{text}");
            assert_eq!(result("END"), "OK", "{mode} {cache:?}:\n{text}");
            for what in ["PWRITE0", "PUNCH", "ZERO", "GROW"] {
                assert_eq!(result(what), err(libc::EACCES), "{mode} {cache:?}: {what}");
            }
            for what in ["TRUNC", "OTRUNC"] {
                let r = result(what);
                assert!(
                    r == err(libc::EACCES) || r == err(libc::EPERM),
                    "{mode}: {what} {r}"
                );
            }
            for what in ["COLLAPSE", "INSERT"] {
                assert!(result(what).starts_with("ERR"), "{mode} {cache:?}: {what}");
            }
            let mut want = start.clone();
            want.extend_from_slice(b"LINE\nLINE\n");
            assert_eq!(fs::read(log).unwrap(), want, "{mode} {cache:?}");
            let audit = audit_text(&cfg);
            assert!(
                audit.contains("Action[write_file]") && audit.contains("DENIED"),
                "{mode}: refusals audited:\n{audit}"
            );
        }
    }
}

/// In a GuardPoint whose policy gives some readers ciphertext (isolated
/// views), listings (READDIRPLUS) plant no wrong attributes: right after
/// a mount, `ls -l` shows true sizes and times, and `>>` appends after
/// the existing bytes instead of overwriting them.
#[test]
fn listings_plant_true_attributes_in_isolated_views() {
    let bins = Bins::new(&["backup"]);
    let policy = format!(
        r#"{{ "name": "isolated",
      "security_rules": [
        {{ "order_number": 1, "process_set_id": "backup", "action": "read", "effect": "permit" }},
        {{ "order_number": 2, "action": "all_ops", "effect": "permit,applykey" }} ],
      "process_sets": [ {{ "id": "backup", "processes": [ {{ "directory": "{d}", "file": "backup" }} ] }} ] }}"#,
        d = bins.dir()
    );
    for mode in ALL_MODES {
        let (mut gp, cfg) = guarded_in(mode, &policy, &[]);
        let body: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        for name in ["one", "two", "three"] {
            fs::write(gp.path(name), &body).unwrap();
        }
        remount(&mut gp, mode, &cfg, &[]);
        // The listing comes first: it is what instantiates the inodes.
        let ls = Command::new("ls").arg("-ln").arg(&gp.dir).output().unwrap();
        let text = String::from_utf8_lossy(&ls.stdout);
        for name in ["one", "two", "three"] {
            let line = text.lines().find(|l| l.ends_with(name)).unwrap();
            assert!(line.contains(" 10000 "), "{mode}: {line}\n{text}");
            let m = fs::metadata(gp.path(name)).unwrap();
            assert_eq!(m.len(), 10_000, "{mode}: {name}");
            assert!(
                m.modified().unwrap() > std::time::UNIX_EPOCH + std::time::Duration::from_secs(1)
            );
        }
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!("echo tail >> {}", gp.path("two").display()))
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        let mut want = body.clone();
        want.extend_from_slice(b"tail\n");
        assert_eq!(fs::read(gp.path("two")).unwrap(), want, "{mode}");
        // The backup's listing first, then the application's.
        remount(&mut gp, mode, &cfg, &[]);
        let o = run_as(
            None,
            &bins.path("backup"),
            &["stat", gp.path("three").to_str().unwrap()],
        );
        let raw_len = fs::metadata(gp.lower("three")).unwrap().len();
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            raw_len.to_string(),
            "{mode}"
        );
        let ls = Command::new("ls").arg("-ln").arg(&gp.dir).output().unwrap();
        let text = String::from_utf8_lossy(&ls.stdout);
        let line = text.lines().find(|l| l.ends_with("three")).unwrap();
        assert!(line.contains(" 10000 "), "{mode}: {line}");
    }
}

/// Concise logging: two reads of one file by one process give one line;
/// and chmod/utimes refused by the policy fail with EPERM, as POSIX has
/// them fail.
#[test]
fn concise_logging_and_eperm_for_attribute_changes() {
    let bins = Bins::new(&["reader"]);
    copy_bin(Path::new("/bin/chmod"), &bins.path("chmodder"));
    copy_bin(Path::new("/bin/touch"), &bins.path("toucher"));
    let policy = format!(
        r#"{{ "name": "concise",
      "security_rules": [
        {{ "order_number": 1, "process_set_id": "changers", "action": "f_chg_sec,f_wr_att", "effect": "deny,audit" }},
        {{ "order_number": 2, "process_set_id": "reader", "action": "f_rd", "effect": "permit,applykey,audit" }},
        {{ "order_number": 3, "action": "all_ops", "effect": "permit,applykey" }} ],
      "process_sets": [
        {{ "id": "reader", "processes": [ {{ "directory": "{d}", "file": "reader" }} ] }},
        {{ "id": "changers", "processes": [ {{ "directory": "{d}", "file": "chmodder" }}, {{ "directory": "{d}", "file": "toucher" }} ] }} ] }}"#,
        d = bins.dir()
    );
    let (gp, cfg) = guarded(&policy, &["--concise-logging"]);
    let data = write_secret(&gp, "f");
    let f = gp.path("f");
    let f = f.to_str().unwrap();
    for _ in 0..2 {
        assert_eq!(
            run_as(None, &bins.path("reader"), &["read", f]).stdout,
            data
        );
    }
    let text = audit_text(&cfg);
    let reads = text
        .lines()
        .filter(|l| l.contains("Action[read_file]") && l.contains("reader]"))
        .count();
    assert_eq!(reads, 1, "{text}");
    // EPERM, not EACCES, for chmod and explicit times.
    let o = run_as(None, &bins.path("chmodder"), &["600", f]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Operation not permitted"), "{err}");
    let o = run_as(None, &bins.path("toucher"), &["-d", "2001-01-01", f]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Operation not permitted"), "{err}");
}

/// A policy whose key rules name a key that was not supplied is refused
/// at mount, and on reload (the current policy stays).
#[test]
fn policies_naming_missing_keys_are_refused() {
    let missing = r#"{ "name": "nokey",
      "security_rules": [ { "order_number": 1, "action": "all_ops", "effect": "permit,applykey" } ],
      "key_rules": [ { "resource_set_id": "hr", "key_id": "hr-key" }, { "key_id": "default" } ],
      "resource_sets": [ { "id": "hr", "resources": [ { "directory": "/hr" } ] } ] }"#;
    let tmp = tempfile::tempdir_in("/var/tmp").unwrap();
    let key = tmp.path().join("k");
    assert!(run(&["genkey", key.to_str().unwrap()]).status.success());
    let dir = tmp.path().join("gp");
    fs::create_dir(&dir).unwrap();
    let pol = tmp.path().join("p.json");
    fs::write(&pol, missing).unwrap();
    let o = run(&[
        "mount",
        dir.to_str().unwrap(),
        "--key-file",
        key.to_str().unwrap(),
        "--policy",
        pol.to_str().unwrap(),
    ]);
    assert!(!o.status.success(), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("hr-key"),
        "{o:?}"
    );
    assert!(!is_mounted(&dir));
    // Reload: refused, v1 stays.
    let permit = r#"{ "name": "v1", "security_rules": [
        { "order_number": 1, "action": "all_ops", "effect": "permit,applykey" } ] }"#;
    let (gp, cfg) = guarded(permit, &[]);
    fs::write(cfg.path().join("policy.json"), missing).unwrap();
    sighup(&gp);
    wait_until("reload refused", || {
        gp.log_text().contains("keeping the current policy")
    });
    assert!(gp.log_text().contains("hr-key"), "{}", gp.log_text());
    fs::write(gp.path("still"), b"v1").unwrap();
    assert_eq!(fs::read(gp.path("still")).unwrap(), b"v1");
}

#[test]
fn policy_reload_under_load_applies_to_new_and_open_files() {
    let bins = Bins::new(&["app"]);
    let permit = r#"{ "name": "v1", "security_rules": [
        { "order_number": 1, "action": "all_ops", "effect": "permit,applykey" } ] }"#
        .to_owned();
    let deny_app = format!(
        r#"{{ "name": "v2", "security_rules": [
        {{ "order_number": 1, "process_set_id": "app", "action": "all_ops", "effect": "deny" }},
        {{ "order_number": 2, "action": "all_ops", "effect": "permit,applykey" }} ],
      "process_sets": [ {{ "id": "app", "processes": [ {{ "directory": "{}", "file": "app" }} ] }} ] }}"#,
        bins.dir()
    );
    let (gp, cfg) = guarded(&permit, &[]);
    let data = write_secret(&gp, "f");
    // Load: a writer keeps writing other files through the reload.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, dir) = (stop.clone(), gp.dir.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let d = bytes(i, 30_000);
                fs::write(dir.join(format!("load{}", i % 8)), &d).unwrap();
                assert_eq!(fs::read(dir.join(format!("load{}", i % 8))).unwrap(), d);
                i += 1;
            }
            i
        })
    };
    // The app opens the file under v1 and reads it; the policy changes to
    // v2 while it holds the fd; its next read must fail.
    let app = Command::new(bins.path("app"))
        .args(["reread", gp.path("f").to_str().unwrap(), "2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    fs::write(cfg.path().join("policy.json"), deny_app).unwrap();
    sighup(&gp);
    let out = app.wait_with_output().unwrap();
    assert!(
        out.stdout.starts_with(&data),
        "first read under v1 sees plaintext"
    );
    let tail = String::from_utf8_lossy(&out.stdout[data.len()..]).into_owned();
    assert!(
        tail.contains("AGAIN ERR 13"),
        "read after the reload must be refused: {tail}"
    );
    // New opens follow v2.
    assert!(is_denied(&run_as(
        None,
        &bins.path("app"),
        &["read", gp.path("f").to_str().unwrap()]
    )));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.join().unwrap();
    assert!(writes > 0);
    assert!(
        gp.log_text().contains("policy v2 loaded"),
        "{}",
        gp.log_text()
    );
    // A broken policy file is refused and the current one stays.
    fs::write(cfg.path().join("policy.json"), "{ not json").unwrap();
    sighup(&gp);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(gp.log_text().contains("keeping the current policy"));
    assert!(is_denied(&run_as(
        None,
        &bins.path("app"),
        &["read", gp.path("f").to_str().unwrap()]
    )));
}

#[test]
fn bad_policies_are_refused_at_mount() {
    let tmp = tempfile::tempdir_in("/var/tmp").unwrap();
    let key = tmp.path().join("k");
    assert!(run(&["genkey", key.to_str().unwrap()]).status.success());
    let dir = tmp.path().join("gp");
    fs::create_dir(&dir).unwrap();
    let pol = tmp.path().join("p.json");
    for bad in [
        "{",
        r#"{ "name": "x", "security_rules": [ { "order_number": 1, "action": "fly", "effect": "permit" } ] }"#,
        r#"{ "name": "x", "security_rules": [ { "order_number": 1, "user_set_id": "nope", "action": "read", "effect": "permit" } ] }"#,
    ] {
        fs::write(&pol, bad).unwrap();
        let o = run(&[
            "mount",
            dir.to_str().unwrap(),
            "--key-file",
            key.to_str().unwrap(),
            "--policy",
            pol.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(18), "{o:?}");
        assert!(!is_mounted(&dir));
    }
}

/// User-set rules match only authenticated processes: a process that
/// descends from an authenticator (`su`) that changed identity.
#[test]
fn user_sets_need_an_authenticator_by_default() {
    let cfg = tempfile::Builder::new()
        .prefix("guardfs-host")
        .tempdir_in("/var/tmp")
        .unwrap();
    let su = fs::canonicalize("/bin/su").unwrap();
    let host = cfg.path().join("host_settings");
    fs::write(
        &host,
        format!(
            "# who may authenticate users\n|authenticator|{}\n",
            su.display()
        ),
    )
    .unwrap();
    // Rule 1 matches nobody only when authenticated; rule 2 matches the
    // same uid whatever its authentication (the per-rule override), so it
    // catches nobody when no authenticator vouched for it.
    let policy = r#"{
      "name": "auth",
      "security_rules": [
        { "order_number": 1, "user_set_id": "nobody", "action": "all_ops", "effect": "permit,applykey" },
        { "order_number": 2, "user_set_id": "nobody", "authenticated_users_only": false, "action": "all_ops", "effect": "deny,audit" },
        { "order_number": 3, "action": "all_ops", "effect": "permit,applykey" } ],
      "user_sets": [ { "id": "nobody", "users": [ { "uid": 65534 } ] } ] }"#;
    let (gp, _c) = guarded(policy, &["--host-settings", host.to_str().unwrap()]);
    let data = write_secret(&gp, "f");
    let f = gp.path("f");
    // Through su: authenticated, in the user set, plaintext.
    let o = Command::new("su")
        .args(["-s", "/bin/sh", "nobody", "-c"])
        .arg(format!("cat {}", f.display()))
        .output()
        .unwrap();
    assert_eq!(o.stdout, data, "{o:?}");
    // The same uid without an authenticator: rule 2 denies it.
    let o = run_as(Some(65534), Path::new("/bin/cat"), &[f.to_str().unwrap()]);
    assert!(is_denied(&o), "{o:?}");
}

/// Key rules pick the key per resource: files under /hr are wrapped with
/// hr-key, the rest with the default key.
#[test]
fn key_rules_pick_keys_per_subtree() {
    let keys = tempfile::Builder::new()
        .prefix("guardfs-keys")
        .tempdir_in("/var/tmp")
        .unwrap();
    let hr = keys.path().join("hr.key");
    assert!(run(&["genkey", hr.to_str().unwrap()]).status.success());
    let policy = r#"{ "name": "keys",
      "security_rules": [ { "order_number": 1, "action": "all_ops", "effect": "permit,applykey" } ],
      "key_rules": [
        { "resource_set_id": "hr", "key_id": "hr-key" },
        { "key_id": "default" } ],
      "resource_sets": [ { "id": "hr", "resources": [ { "directory": "/hr", "include_subfolders": true } ] } ] }"#;
    let spec = format!("hr-key={}", hr.display());
    let (gp, _cfg) = guarded(policy, &["--key", &spec]);
    fs::create_dir(gp.path("hr")).unwrap();
    fs::write(gp.path("hr/salaries"), b"confidential").unwrap();
    fs::write(gp.path("public"), b"open").unwrap();
    let key_name = |name: &str| {
        let h = fs::read(gp.lower(name)).unwrap();
        let n = h[11] as usize;
        String::from_utf8(h[16..16 + n].to_vec()).unwrap()
    };
    assert_eq!(key_name("hr/salaries"), "hr-key");
    assert_eq!(key_name("public"), "default");
    assert_eq!(fs::read(gp.path("hr/salaries")).unwrap(), b"confidential");
}

/// What `probe keep` printed: the mapping before the trigger, then
/// through the same fd after it: pread, fstat and the mapping (`None`
/// when the process died before printing it, e.g. of SIGBUS).
struct Kept {
    status: std::process::ExitStatus,
    mapped: Vec<u8>,
    read: Vec<u8>,
    fstat: Vec<u8>,
    map: Option<Vec<u8>>,
}

fn kept(c: std::process::Child) -> Kept {
    let o = c.wait_with_output().unwrap();
    let find = |m: &[u8], from: usize| {
        o.stdout[from..]
            .windows(m.len())
            .position(|w| w == m)
            .map(|p| p + from)
    };
    let r = find(b"--READ--", 0).unwrap_or_else(|| panic!("no read: {o:?}"));
    let s = find(b"--FSTAT--", r).unwrap_or_else(|| panic!("no fstat: {o:?}"));
    let m = find(b"--MAP--", s).unwrap_or_else(|| panic!("no map marker: {o:?}"));
    let map = o.stdout[m + 7..].to_vec();
    Kept {
        status: o.status,
        mapped: o.stdout[..r].to_vec(),
        read: o.stdout[r + 8..s].to_vec(),
        fstat: o.stdout[s + 9..m].to_vec(),
        map: o.status.success().then_some(map),
    }
}

/// The reload scenario of the issue's "no plaintext leak" requirement:
/// B opened and mapped a file under a policy that gave it plaintext; a
/// reload denies B (or gives it ciphertext only) while A stays permitted;
/// A reads the file again, so the kernel caches plaintext again. B's old
/// fd and mapping must not get that plaintext: the file's old handles are
/// revoked (every opener's, A's included) and the file gets a fresh
/// inode. A file whose decisions did not change keeps working through
/// old fds.
#[test]
fn old_handles_get_no_plaintext_after_a_narrowing_reload() {
    use std::os::unix::process::ExitStatusExt;
    let bins = Bins::new(&["aapp", "bapp"]);
    let v1 = r#"{ "name": "v1", "security_rules": [
        { "order_number": 1, "action": "all_ops", "effect": "permit,applykey" } ] }"#;
    for variant in ["denied", "ciphertext"] {
        let b_rules = if variant == "denied" {
            r#"{ "order_number": 1, "process_set_id": "b", "resource_set_id": "locked", "action": "all_ops", "effect": "deny" },"#
        } else {
            r#"{ "order_number": 1, "process_set_id": "b", "resource_set_id": "locked", "action": "read", "effect": "permit" },
               { "order_number": 2, "process_set_id": "b", "resource_set_id": "locked", "action": "all_ops", "effect": "deny" },"#
        };
        let v2 = format!(
            r#"{{ "name": "v2", "security_rules": [ {b_rules}
            {{ "order_number": {last}, "action": "all_ops", "effect": "permit,applykey" }} ],
          "resource_sets": [ {{ "id": "locked", "resources": [ {{ "directory": "/locked", "include_subfolders": true }} ] }} ],
          "process_sets": [ {{ "id": "b", "processes": [ {{ "directory": "{}", "file": "bapp" }} ] }} ] }}"#,
            bins.dir(),
            last = if variant == "denied" { 2 } else { 3 },
        );
        let (gp, cfg) = guarded(v1, &[]);
        fs::create_dir(gp.path("locked")).unwrap();
        fs::create_dir(gp.path("open")).unwrap();
        let data = write_secret(&gp, "locked/f");
        let other = write_secret(&gp, "open/g");
        let lower = fs::read(gp.lower("locked/f")).unwrap();
        let (f, g) = (gp.path("locked/f"), gp.path("open/g"));
        let (f, g) = (f.to_str().unwrap(), g.to_str().unwrap());
        let trigger = cfg.path().join("go");
        let keep = |bin: &str, file: &str| {
            Command::new(bins.path(bin))
                .args(["keep", file, trigger.to_str().unwrap()])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let b_f = keep("bapp", f);
        let b_g = keep("bapp", g);
        let a_f = keep("aapp", f);
        std::thread::sleep(std::time::Duration::from_millis(800));
        fs::write(cfg.path().join("policy.json"), &v2).unwrap();
        sighup(&gp);
        wait_until("v2 loaded", || {
            let log = gp.log_text();
            assert!(!log.contains("keeping the current policy"), "{log}");
            log.contains("policy v2 loaded")
        });
        // A's new opens work and read plaintext: the cache is full again.
        for mode in ["read", "mmap"] {
            let o = run_as(None, &bins.path("aapp"), &[mode, f]);
            assert_eq!(o.stdout, data, "{variant}: A's new open ({mode}): {o:?}");
        }
        // B's new opens follow v2.
        for mode in ["read", "mmap"] {
            let o = run_as(None, &bins.path("bapp"), &[mode, f]);
            if variant == "denied" {
                assert!(is_denied(&o), "{variant}: B's new open ({mode}): {o:?}");
            } else {
                assert_eq!(o.stdout, lower, "{variant}: B's new open ({mode})");
            }
        }
        fs::write(&trigger, b"").unwrap();
        let b = kept(b_f);
        assert_eq!(b.mapped, data, "{variant}: B mapped plaintext under v1");
        assert!(
            b.read.starts_with(b"ERR ") && !contains(&b.read, SECRET),
            "{variant}: B's old fd read: {:?}",
            String::from_utf8_lossy(&b.read[..b.read.len().min(40)])
        );
        assert!(
            b.fstat.starts_with(b"ERR "),
            "{variant}: B's old fd fstat: {:?}",
            String::from_utf8_lossy(&b.fstat)
        );
        assert!(
            b.status.signal() == Some(libc::SIGBUS)
                || b.map.as_ref().is_some_and(|m| !contains(m, SECRET)),
            "{variant}: B's old mapping: {:?}",
            b.status
        );
        assert!(b.map.is_none_or(|m| !contains(&m, SECRET)));
        // A's old fd on the file is revoked too (it shares the inode).
        let a = kept(a_f);
        assert_eq!(a.mapped, data);
        assert!(
            a.read.starts_with(b"ERR "),
            "{variant}: A's old fd: {:?}",
            String::from_utf8_lossy(&a.read[..a.read.len().min(40)])
        );
        // Nobody's decision on g changed: B's old fd and mapping work.
        let bg = kept(b_g);
        assert!(bg.status.success(), "{variant}: {:?}", bg.status);
        assert_eq!(bg.mapped, other);
        assert_eq!(bg.read, other, "{variant}: B's old fd on g");
        assert_eq!(bg.fstat, b"OK");
        assert_eq!(
            bg.map.as_deref(),
            Some(&other[..]),
            "{variant}: mapping of g"
        );
        assert!(
            gp.log_text().contains("1 open file(s) retired"),
            "{}",
            gp.log_text()
        );
        // And the file is still fine for A.
        assert_eq!(fs::read(gp.path("locked/f")).unwrap(), data);
    }
}

/// A handle whose opener has exited (the fd was left to a child) is judged
/// after a reload as its opener was, not as an unknown process: reloading
/// an unchanged policy must not cut off a still-permitted application.
#[test]
fn reload_judges_a_handle_of_an_exited_opener_as_that_opener() {
    let bins = Bins::new(&["aapp"]);
    copy_bin(Path::new("/bin/dash"), &bins.path("shx"));
    let policy = format!(
        r#"{{ "name": "same", "authenticated_users_only": false,
      "security_rules": [
        {{ "order_number": 1, "process_set_id": "apps", "action": "all_ops", "effect": "permit,applykey" }},
        {{ "order_number": 2, "user_set_id": "root", "action": "all_ops", "effect": "permit,applykey" }},
        {{ "order_number": 3, "action": "all_ops", "effect": "deny" }} ],
      "user_sets": [ {{ "id": "root", "users": [ {{ "uid": 0 }} ] }} ],
      "process_sets": [ {{ "id": "apps", "processes": [
          {{ "directory": "{d}", "file": "aapp" }}, {{ "directory": "{d}", "file": "shx" }} ] }} ] }}"#,
        d = bins.dir()
    );
    let (gp, cfg) = guarded(&policy, &[]);
    let data = write_secret(&gp, "f");
    let f = gp.path("f");
    let f = f.to_str().unwrap();
    let trigger = cfg.path().join("go");
    let a_f = Command::new("setpriv")
        .args(["--reuid=4242", "--regid=4242", "--clear-groups"])
        .arg(bins.path("aapp"))
        .args(["keep", f, trigger.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // shx opens f on fd 3, leaves it to a background sleep, and exits.
    let o = Command::new("setpriv")
        .args(["--reuid=4242", "--regid=4242", "--clear-groups"])
        .arg(bins.path("shx"))
        .arg("-c")
        .arg(format!("exec 3< {f}; sleep 20 >/dev/null 2>&1 & exit 0"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    std::thread::sleep(std::time::Duration::from_millis(800));
    sighup(&gp);
    wait_until("reloaded", || {
        gp.log_text().contains("policy same loaded (generation 2)")
    });
    fs::write(&trigger, b"").unwrap();
    let a = kept(a_f);
    assert!(!gp.log_text().contains("retired"), "{}", gp.log_text());
    assert_eq!(a.mapped, data);
    assert_eq!(a.read, data, "A's fd after reloading an unchanged policy");
}

// ---------------------------------------------------------------------
// A process is who it really is (issue 14, D) and signs of injected code
// (issue 14, G): attacks on process identity.

/// A uid with no passwd entry, for unprivileged attackers.
const ATTACKER: u32 = 4747;

/// Run `script` with sh as the unprivileged [`ATTACKER`] inside a new user
/// and mount namespace (`unshare -Urm`), where it may bind-mount at will.
fn in_userns(script: &str) -> Output {
    Command::new("setpriv")
        .arg(format!("--reuid={ATTACKER}"))
        .arg(format!("--regid={ATTACKER}"))
        .args(["--clear-groups", "unshare", "-Urm", "sh", "-c", script])
        .output()
        .unwrap()
}

/// The attack: in a private namespace, bind-mount `evil` over the trusted
/// path `trusted` (checking that the mount took), then run what is now at
/// the trusted path, reading `file`.
fn impersonate(evil: &Path, trusted: &Path, file: &Path) -> Output {
    let o = in_userns(&format!(
        "mount --bind {e} {t} || exit 90; \
         [ \"$(stat -c %i {t})\" = \"$(stat -c %i {e})\" ] || exit 91; \
         exec {t} read {f}",
        e = evil.display(),
        t = trusted.display(),
        f = file.display()
    ));
    assert!(
        o.status.success(),
        "the attack could not be performed (user namespaces?): {o:?}"
    );
    o
}

/// Assert `o` read the file through a permit without the key: the exact
/// lower bytes, no plaintext.
fn assert_ciphertext(o: &Output, lower: &[u8], what: &str) {
    assert!(!contains(&o.stdout, SECRET), "{what}: plaintext leaked");
    assert!(o.status.success(), "{what}: {o:?}");
    assert!(o.stdout == lower, "{what}: not the lower bytes: {o:?}");
}

/// Process sets by directory and file (exact and `pattern*`) match the file
/// the process runs: an unprivileged user who bind-mounts their own binary
/// over the trusted path in a user + mount namespace runs it under the
/// trusted name, and gets ciphertext; the genuine binary, also when run
/// from another mount namespace, gets plaintext.
#[test]
fn a_bind_mount_in_a_user_namespace_does_not_impersonate_a_process_set() {
    let bins = Bins::new(&["good", "trusted-db", "evil"]);
    let policy = format!(
        r#"{{ "name": "ns", "authenticated_users_only": false,
      "security_rules": [
        {{ "order_number": 1, "process_set_id": "trusted", "action": "all_ops", "effect": "permit,applykey" }},
        {{ "order_number": 2, "user_set_id": "root", "authenticated_users_only": false, "action": "all_ops", "effect": "permit,applykey" }},
        {{ "order_number": 3, "action": "all_ops", "effect": "permit,audit" }} ],
      "user_sets": [ {{ "id": "root", "users": [ {{ "uid": 0 }} ] }} ],
      "process_sets": [ {{ "id": "trusted", "processes": [
          {{ "directory": "{d}", "file": "good" }},
          {{ "directory": "{d}", "file": "trusted*" }} ] }} ] }}"#,
        d = bins.dir()
    );
    let (gp, cfg) = guarded(&policy, &[]);
    let data = write_secret(&gp, "f");
    let lower = fs::read(gp.lower("f")).unwrap();
    let f = gp.path("f");
    for name in ["good", "trusted-db"] {
        let trusted = bins.path(name);
        let o = run_as(Some(ATTACKER), &trusted, &["read", f.to_str().unwrap()]);
        assert_eq!(o.stdout, data, "genuine {name}: {o:?}");
        // The genuine file run from another mount namespace is still it.
        let o = in_userns(&format!("exec {} read {}", trusted.display(), f.display()));
        assert_eq!(o.stdout, data, "genuine {name} in a user namespace: {o:?}");
        let o = impersonate(&bins.path("evil"), &trusted, &f);
        assert_ciphertext(&o, &lower, &format!("evil bind-mounted over {name}"));
    }
    // The audit record says who tried to pass for whom.
    let audit = audit_text(&cfg);
    for name in ["good", "trusted-db"] {
        let shown = format!("Process[{} (unverified)]", bins.path(name).display());
        assert!(
            audit
                .lines()
                .any(|l| l.contains(&shown) && l.contains("Code (1P,2U,3M)")),
            "{shown}:\n{audit}"
        );
    }
}

/// `|trust|` (and `|authenticator|`, which shares the check) vouches for a
/// file, not a name: the same bind-mount attack does not make the attacker
/// an authenticated user.
#[test]
fn a_bind_mount_in_a_user_namespace_does_not_impersonate_a_trusted_program() {
    let bins = Bins::new(&["good", "evil"]);
    let cfg = tempfile::Builder::new()
        .prefix("guardfs-host")
        .tempdir_in("/var/tmp")
        .unwrap();
    let host = cfg.path().join("host_settings");
    fs::write(&host, format!("|trust|{}\n", bins.path("good").display())).unwrap();
    let policy = format!(
        r#"{{ "name": "trust",
      "security_rules": [
        {{ "order_number": 1, "user_set_id": "u", "action": "all_ops", "effect": "permit,applykey" }},
        {{ "order_number": 2, "user_set_id": "root", "authenticated_users_only": false, "action": "all_ops", "effect": "permit,applykey" }},
        {{ "order_number": 3, "action": "all_ops", "effect": "permit" }} ],
      "user_sets": [ {{ "id": "root", "users": [ {{ "uid": 0 }} ] }},
        {{ "id": "u", "users": [ {{ "uid": {ATTACKER} }} ] }} ] }}"#
    );
    let (gp, _c) = guarded(&policy, &["--host-settings", host.to_str().unwrap()]);
    let data = write_secret(&gp, "f");
    let lower = fs::read(gp.lower("f")).unwrap();
    let f = gp.path("f");
    let good = bins.path("good");
    let o = run_as(Some(ATTACKER), &good, &["read", f.to_str().unwrap()]);
    assert_eq!(o.stdout, data, "the trusted program: {o:?}");
    let o = impersonate(&bins.path("evil"), &good, &f);
    assert_ciphertext(&o, &lower, "evil bind-mounted over the trusted program");
}

/// Unmounts a bind mount when dropped (even when an assertion fails).
struct BindMount(PathBuf);

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A process whose trusted binary was deleted, replaced by a rename, or
/// covered by a bind mount (in secfs's own mount namespace) after it
/// started no longer runs the file the process set names: it gets
/// ciphertext. What the trusted path holds now still matches.
#[test]
fn a_deleted_or_replaced_trusted_binary_never_matches() {
    let bins = Bins::new(&["replaced", "deleted", "covered", "spare"]);
    let policy = format!(
        r#"{{ "name": "rep", "authenticated_users_only": false,
      "security_rules": [
        {{ "order_number": 1, "process_set_id": "trusted", "action": "all_ops", "effect": "permit,applykey" }},
        {{ "order_number": 2, "user_set_id": "root", "authenticated_users_only": false, "action": "all_ops", "effect": "permit,applykey" }},
        {{ "order_number": 3, "action": "all_ops", "effect": "permit" }} ],
      "user_sets": [ {{ "id": "root", "users": [ {{ "uid": 0 }} ] }} ],
      "process_sets": [ {{ "id": "trusted", "processes": [
          {{ "directory": "{d}", "file": "replaced" }},
          {{ "directory": "{d}", "file": "deleted" }},
          {{ "directory": "{d}", "file": "covered" }} ] }} ] }}"#,
        d = bins.dir()
    );
    let (gp, cfg) = guarded(&policy, &[]);
    let data = write_secret(&gp, "f");
    let lower = fs::read(gp.lower("f")).unwrap();
    let f = gp.path("f");
    let trigger = cfg.path().join("go");
    let names = ["replaced", "deleted", "covered"];
    let kids: Vec<_> = names
        .iter()
        .map(|n| {
            Command::new("setpriv")
                .arg(format!("--reuid={ATTACKER}"))
                .arg(format!("--regid={ATTACKER}"))
                .arg("--clear-groups")
                .arg(bins.path(n))
                .arg("after")
                .arg(&f)
                .arg(&trigger)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (k, n) in kids.iter().zip(names) {
        let exe = bins.path(n);
        wait_until("the trusted binary runs", || {
            fs::read_link(format!("/proc/{}/exe", k.id())).is_ok_and(|p| p == exe)
        });
    }
    // Replaced by a rename (a package upgrade, or an attacker with write
    // access to the directory), deleted, covered by a bind mount.
    copy_bin(&bins.path("spare"), &bins.path("new"));
    fs::rename(bins.path("new"), bins.path("replaced")).unwrap();
    fs::remove_file(bins.path("deleted")).unwrap();
    nix::mount::mount(
        Some(&bins.path("spare")),
        &bins.path("covered"),
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    let _cover = BindMount(bins.path("covered"));
    fs::write(&trigger, b"").unwrap();
    for (k, n) in kids.into_iter().zip(names) {
        let o = k.wait_with_output().unwrap();
        assert_ciphertext(&o, &lower, &format!("a process whose binary was {n}"));
    }
    // The file now at a trusted path is what the process set names.
    let o = run_as(
        Some(ATTACKER),
        &bins.path("replaced"),
        &["read", f.to_str().unwrap()],
    );
    assert_eq!(o.stdout, data, "the new binary at the trusted path: {o:?}");
}

/// The tiny ptrace launcher (tests/data/tracer.c), built once per test.
fn tracer(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tracer.c");
    let bin = dir.join("tracer");
    let out = Command::new("cc")
        .args(["-O1", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("cc");
    assert!(out.status.success(), "{out:?}");
    bin
}

/// `|no_applykey|ld_env` and `|no_applykey|traced`: a process started with
/// `LD_PRELOAD`, `LD_LIBRARY_PATH` or `LD_AUDIT`, or run under a tracer
/// (ptrace, as strace and gdb do), gets no key where every process is
/// otherwise permitted plaintext: it reads ciphertext and cannot write.
/// Without the settings (after a reload), the same processes get plaintext.
#[test]
fn preloaded_or_traced_processes_get_no_key_when_the_host_settings_say_so() {
    let cfg = tempfile::Builder::new()
        .prefix("guardfs-host")
        .tempdir_in("/var/tmp")
        .unwrap();
    let host = cfg.path().join("host_settings");
    fs::write(&host, "").unwrap();
    let policy = r#"{ "name": "all", "authenticated_users_only": false,
      "security_rules": [ { "order_number": 1, "action": "all_ops", "effect": "permit,applykey" } ] }"#;
    let (gp, _c) = guarded(policy, &["--host-settings", host.to_str().unwrap()]);
    // Written by this process before the settings apply: cargo runs tests
    // with LD_LIBRARY_PATH set.
    let data = write_secret(&gp, "f");
    let lower = fs::read(gp.lower("f")).unwrap();
    let f = gp.path("f");
    let tracer = tracer(cfg.path());
    // Children get a clean environment plus what the case adds.
    let clean = |c: &mut Command| {
        c.env_clear().env("PATH", "/usr/bin:/bin");
    };
    let cat = |env: Option<(&str, &str)>, traced: bool| {
        let mut c = if traced {
            let mut c = Command::new(&tracer);
            c.arg("cat");
            c
        } else {
            Command::new("cat")
        };
        clean(&mut c);
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        c.arg(&f).output().unwrap()
    };
    fs::write(&host, "|no_applykey|ld_env\n|no_applykey|traced\n").unwrap();
    sighup(&gp);
    wait_until("the reload", || cat(None, true).stdout == lower);
    type Case<'a> = (Option<(&'a str, &'a str)>, bool, &'a str);
    let tainted: [Case<'_>; 4] = [
        (
            Some(("LD_PRELOAD", "/nonexistent/hook.so")),
            false,
            "LD_PRELOAD",
        ),
        (
            Some(("LD_LIBRARY_PATH", "/var/tmp")),
            false,
            "LD_LIBRARY_PATH",
        ),
        (
            Some(("LD_AUDIT", "/nonexistent/audit.so")),
            false,
            "LD_AUDIT",
        ),
        (None, true, "traced"),
    ];
    assert_eq!(cat(None, false).stdout, data, "an untainted cat");
    for (env, traced, what) in tainted {
        assert_ciphertext(&cat(env, traced), &lower, what);
    }
    // Writes need the key.
    let mut sh = Command::new("sh");
    clean(&mut sh);
    let o = sh
        .env("LD_PRELOAD", "/nonexistent/hook.so")
        .arg("-c")
        .arg(format!("echo more >> {}", f.display()))
        .output()
        .unwrap();
    assert!(!o.status.success(), "a preloaded shell wrote: {o:?}");
    assert_eq!(cat(None, false).stdout, data);
    // Without the settings, behaviour is unchanged.
    fs::write(&host, "").unwrap();
    sighup(&gp);
    wait_until("the reload", || cat(None, true).stdout == data);
    for (env, traced, what) in tainted {
        assert_eq!(cat(env, traced).stdout, data, "{what} without the setting");
    }
}

/// `|path_no_trust|` cannot be escaped by daemonising: a shell the host
/// settings do not trust runs `setsid -f cat` (fork, new session, the
/// parent exits, so cat is reparented to init and its live ancestry no
/// longer shows the shell) and cat still gets no plaintext. The shell
/// itself never touches the GuardPoint before, so secfs cannot have
/// judged it on an access of its own.
#[test]
fn setsid_does_not_escape_path_no_trust() {
    let bins = Bins::new(&["probe"]);
    copy_bin(Path::new("/bin/dash"), &bins.path("nosh"));
    copy_bin(Path::new("/bin/dash"), &bins.path("latesh"));
    let cfg = tempfile::Builder::new()
        .prefix("guardfs-host")
        .tempdir_in("/var/tmp")
        .unwrap();
    let host = cfg.path().join("host_settings");
    fs::write(
        &host,
        format!("|trust|*\n|path_no_trust|{}\n", bins.path("nosh").display()),
    )
    .unwrap();
    let policy = r#"{ "name": "nt",
      "security_rules": [
        { "order_number": 1, "user_set_id": "root", "action": "all_ops", "effect": "permit,applykey" },
        { "order_number": 2, "action": "all_ops", "effect": "permit" } ],
      "user_sets": [ { "id": "root", "users": [ { "uid": 0 } ] } ] }"#;
    let (gp, _c) = guarded(policy, &["--host-settings", host.to_str().unwrap()]);
    let data = write_secret(&gp, "f");
    let lower = fs::read(gp.lower("f")).unwrap();
    let f = gp.path("f");
    let o = run_as(None, Path::new("/bin/cat"), &[f.to_str().unwrap()]);
    assert_eq!(o.stdout, data, "a trusted cat");
    for (k, how) in [
        "setsid -f",
        "setsid -f sh -c 'sleep 0.3; exec \"$0\" \"$@\"'",
    ]
    .iter()
    .enumerate()
    {
        let out = cfg.path().join(format!("out{k}"));
        let done = cfg.path().join(format!("done{k}"));
        // The shell exits at once; cat runs after its parent (setsid's
        // fork, or the sh that waits) is gone.
        let o = Command::new(bins.path("nosh"))
            .arg("-c")
            .arg(format!(
                "{how} sh -c 'sleep 0.3; cat {f} > {out}; touch {done}'",
                f = f.display(),
                out = out.display(),
                done = done.display()
            ))
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        wait_until("the daemonised cat", || done.exists());
        let got = fs::read(&out).unwrap();
        assert!(!contains(&got, SECRET), "{how}: plaintext leaked");
        assert!(got == lower, "{how}: not the lower bytes");
    }
    // A shell already running when the host settings start listing its
    // program: found in /proc when the list changes, and its later
    // descendants are followed.
    let (go, out, done) = (
        cfg.path().join("go"),
        cfg.path().join("out-late"),
        cfg.path().join("done-late"),
    );
    let mut late = Command::new(bins.path("latesh"))
        .arg("-c")
        .arg(format!(
            "while [ ! -e {go} ]; do sleep 0.05; done; \
             setsid -f sh -c 'sleep 0.3; cat {f} > {out}; touch {done}'",
            go = go.display(),
            f = f.display(),
            out = out.display(),
            done = done.display()
        ))
        .spawn()
        .unwrap();
    fs::write(
        &host,
        format!(
            "|trust|*\n|path_no_trust|{}\n|path_no_trust|{}\n",
            bins.path("nosh").display(),
            bins.path("latesh").display()
        ),
    )
    .unwrap();
    sighup(&gp);
    wait_until("the reload", || {
        gp.log_text().matches("SIGHUP: policy nt loaded").count() >= 1
    });
    fs::write(&go, b"").unwrap();
    assert!(late.wait().unwrap().success());
    wait_until("the late shell's daemonised cat", || done.exists());
    let got = fs::read(&out).unwrap();
    assert!(
        !contains(&got, SECRET),
        "late-listed shell: plaintext leaked"
    );
    assert!(got == lower, "late-listed shell: not the lower bytes");
}

fn mode_of(p: &Path) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&fs::metadata(p).unwrap().permissions()) & 0o7777
}

/// A process that triggers an audited rule in a loop floods the audit log
/// no further than the rate limit, and one line counts what was
/// suppressed; another process's record still gets through. The audit
/// and daemon logs are never world-readable: created 0600, an existing
/// 0666 audit log tightened to 0640.
#[test]
fn audit_floods_are_rate_limited_and_logs_are_private() {
    let cfg = tempfile::Builder::new()
        .prefix("guardfs-audit")
        .tempdir_in("/var/tmp")
        .unwrap();
    let pfile = cfg.path().join("policy.json");
    fs::write(
        &pfile,
        r#"{ "name": "flood", "authenticated_users_only": false,
      "security_rules": [ { "order_number": 1, "action": "all_ops", "effect": "permit,applykey,audit" } ] }"#,
    )
    .unwrap();
    let audit = cfg.path().join("audit.log");
    fs::write(&audit, b"").unwrap();
    fs::set_permissions(&audit, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let gp = Gp::new_with(
        "xts",
        &[
            "--policy",
            pfile.to_str().unwrap(),
            "--audit-log",
            audit.to_str().unwrap(),
            "--audit-rate-limit",
            "20/600",
        ],
        |_| {},
    );
    assert_eq!(mode_of(&audit), 0o640, "existing audit log tightened");
    assert_eq!(mode_of(&gp.log), 0o600, "new daemon log");
    let data = write_secret(&gp, "f");
    let f = gp.path("f");
    // dash's `read` opens the file on every iteration: one process, one
    // rule, 300 audited opens (and as many attribute reads), all within
    // one window of the limit.
    let o = Command::new("/bin/dash")
        .arg("-c")
        .arg(format!(
            "i=0; while [ $i -lt 300 ]; do read x < {}; i=$((i+1)); done",
            f.display()
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let o = Command::new("/bin/cat").arg(&f).output().unwrap();
    assert_eq!(o.stdout, data);
    let dash = fs::canonicalize("/bin/dash").unwrap();
    let cat = fs::canonicalize("/bin/cat").unwrap();
    let mut text = String::new();
    wait_until("the flood's summary line", || {
        text = fs::read_to_string(&audit).unwrap_or_default();
        text.contains("records suppressed")
    });
    let flood = text
        .lines()
        .filter(|l| l.contains("CGP2601I") && l.contains(&format!("Process[{}]", dash.display())))
        .count();
    assert_eq!(flood, 20, "records of the flood:\n{text}");
    // Reported about a second after the flood ends, not at the window's
    // end.
    assert!(
        text.contains("records suppressed (rate limit 20 per 600s) for Policy rule 1 Process[pid="),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("CGP2601I") && l.contains(&format!("Process[{}]", cat.display()))),
        "cat's record:\n{text}"
    );
    let suppressed: u64 = text
        .lines()
        .filter_map(|l| {
            l.split("[AUDIT] ")
                .nth(1)?
                .split(" records suppressed")
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(
        flood as u64 + suppressed >= 300,
        "{flood} + {suppressed}:\n{text}"
    );
    assert_eq!(mode_of(&audit), 0o640);
}

/// Nobody but root reaches the daemon's memory, where keys live: as an
/// unprivileged user, and as root inside a user namespace (a container's
/// root), `/proc/PID/mem` and `/proc/PID/environ` cannot be opened and
/// ptrace attach fails; the daemon's memory is locked (VmLck) and it
/// reports having made itself not dumpable.
#[test]
fn the_daemon_is_locked_in_memory_and_out_of_reach() {
    let gp = Gp::new("xts");
    let pid = gp.pid.unwrap();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let locked: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(locked > 0, "VmLck {locked} kB:\n{status}");
    wait_until("the hardening report", || {
        gp.log_text()
            .contains("secfs: memory locked, process not dumpable")
    });
    let tools = tempfile::Builder::new()
        .prefix("guardfs-tracer")
        .tempdir_in("/var/tmp")
        .unwrap();
    fs::set_permissions(
        tools.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let tracer = tracer(tools.path());
    let probe = format!(
        "for f in mem environ; do head -c 16 /proc/{pid}/$f >/dev/null 2>&1 && echo READ $f; done; \
         {} -p {pid}",
        tracer.display()
    );
    let as_user = Command::new("setpriv")
        .arg(format!("--reuid={ATTACKER}"))
        .arg(format!("--regid={ATTACKER}"))
        .args(["--clear-groups", "sh", "-c", &probe])
        .output()
        .unwrap();
    let in_userns = Command::new("unshare")
        .args(["-Ur", "sh", "-c", &probe])
        .output()
        .unwrap();
    for (who, o) in [
        ("an unprivileged user", as_user),
        ("root in a user namespace", in_userns),
    ] {
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            !out.contains("READ"),
            "{who} read the daemon's memory: {o:?}"
        );
        assert!(
            !out.contains("ATTACHED") && out.contains("ERR "),
            "{who} attached to the daemon: {o:?}"
        );
    }
}
