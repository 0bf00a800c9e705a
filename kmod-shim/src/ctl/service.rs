//! The secfs service: one process serving every GuardPoint (one FUSE
//! session each) and the control node through which vmd drives it.
//!
//! Who may drive it: only a root process whose executable is the installed
//! vmd — the path given at start and the SHA-256 of that file as it was
//! then. Every refusal is logged and audited. Requests are decoded and
//! validated completely before anything changes; a sequence number that is
//! not above the last accepted one is a replay and is refused.

use crate::stack::procinfo::{BinaryVersion, binary_version};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use guardfs_crypto::{Mode, PolicyKey};
use guardfs_policy::{CompiledPolicy, HostSettings};
use log::{error, info, warn};

use crate::audit::Auditor;
use crate::ctl::proto::{self, Op, Request, SERVICE_INDEX, StatusEntry};
use crate::fuse::FuseOptions;
use crate::mount::{self, MountSpec};
use crate::stack::access::Access;
use crate::stack::keys::{NamedKeys, StaticKeys};
use crate::stack::{GuardConfig, Stack};
use crate::vfs::{Errno, Ino, VfsResult};

/// Who may send requests.
#[derive(Debug, Clone)]
pub struct Authority {
    pub vmd_path: PathBuf,
    pub vmd_sha256: [u8; 32],
}

impl Authority {
    /// Trust the vmd binary at `path` as it is now.
    pub fn of_binary(path: &Path) -> std::io::Result<Authority> {
        Ok(Authority {
            vmd_path: path.to_path_buf(),
            vmd_sha256: sha256_file(path)?,
        })
    }
}

fn sha256_file(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut f = std::fs::File::open(path)?;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(out)
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A GuardPoint served by this process.
struct Served {
    stack: Arc<Stack>,
    /// Removes the clones attached in other places (mount points, mount
    /// namespaces) at unguard.
    remove: Box<dyn Fn() + Send + Sync>,
    /// The FUSE mount's device ("major:minor").
    fuse_dev: String,
    mode: Mode,
    key: Option<String>,
    invalidate: Box<dyn Fn(Ino) + Send + Sync>,
}

/// Settings of the service.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// Root-only directory where vmd puts policy blobs, named by digest.
    pub blob_dir: PathBuf,
    pub threads: usize,
    pub writeback_cache: bool,
}

/// The service state.
pub struct Service {
    authority: Authority,
    opts: ServiceOptions,
    keys: Arc<StaticKeys>,
    /// Shared with each GuardPoint's session thread, which removes its
    /// entry when the session ends (unmounted behind the service's back).
    served: Arc<Mutex<BTreeMap<String, Served>>>,
    last_seq: AtomicU64,
    audit: Option<Auditor>,
    /// Identity (dev, ino, size, mtime, ctime) of the vmd binary as last
    /// verified by hash.
    verified: Mutex<Option<BinaryVersion>>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl Service {
    pub fn new(authority: Authority, opts: ServiceOptions, audit: Option<Auditor>) -> Service {
        Service {
            authority,
            opts,
            keys: Arc::new(StaticKeys::default()),
            served: Arc::new(Mutex::new(BTreeMap::new())),
            last_seq: AtomicU64::new(0),
            audit,
            verified: Mutex::new(None),
        }
    }

    fn refuse(&self, pid: u32, uid: u32, why: &str) -> Errno {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let line = format!(
            "CGP2650E: [SecFS, 0] [ALARM] control ioctl refused: pid={pid} uid={uid} exe={exe}: {why}"
        );
        warn!("secfs: {line}");
        if let Some(a) = &self.audit {
            a.record(line);
        }
        Errno::EPERM
    }

    /// Whether the caller is root running the installed vmd.
    fn authorize(&self, pid: u32, uid: u32) -> Result<(), Errno> {
        if uid != 0 {
            return Err(self.refuse(pid, uid, "caller is not root"));
        }
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        if exe.as_deref() != Some(self.authority.vmd_path.as_path()) {
            return Err(self.refuse(pid, uid, "caller is not the installed vmd"));
        }
        // Hashing the binary on every request would cost more than the
        // request: remember the file identity that last hashed right.
        let exe = Path::new(&format!("/proc/{pid}/exe")).to_path_buf();
        let id = binary_version(&exe);
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if id.is_some() && *verified == id {
            return Ok(());
        }
        match sha256_file(&exe) {
            Ok(d) if d == self.authority.vmd_sha256 => {
                *verified = id;
                Ok(())
            }
            _ => Err(self.refuse(pid, uid, "vmd binary signature does not match")),
        }
    }

    /// Handle one ioctl: returns the output bytes (status) or an errno.
    pub fn handle(&self, pid: u32, uid: u32, cmd: u32, input: &[u8]) -> VfsResult<Vec<u8>> {
        self.authorize(pid, uid)?;
        let op = Op::from_cmd(cmd).ok_or_else(|| {
            self.refuse(pid, uid, &format!("unknown command {cmd:#x}"));
            Errno::ENOTTY
        })?;
        let (req, seq) = Request::decode(op, input).map_err(|e| {
            self.refuse(pid, uid, &format!("malformed {op:?}: {e}"));
            Errno::EINVAL
        })?;
        let query = matches!(op, Op::Status | Op::FileInfo | Op::KeyAt);
        if !query && seq <= self.last_seq.load(Ordering::Acquire) {
            self.refuse(pid, uid, &format!("replayed request (seq {seq})"));
            return Err(Errno(libc::EPROTO));
        }
        let out = self.execute(&req, seq)?;
        if !query {
            self.last_seq.fetch_max(seq, Ordering::AcqRel);
            info!("secfs: control: {req:?} done");
        }
        Ok(out)
    }

    fn execute(&self, req: &Request, seq: u64) -> VfsResult<Vec<u8>> {
        match req {
            // A key of mode clear has no material: its name is recorded so
            // that key rules naming it serve files as they are.
            Request::PushKey {
                name,
                mode: Mode::Clear,
                ..
            } => {
                self.keys.insert_clear(name);
                Ok(Vec::new())
            }
            Request::PushKey {
                name,
                version,
                material,
                mode,
            } => {
                self.keys
                    .insert(name, *version, PolicyKey::from_bytes(*material), false);
                self.keys.set_mode(name, *mode);
                Ok(Vec::new())
            }
            Request::RevokeKey { name, version } => {
                if !self.keys.remove(name, *version) {
                    return Err(Errno::ENOENT);
                }
                // Files opened with the key version must not go on
                // decrypting from caches: write back and drop the caches
                // (dirty pages still encrypt with the file's data key),
                // forget the data keys, and drop what was read meanwhile.
                for s in self.lock().values() {
                    s.stack.invalidate_all(&*s.invalidate);
                    s.stack.forget_key(name, *version);
                    s.stack.invalidate_all(&*s.invalidate);
                }
                Ok(Vec::new())
            }
            Request::LoadPolicy { path, policy, host } => {
                let (compiled, settings) = self.load_blobs(policy, host.as_ref())?;
                let served = self.lock();
                let s = served.get(path).ok_or(Errno::ENOENT)?;
                let name = compiled.name().to_owned();
                // Loaded even when its key rules name keys not pushed yet
                // (host key locked, a key-manager key not fetched, a key of
                // mode clear, which has no material): keeping the previous
                // policy instead could keep access the new one withdraws.
                // Files under those key rules stay unreadable until the
                // key arrives. (`secfs mount` and SIGHUP, whose keys are
                // fixed files, refuse such a policy instead.)
                let generation = s
                    .stack
                    .switch_policy(compiled, settings, false, &*s.invalidate)
                    .map_err(|e| {
                        error!("secfs: {path}: {e}");
                        Errno::EINVAL
                    })?;
                info!("secfs: {path}: policy {name} loaded (generation {generation})");
                Ok(Vec::new())
            }
            Request::Guard {
                path,
                mode,
                key,
                policy,
                host,
            } => self.guard(path, *mode, key.clone(), policy.as_ref(), host.as_ref()),
            Request::Unguard { path, lazy } => self.unguard(path, *lazy),
            Request::Status { index } => self.status(*index, seq),
            Request::FileInfo { path } => self.file_info(path, req, seq),
            Request::KeyAt { index } => {
                let keys = self.keys.list();
                let (name, version) = keys.get(*index as usize).ok_or(Errno::ENOENT)?;
                proto::encode_key_at(req, seq, name, *version).map_err(|_| Errno::EINVAL)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Served>> {
        self.served.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Read policy (and host settings) blobs and check their digests.
    fn load_blobs(
        &self,
        policy: &[u8; 32],
        host: Option<&[u8; 32]>,
    ) -> VfsResult<(CompiledPolicy, HostSettings)> {
        let read = |d: &[u8; 32]| -> VfsResult<String> {
            let p = self.opts.blob_dir.join(hex(d));
            let bytes = std::fs::read(&p).map_err(|e| {
                error!("secfs: policy blob {}: {e}", p.display());
                Errno::ENOENT
            })?;
            let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
            ctx.update(&bytes);
            if ctx.finish().as_ref() != d {
                error!(
                    "secfs: policy blob {} does not match its digest",
                    p.display()
                );
                return Err(Errno(libc::EBADMSG));
            }
            String::from_utf8(bytes).map_err(|_| Errno::EINVAL)
        };
        let compiled = CompiledPolicy::from_json(&read(policy)?).map_err(|e| {
            error!("secfs: policy blob: {e}");
            Errno::EINVAL
        })?;
        let settings = match host {
            Some(h) => HostSettings::parse(&read(h)?).map_err(|e| {
                error!("secfs: host settings blob: {e}");
                Errno::EINVAL
            })?,
            None => HostSettings::default(),
        };
        Ok((compiled, settings))
    }

    fn guard(
        &self,
        path: &str,
        mode: Mode,
        key: Option<String>,
        policy: Option<&[u8; 32]>,
        host: Option<&[u8; 32]>,
    ) -> VfsResult<Vec<u8>> {
        if self.lock().contains_key(path) {
            return Err(Errno::EEXIST);
        }
        let access = match policy {
            Some(p) => {
                let (compiled, settings) = self.load_blobs(p, host)?;
                // Not refused here, unlike LoadPolicy: vmd guards while its
                // key store is locked and pushes the keys once unlocked;
                // until then files under those key rules stay unreadable.
                let keys = NamedKeys {
                    shared: self.keys.clone(),
                    name: key.clone(),
                };
                let missing = crate::stack::access::missing_keys(&compiled, &keys);
                if !missing.is_empty() {
                    warn!(
                        "secfs: guard {path}: policy {} names keys not supplied yet: {}",
                        compiled.name(),
                        missing.join(", ")
                    );
                }
                Access::with_policy(path.as_bytes(), compiled, settings, self.audit.clone())
            }
            None => Access::unrestricted_audited(path.as_bytes(), self.audit.clone()),
        };
        let spec = MountSpec {
            dir: PathBuf::from(path),
            guard: GuardConfig {
                mode,
                keys: Arc::new(NamedKeys {
                    shared: self.keys.clone(),
                    name: key.clone(),
                }),
                access: Arc::new(access),
                passthrough: mode == Mode::Clear,
            },
            fuse: FuseOptions {
                writeback_cache: self.opts.writeback_cache,
                passthrough: mode == Mode::Clear,
                ..FuseOptions::default()
            },
            threads: self.opts.threads,
            exclude: Vec::new(),
        };
        let errno = |e: mount::MountError| {
            error!("secfs: guard {path}: {e}");
            match e {
                mount::MountError::AlreadyMounted(_) => Errno::EEXIST,
                mount::MountError::BadDir { .. } => Errno::ENOENT,
                mount::MountError::Forbidden(_) => Errno::EPERM,
                mount::MountError::InUse { .. } => Errno(libc::EBUSY),
                mount::MountError::Unreachable { .. } => Errno(libc::EXDEV),
                _ => Errno::EIO,
            }
        };
        let mounted = mount::mount(&spec).map_err(errno)?;
        let stack = mounted.stack.clone();
        let invalidate = Box::new(mounted.invalidator());
        // Serving from here; refused (and rolled back) if a process holds
        // the lower directory or it stays reachable elsewhere.
        let mounted = mounted.start().map_err(errno)?;
        let p = path.to_owned();
        self.lock().insert(
            path.to_owned(),
            Served {
                stack: stack.clone(),
                remove: Box::new(mounted.remover()),
                fuse_dev: mounted.fuse_dev.clone(),
                mode,
                key,
                invalidate,
            },
        );
        let served = self.served.clone();
        let spawned = std::thread::Builder::new()
            .name("secfs-gp".into())
            .spawn(move || {
                if let Err(e) = mounted.wait() {
                    error!("secfs: {p}: session ended: {e}");
                }
                // Unmounted (by us or behind our back): no longer served,
                // so vmd sees it and guards it again if it should be.
                let mut m = served.lock().unwrap_or_else(|e| e.into_inner());
                if m.get(&p).is_some_and(|s| Arc::ptr_eq(&s.stack, &stack)) {
                    m.remove(&p);
                    warn!("secfs: {p}: no longer guarded (session ended)");
                }
            });
        if spawned.is_err() {
            if let Some(s) = self.lock().remove(path) {
                (s.remove)();
            }
            let _ = mount::unmount(Path::new(path), true);
            return Err(Errno::ENOMEM);
        }
        info!("secfs: guarded {path} ({mode})");
        Ok(Vec::new())
    }

    fn unguard(&self, path: &str, lazy: bool) -> VfsResult<Vec<u8>> {
        let fuse_dev = match self.lock().get(path) {
            Some(s) => s.fuse_dev.clone(),
            None => return Err(Errno::ENOENT),
        };
        // In use anywhere (also through a clone in another namespace)?
        if !lazy {
            let users =
                crate::reach::busy::users(&crate::reach::busy::Target::Device(&fuse_dev), &[]);
            if !users.is_empty() {
                warn!(
                    "secfs: unguard {path}: busy: in use by pid {}",
                    crate::reach::busy::describe(&users)
                );
                return Err(Errno(libc::EBUSY));
            }
        }
        match mount::unmount(Path::new(path), lazy) {
            Ok(()) => {}
            Err(mount::MountError::Busy(_)) => return Err(Errno(libc::EBUSY)),
            Err(mount::MountError::NotMounted(_)) => {}
            Err(e) => {
                error!("secfs: unguard {path}: {e}");
                return Err(Errno::EIO);
            }
        }
        // Then every other place it was attached to.
        if let Some(s) = self.lock().remove(path) {
            (s.remove)();
        }
        info!("secfs: unguarded {path}");
        Ok(Vec::new())
    }

    fn status(&self, index: u32, seq: u64) -> VfsResult<Vec<u8>> {
        let last_seq = self.last_seq.load(Ordering::Acquire);
        let served = self.lock();
        let entry = if index == SERVICE_INDEX {
            StatusEntry {
                index,
                state: 1,
                mode: Mode::Clear,
                generation: served.len() as u64,
                last_seq,
                keys: self.keys.count() as u32,
                path: String::new(),
                policy: String::new(),
            }
        } else {
            let (path, s) = served.iter().nth(index as usize).ok_or(Errno::ENOENT)?;
            StatusEntry {
                index,
                state: 1,
                mode: s.mode,
                generation: s.stack.access().generation(),
                last_seq,
                // Versions of the GuardPoint's key held: 0 = keys unavailable.
                keys: match &s.key {
                    Some(k) => self.keys.versions(k) as u32,
                    None => 1,
                },
                path: path.clone(),
                policy: s.stack.access().policy_name().unwrap_or_default(),
            }
        };
        entry.encode(seq).map_err(|_| Errno::EINVAL)
    }

    /// The lower header of the file at `path` inside a GuardPoint.
    fn file_info(&self, path: &str, req: &Request, seq: u64) -> VfsResult<Vec<u8>> {
        // Find the GuardPoint, then let go of the lock before any I/O.
        let (rel, stack) = {
            let served = self.lock();
            let (gp, s) = served
                .iter()
                .find(|(gp, _)| {
                    path.strip_prefix(gp.as_str())
                        .is_some_and(|r| r.starts_with('/'))
                })
                .ok_or(Errno::ENOENT)?;
            (path[gp.len() + 1..].to_owned(), s.stack.clone())
        };
        let header = stack.lower_header(&rel)?;
        let mut out = req.encode(seq).map_err(|_| Errno::EINVAL)?;
        let at = out.len() - header.len();
        out[at..].copy_from_slice(&header);
        Ok(out)
    }

    /// Unguard everything (lazily), at shutdown.
    pub fn unguard_all(&self) {
        let paths: Vec<String> = self.lock().keys().cloned().collect();
        for p in paths {
            let _ = self.unguard(&p, true);
        }
    }
}
