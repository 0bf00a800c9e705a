//! The `keymgr` command line: `init` and `serve` act on the data
//! directory; every other command is a client of the REST API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::ca::Paths;
use crate::client::{ApiClient, CallError};
use crate::seal::{MasterKey, hash_password};
use crate::sqlite::SqliteStore;
use crate::store::{Admin, Store};
use crate::util::{now, valid_ref};

#[derive(Parser)]
#[command(
    name = "keymgr",
    version,
    about = "GuardFS reference key manager and its admin CLI"
)]
struct Cli {
    /// Print JSON (the API's answers) instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Server URL.
    #[arg(
        long,
        global = true,
        env = "KEYMGR_URL",
        default_value = "https://127.0.0.1:8443"
    )]
    url: String,
    /// Admin user.
    #[arg(long, global = true, env = "KEYMGR_USER", default_value = "admin")]
    user: String,
    /// Admin password: `-` reads it from standard input; without it (and
    /// without KEYMGR_PASSWORD) it is asked on the terminal. A password in
    /// argv is visible to other users (a warning says so).
    #[arg(long, global = true, env = "KEYMGR_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// CA certificate to trust (default: <data-dir>/ca.pem).
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// Data directory (database, keys, CA).
    #[arg(
        long,
        global = true,
        env = "KEYMGR_DATA_DIR",
        default_value = "/var/lib/guardfs-keymgr"
    )]
    data_dir: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create the data directory: master key, CA, server certificate, admin.
    Init {
        /// Password of the first administrator: `-` reads it from standard
        /// input; without it (and without KEYMGR_ADMIN_PASSWORD) it is
        /// asked on the terminal.
        #[arg(long, env = "KEYMGR_ADMIN_PASSWORD", hide_env_values = true)]
        admin_password: Option<String>,
        /// Name of the first administrator.
        #[arg(long, default_value = "admin")]
        admin_user: String,
        /// Host name or IP for the server certificate (repeatable).
        #[arg(long = "san")]
        san: Vec<String>,
    },
    /// Run the HTTPS server.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
    },
    /// Registration tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Keys (material is never shown).
    #[command(subcommand)]
    Key(KeyCmd),
    /// Policies.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Client profiles.
    #[command(subcommand)]
    Profile(ProfileCmd),
    /// Stored user, process and resource sets that policies reference by name.
    #[command(subcommand)]
    Set(SetCmd),
    /// Registered clients.
    #[command(subcommand)]
    Client(ClientCmd),
    /// GuardPoints of a client.
    #[command(subcommand)]
    Guardpoint(GpCmd),
    /// Rules (CTE UserSpace): create, list, show, delete; apply to a
    /// client with a key and an operation.
    #[command(subcommand)]
    Rule(RuleCmd),
    /// Offline unlock (challenge-response) for agents that cannot reach the
    /// key manager.
    #[command(subcommand)]
    Challenge(ChallengeCmd),
}

#[derive(Subcommand)]
enum ChallengeCmd {
    /// Print the response to an agent's offline unlock challenge.
    Respond {
        /// Client id or name.
        client: String,
        /// The challenge as the agent printed it; the arguments are joined,
        /// so its groups can be pasted unquoted.
        #[arg(required = true, num_args = 1..)]
        challenge: Vec<String>,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a registration token.
    Create(TokenCreate),
    /// List registration tokens.
    List,
    /// Delete a registration token.
    Delete { id: String },
}

#[derive(Args)]
struct TokenCreate {
    /// Lifetime in seconds (or Ns, Nm, Nh, Nd).
    #[arg(long)]
    lifetime: Option<String>,
    /// How many clients may register with it.
    #[arg(long)]
    max_clients: Option<i64>,
    /// Validity of issued client certificates, in days.
    #[arg(long)]
    cert_duration: Option<i64>,
    /// Required client name prefix.
    #[arg(long)]
    name_prefix: Option<String>,
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Create an AES-256 key.
    Create {
        name: String,
        /// XTS, CBC_CS1 or GCM.
        #[arg(long, default_value = "XTS")]
        mode: String,
        /// Whether agents may keep it sealed on disk.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        persistent: bool,
    },
    /// Add a new version.
    Rotate { name: String },
    /// Revoke (agents can no longer fetch its material).
    Revoke { name: String },
    /// Destroy (material erased).
    Destroy { name: String },
    /// List keys.
    List,
    /// Show one key.
    Show { name: String },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Create or replace a policy from a JSON file.
    Apply { file: PathBuf },
    /// List policies.
    List,
    /// Show one policy.
    Show { name: String },
    /// Delete a policy (refused while GuardPoints use it).
    Delete { name: String },
}

#[derive(Subcommand)]
enum ProfileCmd {
    /// Create a client profile.
    Create {
        name: String,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
        /// Seconds between agent configuration polls (1..=3600; default 10).
        #[arg(long)]
        poll_interval: Option<i64>,
        /// Agents log tersely.
        #[arg(long)]
        concise_logging: bool,
    },
    /// List client profiles.
    List,
    /// Show one profile (id or name).
    Show { name: String },
    /// Delete a profile (refused while clients use it).
    Delete { name: String },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SetKindArg {
    User,
    Process,
    Resource,
}

impl SetKindArg {
    fn path(self) -> &'static str {
        match self {
            SetKindArg::User => "/api/v1/transparent-encryption/usersets",
            SetKindArg::Process => "/api/v1/transparent-encryption/processsets",
            SetKindArg::Resource => "/api/v1/transparent-encryption/resourcesets",
        }
    }
    fn entries(self) -> &'static str {
        match self {
            SetKindArg::User => "users",
            SetKindArg::Process => "processes",
            SetKindArg::Resource => "resources",
        }
    }
}

#[derive(Subcommand)]
enum SetCmd {
    /// Create a set from a JSON file holding its entries array.
    Create {
        #[arg(value_enum)]
        kind: SetKindArg,
        name: String,
        /// JSON file: the array of entries, as the policy document has them.
        #[arg(long)]
        file: PathBuf,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
    },
    /// List the sets of one kind.
    List {
        #[arg(value_enum)]
        kind: SetKindArg,
    },
    /// Show one set.
    Show {
        #[arg(value_enum)]
        kind: SetKindArg,
        name: String,
    },
    /// Delete a set (refused while a policy references it).
    Delete {
        #[arg(value_enum)]
        kind: SetKindArg,
        name: String,
    },
}

#[derive(Subcommand)]
enum ClientCmd {
    /// List clients.
    List,
    /// Show one client (id or name).
    Show { client: String },
    /// Delete a client and its GuardPoints.
    Delete { client: String },
}

#[derive(Subcommand)]
enum RuleCmd {
    /// Create a rule.
    Create {
        #[arg(long)]
        path: String,
        #[arg(long)]
        name: Option<String>,
        /// `txt;dbf`
        #[arg(long = "include-extensions")]
        include_extensions: Option<String>,
        #[arg(long = "is-directory", default_value = "true")]
        is_directory: bool,
        #[arg(long = "is-recursive", default_value = "true")]
        is_recursive: bool,
        /// `tmp;cache`
        #[arg(long = "ignore-directory")]
        ignore_directory: Option<String>,
        #[arg(long = "encrypt-data", default_value = "true")]
        encrypt_data: bool,
    },
    /// List rules.
    List,
    /// Show a rule.
    Show { rule: String },
    /// Delete a rule no client has.
    Delete { rule: String },
    /// Apply a rule to a client (or ask it for the next operation).
    Apply {
        client: String,
        rule: String,
        #[arg(long)]
        key: Option<String>,
        /// encrypt, rotate or decrypt.
        #[arg(long, default_value = "encrypt")]
        operation: String,
        #[arg(long)]
        shallow: bool,
    },
    /// A client's rules and what it reported of each.
    Status { client: String },
    /// Remove a rule from a client.
    Remove { client: String, rule: String },
}

#[derive(Subcommand)]
enum GpCmd {
    /// Add a GuardPoint.
    Add {
        client: String,
        path: String,
        /// Policy id or name.
        #[arg(long)]
        policy: String,
        /// auto or manual.
        #[arg(long = "type", default_value = "auto")]
        gp_type: String,
        /// Add it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// List a client's GuardPoints.
    List { client: String },
    /// Remove a GuardPoint.
    Remove { client: String, gpid: String },
}

/// Exit codes: 0 success, 1 the server refused, 2 usage or local failure.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let level = if matches!(cli.cmd, Cmd::Serve { .. }) {
        "info"
    } else {
        "warn"
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    match run(&cli) {
        Ok(()) => 0,
        Err(Failure::Local(m)) => {
            if cli.json {
                println!(
                    "{}",
                    json!({"code": 0, "codeDesc": "LocalError", "message": m})
                );
            } else {
                eprintln!("keymgr: {m}");
            }
            2
        }
        Err(Failure::Call(CallError::Api { status, body })) => {
            if cli.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&body).unwrap_or_default()
                );
            } else {
                eprintln!("keymgr: {}", CallError::Api { status, body });
            }
            1
        }
        Err(Failure::Call(e)) => {
            if cli.json {
                println!(
                    "{}",
                    json!({"code": 0, "codeDesc": "Transport", "message": e.to_string()})
                );
            } else {
                eprintln!("keymgr: {e}");
            }
            2
        }
    }
}

enum Failure {
    Local(String),
    Call(CallError),
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure::Local(s)
    }
}

impl From<CallError> for Failure {
    fn from(e: CallError) -> Self {
        Failure::Call(e)
    }
}

fn init(dir: &Path, user: &str, password: &str, sans: &[String]) -> Result<Value, String> {
    if password.len() < 8 {
        return Err("the admin password must have at least 8 characters".into());
    }
    if !crate::util::valid_name(user, 64) {
        return Err("invalid admin user name".into());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot chmod {}: {e}", dir.display()))?;
    }
    let paths = Paths::new(dir);
    for p in [&paths.master_key, &paths.ca_cert, &paths.ca_key, &paths.db] {
        if p.exists() {
            return Err(format!("{} exists: already initialised", p.display()));
        }
    }
    let sans: Vec<String> = if sans.is_empty() {
        vec!["localhost".into(), "127.0.0.1".into()]
    } else {
        sans.to_vec()
    };
    MasterKey::create(&paths.master_key)?;
    crate::ca::init(&paths, &sans)?;
    let store = SqliteStore::open(&paths.db).map_err(|e| e.to_string())?;
    store
        .admin_put(
            &Admin {
                name: user.to_owned(),
                password_hash: hash_password(password)?,
            },
            now(),
        )
        .map_err(|e| e.to_string())?;
    Ok(json!({
        "data_dir": dir.display().to_string(),
        "ca": paths.ca_cert.display().to_string(),
        "admin": user,
        "san": sans,
    }))
}

/// A password from `flag` (or the environment variable `env`): `-` reads
/// one line from standard input; a value on the command line is taken with
/// a warning (argv is visible to every user); none at all is asked on the
/// terminal without echo, or read from standard input when that is not a
/// terminal.
fn secret(
    given: Option<&str>,
    flag: &str,
    env: &str,
    prompt: &str,
) -> Result<zeroize::Zeroizing<String>, String> {
    let stdin = std::io::stdin();
    match given {
        Some("-") => return read_secret_line(&mut stdin.lock()),
        Some(p) => {
            if std::env::var(env).ok().as_deref() != Some(p) {
                eprintln!(
                    "warning: {flag} on the command line is visible to other users (ps, \
                     /proc/PID/cmdline); use `{flag} -`, {env}, or leave it out to be prompted"
                );
            }
            return Ok(zeroize::Zeroizing::new(p.to_owned()));
        }
        None => {}
    }
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let saved = tcgetattr(&stdin).ok();
    if let Some(t) = &saved {
        eprint!("{prompt}");
        let mut quiet = t.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &quiet);
    }
    let r = read_secret_line(&mut stdin.lock());
    if let Some(t) = &saved {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, t);
        eprintln!();
    }
    r.map_err(|e| format!("{e} (give {flag} -, {env}, or a terminal to be asked)"))
}

/// One line of `input` without its line ending; no input is an error.
fn read_secret_line(
    input: &mut dyn std::io::BufRead,
) -> Result<zeroize::Zeroizing<String>, String> {
    let mut line = zeroize::Zeroizing::new(String::new());
    let n = input
        .read_line(&mut line)
        .map_err(|e| format!("reading the password: {e}"))?;
    if n == 0 {
        return Err("reading the password: no input".into());
    }
    let end = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(end);
    Ok(line)
}

fn connect(cli: &Cli) -> Result<ApiClient, Failure> {
    let ca_path = cli
        .ca
        .clone()
        .unwrap_or_else(|| Paths::new(&cli.data_dir).ca_cert);
    let pem = std::fs::read(&ca_path)
        .map_err(|e| format!("cannot read CA {}: {e} (use --ca)", ca_path.display()))?;
    let mut c = ApiClient::new(&cli.url, &pem)?;
    let pw = secret(
        cli.password.as_deref(),
        "--password",
        "KEYMGR_PASSWORD",
        "Admin password: ",
    )?;
    c.login(&cli.user, &pw)?;
    Ok(c)
}

fn seg(s: &str) -> Result<&str, Failure> {
    if valid_ref(s) {
        Ok(s)
    } else {
        Err(Failure::Local(format!("{s:?} is not a valid id or name")))
    }
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn text(cmd: &Cmd, v: &Value) -> String {
    let rows = v.get("resources").and_then(Value::as_array);
    match (cmd, rows) {
        (Cmd::Token(_), Some(rows)) => rows
            .iter()
            .map(|t| {
                format!(
                    "{}  token={}  used={}/{}  expires={}",
                    s(t, "id"),
                    s(t, "token"),
                    t["clients_registered"],
                    t["max_clients"],
                    s(t, "expiresAt")
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        (Cmd::Token(_), None) => format!(
            "token {}\nid {}\nexpires {}",
            s(v, "token"),
            s(v, "id"),
            s(v, "expiresAt")
        ),
        (Cmd::Key(_), Some(rows)) => rows
            .iter()
            .map(|k| {
                format!(
                    "{}  {}  {}  versions={}",
                    s(k, "name"),
                    k["meta"]["cte"]["encryption_mode"].as_str().unwrap_or(""),
                    s(k, "state"),
                    k["versions"]
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        (Cmd::Key(_), None) => format!(
            "key {} ({}) {} version {}",
            s(v, "name"),
            s(v, "id"),
            s(v, "state"),
            v["version"]
        ),
        (Cmd::Policy(_), Some(rows)) => rows
            .iter()
            .map(|p| format!("{}  {}  keys={}", s(p, "name"), s(p, "id"), p["keys"]))
            .collect::<Vec<_>>()
            .join("\n"),
        (Cmd::Profile(_), Some(rows)) => rows
            .iter()
            .map(|p| {
                format!(
                    "{}  {}  poll_interval={}  concise_logging={}",
                    s(p, "name"),
                    s(p, "id"),
                    p["poll_interval"],
                    p["concise_logging"]
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        (Cmd::Set(_), Some(rows)) => rows
            .iter()
            .map(|x| {
                let n = ["users", "processes", "resources"]
                    .iter()
                    .find_map(|f| x.get(*f).and_then(Value::as_array))
                    .map_or(0, Vec::len);
                format!("{}  {}  entries={n}", s(x, "name"), s(x, "id"))
            })
            .collect::<Vec<_>>()
            .join("\n"),
        (Cmd::Client(_), Some(rows)) => rows
            .iter()
            .map(|c| {
                format!(
                    "{}  {}  communication={}  health={}",
                    s(c, "id"),
                    s(c, "name"),
                    c["communication_enabled"],
                    c["reported_health"]
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        (Cmd::Challenge(_), _) => s(v, "response").to_owned(),
        (Cmd::Guardpoint(_), _) => {
            let list = rows.or_else(|| v.get("guardpoints").and_then(Value::as_array));
            list.map(|l| {
                l.iter()
                    .map(|g| {
                        format!(
                            "{}  {}  {}  policy={}  enabled={}",
                            s(g, "id"),
                            s(g, "guard_path"),
                            s(g, "guard_point_type"),
                            s(g, "policy_name"),
                            g["guard_enabled"]
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
        }
        _ => serde_json::to_string_pretty(v).unwrap_or_default(),
    }
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let out = match &cli.cmd {
        Cmd::Init {
            admin_password,
            admin_user,
            san,
        } => {
            let pw = secret(
                admin_password.as_deref(),
                "--admin-password",
                "KEYMGR_ADMIN_PASSWORD",
                "Password of the first administrator: ",
            )?;
            init(&cli.data_dir, admin_user, &pw, san)?
        }
        Cmd::Serve { listen } => {
            crate::server::serve(&cli.data_dir, *listen)?;
            return Ok(());
        }
        Cmd::Token(t) => {
            let c = connect(cli)?;
            let p = "/api/v1/client-management/regtokens";
            match t {
                TokenCmd::Create(a) => {
                    let mut body = serde_json::Map::new();
                    if let Some(l) = &a.lifetime {
                        let v = l.parse::<i64>().map_or_else(|_| json!(l), |n| json!(n));
                        body.insert("lifetime".into(), v);
                    }
                    if let Some(n) = a.max_clients {
                        body.insert("max_clients".into(), json!(n));
                    }
                    if let Some(n) = a.cert_duration {
                        body.insert("cert_duration".into(), json!(n));
                    }
                    if let Some(n) = &a.name_prefix {
                        body.insert("name_prefix".into(), json!(n));
                    }
                    c.call("POST", p, Some(&Value::Object(body)))?
                }
                TokenCmd::List => c.call("GET", p, None)?,
                TokenCmd::Delete { id } => c.call("DELETE", &format!("{p}/{}", seg(id)?), None)?,
            }
        }
        Cmd::Key(k) => {
            let c = connect(cli)?;
            let p = "/api/v1/vault/keys2";
            match k {
                KeyCmd::Create {
                    name,
                    mode,
                    persistent,
                } => c.call(
                    "POST",
                    p,
                    Some(&json!({
                        "name": name, "algorithm": "AES", "size": 256,
                        "meta": {"cte": {"persistent_on_client": persistent,
                                         "encryption_mode": mode, "cte_versioned": true}}
                    })),
                )?,
                KeyCmd::Rotate { name } => {
                    c.call("POST", &format!("{p}/{}/versions", seg(name)?), None)?
                }
                KeyCmd::Revoke { name } => {
                    c.call("POST", &format!("{p}/{}/revoke", seg(name)?), None)?
                }
                KeyCmd::Destroy { name } => {
                    c.call("DELETE", &format!("{p}/{}", seg(name)?), None)?
                }
                KeyCmd::List => c.call("GET", p, None)?,
                KeyCmd::Show { name } => c.call("GET", &format!("{p}/{}", seg(name)?), None)?,
            }
        }
        Cmd::Policy(pc) => {
            let c = connect(cli)?;
            let p = "/api/v1/transparent-encryption/policies";
            match pc {
                PolicyCmd::Apply { file } => {
                    let body = std::fs::read(file)
                        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
                    match c.call_raw("POST", p, Some(body.clone())) {
                        Err(CallError::Api {
                            status: 409,
                            body: err,
                        }) => {
                            let doc: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            match doc.get("name").and_then(Value::as_str) {
                                Some(name) if valid_ref(name) => {
                                    c.call_raw("PUT", &format!("{p}/{name}"), Some(body))?
                                }
                                _ => {
                                    return Err(CallError::Api {
                                        status: 409,
                                        body: err,
                                    }
                                    .into());
                                }
                            }
                        }
                        other => other?,
                    }
                }
                PolicyCmd::List => c.call("GET", p, None)?,
                PolicyCmd::Show { name } => c.call("GET", &format!("{p}/{}", seg(name)?), None)?,
                PolicyCmd::Delete { name } => {
                    c.call("DELETE", &format!("{p}/{}", seg(name)?), None)?
                }
            }
        }
        Cmd::Profile(pc) => {
            let c = connect(cli)?;
            let p = "/api/v1/transparent-encryption/profiles";
            match pc {
                ProfileCmd::Create {
                    name,
                    description,
                    poll_interval,
                    concise_logging,
                } => {
                    let mut body = serde_json::Map::new();
                    body.insert("name".into(), json!(name));
                    if let Some(d) = description {
                        body.insert("description".into(), json!(d));
                    }
                    if let Some(n) = poll_interval {
                        body.insert("poll_interval".into(), json!(n));
                    }
                    body.insert("concise_logging".into(), json!(concise_logging));
                    c.call("POST", p, Some(&Value::Object(body)))?
                }
                ProfileCmd::List => c.call("GET", p, None)?,
                ProfileCmd::Show { name } => c.call("GET", &format!("{p}/{}", seg(name)?), None)?,
                ProfileCmd::Delete { name } => {
                    c.call("DELETE", &format!("{p}/{}", seg(name)?), None)?
                }
            }
        }
        Cmd::Set(sc) => match sc {
            SetCmd::Create {
                kind,
                name,
                file,
                description,
            } => {
                let text = std::fs::read(file)
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
                let entries: Value = serde_json::from_slice(&text)
                    .map_err(|e| format!("{}: invalid JSON: {e}", file.display()))?;
                if !entries.is_array() {
                    return Err(format!(
                        "{}: expected a JSON array of {}",
                        file.display(),
                        kind.entries()
                    )
                    .into());
                }
                let mut body = json!({"name": name});
                if let Some(d) = description {
                    body["description"] = json!(d);
                }
                body[kind.entries()] = entries;
                connect(cli)?.call("POST", kind.path(), Some(&body))?
            }
            SetCmd::List { kind } => connect(cli)?.call("GET", kind.path(), None)?,
            SetCmd::Show { kind, name } => {
                let path = format!("{}/{}", kind.path(), seg(name)?);
                connect(cli)?.call("GET", &path, None)?
            }
            SetCmd::Delete { kind, name } => {
                let path = format!("{}/{}", kind.path(), seg(name)?);
                connect(cli)?.call("DELETE", &path, None)?
            }
        },
        Cmd::Client(cc) => {
            let c = connect(cli)?;
            let p = "/api/v1/transparent-encryption/clients";
            match cc {
                ClientCmd::List => c.call("GET", p, None)?,
                ClientCmd::Show { client } => {
                    c.call("GET", &format!("{p}/{}", seg(client)?), None)?
                }
                ClientCmd::Delete { client } => {
                    c.call("DELETE", &format!("{p}/{}", seg(client)?), None)?
                }
            }
        }
        Cmd::Guardpoint(g) => {
            let c = connect(cli)?;
            let p = "/api/v1/transparent-encryption/clients";
            match g {
                GpCmd::Add {
                    client,
                    path,
                    policy,
                    gp_type,
                    disabled,
                } => {
                    let t = match gp_type.as_str() {
                        "auto" | "directory_auto" => "directory_auto",
                        "manual" | "directory_manual" => "directory_manual",
                        other => return Err(format!("--type {other:?}: use auto or manual").into()),
                    };
                    c.call(
                        "POST",
                        &format!("{p}/{}/guardpoints", seg(client)?),
                        Some(&json!({
                            "guard_paths": [path],
                            "guard_point_params": {"guard_point_type": t, "policy_id": policy,
                                                   "guard_enabled": !disabled}
                        })),
                    )?
                }
                GpCmd::List { client } => {
                    c.call("GET", &format!("{p}/{}/guardpoints", seg(client)?), None)?
                }
                GpCmd::Remove { client, gpid } => c.call(
                    "DELETE",
                    &format!("{p}/{}/guardpoints/{}", seg(client)?, seg(gpid)?),
                    None,
                )?,
            }
        }
        Cmd::Rule(r) => {
            let c = connect(cli)?;
            let p = "/api/v1/transparent-encryption";
            match r {
                RuleCmd::Create {
                    path,
                    name,
                    include_extensions,
                    is_directory,
                    is_recursive,
                    ignore_directory,
                    encrypt_data,
                } => {
                    let mut body = json!({
                        "path": path,
                        "is_directory": is_directory,
                        "is_recursive": is_recursive,
                        "encrypt_data": encrypt_data,
                    });
                    if let Some(n) = name {
                        body["name"] = json!(n);
                    }
                    if let Some(e) = include_extensions {
                        body["include_extensions"] = json!(e);
                    }
                    if let Some(d) = ignore_directory {
                        body["ignore_directory"] = json!(d);
                    }
                    c.call("POST", &format!("{p}/rules"), Some(&body))?
                }
                RuleCmd::List => c.call("GET", &format!("{p}/rules"), None)?,
                RuleCmd::Show { rule } => {
                    c.call("GET", &format!("{p}/rules/{}", seg(rule)?), None)?
                }
                RuleCmd::Delete { rule } => {
                    c.call("DELETE", &format!("{p}/rules/{}", seg(rule)?), None)?
                }
                RuleCmd::Apply {
                    client,
                    rule,
                    key,
                    operation,
                    shallow,
                } => {
                    let mut body =
                        json!({"rule": rule, "operation": operation, "shallow": shallow});
                    if let Some(k) = key {
                        body["key"] = json!(k);
                    }
                    c.call(
                        "POST",
                        &format!("{p}/clients/{}/rules", seg(client)?),
                        Some(&body),
                    )?
                }
                RuleCmd::Status { client } => {
                    c.call("GET", &format!("{p}/clients/{}/rules", seg(client)?), None)?
                }
                RuleCmd::Remove { client, rule } => c.call(
                    "DELETE",
                    &format!("{p}/clients/{}/rules/{}", seg(client)?, seg(rule)?),
                    None,
                )?,
            }
        }
        Cmd::Challenge(ChallengeCmd::Respond { client, challenge }) => {
            let path = format!(
                "/api/v1/transparent-encryption/clients/{}/challenge-response",
                seg(client)?
            );
            let c = connect(cli)?;
            c.call(
                "POST",
                &path,
                Some(&json!({"challenge": challenge.join(" ")})),
            )?
        }
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else if out.is_null() {
        println!("done");
    } else {
        println!("{}", text(&cli.cmd, &out));
    }
    Ok(())
}
