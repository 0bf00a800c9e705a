//! Policies enforced on a real mount against real processes: user sets,
//! process sets by path and by signature, ciphertext for backup processes,
//! deny, learn mode, audit lines, reload under load, and the leak test
//! (no plaintext through the shared page cache). Run as root (CI does).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::policy::*;
use common::*;

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
