//! Open files and policy generations: deciding an open (views, key rule,
//! append-only), loading a file's contents under its key rule, the handle
//! table, re-deciding handles after a policy change, and retiring and
//! revoking what a new policy no longer grants (see `access`, "Policy
//! generations and revocation").

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::OFlag;

use guardfs_policy::Action;

use super::*;

impl Stack {
    /// Re-check an open file after the policy changed under it; refuse
    /// every handle on a revoked node.
    /// `kernel`: the request is the kernel's own (pid 0, writeback), see
    /// `Access::recheck`.
    pub(super) fn recheck(&self, h: &FileHandle, kernel: bool) -> VfsResult<()> {
        if h.node.standing() == Standing::Revoked {
            return Err(Errno::EACCES);
        }
        let now = self.cfg.access.generation();
        if h.generation.load(Ordering::Acquire) == now {
            return Ok(());
        }
        let decided = self.decide_handle(h, true, kernel)?;
        if decided != u64::MAX {
            h.generation.store(decided, Ordering::Release);
        }
        Ok(())
    }

    /// Decide again, for its opener, what an open file rests on: `EACCES`
    /// if the current policy no longer grants the same view, else the
    /// oldest generation a decision was taken under (`u64::MAX`: none).
    /// `audit`: an operation of the opener (else a non-auditing probe).
    pub(super) fn decide_handle(
        &self,
        h: &FileHandle,
        audit: bool,
        kernel: bool,
    ) -> VfsResult<u64> {
        let path = self.rel_path(&h.node)?;
        let mut actions = Vec::with_capacity(2);
        if h.reads {
            actions.push(Action::FRd);
        }
        if h.writes {
            actions.push(if h.append {
                Action::FWrApp
            } else {
                Action::FWr
            });
        }
        // The generation stored is the oldest snapshot any check used, so
        // a reload during the re-check is checked again next time.
        let mut decided = u64::MAX;
        for a in actions {
            let g =
                self.cfg
                    .access
                    .recheck(&h.caller, h.opener.as_ref(), &path, a, audit, kernel)?;
            // Another view, or another key rule (the contents were read
            // under the old one): the handle no longer stands.
            if g.view != h.view || g.key != h.rule {
                return Err(Errno::EACCES);
            }
            decided = decided.min(g.generation);
        }
        Ok(decided)
    }

    /// Decide (and audit) a write other than an append through a handle
    /// whose opener was granted appending only: `EACCES` unless the policy
    /// now grants it writing.
    pub(super) fn writes_granted(&self, h: &FileHandle, kernel: bool) -> VfsResult<()> {
        let path = self.rel_path(&h.node)?;
        let g = self.cfg.access.recheck(
            &h.caller,
            h.opener.as_ref(),
            &path,
            Action::FWr,
            true,
            kernel,
        )?;
        if g.view != View::Plain {
            return Err(Errno::EACCES);
        }
        Ok(())
    }

    /// Invalidate everything the kernel caches for every inode (after a
    /// policy change), through `invalidate`.
    pub fn invalidate_all(&self, invalidate: &dyn Fn(Ino)) {
        for ino in self.nodes.all() {
            invalidate(ino);
        }
    }

    /// Switch to a new policy: write back every dirty page under the
    /// current one first (writeback after the switch could go through a
    /// handle the new policy refuses and be lost), then load it and close
    /// the old generation's access (see [`Stack::policy_loaded`]). With
    /// `require_keys`, a policy naming keys this stack lacks is refused and
    /// the current one stays. Returns the new generation.
    pub fn switch_policy(
        &self,
        policy: guardfs_policy::CompiledPolicy,
        host: guardfs_policy::HostSettings,
        require_keys: bool,
        invalidate: &dyn Fn(Ino),
    ) -> Result<u64, String> {
        let access = self.access();
        let missing = access::missing_keys(&policy, &*self.cfg.keys);
        if !missing.is_empty() {
            let e = format!(
                "policy {} names keys that were not supplied: {}",
                policy.name(),
                missing.join(", ")
            );
            if require_keys {
                return Err(e);
            }
            // Files under those key rules stay unreadable until the keys
            // arrive.
            log::warn!(
                "secfs: {}: {e} (yet)",
                String::from_utf8_lossy(access.guard_point())
            );
        }
        self.invalidate_all(invalidate);
        let generation = access.load(policy, host);
        self.policy_loaded(invalidate);
        Ok(generation)
    }

    /// After a policy load: close the old generation's access to shared
    /// kernel caches (see `access`, "Policy generations and revocation").
    ///
    /// Every open handle of an older generation on a regular file is
    /// decided again for its opener (without an audit record; the handle's
    /// next operation is decided and audited as before). Each file for
    /// which any such decision changed is retired: lookups get a fresh
    /// node for it from now on, its kernel inode is invalidated (dirty
    /// pages are written back through handles that still work), every
    /// handle on it is revoked, and it is invalidated again, so nothing
    /// can refill its page cache. Then every inode is invalidated, as
    /// before. Returns the number of files retired.
    pub fn policy_loaded(&self, invalidate: &dyn Fn(Ino)) -> usize {
        let now = self.cfg.access.generation();
        let open: Vec<Arc<Handle>> = self
            .handles
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|h| {
                matches!(&***h, Handle::File(f) if f.node.kind == FileKind::Regular
                    && f.node.standing() == Standing::Live
                    && f.generation.load(Ordering::Acquire) < now)
            })
            .cloned()
            .collect();
        let mut changed: Vec<Ino> = Vec::new();
        for h in &open {
            let Handle::File(f) = &**h else { continue };
            if changed.contains(&f.node.ino) {
                continue;
            }
            if self.decide_handle(f, false, false).is_err() {
                changed.push(f.node.ino);
            }
        }
        let retired: Vec<Arc<Node>> = changed
            .into_iter()
            .filter_map(|ino| self.nodes.retire(ino))
            .collect();
        for n in &retired {
            invalidate(n.ino);
        }
        for n in &retired {
            n.revoke();
        }
        for n in &retired {
            invalidate(n.ino);
        }
        if !retired.is_empty() {
            log::info!(
                "secfs: policy generation {now}: {} open file(s) retired, their old handles revoked",
                retired.len()
            );
        }
        self.invalidate_all(invalidate);
        retired.len()
    }

    /// Refuse an operation on a retired node: with a handle of a revoked
    /// node, `EACCES`; without a handle, `ESTALE` (the kernel then looks
    /// the path up again and reaches the fresh node).
    pub(super) fn gate(&self, node: &Node, fh: Option<Fh>) -> VfsResult<()> {
        match (node.standing(), fh) {
            (Standing::Live, _) => Ok(()),
            (Standing::Retired, Some(_)) => Ok(()),
            (Standing::Revoked, Some(_)) => Err(Errno::EACCES),
            (_, None) => Err(Errno(libc::ESTALE)),
        }
    }

    pub(super) fn add_handle(&self, h: Handle) -> Fh {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fh, Arc::new(h));
        Fh(fh)
    }

    pub(super) fn handle(&self, fh: Fh) -> VfsResult<Arc<Handle>> {
        self.handles
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh.0)
            .cloned()
            .ok_or(Errno::EBADF)
    }

    pub(super) fn with_file<T>(
        &self,
        fh: Fh,
        f: impl FnOnce(&FileHandle) -> VfsResult<T>,
    ) -> VfsResult<T> {
        let h = self.handle(fh)?;
        match &*h {
            Handle::File(file) => f(file),
            Handle::Dir { .. } => Err(Errno::EISDIR),
        }
    }

    pub(super) fn file_handle(&self, fh: Fh) -> VfsResult<(Arc<Handle>, Arc<Node>)> {
        let h = self.handle(fh)?;
        match &*h {
            Handle::File(f) => {
                let node = f.node.clone();
                Ok((h, node))
            }
            Handle::Dir { .. } => Err(Errno::EISDIR),
        }
    }

    /// Decide an open of `node` with `flags` for `c`.
    pub(super) fn decide_open(&self, c: &Caller, node: &Node, flags: i32) -> VfsResult<Decided> {
        let acc = flags & libc::O_ACCMODE;
        let append = flags & libc::O_APPEND != 0;
        let trunc = flags & libc::O_TRUNC != 0;
        let writes = acc != libc::O_RDONLY || trunc;
        // Appending is f_wr_app; truncating is never appending (f_wr).
        let actions = [
            (acc != libc::O_WRONLY, Action::FRd),
            (writes && append, Action::FWrApp),
            (writes && (!append || trunc), Action::FWr),
        ];
        let mut grant = None;
        let mut opener = None;
        for (wanted, action) in actions {
            if !wanted {
                continue;
            }
            let (g, who) = self.check_node_open(c, node, action)?;
            opener = opener.or(who);
            // Writing is only ever done in the plaintext view: a write
            // without the key would store plaintext or garbage.
            if action != Action::FRd && g.view != View::Plain {
                return Err(Errno::EACCES);
            }
            if grant.as_ref().is_some_and(|p: &Grant| p.view != g.view) {
                return Err(Errno::EACCES);
            }
            // The handle is re-checked unless every check it rests on
            // was taken under the current generation.
            let generation = grant
                .as_ref()
                .map_or(g.generation, |p| p.generation.min(g.generation));
            grant = Some(Grant { generation, ..g });
        }
        let grant = match grant {
            Some(g) => g,
            // Unreachable (every access mode reads or writes); never
            // fail open: decide it as a read.
            None => self.check_node(c, node, Action::FRd)?,
        };
        // The inode must show the view this caller was granted.
        if grant.view != node.view {
            return Err(Errno::EACCES);
        }
        // An append granted where writing is not: every write of this
        // handle must land at the end of the file (see `write`). A probe:
        // the writes it refuses are decided and audited when they come.
        let append_only = writes
            && append
            && self.cfg.access.generation() != 0
            && self
                .rel_path(node)
                .and_then(|p| self.cfg.access.probe(c, &p, Action::FWr))
                .is_err();
        Ok(Decided {
            grant,
            opener,
            append_only,
        })
    }

    /// Load what `node`'s lower file holds under the key rule of `grant`
    /// for an open with `flags`, or refuse the open.
    ///
    /// The key rule decides how the file is read: a file whose bytes do not
    /// fit it (a header for another key, no header where the rule names a
    /// key, a key version not held) is refused with `EIO` and an audit
    /// record naming the key found and the key required, except for an open
    /// that empties it (`O_TRUNC` for writing, which starts the file anew
    /// under the rule). A file loaded under another key rule (a hard link
    /// made on the lower file system, or the key rules changed) is read
    /// under this one once nothing holds it open under the other, through
    /// a fresh inode (the kernel's pages belong to the old reading): the
    /// old node is retired and revoked, and `ESTALE` makes the kernel look
    /// the path up again.
    pub(super) fn load_for_open(
        &self,
        node: &Node,
        fd: BorrowedFd<'_>,
        grant: &Grant,
        flags: i32,
    ) -> VfsResult<()> {
        let f = node.file();
        match f.load(&self.io(node, fd, &grant.key))? {
            file::Load::Ready => Ok(()),
            file::Load::Refused { found, why } => {
                let path = self.rel_path(node).unwrap_or_else(|_| b"?".to_vec());
                // The GuardPoint's own key by its name.
                let required = match &grant.key {
                    RuleKey::Default => self.cfg.keys.current().map(|(n, _, _)| n),
                    _ => None,
                };
                let described = grant.key.describe();
                let required = required.as_deref().unwrap_or(&described);
                self.cfg.access.refused_file(&path, required, &found, &why);
                let empties =
                    flags & libc::O_TRUNC != 0 && flags & libc::O_ACCMODE != libc::O_RDONLY;
                if empties { Ok(()) } else { Err(Errno::EIO) }
            }
            file::Load::OtherRule => {
                if f.reset_if(|| !self.open_elsewhere(f)) {
                    if let Some(old) = self.nodes.retire(node.ino) {
                        old.revoke();
                    }
                    return Err(Errno(libc::ESTALE));
                }
                log::error!(
                    "secfs: {}: open under key rule {} refused (EIO): the file is open under another key rule",
                    node.display_path(),
                    grant.key.label(),
                );
                Err(Errno::EIO)
            }
        }
    }

    /// Whether a handle that is not revoked reads `state` in the plaintext
    /// view (and so relies on how it was loaded).
    pub(super) fn open_elsewhere(&self, state: &Arc<file::FileState>) -> bool {
        self.handles
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|h| {
                matches!(&**h, Handle::File(f) if f.view == View::Plain
                    && f.node.standing() != Standing::Revoked
                    && Arc::ptr_eq(f.node.file(), state))
            })
    }

    /// Whether any handle, in any view, is open on `state`.
    pub(super) fn open_anywhere(&self, state: &Arc<file::FileState>) -> bool {
        self.handles
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|h| matches!(&**h, Handle::File(f) if Arc::ptr_eq(f.node.file(), state)))
    }

    pub(super) fn open_node(
        &self,
        c: &Caller,
        node: Arc<Node>,
        flags: i32,
        d: Decided,
    ) -> VfsResult<Opened> {
        let Decided {
            grant,
            opener,
            append_only,
        } = d;
        let acc = flags & libc::O_ACCMODE;
        // Encrypted writes read-modify-write whole units, so any writable
        // open needs read access to the lower file. O_APPEND, O_TRUNC and
        // O_DIRECT are the kernel's business: offsets, truncation (sent as
        // setattr) and caching are decided above us, and unit I/O is
        // neither appending nor block-aligned.
        let mut of = if acc == libc::O_RDONLY {
            OFlag::O_RDONLY
        } else {
            OFlag::O_RDWR
        };
        of |= OFlag::from_bits_truncate(flags & (libc::O_SYNC | libc::O_DSYNC | libc::O_NOATIME));
        let fd = match self.reopen(&node, of) {
            Err(Errno(libc::EPERM)) if of.contains(OFlag::O_NOATIME) => {
                self.reopen(&node, of - OFlag::O_NOATIME)?
            }
            r => r?,
        };
        let raw = grant.view == View::Raw;
        if !raw {
            self.load_for_open(&node, fd.as_fd(), &grant, flags)?;
        } else if crate::sys::fgetxattr(fd.as_fd(), super::rekey::REKEY_XATTR).is_ok() {
            // Mid online rekey the lower file holds units in two keys and
            // the old header: a ciphertext copy of it would not restore.
            // The backup tool is told to come back (EBUSY), not given it.
            log::warn!(
                "secfs: {}: ciphertext open refused (EBUSY): an online rekey of it is under way",
                node.display_path()
            );
            return Err(Errno(libc::EBUSY));
        }
        let plain = !raw && node.file().is_plain();
        let privileged = plain && self.cfg.passthrough && self.has_privileges(&node);
        let rule = grant.key.clone();
        let fh = self.add_handle(Handle::File(FileHandle {
            node: node.clone(),
            fd,
            view: grant.view,
            rule: grant.key,
            caller: *c,
            opener,
            reads: acc != libc::O_WRONLY,
            writes: acc != libc::O_RDONLY,
            append: flags & libc::O_APPEND != 0,
            append_only,
            generation: AtomicU64::new(grant.generation),
        }));
        // A reload that ran while this open was decided did not see this
        // handle: decide it again now (and refuse it on a node the reload
        // retired). A reload after this point sees the handle. Likewise an
        // open under another key rule that reset the contents before this
        // handle was added: this one must not read them under its rule.
        let reread = !raw && node.file().loaded_rule().as_ref() != Some(&rule);
        if node.standing() != Standing::Live
            || reread
            || (self.cfg.access.generation() != grant.generation
                && self.with_file(fh, |f| self.recheck(f, false)).is_err())
        {
            let _ = self.release(node.ino, fh);
            return Err(if node.standing() != Standing::Live || reread {
                Errno(libc::ESTALE)
            } else {
                Errno::EACCES
            });
        }
        // Raw views never use the page cache (see access.rs). Plain files
        // of a `clear` GuardPoint need no transformation: once the policy
        // has decided, the kernel may do their I/O on the lower file itself.
        // Passthrough writes never reach secfs, so it could not clear set-id
        // bits or capabilities on them (FUSE_HANDLE_KILLPRIV_V2): files
        // that carry any go through secfs, uncached, instead. Append-only
        // handles write through secfs, uncached, so that each write arrives
        // with its own offset to check (cached writeback rewrites whole
        // pages, passthrough writes never reach secfs).
        let passthrough = self.cfg.passthrough && plain && !privileged && !append_only;
        Ok(Opened {
            fh,
            // Passthrough opens must not ask for the page cache, and other
            // opens of a passthrough file must bypass it: the kernel
            // refuses (EIO) to mix its cached and passthrough modes.
            keep_cache: !raw && !passthrough && !privileged && !append_only,
            direct_io: raw || privileged || append_only,
            passthrough,
        })
    }

    /// Whether a file has set-id bits or file capabilities, which a write
    /// by an unprivileged process must clear.
    pub(super) fn has_privileges(&self, node: &Node) -> bool {
        let Ok(st) = self.stat_node(node) else {
            return true;
        };
        if st.st_mode & (libc::S_ISUID | libc::S_ISGID) != 0 {
            return true;
        }
        !matches!(
            self.xattrs(node.fd())
                .getxattr(OsStr::new("security.capability")),
            Err(Errno::ENODATA) | Err(Errno(libc::ENOTSUP))
        )
    }

    pub(super) fn writable_fd(
        &self,
        node: &Node,
        fh: Option<Fh>,
    ) -> VfsResult<(Option<Arc<Handle>>, Option<OwnedFd>)> {
        if let Some(fh) = fh
            && let Ok(h) = self.handle(fh)
            && let Handle::File(FileHandle { fd, .. }) = &*h
            && nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_GETFL)
                .map(|f| f & libc::O_ACCMODE == libc::O_RDWR)
                .unwrap_or(false)
        {
            return Ok((Some(h.clone()), None));
        }
        Ok((None, Some(self.reopen(node, OFlag::O_RDWR)?)))
    }
}
