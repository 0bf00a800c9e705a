//! Rules deployed by the key manager (CTE UserSpace's client-rule
//! associations): each poll's `rules` are kept in the host's rule store
//! (marked `km`), and an operation the key manager asks for (a new
//! generation) is run by `voradmin rule apply` in the background, exactly
//! as an administrator would run it here. Its outcome (status, percent,
//! failed files) goes back in the status report.
//!
//! Must not: wait for a deployment (vmd keeps serving; the deployment
//! calls vmd), or remove a rule that is still applied.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use log::{info, warn};
use serde_json::{Value, json};

use super::Agent;
use crate::state::rules::{KmRequest, Rule, Rules};

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

impl Agent {
    /// Bring the host's `km` rules in line with the key manager's, and
    /// start the operations it asks for.
    pub(super) fn km_rules(&mut self, rules: &[Value]) -> Result<(), String> {
        let mut fresh = Vec::new();
        {
            let mut store = Rules::open(&self.layout).map_err(|e| e.to_string())?;
            let mut listed = BTreeSet::new();
            for r in rules {
                let name = r["name"].as_str().unwrap_or("").to_owned();
                listed.insert(name.clone());
                let old = store.rules.get(&name).cloned();
                if old
                    .as_ref()
                    .is_some_and(|o| o.source.as_deref() != Some("km"))
                {
                    warn!("vmd: rule {name} from the key manager: a local rule has that name");
                    continue;
                }
                let path = r["path"].as_str().unwrap_or("");
                let mut rule = Rule {
                    name: name.clone(),
                    path: crate::state::rules::canonical_path(path)
                        .unwrap_or_else(|_| path.to_owned()),
                    include_extensions: names(&r["include_extensions"]),
                    is_directory: r["is_directory"].as_bool().unwrap_or(true),
                    is_recursive: r["is_recursive"].as_bool().unwrap_or(true),
                    ignore_directory: names(&r["ignore_directory"]),
                    encrypt_data: r["encrypt_data"].as_bool().unwrap_or(true),
                    applied: old.as_ref().and_then(|o| o.applied.clone()),
                    source: Some("km".into()),
                    km_generation: old.as_ref().map_or(0, |o| o.km_generation),
                    km_pending: old.as_ref().and_then(|o| o.km_pending.clone()),
                };
                // What an applied rule protects does not change under it.
                if let Some(o) = &old
                    && o.applied.as_ref().is_some_and(|a| a.status != "Decrypted")
                    && !o.same_target(&rule)
                {
                    warn!(
                        "vmd: rule {name} from the key manager changed while applied here; kept as it was (decrypt it first)"
                    );
                    continue;
                }
                if let Err(why) = rule.validate(&self.layout) {
                    warn!("vmd: rule {name} from the key manager refused: {why}");
                    continue;
                }
                let generation = r["generation"].as_u64().unwrap_or(0);
                if generation > rule.km_generation {
                    fresh.push(name.clone());
                    rule.km_generation = generation;
                    rule.km_pending = Some(KmRequest {
                        operation: r["operation"].as_str().unwrap_or("encrypt").to_owned(),
                        key: r["key"].as_str().unwrap_or("").to_owned(),
                        shallow: r["shallow"].as_bool().unwrap_or(false),
                    });
                }
                store.rules.insert(name, rule);
            }
            // Withdrawn by the key manager: gone once nothing is applied.
            store.rules.retain(|name, r| {
                let keep = r.source.as_deref() != Some("km")
                    || listed.contains(name)
                    || r.applied.as_ref().is_some_and(|a| a.status != "Decrypted");
                if !keep {
                    info!("vmd: rule {name} withdrawn by the key manager");
                }
                keep
            });
            store.save().map_err(|e| e.to_string())?;
        }
        // A new request is started at once, not after the retry delay.
        for n in fresh {
            self.rule_tries.remove(&n);
        }
        self.start_pending_rules();
        Ok(())
    }

    /// Start the key manager's operations that have not started: one job
    /// per rule at a time, each tried again at most every 30 seconds while
    /// `voradmin rule apply` refuses it (another operation under way).
    pub(super) fn start_pending_rules(&mut self) {
        let Ok(rules) = Rules::read(&self.layout) else {
            return;
        };
        for r in rules {
            let Some(p) = &r.km_pending else { continue };
            if self.rule_jobs.iter().any(|(n, _, _)| *n == r.name) {
                continue;
            }
            if self
                .rule_tries
                .get(&r.name)
                .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(30))
            {
                continue;
            }
            self.rule_tries
                .insert(r.name.clone(), std::time::Instant::now());
            self.start_rule_job(&r.name, &p.operation, &p.key, p.shallow);
        }
    }

    /// `voradmin rule apply` for a key manager's request, in the background.
    fn start_rule_job(&mut self, name: &str, operation: &str, key: &str, shallow: bool) {
        let exe = std::env::current_exe()
            .map(|e| e.with_file_name("voradmin"))
            .ok()
            .filter(|p| p.is_file())
            .unwrap_or_else(|| self.layout.bin.join("voradmin"));
        let mut cmd = Command::new(exe);
        cmd.args(["rule", "apply", name, "--operation", operation]);
        if !key.is_empty() && key != "clear_key" {
            cmd.args(["--key", key]);
        }
        if shallow {
            cmd.arg("--shallow");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.layout.log_dir.join("rules.log"));
        cmd.env("GUARDFS_ROOT", &self.layout.root)
            .stdin(Stdio::null())
            .stdout(log.as_ref().map_or_else(
                |_| Stdio::null(),
                |f| f.try_clone().map_or_else(|_| Stdio::null(), Stdio::from),
            ))
            .stderr(log.map_or_else(|_| Stdio::null(), Stdio::from));
        match cmd.spawn() {
            Ok(child) => {
                info!("vmd: rule {name}: {operation} started for the key manager");
                self.rule_jobs
                    .push((name.to_owned(), operation.to_owned(), child));
            }
            Err(e) => warn!("vmd: rule {name}: cannot start {operation}: {e}"),
        }
    }

    /// Reap finished rule jobs; whether any finished.
    pub(super) fn reap_rule_jobs(&mut self) -> bool {
        let before = self.rule_jobs.len();
        self.rule_jobs
            .retain_mut(|(_, _, c)| !matches!(c.try_wait(), Ok(Some(_)) | Err(_)));
        let ended = self.rule_jobs.len() != before;
        // A request refused before it started is tried again.
        self.start_pending_rules();
        ended
    }

    /// Policies that rules of this host deploy (their GuardPoints are the
    /// rules', not the key manager's list).
    pub(super) fn rule_policies(&self) -> BTreeSet<String> {
        Rules::read(&self.layout)
            .map(|v| v.iter().map(Rule::policy_name).collect())
            .unwrap_or_default()
    }

    /// The status report for the key manager: version, keys, GuardPoints,
    /// and every rule's state.
    pub(super) fn report_body(&mut self) -> Value {
        let report = self.status();
        let rules: Vec<Value> = Rules::read(&self.layout)
            .map(|v| {
                v.iter()
                    .map(|r| {
                        let a = r.applied.as_ref();
                        json!({
                            "name": r.name,
                            "path": r.path,
                            "generation": r.km_generation,
                            "status": a.map_or("Not applied", |a| a.status.as_str()),
                            "key": a.map(|a| a.key.clone()),
                            "operation": a.map(|a| a.operation.clone()),
                            "percent": a.map_or(0, |a| a.percent),
                            "errors": a.map(|a| a.errors.iter().map(|e| json!({
                                "path": e.path, "reason": e.reason
                            })).collect::<Vec<_>>()).unwrap_or_default(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "keys_available": report["keys_available"],
            "guardpoints": report["guardpoints"],
            "rules": rules,
        })
    }
}
