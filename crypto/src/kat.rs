//! Known-answer tests from the standards, run against the code paths the
//! format uses. Vector files live in `tests/vectors/` with their provenance.
//!
//! Where a standard has vectors only for AES-128 (XTS ciphertext stealing,
//! CBC ciphertext stealing), a generic reference is checked against them and
//! the AES-256 production path is then checked against that reference.

use aes::cipher::{
    Array, BlockCipherDecrypt, BlockCipherEncrypt, BlockSizeUser, KeyInit, consts::U16,
};
use aes::{Aes128, Aes256};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

use crate::ContentCipher;
use crate::backend::lanes::{LANES, LaneKey};
use crate::backend::xts::XtsKey;
use crate::content::{cbc_decrypt_segments, cs1_decrypt_segment, cs1_encrypt_segment, gcm_seal};
use crate::header::{FileId, HEADER_LEN, Header};
use crate::keys::{DataKey, PolicyKey};
use crate::mode::Mode;
use crate::offsets::UnitNo;

type Record = Vec<(String, Vec<u8>)>;

fn records(text: &str) -> Vec<Record> {
    text.split("\n\n")
        .map(|block| {
            block
                .lines()
                .filter(|l| !l.starts_with('#') && l.contains('=') && !l.starts_with("iv_len"))
                .map(|l| {
                    let (k, v) = l.split_once('=').unwrap();
                    (k.trim().to_owned(), hex::decode(v.trim()).unwrap())
                })
                .collect::<Record>()
        })
        .filter(|r| !r.is_empty())
        .collect()
}

fn field<'a>(r: &'a Record, name: &str) -> &'a [u8] {
    &r.iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no field {name}"))
        .1
}

/// A plain, generic XTS with ciphertext stealing (IEEE 1619 section 5.3),
/// written from the standard as an independent check.
fn reference_xts<C>(k1: &C, k2: &C, tweak: [u8; 16], data: &[u8], encrypt: bool) -> Vec<u8>
where
    C: BlockCipherEncrypt + BlockCipherDecrypt + BlockSizeUser<BlockSize = U16>,
{
    fn mul_alpha(t: u128) -> u128 {
        (t << 1) ^ if t >> 127 == 1 { 0x87 } else { 0 }
    }
    let mut t = Array::from(tweak);
    k2.encrypt_block(&mut t);
    let mut t = u128::from_le_bytes(t.into());
    let crypt = |t: u128, b: &[u8]| -> [u8; 16] {
        let mut x = Array::from(std::array::from_fn::<u8, 16, _>(|i| {
            b[i] ^ t.to_le_bytes()[i]
        }));
        if encrypt {
            k1.encrypt_block(&mut x);
        } else {
            k1.decrypt_block(&mut x);
        }
        std::array::from_fn(|i| x[i] ^ t.to_le_bytes()[i])
    };
    let n = data.len();
    let full = n / 16;
    let d = n % 16;
    let mut out = vec![0u8; n];
    let plain_full = if d == 0 { full } else { full - 1 };
    for j in 0..plain_full {
        out[j * 16..j * 16 + 16].copy_from_slice(&crypt(t, &data[j * 16..]));
        t = mul_alpha(t);
    }
    if d > 0 {
        let m = plain_full * 16;
        let (t_a, t_b) = if encrypt {
            (t, mul_alpha(t))
        } else {
            (mul_alpha(t), t)
        };
        let cc = crypt(t_a, &data[m..]);
        let mut pp = [0u8; 16];
        pp[..d].copy_from_slice(&data[m + 16..]);
        pp[d..].copy_from_slice(&cc[d..]);
        out[m + 16..].copy_from_slice(&cc[..d]);
        out[m..m + 16].copy_from_slice(&crypt(t_b, &pp));
    }
    out
}

#[test]
fn xts_reference_matches_ieee1619() {
    for r in records(include_str!("../tests/vectors/xts_aes128_cts.txt")) {
        let key = field(&r, "key");
        let k1 = Aes128::new(&Array::try_from(&key[..16]).unwrap());
        let k2 = Aes128::new(&Array::try_from(&key[16..]).unwrap());
        let iv: [u8; 16] = field(&r, "iv").try_into().unwrap();
        let ct = reference_xts(&k1, &k2, iv, field(&r, "pt"), true);
        assert_eq!(ct, field(&r, "ct"));
        assert_eq!(reference_xts(&k1, &k2, iv, &ct, false), field(&r, "pt"));
    }
    for r in records(include_str!("../tests/vectors/xts_aes256.txt")) {
        let key = field(&r, "key");
        let k1 = Aes256::new(&Array::try_from(&key[..32]).unwrap());
        let k2 = Aes256::new(&Array::try_from(&key[32..]).unwrap());
        let iv: [u8; 16] = field(&r, "iv").try_into().unwrap();
        assert_eq!(
            reference_xts(&k1, &k2, iv, field(&r, "pt"), true),
            field(&r, "ct")
        );
    }
}

/// IEEE 1619 vectors 10-14 through the production path: the `xts` content
/// mode encrypting unit number = the vector's data unit sequence number.
#[test]
fn xts_mode_matches_ieee1619_aes256() {
    let recs = records(include_str!("../tests/vectors/xts_aes256.txt"));
    assert_eq!(recs.len(), 5);
    for r in recs {
        let dk = DataKey::from_slice(field(&r, "key")).unwrap();
        let unit = u64::from_le_bytes(field(&r, "iv")[..8].try_into().unwrap());
        let c = ContentCipher::new(Mode::Xts, &dk, FileId([0; 16]), [0; 16]).unwrap();
        let pt = field(&r, "pt");
        let mut ct = vec![0u8; pt.len()];
        c.encrypt(UnitNo(unit), pt, &mut ct).unwrap();
        assert_eq!(ct, field(&r, "ct"));
        let mut back = vec![0u8; pt.len()];
        c.decrypt(UnitNo(unit), &ct, &mut back).unwrap();
        assert_eq!(back, pt);
    }
}

/// aws-lc's XTS (with stealing) against the reference for every length
/// a tail unit can have.
#[test]
fn xts_backend_matches_reference_all_lengths() {
    let key: [u8; 64] = std::array::from_fn(|i| (i * 13 + 1) as u8);
    let dk = DataKey::from_bytes(key);
    let fast = XtsKey::new(&dk).unwrap();
    let k1 = Aes256::new(&Array::try_from(&key[..32]).unwrap());
    let k2 = Aes256::new(&Array::try_from(&key[32..]).unwrap());
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 31 % 251) as u8).collect();
    for len in (16..=4096).step_by(7).chain([4095, 4096]) {
        let tweak = (len as u128 * 1_000_003).to_le_bytes();
        let expect = reference_xts(&k1, &k2, tweak, &data[..len], true);
        let mut got = vec![0u8; len];
        fast.units(true, 4096, &data[..len], &mut got, |_| tweak)
            .unwrap();
        assert_eq!(got, expect, "len {len}");
        let mut back = vec![0u8; len];
        fast.units(false, 4096, &got, &mut back, |_| tweak).unwrap();
        assert_eq!(back, &data[..len]);
    }
}

#[test]
fn cbc_lanes_match_sp800_38a() {
    let recs = records(include_str!("../tests/vectors/cbc_aes256.txt"));
    let r = recs.iter().find(|r| field(r, "key").len() == 32).unwrap();
    let key: [u8; 32] = field(r, "key").try_into().unwrap();
    let iv: [u8; 16] = field(r, "iv").try_into().unwrap();
    let (pt, ct) = (field(r, "pt"), field(r, "ct"));
    for k in [LaneKey::new(&key), LaneKey::new_portable(&key)] {
        let mut buf: Vec<u8> = pt.repeat(LANES);
        {
            let mut it = buf.chunks_mut(pt.len());
            let mut lanes: [&mut [u8]; LANES] = std::array::from_fn(|_| it.next().unwrap());
            k.cbc_encrypt_lanes(&[iv; LANES], &mut lanes);
        }
        for lane in buf.chunks(pt.len()) {
            assert_eq!(lane, ct);
        }
    }
    // Whole blocks: CS1 is plain CBC, for both key sizes.
    for r in &recs {
        let iv: [u8; 16] = field(r, "iv").try_into().unwrap();
        let mut buf = field(r, "pt").to_vec();
        if field(r, "key").len() == 32 {
            cs1_encrypt_segment(
                &Aes256::new(&Array::try_from(field(r, "key")).unwrap()),
                iv,
                &mut buf,
            );
        } else {
            cs1_encrypt_segment(
                &Aes128::new(&Array::try_from(field(r, "key")).unwrap()),
                iv,
                &mut buf,
            );
        }
        assert_eq!(buf, field(r, "ct"));
    }
}

/// CBC-CS1 on the RFC 3962 inputs (CS1 form, see the vector file).
#[test]
fn cs1_matches_vectors() {
    let recs = records(include_str!("../tests/vectors/cts_aes128.txt"));
    assert_eq!(recs.len(), 6);
    for r in recs {
        let k = Aes128::new(&Array::try_from(field(&r, "key")).unwrap());
        let iv: [u8; 16] = field(&r, "iv").try_into().unwrap();
        let mut buf = field(&r, "pt").to_vec();
        cs1_encrypt_segment(&k, iv, &mut buf);
        assert_eq!(buf, field(&r, "ct_cs1"), "len {}", buf.len());
        let mut back = vec![0u8; buf.len()];
        cs1_decrypt_segment(&k, iv, &buf, &mut back);
        assert_eq!(back, field(&r, "pt"));
    }
}

/// McGrew-Viega test cases 13-16 (96-bit IVs, the only size we use).
#[test]
fn gcm_matches_spec_vectors() {
    let mut n = 0;
    for r in records(include_str!("../tests/vectors/gcm_aes256.txt")) {
        if field(&r, "iv").len() != 12 {
            continue;
        }
        n += 1;
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, field(&r, "key")).unwrap());
        let nonce = || Nonce::try_assume_unique_for_key(field(&r, "iv")).unwrap();
        let pt = field(&r, "pt");
        let mut ct = vec![0u8; pt.len()];
        let mut tag = [0u8; 16];
        key.seal_out_of_place_scatter(
            nonce(),
            Aad::from(field(&r, "aad")),
            pt,
            &mut ct,
            &[],
            &mut tag,
        )
        .unwrap();
        assert_eq!(ct, field(&r, "ct"));
        assert_eq!(tag, field(&r, "tag"));
        let mut back = vec![0u8; pt.len()];
        key.open_separate_gather(nonce(), Aad::from(field(&r, "aad")), &ct, &tag, &mut back)
            .unwrap();
        assert_eq!(back, pt);
        tag[0] ^= 1;
        assert!(
            key.open_separate_gather(nonce(), Aad::from(field(&r, "aad")), &ct, &tag, &mut back)
                .is_err()
        );
    }
    assert_eq!(n, 4);
}

/// RFC 5869 test case 1 (HKDF-SHA256), the header's key derivation.
#[test]
fn hkdf_matches_rfc5869() {
    use aws_lc_rs::hkdf;
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let salt: Vec<u8> = (0..=12).collect();
    let info: Vec<u8> = (0xf0..=0xf9).collect();
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt).extract(&[0x0b; 22]);
    let mut okm = [0u8; 42];
    prk.expand(&[&info], Len(42))
        .unwrap()
        .fill(&mut okm)
        .unwrap();
    assert_eq!(
        hex::encode(okm),
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    );
}

/// SP 800-38A F.2.6 CBC-AES256.Decrypt through both CBC decrypt paths of
/// `cbc-cs1`: the per-segment path (CS1 of whole blocks is CBC) and the
/// batched whole-segment path.
#[test]
fn cbc_decrypt_matches_sp800_38a_f26() {
    let recs = records(include_str!("../tests/vectors/cbc_aes256.txt"));
    let r = recs.iter().find(|r| field(r, "key").len() == 32).unwrap();
    let k = Aes256::new(&Array::try_from(field(r, "key")).unwrap());
    let iv: [u8; 16] = field(r, "iv").try_into().unwrap();
    let (pt, ct) = (field(r, "pt"), field(r, "ct"));
    let mut p = vec![0u8; ct.len()];
    cs1_decrypt_segment(&k, iv, ct, &mut p);
    assert_eq!(p, pt);
    // A 512-byte segment that starts with the vector's ciphertext: a CBC
    // plaintext block depends only on its ciphertext block and the one
    // before, so the first 64 bytes must decrypt to the vector's plaintext.
    let mut seg = ct.to_vec();
    seg.resize(512, 0x5a);
    let mut out = vec![0u8; 512];
    cbc_decrypt_segments(&k, &[iv], &seg, &mut out);
    assert_eq!(&out[..64], pt);
    // As the second segment of two, from its own IV.
    let two = [vec![0xa5; 512], seg].concat();
    let mut out = vec![0u8; 1024];
    cbc_decrypt_segments(&k, &[[0; 16], iv], &two, &mut out);
    assert_eq!(&out[512..576], pt);
}

/// The format's own `gcm` unit seal with a fixed nonce (AD = file id ||
/// unit number, LE) against a vector computed independently with Python
/// `cryptography` (`tests/vectors/guardfs_v1.py`).
#[test]
fn gcm_unit_seal_matches_independent_vector() {
    let recs = records(include_str!("../tests/vectors/guardfs_v1.txt"));
    let r = &recs[0];
    let dk = DataKey::from_slice(field(r, "data_key")).unwrap();
    let fid = FileId(field(r, "file_id").try_into().unwrap());
    let unit = UnitNo(u64::from_le_bytes(field(r, "unit").try_into().unwrap()));
    let nonce: [u8; 12] = field(r, "nonce").try_into().unwrap();
    let pt = field(r, "pt");
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &field(r, "data_key")[..32]).unwrap());
    let mut lower = vec![0u8; pt.len() + 28];
    gcm_seal(&key, &fid, unit, nonce, pt, &mut lower).unwrap();
    assert_eq!(lower, field(r, "lower"));
    // The production decrypt path opens it, at its own unit and file only.
    let c = ContentCipher::new(Mode::Gcm, &dk, fid, [0; 16]).unwrap();
    let mut back = vec![0u8; pt.len()];
    c.decrypt(unit, &lower, &mut back).unwrap();
    assert_eq!(back, pt);
    assert!(c.decrypt(unit.next(), &lower, &mut back).is_err());
    let other = ContentCipher::new(Mode::Gcm, &dk, FileId([0; 16]), [0; 16]).unwrap();
    assert!(other.decrypt(unit, &lower, &mut back).is_err());
}

/// The header wrap with a fixed nonce against the independently computed
/// header (`tests/vectors/guardfs_v1.py`), and those bytes opening back to
/// the data key.
#[test]
fn header_wrap_matches_independent_vector() {
    let recs = records(include_str!("../tests/vectors/guardfs_v1.txt"));
    let r = &recs[1];
    let pk = PolicyKey::from_slice(field(r, "policy_key")).unwrap();
    let dk = DataKey::from_slice(field(r, "data_key")).unwrap();
    let expect = field(r, "header");
    assert_eq!(expect.len(), 212);
    let h = Header::seal_with_nonce(
        Mode::Gcm,
        "kat-key",
        7,
        FileId(expect[80..96].try_into().unwrap()),
        expect[96..112].try_into().unwrap(),
        &dk,
        &pk,
        expect[120..132].try_into().unwrap(),
    )
    .unwrap();
    let bytes = h.to_bytes();
    assert_eq!(&bytes[..212], expect);
    assert!(bytes[212..].iter().all(|&b| b == 0));
    let mut full = [0u8; HEADER_LEN];
    full[..212].copy_from_slice(expect);
    let (h2, dk2) = Header::open(&full, &pk).unwrap();
    assert_eq!(h2, h);
    assert_eq!(dk2, dk);
}
