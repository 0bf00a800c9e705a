//! Starting, finding and watching the secfs service process. vmd starts
//! `secfs serve` in its own process group (it outlives vmd: GuardPoints
//! keep working while vmd is down) and talks to it only through the
//! control node's ioctls.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use guardfs_shim::ctl::client::{Client, ClientError};
use guardfs_shim::ctl::proto::SERVICE_INDEX;
use log::{info, warn};

use crate::state::Layout;

/// How vmd reaches secfs.
#[derive(Debug)]
pub struct SecfsProcess {
    pub ctl_dir: PathBuf,
    pub binary: PathBuf,
    pub vmd: PathBuf,
    pub log: PathBuf,
    pub audit_log: PathBuf,
    pub blob_dir: PathBuf,
    pid_file: PathBuf,
    /// Extra arguments from `voradmin secfs config`.
    pub extra_args: Vec<String>,
    client: Option<Client>,
    child: Option<Child>,
}

/// What [`SecfsProcess::ensure`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Liveness {
    /// The service we were talking to still answers.
    Alive,
    /// A running service was found (vmd restarted): vmd must learn its state.
    Adopted,
    /// A new service was started: everything must be pushed again.
    Started,
}

impl SecfsProcess {
    pub fn new(layout: &Layout, binary: PathBuf, vmd: PathBuf) -> SecfsProcess {
        SecfsProcess {
            ctl_dir: layout.run_dir.join("ctl"),
            binary,
            vmd,
            log: layout.log_dir.join("secfs.log"),
            audit_log: layout.log_dir.join("audit.log"),
            blob_dir: layout.blob_dir.clone(),
            pid_file: layout.run_dir.join("secfs.pid"),
            extra_args: Vec::new(),
            client: None,
            child: None,
        }
    }

    /// The channel, if connected.
    pub fn client(&mut self) -> Option<&mut Client> {
        self.client.as_mut()
    }

    /// The service's pid as vmd knows it.
    pub fn pid(&self) -> Option<u32> {
        if let Some(c) = &self.child {
            return Some(c.id());
        }
        let pid: u32 = std::fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        // A stale pid file may name an unrelated process by now.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let is_secfs = cmdline.split(|&b| b == 0).nth(1) == Some(b"serve".as_slice())
            && std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|e| Some(e) == std::fs::canonicalize(&self.binary).ok());
        is_secfs.then_some(pid)
    }

    /// Forget the connection (after an error that suggests the service died).
    pub fn disconnect(&mut self) {
        self.client = None;
    }

    /// Make sure a service answers: keep the current one, adopt a running
    /// one, or start a new one.
    pub fn ensure(&mut self) -> Result<Liveness, String> {
        self.reap();
        if let Some(c) = self.client.as_mut() {
            match c.status(SERVICE_INDEX) {
                Ok(_) => return Ok(Liveness::Alive),
                Err(e) if is_dead(&e) => {
                    warn!("vmd: secfs service stopped answering; restarting it");
                    self.client = None;
                }
                Err(e) => return Err(format!("secfs service: {e}")),
            }
        }
        match Client::connect(&self.ctl_dir) {
            Ok(c) => {
                self.client = Some(c);
                return Ok(Liveness::Adopted);
            }
            // A live service that does not accept this vmd (its binary
            // changed since secfs started): starting another cannot help.
            Err(e) if e.errno() == Some(guardfs_shim::vfs::Errno::EPERM) => {
                return Err(format!(
                    "the running secfs service refuses this vmd ({e}): the vmd binary changed since secfs \
                     started; stop the agent with the old binaries (voradmin shutdown) or stop secfs"
                ));
            }
            Err(_) => {}
        }
        self.start()?;
        Ok(Liveness::Started)
    }

    /// Collect an exited child (so it does not stay a zombie).
    fn reap(&mut self) {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            warn!("vmd: secfs service (pid {}) exited: {status}", c.id());
            self.child = None;
            self.client = None;
        }
    }

    fn start(&mut self) -> Result<(), String> {
        if let Some(d) = self.log.parent() {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let log = guardfs_shim::audit::open_log(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&self.binary);
        cmd.arg("serve")
            .arg("--vmd")
            .arg(&self.vmd)
            .arg("--ctl-dir")
            .arg(&self.ctl_dir)
            .arg("--blob-dir")
            .arg(&self.blob_dir)
            .arg("--audit-log")
            .arg(&self.audit_log)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.binary.display()))?;
        let pid = child.id();
        let _ = std::fs::write(&self.pid_file, format!("{pid}\n"));
        let t = Instant::now();
        loop {
            match Client::connect(&self.ctl_dir) {
                Ok(c) => {
                    info!("vmd: secfs service started (pid {pid})");
                    self.client = Some(c);
                    self.child = Some(child);
                    return Ok(());
                }
                Err(e) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(format!(
                            "secfs service exited at start ({status}); see {}",
                            self.log.display()
                        ));
                    }
                    if t.elapsed() > Duration::from_secs(20) {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(format!("secfs service did not come up: {e}"));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// Stop the service (SIGTERM: it unguards everything) and wait for it.
    pub fn stop(&mut self) {
        let Some(pid) = self.pid() else { return };
        self.client = None;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let t = Instant::now();
        while Path::new(&format!("/proc/{pid}")).exists() && t.elapsed() < Duration::from_secs(20) {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = None;
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

/// Whether a client error means the service is gone.
pub fn is_dead(e: &ClientError) -> bool {
    e.errno()
        .is_some_and(|n| n.0 == libc_enotconn() || n.0 == libc_enodev())
}

fn libc_enotconn() -> i32 {
    nix::errno::Errno::ENOTCONN as i32
}
fn libc_enodev() -> i32 {
    nix::errno::Errno::ENODEV as i32
}
