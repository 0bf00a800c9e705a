//! GuardFS reference key manager (`keymgr`).
//!
//! This crate **owns**: the key manager server (REST/JSON over HTTPS with
//! optional mutual TLS on one port, shaped like CipherTrust Manager's API),
//! its storage ([`store::Store`], embedded SQLite by default), the local
//! certificate authority that issues agent certificates at registration,
//! sealing of key material under the server master key, and the `keymgr`
//! admin CLI, which talks to the server only through the REST API.
//!
//! It **must not**: be needed for a single-host quick start (vmd has its own
//! local key store); log, print or put key material, passwords or bearer
//! tokens in error messages; hand key material to anyone but a registered,
//! communication-enabled agent whose configuration uses that key; panic on
//! bad input; use `unsafe`.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod ca;
pub mod cli;
pub mod client;
pub mod error;
pub mod seal;
pub mod server;
pub mod sqlite;
pub mod store;
pub mod unlock;
pub mod util;
