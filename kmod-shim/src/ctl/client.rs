//! The vmd side of the channel: open the control node and send requests.
//! Sequence numbers continue from the last one the service accepted, so a
//! restarted vmd does not look like a replay and an old request does.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode as StatMode;

use crate::ctl::node::CONTROL_FILE;
use crate::ctl::proto::{Op, Request, SERVICE_INDEX, StatusEntry};
use crate::sys;
use crate::vfs::Errno;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot open the secfs control node {path}: {errno:?}")]
    Open { path: PathBuf, errno: Errno },
    #[error("secfs refused {op:?}: {errno:?}")]
    Refused { op: Op, errno: Errno },
    #[error("bad request: {0}")]
    Encode(#[from] crate::ctl::proto::ProtoError),
}

impl ClientError {
    /// The errno the service answered with, if it answered.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            ClientError::Open { errno, .. } | ClientError::Refused { errno, .. } => Some(*errno),
            ClientError::Encode(_) => None,
        }
    }
}

/// An open channel to the secfs service.
#[derive(Debug)]
pub struct Client {
    fd: OwnedFd,
    next_seq: u64,
}

/// The control file under the control directory.
pub fn control_path(ctl_dir: &Path) -> PathBuf {
    ctl_dir.join(CONTROL_FILE)
}

impl Client {
    /// Open the control node in `ctl_dir` and learn the next sequence number.
    pub fn connect(ctl_dir: &Path) -> Result<Client, ClientError> {
        let path = control_path(ctl_dir);
        let fd = nix::fcntl::open(&path, OFlag::O_RDWR | OFlag::O_CLOEXEC, StatMode::empty())
            .map_err(|e| ClientError::Open {
                path: path.clone(),
                errno: e.into(),
            })?;
        let mut c = Client { fd, next_seq: 1 };
        let svc = c.status(SERVICE_INDEX)?;
        c.next_seq = svc.last_seq + 1;
        Ok(c)
    }

    /// Send raw bytes with the ioctl of `op` (tests use this to send
    /// malformed structs).
    pub fn send_raw(&self, cmd: u32, buf: &mut [u8]) -> Result<(), Errno> {
        sys::ioctl_buf(self.fd.as_fd(), cmd, buf).map(|_| ())
    }

    /// Send a request; returns the reply buffer (the struct, for status).
    pub fn send(&mut self, req: &Request) -> Result<Vec<u8>, ClientError> {
        let op = req.op();
        let mut buf = req.encode(self.next_seq)?;
        let r = sys::ioctl_buf(self.fd.as_fd(), op.ioctl_cmd(), &mut buf);
        if op == Op::PushKey {
            zeroize::Zeroize::zeroize(&mut buf[..]);
        }
        r.map_err(|errno| ClientError::Refused { op, errno })?;
        if !matches!(op, Op::Status | Op::FileInfo | Op::KeyAt) {
            self.next_seq += 1;
        }
        Ok(buf)
    }

    /// Status of GuardPoint `index` (in path order), or of the service.
    pub fn status(&mut self, index: u32) -> Result<StatusEntry, ClientError> {
        let buf = self.send(&Request::Status { index })?;
        Ok(StatusEntry::decode(&buf)?)
    }

    /// Every key version the service holds (names and versions only).
    pub fn keys(&mut self) -> Result<Vec<(String, u32)>, ClientError> {
        let mut out = Vec::new();
        for index in 0.. {
            match self.send(&Request::KeyAt { index }) {
                Ok(b) => out.push(crate::ctl::proto::decode_key_at(&b)?),
                Err(ClientError::Refused { errno, .. }) if errno == Errno::ENOENT => break,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Every GuardPoint the service serves.
    pub fn list(&mut self) -> Result<Vec<StatusEntry>, ClientError> {
        let mut out = Vec::new();
        for i in 0.. {
            match self.status(i) {
                Ok(e) => out.push(e),
                Err(ClientError::Refused { errno, .. }) if errno == Errno::ENOENT => break,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}
