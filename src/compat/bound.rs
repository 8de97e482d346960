//! [`ShardBound`]: a `Send` handle on a shard's `!Send` value.

use std::io;
use std::mem::ManuallyDrop;
use std::thread::{self, ThreadId};

/// Makes a shard's `!Send` value (a [`TcpStream`](crate::net::TcpStream),
/// say) `Send`, for APIs that ask for `Send` but poll it where it was made.
///
/// The value is only ever touched on the thread that wrapped it: there,
/// [`get_mut`](ShardBound::get_mut) gives it, and the I/O traits forward to
/// it; on any other thread they give `None` or an error, never the value.
/// Dropped on another thread, the value is sent back to its shard and dropped
/// there (or leaked, never dropped elsewhere, if that shard has stopped).
///
/// # Cancel safety
///
/// The I/O traits forward to the value's own, with its cancel safety (for
/// the stream types, [`crate::compat`]'s); off its thread they return an
/// error having done nothing.
///
/// The motivating case is hyper's HTTP/1 upgrades:
/// `http1::Connection::with_upgrades` wants a `Send` I/O, and the
/// `hyper::upgrade::Upgraded` it hands over downcasts back to
/// `ShardBound<TcpStream>` on the shard.
///
/// ```
/// use ringshard::compat::ShardBound;
/// use std::rc::Rc;
///
/// let rt = ringshard::Runtime::builder().worker_threads(1).build().unwrap();
/// rt.block_on(async {
///     let mut bound = ShardBound::new(Rc::new(5));
///     fn is_send<T: Send>(_: &T) {}
///     is_send(&bound);
///     assert_eq!(bound.get_mut().map(|rc| **rc), Some(5));
///     let moved = std::thread::spawn(move || bound.get_mut().is_none()).join().unwrap();
///     assert!(moved, "another thread never sees the value");
/// });
/// ```
pub struct ShardBound<T: 'static> {
    value: ManuallyDrop<T>,
    thread: ThreadId,
    /// The shard the value belongs to, where a drop elsewhere sends it.
    shard: Option<u64>,
}

// SAFETY: the value is only touched (used, dropped) on `thread`, where it
// was made: every access checks the thread, and a drop elsewhere sends it
// home or leaks it. Moving a value between threads without touching it is
// what a `!Send` type forbids only because of such accesses.
unsafe impl<T: 'static> Send for ShardBound<T> {}

#[cfg_attr(
    not(any(feature = "tokio-io", feature = "futures-io", feature = "hyper")),
    allow(dead_code, reason = "used by the compat features")
)]
fn off_shard() -> io::Error {
    io::Error::other("a ShardBound value was used off the shard thread it belongs to")
}

impl<T: 'static> ShardBound<T> {
    /// Wraps `value`; it stays usable on this thread only.
    pub fn new(value: T) -> ShardBound<T> {
        ShardBound {
            value: ManuallyDrop::new(value),
            thread: thread::current().id(),
            shard: crate::context::with_current(|core| core.uid()),
        }
    }

    /// Whether this is the thread the value belongs to.
    pub fn is_home(&self) -> bool {
        thread::current().id() == self.thread
    }

    /// The value, on its own thread.
    pub fn get(&self) -> Option<&T> {
        self.is_home().then(|| &*self.value)
    }

    /// The value, on its own thread.
    pub fn get_mut(&mut self) -> Option<&mut T> {
        if self.is_home() {
            Some(&mut self.value)
        } else {
            None
        }
    }

    /// The value, or an I/O error off its thread.
    #[cfg_attr(
        not(any(feature = "tokio-io", feature = "futures-io", feature = "hyper")),
        allow(dead_code, reason = "used by the compat features")
    )]
    pub(crate) fn try_mut(&mut self) -> io::Result<&mut T> {
        self.get_mut().ok_or_else(off_shard)
    }

    /// Unwraps the value on its own thread; elsewhere gives `self` back.
    pub fn into_inner(self) -> Result<T, ShardBound<T>> {
        if !self.is_home() {
            return Err(self);
        }
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `this` is never used or dropped again, so the value is
        // taken exactly once.
        Ok(unsafe { ManuallyDrop::take(&mut this.value) })
    }
}

/// The value on its way home: dropped only on its thread, leaked elsewhere
/// (a shard that stopped drops unrun tasks on the sender's thread).
struct Homeward<T> {
    value: ManuallyDrop<T>,
    thread: ThreadId,
}

// SAFETY: as for `ShardBound`: only touched on `thread`.
unsafe impl<T> Send for Homeward<T> {}

impl<T> Drop for Homeward<T> {
    fn drop(&mut self) {
        if thread::current().id() == self.thread {
            // SAFETY: dropped once, here, on the value's own thread.
            unsafe { ManuallyDrop::drop(&mut self.value) };
        }
    }
}

impl<T: 'static> Drop for ShardBound<T> {
    fn drop(&mut self) {
        let home = self.is_home();
        // SAFETY: the value is taken once, here, and `self` is gone after.
        let value = unsafe { ManuallyDrop::take(&mut self.value) };
        if home {
            return drop(value);
        }
        let home = Homeward {
            value: ManuallyDrop::new(value),
            thread: self.thread,
        };
        match self.shard {
            Some(uid) => crate::task::spawn_detached_on(uid, async move { drop(home) }),
            // Made outside any shard, on a thread that may be gone: leak.
            None => std::mem::forget(home),
        }
    }
}

impl<T: 'static> std::fmt::Debug for ShardBound<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardBound")
            .field("thread", &self.thread)
            .finish_non_exhaustive()
    }
}
