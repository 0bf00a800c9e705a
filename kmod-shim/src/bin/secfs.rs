//! `secfs`: guard a directory with keys from key files, and optionally a
//! policy deciding who sees plaintext.
//!
//! ```text
//! secfs genkey FILE
//! secfs mount DIR --key-file FILE [--mode xts|cbc-cs1|gcm|clear] [--foreground]
//!                 [--policy FILE [--host-settings FILE]] [--key NAME[@VERSION][:MODE]=FILE]...
//! secfs umount DIR [--lazy]
//! secfs serve --vmd PATH [--ctl-dir DIR] [--blob-dir DIR] [--audit-log FILE]
//!             [--concise-logging]
//! ```
//!
//! `serve` is the agent's form: one process serving every GuardPoint,
//! driven by vmd over the ioctl channel (see `guardfs_shim::ctl`).

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use guardfs_crypto::Mode;
use guardfs_policy::{CompiledPolicy, HostSettings};
use guardfs_shim::audit::{AuditOptions, Auditor};
use guardfs_shim::exitcode;
use guardfs_shim::fuse::FuseOptions;
use guardfs_shim::keyfile;
use guardfs_shim::mount::{self, MountSpec};
use guardfs_shim::stack::access::Access;
use guardfs_shim::stack::keys::StaticKeys;
use guardfs_shim::stack::{GuardConfig, Stack};
use guardfs_shim::vfs::Ino;

#[derive(Parser)]
#[command(name = "secfs", version, about = "GuardFS transparent-encryption filesystem", after_help = exitcode::TABLE)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write a new random 256-bit key (hex) to FILE, mode 0600. Never overwrites.
    Genkey { file: PathBuf },
    /// Guard DIR: mount secfs over it so its files are encrypted at rest.
    Mount(MountArgs),
    /// Run the secfs service: one process serving every GuardPoint,
    /// driven by vmd through ioctls on the control node (foreground).
    Serve(ServeArgs),
    /// Unmount the GuardPoint at DIR.
    Umount {
        dir: PathBuf,
        /// Detach even if files are open.
        #[arg(long)]
        lazy: bool,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The installed vmd: only root processes running this binary (same
    /// path, same SHA-256 as at start) may send requests.
    #[arg(long)]
    vmd: PathBuf,
    /// Where the control node is mounted (root only).
    #[arg(long, default_value = "/run/guardfs/ctl")]
    ctl_dir: PathBuf,
    /// Root-only directory of policy blobs, named by SHA-256.
    #[arg(long, default_value = "/run/guardfs/blobs")]
    blob_dir: PathBuf,
    /// Audit log (refused requests, policy decisions; also syslog).
    #[arg(long, default_value = "/var/log/guardfs/audit.log")]
    audit_log: PathBuf,
    /// Disable the kernel writeback cache on GuardPoints.
    #[arg(long)]
    no_writeback_cache: bool,
    /// Worker threads per GuardPoint (default: number of CPUs).
    #[arg(long)]
    threads: Option<usize>,
    /// Concise logging: log a decision once per minute per (user,
    /// process, file, read/write/attribute/directory class).
    #[arg(long)]
    concise_logging: bool,
    /// Audit rate limit per (rule, process): `N/SECS` (at most N records
    /// per SECS seconds, then one "records suppressed" line), or `off`.
    #[arg(long, default_value = "200/10", value_parser = parse_rate_limit)]
    audit_rate_limit: RateLimit,
}

#[derive(clap::Args)]
struct MountArgs {
    dir: PathBuf,
    /// Key file (from `secfs genkey`): the key named `default`, used when
    /// the policy has no key rules.
    #[arg(long, required_unless_present = "key")]
    key_file: Option<PathBuf>,
    /// A key that the policy's key rules name, as NAME[@VERSION][:MODE]=FILE
    /// (repeatable; version 1 and the GuardPoint's mode unless given).
    #[arg(long, value_name = "NAME[@VERSION][:MODE]=FILE")]
    key: Vec<String>,
    /// Policy (CipherTrust-style JSON) deciding who may do what and who
    /// sees plaintext. Without one, Unix permissions alone decide and every
    /// permitted process sees plaintext. SIGHUP reloads it.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Host settings (`|authenticator|`, `|trust|`, `|path_no_trust|` lines).
    #[arg(long, requires = "policy")]
    host_settings: Option<PathBuf>,
    /// Audit log (records also go to syslog).
    #[arg(long, default_value = "/var/log/guardfs/audit.log")]
    audit_log: PathBuf,
    /// Concise logging: log a decision once per minute per (user,
    /// process, file, read/write/attribute/directory class).
    #[arg(long)]
    concise_logging: bool,
    /// Audit rate limit per (rule, process): `N/SECS` (at most N records
    /// per SECS seconds, then one "records suppressed" line), or `off`.
    #[arg(long, default_value = "200/10", value_parser = parse_rate_limit)]
    audit_rate_limit: RateLimit,
    /// Mode for new files; existing files keep the mode in their header.
    #[arg(long, default_value = "xts")]
    mode: Mode,
    /// Stay in the foreground (logs to stderr).
    #[arg(long)]
    foreground: bool,
    /// Disable the kernel writeback cache (writes go straight through).
    #[arg(long)]
    no_writeback_cache: bool,
    /// Worker threads (default: number of CPUs).
    #[arg(long)]
    threads: Option<usize>,
    /// Log file of the background daemon.
    #[arg(long, default_value = "/var/log/guardfs/secfs.log")]
    log_file: PathBuf,
    /// Internal: fd on which the daemon reports readiness to its parent.
    #[arg(long, hide = true)]
    ready_fd: Option<i32>,
}

/// Concise logging's window (CTE logs the first access per minute).
const CONCISE_WINDOW: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exitcode::USAGE as u8
            } else {
                0
            });
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let code = match cli.cmd {
        Cmd::Genkey { file } => match keyfile::generate(&file) {
            Ok(()) => {
                println!("wrote a new 256-bit key to {}", file.display());
                exitcode::OK
            }
            Err(e) => fail(exitcode::BAD_KEY, &e),
        },
        Cmd::Umount { dir, lazy } => match mount::unmount(&dir, lazy) {
            Ok(()) => exitcode::OK,
            Err(e) => fail(e.exit_code(), &e),
        },
        Cmd::Mount(a) => run_mount(a),
        Cmd::Serve(a) => run_serve(a),
    };
    ExitCode::from(code as u8)
}

fn fail(code: i32, e: &dyn std::fmt::Display) -> i32 {
    eprintln!("secfs: {e}");
    code
}

/// Load the keys: `default` from --key-file, named ones from --key.
fn load_keys(a: &MountArgs) -> Result<StaticKeys, String> {
    let keys = StaticKeys::default();
    if let Some(f) = &a.key_file {
        keys.insert(
            "default",
            1,
            keyfile::load(f).map_err(|e| e.to_string())?,
            true,
        );
    }
    for spec in &a.key {
        let bad = || format!("--key {spec}: expected NAME[@VERSION][:MODE]=FILE");
        let (head, file) = spec
            .split_once('=')
            .filter(|(n, f)| !n.is_empty() && !f.is_empty())
            .ok_or_else(bad)?;
        let (head, mode) = match head.split_once(':') {
            Some((h, m)) => (
                h,
                Some(m.parse::<Mode>().map_err(|e| format!("{}: {e}", bad()))?),
            ),
            None => (head, None),
        };
        let (name, version) = match head.split_once('@') {
            Some((n, v)) => (n, v.parse::<u32>().ok().filter(|v| *v > 0).ok_or_else(bad)?),
            None => (head, 1),
        };
        if name.is_empty() {
            return Err(bad());
        }
        let key = keyfile::load(Path::new(file)).map_err(|e| e.to_string())?;
        keys.insert(name, version, key, a.key_file.is_none());
        if let Some(m) = mode {
            keys.set_mode(name, m);
        }
    }
    Ok(keys)
}

/// Read and compile a policy and its host settings.
fn load_policy(
    policy: &Path,
    host: Option<&Path>,
) -> Result<(CompiledPolicy, HostSettings), String> {
    let text =
        std::fs::read_to_string(policy).map_err(|e| format!("policy {}: {e}", policy.display()))?;
    let compiled = CompiledPolicy::from_json(&text)
        .map_err(|e| format!("policy {}: {e}", policy.display()))?;
    let settings = match host {
        Some(h) => {
            let text = std::fs::read_to_string(h)
                .map_err(|e| format!("host settings {}: {e}", h.display()))?;
            HostSettings::parse(&text).map_err(|e| format!("host settings {}: {e}", h.display()))?
        }
        None => HostSettings::default(),
    };
    Ok((compiled, settings))
}

/// What `secfs mount` loads before it starts anything.
struct Prepared {
    keys: StaticKeys,
    policy: Option<(CompiledPolicy, HostSettings)>,
}

/// Checks that give a clear error before anything is started.
fn precheck(a: &MountArgs) -> Result<Prepared, (i32, String)> {
    mount::require_root().map_err(|e| (e.exit_code(), e.to_string()))?;
    drop(mount::open_fuse_device().map_err(|e| (e.exit_code(), e.to_string()))?);
    // Directories that must never be guarded, before anything else.
    let abs = mount::absolute(&a.dir).map_err(|e| (e.exit_code(), e.to_string()))?;
    guardfs_shim::forbidden::Forbidden::host()
        .check(&abs)
        .map_err(|e| (exitcode::BAD_DIR, e))?;
    mount::prepare_dir(&a.dir).map_err(|e| (e.exit_code(), e.to_string()))?;
    let keys = load_keys(a).map_err(|e| (exitcode::BAD_KEY, e))?;
    let policy = match &a.policy {
        Some(p) => Some(
            load_policy(p, a.host_settings.as_deref()).map_err(|e| (exitcode::BAD_POLICY, e))?,
        ),
        None => None,
    };
    // Every key the key rules name must be supplied: otherwise files under
    // them could be neither read nor created, and it would show only as
    // I/O errors later.
    if let Some((compiled, _)) = &policy {
        let missing = guardfs_shim::stack::access::missing_keys(compiled, &keys);
        if !missing.is_empty() {
            return Err((
                exitcode::BAD_KEY,
                format!(
                    "policy {} names keys that were not supplied (use --key NAME=FILE): {}",
                    compiled.name(),
                    missing.join(", ")
                ),
            ));
        }
    }
    Ok(Prepared { keys, policy })
}

fn run_mount(a: MountArgs) -> i32 {
    let prepared = match precheck(&a) {
        Ok(p) => p,
        Err((code, msg)) => {
            report_ready(a.ready_fd, Err(&msg));
            return fail(code, &msg);
        }
    };
    if !a.foreground {
        drop(prepared);
        return spawn_daemon(&a);
    }
    // Before any thread starts (the audit writer, the FUSE workers).
    if let Err(e) = mount::block_signals() {
        return fail(exitcode::FAILURE, &format!("cannot block signals: {e}"));
    }
    let gp = match mount::absolute(&a.dir) {
        Ok(p) => p.into_os_string().into_vec(),
        Err(e) => return fail(e.exit_code(), &e),
    };
    let access = match prepared.policy {
        None => Access::unrestricted(&gp),
        Some((policy, host)) => {
            let opts = AuditOptions {
                file: Some(a.audit_log.clone()),
                syslog: true,
                concise: a.concise_logging.then_some(CONCISE_WINDOW),
                rate_limit: a.audit_rate_limit.0,
            };
            match Auditor::start(opts) {
                Ok(audit) => Access::with_policy(&gp, policy, host, Some(audit)),
                Err(e) => {
                    let msg = format!("audit log {}: {e}", a.audit_log.display());
                    report_ready(a.ready_fd, Err(&msg));
                    return fail(exitcode::FAILURE, &msg);
                }
            }
        }
    };
    let spec = MountSpec {
        dir: a.dir.clone(),
        guard: GuardConfig {
            mode: a.mode,
            keys: Arc::new(prepared.keys),
            access: Arc::new(access),
            passthrough: a.mode == Mode::Clear,
        },
        // A `clear` GuardPoint transforms nothing: after the open-time
        // decision the kernel does its files' I/O (FUSE passthrough, which
        // excludes the writeback cache).
        fuse: FuseOptions {
            writeback_cache: !a.no_writeback_cache,
            passthrough: a.mode == Mode::Clear,
            ..FuseOptions::default()
        },
        threads: a.threads.unwrap_or_else(cpus),
        exclude: Vec::new(),
    };
    // Files are created with the modes the kernel computed (umask applied).
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    mount::protect_process_memory();
    let mounted = match mount::mount(&spec) {
        Ok(m) => m,
        Err(e) => {
            report_ready(a.ready_fd, Err(&e.to_string()));
            return fail(e.exit_code(), &e);
        }
    };
    let on_hup: Box<dyn Fn() + Send> = {
        let stack = mounted.stack.clone();
        let invalidate = mounted.invalidator();
        let (policy, host) = (a.policy.clone(), a.host_settings.clone());
        Box::new(move || reload(&stack, policy.as_deref(), host.as_deref(), &invalidate))
    };
    // Serving; no process holds the lower directory and every other place
    // where it shows has the GuardPoint too (or the mount is rolled back).
    let serving = match mounted.start() {
        Ok(s) => s,
        Err(e) => {
            report_ready(a.ready_fd, Err(&e.to_string()));
            return fail(e.exit_code(), &e);
        }
    };
    let before: Box<dyn Fn() + Send> = Box::new(serving.remover());
    if let Err(e) = mount::unmount_on_signal_with(serving.path.clone(), on_hup, before) {
        serving.remover()();
        let _ = mount::unmount(&serving.path, true);
        let msg = format!("cannot install signal handling: {e}");
        report_ready(a.ready_fd, Err(&msg));
        return fail(exitcode::FAILURE, &msg);
    }
    report_ready(a.ready_fd, Ok(()));
    match serving.wait() {
        Ok(()) => exitcode::OK,
        Err(e) => fail(exitcode::FAILURE, &e),
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// `secfs serve`: mount the control node and serve until SIGTERM, which
/// unguards every GuardPoint (lazily) and ends the service.
fn run_serve(a: ServeArgs) -> i32 {
    use guardfs_shim::ctl::service::{Authority, Service, ServiceOptions};
    if let Err(e) = mount::require_root() {
        return fail(e.exit_code(), &e);
    }
    if let Err(e) = mount::block_signals() {
        return fail(exitcode::FAILURE, &format!("cannot block signals: {e}"));
    }
    let authority = match Authority::of_binary(&a.vmd) {
        Ok(x) => x,
        Err(e) => return fail(exitcode::USAGE, &format!("--vmd {}: {e}", a.vmd.display())),
    };
    let audit = match Auditor::start(AuditOptions {
        file: Some(a.audit_log.clone()),
        syslog: true,
        concise: a.concise_logging.then_some(CONCISE_WINDOW),
        rate_limit: a.audit_rate_limit.0,
    }) {
        Ok(x) => x,
        Err(e) => {
            return fail(
                exitcode::FAILURE,
                &format!("audit log {}: {e}", a.audit_log.display()),
            );
        }
    };
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    mount::protect_process_memory();
    let opts = ServiceOptions {
        blob_dir: a.blob_dir.clone(),
        threads: a.threads.unwrap_or_else(cpus),
        writeback_cache: !a.no_writeback_cache,
    };
    let service = Arc::new(Service::new(authority, opts, Some(audit)));
    let ctl = match mount::mount_control(&a.ctl_dir, service.clone()) {
        Ok(c) => c,
        Err(e) => return fail(e.exit_code(), &e),
    };
    let stop: Box<dyn Fn() + Send> = {
        let service = service.clone();
        Box::new(move || service.unguard_all())
    };
    if let Err(e) = mount::unmount_on_signal_then(ctl.path.clone(), stop) {
        let _ = mount::unmount(&ctl.path, true);
        return fail(
            exitcode::FAILURE,
            &format!("cannot install signal handling: {e}"),
        );
    }
    log::info!(
        "secfs: service ready (pid {}), vmd {}",
        std::process::id(),
        a.vmd.display()
    );
    match ctl.serve() {
        Ok(()) => exitcode::OK,
        Err(e) => fail(exitcode::FAILURE, &e),
    }
}

/// SIGHUP: read the policy files again and switch to them atomically; on
/// any error keep the current policy. Then revoke the old handles of files
/// whose decision changed and drop every kernel cache, so nothing cached
/// under the old policy outlives it (`Stack::policy_loaded`).
fn reload(stack: &Stack, policy: Option<&Path>, host: Option<&Path>, invalidate: &dyn Fn(Ino)) {
    let Some(policy) = policy else {
        log::info!("secfs: SIGHUP: mounted without --policy; nothing to reload");
        return;
    };
    match load_policy(policy, host) {
        Ok((compiled, settings)) => {
            let name = compiled.name().to_owned();
            match stack.switch_policy(compiled, settings, true, invalidate) {
                Ok(generation) => {
                    log::info!("secfs: SIGHUP: policy {name} loaded (generation {generation})");
                }
                Err(e) => log::error!("secfs: SIGHUP: {e}; keeping the current policy"),
            }
        }
        Err(e) => log::error!("secfs: SIGHUP: {e}; keeping the current policy"),
    }
}

/// Tell the parent `secfs mount` whether the daemon is up.
fn report_ready(fd: Option<i32>, r: Result<(), &str>) {
    let Some(fd) = fd.and_then(guardfs_shim::sys::take_inherited_fd) else {
        return;
    };
    let mut f = std::fs::File::from(fd);
    let _ = match r {
        Ok(()) => writeln!(f, "ok"),
        Err(m) => writeln!(f, "error: {m}"),
    };
}

/// An audit rate limit (see `--audit-rate-limit`).
#[derive(Debug, Clone, Copy)]
struct RateLimit(Option<(u32, std::time::Duration)>);

fn parse_rate_limit(s: &str) -> Result<RateLimit, String> {
    if s == "off" {
        return Ok(RateLimit(None));
    }
    let bad = || format!("{s:?}: expected N/SECS (e.g. 200/10) or off");
    let (n, secs) = s.split_once('/').ok_or_else(bad)?;
    let n: u32 = n.parse().map_err(|_| bad())?;
    let secs: u64 = secs.parse().map_err(|_| bad())?;
    if n == 0 || secs == 0 {
        return Err(bad());
    }
    Ok(RateLimit(Some((n, std::time::Duration::from_secs(secs)))))
}

/// Start the daemon (this program, same arguments, plus `--foreground`)
/// detached, and wait until it reports that the mount is up.
fn spawn_daemon(a: &MountArgs) -> i32 {
    let run = || -> anyhow::Result<i32> {
        if let Some(dir) = a.log_file.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let log = guardfs_shim::audit::open_log(&a.log_file)
            .with_context(|| format!("opening log file {}", a.log_file.display()))?;
        let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        // The write end must survive exec in the child: a dup has no CLOEXEC.
        let w_inherit = nix::unistd::dup(&w)?;
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(std::env::args_os().skip(1))
            .arg("--foreground")
            .arg("--ready-fd")
            .arg(w_inherit.as_raw_fd().to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        let mut child = cmd.spawn().context("starting the secfs daemon")?;
        drop(w_inherit);
        drop(w);
        let mut line = String::new();
        BufReader::new(std::fs::File::from(r)).read_line(&mut line)?;
        if line.trim() == "ok" {
            println!(
                "secfs: {} is guarded (daemon pid {}, log {})",
                a.dir.display(),
                child.id(),
                a.log_file.display()
            );
            return Ok(exitcode::OK);
        }
        let status = child.wait()?;
        let msg = line
            .trim()
            .strip_prefix("error: ")
            .unwrap_or("the daemon exited without reporting")
            .to_owned();
        eprintln!("secfs: {msg}");
        Ok(status
            .code()
            .filter(|&c| c != 0)
            .unwrap_or(exitcode::MOUNT_FAILED))
    };
    match run() {
        Ok(c) => c,
        Err(e) => fail(exitcode::FAILURE, &format!("{e:#}")),
    }
}
