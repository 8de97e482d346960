//! A FIFO of parked tasks: the senders of a full bounded channel waiting
//! for room (with grants), and the senders waiting for the receiver to go
//! (woken all at once).
//!
//! Only the slow path locks. `queued` mirrors the number of waiters not yet
//! granted or woken, so the receiver learns with one load that nobody
//! waits, and a sender that is not waiting learns with the same load that
//! it must queue behind them.
//!
//! A waiter's life: *queued* (in `order`, counted in `queued`) → *granted*
//! (out of `order`: [`notify_one`](Waiters::notify_one) took room for it,
//! a reservation it now owns, and woke it) or *woken* (by
//! [`notify_all`](Waiters::notify_all), with nothing granted) → removed by
//! its owner. An owner that goes away holding a grant it did not use gives
//! the room back, and the room goes to the next waiter: a wake is never
//! lost to a dropped future, and room handed to a waiter is never taken by
//! a sender that came later.

use std::collections::VecDeque;
use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;

use slab::Slab;

#[derive(Default)]
pub(crate) struct Waiters {
    queued: AtomicUsize,
    list: Mutex<List>,
}

#[derive(Default)]
struct List {
    slots: Slab<Waiter>,
    order: VecDeque<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Queued,
    /// Room was taken for it (it owns a reservation).
    Granted,
    /// Woken by `notify_all`, nothing granted.
    Woken,
}

struct Waiter {
    waker: Waker,
    state: State,
}

impl Waiters {
    fn lock(&self) -> MutexGuard<'_, List> {
        // A panic never happens while the lock is held (no user code runs
        // under it but `Waker::clone` and the grant), yet a poisoned lock
        // stays usable.
        self.list
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether any waiter is queued: a newcomer waits behind it.
    pub(crate) fn pending(&self) -> bool {
        self.queued.load(Ordering::Acquire) > 0
    }

    /// Whether the caller's entry holds a grant.
    pub(crate) fn granted(&self, key: Option<usize>) -> bool {
        key.is_some_and(|k| {
            self.lock()
                .slots
                .get(k)
                .is_some_and(|w| w.state == State::Granted)
        })
    }

    /// Queues the caller at the back, or refreshes the waker of its entry
    /// (which keeps its place, or its grant); an entry woken by
    /// `notify_all` queues again. Returns whether the entry holds a grant
    /// (one that came after the caller last looked: it must use it now,
    /// its new waker was not the one woken). Followed by a SeqCst fence:
    /// the caller must re-check its condition after this.
    pub(crate) fn register(&self, key: &mut Option<usize>, waker: &Waker) -> bool {
        let mut list = self.lock();
        let mut old = None;
        let granted = match *key {
            Some(k) => {
                let waiter = &mut list.slots[k];
                if !waiter.waker.will_wake(waker) {
                    old = Some(std::mem::replace(&mut waiter.waker, waker.clone()));
                }
                let state = waiter.state;
                if state == State::Woken {
                    waiter.state = State::Queued;
                    list.order.push_back(k);
                }
                state == State::Granted
            }
            None => {
                let k = list.slots.insert(Waiter {
                    waker: waker.clone(),
                    state: State::Queued,
                });
                list.order.push_back(k);
                *key = Some(k);
                false
            }
        };
        self.queued.store(list.order.len(), Ordering::Relaxed);
        drop(list);
        // Executor code runs in a waker's drop: never under the lock.
        drop(old);
        // Pairs with the fence in `notify_one`: either the notifier sees us
        // queued, or we see the room it made.
        fence(Ordering::SeqCst);
        granted
    }

    /// Removes the caller's entry; true if it held a grant, which the
    /// caller has used or must give back ([`Waiters::notify_one`] then
    /// passes the room on).
    pub(crate) fn remove(&self, key: &mut Option<usize>) -> bool {
        let Some(k) = key.take() else { return false };
        let mut list = self.lock();
        let waiter = list.slots.remove(k);
        if waiter.state == State::Queued {
            list.order.retain(|&queued| queued != k);
            self.queued.store(list.order.len(), Ordering::Relaxed);
        }
        drop(list);
        // Executor code runs in a waker's drop: never under the lock.
        let granted = waiter.state == State::Granted;
        drop(waiter);
        granted
    }

    /// Room was made: if a waiter is queued and `grant` takes the room for
    /// it (a reservation), the oldest waiter gets it and is woken.
    pub(crate) fn notify_one(&self, grant: impl FnOnce() -> bool) {
        // Pairs with the fence in `register`.
        fence(Ordering::SeqCst);
        if self.queued.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut list = self.lock();
        let Some(&k) = list.order.front() else { return };
        if !grant() {
            return;
        }
        list.order.pop_front();
        let waiter = &mut list.slots[k];
        waiter.state = State::Granted;
        let waker = waiter.waker.clone();
        self.queued.store(list.order.len(), Ordering::Relaxed);
        drop(list);
        waker.wake();
    }

    /// Wakes every queued waiter, granting nothing (the channel closed).
    pub(crate) fn notify_all(&self) {
        let mut list = self.lock();
        let wakers: Vec<Waker> = std::mem::take(&mut list.order)
            .into_iter()
            .map(|k| {
                let waiter = &mut list.slots[k];
                waiter.state = State::Woken;
                waiter.waker.clone()
            })
            .collect();
        self.queued.store(0, Ordering::Relaxed);
        drop(list);
        wakers.into_iter().for_each(Waker::wake);
    }
}
