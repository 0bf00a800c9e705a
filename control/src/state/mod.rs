//! The agent's persistent state under its install root (default
//! `/opt/guardfs/agent`):
//!
//! ```text
//! etc/agent.conf        key=value settings (conf)
//! etc/policies/*.json   applied policies (policies)
//! etc/hostsettings      host settings text (policies)
//! etc/guardpoints.json  GuardPoint registry (guardpoints)
//! .sec/host.key         the host key, auto or password protected (hostkey)
//! .sec/keys.json        local key store, sealed under the host key (keystore)
//! ```
//!
//! Every file is replaced atomically ([`atomic::write_atomic`]) and every
//! reader validates what it reads: a malformed file gives a [`StateError`]
//! naming the file, the place and the problem, and nothing is changed.

pub mod atomic;
pub mod conf;
pub mod guardpoints;
pub mod hostkey;
pub mod keystore;
pub mod layout;
pub mod policies;
pub mod rules;

use std::path::{Path, PathBuf};

pub use atomic::{read_file, write_atomic};
pub use conf::AgentConf;
pub use guardpoints::{GpType, GuardPointEntry, GuardPoints};
pub use hostkey::{HostKey, HostKeyStore, Protection, Unlock};
pub use keystore::{KeyInfo, KeyStore};
pub use layout::{DEFAULT_ROOT, Layout, default_root};
pub use policies::PolicyStore;

/// Everything that can go wrong reading or changing the agent's state.
/// Messages name the file (where there is one) and say what is wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// An I/O operation on a file or directory failed.
    #[error("{}: {op}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done ("cannot read", "cannot rename", ...).
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON state file does not parse or has the wrong shape.
    #[error("{}: not valid JSON: {message}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A line of a text state file is malformed.
    #[error("{}: line {line}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A state file parses but holds something invalid.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The key store was sealed under another host key.
    #[error("{}: key store sealed under a different host key", path.display())]
    WrongHostKey {
        /// The key store (or host key file).
        path: PathBuf,
    },
    /// The password does not unlock the host key.
    #[error("{}: wrong password for the host key", path.display())]
    WrongPassword {
        /// The host key file.
        path: PathBuf,
    },
    /// The host key is password protected and no password was given.
    #[error("{}: the host key is password protected; a password is needed", path.display())]
    NeedsPassword {
        /// The host key file.
        path: PathBuf,
    },
    /// A password that is too weak to protect the host key.
    #[error("password rejected: {0}")]
    WeakPassword(&'static str),
    /// A key or policy name outside the allowed charset or length.
    #[error("invalid {what} name {name:?}: {why}")]
    InvalidName {
        /// "key" or "policy".
        what: &'static str,
        /// The name given.
        name: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// `create` of a key that exists.
    #[error("key '{0}' already exists")]
    KeyExists(String),
    /// A key name the store does not hold.
    #[error("no key named '{0}'")]
    NoSuchKey(String),
    /// A key version the store does not hold.
    #[error("key '{name}' has no version {version}")]
    NoSuchKeyVersion {
        /// The key.
        name: String,
        /// The version asked for.
        version: u32,
    },
    /// A policy name the store does not hold.
    #[error("no policy named '{0}'")]
    NoSuchPolicy(String),
    /// A policy document that does not validate. Nothing was written.
    #[error("policy rejected: {0}")]
    Policy(#[source] guardfs_policy::PolicyError),
    /// A stored policy that no longer validates.
    #[error("{}: stored policy does not validate: {source}", path.display())]
    StoredPolicy {
        /// The policy file.
        path: PathBuf,
        /// Why.
        #[source]
        source: guardfs_policy::PolicyError,
    },
    /// Host settings text that does not validate. Nothing was written.
    #[error("host settings rejected: {0}")]
    HostSettings(#[source] guardfs_policy::HostSettingsError),
    /// A GuardPoint path or registry change that is refused.
    #[error("GuardPoint {path:?}: {why}")]
    GuardPoint {
        /// The path given.
        path: String,
        /// Why it is refused.
        why: String,
    },
    /// An `agent.conf` setting that cannot be stored.
    #[error("setting {key:?}: {why}")]
    InvalidSetting {
        /// The key.
        key: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// The system random source or a cipher failed.
    #[error("cryptographic failure: {0}")]
    Crypto(&'static str),
}

/// Result alias for this module.
pub type Result<T, E = StateError> = std::result::Result<T, E>;

impl StateError {
    pub(crate) fn io(path: &Path, op: &'static str, source: std::io::Error) -> Self {
        StateError::Io {
            path: path.to_owned(),
            op,
            source,
        }
    }

    pub(crate) fn json(path: &Path, e: &serde_json::Error) -> Self {
        StateError::Json {
            path: path.to_owned(),
            message: e.to_string(),
        }
    }

    pub(crate) fn invalid(path: &Path, message: impl Into<String>) -> Self {
        StateError::Invalid {
            path: path.to_owned(),
            message: message.into(),
        }
    }
}

impl From<guardfs_crypto::RandomError> for StateError {
    fn from(_: guardfs_crypto::RandomError) -> Self {
        StateError::Crypto("the system random number generator failed")
    }
}

/// Check a key or policy name: 1..=64 characters of `[A-Za-z0-9._-]`, not
/// starting with `.` (names become file names; this also keeps `.`, `..`
/// and hidden temp files out).
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<()> {
    let bad = |why| {
        Err(StateError::InvalidName {
            what,
            name: name.to_owned(),
            why,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 64 {
        return bad("it is longer than 64 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("only letters, digits, `.`, `_` and `-` are allowed");
    }
    if name.starts_with('.') {
        return bad("it must not start with `.`");
    }
    Ok(())
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "db-key", "K_1.v2", &"x".repeat(64)] {
            check_name("key", ok).unwrap();
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", "é", &"x".repeat(65)] {
            let e = check_name("key", bad).unwrap_err();
            assert!(e.to_string().starts_with("invalid key name"), "{e}");
        }
    }
}
