//! What a pending task costs: the bytes the runtime asks the allocator for
//! per spawned task that waits forever (its allocation and its entry in
//! the shard's registry for shutdown). Counted, not timed: the figure does
//! not swing. `cargo bench --bench core` reports the RSS growth beside
//! tokio's.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// ≤ 100 bytes per pending task (issue 16; tokio's RSS growth is about
/// 330). Before the packing it was 109: an 80-byte task (a 16-byte
/// metadata, an `Option` around the future, a 24-byte registration) and a
/// 24-byte `Slab` entry (29 with the slab's growth).
#[test]
fn a_pending_task_costs_at_most_100_bytes() {
    const TASKS: usize = 20_000;
    let rt = ringshard::Runtime::builder()
        .worker_threads(1)
        .pin_threads(false)
        .build()
        .unwrap();
    let per_task = rt.block_on(async {
        // Warm: the first spawn and yield make the shard's own structures.
        drop(ringshard::spawn(async {}));
        ringshard::yield_now().await;
        BYTES.store(0, Ordering::Relaxed);
        COUNTING.store(true, Ordering::Relaxed);
        for _ in 0..TASKS {
            drop(ringshard::spawn(std::future::pending::<()>()));
        }
        // Each task runs once (and registers) before this resumes.
        ringshard::yield_now().await;
        COUNTING.store(false, Ordering::Relaxed);
        BYTES.load(Ordering::Relaxed) as f64 / TASKS as f64
    });
    println!("{per_task:.1} bytes requested per pending task");
    assert!(per_task <= 100.0, "{per_task:.1} bytes per pending task");
    // Shutdown still reaches every one of them.
    rt.shutdown_timeout(std::time::Duration::from_secs(10));
}
