//! Who a calling process is: its executable, the executable's SHA-256
//! signature, its ancestry (for host settings) and its user and group
//! names, read from /proc.
//!
//! Everything is cached: identities per (pid, start time) so a reused pid
//! is a new process, and signatures per (device, inode, mtime, size) of the
//! binary so a replaced binary is hashed again.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};

use guardfs_policy::{Ancestor, HostSettings, ProcessTrust};

/// What the policy needs to know about a process.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `/proc/PID/exe`, or `None` if it cannot be read (kernel thread, gone).
    pub exe: Option<Vec<u8>>,
    pub sha256: Option<[u8; 32]>,
    pub trust: ProcessTrust,
    pub user_name: Option<String>,
    /// Primary then supplementary group names, as far as known.
    pub group_names: Vec<String>,
    /// Supplementary gids.
    pub groups: Vec<u32>,
    uid: u32,
    gid: u32,
}

/// Per-process facts read from /proc.
struct Proc {
    exe: Option<Vec<u8>>,
    ppid: u32,
    uid: u32,
    loginuid: Option<u32>,
}

fn read_proc(pid: u32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may contain spaces and ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|u| u.split_whitespace().nth(1))
        .and_then(|u| u.parse().ok())?;
    let loginuid = std::fs::read_to_string(format!("/proc/{pid}/loginuid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|&u| u != u32::MAX);
    Some(Proc {
        exe: exe_of(pid),
        ppid,
        uid,
        loginuid,
    })
}

fn exe_of(pid: u32) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStringExt;
    let mut p = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()?
        .into_os_string()
        .into_vec();
    if p.ends_with(b" (deleted)") {
        p.truncate(p.len() - b" (deleted)".len());
    }
    Some(p)
}

/// The start time of a process (field 22 of /proc/PID/stat), to tell a
/// reused pid from the process that had it before.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

type SigKey = (u64, u64, i64, i64, u64);

/// Caches of identities and signatures.
#[derive(Default)]
pub struct ProcCache {
    idents: Mutex<HashMap<(u32, u64), Arc<Identity>>>,
    sigs: Mutex<HashMap<SigKey, [u8; 32]>>,
    names: Mutex<HashMap<(bool, u32), Option<String>>>,
}

impl std::fmt::Debug for ProcCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProcCache")
    }
}

const MAX_CACHED: usize = 4096;

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
        // The same process may have exec'd another program or changed
        // credentials since it was cached: check what can change.
        let exe_now = exe_of(pid);
        if let Some(i) = self
            .idents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            && i.exe == exe_now
            && (i.uid, i.gid) == (uid, gid)
            && (i.sha256.is_some() || !want_sig || i.exe.is_none())
        {
            return i.clone();
        }
        let ident = Arc::new(self.build(pid, uid, gid, host, want_sig));
        let mut m = self.idents.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_CACHED {
            m.clear();
        }
        m.insert(key, ident.clone());
        ident
    }

    /// Forget cached identities (host settings changed).
    pub fn clear(&self) {
        self.idents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn build(&self, pid: u32, uid: u32, gid: u32, host: &HostSettings, want_sig: bool) -> Identity {
        // Ancestry, oldest first, as the host settings expect.
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
        chain.reverse();
        let exes: Vec<Vec<u8>> = chain
            .iter()
            .map(|c| c.exe.clone().unwrap_or_default())
            .collect();
        let ancestry: Vec<Ancestor<'_>> = chain
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let changed = i > 0 && {
                    let parent = &chain[i - 1];
                    parent.uid != c.uid || parent.loginuid != c.loginuid
                };
                Ancestor {
                    exe: &exes[i],
                    identity_changed: changed,
                }
            })
            .collect();
        let trust = host.classify(&ancestry);
        let exe = exe_of(pid);
        let sha256 = if want_sig { self.signature(pid) } else { None };
        let groups = groups_of(pid);
        let mut group_names = Vec::new();
        for g in std::iter::once(gid).chain(groups.iter().copied()) {
            if let Some(n) = self.name(false, g) {
                group_names.push(n);
            }
        }
        Identity {
            exe,
            sha256,
            trust,
            user_name: self.name(true, uid),
            group_names,
            groups,
            uid,
            gid,
        }
    }

    /// SHA-256 of the process's executable, cached per binary version.
    fn signature(&self, pid: u32) -> Option<[u8; 32]> {
        let path = format!("/proc/{pid}/exe");
        let m = std::fs::metadata(&path).ok()?;
        let key = (m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.size());
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
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
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
