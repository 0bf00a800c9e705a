//! The ioctl channel end to end: a real `secfs serve` process with its
//! control node mounted, driven through real ioctls. The test binary
//! itself is named as the trusted "vmd" (`--vmd` is this executable), so
//! its requests are authorized and anything else's are not.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;
use guardfs_crypto::Mode;
use guardfs_shim::ctl::client::{Client, ClientError};
use guardfs_shim::ctl::proto::{Op, Request, SERVICE_INDEX};
use guardfs_shim::vfs::Errno;

struct Service {
    base: tempfile::TempDir,
    ctl: PathBuf,
    audit: PathBuf,
    log: PathBuf,
    child: Child,
}

impl Service {
    fn start() -> Service {
        assert!(
            nix::unistd::geteuid().is_root(),
            "needs root (CI runs as root)"
        );
        let base = tempfile::Builder::new()
            .prefix("guardfs-ctl")
            .tempdir_in("/var/tmp")
            .unwrap();
        let ctl = base.path().join("ctl");
        let blobs = base.path().join("blobs");
        fs::create_dir(&blobs).unwrap();
        let audit = base.path().join("audit.log");
        let log = base.path().join("secfs.log");
        let me = std::env::current_exe().unwrap();
        let child = Command::new(SECFS)
            .args([
                "serve",
                "--vmd",
                me.to_str().unwrap(),
                "--ctl-dir",
                ctl.to_str().unwrap(),
            ])
            .args([
                "--blob-dir",
                blobs.to_str().unwrap(),
                "--audit-log",
                audit.to_str().unwrap(),
            ])
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log).unwrap())
            .stderr(fs::File::options().append(true).open(&log).unwrap())
            .spawn()
            .unwrap();
        let control = ctl.join("control");
        wait_until("control node", || control.exists());
        Service {
            base,
            ctl,
            audit,
            log,
            child,
        }
    }

    fn client(&self) -> Client {
        Client::connect(&self.ctl).unwrap_or_else(|e| panic!("{e}\nlog:\n{}", self.log_text()))
    }

    fn gp(&self, name: &str) -> PathBuf {
        let p = self.base.path().join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

fn guard(
    c: &mut Client,
    dir: &Path,
    key: Option<&str>,
    mode: Mode,
) -> Result<Vec<u8>, ClientError> {
    c.send(&Request::Guard {
        path: dir.to_str().unwrap().into(),
        mode,
        key: key.map(str::to_owned),
        policy: None,
        host: None,
    })
}

fn push(c: &mut Client, name: &str, version: u32, byte: u8) {
    c.send(&Request::PushKey {
        name: name.into(),
        version,
        mode: Mode::Xts,
        material: [byte; 32],
    })
    .unwrap();
}

fn errno_of(r: Result<Vec<u8>, ClientError>) -> Errno {
    r.unwrap_err().errno().expect("an errno")
}

#[test]
fn guard_write_rotate_revoke_unguard() {
    let svc = Service::start();
    let mut c = svc.client();
    let dir = svc.gp("gp");
    push(&mut c, "k1", 1, 0x11);
    guard(&mut c, &dir, Some("k1"), Mode::Xts).unwrap();
    assert!(is_mounted(&dir), "log:\n{}", svc.log_text());
    fs::write(dir.join("old"), b"written under v1").unwrap();
    // Rotation: new files get v2, old ones still open with v1.
    push(&mut c, "k1", 2, 0x22);
    fs::write(dir.join("new"), b"written under v2").unwrap();
    let list = c.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].path, dir.to_str().unwrap());
    assert_eq!(list[0].keys, 2, "two versions of k1");
    // Unguard: the lower files are ciphertext with the right key versions.
    c.send(&Request::Unguard {
        path: dir.to_str().unwrap().into(),
        lazy: false,
    })
    .unwrap();
    assert!(!is_mounted(&dir));
    let old = fs::read(dir.join("old")).unwrap();
    let new = fs::read(dir.join("new")).unwrap();
    assert_eq!(&old[..8], b"GuardFS\0");
    let hv = |b: &[u8]| {
        guardfs_crypto::Header::parse(&b[..4096])
            .unwrap()
            .key_version
    };
    assert_eq!((hv(&old), hv(&new)), (1, 2));
    // Guard again: the same bytes come back.
    guard(&mut c, &dir, Some("k1"), Mode::Xts).unwrap();
    assert_eq!(fs::read(dir.join("old")).unwrap(), b"written under v1");
    assert_eq!(fs::read(dir.join("new")).unwrap(), b"written under v2");
    // Revoking v1 makes the old file unreadable, the new one stays.
    c.send(&Request::RevokeKey {
        name: "k1".into(),
        version: 1,
    })
    .unwrap();
    assert!(fs::read(dir.join("old")).is_err());
    assert_eq!(fs::read(dir.join("new")).unwrap(), b"written under v2");
    // And pushing it back makes it readable again.
    push(&mut c, "k1", 1, 0x11);
    assert_eq!(fs::read(dir.join("old")).unwrap(), b"written under v1");
    // Guarding twice, or a missing directory, is refused.
    assert_eq!(
        errno_of(guard(&mut c, &dir, Some("k1"), Mode::Xts)),
        Errno::EEXIST
    );
    let missing = svc.base.path().join("missing");
    assert_eq!(
        errno_of(guard(&mut c, &missing, Some("k1"), Mode::Xts)),
        Errno::ENOENT
    );
}

#[test]
fn guarded_without_key_refuses_io_until_key_arrives() {
    let svc = Service::start();
    let mut c = svc.client();
    let dir = svc.gp("gp");
    guard(&mut c, &dir, Some("later"), Mode::Gcm).unwrap();
    assert_eq!(c.list().unwrap()[0].keys, 0, "keys unavailable");
    // No key: creating contents fails, nothing is written in clear.
    assert!(fs::write(dir.join("f"), b"secret").is_err());
    push(&mut c, "later", 1, 0x33);
    fs::write(dir.join("f"), b"secret").unwrap();
    assert_eq!(fs::read(dir.join("f")).unwrap(), b"secret");
}

/// A root process that is not vmd is refused, and the refusal is audited.
#[test]
fn ioctl_from_another_process_is_refused_and_audited() {
    let svc = Service::start();
    let control = svc.ctl.join("control");
    let status = Request::Status {
        index: SERVICE_INDEX,
    }
    .encode(1)
    .unwrap();
    let py = format!(
        "import fcntl,errno\nf=open('{}','r+b',buffering=0)\nb=bytearray(bytes.fromhex('{}'))\n\
         try:\n    fcntl.ioctl(f,{},b,True)\n    print('ALLOWED')\nexcept OSError as e:\n    print('ERR', e.errno)\n",
        control.display(),
        status
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
        Op::Status.ioctl_cmd()
    );
    let out = Command::new("python3").arg("-c").arg(py).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.trim(), format!("ERR {}", libc::EPERM), "{out:?}");
    wait_until("audit record", || {
        fs::read_to_string(&svc.audit)
            .unwrap_or_default()
            .contains("control ioctl refused")
    });
    let audit = fs::read_to_string(&svc.audit).unwrap();
    assert!(audit.contains("caller is not the installed vmd"), "{audit}");
    // A non-root user cannot even open the node.
    let out = Command::new("su")
        .args([
            "nobody",
            "-s",
            "/bin/sh",
            "-c",
            &format!("cat {} 2>&1; echo rc=$?", control.display()),
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rc=1"),
        "{out:?}"
    );
    // The trusted caller still works.
    svc.client().status(SERVICE_INDEX).unwrap();
}

/// Random, truncated, oversized, mutated and replayed requests are all
/// refused, and none of them changes anything.
#[test]
fn fuzzed_ioctls_are_refused_without_side_effects() {
    let svc = Service::start();
    let mut c = svc.client();
    let dir = svc.gp("gp");
    push(&mut c, "k", 1, 0x44);
    guard(&mut c, &dir, Some("k"), Mode::Xts).unwrap();
    fs::write(dir.join("f"), b"keep me").unwrap();
    let before = (c.status(SERVICE_INDEX).unwrap(), c.list().unwrap());

    let good: Vec<Vec<u8>> = vec![
        Request::PushKey {
            name: "k".into(),
            version: 9,
            mode: Mode::Xts,
            material: [5; 32],
        }
        .encode(1)
        .unwrap(),
        Request::RevokeKey {
            name: "k".into(),
            version: 1,
        }
        .encode(1)
        .unwrap(),
        Request::Unguard {
            path: dir.to_str().unwrap().into(),
            lazy: true,
        }
        .encode(1)
        .unwrap(),
        Request::Guard {
            path: "/tmp".into(),
            mode: Mode::Xts,
            key: Some("k".into()),
            policy: None,
            host: None,
        }
        .encode(1)
        .unwrap(),
    ];
    let ops = [Op::PushKey, Op::RevokeKey, Op::Unguard, Op::Guard];
    let mut refused = 0;
    for i in 0..3000u64 {
        let r = bytes(i, 8);
        let k = (r[0] as usize) % ops.len();
        let (op, mut buf) = (ops[k], good[k].clone());
        // Every request here is a replay (seq 1 is long used) or broken.
        match r[1] % 6 {
            0 => buf = bytes(i ^ 0xdead, op.size()), // random bytes
            1 => {
                // any header field but the sequence number
                let at =
                    [0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 25, 31][usize::from(r[2]) % 15];
                buf[at] ^= r[3] | 1;
            }
            2 => {
                // a field after its terminating zero, or a reserved byte
                let at = 32 + 60 + usize::from(r[2]) % 4;
                buf[at] = b'x';
                buf[8] = 0xff; // fresh seq, so only the field is wrong
            }
            3 => {
                // truncated or oversized: the size in the command differs
                let size = (op.size() as i64 + i64::from(r[2]) - 128).clamp(0, 0x3fff) as usize;
                let cmd = (op.ioctl_cmd() & !(0x3fff << 16)) | ((size as u32) << 16);
                let mut b = vec![0u8; size];
                let n = size.min(buf.len());
                b[..n].copy_from_slice(&buf[..n]);
                if size != op.size() {
                    assert_eq!(c.send_raw(cmd, &mut b), Err(Errno::ENOTTY), "size {size}");
                    refused += 1;
                }
                continue;
            }
            4 => {} // a plain replay of seq 1
            _ => {
                // unknown command numbers
                let cmd = (op.ioctl_cmd() & !0xff) | u32::from(r[2] | 0x40);
                let _ = c.send_raw(cmd, &mut buf);
                refused += 1;
                continue;
            }
        }
        assert!(
            c.send_raw(op.ioctl_cmd(), &mut buf).is_err(),
            "request {i} was accepted"
        );
        refused += 1;
    }
    assert!(refused > 2500);
    let after = (c.status(SERVICE_INDEX).unwrap(), c.list().unwrap());
    assert_eq!(before, after, "refused requests changed the service");
    assert_eq!(fs::read(dir.join("f")).unwrap(), b"keep me");
    assert!(pid_alive(svc.child.id()));
}

/// SIGTERM unguards everything and ends the service.
#[test]
fn sigterm_unguards_and_exits() {
    let mut svc = Service::start();
    let mut c = svc.client();
    let dir = svc.gp("gp");
    push(&mut c, "k", 1, 0x55);
    guard(&mut c, &dir, Some("k"), Mode::Xts).unwrap();
    drop(c);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(svc.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = svc.child.wait().unwrap();
    assert!(st.success(), "{st:?}\n{}", svc.log_text());
    assert!(!is_mounted(&dir));
}

/// The key rule holds across the GuardPoints of one service, which share
/// one key store: a file's bytes copied (on the lower file system) from a
/// GuardPoint using `k1` into one using `k2` are refused there (EIO, with
/// an audit record naming both keys), though the service holds `k1`; in a
/// GuardPoint whose key is `k1` too, the same bytes read as they should.
#[test]
fn a_file_from_another_guard_point_is_refused_under_another_key() {
    let svc = Service::start();
    let mut c = svc.client();
    let (one, two, three) = (svc.gp("one"), svc.gp("two"), svc.gp("three"));
    push(&mut c, "k1", 1, 0x11);
    push(&mut c, "k2", 1, 0x22);
    guard(&mut c, &one, Some("k1"), Mode::Xts).unwrap();
    guard(&mut c, &two, Some("k2"), Mode::Gcm).unwrap();
    guard(&mut c, &three, Some("k1"), Mode::CbcCs1).unwrap();
    // The lower directories, through the service's own fds on them.
    let lower: Vec<PathBuf> = [&one, &two, &three]
        .iter()
        .map(|d| lower_fd_of(svc.child.id(), d))
        .collect();
    let low = |i: usize, name: &str| lower[i].join(name);
    fs::write(one.join("f"), b"secret of the first GuardPoint").unwrap();
    let bytes = fs::read(low(0, "f")).unwrap();
    fs::write(low(1, "f"), &bytes).unwrap();
    fs::write(low(2, "f"), &bytes).unwrap();
    let r = fs::read(two.join("f"));
    assert_eq!(r.map_err(|e| e.raw_os_error()), Err(Some(libc::EIO)));
    assert_eq!(fs::read(low(1, "f")).unwrap(), bytes, "left as it was");
    assert_eq!(
        fs::read(three.join("f")).unwrap(),
        b"secret of the first GuardPoint"
    );
    let want = format!("Res[{}/f] Key[k2] Found[k1]", two.display());
    let audit = || fs::read_to_string(&svc.audit).unwrap_or_default();
    for _ in 0..100 {
        if audit().contains(&want) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!(
        "no `{want}` in the audit log:\n{}\nlog:\n{}",
        audit(),
        svc.log_text()
    );
}
