//! Offline unlock (CTE challenge-response), server side.
//!
//! An agent that cannot reach the key manager shows its operator a
//! challenge; an administrator gets the response from the key manager (REST
//! or `keymgr challenge respond`) and the operator types it in. The response
//! carries the client's escrow key (stored earlier by the agent, sealed under
//! the master key) encrypted to the agent's ephemeral X25519 key.
//!
//! Text form of both: RFC 4648 base32, upper-case alphabet, no padding,
//! printed in groups of 8 characters separated by single spaces. When
//! parsing, spaces, tabs, newlines and `-` are ignored and lower case is
//! accepted.
//!
//! Challenge (37 bytes): `[0]` version 1; `[1..5]` u32 big-endian minutes
//! since the Unix epoch when the agent made it; `[5..37]` the agent's
//! ephemeral X25519 public key.
//!
//! Response (80 bytes): `[0..32]` the server's fresh ephemeral X25519 public
//! key; `[32..80]` AES-256-GCM ciphertext and tag of the 32-byte escrow key
//! under `k` with an all-zero 12-byte nonce (each `k` is used once) and no
//! AAD, where `k` = HKDF-SHA256(salt = the 37 challenge bytes, ikm = the
//! X25519 shared secret, info = [`HKDF_INFO`]), 32 bytes.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::agreement::{EphemeralPrivateKey, UnparsedPublicKey, X25519, agree_ephemeral};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use aws_lc_rs::rand::SystemRandom;
use data_encoding::BASE32_NOPAD;
use zeroize::Zeroizing;

/// Challenge format version.
pub const VERSION: u8 = 1;
/// Length of a challenge in bytes.
pub const CHALLENGE_LEN: usize = 37;
/// Length of a response in bytes.
pub const RESPONSE_LEN: usize = 80;
/// Length of an escrow key in bytes.
pub const ESCROW_LEN: usize = 32;
/// HKDF info string.
pub const HKDF_INFO: &[u8] = b"guardfs offline unlock v1";
/// A challenge older than this many minutes is refused.
pub const MAX_AGE_MINUTES: i64 = 15;
/// A challenge dated more than this many minutes ahead is refused.
pub const MAX_FUTURE_MINUTES: i64 = 1;
/// Longest challenge text accepted (a real one is 67 characters).
const MAX_TEXT: usize = 1024;

/// Base32 (upper case, no padding) in groups of 8 separated by one space.
pub fn encode_text(bytes: &[u8]) -> String {
    let plain = BASE32_NOPAD.encode(bytes);
    let mut out = String::with_capacity(plain.len() + plain.len() / 8);
    for (i, c) in plain.chars().enumerate() {
        if i > 0 && i % 8 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// Decode text made by [`encode_text`], ignoring spaces, tabs, newlines and
/// `-`, accepting lower case.
///
/// # Errors
/// When the text is not base32 (or far too long).
pub fn decode_text(text: &str) -> Result<Vec<u8>, String> {
    if text.len() > MAX_TEXT {
        return Err(format!("text longer than {MAX_TEXT} characters"));
    }
    let clean: String = text
        .chars()
        .filter(|c| !matches!(c, ' ' | '\t' | '\n' | '\r' | '-'))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if clean.is_empty() {
        return Err("empty text".into());
    }
    BASE32_NOPAD
        .decode(clean.as_bytes())
        .map_err(|e| format!("not base32 ({e})"))
}

/// A parsed challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    bytes: [u8; CHALLENGE_LEN],
}

impl Challenge {
    /// Parse challenge text.
    ///
    /// # Errors
    /// Malformed text, wrong length or unknown version.
    pub fn parse(text: &str) -> Result<Challenge, String> {
        let raw = decode_text(text).map_err(|e| format!("malformed challenge: {e}"))?;
        let bytes: [u8; CHALLENGE_LEN] = raw.as_slice().try_into().map_err(|_| {
            format!(
                "malformed challenge: {} bytes, expected {CHALLENGE_LEN}",
                raw.len()
            )
        })?;
        if bytes[0] != VERSION {
            return Err(format!(
                "unsupported challenge version {} (this key manager knows {VERSION})",
                bytes[0]
            ));
        }
        Ok(Challenge { bytes })
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &[u8; CHALLENGE_LEN] {
        &self.bytes
    }

    /// Minutes since the Unix epoch when the agent made it.
    pub fn minutes(&self) -> u32 {
        u32::from_be_bytes([self.bytes[1], self.bytes[2], self.bytes[3], self.bytes[4]])
    }

    /// Refuse a challenge more than [`MAX_AGE_MINUTES`] old or more than
    /// [`MAX_FUTURE_MINUTES`] ahead of `now` (Unix seconds), comparing whole
    /// minutes since the epoch.
    ///
    /// # Errors
    /// A message saying it expired.
    pub fn check_fresh(&self, now: i64) -> Result<(), String> {
        let age = now.div_euclid(60) - i64::from(self.minutes());
        if age > MAX_AGE_MINUTES {
            return Err(format!(
                "challenge expired: it was made {age} minutes ago and is valid for \
                 {MAX_AGE_MINUTES} minutes; have the agent make a new one"
            ));
        }
        if -age > MAX_FUTURE_MINUTES {
            return Err(format!(
                "challenge expired: it is dated {} minutes in the future; check the clocks \
                 of the agent host and the key manager",
                -age
            ));
        }
        Ok(())
    }

    /// The response carrying `escrow` (32 bytes) to the challenger.
    ///
    /// # Errors
    /// A bad escrow length, an unusable public key in the challenge, or a
    /// crypto failure.
    pub fn respond(&self, escrow: &[u8]) -> Result<[u8; RESPONSE_LEN], RespondError> {
        if escrow.len() != ESCROW_LEN {
            return Err(RespondError::Internal("escrow key has the wrong length"));
        }
        let rng = SystemRandom::new();
        let mine = EphemeralPrivateKey::generate(&X25519, &rng)
            .map_err(|_| RespondError::Internal("ephemeral key generation failed"))?;
        let my_public = mine
            .compute_public_key()
            .map_err(|_| RespondError::Internal("ephemeral public key failed"))?;
        let peer = UnparsedPublicKey::new(&X25519, &self.bytes[5..]);
        let k = agree_ephemeral(mine, peer, RespondError::BadPublicKey, |shared| {
            derive_key(&self.bytes, shared).map_err(|_| RespondError::Internal("HKDF failed"))
        })?;
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &k[..])
                .map_err(|_| RespondError::Internal("AES key setup failed"))?,
        );
        let mut out = [0u8; RESPONSE_LEN];
        out[..32].copy_from_slice(my_public.as_ref());
        let mut buf = Zeroizing::new(escrow.to_vec());
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key([0u8; NONCE_LEN]),
            Aad::empty(),
            &mut *buf,
        )
        .map_err(|_| RespondError::Internal("AES-GCM seal failed"))?;
        if buf.len() != RESPONSE_LEN - 32 {
            return Err(RespondError::Internal("unexpected ciphertext length"));
        }
        out[32..].copy_from_slice(&buf);
        Ok(out)
    }
}

/// `k` = HKDF-SHA256(salt = challenge bytes, ikm = shared secret,
/// info = [`HKDF_INFO`]), 32 bytes.
///
/// # Errors
/// When HKDF fails (it does not for these lengths).
pub fn derive_key(
    challenge: &[u8],
    shared: &[u8],
) -> Result<Zeroizing<[u8; 32]>, aws_lc_rs::error::Unspecified> {
    let prk = Salt::new(HKDF_SHA256, challenge).extract(shared);
    let info = [HKDF_INFO];
    let okm = prk.expand(&info, HKDF_SHA256)?;
    let mut k = Zeroizing::new([0u8; 32]);
    okm.fill(&mut k[..])?;
    Ok(k)
}

/// Why no response could be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespondError {
    /// The challenge's public key is unusable (e.g. a low-order point).
    BadPublicKey,
    /// Our fault; the text is for the log.
    Internal(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge_for(minutes: u32) -> (EphemeralPrivateKey, [u8; CHALLENGE_LEN]) {
        let rng = SystemRandom::new();
        let sk = EphemeralPrivateKey::generate(&X25519, &rng).unwrap();
        let pk = sk.compute_public_key().unwrap();
        let mut c = [0u8; CHALLENGE_LEN];
        c[0] = VERSION;
        c[1..5].copy_from_slice(&minutes.to_be_bytes());
        c[5..].copy_from_slice(pk.as_ref());
        (sk, c)
    }

    fn open(sk: EphemeralPrivateKey, challenge: &[u8], resp: &[u8]) -> Vec<u8> {
        let peer = UnparsedPublicKey::new(&X25519, &resp[..32]);
        let k =
            agree_ephemeral(sk, peer, (), |s| derive_key(challenge, s).map_err(|_| ())).unwrap();
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &k[..]).unwrap());
        let mut buf = resp[32..].to_vec();
        let n = key
            .open_in_place(
                Nonce::assume_unique_for_key([0u8; 12]),
                Aad::empty(),
                &mut buf,
            )
            .unwrap()
            .len();
        buf.truncate(n);
        buf
    }

    #[test]
    fn text_roundtrip_and_leniency() {
        let bytes: Vec<u8> = (0u8..37).collect();
        let t = encode_text(&bytes);
        assert_eq!(t.len(), 60 + 7);
        assert!(t.split(' ').all(|g| g.len() <= 8));
        assert_eq!(t.split(' ').count(), 8);
        assert_eq!(decode_text(&t).unwrap(), bytes);
        let messy = format!("  {}\n", t.to_lowercase().replace(' ', "-\t"));
        assert_eq!(decode_text(&messy).unwrap(), bytes);
        assert_eq!(encode_text(&[0u8; 80]).split(' ').count(), 16);
        assert!(decode_text("").is_err());
        assert!(decode_text("ABC1").is_err());
        assert!(decode_text("AAAAAAA=").is_err());
        assert_eq!(encode_text(b"foobar"), "MZXW6YTB OI");
    }

    #[test]
    fn parse_and_freshness() {
        let now = 1_700_000_000i64;
        let m = u32::try_from(now / 60).unwrap();
        let (_, c) = challenge_for(m);
        let ch = Challenge::parse(&encode_text(&c)).unwrap();
        assert_eq!(ch.minutes(), m);
        assert!(ch.check_fresh(now).is_ok());
        let (_, c) = challenge_for(m - 15);
        assert!(
            Challenge::parse(&encode_text(&c))
                .unwrap()
                .check_fresh(now)
                .is_ok()
        );
        let (_, c) = challenge_for(m - 16);
        let e = Challenge::parse(&encode_text(&c))
            .unwrap()
            .check_fresh(now)
            .unwrap_err();
        assert!(e.contains("expired"), "{e}");
        let (_, c) = challenge_for(m + 1);
        assert!(
            Challenge::parse(&encode_text(&c))
                .unwrap()
                .check_fresh(now)
                .is_ok()
        );
        let (_, c) = challenge_for(m + 2);
        let e = Challenge::parse(&encode_text(&c))
            .unwrap()
            .check_fresh(now)
            .unwrap_err();
        assert!(e.contains("expired"), "{e}");

        let mut v2 = c;
        v2[0] = 2;
        assert!(Challenge::parse(&encode_text(&v2)).is_err());
        assert!(Challenge::parse(&encode_text(&c[..36])).is_err());
        let mut long = c.to_vec();
        long.push(0);
        assert!(Challenge::parse(&encode_text(&long)).is_err());
        assert!(Challenge::parse("not base32!").is_err());
    }

    #[test]
    fn response_opens_to_the_escrow_key() {
        let (sk, c) = challenge_for(28_000_000);
        let ch = Challenge::parse(&encode_text(&c)).unwrap();
        let escrow = [0x5au8; 32];
        let r = ch.respond(&escrow).unwrap();
        let text = encode_text(&r);
        assert_eq!(text.len(), 128 + 15);
        let back = decode_text(&text).unwrap();
        assert_eq!(back.len(), RESPONSE_LEN);
        assert_eq!(open(sk, &c, &back), escrow);
        // Each response uses a fresh server key.
        assert_ne!(ch.respond(&escrow).unwrap()[..32], r[..32]);
        assert!(ch.respond(&[0u8; 31]).is_err());
    }

    #[test]
    fn low_order_public_key_is_refused() {
        let mut c = [0u8; CHALLENGE_LEN];
        c[0] = VERSION;
        let ch = Challenge::parse(&encode_text(&c)).unwrap();
        assert_eq!(ch.respond(&[1u8; 32]), Err(RespondError::BadPublicKey));
    }
}
