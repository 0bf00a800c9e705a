//! Where vmd gets policy keys: a [`KeySource`]. Today that is the local key
//! store ([`LocalKeys`], keys sealed under the host key in `.sec/`); a key
//! manager client is another source behind the same trait. vmd only lists
//! keys and asks for material to push to secfs; key administration
//! (create, rotate) exists only on the local store.

use std::path::PathBuf;

use guardfs_crypto::{Mode, PolicyKey};

use crate::state::{HostKey, KeyInfo, KeyStore};

/// A source of policy keys.
pub trait KeySource: Send {
    /// "local" or the key manager's name, for status output.
    fn kind(&self) -> &'static str;
    /// Every key this host may use (no material).
    fn list(&self) -> Vec<KeyInfo>;
    fn get(&self, name: &str) -> Option<KeyInfo> {
        self.list().into_iter().find(|k| k.name == name)
    }
    /// Every (name, version) this source holds.
    fn held_versions(&self) -> Vec<(String, u32)> {
        self.list()
            .into_iter()
            .flat_map(|k| {
                k.versions
                    .into_iter()
                    .map(move |(v, _)| (k.name.clone(), v))
            })
            .collect()
    }
    /// The material of one key version.
    fn material(&self, name: &str, version: u32) -> Result<PolicyKey, String>;
    /// The local key store, where keys are administered on this host;
    /// `None` when a key manager owns the keys.
    fn local_mut(&mut self) -> Option<&mut LocalKeys> {
        None
    }
    /// The key manager's keys, which vmd updates as the server says.
    fn km_mut(&mut self) -> Option<&mut crate::km::keys::KmKeys> {
        None
    }
}

/// The embedded local key store.
#[derive(Debug)]
pub struct LocalKeys {
    store: KeyStore,
    path: PathBuf,
    host: HostKey,
}

impl LocalKeys {
    /// Open the store at `path`, sealed under `host`.
    pub fn open(path: PathBuf, host: HostKey) -> Result<LocalKeys, String> {
        let store = KeyStore::load(&path, &host).map_err(|e| e.to_string())?;
        Ok(LocalKeys { store, path, host })
    }

    /// Apply `change` and save atomically; on any error the store is as it
    /// was on disk.
    fn change<T>(
        &mut self,
        change: impl FnOnce(&mut KeyStore) -> Result<T, String>,
    ) -> Result<T, String> {
        let out = change(&mut self.store).and_then(|v| {
            self.store.save(&self.path).map_err(|e| e.to_string())?;
            Ok(v)
        });
        if out.is_err() {
            self.store = KeyStore::load(&self.path, &self.host).map_err(|e| e.to_string())?;
        }
        out
    }

    /// A new key (version 1).
    pub fn create(&mut self, name: &str, mode: Mode, persistent: bool) -> Result<u32, String> {
        self.change(|s| s.create(name, mode, persistent).map_err(|e| e.to_string()))
    }

    /// A new version of `name`.
    pub fn rotate(&mut self, name: &str) -> Result<u32, String> {
        self.change(|s| s.rotate(name).map_err(|e| e.to_string()))
    }
}

impl KeySource for LocalKeys {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn list(&self) -> Vec<KeyInfo> {
        self.store.list()
    }

    fn get(&self, name: &str) -> Option<KeyInfo> {
        self.store.get(name)
    }

    fn material(&self, name: &str, version: u32) -> Result<PolicyKey, String> {
        self.store
            .material(name, version)
            .map_err(|e| e.to_string())
    }

    fn local_mut(&mut self) -> Option<&mut LocalKeys> {
        Some(self)
    }
}
