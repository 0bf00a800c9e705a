//! `dataxform` end to end: real secfs mounts (standalone, keys from key
//! files), real files of every awkward kind, the transformation through
//! the mount, and every file checked (contents, mode, owner, times, link
//! count, xattrs) after each step, after a remount under the final policy,
//! and after secfs is killed at random instants of a transformation.
//! Needs root and /dev/fuse (CI has both).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{VORADMIN, secfs_bin, text, wait_until};

/// A seeded generator (xorshift64*), so every run of a seed is the same.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn dataxform_bin(base: &Path) -> PathBuf {
    let p = base.join("dataxform");
    if !p.exists() {
        std::os::unix::fs::symlink(VORADMIN, &p).unwrap();
    }
    p
}

/// A standalone GuardPoint: a directory, key files, a policy file.
struct Gp {
    base: tempfile::TempDir,
    dir: PathBuf,
    pid: Option<u32>,
}

impl Gp {
    fn new() -> Gp {
        assert!(
            nix::unistd::geteuid().is_root(),
            "needs root (CI runs as root)"
        );
        let base = tempfile::Builder::new()
            .prefix("guardfs-xform")
            .tempdir_in("/var/tmp")
            .unwrap();
        let dir = base.path().join("gp");
        fs::create_dir(&dir).unwrap();
        for k in ["k", "k2", "kv2", "kv3"] {
            let o = Command::new(secfs_bin())
                .args(["genkey", base.path().join(k).to_str().unwrap()])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", text(&o));
        }
        Gp {
            base,
            dir,
            pid: None,
        }
    }

    fn key(&self, name: &str) -> String {
        self.base.path().join(name).display().to_string()
    }

    /// Mount with `policy` (JSON) and `--key` specs (`NAME[@V][:MODE]=` +
    /// a key file name in the base directory).
    fn mount(&mut self, policy: &str, keys: &[(&str, &str)]) {
        self.mount_env(policy, keys, &[]);
    }

    fn mount_env(&mut self, policy: &str, keys: &[(&str, &str)], env: &[(&str, &str)]) {
        self.mount_via(policy, keys, env, &[]);
    }

    /// Mount through a wrapper command (`prlimit ... --`), if any.
    fn mount_via(
        &mut self,
        policy: &str,
        keys: &[(&str, &str)],
        env: &[(&str, &str)],
        wrapper: &[&str],
    ) {
        let p = self.base.path().join("policy.json");
        fs::write(&p, policy).unwrap();
        let mut args: Vec<String> = vec![
            "mount".into(),
            self.dir.display().to_string(),
            "--mode".into(),
            "xts".into(),
            "--policy".into(),
            p.display().to_string(),
            "--log-file".into(),
            self.base.path().join("secfs.log").display().to_string(),
        ];
        for (spec, file) in keys {
            args.push("--key".into());
            args.push(format!("{spec}={}", self.key(file)));
        }
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(secfs_bin());
                c
            }
            None => Command::new(secfs_bin()),
        };
        let o = cmd.args(&args).envs(env.iter().copied()).output().unwrap();
        assert!(o.status.success(), "mount: {}\n{}", text(&o), self.log());
        let out = String::from_utf8_lossy(&o.stdout);
        let pid = out
            .split("daemon pid ")
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|s| s.parse().ok())
            .expect("daemon pid");
        self.pid = Some(pid);
    }

    fn log(&self) -> String {
        fs::read_to_string(self.base.path().join("secfs.log")).unwrap_or_default()
    }

    fn unmount(&mut self) {
        let o = Command::new(secfs_bin())
            .args(["umount", self.dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "umount: {}", text(&o));
        if let Some(pid) = self.pid.take() {
            wait_until("secfs exit", 20, || !alive(pid));
        }
    }

    /// kill -9 secfs (if it still lives), then detach the dead mount.
    fn kill9(&mut self) {
        let pid = self.pid.take().expect("mounted");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        wait_until("secfs death", 20, || !alive(pid));
        let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
    }

    /// The lower directory, through secfs's own fd on it.
    fn lower(&self) -> PathBuf {
        let pid = self.pid.expect("mounted");
        for e in fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
            if fs::read_link(e.path()).is_ok_and(|t| t == self.dir) {
                return e.path();
            }
        }
        panic!("no lower fd in secfs {pid}");
    }

    fn dataxform(&self, args: &[&str]) -> Output {
        let mut a = args.to_vec();
        a.extend(["--gp", self.dir.to_str().unwrap()]);
        Command::new(dataxform_bin(self.base.path()))
            .args(&a)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for Gp {
    fn drop(&mut self) {
        if self.pid.is_some() {
            let _ = Command::new(secfs_bin())
                .args(["umount", self.dir.to_str().unwrap(), "--lazy"])
                .output();
        }
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

fn drop_caches() {
    let _ = fs::write("/proc/sys/vm/drop_caches", "3");
}

fn policy(current: &str, transform: Option<&str>) -> String {
    let t = transform
        .map(|k| format!(r#", "data_transform_rules": [ {{ "key_id": "{k}" }} ]"#))
        .unwrap_or_default();
    format!(
        r#"{{ "name": "xf", "security_rules": [
      {{ "order_number": 1, "action": "key_op", "effect": "permit,applykey" }},
      {{ "order_number": 2, "action": "all_ops", "effect": "permit,applykey" }} ],
  "key_rules": [ {{ "key_id": "{current}" }} ]{t} }}"#
    )
}

/// What a file must look like afterwards.
#[derive(Debug, Clone, PartialEq)]
struct Want {
    data: Vec<u8>,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    nlink: u64,
    xattr: Option<Vec<u8>>,
}

/// Fill `dir` (a GuardPoint, through the mount, or a plain directory)
/// with files of every awkward kind; returns what each must stay.
fn populate(dir: &Path, rng: &mut Rng, many: usize) -> BTreeMap<PathBuf, Want> {
    let mut names: Vec<(String, Vec<u8>)> = Vec::new();
    for n in [
        0usize,
        1,
        15,
        16,
        4067,
        4068,
        4069,
        4095,
        4096,
        4097,
        65536,
        1 << 20,
    ] {
        names.push((format!("size-{n}"), rng.bytes(n)));
    }
    names.push((
        "odd name with spaces, ünïcode\nand a newline".into(),
        rng.bytes(777),
    ));
    names.push(("-dash".into(), b"dash\n".to_vec()));
    names.push(("sub/deeper/leaf".into(), rng.bytes(9000)));
    for i in 0..many {
        let n = match rng.below(4) {
            0 => rng.below(16) as usize,
            1 => rng.below(5000) as usize,
            2 => 4096 * rng.below(8) as usize + rng.below(3) as usize,
            _ => rng.below(200_000) as usize,
        };
        names.push((format!("many/f{i:04}"), rng.bytes(n)));
    }
    for (name, data) in &names {
        let p = dir.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
    }
    // Sparse: a hole, then data.
    let sparse = dir.join("sparse");
    {
        let f = fs::File::create(&sparse).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"tail after a hole", 3 << 20).unwrap();
    }
    // Owner, mode, xattr, a hard link across directories, a symlink.
    let owned = dir.join("size-4097");
    nix::unistd::chown(&owned, Some(1234.into()), Some(5678.into())).unwrap();
    fs::set_permissions(&owned, fs::Permissions::from_mode(0o640)).unwrap();
    xattr_set(&dir.join("size-1"), b"user.note", b"kept");
    fs::hard_link(dir.join("size-4096"), dir.join("sub/link-to-4096")).unwrap();
    std::os::unix::fs::symlink("size-1", dir.join("symlink")).unwrap();
    // Old times everywhere, to see them kept.
    let t = nix::sys::time::TimeSpec::new(1_000_000_000, 0);
    let mut want = BTreeMap::new();
    for e in walk(dir) {
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &e,
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }
    for e in walk(dir) {
        let m = fs::symlink_metadata(&e).unwrap();
        if m.is_file() {
            want.insert(e.strip_prefix(dir).unwrap().to_path_buf(), describe(&e));
        }
    }
    want
}

fn xattr_set(p: &Path, name: &[u8], value: &[u8]) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid C strings and buffer for the duration of the call.
    let r = unsafe {
        nix::libc::setxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr {}", p.display());
}

fn xattr_get(p: &Path, name: &[u8]) -> Option<Vec<u8>> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings and a buffer of the length passed.
    let r =
        unsafe { nix::libc::getxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| {
        buf.truncate(r as usize);
        buf
    })
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

fn describe(p: &Path) -> Want {
    let m = fs::metadata(p).unwrap();
    Want {
        data: fs::read(p).unwrap(),
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        mtime: (m.mtime(), m.mtime_nsec()),
        nlink: m.nlink(),
        xattr: xattr_get(p, b"user.note"),
    }
}

/// Every file as wanted (times only when `times`).
fn check(dir: &Path, want: &BTreeMap<PathBuf, Want>, times: bool, when: &str) {
    drop_caches();
    for (rel, w) in want {
        let mut got = describe(&dir.join(rel));
        if !times {
            got.mtime = w.mtime;
        }
        if got != *w {
            let mut short = got.clone();
            short.data.truncate(32);
            let mut ws = w.clone();
            ws.data.truncate(32);
            panic!(
                "{when}: {} differs (len {} vs {}):\n got {short:?}\nwant {ws:?}",
                rel.display(),
                got.data.len(),
                w.data.len()
            );
        }
    }
    assert_eq!(
        fs::read_link(dir.join("symlink")).unwrap(),
        Path::new("size-1"),
        "{when}: symlink"
    );
}

/// The 3 MiB hole of `populate`'s sparse file is still a hole.
fn assert_sparse(lower: &Path, when: &str) {
    let m = fs::metadata(lower).unwrap();
    assert!(
        m.len() > 3 << 20 && m.blocks() * 512 < 1 << 20,
        "{when}: the sparse file was filled in ({} bytes, {} blocks)",
        m.len(),
        m.blocks()
    );
}

/// The header's key name and version of a lower file, or `None` (clear).
fn header_of(lower: &Path) -> Option<(String, u32, u8)> {
    let b = fs::read(lower).ok()?;
    if b.len() < 4096 || &b[..8] != b"GuardFS\0" {
        return None;
    }
    let n = usize::from(b[11]);
    let name = String::from_utf8_lossy(&b[16..16 + n]).into_owned();
    let version = u32::from_le_bytes(b[12..16].try_into().unwrap());
    Some((name, version, b[10]))
}

fn ok(o: &Output, what: &str) -> String {
    assert!(o.status.success(), "{what}: {}", text(o));
    text(o)
}

#[test]
fn encrypt_convert_and_decrypt_keep_every_file_as_it_was() {
    let mut gp = Gp::new();
    let mut rng = Rng(0x5eed_0001);
    // Existing clear data, written before the directory is guarded.
    let want = populate(&gp.dir, &mut rng, 40);

    // 1. Encrypt: clear_key -> k (xts).
    gp.mount(&policy("clear_key", Some("k")), &[("k:xts", "k")]);
    check(&gp.dir, &want, true, "guarded, before the transformation");
    let scan = ok(&gp.dataxform(&["--rekey", "--scan"]), "scan");
    assert!(scan.contains("would be transformed"), "{scan}");
    assert!(
        header_of(&gp.lower().join("size-4096")).is_none(),
        "scan changed a file"
    );
    let out = ok(
        &gp.dataxform(&["--rekey", "-y", "--print_stat", "--preserve_modified_time"]),
        "encrypt",
    );
    assert!(out.contains("Files transformed"), "{out}");
    check(&gp.dir, &want, true, "after encrypting");
    assert_sparse(&gp.lower().join("sparse"), "after encrypting");
    for rel in want.keys() {
        let h = header_of(&gp.lower().join(rel));
        assert_eq!(
            h.as_ref().map(|h| (h.0.as_str(), h.2)),
            Some(("k", 1)),
            "{} not in k/xts",
            rel.display()
        );
    }
    // A second run finds nothing to do.
    let again = ok(&gp.dataxform(&["--rekey", "-y", "--json"]), "rerun");
    assert!(again.contains(r#""files_transformed":0"#), "{again}");
    gp.unmount();
    gp.mount(&policy("k", None), &[("k:xts", "k")]);
    check(&gp.dir, &want, true, "remounted under k alone");
    gp.unmount();

    // 2. Convert: k (xts) -> k2 (gcm).
    gp.mount(
        &policy("k", Some("k2")),
        &[("k:xts", "k"), ("k2:gcm", "k2")],
    );
    ok(
        &gp.dataxform(&["--rekey", "-y", "--preserve_modified_time"]),
        "convert",
    );
    check(&gp.dir, &want, true, "after converting to gcm");
    assert_sparse(&gp.lower().join("sparse"), "after converting to gcm");
    let l = gp.lower().join("size-4096");
    assert_eq!(header_of(&l).map(|h| h.2), Some(3), "not gcm");
    assert_eq!(fs::metadata(&l).unwrap().len(), 8248, "gcm lower size");
    gp.unmount();
    gp.mount(&policy("k2", None), &[("k2:gcm", "k2")]);
    check(&gp.dir, &want, true, "remounted under k2 alone");
    gp.unmount();

    // 3. Decrypt: k2 -> clear_key, and clean up.
    gp.mount(&policy("k2", Some("clear_key")), &[("k2:gcm", "k2")]);
    ok(
        &gp.dataxform(&["--rekey", "-y", "--preserve_modified_time", "--cleanup"]),
        "decrypt",
    );
    check(&gp.dir, &want, true, "after decrypting");
    assert_sparse(&gp.lower().join("sparse"), "after decrypting");
    assert!(
        !gp.lower().join(".guardfs-xform").exists(),
        "--cleanup left the side directory"
    );
    gp.unmount();
    // The plain directory holds the plaintext itself.
    check(&gp.dir, &want, true, "unguarded, after decrypting");
}

#[test]
fn shallow_and_deep_rekey_move_files_to_the_newest_version() {
    let mut gp = Gp::new();
    let mut rng = Rng(0x5eed_0002);
    gp.mount(&policy("k", None), &[("k@1", "k")]);
    let want = populate(&gp.dir, &mut rng, 10);
    let lower_before = fs::read(gp.lower().join("size-65536")).unwrap();
    gp.unmount();

    // Shallow: v1 -> v2, only the header changes.
    gp.mount(&policy("k", None), &[("k@1", "k"), ("k@2", "kv2")]);
    ok(&gp.dataxform(&["--shallow", "-y"]), "shallow");
    let lower_after = fs::read(gp.lower().join("size-65536")).unwrap();
    assert_eq!(header_of(&gp.lower().join("size-65536")).unwrap().1, 2);
    assert_eq!(
        lower_before[4096..],
        lower_after[4096..],
        "shallow touched contents"
    );
    assert_ne!(lower_before[..4096], lower_after[..4096]);
    gp.unmount();
    gp.mount(&policy("k", None), &[("k@2", "kv2")]);
    check(&gp.dir, &want, false, "after shallow rekey, v2 alone");
    gp.unmount();

    // Deep: v2 -> v3, new data key: every unit changes.
    gp.mount(&policy("k", None), &[("k@2", "kv2"), ("k@3", "kv3")]);
    ok(&gp.dataxform(&["--deep", "-y"]), "deep");
    let deep = fs::read(gp.lower().join("size-65536")).unwrap();
    assert_eq!(header_of(&gp.lower().join("size-65536")).unwrap().1, 3);
    assert_ne!(
        deep[4096..8192],
        lower_after[4096..8192],
        "deep kept the data key"
    );
    let rerun = ok(&gp.dataxform(&["--deep", "-y", "--json"]), "deep rerun");
    assert!(rerun.contains(r#""files_transformed":0"#), "{rerun}");
    gp.unmount();
    gp.mount(&policy("k", None), &[("k@3", "kv3")]);
    check(&gp.dir, &want, false, "after deep rekey, v3 alone");
}

#[test]
fn transformation_needs_root_and_key_op_and_hides_its_files() {
    let mut gp = Gp::new();
    let mut rng = Rng(0x5eed_0003);
    let want = populate(&gp.dir, &mut rng, 3);
    // No key_op rule: everything refused, nothing changed.
    let no_key_op = r#"{ "name": "xf", "security_rules": [
        { "order_number": 1, "action": "all_ops", "effect": "permit,applykey" } ],
        "key_rules": [ { "key_id": "clear_key" } ],
        "data_transform_rules": [ { "key_id": "k" } ] }"#;
    gp.mount(no_key_op, &[("k", "k")]);
    let o = gp.dataxform(&["--rekey", "-y"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("denies key_op"), "{}", text(&o));
    assert!(header_of(&gp.lower().join("size-4096")).is_none());
    // Not root: the ioctl is refused.
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(dataxform_bin(gp.base.path()))
        .args(["--rekey", "-y", "--gp", gp.dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    // Without a terminal, -y is required.
    let o = gp.dataxform(&["--rekey"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // One transformation per GuardPoint at a time.
    {
        let dir = fs::File::open(&gp.dir).unwrap();
        let held = nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| e)
            .unwrap();
        let o = gp.dataxform(&["--rekey", "-y"]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains("another dataxform"), "{}", text(&o));
        drop(held);
    }
    gp.unmount();

    // The side directory is secfs's: invisible and untouchable.
    gp.mount(&policy("clear_key", Some("k")), &[("k", "k")]);
    fs::create_dir(gp.lower().join(".guardfs-xform")).unwrap();
    fs::write(gp.lower().join(".guardfs-xform/x"), b"side").unwrap();
    let names: Vec<_> = fs::read_dir(&gp.dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(!names.iter().any(|n| n == ".guardfs-xform"), "{names:?}");
    let side = gp.dir.join(".guardfs-xform");
    assert_eq!(
        fs::metadata(&side).unwrap_err().raw_os_error(),
        Some(nix::libc::ENOENT)
    );
    assert_eq!(
        fs::create_dir(&side).unwrap_err().raw_os_error(),
        Some(nix::libc::EPERM)
    );
    assert_eq!(
        fs::write(&side, b"x").unwrap_err().raw_os_error(),
        Some(nix::libc::EPERM)
    );
    assert_eq!(
        fs::rename(gp.dir.join("size-1"), &side)
            .unwrap_err()
            .raw_os_error(),
        Some(nix::libc::EPERM)
    );
    ok(&gp.dataxform(&["--rekey", "-y"]), "encrypt");
    check(&gp.dir, &want, false, "after encrypting");
}

#[test]
fn a_file_open_and_written_during_the_transformation_loses_no_write() {
    let mut gp = Gp::new();
    let mut rng = Rng(0x5eed_0004);
    let _ = populate(&gp.dir, &mut rng, 20);
    gp.mount(&policy("clear_key", Some("k")), &[("k", "k")]);
    // A writer appends numbered records while the GuardPoint is encrypted.
    let target = gp.dir.join("journal");
    let writer = {
        let target = target.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&target)
                .unwrap();
            for i in 0..3000u32 {
                writeln!(f, "record {i:06} {}", "x".repeat((i % 97) as usize)).unwrap();
                if i % 100 == 0 {
                    f.sync_data().unwrap();
                }
            }
        })
    };
    for _ in 0..3 {
        let o = gp.dataxform(&["--rekey", "-y"]);
        assert!(o.status.code().is_some(), "{}", text(&o));
    }
    writer.join().unwrap();
    ok(&gp.dataxform(&["--rekey", "-y"]), "final pass");
    gp.unmount();
    gp.mount(&policy("k", None), &[("k", "k")]);
    let text = fs::read_to_string(&target).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3000);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(*l, format!("record {i:06} {}", "x".repeat(i % 97)));
    }
}

/// `rounds` times: mount (with `env`), start `dataxform ARGS`, kill -9
/// secfs after a random delay in `ms`, then remount and check that every
/// file reads whole (in either key).
#[allow(clippy::type_complexity)]
fn kill_rounds(
    gp: &mut Gp,
    rng: &mut Rng,
    rounds: u64,
    (pol, keys, env): (&str, &[(&str, &str)], &[(&str, &str)]),
    args: &[&str],
    ms: std::ops::Range<u64>,
    want: &BTreeMap<PathBuf, Want>,
) {
    for round in 0..rounds {
        gp.mount_env(pol, keys, env);
        let mut child = Command::new(dataxform_bin(gp.base.path()))
            .args(args)
            .arg("--gp")
            .arg(&gp.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(
            ms.start + rng.below(ms.end - ms.start),
        ));
        gp.kill9();
        let _ = child.kill();
        let _ = child.wait();
        // After the crash: every file readable, whole, in either key.
        gp.mount(pol, keys);
        check(&gp.dir, want, false, &format!("after kill {round}"));
        gp.unmount();
    }
}

/// kill -9 of secfs at random instants of a transformation, then a
/// remount and the same command again: every file whole, in one key or
/// the other, and finally all in the new one. `GUARDFS_XFORM_KILLS` sets
/// the number of kill points (CI: a short run).
#[test]
fn killing_secfs_at_random_instants_loses_nothing() {
    let kills: u64 = std::env::var("GUARDFS_XFORM_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let mut gp = Gp::new();
    let mut rng = Rng(0x5eed_0005);
    let want = populate(&gp.dir, &mut rng, 150);
    let pol = policy("clear_key", Some("k2"));
    let keys = [("k2:gcm", "k2")];
    kill_rounds(
        &mut gp,
        &mut rng,
        kills,
        (&pol, &keys, &[]),
        &["--rekey", "-y"],
        20..620,
        &want,
    );
    gp.mount(&pol, &keys);
    ok(
        &gp.dataxform(&["--rekey", "-y", "--cleanup"]),
        "finishing run",
    );
    for rel in want.keys() {
        assert_eq!(
            header_of(&gp.lower().join(rel)).map(|h| (h.0, h.2)),
            Some(("k2".to_owned(), 3)),
            "{}",
            rel.display()
        );
    }
    assert!(!gp.lower().join(".guardfs-xform").exists());
    gp.unmount();
    gp.mount(&policy("k2", None), &keys);
    check(&gp.dir, &want, false, "under k2 alone");
}

/// secfs dies at each instant of the protocol for certain (the test hook
/// `GUARDFS_TEST_XFORM_ABORT`): after the side file, after the record,
/// in the middle of the copy back, before the record goes. Each time every
/// file reads whole after a remount, and the same command finishes.
#[test]
fn secfs_dying_at_each_step_of_the_protocol_loses_nothing() {
    for phase in ["side", "intent", "copy", "record"] {
        let mut gp = Gp::new();
        let mut rng = Rng(0x5eed_0006);
        let want = populate(&gp.dir, &mut rng, 2);
        let pol = policy("clear_key", Some("k"));
        let keys = [("k:cbc-cs1", "k")];
        gp.mount_env(&pol, &keys, &[("GUARDFS_TEST_XFORM_ABORT", phase)]);
        let o = gp.dataxform(&["--rekey", "-y"]);
        assert!(
            !o.status.success(),
            "{phase}: secfs did not die: {}",
            text(&o)
        );
        assert!(
            gp.log().contains("aborting at transformation phase"),
            "{phase}"
        );
        gp.kill9();
        gp.mount(&pol, &keys);
        check(&gp.dir, &want, false, &format!("after dying at {phase}"));
        let finished = gp.log().contains("finished an interrupted transformation");
        assert_eq!(
            finished,
            phase != "side",
            "{phase}: interrupted transformation finished on load: {finished}\n{}",
            gp.log()
        );
        ok(
            &gp.dataxform(&["--rekey", "-y", "--cleanup"]),
            "finishing run",
        );
        assert!(
            !gp.lower().join(".guardfs-xform").exists(),
            "{phase}: side files left"
        );
        gp.unmount();
        gp.mount(&policy("k", None), &keys);
        check(&gp.dir, &want, false, &format!("{phase}: under k alone"));
        gp.unmount();
    }
}

/// The agent's way: keys from vmd's local key store, the transformation
/// policy through `voradmin policy apply`, a directory full of clear data
/// guarded with it, `dataxform --rekey`, then the final policy.
#[test]
fn through_vmd_a_guarded_directory_of_clear_data_is_encrypted_in_place() {
    let a = common::Agent::new();
    a.start();
    let dir = a.dir("data");
    let mut rng = Rng(0x5eed_0007);
    let want = populate(&dir, &mut rng, 10);
    a.ok("voradmin", &["key", "create", "k_dx", "--mode", "gcm"]);
    let pol = a.base.path().join("p.json");
    // Keys the host does not know are refused with the policy.
    fs::write(
        &pol,
        policy("clear_key", Some("k_nowhere")).replace("\"xf\"", "\"p_dx\""),
    )
    .unwrap();
    let o = a.cmd("voradmin", &["policy", "apply", pol.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("k_nowhere"), "{}", text(&o));
    fs::write(
        &pol,
        policy("clear_key", Some("k_dx")).replace("\"xf\"", "\"p_dx\""),
    )
    .unwrap();
    a.ok("voradmin", &["policy", "apply", pol.to_str().unwrap()]);
    let out = a.ok(
        "voradmin",
        &["guard", dir.to_str().unwrap(), "--policy", "p_dx"],
    );
    assert!(out.contains(": guarded"), "{out}");
    check(&dir, &want, true, "guarded with the transformation policy");
    // Progress is visible while it runs; a killed run shows as interrupted.
    let mut child = Command::new(a.bin.join("dataxform"))
        .args([
            "--rekey",
            "--gp",
            dir.to_str().unwrap(),
            "-y",
            "--preserve_modified_time",
        ])
        .env("GUARDFS_ROOT", &a.root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("progress in voradmin xform status", 20, || {
        a.ok("voradmin", &["xform", "status"])
            .contains("In Progress")
            || a.ok("voradmin", &["xform", "status"]).contains("Completed")
    });
    let _ = child.kill();
    let _ = child.wait();
    let st = a.ok("voradmin", &["--json", "xform", "status"]);
    assert!(st.contains(dir.to_str().unwrap()), "{st}");
    assert!(
        st.contains("Interrupted") || st.contains("Completed"),
        "{st}"
    );
    let out = a.ok(
        "dataxform",
        &[
            "--rekey",
            "--gp",
            dir.to_str().unwrap(),
            "-y",
            "--print_stat",
            "--preserve_modified_time",
        ],
    );
    assert!(out.contains("Files skipped:        0"), "{out}");
    check(&dir, &want, true, "after dataxform");
    for (prog, args) in [
        ("voradmin", &["xform", "status"][..]),
        ("secfsd", &["-status", "xform"][..]),
    ] {
        let st = a.ok(prog, args);
        assert!(
            st.contains("Completed") && st.contains(dir.to_str().unwrap()),
            "{prog}: {st}"
        );
        assert!(!st.contains("Completed with errors"), "{prog}: {st}");
    }
    let lower = a.lower(&dir, "size-4096");
    assert_eq!(&lower[..8], b"GuardFS\0");
    assert_eq!(lower[10], 3, "gcm, the key's mode");
    // The final policy: k_dx alone.
    fs::write(&pol, policy("k_dx", None).replace("\"xf\"", "\"p_dx\"")).unwrap();
    a.ok("voradmin", &["policy", "apply", pol.to_str().unwrap()]);
    check(&dir, &want, true, "under the final policy");
    let logs: Vec<_> = fs::read_dir(a.base.path().join("log"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        logs.iter().any(|n| n.starts_with("vordxf")),
        "no dataxform log: {logs:?}"
    );
}

/// The same for a shallow rekey, whose record holds the new header itself
/// (no side file).
#[test]
fn secfs_dying_at_each_step_of_a_shallow_rekey_loses_nothing() {
    for phase in ["side", "intent", "copy", "record"] {
        let mut gp = Gp::new();
        let mut rng = Rng(0x5eed_0008);
        gp.mount(&policy("k", None), &[("k@1", "k")]);
        let want = populate(&gp.dir, &mut rng, 2);
        gp.unmount();
        let keys = [("k@1", "k"), ("k@2", "kv2")];
        gp.mount_env(
            &policy("k", None),
            &keys,
            &[("GUARDFS_TEST_XFORM_ABORT", phase)],
        );
        let o = gp.dataxform(&["--shallow", "-y"]);
        assert!(
            !o.status.success(),
            "{phase}: secfs did not die: {}",
            text(&o)
        );
        gp.kill9();
        gp.mount(&policy("k", None), &keys);
        check(&gp.dir, &want, false, &format!("after dying at {phase}"));
        ok(
            &gp.dataxform(&["--shallow", "-y", "--cleanup"]),
            "finishing run",
        );
        for rel in want.keys() {
            assert_eq!(
                header_of(&gp.lower().join(rel)).unwrap().1,
                2,
                "{phase}: {}",
                rel.display()
            );
        }
        gp.unmount();
        gp.mount(&policy("k", None), &[("k@2", "kv2")]);
        check(&gp.dir, &want, false, &format!("{phase}: under v2 alone"));
        gp.unmount();
    }
}

/// More files than the usual open-files limit (1024): secfs holds an fd
/// per inode the kernel knows, and a batch more, so it raises its own
/// limit. Started under a 1024 limit, every file is still transformed.
#[test]
fn more_files_than_the_default_open_files_limit_are_transformed() {
    let mut gp = Gp::new();
    for d in 0..3 {
        let dir = gp.dir.join(format!("d{d}"));
        fs::create_dir(&dir).unwrap();
        for i in 0..600 {
            fs::write(dir.join(format!("f{i}")), format!("file {d}/{i}\n")).unwrap();
        }
    }
    // Soft limit 1024 (the usual default), hard limit as it is here.
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        hard >= 4096,
        "the hard open-files limit here is only {hard}"
    );
    let nofile = format!("--nofile=1024:{hard}");
    gp.mount_via(
        &policy("clear_key", Some("k")),
        &[("k", "k")],
        &[],
        &["prlimit", &nofile, "--"],
    );
    let limits = fs::read_to_string(format!("/proc/{}/limits", gp.pid.unwrap())).unwrap();
    assert!(
        !limits.contains("Max open files            1024"),
        "{limits}"
    );
    // Every inode known to the kernel at once.
    let o = Command::new("ls").arg("-lR").arg(&gp.dir).output().unwrap();
    assert!(o.status.success());
    let out = ok(&gp.dataxform(&["--rekey", "-y", "--json"]), "rekey");
    assert!(
        out.contains(r#""files_transformed":1800"#),
        "{}",
        &out[out.len().saturating_sub(600)..]
    );
    gp.unmount();
    gp.mount(&policy("k", None), &[("k", "k")]);
    for d in 0..3 {
        for i in (0..600).step_by(37) {
            assert_eq!(
                fs::read_to_string(gp.dir.join(format!("d{d}/f{i}"))).unwrap(),
                format!("file {d}/{i}\n")
            );
        }
    }
}

/// A file cut short in the middle of its copy back (its new header already
/// in place, its size still the old one) shows its right size from the
/// first `stat`, before any open: the interrupted transformation is
/// finished when the size is first shown, not only when it is opened.
#[test]
fn a_file_cut_short_mid_copy_shows_its_size_from_the_first_stat() {
    let mut gp = Gp::new();
    let mut rng = Rng(0x5eed_0009);
    let data = rng.bytes((2 << 20) + 123);
    fs::write(gp.dir.join("big"), &data).unwrap();
    let pol = policy("clear_key", Some("k"));
    let keys = [("k:cbc-cs1", "k")];
    gp.mount_env(&pol, &keys, &[("GUARDFS_TEST_XFORM_ABORT", "copy")]);
    let o = gp.dataxform(&["--rekey", "-y"]);
    assert!(!o.status.success(), "secfs did not die: {}", text(&o));
    gp.kill9();
    gp.mount(&pol, &keys);
    drop_caches();
    assert_eq!(
        fs::metadata(gp.dir.join("big")).unwrap().len(),
        data.len() as u64
    );
    assert!(gp.log().contains("finished an interrupted transformation"));
    assert!(
        fs::read(gp.dir.join("big")).unwrap() == data,
        "contents differ"
    );
}

/// Bytes that lie during a transformation (ATTACKS.md 2, 3): under a rule
/// from clear_key, a clear file starting with header magic (or with a
/// header for a third key) is served as stored, never decrypted; under a
/// rule between two named keys, a header for a third key is refused
/// (EIO); a rename between the transforming rule and another one is EXDEV.
#[test]
fn lying_bytes_and_moves_during_a_transformation() {
    let mut gp = Gp::new();
    // A file encrypted under k2 (a third key), to plant below.
    gp.mount(&policy("k2", None), &[("k2", "k2")]);
    fs::write(gp.dir.join("third"), b"under k2").unwrap();
    let planted = fs::read(gp.lower().join("third")).unwrap();
    gp.unmount();
    let mut magic = b"GuardFS\0".to_vec();
    magic.extend(std::iter::repeat_n(7u8, 5000));
    fs::write(gp.dir.join("magic"), &magic).unwrap();
    fs::write(gp.dir.join("third"), &planted).unwrap();
    fs::create_dir(gp.dir.join("other")).unwrap();
    fs::write(gp.dir.join("moved"), b"clear").unwrap();
    // Transforming rule for everything but /other, which keeps clear_key.
    let pol = r#"{ "name": "xf", "security_rules": [
        { "order_number": 1, "action": "key_op", "effect": "permit,applykey" },
        { "order_number": 2, "action": "all_ops", "effect": "permit,applykey" } ],
      "resource_sets": [ { "id": "other", "resources": [
        { "directory": "/other", "include_subfolders": true } ] } ],
      "key_rules": [ { "resource_set_id": "other", "key_id": "clear_key" },
                     { "key_id": "clear_key" } ],
      "data_transform_rules": [ { "key_id": "k" } ] }"#;
    gp.mount(pol, &[("k", "k"), ("k2", "k2")]);
    assert_eq!(fs::read(gp.dir.join("magic")).unwrap(), magic);
    assert_eq!(
        fs::read(gp.dir.join("third")).unwrap(),
        planted,
        "k2 header decrypted"
    );
    let e = fs::rename(gp.dir.join("moved"), gp.dir.join("other/moved")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(nix::libc::EXDEV));
    gp.unmount();
    // Between two named keys, a third key's header is refused.
    gp.mount(
        &policy("k", Some("kv2")),
        &[("k", "k"), ("kv2", "kv2"), ("k2", "k2")],
    );
    let e = fs::read(gp.dir.join("third")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(nix::libc::EIO));
}

/// A full disk (ATTACKS.md 7): a file whose new bytes do not fit is
/// skipped and reported, unchanged and readable; nothing half done.
#[test]
fn a_full_disk_skips_the_file_and_changes_nothing() {
    let mut gp = Gp::new();
    let m = nix::mount::mount(
        Some("tmpfs"),
        &gp.dir,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=4m"),
    );
    m.unwrap();
    let data = Rng(0x5eed_000a).bytes(3 << 20);
    fs::write(gp.dir.join("big"), &data).unwrap();
    gp.mount(&policy("clear_key", Some("k")), &[("k", "k")]);
    let o = gp.dataxform(&["--rekey", "-y", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no space"), "{}", text(&o));
    assert_eq!(fs::read(gp.dir.join("big")).unwrap(), data);
    assert!(header_of(&gp.lower().join("big")).is_none(), "file changed");
    gp.unmount();
    let _ = nix::mount::umount(&gp.dir);
}

/// The rekey record on a lower file, if any.
fn rekey_record(lower: &Path) -> Option<Vec<u8>> {
    xattr_get(lower, b"trusted.guardfs.rekey")
}

/// Large files (rekeyed online) next to the awkward small ones: two of
/// 3 MiB and a sparse one with data only at both ends.
fn populate_large(dir: &Path, rng: &mut Rng, want: &mut BTreeMap<PathBuf, Want>) {
    for name in ["large-1", "large-2"] {
        fs::write(dir.join(name), rng.bytes(3 << 20)).unwrap();
        want.insert(PathBuf::from(name), describe(&dir.join(name)));
    }
    let p = dir.join("large-sparse");
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::create(&p).unwrap();
        f.write_all_at(&rng.bytes(5000), 0).unwrap();
        f.write_all_at(&rng.bytes(7000), (4 << 20) + 123).unwrap();
    }
    want.insert(PathBuf::from("large-sparse"), describe(&p));
}

/// A writer that keeps a model of its file: random writes at any offset
/// and length (straddling units), an fdatasync now and then, and a read of
/// a random range after every few writes compared with the model (a stale
/// or torn read fails at once). Runs until `stop`; returns the model.
fn model_writer(
    path: PathBuf,
    seed: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(Vec<u8>, u64)> {
    std::thread::spawn(move || {
        use std::os::unix::fs::FileExt;
        let mut rng = Rng(seed);
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut model = fs::read(&path).unwrap();
        let mut ops = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let off = rng.below(model.len() as u64 + 5000) as usize;
            let len = 1 + rng.below(12_000) as usize;
            let data = rng.bytes(len);
            f.write_all_at(&data, off as u64).unwrap();
            if model.len() < off + len {
                model.resize(off + len, 0);
            }
            model[off..off + len].copy_from_slice(&data);
            ops += 1;
            if ops.is_multiple_of(16) {
                f.sync_data().unwrap();
            }
            if ops.is_multiple_of(4) {
                let a = rng.below(model.len() as u64) as usize;
                let n = (1 + rng.below(20_000) as usize).min(model.len() - a);
                let mut got = vec![0u8; n];
                f.read_exact_at(&mut got, a as u64).unwrap();
                assert!(
                    got == model[a..a + n],
                    "{}: read {a}+{n} differs from what was written (op {ops})",
                    path.display()
                );
            }
        }
        (model, ops)
    })
}

/// Deep rekey online while fsx runs on one file and a model-checking
/// writer on another (both open the whole time), with steps of 3 units so
/// that the point the rekey reached moves through the middle of fsx's
/// reads, writes, mapped I/O and truncates. Every file ends in the new
/// version, fsx finds no wrong byte, the writer never reads a stale byte,
/// and nothing waits for the whole file.
#[test]
fn an_online_deep_rekey_keeps_fsx_and_a_writer_right() {
    let mut gp = Gp::new();
    let mut rng = Rng(0x5eed_0010);
    gp.mount(&policy("k", None), &[("k@1", "k")]);
    let mut want = populate(&gp.dir, &mut rng, 12);
    populate_large(&gp.dir, &mut rng, &mut want);
    fs::write(gp.dir.join("a-fsx"), b"").unwrap();
    fs::write(gp.dir.join("db"), rng.bytes(1 << 20)).unwrap();
    gp.unmount();

    gp.mount_env(
        &policy("k", None),
        &[("k@1", "k"), ("k@2", "kv2")],
        &[("GUARDFS_TEST_REKEY_STEP_UNITS", "3")],
    );
    let fsx_dir = gp.base.path().join("fsx");
    fs::create_dir(&fsx_dir).unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../integration/fsx.toml");
    let fsx_bin = std::env::var("FSX").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        format!("{home}/.cargo/bin/fsx")
    });
    let fsx = Command::new(&fsx_bin)
        .args([
            "-f",
            config.to_str().unwrap(),
            "-N",
            "30000",
            "-S",
            "7",
            "-P",
        ])
        .arg(&fsx_dir)
        .arg(gp.dir.join("a-fsx"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("fsx ({fsx_bin}): {e}: cargo install fsx"));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = model_writer(gp.dir.join("db"), 0x5eed_0011, stop.clone());
    std::thread::sleep(Duration::from_millis(500));
    let out = ok(
        &gp.dataxform(&["--deep", "-y", "--json", "--max_rate", "1"]),
        "online deep rekey",
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (model, ops) = writer.join().unwrap();
    let fsx_out = fsx.wait_with_output().unwrap();
    assert!(
        fsx_out.status.success(),
        "fsx failed during the online rekey: {}\n{}",
        text(&fsx_out),
        gp.log()
    );
    assert!(ops > 20, "the writer barely ran ({ops} writes)");
    assert!(out.contains(r#""event":"summary""#), "{out}");
    let log = gp.log();
    for name in ["a-fsx", "db", "large-1", "large-sparse"] {
        assert!(
            log.contains(&format!("{name}: rekeyed online")),
            "{name} not rekeyed online:\n{log}"
        );
    }
    assert_eq!(
        fs::read(gp.dir.join("db")).unwrap(),
        model,
        "db after the rekey"
    );
    check(&gp.dir, &want, false, "after the online rekey");
    for e in fs::read_dir(gp.lower()).unwrap().flatten() {
        let p = e.path();
        if p.is_file() && fs::metadata(&p).unwrap().len() >= 4096 {
            assert_eq!(
                header_of(&p).map(|h| h.1),
                Some(2),
                "{} not at version 2",
                p.display()
            );
            assert!(rekey_record(&p).is_none(), "{}: record left", p.display());
        }
    }
    // Holes stayed holes.
    let sparse = fs::metadata(gp.lower().join("large-sparse")).unwrap();
    assert!(
        sparse.blocks() * 512 < 1 << 20,
        "the sparse file was filled in: {} blocks",
        sparse.blocks()
    );
    gp.unmount();
    gp.mount(&policy("k", None), &[("k@2", "kv2")]);
    check(&gp.dir, &want, false, "version 2 alone");
    assert_eq!(
        fs::read(gp.dir.join("db")).unwrap(),
        model,
        "db, version 2 alone"
    );
}

/// secfs dies at each instant of an online rekey step for certain: with
/// the step's journal durable, after the in-place write, after the mark
/// moved, and after the new header went in place. Each time every file
/// reads whole after a remount (the step redone where the journal says),
/// and the same command finishes, leaving no record or journal.
#[test]
fn secfs_dying_at_each_step_of_an_online_rekey_loses_nothing() {
    for phase in ["rk-journal", "rk-write", "rk-record", "rk-header"] {
        let mut gp = Gp::new();
        let mut rng = Rng(0x5eed_0012);
        gp.mount(&policy("k", None), &[("k@1:gcm", "k")]);
        let mut want = populate(&gp.dir, &mut rng, 2);
        populate_large(&gp.dir, &mut rng, &mut want);
        gp.unmount();
        let keys = [("k@1:gcm", "k"), ("k@2:gcm", "kv2")];
        gp.mount_env(
            &policy("k", None),
            &keys,
            &[("GUARDFS_TEST_XFORM_ABORT", phase)],
        );
        let o = gp.dataxform(&["--deep", "-y"]);
        assert!(!o.status.success(), "{phase}: secfs did not die");
        assert!(
            gp.log().contains("aborting at transformation phase"),
            "{phase}: {}",
            gp.log()
        );
        gp.kill9();
        gp.mount(&policy("k", None), &keys);
        let recorded = fs::read_dir(gp.lower())
            .unwrap()
            .flatten()
            .filter(|e| rekey_record(&e.path()).is_some())
            .count();
        assert_eq!(recorded, 1, "{phase}: one file mid-rekey");
        check(&gp.dir, &want, false, &format!("after dying at {phase}"));
        let log = gp.log();
        let redone = log.contains("redid an interrupted rekey step");
        assert_eq!(
            redone,
            matches!(phase, "rk-journal" | "rk-write"),
            "{phase}: step redone: {redone}\n{log}"
        );
        assert_eq!(
            log.contains("finished an interrupted rekey"),
            phase == "rk-header",
            "{phase}\n{log}"
        );
        ok(
            &gp.dataxform(&["--deep", "-y", "--cleanup"]),
            "finishing run",
        );
        for e in fs::read_dir(gp.lower()).unwrap().flatten() {
            assert!(rekey_record(&e.path()).is_none(), "{phase}: record left");
        }
        assert!(
            !gp.lower().join(".guardfs-xform").exists(),
            "{phase}: journal left"
        );
        gp.unmount();
        gp.mount(&policy("k", None), &[("k@2:gcm", "kv2")]);
        check(&gp.dir, &want, false, &format!("{phase}: version 2 alone"));
        gp.unmount();
    }
}

/// kill -9 of secfs at random instants of online rekeys (small steps, so
/// most kills land mid-file), a remount and a check after each, then the
/// same command finishes.
#[test]
fn killing_secfs_during_online_rekeys_loses_nothing() {
    let kills: u64 = std::env::var("GUARDFS_XFORM_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let mut gp = Gp::new();
    let mut rng = Rng(0x5eed_0013);
    gp.mount(&policy("k", None), &[("k:xts", "k")]);
    let mut want = populate(&gp.dir, &mut rng, 4);
    populate_large(&gp.dir, &mut rng, &mut want);
    gp.unmount();
    let pol = policy("k", Some("k2"));
    let keys = [("k:xts", "k"), ("k2:xts", "k2")];
    let env = [("GUARDFS_TEST_REKEY_STEP_UNITS", "16")];
    kill_rounds(
        &mut gp,
        &mut rng,
        kills,
        (&pol, &keys, &env),
        &["--rekey", "-y", "--max_rate", "4"],
        50..750,
        &want,
    );
    gp.mount(&pol, &keys);
    ok(
        &gp.dataxform(&["--rekey", "-y", "--cleanup"]),
        "finishing run",
    );
    for rel in want.keys() {
        let p = gp.lower().join(rel);
        if fs::metadata(&p).unwrap().len() >= 4096 {
            assert_eq!(
                header_of(&p).map(|h| h.0),
                Some("k2".into()),
                "{}",
                rel.display()
            );
        }
    }
    gp.unmount();
    gp.mount(&policy("k2", None), &[("k2:xts", "k2")]);
    check(&gp.dir, &want, false, "under k2 alone");
}

/// `--max_rate` holds the run to its rate; `--suspend` pauses it (the
/// status says `Suspended` and no byte moves), `--resume` lets it finish.
#[test]
fn an_online_rekey_is_throttled_suspended_and_resumed() {
    let mut gp = Gp::new();
    let mut rng = Rng(0x5eed_0014);
    gp.mount(&policy("k", None), &[("k@1", "k")]);
    fs::write(gp.dir.join("big"), rng.bytes(6 << 20)).unwrap();
    let want = fs::read(gp.dir.join("big")).unwrap();
    gp.unmount();
    gp.mount(&policy("k", None), &[("k@1", "k"), ("k@2", "kv2")]);
    let child = Command::new(dataxform_bin(gp.base.path()))
        .args(["--deep", "-y", "--json", "--max_rate", "1", "--gp"])
        .arg(&gp.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = || {
        text(
            &Command::new(VORADMIN)
                .args(["xform", "status"])
                .output()
                .unwrap(),
        )
    };
    let gp_name = gp.dir.display().to_string();
    let row = |s: &str| {
        s.lines()
            .find(|l| l.starts_with(&gp_name))
            .unwrap_or_default()
            .to_owned()
    };
    wait_until("the run in progress", 20, || {
        row(&status()).contains("In Progress")
    });
    let nothing = gp.dataxform(&["--resume"]);
    assert!(!nothing.status.success(), "resumed what was not suspended");
    ok(&gp.dataxform(&["--suspend"]), "suspend");
    wait_until("Suspended", 20, || row(&status()).contains("Suspended"));
    let before = row(&status());
    std::thread::sleep(Duration::from_millis(1500));
    let during = row(&status());
    let bytes = |r: &str| {
        r.split_whitespace()
            .nth(r.split_whitespace().count() - 2)
            .map(str::to_owned)
    };
    assert_eq!(
        bytes(&before),
        bytes(&during),
        "bytes moved while suspended:\n{before}\n{during}"
    );
    ok(&gp.dataxform(&["--resume"]), "resume");
    let out = child.wait_with_output().unwrap();
    let o = ok(&out, "the throttled run");
    assert!(
        o.contains(r#""event":"suspended""#) && o.contains(r#""event":"resumed""#),
        "{o}"
    );
    let summary: serde_json::Value = serde_json::from_str(
        o.lines()
            .find(|l| l.contains(r#""event":"summary""#))
            .unwrap(),
    )
    .unwrap();
    // The limiter sleeps until the bytes fit the rate, so the rate over
    // the run never exceeds it by more than the first request's bytes.
    let rate = summary["mb_per_s"].as_f64().unwrap();
    assert!(rate <= 1.25, "rate {rate} MB/s over --max_rate 1");
    assert!(row(&status()).contains("Completed"), "{}", status());
    assert_eq!(fs::read(gp.dir.join("big")).unwrap(), want);
    assert_eq!(header_of(&gp.lower().join("big")).map(|h| h.1), Some(2));
}

/// Through vmd: a key rotation arriving while a deep rekey runs relaunches
/// it, so that it ends with every file at the newest version (the files
/// done before the rotation are rekeyed again).
#[test]
fn a_rotation_during_a_deep_rekey_relaunches_it_to_the_newest_version() {
    let a = common::Agent::new();
    a.start();
    let dir = a.dir("rot");
    a.ok("voradmin", &["key", "create", "k_rl", "--mode", "xts"]);
    let pol = a.base.path().join("p_rl.json");
    fs::write(&pol, policy("k_rl", None).replace("\"xf\"", "\"p_rl\"")).unwrap();
    a.ok("voradmin", &["policy", "apply", pol.to_str().unwrap()]);
    a.ok(
        "voradmin",
        &["guard", dir.to_str().unwrap(), "--policy", "p_rl"],
    );
    let mut rng = Rng(0x5eed_0015);
    let names: Vec<String> = (0..6).map(|i| format!("f{i}")).collect();
    let mut want = Vec::new();
    for n in &names {
        let data = rng.bytes(1_500_000);
        fs::write(dir.join(n), &data).unwrap();
        want.push(data);
    }
    a.ok("voradmin", &["key", "rotate", "k_rl"]);
    let v2 = a.key_version(&dir.join("f0")) + 1;
    let child = Command::new(a.bin.join("dataxform"))
        .args(["--deep", "--gp", dir.to_str().unwrap(), "-y", "--json"])
        // Slow enough (about 9 s) that the rotation lands mid-run.
        .args(["--max_rate", "1"])
        .env("GUARDFS_ROOT", &a.root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the first file is done, rotate again.
    let t0 = std::time::Instant::now();
    while a.key_version(&dir.join("f0")) != v2 {
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let out = child.wait_with_output().unwrap();
            panic!(
                "the first file was not rekeyed: {}\n{}",
                text(&out),
                a.ok(
                    "voradmin",
                    &[
                        "--json",
                        "secfs",
                        "iv",
                        "get",
                        dir.join("f0").to_str().unwrap()
                    ]
                )
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    a.ok("voradmin", &["key", "rotate", "k_rl"]);
    let out = child.wait_with_output().unwrap();
    let o = ok(&out, "deep rekey across a rotation");
    assert!(o.contains(r#""event":"relaunch""#), "{o}");
    for (n, data) in names.iter().zip(&want) {
        assert_eq!(
            a.key_version(&dir.join(n)),
            v2 + 1,
            "{n} not at the newest version"
        );
        assert_eq!(&fs::read(dir.join(n)).unwrap(), data, "{n}");
    }
}

/// A file left mid-rekey whose new key is missing is refused; emptied and
/// written anew meanwhile, it drops the record, so the record cannot later
/// be applied over the new contents.
#[test]
fn a_file_emptied_mid_rekey_keeps_what_is_written_after() {
    let mut gp = Gp::new();
    let mut rng = Rng(0x5eed_0016);
    gp.mount(&policy("k", None), &[("k@1", "k")]);
    fs::write(gp.dir.join("big"), rng.bytes(3 << 20)).unwrap();
    gp.unmount();
    let both = [("k@1", "k"), ("k@2", "kv2")];
    gp.mount_env(
        &policy("k", None),
        &both,
        &[("GUARDFS_TEST_XFORM_ABORT", "rk-record")],
    );
    let o = gp.dataxform(&["--deep", "-y"]);
    assert!(!o.status.success(), "secfs did not die");
    gp.kill9();
    assert!(
        rekey_record(&gp.dir.join("big")).is_some(),
        "no record left"
    );
    // A backup (ciphertext view: a process permitted without the key) is
    // told to come back rather than given units in two keys.
    let bk = gp.base.path().join("backup");
    fs::copy("/bin/cat", &bk).unwrap();
    let backup = format!(
        r#"{{ "name": "xf", "security_rules": [
        {{ "order_number": 1, "action": "key_op", "effect": "permit,applykey" }},
        {{ "order_number": 2, "process_set_id": "backup", "action": "all_ops", "effect": "permit" }},
        {{ "order_number": 3, "action": "all_ops", "effect": "permit,applykey" }} ],
      "process_sets": [ {{ "id": "backup", "processes": [ {{ "directory": "{}", "file": "backup" }} ] }} ],
      "key_rules": [ {{ "key_id": "k" }} ] }}"#,
        gp.base.path().display()
    );
    gp.mount(&backup, &both);
    let o = Command::new(&bk).arg(gp.dir.join("big")).output().unwrap();
    assert!(
        !o.status.success() && o.stdout.is_empty(),
        "a ciphertext copy mid-rekey was made"
    );
    assert!(
        text(&o).contains("busy"),
        "not EBUSY: {}\n{}",
        text(&o),
        gp.log()
    );
    gp.unmount();
    // Version 2 missing: the file is refused, but may be emptied.
    gp.mount(&policy("k", None), &[("k@1", "k")]);
    assert!(
        fs::read(gp.dir.join("big")).is_err(),
        "read without the new key"
    );
    let fresh = rng.bytes(2 << 20);
    // Emptied by truncate(2) (an open with O_TRUNC is refused: without
    // FUSE's atomic O_TRUNC the kernel truncates only after the open).
    nix::unistd::truncate(&gp.dir.join("big"), 0).unwrap();
    fs::write(gp.dir.join("big"), &fresh).unwrap();
    assert_eq!(fs::read(gp.dir.join("big")).unwrap(), fresh);
    gp.unmount();
    assert!(
        rekey_record(&gp.dir.join("big")).is_none(),
        "the record survived emptying the file"
    );
    gp.mount(&policy("k", None), &both);
    drop_caches();
    assert_eq!(
        fs::read(gp.dir.join("big")).unwrap(),
        fresh,
        "after remount"
    );
}

/// A rekey record planted on another file (copied from a file mid-rekey,
/// as root on the lower file system) is never applied to it: it names a
/// header the file does not have, so it is dropped and logged, and the
/// file reads as it was.
#[test]
fn a_planted_rekey_record_is_dropped_not_applied() {
    let mut gp = Gp::new();
    let mut rng = Rng(0x5eed_0017);
    gp.mount(&policy("k", None), &[("k@1", "k")]);
    let mut want = BTreeMap::new();
    populate_large(&gp.dir, &mut rng, &mut want);
    gp.unmount();
    let both = [("k@1", "k"), ("k@2", "kv2")];
    gp.mount_env(
        &policy("k", None),
        &both,
        &[("GUARDFS_TEST_XFORM_ABORT", "rk-record")],
    );
    assert!(!gp.dataxform(&["--deep", "-y"]).status.success());
    gp.kill9();
    let (mid, other) = ["large-1", "large-2"]
        .into_iter()
        .partition::<Vec<_>, _>(|n| rekey_record(&gp.dir.join(n)).is_some());
    assert_eq!(mid.len(), 1, "one file mid-rekey: {mid:?}");
    let record = rekey_record(&gp.dir.join(mid[0])).unwrap();
    xattr_set(&gp.dir.join(other[0]), b"trusted.guardfs.rekey", &record);
    gp.mount(&policy("k", None), &both);
    check_large(&gp.dir, &want, "with a planted record");
    assert!(
        gp.log()
            .contains("dropped a rekey record that no longer fits the file"),
        "{}",
        gp.log()
    );
    assert!(rekey_record(&gp.lower().join(other[0])).is_none());
}

/// The files of `populate_large` as wanted.
fn check_large(dir: &Path, want: &BTreeMap<PathBuf, Want>, when: &str) {
    drop_caches();
    for (rel, w) in want {
        assert!(
            fs::read(dir.join(rel)).unwrap() == w.data,
            "{when}: {}",
            rel.display()
        );
    }
}
