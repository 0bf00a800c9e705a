//! secfs: the GuardFS filesystem shim, playing the part of CTE's kernel
//! module.
//!
//! It owns the VFS interception interface ([`vfs::VnodeOps`]), the stacking
//! layer that implements GuardPoint semantics over a lower directory
//! ([`stack`]), its FUSE binding ([`fuse`]) and the mount lifecycle
//! ([`mount`]). The layers keep to themselves: FUSE types stop at the
//! binding, crypto types stay inside the stacking layer's file I/O.
//!
//! It must not talk to the network or parse policy text; keys and (later)
//! compiled policies are handed to it.
//!
//! `unsafe` is confined to [`sys`] and `reach::raw` (the mount syscalls
//! that attach a GuardPoint in other mount namespaces).
#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod audit;
pub mod ctl;
pub mod exitcode;
pub mod forbidden;
pub mod fuse;
pub mod harden;
pub mod keyfile;
pub mod mount;
pub mod reach;
pub mod stack;
pub mod sys;
pub mod vfs;
pub mod xform_ioctl;
