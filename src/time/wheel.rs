//! A hierarchical timer wheel: a pure data structure, no clock and no runtime.
//!
//! # Geometry
//!
//! Time is counted in *ticks* of 1 µs since the shard's origin (the shard
//! converts; the wheel knows only ticks). The wheel has [`LEVELS`] = 7
//! levels of [`SLOTS`] = 64 slots. A slot on level `k` covers `64^k` ticks,
//! so level 0 holds the next 64 µs one tick per slot, level 1 the next 4 ms
//! in 64 µs slots, level 2 the next 262 ms, … and level 6 spans `64^7` µs ≈
//! 51 days. A deadline further away than that is clamped to the wheel's
//! horizon; the caller (the `Sleep` future) re-registers when the clamped
//! entry fires early. A deadline is never rounded by more than a tick: a
//! slot on a higher level is cascaded when `elapsed` reaches its start, and
//! its entries land on lower levels, down to their own microsecond.
//!
//! An entry is placed on the lowest level whose slot boundary separates its
//! deadline from `elapsed` (the highest 6-bit digit in which they differ), so:
//!
//! * every entry on level `k` expires before every entry on level `k + 1`, and
//! * within a level, slots expire in order starting from the current slot.
//!
//! When `elapsed` reaches the start of a slot on level `k > 0`, the slot is
//! *cascaded*: its entries are re-inserted and land on lower levels (or fire).
//!
//! Entries live in one `Vec` with a free list and are linked into their slot by
//! index (an intrusive doubly linked list), which makes insert and cancel O(1).
//! A [`TimerKey`] carries a generation so a stale key never touches a reused
//! entry.

use std::task::Waker;

/// Number of levels.
pub(crate) const LEVELS: usize = 7;
/// Slots per level (a power of two; 6 bits of the tick per level).
pub(crate) const SLOTS: usize = 64;
const SLOT_BITS: u32 = 6;
/// The farthest deadline the wheel represents, in ticks from `elapsed`.
pub(crate) const HORIZON: u64 = (1 << (SLOT_BITS * LEVELS as u32)) - 1;
const NIL: u32 = u32::MAX;

/// The length of a tick.
#[cfg(test)]
const TICK: std::time::Duration = std::time::Duration::from_micros(1);

/// The tick `since` (a time since the shard's origin) falls in.
pub(crate) fn tick_floor(since: std::time::Duration) -> u64 {
    since
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(since.subsec_micros()))
}

/// The first tick at or after `since`: a timer there never fires early, and
/// at most one tick late.
pub(crate) fn tick_ceil(since: std::time::Duration) -> u64 {
    since
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(since.subsec_nanos().div_ceil(1_000)))
}

/// Where tick `tick` starts, as a time since the origin.
pub(crate) fn tick_start(tick: u64) -> std::time::Duration {
    std::time::Duration::from_micros(tick)
}

/// Identifies one registered timer. Stale keys (fired or cancelled) are
/// recognised by their generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimerKey {
    index: u32,
    generation: u32,
}

struct Entry {
    deadline: u64,
    waker: Option<Waker>,
    prev: u32,
    next: u32,
    /// `level * SLOTS + slot` while linked.
    slot: u16,
    generation: u32,
    /// Whether the entry is allocated (linked into a slot).
    live: bool,
}

/// The wheel. See the module docs for its geometry.
pub(crate) struct Wheel {
    elapsed: u64,
    heads: [[u32; SLOTS]; LEVELS],
    occupied: [u64; LEVELS],
    entries: Vec<Entry>,
    free: Vec<u32>,
    len: usize,
}

impl Wheel {
    pub(crate) fn new() -> Wheel {
        Wheel {
            elapsed: 0,
            heads: [[NIL; SLOTS]; LEVELS],
            occupied: [0; LEVELS],
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    /// Number of registered timers.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Registers `waker` to fire at `deadline`. A deadline at or before
    /// `elapsed` is moved to the next tick; one beyond the horizon is clamped.
    pub(crate) fn insert(&mut self, deadline: u64, waker: Waker) -> TimerKey {
        let deadline = deadline.clamp(self.elapsed + 1, self.elapsed + HORIZON);
        let index = match self.free.pop() {
            Some(index) => {
                let entry = &mut self.entries[index as usize];
                entry.deadline = deadline;
                entry.waker = Some(waker);
                entry.live = true;
                index
            }
            None => {
                let index = u32::try_from(self.entries.len()).expect("more than 2^32 timers");
                self.entries.push(Entry {
                    deadline,
                    waker: Some(waker),
                    prev: NIL,
                    next: NIL,
                    slot: 0,
                    generation: 0,
                    live: true,
                });
                index
            }
        };
        self.len += 1;
        self.link(index);
        TimerKey {
            index,
            generation: self.entries[index as usize].generation,
        }
    }

    /// Whether `key` still names a registered (not fired, not cancelled) timer.
    #[cfg(test)]
    pub(crate) fn contains(&self, key: TimerKey) -> bool {
        self.entry(key).is_some()
    }

    /// Replaces the waker of a registered timer; returns false when the key is
    /// stale (the timer fired or was cancelled).
    pub(crate) fn update_waker(&mut self, key: TimerKey, waker: &Waker) -> bool {
        let Some(index) = self.entry(key) else {
            return false;
        };
        let slot = &mut self.entries[index].waker;
        match slot {
            Some(current) if current.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
        true
    }

    /// Removes a registered timer and returns its waker; a stale key is a no-op.
    pub(crate) fn cancel(&mut self, key: TimerKey) -> Option<Waker> {
        let index = self.entry(key)?;
        self.unlink(index as u32);
        self.release(index as u32)
    }

    /// The earliest deadline of any registered timer, in ticks.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        let (level, slot, start) = self.next_slot()?;
        if level == 0 {
            return Some(start);
        }
        let mut earliest = u64::MAX;
        let mut cursor = self.heads[level][slot];
        while cursor != NIL {
            let entry = &self.entries[cursor as usize];
            earliest = earliest.min(entry.deadline);
            cursor = entry.next;
        }
        Some(earliest)
    }

    /// Advances to tick `now`, pushing the waker of every timer whose deadline
    /// is at or before `now` into `fired`. Returns how many fired.
    pub(crate) fn advance(&mut self, now: u64, fired: &mut Vec<Waker>) -> usize {
        let before = fired.len();
        while let Some((level, slot, start)) = self.next_slot() {
            if start > now {
                break;
            }
            self.elapsed = self.elapsed.max(start);
            let mut cursor = std::mem::replace(&mut self.heads[level][slot], NIL);
            self.occupied[level] &= !(1 << slot);
            while cursor != NIL {
                let index = cursor;
                cursor = self.entries[index as usize].next;
                if self.entries[index as usize].deadline <= self.elapsed {
                    if let Some(waker) = self.release(index) {
                        fired.push(waker);
                    }
                } else {
                    self.link(index);
                }
            }
        }
        self.elapsed = self.elapsed.max(now);
        fired.len() - before
    }

    /// Removes every timer, pushing their wakers into `out`.
    pub(crate) fn drain(&mut self, out: &mut Vec<Waker>) {
        for index in 0..self.entries.len() as u32 {
            if self.entries[index as usize].live {
                self.unlink(index);
                if let Some(waker) = self.release(index) {
                    out.push(waker);
                }
            }
        }
    }

    fn entry(&self, key: TimerKey) -> Option<usize> {
        let entry = self.entries.get(key.index as usize)?;
        (entry.live && entry.generation == key.generation).then_some(key.index as usize)
    }

    /// The first non-empty slot in expiry order: `(level, slot, start tick)`.
    fn next_slot(&self) -> Option<(usize, usize, u64)> {
        for level in 0..LEVELS {
            let occupied = self.occupied[level];
            if occupied == 0 {
                continue;
            }
            let shift = SLOT_BITS * level as u32;
            let current = (self.elapsed >> shift) as u32 & (SLOTS as u32 - 1);
            // Level 0's current slot is due now; on higher levels the current
            // slot only holds entries of the next rotation, so it comes last.
            let first = if level == 0 {
                current
            } else {
                (current + 1) % SLOTS as u32
            };
            let slot = (occupied.rotate_right(first).trailing_zeros() + first) as usize % SLOTS;
            let slot_range = 1u64 << shift;
            let level_range = slot_range << SLOT_BITS;
            let mut start = (self.elapsed & !(level_range - 1)) + slot as u64 * slot_range;
            if start < self.elapsed || (level > 0 && start <= self.elapsed) {
                start += level_range;
            }
            return Some((level, slot, start));
        }
        None
    }

    fn link(&mut self, index: u32) {
        let deadline = self.entries[index as usize].deadline;
        let masked = (self.elapsed ^ deadline) | (SLOTS as u64 - 1);
        let significant = 63 - masked.leading_zeros();
        let level = ((significant / SLOT_BITS) as usize).min(LEVELS - 1);
        let slot = (deadline >> (SLOT_BITS * level as u32)) as usize & (SLOTS - 1);
        let head = self.heads[level][slot];
        let entry = &mut self.entries[index as usize];
        entry.prev = NIL;
        entry.next = head;
        entry.slot = (level * SLOTS + slot) as u16;
        if head != NIL {
            self.entries[head as usize].prev = index;
        }
        self.heads[level][slot] = index;
        self.occupied[level] |= 1 << slot;
    }

    fn unlink(&mut self, index: u32) {
        let (prev, next, slot) = {
            let entry = &self.entries[index as usize];
            (entry.prev, entry.next, entry.slot as usize)
        };
        let (level, slot) = (slot / SLOTS, slot % SLOTS);
        if prev == NIL {
            self.heads[level][slot] = next;
            if next == NIL {
                self.occupied[level] &= !(1 << slot);
            }
        } else {
            self.entries[prev as usize].next = next;
        }
        if next != NIL {
            self.entries[next as usize].prev = prev;
        }
    }

    /// Frees an (already unlinked) entry and returns its waker.
    fn release(&mut self, index: u32) -> Option<Waker> {
        let entry = &mut self.entries[index as usize];
        entry.live = false;
        entry.generation = entry.generation.wrapping_add(1);
        entry.prev = NIL;
        entry.next = NIL;
        self.free.push(index);
        self.len -= 1;
        entry.waker.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Tag(usize, Arc<std::sync::Mutex<Vec<usize>>>);
    impl Wake for Tag {
        fn wake(self: Arc<Self>) {
            self.1.lock().unwrap().push(self.0);
        }
    }

    fn waker(tag: usize, log: &Arc<std::sync::Mutex<Vec<usize>>>) -> Waker {
        Waker::from(Arc::new(Tag(tag, log.clone())))
    }

    fn fire(wheel: &mut Wheel, now: u64) {
        let mut fired = Vec::new();
        wheel.advance(now, &mut fired);
        fired.into_iter().for_each(Waker::wake);
    }

    /// A deadline is rounded up by less than one microsecond tick (it was
    /// a millisecond before issue 16), never down.
    #[test]
    fn deadlines_round_up_by_less_than_a_tick() {
        use std::time::Duration;
        let deadline = Duration::from_micros(1500) + Duration::from_nanos(1);
        assert_eq!(super::tick_ceil(deadline), 1501);
        assert_eq!(super::tick_floor(deadline), 1500);
        assert_eq!(super::tick_ceil(Duration::from_micros(1500)), 1500);
        let fires_at = super::tick_start(super::tick_ceil(deadline));
        assert!(fires_at >= deadline && fires_at - deadline < super::TICK);
        assert_eq!(super::tick_start(3_000_000_000), Duration::from_secs(3000));
        assert_eq!(super::tick_ceil(Duration::MAX), u64::MAX);
    }

    #[test]
    fn fires_each_timer_at_its_tick_never_before() {
        // Deadlines spread over every level, including cascades.
        let deadlines: Vec<u64> = vec![
            1, 2, 63, 64, 65, 127, 128, 4095, 4096, 4097, 300_000, 262_143, 262_144, 17_000_000,
        ];
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut wheel = Wheel::new();
        for (i, &d) in deadlines.iter().enumerate() {
            wheel.insert(d, waker(i, &log));
        }
        let mut now = 0;
        let mut seen = 0;
        while seen < deadlines.len() {
            let next = wheel.next_deadline().expect("timers left");
            assert!(next > now, "next deadline {next} not after now {now}");
            // One tick before the deadline nothing fires.
            fire(&mut wheel, next - 1);
            assert_eq!(log.lock().unwrap().len(), seen, "fired early before {next}");
            fire(&mut wheel, next);
            let fired = log.lock().unwrap().clone();
            assert!(fired.len() > seen, "nothing fired at {next}");
            for &i in &fired[seen..] {
                assert_eq!(deadlines[i], next, "timer {i} fired at {next}");
            }
            seen = fired.len();
            now = next;
        }
        assert_eq!(wheel.len(), 0);
        assert_eq!(wheel.next_deadline(), None);
    }

    #[test]
    fn advancing_far_fires_in_deadline_order() {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut wheel = Wheel::new();
        let mut deadlines: Vec<u64> = (0..2000u64).map(|i| (i * 7919) % 100_000 + 1).collect();
        for (i, &d) in deadlines.iter().enumerate() {
            wheel.insert(d, waker(i, &log));
        }
        let mut fired = Vec::new();
        wheel.advance(200_000, &mut fired);
        assert_eq!(fired.len(), 2000);
        fired.into_iter().for_each(Waker::wake);
        let order: Vec<u64> = log.lock().unwrap().iter().map(|&i| deadlines[i]).collect();
        deadlines.sort_unstable();
        assert_eq!(order, deadlines);
    }

    #[test]
    fn cancel_is_exact_and_stale_keys_are_inert() {
        let count = Arc::new(AtomicUsize::new(0));
        struct Count(Arc<AtomicUsize>);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let mut wheel = Wheel::new();
        let keys: Vec<TimerKey> = (0..100)
            .map(|i| wheel.insert(10 + i, Waker::from(Arc::new(Count(count.clone())))))
            .collect();
        for key in keys.iter().step_by(2) {
            assert!(wheel.cancel(*key).is_some());
            assert!(wheel.cancel(*key).is_none(), "double cancel");
        }
        assert_eq!(wheel.len(), 50);
        // Reuse freed entries: stale keys must not see the new timers.
        let fresh = wheel.insert(5, Waker::from(Arc::new(Count(count.clone()))));
        assert!(!wheel.contains(keys[0]));
        assert!(wheel.contains(fresh));
        let mut fired = Vec::new();
        wheel.advance(1000, &mut fired);
        fired.into_iter().for_each(Waker::wake);
        assert_eq!(count.load(Ordering::SeqCst), 51);
        assert!(!wheel.update_waker(fresh, &Waker::noop().clone()));
    }

    #[test]
    fn far_deadlines_clamp_to_horizon_and_past_ones_to_next_tick() {
        let mut wheel = Wheel::new();
        let mut fired = Vec::new();
        wheel.advance(500, &mut fired);
        wheel.insert(u64::MAX, Waker::noop().clone());
        assert_eq!(wheel.next_deadline(), Some(500 + HORIZON));
        wheel.insert(3, Waker::noop().clone());
        assert_eq!(wheel.next_deadline(), Some(501));
        assert_eq!(wheel.advance(501, &mut fired), 1);
        assert_eq!(wheel.advance(500 + HORIZON, &mut fired), 1);
        assert_eq!(wheel.len(), 0);
    }

    #[test]
    fn wrap_around_the_top_level_terminates() {
        let mut wheel = Wheel::new();
        let mut fired = Vec::new();
        wheel.advance(HORIZON, &mut fired);
        wheel.insert(HORIZON * 2 - 1, Waker::noop().clone());
        wheel.insert(HORIZON + 10, Waker::noop().clone());
        assert_eq!(wheel.next_deadline(), Some(HORIZON + 10));
        assert_eq!(wheel.advance(HORIZON * 2, &mut fired), 2);
    }
}

/// The wheel against a model (a `BTreeMap` of deadlines): random inserts
/// over every level, cancels and advances, small and far.
#[cfg(test)]
mod model {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use std::task::{Wake, Waker};

    use proptest::prelude::*;

    use super::{TimerKey, Wheel, HORIZON};

    struct Id(u64, Arc<Mutex<Vec<u64>>>);

    impl Wake for Id {
        fn wake(self: Arc<Self>) {
            self.1.lock().unwrap().push(self.0);
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// A timer this far past the wheel's time (reaching every level,
        /// the past, and beyond the horizon).
        Insert(u64),
        /// Cancel the n-th live timer (modulo their number).
        Cancel(usize),
        /// Advance this far.
        Advance(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => prop_oneof![0..70u64, 0..5_000u64, 0..300_000u64, 0..20_000_000u64, Just(HORIZON + 5)]
                .prop_map(Step::Insert),
            2 => any::<usize>().prop_map(Step::Cancel),
            3 => prop_oneof![0..3u64, 0..100u64, 0..70_000u64, 0..30_000_000u64].prop_map(Step::Advance),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn the_wheel_fires_what_the_model_says_when_it_says(steps in prop::collection::vec(step(), 1..300)) {
            let log = Arc::new(Mutex::new(Vec::new()));
            let mut wheel = Wheel::new();
            // id -> (deadline, key)
            let mut model: BTreeMap<u64, (u64, TimerKey)> = BTreeMap::new();
            let mut now = 0u64;
            for (id, step) in (0u64..).zip(steps) {
                match step {
                    Step::Insert(after) => {
                        let waker = Waker::from(Arc::new(Id(id, log.clone())));
                        let key = wheel.insert(now + after, waker);
                        // What `insert` promises: the next tick at the
                        // earliest, the horizon at the latest.
                        let deadline = (now + after).clamp(now + 1, now + HORIZON);
                        model.insert(id, (deadline, key));
                    }
                    Step::Cancel(n) => {
                        if model.is_empty() {
                            continue;
                        }
                        let victim = *model.keys().nth(n % model.len()).unwrap();
                        let (_, key) = model.remove(&victim).unwrap();
                        prop_assert!(wheel.cancel(key).is_some(), "a live timer cancels");
                        prop_assert!(wheel.cancel(key).is_none(), "a stale key is inert");
                    }
                    Step::Advance(by) => {
                        now += by;
                        let mut fired = Vec::new();
                        wheel.advance(now, &mut fired);
                        fired.into_iter().for_each(Waker::wake);
                        let mut got = std::mem::take(&mut *log.lock().unwrap());
                        got.sort_unstable();
                        let due: Vec<u64> = model
                            .iter()
                            .filter(|(_, (deadline, _))| *deadline <= now)
                            .map(|(&id, _)| id)
                            .collect();
                        prop_assert_eq!(&got, &due, "fired at {}", now);
                        model.retain(|_, (deadline, _)| *deadline > now);
                    }
                }
                prop_assert_eq!(wheel.len(), model.len());
                let earliest = model.values().map(|(deadline, _)| *deadline).min();
                prop_assert_eq!(wheel.next_deadline(), earliest);
            }
        }
    }
}
