//! The local key store, `.sec/keys.json` (0600): named policy keys with
//! versions, for single-host use without a key manager.
//!
//! ```json
//! {"version":1,"host_key_kcv":"<hex>","keys":[{"name":"db-key","mode":"xts",
//!  "persistent_on_client":true,"created":1700000000,
//!  "versions":[{"version":1,"created":1700000000,"sealed":"<hex nonce|ct|tag>"}]}]}
//! ```
//!
//! Each version's material is sealed with AES-256-GCM under the host key,
//! with AAD `guardfs-key|{name}|{version}|{mode}`, so a sealed blob moved to
//! another name, version or mode does not open. `host_key_kcv` makes opening
//! the store with another host key fail clearly instead of failing per key.
//! Key material leaves this module only as a [`PolicyKey`].

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use guardfs_crypto::{Mode, PolicyKey};
use serde::{Deserialize, Serialize, Serializer};
use zeroize::Zeroizing;

use super::hostkey::{self, HostKey, SEALED_KEY_LEN};
use super::{Result, StateError, atomic, check_name, now_secs};

/// What may be shown about a key: everything but its material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// The key name.
    pub name: String,
    /// The content mode files under this key use.
    #[serde(serialize_with = "ser_mode")]
    pub mode: Mode,
    /// Whether `vmd` may keep this key sealed on disk across restarts.
    pub persistent: bool,
    /// When the key was created (Unix seconds).
    pub created: u64,
    /// Every `(version, created)`, oldest first.
    pub versions: Vec<(u32, u64)>,
    /// The newest version.
    pub latest: u32,
}

fn ser_mode<S: Serializer>(m: &Mode, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(m.name())
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRepr {
    version: u32,
    host_key_kcv: String,
    keys: Vec<KeyRepr>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRepr {
    name: String,
    mode: String,
    persistent_on_client: bool,
    created: u64,
    versions: Vec<VersionRepr>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionRepr {
    version: u32,
    created: u64,
    sealed: String,
}

struct Version {
    version: u32,
    created: u64,
    sealed: Vec<u8>,
}

struct Key {
    name: String,
    mode: Mode,
    persistent: bool,
    created: u64,
    /// Sorted by version, never empty.
    versions: Vec<Version>,
}

impl Key {
    fn info(&self) -> KeyInfo {
        KeyInfo {
            name: self.name.clone(),
            mode: self.mode,
            persistent: self.persistent,
            created: self.created,
            versions: self
                .versions
                .iter()
                .map(|v| (v.version, v.created))
                .collect(),
            latest: self.latest(),
        }
    }

    fn latest(&self) -> u32 {
        self.versions.last().map_or(0, |v| v.version)
    }
}

fn aad(name: &str, version: u32, mode: Mode) -> String {
    format!("guardfs-key|{name}|{version}|{}", mode.name())
}

/// The local key store, opened with the host key.
pub struct KeyStore {
    path: PathBuf,
    host: HostKey,
    keys: Vec<Key>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("path", &self.path)
            .field("host", &self.host)
            .field("keys", &self.list())
            .finish()
    }
}

/// The mode of each key in the store at `path`, read without the host key
/// (names and modes are not secret; material stays sealed). Empty when the
/// file is missing or unreadable. vmd uses it to guard with the right mode
/// while the host key is still locked.
pub fn modes_without_unsealing(path: &Path) -> std::collections::BTreeMap<String, Mode> {
    let Ok(Some(bytes)) = atomic::read_file(path) else {
        return Default::default();
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Default::default();
    };
    v["keys"]
        .as_array()
        .map(|keys| {
            keys.iter()
                .filter_map(|k| {
                    Some((
                        k["name"].as_str()?.to_owned(),
                        k["mode"].as_str()?.parse().ok()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

impl KeyStore {
    /// Open the key store at `path` with `host`; a missing file is an
    /// empty store (saved on the first [`KeyStore::save`]).
    ///
    /// # Errors
    /// [`StateError::WrongHostKey`] if the store was sealed under another
    /// host key; a malformed file (bad JSON, bad name or mode, duplicate
    /// names or versions, bad hex) with the file named.
    pub fn load(path: &Path, host: &HostKey) -> Result<KeyStore> {
        let mut ks = KeyStore {
            path: path.to_owned(),
            host: host.clone(),
            keys: Vec::new(),
        };
        let Some(bytes) = atomic::read_file(path)? else {
            return Ok(ks);
        };
        let repr: FileRepr =
            serde_json::from_slice(&bytes).map_err(|e| StateError::json(path, &e))?;
        if repr.version != 1 {
            return Err(StateError::invalid(
                path,
                "unsupported version (expected 1)",
            ));
        }
        if !repr.host_key_kcv.eq_ignore_ascii_case(&host.kcv()) {
            return Err(StateError::WrongHostKey {
                path: path.to_owned(),
            });
        }
        let mut names = HashSet::new();
        for (i, k) in repr.keys.into_iter().enumerate() {
            let bad = |m: String| StateError::invalid(path, format!("keys[{i}]: {m}"));
            check_name("key", &k.name).map_err(|e| bad(e.to_string()))?;
            if !names.insert(k.name.clone()) {
                return Err(bad(format!("duplicate key '{}'", k.name)));
            }
            let mode: Mode = k.mode.parse().map_err(|e| bad(format!("{e}")))?;
            if k.versions.is_empty() {
                return Err(bad(format!("key '{}' has no versions", k.name)));
            }
            let mut versions = Vec::with_capacity(k.versions.len());
            for v in k.versions {
                if v.version == 0 {
                    return Err(bad(format!("key '{}': version 0 is not allowed", k.name)));
                }
                let sealed = hex::decode(&v.sealed)
                    .ok()
                    .filter(|s| s.len() == SEALED_KEY_LEN)
                    .ok_or_else(|| {
                        bad(format!(
                            "key '{}' version {}: `sealed` must be {} hex digits",
                            k.name,
                            v.version,
                            2 * SEALED_KEY_LEN
                        ))
                    })?;
                versions.push(Version {
                    version: v.version,
                    created: v.created,
                    sealed,
                });
            }
            versions.sort_by_key(|v| v.version);
            if let Some(w) = versions.windows(2).find(|w| w[0].version == w[1].version) {
                return Err(bad(format!(
                    "key '{}': duplicate version {}",
                    k.name, w[0].version
                )));
            }
            ks.keys.push(Key {
                name: k.name,
                mode,
                persistent: k.persistent_on_client,
                created: k.created,
                versions,
            });
        }
        Ok(ks)
    }

    /// Write the store atomically to `path` with mode 0600.
    ///
    /// # Errors
    /// I/O errors, naming the file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let repr = FileRepr {
            version: 1,
            host_key_kcv: self.host.kcv(),
            keys: self
                .keys
                .iter()
                .map(|k| KeyRepr {
                    name: k.name.clone(),
                    mode: k.mode.name().to_owned(),
                    persistent_on_client: k.persistent,
                    created: k.created,
                    versions: k
                        .versions
                        .iter()
                        .map(|v| VersionRepr {
                            version: v.version,
                            created: v.created,
                            sealed: hex::encode(&v.sealed),
                        })
                        .collect(),
                })
                .collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&repr)
            .map_err(|e| StateError::invalid(path, format!("cannot serialize: {e}")))?;
        bytes.push(b'\n');
        atomic::write_atomic(path, &bytes, 0o600)
    }

    fn find(&self, name: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.name == name)
    }

    fn sealed_new(&self, name: &str, version: u32, mode: Mode) -> Result<Version> {
        let key = PolicyKey::generate()?;
        let sealed = hostkey::seal(
            self.host.expose(),
            aad(name, version, mode).as_bytes(),
            key.expose(),
        )?;
        Ok(Version {
            version,
            created: now_secs(),
            sealed,
        })
    }

    /// Store a key version delivered from elsewhere (a key manager),
    /// sealed like local keys. Adds the key if new; replaces nothing: a
    /// version already held is left as is. Returns whether it was added.
    ///
    /// # Errors
    /// [`StateError::InvalidName`], a mode that differs from the stored
    /// key's, a zero version.
    pub fn import(
        &mut self,
        name: &str,
        mode: Mode,
        persistent: bool,
        version: u32,
        material: &PolicyKey,
    ) -> Result<bool> {
        check_name("key", name)?;
        if version == 0 {
            return Err(StateError::invalid(
                &self.path,
                format!("key '{name}': version 0"),
            ));
        }
        let sealed = hostkey::seal(
            self.host.expose(),
            aad(name, version, mode).as_bytes(),
            material.expose(),
        )?;
        let v = Version {
            version,
            created: now_secs(),
            sealed,
        };
        match self.keys.iter_mut().find(|k| k.name == name) {
            Some(k) if k.mode != mode => Err(StateError::invalid(
                &self.path,
                format!("key '{name}' is {} here, not {mode}", k.mode),
            )),
            Some(k) if k.versions.iter().any(|x| x.version == version) => Ok(false),
            Some(k) => {
                k.persistent = persistent;
                k.versions.push(v);
                k.versions.sort_by_key(|x| x.version);
                Ok(true)
            }
            None => {
                self.keys.push(Key {
                    name: name.to_owned(),
                    mode,
                    persistent,
                    created: v.created,
                    versions: vec![v],
                });
                Ok(true)
            }
        }
    }

    /// Forget one version of a key (revoked at the key manager); the key
    /// goes when its last version does.
    pub fn forget_version(&mut self, name: &str, version: u32) -> bool {
        let Some(i) = self.keys.iter().position(|k| k.name == name) else {
            return false;
        };
        let before = self.keys[i].versions.len();
        self.keys[i].versions.retain(|v| v.version != version);
        let removed = self.keys[i].versions.len() != before;
        if self.keys[i].versions.is_empty() {
            self.keys.remove(i);
        }
        removed
    }

    /// Create key `name` with fresh random material as version 1 (mode
    /// `Clear` gets material too, though it encrypts nothing). Returns 1.
    ///
    /// # Errors
    /// [`StateError::InvalidName`], [`StateError::KeyExists`].
    pub fn create(&mut self, name: &str, mode: Mode, persistent: bool) -> Result<u32> {
        check_name("key", name)?;
        if self.find(name).is_some() {
            return Err(StateError::KeyExists(name.to_owned()));
        }
        let v = self.sealed_new(name, 1, mode)?;
        self.keys.push(Key {
            name: name.to_owned(),
            mode,
            persistent,
            created: v.created,
            versions: vec![v],
        });
        Ok(1)
    }

    /// Add a new version (latest + 1) with fresh material; older versions
    /// are kept so existing files still open. Returns the new version.
    ///
    /// # Errors
    /// [`StateError::NoSuchKey`].
    pub fn rotate(&mut self, name: &str) -> Result<u32> {
        let (mode, next) = match self.find(name) {
            None => return Err(StateError::NoSuchKey(name.to_owned())),
            Some(k) => (
                k.mode,
                k.latest()
                    .checked_add(1)
                    .ok_or_else(|| StateError::invalid(&self.path, "key version overflow"))?,
            ),
        };
        let v = self.sealed_new(name, next, mode)?;
        if let Some(k) = self.keys.iter_mut().find(|k| k.name == name) {
            k.versions.push(v);
        }
        Ok(next)
    }

    /// Delete key `name` and all its versions. Files encrypted under it
    /// become unreadable: callers must check no policy uses it.
    ///
    /// # Errors
    /// [`StateError::NoSuchKey`].
    pub fn remove(&mut self, name: &str) -> Result<KeyInfo> {
        let i = self
            .keys
            .iter()
            .position(|k| k.name == name)
            .ok_or_else(|| StateError::NoSuchKey(name.to_owned()))?;
        Ok(self.keys.remove(i).info())
    }

    /// Every key, sorted by name, without material.
    pub fn list(&self) -> Vec<KeyInfo> {
        let mut v: Vec<KeyInfo> = self.keys.iter().map(Key::info).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// One key, without material.
    pub fn get(&self, name: &str) -> Option<KeyInfo> {
        self.find(name).map(Key::info)
    }

    /// Decrypt the material of `name` at `version`.
    ///
    /// # Errors
    /// [`StateError::NoSuchKey`], [`StateError::NoSuchKeyVersion`], or
    /// [`StateError::Invalid`] if the sealed material does not authenticate
    /// (the file was damaged or edited).
    pub fn material(&self, name: &str, version: u32) -> Result<PolicyKey> {
        let k = self
            .find(name)
            .ok_or_else(|| StateError::NoSuchKey(name.to_owned()))?;
        let v = k
            .versions
            .iter()
            .find(|v| v.version == version)
            .ok_or_else(|| StateError::NoSuchKeyVersion {
                name: name.to_owned(),
                version,
            })?;
        let damaged = || {
            StateError::invalid(
                &self.path,
                format!(
                    "key '{name}' version {version}: sealed material does not authenticate \
                     (file damaged or edited)"
                ),
            )
        };
        let plain: Zeroizing<Vec<u8>> = hostkey::open(
            self.host.expose(),
            aad(name, version, k.mode).as_bytes(),
            &v.sealed,
        )
        .ok_or_else(damaged)?;
        PolicyKey::from_slice(&plain).ok_or_else(damaged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn setup() -> (tempfile::TempDir, PathBuf, HostKey) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("keys.json");
        (d, p, HostKey::generate().unwrap())
    }

    #[test]
    fn create_rotate_save_load() {
        let (_d, p, hk) = setup();
        let mut ks = KeyStore::load(&p, &hk).unwrap();
        assert!(ks.list().is_empty());
        assert_eq!(ks.create("db-key", Mode::Xts, true).unwrap(), 1);
        assert_eq!(ks.create("clear", Mode::Clear, false).unwrap(), 1);
        let m1 = ks.material("db-key", 1).unwrap();
        assert_eq!(ks.rotate("db-key").unwrap(), 2);
        assert_eq!(ks.rotate("db-key").unwrap(), 3);
        let m3 = ks.material("db-key", 3).unwrap();
        assert_ne!(m1, m3);
        ks.save(&p).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );

        let ks2 = KeyStore::load(&p, &hk).unwrap();
        assert_eq!(ks2.list(), ks.list());
        assert_eq!(ks2.material("db-key", 1).unwrap(), m1);
        assert_eq!(ks2.material("db-key", 3).unwrap(), m3);
        ks2.material("clear", 1).unwrap();
        let info = ks2.get("db-key").unwrap();
        assert_eq!(info.mode, Mode::Xts);
        assert!(info.persistent);
        assert_eq!(info.latest, 3);
        assert_eq!(
            info.versions.iter().map(|v| v.0).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        let names: Vec<_> = ks2.list().into_iter().map(|k| k.name).collect();
        assert_eq!(names, vec!["clear", "db-key"]);
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["mode"], "xts");
        assert_eq!(json["latest"], 3);
        assert!(ks2.get("nope").is_none());

        // Saving left no temp files behind.
        let dir: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(dir.len(), 1);
        // The file never holds material in the clear.
        let bytes = fs::read(&p).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        for m in [&m1, &m3] {
            assert!(!text.contains(&hex::encode(m.expose())));
        }
        assert!(!text.contains(&hex::encode(hk.expose())));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["host_key_kcv"], hk.kcv());
        assert_eq!(v["keys"][0]["mode"], "xts");
        assert_eq!(v["keys"][0]["persistent_on_client"], true);
        // Debug prints no material.
        let dbg = format!("{ks2:?}");
        assert!(!dbg.contains(&hex::encode(m1.expose())), "{dbg}");
    }

    #[test]
    fn errors() {
        let (_d, p, hk) = setup();
        let mut ks = KeyStore::load(&p, &hk).unwrap();
        ks.create("k", Mode::Gcm, false).unwrap();
        let e = ks.create("k", Mode::Xts, false).unwrap_err();
        assert_eq!(e.to_string(), "key 'k' already exists");
        assert!(matches!(
            ks.create("a/b", Mode::Xts, false),
            Err(StateError::InvalidName { .. })
        ));
        assert!(matches!(
            ks.create("", Mode::Xts, false),
            Err(StateError::InvalidName { .. })
        ));
        assert!(matches!(ks.rotate("x"), Err(StateError::NoSuchKey(_))));
        assert!(matches!(ks.material("x", 1), Err(StateError::NoSuchKey(_))));
        assert!(matches!(
            ks.material("k", 2),
            Err(StateError::NoSuchKeyVersion { version: 2, .. })
        ));
        assert_eq!(ks.remove("k").unwrap().name, "k");
        assert!(ks.remove("k").is_err());
    }

    #[test]
    fn wrong_host_key_refused() {
        let (_d, p, hk) = setup();
        let mut ks = KeyStore::load(&p, &hk).unwrap();
        ks.create("k", Mode::Xts, true).unwrap();
        ks.save(&p).unwrap();
        let other = HostKey::generate().unwrap();
        let e = KeyStore::load(&p, &other).unwrap_err();
        assert!(matches!(e, StateError::WrongHostKey { .. }), "{e}");
        assert!(
            e.to_string()
                .ends_with("key store sealed under a different host key"),
            "{e}"
        );
    }

    #[test]
    fn tampering_detected() {
        let (_d, p, hk) = setup();
        let mut ks = KeyStore::load(&p, &hk).unwrap();
        ks.create("a", Mode::Xts, true).unwrap();
        ks.create("b", Mode::Xts, true).unwrap();
        ks.save(&p).unwrap();
        // Swap the sealed material of a and b: the AAD binds it to the name.
        let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        let sa = v["keys"][0]["versions"][0]["sealed"].clone();
        v["keys"][0]["versions"][0]["sealed"] = v["keys"][1]["versions"][0]["sealed"].clone();
        v["keys"][1]["versions"][0]["sealed"] = sa;
        fs::write(&p, v.to_string()).unwrap();
        let ks = KeyStore::load(&p, &hk).unwrap();
        let e = ks.material("a", 1).unwrap_err().to_string();
        assert!(e.contains("does not authenticate"), "{e}");
        // Changing the mode also breaks the binding.
        v["keys"][0]["mode"] = "gcm".into();
        fs::write(&p, v.to_string()).unwrap();
        assert!(KeyStore::load(&p, &hk).unwrap().material("b", 1).is_err());
    }

    #[test]
    fn malformed_files() {
        let (_d, p, hk) = setup();
        let kcv = hk.kcv();
        let sealed = "00".repeat(SEALED_KEY_LEN);
        let key = |name: &str, mode: &str, versions: &str| {
            format!(
                r#"{{"name":"{name}","mode":"{mode}","persistent_on_client":true,"created":1,"versions":[{versions}]}}"#
            )
        };
        let ver = |n: u32| format!(r#"{{"version":{n},"created":1,"sealed":"{sealed}"}}"#);
        let file =
            |keys: &str| format!(r#"{{"version":1,"host_key_kcv":"{kcv}","keys":[{keys}]}}"#);
        let cases = vec![
            ("{".to_owned(), "not valid JSON"),
            (r#"{"version":1}"#.to_owned(), "missing field"),
            (
                format!(r#"{{"version":2,"host_key_kcv":"{kcv}","keys":[]}}"#),
                "unsupported version",
            ),
            (file(&key("a b", "xts", &ver(1))), "invalid key name"),
            (file(&key("a", "rot13", &ver(1))), "unknown mode"),
            (file(&key("a", "xts", "")), "has no versions"),
            (file(&key("a", "xts", &ver(0))), "version 0"),
            (
                file(&format!(
                    "{},{}",
                    key("a", "xts", &ver(1)),
                    key("a", "xts", &ver(1))
                )),
                "duplicate key 'a'",
            ),
            (
                file(&key("a", "xts", &format!("{},{}", ver(1), ver(1)))),
                "duplicate version 1",
            ),
            (
                file(&key(
                    "a",
                    "xts",
                    r#"{"version":1,"created":1,"sealed":"abc"}"#,
                )),
                "`sealed` must be",
            ),
        ];
        for (text, want) in cases {
            fs::write(&p, &text).unwrap();
            let e = KeyStore::load(&p, &hk).unwrap_err().to_string();
            assert!(e.starts_with(&p.display().to_string()), "{e}");
            assert!(e.contains(want), "{text}: {e}");
            assert_eq!(fs::read_to_string(&p).unwrap(), text);
        }
    }
}
