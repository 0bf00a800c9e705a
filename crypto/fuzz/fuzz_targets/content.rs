//! Decrypting arbitrary lower bytes in every mode must give plaintext or a
//! typed error, never a panic.
#![no_main]

use guardfs_crypto::{ContentCipher, DataKey, FileId, Mode, UnitNo};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = DataKey::from_bytes(std::array::from_fn(|i| i as u8));
    for mode in Mode::ALL {
        let c = ContentCipher::new(mode, &key, FileId([1; 16]), [2; 16]).expect("key");
        let Some(n) = c.run_plain_len(data.len()) else { continue };
        let mut p = vec![0u8; n];
        let _ = c.decrypt(UnitNo(3), data, &mut p);
    }
});
