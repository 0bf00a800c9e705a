//! Offline unlock (CTE's challenge-response): with the host key protected
//! by a password nobody at hand knows, and the key manager unreachable
//! from the host, an administrator can still unlock the host's persistent
//! keys within 15 minutes.
//!
//! * Escrow: while registered and reachable, vmd wraps the host key under
//!   a random escrow key E (AES-256-GCM, kept in `.sec/escrow.json`), sends
//!   E to the key manager over mTLS, and forgets E.
//! * `vmsec challenge` prints 37 bytes: version 1, the time in minutes
//!   (u32, big-endian), an ephemeral X25519 public key — base32, groups of 8.
//! * `keymgr challenge respond CLIENT CHALLENGE` answers 80 bytes: the
//!   server's ephemeral X25519 public key, and E sealed with AES-256-GCM
//!   (zero nonce; the key is used once) under
//!   HKDF-SHA256(salt = challenge, ikm = shared secret,
//!   info = "guardfs offline unlock v1").
//! * Entering the response gives vmd E, hence the host key.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, X25519};
use aws_lc_rs::hkdf;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::state::{HostKey, read_file, write_atomic};

const INFO: &[u8] = b"guardfs offline unlock v1";
pub const ESCROW_FILE: &str = "escrow.json";
/// How long a challenge may be answered.
pub const VALIDITY: Duration = Duration::from_secs(15 * 60);

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Escrow {
    version: u32,
    /// The host key's check value, to know whether the escrow is current.
    kcv: String,
    nonce: String,
    sealed: String,
}

fn seal(key: &[u8; 32], nonce: [u8; 12], plain: &[u8]) -> Result<Vec<u8>, String> {
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| "AES key")?);
    let mut buf = plain.to_vec();
    k.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
        .map_err(|_| "sealing failed")?;
    Ok(buf)
}

fn open(key: &[u8; 32], nonce: [u8; 12], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| "AES key")?);
    let mut buf = Zeroizing::new(sealed.to_vec());
    let n = k
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
        .map_err(|_| "the response does not match this challenge (or was mistyped)")?
        .len();
    buf.truncate(n);
    Ok(buf)
}

/// Whether the escrow in `sec` is for `host`.
pub fn escrow_current(sec: &Path, host: &HostKey) -> bool {
    read_file(&sec.join(ESCROW_FILE))
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice::<Escrow>(&b).ok())
        .is_some_and(|e| e.kcv == host.kcv())
}

/// A new escrow, not stored yet: its key goes to the key manager first.
pub struct NewEscrow {
    /// The escrow key E, hex, to send to the key manager.
    pub key_hex: Zeroizing<String>,
    escrow: Escrow,
    path: std::path::PathBuf,
}

impl NewEscrow {
    /// Keep the wrapped host key (once the key manager holds E).
    pub fn store(self) -> Result<(), String> {
        let b = serde_json::to_vec_pretty(&self.escrow).map_err(|x| x.to_string())?;
        write_atomic(&self.path, &b, 0o600).map_err(|x| x.to_string())
    }
}

/// Make a new escrow of `host` under a fresh random key.
pub fn new_escrow(sec: &Path, host: &HostKey) -> Result<NewEscrow, String> {
    let mut e = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(&mut e[..]).map_err(|_| "random")?;
    let mut nonce = [0u8; 12];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| "random")?;
    let sealed = seal(&e, nonce, host.expose())?;
    let escrow = Escrow {
        version: 1,
        kcv: host.kcv(),
        nonce: hex::encode(nonce),
        sealed: hex::encode(sealed),
    };
    Ok(NewEscrow {
        key_hex: Zeroizing::new(hex::encode(*e)),
        escrow,
        path: sec.join(ESCROW_FILE),
    })
}

/// Base32 (RFC 4648, no padding) in groups of 8.
pub fn to_text(b: &[u8]) -> String {
    let s = data_encoding::BASE32_NOPAD.encode(b);
    s.as_bytes()
        .chunks(8)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parse base32 text, ignoring spaces and dashes, any case.
pub fn from_text(t: &str) -> Result<Vec<u8>, String> {
    let clean: String = t
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    data_encoding::BASE32_NOPAD
        .decode(clean.as_bytes())
        .map_err(|e| format!("not a valid response: {e}"))
}

/// A challenge waiting for its response.
pub struct Pending {
    private: PrivateKey,
    challenge: [u8; 37],
    made: Instant,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").finish_non_exhaustive()
    }
}

/// A new challenge: the pending state and its text.
pub fn challenge() -> Result<(Pending, String), String> {
    let private = PrivateKey::generate(&X25519).map_err(|_| "X25519 key")?;
    let public = private.compute_public_key().map_err(|_| "X25519 key")?;
    let minutes = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() / 60)
        .unwrap_or(0) as u32;
    let mut challenge = [0u8; 37];
    challenge[0] = 1;
    challenge[1..5].copy_from_slice(&minutes.to_be_bytes());
    challenge[5..].copy_from_slice(public.as_ref());
    let text = to_text(&challenge);
    Ok((
        Pending {
            private,
            challenge,
            made: Instant::now(),
        },
        text,
    ))
}

/// Use the response to `pending` to recover the host key from the escrow.
pub fn answer(sec: &Path, pending: &Pending, response: &str) -> Result<HostKey, String> {
    if pending.made.elapsed() > VALIDITY {
        return Err("the challenge is older than 15 minutes: ask for a new one".into());
    }
    let r = from_text(response)?;
    if r.len() != 80 {
        return Err(format!(
            "a response is 80 bytes (128 characters), this one is {} bytes",
            r.len()
        ));
    }
    let peer = UnparsedPublicKey::new(&X25519, &r[..32]);
    let k = agreement::agree(
        &pending.private,
        peer,
        "key agreement failed".to_owned(),
        |shared| {
            let mut k = Zeroizing::new([0u8; 32]);
            hkdf::Salt::new(hkdf::HKDF_SHA256, &pending.challenge)
                .extract(shared)
                .expand(&[INFO], hkdf::HKDF_SHA256)
                .and_then(|okm| okm.fill(&mut k[..]))
                .map_err(|_| "HKDF failed".to_owned())?;
            Ok(k)
        },
    )?;
    let e_vec = open(&k, [0u8; 12], &r[32..])?;
    let e: [u8; 32] = e_vec
        .as_slice()
        .try_into()
        .map_err(|_| "escrow key of the wrong size")?;
    let e = Zeroizing::new(e);
    let bytes = read_file(&sec.join(ESCROW_FILE))
        .map_err(|x| x.to_string())?
        .ok_or("no escrow of the host key on this host")?;
    let escrow: Escrow = serde_json::from_slice(&bytes).map_err(|x| format!("escrow.json: {x}"))?;
    let nonce: [u8; 12] = hex::decode(&escrow.nonce)
        .ok()
        .and_then(|n| n.try_into().ok())
        .ok_or("escrow.json: bad nonce")?;
    let sealed = hex::decode(&escrow.sealed).map_err(|_| "escrow.json: bad hex")?;
    let plain = open(&e, nonce, &sealed)
        .map_err(|_| "the escrow does not open with the key manager's escrow key")?;
    let key: [u8; 32] = plain
        .as_slice()
        .try_into()
        .map_err(|_| "escrow.json: wrong size")?;
    Ok(HostKey::from_bytes(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_with_spaces_and_case() {
        let b: Vec<u8> = (0..80).collect();
        let t = to_text(&b);
        assert!(t.split(' ').all(|g| g.len() <= 8));
        assert_eq!(from_text(&t.to_lowercase().replace(' ', "-")).unwrap(), b);
        assert!(from_text("!!").is_err());
    }
}
