//! Where a GuardPoint's policy keys come from. Today `secfs mount` loads
//! them from key files; vmd will push them over the ioctl channel. The
//! stacking layer only sees this trait.
//!
//! Key plumbing only: the keys are opaque values carried from whoever
//! delivers them (key file, control channel) to [`file`](super::file),
//! the one module that uses them (to unwrap and create headers). This
//! module names the crypto crate's key type, and re-exports it for the
//! layer's other modules, but never looks inside a key.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

pub use guardfs_crypto::PolicyKey;

/// The keys a GuardPoint may use.
pub trait KeySource: Send + Sync {
    /// The key (name, version) new files are wrapped with.
    fn current(&self) -> Option<(String, u32, Arc<PolicyKey>)>;
    /// A key by name and version, to open existing headers.
    fn get(&self, name: &str, version: u32) -> Option<Arc<PolicyKey>>;
    /// The newest version of the key `name`, for new files under a key rule.
    fn latest(&self, name: &str) -> Option<(u32, Arc<PolicyKey>)>;
    /// Whether `name` is a key of mode `clear` (no material: files under a
    /// key rule naming it are stored and served as they are).
    fn is_clear(&self, name: &str) -> bool {
        let _ = name;
        false
    }
    /// The content mode of the key `name`, when the key manager said
    /// (new files under it use that mode; else the GuardPoint's).
    fn mode(&self, name: &str) -> Option<guardfs_crypto::Mode> {
        let _ = name;
        None
    }
}

/// Keys held in memory, replaceable at run time.
#[derive(Default)]
pub struct StaticKeys {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    keys: HashMap<(String, u32), Arc<PolicyKey>>,
    current: Option<(String, u32)>,
    /// Names of keys of mode `clear`.
    clear: std::collections::HashSet<String>,
    modes: HashMap<String, guardfs_crypto::Mode>,
}

impl StaticKeys {
    /// One key, used for new files.
    pub fn single(name: &str, version: u32, key: PolicyKey) -> StaticKeys {
        let s = StaticKeys::default();
        s.insert(name, version, key, true);
        s
    }

    /// Add a key; `current` makes it the key for new files.
    pub fn insert(&self, name: &str, version: u32, key: PolicyKey, current: bool) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner.keys.insert((name.to_owned(), version), Arc::new(key));
        if current {
            inner.current = Some((name.to_owned(), version));
        }
    }

    /// Record that `name` is a key of mode `clear` (it has no material).
    /// Record the content mode of the key `name`.
    pub fn set_mode(&self, name: &str, mode: guardfs_crypto::Mode) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner.modes.insert(name.to_owned(), mode);
    }

    pub fn insert_clear(&self, name: &str) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner.clear.insert(name.to_owned());
    }

    /// Remove one version of a key; whether it was there.
    pub fn remove(&self, name: &str, version: u32) -> bool {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let was = inner.keys.remove(&(name.to_owned(), version)).is_some();
        if inner
            .current
            .as_ref()
            .is_some_and(|(n, v)| n == name && *v == version)
        {
            inner.current = None;
        }
        was
    }

    /// Every (name, version) held, sorted.
    pub fn list(&self) -> Vec<(String, u32)> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<(String, u32)> = inner.keys.keys().cloned().collect();
        v.sort();
        v
    }

    /// Number of versions of key `name` held.
    pub fn versions(&self, name: &str) -> usize {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.keys.keys().filter(|(n, _)| n == name).count()
    }

    /// Number of key versions held.
    pub fn count(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys
            .len()
    }
}

/// The keys of one GuardPoint served by the secfs service: every key the
/// service holds, with the newest version of the GuardPoint's own key for
/// new files (so a rotation takes effect for new files at once).
#[derive(Debug)]
pub struct NamedKeys {
    pub shared: Arc<StaticKeys>,
    /// The GuardPoint's key for new files; none for `clear` GuardPoints.
    pub name: Option<String>,
}

impl KeySource for NamedKeys {
    fn current(&self) -> Option<(String, u32, Arc<PolicyKey>)> {
        let name = self.name.as_deref()?;
        let (v, k) = self.shared.latest(name)?;
        Some((name.to_owned(), v, k))
    }

    fn get(&self, name: &str, version: u32) -> Option<Arc<PolicyKey>> {
        self.shared.get(name, version)
    }

    fn latest(&self, name: &str) -> Option<(u32, Arc<PolicyKey>)> {
        self.shared.latest(name)
    }

    fn is_clear(&self, name: &str) -> bool {
        self.shared.is_clear(name)
    }

    fn mode(&self, name: &str) -> Option<guardfs_crypto::Mode> {
        self.shared.mode(name)
    }
}

impl std::fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("StaticKeys")
            .field("keys", &inner.keys.keys().collect::<Vec<_>>())
            .field("current", &inner.current)
            .finish()
    }
}

impl KeySource for StaticKeys {
    fn current(&self) -> Option<(String, u32, Arc<PolicyKey>)> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let (name, version) = inner.current.clone()?;
        let key = inner.keys.get(&(name.clone(), version))?.clone();
        Some((name, version, key))
    }

    fn get(&self, name: &str, version: u32) -> Option<Arc<PolicyKey>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.keys.get(&(name.to_owned(), version)).cloned()
    }

    fn latest(&self, name: &str) -> Option<(u32, Arc<PolicyKey>)> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner
            .keys
            .iter()
            .filter(|((n, _), _)| n == name)
            .max_by_key(|((_, v), _)| *v)
            .map(|((_, v), k)| (*v, k.clone()))
    }

    fn is_clear(&self, name: &str) -> bool {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.clear.contains(name)
    }

    fn mode(&self, name: &str) -> Option<guardfs_crypto::Mode> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.modes.get(name).copied()
    }
}
