//! `vmd`: the GuardFS control daemon.
//!
//! ```text
//! vmd            start in the background (returns when it answers)
//! vmd -f         run in the foreground (logs to stderr)
//! vmd -v         print the version
//! vmd -h         help
//! ```
//!
//! `--root DIR` (or `GUARDFS_ROOT`) selects the install root
//! (default `/opt/guardfs/agent`).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use guardfs_control::api::{self, Request};
use guardfs_control::state::{Layout, default_root};
use guardfs_control::vmd::{Agent, server};

#[derive(Parser)]
#[command(
    name = "vmd",
    about = "GuardFS control daemon: keys, policies and GuardPoints for the secfs service",
    disable_version_flag = true,
    after_help = "Exit codes: 0 ok, 1 failure, 2 usage, 3 not root."
)]
struct Cli {
    /// Run in the foreground.
    #[arg(short = 'f', long)]
    foreground: bool,
    /// Print the version and exit.
    #[arg(short = 'v', long)]
    version: bool,
    /// Install root (default: $GUARDFS_ROOT or /opt/guardfs/agent).
    #[arg(long)]
    root: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    if cli.version {
        println!("vmd (GuardFS) version {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("vmd: must run as root");
        return ExitCode::from(3);
    }
    let root = cli.root.clone().unwrap_or_else(default_root);
    let layout = match Layout::open(&root).and_then(|l| l.create_dirs().map(|()| l)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("vmd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = if cli.foreground {
        foreground(layout)
    } else {
        background(&root, &layout)
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn answers(layout: &Layout) -> bool {
    api::call(&layout.run_dir, &Request::Status, Duration::from_secs(10)).is_ok_and(|r| r.ok)
}

/// Start `vmd -f` detached and wait until it answers.
fn background(root: &Path, layout: &Layout) -> Result<(), String> {
    if answers(layout) {
        println!("vmd is already running");
        return Ok(());
    }
    std::fs::create_dir_all(&layout.log_dir)
        .map_err(|e| format!("{}: {e}", layout.log_dir.display()))?;
    let log_path = layout.log_dir.join("vmd.log");
    let log = guardfs_shim::audit::open_log(&log_path)
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.arg("-f")
        .arg("--root")
        .arg(root)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().map_err(|e| format!("starting vmd: {e}"))?;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        if answers(layout) {
            println!(
                "vmd started (pid {}, log {})",
                child.id(),
                log_path.display()
            );
            return Ok(());
        }
        if let Ok(Some(st)) = child.try_wait() {
            let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
            let last: Vec<&str> = tail.lines().rev().take(5).collect();
            return Err(format!(
                "vmd exited at start ({st}); last log lines:\n{}",
                last.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "vmd did not answer within 60 s; see {}",
        log_path.display()
    ))
}

fn foreground(layout: Layout) -> Result<(), String> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    protect_memory();
    let vmd_bin = std::env::current_exe().map_err(|e| e.to_string())?;
    let conf =
        guardfs_control::state::AgentConf::load(&layout.agent_conf()).map_err(|e| e.to_string())?;
    let secfs_bin = match conf.get("secfs_path") {
        Some(p) => PathBuf::from(p),
        None => vmd_bin.with_file_name("secfs"),
    };
    if !secfs_bin.is_file() {
        return Err(format!(
            "secfs binary {} not found (set secfs_path in agent.conf)",
            secfs_bin.display()
        ));
    }
    let agent = Agent::open(layout, secfs_bin, vmd_bin)?;
    server::run(agent)
}

/// Keys live in this process: keep them out of swap and core dumps.
fn protect_memory() {
    guardfs_shim::harden::protect_process_memory("vmd");
}
