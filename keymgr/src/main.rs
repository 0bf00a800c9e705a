//! `keymgr`: the GuardFS reference key manager and its admin CLI.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

fn main() {
    std::process::exit(guardfs_keymgr::cli::main());
}
