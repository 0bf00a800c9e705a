//! The stacking layer driven through the vnode-operations trait, without a
//! mount: unit tests and a model-based property test of random operation
//! sequences against an in-memory reference. Needs root (the mode marker
//! is a `trusted.*` xattr); CI runs as root.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::rc::Rc;
use std::sync::Arc;

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
    let s = Stack::new(
        fd,
        GuardConfig {
            mode,
            keys,
            access,
            passthrough: false,
        },
    )
    .unwrap();
    (dir, s)
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
    let (e, o) = s
        .create(&C, Ino::ROOT, name("f"), 0o100644, libc::O_RDWR)
        .unwrap();
    s.release(e.ino, o.fh).unwrap();
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

#[test]
fn forget_drops_nodes() {
    let (_dir, s) = stack(Mode::Gcm);
    let (e, o) = s
        .create(&C, Ino::ROOT, name("f"), 0o100644, libc::O_RDWR)
        .unwrap();
    s.release(e.ino, o.fh).unwrap();
    let again = s.lookup(&C, Ino::ROOT, name("f")).unwrap();
    assert_eq!(again.ino, e.ino, "one node per lower inode");
    let before = s.node_count();
    s.forget(e.ino, 2);
    assert_eq!(s.node_count(), before - 1);
}

#[derive(Debug, Clone)]
enum Op {
    Create(u8),
    Write(u8, u64, u16, u8),
    Truncate(u8, u64),
    Read(u8, u64, u16),
    Unlink(u8),
    Rename(u8, u8),
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
