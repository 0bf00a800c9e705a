//! Crash-safe replacement of small state files.
//!
//! [`write_atomic`] writes a temp file beside the target (created with
//! `O_EXCL`, named `.<name>.tmp-<pid>-<n>`), fsyncs it, sets its mode,
//! renames it over the target and fsyncs the directory: after a crash the
//! target is either its old or its new contents. A temp file left by a
//! crash is never read as state ([`read_file`] reads only the target) and is
//! removed by the next [`write_atomic`] of the same file once the process
//! that made it is gone. [`create_atomic`] is the same but never replaces
//! an existing file (for files that must be made once, like the host key).

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Result, StateError};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The directory and file name of `path`.
fn split(path: &Path) -> Result<(PathBuf, String)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| StateError::invalid(path, "not a file path with a UTF-8 file name"))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name.to_owned()))
}

fn temp_prefix(name: &str) -> String {
    format!(".{name}.tmp-")
}

/// Remove temp files of `path` left by processes that no longer exist.
/// Errors are ignored: a stale temp file is harmless, only untidy.
pub fn clean_stale_temps(path: &Path) {
    let Ok((dir, name)) = split(path) else { return };
    let prefix = temp_prefix(&name);
    let Ok(entries) = fs::read_dir(&dir) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        let alive = match pid {
            Some(p) if p == me => true,
            Some(p) => Path::new("/proc").join(p.to_string()).exists(),
            None => false,
        };
        if !alive {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Write `bytes` to a fresh temp file beside `path` (`O_EXCL`), set its
/// mode and fsync it. Returns the directory and the temp file; on error the
/// temp file is removed.
fn write_temp(path: &Path, bytes: &[u8], mode: u32) -> Result<(PathBuf, PathBuf)> {
    let (dir, name) = split(path)?;
    clean_stale_temps(path);
    let tmp = dir.join(format!(
        "{}{}-{}",
        temp_prefix(&name),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| StateError::io(&tmp, "cannot create temp file", e))?;
    let result = (|| {
        file.write_all(bytes)
            .map_err(|e| StateError::io(&tmp, "cannot write", e))?;
        // fchmod is not subject to the umask, so the mode is exact.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| StateError::io(&tmp, "cannot set mode", e))?;
        file.sync_all()
            .map_err(|e| StateError::io(&tmp, "cannot fsync", e))
    })();
    drop(file);
    match result {
        Ok(()) => Ok((dir, tmp)),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StateError::io(dir, "cannot fsync directory", e))
}

/// Replace `path` with `bytes` atomically, leaving it with permission bits
/// `mode`. The directory must exist.
///
/// # Errors
/// Any I/O failure, naming the file; the target is then unchanged and the
/// temp file removed.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let (dir, tmp) = write_temp(path, bytes, mode)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(StateError::io(path, "cannot rename temp file over", e));
    }
    sync_dir(&dir)
}

/// Create `path` with `bytes` and mode `mode` only if it does not exist,
/// atomically (the file appears complete or not at all): the temp file is
/// hard-linked to `path`, which fails if `path` exists. Returns `false`,
/// writing nothing, if `path` already exists.
///
/// # Errors
/// Any I/O failure, naming the file.
pub fn create_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<bool> {
    let (dir, tmp) = write_temp(path, bytes, mode)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => sync_dir(&dir).map(|()| true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(StateError::io(path, "cannot link temp file to", e)),
    }
}

/// Read `path` whole; `None` if it does not exist.
///
/// # Errors
/// Any other I/O failure, naming the file.
pub fn read_file(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StateError::io(path, "cannot read", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn round_trip_mode_and_no_temp_left() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        assert_eq!(read_file(&p).unwrap(), None);
        write_atomic(&p, b"one", 0o600).unwrap();
        assert_eq!(read_file(&p).unwrap().unwrap(), b"one");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        write_atomic(&p, b"two", 0o644).unwrap();
        assert_eq!(read_file(&p).unwrap().unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert_eq!(names(d.path()), vec!["state.json"]);
    }

    #[test]
    fn stale_temp_is_ignored_and_cleaned() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        write_atomic(&p, b"good", 0o644).unwrap();
        // A crash between create and rename, by a process long gone.
        let stale = d.path().join(".state.json.tmp-4294967295-0");
        fs::write(&stale, b"half-written").unwrap();
        let junk = d.path().join(".state.json.tmp-garbage");
        fs::write(&junk, b"x").unwrap();
        assert_eq!(read_file(&p).unwrap().unwrap(), b"good");
        write_atomic(&p, b"better", 0o644).unwrap();
        assert_eq!(read_file(&p).unwrap().unwrap(), b"better");
        assert_eq!(names(d.path()), vec!["state.json"]);
    }

    #[test]
    fn create_atomic_never_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("host.key");
        assert!(create_atomic(&p, b"first", 0o600).unwrap());
        assert!(!create_atomic(&p, b"second", 0o600).unwrap());
        assert_eq!(read_file(&p).unwrap().unwrap(), b"first");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(names(d.path()), vec!["host.key"]);
    }

    #[test]
    fn missing_directory_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("nope/state.json");
        let e = write_atomic(&p, b"x", 0o644).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        assert!(e.to_string().contains("cannot create temp file"), "{e}");
    }

    #[test]
    fn read_error_names_file() {
        let d = tempfile::tempdir().unwrap();
        // Reading a directory as a file fails with something other than NotFound.
        let e = read_file(d.path()).unwrap_err();
        assert!(e.to_string().contains(&*d.path().to_string_lossy()), "{e}");
    }
}
