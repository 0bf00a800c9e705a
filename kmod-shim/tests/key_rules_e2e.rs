//! The key rule, not the file, decides how a file is read (issue 14 A),
//! append-only grants (E) and listings in isolated views (C), on real
//! mounts against real processes. Run as root (CI does).

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::policy::*;
use common::*;

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
            // Listing the directory still works (the refused name is left
            // out of READDIRPLUS replies, not the whole listing).
            let ls = Command::new("ls").arg("-l").arg(&gp.dir).output().unwrap();
            assert!(ls.status.success(), "{mode}: {ls:?}");
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
