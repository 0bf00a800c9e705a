//! Issue 14 B and F, on real mounts: once guarded, the lower tree is
//! reachable through no process, mount point or mount namespace but
//! secfs; guarding what would break the host is refused.
//!
//! Each test performs the attack and asserts it fails. Needs root and
//! /dev/fuse (CI has both).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;

const MAGIC: &[u8] = b"GuardFS\0";
const SECRET: &[u8] = b"REACH-PLAINTEXT-CANARY-0123456789";

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A child killed on drop.
struct Proc(Child);

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        Proc(
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn"),
        )
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A bind mount, detached on drop (also when the test fails).
struct Bind(PathBuf);

impl Bind {
    fn new(from: &Path, to: &Path) -> Bind {
        if !to.exists() {
            std::fs::create_dir(to).unwrap();
        }
        let o = sh(&format!(
            "mount --bind '{}' '{}'",
            from.display(),
            to.display()
        ));
        assert!(o.status.success(), "{o:?}");
        Bind(to.to_path_buf())
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// `sh -c SCRIPT` as a long-running process (ends in `exec sleep`).
fn sh_proc(script: &str) -> Proc {
    Proc::spawn(Command::new("sh").arg("-c").arg(script).current_dir("/"))
}

/// The command running in `pid`'s mount namespace (as root).
fn in_ns(pid: u32, script: &str) -> std::process::Output {
    Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "sh", "-c", script])
        .output()
        .unwrap()
}

fn ns_of(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap()
}

/// Wait until `pid` runs in a mount namespace other than ours.
fn wait_ns(pid: u32) {
    let own = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    wait_until("the namespace", || {
        std::fs::read_link(format!("/proc/{pid}/ns/mnt")).is_ok_and(|n| n != own)
            && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "sleep")
    });
}

/// Whether `pid`'s mount table has a fuse.secfs mount at `path`.
fn secfs_at(pid: u32, path: &Path) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(4) == path.to_str() && l.contains(" - fuse.secfs "))
}

/// A GuardPoint directory (not mounted) with a key, for `secfs mount`
/// attempts that are expected to be refused.
struct Dir {
    base: tempfile::TempDir,
    dir: PathBuf,
    key: PathBuf,
}

fn dir() -> Dir {
    let base = tempfile::Builder::new()
        .prefix("guardfs-reach")
        .tempdir_in("/var/tmp")
        .unwrap();
    let dir = base.path().join("gp");
    std::fs::create_dir(&dir).unwrap();
    let key = base.path().join("key");
    assert!(run(&["genkey", key.to_str().unwrap()]).status.success());
    Dir { base, dir, key }
}

fn mount_cmd(dir: &Path, key: &Path, log: &Path) -> std::process::Output {
    run(&[
        "mount",
        dir.to_str().unwrap(),
        "--key-file",
        key.to_str().unwrap(),
        "--log-file",
        log.to_str().unwrap(),
    ])
}

impl Dir {
    fn try_mount(&self) -> std::process::Output {
        mount_cmd(&self.dir, &self.key, &self.base.path().join("secfs.log"))
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if is_mounted(&self.dir) {
            let _ = run(&["umount", "--lazy", self.dir.to_str().unwrap()]);
        }
    }
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Attack: keep the lower directory in hand across the guard — a shell
/// sitting in it, an open fd on a file inside it, a program mapped from
/// it, a process inside it in another mount namespace, one inside it
/// through a bind mount — then read the plaintext-free lower tree behind
/// the GuardPoint's back. The guard must be refused, naming each pid,
/// with nothing mounted; once they are gone it succeeds.
#[test]
fn guard_is_refused_while_any_process_holds_the_lower_directory() {
    let d = dir();
    let sub = d.dir.join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("f"), b"x").unwrap();
    std::fs::copy("/bin/sleep", d.dir.join("mysleep")).unwrap();
    let alias = d.base.path().join("alias");
    let bind = Bind::new(&d.dir, &alias);
    let cwd = Proc::spawn(Command::new("sleep").arg("1000").current_dir(&sub));
    let fd = sh_proc(&format!("exec 7<'{}/f'; exec sleep 1000", sub.display()));
    let map = Proc::spawn(
        Command::new(d.dir.join("mysleep"))
            .arg("1000")
            .current_dir("/"),
    );
    let other_ns = sh_proc(&format!(
        "exec unshare -m --propagation private sh -c \"cd '{}' && exec sleep 1000\"",
        sub.display()
    ));
    let via_bind = Proc::spawn(Command::new("sleep").arg("1000").current_dir(&alias));
    wait_ns(other_ns.pid());
    for (name, p) in [
        ("cwd", &cwd),
        ("fd", &fd),
        ("mapping", &map),
        ("bind", &via_bind),
    ] {
        wait_until(name, || {
            std::fs::read_to_string(format!("/proc/{}/comm", p.pid()))
                .is_ok_and(|c| c.trim().ends_with("sleep"))
        });
    }
    let out = d.try_mount();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(17), "{out:?}");
    assert!(err.contains("busy: in use by pid"), "{err}");
    for p in [&cwd, &fd, &map, &via_bind, &other_ns] {
        // The namespace case: the shell exec'd unshare, which exec'd sleep.
        assert!(
            err.contains(&format!("{} (", p.pid())),
            "pid {} not named: {err}",
            p.pid()
        );
    }
    assert!(!is_mounted(&d.dir));
    drop((cwd, fd, map, other_ns, via_bind));
    drop(bind);
    let out = d.try_mount();
    assert!(out.status.success(), "{out:?}");
    assert!(run(&["umount", d.dir.to_str().unwrap()]).status.success());
}

/// Attack: keep a directory ABOVE the GuardPoint in hand on a mount that
/// the guard cannot cover — a bind mount of the parent, lazily unmounted
/// (detached from every namespace) while a shell sits in it — then walk
/// down into the lower directory from there (`/proc/PID/cwd/gp/...`). The
/// guard must be refused, naming the pid.
#[test]
fn a_process_above_the_directory_on_a_detached_mount_makes_the_guard_refuse() {
    let d = dir();
    let alias = d.base.path().join("alias");
    let bind = Bind::new(d.base.path(), &alias);
    let holder = Proc::spawn(Command::new("sleep").arg("1000").current_dir(&alias));
    wait_until("the holder", || {
        std::fs::read_link(format!("/proc/{}/cwd", holder.pid())).is_ok_and(|c| c == alias)
    });
    drop(bind);
    let out = d.try_mount();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(17), "{out:?}");
    assert!(err.contains(&format!("{} (sleep)", holder.pid())), "{err}");
    assert!(!is_mounted(&d.dir));
    drop(holder);
    let out = d.try_mount();
    assert!(out.status.success(), "{out:?}");
    assert!(run(&["umount", d.dir.to_str().unwrap()]).status.success());
}

/// After the guard, in `place` (a path seen by `pid`'s namespace, or ours
/// when `pid` is None): a file written through the GuardPoint reads back
/// as plaintext (not the lower ciphertext), and a file written there is
/// encrypted on disk.
fn assert_place_is_guarded(gp: &Gp, pid: Option<u32>, place: &Path, sub: &str) {
    let name = format!("{sub}written-in-gp");
    std::fs::write(gp.path(&name), SECRET).unwrap();
    let read = format!("cat '{}/written-in-gp'", place.display());
    let got = match pid {
        Some(p) => in_ns(p, &read),
        None => sh(&read),
    };
    assert!(got.status.success(), "{got:?}");
    assert!(
        !got.stdout.starts_with(MAGIC),
        "{}: the lower ciphertext shows there, not the GuardPoint",
        place.display()
    );
    assert_eq!(got.stdout, SECRET, "{}", place.display());
    let write = format!(
        "printf '%s' '{}' > '{}/written-there'",
        String::from_utf8_lossy(SECRET),
        place.display()
    );
    let w = match pid {
        Some(p) => in_ns(p, &write),
        None => sh(&write),
    };
    assert!(w.status.success(), "{w:?}");
    let lower = std::fs::read(gp.lower(&format!("{sub}written-there"))).unwrap();
    assert!(
        lower.starts_with(MAGIC),
        "{}: written around secfs",
        place.display()
    );
    assert!(
        !contains(&lower, SECRET),
        "{}: plaintext on disk",
        place.display()
    );
    assert_eq!(
        std::fs::read(gp.path(&format!("{sub}written-there"))).unwrap(),
        SECRET
    );
}

/// Attack: a mount namespace made before the guard (`unshare -m`, private
/// propagation) keeps the lower directory at the GuardPoint's path. The
/// guard must attach the GuardPoint there; unguard removes it again.
#[test]
fn a_mount_namespace_made_before_the_guard_gets_the_guardpoint() {
    let holder = std::cell::RefCell::new(None);
    let mut gp = Gp::new_with("xts", &[], |_| {
        let p = sh_proc("exec unshare -m --propagation private sleep 1000");
        wait_ns(p.pid());
        *holder.borrow_mut() = Some(p);
    });
    let ns = holder.borrow_mut().take().unwrap();
    assert!(
        secfs_at(ns.pid(), &gp.dir),
        "no GuardPoint in {:?}",
        ns_of(ns.pid())
    );
    assert_place_is_guarded(&gp, Some(ns.pid()), &gp.dir.clone(), "");
    gp.unmount();
    assert!(
        !secfs_at(ns.pid(), &gp.dir),
        "the GuardPoint outlived unguard in the other namespace"
    );
}

/// Attack: an unprivileged user makes a user+mount namespace
/// (`unshare -Urm`) before the guard. Root attaches the GuardPoint there
/// too (it has CAP_SYS_ADMIN over every user namespace).
#[test]
fn an_unprivileged_user_namespace_made_before_the_guard_gets_the_guardpoint() {
    let holder = std::cell::RefCell::new(None);
    let mut gp = Gp::new_with("xts", &[], |_| {
        let p = sh_proc(
            "exec setpriv --reuid=65534 --regid=65534 --clear-groups unshare -Urm sleep 1000",
        );
        wait_ns(p.pid());
        *holder.borrow_mut() = Some(p);
    });
    let ns = holder.borrow_mut().take().unwrap();
    assert!(
        secfs_at(ns.pid(), &gp.dir),
        "no GuardPoint in the user's namespace"
    );
    assert_place_is_guarded(&gp, Some(ns.pid()), &gp.dir.clone(), "");
    // SIGTERM removes it everywhere.
    gp.sigterm();
    assert!(!is_mounted(&gp.dir));
    assert!(
        !secfs_at(ns.pid(), &gp.dir),
        "the GuardPoint outlived SIGTERM"
    );
}

/// Attack: after the guard, an unprivileged user makes a user+mount
/// namespace (which copies the GuardPoint) and tries to uncover the lower
/// directory there: unmount the GuardPoint, or bind-mount its parent
/// without its submounts. The kernel keeps such copies locked; neither
/// shows the lower bytes.
#[test]
fn a_user_namespace_made_after_the_guard_cannot_uncover_the_lower_directory() {
    let gp = Gp::new("xts");
    let base = gp.base.path();
    std::fs::set_permissions(base, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(gp.path("f"), SECRET).unwrap();
    let alias = base.join("alias");
    std::fs::create_dir(&alias).unwrap();
    let script = format!(
        "umount -l '{gp}' 2>/dev/null; cat '{gp}/f'; echo; \
         mount --bind '{base}' '{alias}' 2>/dev/null; cat '{alias}/gp/f' 2>/dev/null; true",
        gp = gp.dir.display(),
        base = base.display(),
        alias = alias.display()
    );
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["unshare", "-Urm", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert!(!contains(&o.stdout, MAGIC), "lower bytes reached: {o:?}");
    assert!(
        contains(&o.stdout, SECRET),
        "the GuardPoint must still show: {o:?}"
    );
}

/// Attack: bind-mount the GuardPoint's parent elsewhere before the guard
/// (`mount --bind /x /y`, then guard /x/gp): /y/gp must show the
/// GuardPoint. And a bind of a subdirectory of the GuardPoint made before
/// the guard must show that subdirectory of the GuardPoint.
#[test]
fn bind_mounts_of_the_parent_and_of_a_subdirectory_get_the_guardpoint() {
    let binds: std::cell::RefCell<Vec<Bind>> = Default::default();
    let mut gp = Gp::new_with("xts", &[], |dir| {
        let base = dir.parent().unwrap();
        let parent_alias = base.join("parent-alias");
        let sub_alias = base.join("sub-alias");
        std::fs::create_dir(dir.join("sub")).unwrap();
        for (from, to) in [
            (base.to_path_buf(), &parent_alias),
            (dir.join("sub"), &sub_alias),
        ] {
            binds.borrow_mut().push(Bind::new(&from, to));
        }
    });
    let base = gp.base.path().to_path_buf();
    let via_parent = base.join("parent-alias/gp");
    let via_sub = base.join("sub-alias");
    assert_place_is_guarded(&gp, None, &via_parent, "");
    assert_place_is_guarded(&gp, None, &via_sub, "sub/");
    gp.unmount();
    let me = std::process::id();
    assert!(
        !secfs_at(me, &via_parent),
        "GuardPoint left at {}",
        via_parent.display()
    );
    assert!(
        !secfs_at(me, &via_sub),
        "GuardPoint left at {}",
        via_sub.display()
    );
    binds.borrow_mut().drain(..).rev().for_each(drop);
}

/// Attack: secfs is killed; its clone in another namespace is left dead
/// (ENOTCONN, still covering the lower tree); a new guard covers it again.
#[test]
fn after_a_crash_a_new_guard_covers_the_dead_clones() {
    let holder = std::cell::RefCell::new(None);
    let mut gp = Gp::new_with("xts", &[], |_| {
        let p = sh_proc("exec unshare -m --propagation private sleep 1000");
        wait_ns(p.pid());
        *holder.borrow_mut() = Some(p);
    });
    let ns = holder.borrow_mut().take().unwrap();
    gp.kill9();
    let o = in_ns(ns.pid(), &format!("ls '{}'", gp.dir.display()));
    assert!(
        !o.status.success(),
        "the dead clone no longer covers: {o:?}"
    );
    // ENOTCONN, or ECONNABORTED for a request caught by the abort.
    let e = stderr(&o);
    assert!(
        e.contains("not connected") || e.contains("connection abort"),
        "{o:?}"
    );
    gp.mount("xts", &[]);
    assert_place_is_guarded(&gp, Some(ns.pid()), &gp.dir.clone(), "");
    gp.unmount();
}

// ---- F: refuse what would break the host ----

fn refused(dir: &Path, why: &str) {
    let d = dir_key();
    let out = mount_cmd(dir, &d.1, &d.0.path().join("log"));
    assert_eq!(out.status.code(), Some(12), "{}: {out:?}", dir.display());
    let err = stderr(&out);
    assert!(
        err.contains("refusing to guard") && err.contains(why),
        "{}: {err}",
        dir.display()
    );
    assert!(!is_mounted(dir));
}

fn dir_key() -> (tempfile::TempDir, PathBuf) {
    let base = tempfile::tempdir_in("/var/tmp").unwrap();
    let key = base.path().join("key");
    assert!(run(&["genkey", key.to_str().unwrap()]).status.success());
    (base, key)
}

/// Attack: guard the host's own directories. Refused, exit 12, with the
/// reason; nothing mounted.
#[test]
fn system_directories_their_parents_and_insides_are_refused() {
    refused(Path::new("/etc"), "/etc (a system directory)");
    refused(Path::new("/usr/share"), "inside /usr");
    refused(Path::new("/var"), "containing /var/lib/dpkg");
    refused(Path::new("/"), "the root directory");
    refused(Path::new("/opt"), "containing /opt/guardfs");
    refused(Path::new("/var/log/guardfs"), "log directory");
}

/// Attack: a bind mount of /etc (and of /usr/share) somewhere harmless-
/// looking, then guard that.
#[test]
fn a_bind_mount_of_a_system_directory_is_refused() {
    let base = tempfile::tempdir_in("/var/tmp").unwrap();
    for (src, why) in [
        ("/etc", "/etc (a system directory)"),
        ("/usr/share", "inside /usr"),
    ] {
        let x = base.path().join(src.replace('/', "_"));
        let _bind = Bind::new(Path::new(src), &x);
        refused(&x, why);
    }
}

/// As on systemd hosts, where `/` is shared: the lower directory is on a
/// shared mount with a peer bind mount and a namespace that receives
/// propagation. Mount propagation already shows the GuardPoint at the
/// peer and in the namespace (nothing to attach), and unguard removes it
/// everywhere (propagated unmount).
#[test]
fn shared_propagation_covers_peers_and_unguard_removes_it_everywhere() {
    let base = tempfile::Builder::new()
        .prefix("guardfs-reach")
        .tempdir_in("/var/tmp")
        .unwrap();
    let shared = base.path().join("shared");
    let peer = base.path().join("peer");
    std::fs::create_dir(&shared).unwrap();
    std::fs::create_dir(&peer).unwrap();
    struct Undo(Vec<PathBuf>);
    impl Drop for Undo {
        fn drop(&mut self) {
            for p in self.0.iter().rev() {
                let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
    let mut undo = Undo(Vec::new());
    let o = sh(&format!(
        "mount -t tmpfs tmpfs '{s}' && mount --make-shared '{s}' && mkdir '{s}/gp' && mount --bind '{s}' '{p}'",
        s = shared.display(),
        p = peer.display()
    ));
    undo.0.push(shared.clone());
    undo.0.push(peer.clone());
    assert!(o.status.success(), "{o:?}");
    let ns = sh_proc("exec unshare -m --propagation unchanged sleep 1000");
    wait_ns(ns.pid());
    let gp_dir = shared.join("gp");
    let key = base.path().join("key");
    assert!(run(&["genkey", key.to_str().unwrap()]).status.success());
    let log = base.path().join("secfs.log");
    let out = mount_cmd(&gp_dir, &key, &log);
    assert!(out.status.success(), "{out:?}");
    let me = std::process::id();
    assert!(secfs_at(me, &peer.join("gp")), "peer not covered");
    assert!(secfs_at(ns.pid(), &gp_dir), "namespace not covered");
    std::fs::write(gp_dir.join("f"), SECRET).unwrap();
    assert_eq!(std::fs::read(peer.join("gp/f")).unwrap(), SECRET);
    let got = in_ns(ns.pid(), &format!("cat '{}/f'", gp_dir.display()));
    assert_eq!(got.stdout, SECRET, "{got:?}");
    assert!(run(&["umount", gp_dir.to_str().unwrap()]).status.success());
    wait_until("unmounted everywhere", || {
        !secfs_at(me, &gp_dir) && !secfs_at(me, &peer.join("gp")) && !secfs_at(ns.pid(), &gp_dir)
    });
    drop(ns);
    drop(undo);
}

/// Attack: a mount namespace that no process is in, pinned by a
/// bind-mounted nsfs file (`unshare --mount=FILE`), made before the guard;
/// entered later with `nsenter --mount=FILE`. It must show the GuardPoint.
#[test]
fn a_pinned_mount_namespace_without_processes_gets_the_guardpoint() {
    let pins: std::cell::RefCell<Vec<Bind>> = Default::default();
    let mut gp = Gp::new_with("xts", &[], |dir| {
        let pin = dir.parent().unwrap().join("pin");
        let b = Bind::new(&pin, &pin);
        assert!(
            sh(&format!("mount --make-private '{}'", pin.display()))
                .status
                .success()
        );
        pins.borrow_mut().push(b);
        let file = pin.join("mnt");
        std::fs::write(&file, b"").unwrap();
        let o = Command::new("unshare")
            .arg(format!("--mount={}", file.display()))
            .arg("true")
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        pins.borrow_mut().push(Bind(file));
    });
    let file = gp.base.path().join("pin/mnt");
    let enter = |script: &str| {
        Command::new("nsenter")
            .arg(format!("--mount={}", file.display()))
            .args(["sh", "-c", script])
            .output()
            .unwrap()
    };
    std::fs::write(gp.path("f"), SECRET).unwrap();
    let got = enter(&format!("cat '{}/f'", gp.dir.display()));
    assert_eq!(got.stdout, SECRET, "{got:?}");
    let w = enter(&format!(
        "printf '%s' '{}' > '{}/g'",
        String::from_utf8_lossy(SECRET),
        gp.dir.display()
    ));
    assert!(w.status.success(), "{w:?}");
    let lower = std::fs::read(gp.lower("g")).unwrap();
    assert!(lower.starts_with(MAGIC) && !contains(&lower, SECRET));
    gp.unmount();
    let left = enter("cat /proc/self/mountinfo");
    let still = String::from_utf8_lossy(&left.stdout)
        .lines()
        .any(|l| l.split_whitespace().nth(4) == gp.dir.to_str() && l.contains(" - fuse.secfs "));
    assert!(
        !still,
        "the GuardPoint outlived unguard in the pinned namespace"
    );
    pins.borrow_mut().drain(..).rev().for_each(drop);
}
