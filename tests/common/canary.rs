//! Buffers that show a kernel write after their release (the cancel
//! tests of sockets and files).

use std::sync::{Arc, Mutex};

use ringshard::buf::IoBufMut;

pub const CANARY: u8 = 0xAA;

/// Buffers that are never really freed: a released buffer is refilled with
/// [`CANARY`] and kept, so a kernel write after the release shows up as a
/// changed byte (ASan and valgrind cannot see kernel writes).
#[derive(Default)]
pub struct Quarantine {
    buffers: Mutex<Vec<(usize, usize)>>,
    releases: Mutex<Vec<usize>>,
}

impl Quarantine {
    pub fn buffer(self: &Arc<Self>, size: usize) -> CanaryBuf {
        let memory = Box::leak(vec![CANARY; size].into_boxed_slice());
        let mut buffers = self.buffers.lock().unwrap();
        buffers.push((memory.as_mut_ptr() as usize, size));
        self.releases.lock().unwrap().push(0);
        CanaryBuf {
            id: buffers.len() - 1,
            ptr: memory.as_mut_ptr(),
            size,
            len: 0,
            quarantine: self.clone(),
        }
    }

    /// (buffers released exactly once, buffers written after release).
    pub fn check(&self) -> (usize, Vec<usize>) {
        let releases = self.releases.lock().unwrap();
        let once = releases.iter().filter(|&&n| n == 1).count();
        let corrupted = self
            .buffers
            .lock()
            .unwrap()
            .iter()
            .enumerate()
            .filter(|&(id, &(ptr, size))| {
                // SAFETY: quarantined memory is never freed.
                let bytes = unsafe { std::slice::from_raw_parts(ptr as *const u8, size) };
                releases[id] > 0 && bytes.iter().any(|&b| b != CANARY)
            })
            .map(|(id, _)| id)
            .collect();
        (once, corrupted)
    }
}

impl Drop for Quarantine {
    /// Runs after the runtime (and every op) is gone: nothing can write now.
    fn drop(&mut self) {
        for &(ptr, size) in self.buffers.get_mut().unwrap().iter() {
            let slice = std::ptr::slice_from_raw_parts_mut(ptr as *mut u8, size);
            // SAFETY: leaked from a Box<[u8]> of this size in `buffer`.
            drop(unsafe { Box::from_raw(slice) });
        }
    }
}

pub struct CanaryBuf {
    id: usize,
    ptr: *mut u8,
    size: usize,
    len: usize,
    quarantine: Arc<Quarantine>,
}

// SAFETY: the memory is leaked (never freed, so no thread can outlive it)
// and only this buffer writes it; the quarantine is shared through a Mutex.
unsafe impl Send for CanaryBuf {}

// SAFETY: the memory is leaked (never moves, never freed), `size` bytes.
unsafe impl IoBufMut for CanaryBuf {
    fn write_ptr(&mut self) -> *mut u8 {
        self.ptr
    }

    fn bytes_total(&mut self) -> usize {
        self.size
    }

    unsafe fn set_init(&mut self, n: usize) {
        self.len = n;
    }
}

impl Drop for CanaryBuf {
    fn drop(&mut self) {
        // SAFETY: quarantined memory is never freed; `size` bytes.
        unsafe { self.ptr.write_bytes(CANARY, self.size) };
        self.quarantine.releases.lock().unwrap()[self.id] += 1;
    }
}
