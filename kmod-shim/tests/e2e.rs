//! End-to-end tests of secfs: real daemons, real FUSE mounts, real
//! processes. Run as root (CI does).

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::process::Command;
use std::sync::Arc;

use common::*;

const CANARY: &[u8] = b"GUARDFS-PLAINTEXT-CANARY-";

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn lower_files_carry_header_and_never_plaintext() {
    for mode in ENCRYPTED_MODES {
        let gp = Gp::new(mode);
        for (name, size) in [
            ("empty", 0usize),
            ("one", 1),
            ("page", 4096),
            ("odd", 5000),
            ("big", 3 << 20),
        ] {
            let data: Vec<u8> = CANARY.iter().copied().cycle().take(size).collect();
            fs::write(gp.path(name), &data).unwrap();
            assert_eq!(
                fs::metadata(gp.path(name)).unwrap().len(),
                size as u64,
                "{mode} {name} logical size"
            );
            assert_eq!(
                fs::read(gp.path(name)).unwrap(),
                data,
                "{mode} {name} read back"
            );
            let lower = fs::read(gp.lower(name)).unwrap();
            assert_eq!(&lower[..8], b"GuardFS\0", "{mode} {name}: header magic");
            assert_eq!(
                lower.len() as u64,
                lower_size(mode, size as u64),
                "{mode} {name}: lower size"
            );
            assert!(
                !contains(&lower, CANARY),
                "{mode} {name}: plaintext in the lower file"
            );
        }
        // Names and directories stay in clear, as in CTE.
        fs::create_dir(gp.path("dir")).unwrap();
        assert!(gp.lower("dir").is_dir());
    }
}

#[test]
fn clear_mode_is_passthrough() {
    let gp = Gp::new("clear");
    fs::write(gp.path("f"), b"visible").unwrap();
    assert_eq!(fs::read(gp.lower("f")).unwrap(), b"visible");
}

#[test]
fn remount_preserves_every_byte() {
    for mode in ALL_MODES {
        let mut gp = Gp::new(mode);
        let sizes = [
            0usize,
            1,
            15,
            16,
            4095,
            4096,
            4097,
            5000,
            65536 + 3,
            (1 << 20) + 17,
        ];
        for (i, s) in sizes.iter().enumerate() {
            fs::write(gp.path(&format!("f{i}")), bytes(i as u64, *s)).unwrap();
        }
        gp.unmount();
        gp.mount(mode, &[]);
        for (i, s) in sizes.iter().enumerate() {
            assert_eq!(
                fs::read(gp.path(&format!("f{i}"))).unwrap(),
                bytes(i as u64, *s),
                "{mode} size {s}"
            );
        }
    }
}

#[test]
fn eight_threads_disjoint_and_overlapping_writes() {
    for mode in ENCRYPTED_MODES {
        let gp = Gp::new(mode);
        let path = gp.path("shared");
        let f = Arc::new(
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)
                .unwrap(),
        );
        const REGION: u64 = 100_000; // deliberately not unit aligned
        const OVERLAP: u64 = 8 * REGION; // start of a region every thread writes
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let f = f.clone();
                std::thread::spawn(move || {
                    let mine = bytes(t + 100, REGION as usize);
                    for chunk in 0..10 {
                        let off = chunk * 10_000;
                        f.write_all_at(
                            &mine[off as usize..(off + 10_000) as usize],
                            t * REGION + off,
                        )
                        .unwrap();
                        f.write_all_at(&[t as u8 + 1; 3000], OVERLAP + chunk * 777)
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(f);
        let all = fs::read(&path).unwrap();
        for t in 0..8u64 {
            let got = &all[(t * REGION) as usize..((t + 1) * REGION) as usize];
            assert_eq!(
                got,
                &bytes(t + 100, REGION as usize)[..],
                "{mode}: thread {t} region"
            );
        }
        let overlap = &all[OVERLAP as usize..];
        assert!(
            overlap.iter().all(|&b| (1..=8).contains(&b)),
            "{mode}: torn overlapping writes"
        );
    }
}

#[test]
fn tar_extraction_of_a_source_tree_round_trips() {
    for mode in ["xts", "gcm"] {
        let gp = Gp::new(mode);
        let d = gp.dir.to_str().unwrap();
        let out = sh(&format!(
            "tar -C /usr/include -cf - linux | tar -C {d} -xf - && diff -r /usr/include/linux {d}/linux"
        ));
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let count = sh(&format!("find {d}/linux -type f | wc -l"));
        assert!(
            String::from_utf8_lossy(&count.stdout)
                .trim()
                .parse::<u32>()
                .unwrap()
                > 100
        );
    }
}

#[test]
fn sparse_files_keep_holes_in_the_lower_file() {
    for mode in ENCRYPTED_MODES {
        let gp = Gp::new(mode);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(gp.path("sparse"))
            .unwrap();
        f.write_all_at(b"end", 100 << 20).unwrap();
        drop(f);
        let lower = fs::metadata(gp.lower("sparse")).unwrap();
        assert!(
            lower.blocks() * 512 < 1 << 20,
            "{mode}: lower file not sparse ({} blocks)",
            lower.blocks()
        );
        let mut f = File::open(gp.path("sparse")).unwrap();
        let mut buf = vec![1u8; 1 << 20];
        f.seek(SeekFrom::Start(50 << 20)).unwrap();
        f.read_exact(&mut buf).unwrap();
        assert!(
            buf.iter().all(|&b| b == 0),
            "{mode}: hole does not read as zeros"
        );
        let mut tail = [0u8; 3];
        f.read_exact_at(&mut tail, 100 << 20).unwrap();
        assert_eq!(&tail, b"end");
    }
}

#[test]
fn fsynced_files_survive_kill_9_and_remount_recovers() {
    for mode in ENCRYPTED_MODES {
        let mut gp = Gp::new(mode);
        let mut expect = Vec::new();
        for i in 0..6u64 {
            let data = bytes(i, 10_000 + i as usize * 3000);
            let mut f = File::create(gp.path(&format!("durable{i}"))).unwrap();
            f.write_all(&data).unwrap();
            f.sync_all().unwrap();
            expect.push(data);
        }
        // A writer keeps going while the daemon is killed.
        let writer_path = gp.path("busy");
        let writer = std::thread::spawn(move || {
            let Ok(mut f) = File::create(&writer_path) else {
                return;
            };
            let chunk = vec![7u8; 65536];
            while f.write_all(&chunk).is_ok() {}
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        gp.kill9();
        writer.join().unwrap();
        let err = fs::metadata(&gp.dir).unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(libc::ENOTCONN),
            "{mode}: dead mount should report ENOTCONN"
        );
        gp.mount(mode, &[]);
        for (i, data) in expect.iter().enumerate() {
            assert_eq!(
                &fs::read(gp.path(&format!("durable{i}"))).unwrap(),
                data,
                "{mode}: durable{i}"
            );
        }
    }
}

#[test]
fn sigterm_unmounts_cleanly() {
    let mut gp = Gp::new("xts");
    fs::write(gp.path("f"), b"x").unwrap();
    let pid = gp.pid.take().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_until("daemon exit", || !pid_alive(pid));
    assert!(!is_mounted(&gp.dir));
    assert!(gp.log_text().contains("unmount"), "{}", gp.log_text());
}

#[test]
fn plaintext_left_in_the_lower_dir_is_eio_not_garbage() {
    let gp = Gp::new_with("xts", &[], |dir| {
        fs::write(dir.join("old.txt"), b"plaintext from before guarding").unwrap()
    });
    // stat shows the file as it is.
    assert_eq!(fs::metadata(gp.path("old.txt")).unwrap().len(), 30);
    let err = fs::read(gp.path("old.txt")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert!(
        gp.log_text().contains("old.txt"),
        "log must name the file:\n{}",
        gp.log_text()
    );
    // New files next to it work as usual.
    fs::write(gp.path("new"), b"data").unwrap();
    assert_eq!(fs::read(gp.path("new")).unwrap(), b"data");
}

#[test]
fn damaged_header_is_eio() {
    let mut gp = Gp::new("gcm");
    fs::write(gp.path("f"), bytes(1, 9000)).unwrap();
    gp.unmount();
    // Flip a byte of the wrapped key in the lower file.
    let f = OpenOptions::new()
        .write(true)
        .read(true)
        .open(gp.dir.join("f"))
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 150).unwrap();
    f.write_all_at(&[b[0] ^ 1], 150).unwrap();
    drop(f);
    gp.mount("gcm", &[]);
    assert_eq!(
        fs::read(gp.path("f")).unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
}

#[test]
fn existing_files_keep_their_mode() {
    let mut gp = Gp::new("xts");
    fs::write(gp.path("old"), bytes(3, 7000)).unwrap();
    gp.unmount();
    gp.mount("gcm", &[]);
    assert_eq!(fs::read(gp.path("old")).unwrap(), bytes(3, 7000));
    assert_eq!(fs::metadata(gp.path("old")).unwrap().len(), 7000);
    fs::write(gp.path("new"), bytes(4, 7000)).unwrap();
    assert_eq!(fs::metadata(gp.path("new")).unwrap().len(), 7000);
    let hdr = fs::read(gp.lower("new")).unwrap();
    assert_eq!(hdr[10], 3, "new files use the GuardPoint's mode (gcm)");
    assert_eq!(
        fs::read(gp.lower("old")).unwrap()[10],
        1,
        "old file stays xts"
    );
}

#[test]
fn file_operations() {
    for mode in ALL_MODES {
        let gp = Gp::new(mode);
        let p = |n: &str| gp.path(n);
        // truncate down and up
        fs::write(p("t"), bytes(9, 10_000)).unwrap();
        let f = OpenOptions::new().write(true).open(p("t")).unwrap();
        f.set_len(5000).unwrap();
        f.set_len(12_000).unwrap();
        drop(f);
        let got = fs::read(p("t")).unwrap();
        assert_eq!(&got[..5000], &bytes(9, 10_000)[..5000], "{mode}");
        assert!(
            got[5000..].iter().all(|&b| b == 0),
            "{mode}: truncate up reads zeros"
        );
        // O_APPEND
        fs::write(p("a"), b"abc").unwrap();
        let mut f = OpenOptions::new().append(true).open(p("a")).unwrap();
        f.write_all(b"def").unwrap();
        drop(f);
        assert_eq!(fs::read(p("a")).unwrap(), b"abcdef", "{mode}");
        // O_DIRECT open
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(p("a"))
            .unwrap();
        // O_DIRECT wants block-aligned buffers (a `clear` GuardPoint passes
        // the I/O to the lower ext4, which enforces it).
        let mut raw = vec![0u8; 3 * 4096];
        let start = raw.as_ptr().align_offset(4096);
        let n = f.read_at(&mut raw[start..start + 4096], 0).unwrap();
        assert_eq!(&raw[start..start + n], b"abcdef", "{mode}");
        // writes past EOF leave zeros
        let f = OpenOptions::new().write(true).open(p("a")).unwrap();
        f.write_all_at(b"Z", 10_000).unwrap();
        drop(f);
        let got = fs::read(p("a")).unwrap();
        assert_eq!(got.len(), 10_001);
        assert!(got[6..10_000].iter().all(|&b| b == 0), "{mode}");
        // files over 4 GiB
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(p("huge"))
            .unwrap();
        f.write_all_at(b"past4g", (5 << 30) + 123).unwrap();
        let mut b = [0u8; 6];
        f.read_exact_at(&mut b, (5 << 30) + 123).unwrap();
        assert_eq!(&b, b"past4g");
        assert_eq!(fs::metadata(p("huge")).unwrap().len(), (5 << 30) + 129);
        // SEEK_END sees the logical size
        let mut f = File::open(p("t")).unwrap();
        assert_eq!(f.seek(SeekFrom::End(0)).unwrap(), 12_000, "{mode}");
        // fallocate, SEEK_DATA / SEEK_HOLE
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(p("fa"))
            .unwrap();
        nix::fcntl::fallocate(&f, nix::fcntl::FallocateFlags::empty(), 0, 20_000).unwrap();
        assert_eq!(
            f.metadata().unwrap().len(),
            20_000,
            "{mode}: fallocate extends"
        );
        f.write_all_at(b"data", 1 << 20).unwrap();
        let data = nix::unistd::lseek(&f, 30_000, nix::unistd::Whence::SeekData).unwrap();
        assert!(
            (30_000..=1 << 20).contains(&data),
            "{mode}: SEEK_DATA {data}"
        );
        let hole = nix::unistd::lseek(&f, 0, nix::unistd::Whence::SeekHole).unwrap();
        assert!(
            (0..=(1 << 20) + 4).contains(&hole),
            "{mode}: SEEK_HOLE {hole}"
        );
        nix::fcntl::fallocate(
            &f,
            nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
            (1 << 20) - 100,
            102,
        )
        .unwrap();
        let mut b = [9u8; 4];
        f.read_exact_at(&mut b, 1 << 20).unwrap();
        assert_eq!(&b, b"\0\0ta", "{mode}: punch hole");
    }
}

/// Without the writeback cache secfs answers SEEK_DATA/SEEK_HOLE from the
/// lower file's holes. (With it, the kernel holds writes secfs has not
/// seen, so the kernel's generic answer is used: all data up to EOF.)
#[test]
fn seek_hole_finds_lower_holes_without_writeback_cache() {
    for mode in ALL_MODES {
        let gp = Gp::new_with(mode, &["--no-writeback-cache"], |_| {});
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(gp.path("s"))
            .unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"tail", 10 << 20).unwrap();
        let hole = nix::unistd::lseek(&f, 0, nix::unistd::Whence::SeekHole).unwrap();
        assert!((4..=16384).contains(&hole), "{mode}: SEEK_HOLE {hole}");
        let data = nix::unistd::lseek(&f, 8192 * 2, nix::unistd::Whence::SeekData).unwrap();
        assert!(data > 16384 && data <= 10 << 20, "{mode}: SEEK_DATA {data}");
        let end = nix::unistd::lseek(&f, (10 << 20) + 4, nix::unistd::Whence::SeekData);
        assert_eq!(end, Err(nix::errno::Errno::ENXIO), "{mode}");
    }
}

#[test]
fn shared_writable_mmap() {
    for mode in ALL_MODES {
        let gp = Gp::new(mode);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(gp.path("m"))
            .unwrap();
        f.set_len(3 * 4096 + 100).unwrap();
        let out = Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import mmap\nf=open('{}','r+b')\nm=mmap.mmap(f.fileno(),0)\nm[4090:4110]=b'x'*20\nm.flush()\nm.close()",
                gp.path("m").display()
            ))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let got = fs::read(gp.path("m")).unwrap();
        assert_eq!(&got[4090..4110], &[b'x'; 20], "{mode}");
        assert!(got[..4090].iter().all(|&b| b == 0));
    }
}

#[test]
fn links_special_files_xattrs_and_locks() {
    let gp = Gp::new("xts");
    let p = |n: &str| gp.path(n);
    fs::write(p("f"), b"content").unwrap();
    fs::hard_link(p("f"), p("h")).unwrap();
    assert_eq!(
        fs::metadata(p("f")).unwrap().ino(),
        fs::metadata(p("h")).unwrap().ino()
    );
    assert_eq!(fs::metadata(p("f")).unwrap().nlink(), 2);
    assert_eq!(fs::read(p("h")).unwrap(), b"content");
    std::os::unix::fs::symlink("f", p("s")).unwrap();
    assert_eq!(fs::read_link(p("s")).unwrap().to_str(), Some("f"));
    assert_eq!(fs::read(p("s")).unwrap(), b"content");
    nix::unistd::mkfifo(&p("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &fs::symlink_metadata(p("fifo")).unwrap().file_type()
    ));
    let _sock = std::os::unix::net::UnixListener::bind(p("sock")).unwrap();
    nix::sys::stat::mknod(
        &p("null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    fs::write(p("null"), b"discarded").unwrap();
    // xattrs pass through, ours stay hidden
    let set = |n: &str, v: &[u8]| {
        let out = Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import os;os.setxattr('{}','{}',b{:?})",
                p("f").display(),
                n,
                String::from_utf8_lossy(v)
            ))
            .output()
            .unwrap();
        out.status.success()
    };
    assert!(set("user.color", b"blue"));
    assert!(set("trusted.owner", b"ops"));
    assert!(
        !set("trusted.guardfs.mode", b"clear"),
        "private xattr must not be settable"
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import os;print(sorted(os.listxattr('{}')))",
            p("f").display()
        ))
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.contains("user.color") && list.contains("trusted.owner"),
        "{list}"
    );
    assert!(!list.contains("guardfs"), "private xattr visible: {list}");
    // flock and POSIX locks are seen by other processes
    let f = File::open(p("f")).unwrap();
    let _held = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    let out = sh(&format!("flock -n {} true", p("f").display()));
    assert!(!out.status.success(), "second flock should fail while held");
    let out = sh(&format!(
        "python3 -c \"import fcntl,time,os; f=open('{0}','r+'); fcntl.lockf(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(2)\" & sleep 0.5; python3 -c \"import fcntl; f=open('{0}','r+');\ntry:\n  fcntl.lockf(f, fcntl.LOCK_EX|fcntl.LOCK_NB); print('GOT')\nexcept OSError: print('BLOCKED')\"; wait",
        p("h").display()
    ));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("BLOCKED"),
        "{out:?}"
    );
}

#[test]
fn unix_permissions_hold_for_every_user() {
    let gp = Gp::new("xts");
    fs::set_permissions(&gp.dir, fs::Permissions::from_mode(0o777)).unwrap();
    fs::write(gp.path("secret"), b"root only").unwrap();
    fs::set_permissions(gp.path("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    let nobody = |cmd: &str| {
        sh(&format!(
            "setpriv --reuid=65534 --regid=65534 --clear-groups sh -c '{cmd}'"
        ))
    };
    let out = nobody(&format!("cat {}", gp.path("secret").display()));
    assert!(!out.status.success(), "nobody read a 0600 root file");
    let out = nobody(&format!("echo mine > {}", gp.path("nobody.txt").display()));
    assert!(out.status.success(), "{out:?}");
    let m = fs::metadata(gp.path("nobody.txt")).unwrap();
    assert_eq!(
        (m.uid(), m.gid()),
        (65534, 65534),
        "files are owned by their creator"
    );
    assert_eq!(fs::read(gp.path("nobody.txt")).unwrap(), b"mine\n");
}

#[test]
fn cli_errors_are_clear() {
    let tmp = tempfile::tempdir_in("/var/tmp").unwrap();
    let key = tmp.path().join("k");
    assert!(run(&["genkey", key.to_str().unwrap()]).status.success());
    let code = |args: &[&str]| run(args).status.code().unwrap();
    // genkey refuses to overwrite
    assert_eq!(code(&["genkey", key.to_str().unwrap()]), 14);
    // missing directory
    assert_eq!(
        code(&[
            "mount",
            "/nonexistent/gp",
            "--key-file",
            key.to_str().unwrap()
        ]),
        12
    );
    // a file, not a directory
    assert_eq!(
        code(&[
            "mount",
            key.to_str().unwrap(),
            "--key-file",
            key.to_str().unwrap()
        ]),
        12
    );
    let dir = tmp.path().join("gp");
    fs::create_dir(&dir).unwrap();
    // bad key files
    let bad = tmp.path().join("bad");
    fs::write(&bad, "not hex\n").unwrap();
    fs::set_permissions(&bad, fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        code(&[
            "mount",
            dir.to_str().unwrap(),
            "--key-file",
            bad.to_str().unwrap()
        ]),
        14
    );
    fs::write(&bad, "ab".repeat(32)).unwrap();
    fs::set_permissions(&bad, fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(
        code(&[
            "mount",
            dir.to_str().unwrap(),
            "--key-file",
            bad.to_str().unwrap()
        ]),
        14
    );
    assert_eq!(
        code(&[
            "mount",
            dir.to_str().unwrap(),
            "--key-file",
            "/nonexistent/key"
        ]),
        14
    );
    // bad mode
    assert_eq!(
        code(&[
            "mount",
            dir.to_str().unwrap(),
            "--key-file",
            key.to_str().unwrap(),
            "--mode",
            "rot13"
        ]),
        2
    );
    // not mounted
    assert_eq!(code(&["umount", dir.to_str().unwrap()]), 16);
    // not root
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            SECFS,
            "mount",
            dir.to_str().unwrap(),
            "--key-file",
            key.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(10), "{out:?}");
    // no /dev/fuse (a private mount namespace with an empty /dev)
    let out = sh(&format!(
        "unshare -m sh -c 'mount -t tmpfs none /dev && {SECFS} mount {} --key-file {}'",
        dir.display(),
        key.display()
    ));
    assert_eq!(out.status.code(), Some(11), "{out:?}");
    // already mounted
    let gp = Gp::new("xts");
    assert_eq!(
        code(&[
            "mount",
            gp.dir.to_str().unwrap(),
            "--key-file",
            gp.key.to_str().unwrap()
        ]),
        13
    );
    // busy
    let held = File::create(gp.path("held")).unwrap();
    assert_eq!(code(&["umount", gp.dir.to_str().unwrap()]), 17);
    drop(held);
}

/// With FUSE_HANDLE_KILLPRIV_V2 secfs itself clears the set-user-id bit
/// when an unprivileged process writes or truncates, and file capabilities
/// on any write, as the kernel does for local filesystems.
#[test]
fn writes_clear_setid_bits_and_capabilities() {
    for mode in ["xts", "clear"] {
        let gp = Gp::new(mode);
        fs::set_permissions(&gp.dir, fs::Permissions::from_mode(0o777)).unwrap();
        for (name, how) in [("w", "echo x >> {}"), ("t", "truncate -s 1 {}")] {
            let p = gp.path(name);
            fs::write(&p, b"#!/bin/sh\n").unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o4777)).unwrap();
            assert_eq!(
                fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
                0o4777
            );
            let cmd = how.replace("{}", p.to_str().unwrap());
            let out = sh(&format!(
                "setpriv --reuid=65534 --regid=65534 --clear-groups sh -c '{cmd}'"
            ));
            assert!(out.status.success(), "{mode} {name}: {out:?}");
            assert_eq!(
                fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
                0o777,
                "{mode} {name}: set-user-id must be cleared by an unprivileged {name}"
            );
        }
        // A file capability (cap_net_raw, permitted) goes away on write.
        let p = gp.path("cap");
        fs::write(&p, b"binary").unwrap();
        let set = Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import os,struct;os.setxattr('{}','security.capability',struct.pack('<IIIII',0x02000001,1<<13,0,0,0))",
                p.display()
            ))
            .output()
            .unwrap();
        assert!(set.status.success(), "{set:?}");
        let list = || {
            let o = Command::new("python3")
                .arg("-c")
                .arg(format!("import os;print(os.listxattr('{}'))", p.display()))
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        assert!(list().contains("security.capability"));
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b" more").unwrap();
        drop(f);
        assert!(
            !list().contains("security.capability"),
            "{mode}: capability survived a write"
        );
    }
}
