//! The GuardPoint registry, `etc/guardpoints.json` (0644):
//! `[{"path":"/data","policy":"p","type":"auto"}]`.
//!
//! Paths are absolute and normalized (no `.`, `..`, `//` or trailing `/`),
//! never `/`, and GuardPoints never nest: one GuardPoint inside another
//! would put files under two policies.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{Result, StateError, atomic, check_name};

/// How a GuardPoint is brought up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpType {
    /// Guarded by `vmd` at start.
    Auto,
    /// Guarded only on an explicit `secfsd -guard`.
    Manual,
}

impl GpType {
    /// `auto` or `manual`.
    pub fn name(self) -> &'static str {
        match self {
            GpType::Auto => "auto",
            GpType::Manual => "manual",
        }
    }
}

impl fmt::Display for GpType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A GuardPoint type that is neither `auto` nor `manual`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown GuardPoint type {0:?}: expected auto or manual")]
pub struct ParseGpTypeError(pub String);

impl FromStr for GpType {
    type Err = ParseGpTypeError;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(GpType::Auto),
            "manual" => Ok(GpType::Manual),
            _ => Err(ParseGpTypeError(s.to_owned())),
        }
    }
}

/// One registered GuardPoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardPointEntry {
    /// The guarded directory.
    pub path: String,
    /// The policy that governs it.
    pub policy: String,
    /// How it is brought up.
    #[serde(rename = "type")]
    pub gp_type: GpType,
}

/// Why `path` cannot be a GuardPoint path.
fn path_problem(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        return Some("the path is empty");
    }
    if !path.starts_with('/') {
        return Some("the path must be absolute");
    }
    if path == "/" {
        return Some("the root directory cannot be a GuardPoint");
    }
    if path.contains('\0') {
        return Some("the path contains a NUL byte");
    }
    if path.ends_with('/') {
        return Some("the path must not end with `/`");
    }
    for c in path[1..].split('/') {
        match c {
            "" => return Some("the path must not contain `//`"),
            "." => return Some("the path must not contain a `.` component"),
            ".." => return Some("the path must not contain a `..` component"),
            _ => {}
        }
    }
    None
}

/// Whether `inner` is strictly inside `outer` (both normalized).
fn is_inside(inner: &str, outer: &str) -> bool {
    inner.len() > outer.len() && inner.starts_with(outer) && inner.as_bytes()[outer.len()] == b'/'
}

/// The GuardPoint registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuardPoints {
    entries: Vec<GuardPointEntry>,
}

impl GuardPoints {
    /// An empty registry.
    pub fn new() -> GuardPoints {
        GuardPoints::default()
    }

    /// Read the registry; a missing file is empty.
    ///
    /// # Errors
    /// Bad JSON, or an entry that would be refused by
    /// [`GuardPoints::add`], with the file and entry index named.
    pub fn load(path: &Path) -> Result<GuardPoints> {
        let Some(bytes) = atomic::read_file(path)? else {
            return Ok(GuardPoints::new());
        };
        let entries: Vec<GuardPointEntry> =
            serde_json::from_slice(&bytes).map_err(|e| StateError::json(path, &e))?;
        let mut gps = GuardPoints::new();
        for (i, e) in entries.into_iter().enumerate() {
            gps.add(&e.path, &e.policy, e.gp_type)
                .map_err(|err| StateError::invalid(path, format!("entry {i}: {err}")))?;
        }
        Ok(gps)
    }

    /// Write the registry atomically (0644).
    ///
    /// # Errors
    /// I/O errors, naming the file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(&self.entries)
            .map_err(|e| StateError::invalid(path, format!("cannot serialize: {e}")))?;
        bytes.push(b'\n');
        atomic::write_atomic(path, &bytes, 0o644)
    }

    /// Register a GuardPoint.
    ///
    /// # Errors
    /// [`StateError::GuardPoint`] for a path that is not absolute and
    /// normalized, is `/`, is already registered, or is inside or contains
    /// another GuardPoint; [`StateError::InvalidName`] for a bad policy
    /// name. The registry is unchanged on error.
    pub fn add(&mut self, path: &str, policy: &str, gp_type: GpType) -> Result<()> {
        let refuse = |why: String| {
            Err(StateError::GuardPoint {
                path: path.to_owned(),
                why,
            })
        };
        if let Some(p) = path_problem(path) {
            return refuse(p.to_owned());
        }
        check_name("policy", policy)?;
        for e in &self.entries {
            if e.path == path {
                return refuse(format!("already a GuardPoint (policy '{}')", e.policy));
            }
            if is_inside(path, &e.path) {
                return refuse(format!("inside the GuardPoint {:?}", e.path));
            }
            if is_inside(&e.path, path) {
                return refuse(format!("contains the GuardPoint {:?}", e.path));
            }
        }
        self.entries.push(GuardPointEntry {
            path: path.to_owned(),
            policy: policy.to_owned(),
            gp_type,
        });
        Ok(())
    }

    /// Unregister a GuardPoint; returns its entry.
    ///
    /// # Errors
    /// [`StateError::GuardPoint`] if `path` is not registered.
    pub fn remove(&mut self, path: &str) -> Result<GuardPointEntry> {
        let i = self
            .entries
            .iter()
            .position(|e| e.path == path)
            .ok_or_else(|| StateError::GuardPoint {
                path: path.to_owned(),
                why: "not a GuardPoint".to_owned(),
            })?;
        Ok(self.entries.remove(i))
    }

    /// The GuardPoint at exactly `path`.
    pub fn get(&self, path: &str) -> Option<&GuardPointEntry> {
        self.entries.iter().find(|e| e.path == path)
    }

    /// Every GuardPoint, in registration order.
    pub fn list(&self) -> &[GuardPointEntry] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn add_remove_save_load() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("guardpoints.json");
        let mut g = GuardPoints::load(&p).unwrap();
        assert!(g.list().is_empty());
        g.add("/data", "p", GpType::Auto).unwrap();
        g.add("/srv/db", "db-policy", GpType::Manual).unwrap();
        g.add("/database", "p", GpType::Auto).unwrap(); // a sibling prefix, not nested
        g.save(&p).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let v: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        assert_eq!(
            v[0],
            serde_json::json!({"path":"/data","policy":"p","type":"auto"})
        );
        assert_eq!(v[1]["type"], "manual");
        let g2 = GuardPoints::load(&p).unwrap();
        assert_eq!(g2, g);
        assert_eq!(g2.get("/srv/db").unwrap().policy, "db-policy");
        let e = g.remove("/data").unwrap();
        assert_eq!(e.path, "/data");
        assert_eq!(g.list().len(), 2);
        let err = g.remove("/data").unwrap_err().to_string();
        assert_eq!(err, "GuardPoint \"/data\": not a GuardPoint");
    }

    #[test]
    fn refused_paths() {
        let mut g = GuardPoints::new();
        g.add("/data/a", "p", GpType::Auto).unwrap();
        for (path, why) in [
            ("", "empty"),
            ("data", "absolute"),
            ("/", "root directory"),
            ("/x/", "end with `/`"),
            ("/x//y", "`//`"),
            ("/x/./y", "`.` component"),
            ("/x/../y", "`..` component"),
            ("/x\0y", "NUL"),
            ("/data/a", "already a GuardPoint"),
            ("/data/a/b", "inside the GuardPoint \"/data/a\""),
            ("/data", "contains the GuardPoint \"/data/a\""),
        ] {
            let e = g.add(path, "p", GpType::Auto).unwrap_err();
            assert!(matches!(e, StateError::GuardPoint { .. }), "{e}");
            assert!(e.to_string().contains(why), "{path}: {e}");
        }
        assert!(matches!(
            g.add("/other", "bad/name", GpType::Auto),
            Err(StateError::InvalidName { .. })
        ));
        assert_eq!(g.list().len(), 1);
    }

    #[test]
    fn gp_type_parse() {
        assert_eq!("auto".parse::<GpType>().unwrap(), GpType::Auto);
        assert_eq!("Manual".parse::<GpType>().unwrap(), GpType::Manual);
        assert!("sometimes".parse::<GpType>().is_err());
        assert_eq!(GpType::Manual.to_string(), "manual");
    }

    #[test]
    fn corrupt_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("guardpoints.json");
        for (text, want) in [
            ("[{\"path\":\"/a\",", "not valid JSON"),
            (
                "[{\"path\":\"/a\",\"policy\":\"p\",\"type\":\"weekly\"}]",
                "unknown variant",
            ),
            (
                "[{\"path\":\"/a\",\"policy\":\"p\"}]",
                "missing field `type`",
            ),
            (
                "[{\"path\":\"/a\",\"policy\":\"p\",\"type\":\"auto\",\"x\":1}]",
                "unknown field",
            ),
            (
                "[{\"path\":\"/a\",\"policy\":\"p\",\"type\":\"auto\"},\n {\"path\":\"/a/b\",\"policy\":\"p\",\"type\":\"auto\"}]",
                "entry 1: GuardPoint \"/a/b\": inside",
            ),
            (
                "[{\"path\":\"a/\",\"policy\":\"p\",\"type\":\"auto\"}]",
                "entry 0",
            ),
        ] {
            fs::write(&p, text).unwrap();
            let e = GuardPoints::load(&p).unwrap_err().to_string();
            assert!(e.starts_with(&p.display().to_string()), "{e}");
            assert!(e.contains(want), "{text}: {e}");
            assert_eq!(fs::read_to_string(&p).unwrap(), text);
        }
        fs::write(&p, "[\n  {\"path\": 3}\n]").unwrap();
        let e = GuardPoints::load(&p).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
