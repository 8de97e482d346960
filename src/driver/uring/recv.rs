//! Buffered stream reads: one multishot recv per socket, into a ring of
//! buffers the shard provides to the kernel.
//!
//! A plain recv is armed and disarmed once per read: the kernel tries it,
//! finds no data, hooks a poll onto the socket, and unhooks it when data
//! comes. A multishot recv stays hooked, and the kernel picks a buffer from
//! the shard's ring for each arrival. A read then copies from the filled
//! buffers into the caller's buffer and hands them back to the ring.
//!
//! Each socket's received chunks wait in its slot of the op slab
//! ([`Multishot`]). A socket holding [`CAP`] buffers has its recv cancelled
//! until its reader catches up, so a peer nobody reads cannot drain the
//! ring. When the ring runs dry the recv ends with `ENOBUFS` and that read
//! falls back to a plain recv into the caller's buffer.
//!
//! # Safety
//!
//! The kernel writes a buffer between picking it from the ring and posting
//! the CQE that names it; after that the buffer is ours until it is put back
//! in the ring. The ring's memory is freed only when no multishot recv is
//! armed (otherwise it is leaked, like every resource the kernel may still
//! write).

use std::alloc::{self, Layout};
use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::task::Waker;

use io_uring::IoUring;

/// Buffers in a shard's ring, and the size of each: measured on the echo
/// benchmark (DESIGN.md: 256 × 4 KiB beat 1024).
pub(crate) const BUFFERS: u16 = 256;
pub(crate) const BUFFER_SIZE: usize = 4096;
/// The buffer group id of the shard's ring.
pub(crate) const GROUP: u16 = 0;
/// The most filled buffers one socket may hold before its recv is paused.
pub(crate) const CAP: usize = 16;

/// One entry of a provided buffer ring, as the kernel lays it out
/// (`struct io_uring_buf`). The last field of entry 0 is the ring's tail,
/// which the kernel reads at any time: entries are written field by field
/// through raw pointers, never through a `&mut` that would cover it.
#[repr(C)]
struct Entry {
    addr: u64,
    len: u32,
    bid: u16,
    /// Reserved, except in entry 0: the tail.
    resv: u16,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 16);
const _: () = assert!(std::mem::size_of::<io_uring::types::BufRingEntry>() == 16);

/// The ring of provided buffers: `BUFFERS` entries the kernel picks from,
/// and the memory they point into. Dropping it leaks the memory: only
/// [`BufRing::unregister`] frees it, once the kernel cannot pick a buffer.
pub(crate) struct BufRing {
    entries: NonNull<Entry>,
    memory: NonNull<u8>,
    /// Our copy of the tail: the next entry to fill.
    tail: u16,
}

fn entries_layout() -> Layout {
    Layout::from_size_align(usize::from(BUFFERS) * std::mem::size_of::<Entry>(), 4096)
        .expect("valid layout")
}

fn memory_layout() -> Layout {
    Layout::from_size_align(usize::from(BUFFERS) * BUFFER_SIZE, 4096).expect("valid layout")
}

impl BufRing {
    /// Allocates the ring, provides every buffer, and registers it with
    /// `ring` as group [`GROUP`]. Fails on kernels without provided buffer
    /// rings (before 5.19).
    pub(crate) fn new(ring: &IoUring) -> io::Result<BufRing> {
        // SAFETY: both layouts have a non-zero size.
        let entries = NonNull::new(unsafe { alloc::alloc_zeroed(entries_layout()) })
            .ok_or(io::ErrorKind::OutOfMemory)?
            .cast::<Entry>();
        // SAFETY: as above.
        let Some(memory) = NonNull::new(unsafe { alloc::alloc(memory_layout()) }) else {
            // SAFETY: allocated above with this layout, never shared.
            unsafe { alloc::dealloc(entries.as_ptr().cast(), entries_layout()) };
            return Err(io::ErrorKind::OutOfMemory.into());
        };
        let mut bufs = BufRing {
            entries,
            memory,
            tail: 0,
        };
        for bid in 0..BUFFERS {
            bufs.provide(bid);
        }
        // SAFETY: the entries are page aligned, `BUFFERS` long, and live
        // until `free` (after `unregister`) or forever.
        let registered = unsafe {
            ring.submitter().register_buf_ring_with_flags(
                entries.as_ptr() as u64,
                BUFFERS,
                GROUP,
                0,
            )
        };
        if let Err(error) = registered {
            // SAFETY: never registered, so the kernel has no pointer into it.
            unsafe { bufs.free() };
            return Err(error);
        }
        Ok(bufs)
    }

    /// Puts buffer `bid` (back) in the ring for the kernel to fill.
    pub(crate) fn provide(&mut self, bid: u16) {
        debug_assert!(bid < BUFFERS);
        let index = usize::from(self.tail & (BUFFERS - 1));
        let addr = self.buffer(bid) as u64;
        // SAFETY: `index < BUFFERS`, inside the allocation; the kernel reads
        // entries only up to the published tail, and this one is past it
        // until the store below. Only these three fields are written: the
        // `resv` of entry 0 is the tail, which the kernel may be reading.
        unsafe {
            let entry = self.entries.as_ptr().add(index);
            std::ptr::addr_of_mut!((*entry).addr).write(addr);
            std::ptr::addr_of_mut!((*entry).len).write(BUFFER_SIZE as u32);
            std::ptr::addr_of_mut!((*entry).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail is the u16 `resv` of entry 0, aligned and only
        // accessed atomically (the kernel reads it with an acquire load);
        // the release store publishes the entries written above.
        unsafe {
            let tail = std::ptr::addr_of!((*self.entries.as_ptr()).resv).cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// The start of buffer `bid`.
    pub(crate) fn buffer(&self, bid: u16) -> *mut u8 {
        // SAFETY: `bid < BUFFERS`, inside the allocation.
        unsafe { self.memory.as_ptr().add(usize::from(bid) * BUFFER_SIZE) }
    }

    /// Unregisters the ring from `ring` and frees its memory.
    ///
    /// # Safety
    ///
    /// No multishot recv may be armed: an armed one could still pick a buffer.
    pub(crate) unsafe fn unregister(self, ring: &IoUring) {
        if ring.submitter().unregister_buf_ring(GROUP).is_ok() {
            // SAFETY: unregistered, and (caller's contract) nothing armed.
            unsafe { self.free() };
        }
        // Still registered: the kernel keeps the pointers; leak.
    }

    /// # Safety
    ///
    /// The kernel must hold no pointer into the ring or its buffers.
    unsafe fn free(self) {
        // SAFETY: allocated in `new` with these layouts.
        unsafe {
            alloc::dealloc(self.entries.as_ptr().cast(), entries_layout());
            alloc::dealloc(self.memory.as_ptr(), memory_layout());
        }
    }
}

/// Received bytes waiting in buffer `bid`, from `start` to `end`.
struct Chunk {
    bid: u16,
    start: u16,
    end: u16,
}

/// Result kept in [`Multishot::end`] when the recv stopped but the stream
/// did not end (paused at the cap, or cut short by the kernel): re-arm.
pub(crate) const STOPPED: i32 = -libc::ECANCELED;

/// One socket's multishot recv: what it received that nobody read yet.
#[derive(Default)]
pub(crate) struct Multishot {
    chunks: VecDeque<Chunk>,
    /// Set by the final CQE (no `F_MORE`): 0 for end of stream, `-errno`,
    /// or [`STOPPED`].
    pub(crate) end: Option<i32>,
    /// A cancel was sent because the socket reached [`CAP`].
    paused: bool,
    pub(crate) waker: Option<Waker>,
    /// The stream was dropped while armed: its fd, closed at the final CQE.
    pub(crate) orphan_fd: Option<OwnedFd>,
}

/// What a buffered read found.
pub(crate) enum Buffered {
    /// Bytes copied, end of stream (`Ok(0)`) or an error.
    Ready(io::Result<usize>),
    /// Nothing yet; the waker is kept.
    Pending,
    /// Read with a plain recv this time.
    Fallback,
}

impl Multishot {
    /// Whether the recv is still armed in the kernel.
    pub(crate) fn armed(&self) -> bool {
        self.end.is_none()
    }

    /// Takes one CQE; the reader's waker goes to `wakers` (run outside the
    /// driver). Returns whether the recv should be paused (cancelled) now
    /// because the socket holds [`CAP`] buffers.
    pub(crate) fn complete(
        &mut self,
        bufs: &mut BufRing,
        result: i32,
        flags: u32,
        wakers: &mut Vec<Waker>,
    ) -> bool {
        let bid = io_uring::cqueue::buffer_select(flags);
        match bid {
            Some(bid) if result > 0 && self.orphan_fd.is_none() => self.chunks.push_back(Chunk {
                bid,
                start: 0,
                end: result as u16,
            }),
            Some(bid) => bufs.provide(bid),
            None => {}
        }
        if !io_uring::cqueue::more(flags) {
            self.end = Some(if result > 0 { STOPPED } else { result });
        }
        wakers.extend(self.waker.take());
        // Deliberately broken build for the cap test: never pause.
        #[cfg(ringshard_broken = "no_recv_cap")]
        return false;
        let pause = self.armed() && !self.paused && self.chunks.len() >= CAP;
        self.paused |= pause;
        pause
    }

    /// Copies what was received into `dst[..len]`, giving emptied buffers
    /// back to the ring. Returns the bytes copied (0 if nothing waits).
    pub(crate) fn copy_to(&mut self, bufs: &mut BufRing, dst: *mut u8, len: usize) -> usize {
        let mut copied = 0;
        while copied < len {
            let Some(chunk) = self.chunks.front_mut() else {
                break;
            };
            let n = usize::from(chunk.end - chunk.start).min(len - copied);
            // SAFETY: the kernel is done with a buffer once its CQE came
            // (see the module's `# Safety`), and `dst` has `len` writable
            // bytes (the caller's contract).
            unsafe {
                let src = bufs.buffer(chunk.bid).add(usize::from(chunk.start));
                std::ptr::copy_nonoverlapping(src, dst.add(copied), n);
            }
            copied += n;
            chunk.start += n as u16;
            if chunk.start == chunk.end {
                bufs.provide(chunk.bid);
                self.chunks.pop_front();
            }
        }
        copied
    }

    /// Keeps `waker` to wake when something arrives. Returns a different
    /// waker it displaced, to be woken so the reader it belonged to polls
    /// again and re-registers rather than sleeping forever.
    pub(crate) fn set_waker(&mut self, waker: &Waker) -> Option<Waker> {
        set_waker(&mut self.waker, waker)
    }

    /// Gives every waiting buffer back to the ring (the stream is gone).
    pub(crate) fn discard(&mut self, bufs: &mut BufRing) {
        // Deliberately broken build for the recycling test: lose them.
        #[cfg(ringshard_broken = "leak_recv_buffers")]
        {
            let _ = bufs;
            self.chunks.clear();
            return;
        }
        #[allow(unreachable_code, reason = "after a broken build's return")]
        for chunk in self.chunks.drain(..) {
            bufs.provide(chunk.bid);
        }
    }
}

/// Stores `waker` in `slot`; returns a different waker it displaced.
pub(crate) fn set_waker(slot: &mut Option<Waker>, waker: &Waker) -> Option<Waker> {
    match slot {
        Some(current) if current.will_wake(waker) => None,
        _ => slot.replace(waker.clone()),
    }
}
