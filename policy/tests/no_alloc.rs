//! Evaluation, host-settings classification and audit-line rendering into a
//! caller's buffer allocate nothing: proven with a counting allocator.
//!
//! This is an integration test (its own crate) because a global allocator
//! needs `unsafe impl`, which the library forbids.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Write;

use guardfs_policy::{
    Action, Ancestor, AuditLine, CompiledPolicy, HostSettings, Request, TimeOfWeek,
};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the thread-local may be gone while the thread exits.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees hold; counting touches only a
// const-initialized thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: `ptr` came from `System` through this allocator; the
        // caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

/// A `fmt::Write` into a fixed stack buffer.
struct StackBuf {
    buf: [u8; 1024],
    len: usize,
}

impl Write for StackBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[test]
fn hot_paths_do_not_allocate() {
    let policies: Vec<CompiledPolicy> = [
        include_str!("../examples/database.json"),
        include_str!("../examples/learn-mode.json"),
        include_str!("../examples/shared-tree.json"),
    ]
    .iter()
    .map(|t| CompiledPolicy::from_json(t).unwrap())
    .collect();
    let host = HostSettings::parse("|authenticator|/usr/sbin/sshd\n|path_no_trust|/usr/bin/ksh\n")
        .unwrap();
    let ancestry = [
        Ancestor {
            exe: b"/usr/sbin/sshd",
            verified: true,
            identity_changed: false,
        },
        Ancestor {
            exe: b"/usr/bin/bash",
            verified: true,
            identity_changed: true,
        },
    ];
    let sha = [0x9f; 32];
    let paths: [&[u8]; 5] = [
        b"/oradata/sys/x.dbf",
        b"/public/a",
        b"/projects/p/q",
        b"/",
        b"/bad/../path",
    ];
    let mut buf = StackBuf {
        buf: [0; 1024],
        len: 0,
    };

    let n = allocations_during(|| {
        for p in &policies {
            for path in paths {
                for action in Action::ALL {
                    let mut r =
                        Request::new(path, action, 54321, 54322, TimeOfWeek::from_unix(1, 0));
                    r.groups = &[50, 2100];
                    r.user_name = Some("oracle");
                    r.group_names = &["oinstall", "dba"];
                    r.exe = Some(b"/opt/oracle/product/bin/oracle");
                    r.exe_sha256 = Some(&sha);
                    r.authenticated = host.classify(&ancestry).is_authenticated();
                    let d = p.evaluate(&r);
                    buf.len = 0;
                    write!(buf, "{}", AuditLine::new(p, &r, b"/u01", &d)).unwrap();
                    std::hint::black_box(&buf.buf[..buf.len]);
                }
            }
        }
    });
    assert_eq!(n, 0, "the hot paths allocated {n} times");
    // The counter works.
    assert!(allocations_during(|| drop(std::hint::black_box(vec![1u8; 10]))) > 0);
}
