//! The stacking layer driven through the vnode-operations trait, without a
//! mount: unit tests and a model-based property test of random operation
//! sequences against an in-memory reference. Needs root (the mode marker
//! is a `trusted.*` xattr); CI runs as root.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::rc::Rc;
use std::sync::Arc;

mod common;
use common::bytes;

use guardfs_crypto::{Mode, PolicyKey};
use guardfs_shim::stack::access::Access;
use guardfs_shim::stack::keys::StaticKeys;
use guardfs_shim::stack::{GuardConfig, Stack};
use guardfs_shim::vfs::*;
use proptest::prelude::*;

const C: Caller = Caller::ROOT;

fn stack(mode: Mode) -> (tempfile::TempDir, Stack) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "stacking-layer tests need root (trusted.* xattrs)"
    );
    let dir = tempfile::Builder::new()
        .prefix("guardfs-stack")
        .tempdir_in("/var/tmp")
        .unwrap();
    let s = stack_on(&dir, mode);
    (dir, s)
}

/// A stacking layer over an existing lower directory (with the same key
/// as `stack`): a fresh one sees only what is on disk.
fn stack_on(dir: &tempfile::TempDir, mode: Mode) -> Stack {
    let fd = nix::fcntl::open(
        dir.path(),
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    let keys = Arc::new(StaticKeys::single(
        "default",
        1,
        PolicyKey::from_bytes([7; 32]),
    ));
    let access = Arc::new(Access::unrestricted(
        dir.path().as_os_str().as_encoded_bytes(),
    ));
    Stack::new(
        fd,
        GuardConfig {
            mode,
            keys,
            access,
            passthrough: false,
        },
    )
    .unwrap()
}

fn name(s: &str) -> &OsStr {
    OsStr::new(s)
}

struct Sink(Vec<String>);
impl DirSink for Sink {
    fn add(&mut self, e: &DirEntry<'_>, _plus: Option<&Entry>) -> bool {
        self.0.push(e.name.to_string_lossy().into_owned());
        false
    }
}

#[test]
fn create_write_read_through_the_trait() {
    for mode in Mode::ALL {
        let (dir, s) = stack(mode);
        let (e, o) = s
            .create(&C, Ino::ROOT, name("f"), 0o100644, libc::O_RDWR)
            .unwrap();
        assert_eq!(s.write(&C, e.ino, o.fh, 10, b"hello", false).unwrap(), 5);
        let mut buf = [0u8; 32];
        let n = s.read(&C, e.ino, o.fh, 0, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"\0\0\0\0\0\0\0\0\0\0hello");
        assert_eq!(s.getattr(&C, e.ino, None).unwrap().size, 15);
        s.release(e.ino, o.fh).unwrap();
        let lower = std::fs::read(dir.path().join("f")).unwrap();
        if mode == Mode::Clear {
            assert_eq!(&lower[10..], b"hello");
        } else {
            assert_eq!(&lower[..8], b"GuardFS\0", "{mode}");
        }
        let d = s.opendir(&C, Ino::ROOT).unwrap();
        let mut sink = Sink(Vec::new());
        s.readdir(&C, Ino::ROOT, d.fh, 0, false, &mut sink).unwrap();
        assert!(sink.0.contains(&"f".to_owned()));
        // Resuming from an offset skips what was returned.
        let mut rest = Sink(Vec::new());
        s.readdir(&C, Ino::ROOT, d.fh, sink.0.len() as u64, false, &mut rest)
            .unwrap();
        assert!(rest.0.is_empty());
        s.releasedir(Ino::ROOT, d.fh).unwrap();
    }
}

#[test]
fn bad_names_and_private_xattrs_are_refused() {
    let (_dir, s) = stack(Mode::Xts);
    assert_eq!(
        s.lookup(&C, Ino::ROOT, name("a/b")).unwrap_err(),
        Errno::EINVAL
    );
    assert_eq!(
        s.lookup(&C, Ino::ROOT, name("..")).unwrap_err(),
        Errno::EINVAL
    );
    assert_eq!(
        s.lookup(&C, Ino::ROOT, name("missing")).unwrap_err(),
        Errno::ENOENT
    );
    let e = write_file(&s, Ino::ROOT, "f", b"");
    assert_eq!(
        s.getxattr(&C, e.ino, name("trusted.guardfs.mode"))
            .unwrap_err(),
        Errno::ENODATA
    );
    assert_eq!(
        s.setxattr(&C, e.ino, name("trusted.guardfs.mode"), b"clear", 0)
            .unwrap_err(),
        Errno::EPERM
    );
    assert!(!String::from_utf8_lossy(&s.listxattr(&C, e.ino).unwrap()).contains("guardfs"));
}

/// Sorted xattr names of a listxattr answer.
fn xattr_names(list: &[u8]) -> Vec<String> {
    let mut v: Vec<String> = list
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn xattrs_pass_through_to_the_lower_object_of_each_node() {
    let (dir, s) = stack(Mode::Xts);
    let f = write_file(&s, Ino::ROOT, "f", b"");
    let d = s.mkdir(&C, Ino::ROOT, name("d"), 0o755).unwrap();
    let l = s
        .symlink(&C, Ino::ROOT, name("l"), std::path::Path::new("f"))
        .unwrap();
    for (e, lower) in [(&f, "f"), (&d, "d")] {
        s.setxattr(&C, e.ino, name("user.k"), b"v1", 0).unwrap();
        assert_eq!(
            s.setxattr(&C, e.ino, name("user.k"), b"v2", libc::XATTR_CREATE)
                .unwrap_err(),
            Errno(libc::EEXIST)
        );
        s.setxattr(&C, e.ino, name("user.k"), b"v2", libc::XATTR_REPLACE)
            .unwrap();
        assert_eq!(s.getxattr(&C, e.ino, name("user.k")).unwrap(), b"v2");
        // On the lower object itself.
        let p = dir.path().join(lower);
        let p = std::ffi::CString::new(p.into_os_string().into_encoded_bytes()).unwrap();
        assert_eq!(
            guardfs_shim::sys::getxattr(&p, name("user.k")).unwrap(),
            b"v2"
        );
        let names = xattr_names(&s.listxattr(&C, e.ino).unwrap());
        assert!(names.contains(&"user.k".to_owned()), "{names:?}");
        assert!(names.iter().all(|n| !n.starts_with("trusted.guardfs.")));
        s.removexattr(&C, e.ino, name("user.k")).unwrap();
        assert_eq!(
            s.getxattr(&C, e.ino, name("user.k")).unwrap_err(),
            Errno::ENODATA
        );
        assert_eq!(
            s.removexattr(&C, e.ino, name("user.k")).unwrap_err(),
            Errno::ENODATA
        );
    }
    // A symlink node's xattrs are the symlink's own, not its target's:
    // user.* is refused on symlinks, trusted.* is the link's.
    assert_eq!(
        s.setxattr(&C, l.ino, name("user.k"), b"v", 0).unwrap_err(),
        Errno::EPERM
    );
    s.setxattr(&C, l.ino, name("trusted.t"), b"link", 0)
        .unwrap();
    assert_eq!(s.getxattr(&C, l.ino, name("trusted.t")).unwrap(), b"link");
    assert_eq!(
        s.getxattr(&C, f.ino, name("trusted.t")).unwrap_err(),
        Errno::ENODATA
    );
    assert_eq!(xattr_names(&s.listxattr(&C, l.ino).unwrap()), ["trusted.t"]);
    s.removexattr(&C, l.ino, name("trusted.t")).unwrap();
}

#[test]
fn forget_drops_nodes() {
    let (_dir, s) = stack(Mode::Gcm);
    let e = write_file(&s, Ino::ROOT, "f", b"");
    let again = s.lookup(&C, Ino::ROOT, name("f")).unwrap();
    assert_eq!(again.ino, e.ino, "one node per lower inode");
    let before = s.node_count();
    s.forget(e.ino, 2);
    assert_eq!(s.node_count(), before - 1);
}

/// Look up `path` ("a/b") from the root.
fn lookup_path(s: &Stack, path: &str) -> VfsResult<Entry> {
    let mut e: Option<Entry> = None;
    for part in path.split('/') {
        let parent = e.map_or(Ino::ROOT, |e| e.ino);
        e = Some(s.lookup(&C, parent, name(part))?);
    }
    Ok(e.expect("non-empty path"))
}

/// The whole contents of `path`, read through the trait.
fn read_all(s: &Stack, path: &str) -> Vec<u8> {
    let e = lookup_path(s, path).unwrap();
    let o = s.open(&C, e.ino, libc::O_RDONLY).unwrap();
    let size = s.getattr(&C, e.ino, None).unwrap().size as usize;
    let mut buf = vec![0u8; size + 100];
    let mut got = 0;
    loop {
        let n = s
            .read(&C, e.ino, o.fh, got as u64, &mut buf[got..])
            .unwrap();
        if n == 0 {
            break;
        }
        got += n;
    }
    s.release(e.ino, o.fh).unwrap();
    buf.truncate(got);
    assert_eq!(got, size, "{path}: read length vs size");
    buf
}

fn write_file(s: &Stack, parent: Ino, n: &str, data: &[u8]) -> Entry {
    let (e, o) = s
        .create(&C, parent, name(n), 0o100644, libc::O_RDWR | libc::O_EXCL)
        .unwrap();
    assert_eq!(
        s.write(&C, e.ino, o.fh, 0, data, false).unwrap(),
        data.len()
    );
    s.release(e.ino, o.fh).unwrap();
    e
}

/// renameat2 flags through the trait: RENAME_NOREPLACE refuses an
/// existing target; RENAME_EXCHANGE swaps two files, also between
/// directories, and a file with a directory. Checked again through a fresh
/// stacking layer (what is on disk).
#[test]
fn rename_noreplace_and_exchange_through_the_trait() {
    const NOREPLACE: RenameFlags = RenameFlags(libc::RENAME_NOREPLACE);
    const EXCHANGE: RenameFlags = RenameFlags(libc::RENAME_EXCHANGE);
    for mode in Mode::ALL {
        let (dir, s) = stack(mode);
        let (a, b, c) = (bytes(1, 5000), bytes(2, 9000), bytes(3, 13));
        let d = s.mkdir(&C, Ino::ROOT, name("d"), 0o755).unwrap();
        let e = s.mkdir(&C, Ino::ROOT, name("e"), 0o755).unwrap();
        let fa = write_file(&s, Ino::ROOT, "a", &a);
        let fb = write_file(&s, d.ino, "b", &b);
        write_file(&s, e.ino, "c", &c);
        // NOREPLACE onto an existing name: EEXIST, nothing changes.
        assert_eq!(
            s.rename(&C, Ino::ROOT, name("a"), d.ino, name("b"), NOREPLACE),
            Err(Errno::EEXIST),
            "{mode}"
        );
        assert_eq!(read_all(&s, "a"), a, "{mode}");
        assert_eq!(read_all(&s, "d/b"), b, "{mode}");
        // NOREPLACE onto a free name moves the file.
        s.rename(&C, Ino::ROOT, name("a"), d.ino, name("a"), NOREPLACE)
            .unwrap();
        assert_eq!(lookup_path(&s, "a").unwrap_err(), Errno::ENOENT);
        assert_eq!(lookup_path(&s, "d/a").unwrap().ino, fa.ino, "{mode}");
        // An open handle follows its file through an exchange.
        let held = s.open(&C, fa.ino, libc::O_RDWR).unwrap();
        s.rename(&C, d.ino, name("a"), d.ino, name("b"), EXCHANGE)
            .unwrap();
        assert_eq!(lookup_path(&s, "d/a").unwrap().ino, fb.ino, "{mode}");
        assert_eq!(lookup_path(&s, "d/b").unwrap().ino, fa.ino, "{mode}");
        assert_eq!(read_all(&s, "d/a"), b, "{mode}: exchanged");
        assert_eq!(read_all(&s, "d/b"), a, "{mode}: exchanged");
        let mut buf = vec![0u8; 6000];
        let n = s.read(&C, fa.ino, held.fh, 0, &mut buf).unwrap();
        assert_eq!(&buf[..n], &a[..], "{mode}: handle after exchange");
        s.write(&C, fa.ino, held.fh, 4998, b"XYZ", false).unwrap();
        s.release(fa.ino, held.fh).unwrap();
        let mut a2 = a.clone();
        a2.truncate(4998);
        a2.extend_from_slice(b"XYZ");
        assert_eq!(read_all(&s, "d/b"), a2, "{mode}: write after exchange");
        // Between directories.
        s.rename(&C, d.ino, name("b"), e.ino, name("c"), EXCHANGE)
            .unwrap();
        assert_eq!(read_all(&s, "d/b"), c, "{mode}");
        assert_eq!(read_all(&s, "e/c"), a2, "{mode}");
        // Exchange needs both names.
        assert_eq!(
            s.rename(&C, d.ino, name("b"), e.ino, name("none"), EXCHANGE),
            Err(Errno::ENOENT),
            "{mode}"
        );
        // A directory with a file.
        s.rename(&C, Ino::ROOT, name("d"), e.ino, name("c"), EXCHANGE)
            .unwrap();
        assert_eq!(read_all(&s, "d"), a2, "{mode}");
        assert_eq!(read_all(&s, "e/c/a"), b, "{mode}");
        assert_eq!(read_all(&s, "e/c/b"), c, "{mode}");
        // The same from disk.
        drop(s);
        let s = stack_on(&dir, mode);
        assert_eq!(read_all(&s, "d"), a2, "{mode}: fresh stack");
        assert_eq!(read_all(&s, "e/c/a"), b, "{mode}: fresh stack");
        assert_eq!(read_all(&s, "e/c/b"), c, "{mode}: fresh stack");
    }
}

/// Eight threads write one file through the trait, each through its own
/// handle: disjoint regions below and above the current size (so both the
/// in-place and the extending write paths run), chunked at unit-straddling
/// offsets and lengths; a range every thread rewrites whole; and ranges
/// that partly overlap. A ninth thread keeps reading the shared range.
///
/// The design (stack/file.rs) makes every write atomic: it holds the unit
/// range lock over all the units it touches (or the size lock exclusively
/// when it extends the file), and reads hold the same units shared. So:
/// disjoint regions read back exactly; the shared range is wholly one
/// write's bytes, before and after, and every read of it sees one write;
/// in partly overlapping ranges each byte is from a writer that covers it.
#[test]
fn eight_threads_through_the_trait() {
    const REGION: u64 = 30_011;
    const STAG: u64 = 8 * REGION + 100; // partly overlapping writes
    const STAG_STEP: u64 = 1000;
    const STAG_LEN: usize = 5000;
    const STAG_END: u64 = STAG + 7 * STAG_STEP + STAG_LEN as u64;
    const SAME: u64 = 65 * 4096 - 77; // rewritten whole by every thread
    const SAME_LEN: usize = 2 * 4096 + 300;
    const HIGH: u64 = 300_000; // regions beyond the size: extending writes
    const SIZE: u64 = HIGH + 8 * REGION;
    const ROUNDS: u64 = 12;
    let chunk_lens = [1u64, 15, 16, 17, 100, 4095, 4096, 4097, 5000, 12_293];
    for mode in Mode::ALL {
        let (dir, s) = stack(mode);
        let s = Arc::new(s);
        let fe = write_file(&s, Ino::ROOT, "shared", &[]);
        let o = s.open(&C, fe.ino, libc::O_RDWR).unwrap();
        s.write(&C, fe.ino, o.fh, SAME, &[0xEE; SAME_LEN], false)
            .unwrap();
        s.release(fe.ino, o.fh).unwrap();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (s, done) = (s.clone(), done.clone());
            std::thread::spawn(move || {
                let o = s.open(&C, fe.ino, libc::O_RDONLY).unwrap();
                let mut buf = vec![0u8; SAME_LEN];
                let mut torn = 0;
                let mut reads = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let n = s.read(&C, fe.ino, o.fh, SAME, &mut buf).unwrap();
                    assert_eq!(n, SAME_LEN);
                    if buf.iter().any(|&b| b != buf[0]) {
                        torn += 1;
                    }
                    reads += 1;
                }
                s.release(fe.ino, o.fh).unwrap();
                (torn, reads)
            })
        };
        let writers: Vec<_> = (0..8u64)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    let o = s.open(&C, fe.ino, libc::O_RDWR).unwrap();
                    let w = |off: u64, data: &[u8]| {
                        assert_eq!(
                            s.write(&C, fe.ino, o.fh, off, data, false).unwrap(),
                            data.len()
                        );
                    };
                    // Chunks of each region, in a per-thread order.
                    let mut chunks = Vec::new();
                    let mut at = 0;
                    let mut k = t as usize;
                    while at < REGION {
                        let len = chunk_lens[k % chunk_lens.len()].min(REGION - at);
                        chunks.push((at, len));
                        at += len;
                        k += 3;
                    }
                    let rot = (t as usize * 7) % chunks.len();
                    chunks.rotate_left(rot);
                    let low = bytes(t + 100, REGION as usize);
                    let high = bytes(t + 200, REGION as usize);
                    let per_round = chunks.len().div_ceil(ROUNDS as usize);
                    for round in 0..ROUNDS {
                        let r = round as usize * per_round;
                        for &(at, len) in chunks.iter().skip(r).take(per_round) {
                            let (a, l) = (at as usize, len as usize);
                            w(t * REGION + at, &low[a..a + l]);
                            // High regions back to front: each extends.
                            let back = REGION - at - len;
                            let b = back as usize;
                            w(HIGH + t * REGION + back, &high[b..b + l]);
                        }
                        w(SAME, &[(t * ROUNDS + round) as u8; SAME_LEN]);
                        w(STAG + t * STAG_STEP, &[t as u8 + 1; STAG_LEN]);
                    }
                    s.release(fe.ino, o.fh).unwrap();
                })
            })
            .collect();
        for t in writers {
            t.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let (torn, reads) = reader.join().unwrap();
        // A clear file is the lower file: its pread/pwrite give no
        // atomicity between a read and a write spanning pages.
        if mode != Mode::Clear {
            assert_eq!(torn, 0, "{mode}: {torn} of {reads} reads saw a torn write");
        }
        let check = |all: &[u8], what: &str| {
            assert_eq!(all.len() as u64, SIZE, "{what}: size");
            for t in 0..8u64 {
                let r = (t * REGION) as usize..((t + 1) * REGION) as usize;
                assert!(
                    all[r] == bytes(t + 100, REGION as usize)[..],
                    "{what}: low region of thread {t}"
                );
                let r = (HIGH + t * REGION) as usize..(HIGH + (t + 1) * REGION) as usize;
                assert!(
                    all[r] == bytes(t + 200, REGION as usize)[..],
                    "{what}: high region of thread {t}"
                );
            }
            for x in STAG..STAG_END {
                let b = all[x as usize];
                let covers = |t: u64| {
                    (STAG + t * STAG_STEP..STAG + t * STAG_STEP + STAG_LEN as u64).contains(&x)
                };
                assert!(
                    (1..=8).contains(&b) && covers(b as u64 - 1),
                    "{what}: byte {x} of the overlapping ranges is {b}"
                );
            }
            let same = &all[SAME as usize..SAME as usize + SAME_LEN];
            assert!(
                same.iter().all(|&b| b == same[0]) && (same[0] as u64) < 8 * ROUNDS,
                "{what}: the range every thread rewrote mixes writes"
            );
            let zero = |r: std::ops::Range<u64>| {
                all[r.start as usize..r.end as usize]
                    .iter()
                    .all(|&b| b == 0)
            };
            assert!(zero(8 * REGION..STAG), "{what}: gap");
            assert!(zero(STAG_END..SAME), "{what}: gap");
            assert!(zero(SAME + SAME_LEN as u64..HIGH), "{what}: gap");
        };
        let live = read_all(&s, "shared");
        check(&live, &format!("{mode}"));
        drop(s);
        let fresh = stack_on(&dir, mode);
        let disk = read_all(&fresh, "shared");
        check(&disk, &format!("{mode} fresh stack"));
        assert!(live == disk, "{mode}: fresh stack reads other bytes");
    }
}

#[derive(Debug, Clone)]
enum Op {
    Create(u8),
    Write(u8, u64, u16, u8),
    Truncate(u8, u64),
    Read(u8, u64, u16),
    Unlink(u8),
    Rename(u8, u8),
    /// rename with RENAME_NOREPLACE (false) or RENAME_EXCHANGE (true).
    Rename2(u8, u8, bool),
    Link(u8, u8),
    Punch(u8, u64, u16),
}

fn op() -> impl Strategy<Value = Op> {
    let n = 0u8..4;
    let off = 0u64..40_000;
    prop_oneof![
        n.clone().prop_map(Op::Create),
        (n.clone(), off.clone(), 1u16..12_000, any::<u8>())
            .prop_map(|(a, b, c, d)| Op::Write(a, b, c, d)),
        (n.clone(), 0u64..30_000).prop_map(|(a, b)| Op::Truncate(a, b)),
        (n.clone(), off.clone(), 1u16..20_000).prop_map(|(a, b, c)| Op::Read(a, b, c)),
        n.clone().prop_map(Op::Unlink),
        (n.clone(), n.clone()).prop_map(|(a, b)| Op::Rename(a, b)),
        (n.clone(), n.clone(), any::<bool>()).prop_map(|(a, b, x)| Op::Rename2(a, b, x)),
        (n.clone(), n.clone()).prop_map(|(a, b)| Op::Link(a, b)),
        (n, off, 1u16..12_000).prop_map(|(a, b, c)| Op::Punch(a, b, c)),
    ]
}

fn fname(i: u8) -> String {
    format!("f{i}")
}

/// Apply `ops` to the stacking layer and to a model of the directory
/// (names to shared contents, so hard links share); they must agree.
fn run_model(mode: Mode, ops: &[Op]) -> Result<(), TestCaseError> {
    let (_dir, s) = stack(mode);
    let mut model: HashMap<String, Rc<RefCell<Vec<u8>>>> = HashMap::new();
    let open = |n: &str| -> Option<(Ino, Fh)> {
        let e = s.lookup(&C, Ino::ROOT, name(n)).ok()?;
        let o = s.open(&C, e.ino, libc::O_RDWR).ok()?;
        Some((e.ino, o.fh))
    };
    for op in ops {
        match *op {
            Op::Create(i) => {
                let n = fname(i);
                let r = s.create(
                    &C,
                    Ino::ROOT,
                    name(&n),
                    0o100644,
                    libc::O_RDWR | libc::O_EXCL,
                );
                prop_assert_eq!(r.is_ok(), !model.contains_key(&n), "create {}", n);
                if let Ok((e, o)) = r {
                    s.release(e.ino, o.fh).unwrap();
                    model.insert(n, Rc::new(RefCell::new(Vec::new())));
                }
            }
            Op::Write(i, off, len, byte) => {
                let n = fname(i);
                let Some(m) = model.get(&n) else { continue };
                let (ino, fh) = open(&n).unwrap();
                let data: Vec<u8> = (0..len).map(|k| byte.wrapping_add(k as u8)).collect();
                prop_assert_eq!(s.write(&C, ino, fh, off, &data, false).unwrap(), data.len());
                s.release(ino, fh).unwrap();
                let mut m = m.borrow_mut();
                let end = off as usize + data.len();
                if m.len() < end {
                    m.resize(end, 0);
                }
                m[off as usize..end].copy_from_slice(&data);
            }
            Op::Truncate(i, size) => {
                let n = fname(i);
                let Some(m) = model.get(&n) else { continue };
                let e = s.lookup(&C, Ino::ROOT, name(&n)).unwrap();
                let a = s
                    .setattr(
                        &C,
                        e.ino,
                        &SetAttr {
                            size: Some(size),
                            ..SetAttr::default()
                        },
                    )
                    .unwrap();
                prop_assert_eq!(a.size, size);
                m.borrow_mut().resize(size as usize, 0);
            }
            Op::Read(i, off, len) => {
                let n = fname(i);
                let Some(m) = model.get(&n) else { continue };
                let (ino, fh) = open(&n).unwrap();
                let mut buf = vec![0u8; len as usize];
                let got = s.read(&C, ino, fh, off, &mut buf).unwrap();
                s.release(ino, fh).unwrap();
                let m = m.borrow();
                let start = (off as usize).min(m.len());
                let end = (off as usize + len as usize).min(m.len());
                prop_assert_eq!(&buf[..got], &m[start..end], "read {} at {}", n, off);
            }
            Op::Unlink(i) => {
                let n = fname(i);
                prop_assert_eq!(
                    s.unlink(&C, Ino::ROOT, name(&n)).is_ok(),
                    model.remove(&n).is_some()
                );
            }
            Op::Rename(a, b) => {
                let (na, nb) = (fname(a), fname(b));
                let r = s.rename(
                    &C,
                    Ino::ROOT,
                    name(&na),
                    Ino::ROOT,
                    name(&nb),
                    RenameFlags(0),
                );
                prop_assert_eq!(r.is_ok(), model.contains_key(&na));
                // Renaming a name onto another link of the same file does
                // nothing (POSIX): both names stay.
                let same = match (model.get(&na), model.get(&nb)) {
                    (Some(a), Some(b)) => Rc::ptr_eq(a, b),
                    _ => false,
                };
                if !same && let Some(v) = model.remove(&na) {
                    model.insert(nb, v);
                }
            }
            Op::Rename2(a, b, exchange) => {
                let (na, nb) = (fname(a), fname(b));
                let flags = if exchange {
                    libc::RENAME_EXCHANGE
                } else {
                    libc::RENAME_NOREPLACE
                };
                let r = s.rename(
                    &C,
                    Ino::ROOT,
                    name(&na),
                    Ino::ROOT,
                    name(&nb),
                    RenameFlags(flags),
                );
                let (ha, hb) = (model.contains_key(&na), model.contains_key(&nb));
                if exchange {
                    // Both names must exist; they swap files.
                    let want = if !ha || !hb {
                        Err(Errno::ENOENT)
                    } else {
                        Ok(())
                    };
                    prop_assert_eq!(r, want, "exchange {} {}", na, nb);
                    if r.is_ok() && na != nb {
                        let va = model.remove(&na).unwrap();
                        let vb = model.insert(nb, va).unwrap();
                        model.insert(na, vb);
                    }
                } else {
                    let want = if !ha {
                        Err(Errno::ENOENT)
                    } else if hb {
                        Err(Errno::EEXIST)
                    } else {
                        Ok(())
                    };
                    prop_assert_eq!(r, want, "noreplace {} {}", na, nb);
                    if r.is_ok() {
                        let v = model.remove(&na).unwrap();
                        model.insert(nb, v);
                    }
                }
            }
            Op::Link(a, b) => {
                let (na, nb) = (fname(a), fname(b));
                let Some(v) = model.get(&na).cloned() else {
                    continue;
                };
                let e = s.lookup(&C, Ino::ROOT, name(&na)).unwrap();
                let r = s.link(&C, e.ino, Ino::ROOT, name(&nb));
                prop_assert_eq!(r.is_ok(), !model.contains_key(&nb));
                if r.is_ok() {
                    model.insert(nb, v);
                }
            }
            Op::Punch(i, off, len) => {
                let n = fname(i);
                let Some(m) = model.get(&n) else { continue };
                let (ino, fh) = open(&n).unwrap();
                let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
                s.fallocate(&C, ino, fh, off, len as u64, mode).unwrap();
                s.release(ino, fh).unwrap();
                let mut m = m.borrow_mut();
                let end = (off as usize + len as usize).min(m.len());
                if (off as usize) < end {
                    m[off as usize..end].fill(0);
                }
            }
        }
    }
    // Final state: every name reads back as the model says.
    for (n, m) in &model {
        let (ino, fh) = open(n).unwrap();
        let m = m.borrow();
        let mut buf = vec![0u8; m.len() + 10];
        let got = s.read(&C, ino, fh, 0, &mut buf).unwrap();
        prop_assert_eq!(&buf[..got], &m[..], "final contents of {}", n);
        prop_assert_eq!(s.getattr(&C, ino, None).unwrap().size, m.len() as u64);
        s.release(ino, fh).unwrap();
    }
    Ok(())
}

/// Renaming a name onto another hard link of the same file leaves both.
#[test]
fn rename_between_links_of_one_file() {
    let ops = [
        Op::Create(0),
        Op::Link(0, 2),
        Op::Rename(2, 0),
        Op::Create(2),
        Op::Read(2, 0, 10),
    ];
    run_model(Mode::Xts, &ops).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_operation_sequences_match_the_model(
        mode in prop_oneof![Just(Mode::Xts), Just(Mode::CbcCs1), Just(Mode::Gcm), Just(Mode::Clear)],
        ops in prop::collection::vec(op(), 1..40),
    ) {
        run_model(mode, &ops)?;
    }
}

const TAIL_XATTR: &str = "trusted.guardfs.tail";

/// An xattr of a lower file, by path.
fn lower_xattr(p: &std::path::Path, n: &str) -> VfsResult<Vec<u8>> {
    let p = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    guardfs_shim::sys::getxattr(&p, name(n))
}

fn truncate(s: &Stack, ino: Ino, size: u64) {
    s.setattr(
        &C,
        ino,
        &SetAttr {
            size: Some(size),
            ..SetAttr::default()
        },
    )
    .unwrap();
}

/// A truncate-down cut short by a crash right after its in-place write of
/// the new tail unit (the tail record set, the lower file still at its old
/// size) is finished by the next stacking layer over the same lower
/// directory (a remount): the file has the new size and the bytes it kept,
/// in every mode, and the record is gone. Sizes cover a tail of 1..15
/// bytes, a mid-unit tail and one a byte short of a full unit.
#[test]
fn an_interrupted_truncate_is_finished_at_the_next_mount() {
    for mode in [Mode::Xts, Mode::CbcCs1, Mode::Gcm] {
        for (len, new) in [(10000u64, 5000u64), (10000, 4100), (9000, 8191)] {
            let (dir, s) = stack(mode);
            let data = bytes(len ^ new, len as usize);
            let e = write_file(&s, Ino::ROOT, "f", &data);
            let path = dir.path().join("f");
            let before = std::fs::metadata(&path).unwrap().len();
            assert!(
                s.truncate_interrupted_for_test(e.ino, new).unwrap(),
                "{mode} {new}: a record was written"
            );
            // The crashed state: old lower size, a record, and the record
            // hidden from users of the mount.
            assert_eq!(std::fs::metadata(&path).unwrap().len(), before);
            let rec = lower_xattr(&path, TAIL_XATTR).unwrap();
            assert_eq!(&rec[..4], b"GFtl");
            assert_eq!(
                s.getxattr(&C, e.ino, name(TAIL_XATTR)).unwrap_err(),
                Errno::ENODATA
            );
            assert_eq!(
                s.setxattr(&C, e.ino, name(TAIL_XATTR), b"x", 0)
                    .unwrap_err(),
                Errno::EPERM
            );
            assert_eq!(
                s.removexattr(&C, e.ino, name(TAIL_XATTR)).unwrap_err(),
                Errno::EPERM
            );
            assert!(
                xattr_names(&s.listxattr(&C, e.ino).unwrap())
                    .iter()
                    .all(|n| !n.starts_with("trusted.guardfs."))
            );
            drop(s);

            // Remount: the first lookup already shows the finished size.
            let s = stack_on(&dir, mode);
            let e = s.lookup(&C, Ino::ROOT, name("f")).unwrap();
            assert_eq!(e.attr.size, new, "{mode} {len}->{new}: size at lookup");
            assert_eq!(
                lower_xattr(&path, TAIL_XATTR).unwrap_err(),
                Errno::ENODATA,
                "{mode}: record removed"
            );
            assert_eq!(
                read_all(&s, "f"),
                &data[..new as usize],
                "{mode} {len}->{new}: kept bytes"
            );
            drop(s);

            // The same through an open (the load path): a node that already
            // knows its class is not checked at lookup, and the read-only
            // open finishes the truncate.
            let (dir, s) = stack(mode);
            let e = write_file(&s, Ino::ROOT, "f", &data);
            assert!(s.truncate_interrupted_for_test(e.ino, new).unwrap());
            assert!(lower_xattr(&path_in(&dir), TAIL_XATTR).is_ok());
            assert_eq!(read_all(&s, "f"), &data[..new as usize], "{mode}: load");
            assert_eq!(
                lower_xattr(&path_in(&dir), TAIL_XATTR).unwrap_err(),
                Errno::ENODATA
            );
            // Later truncates run the journaled path to the end and leave
            // no record.
            truncate(&s, e.ino, new / 2 + 1);
            assert_eq!(
                lower_xattr(&path_in(&dir), TAIL_XATTR).unwrap_err(),
                Errno::ENODATA
            );
            let s = stack_on(&dir, mode);
            assert_eq!(read_all(&s, "f"), &data[..(new / 2 + 1) as usize]);
        }
    }
}

fn path_in(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("f")
}

/// A tail record that does not fit its file is never applied: the file is
/// refused (EIO) and its lower bytes and record are left as they are. An
/// emptying truncate makes it a fresh file and drops the record.
#[test]
fn a_malformed_tail_record_refuses_the_file_and_changes_nothing() {
    for mode in [Mode::Xts, Mode::Gcm] {
        let (dir, s) = stack(mode);
        let data = bytes(42, 10000);
        write_file(&s, Ino::ROOT, "f", &data);
        drop(s);
        let path = path_in(&dir);
        let lower = std::fs::read(&path).unwrap();
        let unit_len = if mode == Mode::Gcm { 4068 } else { 4096 };
        let overhead = if mode == Mode::Gcm { 28 } else { 0 };
        let record = |unit: u64, target: u64, start: u16, n: usize| {
            let mut v = b"GFtl\x01".to_vec();
            v.extend_from_slice(&unit.to_le_bytes());
            v.extend_from_slice(&target.to_le_bytes());
            v.extend_from_slice(&start.to_le_bytes());
            v.extend(std::iter::repeat_n(0xa5u8, n));
            v
        };
        // A valid target: logical 5000 ends in unit 1.
        let tail = (5000 - unit_len) + overhead;
        let target = 4096 + 4096 + tail as u64;
        let bad: Vec<Vec<u8>> = vec![
            b"nonsense".to_vec(),
            {
                let mut v = record(1, target, 0, tail);
                v[4] = 2; // unknown version
                v
            },
            record(0, target, 0, tail),               // wrong unit
            record(1, target, 0, tail - 1),           // bytes do not reach the end
            record(1, target, 1, tail),               // bytes run past the end
            record(1, 4096 + 4096, 0, 0),             // target on a unit boundary
            record(3, 4096 + 3 * 4096 + 100, 0, 100), // past the file
        ];
        for v in bad {
            let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
            guardfs_shim::sys::setxattr(&p, name(TAIL_XATTR), &v, 0).unwrap();
            let s = stack_on(&dir, mode);
            let e = s.lookup(&C, Ino::ROOT, name("f")).unwrap();
            assert_eq!(
                s.open(&C, e.ino, libc::O_RDWR).unwrap_err(),
                Errno::EIO,
                "{mode}: {v:?}"
            );
            assert_eq!(std::fs::read(&path).unwrap(), lower, "{mode}: untouched");
            assert_eq!(lower_xattr(&path, TAIL_XATTR).unwrap(), v);
        }
        // Emptying it makes a fresh file, without the record.
        let s = stack_on(&dir, mode);
        let e = s.lookup(&C, Ino::ROOT, name("f")).unwrap();
        truncate(&s, e.ino, 0);
        assert_eq!(lower_xattr(&path, TAIL_XATTR).unwrap_err(), Errno::ENODATA);
        let o = s.open(&C, e.ino, libc::O_RDWR).unwrap();
        s.write(&C, e.ino, o.fh, 0, b"fresh", false).unwrap();
        s.release(e.ino, o.fh).unwrap();
        assert_eq!(read_all(&stack_on(&dir, mode), "f"), b"fresh");
    }
}

/// A backup reading the raw view (permit without applykey) of a file whose
/// truncate a crash interrupted gets the finished file, not the old size
/// with a half-rewritten tail.
#[test]
fn an_interrupted_truncate_is_finished_before_a_raw_reader_sees_the_file() {
    for mode in [Mode::Xts, Mode::Gcm] {
        let (dir, s) = stack(mode);
        let data = bytes(41, 10000);
        let e = write_file(&s, Ino::ROOT, "f", &data);
        assert!(s.truncate_interrupted_for_test(e.ino, 5000).unwrap());
        drop(s);

        let policy = guardfs_policy::CompiledPolicy::from_json(
            r#"{ "name": "backup", "security_rules": [
                { "order_number": 1, "action": "all_ops", "effect": "permit" } ] }"#,
        )
        .unwrap();
        let raw = Stack::new(
            nix::fcntl::open(
                dir.path(),
                nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
                nix::sys::stat::Mode::empty(),
            )
            .unwrap(),
            GuardConfig {
                mode,
                keys: Arc::new(StaticKeys::default()),
                access: Arc::new(Access::with_policy(
                    dir.path().as_os_str().as_encoded_bytes(),
                    policy,
                    guardfs_policy::HostSettings::default(),
                    None,
                )),
                passthrough: false,
            },
        )
        .unwrap();
        let path = dir.path().join("f");
        let e = raw.lookup(&C, Ino::ROOT, name("f")).unwrap();
        assert_eq!(
            lower_xattr(&path, TAIL_XATTR).unwrap_err(),
            Errno::ENODATA,
            "{mode}: record finished at the raw lookup"
        );
        let lower = std::fs::read(&path).unwrap();
        assert_eq!(e.attr.size, lower.len() as u64, "{mode}: raw size");
        drop(raw);
        // What the backup copied decrypts to the kept bytes.
        let s = stack_on(&dir, mode);
        assert_eq!(read_all(&s, "f"), &data[..5000], "{mode}: kept bytes");
    }
}
