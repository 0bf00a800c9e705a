//! The GuardFS control plane's persistent state.
//!
//! # What this crate owns
//!
//! * The agent's **persistent state** as `vmd` keeps it on disk: the install
//!   layout ([`state::Layout`]), `agent.conf`, the host key that seals local
//!   key material, the **local key store** (keys sealed under the host key),
//!   the **policy store** and host settings, and the **GuardPoint registry**.
//! * Crash-safe file replacement for all of the above ([`state::atomic`]).
//! * Later: `vmd` itself and the admin CLIs (`voradmin` and its CTE-named
//!   aliases).
//!
//! # What it must not do
//!
//! * Touch file contents inside GuardPoints (only `dataxform`'s documented
//!   path may, and it does not live here yet).
//! * Print, log or write key material in the clear: keys are
//!   [`guardfs_crypto::PolicyKey`]s (zeroized on drop, `Debug` shows a
//!   fingerprint), sealed with AES-256-GCM before they reach a disk.
//! * Panic on bad input: every malformed file or argument is a
//!   [`state::StateError`] naming the file and what is wrong.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod km;
pub mod state;
pub mod vmd;
