//! The agent registered with keymgr: real `keymgr serve` over TLS on
//! loopback with its SQLite store, real vmd and secfs daemons, real FUSE
//! mounts. GuardPoints, policies and keys are defined on the server and
//! reach the host through vmd's polling.

mod common;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::*;

const PW: &str = "keymgr-admin-pw";

fn keymgr_bin() -> PathBuf {
    let p = Path::new(VMD).with_file_name("keymgr");
    assert!(p.is_file(), "{} missing: build the workspace", p.display());
    p
}

/// A keymgr server with its own data directory.
struct Keymgr {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Keymgr {
    fn start() -> Keymgr {
        let dir = tempfile::Builder::new()
            .prefix("guardfs-keymgr")
            .tempdir_in("/var/tmp")
            .unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut k = Keymgr {
            dir,
            port,
            child: None,
        };
        let o = k.cli(&[
            "init",
            "--admin-password",
            PW,
            "--san",
            "127.0.0.1",
            "--san",
            "localhost",
        ]);
        assert!(o.status.success(), "init: {}", text(&o));
        k.serve();
        k
    }

    fn serve(&mut self) {
        let log = fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("serve.log"))
            .unwrap();
        let child = Command::new(keymgr_bin())
            .args([
                "--data-dir",
                self.dir.path().to_str().unwrap(),
                "serve",
                "--listen",
            ])
            .arg(format!("127.0.0.1:{}", self.port))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_until("keymgr listening", 30, || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(keymgr_bin())
            .args(args)
            .env("KEYMGR_URL", format!("https://127.0.0.1:{}", self.port))
            .env("KEYMGR_PASSWORD", PW)
            .env("KEYMGR_ADMIN_PASSWORD", PW)
            .env("KEYMGR_DATA_DIR", self.dir.path())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let o = self.cli(&all);
        assert!(o.status.success(), "keymgr {args:?}: {}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
    }

    fn token(&self, extra: &[&str]) -> String {
        let mut args = vec!["token", "create"];
        args.extend_from_slice(extra);
        self.ok(&args)["token"]
            .as_str()
            .expect("token in reply")
            .to_owned()
    }

    fn policy(&self, name: &str, key: &str) {
        let f = self.dir.path().join(format!("{name}.json"));
        fs::write(&f, policy_json(name, key)).unwrap();
        self.ok(&["policy", "apply", f.to_str().unwrap()]);
    }
}

impl Drop for Keymgr {
    fn drop(&mut self) {
        self.kill();
    }
}

fn agent_for(km: &Keymgr) -> (Agent, PathBuf) {
    let a = Agent::with_conf("km_poll_secs=1\n");
    let hw = a.base.path().join("hw-extra");
    fs::write(&hw, b"original hardware").unwrap();
    let conf = a.root.join("etc/agent.conf");
    let mut text = fs::read_to_string(&conf).unwrap();
    text.push_str(&format!("hwsig_extra_file={}\n", hw.display()));
    fs::write(&conf, text).unwrap();
    let _ = km;
    (a, hw)
}

fn register(a: &Agent, km: &Keymgr, token: &str, name: &str, extra: &[&str]) -> Output {
    let params = a.base.path().join("register.params");
    fs::write(
        &params,
        format!(
            "SERVER_HOSTNAME=127.0.0.1:{}\nREG_TOKEN={token}\nAGENT_HOST_NAME={name}\nHOST_DESC=test host\nCA_FILE={}\n",
            km.port,
            km.ca().display()
        ),
    )
    .unwrap();
    let mut args = vec!["-s", params.to_str().unwrap()];
    args.extend_from_slice(extra);
    a.cmd("register_host", &args)
}

fn setup_register_host_link(a: &Agent) {
    let link = a.bin.join("register_host");
    if !link.exists() {
        std::os::unix::fs::symlink(VORADMIN, link).unwrap();
    }
}

#[test]
fn server_defined_guardpoint_protects_data_rotation_and_revocation_reach_the_host() {
    let km = Keymgr::start();
    let (a, _) = agent_for(&km);
    setup_register_host_link(&a);
    let token = km.token(&["--max-clients", "2"]);
    let o = register(&a, &km, &token, "host-a", &[]);
    assert!(o.status.success(), "register: {}", text(&o));
    assert!(text(&o).contains("Successfully registered"), "{}", text(&o));
    a.start();
    km.ok(&["key", "create", "km_key", "--mode", "XTS"]);
    km.policy("km_policy", "km_key");
    let dir = a.dir("data");
    km.ok(&[
        "guardpoint",
        "add",
        "host-a",
        dir.to_str().unwrap(),
        "--policy",
        "km_policy",
    ]);
    wait_until("server GuardPoint guarded on the host", 30, || {
        a.guarded(&dir)
    });
    fs::write(dir.join("old"), SECRET).unwrap();
    assert!(!contains(&a.lower(&dir, "old"), SECRET));
    let kv = a.ok("vmsec", &["status"]);
    assert!(
        kv.contains("vmd_URL=https://127.0.0.1") && kv.contains("KEYS_AVAILABLE=TRUE"),
        "{kv}"
    );
    // Local key administration is the server's now.
    assert_eq!(
        a.cmd("voradmin", &["key", "create", "x"]).status.code(),
        Some(1)
    );
    // Rotation on the server: new files use v2, old ones still read.
    km.ok(&["key", "rotate", "km_key"]);
    wait_until("version 2 on the host", 30, || {
        a.ok("voradmin", &["key", "show", "km_key"])
            .contains("latest=2")
    });
    fs::write(dir.join("new"), b"after rotation").unwrap();
    let version = |f: &str| a.key_version(&dir.join(f));
    assert_eq!((version("old"), version("new")), (1, 2));
    assert_eq!(fs::read(dir.join("old")).unwrap(), SECRET);
    // Revocation on the server stops access on the host.
    km.ok(&["key", "revoke", "km_key"]);
    wait_until("revocation reaches the host", 30, || {
        fs::read(dir.join("old")).is_err()
    });
    assert!(fs::read(dir.join("new")).is_err());
}

#[test]
fn server_down_keeps_persistent_keys_only() {
    let mut km = Keymgr::start();
    let (a, _) = agent_for(&km);
    setup_register_host_link(&a);
    let token = km.token(&[]);
    assert!(register(&a, &km, &token, "host-b", &[]).status.success());
    a.start();
    km.ok(&["key", "create", "kp", "--persistent", "true"]);
    km.ok(&["key", "create", "kn", "--persistent", "false"]);
    km.policy("pp", "kp");
    km.policy("pn", "kn");
    let (dp, dn) = (a.dir("persist"), a.dir("volatile"));
    km.ok(&[
        "guardpoint",
        "add",
        "host-b",
        dp.to_str().unwrap(),
        "--policy",
        "pp",
    ]);
    km.ok(&[
        "guardpoint",
        "add",
        "host-b",
        dn.to_str().unwrap(),
        "--policy",
        "pn",
    ]);
    wait_until("both guarded", 30, || a.guarded(&dp) && a.guarded(&dn));
    fs::write(dp.join("f"), b"persistent").unwrap();
    fs::write(dn.join("f"), b"volatile").unwrap();
    // The non-persistent key's material never reaches the disk.
    let sealed = fs::read_to_string(a.root.join(".sec/km_keys.json")).unwrap();
    assert!(
        sealed.contains("\"kp\"") && !sealed.contains("\"kn\""),
        "{sealed}"
    );
    km.kill();
    // Server down: everything keeps working while vmd runs...
    assert_eq!(fs::read(dn.join("f")).unwrap(), b"volatile");
    // ...and after a restart of the agent only persistent keys remain.
    a.ok("voradmin", &["shutdown"]);
    a.start();
    wait_until("re-guarded offline", 30, || {
        a.guarded(&dp) && a.guarded(&dn)
    });
    assert_eq!(fs::read(dp.join("f")).unwrap(), b"persistent");
    assert!(
        fs::read(dn.join("f")).is_err(),
        "non-persistent key survived a restart"
    );
    let st = a.status_json();
    assert_eq!(st["key_manager"]["reachable"], false, "{st}");
    // The server returns: the volatile key is fetched again.
    km.serve();
    wait_until("volatile key back", 30, || {
        fs::read(dn.join("f")).is_ok_and(|d| d == b"volatile")
    });
}

#[test]
fn registration_refusals() {
    let km = Keymgr::start();
    let (a, hw) = agent_for(&km);
    setup_register_host_link(&a);
    // A wrong token.
    let o = register(&a, &km, "not-a-token", "host-c", &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(!a.root.join(".sec/km.json").exists());
    // An expired token.
    let expired = km.token(&["--lifetime", "1"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        register(&a, &km, &expired, "host-c", &[]).status.code(),
        Some(1)
    );
    // A wrong pinned CA (another keymgr's).
    let other = Keymgr::start();
    let good = km.token(&["--max-clients", "1"]);
    let o = register(
        &a,
        &km,
        &good,
        "host-c",
        &[&format!("CA_FILE={}", other.ca().display())],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(!a.root.join(".sec/km.json").exists());
    // The right CA, with hardware association.
    let o = register(&a, &km, &good, "host-c", &["USEHWSIG=Y"]);
    assert!(o.status.success(), "{}", text(&o));
    // The token is now exhausted.
    let (b, _) = agent_for(&km);
    setup_register_host_link(&b);
    assert_eq!(
        register(&b, &km, &good, "host-d", &[]).status.code(),
        Some(1)
    );
    // A clone: the hardware signature changes; vmd refuses to use keys.
    a.start();
    assert!(a.status_json()["key_manager"]["refused"] == false);
    a.ok("voradmin", &["shutdown"]);
    fs::write(&hw, b"cloned hardware").unwrap();
    a.start();
    let st = a.status_json();
    assert_eq!(st["key_manager"]["refused"], true, "{st}");
    assert_eq!(st["keys_available"], false, "{st}");
    assert!(a.ok("vmsec", &["status"]).contains("hardware signature"));
}

/// CTE's registration dialogue, answered through a pseudo-terminal.
#[test]
fn interactive_registration_through_a_pty() {
    let km = Keymgr::start();
    let (a, _) = agent_for(&km);
    setup_register_host_link(&a);
    let token = km.token(&[]);
    let script = r#"
import os, pty, select, sys, time
binary, root, server, token, ca = sys.argv[1:6]
pid, fd = pty.fork()
if pid == 0:
    env = dict(os.environ, GUARDFS_ROOT=root)
    os.execve(binary, [binary], env)
buf = b''
def expect(s, timeout=60):
    global buf
    end = time.time() + timeout
    while s.encode() not in buf:
        r, _, _ = select.select([fd], [], [], max(0, end - time.time()))
        if not r:
            sys.exit('timed out waiting for %r; got %r' % (s, buf))
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            sys.exit('ended waiting for %r; got %r' % (s, buf))
        buf += chunk
    buf = buf[buf.index(s.encode()) + len(s):]
steps = [("continue with agent registration", "Y"), ("primary key manager host name", server),
         ("Is this host name correct", "Y"), ("What is the name of this machine", "host-pty"),
         ("registration token", token), ("profile name", ""), ("host group name", ""),
         ("description for this host", "pty host"), ("Are the above values correct", "Y"),
         ("enable this functionality", "N"), ("CA certificate to pin", ca)]
for prompt, answer in steps:
    expect(prompt)
    os.write(fd, (answer + "\n").encode())
out = buf
while True:
    try:
        c = os.read(fd, 4096)
    except OSError:
        break
    if not c:
        break
    out += c
_, st = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors='replace'))
sys.exit(os.waitstatus_to_exitcode(st))
"#;
    let o = Command::new("python3")
        .args(["-c", script])
        .arg(a.bin.join("register_host"))
        .arg(&a.root)
        .arg(format!("127.0.0.1:{}", km.port))
        .arg(&token)
        .arg(km.ca())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Successfully registered"), "{}", text(&o));
    let reg = fs::read_to_string(a.root.join(".sec/km.json")).unwrap();
    assert!(reg.contains("\"name\": \"host-pty\""), "{reg}");
    let clients = km.ok(&["client", "list"]);
    assert!(clients.to_string().contains("host-pty"), "{clients}");
}

/// Certificates close to expiry are renewed by vmd; `vmutil` renews,
/// reports and unregisters on request; audit records are uploaded.
#[test]
fn certificate_renewal_audit_upload_and_vmutil() {
    let km = Keymgr::start();
    let (a, _) = agent_for(&km);
    setup_register_host_link(&a);
    let vmutil = a.bin.join("vmutil");
    std::os::unix::fs::symlink(VORADMIN, &vmutil).unwrap();
    // 30-day certificates: inside the 60-day renewal window at once.
    let token = km.token(&["--cert-duration", "30"]);
    assert!(register(&a, &km, &token, "host-r", &[]).status.success());
    let identity = a.root.join(".sec/client.pem");
    let first = fs::read(&identity).unwrap();
    a.start();
    wait_until("automatic renewal", 30, || {
        fs::read(&identity).unwrap() != first
    });
    let expiry = a.ok("vmutil", &["certexpiry"]);
    assert!(
        expiry.contains("in 29 days") || expiry.contains("in 30 days"),
        "{expiry}"
    );
    // The renewed identity works: a GuardPoint defined now still arrives.
    km.ok(&["key", "create", "rk"]);
    km.policy("rp", "rk");
    let dir = a.dir("data");
    km.ok(&[
        "guardpoint",
        "add",
        "host-r",
        dir.to_str().unwrap(),
        "--policy",
        "rp",
    ]);
    wait_until("guarded after renewal", 30, || a.guarded(&dir));
    // The policy audits: its records reach the server in batches.
    fs::write(dir.join("f"), b"audited").unwrap();
    let offset = a.root.join(".sec/km_audit.offset");
    wait_until("audit upload", 30, || {
        fs::read_to_string(&offset)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    });
    let before = fs::read(&identity).unwrap();
    a.ok("vmutil", &["renewcerts"]);
    assert_ne!(fs::read(&identity).unwrap(), before);
    assert!(a.ok("vmutil", &["reportstate"]).contains("reported"));
    let shown = km.ok(&["client", "show", "host-r"]);
    assert!(
        shown.to_string().contains(dir.to_str().unwrap()),
        "status report on the server: {shown}"
    );
    a.ok("vmutil", &["unregister"]);
    assert!(!a.root.join(".sec/km.json").exists());
    assert!(a.status_json()["key_manager"].is_null());
    assert!(!a.guarded(&dir));
}

/// Offline unlock: a password-protected host key nobody at hand knows,
/// the key manager unreachable from the host; an administrator answers
/// the host's challenge with `keymgr challenge respond`.
#[test]
fn offline_unlock_by_challenge_response() {
    use std::io::{BufRead, BufReader, Write};
    let mut km = Keymgr::start();
    let (a, _) = agent_for(&km);
    setup_register_host_link(&a);
    let token = km.token(&[]);
    assert!(register(&a, &km, &token, "host-u", &[]).status.success());
    a.start();
    km.ok(&["key", "create", "uk"]);
    km.policy("up", "uk");
    let dir = a.dir("data");
    km.ok(&[
        "guardpoint",
        "add",
        "host-u",
        dir.to_str().unwrap(),
        "--policy",
        "up",
    ]);
    wait_until("guarded", 30, || a.guarded(&dir));
    fs::write(dir.join("f"), b"unlock me").unwrap();
    wait_until("host key escrowed", 30, || {
        a.root.join(".sec/escrow.json").exists()
    });
    a.ok(
        "voradmin",
        &["hostkey", "password", "-p", "forgotten long ago"],
    );
    a.ok("voradmin", &["shutdown"]);
    km.kill();
    a.start();
    wait_until("re-guarded offline", 30, || a.guarded(&dir));
    assert!(a.ok("vmsec", &["status"]).contains("KEYS_AVAILABLE=FALSE"));
    assert!(fs::read(dir.join("f")).is_err());
    let run_challenge = |answer: &dyn Fn(&str) -> String| -> Output {
        let mut child = Command::new(a.bin.join("vmsec"))
            .arg("challenge")
            .env("GUARDFS_ROOT", &a.root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut challenge = String::new();
        let mut line = String::new();
        while out.read_line(&mut line).unwrap() > 0 {
            if let Some(c) = line.trim().strip_prefix("Challenge: ") {
                challenge = c.to_owned();
                break;
            }
            line.clear();
        }
        assert!(!challenge.is_empty(), "no challenge printed");
        let response = answer(&challenge);
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{response}\n").as_bytes())
            .unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
        let mut o = child.wait_with_output().unwrap();
        o.stdout = rest.into_bytes();
        o
    };
    // A made-up response is refused and unlocks nothing.
    let bad = run_challenge(&|_| "AAAAAAAA ".repeat(16));
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(a.ok("vmsec", &["status"]).contains("KEYS_AVAILABLE=FALSE"));
    // The administrator reaches the key manager (the host does not need to).
    km.serve();
    let good = run_challenge(&|c| {
        let o = km.cli(&["challenge", "respond", "host-u", c]);
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    });
    assert!(good.status.success(), "{}", text(&good));
    assert!(text(&good).contains("OK challenge"));
    assert!(a.ok("vmsec", &["status"]).contains("KEYS_AVAILABLE=TRUE"));
    assert_eq!(fs::read(dir.join("f")).unwrap(), b"unlock me");
}

/// `vmutil deletehost`: the host deletes itself at the key manager.
#[test]
fn deletehost_removes_the_client_at_the_key_manager() {
    let km = Keymgr::start();
    let (a, _) = agent_for(&km);
    setup_register_host_link(&a);
    std::os::unix::fs::symlink(VORADMIN, a.bin.join("vmutil")).unwrap();
    let token = km.token(&[]);
    assert!(register(&a, &km, &token, "host-del", &[]).status.success());
    a.start();
    assert!(km.ok(&["client", "list"]).to_string().contains("host-del"));
    a.ok("vmutil", &["deletehost"]);
    assert!(!km.ok(&["client", "list"]).to_string().contains("host-del"));
    assert!(!a.root.join(".sec/km.json").exists());
    assert!(a.status_json()["key_manager"].is_null());
}

/// A key revoked at the key manager while vmd was down is revoked in the
/// running secfs once the restarted vmd has synced.
#[test]
fn revocation_while_vmd_is_down_reaches_secfs() {
    let km = Keymgr::start();
    let (a, _) = agent_for(&km);
    setup_register_host_link(&a);
    let token = km.token(&[]);
    assert!(register(&a, &km, &token, "host-rv", &[]).status.success());
    a.start();
    km.ok(&["key", "create", "rvk", "--persistent", "false"]);
    km.policy("rvp", "rvk");
    let dir = a.dir("data");
    km.ok(&[
        "guardpoint",
        "add",
        "host-rv",
        dir.to_str().unwrap(),
        "--policy",
        "rvp",
    ]);
    wait_until("guarded", 30, || a.guarded(&dir));
    fs::write(dir.join("f"), b"revoke me").unwrap();
    let secfs = a.pid("secfs");
    a.signal("vmd", nix::sys::signal::Signal::SIGKILL);
    // vmd is down: secfs keeps the (non-persistent) key it was given.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fs::read(dir.join("f")).unwrap(), b"revoke me");
    km.ok(&["key", "revoke", "rvk"]);
    a.start();
    assert_eq!(a.pid("secfs"), secfs, "the running secfs was adopted");
    wait_until("revocation reaches the adopted secfs", 30, || {
        fs::read(dir.join("f")).is_err()
    });
}

/// Rules from the key manager (CTE UserSpace's client-rule associations):
/// a rule created there and applied to the host with a key is deployed by
/// vmd (encrypting the directory's clear files in place), reported back
/// with its status, rotated and decrypted on the key manager's word, and
/// withdrawn once removed from the client.
#[test]
fn rules_from_the_key_manager_encrypt_rotate_and_decrypt_on_the_host() {
    let km = Keymgr::start();
    let (a, _) = agent_for(&km);
    setup_register_host_link(&a);
    let token = km.token(&[]);
    let o = register(&a, &km, &token, "host-r", &[]);
    assert!(o.status.success(), "register: {}", text(&o));
    a.start();
    km.ok(&["key", "create", "km_rk", "--mode", "XTS"]);
    let dir = a.dir("ruled");
    fs::create_dir_all(dir.join("tmp")).unwrap();
    fs::write(dir.join("a.txt"), SECRET).unwrap();
    fs::write(dir.join("tmp/b.txt"), SECRET).unwrap();
    let rule = km.ok(&[
        "rule",
        "create",
        "--path",
        dir.to_str().unwrap(),
        "--ignore-directory",
        "tmp",
    ]);
    let name = rule["name"].as_str().unwrap().to_owned();
    assert!(name.starts_with("Rule-"), "{rule}");
    km.ok(&["rule", "apply", "host-r", &name, "--key", "km_rk"]);
    let local_status = |a: &Agent| {
        let o = a.cmd("voradmin", &["--json", "rule", "show", &name]);
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap_or_default()["applied"]
            ["status"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    let t0 = std::time::Instant::now();
    while local_status(&a) != "Encrypted" {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the rule was not encrypted on the host: {}\nrules.log:\n{}\nvmd.log:\n{}",
            text(&a.cmd("voradmin", &["rule", "show", &name])),
            a.log("rules.log"),
            a.log("vmd.log")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !contains(&a.lower(&dir, "a.txt"), SECRET),
        "a.txt not encrypted"
    );
    assert!(
        contains(&a.lower(&dir, "tmp/b.txt"), SECRET),
        "the ignored directory was encrypted"
    );
    assert_eq!(fs::read(dir.join("a.txt")).unwrap(), SECRET);
    // The key manager sees what the host did.
    wait_until("the status reported to the key manager", 120, || {
        km.ok(&["rule", "status", "host-r"])["resources"][0]["reported"]["status"] == "Encrypted"
    });
    // A rule applied to a client cannot be deleted.
    assert!(!km.cli(&["rule", "delete", &name]).status.success());
    // Deep rotation on the key manager's word.
    km.ok(&["key", "rotate", "km_rk"]);
    km.ok(&["rule", "apply", "host-r", &name, "--operation", "rotate"]);
    // Polled without failing on a busy vmd (it may be waiting for secfs).
    let version = |a: &Agent| {
        let o = a.cmd(
            "voradmin",
            &[
                "--json",
                "secfs",
                "iv",
                "get",
                dir.join("a.txt").to_str().unwrap(),
            ],
        );
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap_or_default()["key_version"]
            .as_u64()
    };
    wait_until("version 2 on the host", 120, || {
        version(&a) == Some(2) && local_status(&a) == "Encrypted"
    });
    // Decrypt, then remove it from the client: the host forgets the rule.
    km.ok(&["rule", "apply", "host-r", &name, "--operation", "decrypt"]);
    wait_until("decrypted on the host", 120, || {
        local_status(&a) == "Decrypted"
    });
    assert!(!a.guarded(&dir));
    assert_eq!(fs::read(dir.join("a.txt")).unwrap(), SECRET);
    km.ok(&["rule", "remove", "host-r", &name]);
    wait_until("the rule withdrawn on the host", 120, || {
        a.ok("voradmin", &["rule", "list"]).contains("No rules")
    });
    km.ok(&["rule", "delete", &name]);
}
