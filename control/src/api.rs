//! vmd's local API: one JSON request per line on a root-only Unix socket
//! (`<run_dir>/vmd.sock`), one JSON reply per line. The admin commands are
//! clients of it; vmd checks the peer's credentials (root only).
//!
//! Requests carry passwords (`passwd`, `set_password`) but never key
//! material; neither side logs a request's fields.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::state::GpType;

/// One request to vmd.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Status,
    KeyCreate {
        name: String,
        mode: String,
        persistent: bool,
    },
    KeyRotate {
        name: String,
    },
    KeyList,
    KeyShow {
        name: String,
    },
    PolicyApply {
        json: String,
    },
    PolicyList,
    PolicyShow {
        name: String,
    },
    HostSettingsSet {
        text: String,
    },
    HostSettingsShow,
    /// Register (if `policy` is given) and guard.
    Guard {
        path: String,
        policy: Option<String>,
        gp_type: Option<GpType>,
    },
    /// Unguard; `keep` leaves it registered with config state unguarded
    /// (`secfsd -unguard`), otherwise it is removed from the registry.
    Unguard {
        path: String,
        keep: bool,
    },
    /// Enter the static host password (`vmsec passwd`).
    Passwd {
        password: String,
    },
    /// Protect the host key with a password from now on.
    SetPassword {
        password: String,
    },
    SecfsConfig {
        param: String,
        value: String,
    },
    /// Header facts of a file inside a GuardPoint.
    FileInfo {
        path: String,
    },
    Config,
    /// Read the key-manager registration again (after `register_host`).
    Reload,
    /// `vmutil renewcerts`: renew the client certificate now.
    KmRenew,
    /// `vmutil reportstate`: send the guard status to the key manager now.
    KmReport,
    /// `vmutil unregister`: forget the registration; GuardPoints from the
    /// key manager are unguarded and removed, its keys forgotten.
    KmUnregister,
    /// `vmutil deletehost`: delete this host at the key manager, then
    /// unregister.
    KmDeleteHost,
    /// `vmsec challenge`: a challenge for offline unlock.
    Challenge,
    /// The key manager's response to the pending challenge.
    ChallengeResponse {
        response: String,
    },
    /// Unguard everything, stop secfs, stop vmd.
    Shutdown,
}

impl std::fmt::Debug for Request {
    /// Only the operation: fields may carry passwords.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = serde_json::to_value(self).unwrap_or_default();
        write!(
            f,
            "Request({})",
            v.get("op").and_then(Value::as_str).unwrap_or("?")
        )
    }
}

/// vmd's reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub data: Value,
}

impl Reply {
    pub fn ok(data: Value) -> Reply {
        Reply {
            ok: true,
            error: None,
            data,
        }
    }
    pub fn err(msg: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            error: Some(msg.into()),
            data: Value::Null,
        }
    }
}

/// The socket of the vmd serving `run_dir`.
pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join("vmd.sock")
}

/// Why a call to vmd failed before it answered.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("vmd is not running (no answer on {path}: {source}); start it with `vmd`")]
    NotRunning {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to vmd on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("vmd sent a malformed reply: {0}")]
    Reply(String),
}

/// Send one request and wait for the reply (up to `timeout`).
pub fn call(run_dir: &Path, req: &Request, timeout: Duration) -> Result<Reply, CallError> {
    let path = socket_path(run_dir);
    let mut s = UnixStream::connect(&path).map_err(|source| CallError::NotRunning {
        path: path.clone(),
        source,
    })?;
    let io = |source| CallError::Io {
        path: path.clone(),
        source,
    };
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_vec(req).map_err(|e| CallError::Reply(e.to_string()))?;
    line.push(b'\n');
    s.write_all(&line).map_err(io)?;
    zeroize::Zeroize::zeroize(&mut line);
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer).map_err(io)?;
    serde_json::from_str(&answer).map_err(|e| CallError::Reply(format!("{e}: {answer:?}")))
}
