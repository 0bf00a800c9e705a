//! Content modes: encrypt and decrypt runs of consecutive units.
//!
//! A run starts on a unit boundary; every unit in it is whole except
//! possibly the last, which is then the file's tail. Callers pass their own
//! buffers; nothing here allocates. Unit numbers are bounded by
//! [`Layout::last_unit`] (files of at most `MAX_PLAIN_SIZE` bytes); a run
//! reaching past it is refused with [`ContentError::UnitOutOfRange`].
//!
//! Short tails. XTS and CBC-CS1 need at least one AES block (16 bytes). A
//! tail unit (XTS) or tail segment (CBC-CS1) of 1..=15 bytes is instead
//! XORed with a keystream block: `E_K1(E_K2(unit))` in XTS, `E_K1(IV_s)` in
//! CBC-CS1 (IV_s the segment's IV). The cost: that keystream is the same
//! every time the tail is rewritten at that position, so two versions of a
//! short tail leak their XOR, and flipping a ciphertext bit flips the same
//! plaintext bit (XTS already reveals which 16-byte blocks changed; this
//! reveals which bits changed, for at most 15 bytes at the end of a file).
//!
//! Holes. An all-zero lower unit is a hole and reads as zeros, except that
//! in `xts` and `cbc-cs1` a unit shorter than 16 bytes is **never** a hole:
//! it is plaintext XOR keystream, so one plaintext value per byte position
//! encrypts to zero, and it is always decrypted
//! ([`Layout::unit_may_be_hole`]). Writers must therefore write a short
//! final unit encrypted (never leave it as sparse space or zero fill when a
//! file is extended). A genuine unit of n >= 16 bytes is all zeros with
//! probability 2^-8n <= 2^-128. In `gcm` every unit carries a random nonce
//! and tag, so any all-zero unit is a hole; an attacker who zeroes a whole
//! unit makes it read as zeros undetected, and FORMAT.md lists this among
//! what `gcm` does not protect against.

use aes::cipher::{
    Array, BlockCipherDecrypt, BlockCipherEncrypt, BlockSizeUser, KeyInit, consts::U16,
};
use std::sync::Mutex;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

use crate::backend::lanes::{LANES, LaneKey};
use crate::backend::xts::XtsKey;
use crate::error::ContentError;
use crate::header::{FileId, Header};
use crate::keys::DataKey;
use crate::mode::Mode;
use crate::offsets::{GCM_NONCE_LEN, GCM_TAG_LEN, LOWER_UNIT, Layout, UnitNo};

/// Bytes in a CBC-CS1 segment.
pub const SEGMENT_LEN: usize = 512;
const SEGMENTS_PER_UNIT: usize = LOWER_UNIT as usize / SEGMENT_LEN;
const UNIT: usize = LOWER_UNIT as usize;

/// Whether `buf` is all zero bytes (a hole in the lower file).
pub fn is_zero(buf: &[u8]) -> bool {
    let (words, rest) = buf.as_chunks::<8>();
    words.iter().all(|w| u64::from_ne_bytes(*w) == 0) && rest.iter().all(|&b| b == 0)
}

fn block(bytes: [u8; 16]) -> Array<u8, U16> {
    Array::from(bytes)
}

/// A file's content cipher: its mode, keyed with its data key.
pub struct ContentCipher {
    layout: Layout,
    inner: Inner,
}

impl std::fmt::Debug for ContentCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ContentCipher({})", self.mode())
    }
}

enum Inner {
    Xts {
        units: XtsKey,
        k1: aes::Aes256,
        k2: aes::Aes256,
    },
    CbcCs1 {
        data: LaneKey,
        iv: aes::Aes256,
        base_iv: u128,
    },
    Gcm {
        key: LessSafeKey,
        file_id: FileId,
        nonces: Mutex<NoncePool>,
    },
    Clear,
}

/// Random `gcm` nonces drawn from the system RNG in batches: one RNG call
/// per unit cost more than the AEAD itself (measured: 1.08 us vs 0.64 us per
/// 4 KiB unit). Nonces stay fully random; only the RNG calls are batched.
struct NoncePool {
    buf: [u8; GCM_NONCE_LEN * NONCE_BATCH],
    next: usize,
}

const NONCE_BATCH: usize = 64;

impl NoncePool {
    fn new() -> NoncePool {
        NoncePool {
            buf: [0; GCM_NONCE_LEN * NONCE_BATCH],
            next: NONCE_BATCH,
        }
    }

    fn take(&mut self) -> Result<[u8; GCM_NONCE_LEN], ContentError> {
        if self.next == NONCE_BATCH {
            crate::random_bytes(&mut self.buf).map_err(|_| ContentError::Random)?;
            self.next = 0;
        }
        let mut n = [0u8; GCM_NONCE_LEN];
        let at = self.next * GCM_NONCE_LEN;
        n.copy_from_slice(&self.buf[at..at + GCM_NONCE_LEN]);
        // Never hand out the same bytes twice.
        self.buf[at..at + GCM_NONCE_LEN].fill(0);
        self.next += 1;
        Ok(n)
    }
}

impl ContentCipher {
    /// The cipher for a file whose header is `header` and data key `key`.
    ///
    /// # Errors
    /// `Backend` if the cipher library refuses the key.
    pub fn for_header(header: &Header, key: &DataKey) -> Result<ContentCipher, ContentError> {
        Self::new(header.mode, key, header.file_id, header.base_iv)
    }

    /// A cipher for `mode` with explicit parameters.
    ///
    /// # Errors
    /// `Backend` if the cipher library refuses the key.
    pub fn new(
        mode: Mode,
        key: &DataKey,
        file_id: FileId,
        base_iv: [u8; 16],
    ) -> Result<ContentCipher, ContentError> {
        let inner = match mode {
            Mode::Xts => Inner::Xts {
                units: XtsKey::new(key)?,
                k1: aes::Aes256::new(key.first().into()),
                k2: aes::Aes256::new(key.second().into()),
            },
            Mode::CbcCs1 => Inner::CbcCs1 {
                data: LaneKey::new(key.first()),
                iv: aes::Aes256::new(key.second().into()),
                base_iv: u128::from_le_bytes(base_iv),
            },
            Mode::Gcm => Inner::Gcm {
                key: LessSafeKey::new(
                    UnboundKey::new(&AES_256_GCM, key.first())
                        .map_err(|_| ContentError::Backend("GCM key setup failed"))?,
                ),
                file_id,
                nonces: Mutex::new(NoncePool::new()),
            },
            Mode::Clear => Inner::Clear,
        };
        Ok(ContentCipher {
            layout: Layout::of(mode),
            inner,
        })
    }

    /// The identity cipher of `clear` files.
    pub fn clear() -> ContentCipher {
        ContentCipher {
            layout: Layout::of(Mode::Clear),
            inner: Inner::Clear,
        }
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        match self.inner {
            Inner::Xts { .. } => Mode::Xts,
            Inner::CbcCs1 { .. } => Mode::CbcCs1,
            Inner::Gcm { .. } => Mode::Gcm,
            Inner::Clear => Mode::Clear,
        }
    }

    /// The mode's file geometry.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Plaintext length of a run of lower units of total `lower_len`
    /// bytes, or `None` if the last unit's length is impossible.
    pub fn run_plain_len(&self, lower_len: usize) -> Option<usize> {
        let full = lower_len / UNIT;
        let rem = lower_len % UNIT;
        Some(full * self.layout.unit_plain_len() + self.layout.unit_plain_len_of(rem)?)
    }

    /// Encrypt the run of units starting at `first`. `plain` holds whole
    /// units except possibly the last; `lower` must be exactly
    /// `layout().run_lower_len(plain.len())` bytes.
    ///
    /// # Errors
    /// `BufferSize` for mismatched buffers; `UnitOutOfRange` if the run
    /// reaches past [`Layout::last_unit`]; `Backend`/`Random` if the cipher
    /// library fails.
    pub fn encrypt(
        &self,
        first: UnitNo,
        plain: &[u8],
        lower: &mut [u8],
    ) -> Result<(), ContentError> {
        if lower.len() != self.layout.run_lower_len(plain.len()) {
            return Err(ContentError::BufferSize(
                "lower buffer does not fit the plaintext run",
            ));
        }
        self.check_run(first, lower.len())?;
        let pu = self.layout.unit_plain_len();
        match &self.inner {
            Inner::Clear => lower.copy_from_slice(plain),
            Inner::Xts { units, k1, k2 } => {
                let (whole, tail) = split_short_tail(plain.len(), pu);
                units.units(true, UNIT, &plain[..whole], &mut lower[..whole], |i| {
                    // u64 + usize cannot overflow a u128.
                    tweak(u128::from(first.0) + i as u128)
                })?;
                if tail > 0 {
                    let unit = nth_unit(first, whole / pu)?;
                    xts_short_tail(k1, k2, unit, &plain[whole..], &mut lower[whole..]);
                }
            }
            Inner::CbcCs1 { data, iv, base_iv } => {
                lower.copy_from_slice(plain);
                for (i, unit) in lower.chunks_mut(UNIT).enumerate() {
                    cbc_encrypt_unit(data, iv, *base_iv, nth_unit(first, i)?, unit);
                }
            }
            Inner::Gcm {
                key,
                file_id,
                nonces,
            } => {
                let mut nonces = nonces.lock().unwrap_or_else(|e| e.into_inner());
                for (i, (p, l)) in plain.chunks(pu).zip(lower.chunks_mut(UNIT)).enumerate() {
                    let nonce = nonces.take()?;
                    gcm_seal(key, file_id, nth_unit(first, i)?, nonce, p, l)?;
                }
            }
        }
        Ok(())
    }

    /// Refuse a run of `lower_len` lower bytes from `first` that reaches
    /// past the last unit a file of `MAX_PLAIN_SIZE` bytes can have.
    fn check_run(&self, first: UnitNo, lower_len: usize) -> Result<(), ContentError> {
        let max = self.layout.last_unit();
        let Some(extra) = lower_len.div_ceil(UNIT).checked_sub(1) else {
            return Ok(()); // empty run
        };
        if first > max {
            return Err(ContentError::UnitOutOfRange(first));
        }
        match u64::try_from(extra)
            .ok()
            .and_then(|e| first.0.checked_add(e))
        {
            Some(last) if last <= max.0 => Ok(()),
            _ => Err(ContentError::UnitOutOfRange(max.next())),
        }
    }

    /// Decrypt the run of lower units starting at `first` into `plain`,
    /// which must be exactly `run_plain_len(lower.len())` bytes. All-zero
    /// lower units that can be holes ([`Layout::unit_may_be_hole`]: not
    /// `xts`/`cbc-cs1` units shorter than 16 bytes) decrypt to zeros.
    ///
    /// # Errors
    /// `UnitAuthentication` if a `gcm` unit fails its tag (the plaintext of
    /// that unit is zeroed, never returned); `BadUnitLength`, `BufferSize`,
    /// `UnitOutOfRange`.
    pub fn decrypt(
        &self,
        first: UnitNo,
        lower: &[u8],
        plain: &mut [u8],
    ) -> Result<(), ContentError> {
        let pu = self.layout.unit_plain_len();
        let last = UnitNo(first.0.saturating_add((lower.len() / UNIT) as u64));
        let expect = self
            .run_plain_len(lower.len())
            .ok_or(ContentError::BadUnitLength(last, lower.len() % UNIT))?;
        if plain.len() != expect {
            return Err(ContentError::BufferSize(
                "plaintext buffer does not fit the lower run",
            ));
        }
        self.check_run(first, lower.len())?;
        if let Inner::Clear = self.inner {
            plain.copy_from_slice(lower);
            return Ok(());
        }
        for (i, (l, p)) in lower.chunks(UNIT).zip(plain.chunks_mut(pu)).enumerate() {
            let unit = nth_unit(first, i)?;
            if self.layout.unit_may_be_hole(l.len()) && is_zero(l) {
                p.fill(0);
                continue;
            }
            match &self.inner {
                Inner::Clear => unreachable_clear(),
                Inner::Xts { units, k1, k2 } => {
                    if l.len() >= 16 {
                        units.units(false, UNIT, l, p, |_| tweak(u128::from(unit.0)))?;
                    } else {
                        xts_short_tail(k1, k2, unit, l, p);
                    }
                }
                Inner::CbcCs1 { data, iv, base_iv } => {
                    cbc_decrypt_unit(data, iv, *base_iv, unit, l, p);
                }
                Inner::Gcm { key, file_id, .. } => {
                    if let Err(e) = gcm_open(key, file_id, unit, l, p) {
                        p.fill(0);
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Never called: clear runs return before the unit loop.
fn unreachable_clear() {}

/// Unit `first + i`, checked.
fn nth_unit(first: UnitNo, i: usize) -> Result<UnitNo, ContentError> {
    u64::try_from(i)
        .ok()
        .and_then(|i| first.0.checked_add(i))
        .map(UnitNo)
        .ok_or(ContentError::UnitOutOfRange(first))
}

/// Split a run into the part XTS handles (whole units and a tail of at least
/// 16 bytes) and a short tail (1..=15 bytes).
fn split_short_tail(len: usize, unit: usize) -> (usize, usize) {
    let rem = len % unit;
    if rem > 0 && rem < 16 {
        (len - rem, rem)
    } else {
        (len, 0)
    }
}

/// The IEEE 1619 tweak: the data unit sequence number, little-endian.
fn tweak(unit: u128) -> [u8; 16] {
    unit.to_le_bytes()
}

/// Short XTS tail: XOR with E_K1(E_K2(tweak)).
fn xts_short_tail(k1: &aes::Aes256, k2: &aes::Aes256, unit: UnitNo, input: &[u8], out: &mut [u8]) {
    let mut ks = block(tweak(u128::from(unit.0)));
    k2.encrypt_block(&mut ks);
    k1.encrypt_block(&mut ks);
    for ((o, i), k) in out.iter_mut().zip(input).zip(ks.iter()) {
        *o = i ^ k;
    }
}

/// The IVs of the segments of `unit`:
/// IV_s = E_Kiv(base_iv XOR s), s = 8 * unit + index as a 128-bit
/// little-endian integer (computed in u128, so no unit number overflows).
fn segment_ivs(iv_key: &aes::Aes256, base_iv: u128, unit: UnitNo, out: &mut [[u8; 16]]) {
    let first_seg = u128::from(unit.0) * SEGMENTS_PER_UNIT as u128;
    for (i, iv) in out.iter_mut().enumerate() {
        *iv = (base_iv ^ (first_seg + i as u128)).to_le_bytes();
    }
    let (blocks, _) = Array::<u8, U16>::slice_as_chunks_mut(out.as_flattened_mut());
    iv_key.encrypt_blocks(blocks);
}

/// CBC-CS1 encrypt one unit in place (whole or the file's tail).
fn cbc_encrypt_unit(
    data: &LaneKey,
    iv_key: &aes::Aes256,
    base_iv: u128,
    unit: UnitNo,
    buf: &mut [u8],
) {
    let mut ivs = [[0u8; 16]; SEGMENTS_PER_UNIT];
    segment_ivs(iv_key, base_iv, unit, &mut ivs);
    if buf.len() == UNIT {
        let mut it = buf.chunks_mut(SEGMENT_LEN);
        let mut lanes: [&mut [u8]; LANES] = std::array::from_fn(|_| it.next().unwrap_or_default());
        data.cbc_encrypt_lanes(&ivs, &mut lanes);
        return;
    }
    for (seg, iv) in buf.chunks_mut(SEGMENT_LEN).zip(ivs) {
        cs1_encrypt_segment(data.cipher(), iv, seg);
    }
}

/// CBC-CS1 (NIST SP 800-38A addendum) over one segment, in place.
pub(crate) fn cs1_encrypt_segment<C>(k: &C, iv: [u8; 16], seg: &mut [u8])
where
    C: BlockCipherEncrypt + BlockSizeUser<BlockSize = U16>,
{
    let n = seg.len();
    if n < 16 {
        let mut ks = block(iv);
        k.encrypt_block(&mut ks);
        for (b, k) in seg.iter_mut().zip(ks.iter()) {
            *b ^= k;
        }
        return;
    }
    let d = n % 16;
    let full = n / 16; // whole blocks before the partial one
    let mut prev = block(iv);
    for chunk in seg[..full * 16].chunks_exact_mut(16) {
        let mut b = block(xor16(chunk, &prev));
        k.encrypt_block(&mut b);
        chunk.copy_from_slice(&b);
        prev = b;
    }
    if d == 0 {
        return;
    }
    // C_n = E(C_{n-1} XOR (P* || 0)); output C*_{n-1} (first d bytes of
    // C_{n-1}) followed by C_n.
    let mut last = prev;
    for (l, p) in last.iter_mut().zip(&seg[full * 16..]) {
        *l ^= p;
    }
    k.encrypt_block(&mut last);
    let start = (full - 1) * 16;
    // seg[start..start+16] holds C_{n-1}; keep its first d bytes, then C_n.
    seg[start + d..start + d + 16].copy_from_slice(&last);
}

fn xor16(a: &[u8], b: &[u8]) -> [u8; 16] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

/// CBC-CS1 decrypt one unit.
fn cbc_decrypt_unit(
    data: &LaneKey,
    iv_key: &aes::Aes256,
    base_iv: u128,
    unit: UnitNo,
    lower: &[u8],
    plain: &mut [u8],
) {
    let mut ivs = [[0u8; 16]; SEGMENTS_PER_UNIT];
    segment_ivs(iv_key, base_iv, unit, &mut ivs);
    let k = data.cipher();
    let whole = lower.len() / SEGMENT_LEN * SEGMENT_LEN;
    cbc_decrypt_segments(k, &ivs, &lower[..whole], &mut plain[..whole]);
    if whole < lower.len() {
        let s = whole / SEGMENT_LEN;
        cs1_decrypt_segment(k, ivs[s], &lower[whole..], &mut plain[whole..]);
    }
}

/// CBC-decrypt whole 512-byte segments, segment `s` from `ivs[s]`: decrypt
/// every block in one batch, then XOR with the previous ciphertext block
/// (or the segment IV). `lower` and `plain` hold whole segments, at most
/// `ivs.len()` of them.
pub(crate) fn cbc_decrypt_segments<C>(k: &C, ivs: &[[u8; 16]], lower: &[u8], plain: &mut [u8])
where
    C: BlockCipherDecrypt + BlockSizeUser<BlockSize = U16>,
{
    plain.copy_from_slice(lower);
    let (blocks, _) = Array::<u8, U16>::slice_as_chunks_mut(plain);
    k.decrypt_blocks(blocks);
    for (s, iv) in ivs.iter().enumerate().take(lower.len() / SEGMENT_LEN) {
        let base = s * SEGMENT_LEN;
        for b in 0..SEGMENT_LEN / 16 {
            let off = base + b * 16;
            let prev: &[u8] = if b == 0 { iv } else { &lower[off - 16..off] };
            for (p, c) in plain[off..off + 16].iter_mut().zip(prev) {
                *p ^= c;
            }
        }
    }
}

/// Inverse of [`cs1_encrypt_segment`].
pub(crate) fn cs1_decrypt_segment<C>(k: &C, iv: [u8; 16], c: &[u8], p: &mut [u8])
where
    C: BlockCipherEncrypt + BlockCipherDecrypt + BlockSizeUser<BlockSize = U16>,
{
    let n = c.len();
    if n < 16 {
        let mut ks = block(iv);
        k.encrypt_block(&mut ks);
        for ((o, i), k) in p.iter_mut().zip(c).zip(ks.iter()) {
            *o = i ^ k;
        }
        return;
    }
    let d = n % 16;
    let full = n / 16;
    // Rebuild the ordinary CBC ciphertext C_1..C_full (and C_n if d > 0).
    let mut prev = block(iv);
    let plain_full = if d == 0 { full } else { full - 1 };
    for b in 0..plain_full {
        let cb = block(c[b * 16..b * 16 + 16].try_into().unwrap_or([0; 16]));
        let mut x = cb;
        k.decrypt_block(&mut x);
        p[b * 16..b * 16 + 16].copy_from_slice(&xor16(&x, &prev));
        prev = cb;
    }
    if d == 0 {
        return;
    }
    let start = plain_full * 16; // C*_{n-1} (d bytes) then C_n (16 bytes)
    let cn = block(c[start + d..start + d + 16].try_into().unwrap_or([0; 16]));
    let mut z = cn;
    k.decrypt_block(&mut z); // = C_{n-1} XOR (P* || 0)
    let mut cn1 = [0u8; 16];
    cn1[..d].copy_from_slice(&c[start..start + d]);
    cn1[d..].copy_from_slice(&z[d..]);
    for i in 0..d {
        p[start + 16 + i] = z[i] ^ cn1[i];
    }
    let mut x = block(cn1);
    k.decrypt_block(&mut x);
    p[start..start + 16].copy_from_slice(&xor16(&x, &prev));
}

fn gcm_aad(file_id: &FileId, unit: UnitNo) -> [u8; 24] {
    let mut aad = [0u8; 24];
    aad[..16].copy_from_slice(&file_id.0);
    aad[16..].copy_from_slice(&unit.0.to_le_bytes());
    aad
}

pub(crate) fn gcm_seal(
    key: &LessSafeKey,
    file_id: &FileId,
    unit: UnitNo,
    n: [u8; GCM_NONCE_LEN],
    plain: &[u8],
    lower: &mut [u8],
) -> Result<(), ContentError> {
    let (nonce, rest) = lower.split_at_mut(GCM_NONCE_LEN);
    let (ct, tag) = rest.split_at_mut(plain.len());
    nonce.copy_from_slice(&n);
    if tag.len() != GCM_TAG_LEN {
        return Err(ContentError::BufferSize("gcm unit tag"));
    }
    key.seal_out_of_place_scatter(
        Nonce::assume_unique_for_key(n),
        Aad::from(gcm_aad(file_id, unit)),
        plain,
        ct,
        &[],
        tag,
    )
    .map_err(|_| ContentError::Backend("GCM seal failed"))
}

fn gcm_open(
    key: &LessSafeKey,
    file_id: &FileId,
    unit: UnitNo,
    lower: &[u8],
    plain: &mut [u8],
) -> Result<(), ContentError> {
    if lower.len() < GCM_NONCE_LEN + GCM_TAG_LEN + 1 {
        return Err(ContentError::BadUnitLength(unit, lower.len()));
    }
    let (nonce, rest) = lower.split_at(GCM_NONCE_LEN);
    let (ct, tag) = rest.split_at(rest.len() - GCM_TAG_LEN);
    let n: [u8; GCM_NONCE_LEN] = nonce
        .try_into()
        .map_err(|_| ContentError::BufferSize("nonce"))?;
    key.open_separate_gather(
        Nonce::assume_unique_for_key(n),
        Aad::from(gcm_aad(file_id, unit)),
        ct,
        tag,
        plain,
    )
    .map_err(|_| ContentError::UnitAuthentication(unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher(mode: Mode) -> ContentCipher {
        let key = DataKey::from_bytes(std::array::from_fn(|i| i as u8));
        ContentCipher::new(mode, &key, FileId([9; 16]), [3; 16]).unwrap()
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn round_trip_sizes() {
        for mode in Mode::ALL {
            let c = cipher(mode);
            let pu = c.layout().unit_plain_len();
            for len in [
                0,
                1,
                15,
                16,
                17,
                31,
                32,
                511,
                512,
                513,
                527,
                528,
                4095,
                pu,
                pu + 1,
                3 * pu + 100,
            ] {
                let p = pattern(len);
                let mut l = vec![0u8; c.layout().run_lower_len(len)];
                c.encrypt(UnitNo(5), &p, &mut l).unwrap();
                if mode != Mode::Clear && len >= 8 {
                    assert_ne!(&l[..len.min(l.len())], &p[..], "{mode} {len} not encrypted");
                }
                let mut back = vec![0u8; len];
                c.decrypt(UnitNo(5), &l, &mut back).unwrap();
                assert_eq!(back, p, "{mode} len {len}");
            }
        }
    }

    #[test]
    fn holes_read_as_zeros() {
        for mode in Mode::ALL {
            let c = cipher(mode);
            // The shortest tail each mode can hole: one AES block, or a
            // gcm unit holding one byte.
            let shortest = if mode == Mode::Gcm { 29 } else { 16 };
            for tail in [100, shortest] {
                let lower = vec![0u8; 2 * UNIT + tail];
                let plen = c.run_plain_len(lower.len()).unwrap();
                let mut p = vec![1u8; plen];
                c.decrypt(UnitNo(0), &lower, &mut p).unwrap();
                assert!(is_zero(&p), "{mode} tail {tail}");
            }
        }
    }

    /// A zero xts/cbc-cs1 unit of 1..=15 bytes is ciphertext, not a hole:
    /// it decrypts to the keystream, while the whole units before it are
    /// still holes.
    #[test]
    fn short_zero_units_are_not_holes() {
        for mode in [Mode::Xts, Mode::CbcCs1] {
            let c = cipher(mode);
            assert!(!c.layout().unit_may_be_hole(15));
            assert!(c.layout().unit_may_be_hole(16));
            for tail in 1..16 {
                let lower = vec![0u8; 2 * UNIT + tail];
                let mut p = vec![1u8; lower.len()];
                c.decrypt(UnitNo(0), &lower, &mut p).unwrap();
                assert!(is_zero(&p[..2 * UNIT]), "{mode} tail {tail}");
                assert!(!is_zero(&p[2 * UNIT..]), "{mode} tail {tail}");
                // And the keystream is what a plaintext of those bytes
                // encrypts to zero.
                let mut again = vec![1u8; tail];
                c.encrypt(UnitNo(2), &p[2 * UNIT..], &mut again).unwrap();
                assert!(is_zero(&again), "{mode} tail {tail}");
            }
        }
        for mode in [Mode::Gcm, Mode::Clear] {
            assert!(Layout::of(mode).unit_may_be_hole(1), "{mode}");
        }
    }

    /// Unit numbers near u64::MAX are refused, never overflow.
    #[test]
    fn huge_unit_numbers_are_typed_errors() {
        for mode in Mode::ALL {
            let c = cipher(mode);
            let max = c.layout().last_unit();
            let pu = c.layout().unit_plain_len();
            let plain = vec![7u8; 2 * pu + 1];
            let mut lower = vec![0u8; c.layout().run_lower_len(plain.len())];
            let mut back = vec![0u8; plain.len()];
            // The last unit itself works (a 1-byte tail there).
            let mut l1 = vec![0u8; c.layout().run_lower_len(1)];
            c.encrypt(max, &[7], &mut l1).unwrap();
            let mut p1 = [0u8; 1];
            c.decrypt(max, &l1, &mut p1).unwrap();
            assert_eq!(p1, [7], "{mode}");
            for first in [
                UnitNo(u64::MAX),
                UnitNo(u64::MAX - 1),
                UnitNo(u64::MAX / 8 + 1),
                UnitNo(max.0 + 1),
                UnitNo(max.0 - 1), // the run's third unit is past the end
            ] {
                assert!(
                    matches!(
                        c.encrypt(first, &plain, &mut lower),
                        Err(ContentError::UnitOutOfRange(_))
                    ),
                    "{mode} {first}"
                );
                assert!(
                    matches!(
                        c.decrypt(first, &lower, &mut back),
                        Err(ContentError::UnitOutOfRange(_))
                    ),
                    "{mode} {first}"
                );
            }
            // An empty run touches no unit.
            c.encrypt(UnitNo(u64::MAX), &[], &mut []).unwrap();
        }
    }

    #[test]
    fn bad_buffers_are_errors() {
        let c = cipher(Mode::Gcm);
        let mut l = vec![0u8; 10];
        assert!(matches!(
            c.encrypt(UnitNo(0), &[1; 5], &mut l),
            Err(ContentError::BufferSize(_))
        ));
        let mut p = vec![0u8; 3];
        assert!(matches!(
            c.decrypt(UnitNo(0), &[1; 20], &mut p),
            Err(ContentError::BadUnitLength(..))
        ));
    }

    #[test]
    fn is_zero_works() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0; 13]));
        let mut v = vec![0u8; 4096];
        v[4095] = 1;
        assert!(!is_zero(&v));
        v[4095] = 0;
        v[3] = 1;
        assert!(!is_zero(&v));
    }
}
