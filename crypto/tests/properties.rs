//! Property tests of the format through the public API: writes at any
//! offset round-trip, units stand alone, a change stays in its unit, `gcm`
//! detects every bit flip and unit swap, and the header parser is total.

use guardfs_crypto::content::is_zero;
use guardfs_crypto::{
    ContentCipher, ContentError, DataKey, FileId, Header, HeaderError, Layout, Mode, PlainOff,
    PolicyKey, UnitNo,
};
use proptest::prelude::*;

/// An in-memory lower file updated the way the stacking layer updates a
/// real one: read-modify-write of the units a write touches, and
/// re-encryption of the old tail unit when a write extends the file.
struct LowerFile {
    cipher: ContentCipher,
    lower: Vec<u8>,
}

impl LowerFile {
    fn new(mode: Mode) -> LowerFile {
        let key = DataKey::from_bytes(std::array::from_fn(|i| (i * 3 + 1) as u8));
        LowerFile {
            cipher: ContentCipher::new(mode, &key, FileId([5; 16]), [6; 16]).unwrap(),
            lower: vec![0u8; Layout::of(mode).header_len() as usize],
        }
    }

    fn layout(&self) -> Layout {
        *self.cipher.layout()
    }

    fn size(&self) -> u64 {
        self.layout()
            .plain_size(guardfs_crypto::LowerOff(self.lower.len() as u64))
            .0
    }

    fn read_unit(&self, unit: UnitNo, size: u64) -> Vec<u8> {
        let l = self.layout();
        let n = l.unit_len_in_file(unit, PlainOff(size));
        let start = l.unit_lower_start(unit).0 as usize;
        let ll = l.unit_lower_len(n);
        let mut p = vec![0u8; n];
        self.cipher
            .decrypt(unit, &self.lower[start..start + ll], &mut p)
            .unwrap();
        p
    }

    fn write_unit(&mut self, unit: UnitNo, plain: &[u8]) {
        let l = self.layout();
        let start = l.unit_lower_start(unit).0 as usize;
        let ll = l.unit_lower_len(plain.len());
        if self.lower.len() < start + ll {
            self.lower.resize(start + ll, 0);
        }
        self.cipher
            .encrypt(unit, plain, &mut self.lower[start..start + ll])
            .unwrap();
    }

    fn write(&mut self, off: u64, data: &[u8]) {
        let l = self.layout();
        let old = self.size();
        let new = old.max(off + data.len() as u64);
        // Re-encrypt the old tail unit at its new length if it grows.
        if new > old && !old.is_multiple_of(l.unit_plain_len() as u64) {
            let (u, _) = l.unit_of(PlainOff(old));
            let mut p = self.read_unit(u, old);
            p.resize(l.unit_len_in_file(u, PlainOff(new)), 0);
            self.write_unit(u, &p);
        }
        let new_lower = l.lower_size(PlainOff(new)).0 as usize;
        if self.lower.len() < new_lower {
            self.lower.resize(new_lower, 0);
        }
        let mut done = 0;
        for span in l.spans(PlainOff(off), data.len() as u64) {
            let mut p = self.read_unit(span.unit, new);
            p[span.start..span.start + span.len].copy_from_slice(&data[done..done + span.len]);
            self.write_unit(span.unit, &p);
            done += span.len;
        }
        assert_eq!(self.lower.len(), new_lower);
    }

    fn read_all(&self) -> Vec<u8> {
        let h = self.layout().header_len() as usize;
        let size = self.cipher.run_plain_len(self.lower.len() - h).unwrap();
        let mut p = vec![0u8; size];
        self.cipher
            .decrypt(UnitNo(0), &self.lower[h..], &mut p)
            .unwrap();
        p
    }
}

fn mode_strategy() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::Xts),
        Just(Mode::CbcCs1),
        Just(Mode::Gcm),
        Just(Mode::Clear)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Any initial size 0..=3 units + 1 and any sequence of writes at any
    /// offsets read back as the model says.
    #[test]
    fn writes_round_trip(
        mode in mode_strategy(),
        init in 0usize..=3 * 4096 + 1,
        writes in prop::collection::vec((0u64..=4 * 4096, 1usize..=6000, any::<u8>()), 1..5),
    ) {
        let mut f = LowerFile::new(mode);
        let mut model: Vec<u8> = (0..init).map(|i| (i % 253) as u8).collect();
        let init_copy = model.clone();
        f.write(0, &init_copy);
        for (off, len, byte) in writes {
            let data: Vec<u8> = (0..len).map(|i| byte.wrapping_add(i as u8)).collect();
            let end = off as usize + len;
            if model.len() < end {
                model.resize(end, 0);
            }
            model[off as usize..end].copy_from_slice(&data);
            f.write(off, &data);
            prop_assert_eq!(f.size(), model.len() as u64);
        }
        prop_assert_eq!(f.read_all(), model.clone());
        // Each unit decrypts on its own.
        let l = f.layout();
        for u in 0..l.unit_count(PlainOff(model.len() as u64)) {
            let p = f.read_unit(UnitNo(u), model.len() as u64);
            let start = l.unit_plain_start(UnitNo(u)).0 as usize;
            prop_assert_eq!(&p[..], &model[start..start + p.len()]);
        }
    }

    /// Changing one plaintext byte changes only the lower bytes of its unit.
    #[test]
    fn change_stays_in_its_unit(
        mode in mode_strategy(),
        size in 1usize..=3 * 4096 + 1,
        pos_seed in any::<usize>(),
    ) {
        let mut f = LowerFile::new(mode);
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 256) as u8).collect();
        f.write(0, &data);
        let before = f.lower.clone();
        let pos = pos_seed % size;
        f.write(pos as u64, &[data[pos] ^ 0x5a]);
        let l = f.layout();
        let (unit, _) = l.unit_of(PlainOff(pos as u64));
        let lo = l.unit_lower_start(unit).0 as usize;
        let hi = (lo + 4096).min(before.len());
        prop_assert_eq!(&before[..lo], &f.lower[..lo]);
        prop_assert_eq!(&before[hi..], &f.lower[hi..]);
        prop_assert_ne!(&before[lo..hi], &f.lower[lo..hi]);
    }

    /// The header parser is total: arbitrary bytes never panic.
    #[test]
    fn header_parse_is_total(bytes in prop::collection::vec(any::<u8>(), 0..5000)) {
        let _ = Header::parse(&bytes);
        let _ = Header::open(&bytes, &PolicyKey::from_bytes([1; 32]));
    }

    /// Headers with the magic and version intact but random other bytes
    /// never open.
    #[test]
    fn mutated_headers_are_refused(edits in prop::collection::vec((8usize..4096, any::<u8>()), 1..8)) {
        let pk = PolicyKey::from_bytes([1; 32]);
        let (h, _) = Header::create(Mode::Gcm, "k", 1, &pk).unwrap();
        let orig = h.to_bytes();
        let mut b = orig;
        for (i, v) in edits {
            b[i] = v;
        }
        prop_assume!(b != orig);
        prop_assert!(Header::open(&b, &pk).is_err());
    }
}

fn gcm_file(units: usize) -> LowerFile {
    let mut f = LowerFile::new(Mode::Gcm);
    let data: Vec<u8> = (0..units * 4068 - 100).map(|i| (i % 251) as u8).collect();
    f.write(0, &data);
    f
}

#[test]
fn gcm_detects_every_bit_flip_in_a_unit() {
    let f = gcm_file(2);
    // Unit 0 is whole: nonce, ciphertext and tag; unit 1 is a short tail.
    for unit in [0u64, 1] {
        let l = f.layout();
        let start = l.unit_lower_start(UnitNo(unit)).0 as usize;
        let end = (start + 4096).min(f.lower.len());
        for byte in start..end {
            for bit in 0..8 {
                let mut lower = f.lower[start..end].to_vec();
                lower[byte - start] ^= 1 << bit;
                let mut p = vec![0u8; l.unit_plain_len_of(lower.len()).unwrap()];
                let r = f.cipher.decrypt(UnitNo(unit), &lower, &mut p);
                assert_eq!(
                    r,
                    Err(ContentError::UnitAuthentication(UnitNo(unit))),
                    "byte {byte} bit {bit}"
                );
                assert!(is_zero(&p), "plaintext leaked after failed authentication");
            }
        }
    }
}

#[test]
fn gcm_detects_swapped_and_moved_units() {
    let f = gcm_file(3);
    let l = f.layout();
    let u0 = l.unit_lower_start(UnitNo(0)).0 as usize;
    let u1 = l.unit_lower_start(UnitNo(1)).0 as usize;
    let unit0 = f.lower[u0..u0 + 4096].to_vec();
    let unit1 = f.lower[u1..u1 + 4096].to_vec();
    let mut p = vec![0u8; 4068];
    // Unit 1's bytes at position 0 and vice versa.
    assert!(f.cipher.decrypt(UnitNo(0), &unit1, &mut p).is_err());
    assert!(f.cipher.decrypt(UnitNo(1), &unit0, &mut p).is_err());
    // A unit from another file (other file id, same key) at the same position.
    let key = DataKey::from_bytes(std::array::from_fn(|i| (i * 3 + 1) as u8));
    let other = ContentCipher::new(Mode::Gcm, &key, FileId([7; 16]), [6; 16]).unwrap();
    assert!(other.decrypt(UnitNo(0), &unit0, &mut p).is_err());
    // And the untouched unit still opens.
    assert!(f.cipher.decrypt(UnitNo(0), &unit0, &mut p).is_ok());
}

#[test]
fn sparse_units_read_as_zeros_in_every_mode() {
    for mode in Mode::ALL {
        let mut f = LowerFile::new(mode);
        f.write(3 * 4096 + 10, b"tail");
        let all = f.read_all();
        assert_eq!(&all[all.len() - 4..], b"tail");
        assert!(is_zero(&all[..all.len() - 4]), "{mode}");
        // The skipped units are holes (all zeros) in the lower file.
        let l = f.layout();
        let s = l.unit_lower_start(UnitNo(1)).0 as usize;
        assert!(is_zero(&f.lower[s..s + 4096]), "{mode}");
    }
}

#[test]
fn wrong_policy_key_and_damage_are_typed() {
    let pk = PolicyKey::from_bytes([1; 32]);
    let (h, _) = Header::create(Mode::Xts, "k", 1, &pk).unwrap();
    let bytes = h.to_bytes();
    assert!(matches!(
        Header::open(&bytes, &PolicyKey::from_bytes([2; 32])),
        Err(HeaderError::WrongKey { .. })
    ));
    let mut damaged = bytes;
    damaged[150] ^= 0x10;
    assert_eq!(
        Header::open(&damaged, &pk).unwrap_err(),
        HeaderError::AuthenticationFailed
    );
    let mut damaged = bytes;
    damaged[3000] = 1;
    assert_eq!(
        Header::open(&damaged, &pk).unwrap_err(),
        HeaderError::ReservedNotZero
    );
}

/// A whole header copied from another file opens (it is authentic), but in
/// `gcm` the contents then fail: units are bound to the file id.
#[test]
fn header_from_another_file_fails_gcm_contents() {
    let pk = PolicyKey::from_bytes([1; 32]);
    let (ha, ka) = Header::create(Mode::Gcm, "k", 1, &pk).unwrap();
    let (hb, _) = Header::create(Mode::Gcm, "k", 1, &pk).unwrap();
    let ca = ContentCipher::for_header(&ha, &ka).unwrap();
    let mut lower = vec![0u8; 4096];
    ca.encrypt(UnitNo(0), &[9u8; 4068], &mut lower).unwrap();
    let (h, k) = Header::open(&hb.to_bytes(), &pk).unwrap();
    let cb = ContentCipher::for_header(&h, &k).unwrap();
    let mut p = vec![0u8; 4068];
    assert_eq!(
        cb.decrypt(UnitNo(0), &lower, &mut p),
        Err(ContentError::UnitAuthentication(UnitNo(0)))
    );
}
