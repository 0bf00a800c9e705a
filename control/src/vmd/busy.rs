//! Which processes are using a directory: their working directory, root,
//! an open file or a mapped file is inside it. Guarding such a directory
//! would leave them reading and writing the lower directory behind the
//! GuardPoint, so vmd refuses and retries, as CTE does.
//!
//! The check itself lives in secfs (`guardfs_shim::reach::busy`), which
//! does it again before and after mounting (no window between check and
//! mount); vmd asks first so that its status can name the processes. A
//! directory is named by its filesystem and its path inside it, so
//! processes inside it through a bind mount or from another mount
//! namespace are found too; on a guarded directory, the users of the
//! GuardPoint (its FUSE mount, wherever attached) are found.

use std::path::Path;

use guardfs_shim::reach::busy::{self, Target};
use guardfs_shim::reach::mountinfo::FsPath;

pub use guardfs_shim::reach::busy::{User, describe};

/// Every process using `dir`, by pid, except this one and `exclude`
/// (the secfs service, which holds the lower directory by design).
pub fn users(dir: &Path, exclude: Option<u32>) -> Vec<User> {
    let Ok(target) = FsPath::of_path(dir) else {
        return Vec::new();
    };
    busy::users(
        &Target::Tree {
            lower: &target,
            covered_by: None,
        },
        exclude.as_slice(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_sitting_inside_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(dir.path())
            .spawn()
            .unwrap();
        let mut found = Vec::new();
        for _ in 0..100 {
            found = users(dir.path(), None);
            if found.iter().any(|u| u.comm == "sleep") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            found
                .iter()
                .any(|u| u.pid == child.id() && u.comm == "sleep"),
            "{found:?}"
        );
        assert!(users(dir.path(), None).iter().all(|u| u.pid != child.id()));
        assert!(describe(&found).contains("(sleep)"));
    }
}
