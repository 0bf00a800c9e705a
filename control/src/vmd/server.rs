//! The daemon loop: single-instance lock, the local API socket (root
//! callers only, checked with SO_PEERCRED), and the supervision thread
//! that keeps secfs up and GuardPoints guarded.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use log::{error, info, warn};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use crate::api::{self, Reply, Request};
use crate::vmd::Agent;

/// How often vmd checks secfs and retries GuardPoints.
pub const TICK: Duration = Duration::from_millis(500);

/// Largest request line accepted (policies travel inline).
const MAX_REQUEST: u64 = 4 << 20;

fn lock(agent: &Mutex<Agent>) -> std::sync::MutexGuard<'_, Agent> {
    agent.lock().unwrap_or_else(|e| e.into_inner())
}

/// Hold the pid file's lock for the life of the process; fails if another
/// vmd holds it.
fn single_instance(run_dir: &std::path::Path) -> Result<nix::fcntl::Flock<std::fs::File>, String> {
    let path = run_dir.join("vmd.pid");
    let f = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut locked = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| {
            let other = std::fs::read_to_string(&path).unwrap_or_default();
            format!("vmd is already running (pid {})", other.trim())
        })?;
    locked.set_len(0).map_err(|e| e.to_string())?;
    writeln!(locked, "{}", std::process::id()).map_err(|e| e.to_string())?;
    Ok(locked)
}

/// Run the daemon in the foreground until a shutdown request.
pub fn run(agent: Agent) -> Result<(), String> {
    let run_dir = agent.layout.run_dir.clone();
    let _lock = single_instance(&run_dir)?;
    let sock = api::socket_path(&run_dir);
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).map_err(|e| format!("{}: {e}", sock.display()))?;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| e.to_string())?;
    let agent = Arc::new(Mutex::new(agent));
    lock(&agent).tick();
    {
        let agent = agent.clone();
        std::thread::Builder::new()
            .name("vmd-supervise".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(TICK);
                    let mut a = lock(&agent);
                    if a.stopping {
                        return;
                    }
                    a.tick();
                }
            })
            .map_err(|e| e.to_string())?;
    }
    info!(
        "vmd: ready on {} (pid {})",
        sock.display(),
        std::process::id()
    );
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        let agent = agent.clone();
        let stop = serve_one(&agent, stream);
        if stop {
            break;
        }
    }
    let _ = std::fs::remove_file(&sock);
    info!("vmd: stopped");
    Ok(())
}

/// Answer one connection; true when vmd should stop.
fn serve_one(agent: &Mutex<Agent>, mut stream: UnixStream) -> bool {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let reply = match getsockopt(&stream, PeerCredentials) {
        Ok(c) if c.uid() == 0 => {
            let mut line = String::new();
            let read =
                BufReader::new(std::io::Read::take(&stream, MAX_REQUEST)).read_line(&mut line);
            let reply = match read {
                Ok(0) => return false,
                Err(e) => Reply::err(format!("reading the request: {e}")),
                Ok(_) => match serde_json::from_str::<Request>(&line) {
                    Ok(req) => {
                        info!("vmd: {req:?} from pid {}", c.pid());
                        let r = lock(agent).handle(req);
                        if let Some(e) = &r.error {
                            warn!("vmd: request failed: {e}");
                        }
                        r
                    }
                    Err(e) => Reply::err(format!("malformed request: {e}")),
                },
            };
            // The line may hold a password.
            zeroize::Zeroize::zeroize(&mut line);
            reply
        }
        Ok(c) => {
            warn!(
                "vmd: refused a request from uid {} pid {}: not root",
                c.uid(),
                c.pid()
            );
            Reply::err("only root may talk to vmd")
        }
        Err(e) => Reply::err(format!("cannot identify the caller: {e}")),
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    out.push(b'\n');
    if let Err(e) = stream.write_all(&out) {
        error!("vmd: writing a reply: {e}");
    }
    lock(agent).stopping
}
