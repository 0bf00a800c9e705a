//! Throughput of each content mode for 4 KiB and 1 MiB buffers on one core,
//! beside the baselines the targets are stated against, measured in the
//! same run: a serial CBC encrypt (RustCrypto `cbc`) and aws-lc-rs sealing
//! one 1 MiB buffer with AES-256-GCM. `bench/crypto-report.sh` adds
//! `openssl speed -evp aes-256-xts` and prints the ratios.

use std::hint::black_box;

use aes::cipher::{Array, BlockModeEncrypt, KeyIvInit};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use guardfs_crypto::{ContentCipher, DataKey, FileId, Mode, UnitNo};

const SIZES: [(usize, &str); 2] = [(4096, "4KiB"), (1 << 20, "1MiB")];

fn cipher(mode: Mode) -> ContentCipher {
    let key = DataKey::from_bytes(std::array::from_fn(|i| (i * 7 + 3) as u8));
    ContentCipher::new(mode, &key, FileId([1; 16]), [2; 16]).expect("key")
}

fn modes(c: &mut Criterion) {
    for (dir, encrypt) in [("encrypt", true), ("decrypt", false)] {
        let mut g = c.benchmark_group(format!("mode-{dir}"));
        for mode in Mode::ALL {
            let ci = cipher(mode);
            for (size, label) in SIZES {
                // A whole number of plaintext units, so gcm runs have no tail.
                let plain_len = size / 4096 * ci.layout().unit_plain_len();
                let plain = vec![0x5au8; plain_len];
                let mut lower = vec![0u8; ci.layout().run_lower_len(plain_len)];
                ci.encrypt(UnitNo(0), &plain, &mut lower).expect("encrypt");
                let mut out = vec![0u8; plain_len];
                g.throughput(Throughput::Bytes(plain_len as u64));
                g.bench_function(BenchmarkId::new(mode.name(), label), |b| {
                    if encrypt {
                        b.iter(|| {
                            ci.encrypt(UnitNo(7), black_box(&plain), &mut lower)
                                .expect("encrypt")
                        })
                    } else {
                        b.iter(|| {
                            ci.decrypt(UnitNo(0), black_box(&lower), &mut out)
                                .expect("decrypt")
                        })
                    }
                });
            }
        }
        g.finish();
    }
}

fn baselines(c: &mut Criterion) {
    let mut g = c.benchmark_group("baseline");
    let key = [7u8; 32];
    for (size, label) in SIZES {
        let mut buf = vec![0x5au8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::new("cbc-serial-encrypt", label), |b| {
            b.iter(|| {
                let mut enc =
                    cbc::Encryptor::<aes::Aes256>::new(&Array::from(key), &Array::from([0u8; 16]));
                let (blocks, _) =
                    Array::<u8, aes::cipher::consts::U16>::slice_as_chunks_mut(&mut buf);
                enc.encrypt_blocks(blocks);
            })
        });
    }
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).expect("key"));
    let mut buf = vec![0x5au8; 1 << 20];
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function(BenchmarkId::new("aws-lc-gcm-seal", "1MiB"), |b| {
        b.iter(|| {
            k.seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::empty(),
                &mut buf,
            )
            .expect("seal")
        })
    });
    g.finish();
}

criterion_group!(benches, modes, baselines);
criterion_main!(benches);
