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

/// What a pending task asks for: its task allocation (72 bytes) and its
/// registry entry (16, 26 with the vector's doubling at this count): 98.2
/// bytes. The run queue the spawn burst grew (8 bytes a task, 13 with the
/// doubling) is given back once it has drained. Issue 16 asks for at most
/// 100 of RSS (96.7 now, `benches/core`). Fails on the layout before (an
/// 80-byte task, a 24-byte `Slab` entry: 135.2) and with the run queue kept
/// (111.2).
#[test]
fn a_pending_task_asks_for_at_most_100_bytes() {
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
        // The run queue is FIFO: this one finishes after every task above
        // has run (and registered) once.
        ringshard::spawn(async {}).await.unwrap();
        COUNTING.store(false, Ordering::Relaxed);
        BYTES.load(Ordering::Relaxed) as f64 / TASKS as f64
    });
    println!("{per_task:.1} bytes requested per pending task");
    assert!(per_task <= 100.0, "{per_task:.1} bytes per pending task");
    // Shutdown still reaches every one of them.
    rt.shutdown_timeout(std::time::Duration::from_secs(10));
}
