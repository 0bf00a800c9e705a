//! Hardening of the agent's own processes (`secfs`, `vmd`): keys live in
//! their memory, so it is locked (never swapped out) and the processes are
//! not dumpable: no core dump, and `/proc/PID/mem`, `environ`, `fd/` and
//! ptrace attach need `CAP_SYS_PTRACE` in the init user namespace even for
//! a process with the same uid (a root in a container's user namespace,
//! say). Non-root users cannot read or attach to a root process anyway.
//! Key types zeroize their bytes on drop (`guardfs_crypto::keys`).

use log::{info, warn};

/// Lock all memory (current and future) and mark the process not
/// dumpable; report what took effect (checked back from the kernel) in
/// the log under `who`. Never fails: a refusal is logged as a warning.
pub fn protect_process_memory(who: &str) {
    let locked = nix::sys::mman::mlockall(
        nix::sys::mman::MlockAllFlags::MCL_CURRENT | nix::sys::mman::MlockAllFlags::MCL_FUTURE,
    );
    if let Err(e) = &locked {
        warn!("{who}: mlockall failed ({e}); keys could reach swap");
    }
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        warn!("{who}: cannot disable core dumps and ptrace access: {e}");
    }
    let dumpable = nix::sys::prctl::get_dumpable().unwrap_or(true);
    if locked.is_ok() && !dumpable {
        info!("{who}: memory locked, process not dumpable");
    } else {
        warn!(
            "{who}: memory {}, process {}",
            if locked.is_ok() {
                "locked"
            } else {
                "NOT locked"
            },
            if dumpable { "DUMPABLE" } else { "not dumpable" }
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_process_ends_up_not_dumpable() {
        // Run in a child: the test harness itself stays dumpable.
        let me = std::env::current_exe().unwrap();
        if std::env::var_os("GUARDFS_HARDEN_CHILD").is_some() {
            super::protect_process_memory("test");
            assert!(!nix::sys::prctl::get_dumpable().unwrap());
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let lck: u64 = status
                .lines()
                .find_map(|l| l.strip_prefix("VmLck:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap();
            assert!(lck > 0, "VmLck {lck} kB");
            return;
        }
        let out = std::process::Command::new(me)
            .args([
                "--exact",
                "harden::tests::the_process_ends_up_not_dumpable",
                "--test-threads",
                "1",
            ])
            .env("GUARDFS_HARDEN_CHILD", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
}
