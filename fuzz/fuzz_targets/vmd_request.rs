//! vmd's local API (one JSON request per line on its socket): any line
//! gives a request or an error, never a panic; a request that decodes
//! encodes back to JSON that decodes to the same request; replies (what
//! the admin commands read) decode without panic.
#![no_main]

use guardfs_control::api::{Reply, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(req) = serde_json::from_str::<Request>(line) {
        let _ = format!("{req:?}");
        let again = serde_json::to_string(&req).expect("a request encodes");
        let req2: Request = serde_json::from_str(&again)
            .unwrap_or_else(|e| panic!("re-encoded request does not decode: {e}: {again}"));
        assert!(
            req2 == req,
            "re-encoded request decodes differently: {again}"
        );
    }
    if let Ok(reply) = serde_json::from_str::<Reply>(line) {
        let again = serde_json::to_string(&reply).expect("a reply encodes");
        let _: Reply = serde_json::from_str(&again).expect("re-encoded reply decodes");
    }
});
