//! Access decisions: which view of a file a caller gets, or none.
//!
//! secfs asks the compiled policy (crate `guardfs-policy`) at open-, create-
//! and lookup-level operations (and for attribute reads, see below), never
//! per read or write: a file handle keeps the decision made when it was
//! opened, so writes flushed later by the kernel are attributed to the
//! opener.
//!
//! # Views
//!
//! A permitted caller gets one of two views of a regular file:
//! * **Plain**: the contents as the key rule for the file's path has them
//!   (see [`RuleKey`]): decrypted with the rule's key (any version of it)
//!   and shown at the logical size, or, under `clear_key` (and in a
//!   `clear` GuardPoint without key rules naming a key), the lower bytes
//!   exactly as they are. Given to a permit with `applykey`, and under
//!   `clear_key` to a permit without it (there the lower bytes are all
//!   anyone gets).
//! * **Raw**: the exact lower bytes, header included, and the lower size.
//!   Given to a permit without `applykey` (a backup tool) where the key
//!   rule names a key. Raw views are read-only.
//!
//! The key rule decides how a file is read, never the file: a header for
//! another key, or none where the rule names a key, is refused at open
//! (`EIO`, audited with the key found and the key required, see
//! `Stack::load_for_open`), and renames and links between key rules are
//! `EXDEV`, so data only crosses a key rule by being copied (and
//! re-encrypted).
//!
//! # Caching strategy (no plaintext through shared kernel caches)
//!
//! The kernel caches data and attributes per inode, shared by every process.
//! A caller that may read only ciphertext must therefore never reach the
//! inode whose cache holds plaintext. When the loaded policy can give some
//! reader ciphertext (`possible_outcomes` says raw reads are possible), the
//! GuardPoint runs *isolated*:
//! * a regular file has up to two kernel inodes, one per view: the
//!   plaintext view (node id = lower inode number) and the raw view (a
//!   separate node id whose reads return the exact lower bytes and whose
//!   size is the lower size);
//! * lookups of regular files are answered with an entry lifetime of zero,
//!   so every path walk asks secfs again, and the answer depends on the
//!   caller: a non-auditing probe of its read decision picks the inode;
//! * raw views are opened with direct I/O (no page cache for them at all);
//! * `readdir` hands out names only (no `READDIRPLUS` entries), so no
//!   inode is reached without a per-caller lookup.
//!
//! Each view's page cache and attribute cache only ever hold what every
//! process reaching that inode may see, so full caching (writeback cache,
//! kept page cache, attribute lifetime of the mount's TTL) stays on for the
//! plaintext view. When the policy can only permit plaintext or deny (no
//! raw reads anywhere), there is one inode per file and entries are cached
//! normally: a denied process can reach the inode, but every open, and
//! every attribute read (`getattr`, `f_rd_att`/`d_rd_att`, browsing
//! applies), `readlink` (`f_rd`), listing and xattr access is decided for
//! the caller in secfs. What the kernel serves from its caches without
//! asking secfs — a cached attribute for a path walk, within the TTL — was
//! fetched by a caller the policy let read attributes; attribute reads are
//! not treated as secret beyond that TTL (one second by default).
//!
//! # Policy generations and revocation
//!
//! Each loaded policy has a generation number, stored together with the
//! compiled policy in one snapshot; a decision ([`Grant`]) carries the
//! generation of the snapshot it was taken from, and a file handle keeps
//! it. Before a reload (SIGHUP or the control channel's LoadPolicy), every
//! inode is invalidated so dirty pages are written back under the policy
//! they were written under. After it:
//! * every new operation is decided under the new snapshot;
//! * a handle opened under an older generation is decided again, for its
//!   opener, on its next read, write or fallocate: if the new policy no
//!   longer grants the same view, the operation fails with `EACCES`;
//! * right after the load, every such handle on a regular file is also
//!   decided again eagerly (a probe, not audited; the handle's next
//!   operation is decided and audited as above). Each file for which the
//!   decision of *any* handle changed (denied, or another view) is
//!   **retired**: its node leaves the lookup table, so the next lookup
//!   gets a fresh node id for the same lower file (sharing its contents
//!   state); the kernel inode is invalidated (dirty pages are written back
//!   through the handles, which still work at that point), then *every*
//!   handle on it is revoked — those of openers the new policy still
//!   permits too, since they share the inode's page cache — and it is
//!   invalidated again;
//! * the mount invalidates every cached page and attribute of every inode.
//!
//! A revoked handle refuses read, write, fallocate, fsync, lseek and
//! truncation with `EACCES`, and so does `getattr` with its handle (which
//! the kernel sends before a cached `write(2)` once attributes are stale);
//! a retired node's attributes are never cached (lifetime zero), and
//! opens, `getattr` and `setattr` on it without a handle give `ESTALE`,
//! on which the kernel looks the path up again and reaches the fresh
//! node (so `fstat` on an old fd fails). Release still works. After the
//! second invalidation nothing can bring pages back into the retired
//! inode's cache: a read or fault through an old fd or mapping reaches
//! secfs and is refused (a fault is `SIGBUS`), whatever a permitted
//! process reads meanwhile through the fresh inode.
//!
//! Costs and limits, exactly:
//! * old handles of a file whose decision changed for any opener are
//!   revoked for every opener: a process the new policy still permits
//!   must reopen the file (its new open reaches the fresh node);
//! * the fresh node usually has a synthetic node id, and FUSE reports
//!   the node id as `st_ino`, so the file's inode number as seen through
//!   the mount changes until the retired node is forgotten and the file
//!   is looked up afresh;
//! * writes an old handle left in the kernel's cache after the load (in
//!   the instant before it is revoked) are refused when written back;
//! * "its opener" is the process that opened the handle, judged as it is
//!   now while it runs (same pid and start time), and with the identity
//!   kept from the open (executable, signature, trust, ids) once it has
//!   exited or its pid was reused, never as whichever process holds the
//!   pid now; handles opened while no policy was loaded kept no identity
//!   and are judged by pid;
//! * a handle whose file moved outside the GuardPoint is denied, so its
//!   file is retired;
//! * handles and files whose decisions did not change are untouched; a
//!   reload that narrows nothing for open files costs one probe per open
//!   regular-file handle;
//! * FUSE passthrough handles (`clear` GuardPoints) do their I/O on the
//!   lower file in the kernel: neither the re-check nor revocation reaches
//!   them.
//!
//! Mapped pages: the kernel's invalidation (`FUSE_NOTIFY_INVAL_INODE`)
//! drops an inode's clean cached pages and unmaps them from every mapping,
//! so a later access through a mapping made under the old generation
//! faults and is fetched by a read on the mapping's handle, which is
//! re-checked (a refused fetch is `SIGBUS`). Not covered: bytes a process
//! already copied out of a mapping or its own modified private pages, and
//! pages the kernel could not drop at that instant (under writeback) until
//! they are dropped later. Revocation is immediate for `read(2)` and new
//! faults, never retroactive for data already handed out.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use guardfs_policy::{Action, AuditLine, CompiledPolicy, HostSettings, KeyChoice, Request};
use log::warn;

use crate::audit::{AuditClass, Auditor};
use crate::stack::keys::KeySource;
use crate::stack::procinfo::{Identity, ProcCache};
use crate::vfs::{Caller, Errno, VfsResult};

/// The identity a handle's opener was judged as (kept by the handle).
pub type Opener = Arc<Identity>;

/// Which bytes a caller sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum View {
    /// Decrypted contents, logical size.
    Plain,
    /// The lower file's exact bytes and size (permit without `applykey`).
    Raw,
}

/// The key a resource's key rule names: what its contents are encrypted
/// with, for reading as for writing. The key rule decides how a lower file
/// is read, never the file itself (DESIGN.md, invariant 6): a header for
/// another key is refused, and under `clear_key` the lower bytes are served
/// as they are, whatever they look like.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RuleKey {
    /// The GuardPoint's own key (no key rules, or no policy): its current
    /// key for new files, any version of it for existing ones; none in a
    /// `clear` GuardPoint, whose files are served as they are.
    Default,
    /// A named key: any version of it.
    Named(String),
    /// `clear_key`: files are served and stored as they are.
    Clear,
    /// A key rule under data transformation (`data_transform_rules`):
    /// files in the current key (`.0`) or the transformation key (`.1`)
    /// are read, each by its own key; new contents get the transformation
    /// key. Both are `Named` or `Clear`, never equal.
    Transform(Box<(RuleKey, RuleKey)>),
}

impl RuleKey {
    /// How the key is named in audit records.
    pub fn label(&self) -> &str {
        match self {
            RuleKey::Default => "default",
            RuleKey::Named(n) => n,
            RuleKey::Clear => guardfs_policy::CLEAR_KEY,
            RuleKey::Transform(t) => t.1.label(),
        }
    }

    /// How the key rule is named in audit records and errors: the key, or
    /// `current->transformation` while a transformation rule pairs with it.
    pub fn describe(&self) -> String {
        match self {
            RuleKey::Transform(t) => format!("{}->{}", t.0.label(), t.1.label()),
            k => k.label().to_owned(),
        }
    }

    /// The key rule built from a policy's choice of current key and
    /// transformation key.
    pub fn of_policy(
        policy: &guardfs_policy::CompiledPolicy,
        key: KeyChoice,
        transform: Option<KeyChoice>,
    ) -> RuleKey {
        let one = |k: KeyChoice| match k {
            KeyChoice::Named(_) => RuleKey::Named(policy.key_label(k).to_owned()),
            KeyChoice::Clear => RuleKey::Clear,
            KeyChoice::Default | KeyChoice::Unmatched => RuleKey::Default,
        };
        match transform {
            Some(t) if !matches!(key, KeyChoice::Default | KeyChoice::Unmatched) => {
                RuleKey::Transform(Box::new((one(key), one(t))))
            }
            _ => one(key),
        }
    }
}

/// A permitted operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub view: View,
    /// The key rule's key for the resource.
    pub key: RuleKey,
    /// The policy generation this decision was taken under (0: no policy).
    pub generation: u64,
}

impl Grant {
    /// What secfs grants when no policy is loaded.
    pub fn unrestricted() -> Grant {
        Grant {
            view: View::Plain,
            key: RuleKey::Default,
            generation: 0,
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
    /// The loaded policy and its generation, swapped together.
    state: RwLock<Option<Arc<Loaded>>>,
    /// The generation of `state`, published after it (a fast path for
    /// "has anything changed"; decisions take theirs from the snapshot).
    generation: AtomicU64,
    /// Serializes loads so generations are assigned in order.
    loading: Mutex<()>,
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
    guardfs_policy::TimeOfWeek::from_unix(secs, local_offset(secs))
}

/// How often the local UTC offset is looked up again (DST changes it).
const OFFSET_REFRESH_SECS: i64 = 60;

/// The local UTC offset in seconds (the policy's `when` is local time),
/// looked up at most once a minute; one thread refreshes it while the
/// others use the previous value.
fn local_offset(now: i64) -> i32 {
    static OFFSET: AtomicI64 = AtomicI64::new(0);
    static CHECKED: AtomicI64 = AtomicI64::new(i64::MIN);
    static REFRESH: Mutex<()> = Mutex::new(());
    let last = CHECKED.load(Ordering::Acquire);
    if now.saturating_sub(last) >= OFFSET_REFRESH_SECS
        && let Ok(_g) = REFRESH.try_lock()
        && CHECKED.load(Ordering::Acquire) == last
    {
        if let Some(o) = read_offset() {
            OFFSET.store(i64::from(o), Ordering::Release);
        }
        CHECKED.store(now, Ordering::Release);
    }
    if last == i64::MIN {
        // The very first decision waits for the first lookup.
        let _g = REFRESH.lock().unwrap_or_else(|e| e.into_inner());
    }
    OFFSET.load(Ordering::Acquire) as i32
}

fn read_offset() -> Option<i32> {
    let o = std::process::Command::new("date")
        .arg("+%z")
        .output()
        .ok()?;
    let s = String::from_utf8(o.stdout).ok()?;
    let s = s.trim();
    let sign = if s.starts_with('-') { -1 } else { 1 };
    let digits = s.trim_start_matches(['+', '-']);
    let h: i32 = digits.get(..2)?.parse().ok()?;
    let m: i32 = digits.get(2..4)?.parse().ok()?;
    Some(sign * (h * 3600 + m * 60))
}

/// The key names `policy`'s key rules use that `keys` does not hold.
pub fn missing_keys(policy: &CompiledPolicy, keys: &dyn KeySource) -> Vec<String> {
    policy
        .key_names()
        .filter(|n| keys.latest(n).is_none() && !keys.is_clear(n))
        .map(str::to_owned)
        .collect()
}

/// The concise-logging class of an action.
fn class_of(action: Action) -> AuditClass {
    use Action as A;
    match action {
        A::FRd => AuditClass::Read,
        A::FWr | A::FWrApp => AuditClass::Write,
        A::FRdAtt | A::FRdSec | A::DRdAtt => AuditClass::ReadAttr,
        A::DRd => AuditClass::Dir,
        _ => AuditClass::Other,
    }
}

impl Access {
    /// No policy: every caller gets plaintext with the default key.
    pub fn unrestricted(guard_point: &[u8]) -> Access {
        Access {
            state: RwLock::new(None),
            generation: AtomicU64::new(0),
            loading: Mutex::new(()),
            guard_point: guard_point.to_vec(),
            procs: ProcCache::default(),
            audit: None,
        }
    }

    /// No policy, but refusals of files whose bytes do not fit the key
    /// rule are audited to `audit` (see [`Access::refused_file`]).
    pub fn unrestricted_audited(guard_point: &[u8], audit: Option<Auditor>) -> Access {
        Access {
            audit,
            ..Access::unrestricted(guard_point)
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
    /// The policy and its generation are published together: a decision
    /// taken from the new snapshot carries the new number.
    pub fn load(&self, policy: CompiledPolicy, host: HostSettings) -> u64 {
        let _loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        // `|no_applykey|` turns plaintext grants into raw ones for some
        // processes: raw views are possible wherever plaintext is.
        let withholds = host.no_applykey_conditions() != Default::default();
        let isolated = [Action::FRd, Action::FWr, Action::FWrApp].iter().any(|&a| {
            let o = policy.possible_outcomes(a);
            o.raw || (withholds && o.plaintext)
        });
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let previous = state.as_ref().map(|l| l.generation).unwrap_or(0);
        let generation = previous.max(self.generation.load(Ordering::Acquire)) + 1;
        let host_changed = state.as_ref().is_none_or(|l| l.host != host);
        // Start following `|path_no_trust|` programs now, not at the first
        // request (see procinfo's `events`).
        self.procs.follow(&host);
        *state = Some(Arc::new(Loaded {
            policy,
            host,
            isolated,
            generation,
        }));
        self.generation.store(generation, Ordering::Release);
        drop(state);
        // Trust computed under other host settings is stale; identities
        // (and the trust they inherit) stay valid otherwise.
        if host_changed {
            self.procs.clear();
        }
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

    /// The key rule's key for `path` (relative to the GuardPoint, written
    /// absolute), whoever asks: how its contents are read and written.
    /// Without a policy, the GuardPoint's own key. A path no key rule
    /// covers has no key: [`RuleKey::Default`], which a permit with the
    /// key never reaches (it is refused, see `decide`).
    pub fn rule_at(&self, path: &[u8]) -> RuleKey {
        let Some(l) = self.current() else {
            return RuleKey::Default;
        };
        let (key, transform) = l.policy.key_rule_for(path);
        RuleKey::of_policy(&l.policy, key, transform)
    }

    /// Whether moving the object at `from` to `to` (a directory: with
    /// everything below it) keeps it under the same key rules; see
    /// [`CompiledPolicy::same_key_rules`]. Always true without a policy.
    pub fn same_key_rules(&self, from: &[u8], to: &[u8], dir: bool) -> bool {
        self.current()
            .is_none_or(|l| l.policy.same_key_rules(from, to, dir))
    }

    /// Record that the lower file at `path` was refused because its bytes do
    /// not fit its key rule (`required`): it carries a header for the key
    /// `found` (`none`: no valid header), or its key is not available.
    pub fn refused_file(&self, path: &[u8], required: &str, found: &str, why: &str) {
        let policy = self.policy_name().unwrap_or_default();
        let line = guardfs_policy::KeyMismatchLine {
            policy: &policy,
            guard_point: &self.guard_point,
            path,
            required,
            found,
            why,
        }
        .to_string();
        log::error!("secfs: {line}");
        if let Some(a) = &self.audit {
            a.record(line);
        }
    }

    /// Decide `action` on `path` (relative to the GuardPoint, written
    /// absolute) for `caller`. Deny is `EACCES`; learn mode permits and
    /// logs what it would have denied.
    pub fn check(&self, caller: &Caller, path: &[u8], action: Action) -> VfsResult<Grant> {
        self.decide(caller, None, path, action, true)
            .map(|(g, _)| g)
    }

    /// [`Access::check`] without an audit record: for choices secfs makes
    /// on the caller's behalf (which inode a lookup reaches) that are not
    /// operations the caller asked for; the operation itself is decided
    /// and audited when it happens.
    pub fn probe(&self, caller: &Caller, path: &[u8], action: Action) -> VfsResult<Grant> {
        self.decide(caller, None, path, action, false)
            .map(|(g, _)| g)
    }

    /// [`Access::check`] for an open: also returns the identity judged,
    /// which the handle keeps as its opener (see [`Access::recheck`]).
    pub fn check_open(
        &self,
        caller: &Caller,
        path: &[u8],
        action: Action,
    ) -> VfsResult<(Grant, Option<Arc<Identity>>)> {
        self.decide(caller, None, path, action, true)
    }

    /// Decide again for a handle's opener after a reload. While the opener
    /// (same pid, same start time) lives, it is judged as it is now;
    /// once it has exited (the handle was passed on or inherited) or its
    /// pid was reused, as it was when it opened: never as whichever
    /// process holds that pid now.
    ///
    /// With `as_opened`, the opener is judged as it was when it opened
    /// without looking at the process at all: for requests the kernel
    /// makes on its own (writeback of dirty pages). Those can be made on
    /// behalf of a process in the middle of `execve` (closing its
    /// close-on-exec files flushes them) that holds locks reading its
    /// `/proc` entries waits for: looking would deadlock the worker.
    pub fn recheck(
        &self,
        caller: &Caller,
        opener: Option<&Arc<Identity>>,
        path: &[u8],
        action: Action,
        audit: bool,
        as_opened: bool,
    ) -> VfsResult<Grant> {
        self.decide_as(caller, opener, as_opened, path, action, audit)
            .map(|(g, _)| g)
    }

    fn decide(
        &self,
        caller: &Caller,
        opener: Option<&Arc<Identity>>,
        path: &[u8],
        action: Action,
        audit: bool,
    ) -> VfsResult<(Grant, Option<Arc<Identity>>)> {
        self.decide_as(caller, opener, false, path, action, audit)
    }

    fn decide_as(
        &self,
        caller: &Caller,
        opener: Option<&Arc<Identity>>,
        as_opened: bool,
        path: &[u8],
        action: Action,
        audit: bool,
    ) -> VfsResult<(Grant, Option<Arc<Identity>>)> {
        let Some(l) = self.current() else {
            return Ok((Grant::unrestricted(), None));
        };
        // Requests the kernel makes on its own behalf (pid 0, or a caller
        // outside secfs's pid namespace) are judged as an unknown,
        // unauthenticated process: no executable, no signature.
        let ident = match opener {
            Some(o) if as_opened || !self.procs.is_alive(caller.pid, o) => o.clone(),
            _ if caller.pid == 0 => self.procs.unknown(caller.uid, caller.gid),
            _ => self
                .procs
                .identity(caller.pid, caller.uid, caller.gid, &l.host, true),
        };
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
        if audit
            && d.audit()
            && let Some(a) = &self.audit
        {
            a.record_decision(
                (
                    d.matched_rule(),
                    caller.pid,
                    ident.start(),
                    ident.audit_exe().unwrap_or_default(),
                ),
                (
                    caller.uid,
                    ident.exe.as_deref().unwrap_or_default(),
                    path,
                    class_of(action),
                    // Reads and writes are one record per class; anything
                    // else (create, remove, rename, ...) per action.
                    matches!(class_of(action), AuditClass::Other).then_some(action),
                    (d.is_permit(), d.would_deny()),
                ),
                || {
                    // An unverified executable is shown as it claims to
                    // be, marked: who tried to pass for whom.
                    let shown = Request {
                        exe: ident.audit_exe(),
                        ..req
                    };
                    AuditLine::new(&l.policy, &shown, &self.guard_point, &d).to_string()
                },
            );
        }
        if !d.is_permit() {
            return Err(Errno::EACCES);
        }
        // `|no_applykey|`: a traced or preloaded process gets no key (the
        // grant is what a permit without applykey gives).
        let apply_key = d.apply_key() && !l.host.withholds_key(ident.taint);
        let key = match d.key() {
            k @ (KeyChoice::Default | KeyChoice::Clear | KeyChoice::Named(_)) => {
                RuleKey::of_policy(&l.policy, k, l.policy.key_rule_for(path).1)
            }
            KeyChoice::Unmatched if apply_key => {
                warn!(
                    "secfs: no key rule covers {}; access refused",
                    String::from_utf8_lossy(path)
                );
                return Err(Errno::EACCES);
            }
            KeyChoice::Unmatched => RuleKey::Default,
        };
        // Under clear_key the lower bytes are served as they are, with or
        // without the key: the plaintext view is those bytes.
        let view = if apply_key || key == RuleKey::Clear {
            View::Plain
        } else {
            View::Raw
        };
        let grant = Grant {
            view,
            key,
            generation: l.generation,
        };
        Ok((grant, Some(ident)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_travels_with_the_snapshot() {
        let p = |n: &str| {
            CompiledPolicy::from_json(&format!(
                r#"{{ "name": "{n}", "security_rules": [
                    {{ "order_number": 1, "action": "all_ops", "effect": "permit,applykey" }} ] }}"#
            ))
            .unwrap()
        };
        let a = Access::with_policy(b"/gp", p("one"), HostSettings::default(), None);
        let c = Caller {
            uid: 0,
            gid: 0,
            pid: std::process::id(),
        };
        let g = a.check(&c, b"/f", Action::FRd).unwrap();
        assert_eq!((g.generation, a.generation()), (1, 1));
        assert_eq!(a.load(p("two"), HostSettings::default()), 2);
        let g = a.check(&c, b"/f", Action::FRd).unwrap();
        assert_eq!(g.generation, 2);
        // pid 0 is judged (not waved through).
        let c0 = Caller { pid: 0, ..c };
        assert_eq!(a.check(&c0, b"/f", Action::FRd).unwrap().generation, 2);
    }

    #[test]
    fn clear_key_gives_the_plain_view_with_or_without_the_key() {
        let policy = CompiledPolicy::from_json(
            r#"{ "name": "c", "security_rules": [
                { "order_number": 1, "action": "read", "effect": "permit" } ],
              "key_rules": [ { "key_id": "clear_key" } ] }"#,
        )
        .unwrap();
        let a = Access::with_policy(b"/gp", policy, HostSettings::default(), None);
        let c = Caller {
            uid: 0,
            gid: 0,
            pid: std::process::id(),
        };
        let g = a.check(&c, b"/f", Action::FRd).unwrap();
        assert_eq!((g.view, g.key), (View::Plain, RuleKey::Clear));
        assert_eq!(a.rule_at(b"/f"), RuleKey::Clear);
    }

    #[test]
    fn missing_keys_are_named() {
        let policy = CompiledPolicy::from_json(
            r#"{ "name": "k", "security_rules": [
                { "order_number": 1, "action": "all_ops", "effect": "permit,applykey" } ],
              "key_rules": [ { "resource_set_id": "a", "key_id": "ka" }, { "key_id": "kb" } ],
              "resource_sets": [ { "id": "a", "resources": [ { "directory": "/a" } ] } ] }"#,
        )
        .unwrap();
        let keys = crate::stack::keys::StaticKeys::single(
            "ka",
            1,
            crate::stack::keys::PolicyKey::from_bytes([7; 32]),
        );
        assert_eq!(missing_keys(&policy, &keys), ["kb"]);
    }
}
