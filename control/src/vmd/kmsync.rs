//! vmd as a key-manager client: poll the server's configuration for this
//! host (cheaply, with an ETag), apply its GuardPoints, policies and keys
//! through the same paths as local administration (registry, policy
//! store, ioctl channel), and report status back. When the server is
//! unreachable vmd keeps what it has; when the hardware signature no
//! longer matches the registration, it neither contacts the server nor
//! uses keys.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use guardfs_crypto::{Mode, PolicyKey};
use guardfs_shim::ctl::proto::Request as Ctl;
use log::{info, warn};
use serde_json::{Value, json};

use super::Agent;
use super::keys::KeySource;
use crate::km::keys::KmKeys;
use crate::km::{KmClient, Registration, hwsig};
use crate::state::{AgentConf, GpType, HostKey, Layout};

/// The registration and the polling state.
pub struct KmState {
    reg: Registration,
    client: Option<KmClient>,
    etag: Option<String>,
    next_poll: Instant,
    interval: Duration,
    reachable: Option<bool>,
    last_error: Option<String>,
    /// Why vmd refuses to use the registration (hardware changed).
    refused: Option<String>,
    last_report: Option<Instant>,
    sec: std::path::PathBuf,
    /// Renew the client certificate this long before it expires.
    renew_before: Duration,
    audit_log: std::path::PathBuf,
    audit_offset_file: std::path::PathBuf,
    /// Every key the key manager assigned, with its mode (no material), as
    /// last heard: GuardPoints can be guarded before their key arrives.
    key_modes: BTreeMap<String, Mode>,
    /// A challenge waiting for its response (offline unlock).
    pending: Option<crate::km::unlock::Pending>,
}

impl KmState {
    /// The registration under `.sec/`, if any.
    pub fn load(layout: &Layout, conf: &AgentConf) -> Result<Option<KmState>, String> {
        let Some(reg) = Registration::load(&layout.sec)? else {
            return Ok(None);
        };
        let interval = conf
            .get("km_poll_secs")
            .and_then(|s| s.parse().ok())
            .unwrap_or(10u64)
            .clamp(1, 3600);
        let mut refused = None;
        if let Some(want) = &reg.hw_signature {
            let now = hwsig::current(conf.get("hwsig_extra_file").map(std::path::Path::new));
            if &now != want {
                let why = "the hardware signature of this machine changed since registration (a clone?): \
                           vmd will not contact the key manager or use keys; register this host again";
                warn!("vmd: {why}");
                refused = Some(why.to_owned());
            }
        }
        let client = match refused {
            Some(_) => None,
            None => Some(KmClient::registered(
                &layout.sec,
                &reg,
                Duration::from_secs(10),
            )?),
        };
        Ok(Some(KmState {
            reg,
            client,
            etag: None,
            next_poll: Instant::now(),
            interval: Duration::from_secs(interval),
            reachable: None,
            last_error: None,
            refused,
            last_report: None,
            sec: layout.sec.clone(),
            renew_before: Duration::from_secs(
                86_400
                    * conf
                        .get("km_renew_days")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(60u64)
                        .min(3650),
            ),
            audit_log: layout.log_dir.join("audit.log"),
            audit_offset_file: layout.sec.join("km_audit.offset"),
            key_modes: std::fs::read(layout.sec.join(KEY_MODES))
                .ok()
                .and_then(|b| serde_json::from_slice::<BTreeMap<String, String>>(&b).ok())
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(k, m)| Some((k, mode_of(&m)?)))
                .collect(),
            pending: None,
        }))
    }

    /// The key source of a registered host (none when refused).
    pub fn key_source(
        &self,
        layout: &Layout,
        host: &HostKey,
    ) -> Result<Option<Box<dyn KeySource>>, String> {
        if self.refused.is_some() {
            return Ok(None);
        }
        Ok(Some(Box::new(KmKeys::open(
            layout.sec.join("km_keys.json"),
            host,
        )?)))
    }

    /// Renew the certificate when it is close to expiry; upload new audit
    /// records (in batches of at most 1000 lines).
    fn maintain(&mut self) {
        let Some(client) = self.client.clone() else {
            return;
        };
        match crate::km::cert_not_after(&self.sec) {
            Ok(t) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                if t - now < self.renew_before.as_secs() as i64 {
                    match crate::km::renew(&self.sec, &self.reg, &client).and_then(|t| {
                        KmClient::registered(&self.sec, &self.reg, Duration::from_secs(10))
                            .map(|c| (t, c))
                    }) {
                        Ok((t, c)) => {
                            info!("vmd: client certificate renewed (now valid until {t})");
                            self.client = Some(c);
                        }
                        Err(e) => warn!("vmd: renewing the client certificate: {e}"),
                    }
                }
            }
            Err(e) => warn!("vmd: {e}"),
        }
        if let Err(e) = self.upload_audit() {
            warn!("vmd: uploading audit records: {e}");
        }
    }

    fn upload_audit(&mut self) -> Result<(), String> {
        use std::io::{BufRead, Seek, SeekFrom};
        let Some(client) = self.client.clone() else {
            return Ok(());
        };
        let Ok(f) = std::fs::File::open(&self.audit_log) else {
            return Ok(());
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let mut offset: u64 = std::fs::read_to_string(&self.audit_offset_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if offset > len {
            offset = 0; // the log was rotated
        }
        let mut r = std::io::BufReader::new(f);
        r.seek(SeekFrom::Start(offset)).map_err(|e| e.to_string())?;
        loop {
            let mut lines = Vec::new();
            let mut consumed = 0u64;
            while lines.len() < 1000 {
                let mut line = String::new();
                let n = r.read_line(&mut line).map_err(|e| e.to_string())?;
                if n == 0 || !line.ends_with('\n') {
                    break; // end, or a line still being written
                }
                consumed += n as u64;
                let l = line.trim_end();
                if !l.is_empty() {
                    lines.push(l.chars().take(8000).collect::<String>());
                }
            }
            if consumed == 0 {
                return Ok(());
            }
            if !lines.is_empty() {
                client.post("/api/v1/agent/audit", &json!(lines))?.ok()?;
            }
            offset += consumed;
            crate::state::write_atomic(
                &self.audit_offset_file,
                format!("{offset}\n").as_bytes(),
                0o600,
            )
            .map_err(|e| e.to_string())?;
        }
    }

    /// Keep an escrow of the host key with the key manager (for offline
    /// unlock); redone when the host key changes.
    fn escrow(&mut self, host: &HostKey) {
        use crate::km::unlock;
        let Some(client) = self.client.clone() else {
            return;
        };
        if unlock::escrow_current(&self.sec, host) {
            return;
        }
        let r = unlock::new_escrow(&self.sec, host).and_then(|e| {
            client
                .post(
                    "/api/v1/agent/escrow",
                    &json!({ "escrow_key": e.key_hex.as_str() }),
                )?
                .ok()?;
            e.store()
        });
        match r {
            Ok(()) => {
                info!("vmd: host key escrowed with the key manager (offline unlock available)")
            }
            Err(e) => warn!("vmd: escrow of the host key: {e}"),
        }
    }

    /// Whether a configuration was applied completely since vmd started.
    pub fn synced(&self) -> bool {
        self.etag.is_some()
    }

    /// The mode of a key the key manager assigned to this host.
    pub fn key_mode(&self, name: &str) -> Option<Mode> {
        self.key_modes.get(name).copied()
    }

    fn set_key_modes(&mut self, modes: BTreeMap<String, Mode>) -> Result<(), String> {
        if modes != self.key_modes {
            let text: BTreeMap<&String, &str> = modes.iter().map(|(k, m)| (k, m.name())).collect();
            let b = serde_json::to_vec_pretty(&text).map_err(|e| e.to_string())?;
            crate::state::write_atomic(&self.sec.join(KEY_MODES), &b, 0o600)
                .map_err(|e| e.to_string())?;
            self.key_modes = modes;
        }
        Ok(())
    }

    pub fn status(&self) -> Value {
        json!({
            "url": self.reg.url, "client_id": self.reg.client_id, "name": self.reg.name,
            "reachable": self.reachable, "last_error": self.last_error.as_deref().or(self.refused.as_deref()),
            "hardware_association": self.reg.hw_signature.is_some(), "refused": self.refused.is_some(),
            "cert_not_after": crate::km::cert_not_after(&self.sec).ok(),
        })
    }
}

/// Key names and modes the key manager assigned (no material), in `.sec/`.
const KEY_MODES: &str = "km_key_modes.json";

fn mode_of(s: &str) -> Option<Mode> {
    s.to_ascii_lowercase().replace('_', "-").parse().ok()
}

fn text<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

impl Agent {
    pub(super) fn km_client(&self) -> Result<(KmClient, Registration), String> {
        let km = self
            .km
            .as_ref()
            .ok_or("this host is not registered with a key manager")?;
        if let Some(r) = &km.refused {
            return Err(r.clone());
        }
        Ok((
            km.client.clone().ok_or("no key manager client")?,
            km.reg.clone(),
        ))
    }

    pub(super) fn km_renew(&mut self) -> Result<Value, String> {
        let (client, reg) = self.km_client()?;
        let sec = self.layout.sec.clone();
        let t = crate::km::renew(&sec, &reg, &client)?;
        let fresh = KmClient::registered(&sec, &reg, Duration::from_secs(10))?;
        if let Some(km) = self.km.as_mut() {
            km.client = Some(fresh);
        }
        info!("vmd: client certificate renewed on request (valid until {t})");
        Ok(json!({ "cert_not_after": t }))
    }

    pub(super) fn km_challenge(&mut self) -> Result<Value, String> {
        let km = self
            .km
            .as_mut()
            .ok_or("this host is not registered with a key manager")?;
        if let Some(r) = &km.refused {
            return Err(r.clone());
        }
        if !self
            .layout
            .sec
            .join(crate::km::unlock::ESCROW_FILE)
            .exists()
        {
            return Err(
                "no escrow of the host key yet (made while the key manager is reachable)".into(),
            );
        }
        let (pending, text) = crate::km::unlock::challenge()?;
        km.pending = Some(pending);
        info!("vmd: offline unlock challenge issued");
        Ok(json!({ "challenge": text, "client": km.reg.name }))
    }

    pub(super) fn km_challenge_response(&mut self, response: &str) -> Result<Value, String> {
        let km = self
            .km
            .as_mut()
            .ok_or("this host is not registered with a key manager")?;
        let pending = km
            .pending
            .as_ref()
            .ok_or("no challenge is pending: run `vmsec challenge` first")?;
        let hk = crate::km::unlock::answer(&self.layout.sec, pending, response)?;
        km.pending = None;
        if self.host_key.is_none() {
            self.unlock(hk)?;
            self.push_all_keys();
        }
        info!("vmd: unlocked by challenge response; keys are available");
        Ok(json!({ "keys_available": true }))
    }

    pub(super) fn km_report(&mut self) -> Result<Value, String> {
        let (client, _) = self.km_client()?;
        let body = self.report_body();
        client.post("/api/v1/agent/status", &body)?.ok()?;
        Ok(json!({ "reported": true }))
    }

    pub(super) fn km_unregister(&mut self) -> Result<Value, String> {
        if self.km.is_none() {
            return Err("this host is not registered with a key manager".into());
        }
        // Everything that came from the key manager goes.
        self.km_guardpoints(&[])?;
        let served = self.served();
        for path in served.keys() {
            let _ = self.ctl(&Ctl::Unguard {
                path: path.clone(),
                lazy: true,
            });
        }
        let sec = self.layout.sec.clone();
        for f in [
            "km.json",
            crate::km::IDENTITY,
            "ca.pem",
            "km_keys.json",
            "km_audit.offset",
            KEY_MODES,
        ] {
            let _ = std::fs::remove_file(sec.join(f));
        }
        self.km = None;
        self.keys = None;
        if let Some(hk) = self.host_key.clone() {
            self.unlock(hk)?;
        }
        info!("vmd: unregistered from the key manager; back to the local key store");
        Ok(json!({ "unregistered": true }))
    }

    /// Poll the key manager when due.
    pub(super) fn km_poll(&mut self) {
        let Some(km) = self.km.as_mut() else { return };
        let Some(client) = km.client.clone() else {
            return;
        };
        if Instant::now() < km.next_poll {
            return;
        }
        km.next_poll = Instant::now() + km.interval;
        let etag = km.etag.clone();
        let result = client.get("/api/v1/agent/config", etag.as_deref());
        let outcome = match result {
            Err(e) => Err(e),
            Ok(a) if a.status == 304 => Ok(None),
            Ok(a) if a.status == 200 => Ok(Some((a.etag.clone(), a.body))),
            Ok(a) => Err(a.ok().err().unwrap_or_default()),
        };
        let applied = match outcome {
            Ok(None) => Ok(false),
            Ok(Some((etag, body))) => self.km_apply(&body).map(|complete| {
                if complete && let Some(km) = self.km.as_mut() {
                    km.etag = etag;
                }
                true
            }),
            Err(e) => Err(e),
        };
        let Some(km) = self.km.as_mut() else { return };
        match &applied {
            Ok(_) => {
                if km.reachable != Some(true) {
                    info!("vmd: key manager {} reachable", km.reg.url);
                }
                km.reachable = Some(true);
                km.last_error = None;
            }
            Err(e) => {
                if km.last_error.as_deref() != Some(e) {
                    warn!("vmd: key manager: {e}; keeping the current configuration");
                }
                km.reachable = Some(false);
                km.last_error = Some(e.clone());
            }
        }
        if km.reachable == Some(true) {
            km.maintain();
            if let Some(hk) = self.host_key.clone() {
                km.escrow(&hk);
            }
        }
        let Some(km) = self.km.as_mut() else { return };
        let client = km.client.clone().unwrap_or(client);
        let jobs_ended = self.reap_rule_jobs();
        let Some(km) = self.km.as_mut() else { return };
        let due = jobs_ended
            || km
                .last_report
                .is_none_or(|t| t.elapsed() > Duration::from_secs(30));
        if applied.as_ref().is_ok_and(|changed| *changed) || (due && km.reachable == Some(true)) {
            km.last_report = Some(Instant::now());
            let body = self.report_body();
            if let Err(e) = client
                .post("/api/v1/agent/status", &body)
                .and_then(|a| a.ok())
            {
                warn!("vmd: reporting status to the key manager: {e}");
            }
        }
    }

    /// Apply one configuration from the key manager.
    /// Ok(false): applied, but keys could not be handled (locked host key),
    /// so the ETag must not be remembered.
    fn km_apply(&mut self, cfg: &Value) -> Result<bool, String> {
        let empty = Vec::new();
        // Policies first: GuardPoints and keys refer to them.
        let mut changed = Vec::new();
        for p in cfg["policies"].as_array().unwrap_or(&empty) {
            let json = match &p["json"] {
                Value::String(s) => s.clone(),
                other => serde_json::to_string(other).map_err(|e| e.to_string())?,
            };
            let name = text(p, "name");
            let current = self.policies.get(name).map_err(|e| e.to_string())?;
            if current.as_deref() != Some(json.as_str()) {
                let applied = self
                    .policies
                    .apply(&json)
                    .map_err(|e| format!("policy {name}: {e}"))?;
                info!("vmd: policy {applied} from the key manager");
                changed.push(applied);
            }
        }
        // The client profile's poll interval, unless agent.conf sets one.
        if let Some(secs) = cfg["profile"]["poll_interval"].as_u64()
            && self.conf.get("km_poll_secs").is_none()
            && let Some(km) = self.km.as_mut()
        {
            km.interval = Duration::from_secs(secs.clamp(1, 3600));
        }
        let modes: BTreeMap<String, Mode> = cfg["keys"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .filter_map(|k| Some((text(k, "name").to_owned(), mode_of(text(k, "mode"))?)))
            .collect();
        if let Some(km) = self.km.as_mut() {
            km.set_key_modes(modes)?;
        }
        let keys = self.km_keys(cfg["keys"].as_array().unwrap_or(&empty));
        let gps = self.km_guardpoints(cfg["guardpoints"].as_array().unwrap_or(&empty));
        let rules = self.km_rules(cfg["rules"].as_array().unwrap_or(&empty));
        // Stored policies reach secfs even when a later step failed: the
        // next poll compares with the store and would not see them as new.
        let mut reload = Ok(());
        for name in changed {
            if let Err(e) = self.reload_policy(Some(&name)) {
                reload = Err(e);
            }
        }
        let complete = keys?;
        gps?;
        reload?;
        rules?;
        Ok(complete)
    }

    /// Bring the key manager's keys in line with `keys`: withdrawn versions
    /// are revoked in secfs first and only then forgotten (so a failed
    /// revocation is retried at the next poll), new versions are fetched
    /// and pushed. Ok(false) when keys could not be handled (host key
    /// locked): the configuration must be applied again after unlock.
    fn km_keys(&mut self, keys: &[Value]) -> Result<bool, String> {
        let Some(client) = self.km.as_ref().and_then(|k| k.client.clone()) else {
            return Ok(false);
        };
        if self.keys.as_mut().and_then(|k| k.km_mut()).is_none() {
            return Ok(false); // locked: keys come after `vmsec passwd`
        }
        let mut wanted = BTreeMap::new();
        for k in keys {
            let name = text(k, "name").to_owned();
            if !matches!(text(k, "state"), "" | "active" | "Active") {
                continue;
            }
            let Some(mode) = mode_of(text(k, "mode")) else {
                warn!("vmd: key {name}: unknown mode {:?}", k["mode"]);
                continue;
            };
            let persistent = k["persistent_on_client"].as_bool().unwrap_or(true);
            for v in k["versions"]
                .as_array()
                .unwrap_or(&Vec::new())
                .iter()
                .filter_map(Value::as_u64)
            {
                wanted.insert((name.clone(), v as u32), (mode, persistent));
            }
        }
        let held = self
            .keys
            .as_mut()
            .and_then(|k| k.km_mut())
            .map(|k| k.held_versions())
            .unwrap_or_default();
        for (name, v) in held.into_iter().filter(|nv| !wanted.contains_key(nv)) {
            if self.secfs.client().is_some() {
                match self.ctl(&Ctl::RevokeKey {
                    name: name.clone(),
                    version: v,
                }) {
                    Ok(_) => {}
                    Err(e) if e.errno() == Some(guardfs_shim::vfs::Errno::ENOENT) => {}
                    Err(e) => return Err(format!("revoking key {name} v{v} in secfs: {e}")),
                }
            }
            if let Some(k) = self.keys.as_mut().and_then(|k| k.km_mut()) {
                k.forget(&name, v)?;
            }
            info!("vmd: key {name} v{v} revoked or withdrawn by the key manager");
        }
        for ((name, v), (mode, persistent)) in wanted {
            let Some(km_keys) = self.keys.as_mut().and_then(|k| k.km_mut()) else {
                return Ok(false);
            };
            if km_keys.held(&name, v) {
                continue;
            }
            let mut body = client
                .get(&format!("/api/v1/agent/keys/{name}/versions/{v}"), None)?
                .ok()?;
            // The hex text and the decoded bytes are key material too:
            // zeroized once the key is built.
            let material = hex::decode(text(&body, "material"))
                .ok()
                .map(zeroize::Zeroizing::new)
                .and_then(|b| PolicyKey::from_slice(&b));
            if let Some(Value::String(hex)) = body.get_mut("material") {
                zeroize::Zeroize::zeroize(hex);
            }
            let material = material.ok_or_else(|| {
                format!("key {name} v{v}: malformed material from the key manager")
            })?;
            km_keys.put(&name, mode, persistent, v, material)?;
            info!("vmd: key {name} v{v} ({mode}) from the key manager");
            if self.secfs.client().is_some() {
                self.push_key(&name, v)?;
            }
        }
        Ok(true)
    }

    fn km_guardpoints(&mut self, gps: &[Value]) -> Result<(), String> {
        let mut desired = BTreeMap::new();
        for g in gps {
            let gp_type = if text(g, "type").contains("manual") {
                GpType::Manual
            } else {
                GpType::Auto
            };
            let enabled = g["enabled"].as_bool().unwrap_or(true);
            desired.insert(
                text(g, "path").to_owned(),
                (text(g, "policy").to_owned(), gp_type, enabled),
            );
        }
        let served = self.served_checked()?;
        let mut registry = self.gps.clone();
        let mut policy_changed = Vec::new();
        let rule_policies = self.rule_policies();
        for e in self.gps.list().to_vec() {
            if rule_policies.contains(&e.policy) && !desired.contains_key(&e.path) {
                continue; // a rule's GuardPoint: the rule owns it
            }
            match desired.get(&e.path) {
                Some((p, t, _)) if *p == e.policy && *t == e.gp_type => {}
                // Same GuardPoint, new policy or type: change the registry
                // and, for a new policy, switch the running GuardPoint to
                // it; never unguard a directory in use for that.
                Some((p, t, _)) => {
                    registry.remove(&e.path).map_err(|x| x.to_string())?;
                    registry.add(&e.path, p, *t).map_err(|x| x.to_string())?;
                    if *p != e.policy && served.contains_key(&e.path) {
                        policy_changed.push(p.clone());
                    }
                    info!(
                        "vmd: GuardPoint {} now policy {p}, {t} (key manager)",
                        e.path
                    );
                }
                None => {
                    if served.contains_key(&e.path) {
                        // Stays registered (and retried) until secfs lets go.
                        self.ctl(&Ctl::Unguard {
                            path: e.path.clone(),
                            lazy: true,
                        })
                        .map_err(|x| {
                            format!("unguarding {} withdrawn by the key manager: {x}", e.path)
                        })?;
                    }
                    registry.remove(&e.path).map_err(|x| x.to_string())?;
                    self.runtime.remove(&e.path);
                    info!("vmd: GuardPoint {} withdrawn by the key manager", e.path);
                }
            }
        }
        for (path, (policy, gp_type, enabled)) in &desired {
            if registry.get(path).is_none() {
                if let Err(e) = registry.add(path, policy, *gp_type) {
                    warn!("vmd: GuardPoint {path} from the key manager: {e}");
                    continue;
                }
                info!("vmd: GuardPoint {path} (policy {policy}, {gp_type}) from the key manager");
            }
            let rt = self.runtime.entry(path.clone()).or_default();
            rt.wanted =
                *enabled && (*gp_type == GpType::Auto || rt.wanted || served.contains_key(path));
            if !enabled && served.contains_key(path) {
                self.ctl(&Ctl::Unguard {
                    path: path.clone(),
                    lazy: true,
                })
                .map_err(|x| format!("unguarding disabled {path}: {x}"))?;
            }
        }
        if registry != self.gps {
            registry
                .save(&self.layout.guardpoints())
                .map_err(|e| e.to_string())?;
            self.gps = registry;
        }
        for policy in policy_changed {
            self.reload_policy(Some(&policy))?;
        }
        Ok(())
    }
}
