//! Which processes are using a directory: their working directory, root,
//! an open file or a mapped file is inside it. Guarding such a directory
//! would leave them writing plaintext to the lower directory, so vmd
//! refuses and retries, as CTE does.

use std::path::Path;

/// A process using the directory: pid and command name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub pid: u32,
    pub comm: String,
}

fn inside(p: &Path, dir: &Path) -> bool {
    p == dir || p.starts_with(dir)
}

/// Every process using `dir`, by pid, except this one and `exclude`
/// (the secfs service, which holds the lower directory by design).
pub fn users(dir: &Path, exclude: Option<u32>) -> Vec<User> {
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<User> = procs
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && Some(pid) != exclude && uses(pid, dir))
        .map(|pid| User {
            pid,
            comm: std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
        })
        .collect();
    out.sort_by_key(|u| u.pid);
    out
}

fn uses(pid: u32, dir: &Path) -> bool {
    let base = format!("/proc/{pid}");
    let link_inside =
        |name: &str| std::fs::read_link(format!("{base}/{name}")).is_ok_and(|p| inside(&p, dir));
    if link_inside("cwd") || (link_inside("root") && dir != Path::new("/")) {
        return true;
    }
    for sub in ["fd", "map_files"] {
        if let Ok(entries) = std::fs::read_dir(format!("{base}/{sub}")) {
            for e in entries.filter_map(Result::ok) {
                if std::fs::read_link(e.path()).is_ok_and(|p| inside(&p, dir)) {
                    return true;
                }
            }
        }
    }
    false
}

/// "1234 (sleep), 5678 (bash)".
pub fn describe(users: &[User]) -> String {
    users
        .iter()
        .map(|u| format!("{} ({})", u.pid, u.comm))
        .collect::<Vec<_>>()
        .join(", ")
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
        let found = users(dir.path(), None);
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
