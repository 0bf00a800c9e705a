//! The ioctl channel's request structs (`kmod-shim/src/ctl/proto.rs`),
//! which secfs decodes from whatever a caller hands the control node:
//! decoding is total (a request or a typed error, never a panic), and a
//! decoded request encodes back to exactly the bytes it came from (the
//! format is canonical). Replies (status, key at) decode without panic.
//!
//! Input: byte 0 picks the op; bit 7 of it says "raw": the rest is the
//! whole struct. Otherwise the rest is laid over a valid header for that
//! op (so the fuzzer spends its time in the payload checks).
#![no_main]

use guardfs_shim::ctl::proto::{
    HEADER_LEN, MAGIC, Op, Request, StatusEntry, VERSION, decode_key_at,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let op = Op::ALL[usize::from(sel & 0x7f) % Op::ALL.len()];
    let buf: Vec<u8> = if sel & 0x80 != 0 {
        rest.to_vec()
    } else {
        let mut b = vec![0u8; op.size()];
        b[..4].copy_from_slice(&MAGIC);
        b[4..6].copy_from_slice(&VERSION.to_le_bytes());
        b[6..8].copy_from_slice(&(op as u16).to_le_bytes());
        b[8..16].copy_from_slice(&1u64.to_le_bytes());
        b[16..20].copy_from_slice(&((op.size() - HEADER_LEN) as u32).to_le_bytes());
        let n = rest.len().min(op.size() - HEADER_LEN);
        b[HEADER_LEN..HEADER_LEN + n].copy_from_slice(&rest[..n]);
        b
    };
    if let Ok((req, seq)) = Request::decode(op, &buf) {
        assert_eq!(req.op(), op);
        assert_ne!(seq, 0);
        let again = req.encode(seq).expect("a decoded request encodes");
        assert_eq!(again, buf, "{req:?} does not encode back to its bytes");
        let (req2, seq2) = Request::decode(op, &again).expect("re-encoded request decodes");
        assert!(req2 == req && seq2 == seq);
    }
    if let Ok(st) = StatusEntry::decode(&buf) {
        let _ = st.encode(1);
    }
    let _ = decode_key_at(&buf);
});
