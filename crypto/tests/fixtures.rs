//! Sample lower files of every released format version must keep opening.
//!
//! `tests/fixtures/v1/` holds files written by format version 1: one per
//! mode and size, all under the policy key `fixture-key` version 1 whose
//! bytes are 0x42 repeated. Their plaintext byte `i` is `(i * 131 + 7) % 256`.
//! Generate them (only when adding a new format version, into a new
//! directory) with `GUARDFS_WRITE_FIXTURES=1 cargo test -p guardfs-crypto
//! --test fixtures`; the test refuses to write into a version directory that
//! already exists.

use std::path::PathBuf;

use guardfs_crypto::{ContentCipher, Header, HeaderError, Mode, PlainOff, PolicyKey, UnitNo};

const SIZES: [u64; 8] = [0, 1, 15, 16, 4095, 4096, 5000, 20000];
const MODES: [Mode; 3] = [Mode::Xts, Mode::CbcCs1, Mode::Gcm];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn key() -> PolicyKey {
    PolicyKey::from_bytes([0x42; 32])
}

fn plaintext(size: u64) -> Vec<u8> {
    (0..size).map(|i| ((i * 131 + 7) % 256) as u8).collect()
}

fn encrypt_file(mode: Mode, size: u64) -> Vec<u8> {
    let (h, dk) = Header::create(mode, "fixture-key", 1, &key()).unwrap();
    let c = ContentCipher::for_header(&h, &dk).unwrap();
    let p = plaintext(size);
    let mut out = h.to_bytes().to_vec();
    let mut body = vec![0u8; c.layout().run_lower_len(p.len())];
    c.encrypt(UnitNo(0), &p, &mut body).unwrap();
    out.extend_from_slice(&body);
    out
}

fn decrypt_file(bytes: &[u8]) -> Result<(Mode, Vec<u8>), HeaderError> {
    let (h, dk) = Header::open(&bytes[..4096], &key())?;
    let c = ContentCipher::for_header(&h, &dk).unwrap();
    let size = c
        .layout()
        .plain_size(guardfs_crypto::LowerOff(bytes.len() as u64));
    let mut p = vec![0u8; size.0 as usize];
    c.decrypt(UnitNo(0), &bytes[4096..], &mut p).unwrap();
    Ok((h.mode, p))
}

#[test]
fn v1_fixtures_open() {
    if std::env::var_os("GUARDFS_WRITE_FIXTURES").is_some() {
        // Released fixtures are never rewritten: they prove that files
        // written by that version keep opening. `create_dir` (not
        // `create_dir_all`) fails if the version directory exists.
        if let Err(e) = std::fs::create_dir(dir()) {
            panic!(
                "refusing to write fixtures into {}: {e}; fixtures of a released format \
                 version are never overwritten (a new version goes into a new directory)",
                dir().display()
            );
        }
        for mode in MODES {
            for size in SIZES {
                let path = dir().join(format!("{mode}-{size}.lower"));
                std::fs::write(path, encrypt_file(mode, size)).unwrap();
            }
        }
    }
    let mut n = 0;
    for mode in MODES {
        for size in SIZES {
            let path = dir().join(format!("{mode}-{size}.lower"));
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let layout = guardfs_crypto::Layout::of(mode);
            assert_eq!(
                bytes.len() as u64,
                layout.lower_size(PlainOff(size)).0,
                "{}",
                path.display()
            );
            let (m, p) = decrypt_file(&bytes).unwrap();
            assert_eq!(m, mode);
            assert_eq!(p, plaintext(size), "{}", path.display());
            n += 1;
        }
    }
    assert_eq!(n, 24);
}

#[test]
fn damaged_fixtures_are_refused() {
    let bytes = std::fs::read(dir().join("gcm-5000.lower")).unwrap();
    // Header damage: typed error, not garbage.
    let mut b = bytes.clone();
    b[140] ^= 1;
    assert_eq!(
        decrypt_file(&b).unwrap_err(),
        HeaderError::AuthenticationFailed
    );
    // Future format version: refused cleanly.
    let mut b = bytes.clone();
    b[8] = 2;
    assert_eq!(
        decrypt_file(&b).unwrap_err(),
        HeaderError::UnsupportedVersion(2)
    );
    // A plaintext file is not a header.
    assert_eq!(
        decrypt_file(&plaintext(5000)).unwrap_err(),
        HeaderError::NotAHeader
    );
}
