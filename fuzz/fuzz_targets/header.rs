//! The per-file header (the first 4096 bytes of every lower file, which
//! anyone who can write the lower tree controls): any bytes given to the
//! parser and opener give a header or a typed error, never a panic, and a
//! parsed header re-serialises to the bytes it came from.
#![no_main]

use guardfs_crypto::{Header, PolicyKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Header::parse(data);
    let key = PolicyKey::from_bytes([7; 32]);
    if let Ok(h) = Header::parse(data) {
        let _ = h.unwrap_key(&key);
        // A parsed header re-serialises to the bytes it came from.
        assert_eq!(&h.to_bytes()[..], data);
    }
});
