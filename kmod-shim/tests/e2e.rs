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
        let mut gp = Gp::new(mode);
        let files = [
            ("empty", 0usize),
            ("one", 1),
            ("page", 4096),
            ("odd", 5000),
            ("big", 3 << 20),
        ];
        let data = |size: usize| -> Vec<u8> { CANARY.iter().copied().cycle().take(size).collect() };
        let reads_back = |gp: &Gp, name: &str, size: usize, when: &str| {
            assert_eq!(
                fs::metadata(gp.path(name)).unwrap().len(),
                size as u64,
                "{mode} {name} logical size {when}"
            );
            assert_eq!(
                fs::read(gp.path(name)).unwrap(),
                data(size),
                "{mode} {name} read back {when}"
            );
        };
        for (name, size) in files {
            fs::write(gp.path(name), data(size)).unwrap();
            reads_back(&gp, name, size, "");
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
        // What is on disk decrypts to the same bytes on a fresh mount.
        gp.remount(mode, &[]);
        for (name, size) in files {
            reads_back(&gp, name, size, "after remount");
        }
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

/// The cache settings every concurrency and append test runs with.
const CACHES: [&[&str]; 2] = [&[], &["--no-writeback-cache"]];

#[test]
fn eight_threads_disjoint_and_overlapping_writes() {
    const REGION: u64 = 100_000; // deliberately not unit aligned
    const OVERLAP: u64 = 8 * REGION; // start of a region every thread writes
    // A range every thread rewrites whole, straddling unit boundaries.
    const SAME: u64 = 200 * 4096 - 100;
    const SAME_LEN: usize = 3 * 4096 + 200;
    const SIZE: u64 = SAME + SAME_LEN as u64;
    // The kernel serialises write(2)s to one file, so each write is atomic
    // and the final contents are those of some order of the writes.
    let check = |all: &[u8], what: &str| {
        assert_eq!(all.len() as u64, SIZE, "{what}: size");
        for t in 0..8u64 {
            let got = &all[(t * REGION) as usize..((t + 1) * REGION) as usize];
            assert!(
                got == &bytes(t + 100, REGION as usize)[..],
                "{what}: thread {t} region"
            );
        }
        let overlap = &all[OVERLAP as usize..OVERLAP as usize + 9 * 777 + 3000];
        assert!(
            overlap.iter().all(|&b| (1..=8).contains(&b)),
            "{what}: torn overlapping writes"
        );
        let gap = &all[OVERLAP as usize + 9 * 777 + 3000..SAME as usize];
        assert!(gap.iter().all(|&b| b == 0), "{what}: gap not zero");
        let same = &all[SAME as usize..];
        assert!(
            (1..=8).contains(&same[0]) && same.iter().all(|&b| b == same[0]),
            "{what}: a rewritten range mixes writers: {:?}",
            same.iter()
                .enumerate()
                .filter(|(i, b)| *i == 0 || **b != same[i - 1])
                .map(|(i, b)| (i, *b))
                .collect::<Vec<_>>()
        );
    };
    for mode in ENCRYPTED_MODES {
        for extra in CACHES {
            let what = format!("{mode} {extra:?}");
            let mut gp = Gp::new_with(mode, extra, |_| {});
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
                            f.write_all_at(&[t as u8 + 1; SAME_LEN], SAME).unwrap();
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            drop(f);
            let cached = fs::read(&path).unwrap();
            check(&cached, &what);
            gp.remount(mode, extra);
            let disk = fs::read(&path).unwrap();
            check(&disk, &format!("{what} after remount"));
            assert!(disk == cached, "{what}: contents changed across remount");
        }
    }
}

#[test]
fn tar_extraction_of_a_source_tree_round_trips() {
    let src = std::path::Path::new("/usr/include/linux");
    let want = manifest(src);
    assert!(
        want.lines()
            .filter(|l| l.split_once("  ").is_some_and(|(h, _)| h.len() == 64))
            .count()
            > 100,
        "/usr/include/linux is too small a tree"
    );
    for mode in ALL_MODES {
        let mut gp = Gp::new(mode);
        let d = gp.dir.to_str().unwrap().to_owned();
        let out = sh(&format!(
            "tar -C /usr/include -cf - linux | tar -C {d} -xf -"
        ));
        assert!(out.status.success(), "{mode}: {out:?}");
        gp.remount(mode, &[]);
        let got = manifest(&gp.path("linux"));
        if got != want {
            let diff: Vec<_> = got
                .lines()
                .zip(want.lines())
                .filter(|(g, w)| g != w)
                .take(5)
                .collect();
            panic!(
                "{mode}: the extracted tree differs from the source after remount \
                 ({} vs {} manifest lines): {diff:?}",
                got.lines().count(),
                want.lines().count()
            );
        }
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
        // Read what is on disk, not the page cache.
        drop_caches();
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
    // Closed but never fsync'ed: the clean unmount writes it back.
    fs::write(gp.path("g"), bytes(5, 70_001)).unwrap();
    gp.sigterm();
    assert!(!is_mounted(&gp.dir));
    assert!(gp.log_text().contains("unmount"), "{}", gp.log_text());
    gp.mount("xts", &[]);
    assert_eq!(fs::read(gp.path("f")).unwrap(), b"x");
    assert!(
        fs::read(gp.path("g")).unwrap() == bytes(5, 70_001),
        "data written before SIGTERM lost"
    );
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
        let mut gp = Gp::new(mode);
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
        drop(f);
        // O_DIRECT writes (aligned buffer, offsets and lengths), one past
        // EOF leaving a hole, one rewriting the middle of the file.
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(p("d"))
            .unwrap();
        let direct = bytes(21, 4 * 4096);
        raw[start..start + 2 * 4096].copy_from_slice(&direct[..2 * 4096]);
        f.write_all_at(&raw[start..start + 2 * 4096], 0).unwrap();
        raw[start..start + 2 * 4096].copy_from_slice(&direct[2 * 4096..]);
        f.write_all_at(&raw[start..start + 2 * 4096], 3 * 4096)
            .unwrap();
        raw[start..start + 4096].fill(b'D');
        f.write_all_at(&raw[start..start + 4096], 4096).unwrap();
        raw[start..start + 4096].fill(0);
        f.read_exact_at(&mut raw[start..start + 4096], 3 * 4096)
            .unwrap();
        assert!(
            raw[start..start + 4096] == direct[2 * 4096..3 * 4096],
            "{mode}: O_DIRECT read back"
        );
        drop(f);
        let mut want_d = direct[..4096].to_vec();
        want_d.extend_from_slice(&[b'D'; 4096]);
        want_d.extend_from_slice(&[0; 4096]);
        want_d.extend_from_slice(&direct[2 * 4096..]);
        assert!(fs::read(p("d")).unwrap() == want_d, "{mode}: O_DIRECT file");
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
        drop(f);
        // SEEK_END sees the logical size
        let mut f = File::open(p("t")).unwrap();
        assert_eq!(f.seek(SeekFrom::End(0)).unwrap(), 12_000, "{mode}");
        drop(f);
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
        // With the writeback cache (on here in the encrypted modes) the
        // kernel answers SEEK_DATA and SEEK_HOLE itself: all data up to
        // EOF. A `clear` GuardPoint runs without it (FUSE passthrough wins)
        // and answers as the lower file does. Holes found in encrypted
        // lower files are tested in seek_hole_finds_lower_holes_without_
        // writeback_cache.
        let size = (1 << 20) + 4;
        let (want_data, want_hole) = if mode == "clear" {
            let lower = File::open(gp.lower("fa")).unwrap();
            (
                nix::unistd::lseek(&lower, 30_000, nix::unistd::Whence::SeekData).unwrap(),
                nix::unistd::lseek(&lower, 0, nix::unistd::Whence::SeekHole).unwrap(),
            )
        } else {
            (30_000, size)
        };
        let data = nix::unistd::lseek(&f, 30_000, nix::unistd::Whence::SeekData).unwrap();
        assert_eq!(data, want_data, "{mode}: SEEK_DATA");
        let hole = nix::unistd::lseek(&f, 0, nix::unistd::Whence::SeekHole).unwrap();
        assert_eq!(hole, want_hole, "{mode}: SEEK_HOLE");
        assert_eq!(
            nix::unistd::lseek(&f, size, nix::unistd::Whence::SeekData),
            Err(nix::errno::Errno::ENXIO),
            "{mode}: SEEK_DATA at EOF"
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
        drop(f);
        // Everything above decrypts the same from disk.
        gp.remount(mode, &[]);
        let p = |n: &str| gp.path(n);
        let got = fs::read(p("t")).unwrap();
        assert_eq!(got.len(), 12_000, "{mode}: t after remount");
        assert_eq!(
            &got[..5000],
            &bytes(9, 10_000)[..5000],
            "{mode}: t after remount"
        );
        assert!(
            got[5000..].iter().all(|&b| b == 0),
            "{mode}: t after remount"
        );
        let got = fs::read(p("a")).unwrap();
        assert_eq!(got.len(), 10_001, "{mode}: a after remount");
        assert_eq!(&got[..6], b"abcdef", "{mode}: a after remount");
        assert!(
            got[6..10_000].iter().all(|&b| b == 0),
            "{mode}: a after remount"
        );
        assert_eq!(got[10_000], b'Z', "{mode}: a after remount");
        assert!(
            fs::read(p("d")).unwrap() == want_d,
            "{mode}: O_DIRECT file after remount"
        );
        let f = File::open(p("huge")).unwrap();
        assert_eq!(f.metadata().unwrap().len(), (5 << 30) + 129, "{mode}");
        let mut b = [0u8; 6];
        f.read_exact_at(&mut b, (5 << 30) + 123).unwrap();
        assert_eq!(&b, b"past4g", "{mode}: huge after remount");
        let f = File::open(p("fa")).unwrap();
        assert_eq!(f.metadata().unwrap().len(), size as u64, "{mode}");
        let mut b = vec![9u8; 200];
        f.read_exact_at(&mut b, (1 << 20) - 196).unwrap();
        assert!(b[..196].iter().all(|&x| x == 0), "{mode}: fa after remount");
        assert_eq!(&b[196..], b"\0\0ta", "{mode}: fa after remount");
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

/// A POSIX ACL as the kernel stores it in `system.posix_acl_*`: version
/// 2, then (tag, perm, id) entries sorted by tag and id.
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

fn set_acl(path: &std::path::Path, name: &str, value: &[u8]) {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    guardfs_shim::sys::setxattr(&p, std::ffi::OsStr::new(name), value, 0)
        .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e:?}", path.display()));
}

/// POSIX ACLs are enforced through the GuardPoint as the lower file system
/// enforces them: a user an ACL entry denies is refused although the mode
/// bits would let "other" in, and a directory's default ACL decides the
/// permissions of new files (the creator's umask does not apply).
#[test]
fn posix_acls_are_enforced() {
    const UNDEF: u32 = u32::MAX;
    // Tags of acl(5) entries.
    const USER_OBJ: u16 = 0x01;
    const USER: u16 = 0x02;
    const GROUP_OBJ: u16 = 0x04;
    const MASK: u16 = 0x10;
    const OTHER: u16 = 0x20;
    let as_uid = |uid: u32, cmd: &str| {
        sh(&format!(
            "setpriv --reuid={uid} --regid={uid} --clear-groups sh -c '{cmd}'"
        ))
    };
    for mode in ALL_MODES {
        let gp = Gp::new(mode);
        fs::set_permissions(&gp.dir, fs::Permissions::from_mode(0o755)).unwrap();
        let f = gp.path("f");
        fs::write(&f, b"readable by others, not by 4242").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        let cat = format!("cat {}", f.display());
        assert!(
            as_uid(4242, &cat).status.success(),
            "{mode}: before the ACL"
        );
        set_acl(
            &f,
            "system.posix_acl_access",
            &acl(&[
                (USER_OBJ, 6, UNDEF),
                (USER, 0, 4242),
                (GROUP_OBJ, 4, UNDEF),
                (MASK, 4, UNDEF),
                (OTHER, 4, UNDEF),
            ]),
        );
        let out = as_uid(4242, &cat);
        assert!(
            !out.status.success(),
            "{mode}: the ACL denies uid 4242: {out:?}"
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
        let out = as_uid(4343, &cat);
        assert!(out.status.success(), "{mode}: others still read: {out:?}");
        // A default ACL: 4242 may create, and new files are readable by
        // others whatever 4242's umask says.
        let shared = gp.path("shared");
        fs::create_dir(&shared).unwrap();
        let dir_acl = acl(&[
            (USER_OBJ, 7, UNDEF),
            (USER, 7, 4242),
            (GROUP_OBJ, 5, UNDEF),
            (MASK, 7, UNDEF),
            (OTHER, 5, UNDEF),
        ]);
        set_acl(&shared, "system.posix_acl_access", &dir_acl);
        set_acl(&shared, "system.posix_acl_default", &dir_acl);
        let g = shared.join("g");
        let out = as_uid(
            4242,
            &format!("umask 077; echo inherited > {}", g.display()),
        );
        assert!(out.status.success(), "{mode}: {out:?}");
        let out = as_uid(4343, &format!("cat {}", g.display()));
        assert!(
            out.status.success(),
            "{mode}: default ACL, not umask: {out:?}"
        );
        assert_eq!(out.stdout, b"inherited\n");
        // Without a default ACL the umask applies as usual.
        let h = gp.path("h");
        let out = sh(&format!("umask 077; echo private > {}", h.display()));
        assert!(out.status.success());
        assert_eq!(
            fs::metadata(&h).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
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

/// O_APPEND goes to the logical end of file, with and without the
/// writeback cache (without it the kernel asks secfs for the size before
/// every append), also when another handle has grown the file meanwhile.
#[test]
fn o_append_with_and_without_writeback_cache() {
    for mode in ALL_MODES {
        for extra in CACHES {
            let what = format!("{mode} {extra:?}");
            let mut gp = Gp::new_with(mode, extra, |_| {});
            let path = gp.path("log");
            fs::write(&path, b"abc").unwrap();
            let mut a = OpenOptions::new().append(true).open(&path).unwrap();
            let mut b = OpenOptions::new().append(true).open(&path).unwrap();
            a.write_all(b"def").unwrap();
            b.write_all(&bytes(31, 5000)).unwrap(); // straddles a unit
            a.write_all(b"g").unwrap();
            let other = OpenOptions::new().write(true).open(&path).unwrap();
            other.write_all_at(b"Z", 9999).unwrap();
            drop(other);
            b.write_all(b"end").unwrap();
            drop((a, b));
            let mut want = b"abcdef".to_vec();
            want.extend_from_slice(&bytes(31, 5000));
            want.push(b'g');
            want.resize(9999, 0);
            want.extend_from_slice(b"Zend");
            assert!(fs::read(&path).unwrap() == want, "{what}: appended file");
            gp.remount(mode, extra);
            assert!(
                fs::read(&path).unwrap() == want,
                "{what}: appended file after remount"
            );
            let mut a = OpenOptions::new().append(true).open(&path).unwrap();
            a.write_all(b"!").unwrap();
            drop(a);
            want.push(b'!');
            assert!(
                fs::read(&path).unwrap() == want,
                "{what}: append after remount"
            );
        }
    }
}

/// Fifos, sockets and device nodes are created as such in the lower
/// directory in every mode (no header), and keep their type and device
/// number across a remount.
#[test]
fn special_files_in_every_mode() {
    use std::os::unix::fs::FileTypeExt;
    for mode in ALL_MODES {
        let mut gp = Gp::new(mode);
        nix::unistd::mkfifo(
            &gp.path("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        drop(std::os::unix::net::UnixListener::bind(gp.path("sock")).unwrap());
        nix::sys::stat::mknod(
            &gp.path("null"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        let check = |gp: &Gp, what: &str| {
            for path in [gp.path("fifo"), gp.lower("fifo")] {
                let t = fs::symlink_metadata(&path).unwrap().file_type();
                assert!(t.is_fifo(), "{mode} {what}: {} not a fifo", path.display());
            }
            for path in [gp.path("sock"), gp.lower("sock")] {
                let t = fs::symlink_metadata(&path).unwrap().file_type();
                assert!(
                    t.is_socket(),
                    "{mode} {what}: {} not a socket",
                    path.display()
                );
            }
            for path in [gp.path("null"), gp.lower("null")] {
                let m = fs::symlink_metadata(&path).unwrap();
                assert!(m.file_type().is_char_device(), "{mode} {what}");
                assert_eq!(m.rdev(), nix::sys::stat::makedev(1, 3), "{mode} {what}");
            }
            // The device works through the mount.
            fs::write(gp.path("null"), b"discarded").unwrap();
            assert_eq!(fs::read(gp.path("null")).unwrap(), b"", "{mode} {what}");
            // A fifo passes data between two openers.
            let fifo = gp.path("fifo");
            let reader = std::thread::spawn(move || fs::read(fifo).unwrap());
            fs::write(gp.path("fifo"), b"through the fifo").unwrap();
            assert_eq!(reader.join().unwrap(), b"through the fifo", "{mode} {what}");
        };
        check(&gp, "before remount");
        gp.remount(mode, &[]);
        check(&gp, "after remount");
    }
}

/// With cold caches, `ls -l` (readdirplus: the attributes come with the
/// directory listing) and stat of every entry show logical sizes.
#[test]
fn readdirplus_shows_logical_sizes_after_remount() {
    let sizes = [0u64, 1, 15, 4095, 4096, 4097, 100_003];
    for mode in ENCRYPTED_MODES {
        let mut gp = Gp::new(mode);
        for s in sizes {
            fs::write(gp.path(&format!("f{s}")), bytes(s, s as usize)).unwrap();
        }
        gp.remount(mode, &[]);
        let out = sh(&format!("ls -ln {}", gp.dir.display()));
        assert!(out.status.success(), "{out:?}");
        let listing = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut seen = 0;
        for line in listing.lines().filter(|l| l.starts_with('-')) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (size, name) = (cols[4], cols[cols.len() - 1]);
            assert_eq!(
                format!("f{size}"),
                name,
                "{mode}: ls -l shows a size that is not the logical one:\n{listing}"
            );
            seen += 1;
        }
        assert_eq!(seen, sizes.len(), "{mode}:\n{listing}");
        gp.remount(mode, &[]);
        let mut seen = 0;
        for e in fs::read_dir(&gp.dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let logical: u64 = name[1..].parse().unwrap();
            assert_eq!(e.metadata().unwrap().len(), logical, "{mode}: {name}");
            assert_ne!(
                lower_size(mode, logical),
                logical,
                "the lower size must differ"
            );
            seen += 1;
        }
        assert_eq!(seen, sizes.len(), "{mode}");
    }
}

fn renameat2(from: &std::path::Path, to: &std::path::Path, flags: u32) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let from = std::ffi::CString::new(from.as_os_str().as_bytes()).unwrap();
    let to = std::ffi::CString::new(to.as_os_str().as_bytes()).unwrap();
    // SAFETY: two valid NUL-terminated paths.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// renameat2 with RENAME_NOREPLACE and RENAME_EXCHANGE through the mount,
/// between directories, checked again after a remount.
#[test]
fn renameat2_noreplace_and_exchange() {
    for mode in ALL_MODES {
        let mut gp = Gp::new(mode);
        let (a, b) = (bytes(41, 5000), bytes(42, 70_000));
        fs::create_dir(gp.path("d")).unwrap();
        fs::write(gp.path("a"), &a).unwrap();
        fs::write(gp.path("d/b"), &b).unwrap();
        let err = renameat2(&gp.path("a"), &gp.path("d/b"), libc::RENAME_NOREPLACE).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EEXIST), "{mode}");
        assert!(
            fs::read(gp.path("a")).unwrap() == a,
            "{mode}: NOREPLACE kept a"
        );
        assert!(
            fs::read(gp.path("d/b")).unwrap() == b,
            "{mode}: NOREPLACE kept b"
        );
        renameat2(&gp.path("a"), &gp.path("d/a"), libc::RENAME_NOREPLACE).unwrap();
        assert!(!gp.path("a").exists(), "{mode}");
        // An open handle follows its file through the exchange.
        let held = File::open(gp.path("d/a")).unwrap();
        renameat2(&gp.path("d/a"), &gp.path("d/b"), libc::RENAME_EXCHANGE).unwrap();
        assert!(
            fs::read(gp.path("d/a")).unwrap() == b,
            "{mode}: exchanged a"
        );
        assert!(
            fs::read(gp.path("d/b")).unwrap() == a,
            "{mode}: exchanged b"
        );
        let mut h = Vec::new();
        (&held).read_to_end(&mut h).unwrap();
        assert!(h == a, "{mode}: open handle after exchange");
        drop(held);
        // Across directories, and a file with a directory.
        fs::create_dir(gp.path("e")).unwrap();
        fs::write(gp.path("e/c"), b"in e").unwrap();
        renameat2(&gp.path("d/b"), &gp.path("e/c"), libc::RENAME_EXCHANGE).unwrap();
        renameat2(&gp.path("d"), &gp.path("e/c"), libc::RENAME_EXCHANGE).unwrap();
        // Now: e/c is the directory (holding a = b's bytes, b = "in e"),
        // d is the file with a's bytes.
        let err =
            renameat2(&gp.path("d"), &gp.path("e/missing"), libc::RENAME_EXCHANGE).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{mode}");
        let check = |gp: &Gp, what: &str| {
            assert!(fs::read(gp.path("d")).unwrap() == a, "{mode} {what}: d");
            assert!(
                fs::read(gp.path("e/c/a")).unwrap() == b,
                "{mode} {what}: e/c/a"
            );
            assert_eq!(
                fs::read(gp.path("e/c/b")).unwrap(),
                b"in e",
                "{mode} {what}"
            );
            assert_eq!(fs::metadata(gp.path("d")).unwrap().len(), a.len() as u64);
            assert!(fs::metadata(gp.path("e/c")).unwrap().is_dir());
        };
        check(&gp, "");
        gp.remount(mode, &[]);
        check(&gp, "after remount");
    }
}

/// Read `len` bytes of `path` at `off` (both 4096-aligned) with O_DIRECT,
/// so the read reaches secfs whatever the page cache holds.
fn direct_read(path: &std::path::Path, off: u64, len: usize) -> Vec<u8> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap();
    let mut raw = vec![0u8; len + 4096];
    let start = raw.as_ptr().align_offset(4096);
    let mut got = 0;
    loop {
        let n = f
            .read_at(&mut raw[start + got..start + len], off + got as u64)
            .unwrap();
        if n == 0 || got + n == len {
            got += n;
            break;
        }
        got += n;
    }
    raw[start..start + got].to_vec()
}

/// Regression: short file tails (the last unit of a file shorter than one
/// cipher block, 1..=15 bytes) must read back as written, never as a hole
/// of zeros, and truncating up must read zeros.
///
/// In `xts` and `cbc-cs1` such a tail is encrypted as plaintext XOR a
/// keystream of the file and unit, so exactly one value of a one-byte tail
/// is stored as a zero byte in the lower file: sweeping the last byte of a
/// file through all 256 values stores an all-zero lower tail once, which
/// must still read back as that value (not as a hole). Longer tails are
/// made all-zero in the lower file the same way, from the keystream the
/// lower file shows.
#[test]
fn short_tails_round_trip() {
    for mode in ["xts", "cbc-cs1"] {
        let mut gp = Gp::new(mode);
        let mut want: Vec<(String, Vec<u8>)> = Vec::new();
        let lower_tail = |gp: &Gp, name: &str, t: usize| {
            let l = fs::read(gp.lower(name)).unwrap();
            l[l.len() - t..].to_vec()
        };
        // Sweep the last byte of one-byte tails through every value.
        for size in [1usize, 4096 + 1, 3 * 4096 + 1] {
            let name = format!("sweep{size}");
            let mut d = bytes(size as u64, size);
            fs::write(gp.path(&name), &d).unwrap();
            let f = OpenOptions::new().write(true).open(gp.path(&name)).unwrap();
            let mut zero_tails = 0;
            for v in 0..=255u8 {
                f.write_all_at(&[v], size as u64 - 1).unwrap();
                f.sync_all().unwrap();
                d[size - 1] = v;
                if lower_tail(&gp, &name, 1) == [0] {
                    zero_tails += 1;
                }
                let base = (size as u64 - 1) / 4096 * 4096;
                let got = direct_read(&gp.path(&name), base, 4096);
                assert_eq!(
                    got,
                    &d[base as usize..],
                    "{mode}: {size}-byte file ending in byte {v} (lower tail {:?})",
                    lower_tail(&gp, &name, 1)
                );
            }
            assert_eq!(
                zero_tails, 1,
                "{mode}: {name}: expected exactly one value of a one-byte tail \
                 to be stored as a zero byte"
            );
            // End on a value whose lower byte is zero.
            let k = {
                f.write_all_at(&[0], size as u64 - 1).unwrap();
                f.sync_all().unwrap();
                lower_tail(&gp, &name, 1)[0]
            };
            f.write_all_at(&[k], size as u64 - 1).unwrap();
            f.sync_all().unwrap();
            assert_eq!(lower_tail(&gp, &name, 1), [0], "{mode}: {name}");
            d[size - 1] = k;
            drop(f);
            want.push((name, d));
        }
        // Tails of 2..=15 bytes stored as all zeros in the lower file.
        for t in 2..=15usize {
            let size = 4096 + t;
            let name = format!("zero-tail{t}");
            let mut d = bytes(500 + t as u64, size);
            fs::write(gp.path(&name), &d).unwrap();
            let f = OpenOptions::new().write(true).open(gp.path(&name)).unwrap();
            f.sync_all().unwrap();
            let ks: Vec<u8> = lower_tail(&gp, &name, t)
                .iter()
                .zip(&d[4096..])
                .map(|(c, p)| c ^ p)
                .collect();
            f.write_all_at(&ks, 4096).unwrap();
            f.sync_all().unwrap();
            drop(f);
            d[4096..].copy_from_slice(&ks);
            assert_eq!(
                lower_tail(&gp, &name, t),
                vec![0; t],
                "{mode}: {name}: a tail is not stored as plaintext XOR a keystream"
            );
            assert_eq!(
                direct_read(&gp.path(&name), 4096, 4096),
                &d[4096..],
                "{mode}: {name}: an all-zero lower tail read back wrong"
            );
            want.push((name, d));
        }
        // Files of 1..=15 bytes, all zeros and random.
        for n in 1..=15usize {
            want.push((format!("z{n}"), vec![0; n]));
            want.push((format!("r{n}"), bytes(n as u64, n)));
        }
        // One-byte files of every value.
        for v in 0..=255u8 {
            want.push((format!("b{v}"), vec![v]));
        }
        // Files of 4096*k + 1..=15 bytes whose last byte takes every value;
        // the whole tail is zero when v is zero.
        for k in [1usize, 3] {
            for v in 0..=255u8 {
                let tail = 1 + v as usize % 15;
                let mut d = bytes(1000 + v as u64, 4096 * k + tail);
                let n = d.len();
                if v == 0 {
                    d[n - tail..].fill(0);
                }
                d[n - 1] = v;
                want.push((format!("k{k}-{v}"), d));
            }
        }
        for (name, d) in &want {
            fs::write(gp.path(name), d).unwrap();
        }
        // Truncate up of empty files: zeros.
        for (name, size) in [("up5", 5usize), ("up3p7", 4096 * 3 + 7)] {
            File::create(gp.path(name))
                .unwrap()
                .set_len(size as u64)
                .unwrap();
            want.push((name.to_owned(), vec![0; size]));
        }
        gp.remount(mode, &[]);
        let mut bad = Vec::new();
        for (name, d) in &want {
            let got = fs::read(gp.path(name));
            match got {
                Ok(got) if got == *d => {}
                Ok(got) => bad.push(format!(
                    "{name}: {} bytes, tail {:?} (want {} bytes, tail {:?})",
                    got.len(),
                    &got[got.len().saturating_sub(16)..],
                    d.len(),
                    &d[d.len().saturating_sub(16)..]
                )),
                Err(e) => bad.push(format!("{name}: {e}")),
            }
        }
        assert!(
            bad.is_empty(),
            "{mode}: {} of {} files read back wrong after remount, e.g. {:#?}",
            bad.len(),
            want.len(),
            &bad[..bad.len().min(8)]
        );
    }
}
