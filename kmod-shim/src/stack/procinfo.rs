//! Who a calling process is: its executable, the executable's SHA-256
//! signature, its ancestry (for host settings) and its user and group
//! names, read from /proc.
//!
//! Everything is cached: identities per (pid, start time) so a reused pid
//! is a new process, and signatures per (device, inode, size, mtime,
//! ctime) of the binary so a replaced or rewritten binary is hashed again
//! (a user can reset a file's mtime, never its ctime). A cached identity
//! is used only while the process still runs the same executable file
//! (path, device, inode and ctime) with the same uid and gid.
//!
//! # Trust through ancestry, and orphans
//!
//! Host settings judge a process by its ancestry (see
//! `guardfs_policy::HostSettings::classify`). The live ancestry in /proc
//! forgets a parent once it exits (its children are reparented to a
//! reaper), which would let a process escape `|path_no_trust|` by
//! orphaning itself. So:
//! * every identity built records the process's trust under its (pid,
//!   start time); a process inherits from the nearest live ancestor that
//!   has such a record (an untrusted ancestor makes it untrusted, an
//!   authenticated one authenticated unless an identity change below
//!   it ends that), and only the part of its ancestry below that ancestor
//!   is classified again;
//! * a process that was untrusted stays untrusted when it execs another
//!   program (same pid and start time);
//! * a process never seen before whose parent is a reaper (pid 1, or a
//!   process running the same executable as pid 1, such as `systemd
//!   --user`) and that belongs to a login session (its audit login uid is
//!   set, which `pam_loginuid` does at login and services started at boot
//!   never have) may be an orphan whose history is lost: it is never
//!   authenticated (fail closed). Services started by init are unaffected.
//!
//! * besides, while `|path_no_trust|` entries exist, secfs follows every
//!   exec of a listed program and every fork and exit on the host as the
//!   kernel reports them (module `events`), so a descendant of an
//!   untrusted process is untrusted even if it daemonised (`setsid -f`,
//!   double fork) before secfs ever saw it or its ancestors.
//!
//! Not covered without those kernel events (fanotify permission events
//! and the proc connector; secfs logs when it cannot have them): an
//! orphan of a process secfs never saw, outside any login session (a
//! boot-time service that runs an untrusted program which double-forks),
//! looks like a service; and records are forgotten when the cache is full
//! of live processes.
//!
//! # The file a process runs, not the name it shows
//!
//! The path text of `/proc/PID/exe` is the name the kernel gives the file
//! in the *process's* mount namespace: a user who bind-mounts a program of
//! their own over `/usr/bin/trusted` in a private mount namespace (`unshare
//! -Urm`) shows `/usr/bin/trusted` there. So the path is believed only when
//! it is *verified*: `stat` of `/proc/PID/exe` (which follows the magic
//! link to the file actually executed) gives the same device and inode as
//! `stat` of the path text in secfs's own mount namespace, and the link
//! does not end in ` (deleted)` (the binary was removed or replaced since
//! the process started). An [`Identity`]'s `exe` is that verified path or
//! `None`; `None` matches no process-set entry with a directory or file,
//! and an unverified ancestor matches no `|trust|` or `|authenticator|`
//! entry (it still matches `|path_no_trust|`, which only restricts).
//! Process-set signatures are hashed from the executed file itself
//! (`/proc/PID/exe`), so they need no path. Verification is repeated on
//! every decision (one more `stat`), so a cached identity is never trusted
//! after its path starts naming another file.
//!
//! # Signs of injected code (`|no_applykey|`)
//!
//! With `|no_applykey|traced` the `TracerPid` of every thread of the
//! calling process is read on every decision (a tracer can attach at any
//! time); with `|no_applykey|ld_env` its environment
//! (`/proc/PID/environ`) is read on every decision too (a process can exec
//! itself with a new environment, keeping its pid and executable). Without
//! those settings neither is read.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use guardfs_policy::{Ancestor, HostSettings, ProcessTrust, Taint};

mod events;

/// The identity of an executable file: device, inode and change time
/// (sec, nsec). A binary rewritten in place has a new ctime.
type ExeId = (u64, u64, i64, i64);

/// What the policy needs to know about a process.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The path of the executable, only if verified (see the module doc):
    /// `None` if `/proc/PID/exe` cannot be read (kernel thread, gone), was
    /// deleted or replaced, or names another file in secfs's mount
    /// namespace than the one the process runs.
    pub exe: Option<Vec<u8>>,
    pub sha256: Option<[u8; 32]>,
    pub trust: ProcessTrust,
    /// Signs of injected code, read only when the host settings use them
    /// (`|no_applykey|`); otherwise all false.
    pub taint: Taint,
    /// `/proc/PID/exe`'s text (without ` (deleted)`), verified or not.
    claimed_exe: Option<Vec<u8>>,
    /// What audit lines show: the verified path, or the claimed one
    /// followed by ` (unverified)`.
    shown_exe: Option<Vec<u8>>,
    pub user_name: Option<String>,
    /// Primary then supplementary group names, as far as known.
    pub group_names: Vec<String>,
    /// Supplementary gids.
    pub groups: Vec<u32>,
    exe_id: Option<ExeId>,
    uid: u32,
    gid: u32,
    /// The process this was judged for: pid and start time (0: unknown).
    pid: u32,
    start: u64,
}

/// Per-process facts read from /proc.
struct Proc {
    pid: u32,
    /// Its thread-group id (`pid` may be a thread's id).
    tgid: u32,
    start: u64,
    /// The claimed executable path (see [`Exe`]).
    exe: Option<Vec<u8>>,
    verified: bool,
    exe_id: Option<ExeId>,
    ppid: u32,
    uid: u32,
    loginuid: Option<u32>,
}

/// `/proc/PID/stat` fields after the command name (which may contain
/// spaces and ')').
fn stat_fields(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat.get(stat.rfind(')')? + 2..)?.to_owned())
}

fn read_proc(pid: u32) -> Option<Proc> {
    let rest = stat_fields(pid)?;
    let mut f = rest.split_whitespace();
    let ppid = f.nth(1)?.parse().ok()?;
    let start = f.nth(17)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let tgid = status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(pid);
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|u| u.split_whitespace().nth(1))
        .and_then(|u| u.parse().ok())?;
    let exe = exe_facts(pid);
    Some(Proc {
        pid,
        tgid,
        start,
        exe: exe.claimed,
        verified: exe.verified,
        exe_id: exe.id,
        ppid,
        uid,
        loginuid: loginuid_of(pid),
    })
}

fn loginuid_of(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/loginuid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|&u| u != u32::MAX)
}

/// What a process runs, as far as secfs can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Exe {
    /// `/proc/PID/exe`'s text, without a ` (deleted)` suffix: the name of
    /// the file in the process's own mount namespace.
    claimed: Option<Vec<u8>>,
    /// The executed file (`stat` through the magic link).
    id: Option<ExeId>,
    /// Whether `claimed` names that very file in secfs's mount namespace
    /// (same device and inode) and it was not deleted.
    verified: bool,
}

fn exe_facts(pid: u32) -> Exe {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let link = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.into_os_string().into_vec());
    let id = exe_id_of(pid);
    let Some(mut claimed) = link else {
        return Exe {
            claimed: None,
            id,
            verified: false,
        };
    };
    let deleted = claimed.ends_with(b" (deleted)");
    if deleted {
        claimed.truncate(claimed.len() - b" (deleted)".len());
    }
    // Resolved here, in secfs's mount namespace. A race with an exec in
    // between the two reads of /proc/PID/exe gives a mismatch (never a
    // false match): the path of one file and the inode of another.
    let verified = !deleted
        && claimed.first() == Some(&b'/')
        && id.is_some_and(|(dev, ino, ..)| {
            std::fs::metadata(std::ffi::OsStr::from_bytes(&claimed))
                .is_ok_and(|m| (m.dev(), m.ino()) == (dev, ino))
        });
    Exe {
        claimed: Some(claimed),
        id,
        verified,
    }
}

/// The claimed executable path of `pid` (see [`Exe::claimed`]).
#[cfg(test)]
fn exe_of(pid: u32) -> Option<Vec<u8>> {
    exe_facts(pid).claimed
}

/// Signs of injected code in `pid` that `host` asks about.
fn taint_of(pid: u32, host: &HostSettings) -> Taint {
    let want = host.no_applykey_conditions();
    Taint {
        traced: want.traced && is_traced(pid),
        ld_env: want.ld_env && has_ld_env(pid),
    }
}

/// Whether any thread of `pid`'s thread group is traced. `pid` may be a
/// thread id (FUSE reports the calling thread); a tracer attached to any
/// thread can read and write the memory they all share. An unreadable
/// status counts as traced (fail closed) while the process exists.
fn is_traced(pid: u32) -> bool {
    let field = |status: &str, name: &str| -> Option<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return std::path::Path::new(&format!("/proc/{pid}")).exists();
    };
    if field(&status, "TracerPid:") != Some(0) {
        return true;
    }
    let tgid = field(&status, "Tgid:").unwrap_or(pid);
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{tgid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        std::fs::read_to_string(t.path().join("status"))
            .ok()
            .is_some_and(|s| field(&s, "TracerPid:").is_some_and(|t| t != 0))
    })
}

/// Whether `pid`'s environment names `LD_PRELOAD`, `LD_LIBRARY_PATH` or
/// `LD_AUDIT` (read as root; unreadable counts as yes while the process
/// exists).
fn has_ld_env(pid: u32) -> bool {
    match std::fs::read(format!("/proc/{pid}/environ")) {
        Ok(env) => Taint::env_has_ld_vars(&env),
        Err(_) => std::path::Path::new(&format!("/proc/{pid}")).exists(),
    }
}

fn exe_id_of(pid: u32) -> Option<ExeId> {
    let m = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
    Some((m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
}

/// The start time of a process (field 22 of /proc/PID/stat), to tell a
/// reused pid from the process that had it before.
fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.split_whitespace().nth(19)?.parse().ok()
}

/// Signature cache key: device, inode, size, mtime and ctime (sec, nsec).
/// The ctime changes with any write or metadata change and cannot be set
/// back by the file's owner, unlike the mtime.
pub type BinaryVersion = (u64, u64, u64, i64, i64, i64, i64);

/// The version of the file `path` (following a final symlink such as
/// `/proc/PID/exe`) for caching what was computed from its contents.
pub fn binary_version(path: &std::path::Path) -> Option<BinaryVersion> {
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ))
}

/// Caches of identities and signatures.
#[derive(Default)]
pub struct ProcCache {
    idents: Mutex<HashMap<(u32, u64), Arc<Identity>>>,
    /// Table size at which the next sweep runs (at least `MAX_CACHED`).
    sweep_at: AtomicUsize,
    sigs: Mutex<HashMap<BinaryVersion, [u8; 32]>>,
    names: Mutex<HashMap<(bool, u32), Option<String>>>,
    /// `|path_no_trust|` marks from kernel process events.
    events: events::ProcEvents,
}

impl std::fmt::Debug for ProcCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProcCache")
    }
}

const MAX_CACHED: usize = 4096;

impl Identity {
    /// The executable as audit lines show it: the verified path, or the
    /// path the process claims followed by ` (unverified)` (a bind mount
    /// in another mount namespace, a deleted or replaced binary).
    pub fn audit_exe(&self) -> Option<&[u8]> {
        self.shown_exe.as_deref()
    }

    /// The start time of the process this was judged for (0: unknown).
    pub fn start(&self) -> u64 {
        self.start
    }
}

impl ProcCache {
    /// The identity of `pid` as seen with `host` settings; `uid`/`gid`
    /// come from the request.
    pub fn identity(
        &self,
        pid: u32,
        uid: u32,
        gid: u32,
        host: &HostSettings,
        want_sig: bool,
    ) -> Arc<Identity> {
        let key = (pid, start_time(pid).unwrap_or(0));
        // The same process may have exec'd another program, its binary
        // may have been rewritten or replaced, its path may name another
        // file now, a tracer may have attached, or it changed credentials
        // since it was cached: check what can change.
        let exe_now = exe_facts(pid);
        let taint_now = taint_of(pid, host);
        let prior = self
            .idents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        if let Some(i) = &prior
            && i.claimed_exe == exe_now.claimed
            && i.exe_id == exe_now.id
            && i.exe.is_some() == exe_now.verified
            && i.taint == taint_now
            && (i.uid, i.gid) == (uid, gid)
            && (i.sha256.is_some() || !want_sig || i.claimed_exe.is_none())
        {
            return i.clone();
        }
        let ident = Arc::new(self.build(
            key,
            uid,
            gid,
            host,
            want_sig,
            prior.as_deref(),
            (exe_now, taint_now),
        ));
        let mut m = self.idents.lock().unwrap_or_else(|e| e.into_inner());
        let sweep_at = self.sweep_at.load(Ordering::Relaxed).max(MAX_CACHED);
        if m.len() >= sweep_at {
            // Keep the records of live processes (their descendants may
            // inherit from them). If most are live, keep only the untrusted
            // marks, which are what orphans must not lose and are never
            // dropped while their process lives; the rest are judged again
            // from /proc when next seen. The next sweep waits until the
            // table has doubled, so sweeps (one /proc read per record) stay
            // rare however many marks are kept.
            m.retain(|&(p, start), _| start_time(p) == Some(start));
            if m.len() > MAX_CACHED * 3 / 4 {
                m.retain(|_, i| i.trust == ProcessTrust::Untrusted);
            }
            self.sweep_at
                .store((m.len() * 2).max(MAX_CACHED), Ordering::Relaxed);
        }
        m.insert(key, ident.clone());
        ident
    }

    /// Whether `pid` is still the process `ident` was judged for.
    pub fn is_alive(&self, pid: u32, ident: &Identity) -> bool {
        ident.pid == pid && ident.start != 0 && start_time(pid) == Some(ident.start)
    }

    /// An unknown process (a request the kernel made with pid 0): no
    /// executable, not authenticated.
    pub fn unknown(&self, uid: u32, gid: u32) -> Arc<Identity> {
        Arc::new(Identity {
            exe: None,
            sha256: None,
            trust: ProcessTrust::NotAuthenticated,
            taint: Taint::default(),
            claimed_exe: None,
            shown_exe: None,
            user_name: self.name(true, uid),
            group_names: self.name(false, gid).into_iter().collect(),
            groups: Vec::new(),
            exe_id: None,
            uid,
            gid,
            pid: 0,
            start: 0,
        })
    }

    /// Follow the `|path_no_trust|` programs of `host` from now on (also
    /// done when an identity is built).
    pub fn follow(&self, host: &HostSettings) {
        self.events.sync(host);
    }

    /// Forget cached identities (host settings changed).
    pub fn clear(&self) {
        self.idents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The trust of the process `chain[0]`, whose ancestors follow it in
    /// `chain` (nearest first); `prior` is what was recorded for the same
    /// process before (it exec'd or changed credentials since).
    fn trust(&self, chain: &[Proc], host: &HostSettings, prior: Option<&Identity>) -> ProcessTrust {
        // The nearest live ancestor with a record that still describes it.
        // An untrusted or not-authenticated record is always inherited (it
        // only restricts); an authenticated one only while the ancestor
        // runs the same binary with the same uid as when it was judged:
        // after an exec (of a `path_no_trust` shell, say) or an in-place
        // uid change, the ancestor is classified again from its ancestry.
        let (cut, inherited) = {
            let idents = self.idents.lock().unwrap_or_else(|e| e.into_inner());
            chain
                .iter()
                .enumerate()
                .skip(1)
                .find_map(|(k, p)| {
                    let i = idents.get(&(p.pid, p.start))?;
                    let current = i.claimed_exe == p.exe
                        && i.exe.is_some() == p.verified
                        && i.uid == p.uid
                        && i.exe_id == p.exe_id;
                    (i.trust != ProcessTrust::Authenticated || current)
                        .then_some((k, Some(i.trust)))
                })
                .unwrap_or((chain.len(), None))
        };
        // The part below it, oldest first, as the host settings expect.
        let below = &chain[..cut];
        let exes: Vec<&[u8]> = below
            .iter()
            .map(|c| c.exe.as_deref().unwrap_or_default())
            .collect();
        let ancestry: Vec<Ancestor<'_>> = below
            .iter()
            .enumerate()
            .rev()
            .map(|(k, c)| Ancestor {
                exe: exes[k],
                verified: c.verified,
                // A change relative to a reaper (an orphan adopted by init
                // or a subreaper) was not made by its parent: it never
                // counts as an authenticator's identity change.
                identity_changed: chain.get(k + 1).is_some_and(|parent| {
                    (parent.uid != c.uid || parent.loginuid != c.loginuid)
                        && !is_reaper(Some(parent))
                }),
            })
            .collect();
        let mut trust = host.classify_from(inherited, &ancestry);
        if prior.is_some_and(|p| p.trust == ProcessTrust::Untrusted)
            || chain
                .first()
                .is_some_and(|me| self.events.untrusted(me.tgid))
        {
            trust = ProcessTrust::Untrusted;
        }
        if trust == ProcessTrust::Authenticated
            && inherited.is_none()
            && prior.is_none()
            && let Some(me) = chain.first()
            && me.loginuid.is_some()
            && is_reaper(chain.get(1))
        {
            // Possibly an orphan whose ancestry is lost: fail closed.
            trust = ProcessTrust::NotAuthenticated;
        }
        trust
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        &self,
        (pid, start): (u32, u64),
        uid: u32,
        gid: u32,
        host: &HostSettings,
        want_sig: bool,
        prior: Option<&Identity>,
        (exe, taint): (Exe, Taint),
    ) -> Identity {
        self.events.sync(host);
        // Ancestry, nearest first.
        let mut chain = Vec::new();
        let mut p = pid;
        for _ in 0..256 {
            let Some(info) = read_proc(p) else { break };
            let next = info.ppid;
            chain.push(info);
            if next == 0 || p == 1 {
                break;
            }
            p = next;
        }
        let trust = self.trust(&chain, host, prior);
        let sha256 = if want_sig { self.signature(pid) } else { None };
        let groups = groups_of(pid);
        let mut group_names = Vec::new();
        for g in std::iter::once(gid).chain(groups.iter().copied()) {
            if let Some(n) = self.name(false, g) {
                group_names.push(n);
            }
        }
        Identity {
            exe: exe.claimed.clone().filter(|_| exe.verified),
            sha256,
            trust,
            taint,
            shown_exe: exe.claimed.as_ref().map(|c| {
                if exe.verified {
                    c.clone()
                } else {
                    [&c[..], b" (unverified)"].concat()
                }
            }),
            claimed_exe: exe.claimed,
            user_name: self.name(true, uid),
            group_names,
            groups,
            exe_id: exe.id,
            uid,
            gid,
            pid,
            start,
        }
    }

    /// SHA-256 of the process's executable, cached per binary version.
    fn signature(&self, pid: u32) -> Option<[u8; 32]> {
        let path = format!("/proc/{pid}/exe");
        let key = binary_version(std::path::Path::new(&path))?;
        if let Some(s) = self
            .sigs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Some(*s);
        }
        let mut f = std::fs::File::open(&path).ok()?;
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f.read(&mut buf).ok()?;
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
        }
        // Hashed while being rewritten: do not cache a torn hash under
        // the new version's key.
        let after = std::fs::metadata(&path).ok()?;
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        if (after.ctime(), after.ctime_nsec()) != (key.5, key.6) {
            return Some(out);
        }
        let mut sigs = self.sigs.lock().unwrap_or_else(|e| e.into_inner());
        if sigs.len() >= MAX_CACHED {
            sigs.clear();
        }
        sigs.insert(key, out);
        Some(out)
    }

    fn name(&self, user: bool, id: u32) -> Option<String> {
        if let Some(n) = self
            .names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(user, id))
        {
            return n.clone();
        }
        let n = if user {
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(id))
                .ok()
                .flatten()
                .map(|u| u.name)
        } else {
            nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(id))
                .ok()
                .flatten()
                .map(|g| g.name)
        };
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((user, id), n.clone());
        n
    }
}

/// Supplementary groups of a process, from /proc. Empty if it is gone.
pub fn groups_of(pid: u32) -> Vec<u32> {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    s.lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `parent` is a reaper that adopts orphans: pid 1, or a process
/// running pid 1's executable file (`systemd --user`, a child subreaper;
/// compared by device and inode, not by a path a namespace can fake). An
/// unknown parent counts as one.
fn is_reaper(parent: Option<&Proc>) -> bool {
    let Some(p) = parent else { return true };
    let file = |id: Option<ExeId>| id.map(|(dev, ino, ..)| (dev, ino));
    p.pid == 1 || (p.exe_id.is_some() && file(p.exe_id) == file(exe_id_of(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Run a freshly written binary. Another test thread may be forking at
    /// the moment the copy is still open for writing, and the child then
    /// holds that fd until it execs: ETXTBSY for a moment, so retry.
    fn spawn_fresh(bin: &std::path::Path, arg: &str) -> std::process::Child {
        for _ in 0..100 {
            match std::process::Command::new(bin).arg(arg).spawn() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                r => return r.unwrap(),
            }
        }
        panic!("{}: text file busy for 2 s", bin.display());
    }

    #[test]
    fn signature_follows_in_place_rewrites_with_reset_mtime() {
        // A copy of a binary, run, then rewritten in place with the same
        // size and its mtime put back: the cached hash must not be reused.
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("sleeper");
        std::fs::copy("/bin/sleep", &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cache = ProcCache::default();
        let mut child = spawn_fresh(&bin, "5");
        let first = cache.signature(child.id()).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        let m = std::fs::metadata(&bin).unwrap();
        let mtime = m.modified().unwrap();
        let mut bytes = std::fs::read(&bin).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&bin, &bytes).unwrap();
        let f = std::fs::File::options().write(true).open(&bin).unwrap();
        f.set_modified(mtime).unwrap();
        drop(f);
        assert_eq!(std::fs::metadata(&bin).unwrap().modified().unwrap(), mtime);
        let mut child = spawn_fresh(&bin, "5");
        let second = cache.signature(child.id()).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert_ne!(first, second, "a rewritten binary is hashed again");
    }

    #[test]
    fn exec_of_an_untrusted_program_is_not_hidden_by_the_record_before() {
        // P is judged (authenticated) while it runs goodsh, then execs a
        // |path_no_trust| shell and forks: the child is untrusted.
        let dir = tempfile::tempdir().unwrap();
        let (good, bad) = (dir.path().join("goodsh"), dir.path().join("badsh"));
        for to in [&good, &bad] {
            // Copied by cp(1): no writable fd of ours for a forking test
            // thread to inherit (ETXTBSY).
            let st = std::process::Command::new("cp")
                .arg("/bin/dash")
                .arg(to)
                .status()
                .unwrap();
            assert!(st.success());
        }
        let host =
            HostSettings::parse(&format!("|path_no_trust|{}\n|trust|*", bad.display())).unwrap();
        let cache = ProcCache::default();
        let trigger = dir.path().join("go");
        let script = format!(
            "while [ ! -e {} ]; do sleep 0.05; done; exec {} -c 'sleep 5 & wait'",
            trigger.display(),
            bad.display()
        );
        let mut p = std::process::Command::new(&good)
            .arg("-c")
            .arg(&script)
            .spawn()
            .unwrap();
        let ip = cache.identity(p.id(), 0, 0, &host, false);
        assert_eq!(ip.trust, ProcessTrust::Authenticated);
        std::fs::write(&trigger, b"").unwrap();
        let kids = format!("/proc/{0}/task/{0}/children", p.id());
        let mut child = None;
        let bad_exe = bad.as_os_str().as_encoded_bytes().to_vec();
        for _ in 0..200 {
            // Only once P runs badsh: goodsh's own `sleep 0.05` children
            // would rightly inherit its record.
            if exe_of(p.id()).as_ref() != Some(&bad_exe) {
                std::thread::sleep(std::time::Duration::from_millis(25));
                continue;
            }
            let k = std::fs::read_to_string(&kids).unwrap_or_default();
            if let Some(c) = k.split_whitespace().next() {
                child = c.parse::<u32>().ok();
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        let c = child.expect("badsh forked");
        let ic = cache.identity(c, 0, 0, &host, false);
        p.kill().unwrap();
        p.wait().unwrap();
        assert_eq!(ic.trust, ProcessTrust::Untrusted);
    }

    #[test]
    fn untrusted_parents_mark_survives_orphaning() {
        // The cached record of a parent is inherited by its children even
        // when the live chain above the parent is gone.
        let host = HostSettings::parse("|path_no_trust|/nonexistent/ksh\n|trust|*").unwrap();
        let cache = ProcCache::default();
        let me = std::process::id();
        let start = start_time(me).unwrap();
        let ident = cache.identity(me, 0, 0, &host, false);
        assert_eq!(ident.trust, ProcessTrust::Authenticated);
        // Pretend this process was judged untrusted (as if it had run ksh).
        cache.idents.lock().unwrap().insert(
            (me, start),
            Arc::new(Identity {
                trust: ProcessTrust::Untrusted,
                ..(*ident).clone()
            }),
        );
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let c = cache.identity(child.id(), 0, 0, &host, false);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(c.trust, ProcessTrust::Untrusted);
    }
}
