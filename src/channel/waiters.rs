//! A FIFO of parked tasks, woken one at a time: the senders of a full bounded
//! channel waiting for room.
//!
//! Only the slow path locks. `queued` mirrors the number of waiters not yet
//! notified, so the receiver learns with one load that nobody waits;
//! `outstanding` counts every entry (queued or notified), so a sender that
//! is not waiting learns with one load that it must queue behind them.
//!
//! A waiter's life: *queued* (in `order`, counted in `queued`) →
//! *notified* (out of `order`; its task was woken and owns the slot it was
//! woken for) → removed by its owner. An owner that goes away while notified
//! passes the notification on, so a wake is never lost to a dropped future.
//! One that was notified yet found no room (a race with a sender that came
//! before it queued) queues again at the front: it keeps its turn.

use std::collections::VecDeque;
use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;

use slab::Slab;

#[derive(Default)]
pub(crate) struct Waiters {
    queued: AtomicUsize,
    outstanding: AtomicUsize,
    list: Mutex<List>,
}

#[derive(Default)]
struct List {
    slots: Slab<Waiter>,
    order: VecDeque<usize>,
}

struct Waiter {
    waker: Waker,
    notified: bool,
}

impl Waiters {
    fn lock(&self) -> MutexGuard<'_, List> {
        // A panic never happens while the lock is held (no user code runs
        // under it but `Waker::clone`), yet a poisoned lock stays usable.
        self.list
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether any entry is queued or notified: a newcomer waits behind it.
    pub(crate) fn pending(&self) -> bool {
        self.outstanding.load(Ordering::Acquire) > 0
    }

    /// Whether the caller's entry was notified (its turn came).
    pub(crate) fn notified(&self, key: Option<usize>) -> bool {
        key.is_some_and(|k| self.lock().slots.get(k).is_some_and(|w| w.notified))
    }

    /// Queues the caller, or refreshes its waker; re-queues it at the front
    /// if it was notified but found no room. Followed by a SeqCst fence:
    /// the caller must re-check its condition after this.
    pub(crate) fn register(&self, key: &mut Option<usize>, waker: &Waker) {
        let mut list = self.lock();
        match *key {
            Some(k) => {
                let waiter = &mut list.slots[k];
                if !waiter.waker.will_wake(waker) {
                    waiter.waker = waker.clone();
                }
                if waiter.notified {
                    waiter.notified = false;
                    list.order.push_front(k);
                }
            }
            None => {
                let k = list.slots.insert(Waiter {
                    waker: waker.clone(),
                    notified: false,
                });
                list.order.push_back(k);
                *key = Some(k);
            }
        }
        self.queued.store(list.order.len(), Ordering::Relaxed);
        self.outstanding.store(list.slots.len(), Ordering::Relaxed);
        drop(list);
        // Pairs with the fence in `notify_one`: either the notifier sees us
        // queued, or we see the room it made.
        fence(Ordering::SeqCst);
    }

    /// Removes the caller's entry. One that was notified and did not use
    /// its notification (`used == false`) hands it to the next waiter.
    pub(crate) fn remove(&self, key: &mut Option<usize>, used: bool) {
        let Some(k) = key.take() else { return };
        let mut list = self.lock();
        let waiter = list.slots.remove(k);
        self.outstanding.store(list.slots.len(), Ordering::Release);
        if waiter.notified {
            if !used {
                self.wake_next(list);
            }
        } else {
            list.order.retain(|&queued| queued != k);
            self.queued.store(list.order.len(), Ordering::Relaxed);
        }
    }

    /// Wakes the oldest waiter, if any, after the caller made room.
    pub(crate) fn notify_one(&self) {
        // Pairs with the fence in `register`.
        fence(Ordering::SeqCst);
        if self.queued.load(Ordering::Relaxed) > 0 {
            self.wake_next(self.lock());
        }
    }

    fn wake_next(&self, mut list: MutexGuard<'_, List>) {
        let waker = list.order.pop_front().map(|k| {
            let waiter = &mut list.slots[k];
            waiter.notified = true;
            waiter.waker.clone()
        });
        self.queued.store(list.order.len(), Ordering::Relaxed);
        drop(list);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Wakes every waiter (the channel closed).
    pub(crate) fn notify_all(&self) {
        let mut list = self.lock();
        let wakers: Vec<Waker> = std::mem::take(&mut list.order)
            .into_iter()
            .map(|k| {
                let waiter = &mut list.slots[k];
                waiter.notified = true;
                waiter.waker.clone()
            })
            .collect();
        self.queued.store(0, Ordering::Relaxed);
        drop(list);
        wakers.into_iter().for_each(Waker::wake);
    }
}
