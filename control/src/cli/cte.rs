//! CTE's command syntax and output shapes: `secfsd -status guard`,
//! `secfsd -guard PATH`, `vmsec status`, `vmsec passwd` and friends (see
//! the CTE agent guide). Both accept `--root DIR` and `--json` anywhere.

use serde_json::Value;

use super::{CmdResult, FAILED, Failure, USAGE, call, layout, password, require_root, s};
use crate::api::Request;

const SECFSD_USAGE: &str =
    "usage: secfsd -status guard [-v|-tree] | -status keys|auth|lockstat|logger|policy|pslist|xform
       secfsd -guard PATH | -unguard PATH | -version
       (options: --root DIR, --json)";

const VMSEC_USAGE: &str =
    "usage: vmsec status | checkinstall | version | vmdconfig | passwd [-p PASSWORD]
       (options: --root DIR, --json)";

/// Split off `--root DIR` and `--json`.
fn common(args: &[String]) -> Result<(Option<std::path::PathBuf>, bool, Vec<String>), Failure> {
    let (mut root, mut json, mut rest) = (None, false, Vec::new());
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--root" => {
                root = Some(
                    it.next()
                        .ok_or_else(|| Failure(USAGE, "--root needs a directory".into()))?
                        .into(),
                )
            }
            "--json" => json = true,
            _ => rest.push(a.clone()),
        }
    }
    Ok((root, json, rest))
}

fn type_name(t: &str) -> &str {
    if t == "auto" { "local" } else { t }
}

/// The `secfsd -status guard` table.
pub fn guard_table(v: &Value) -> String {
    let gps = v["guardpoints"].as_array().cloned().unwrap_or_default();
    if gps.is_empty() {
        return "No GuardPoints".into();
    }
    let w = gps
        .iter()
        .map(|g| s(g, "path").len())
        .max()
        .unwrap_or(10)
        .max(10);
    let pw = gps
        .iter()
        .map(|g| s(g, "policy").len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut out = vec![
        format!(
            "{:<w$}  {:<pw$}  {:<6}  {:<11}  {:<12}  Reason",
            "GuardPoint", "Policy", "Type", "ConfigState", "Status"
        ),
        format!(
            "{:<w$}  {:<pw$}  {:<6}  {:<11}  {:<12}  ------",
            "----------", "------", "----", "-----------", "------"
        ),
    ];
    for g in &gps {
        out.push(format!(
            "{:<w$}  {:<pw$}  {:<6}  {:<11}  {:<12}  {}",
            s(g, "path"),
            s(g, "policy"),
            type_name(s(g, "type")),
            s(g, "config_state"),
            s(g, "status"),
            s(g, "reason")
        ));
    }
    out.join("\n")
}

fn guard_blocks(v: &Value) -> String {
    let gps = v["guardpoints"].as_array().cloned().unwrap_or_default();
    gps.iter()
        .enumerate()
        .map(|(i, g)| {
            format!(
                "GuardPoint: {}\n\nPolicy:         {}\nDirectory:      {}\nType:           {}\nConfigState:    {}\nStatus:         {}\nReason:         {}\n",
                i + 1,
                s(g, "policy"),
                s(g, "path"),
                type_name(s(g, "type")),
                s(g, "config_state"),
                s(g, "status"),
                s(g, "reason")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn guard_tree(v: &Value) -> String {
    let gps = v["guardpoints"].as_array().cloned().unwrap_or_default();
    let mut out = vec!["/".to_owned()];
    for (i, g) in gps.iter().enumerate() {
        let last = i + 1 == gps.len();
        out.push(format!(
            "{} {} [{}, {}, {}]",
            if last { "└──" } else { "├──" },
            s(g, "path"),
            s(g, "policy"),
            type_name(s(g, "type")),
            s(g, "status")
        ));
    }
    out.join("\n")
}

fn sha256_upper(path: &str) -> String {
    match std::fs::read(path) {
        Ok(b) => {
            hex::encode_upper(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &b).as_ref())
        }
        Err(e) => format!("(cannot read: {e})"),
    }
}

/// `secfsd ...`
pub fn secfsd(args: Vec<String>) -> CmdResult {
    let (root, json, rest) = common(&args)?;
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    if matches!(rest.as_slice(), ["-version"]) {
        println!("secfsd (GuardFS) version {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    if matches!(rest.as_slice(), [] | ["-h"] | ["--help"]) {
        println!("{SECFSD_USAGE}");
        return if rest.is_empty() {
            Err(Failure(USAGE, String::new()))
        } else {
            Ok(())
        };
    }
    require_root()?;
    let l = layout(root.as_deref())?;
    let out = |v: &Value, text: String| {
        if json {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        } else {
            println!("{text}");
        }
    };
    match rest.as_slice() {
        ["-guard", path] | ["-unguard", path] => {
            let path = super::abs(path)?;
            let v = if rest[0] == "-guard" {
                call(
                    &l,
                    Request::Guard {
                        path,
                        policy: None,
                        gp_type: None,
                    },
                )?
            } else {
                call(&l, Request::Unguard { path, keep: true })?
            };
            let text = match s(&v, "status") {
                "guarded" => format!("{}: guarded", s(&v, "path")),
                _ if rest[0] == "-unguard" => format!("{}: unguarded", s(&v, "path")),
                _ => format!(
                    "{}: not guarded: {} (vmd retries)",
                    s(&v, "path"),
                    s(&v, "reason")
                ),
            };
            out(&v, text);
            Ok(())
        }
        ["-status", "xform"] => {
            let list = super::dataxform::statuses(&l);
            let v = Value::Array(list.clone());
            out(&v, super::dataxform::status_table(&list));
            Ok(())
        }
        ["-status", what, extra @ ..] => {
            let v = call(&l, Request::Status)?;
            let text = match (*what, extra) {
                ("guard", []) => guard_table(&v),
                ("guard", ["-v"]) => guard_blocks(&v),
                ("guard", ["-tree"]) => guard_tree(&v),
                ("keys", []) => if v["keys_available"].as_bool() == Some(true) {
                    "Encryption keys are available"
                } else {
                    "Encryption keys are not available"
                }
                .to_owned(),
                ("auth", []) => s(&v, "host_settings")
                    .lines()
                    .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                    .map(|line| match line.strip_prefix("|authenticator|") {
                        Some(bin) => format!("{line}\n{}", sha256_upper(bin.trim())),
                        None => line.to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
                ("lockstat", []) => "FS Agent Lock: false\nSystem Lock: false".to_owned(),
                ("logger", []) => format!(
                    "Audit log: {}\nSyslog: enabled\nLog directory: {}",
                    s(&v, "audit_log"),
                    s(&v, "log_dir")
                ),
                ("policy", []) => {
                    let gps = v["guardpoints"].as_array().cloned().unwrap_or_default();
                    let mut lines = vec![
                        format!("{:<32}  GuardPoints", "Policy"),
                        format!("{:<32}  -----------", "------"),
                    ];
                    for p in v["policies"].as_array().cloned().unwrap_or_default() {
                        let name = p.as_str().unwrap_or("");
                        let used: Vec<&str> = gps
                            .iter()
                            .filter(|g| s(g, "policy") == name)
                            .map(|g| s(g, "path"))
                            .collect();
                        lines.push(format!(
                            "{name:<32}  {}",
                            if used.is_empty() {
                                "-".into()
                            } else {
                                used.join(", ")
                            }
                        ));
                    }
                    lines.join("\n")
                }
                ("pslist", []) => {
                    let mut lines = vec![format!("{:>8}  Process", "PID")];
                    lines.push(format!("{:>8}  vmd", v["vmd_pid"]));
                    if v["secfs_running"].as_bool() == Some(true) {
                        lines.push(format!("{:>8}  secfs", v["secfs_pid"]));
                    }
                    lines.join("\n")
                }
                _ => return Err(Failure(USAGE, SECFSD_USAGE.into())),
            };
            out(&v, text);
            Ok(())
        }
        _ => Err(Failure(USAGE, SECFSD_USAGE.into())),
    }
}

/// `vmsec status` as key=value lines.
fn vmsec_status(v: &Value) -> String {
    let mut out = vec![
        format!("FILE_FORMAT=2"),
        format!("FILE_GENERATED={}", s(v, "vmd_started")),
    ];
    let gps = v["guardpoints"].as_array().cloned().unwrap_or_default();
    for (i, g) in gps.iter().enumerate() {
        let n = i + 1;
        out.push(format!("GP_{n}_Policy={}", s(g, "policy")));
        out.push(format!("GP_{n}_Dir={}", s(g, "path")));
        out.push(format!("GP_{n}_gtype={}", s(g, "type")));
        out.push(format!("GP_{n}_mode={}", g["mode"].as_str().unwrap_or("-")));
        out.push(format!("GP_{n}_config_state={}", s(g, "config_state")));
        out.push(format!("GP_{n}_status={}", s(g, "status")));
        out.push(format!("GP_{n}_statuschk_tm={}", s(v, "vmd_started")));
        out.push(format!("GP_{n}_config_op_retry_cnt={}", g["retry_count"]));
        out.push(format!(
            "GP_{n}_config_op_attempt_tm={}",
            s(g, "attempt_time")
        ));
        out.push(format!("GP_{n}_reason={}", s(g, "reason")));
        out.push(format!(
            "GP_{n}_usage={}",
            if s(g, "status") == "guarded" {
                "guarded"
            } else {
                "free"
            }
        ));
    }
    out.push(format!("TOTAL_GP={}", gps.len()));
    out.push(format!(
        "KEYS_AVAILABLE={}",
        if v["keys_available"].as_bool() == Some(true) {
            "TRUE"
        } else {
            "FALSE"
        }
    ));
    out.push(format!("HOST_KEY_PROTECTION={}", s(v, "host_key")));
    out.push(format!("sdk_version={}", s(v, "version")));
    out.push("coreguard_locked=false".into());
    out.push("system_locked=false".into());
    if let Some(km) = v.get("key_manager").filter(|k| !k.is_null()) {
        out.push(format!("vmd_URL={}", s(km, "url")));
        out.push(format!("vmd_PRIMARY_URL={}", s(km, "url")));
        out.push(format!("vmd_CLIENT_ID={}", s(km, "client_id")));
        out.push(format!("vmd_SERVER_REACHABLE={}", km["reachable"]));
        if let Some(e) = km["last_error"].as_str() {
            out.push(format!("vmd_LAST_ERROR={e}"));
        }
    }
    out.push(format!("vmd_pid={}", v["vmd_pid"]));
    out.push(format!("secfs_pid={}", v["secfs_pid"]));
    out.push(format!("secfs_running={}", v["secfs_running"]));
    let policies = v["policies"].as_array().cloned().unwrap_or_default();
    for (i, p) in policies.iter().enumerate() {
        out.push(format!(
            "policy_name_{}={}",
            i + 1,
            p.as_str().unwrap_or("")
        ));
    }
    out.push(format!("policies={}", policies.len()));
    let keys = v["keys"].as_array().cloned().unwrap_or_default();
    for (i, k) in keys.iter().enumerate() {
        out.push(format!("KEY_{}_NAME={}", i + 1, s(k, "name")));
        out.push(format!("KEY_{}_MODE={}", i + 1, s(k, "mode")));
        out.push(format!("KEY_{}_VERSION={}", i + 1, k["latest"]));
        out.push(format!(
            "KEY_{}_PERSISTENT_ON_CLIENT={}",
            i + 1,
            k["persistent"]
        ));
    }
    out.push(format!("TOTAL_KEYS={}", keys.len()));
    let auth: Vec<&str> = s(v, "host_settings")
        .lines()
        .filter(|l| l.starts_with("|authenticator|"))
        .collect();
    for (i, a) in auth.iter().enumerate() {
        out.push(format!(
            "AUTHBIN_{}={a} {}",
            i + 1,
            sha256_upper(a.trim_start_matches("|authenticator|").trim())
        ));
    }
    out.push(format!("TOTAL_AUTHBIN={}", auth.len()));
    out.join("\n")
}

/// `vmsec ...`
pub fn vmsec(args: Vec<String>) -> CmdResult {
    let (root, json, rest) = common(&args)?;
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    match rest.as_slice() {
        ["version"] => {
            println!(
                "version {}\nGuardFS vmsec\nLicensed under the Apache License, Version 2.0.",
                env!("CARGO_PKG_VERSION")
            );
            return Ok(());
        }
        [] | ["-h"] | ["--help"] => {
            println!("{VMSEC_USAGE}");
            return if rest.is_empty() {
                Err(Failure(USAGE, String::new()))
            } else {
                Ok(())
            };
        }
        _ => {}
    }
    require_root()?;
    let l = layout(root.as_deref())?;
    match rest.as_slice() {
        ["status"] => {
            let v = call(&l, Request::Status)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                println!("{}", vmsec_status(&v));
            }
            Ok(())
        }
        ["checkinstall"] => {
            let v = call(&l, Request::Status)?;
            if v["secfs_running"].as_bool() == Some(true) {
                println!("The secfs service is installed and running.");
                Ok(())
            } else {
                Err(Failure(
                    FAILED,
                    "The secfs service is not running (vmd restarts it within seconds).".into(),
                ))
            }
        }
        ["vmdconfig"] => {
            let v = call(&l, Request::Config)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                println!("GUARDFS_AGENT_CONFIG_FILE={}", s(&v, "agent_conf"));
                println!("GUARDFS_AGENT_VERSION={}", env!("CARGO_PKG_VERSION"));
                println!("GUARDFS_ROOT={}", s(&v, "root"));
                println!("run_dir={}", s(&v, "run_dir"));
                println!("log_dir={}", s(&v, "log_dir"));
                for e in v["entries"].as_array().cloned().unwrap_or_default() {
                    println!(
                        "{}={}",
                        e[0].as_str().unwrap_or(""),
                        e[1].as_str().unwrap_or("")
                    );
                }
            }
            Ok(())
        }
        ["passwd"] | ["passwd", "-p", _] => {
            let given = rest.get(2).map(|p| (*p).to_owned());
            let pw = password(given, "Please enter password: ")?;
            call(&l, Request::Passwd { password: pw })?;
            println!("OK passwd");
            Ok(())
        }
        ["challenge"] => {
            let v = call(&l, Request::Challenge)?;
            println!(
                "Client: {}\nChallenge: {}",
                s(&v, "client"),
                s(&v, "challenge")
            );
            println!(
                "Get the response with: keymgr challenge respond {} <challenge>",
                s(&v, "client")
            );
            let response = password(None, "Response: ")?;
            call(&l, Request::ChallengeResponse { response })?;
            println!("OK challenge");
            Ok(())
        }
        _ => Err(Failure(USAGE, VMSEC_USAGE.into())),
    }
}
