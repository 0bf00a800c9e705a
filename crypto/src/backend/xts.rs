//! AES-256-XTS data units through aws-lc's EVP interface.
//!
//! An `EVP_CIPHER_CTX` holds the expanded keys and is mutated by every
//! operation, so each thread needs its own. [`XtsKey`] keeps a small pool
//! of contexts per direction behind a mutex that is held only to pop or push
//! a context, never across the cipher call.
#![allow(unsafe_code)]

use std::os::raw::c_int;
use std::ptr::{self, NonNull};
use std::sync::Mutex;

use aws_lc_sys::{
    EVP_CIPHER_CTX, EVP_CIPHER_CTX_free, EVP_CIPHER_CTX_new, EVP_CipherInit_ex, EVP_CipherUpdate,
    EVP_aes_256_xts,
};

use crate::error::ContentError;
use crate::keys::DataKey;

/// Largest data unit accepted (IEEE 1619 allows 2^20 blocks; we use 4 KiB).
pub(crate) const MAX_UNIT: usize = 1 << 16;

/// One aws-lc cipher context, owned by one thread at a time.
struct Ctx(NonNull<EVP_CIPHER_CTX>);

// SAFETY: an EVP_CIPHER_CTX has no thread affinity; `Ctx` is only ever used
// through `&mut` (popped from the pool), so no two threads touch it at once.
unsafe impl Send for Ctx {}

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: the pointer came from EVP_CIPHER_CTX_new and is freed once;
        // aws-lc cleanses the expanded keys when it frees cipher data.
        unsafe { EVP_CIPHER_CTX_free(self.0.as_ptr()) }
    }
}

impl Ctx {
    fn new(key: &DataKey, encrypt: bool) -> Result<Ctx, ContentError> {
        // SAFETY: EVP_CIPHER_CTX_new has no preconditions; null means OOM.
        let raw = unsafe { EVP_CIPHER_CTX_new() };
        let ctx = Ctx(NonNull::new(raw).ok_or(ContentError::Backend("out of memory"))?);
        // SAFETY: ctx is a fresh context; the cipher is a static table; the
        // key pointer covers 64 readable bytes, the length XTS-256 reads; a
        // null IV is allowed at key setup.
        let rc = unsafe {
            EVP_CipherInit_ex(
                ctx.0.as_ptr(),
                EVP_aes_256_xts(),
                ptr::null_mut(),
                key.expose().as_ptr(),
                ptr::null(),
                c_int::from(encrypt),
            )
        };
        if rc != 1 {
            // aws-lc refuses a data key whose two halves are equal.
            return Err(ContentError::Backend(
                "XTS key setup refused (equal key halves)",
            ));
        }
        Ok(ctx)
    }

    /// Encrypt or decrypt (the direction fixed at creation) one data unit.
    fn unit(&mut self, tweak: &[u8; 16], input: &[u8], out: &mut [u8]) -> Result<(), ContentError> {
        if input.len() != out.len() || input.len() < 16 || input.len() > MAX_UNIT {
            return Err(ContentError::BufferSize(
                "XTS data unit must be 16..=65536 bytes",
            ));
        }
        // SAFETY: the context is initialised with a key; a null cipher and
        // key with a 16-byte IV only resets the tweak; enc = -1 keeps the
        // direction.
        let rc = unsafe {
            EVP_CipherInit_ex(
                self.0.as_ptr(),
                ptr::null(),
                ptr::null_mut(),
                ptr::null(),
                tweak.as_ptr(),
                -1,
            )
        };
        if rc != 1 {
            return Err(ContentError::Backend("XTS tweak setup failed"));
        }
        let mut out_len: c_int = 0;
        // SAFETY: `input` and `out` are distinct slices of equal length
        // (checked above, at most 64 KiB so it fits a c_int); XTS has a block
        // size of 1, so Update writes exactly `input.len()` bytes to `out`.
        let rc = unsafe {
            EVP_CipherUpdate(
                self.0.as_ptr(),
                out.as_mut_ptr(),
                &mut out_len,
                input.as_ptr(),
                input.len() as c_int,
            )
        };
        if rc != 1 || out_len as usize != input.len() {
            return Err(ContentError::Backend("XTS operation failed"));
        }
        Ok(())
    }
}

/// An XTS key (the file's 64-byte data key) with pooled contexts.
pub(crate) struct XtsKey {
    key: DataKey,
    enc: Mutex<Vec<Ctx>>,
    dec: Mutex<Vec<Ctx>>,
}

impl XtsKey {
    /// Prepare `key`. Fails if aws-lc refuses it (equal halves).
    pub(crate) fn new(key: &DataKey) -> Result<XtsKey, ContentError> {
        let first = Ctx::new(key, true)?;
        Ok(XtsKey {
            key: key.clone(),
            enc: Mutex::new(vec![first]),
            dec: Mutex::new(Vec::new()),
        })
    }

    fn take(&self, encrypt: bool) -> Result<Ctx, ContentError> {
        let pool = if encrypt { &self.enc } else { &self.dec };
        let popped = pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match popped {
            Some(c) => Ok(c),
            None => Ctx::new(&self.key, encrypt),
        }
    }

    fn give(&self, encrypt: bool, ctx: Ctx) {
        let pool = if encrypt { &self.enc } else { &self.dec };
        let mut pool = pool.lock().unwrap_or_else(|e| e.into_inner());
        // Keep as many contexts as threads have used at once, within reason.
        if pool.len() < 64 {
            pool.push(ctx);
        }
    }

    /// Transform consecutive data units: `input` is split into chunks of
    /// `unit_len` (the last may be shorter, but at least 16 bytes), chunk
    /// `i` using `tweak(i)`.
    pub(crate) fn units(
        &self,
        encrypt: bool,
        unit_len: usize,
        input: &[u8],
        out: &mut [u8],
        mut tweak: impl FnMut(usize) -> [u8; 16],
    ) -> Result<(), ContentError> {
        if input.len() != out.len() {
            return Err(ContentError::BufferSize(
                "XTS input and output differ in length",
            ));
        }
        let mut ctx = self.take(encrypt)?;
        let mut result = Ok(());
        for (i, (inp, o)) in input
            .chunks(unit_len)
            .zip(out.chunks_mut(unit_len))
            .enumerate()
        {
            result = ctx.unit(&tweak(i), inp, o);
            if result.is_err() {
                break;
            }
        }
        self.give(encrypt, ctx);
        result
    }
}
