//! The data transformation parsers: the `dataxform` ioctl request secfs
//! decodes (from root through the mount), the reply `dataxform` decodes,
//! the intent record (`trusted.guardfs.xform`) and the online rekey record
//! (`trusted.guardfs.rekey`) secfs reads back after a crash. Any bytes give
//! a value or an error, never a panic; a request or record that parses
//! encodes back to what it was.
#![no_main]

use guardfs_shim::stack::rekey::fuzz_record;
use guardfs_shim::stack::xform::fuzz_intent;
use guardfs_shim::xform_ioctl::{Request, SIZE, decode_reply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(again) = fuzz_intent(data) {
        assert_eq!(again, data, "intent record does not encode back");
    }
    if let Ok(again) = fuzz_record(data) {
        assert_eq!(again, data, "rekey record does not encode back");
    }
    let mut buf = Box::new([0u8; SIZE]);
    let n = data.len().min(SIZE);
    buf[..n].copy_from_slice(&data[..n]);
    if let Ok(req) = Request::decode(&buf[..]) {
        let again = req.encode().expect("a decoded request encodes");
        assert_eq!(Request::decode(&again[..]).expect("and decodes again"), req);
    }
    let _ = decode_reply(&buf);
});
