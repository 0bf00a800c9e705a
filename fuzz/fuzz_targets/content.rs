//! Decrypting arbitrary lower bytes in every mode must give plaintext or a
//! typed error, never a panic.
#![no_main]

use guardfs_crypto::{ContentCipher, DataKey, FileId, Mode, UnitNo};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // The first 8 bytes pick the unit number (any u64, so the unit range
    // checks are exercised too); the rest are the lower bytes.
    let Some((unit, data)) = input.split_first_chunk::<8>() else {
        return;
    };
    let unit = UnitNo(u64::from_le_bytes(*unit));
    let key = DataKey::from_bytes(std::array::from_fn(|i| i as u8));
    for mode in Mode::ALL {
        let c = ContentCipher::new(mode, &key, FileId([1; 16]), [2; 16]).expect("key");
        let Some(n) = c.run_plain_len(data.len()) else {
            continue;
        };
        let mut p = vec![0u8; n];
        let _ = c.decrypt(unit, data, &mut p);
        let mut l = vec![0u8; c.layout().run_lower_len(data.len())];
        let _ = c.encrypt(unit, data, &mut l);
    }
});
