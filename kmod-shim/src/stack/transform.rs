//! The stack's side of `dataxform`: the ioctl on a directory of the
//! mount (root only), which files it names, the policy's `key_op` check
//! for each, and the batch, online rekey and cleanup requests handed to
//! `xform` and `rekey`.
//!
//! Must not: transform anything itself (`xform`, `rekey` do), or act on a
//! name outside the directory the ioctl was sent on.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use nix::fcntl::{AtFlags, OFlag};

use super::*;

impl Stack {
    /// `dataxform`'s request for the entries `names` of the directory
    /// `dir`, transformed as one batch (see `xform`): one result per name.
    /// The ioctl checks that the caller is root; each file's path must be
    /// permitted `key_op` with the key.
    pub(super) fn transform_names(
        &self,
        c: &Caller,
        dir: &Node,
        names: &[Vec<u8>],
        plan: xform::Plan,
    ) -> Vec<Result<xform::Outcome, i32>> {
        let mut results: Vec<Option<Result<xform::Outcome, i32>>> = vec![None; names.len()];
        let mut found = Vec::new();
        for (i, name) in names.iter().enumerate() {
            match self.resolve_for_transform(c, dir, OsStr::from_bytes(name)) {
                Ok(r) => found.push((i, r)),
                Err(r) => results[i] = Some(r),
            }
        }
        let items: Vec<xform::Item<'_>> = found
            .iter()
            .map(|(_, (node, fd, key))| xform::Item {
                state: node.file().clone(),
                open: self.open_anywhere(node.file()),
                io: self.io(node, fd.as_fd(), key),
            })
            .collect();
        // Passthrough handles write the lower file without secfs.
        let busy = |s: &Arc<file::FileState>| self.cfg.passthrough && self.open_anywhere(s);
        let out = xform::transform_batch(&items, self.root_fd.as_fd(), plan, &busy);
        drop(items);
        for ((i, (node, _, _)), o) in found.iter().zip(out) {
            if let Ok(o) = &o
                && o.status == xform::Status::Done
            {
                log::info!(
                    "secfs: {}: transformed {} -> {}",
                    node.display_path(),
                    o.from,
                    o.to
                );
            }
            results[*i] = Some(o.map_err(|e| e.0));
            self.nodes.forget(node.ino, 1);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(libc::EIO)))
            .collect()
    }

    /// `dataxform`'s online rekey step for the entry `name` of `dir` (the
    /// same checks as [`Self::transform_names`]).
    pub(super) fn rekey_step(
        &self,
        c: &Caller,
        dir: &Node,
        name: &[u8],
        op: xform::Op,
        budget: u64,
    ) -> Result<xform::Outcome, i32> {
        let (node, fd, key) = match self.resolve_for_transform(c, dir, OsStr::from_bytes(name)) {
            Ok(r) => r,
            Err(r) => return r,
        };
        let out = if self.cfg.passthrough && self.open_anywhere(node.file()) {
            Ok(xform::Outcome {
                status: xform::Status::InUse,
                from: String::new(),
                to: String::new(),
                size: 0,
                lower_bytes: 0,
                why: "open without secfs (passthrough)".into(),
            })
        } else {
            let io = self.io(&node, fd.as_fd(), &key);
            xform::online_step(node.file(), &io, op, budget).map_err(|e| e.0)
        };
        if let Ok(o) = &out
            && o.status == xform::Status::Done
        {
            log::info!(
                "secfs: {}: rekeyed online {} -> {}",
                node.display_path(),
                o.from,
                o.to
            );
        }
        self.nodes.forget(node.ino, 1);
        out
    }

    /// The plaintext view's node of the regular file `name` in `dir` (one
    /// lookup counted: the caller forgets it), opened for reading and
    /// writing, with its key rule; or the outcome that skips it.
    #[allow(clippy::type_complexity)]
    pub(super) fn resolve_for_transform(
        &self,
        c: &Caller,
        dir: &Node,
        name: &OsStr,
    ) -> Result<(Arc<Node>, OwnedFd, RuleKey), Result<xform::Outcome, i32>> {
        let skip = |status, why: &str| {
            Err(Ok(xform::Outcome {
                status,
                from: String::new(),
                to: String::new(),
                size: 0,
                lower_bytes: 0,
                why: why.into(),
            }))
        };
        if reserved(dir.ino, name, Errno::ENOENT).is_err() {
            return Err(Err(libc::ENOENT));
        }
        let path = self.child_path(dir, name).map_err(|e| Err(e.0))?;
        let st = nix::sys::stat::fstatat(dir.fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| Err(e as i32))?;
        if FileKind::from_mode(st.st_mode) != FileKind::Regular {
            return skip(xform::Status::NotRegular, "not a regular file");
        }
        let grant = match self.cfg.access.generation() {
            0 => Grant::unrestricted(),
            _ => match self.cfg.access.check(c, &path, Action::KeyOp) {
                Ok(g) if g.view == View::Plain => g,
                Ok(_) => {
                    return skip(
                        xform::Status::Refused,
                        "the policy permits key_op here without applykey",
                    );
                }
                Err(_) => return skip(xform::Status::Refused, "the policy denies key_op here"),
            },
        };
        // The plaintext view's node: the one whose contents state every
        // key-holding handle shares.
        let entry = match self.do_lookup(dir, name, &grant.key) {
            Ok(e) => e,
            Err(e) => {
                return skip(
                    xform::Status::Refused,
                    &format!("lookup refused ({e:?}): a hard link under another key rule?"),
                );
            }
        };
        let opened = self.nodes.get(entry.ino).and_then(|node| {
            if node.kind != FileKind::Regular {
                return Err(Errno::EINVAL);
            }
            let fd = self.reopen(&node, OFlag::O_RDWR)?;
            Ok((node, fd))
        });
        match opened {
            Ok((node, fd)) => Ok((node, fd, grant.key)),
            Err(e) => {
                self.nodes.forget(entry.ino, 1);
                Err(Err(e.0))
            }
        }
    }

    /// The `dataxform` ioctl (`xform_ioctl`): batches, online steps, cleanup.
    pub(super) fn transform_ioctl(
        &self,
        c: &Caller,
        ino: Ino,
        fh: Fh,
        cmd: u32,
        input: &[u8],
        out_size: u32,
    ) -> VfsResult<(i32, Vec<u8>)> {
        use crate::xform_ioctl::{self as xi, Ask};
        if cmd != xi::CMD || out_size as usize != xi::SIZE {
            return Err(Errno::ENOTTY);
        }
        let req = xi::Request::decode(input).map_err(|e| {
            log::warn!(
                "secfs: bad transformation request ({} bytes): {e}",
                input.len()
            );
            Errno::EINVAL
        })?;
        let h = self.handle(fh)?;
        let Handle::Dir { node, .. } = &*h else {
            return Err(Errno::ENOTTY);
        };
        if node.ino != ino {
            return Err(Errno::EINVAL);
        }
        // Transformations are root's (CTE's dataxform is root only).
        if c.uid != 0 {
            return Err(Errno::EPERM);
        }
        let mut b = Box::new([0u8; xi::SIZE]);
        b.copy_from_slice(input);
        match req.ask {
            Ask::Files(op) => {
                let plan = xform::Plan {
                    op,
                    scan: req.flags & xi::SCAN != 0,
                    preserve_times: req.flags & xi::PRESERVE_TIMES != 0,
                    online: req.flags & xi::ONLINE != 0,
                };
                let results = self.transform_names(c, node, &req.names, plan);
                xi::encode_reply(&mut b, &results, 0);
            }
            Ask::Step { op, budget } => {
                let name = req.names.first().ok_or(Errno::EINVAL)?;
                let result = self.rekey_step(c, node, name, op, budget);
                xi::encode_reply(&mut b, &[result], 0);
            }
            Ask::Cleanup { before } => {
                if node.ino != Ino::ROOT {
                    return Err(Errno::EINVAL);
                }
                let removed =
                    xform::cleanup(self.root_fd.as_fd(), before).map_err(|_| Errno::EIO)?;
                xi::encode_reply(&mut b, &[], removed);
            }
        }
        Ok((0, b.to_vec()))
    }
}
