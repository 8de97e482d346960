//! Owned buffers: the kernel reads from and writes into memory the op owns.
//!
//! An io_uring op hands the kernel a raw pointer and returns at once; the
//! kernel may use that pointer until the op completes, even after the future
//! that submitted it was dropped. So ops take their buffer *by value* and
//! give it back with the result ([`BufResult`]); if the future is dropped
//! early, the runtime keeps the buffer until the kernel is done with it.
//!
//! A read fills a buffer from index 0 up to its capacity and sets its length
//! to the bytes read (`Vec::with_capacity(n)` reads up to `n` bytes); a write
//! sends the buffer's initialized bytes. This is monoio's and tokio-uring's
//! convention.
//!
//! ```
//! use ringshard::buf::{IoBuf, IoBufMut};
//!
//! let mut buf = Vec::with_capacity(16);
//! assert_eq!(buf.bytes_total(), 16);
//! buf.extend_from_slice(b"ping");
//! assert_eq!(buf.bytes_init(), 4);
//! ```

use std::io;

/// The result of an owned-buffer op: the outcome and the buffer, returned
/// whether the op succeeded or not.
pub type BufResult<T, B> = (io::Result<T>, B);

/// A buffer the kernel may read from (the source of a write).
///
/// # Safety
///
/// An implementer guarantees that:
///
/// * [`read_ptr`](IoBuf::read_ptr) points to at least
///   [`bytes_init`](IoBuf::bytes_init) initialized bytes;
/// * that memory does not move when the value is moved (it lives on the heap
///   or in static memory), and stays valid until the value is dropped;
/// * `read_ptr` and `bytes_init` return the same values on every call as long
///   as the value is not mutated through its own API;
/// * nothing else writes to that memory while the value is owned by an op.
pub unsafe trait IoBuf: Unpin + 'static {
    /// Start of the initialized bytes.
    fn read_ptr(&self) -> *const u8;

    /// Number of initialized bytes starting at [`read_ptr`](IoBuf::read_ptr).
    fn bytes_init(&self) -> usize;
}

/// A buffer the kernel may write into (the target of a read).
///
/// # Safety
///
/// An implementer guarantees that:
///
/// * [`write_ptr`](IoBufMut::write_ptr) points to at least
///   [`bytes_total`](IoBufMut::bytes_total) writable bytes;
/// * that memory does not move when the value is moved (it lives on the
///   heap), and stays valid until the value is dropped;
/// * `write_ptr` and `bytes_total` return the same values on every call as
///   long as the value is not mutated through its own API;
/// * nothing else reads or writes that memory while the value is owned by
///   an op;
/// * after [`set_init(n)`](IoBufMut::set_init), the first `n` bytes are the
///   buffer's initialized contents (its length, for growable buffers).
pub unsafe trait IoBufMut: Unpin + 'static {
    /// Start of the writable memory.
    fn write_ptr(&mut self) -> *mut u8;

    /// Number of writable bytes starting at [`write_ptr`](IoBufMut::write_ptr).
    fn bytes_total(&mut self) -> usize;

    /// Marks the first `n` bytes as initialized.
    ///
    /// # Safety
    ///
    /// The first `n` bytes must have been initialized, and `n` must not
    /// exceed [`bytes_total`](IoBufMut::bytes_total).
    unsafe fn set_init(&mut self, n: usize);
}

// SAFETY: a Vec's heap allocation does not move with the Vec; `len` bytes
// are initialized.
unsafe impl IoBuf for Vec<u8> {
    fn read_ptr(&self) -> *const u8 {
        self.as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.len()
    }
}

// SAFETY: a Vec's heap allocation holds `capacity` bytes and does not move
// with the Vec.
unsafe impl IoBufMut for Vec<u8> {
    fn write_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }

    fn bytes_total(&mut self) -> usize {
        self.capacity()
    }

    unsafe fn set_init(&mut self, n: usize) {
        // SAFETY: the caller initialized `n <= capacity` bytes.
        unsafe { self.set_len(n) }
    }
}

// SAFETY: a boxed slice is heap memory, fully initialized.
unsafe impl IoBuf for Box<[u8]> {
    fn read_ptr(&self) -> *const u8 {
        self.as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.len()
    }
}

// SAFETY: a boxed slice is heap memory of fixed length, always initialized;
// `set_init` has nothing to record.
unsafe impl IoBufMut for Box<[u8]> {
    fn write_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }

    fn bytes_total(&mut self) -> usize {
        self.len()
    }

    unsafe fn set_init(&mut self, _n: usize) {}
}

// SAFETY: static memory never moves and is never freed.
unsafe impl IoBuf for &'static [u8] {
    fn read_ptr(&self) -> *const u8 {
        self.as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.len()
    }
}

// SAFETY: static memory never moves and is never freed.
unsafe impl IoBuf for &'static str {
    fn read_ptr(&self) -> *const u8 {
        self.as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.len()
    }
}

// SAFETY: `Bytes` points to heap or static memory that is immutable and
// kept alive by the value's reference count.
unsafe impl IoBuf for bytes::Bytes {
    fn read_ptr(&self) -> *const u8 {
        self.as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.len()
    }
}

// SAFETY: `BytesMut` owns its heap memory uniquely; `len` bytes are initialized.
unsafe impl IoBuf for bytes::BytesMut {
    fn read_ptr(&self) -> *const u8 {
        self.as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.len()
    }
}

// SAFETY: `BytesMut` owns `capacity` bytes of heap memory uniquely, and does
// not reallocate unless asked to grow through its own API.
unsafe impl IoBufMut for bytes::BytesMut {
    fn write_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }

    fn bytes_total(&mut self) -> usize {
        self.capacity()
    }

    unsafe fn set_init(&mut self, n: usize) {
        // SAFETY: the caller initialized `n <= capacity` bytes.
        unsafe { self.set_len(n) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vec_reads_fill_from_zero_to_capacity() {
        let mut buf = Vec::with_capacity(8);
        buf.extend_from_slice(b"old");
        assert_eq!(buf.bytes_total(), 8);
        let ptr = buf.write_ptr();
        // SAFETY: 5 bytes within the capacity of 8.
        unsafe {
            ptr.copy_from_nonoverlapping(b"hello".as_ptr(), 5);
            buf.set_init(5);
        }
        assert_eq!(buf, b"hello");
    }

    #[test]
    fn bytes_mut_and_boxed_slices() {
        let mut buf = bytes::BytesMut::with_capacity(4);
        assert!(buf.bytes_total() >= 4);
        // SAFETY: 2 bytes within the capacity.
        unsafe {
            buf.write_ptr().write_bytes(7, 2);
            buf.set_init(2);
        }
        assert_eq!(&buf[..], &[7, 7]);
        let mut boxed: Box<[u8]> = vec![0; 3].into_boxed_slice();
        assert_eq!(boxed.bytes_total(), 3);
        assert_eq!(boxed.bytes_init(), 3);
        let frozen = buf.freeze();
        assert_eq!(frozen.bytes_init(), 2);
        let text: &'static [u8] = b"static";
        assert_eq!(text.bytes_init(), 6);
    }
}
