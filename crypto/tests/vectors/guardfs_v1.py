#!/usr/bin/env python3
"""Recompute guardfs_v1.txt, the format's own known answers, from FORMAT.md
with Python `cryptography` (independent of aws-lc-rs and of the crate):

    python3 crypto/tests/vectors/guardfs_v1.py > crypto/tests/vectors/guardfs_v1.txt
"""
import struct

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

data_key = bytes(range(64))
file_id = bytes(range(0x10, 0x20))

# gcm unit: nonce || AES-256-GCM(K1, nonce, AD = file id || unit LE64, pt) || tag
unit = 0x010203040506  # within the largest file (2^62 bytes)
nonce = bytes(range(0x40, 0x4C))
pt = bytes((i * 7 + 3) % 256 for i in range(40))
ad = file_id + struct.pack("<Q", unit)
lower = nonce + AESGCM(data_key[:32]).encrypt(nonce, pt, ad)

# header, format version 1, mode gcm
policy = bytes(range(0xA0, 0xC0))
name, version, base_iv = b"kat-key", 7, bytes(range(0x20, 0x30))
wrap_nonce = bytes(range(0x30, 0x3C))
h = bytearray(4096)
h[0:8] = b"GuardFS\0"
h[8:10] = struct.pack("<H", 1)
h[10] = 3
h[11] = len(name)
h[12:16] = struct.pack("<I", version)
h[16 : 16 + len(name)] = name
h[80:96] = file_id
h[96:112] = base_iv
m = hmac.HMAC(policy, hashes.SHA256())
m.update(b"guardfs kcv v1" + file_id)
h[112:120] = m.finalize()[:8]
wrap_key = HKDF(hashes.SHA256(), 32, salt=file_id, info=b"guardfs v1 header wrap").derive(policy)
sealed = AESGCM(wrap_key).encrypt(wrap_nonce, data_key, bytes(h))  # AD: 120..212 still zero
h[120:132] = wrap_nonce
h[132:212] = sealed

print("# GuardFS format v1 known answers, computed by guardfs_v1.py (Python cryptography).")
print()
print("# source: gcm unit seal, FORMAT.md 'gcm' (unit number as 8 bytes LE in `unit`)")
print(f"data_key = {data_key.hex()}")
print(f"file_id = {file_id.hex()}")
print(f"unit = {struct.pack('<Q', unit).hex()}")
print(f"nonce = {nonce.hex()}")
print(f"pt = {pt.hex()}")
print(f"lower = {lower.hex()}")
print()
print("# source: header wrap, FORMAT.md 'Wrapping the data key' (bytes 212.. are zero)")
print(f"policy_key = {policy.hex()}")
print(f"data_key = {data_key.hex()}")
print(f"header = {bytes(h[:212]).hex()}")
