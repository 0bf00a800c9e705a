//! keymgr request bodies (JSON from any client that reaches the REST API,
//! registration included, before authentication matters): every body type
//! decodes or is refused, and the handlers' field checks run on what
//! decodes, never panicking. The policy bodies are covered by
//! `policy_json` (keymgr compiles them with the same parser).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = guardfs_keymgr::api::fuzz_request_body(data);
});
