//! AES-256 for `cbc-cs1`: CBC encryption of eight independent segments in
//! parallel lanes, and batches of single blocks.
//!
//! CBC encryption is a serial chain (each block waits for the previous
//! ciphertext), which leaves an AES-NI unit idle most of the time. Eight
//! segments have eight independent chains, so encrypting them interleaved
//! keeps eight AES rounds in flight. With AES-NI this module does that in
//! registers; elsewhere it falls back to the portable `aes` crate.
#![allow(unsafe_code)]

use aes::Aes256;
use aes::cipher::{Array, BlockCipherEncrypt, KeyInit};

#[cfg(target_arch = "x86_64")]
use zeroize::Zeroize;

/// Number of lanes encrypted together.
pub(crate) const LANES: usize = 8;

/// An AES-256 encryption key prepared for lane-parallel CBC.
pub(crate) struct LaneKey {
    soft: Aes256,
    #[cfg(target_arch = "x86_64")]
    ni: Option<ni::RoundKeys>,
}

impl LaneKey {
    pub(crate) fn new(key: &[u8; 32]) -> LaneKey {
        LaneKey {
            soft: Aes256::new(key.into()),
            #[cfg(target_arch = "x86_64")]
            ni: ni::RoundKeys::new(key),
        }
    }

    /// A key that never uses AES-NI (to test the two paths against each other).
    #[cfg(test)]
    pub(crate) fn new_portable(key: &[u8; 32]) -> LaneKey {
        LaneKey {
            soft: Aes256::new(key.into()),
            #[cfg(target_arch = "x86_64")]
            ni: None,
        }
    }

    /// The portable cipher, for decryption and single blocks.
    pub(crate) fn cipher(&self) -> &Aes256 {
        &self.soft
    }

    /// CBC-encrypt eight lanes in place, lane `i` starting from `ivs[i]`.
    /// Every lane must be the same length, a multiple of 16.
    pub(crate) fn cbc_encrypt_lanes(
        &self,
        ivs: &[[u8; 16]; LANES],
        lanes: &mut [&mut [u8]; LANES],
    ) {
        let len = lanes[0].len();
        assert!(
            len.is_multiple_of(16) && lanes.iter().all(|l| l.len() == len),
            "lanes must be equal whole blocks"
        );
        #[cfg(target_arch = "x86_64")]
        if let Some(rk) = &self.ni {
            rk.cbc_encrypt_lanes(ivs, lanes);
            return;
        }
        for (iv, lane) in ivs.iter().zip(lanes.iter_mut()) {
            let mut prev = *iv;
            for block in lane.chunks_exact_mut(16) {
                for (b, p) in block.iter_mut().zip(prev) {
                    *b ^= p;
                }
                let mut a = Array::<u8, aes::cipher::consts::U16>::default();
                a.copy_from_slice(block);
                self.soft.encrypt_block(&mut a);
                block.copy_from_slice(&a);
                prev.copy_from_slice(&a);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Drop for LaneKey {
    fn drop(&mut self) {
        if let Some(rk) = &mut self.ni {
            rk.0.zeroize();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod ni {
    use std::arch::x86_64::{
        __m128i, _mm_aesenc_si128, _mm_aesenclast_si128, _mm_aeskeygenassist_si128,
        _mm_loadu_si128, _mm_shuffle_epi32, _mm_slli_si128, _mm_storeu_si128, _mm_xor_si128,
    };

    use super::LANES;

    /// The 15 expanded AES-256 round keys, stored as bytes so they can be
    /// zeroized.
    pub(super) struct RoundKeys(pub(super) [[u8; 16]; 15]);

    impl RoundKeys {
        /// `None` if the CPU lacks AES-NI.
        pub(super) fn new(key: &[u8; 32]) -> Option<RoundKeys> {
            if !std::arch::is_x86_feature_detected!("aes") {
                return None;
            }
            let mut rk = RoundKeys([[0; 16]; 15]);
            // SAFETY: AES-NI (and SSE2, baseline on x86_64) was detected above.
            unsafe { expand(key, &mut rk.0) };
            Some(rk)
        }

        pub(super) fn cbc_encrypt_lanes(
            &self,
            ivs: &[[u8; 16]; LANES],
            lanes: &mut [&mut [u8]; LANES],
        ) {
            // SAFETY: RoundKeys exist only when AES-NI was detected; the
            // caller checked every lane holds the same whole number of blocks.
            unsafe { cbc8(&self.0, ivs, lanes) }
        }
    }

    /// One step of the AES-256 key schedule for the even round keys.
    #[target_feature(enable = "aes,sse2")]
    fn step_even(prev: __m128i, assist: __m128i) -> __m128i {
        let t = _mm_shuffle_epi32::<0xff>(assist);
        let mut k = prev;
        k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
        k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
        k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
        _mm_xor_si128(k, t)
    }

    /// One step of the AES-256 key schedule for the odd round keys.
    #[target_feature(enable = "aes,sse2")]
    fn step_odd(prev: __m128i, even: __m128i) -> __m128i {
        let t = _mm_shuffle_epi32::<0xaa>(_mm_aeskeygenassist_si128::<0>(even));
        let mut k = prev;
        k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
        k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
        k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
        _mm_xor_si128(k, t)
    }

    #[target_feature(enable = "aes,sse2")]
    unsafe fn expand(key: &[u8; 32], out: &mut [[u8; 16]; 15]) {
        let mut rk = [[0u8; 16]; 15];
        // SAFETY: each pointer covers 16 readable bytes of `key`.
        let (mut a, mut b) = unsafe {
            (
                _mm_loadu_si128(key.as_ptr().cast()),
                _mm_loadu_si128(key.as_ptr().add(16).cast()),
            )
        };
        let mut regs = [a; 15];
        regs[1] = b;
        macro_rules! round {
            ($i:expr, $rcon:expr) => {
                a = step_even(a, _mm_aeskeygenassist_si128::<$rcon>(b));
                regs[$i] = a;
                b = step_odd(b, a);
                regs[$i + 1] = b;
            };
        }
        round!(2, 0x01);
        round!(4, 0x02);
        round!(6, 0x04);
        round!(8, 0x08);
        round!(10, 0x10);
        round!(12, 0x20);
        regs[14] = step_even(a, _mm_aeskeygenassist_si128::<0x40>(b));
        for (dst, r) in rk.iter_mut().zip(regs) {
            // SAFETY: `dst` is 16 writable bytes.
            unsafe { _mm_storeu_si128(dst.as_mut_ptr().cast(), r) };
        }
        *out = rk;
    }

    #[target_feature(enable = "aes,sse2")]
    unsafe fn cbc8(rk: &[[u8; 16]; 15], ivs: &[[u8; 16]; LANES], lanes: &mut [&mut [u8]; LANES]) {
        // SAFETY: every round key and IV is 16 readable bytes.
        let k: [__m128i; 15] =
            std::array::from_fn(|i| unsafe { _mm_loadu_si128(rk[i].as_ptr().cast()) });
        // SAFETY: as above.
        let mut prev: [__m128i; LANES] =
            std::array::from_fn(|i| unsafe { _mm_loadu_si128(ivs[i].as_ptr().cast()) });
        let ptrs: [*mut u8; LANES] = std::array::from_fn(|i| lanes[i].as_mut_ptr());
        let blocks = lanes[0].len() / 16;
        for blk in 0..blocks {
            let mut x = [k[0]; LANES];
            for l in 0..LANES {
                // SAFETY: blk * 16 + 16 <= lane length, equal for all lanes
                // (checked by the caller).
                let p = unsafe { _mm_loadu_si128(ptrs[l].add(blk * 16).cast()) };
                x[l] = _mm_xor_si128(_mm_xor_si128(p, prev[l]), k[0]);
            }
            for key in &k[1..14] {
                for v in &mut x {
                    *v = _mm_aesenc_si128(*v, *key);
                }
            }
            for l in 0..LANES {
                x[l] = _mm_aesenclast_si128(x[l], k[14]);
                // SAFETY: as for the load above.
                unsafe { _mm_storeu_si128(ptrs[l].add(blk * 16).cast(), x[l]) };
                prev[l] = x[l];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn lanes_match_portable_cbc() {
        for keyb in [0u8, 0x5a, 0xff] {
            let key: [u8; 32] = std::array::from_fn(|i| keyb.wrapping_add(i as u8));
            let fast = LaneKey::new(&key);
            let slow = LaneKey::new_portable(&key);
            let ivs: [[u8; 16]; LANES] = std::array::from_fn(|i| [i as u8 * 17; 16]);
            for seg in [16usize, 32, 512] {
                let mut a = pattern(seg * LANES, keyb);
                let mut b = a.clone();
                {
                    let mut it = a.chunks_mut(seg);
                    let mut la: [&mut [u8]; LANES] = std::array::from_fn(|_| it.next().unwrap());
                    fast.cbc_encrypt_lanes(&ivs, &mut la);
                }
                {
                    let mut it = b.chunks_mut(seg);
                    let mut lb: [&mut [u8]; LANES] = std::array::from_fn(|_| it.next().unwrap());
                    slow.cbc_encrypt_lanes(&ivs, &mut lb);
                }
                assert_eq!(a, b, "seg {seg}");
            }
        }
    }

    /// The portable lane path against the `cbc` crate.
    #[test]
    fn portable_matches_cbc_crate() {
        use aes::cipher::{BlockModeEncrypt, KeyIvInit};
        let key = [7u8; 32];
        let k = LaneKey::new_portable(&key);
        let ivs: [[u8; 16]; LANES] = std::array::from_fn(|i| [i as u8; 16]);
        let mut data = pattern(64 * LANES, 3);
        let orig = data.clone();
        {
            let mut it = data.chunks_mut(64);
            let mut l: [&mut [u8]; LANES] = std::array::from_fn(|_| it.next().unwrap());
            k.cbc_encrypt_lanes(&ivs, &mut l);
        }
        for (i, lane) in orig.chunks(64).enumerate() {
            let mut expect = lane.to_vec();
            let mut enc = cbc::Encryptor::<Aes256>::new(&Array::from(key), &Array::from(ivs[i]));
            let (blocks, _) =
                Array::<u8, aes::cipher::consts::U16>::slice_as_chunks_mut(&mut expect);
            enc.encrypt_blocks(blocks);
            assert_eq!(&data[i * 64..(i + 1) * 64], &expect[..]);
        }
    }
}
