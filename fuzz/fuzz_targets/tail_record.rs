//! The tail record (the `trusted.` xattr a truncate-down leaves on a lower
//! file, readable and writable by whoever can write the lower tree): any
//! bytes give a record or an error, never a panic, for every mode; a
//! record that parses encodes back to the same bytes.
#![no_main]

use guardfs_shim::stack::file::{Mode, fuzz_tail_record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for mode in Mode::ALL {
        if let Ok(again) = fuzz_tail_record(data, mode) {
            assert_eq!(again, data, "{mode}: record does not encode back");
        }
    }
});
