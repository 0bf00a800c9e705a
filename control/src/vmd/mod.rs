//! vmd: the agent's control daemon on one host. It owns the persistent
//! state ([`crate::state`]), unlocks the host key, keeps the secfs service
//! running and in step (keys, policies, GuardPoints pushed over the ioctl
//! channel), retries GuardPoints that are busy, and answers the admin
//! commands on its local socket ([`server`]).
//!
//! Key material lives only in this process's memory (locked, not dumpable)
//! and in secfs; it never appears in a reply, a log line or a file outside
//! `.sec/`.

pub mod busy;
pub mod keys;
mod kmrules;
mod kmsync;
pub mod secfs;
pub mod server;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use guardfs_crypto::Mode;
use guardfs_shim::ctl::client::ClientError;
use guardfs_shim::ctl::proto::{Request as Ctl, SERVICE_INDEX, StatusEntry};
use log::{error, info, warn};
use serde_json::{Value, json};

use crate::api::{Reply, Request};
use crate::state::{
    AgentConf, GpType, GuardPoints, HostKey, HostKeyStore, Layout, PolicyStore, Protection,
    StateError, Unlock,
};
use keys::{KeySource, LocalKeys};
use secfs::{Liveness, SecfsProcess};

/// `voradmin secfs config` parameters: name, check, secfs argument.
const SECFS_PARAMS: &[(&str, &str)] = &[
    (
        "pagecache_writeback",
        "0 or 1: the kernel writeback cache on GuardPoints (default 1)",
    ),
    (
        "threads",
        "1..64: FUSE worker threads per GuardPoint (default: CPUs)",
    ),
    (
        "concise_logging",
        "0 or 1: log the first read/write per (user, process, file) per minute (default 0)",
    ),
];

/// What vmd knows about one registered GuardPoint beyond the registry.
#[derive(Debug, Clone, Default)]
struct GpRuntime {
    /// Config state: whether it should be guarded now.
    wanted: bool,
    /// Why it is not guarded, when wanted and not guarded.
    reason: Option<String>,
    retries: u64,
    attempt: Option<SystemTime>,
}

/// The daemon's state.
pub struct Agent {
    pub layout: Layout,
    conf: AgentConf,
    hostkeys: HostKeyStore,
    host_key: Option<HostKey>,
    /// The key source; `None` while the host key is locked.
    keys: Option<Box<dyn KeySource>>,
    policies: PolicyStore,
    gps: GuardPoints,
    runtime: BTreeMap<String, GpRuntime>,
    secfs: SecfsProcess,
    started: SystemTime,
    /// Registration with a key manager, when this host is registered.
    km: Option<kmsync::KmState>,
    /// Set by a shutdown request.
    pub stopping: bool,
    /// A running secfs was adopted: revoke there what vmd no longer holds.
    reconcile_keys: bool,
    /// `voradmin rule apply` runs started for the key manager's rules:
    /// rule, operation, process.
    rule_jobs: Vec<(String, String, std::process::Child)>,
    /// When each rule's pending operation was last started.
    rule_tries: BTreeMap<String, std::time::Instant>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("root", &self.layout.root)
            .finish_non_exhaustive()
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn now_text(t: Option<SystemTime>) -> String {
    let Some(t) = t else {
        return "0-00-00 00:00:00".into();
    };
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (y, mo, d, h, mi, sec) = guardfs_shim::audit::civil_utc(secs);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{sec:02}")
}

fn sha256_hex(b: &[u8]) -> ([u8; 32], String) {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    (out, hex::encode(out))
}

impl Agent {
    /// Load the state under `layout` and unlock the host key if it needs
    /// no password. `secfs_bin` and `vmd_bin` are the installed binaries.
    pub fn open(layout: Layout, secfs_bin: PathBuf, vmd_bin: PathBuf) -> Result<Agent, String> {
        layout.create_dirs().map_err(err)?;
        let conf = AgentConf::load(&layout.agent_conf()).map_err(err)?;
        let hostkeys = HostKeyStore::new(&layout.sec);
        let policies = PolicyStore::new(&layout.etc);
        let gps = GuardPoints::load(&layout.guardpoints()).map_err(err)?;
        let mut secfs = SecfsProcess::new(&layout, secfs_bin, vmd_bin);
        secfs.extra_args = secfs_args(&conf);
        let mut agent = Agent {
            layout,
            conf,
            hostkeys,
            host_key: None,
            keys: None,
            policies,
            gps,
            runtime: BTreeMap::new(),
            secfs,
            started: SystemTime::now(),
            km: None,
            stopping: false,
            reconcile_keys: false,
            rule_jobs: Vec::new(),
            rule_tries: BTreeMap::new(),
        };
        agent.km = kmsync::KmState::load(&agent.layout, &agent.conf)?;
        match agent.hostkeys.init_or_load_auto().map_err(err)? {
            Unlock::Ready(k) => agent.unlock(k)?,
            Unlock::NeedsPassword => {
                warn!(
                    "vmd: the host key is password protected; keys are unavailable until `vmsec passwd`"
                )
            }
        }
        for gp in agent.gps.list() {
            let wanted = gp.gp_type == GpType::Auto;
            agent.runtime.insert(
                gp.path.clone(),
                GpRuntime {
                    wanted,
                    ..GpRuntime::default()
                },
            );
        }
        Ok(agent)
    }

    fn unlock(&mut self, key: HostKey) -> Result<(), String> {
        self.keys = match &self.km {
            None => Some(Box::new(LocalKeys::open(self.layout.keys(), key.clone())?)),
            Some(km) => km.key_source(&self.layout, &key)?,
        };
        self.host_key = Some(key);
        Ok(())
    }

    /// One round of supervision: secfs alive (restart and resync if not),
    /// wanted GuardPoints guarded (retrying busy ones).
    pub fn tick(&mut self) {
        if self.stopping {
            return;
        }
        match self.secfs.ensure() {
            Ok(Liveness::Alive) => {}
            Ok(Liveness::Adopted) => {
                info!(
                    "vmd: found the running secfs service (pid {:?})",
                    self.secfs.pid()
                );
                self.adopt();
                self.reconcile_keys = true;
                self.push_all_keys();
            }
            Ok(Liveness::Started) => self.push_all_keys(),
            Err(e) => {
                error!("vmd: {e}");
                return;
            }
        }
        self.km_poll();
        // After adopting a running secfs: once vmd knows which keys it
        // should hold (at once locally; after a complete sync with the key
        // manager, since non-persistent keys are fetched again first).
        let synced = self.km.as_ref().is_none_or(|k| k.synced());
        if self.reconcile_keys && self.keys.is_some() && synced {
            self.reconcile_keys = false;
            self.revoke_unknown_keys();
        }
        let Ok(served) = self.served_checked() else {
            return;
        };
        let todo: Vec<String> = self
            .runtime
            .iter()
            .filter(|(p, r)| r.wanted && !served.contains_key(*p))
            .map(|(p, _)| p.clone())
            .collect();
        for path in todo {
            if let Err(e) = self.try_guard(&path) {
                warn!("vmd: {path}: not guarded: {e}");
            }
        }
    }

    /// vmd restarted while secfs kept running: what secfs serves stays
    /// guarded (config state guarded), whatever its type.
    fn adopt(&mut self) {
        for path in self.served().into_keys() {
            if let Some(r) = self.runtime.get_mut(&path) {
                r.wanted = true;
            }
        }
    }

    /// After vmd restarted and found secfs running: key versions secfs
    /// holds that vmd's key source no longer has (revoked at the key
    /// manager while vmd was down) are revoked in secfs too. Nothing is
    /// done while the host key is locked (vmd cannot tell).
    fn revoke_unknown_keys(&mut self) {
        let Some(source) = &self.keys else { return };
        let held: std::collections::BTreeSet<(String, u32)> =
            source.held_versions().into_iter().collect();
        let Some(c) = self.secfs.client() else { return };
        let in_secfs = match c.keys() {
            Ok(k) => k,
            Err(e) => {
                warn!("vmd: listing the keys secfs holds: {e}");
                return;
            }
        };
        for (name, version) in in_secfs.into_iter().filter(|k| !held.contains(k)) {
            match self.ctl(&Ctl::RevokeKey {
                name: name.clone(),
                version,
            }) {
                Ok(_) => {
                    info!("vmd: key {name} v{version} is no longer held by vmd; revoked in secfs")
                }
                Err(e) => warn!("vmd: revoking key {name} v{version} in secfs: {e}"),
            }
        }
    }

    /// What secfs serves now, by path; an error when secfs cannot say
    /// (callers that change the registry must not act on a guess).
    fn served_checked(&mut self) -> Result<BTreeMap<String, StatusEntry>, String> {
        let Some(c) = self.secfs.client() else {
            return Err("the secfs service is not connected".into());
        };
        match c.list() {
            Ok(l) => Ok(l.into_iter().map(|e| (e.path.clone(), e)).collect()),
            Err(e) => {
                if secfs::is_dead(&e) {
                    self.secfs.disconnect();
                }
                Err(format!("secfs status: {e}"))
            }
        }
    }

    /// What secfs serves now, by path (empty when it cannot say).
    fn served(&mut self) -> BTreeMap<String, StatusEntry> {
        self.served_checked().unwrap_or_default()
    }

    fn ctl(&mut self, req: &Ctl) -> Result<Vec<u8>, ClientError> {
        let Some(c) = self.secfs.client() else {
            return Err(ClientError::Refused {
                op: req.op(),
                errno: guardfs_shim::vfs::Errno(nix::errno::Errno::ENOTCONN as i32),
            });
        };
        let r = c.send(req);
        if let Err(e) = &r
            && secfs::is_dead(e)
        {
            self.secfs.disconnect();
        }
        r
    }

    fn push_key(&mut self, name: &str, version: u32) -> Result<(), String> {
        let Some(store) = &self.keys else {
            return Err("keys are unavailable (host key locked)".into());
        };
        let info = store.get(name).ok_or_else(|| format!("no key {name:?}"))?;
        // A key of mode clear has no material: secfs only learns that key
        // rules naming it store and serve files as they are.
        let req = if info.mode == Mode::Clear {
            Ctl::PushKey {
                name: name.to_owned(),
                version,
                mode: Mode::Clear,
                material: [0; 32],
            }
        } else {
            let material = store.material(name, version).map_err(err)?;
            Ctl::PushKey {
                name: name.to_owned(),
                version,
                mode: info.mode,
                material: *material.expose(),
            }
        };
        self.ctl(&req).map(|_| ()).map_err(err)
    }

    fn push_all_keys(&mut self) {
        let Some(store) = &self.keys else { return };
        let all: Vec<(String, u32)> = store.held_versions();
        for (name, v) in all {
            if let Err(e) = self.push_key(&name, v) {
                error!("vmd: pushing key {name} v{v}: {e}");
            }
        }
    }

    /// Push every version held here of every key `policy`'s key rules name
    /// (and of `extra`, the GuardPoint's key), before the policy reaches
    /// secfs: secfs refuses a policy naming keys it has not been given.
    /// Keys not held here (locked host key, not fetched yet) are skipped;
    /// secfs then reports what is missing.
    fn push_policy_keys(&mut self, policy: &str, extra: Option<&str>) -> Result<(), String> {
        let compiled = self.policies.compiled(policy).map_err(err)?;
        let mut names: Vec<String> = compiled.key_names().map(str::to_owned).collect();
        names.extend(extra.map(str::to_owned));
        names.sort();
        names.dedup();
        for name in names {
            let Some(info) = self.keys.as_ref().and_then(|s| s.get(&name)) else {
                continue;
            };
            for (v, _) in info.versions {
                self.push_key(&name, v)?;
            }
        }
        Ok(())
    }

    /// A policy with data transformation rules must name keys this host
    /// knows (the local key store, or the key manager's list): `dataxform`
    /// would otherwise find out file by file. Only checked while the key
    /// store is open.
    fn check_transform_keys(&self, json: &str) -> Result<(), String> {
        let compiled = guardfs_policy::CompiledPolicy::from_json(json).map_err(err)?;
        if !compiled.transforms() {
            return Ok(());
        }
        let Some(store) = &self.keys else {
            return Ok(());
        };
        let unknown: Vec<&str> = compiled
            .key_names()
            .filter(|n| {
                store.get(n).is_none() && self.km.as_ref().is_none_or(|k| k.key_mode(n).is_none())
            })
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        Err(format!(
            "policy {} transforms with keys this host does not know: {} (create them with `voradmin key create NAME`)",
            compiled.name(),
            unknown.join(", ")
        ))
    }

    /// Write a blob (policy or host settings) to the blob directory under
    /// its digest.
    fn blob(&self, text: &str) -> Result<[u8; 32], String> {
        let (digest, name) = sha256_hex(text.as_bytes());
        crate::state::write_atomic(&self.layout.blob_dir.join(name), text.as_bytes(), 0o600)
            .map_err(err)?;
        Ok(digest)
    }

    /// The key and mode a policy guards with: its first key rule's key
    /// (`default` without key rules); `clear` when it only uses clear_key.
    fn policy_key(&self, policy: &str) -> Result<(Option<String>, Mode), String> {
        let compiled = self.policies.compiled(policy).map_err(err)?;
        let name = match self.policies.policy_key(policy).map_err(err)? {
            Some(k) => k,
            None if !compiled.has_key_rules() => "default".to_owned(),
            None => return Ok((None, Mode::Clear)),
        };
        // The key's mode: from the key source, or from what the key manager
        // said about it (a non-persistent key not fetched yet).
        let mode = self
            .keys
            .as_ref()
            .and_then(|s| s.get(&name))
            .map(|i| i.mode)
            .or_else(|| self.km.as_ref().and_then(|k| k.key_mode(&name)))
            .or_else(|| {
                // Locked local store: modes are readable without the host key.
                let locked_local = self.keys.is_none() && self.km.is_none();
                locked_local
                    .then(|| {
                        crate::state::keystore::modes_without_unsealing(&self.layout.keys())
                            .remove(&name)
                    })
                    .flatten()
            });
        match (mode, &self.keys) {
            (Some(Mode::Clear), _) => Ok((None, Mode::Clear)),
            (Some(m), _) => Ok((Some(name), m)),
            // Locked and the key unknown: guard anyway (files stay
            // unreadable until the password is entered).
            (None, None) => Ok((Some(name), Mode::Xts)),
            (None, Some(_)) => Err(format!(
                "policy {policy} uses key {name:?}, which is not in the key store"
            )),
        }
    }

    fn policy_blobs(&self, policy: &str) -> Result<([u8; 32], Option<[u8; 32]>), String> {
        let text = self
            .policies
            .get(policy)
            .map_err(err)?
            .ok_or_else(|| format!("no policy {policy:?}"))?;
        let host = match self.policies.host_settings().map_err(err)? {
            Some(h) => Some(self.blob(&h)?),
            None => None,
        };
        Ok((self.blob(&text)?, host))
    }

    /// Guard a registered GuardPoint now, unless processes are using it.
    fn try_guard(&mut self, path: &str) -> Result<(), String> {
        let entry = self
            .gps
            .get(path)
            .cloned()
            .ok_or_else(|| format!("{path} is not a GuardPoint"))?;
        let rt = self.runtime.entry(path.to_owned()).or_default();
        rt.wanted = true;
        rt.retries += 1;
        rt.attempt = Some(SystemTime::now());
        let result = self.guard_now(path, &entry.policy);
        let rt = self.runtime.entry(path.to_owned()).or_default();
        match &result {
            Ok(()) => {
                rt.reason = None;
                rt.retries = 0;
            }
            Err(e) => rt.reason = Some(e.clone()),
        }
        result
    }

    fn guard_now(&mut self, path: &str, policy: &str) -> Result<(), String> {
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {}
            // A dead mount left by a killed secfs: guarding replaces it.
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENOTCONN as i32) => {}
            Ok(_) => return Err("not a directory".into()),
            Err(e) => return Err(format!("directory unavailable: {e}")),
        }
        self.forbidden().check(Path::new(path))?;
        let users = busy::users(Path::new(path), self.secfs.pid());
        if !users.is_empty() {
            return Err(format!("busy: in use by pid {}", busy::describe(&users)));
        }
        // Where else the lower directory shows (for the reason given when
        // secfs cannot attach the GuardPoint there).
        let lower = guardfs_shim::reach::mountinfo::FsPath::of_path(Path::new(path)).ok();
        let (key, mode) = self.policy_key(policy)?;
        let (pdigest, hdigest) = self.policy_blobs(policy)?;
        self.push_policy_keys(policy, key.as_deref())?;
        let req = Ctl::Guard {
            path: path.to_owned(),
            mode,
            key,
            policy: Some(pdigest),
            host: hdigest,
        };
        match self.ctl(&req) {
            Ok(_) => {
                info!("vmd: guarded {path} (policy {policy}, {mode})");
                Ok(())
            }
            // secfs checked again after mounting and rolled back.
            Err(e) if e.errno().map(|e| e.0) == Some(nix::errno::Errno::EBUSY as i32) => {
                let users = busy::users(Path::new(path), self.secfs.pid());
                Err(format!("busy: in use by pid {}", busy::describe(&users)))
            }
            Err(e) if e.errno().map(|e| e.0) == Some(nix::errno::Errno::EXDEV as i32) => {
                let places: Vec<String> = lower
                    .map(|l| guardfs_shim::reach::uncovered(&l, "-"))
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|p| !(p.own && p.target == Path::new(path)))
                    .map(|p| p.to_string())
                    .collect();
                Err(format!(
                    "the lower directory stays reachable without secfs through: {} \
                     (secfs could not attach the GuardPoint there; see its log)",
                    if places.is_empty() {
                        "another mount point or mount namespace".to_owned()
                    } else {
                        places.join("; ")
                    }
                ))
            }
            Err(e) if e.errno().map(|e| e.0) == Some(nix::errno::Errno::EPERM as i32) => {
                Err(format!(
                    "secfs refused to guard {path} (EPERM): a directory that must never be guarded (see the secfs log)"
                ))
            }
            Err(e) => Err(format!("secfs: {e}")),
        }
    }

    /// Directories that must never be GuardPoints: the host's (see
    /// `guardfs_shim::forbidden`) and this agent's install root, state,
    /// run and log directories.
    fn forbidden(&self) -> guardfs_shim::forbidden::Forbidden {
        guardfs_shim::forbidden::Forbidden::host()
            .with(
                &self.layout.root,
                "the agent's install root and state directory",
            )
            .with(&self.layout.run_dir, "the agent's run directory")
            .with(&self.layout.log_dir, "the agent's log directory")
            .with(&self.layout.blob_dir, "the agent's run directory")
    }

    fn local_keys(&mut self) -> Result<&mut LocalKeys, String> {
        let locked =
            "keys are unavailable: the host key is locked (enter the password with `vmsec passwd`)";
        self.keys
            .as_mut()
            .ok_or(locked)?
            .local_mut()
            .ok_or_else(|| "keys are managed by the key manager, not on this host".to_owned())
    }

    /// Answer one request.
    pub fn handle(&mut self, req: Request) -> Reply {
        match self.dispatch(req) {
            Ok(v) => Reply::ok(v),
            Err(e) => Reply::err(e),
        }
    }

    fn dispatch(&mut self, req: Request) -> Result<Value, String> {
        match req {
            Request::Status => Ok(self.status()),
            Request::Config => Ok(json!({
                "root": self.layout.root, "run_dir": self.layout.run_dir, "log_dir": self.layout.log_dir,
                "agent_conf": self.layout.agent_conf(),
                "entries": self.conf.entries().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
            })),
            Request::KeyCreate {
                name,
                mode,
                persistent,
            } => {
                let mode: Mode = mode.parse().map_err(err)?;
                let v = self.local_keys()?.create(&name, mode, persistent)?;
                if self.secfs.client().is_some() {
                    self.push_key(&name, v)?;
                }
                info!("vmd: key {name} created ({mode})");
                Ok(json!({ "name": name, "version": v, "mode": mode.name() }))
            }
            Request::KeyRotate { name } => {
                let v = self.local_keys()?.rotate(&name)?;
                if self.secfs.client().is_some() {
                    self.push_key(&name, v)?;
                }
                info!("vmd: key {name} rotated to version {v}");
                Ok(json!({ "name": name, "version": v }))
            }
            Request::KeyList => {
                let store = self
                    .keys
                    .as_ref()
                    .ok_or("keys are unavailable: the host key is locked")?;
                Ok(serde_json::to_value(store.list()).map_err(err)?)
            }
            Request::KeyShow { name } => {
                let store = self
                    .keys
                    .as_ref()
                    .ok_or("keys are unavailable: the host key is locked")?;
                let info = store.get(&name).ok_or_else(|| format!("no key {name:?}"))?;
                Ok(serde_json::to_value(info).map_err(err)?)
            }
            Request::PolicyApply { json } => {
                self.check_transform_keys(&json)?;
                let name = self.policies.apply(&json).map_err(err)?;
                self.reload_policy(Some(&name))?;
                Ok(json!({ "name": name }))
            }
            Request::PolicyList => Ok(json!(self.policies.list().map_err(err)?)),
            Request::PolicyShow { name } => {
                let text = self
                    .policies
                    .get(&name)
                    .map_err(err)?
                    .ok_or_else(|| format!("no policy {name:?}"))?;
                Ok(serde_json::from_str(&text).map_err(err)?)
            }
            Request::HostSettingsSet { text } => {
                self.policies.set_host_settings(&text).map_err(err)?;
                self.reload_policy(None)?;
                Ok(json!({}))
            }
            Request::HostSettingsShow => Ok(json!(
                self.policies
                    .host_settings()
                    .map_err(err)?
                    .unwrap_or_default()
            )),
            Request::Guard {
                path,
                policy,
                gp_type,
            } => self.guard(&path, policy, gp_type),
            Request::Unguard { path, keep } => self.unguard(&path, keep),
            Request::Passwd { password } => self.passwd(&password),
            Request::SetPassword { password } => {
                let hk = self
                    .host_key
                    .clone()
                    .ok_or("the host key is locked: enter the current password first")?;
                self.hostkeys.set_password(&hk, &password).map_err(err)?;
                info!("vmd: host key is now password protected");
                Ok(json!({ "protection": "password" }))
            }
            Request::SecfsConfig { param, value } => self.secfs_config(&param, &value),
            Request::FileInfo { path } => self.file_info(&path),
            Request::Reload => {
                self.km = kmsync::KmState::load(&self.layout, &self.conf)?;
                if let Some(hk) = self.host_key.clone() {
                    self.unlock(hk)?;
                    self.push_all_keys();
                }
                info!(
                    "vmd: registration reloaded (key manager: {})",
                    self.km.is_some()
                );
                Ok(json!({ "key_manager": self.km.as_ref().map(|k| k.status()) }))
            }
            Request::KmRenew => self.km_renew(),
            Request::KmReport => self.km_report(),
            Request::KmUnregister => self.km_unregister(),
            Request::KmDeleteHost => {
                let (client, _) = self.km_client()?;
                client.post("/api/v1/agent/delete", &json!({}))?.ok()?;
                self.km_unregister()
            }
            Request::Challenge => self.km_challenge(),
            Request::ChallengeResponse { response } => self.km_challenge_response(&response),
            Request::Shutdown => {
                info!("vmd: shutdown requested: unguarding and stopping secfs");
                self.stopping = true;
                self.secfs.stop();
                Ok(json!({}))
            }
        }
    }

    fn passwd(&mut self, password: &str) -> Result<Value, String> {
        match self.hostkeys.protection().map_err(err)? {
            Some(Protection::Password) => {}
            _ => {
                return Err(
                    "no static host password is set (the host key unlocks automatically)".into(),
                );
            }
        }
        let hk = self.hostkeys.unlock_with_password(password).map_err(err)?;
        if self.host_key.is_none() {
            self.unlock(hk)?;
            self.push_all_keys();
            info!("vmd: host key unlocked; keys are available");
        }
        Ok(json!({ "keys_available": true }))
    }

    fn guard(
        &mut self,
        path: &str,
        policy: Option<String>,
        gp_type: Option<GpType>,
    ) -> Result<Value, String> {
        let path = normalize(path)?;
        self.forbidden().check(Path::new(&path))?;
        // A rule's GuardPoint is the rule's, whoever deployed the rule.
        if self.km.is_some()
            && policy
                .as_ref()
                .is_some_and(|p| !self.rule_policies().contains(p))
        {
            return Err(
                "this host is registered with a key manager: GuardPoints are defined there".into(),
            );
        }
        if let Some(policy) = policy {
            if self.policies.get(&policy).map_err(err)?.is_none() {
                return Err(format!(
                    "no policy {policy:?} (apply one with `voradmin policy apply FILE`)"
                ));
            }
            self.policy_key(&policy)?;
            let mut gps = self.gps.clone();
            gps.add(&path, &policy, gp_type.unwrap_or(GpType::Auto))
                .map_err(err)?;
            gps.save(&self.layout.guardpoints()).map_err(err)?;
            self.gps = gps;
        } else if self.gps.get(&path).is_none() {
            return Err(format!(
                "{path} is not a GuardPoint (add it with `voradmin guard {path} --policy NAME`)"
            ));
        }
        if self.served().contains_key(&path) {
            return Ok(json!({ "path": path, "status": "guarded" }));
        }
        match self.try_guard(&path) {
            Ok(()) => Ok(json!({ "path": path, "status": "guarded" })),
            Err(reason) => Ok(json!({ "path": path, "status": "not guarded", "reason": reason })),
        }
    }

    fn unguard(&mut self, path: &str, keep: bool) -> Result<Value, String> {
        let path = normalize(path)?;
        if self.gps.get(&path).is_none() {
            return Err(format!("{path} is not a GuardPoint"));
        }
        if self.served_checked()?.contains_key(&path) {
            let users = busy::users(Path::new(&path), self.secfs.pid());
            if !users.is_empty() {
                return Err(format!(
                    "{path} is busy: in use by pid {}; nothing changed",
                    busy::describe(&users)
                ));
            }
            self.ctl(&Ctl::Unguard {
                path: path.clone(),
                lazy: false,
            })
            .map_err(|e| format!("secfs: {e}"))?;
        }
        if keep {
            self.runtime.entry(path.clone()).or_default().wanted = false;
        } else {
            let mut gps = self.gps.clone();
            gps.remove(&path).map_err(err)?;
            gps.save(&self.layout.guardpoints()).map_err(err)?;
            self.gps = gps;
            self.runtime.remove(&path);
        }
        info!("vmd: unguarded {path}");
        Ok(json!({ "path": path, "status": "not guarded" }))
    }

    /// Send the current policy (and host settings) to every guarded
    /// GuardPoint using `policy` (all of them when `None`).
    fn reload_policy(&mut self, policy: Option<&str>) -> Result<(), String> {
        let served = self.served();
        let targets: Vec<(String, String)> = self
            .gps
            .list()
            .iter()
            .filter(|g| served.contains_key(&g.path) && policy.is_none_or(|p| p == g.policy))
            .map(|g| (g.path.clone(), g.policy.clone()))
            .collect();
        for (path, pol) in targets {
            self.push_policy_keys(&pol, None)?;
            let (pd, hd) = self.policy_blobs(&pol)?;
            self.ctl(&Ctl::LoadPolicy {
                path: path.clone(),
                policy: pd,
                host: hd,
            })
            .map_err(|e| format!("{path}: loading policy {pol}: {e}"))?;
            info!("vmd: {path}: policy {pol} reloaded");
        }
        Ok(())
    }

    fn secfs_config(&mut self, param: &str, value: &str) -> Result<Value, String> {
        let ok = match param {
            "pagecache_writeback" | "concise_logging" => matches!(value, "0" | "1"),
            "threads" => value.parse::<u32>().is_ok_and(|n| (1..=64).contains(&n)),
            _ => {
                let known: Vec<String> = SECFS_PARAMS
                    .iter()
                    .map(|(n, d)| format!("{n} ({d})"))
                    .collect();
                return Err(format!(
                    "unknown secfs parameter {param:?}; known: {}",
                    known.join(", ")
                ));
            }
        };
        if !ok {
            let d = SECFS_PARAMS
                .iter()
                .find(|(n, _)| *n == param)
                .map(|(_, d)| *d)
                .unwrap_or("");
            return Err(format!("{param}: bad value {value:?}: expected {d}"));
        }
        let mut conf = self.conf.clone();
        conf.set(&format!("secfs_{param}"), value).map_err(err)?;
        conf.save(&self.layout.agent_conf()).map_err(err)?;
        self.conf = conf;
        self.secfs.extra_args = secfs_args(&self.conf);
        Ok(
            json!({ "param": param, "value": value, "applies": "when the secfs service next starts" }),
        )
    }

    fn file_info(&mut self, path: &str) -> Result<Value, String> {
        let canon = std::fs::canonicalize(path).map_err(|e| format!("{path}: {e}"))?;
        let canon = canon.to_str().ok_or("path is not UTF-8")?.to_owned();
        let reply = self
            .ctl(&Ctl::FileInfo {
                path: canon.clone(),
            })
            .map_err(|e| {
                format!("{canon}: {e} (is it a regular file inside a guarded GuardPoint?)")
            })?;
        let raw = &reply[reply.len() - guardfs_crypto::HEADER_LEN..];
        match guardfs_crypto::Header::parse(raw) {
            Ok(h) => Ok(json!({
                "path": canon, "mode": h.mode.name(), "key_name": h.key_name, "key_version": h.key_version,
                "file_id": hex::encode(h.file_id.0), "base_iv": hex::encode(h.base_iv),
            })),
            Err(e) => Err(format!(
                "{canon}: no GuardFS header in the lower file ({e}): clear or plaintext file"
            )),
        }
    }

    /// Everything `status`-like commands show.
    fn status(&mut self) -> Value {
        let served = self.served();
        let keys_available = self.keys.is_some();
        let gps: Vec<Value> = self
            .gps
            .list()
            .iter()
            .map(|g| {
                let rt = self.runtime.get(&g.path).cloned().unwrap_or_default();
                let s = served.get(&g.path);
                let reason = match (s, &rt.reason) {
                    (Some(e), _) if e.keys == 0 => "keys unavailable".to_owned(),
                    (Some(_), _) => "N/A".to_owned(),
                    (None, _) if !rt.wanted => "Inactive".to_owned(),
                    (None, Some(r)) => r.clone(),
                    (None, None) => "pending".to_owned(),
                };
                json!({
                    "path": g.path, "policy": g.policy, "type": g.gp_type.name(),
                    "config_state": if rt.wanted { "guarded" } else { "unguarded" },
                    "status": if s.is_some() { "guarded" } else { "not guarded" },
                    "reason": reason,
                    "mode": s.map(|e| e.mode.name()),
                    "policy_generation": s.map(|e| e.generation),
                    "key_versions": s.map(|e| e.keys),
                    "retry_count": rt.retries,
                    "attempt_time": now_text(rt.attempt),
                })
            })
            .collect();
        let svc = self
            .secfs
            .client()
            .and_then(|c| c.status(SERVICE_INDEX).ok());
        let protection = match self.hostkeys.protection() {
            Ok(Some(Protection::Password)) => "password",
            Ok(_) => "auto",
            Err(_) => "damaged",
        };
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "vmd_pid": std::process::id(),
            "vmd_started": now_text(Some(self.started)),
            "secfs_pid": self.secfs.pid(),
            "secfs_running": svc.is_some(),
            "secfs_keys": svc.map(|s| s.keys),
            "keys_available": keys_available,
            "key_manager": self.km.as_ref().map(|k| k.status()),
            "key_source": self.keys.as_ref().map(|k| k.kind()),
            "host_key": protection,
            "guardpoints": gps,
            "policies": self.policies.list().unwrap_or_default(),
            "host_settings": self.policies.host_settings().ok().flatten().unwrap_or_default(),
            "keys": self.keys.as_ref().map(|k| serde_json::to_value(k.list()).unwrap_or_default()),
            "root": self.layout.root,
            "log_dir": self.layout.log_dir,
            "audit_log": self.secfs.audit_log,
            "conf": self.conf.entries().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        })
    }
}

/// Arguments for `secfs serve` from agent.conf.
fn secfs_args(conf: &AgentConf) -> Vec<String> {
    let mut out = Vec::new();
    if conf.get("secfs_pagecache_writeback") == Some("0") {
        out.push("--no-writeback-cache".to_owned());
    }
    if conf.get("secfs_concise_logging") == Some("1") {
        out.push("--concise-logging".to_owned());
    }
    if let Some(t) = conf.get("secfs_threads") {
        out.push("--threads".to_owned());
        out.push(t.to_owned());
    }
    out
}

/// An absolute path without `.`/`..`/`//`/trailing `/`, resolving symlinks
/// in existing parents so the same directory has one name.
fn normalize(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("{path}: GuardPoint paths must be absolute"));
    }
    let p = match std::fs::canonicalize(path) {
        Ok(p) => p,
        Err(_) => PathBuf::from(path),
    };
    let s = p
        .to_str()
        .ok_or("path is not UTF-8")?
        .trim_end_matches('/')
        .to_owned();
    if s.is_empty() {
        return Err("/ cannot be a GuardPoint".into());
    }
    Ok(s)
}

impl From<StateError> for Reply {
    fn from(e: StateError) -> Reply {
        Reply::err(e.to_string())
    }
}
