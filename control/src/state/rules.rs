//! Rules (CTE UserSpace's model): a path to protect, with which files and
//! directories count, and what was last done to it on this host. Stored
//! in `<etc>/rules.json` (0600), replaced atomically under an exclusive
//! lock (`<etc>/rules.lock`).
//!
//! Owns: the rule records, their validation (paths the agent and the
//! system need are refused), default names, and the policy each operation
//! applies. Must not: touch files or keys (deploying a rule is
//! `cli::rule`'s: it asks vmd and runs `dataxform`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Layout, Result, StateError, write_atomic};

/// One rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    /// The file or directory it protects (absolute).
    pub path: String,
    /// Extensions of files to encrypt (without the dot); empty: all files.
    #[serde(default)]
    pub include_extensions: Vec<String>,
    pub is_directory: bool,
    pub is_recursive: bool,
    /// Directory names skipped at any depth (exact, case-sensitive).
    #[serde(default)]
    pub ignore_directory: Vec<String>,
    /// false: access control only, nothing encrypted.
    pub encrypt_data: bool,
    /// What was deployed on this host, if anything.
    #[serde(default)]
    pub applied: Option<Applied>,
    /// `km`: deployed by the key manager (vmd keeps it in line with the
    /// key manager's list); absent: created here with `voradmin rule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The key manager's generation of the last operation asked for.
    #[serde(default)]
    pub km_generation: u64,
    /// An operation the key manager asked for that has not started yet
    /// (vmd starts it, and tries again while `voradmin rule apply`
    /// refuses it; starting clears it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub km_pending: Option<KmRequest>,
}

/// An operation asked for by the key manager.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KmRequest {
    pub operation: String,
    pub key: String,
    pub shallow: bool,
}

/// A rule's deployment on this host (CTE: the client-rule association).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Applied {
    /// The key files are encrypted with (`clear_key` when not encrypting).
    pub key: String,
    /// The key files were in when the operation began.
    #[serde(default)]
    pub from_key: String,
    /// `encrypt`, `rotate` or `decrypt`.
    pub operation: String,
    /// `In Progress`, `Encrypted`, `Completed with errors`, `Decrypted`,
    /// `Applied` (access control only).
    pub status: String,
    /// Percent of the files done in the current operation.
    pub percent: u32,
    /// Files that failed, with the reason.
    #[serde(default)]
    pub errors: Vec<FileError>,
    /// Attempts made by the last operation (at most 3).
    pub attempts: u32,
    /// The process running it while `In Progress`.
    #[serde(default)]
    pub pid: u32,
    /// Unix seconds of the last change.
    pub updated: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileError {
    pub path: String,
    pub reason: String,
}

/// Directories never protected by a rule, with everything below them, as
/// CTE UserSpace lists them (the agent's own are added from the layout);
/// the GuardPoint check (`guardfs_shim::forbidden`) refuses more on top.
const SYSTEM_DIRS: &[&str] = &[
    "/bin",
    "/boot",
    "/dev",
    "/initrd",
    "/lib",
    "/lib32",
    "/lib64",
    "/proc",
    "/sbin",
    "/sys",
    "/run",
    "/usr/bin",
    "/usr/sbin",
    "/usr/lib",
    "/usr/lib64",
];

impl Rule {
    /// The rule's name, or a new `Rule-` + 27 random characters.
    pub fn default_name() -> Result<String> {
        const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut raw = [0u8; 27];
        guardfs_crypto::random_bytes(&mut raw)
            .map_err(|_| StateError::invalid(Path::new("rules"), "no random source"))?;
        // 62 characters: the bias of `% 62` on a byte is irrelevant for a name.
        Ok(format!(
            "Rule-{}",
            raw.iter()
                .map(|b| CHARS[usize::from(*b) % CHARS.len()] as char)
                .collect::<String>()
        ))
    }

    /// Check a new rule: a clear reason for what is refused.
    pub fn validate(&self, layout: &Layout) -> std::result::Result<(), String> {
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "rule name {:?}: 1..64 characters of letters, digits, '-', '_', '.'",
                self.name
            ));
        }
        let p = Path::new(&self.path);
        // Canonical: absolute, no `.`, `..`, `//`, trailing `/` or symlink
        // (what vmd stores for the GuardPoint; see `canonical_path`).
        if canonical_path(&self.path).as_deref() != Ok(self.path.as_str()) {
            return Err(format!(
                "path {}: must be absolute and canonical (symlinks resolved)",
                self.path
            ));
        }
        if self.path == "/" {
            return Err("path /: the root directory cannot be protected by a rule".into());
        }
        // Symlinks resolved (/bin -> /usr/bin, /lib -> /usr/lib).
        let real = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        if real == Path::new("/") {
            return Err(format!("path {}: that is the root directory", self.path));
        }
        let agent = [&layout.root, &layout.log_dir, &layout.run_dir];
        for d in SYSTEM_DIRS
            .iter()
            .map(PathBuf::from)
            .chain(agent.iter().map(|p| (*p).clone()))
        {
            let dr = std::fs::canonicalize(&d).unwrap_or(d.clone());
            if real.starts_with(&dr) || p.starts_with(&d) {
                return Err(format!(
                    "path {}: {} holds what the system or the agent needs; it is never protected",
                    self.path,
                    d.display()
                ));
            }
        }
        let gp = self.guard_point();
        guardfs_shim::forbidden::Forbidden::host()
            .with(&layout.root, "the agent's install root")
            .with(&layout.log_dir, "the agent's log directory")
            .with(&layout.run_dir, "the agent's run directory")
            .check(&gp)
            .map_err(|why| format!("path {}: {why}", self.path))?;
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() != self.is_directory => {
                return Err(format!(
                    "path {} is {}, but --is-directory is {}",
                    self.path,
                    if m.is_dir() {
                        "a directory"
                    } else {
                        "not a directory"
                    },
                    self.is_directory
                ));
            }
            Ok(_) => {}
            Err(e) => return Err(format!("path {}: {e}", self.path)),
        }
        if !self.is_directory {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.contains(['*', '?']) {
                return Err(format!(
                    "file {}: a name with '*' or '?' cannot be protected alone",
                    self.path
                ));
            }
        }
        for e in &self.include_extensions {
            if e.is_empty() || e.contains(['/', '*', '?', '\0']) {
                return Err(format!("extension {e:?}: a plain extension such as txt"));
            }
        }
        for d in &self.ignore_directory {
            if d.is_empty() || d.contains(['/', '\0']) || d == "." || d == ".." {
                return Err(format!(
                    "ignore directory {d:?}: a directory name, without '/'"
                ));
            }
        }
        Ok(())
    }

    /// Parameters that may not change while the rule is applied.
    pub fn same_target(&self, o: &Rule) -> bool {
        self.path == o.path
            && self.include_extensions == o.include_extensions
            && self.is_directory == o.is_directory
            && self.is_recursive == o.is_recursive
            && self.ignore_directory == o.ignore_directory
            && self.encrypt_data == o.encrypt_data
    }

    /// The GuardPoint that carries the rule: its path, or the directory of
    /// a file rule.
    pub fn guard_point(&self) -> PathBuf {
        let p = Path::new(&self.path);
        if self.is_directory {
            p.to_path_buf()
        } else {
            p.parent().unwrap_or(Path::new("/")).to_path_buf()
        }
    }

    /// The name of the policy the rule's deployment applies.
    pub fn policy_name(&self) -> String {
        format!("rule_{}", self.name)
    }

    /// The rule's resources (relative to the GuardPoint).
    fn resources(&self) -> Vec<Value> {
        if !self.is_directory {
            let name = Path::new(&self.path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            return vec![json!({ "directory": "/", "file": name, "include_subfolders": false })];
        }
        let files: Vec<String> = if self.include_extensions.is_empty() {
            vec!["*".into()]
        } else {
            self.include_extensions
                .iter()
                .map(|e| format!("*.{e}"))
                .collect()
        };
        files
            .into_iter()
            .map(
                |f| json!({ "directory": "/", "file": f, "include_subfolders": self.is_recursive }),
            )
            .collect()
    }

    /// The policy for files of the rule in key `current`, moving to
    /// `target` when given (a data transformation rule), CTE UserSpace
    /// style: no access control (every process permitted, with the key),
    /// ignored directories and files outside the rule stored as they are.
    pub fn policy(&self, current: &str, target: Option<&str>) -> Value {
        let mut key_rules = Vec::new();
        let mut sets = Vec::new();
        if !self.ignore_directory.is_empty() && self.is_directory {
            key_rules.push(json!({ "resource_set_id": "ignored", "key_id": "clear_key" }));
            sets.push(json!({
                "id": "ignored",
                "resources": self.ignore_directory.iter().map(|d| json!({
                    "directory": "/", "include_subfolders": true, "within_directory_named": d
                })).collect::<Vec<_>>()
            }));
        }
        key_rules.push(json!({ "resource_set_id": "rule", "key_id": current }));
        sets.push(json!({ "id": "rule", "resources": self.resources() }));
        key_rules.push(json!({ "key_id": "clear_key" }));
        let mut p = json!({
            "name": self.policy_name(),
            "description": format!("deployed by rule {} on {}", self.name, self.path),
            "security_rules": [
                { "order_number": 1, "action": "key_op", "effect": "permit,applykey" },
                { "order_number": 2, "action": "all_ops", "effect": "permit,applykey" }
            ],
            "key_rules": key_rules,
            "resource_sets": sets,
        });
        if let Some(t) = target {
            p["data_transform_rules"] = json!([{ "resource_set_id": "rule", "key_id": t }]);
        }
        p
    }
}

/// `path` absolute and canonical (symlinks resolved, no trailing `/`).
pub fn canonical_path(path: &str) -> std::result::Result<String, String> {
    let abs = std::path::absolute(path).map_err(|e| format!("{path}: {e}"))?;
    let c = std::fs::canonicalize(&abs).map_err(|e| format!("{path}: {e}"))?;
    c.to_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{path}: not UTF-8"))
}

/// The rules of this host, by name.
pub struct Rules {
    path: PathBuf,
    pub rules: BTreeMap<String, Rule>,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl Rules {
    /// Load under the exclusive lock (held until this is dropped). Never
    /// call vmd while holding it: vmd takes it too.
    pub fn open(layout: &Layout) -> Result<Rules> {
        std::fs::create_dir_all(&layout.etc)
            .map_err(|e| StateError::io(&layout.etc, "create", e))?;
        let lock_path = layout.etc.join("rules.lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StateError::io(&lock_path, "open", e))?;
        let lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| StateError::io(&lock_path, "lock", e.into()))?;
        let path = layout.etc.join("rules.json");
        let rules = Rules::read(layout)?
            .into_iter()
            .map(|r| (r.name.clone(), r))
            .collect();
        Ok(Rules {
            path,
            rules,
            _lock: lock,
        })
    }

    /// The rules as last saved, without the lock (read only: the file is
    /// replaced atomically, so it is always whole). For vmd, which must
    /// never wait for a `voradmin rule` holding the lock.
    pub fn read(layout: &Layout) -> Result<Vec<Rule>> {
        let path = layout.etc.join("rules.json");
        match std::fs::read_to_string(&path) {
            Ok(t) => {
                serde_json::from_str(&t).map_err(|e| StateError::invalid(&path, e.to_string()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(StateError::io(&path, "read", e)),
        }
    }

    pub fn save(&self) -> Result<()> {
        let list: Vec<&Rule> = self.rules.values().collect();
        let text = serde_json::to_string_pretty(&list)
            .map_err(|e| StateError::invalid(&self.path, e.to_string()))?;
        write_atomic(&self.path, text.as_bytes(), 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(path: &str) -> Rule {
        Rule {
            name: "r".into(),
            path: path.into(),
            include_extensions: vec![],
            is_directory: true,
            is_recursive: true,
            ignore_directory: vec![],
            encrypt_data: true,
            applied: None,
            source: None,
            km_generation: 0,
            km_pending: None,
        }
    }

    #[test]
    fn system_and_agent_directories_and_the_root_are_refused() {
        let base = tempfile::tempdir().unwrap();
        let layout = Layout::open(base.path()).unwrap();
        for p in [
            "/",
            "/bin",
            "/usr/lib/x",
            "/proc/1",
            "/boot",
            "/lib64/x",
            "/sys/kernel",
        ] {
            assert!(rule(p).validate(&layout).is_err(), "{p} accepted");
        }
        let own = base.path().join("bin");
        std::fs::create_dir_all(&own).unwrap();
        assert!(rule(own.to_str().unwrap()).validate(&layout).is_err());
        let data = tempfile::tempdir_in("/var/tmp").unwrap();
        let canon = canonical_path(data.path().to_str().unwrap()).unwrap();
        assert!(rule(&canon).validate(&layout).is_ok());
        assert!(rule(&format!("{canon}/")).validate(&layout).is_err());
        assert!(rule(&format!("{canon}/.")).validate(&layout).is_err());
        let mut not_dir = rule(&canon);
        not_dir.is_directory = false;
        assert!(not_dir.validate(&layout).unwrap_err().contains("directory"));
        assert!(Rule::default_name().unwrap().len() == 5 + 27);
    }

    #[test]
    fn the_policy_of_a_rule_compiles_and_ignores_what_it_says() {
        let mut r = rule("/data");
        r.include_extensions = vec!["txt".into(), "dbf".into()];
        r.ignore_directory = vec!["tmp".into()];
        let p = guardfs_policy::CompiledPolicy::from_json(
            &r.policy("clear_key", Some("k")).to_string(),
        )
        .unwrap();
        let (cur, tgt) = p.key_rule_for(b"/a/b.txt");
        assert_eq!(p.key_label(cur), "clear_key");
        assert_eq!(tgt.map(|t| p.key_label(t).to_owned()), Some("k".into()));
        assert_eq!(p.key_rule_for(b"/tmp/b.txt").1, None, "ignored directory");
        assert_eq!(p.key_rule_for(b"/a/b.jpg").1, None, "other extension");
        let fin =
            guardfs_policy::CompiledPolicy::from_json(&r.policy("k", None).to_string()).unwrap();
        assert_eq!(fin.key_label(fin.key_for(b"/x/y.dbf")), "k");
        assert_eq!(fin.key_label(fin.key_for(b"/x/tmp/y.dbf")), "clear_key");
    }
}
