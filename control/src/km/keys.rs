//! Keys delivered by the key manager. Keys marked `persistent_on_client`
//! are sealed under the host key in `.sec/km_keys.json` and survive a
//! restart (so GuardPoints work while the server is unreachable); the
//! others live only in this process's memory and are fetched again after a
//! restart.

use std::collections::BTreeMap;
use std::path::PathBuf;

use guardfs_crypto::{Mode, PolicyKey};

use crate::state::{HostKey, KeyInfo, KeyStore};
use crate::vmd::keys::KeySource;

/// One key's non-persistent versions.
struct MemKey {
    mode: Mode,
    versions: BTreeMap<u32, PolicyKey>,
}

/// The key manager's keys on this host.
pub struct KmKeys {
    store: KeyStore,
    path: PathBuf,
    memory: BTreeMap<String, MemKey>,
}

impl std::fmt::Debug for KmKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmKeys")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl KmKeys {
    pub fn open(path: PathBuf, host: &HostKey) -> Result<KmKeys, String> {
        let store = KeyStore::load(&path, host).map_err(|e| e.to_string())?;
        Ok(KmKeys {
            store,
            path,
            memory: BTreeMap::new(),
        })
    }

    /// Whether version `v` of `name` is held.
    pub fn held(&self, name: &str, v: u32) -> bool {
        self.memory
            .get(name)
            .is_some_and(|k| k.versions.contains_key(&v))
            || self
                .store
                .get(name)
                .is_some_and(|k| k.versions.iter().any(|(x, _)| *x == v))
    }

    /// Keep a delivered key version: sealed on disk if persistent.
    pub fn put(
        &mut self,
        name: &str,
        mode: Mode,
        persistent: bool,
        v: u32,
        key: PolicyKey,
    ) -> Result<(), String> {
        if persistent {
            self.store
                .import(name, mode, persistent, v, &key)
                .map_err(|e| e.to_string())?;
            self.store.save(&self.path).map_err(|e| e.to_string())
        } else {
            let k = self
                .memory
                .entry(name.to_owned())
                .or_insert_with(|| MemKey {
                    mode,
                    versions: BTreeMap::new(),
                });
            k.mode = mode;
            k.versions.insert(v, key);
            Ok(())
        }
    }

    /// Drop a version (revoked or no longer assigned to this host).
    pub fn forget(&mut self, name: &str, v: u32) -> Result<(), String> {
        if let Some(k) = self.memory.get_mut(name) {
            k.versions.remove(&v);
            if k.versions.is_empty() {
                self.memory.remove(name);
            }
        }
        if self.store.forget_version(name, v) {
            self.store.save(&self.path).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

impl KeySource for KmKeys {
    fn kind(&self) -> &'static str {
        "keymgr"
    }

    fn list(&self) -> Vec<KeyInfo> {
        let mut out = self.store.list();
        for (name, k) in &self.memory {
            let versions: Vec<(u32, u64)> = k.versions.keys().map(|v| (*v, 0)).collect();
            let latest = versions.iter().map(|(v, _)| *v).max().unwrap_or(0);
            match out.iter_mut().find(|i| &i.name == name) {
                Some(i) => {
                    i.versions.extend(versions);
                    i.versions.sort();
                    i.latest = i.latest.max(latest);
                }
                None => out.push(KeyInfo {
                    name: name.clone(),
                    mode: k.mode,
                    persistent: false,
                    created: 0,
                    versions,
                    latest,
                }),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn material(&self, name: &str, version: u32) -> Result<PolicyKey, String> {
        if let Some(k) = self.memory.get(name).and_then(|k| k.versions.get(&version)) {
            return Ok(k.clone());
        }
        self.store
            .material(name, version)
            .map_err(|e| e.to_string())
    }

    fn km_mut(&mut self) -> Option<&mut KmKeys> {
        Some(self)
    }
}
