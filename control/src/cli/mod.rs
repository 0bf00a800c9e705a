//! The admin commands: `voradmin`, and the same binary under CTE's names
//! (`secfsd`, `vmsec`), chosen by argv[0]. They are thin clients of vmd's
//! local API; only root may run them. Exit codes: 0 ok, 1 the request
//! failed, 2 usage, 3 not root, 4 vmd not running.

pub mod cte;
pub mod dataxform;
pub mod register;
pub mod rule;
pub mod vmutil;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::api::{self, CallError, Request};
use crate::state::{GpType, Layout, default_root};

pub const OK: u8 = 0;
pub const FAILED: u8 = 1;
pub const USAGE: u8 = 2;
pub const NOT_ROOT: u8 = 3;
pub const NO_VMD: u8 = 4;

const VORADMIN_AFTER: &str = "The same binary, run as secfsd, vmsec, register_host or vmutil, takes CTE's syntax for those commands.\nExit codes: 0 ok, 1 the request failed, 2 usage, 3 not root, 4 vmd not running.";

/// A failed command: message and exit code.
#[derive(Debug)]
pub struct Failure(pub u8, pub String);

pub type CmdResult = Result<(), Failure>;

/// Where the agent lives: `--root`, `$GUARDFS_ROOT`, or the default.
pub fn layout(root: Option<&Path>) -> Result<Layout, Failure> {
    let root = root.map(Path::to_path_buf).unwrap_or_else(default_root);
    Layout::open(&root).map_err(|e| Failure(FAILED, e.to_string()))
}

pub fn require_root() -> CmdResult {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(Failure(NOT_ROOT, "only root may run this command".into()))
    }
}

/// Call vmd; a refusal becomes a failure with vmd's message.
pub fn call(layout: &Layout, req: Request) -> Result<Value, Failure> {
    match api::call(&layout.run_dir, &req, Duration::from_secs(120)) {
        Ok(r) if r.ok => Ok(r.data),
        Ok(r) => Err(Failure(
            FAILED,
            r.error.unwrap_or_else(|| "vmd refused the request".into()),
        )),
        Err(e @ CallError::NotRunning { .. }) => Err(Failure(NO_VMD, e.to_string())),
        Err(e) => Err(Failure(FAILED, e.to_string())),
    }
}

#[derive(Parser)]
#[command(
    name = "voradmin",
    about = "GuardFS administration (talks to vmd)",
    after_help = VORADMIN_AFTER
)]
struct Voradmin {
    /// Install root (default: $GUARDFS_ROOT or /opt/guardfs/agent).
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Local keys: create, rotate, list, show (never prints key material).
    #[command(subcommand)]
    Key(KeyCmd),
    /// Policies (CipherTrust-style JSON): apply, list, show.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Host settings (`|authenticator|`, `|trust|` lines): set, show.
    #[command(subcommand)]
    Hostsettings(HostCmd),
    /// Register DIR as a GuardPoint with a policy and guard it.
    Guard {
        dir: String,
        #[arg(long)]
        policy: String,
        /// auto: guarded whenever vmd runs; manual: only on `secfsd -guard`.
        #[arg(long = "type", default_value = "auto")]
        gp_type: GpType,
    },
    /// Unguard DIR and remove it from the GuardPoints.
    Unguard { dir: String },
    /// GuardPoints, keys and services.
    Status,
    /// secfs: a file's header facts, or a secfs parameter.
    #[command(subcommand)]
    Secfs(SecfsCmd),
    /// The host key that seals local keys.
    #[command(subcommand)]
    Hostkey(HostkeyCmd),
    /// Start vmd if needed, create a local key and a default policy, and
    /// guard DIR (default /srv/guardfs-demo). Safe to run again.
    Quickstart { dir: Option<String> },
    /// Unguard everything, stop secfs and vmd.
    Shutdown,
    /// Data transformations (`dataxform`): their progress.
    #[command(subcommand)]
    Xform(XformCmd),
    /// Rules (CTE UserSpace): a path to protect, deployed with a key and
    /// an operation (encrypt, rotate, decrypt).
    #[command(subcommand)]
    Rule(RuleCmd),
}

#[derive(Subcommand)]
enum RuleCmd {
    /// Create a rule (not applied yet).
    Create(rule::NewRule),
    /// Every rule with its status.
    List,
    /// One rule, its status, progress and failed files.
    Show { name: String },
    /// Deploy a rule on this host: encrypt (default), rotate, decrypt.
    Apply {
        name: String,
        /// The key (encrypt; rotate to another key).
        #[arg(long)]
        key: Option<String>,
        #[arg(long, default_value = "encrypt")]
        operation: String,
        /// rotate: rewrap headers only (the default rotation is deep).
        #[arg(long)]
        shallow: bool,
    },
    /// Remove a rule that is not applied (or was decrypted).
    Remove { name: String },
}

#[derive(Subcommand)]
enum XformCmd {
    /// Progress of every data transformation run on this host: running,
    /// completed, completed with errors, or interrupted.
    Status,
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Create a key (version 1).
    Create {
        name: String,
        #[arg(long, default_value = "xts")]
        mode: String,
        /// CTE's persistent_on_client: vmd may keep the key sealed on disk.
        #[arg(long, default_value = "true")]
        persistent: bool,
    },
    /// Add a new version; new files use it, old files keep theirs.
    Rotate {
        name: String,
    },
    List,
    Show {
        name: String,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Validate and store a policy file (`-` for stdin); guarded
    /// GuardPoints using it switch to it at once.
    Apply {
        file: PathBuf,
    },
    List,
    Show {
        name: String,
    },
}

#[derive(Subcommand)]
enum HostCmd {
    /// Validate and store host settings from a file (`-` for stdin).
    Set {
        file: PathBuf,
    },
    Show,
}

#[derive(Subcommand)]
enum SecfsCmd {
    /// `secfs iv get FILE`: mode, key name and version, file id, base IV.
    Iv {
        #[arg(value_parser = ["get"])]
        action: String,
        file: PathBuf,
    },
    /// Set a secfs parameter (pagecache_writeback 0|1, threads N, concise_logging 0|1).
    Config { param: String, value: String },
}

#[derive(Subcommand)]
enum HostkeyCmd {
    /// Protect the host key with a static password from now on; after a
    /// restart keys stay unavailable until `vmsec passwd`.
    Password {
        #[arg(short = 'p')]
        password: Option<String>,
    },
}

fn read_input(file: &Path) -> Result<String, Failure> {
    let mut text = String::new();
    let r = if file == Path::new("-") {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(file).map(|t| text = t)
    };
    r.map_err(|e| Failure(FAILED, format!("{}: {e}", file.display())))?;
    Ok(text)
}

fn print(json: bool, v: &Value, human: impl FnOnce(&Value) -> String) {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        let text = human(v);
        if !text.is_empty() {
            println!("{text}");
        }
    }
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// Read a password (or another secret) as CTE's utilities do: `-p -`
/// reads one line from standard input; no `-p` prompts on the terminal
/// without echo (or reads a line from standard input when it is not a
/// terminal); `-p PW` still works for old scripts but warns on stderr that
/// the command line is visible to other users.
pub fn password(given: Option<String>, prompt: &str) -> Result<String, Failure> {
    if let Some(p) = secret_given(given.as_deref(), "-p", &mut std::io::stdin().lock())? {
        return Ok(p);
    }
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    eprint!("{prompt}");
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).ok();
    if let Some(t) = &saved {
        let mut quiet = t.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &quiet);
    }
    let r = read_secret_line(&mut stdin.lock());
    if let Some(t) = &saved {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, t);
        eprintln!();
    }
    r
}

/// The secret a command-line value gives: `-` reads a line from `input`;
/// any other value is taken with a warning (argv is visible to every
/// user); `None` when nothing was given (prompt).
pub fn secret_given(
    given: Option<&str>,
    flag: &str,
    input: &mut dyn std::io::BufRead,
) -> Result<Option<String>, Failure> {
    match given {
        None => Ok(None),
        Some("-") => read_secret_line(input).map(Some),
        Some(p) => {
            warn_secret_in_argv(flag);
            Ok(Some(p.to_owned()))
        }
    }
}

/// Warn that a secret was passed on the command line.
pub fn warn_secret_in_argv(flag: &str) {
    eprintln!(
        "warning: {flag} on the command line is visible to other users (ps, /proc/PID/cmdline); \
         use `{flag} -` to read it from standard input, or leave it out to be prompted"
    );
}

/// One line of `input` without its line ending; an empty input is an
/// error.
pub fn read_secret_line(input: &mut dyn std::io::BufRead) -> Result<String, Failure> {
    let mut line = zeroize::Zeroizing::new(String::new());
    let n = input
        .read_line(&mut line)
        .map_err(|e| Failure(FAILED, format!("reading the password: {e}")))?;
    if n == 0 {
        return Err(Failure(FAILED, "reading the password: no input".into()));
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// The policy `voradmin quickstart` applies: every process may use the
/// files and sees plaintext; files are encrypted with `quickstart_key`.
pub const QUICKSTART_POLICY: &str = r#"{
  "name": "quickstart_policy",
  "description": "GuardFS quick start: everyone permitted, contents encrypted with quickstart_key",
  "authenticated_users_only": false,
  "security_rules": [
    { "order_number": 1, "action": "all_ops", "effect": "permit,applykey,audit" }
  ],
  "key_rules": [ { "key_id": "quickstart_key" } ]
}
"#;

/// Run `voradmin` with `args` (argv[0] included).
pub fn voradmin(args: Vec<String>) -> CmdResult {
    let cli = Voradmin::try_parse_from(args).map_err(|e| {
        let code = if e.use_stderr() { USAGE } else { OK };
        let _ = e.print();
        Failure(code, String::new())
    })?;
    require_root()?;
    let l = layout(cli.root.as_deref())?;
    let json = cli.json;
    match cli.cmd {
        Cmd::Rule(r) => match r {
            RuleCmd::Create(n) => rule::create(&l, json, n)?,
            RuleCmd::List => rule::list(&l, json)?,
            RuleCmd::Show { name } => rule::show(&l, json, &name)?,
            RuleCmd::Apply {
                name,
                key,
                operation,
                shallow,
            } => rule::apply(&l, json, &name, &operation, key, shallow)?,
            RuleCmd::Remove { name } => rule::remove(&l, json, &name)?,
        },
        Cmd::Xform(XformCmd::Status) => {
            let list = dataxform::statuses(&l);
            print(json, &Value::Array(list.clone()), |_| {
                dataxform::status_table(&list)
            });
        }
        Cmd::Key(k) => {
            let req = match k {
                KeyCmd::Create {
                    name,
                    mode,
                    persistent,
                } => Request::KeyCreate {
                    name,
                    mode,
                    persistent,
                },
                KeyCmd::Rotate { name } => Request::KeyRotate { name },
                KeyCmd::List => Request::KeyList,
                KeyCmd::Show { name } => Request::KeyShow { name },
            };
            let v = call(&l, req)?;
            print(json, &v, human_keys);
        }
        Cmd::Policy(p) => {
            let req = match p {
                PolicyCmd::Apply { file } => Request::PolicyApply {
                    json: read_input(&file)?,
                },
                PolicyCmd::List => Request::PolicyList,
                PolicyCmd::Show { name } => Request::PolicyShow { name },
            };
            let v = call(&l, req)?;
            print(json, &v, |v| match v {
                Value::Array(a) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("\n"),
                Value::Object(o) if o.len() == 1 && o.contains_key("name") => {
                    format!("policy {} applied", s(v, "name"))
                }
                other => serde_json::to_string_pretty(other).unwrap_or_default(),
            });
        }
        Cmd::Hostsettings(h) => {
            let req = match h {
                HostCmd::Set { file } => Request::HostSettingsSet {
                    text: read_input(&file)?,
                },
                HostCmd::Show => Request::HostSettingsShow,
            };
            let v = call(&l, req)?;
            print(json, &v, |v| {
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| "host settings stored".into())
            });
        }
        Cmd::Guard {
            dir,
            policy,
            gp_type,
        } => {
            let v = call(
                &l,
                Request::Guard {
                    path: abs(&dir)?,
                    policy: Some(policy),
                    gp_type: Some(gp_type),
                },
            )?;
            print(json, &v, human_guard);
        }
        Cmd::Unguard { dir } => {
            let v = call(
                &l,
                Request::Unguard {
                    path: abs(&dir)?,
                    keep: false,
                },
            )?;
            print(json, &v, |v| format!("{}: not guarded", s(v, "path")));
        }
        Cmd::Status => {
            let v = call(&l, Request::Status)?;
            print(json, &v, human_status);
        }
        Cmd::Secfs(SecfsCmd::Iv { file, .. }) => {
            let v = call(
                &l,
                Request::FileInfo {
                    path: abs(&file.to_string_lossy())?,
                },
            )?;
            print(json, &v, |v| {
                [
                    "path",
                    "mode",
                    "key_name",
                    "key_version",
                    "file_id",
                    "base_iv",
                ]
                .iter()
                .map(|k| {
                    format!(
                        "{k}: {}",
                        v.get(*k)
                            .map(|x| x.to_string().trim_matches('"').to_owned())
                            .unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
            });
        }
        Cmd::Secfs(SecfsCmd::Config { param, value }) => {
            let v = call(&l, Request::SecfsConfig { param, value })?;
            print(json, &v, |v| {
                format!(
                    "{}={} (applies {})",
                    s(v, "param"),
                    s(v, "value"),
                    s(v, "applies")
                )
            });
        }
        Cmd::Hostkey(HostkeyCmd::Password { password: p }) => {
            let pw = password(p, "New static host password: ")?;
            let v = call(&l, Request::SetPassword { password: pw })?;
            print(json, &v, |_| {
                "the host key is now protected by the static host password".into()
            });
        }
        Cmd::Quickstart { dir } => {
            quickstart(&l, dir.as_deref().unwrap_or("/srv/guardfs-demo"), json)?
        }
        Cmd::Shutdown => {
            call(&l, Request::Shutdown)?;
            println!("vmd and secfs stopped; GuardPoints unguarded");
        }
    }
    Ok(())
}

fn abs(p: &str) -> Result<String, Failure> {
    let path = std::path::absolute(p).map_err(|e| Failure(USAGE, format!("{p}: {e}")))?;
    Ok(path.to_string_lossy().into_owned())
}

fn quickstart(l: &Layout, dir: &str, json: bool) -> CmdResult {
    let vmd = std::env::current_exe()
        .map_err(|e| Failure(FAILED, e.to_string()))?
        .with_file_name("vmd");
    let st = std::process::Command::new(&vmd)
        .arg("--root")
        .arg(&l.root)
        .status()
        .map_err(|e| Failure(FAILED, format!("{}: {e}", vmd.display())))?;
    if !st.success() {
        return Err(Failure(FAILED, "vmd did not start".into()));
    }
    let keys = call(l, Request::KeyList)?;
    let has_key = keys
        .as_array()
        .is_some_and(|a| a.iter().any(|k| s(k, "name") == "quickstart_key"));
    if !has_key {
        call(
            l,
            Request::KeyCreate {
                name: "quickstart_key".into(),
                mode: "xts".into(),
                persistent: true,
            },
        )?;
        println!("created local key quickstart_key (xts)");
    }
    call(
        l,
        Request::PolicyApply {
            json: QUICKSTART_POLICY.into(),
        },
    )?;
    std::fs::create_dir_all(dir).map_err(|e| Failure(FAILED, format!("{dir}: {e}")))?;
    let path = abs(dir)?;
    let status = call(l, Request::Status)?;
    let known = status["guardpoints"]
        .as_array()
        .is_some_and(|a| a.iter().any(|g| s(g, "path") == path));
    let policy = (!known).then(|| "quickstart_policy".to_owned());
    let v = call(
        l,
        Request::Guard {
            path,
            policy,
            gp_type: Some(GpType::Auto),
        },
    )?;
    print(json, &v, human_guard);
    if s(&v, "status") != "guarded" {
        return Err(Failure(
            FAILED,
            format!("{dir} is not guarded: {}", s(&v, "reason")),
        ));
    }
    Ok(())
}

fn human_guard(v: &Value) -> String {
    match s(v, "status") {
        "guarded" => format!("{}: guarded", s(v, "path")),
        _ => format!(
            "{}: not guarded yet: {} (vmd retries)",
            s(v, "path"),
            s(v, "reason")
        ),
    }
}

fn human_keys(v: &Value) -> String {
    let one = |k: &Value| {
        let versions: Vec<String> = k["versions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.get(0).and_then(Value::as_u64))
                    .map(|n| n.to_string())
                    .collect()
            })
            .unwrap_or_default();
        format!(
            "{:<24} {:<8} persistent_on_client={:<5} versions={} latest={}",
            s(k, "name"),
            s(k, "mode"),
            k["persistent"].as_bool().unwrap_or(false),
            versions.join(","),
            k["latest"]
        )
    };
    match v {
        Value::Array(a) if a.is_empty() => "no keys".into(),
        Value::Array(a) => a.iter().map(one).collect::<Vec<_>>().join("\n"),
        Value::Object(o) if o.contains_key("versions") => one(v),
        other => format!("key {} version {}", s(other, "name"), other["version"]),
    }
}

fn human_status(v: &Value) -> String {
    let mut out = vec![
        format!("vmd:    running (pid {})", v["vmd_pid"]),
        format!(
            "secfs:  {}",
            if v["secfs_running"].as_bool() == Some(true) {
                format!("running (pid {})", v["secfs_pid"])
            } else {
                "not running".to_owned()
            }
        ),
        format!(
            "keys:   {} (host key: {})",
            if v["keys_available"].as_bool() == Some(true) {
                "available"
            } else {
                "not available"
            },
            s(v, "host_key")
        ),
        String::new(),
    ];
    out.push(cte::guard_table(v));
    out.join("\n")
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    #[test]
    fn dash_reads_stdin_and_argv_still_works() {
        let mut input: &[u8] = b"correct horse battery\nrest";
        assert_eq!(
            secret_given(Some("-"), "-p", &mut input)
                .unwrap()
                .as_deref(),
            Some("correct horse battery")
        );
        let mut crlf: &[u8] = b"pw\r\n";
        assert_eq!(
            secret_given(Some("-"), "-p", &mut crlf).unwrap().as_deref(),
            Some("pw")
        );
        let mut empty: &[u8] = b"";
        assert!(secret_given(Some("-"), "-p", &mut empty).is_err());
        let mut unused: &[u8] = b"ignored\n";
        assert_eq!(
            secret_given(Some("old way"), "-p", &mut unused)
                .unwrap()
                .as_deref(),
            Some("old way")
        );
        assert_eq!(secret_given(None, "-p", &mut unused).unwrap(), None);
    }
}
