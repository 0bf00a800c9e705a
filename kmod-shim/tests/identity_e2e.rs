//! A process is who it really is (issue 14 D) and the agent's own
//! hardening (G): attacks on process identity, preloaded and traced
//! processes, daemonising out of `|path_no_trust|`, audit floods, the
//! daemon's memory. Run as root (CI does).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::policy::*;
use common::*;

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
