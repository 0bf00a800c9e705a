//! `voradmin rule create|list|show|apply|remove`: CTE UserSpace's rules on
//! this host. A rule names a path; applying it (CTE's client-rule
//! association) with a key and an operation deploys it: a GuardPoint on
//! the path (or a file's directory) with a policy made from the rule, the
//! files moved to the key by `dataxform` through that GuardPoint (so every
//! file is transformed crash-safely, and files already in the key are
//! skipped by their authenticated header), then the final policy.
//!
//! Operations: `encrypt` (clear -> key), `rotate` (to another key with
//! `--key`, else to the newest version of the key: deep, or `--shallow`),
//! `decrypt` (key -> clear, then the GuardPoint goes). One operation per
//! path at a time; a failed deployment is tried twice more; files that
//! still fail are listed with the reason and the status is `Completed with
//! errors` (the transformation policy stays, so every file stays
//! readable; applying again finishes).

use std::io::{BufRead, IsTerminal};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{CmdResult, FAILED, Failure, call, print, s};
use crate::api::Request;
use crate::state::rules::{Applied, FileError, Rule, Rules};
use crate::state::{GpType, Layout};

/// Attempts of one deployment (CTE: the first and two retries).
const ATTEMPTS: u32 = 3;

fn fail(msg: impl Into<String>) -> Failure {
    Failure(FAILED, msg.into())
}

use super::dataxform::{alive, unix_now as now};

fn split_list(v: Option<String>) -> Vec<String> {
    v.map(|v| {
        v.split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.trim_start_matches('.').to_owned())
            .collect()
    })
    .unwrap_or_default()
}

/// The parameters of `voradmin rule create`.
#[derive(clap::Args)]
pub struct NewRule {
    /// The file or directory to protect.
    #[arg(long)]
    pub path: String,
    /// Default: Rule- and 27 random characters.
    #[arg(long)]
    pub name: Option<String>,
    /// Extensions of the files to encrypt, separated by `;` (default: all files).
    #[arg(long = "include-extensions")]
    pub include_extensions: Option<String>,
    #[arg(long = "is-directory", default_value = "true")]
    pub is_directory: bool,
    #[arg(long = "is-recursive", default_value = "true")]
    pub is_recursive: bool,
    /// Directory names to skip at any depth, separated by `;` (exact, case-sensitive).
    #[arg(long = "ignore-directory")]
    pub ignore_directory: Option<String>,
    /// false: access control only.
    #[arg(long = "encrypt-data", default_value = "true")]
    pub encrypt_data: bool,
}

fn rule_json(r: &Rule) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    // A status left "In Progress" by a process that is gone.
    if let Some(a) = &r.applied
        && a.status == "In Progress"
        && !alive(a.pid)
    {
        v["applied"]["status"] = json!("Interrupted");
    }
    v
}

pub fn create(l: &Layout, json: bool, n: NewRule) -> CmdResult {
    let mut rules = Rules::open(l).map_err(|e| fail(e.to_string()))?;
    let name = match n.name {
        Some(n) => n,
        None => Rule::default_name().map_err(|e| fail(e.to_string()))?,
    };
    if rules.rules.contains_key(&name) {
        return Err(fail(format!("a rule named {name} exists")));
    }
    let path = crate::state::rules::canonical_path(&n.path).map_err(fail)?;
    let r = Rule {
        name: name.clone(),
        path,
        include_extensions: split_list(n.include_extensions),
        is_directory: n.is_directory,
        is_recursive: n.is_recursive,
        ignore_directory: split_list(n.ignore_directory),
        encrypt_data: n.encrypt_data,
        applied: None,
        source: None,
        km_generation: 0,
        km_pending: None,
    };
    r.validate(l).map_err(fail)?;
    if let Some(o) = rules.rules.values().find(|o| o.path == r.path) {
        return Err(fail(format!(
            "rule {} already protects {}; one rule per path",
            o.name, r.path
        )));
    }
    rules.rules.insert(name.clone(), r.clone());
    rules.save().map_err(|e| fail(e.to_string()))?;
    print(json, &rule_json(&r), |_| {
        format!("rule {name} created for {}", r.path)
    });
    Ok(())
}

pub fn list(l: &Layout, json: bool) -> CmdResult {
    let rules = Rules::open(l).map_err(|e| fail(e.to_string()))?;
    let list: Vec<Value> = rules.rules.values().map(rule_json).collect();
    print(json, &Value::Array(list.clone()), |_| {
        if list.is_empty() {
            return "No rules".into();
        }
        let mut out = vec![format!(
            "{:<34}  {:<30}  {:<21}  {:<12}  Done",
            "Name", "Path", "Status", "Key"
        )];
        for v in &list {
            let a = &v["applied"];
            out.push(format!(
                "{:<34}  {:<30}  {:<21}  {:<12}  {}",
                s(v, "name"),
                s(v, "path"),
                if a.is_null() {
                    "Not applied"
                } else {
                    s(a, "status")
                },
                s(a, "key"),
                if a.is_null() {
                    String::new()
                } else {
                    format!("{}%", a["percent"])
                }
            ));
        }
        out.join("\n")
    });
    Ok(())
}

pub fn show(l: &Layout, json: bool, name: &str) -> CmdResult {
    let rules = Rules::open(l).map_err(|e| fail(e.to_string()))?;
    let r = rules
        .rules
        .get(name)
        .ok_or_else(|| fail(format!("no rule named {name}")))?;
    let v = rule_json(r);
    print(json, &v, |v| {
        let a = &v["applied"];
        let mut out = vec![
            format!("Name:               {}", s(v, "name")),
            format!("Path:               {}", s(v, "path")),
            format!("Is directory:       {}", v["is_directory"]),
            format!("Is recursive:       {}", v["is_recursive"]),
            format!("Include extensions: {}", r.include_extensions.join(";")),
            format!("Ignore directory:   {}", r.ignore_directory.join(";")),
            format!("Encrypt data:       {}", v["encrypt_data"]),
        ];
        if a.is_null() {
            out.push("Status:             Not applied".into());
        } else {
            out.push(format!("Key:                {}", s(a, "key")));
            out.push(format!("Operation:          {}", s(a, "operation")));
            out.push(format!("Status:             {}", s(a, "status")));
            out.push(format!("Progress:           {}%", a["percent"]));
            out.push(format!("Attempts:           {}", a["attempts"]));
            for e in a["errors"].as_array().into_iter().flatten() {
                out.push(format!("  failed {}: {}", s(e, "path"), s(e, "reason")));
            }
        }
        out.join("\n")
    });
    Ok(())
}

pub fn remove(l: &Layout, json: bool, name: &str) -> CmdResult {
    let mut rules = Rules::open(l).map_err(|e| fail(e.to_string()))?;
    let r = rules
        .rules
        .get(name)
        .ok_or_else(|| fail(format!("no rule named {name}")))?;
    if let Some(a) = &r.applied
        && a.status != "Decrypted"
    {
        return Err(fail(format!(
            "rule {name} is applied ({}); decrypt it first (voradmin rule apply {name} --operation decrypt)",
            a.status
        )));
    }
    rules.rules.remove(name);
    rules.save().map_err(|e| fail(e.to_string()))?;
    print(json, &json!({ "name": name, "removed": true }), |_| {
        format!("rule {name} removed")
    });
    Ok(())
}

/// What one deployment does.
#[derive(Debug, Clone)]
struct Plan {
    /// The key files are in before (`clear_key`).
    from: String,
    /// The key they end in.
    to: String,
    /// The `dataxform` operation.
    xform: &'static str,
    /// The policy during the transformation.
    during: Value,
    /// The policy after it (`None`: unguard: decrypted).
    after: Option<Value>,
    operation: &'static str,
}

fn plan(r: &Rule, operation: &str, key: Option<String>, shallow: bool) -> Result<Plan, Failure> {
    let applied = r.applied.as_ref().filter(|a| a.status != "Decrypted");
    // An operation that did not finish (errors, or its process died) is
    // finished first: run again with the keys it began with; only a
    // decrypt may follow an unfinished encrypt (it undoes it).
    if let Some(u) = applied.filter(|a| {
        a.status == "Completed with errors" || (a.status == "In Progress" && !alive(a.pid))
    }) {
        let same = operation == u.operation;
        let undo = operation == "decrypt" && u.operation == "encrypt";
        if !same && !undo {
            return Err(fail(format!(
                "the last operation on rule {} ({}, {} -> {}) did not finish ({}); apply it again first: --operation {}",
                r.name,
                u.operation,
                u.from_key,
                u.key,
                if u.status == "In Progress" {
                    "interrupted"
                } else {
                    u.status.as_str()
                },
                u.operation
            )));
        }
        if let Some(k) = &key
            && same
            && *k != u.key
        {
            return Err(fail(format!(
                "the unfinished {} of rule {} goes to key {}, not {k}; apply it again with that key",
                u.operation, r.name, u.key
            )));
        }
        // A deep or shallow rotation keeps one key: planned afresh below.
        if same && u.from_key != u.key {
            let (from, to) = (u.from_key.clone(), u.key.clone());
            return Ok(Plan {
                during: r.policy(&from, Some(&to)),
                after: if u.operation == "decrypt" {
                    None
                } else {
                    Some(r.policy(&to, None))
                },
                from,
                to,
                xform: "--rekey",
                operation: match u.operation.as_str() {
                    "encrypt" => "encrypt",
                    "rotate" => "rotate",
                    _ => "decrypt",
                },
            });
        }
        if undo {
            // Files are in the encrypt's key or still clear.
            return Ok(Plan {
                from: u.key.clone(),
                to: "clear_key".into(),
                xform: "--rekey",
                during: r.policy(&u.key, Some("clear_key")),
                after: None,
                operation: "decrypt",
            });
        }
    }
    let status = applied.map(|a| a.status.as_str()).unwrap_or("");
    let current = applied.map(|a| a.key.clone());
    match operation {
        "encrypt" => {
            if !r.encrypt_data {
                return Ok(Plan {
                    from: "clear_key".into(),
                    to: "clear_key".into(),
                    xform: "",
                    during: r.policy("clear_key", None),
                    after: Some(r.policy("clear_key", None)),
                    operation: "encrypt",
                });
            }
            let key = key
                .or_else(|| current.clone())
                .ok_or_else(|| fail("encrypt needs --key KEY"))?;
            if let Some(c) = &current
                && *c != key
            {
                return Err(fail(format!(
                    "rule {} is applied with key {c} ({status}); change keys with --operation rotate --key {key}",
                    r.name
                )));
            }
            Ok(Plan {
                from: "clear_key".into(),
                to: key.clone(),
                xform: "--rekey",
                during: r.policy("clear_key", Some(&key)),
                after: Some(r.policy(&key, None)),
                operation: "encrypt",
            })
        }
        "rotate" => {
            let Some(c) = current else {
                return Err(fail(format!(
                    "rule {} is not applied; encrypt first",
                    r.name
                )));
            };
            if !r.encrypt_data {
                return Err(fail(format!(
                    "rule {} is access control only: nothing to rotate",
                    r.name
                )));
            }
            let from = c.clone();
            match key {
                Some(k) if k != from => Ok(Plan {
                    from: from.clone(),
                    to: k.clone(),
                    xform: "--rekey",
                    during: r.policy(&from, Some(&k)),
                    after: Some(r.policy(&k, None)),
                    operation: "rotate",
                }),
                _ => Ok(Plan {
                    from: c.clone(),
                    to: c.clone(),
                    xform: if shallow { "--shallow" } else { "--deep" },
                    during: r.policy(&c, None),
                    after: Some(r.policy(&c, None)),
                    operation: "rotate",
                }),
            }
        }
        "decrypt" => {
            let Some(c) = current else {
                return Err(fail(format!("rule {} is not applied", r.name)));
            };
            let from = c;
            Ok(Plan {
                xform: if from == "clear_key" { "" } else { "--rekey" },
                during: if from == "clear_key" {
                    r.policy("clear_key", None)
                } else {
                    r.policy(&from, Some("clear_key"))
                },
                from,
                to: "clear_key".into(),
                after: None,
                operation: "decrypt",
            })
        }
        other => Err(fail(format!(
            "--operation {other}: encrypt, rotate or decrypt"
        ))),
    }
}

/// Record `f(applied)` for rule `name` (under the rules lock).
fn update(l: &Layout, name: &str, f: impl FnOnce(&mut Applied)) {
    if let Ok(mut rules) = Rules::open(l)
        && let Some(a) = rules.rules.get_mut(name).and_then(|r| r.applied.as_mut())
    {
        f(a);
        a.updated = now();
        let _ = rules.save();
    }
}

pub fn apply(
    l: &Layout,
    json: bool,
    name: &str,
    operation: &str,
    key: Option<String>,
    shallow: bool,
) -> CmdResult {
    // The plan and its key, asked of vmd without holding the rules lock
    // (vmd takes it too).
    let r = Rules::open(l)
        .map_err(|e| fail(e.to_string()))?
        .rules
        .get(name)
        .cloned()
        .ok_or_else(|| fail(format!("no rule named {name}")))?;
    let plan = plan(&r, operation, key, shallow)?;
    if plan.to != "clear_key" {
        call(
            l,
            Request::KeyShow {
                name: plan.to.clone(),
            },
        )
        .map_err(|e| fail(format!("key {}: {}", plan.to, e.1)))?;
    }
    // Claim the path: one operation per path at a time.
    let rule = {
        let mut rules = Rules::open(l).map_err(|e| fail(e.to_string()))?;
        let gp = r.guard_point();
        if let Some(busy) = rules.rules.values().find(|o| {
            o.applied
                .as_ref()
                .is_some_and(|a| a.status == "In Progress" && alive(a.pid))
                && (o.name == r.name || o.guard_point() == gp)
        }) {
            return Err(fail(format!(
                "an operation of rule {} is in progress on {}; one at a time",
                busy.name,
                gp.display()
            )));
        }
        let rule = rules
            .rules
            .get_mut(name)
            .ok_or_else(|| fail("rule vanished"))?;
        if rule.applied != r.applied {
            return Err(fail(format!("rule {name} changed meanwhile; apply again")));
        }
        // What the key manager asked for has started.
        rule.km_pending = None;
        rule.applied = Some(Applied {
            key: plan.to.clone(),
            from_key: plan.from.clone(),
            operation: plan.operation.into(),
            status: "In Progress".into(),
            percent: 0,
            errors: Vec::new(),
            attempts: 0,
            pid: std::process::id(),
            updated: now(),
        });
        let copy = rule.clone();
        rules.save().map_err(|e| fail(e.to_string()))?;
        copy
    };
    let outcome = deploy(l, json, &rule, &plan);
    let (status, errors) = match &outcome {
        Ok(()) if plan.after.is_none() => ("Decrypted", Vec::new()),
        Ok(()) if !rule.encrypt_data => ("Applied", Vec::new()),
        Ok(()) => ("Encrypted", Vec::new()),
        Err(errs) => ("Completed with errors", errs.clone()),
    };
    update(l, name, |a| {
        a.status = status.into();
        a.errors = errors.clone();
        a.pid = 0;
        if outcome.is_ok() {
            a.percent = 100;
        }
    });
    let rules = Rules::open(l).map_err(|e| fail(e.to_string()))?;
    let v = rules.rules.get(name).map(rule_json).unwrap_or_default();
    drop(rules);
    print(json, &v, |_| {
        let mut out = vec![format!("rule {name}: {} {status}", plan.operation)];
        for e in &errors {
            out.push(format!("  failed {}: {}", e.path, e.reason));
        }
        out.join("\n")
    });
    match outcome {
        Ok(()) => Ok(()),
        Err(_) => Err(Failure(
            FAILED,
            format!("rule {name}: completed with errors; fix them and apply again"),
        )),
    }
}

/// Policy, GuardPoint, transformation (three attempts), final policy.
fn deploy(l: &Layout, json: bool, r: &Rule, plan: &Plan) -> Result<(), Vec<FileError>> {
    let whole = |why: String| {
        vec![FileError {
            path: r.path.clone(),
            reason: why,
        }]
    };
    let gp = r.guard_point();
    let gp_s = gp.to_string_lossy().into_owned();
    let pname = r.policy_name();
    // A policy of that name that this rule did not make is never replaced
    // (another GuardPoint may use it).
    if let Ok(existing) = call(
        l,
        Request::PolicyShow {
            name: pname.clone(),
        },
    ) && existing["description"] != plan.during["description"]
    {
        return Err(whole(format!(
            "a policy named {pname} exists and was not made by this rule"
        )));
    }
    call(
        l,
        Request::PolicyApply {
            json: plan.during.to_string(),
        },
    )
    .map_err(|e| whole(format!("policy: {}", e.1)))?;
    let status = call(l, Request::Status).map_err(|e| whole(e.1))?;
    let existing = status["guardpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| s(g, "path") == gp_s)
        .cloned();
    match existing {
        Some(g) if s(&g, "policy") != pname => {
            return Err(whole(format!(
                "{gp_s} is a GuardPoint of policy {}, not of this rule",
                s(&g, "policy")
            )));
        }
        Some(g) if s(&g, "status") == "guarded" => {}
        Some(_) => {
            let v = call(
                l,
                Request::Guard {
                    path: gp_s.clone(),
                    policy: None,
                    gp_type: None,
                },
            )
            .map_err(|e| whole(format!("guard {gp_s}: {}", e.1)))?;
            if s(&v, "status") != "guarded" {
                return Err(whole(format!("guard {gp_s}: {}", s(&v, "reason"))));
            }
        }
        None => {
            let v = call(
                l,
                Request::Guard {
                    path: gp_s.clone(),
                    policy: Some(pname.clone()),
                    gp_type: Some(GpType::Auto),
                },
            )
            .map_err(|e| whole(format!("guard {gp_s}: {}", e.1)))?;
            if s(&v, "status") != "guarded" {
                return Err(whole(format!("guard {gp_s}: {}", s(&v, "reason"))));
            }
        }
    }
    if !plan.xform.is_empty() {
        let mut errors = Vec::new();
        for attempt in 1..=ATTEMPTS {
            update(l, &r.name, |a| a.attempts = attempt);
            match transform(l, json, r, plan) {
                Ok(()) => {
                    errors.clear();
                    break;
                }
                Err(e) => errors = e,
            }
            if attempt < ATTEMPTS {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
    }
    match &plan.after {
        Some(p) => {
            call(
                l,
                Request::PolicyApply {
                    json: p.to_string(),
                },
            )
            .map_err(|e| whole(format!("final policy: {}", e.1)))?;
        }
        None => {
            call(
                l,
                Request::Unguard {
                    path: gp_s.clone(),
                    keep: false,
                },
            )
            .map_err(|e| whole(format!("unguard {gp_s}: {}", e.1)))?;
        }
    }
    Ok(())
}

/// One `dataxform` run over the GuardPoint, its progress recorded as the
/// rule's percent of files; the files it could not do, with the reason.
fn transform(l: &Layout, json: bool, r: &Rule, plan: &Plan) -> Result<(), Vec<FileError>> {
    let exe = std::env::current_exe().map_err(|e| {
        vec![FileError {
            path: r.path.clone(),
            reason: e.to_string(),
        }]
    })?;
    let gp = r.guard_point();
    let mut child = Command::new(exe)
        .arg0("dataxform")
        .args([plan.xform, "--gp"])
        .arg(&gp)
        .args(["-y", "--json"])
        .env("GUARDFS_ROOT", &l.root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            vec![FileError {
                path: r.path.clone(),
                reason: format!("dataxform: {e}"),
            }]
        })?;
    let bar = (!json && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(100);
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} [{wide_bar}] {pos}%")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b.set_message(format!("rule {} {}", r.name, plan.operation));
        b
    });
    let mut errors = Vec::new();
    let mut summary = false;
    let mut last = Instant::now();
    // A file rule: only its own file counts.
    let canon = |p: &str| crate::state::rules::canonical_path(p).unwrap_or_else(|_| p.to_owned());
    let own = |p: &str| r.is_directory || canon(p) == r.path;
    if let Some(out) = child.stdout.take() {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            match s(&v, "event") {
                "progress" => {
                    let (d, t) = (
                        v["files_done"].as_u64().unwrap_or(0),
                        v["files_total"].as_u64().unwrap_or(0),
                    );
                    let pct = (d * 100).checked_div(t).unwrap_or(100) as u32;
                    if let Some(b) = &bar {
                        b.set_position(u64::from(pct));
                    }
                    if last.elapsed() >= Duration::from_millis(500) {
                        last = Instant::now();
                        update(l, &r.name, |a| a.percent = pct);
                    }
                }
                "summary" => {
                    summary = true;
                    for sk in v["skipped"].as_array().into_iter().flatten() {
                        if own(s(sk, "path")) {
                            errors.push(FileError {
                                path: s(sk, "path").into(),
                                reason: s(sk, "why").into(),
                            });
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let stderr = child
        .stderr
        .take()
        .map(|mut e| {
            let mut t = String::new();
            let _ = std::io::Read::read_to_string(&mut e, &mut t);
            t
        })
        .unwrap_or_default();
    let st = child.wait();
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    match st {
        Ok(st) if st.success() => Ok(()),
        // A run that reported its files, none of them the rule's (a file
        // rule: the others in its directory do not count against it).
        Ok(_) if summary && !r.is_directory && errors.is_empty() => Ok(()),
        Ok(_) if !errors.is_empty() => Err(errors),
        _ => Err(vec![FileError {
            path: r.path.clone(),
            reason: format!("dataxform failed: {}", stderr.trim()),
        }]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(applied: Option<(&str, &str, &str, &str)>) -> Rule {
        Rule {
            name: "r".into(),
            path: "/data".into(),
            include_extensions: vec![],
            is_directory: true,
            is_recursive: true,
            ignore_directory: vec![],
            encrypt_data: true,
            applied: applied.map(|(op, from, to, status)| Applied {
                key: to.into(),
                from_key: from.into(),
                operation: op.into(),
                status: status.into(),
                percent: 0,
                errors: vec![],
                attempts: 1,
                // No such process: an "In Progress" left by a dead run.
                pid: u32::MAX,
                updated: 0,
            }),
            source: None,
            km_generation: 0,
            km_pending: None,
        }
    }

    fn keys(p: &Plan) -> (&str, &str, &str) {
        (p.from.as_str(), p.to.as_str(), p.xform)
    }

    #[test]
    fn operations_follow_from_what_was_done_and_what_did_not_finish() {
        // Fresh: encrypt needs a key; rotate and decrypt need an applied rule.
        assert!(plan(&rule(None), "encrypt", None, false).is_err());
        let p = plan(&rule(None), "encrypt", Some("k".into()), false).unwrap();
        assert_eq!(keys(&p), ("clear_key", "k", "--rekey"));
        assert!(plan(&rule(None), "rotate", None, false).is_err());
        assert!(plan(&rule(None), "decrypt", None, false).is_err());
        assert!(plan(&rule(None), "shred", None, false).is_err());
        // Encrypted with k: rotate to k2, or deep/shallow within k; decrypt;
        // encrypting with another key is a rotation.
        let done = rule(Some(("encrypt", "clear_key", "k", "Encrypted")));
        let p = plan(&done, "rotate", Some("k2".into()), false).unwrap();
        assert_eq!(keys(&p), ("k", "k2", "--rekey"));
        assert_eq!(
            keys(&plan(&done, "rotate", None, false).unwrap()),
            ("k", "k", "--deep")
        );
        assert_eq!(
            keys(&plan(&done, "rotate", None, true).unwrap()),
            ("k", "k", "--shallow")
        );
        let p = plan(&done, "decrypt", None, false).unwrap();
        assert_eq!(keys(&p), ("k", "clear_key", "--rekey"));
        assert!(p.after.is_none(), "decrypt ends unguarded");
        assert!(plan(&done, "encrypt", Some("k2".into()), false).is_err());
        // A rotation k -> k2 that did not finish (errors, or its process
        // died): only the same rotation, from k again.
        for status in ["Completed with errors", "In Progress"] {
            let half = rule(Some(("rotate", "k", "k2", status)));
            let p = plan(&half, "rotate", None, false).unwrap();
            assert_eq!(keys(&p), ("k", "k2", "--rekey"), "{status}");
            assert!(plan(&half, "rotate", Some("k3".into()), false).is_err());
            let e = plan(&half, "decrypt", None, false).err().unwrap();
            assert!(e.1.contains("did not finish"), "{}", e.1);
            assert!(plan(&half, "encrypt", Some("k2".into()), false).is_err());
        }
        // An encrypt that did not finish may be undone.
        let half = rule(Some(("encrypt", "clear_key", "k", "Completed with errors")));
        let p = plan(&half, "decrypt", None, false).unwrap();
        assert_eq!(keys(&p), ("k", "clear_key", "--rekey"));
        let p = plan(&half, "encrypt", None, false).unwrap();
        assert_eq!(keys(&p), ("clear_key", "k", "--rekey"));
        // Decrypted: as if fresh.
        let gone = rule(Some(("decrypt", "k", "clear_key", "Decrypted")));
        assert!(plan(&gone, "rotate", None, false).is_err());
        assert!(plan(&gone, "encrypt", Some("k".into()), false).is_ok());
    }
}
