//! The policy store: applied policies as `etc/policies/<name>.json`
//! (0644, the JSON text as applied) and the host settings as
//! `etc/hostsettings`.
//!
//! Every document is validated by `guardfs-policy` before anything is
//! written, and policy names are restricted to `[A-Za-z0-9._-]{1,64}` (not
//! starting with `.`) because they become file names.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use guardfs_policy::{CompiledPolicy, HostSettings};

use super::{Result, StateError, atomic, check_name};

/// Policies and host settings under `etc/`.
#[derive(Debug, Clone)]
pub struct PolicyStore {
    etc: PathBuf,
    dir: PathBuf,
}

fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|_| StateError::invalid(path, "not UTF-8 text"))
}

impl PolicyStore {
    /// The store under `etc_dir` (normally `Layout::etc`).
    pub fn new(etc_dir: &Path) -> PolicyStore {
        PolicyStore {
            etc: etc_dir.to_owned(),
            dir: etc_dir.join("policies"),
        }
    }

    /// The file of policy `name` (the name is not checked).
    pub fn policy_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// The host settings file.
    pub fn host_settings_path(&self) -> PathBuf {
        self.etc.join("hostsettings")
    }

    /// Validate and store a policy document, replacing any policy of the
    /// same name. Returns the policy's name.
    ///
    /// # Errors
    /// [`StateError::Policy`] with the policy engine's precise message, or
    /// [`StateError::InvalidName`]; nothing is written on error.
    pub fn apply(&self, json_text: &str) -> Result<String> {
        let compiled = CompiledPolicy::from_json(json_text).map_err(StateError::Policy)?;
        let name = compiled.name().to_owned();
        check_name("policy", &name)?;
        if let Err(e) = fs::DirBuilder::new().mode(0o755).create(&self.dir)
            && e.kind() != ErrorKind::AlreadyExists
        {
            return Err(StateError::io(&self.dir, "cannot create directory", e));
        }
        let mut text = json_text.to_owned();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        atomic::write_atomic(&self.policy_path(&name), text.as_bytes(), 0o644)?;
        Ok(name)
    }

    /// Names of the stored policies, sorted.
    ///
    /// # Errors
    /// I/O errors reading the directory (a missing directory is empty).
    pub fn list(&self) -> Result<Vec<String>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StateError::io(&self.dir, "cannot list", e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StateError::io(&self.dir, "cannot list", e))?;
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            // Temp files start with `.` and fail the name check.
            if check_name("policy", name).is_ok() {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// The stored JSON text of policy `name`, if any.
    ///
    /// # Errors
    /// [`StateError::InvalidName`], I/O errors, non-UTF-8 text.
    pub fn get(&self, name: &str) -> Result<Option<String>> {
        check_name("policy", name)?;
        let path = self.policy_path(name);
        atomic::read_file(&path)?
            .map(|b| utf8(&path, b))
            .transpose()
    }

    /// Policy `name`, compiled.
    ///
    /// # Errors
    /// [`StateError::NoSuchPolicy`], or [`StateError::StoredPolicy`] if the
    /// stored text no longer validates (edited by hand), or names another
    /// policy than its file.
    pub fn compiled(&self, name: &str) -> Result<CompiledPolicy> {
        let text = self
            .get(name)?
            .ok_or_else(|| StateError::NoSuchPolicy(name.to_owned()))?;
        let path = self.policy_path(name);
        let c = CompiledPolicy::from_json(&text).map_err(|source| StateError::StoredPolicy {
            path: path.clone(),
            source,
        })?;
        if c.name() != name {
            return Err(StateError::invalid(
                &path,
                format!("the policy inside is named {:?}, not {name:?}", c.name()),
            ));
        }
        Ok(c)
    }

    /// The first key name the key rules of policy `name` use; `None` if it
    /// uses only `clear_key` or has no key rules (the policy engine then
    /// uses the key named `default`; see
    /// [`CompiledPolicy::has_key_rules`]).
    ///
    /// # Errors
    /// As [`PolicyStore::compiled`].
    pub fn policy_key(&self, name: &str) -> Result<Option<String>> {
        Ok(self.compiled(name)?.key_names().next().map(str::to_owned))
    }

    /// Delete policy `name`. Returns whether it existed. The caller must
    /// check that no GuardPoint uses it.
    ///
    /// # Errors
    /// [`StateError::InvalidName`], I/O errors.
    pub fn remove(&self, name: &str) -> Result<bool> {
        check_name("policy", name)?;
        let path = self.policy_path(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StateError::io(&path, "cannot remove", e)),
        }
    }

    /// Validate and store the host settings text (0644).
    ///
    /// # Errors
    /// [`StateError::HostSettings`] with the bad line; nothing is written on
    /// error.
    pub fn set_host_settings(&self, text: &str) -> Result<()> {
        HostSettings::parse(text).map_err(StateError::HostSettings)?;
        let path = self.host_settings_path();
        atomic::write_atomic(&path, text.as_bytes(), 0o644)
    }

    /// The stored host settings text, if any.
    ///
    /// # Errors
    /// I/O errors, non-UTF-8 text.
    pub fn host_settings(&self) -> Result<Option<String>> {
        let path = self.host_settings_path();
        atomic::read_file(&path)?
            .map(|b| utf8(&path, b))
            .transpose()
    }

    /// The stored host settings, parsed (`None` if there are none).
    ///
    /// # Errors
    /// As [`PolicyStore::host_settings`], or an [`StateError::Invalid`]
    /// naming the file if the stored text no longer parses.
    pub fn host_settings_parsed(&self) -> Result<Option<HostSettings>> {
        let Some(text) = self.host_settings()? else {
            return Ok(None);
        };
        HostSettings::parse(&text)
            .map(Some)
            .map_err(|e| StateError::invalid(&self.host_settings_path(), e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use std::os::unix::fs::PermissionsExt;

    fn policy(name: &str, keys: &[&str]) -> String {
        let key_rules: Vec<Value> = keys
            .iter()
            .map(|k| json!({ "resource_set_id": "rs", "key_id": k }))
            .collect();
        json!({
            "name": name,
            "security_rules": [
                { "order_number": 1, "resource_set_id": "rs", "action": "all_ops",
                  "effect": "permit,applykey" },
                { "order_number": 2, "action": "all_ops", "effect": "deny" }
            ],
            "key_rules": key_rules,
            "resource_sets": [ { "id": "rs", "resources": [
                { "directory": "/d", "file": "*", "include_subfolders": true } ] } ]
        })
        .to_string()
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = match fs::read_dir(dir) {
            Ok(r) => r
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect(),
            Err(_) => vec![],
        };
        v.sort();
        v
    }

    #[test]
    fn apply_list_get_compiled() {
        let d = tempfile::tempdir().unwrap();
        let s = PolicyStore::new(d.path());
        assert!(s.list().unwrap().is_empty());
        assert_eq!(s.get("p1").unwrap(), None);
        let text = policy("p1", &["k1"]);
        assert_eq!(s.apply(&text).unwrap(), "p1");
        assert_eq!(s.apply(&policy("p0", &["clear_key"])).unwrap(), "p0");
        assert_eq!(s.apply(&policy("p2", &[])).unwrap(), "p2");
        assert_eq!(s.list().unwrap(), vec!["p0", "p1", "p2"]);
        assert_eq!(s.get("p1").unwrap().unwrap().trim_end(), text);
        assert_eq!(s.compiled("p1").unwrap().name(), "p1");
        assert_eq!(s.policy_key("p1").unwrap().as_deref(), Some("k1"));
        assert_eq!(s.policy_key("p0").unwrap(), None);
        assert_eq!(s.policy_key("p2").unwrap(), None);
        let mode = fs::metadata(s.policy_path("p1"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
        // Re-applying replaces.
        s.apply(&policy("p1", &["k2"])).unwrap();
        assert_eq!(s.policy_key("p1").unwrap().as_deref(), Some("k2"));
        assert!(matches!(
            s.compiled("nope"),
            Err(StateError::NoSuchPolicy(_))
        ));
        assert!(s.remove("p2").unwrap());
        assert!(!s.remove("p2").unwrap());
        assert_eq!(s.list().unwrap(), vec!["p0", "p1"]);
    }

    #[test]
    fn bad_policies_write_nothing() {
        let d = tempfile::tempdir().unwrap();
        let s = PolicyStore::new(d.path());
        let e = s.apply("{ not json").unwrap_err().to_string();
        assert!(
            e.starts_with("policy rejected: policy is not valid JSON"),
            "{e}"
        );
        let e = s
            .apply(r#"{"name":"x","bogus":1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("policy rejected:"), "{e}");
        let e = s.apply(&policy("../evil", &["k"])).unwrap_err();
        assert!(
            matches!(e, StateError::InvalidName { .. } | StateError::Policy(_)),
            "{e}"
        );
        let e = s.apply(&policy(".hidden", &["k"])).unwrap_err();
        assert!(matches!(e, StateError::InvalidName { .. }), "{e}");
        assert!(files(d.path()).iter().all(|f| f == "policies"));
        assert!(files(&d.path().join("policies")).is_empty());
        assert!(s.get("../x").is_err());
    }

    #[test]
    fn hand_edited_policy_gives_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let s = PolicyStore::new(d.path());
        s.apply(&policy("p", &["k"])).unwrap();
        fs::write(s.policy_path("p"), "{ broken").unwrap();
        let e = s.compiled("p").unwrap_err().to_string();
        assert!(e.contains("p.json: stored policy does not validate"), "{e}");
        fs::write(s.policy_path("p"), policy("q", &["k"])).unwrap();
        let e = s.compiled("p").unwrap_err().to_string();
        assert!(e.contains("named \"q\""), "{e}");
    }

    #[test]
    fn host_settings() {
        let d = tempfile::tempdir().unwrap();
        let s = PolicyStore::new(d.path());
        assert_eq!(s.host_settings().unwrap(), None);
        assert!(s.host_settings_parsed().unwrap().is_none());
        let text = "# hs\n|authenticator|/usr/sbin/sshd\n|trust|/usr/bin/backup\n";
        s.set_host_settings(text).unwrap();
        assert_eq!(s.host_settings().unwrap().as_deref(), Some(text));
        assert!(s.host_settings_parsed().unwrap().is_some());
        let e = s
            .set_host_settings("|authenticator|/usr/sbin/sshd\n|bogus|/x\n")
            .unwrap_err();
        let m = e.to_string();
        assert!(m.starts_with("host settings rejected: line 2"), "{m}");
        assert_eq!(s.host_settings().unwrap().as_deref(), Some(text));
        fs::write(s.host_settings_path(), "garbage\n").unwrap();
        let e = s.host_settings_parsed().unwrap_err().to_string();
        assert!(e.contains("hostsettings: line 1"), "{e}");
    }
}
