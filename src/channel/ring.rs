//! [`Ring`]: the bounded multi-producer, single-consumer queue under
//! `mpsc::bounded`.
//!
//! Values are numbered in claim order. Producers claim number `n` by
//! advancing `sent` (a CAS, shared among producers only), write the value
//! into slot `n % size`, then publish it by storing `n + 1` in the slot's
//! `seq`. The consumer takes number `r` once slot `r % size` holds
//! `seq == r + 1`, and publishes its progress in `received`, a plain store
//! to a line only it writes. A producer may claim `n` only while
//! `n - received < capacity`; it reads the consumer's line only when its
//! shared copy (`seen`) says the ring is full.
//!
//! So in the steady state the consumer never writes a line a producer
//! writes, and a producer reads the consumer's line once per `capacity`
//! values. `crossbeam`'s `ArrayQueue` (the consumer stamps every slot) and
//! `SegQueue` plus a room counter both cost about twice as much per value
//! between two shards (BENCHMARKS.md).
//!
//! A consumer that finds the ring empty swaps `PARKED` into the `seq` of
//! the slot it waits on; the producer publishing that slot swaps `PARKED`
//! out and so learns it must wake the consumer: one locked op per value,
//! and no fence.
//!
//! # Slot states
//!
//! For slot `s` and the number `n` that maps to it next:
//! - *free*: `seq <= n` and `received > n - size`: the consumer is done
//!   with the previous value; only the producer that claimed `n` touches
//!   `value`.
//! - *waited on*: free, with `seq == PARKED`: the consumer waits for `n`.
//! - *full*: `seq == n + 1`: `value` holds number `n`; only the consumer
//!   touches it, until it advances `received` past `n`.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

/// A slot's `seq` while the consumer waits for its value.
const PARKED: usize = usize::MAX;

/// The largest capacity: the ring is allocated up front.
pub(crate) const MAX_CAPACITY: usize = 1 << 24;

pub(crate) struct Ring<T> {
    slots: Box<[Slot<T>]>,
    mask: usize,
    capacity: usize,
    producers: CachePadded<Producers>,
    /// Values the consumer took, ever. Written only by the consumer.
    received: CachePadded<AtomicUsize>,
}

struct Producers {
    /// Numbers claimed, ever.
    sent: AtomicUsize,
    /// The last `received` a producer read.
    seen: AtomicUsize,
}

struct Slot<T> {
    seq: AtomicUsize,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: a value is written by the one producer that claimed its number and
// read by the consumer, with Release/Acquire on `seq` and `received` between
// them (see the slot states); so the ring moves `T`s between threads and
// needs only `T: Send` to be shared.
unsafe impl<T: Send> Sync for Ring<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Ring<T> {}

impl<T> Ring<T> {
    /// A ring for `capacity` values, `1..=MAX_CAPACITY`.
    pub(crate) fn new(capacity: usize) -> Ring<T> {
        assert!((1..=MAX_CAPACITY).contains(&capacity));
        let size = capacity.next_power_of_two();
        let slots = (0..size)
            .map(|_| Slot {
                seq: AtomicUsize::new(0),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            })
            .collect();
        Ring {
            slots,
            mask: size - 1,
            capacity,
            producers: CachePadded::new(Producers {
                sent: AtomicUsize::new(0),
                seen: AtomicUsize::new(0),
            }),
            received: CachePadded::new(AtomicUsize::new(0)),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Values in the ring (claimed and not yet taken).
    pub(crate) fn len(&self) -> usize {
        let received = self.received.load(Ordering::Acquire);
        self.producers
            .sent
            .load(Ordering::Acquire)
            .saturating_sub(received)
    }

    /// Adds `value`, or gives it back if the ring is full. Any thread.
    /// `Ok(true)`: the consumer had parked on this value.
    pub(crate) fn push(&self, value: T) -> Result<bool, T> {
        let producers = &*self.producers;
        let mut sent = producers.sent.load(Ordering::Relaxed);
        loop {
            // Comparisons, not differences: a stale `sent` may lag `seen`
            // (the CAS below then fails and reloads it).
            if sent >= producers.seen.load(Ordering::Acquire) + self.capacity {
                // Full as far as we knew: read what the consumer took.
                let received = self.received.load(Ordering::Acquire);
                producers.seen.fetch_max(received, Ordering::AcqRel);
                if sent >= received + self.capacity {
                    return Err(value);
                }
            }
            match producers.sent.compare_exchange_weak(
                sent,
                sent + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => sent = now,
            }
        }
        let slot = &self.slots[sent & self.mask];
        // SAFETY: we claimed number `sent`, and `sent - received < capacity
        // <= size` (read with Acquire from the consumer's Release, directly
        // or through `seen`): the consumer is done with the slot's previous
        // value, and no other producer maps to this slot before `received`
        // moves past `sent`.
        unsafe { (*slot.value.get()).write(value) };
        // One locked op both publishes the value and tells whether the
        // consumer parked on it; the caller then wakes it.
        let before = slot.seq.swap(sent + 1, Ordering::AcqRel);
        Ok(before == PARKED)
    }

    /// Marks the slot of the next value as waited on, so its producer
    /// reports `true` from `push`. False if the value is already there.
    ///
    /// # Safety
    ///
    /// - Only the consumer calls this, never at the same time as `pop`.
    pub(crate) unsafe fn park(&self) -> bool {
        let received = self.received.load(Ordering::Relaxed);
        let slot = &self.slots[received & self.mask];
        // The slot's previous number's seq, or 0 on the first lap.
        let empty = (received + 1).saturating_sub(self.slots.len());
        match slot
            .seq
            .compare_exchange(empty, PARKED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(seq) => seq == PARKED,
        }
    }

    /// Takes the next value. Only the consumer may call this (`&mut`-like;
    /// the channel's single receiver, or the last owner in `Drop`).
    ///
    /// # Safety
    ///
    /// - No other thread calls `pop` at the same time.
    pub(crate) unsafe fn pop(&self) -> Option<T> {
        let received = self.received.load(Ordering::Relaxed);
        let slot = &self.slots[received & self.mask];
        if slot.seq.load(Ordering::Acquire) != received + 1 {
            return None;
        }
        // SAFETY: `seq == received + 1` (Acquire): the value numbered
        // `received` is written, and only the consumer (us) reads it.
        let value = unsafe { (*slot.value.get()).assume_init_read() };
        self.received.store(received + 1, Ordering::Release);
        Some(value)
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no other thread is left.
        while unsafe { self.pop() }.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn holds_exactly_its_capacity_in_order() {
        let ring = Ring::new(3);
        for i in 0..3 {
            ring.push(i).unwrap();
        }
        assert_eq!(ring.push(3), Err(3));
        assert_eq!(ring.len(), 3);
        // SAFETY: this thread is the only consumer.
        assert_eq!(unsafe { ring.pop() }, Some(0));
        ring.push(3).unwrap();
        // SAFETY: as above.
        let rest: Vec<_> = std::iter::from_fn(|| unsafe { ring.pop() }).collect();
        assert_eq!(rest, [1, 2, 3]);
    }

    #[test]
    fn push_reports_the_parked_consumer_once() {
        let ring = Ring::new(2);
        for lap in 0..5 {
            // SAFETY: this thread is the only consumer.
            unsafe {
                assert!(ring.park(), "lap {lap}: nothing to take, parks");
                assert!(ring.park(), "parking twice stays parked");
                assert_eq!(ring.push(lap), Ok(true));
                assert_eq!(ring.push(lap + 100), Ok(false));
                assert!(!ring.park(), "a value is there");
                assert_eq!(ring.pop(), Some(lap));
                assert_eq!(ring.pop(), Some(lap + 100));
            }
        }
    }

    #[test]
    fn wraps_many_laps() {
        let ring = Ring::new(4);
        for i in 0..10_000u32 {
            ring.push(i).unwrap();
            // SAFETY: this thread is the only consumer.
            assert_eq!(unsafe { ring.pop() }, Some(i));
        }
    }

    #[test]
    fn values_left_at_drop_are_dropped() {
        let token = Arc::new(());
        let ring = Ring::new(8);
        for _ in 0..5 {
            ring.push(token.clone()).unwrap();
        }
        drop(ring);
        assert_eq!(Arc::strong_count(&token), 1);
    }

    /// Three producers and a consumer on four threads, a small ring: every
    /// value arrives once, each producer's in order.
    #[test]
    fn stress_producers_and_consumer_on_threads() {
        let ring = Arc::new(Ring::<(usize, u32)>::new(5));
        let producers: Vec<_> = (0..3)
            .map(|p| {
                let ring = ring.clone();
                std::thread::spawn(move || {
                    for i in 0..100_000 {
                        let mut value = (p, i);
                        while let Err(back) = ring.push(value) {
                            value = back;
                            std::hint::spin_loop();
                        }
                    }
                })
            })
            .collect();
        let mut next = [0u32; 3];
        while next.iter().sum::<u32>() < 300_000 {
            // SAFETY: this thread is the only consumer.
            match unsafe { ring.pop() } {
                Some((p, i)) => {
                    assert_eq!(i, next[p]);
                    next[p] += 1;
                }
                None => std::hint::spin_loop(),
            }
        }
        producers.into_iter().for_each(|p| p.join().unwrap());
        // SAFETY: as above.
        assert_eq!(unsafe { ring.pop() }, None);
    }
}
