//! The two places where this crate uses `unsafe`, each for a measured need.
//!
//! * `xts`: AES-256-XTS through aws-lc (already in the tree for rustls and
//!   for GCM), bound with its C API because aws-lc-rs exposes no XTS. Measured
//!   on the target machine class (4 KiB units, one core): XTS built on the
//!   RustCrypto `aes` crate 2.5-2.9 GB/s; `openssl speed -evp aes-256-xts`
//!   5.9 GB/s; aws-lc's VAES/AVX-512 XTS 10.3-10.9 GB/s. The target is
//!   0.75x OpenSSL, which only aws-lc met.
//! * `lanes`: CBC encryption of eight independent 512-byte segments at
//!   once with AES-NI, so that `cbc-cs1` encryption is not bound by CBC's
//!   serial chain. Measured: the `cbc` crate 0.67 GB/s serial; the `aes`
//!   crate's batch API with 8 interleaved lanes 1.07 GB/s (its per-call
//!   dispatch dominates at 8 blocks); the target is 4x serial.
//!
//! Both are checked against the portable RustCrypto implementation and the
//! standards' vectors in the tests.

pub(crate) mod lanes;
pub(crate) mod xts;
