//! GuardFS benchmarks. Everything here measures; nothing here asserts a
//! time. `benches/crypto.rs` is the criterion benchmark of the content
//! modes against same-run baselines; `crypto-report.sh` turns its results
//! and `openssl speed` into the ratios the foundation issue targets.
