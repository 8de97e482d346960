//! [`Ring`]: the bounded multi-producer, single-consumer queue under
//! `mpsc::bounded`.
//!
//! Values are numbered in claim order. Producers claim number `n` by
//! advancing `sent` (a CAS, shared among producers only), write the value
//! into slot `n % size`, then publish it by storing `tag(n + 1)` in the
//! slot's `seq`. The consumer takes number `r` once slot `r % size` holds
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
//! and no fence. A consumer on a shard that spins may put `WATCHED` there
//! instead and have its shard read the slot (`shard::Beacon`): the producer
//! then wakes no one, and the slot is the only line that crosses.
//!
//! The slots live in their own allocation ([`SlotMemory`]), which a
//! watching shard keeps alive without keeping any value: a shard may still
//! hold a beacon after the channel and every value in it are gone.
//!
//! # Slot states
//!
//! For slot `s` and the number `n` that maps to it next:
//! - *free*: `seq == tag(n + 1 - size)` (the previous value's) and
//!   `received > n - size`: the consumer is done with the previous value;
//!   only the producer that claimed `n` touches `value`.
//! - *waited on*: free, with `seq == PARKED` (the producer wakes the
//!   consumer) or `seq == WATCHED` (its shard watches the slot).
//! - *full*: `seq == tag(n + 1)`: `value` holds number `n`; only the
//!   consumer touches it, until it advances `received` past `n`.
//!
//! # Reservations
//!
//! `sent` also counts reservations (`Permit`s), in the bits between the
//! count and [`CLOSED`]. A claim or a reservation is taken only while
//! claims ahead of `received` plus reservations are below the capacity,
//! and a reserved push turns a reservation into a claim in the same CAS:
//! room is one word's state, so a reserved push always finds its slot and
//! nobody else can take it. Unused, a reservation is given back.
//!
//! # Counters wrap
//!
//! `sent`'s count and `received` count modulo 2^38 (2^17 on a 32-bit
//! target, where the capacity is at most 2^13), so they wrap after 2^38
//! values: hours at full speed (a 32-bit target wraps in well under a
//! second). They are only ever compared by their distance ([`lead`]),
//! which stays below `capacity` for live numbers. A slot's `seq` holds a
//! count ([`tag`]), so its top bits are clear, and the two marks, which
//! have them set, never equal a published number.
//!
//! # Closing
//!
//! The consumer closes the ring by setting [`CLOSED`] in `sent`: the CAS
//! that claims a number fails from then on, and the numbers claimed before
//! it are exactly the ones still to come (a producer between claim and
//! publish is a few instructions from publishing).

use std::alloc::{self, Layout};
use std::ptr::NonNull;
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use crate::shard::Beacon;
use crate::sys::atomic::{AtomicUsize, Ordering, ValueCell};

/// A slot's `seq` while the consumer waits for its value, to be woken.
/// Published `seq`s are counts ([`tag`]), whose top bit is clear: never a
/// mark.
const PARKED: usize = usize::MAX;

/// A slot's `seq` while the consumer waits for its value and its shard
/// reads the slot.
const WATCHED: usize = usize::MAX - 1;

/// The top bit of `sent`: the consumer closed the ring; no more claims.
const CLOSED: usize = 1 << (usize::BITS - 1);

/// The bits of a count (the low bits of `sent`, and `received`); counts
/// wrap within them.
#[cfg(target_pointer_width = "64")]
const COUNT_BITS: u32 = 38;
#[cfg(not(target_pointer_width = "64"))]
const COUNT_BITS: u32 = 17;

const COUNT: usize = (1 << COUNT_BITS) - 1;

/// One reservation (a `Permit`), counted in `sent` between the count and
/// [`CLOSED`]: a claim, a reservation and a reserved send are each one CAS
/// of that one word, so room is never counted twice.
const RESERVED_ONE: usize = 1 << COUNT_BITS;

/// The reservation bits of `sent`.
const RESERVED: usize = !COUNT & !CLOSED;

/// Reservations held in `sent`.
fn reserved(sent: usize) -> usize {
    (sent & RESERVED) >> COUNT_BITS
}

/// `sent` with its count advanced by one claim, its other bits kept.
fn claimed(sent: usize) -> usize {
    (sent & !COUNT) | next(sent)
}

/// How far count `a` is ahead of count `b`; a count that is behind shows
/// as a lead above `COUNT / 2`.
fn lead(a: usize, b: usize) -> usize {
    a.wrapping_sub(b) & COUNT
}

/// Whether count `a` is at least `by` ahead of count `b` (and not behind).
fn ahead_by(a: usize, b: usize, by: usize) -> bool {
    (by..=COUNT / 2).contains(&lead(a, b))
}

/// The count after `n`.
fn next(n: usize) -> usize {
    n.wrapping_add(1) & COUNT
}

/// The `seq` that says number `n - 1` was published (`n` counts values):
/// the count itself, whose top bit is clear.
///
/// (A tag shifted left to free the low bits for the marks measured 84-100
/// ns per message between two shards against 55-60 ns for this one, on the
/// same runs of benches/shards.)
fn tag(n: usize) -> usize {
    n & COUNT
}

/// The alignment (and size granule) of the slots' allocation: two cache
/// lines, which adjacent-line prefetchers move together.
const LINE: usize = 128;

/// The largest capacity: the ring is allocated up front, and the
/// reservation bits of `sent` must count it.
#[cfg(target_pointer_width = "64")]
pub(crate) const MAX_CAPACITY: usize = 1 << 24;
#[cfg(not(target_pointer_width = "64"))]
pub(crate) const MAX_CAPACITY: usize = 1 << 13;

/// Why a claim or a reservation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Full,
    Closed,
}

/// Why a push gave its value back.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused<T> {
    Full(T),
    Closed(T),
}

/// How a consumer waits for the next value.
pub(crate) enum Wait {
    /// The producer will report it parked.
    Parked,
    /// The producer will only publish; the beacon tells when.
    Watched(Beacon),
    /// The value is already there.
    Arrived,
}

pub(crate) struct Ring<T> {
    /// `size` slots, in `memory`.
    slots: NonNull<Slot<T>>,
    /// Padded: a watching shard clones and drops this `Arc`, and its
    /// counts must not share a line with anything a producer touches.
    memory: Arc<CachePadded<SlotMemory>>,
    mask: usize,
    capacity: usize,
    producers: CachePadded<Producers>,
    /// Values the consumer took, ever. Written only by the consumer.
    received: CachePadded<AtomicUsize>,
}

/// The slots' allocation, apart from their type: it holds no value the
/// ring has not already dropped or handed out, so freeing it drops nothing.
struct SlotMemory {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: plain memory; the ring decides who touches what inside it.
unsafe impl Send for SlotMemory {}
// SAFETY: as above.
unsafe impl Sync for SlotMemory {}

impl Drop for SlotMemory {
    fn drop(&mut self) {
        // SAFETY: allocated in `Ring::new` with this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

struct Producers {
    /// Numbers claimed, ever.
    sent: AtomicUsize,
    /// The last `received` a producer read.
    seen: AtomicUsize,
}

struct Slot<T> {
    seq: AtomicUsize,
    value: ValueCell<T>,
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
        Ring::starting_at(capacity, 0)
    }

    /// A ring whose counters start at `start` (tests start them near the
    /// point where they wrap).
    fn starting_at(capacity: usize, start: usize) -> Ring<T> {
        assert!((1..=MAX_CAPACITY).contains(&capacity));
        let start = start & COUNT;
        let size = capacity.next_power_of_two();
        // A slot holds at least its `seq`: the layout is never zero-sized.
        // The slots get lines of their own: a small ring must not share a
        // line with whatever the allocator puts next to it (the ring of
        // the reverse direction, say).
        let layout = Layout::array::<Slot<T>>(size)
            .and_then(|layout| layout.align_to(LINE))
            .expect("ring size overflows")
            .pad_to_align();
        // SAFETY: `layout` has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc::alloc(layout) })
            .unwrap_or_else(|| alloc::handle_alloc_error(layout));
        let slots = ptr.cast::<Slot<T>>();
        for n in (0..size).map(|offset| start.wrapping_add(offset) & COUNT) {
            // SAFETY: `n & (size - 1) < size` slots fit in the allocation.
            unsafe {
                slots.add(n & (size - 1)).write(Slot {
                    // As if the previous lap's value had been taken.
                    seq: AtomicUsize::new(tag(n.wrapping_add(1).wrapping_sub(size))),
                    value: ValueCell::new(),
                });
            }
        }
        Ring {
            slots,
            memory: Arc::new(CachePadded::new(SlotMemory { ptr, layout })),
            mask: size - 1,
            capacity,
            producers: CachePadded::new(Producers {
                sent: AtomicUsize::new(start),
                seen: AtomicUsize::new(start),
            }),
            received: CachePadded::new(AtomicUsize::new(start)),
        }
    }

    /// The slot number `n` maps to.
    fn slot(&self, n: usize) -> &Slot<T> {
        // SAFETY: `n & mask < size`, and the slots were written in `new`
        // and live as long as `memory`, which `self` holds.
        unsafe { self.slots.add(n & self.mask).as_ref() }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Values in the ring (claimed and not yet taken).
    pub(crate) fn len(&self) -> usize {
        let received = self.received.load(Ordering::Acquire);
        let sent = self.producers.sent.load(Ordering::Acquire);
        // `received` was read first: `sent` is not behind it.
        lead(sent, received).min(self.capacity)
    }

    /// Closes the ring: every later `push` fails with `Closed`; what was
    /// claimed before stays to be taken.
    pub(crate) fn close(&self) {
        self.producers.sent.fetch_or(CLOSED, Ordering::AcqRel);
    }

    /// Whether the ring is closed and every value claimed before was taken:
    /// no value will ever come again.
    ///
    /// # Safety
    ///
    /// - Only the consumer calls this.
    pub(crate) unsafe fn finished(&self) -> bool {
        let sent = self.producers.sent.load(Ordering::Acquire);
        // A reservation made before the close may still send (as a tokio
        // permit may): the end waits for it.
        sent & CLOSED != 0
            && reserved(sent) == 0
            && sent & COUNT == self.received.load(Ordering::Relaxed)
    }

    /// Adds `value`, or gives it back if the ring is full or closed. Any
    /// thread. `Ok(true)`: the consumer had parked on this value.
    pub(crate) fn push(&self, value: T) -> Result<bool, Refused<T>> {
        match self.take_room(false) {
            Ok(sent) => Ok(self.publish(sent, value)),
            Err(Refusal::Full) => Err(Refused::Full(value)),
            Err(Refusal::Closed) => Err(Refused::Closed(value)),
        }
    }

    /// Reserves room for one value, to be sent with
    /// [`push_reserved`](Ring::push_reserved) or given back with
    /// [`release_reserved`](Ring::release_reserved). Any thread.
    pub(crate) fn reserve(&self) -> Result<(), Refusal> {
        self.take_room(true).map(drop)
    }

    /// Sends `value` into room [`reserve`](Ring::reserve) took, even after
    /// a close (the reservation was made before it, as a tokio permit's
    /// send is). `true`: the consumer had parked on this value.
    pub(crate) fn push_reserved(&self, value: T) -> bool {
        let producers = &*self.producers;
        let mut sent = producers.sent.load(Ordering::Relaxed);
        loop {
            debug_assert!(reserved(sent) > 0, "a reserved push holds a reservation");
            // The claim turns our reservation into a number: the room
            // counted (claims ahead of `received`, plus reservations)
            // stays the same, and `CLOSED` is kept.
            match producers.sent.compare_exchange_weak(
                sent,
                claimed(sent) - RESERVED_ONE,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => sent = now,
            }
        }
        // Claims plus reservations never exceed the capacity (each was
        // checked against a `received` no newer than the true one), and
        // ours was one of the reservations: number `sent` is less than
        // `capacity` ahead of the true `received`. Wait (a few loads at
        // most) until this thread sees that `received`, so the consumer's
        // take of the slot's previous value happens before our write.
        while ahead_by(sent, self.received.load(Ordering::Acquire), self.capacity) {
            std::hint::spin_loop();
        }
        self.publish(sent, value)
    }

    /// Gives back a reservation that was not used.
    pub(crate) fn release_reserved(&self) {
        let before = self
            .producers
            .sent
            .fetch_sub(RESERVED_ONE, Ordering::Relaxed);
        debug_assert!(reserved(before) > 0, "a release holds a reservation");
    }

    /// Room for more values now: the capacity less the values in the ring
    /// and the reservations.
    pub(crate) fn free(&self) -> usize {
        // One snapshot: `received` first, so `sent` is not behind it.
        let received = self.received.load(Ordering::Acquire);
        let sent = self.producers.sent.load(Ordering::Acquire);
        self.capacity
            .saturating_sub(lead(sent, received).min(self.capacity))
            .saturating_sub(reserved(sent))
    }

    /// Claims a number (`reserve == false`) or a reservation, if the room
    /// counted (claims ahead of `received`, plus reservations) is below
    /// the capacity; returns `sent` before the claim.
    fn take_room(&self, reserve: bool) -> Result<usize, Refusal> {
        let producers = &*self.producers;
        let mut sent = producers.sent.load(Ordering::Relaxed);
        loop {
            if sent & CLOSED != 0 {
                return Err(Refusal::Closed);
            }
            let room = self.capacity.saturating_sub(reserved(sent));
            // A stale `sent` may be behind `seen`: not full, and the CAS
            // below then fails and reloads it.
            if ahead_by(sent, producers.seen.load(Ordering::Acquire), room) {
                // Full as far as we knew: read what the consumer took.
                let received = self.received.load(Ordering::Acquire);
                let _ = producers
                    .seen
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |seen| {
                        ahead_by(received, seen, 1).then_some(received)
                    });
                if ahead_by(sent, received, room) {
                    return Err(Refusal::Full);
                }
            }
            let new = if reserve {
                sent + RESERVED_ONE
            } else {
                claimed(sent)
            };
            match producers.sent.compare_exchange_weak(
                sent,
                new,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(sent),
                Err(now) => sent = now,
            }
        }
    }

    /// Writes `value` as number `sent` (claimed) and publishes it; whether
    /// the consumer had parked on it.
    fn publish(&self, sent: usize, value: T) -> bool {
        let slot = self.slot(sent);
        // SAFETY: we claimed number `sent`, and `sent - received < capacity
        // <= size` (read with Acquire from the consumer's Release, directly
        // or through `seen`): the consumer is done with the slot's previous
        // value, and no other producer maps to this slot before `received`
        // moves past `sent`.
        unsafe { slot.value.write(value) };
        // One locked op both publishes the value and tells whether the
        // consumer parked on it; the caller then wakes it.
        let before = slot.seq.swap(tag(next(sent)), Ordering::AcqRel);
        before == PARKED
    }

    /// Marks the slot of the next value as waited on: watched by the
    /// current shard if `watch`, otherwise parked (so its producer reports
    /// `true` from `push`). A consumer that waits again after being
    /// watched is parked from then on: its shard's beacon sees the change
    /// and lets go.
    ///
    /// # Safety
    ///
    /// - Only the consumer calls this, never at the same time as `pop`.
    pub(crate) unsafe fn park(&self, watch: bool) -> Wait {
        let received = self.received.load(Ordering::Relaxed);
        let slot = self.slot(received);
        let empty = self.empty_seq(received);
        let mark = if watch { WATCHED } else { PARKED };
        let seen = match slot
            .seq
            .compare_exchange(empty, mark, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) if watch => {
                // SAFETY: `seq` lies in `memory` and is only accessed
                // atomically.
                let beacon =
                    unsafe { Beacon::new(self.memory.clone(), &slot.seq, WATCHED, PARKED) };
                return Wait::Watched(beacon);
            }
            Ok(_) => return Wait::Parked,
            Err(seen) => seen,
        };
        match seen {
            PARKED => Wait::Parked,
            WATCHED => match slot.seq.compare_exchange(
                WATCHED,
                PARKED,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => Wait::Parked,
                Err(_) => Wait::Arrived,
            },
            _ => Wait::Arrived,
        }
    }

    /// Stops any shard watching the next slot (the consumer is going
    /// away): its beacon sees the change and lets go.
    ///
    /// # Safety
    ///
    /// - Only the consumer calls this, never at the same time as `pop`.
    pub(crate) unsafe fn unwatch(&self) {
        let received = self.received.load(Ordering::Relaxed);
        let _ = self.slot(received).seq.compare_exchange(
            WATCHED,
            PARKED,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }

    /// The `seq` of a free slot about to hold number `n`: its previous
    /// number's (on the first lap, as set by `new`).
    fn empty_seq(&self, n: usize) -> usize {
        tag(n.wrapping_add(1).wrapping_sub(self.mask + 1))
    }

    /// Takes the next value. Only the consumer may call this (`&mut`-like;
    /// the channel's single receiver, or the last owner in `Drop`).
    ///
    /// # Safety
    ///
    /// - No other thread calls `pop` at the same time.
    pub(crate) unsafe fn pop(&self) -> Option<T> {
        let received = self.received.load(Ordering::Relaxed);
        let slot = self.slot(received);
        if slot.seq.load(Ordering::Acquire) != tag(next(received)) {
            return None;
        }
        // SAFETY: `seq == tag(received + 1)` (Acquire): the value numbered
        // `received` is written, and only the consumer (us) reads it.
        let value = unsafe { slot.value.take() };
        self.received.store(next(received), Ordering::Release);
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
        assert_eq!(ring.push(3), Err(Refused::Full(3)));
        assert_eq!(ring.len(), 3);
        // SAFETY: this thread is the only consumer.
        assert_eq!(unsafe { ring.pop() }, Some(0));
        ring.push(3).unwrap();
        // SAFETY: as above.
        let rest: Vec<_> = std::iter::from_fn(|| unsafe { ring.pop() }).collect();
        assert_eq!(rest, [1, 2, 3]);
    }

    #[test]
    fn reservations_take_room_and_a_reserved_push_always_finds_it() {
        let ring = Ring::new(3);
        ring.reserve().unwrap();
        ring.reserve().unwrap();
        ring.push(0).unwrap();
        assert_eq!(ring.free(), 0);
        assert_eq!(
            ring.push(1),
            Err(Refused::Full(1)),
            "the reservations own the room"
        );
        assert_eq!(ring.reserve(), Err(Refusal::Full));
        assert!(!ring.push_reserved(2));
        ring.release_reserved();
        assert_eq!(ring.free(), 1, "a released reservation is room again");
        ring.push(3).unwrap();
        // SAFETY: this thread is the only consumer.
        let got: Vec<_> = std::iter::from_fn(|| unsafe { ring.pop() }).collect();
        assert_eq!(got, [0, 2, 3]);
        ring.reserve().unwrap();
        ring.close();
        assert_eq!(ring.reserve(), Err(Refusal::Closed));
        // SAFETY: as above.
        let finished = unsafe { ring.finished() };
        assert!(!finished, "a reservation made before the close may send");
        assert!(
            !ring.push_reserved(4),
            "a reservation sends after the close"
        );
        // SAFETY: as above.
        assert_eq!(unsafe { ring.pop() }, Some(4));
        // SAFETY: as above.
        assert!(unsafe { ring.finished() });
    }

    #[test]
    fn push_reports_the_parked_consumer_once() {
        let ring = Ring::new(2);
        for lap in 0..5 {
            // SAFETY: this thread is the only consumer.
            unsafe {
                assert!(matches!(ring.park(false), Wait::Parked), "lap {lap}: parks");
                assert!(
                    matches!(ring.park(false), Wait::Parked),
                    "twice stays parked"
                );
                assert_eq!(ring.push(lap), Ok(true));
                assert_eq!(ring.push(lap + 100), Ok(false));
                assert!(
                    matches!(ring.park(false), Wait::Arrived),
                    "a value is there"
                );
                assert_eq!(ring.pop(), Some(lap));
                assert_eq!(ring.pop(), Some(lap + 100));
            }
        }
    }

    #[test]
    fn a_watched_slot_wakes_no_one_and_its_beacon_sees_the_value() {
        let ring = Ring::new(1);
        for lap in 0..5 {
            // SAFETY: this thread is the only consumer.
            unsafe {
                let Wait::Watched(beacon) = ring.park(true) else {
                    panic!("lap {lap}: an empty ring is watched");
                };
                assert!(beacon.still_watching());
                assert_eq!(ring.push(lap), Ok(false), "the producer wakes no one");
                assert!(!beacon.still_watching(), "the beacon sees the value");
                assert!(!beacon.settle(), "settling finds the value");
                assert_eq!(ring.pop(), Some(lap));
            }
        }
    }

    #[test]
    fn a_settled_or_rewaited_watch_is_parked_again() {
        let ring = Ring::new(2);
        // SAFETY: this thread is the only consumer.
        unsafe {
            let Wait::Watched(beacon) = ring.park(true) else {
                panic!("an empty ring is watched");
            };
            assert!(
                beacon.settle(),
                "nothing arrived: the wake goes back to the producer"
            );
            assert_eq!(ring.push(1), Ok(true), "the producer wakes the consumer");
            assert_eq!(ring.pop(), Some(1));

            let Wait::Watched(beacon) = ring.park(true) else {
                panic!("an empty ring is watched");
            };
            // Polled again before anything came: parked from then on, and
            // the shard's beacon lets go.
            assert!(matches!(ring.park(true), Wait::Parked));
            assert!(!beacon.still_watching());
            assert_eq!(ring.push(2), Ok(true));
            assert_eq!(ring.pop(), Some(2));

            let Wait::Watched(beacon) = ring.park(true) else {
                panic!("an empty ring is watched");
            };
            ring.unwatch();
            assert!(!beacon.still_watching(), "a consumer going away lets go");
        }
    }

    #[test]
    fn a_beacon_outlives_the_ring_and_its_values() {
        let token = Arc::new(());
        let ring = Ring::new(4);
        ring.push(token.clone()).unwrap();
        // SAFETY: this thread is the only consumer.
        let beacon = unsafe {
            assert!(ring.pop().is_some());
            let Wait::Watched(beacon) = ring.park(true) else {
                panic!("an empty ring is watched");
            };
            beacon
        };
        ring.push(token.clone()).unwrap();
        drop(ring);
        assert_eq!(Arc::strong_count(&token), 1, "the ring dropped its value");
        // The slot's memory is still there to read.
        assert!(!beacon.still_watching());
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

    /// Counters started just short of where they wrap: every value, mark
    /// and fullness check works across the wrap. (Before counting by
    /// distance, `sent + 1` overflowed here, and a published `seq` could
    /// equal a mark.)
    #[test]
    fn counters_wrap_without_losing_a_value_or_a_mark() {
        for offset in [1usize, 2, 3, 5] {
            let ring = Ring::starting_at(3, COUNT - offset);
            for lap in 0..8u32 {
                // SAFETY: this thread is the only consumer.
                unsafe {
                    assert!(matches!(ring.park(false), Wait::Parked), "lap {lap}: parks");
                    assert_eq!(ring.push(lap * 10), Ok(true), "lap {lap}: wakes");
                    ring.push(lap * 10 + 1).unwrap();
                    ring.push(lap * 10 + 2).unwrap();
                    assert_eq!(ring.push(99), Err(Refused::Full(99)), "lap {lap}: full");
                    assert_eq!(ring.len(), 3);
                    assert_eq!(ring.pop(), Some(lap * 10));
                    assert_eq!(ring.pop(), Some(lap * 10 + 1));
                    let Wait::Arrived = ring.park(true) else {
                        panic!("lap {lap}: a value is there");
                    };
                    assert_eq!(ring.pop(), Some(lap * 10 + 2));
                    assert_eq!(ring.pop(), None);
                    let Wait::Watched(beacon) = ring.park(true) else {
                        panic!("lap {lap}: an empty ring is watched");
                    };
                    assert_eq!(ring.push(lap), Ok(false), "lap {lap}: watched");
                    assert!(!beacon.still_watching());
                    assert_eq!(ring.pop(), Some(lap));
                    assert_eq!(ring.len(), 0);
                }
            }
        }
    }

    #[test]
    fn a_closed_ring_refuses_pushes_and_is_finished_once_drained() {
        let ring = Ring::starting_at(4, COUNT - 1);
        ring.push(1).unwrap();
        ring.push(2).unwrap();
        ring.close();
        assert_eq!(ring.push(3), Err(Refused::Closed(3)));
        // SAFETY: this thread is the only consumer.
        unsafe {
            assert!(!ring.finished(), "two values are still to be taken");
            assert_eq!(ring.pop(), Some(1));
            assert_eq!(ring.pop(), Some(2));
            assert!(ring.finished());
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
                        while let Err(Refused::Full(back)) = ring.push(value) {
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

/// The ring against a model (a `VecDeque`), one thread: random pushes,
/// pops, waits (parked or watched) and a close, with counters started
/// anywhere, near their wrap point included.
#[cfg(test)]
mod model {
    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::{Refusal, Refused, Ring, Wait, COUNT};

    #[derive(Debug, Clone)]
    enum Step {
        Push,
        Pop,
        Park { watch: bool },
        Close,
        Reserve,
        PushReserved,
        Release,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => Just(Step::Push),
            5 => Just(Step::Pop),
            2 => any::<bool>().prop_map(|watch| Step::Park { watch }),
            1 => Just(Step::Close),
            2 => Just(Step::Reserve),
            2 => Just(Step::PushReserved),
            1 => Just(Step::Release),
        ]
    }

    fn start() -> impl Strategy<Value = usize> {
        prop_oneof![
            Just(0usize),
            (0..64usize).prop_map(|back| COUNT - back),
            any::<usize>()
        ]
    }

    #[derive(Debug, PartialEq)]
    enum Waiting {
        No,
        Parked,
        Watched,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn the_ring_does_what_the_model_says(
            capacity in 1..9usize,
            start in start(),
            steps in prop::collection::vec(step(), 1..400),
        ) {
            let ring = Ring::starting_at(capacity, start);
            let mut model = VecDeque::new();
            let mut closed = false;
            let mut waiting = Waiting::No;
            let mut beacon = None;
            // Reservations held (each is one `Permit`).
            let mut reserved = 0usize;
            for (value, step) in (0u32..).zip(steps) {
                // A reserved push is a push that cannot be refused as full.
                let step = match step {
                    Step::PushReserved if reserved == 0 => Step::Reserve,
                    Step::Release if reserved == 0 => Step::Reserve,
                    step => step,
                };
                match step {
                    Step::Reserve => {
                        let got = ring.reserve();
                        if closed {
                            prop_assert_eq!(got, Err(Refusal::Closed));
                        } else if model.len() + reserved == capacity {
                            prop_assert_eq!(got, Err(Refusal::Full));
                        } else {
                            prop_assert_eq!(got, Ok(()));
                            reserved += 1;
                        }
                    }
                    Step::Release => {
                        ring.release_reserved();
                        reserved -= 1;
                    }
                    Step::Push | Step::PushReserved => {
                        let got = if matches!(step, Step::Push) {
                            ring.push(value)
                        } else {
                            reserved -= 1;
                            Ok(ring.push_reserved(value))
                        };
                        if closed && matches!(step, Step::Push) {
                            prop_assert_eq!(got, Err(Refused::Closed(value)));
                        } else if matches!(step, Step::Push) && model.len() + reserved == capacity {
                            prop_assert_eq!(got, Err(Refused::Full(value)));
                        } else {
                            let woke = model.is_empty() && waiting == Waiting::Parked;
                            prop_assert_eq!(got, Ok(woke), "the consumer parked on it");
                            if model.is_empty() {
                                if let Some(beacon) = beacon.take() {
                                    let beacon: crate::shard::Beacon = beacon;
                                    prop_assert!(!beacon.still_watching(), "the beacon sees it");
                                }
                                waiting = Waiting::No;
                            }
                            model.push_back(value);
                        }
                    }
                    Step::Pop => {
                        // SAFETY: this thread is the only consumer.
                        let got = unsafe { ring.pop() };
                        prop_assert_eq!(got, model.pop_front());
                        if got.is_some() {
                            waiting = Waiting::No;
                            beacon = None;
                        }
                    }
                    Step::Park { watch } => {
                        // SAFETY: as above.
                        let wait = unsafe { ring.park(watch) };
                        match (wait, model.is_empty()) {
                            (Wait::Arrived, empty) => prop_assert!(!empty, "arrived, yet empty"),
                            (Wait::Parked, empty) => {
                                prop_assert!(empty);
                                // Watched before: a second wait parks.
                                prop_assert!(!watch || waiting != Waiting::No);
                                waiting = Waiting::Parked;
                                beacon = None;
                            }
                            (Wait::Watched(new), empty) => {
                                prop_assert!(empty && watch && waiting == Waiting::No);
                                waiting = Waiting::Watched;
                                beacon = Some(new);
                            }
                        }
                    }
                    Step::Close => {
                        ring.close();
                        closed = true;
                    }
                }
                prop_assert_eq!(ring.len(), model.len());
                if !closed {
                    prop_assert_eq!(ring.free(), capacity - model.len() - reserved);
                }
                // SAFETY: as above.
                let finished = unsafe { ring.finished() };
                prop_assert_eq!(finished, closed && model.is_empty() && reserved == 0);
            }
        }
    }
}
