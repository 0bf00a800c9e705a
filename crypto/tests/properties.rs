//! Property tests of the format through the public API: writes at any
//! offset round-trip, units stand alone, a change stays in its unit, `gcm`
//! detects every bit flip and unit swap, and the header parser is total.

use guardfs_crypto::content::is_zero;
use guardfs_crypto::header::MAGIC;
use guardfs_crypto::{
    ContentCipher, ContentError, DataKey, FileId, HEADER_LEN, Header, HeaderError, Layout, Mode,
    PlainOff, PolicyKey, UnitNo,
};
use proptest::prelude::*;

/// An in-memory lower file updated the way the stacking layer updates a
/// real one: read-modify-write of the units a write touches, re-encryption
/// of the old tail unit when a write extends the file, and units past the
/// old end written from zeros (never decrypted from zero fill).
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
            // A unit that starts at or past the old end is new: its bytes
            // are zeros, never read from the lower file (where a short xts
            // or cbc-cs1 unit of zero fill is not a hole but ciphertext).
            let mut p = if l.unit_plain_start(span.unit).0 >= old {
                vec![0u8; l.unit_len_in_file(span.unit, PlainOff(new))]
            } else {
                self.read_unit(span.unit, new)
            };
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

/// Sizes and offsets where the format changes behaviour: AES blocks, CBC
/// segments, units of both widths (4068 in `gcm`, 4096 otherwise), and
/// their neighbours, up to `max`.
fn boundaries(max: u64) -> Vec<u64> {
    let mut v = vec![0, 1, 15, 16, 17, 31, 32, 33, 511, 512, 513, 527, 528];
    for k in 1..=4u64 {
        for unit in [4068u64, 4096] {
            for d in [-17i64, -16, -15, -1, 0, 1, 15, 16, 17, 511, 512, 513] {
                v.push((k * unit).saturating_add_signed(d));
            }
        }
    }
    v.retain(|&x| x <= max);
    v.sort_unstable();
    v.dedup();
    v
}

/// A value in `lo..=hi`, three times in four a boundary.
fn near_boundary(lo: u64, hi: u64) -> impl Strategy<Value = u64> {
    let b: Vec<u64> = boundaries(hi).into_iter().filter(|&x| x >= lo).collect();
    prop_oneof![3 => prop::sample::select(b), 1 => lo..=hi]
}

/// 4096 bytes that get past the header's structural checks to a chosen
/// depth: magic and version, then a mode code (valid or not), then a
/// well-formed key name, then zero reserved bytes (so parsing succeeds and
/// the key check and tag are what refuse it).
fn header_like() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(any::<u8>(), HEADER_LEN),
        1u8..=4,
        0u8..=4,
        1usize..=64,
    )
        .prop_map(|(mut b, depth, mode, n)| {
            b[..8].copy_from_slice(&MAGIC);
            b[8..10].copy_from_slice(&1u16.to_le_bytes());
            if depth >= 2 {
                b[10] = mode;
            }
            if depth >= 3 {
                b[11] = n as u8;
                for c in &mut b[16..16 + n] {
                    *c = b'a' + *c % 26;
                }
                b[16 + n..80].fill(0);
            }
            if depth >= 4 {
                b[212..].fill(0);
            }
            b
        })
}

/// A content cipher with a fixed key and file id.
fn fixed_cipher(mode: Mode) -> ContentCipher {
    let key = DataKey::from_bytes(std::array::from_fn(|i| (i * 3 + 1) as u8));
    ContentCipher::new(mode, &key, FileId([5; 16]), [6; 16]).unwrap()
}

/// The lower bytes (without header) of a whole file encrypted in one run.
fn encrypt_all(c: &ContentCipher, plain: &[u8]) -> Vec<u8> {
    let mut lower = vec![0u8; c.layout().run_lower_len(plain.len())];
    c.encrypt(UnitNo(0), plain, &mut lower).unwrap();
    lower
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any initial size 0..=3 units + 1 and any sequence of writes at any
    /// offsets read back as the model says.
    #[test]
    fn writes_round_trip(
        mode in mode_strategy(),
        init in near_boundary(0, 3 * 4096 + 1),
        writes in prop::collection::vec(
            (near_boundary(0, 4 * 4096), near_boundary(1, 6000), any::<u8>()),
            1..5,
        ),
    ) {
        let init = init as usize;
        let mut f = LowerFile::new(mode);
        let mut model: Vec<u8> = (0..init).map(|i| (i % 253) as u8).collect();
        let init_copy = model.clone();
        f.write(0, &init_copy);
        for (off, len, byte) in writes {
            let len = len as usize;
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

    /// Changing one plaintext byte changes only its unit: the original and
    /// the modified file are each encrypted whole and independently (same
    /// key and file id). In xts, cbc-cs1 and clear every other ciphertext
    /// unit is identical (in cbc-cs1 every other segment of the unit too);
    /// in gcm, whose nonces are fresh, every other unit decrypts, on its
    /// own, to the same plaintext.
    #[test]
    fn change_stays_in_its_unit(
        mode in mode_strategy(),
        size in near_boundary(1, 3 * 4096 + 1),
        pos_seed in any::<u64>(),
        pos_edge in any::<bool>(),
    ) {
        let c = fixed_cipher(mode);
        let l = *c.layout();
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 256) as u8).collect();
        // Half the time the last byte of the file or of a unit.
        let pos = if pos_edge {
            let (u, _) = l.unit_of(PlainOff(pos_seed % size));
            (l.unit_plain_start(u.next()).0 - 1).min(size - 1)
        } else {
            pos_seed % size
        } as usize;
        let mut changed = data.clone();
        changed[pos] ^= 0x5a;
        let (a, b) = (encrypt_all(&c, &data), encrypt_all(&c, &changed));
        prop_assert_eq!(a.len(), b.len());
        let (touched, _) = l.unit_of(PlainOff(pos as u64));
        for (u, (ua, ub)) in a.chunks(4096).zip(b.chunks(4096)).enumerate() {
            let u = UnitNo(u as u64);
            if mode == Mode::Gcm {
                let open = |lower: &[u8]| {
                    let mut p = vec![0u8; l.unit_plain_len_of(lower.len()).unwrap()];
                    c.decrypt(u, lower, &mut p).unwrap();
                    p
                };
                let (pa, pb) = (open(ua), open(ub));
                let start = l.unit_plain_start(u).0 as usize;
                prop_assert_eq!(&pb[..], &changed[start..start + pb.len()]);
                if u == touched {
                    prop_assert_ne!(pa, pb);
                } else {
                    prop_assert_eq!(pa, pb, "unit {}", u);
                }
            } else if u == touched {
                prop_assert_ne!(ua, ub);
                if mode == Mode::CbcCs1 {
                    let seg = (pos % 4096) / 512 * 512;
                    prop_assert_eq!(&ua[..seg], &ub[..seg]);
                    let next = (seg + 512).min(ua.len());
                    prop_assert_eq!(&ua[next..], &ub[next..]);
                }
            } else {
                prop_assert_eq!(ua, ub, "unit {}", u);
            }
        }
    }

    /// The header parser is total: arbitrary bytes never panic, including
    /// bytes that pass the magic, version, mode and key name checks.
    #[test]
    fn header_parse_is_total(
        bytes in prop_oneof![prop::collection::vec(any::<u8>(), 0..5000), header_like()],
    ) {
        let parsed = Header::parse(&bytes);
        let opened = Header::open(&bytes, &PolicyKey::from_bytes([1; 32]));
        // Random bytes never open (a key check or tag forgery is ~2^-64).
        prop_assert!(opened.is_err());
        if let Ok(h) = parsed {
            prop_assert!(h.mode != Mode::Clear);
            let wrong_key = matches!(opened, Err(HeaderError::WrongKey { .. }));
            prop_assert!(wrong_key, "{:?}", opened);
        }
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

/// Another file's header on this file's contents (same policy key): the
/// header opens (it is authentic), then `gcm` refuses every unit (other
/// data key, other file id in the AD), while `xts` and `cbc-cs1`, having no
/// authentication, return garbage without an error. FORMAT.md states both.
#[test]
fn header_from_another_file_per_mode() {
    let pk = PolicyKey::from_bytes([1; 32]);
    for mode in [Mode::Xts, Mode::CbcCs1, Mode::Gcm] {
        let (ha, ka) = Header::create(mode, "k", 1, &pk).unwrap();
        let (hb, _) = Header::create(mode, "k", 1, &pk).unwrap();
        let ca = ContentCipher::for_header(&ha, &ka).unwrap();
        let l = *ca.layout();
        let plain: Vec<u8> = (0..2 * l.unit_plain_len() + 100)
            .map(|i| (i % 251) as u8)
            .collect();
        let lower = encrypt_all(&ca, &plain);
        let (h, k) = Header::open(&hb.to_bytes(), &pk).unwrap();
        let cb = ContentCipher::for_header(&h, &k).unwrap();
        for (u, unit) in lower.chunks(4096).enumerate() {
            let u = UnitNo(u as u64);
            let mut p = vec![0u8; l.unit_plain_len_of(unit.len()).unwrap()];
            let r = cb.decrypt(u, unit, &mut p);
            let start = l.unit_plain_start(u).0 as usize;
            if mode == Mode::Gcm {
                assert_eq!(r, Err(ContentError::UnitAuthentication(u)), "unit {u}");
                assert!(is_zero(&p));
            } else {
                assert_eq!(r, Ok(()), "{mode} unit {u}: undetected by design");
                assert_ne!(&p[..], &plain[start..start + p.len()], "{mode} unit {u}");
            }
        }
    }
}

/// In xts and cbc-cs1 a lower unit shorter than 16 bytes is never a hole:
/// the one plaintext value that encrypts to all zeros must read back, not
/// turn into zeros. Every 1-byte file, every 2-byte tail in unit 3.
#[test]
fn short_tails_are_never_holes() {
    for mode in [Mode::Xts, Mode::CbcCs1] {
        let c = fixed_cipher(mode);
        let mut zeros = 0;
        for v in 0..=255u8 {
            let mut f = LowerFile::new(mode);
            f.write(0, &[v]);
            zeros += usize::from(f.lower[4096] == 0);
            assert_eq!(f.read_all(), [v], "{mode} 1-byte file {v:#04x}");
            let mut f = LowerFile::new(mode);
            f.write(3 * 4096, &[v, v ^ 0xa5]);
            let all = f.read_all();
            assert_eq!(&all[3 * 4096..], [v, v ^ 0xa5], "{mode} tail {v:#04x}");
            assert!(is_zero(&all[..3 * 4096]), "{mode}");
        }
        // Exactly one value encrypts to zero: the case the rule is for.
        assert_eq!(zeros, 1, "{mode}");
        let mut zeros = 0;
        for v in 0..=u16::MAX {
            let p = v.to_le_bytes();
            let mut lower = [0u8; 2];
            c.encrypt(UnitNo(3), &p, &mut lower).unwrap();
            zeros += usize::from(lower == [0, 0]);
            let mut back = [0u8; 2];
            c.decrypt(UnitNo(3), &lower, &mut back).unwrap();
            assert_eq!(back, p, "{mode} 2-byte tail {v:#06x}");
        }
        assert_eq!(zeros, 1, "{mode}");
    }
}
