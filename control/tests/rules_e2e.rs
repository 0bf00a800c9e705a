//! `voradmin rule` end to end (CTE UserSpace's rules): a real agent (vmd,
//! secfs, local key store), a directory of clear files, a rule with
//! included extensions and an ignored directory name, then encrypt, rotate
//! to another key, deep rotation, a file that cannot be rotated (completed
//! with errors, then finished), decrypt, remove. Every file is checked on
//! disk (which key, or clear) and through the mount after each step.
//! Needs root and /dev/fuse (CI has both).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use common::{Agent, text};

/// The key name in a lower file's header, or `None` (stored clear).
fn lower_key(a: &Agent, gp: &Path, rel: &str) -> Option<String> {
    let b = a.lower(gp, rel);
    (b.len() >= 4096 && &b[..8] == b"GuardFS\0").then(|| {
        let n = usize::from(b[11]);
        String::from_utf8_lossy(&b[16..16 + n]).into_owned()
    })
}

fn rule_json(a: &Agent, name: &str) -> serde_json::Value {
    serde_json::from_str(&a.ok("voradmin", &["--json", "rule", "show", name])).unwrap()
}

fn check(dir: &Path, want: &BTreeMap<PathBuf, Vec<u8>>, when: &str) {
    for (rel, data) in want {
        assert_eq!(
            &fs::read(dir.join(rel)).unwrap_or_default(),
            data,
            "{when}: {}",
            rel.display()
        );
    }
}

#[test]
fn a_rule_encrypts_rotates_and_decrypts_what_it_names_and_skips_what_it_ignores() {
    let a = Agent::new();
    a.start();
    a.ok("voradmin", &["key", "create", "k_r1", "--mode", "xts"]);
    a.ok("voradmin", &["key", "create", "k_r2", "--mode", "gcm"]);
    let dir = a.dir("data");
    let mut want = BTreeMap::new();
    for (i, rel) in [
        "a.txt",
        "b.dbf",
        "c.jpg",
        "sub/d.txt",
        "tmp/e.txt",
        "sub/tmp/f.txt",
        "sub/tmpx/g.txt",
        "x/h.dbf",
    ]
    .iter()
    .enumerate()
    {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let data: Vec<u8> = (0..5000 + i * 777).map(|j| (j * 31 + i) as u8).collect();
        fs::write(&p, &data).unwrap();
        want.insert(PathBuf::from(rel), data);
    }
    let encrypted = ["a.txt", "b.dbf", "sub/d.txt", "sub/tmpx/g.txt", "x/h.dbf"];
    let clear = ["c.jpg", "tmp/e.txt", "sub/tmp/f.txt"];

    // Refused paths: the root, system directories, the agent's own.
    for bad in ["/", "/bin", "/proc", "/usr/lib"] {
        let o = a.cmd("voradmin", &["rule", "create", "--path", bad]);
        assert_eq!(o.status.code(), Some(1), "{bad}: {}", text(&o));
    }
    let o = a.cmd(
        "voradmin",
        &["rule", "create", "--path", a.root.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1), "the agent's root: {}", text(&o));

    let out = a.ok(
        "voradmin",
        &[
            "--json",
            "rule",
            "create",
            "--path",
            dir.to_str().unwrap(),
            "--include-extensions",
            "txt;dbf",
            "--ignore-directory",
            "tmp",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let name = v["name"].as_str().unwrap().to_owned();
    assert!(name.starts_with("Rule-") && name.len() == 32, "{name}");
    let o = a.cmd(
        "voradmin",
        &[
            "rule",
            "create",
            "--path",
            dir.to_str().unwrap(),
            "--name",
            "again",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "two rules on one path");
    assert!(a.ok("voradmin", &["rule", "list"]).contains("Not applied"));

    // Encrypt.
    let o = a.cmd("voradmin", &["rule", "apply", &name]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "encrypt without a key: {}",
        text(&o)
    );
    a.ok("voradmin", &["rule", "apply", &name, "--key", "k_r1"]);
    let r = rule_json(&a, &name);
    assert_eq!(r["applied"]["status"], "Encrypted", "{r}");
    assert_eq!(r["applied"]["percent"], 100, "{r}");
    check(&dir, &want, "after encrypt");
    for rel in encrypted {
        assert_eq!(lower_key(&a, &dir, rel).as_deref(), Some("k_r1"), "{rel}");
    }
    for rel in clear {
        assert_eq!(lower_key(&a, &dir, rel), None, "{rel} should stay clear");
    }
    // New files follow the rule; renames into or out of an ignored
    // directory name are refused (EXDEV), others work.
    fs::write(dir.join("new.txt"), b"fresh").unwrap();
    want.insert(PathBuf::from("new.txt"), b"fresh".to_vec());
    assert_eq!(lower_key(&a, &dir, "new.txt").as_deref(), Some("k_r1"));
    let e = fs::rename(dir.join("x"), dir.join("sub/tmp/x")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc_exdev()), "into tmp: {e}");
    let e = fs::rename(dir.join("tmp"), dir.join("tmp2")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc_exdev()), "renaming tmp: {e}");
    fs::rename(dir.join("sub/d.txt"), dir.join("x/d.txt")).unwrap();
    fs::rename(dir.join("x/d.txt"), dir.join("sub/d.txt")).unwrap();
    // An applied rule cannot be removed.
    let o = a.cmd("voradmin", &["rule", "remove", &name]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));

    // A clear file where the rule says encrypted (written while the
    // directory was not guarded) cannot be rotated: tried three times,
    // then `Completed with errors` naming it; every other file is done and
    // every file stays readable. Once it is gone, applying again finishes.
    a.ok("voradmin", &["unguard", dir.to_str().unwrap()]);
    fs::write(dir.join("stray.txt"), b"written behind the agent's back").unwrap();
    a.ok(
        "voradmin",
        &[
            "guard",
            dir.to_str().unwrap(),
            "--policy",
            &format!("rule_{name}"),
        ],
    );
    let o = a.cmd(
        "voradmin",
        &[
            "rule",
            "apply",
            &name,
            "--operation",
            "rotate",
            "--key",
            "k_r2",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let r = rule_json(&a, &name);
    assert_eq!(r["applied"]["status"], "Completed with errors", "{r}");
    assert_eq!(r["applied"]["attempts"], 3, "{r}");
    let errors = r["applied"]["errors"].to_string();
    assert!(
        errors.contains("stray.txt") && errors.contains("no header"),
        "{errors}"
    );
    assert!(
        a.ok("voradmin", &["rule", "show", &name])
            .contains("failed"),
        "rule show lists the failed file"
    );
    check(&dir, &want, "after a rotation with errors");
    // Until it finishes, no other operation starts from a guess of which
    // key the files are in.
    let o = a.cmd(
        "voradmin",
        &["rule", "apply", &name, "--operation", "decrypt"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("did not finish"), "{}", text(&o));
    fs::remove_file(dir.join("stray.txt")).unwrap();

    // Rotate to another key (and mode).
    a.ok(
        "voradmin",
        &[
            "rule",
            "apply",
            &name,
            "--operation",
            "rotate",
            "--key",
            "k_r2",
        ],
    );
    assert_eq!(rule_json(&a, &name)["applied"]["key"], "k_r2");
    check(&dir, &want, "after rotating to k_r2");
    for rel in encrypted.iter().chain(&["new.txt"]) {
        assert_eq!(lower_key(&a, &dir, rel).as_deref(), Some("k_r2"), "{rel}");
    }
    // Deep rotation to a new version of the key.
    a.ok("voradmin", &["key", "rotate", "k_r2"]);
    a.ok(
        "voradmin",
        &["rule", "apply", &name, "--operation", "rotate"],
    );
    for rel in encrypted {
        assert_eq!(a.key_version(&dir.join(rel)), 2, "{rel}");
    }
    check(&dir, &want, "after deep rotation");

    // Decrypt: every file clear on disk, the GuardPoint gone.
    a.ok(
        "voradmin",
        &["rule", "apply", &name, "--operation", "decrypt"],
    );
    let r = rule_json(&a, &name);
    assert_eq!(r["applied"]["status"], "Decrypted", "{r}");
    assert!(!a.guarded(&dir));
    check(&dir, &want, "unguarded after decrypt");
    a.ok("voradmin", &["rule", "remove", &name]);
    assert!(a.ok("voradmin", &["rule", "list"]).contains("No rules"));
}

fn libc_exdev() -> i32 {
    18
}
