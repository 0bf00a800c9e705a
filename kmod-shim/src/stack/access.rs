//! Access decisions: which view of a file a caller gets, or none.
//!
//! secfs asks the compiled policy (crate `guardfs-policy`) at open-, create-
//! and lookup-level operations, never per read or write: a file handle
//! keeps the decision made when it was opened, so writes flushed later by
//! the kernel are attributed to the opener.
//!
//! # Caching strategy (no plaintext through shared kernel caches)
//!
//! The kernel caches data and attributes per inode, shared by every process.
//! A caller that may read only ciphertext must therefore never reach the
//! inode whose cache holds plaintext. When the loaded policy can give some
//! reader ciphertext (`possible_outcomes` says raw reads are possible), the
//! GuardPoint runs *isolated*:
//! * a regular file has two kernel inodes, one per view: the plaintext view
//!   (node id = lower inode number) and the raw view (a separate node id
//!   whose reads return the exact lower bytes, header included, and whose
//!   size is the lower size);
//! * lookups of regular files are answered with an entry lifetime of zero,
//!   so every path walk asks secfs again, and the answer depends on the
//!   caller: its decision picks the inode;
//! * raw views are opened with direct I/O (no page cache for them at all).
//!
//! Each view's page cache and attribute cache only ever hold what every
//! process reaching that inode may see, so full caching (writeback cache,
//! kept page cache) stays on for the plaintext view. When the policy can
//! only permit plaintext or deny, there is one inode per file and entries
//! are cached normally.
//!
//! A new policy generation (reload) bumps a counter; handles opened under
//! an older generation are decided again on their next read or write, and
//! the mount invalidates every cached page and attribute, so no fd opened
//! earlier keeps access the new policy removes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use guardfs_policy::{Action, AuditLine, CompiledPolicy, HostSettings, KeyChoice, Request};
use log::warn;

use crate::audit::Auditor;
use crate::stack::procinfo::ProcCache;
use crate::vfs::{Caller, Errno, VfsResult};

/// Which bytes a caller sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum View {
    /// Decrypted contents, logical size.
    Plain,
    /// The lower file's exact bytes and size (permit without `applykey`).
    Raw,
}

/// The key new files below a resource are encrypted with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewKey {
    /// The GuardPoint's key named `default` (no key rules).
    Default,
    Named(String),
    /// `clear_key`: files stay plaintext, access control only.
    Clear,
}

/// A permitted operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub view: View,
    pub key: NewKey,
}

impl Grant {
    /// What secfs grants when no policy is loaded.
    pub fn unrestricted() -> Grant {
        Grant {
            view: View::Plain,
            key: NewKey::Default,
        }
    }
}

/// One loaded policy generation.
#[derive(Debug)]
pub struct Loaded {
    pub policy: CompiledPolicy,
    pub host: HostSettings,
    /// Whether some reader can get ciphertext (see the module doc).
    pub isolated: bool,
    pub generation: u64,
}

/// The access-control state of one GuardPoint.
#[derive(Debug)]
pub struct Access {
    state: RwLock<Option<Arc<Loaded>>>,
    generation: AtomicU64,
    /// The GuardPoint's path, as audit lines show it.
    guard_point: Vec<u8>,
    procs: ProcCache,
    audit: Option<Auditor>,
}

fn now_local() -> guardfs_policy::TimeOfWeek {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    guardfs_policy::TimeOfWeek::from_unix(secs, local_offset())
}

/// The local UTC offset in seconds (the policy's `when` is local time).
fn local_offset() -> i32 {
    // TZ offsets change rarely; read them from the time zone data at start.
    static OFFSET: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
    *OFFSET.get_or_init(|| {
        std::process::Command::new("date")
            .arg("+%z")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| {
                let s = s.trim();
                let sign = if s.starts_with('-') { -1 } else { 1 };
                let digits = s.trim_start_matches(['+', '-']);
                let h: i32 = digits.get(..2)?.parse().ok()?;
                let m: i32 = digits.get(2..4)?.parse().ok()?;
                Some(sign * (h * 3600 + m * 60))
            })
            .unwrap_or(0)
    })
}

impl Access {
    /// No policy: every caller gets plaintext with the default key.
    pub fn unrestricted(guard_point: &[u8]) -> Access {
        Access {
            state: RwLock::new(None),
            generation: AtomicU64::new(0),
            guard_point: guard_point.to_vec(),
            procs: ProcCache::default(),
            audit: None,
        }
    }

    /// Access control with `policy` and `host` settings, auditing to `audit`.
    pub fn with_policy(
        guard_point: &[u8],
        policy: CompiledPolicy,
        host: HostSettings,
        audit: Option<Auditor>,
    ) -> Access {
        let a = Access {
            audit,
            ..Access::unrestricted(guard_point)
        };
        a.load(policy, host);
        a
    }

    /// Switch to a new policy generation atomically; returns its number.
    pub fn load(&self, policy: CompiledPolicy, host: HostSettings) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let isolated = [Action::FRd, Action::FWr, Action::FWrApp]
            .iter()
            .any(|&a| policy.possible_outcomes(a).raw);
        let loaded = Arc::new(Loaded {
            policy,
            host,
            isolated,
            generation,
        });
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = Some(loaded);
        self.procs.clear();
        generation
    }

    /// The current policy generation (0: no policy).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn current(&self) -> Option<Arc<Loaded>> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether the GuardPoint must keep views on separate inodes.
    pub fn isolated(&self) -> bool {
        self.current().is_some_and(|l| l.isolated)
    }

    /// The GuardPoint's path (policies see paths relative to it).
    pub fn guard_point(&self) -> &[u8] {
        &self.guard_point
    }

    /// The loaded policy's name, if any.
    pub fn policy_name(&self) -> Option<String> {
        self.current().map(|l| l.policy.name().to_owned())
    }

    /// The auditor, if any.
    pub fn auditor(&self) -> Option<&Auditor> {
        self.audit.as_ref()
    }

    /// Decide `action` on `path` (relative to the GuardPoint, written
    /// absolute) for `caller`. Deny is `EACCES`; learn mode permits and
    /// logs what it would have denied.
    pub fn check(&self, caller: &Caller, path: &[u8], action: Action) -> VfsResult<Grant> {
        let Some(l) = self.current() else {
            return Ok(Grant::unrestricted());
        };
        // Requests the kernel makes on its own behalf (pid 0) have no
        // process to judge; they only happen for already-opened files.
        if caller.pid == 0 {
            return Ok(Grant::unrestricted());
        }
        let ident = self
            .procs
            .identity(caller.pid, caller.uid, caller.gid, &l.host, true);
        let names: Vec<&str> = ident.group_names.iter().map(String::as_str).collect();
        let req = Request {
            path,
            action,
            uid: caller.uid,
            gid: caller.gid,
            groups: &ident.groups,
            user_name: ident.user_name.as_deref(),
            group_names: &names,
            exe: ident.exe.as_deref(),
            exe_sha256: ident.sha256.as_ref(),
            authenticated: ident.trust.is_authenticated(),
            now: now_local(),
        };
        let d = l.policy.evaluate(&req);
        if d.audit()
            && let Some(a) = &self.audit
        {
            a.record(AuditLine::new(&l.policy, &req, &self.guard_point, &d).to_string());
        }
        if !d.is_permit() {
            return Err(Errno::EACCES);
        }
        let key = match d.key() {
            KeyChoice::Default => NewKey::Default,
            KeyChoice::Clear => NewKey::Clear,
            KeyChoice::Named(_) => NewKey::Named(l.policy.key_label(d.key()).to_owned()),
            KeyChoice::Unmatched if d.apply_key() => {
                warn!(
                    "secfs: no key rule covers {}; access refused",
                    String::from_utf8_lossy(path)
                );
                return Err(Errno::EACCES);
            }
            KeyChoice::Unmatched => NewKey::Default,
        };
        // Under clear_key the lower bytes are the plaintext: one view.
        let view = if d.apply_key() || key == NewKey::Clear {
            View::Plain
        } else {
            View::Raw
        };
        Ok(Grant { view, key })
    }
}
