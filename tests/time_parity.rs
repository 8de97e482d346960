//! `Interval` and `timeout` with tokio's meanings (SPEC §4): the behaviours
//! of tokio's `time_interval.rs` and `time_timeout.rs`, written anew, on
//! one shard and on the second of two. Timing here swings, so the checks
//! are about order and lower bounds, with generous upper ones.

mod common;

use std::time::{Duration, Instant};

use ringshard::time::{interval, interval_at, MissedTickBehavior};
use ringshard::{sleep, timeout};

const PERIOD: Duration = Duration::from_millis(50);

/// The first tick is at once; `reset` puts the next a period from now;
/// `reset_immediately` makes it due at once; `reset_after` and `reset_at`
/// put it where they say, and the ticks after keep the period.
#[test]
fn the_resets_put_the_next_tick_where_tokio_does() {
    common::on_one_then_second_shard(|| async {
        let start = Instant::now();
        let mut every = interval(PERIOD);
        let first = every.tick().await;
        assert!(first - start < PERIOD, "the first tick is at once");

        // A long period: `reset_immediately` must not wait for it.
        let mut slow = interval(Duration::from_secs(30));
        slow.tick().await;
        slow.reset_immediately();
        let due = timeout(Duration::from_secs(5), slow.tick()).await;
        assert!(due.is_ok(), "reset_immediately: due at once, not in 30 s");
        let next = timeout(Duration::from_millis(200), slow.tick()).await;
        assert!(next.is_err(), "then a period later");

        let at = Instant::now();
        every.reset();
        let tick = every.tick().await;
        assert!(tick >= at + PERIOD, "reset: a period from now");

        let at = Instant::now();
        every.reset_after(PERIOD * 3);
        let tick = every.tick().await;
        assert!(tick >= at + PERIOD * 3, "reset_after");
        assert!(Instant::now() >= at + PERIOD * 3);

        let target = Instant::now() + PERIOD * 2;
        every.reset_at(target);
        assert_eq!(
            every.tick().await,
            target,
            "reset_at: the tick is the deadline given"
        );
        assert_eq!(
            every.tick().await,
            target + PERIOD,
            "the period goes on from there"
        );
        // A deadline in the past: due at once.
        every.reset_at(Instant::now() - PERIOD);
        let at = Instant::now();
        every.tick().await;
        assert!(Instant::now() - at < PERIOD);
    });
}

/// Missed ticks: `Burst` fires them back to back on the old schedule,
/// `Delay` restarts a period after the late tick, `Skip` keeps the phase.
#[test]
fn missed_ticks_burst_delay_or_skip() {
    common::on_one_then_second_shard(|| async {
        for behaviour in [
            MissedTickBehavior::Burst,
            MissedTickBehavior::Delay,
            MissedTickBehavior::Skip,
        ] {
            let start = Instant::now();
            let mut every = interval_at(start, PERIOD);
            every.set_missed_tick_behavior(behaviour);
            assert_eq!(every.tick().await, start);
            // Late by three and a half periods.
            sleep(PERIOD * 7 / 2).await;
            let late = every.tick().await;
            assert_eq!(
                late,
                start + PERIOD,
                "{behaviour:?}: the missed tick comes first"
            );
            let after = every.tick().await;
            match behaviour {
                MissedTickBehavior::Burst => {
                    assert_eq!(after, start + PERIOD * 2, "burst: the old schedule")
                }
                MissedTickBehavior::Delay => {
                    assert!(
                        after >= start + PERIOD * 7 / 2 + PERIOD,
                        "delay: a period after"
                    )
                }
                MissedTickBehavior::Skip => {
                    assert_eq!(after, start + PERIOD * 4, "skip: the next tick in phase")
                }
            }
        }
    });
}

/// `timeout` polls its future first: a ready future wins even a zero
/// timeout; a late one is `Elapsed` no sooner than the deadline.
#[test]
fn timeouts_poll_the_future_first_and_elapse_no_sooner() {
    common::on_one_then_second_shard(|| async {
        assert_eq!(timeout(Duration::ZERO, async { 3 }).await, Ok(3));
        let start = Instant::now();
        let late = timeout(PERIOD, std::future::pending::<()>()).await;
        assert!(late.is_err());
        assert!(start.elapsed() >= PERIOD);
        // The longest timeout neither panics nor fires.
        assert_eq!(timeout(Duration::MAX, async { 4 }).await, Ok(4));
    });
}
