//! `secfs`: guard a directory with a key from a key file.
//!
//! ```text
//! secfs genkey FILE
//! secfs mount DIR --key-file FILE [--mode xts|cbc-cs1|gcm|clear] [--foreground]
//! secfs umount DIR [--lazy]
//! ```

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use guardfs_crypto::Mode;
use guardfs_shim::exitcode;
use guardfs_shim::fuse::FuseOptions;
use guardfs_shim::keyfile;
use guardfs_shim::mount::{self, MountSpec};
use guardfs_shim::stack::GuardConfig;
use guardfs_shim::stack::keys::StaticKeys;

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
    Mount {
        dir: PathBuf,
        /// Key file (from `secfs genkey`); the key is named `default`.
        #[arg(long)]
        key_file: PathBuf,
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
    },
    /// Unmount the GuardPoint at DIR.
    Umount {
        dir: PathBuf,
        /// Detach even if files are open.
        #[arg(long)]
        lazy: bool,
    },
}

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
        Cmd::Mount {
            dir,
            key_file,
            mode,
            foreground,
            no_writeback_cache,
            threads,
            log_file,
            ready_fd,
        } => run_mount(MountArgs {
            dir,
            key_file,
            mode,
            foreground,
            no_writeback_cache,
            threads,
            log_file,
            ready_fd,
        }),
    };
    ExitCode::from(code as u8)
}

fn fail(code: i32, e: &dyn std::fmt::Display) -> i32 {
    eprintln!("secfs: {e}");
    code
}

struct MountArgs {
    dir: PathBuf,
    key_file: PathBuf,
    mode: Mode,
    foreground: bool,
    no_writeback_cache: bool,
    threads: Option<usize>,
    log_file: PathBuf,
    ready_fd: Option<i32>,
}

/// Checks that give a clear error before anything is started.
fn precheck(a: &MountArgs) -> Result<guardfs_crypto::PolicyKey, (i32, String)> {
    mount::require_root().map_err(|e| (e.exit_code(), e.to_string()))?;
    drop(mount::open_fuse_device().map_err(|e| (e.exit_code(), e.to_string()))?);
    mount::prepare_dir(&a.dir).map_err(|e| (e.exit_code(), e.to_string()))?;
    keyfile::load(&a.key_file).map_err(|e| (exitcode::BAD_KEY, e.to_string()))
}

fn run_mount(a: MountArgs) -> i32 {
    let key = match precheck(&a) {
        Ok(k) => k,
        Err((code, msg)) => {
            report_ready(a.ready_fd, Err(&msg));
            return fail(code, &msg);
        }
    };
    if !a.foreground {
        drop(key);
        return spawn_daemon(&a);
    }
    let spec = MountSpec {
        dir: a.dir.clone(),
        guard: GuardConfig {
            mode: a.mode,
            keys: Arc::new(StaticKeys::single("default", 1, key)),
        },
        fuse: FuseOptions {
            writeback_cache: !a.no_writeback_cache,
            ..FuseOptions::default()
        },
        threads: a.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        }),
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
    if let Err(e) = mount::unmount_on_signal(mounted.path.clone()) {
        let _ = mount::unmount(&mounted.path, true);
        let msg = format!("cannot install signal handling: {e}");
        report_ready(a.ready_fd, Err(&msg));
        return fail(exitcode::FAILURE, &msg);
    }
    report_ready(a.ready_fd, Ok(()));
    match mounted.serve() {
        Ok(()) => exitcode::OK,
        Err(e) => fail(exitcode::FAILURE, &e),
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

/// Start the daemon (this program with `--foreground`) detached, and wait
/// until it reports that the mount is up.
fn spawn_daemon(a: &MountArgs) -> i32 {
    let run = || -> anyhow::Result<i32> {
        if let Some(dir) = a.log_file.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&a.log_file)
            .with_context(|| format!("opening log file {}", a.log_file.display()))?;
        let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        // The write end must survive exec in the child: clear CLOEXEC on a dup.
        let w_inherit = nix::unistd::dup(&w)?;
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        cmd.arg("mount")
            .arg(&a.dir)
            .arg("--key-file")
            .arg(&a.key_file)
            .arg("--mode")
            .arg(a.mode.name())
            .arg("--foreground")
            .arg("--ready-fd")
            .arg(w_inherit.as_raw_fd().to_string());
        if a.no_writeback_cache {
            cmd.arg("--no-writeback-cache");
        }
        if let Some(t) = a.threads {
            cmd.arg("--threads").arg(t.to_string());
        }
        cmd.stdin(Stdio::null())
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
