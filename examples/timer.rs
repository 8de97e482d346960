//! Timers on every shard: each shard sleeps, ticks an interval and times out
//! a slow future, then the runtime prints its counters.
//!
//! `cargo run --release --example timer`

use std::time::Duration;

use ringshard::time::{interval, Instant};
use ringshard::{Runtime, ShardId};

fn main() -> std::io::Result<()> {
    let rt = Runtime::new()?;
    println!("{} shards on {:?}", rt.shards(), rt.driver_kind());
    let reports = rt.block_on_all(|shard: ShardId| async move {
        let start = Instant::now();
        ringshard::sleep(Duration::from_millis(20)).await;
        let slept = start.elapsed();

        let mut ticks = interval(Duration::from_millis(10));
        let mut late = Duration::ZERO;
        for _ in 0..10 {
            let scheduled = ticks.tick().await;
            late = late.max(Instant::now() - scheduled);
        }

        let slow = ringshard::sleep(Duration::from_secs(3600));
        let timed_out = ringshard::timeout(Duration::from_millis(5), slow)
            .await
            .is_err();
        format!(
            "{shard}: slept 20 ms in {slept:.2?}, 10 ticks of 10 ms at most {late:.2?} late, \
             timeout fired: {timed_out}"
        )
    });
    for report in reports {
        println!("{report}");
    }
    let total = rt.stats().total();
    println!(
        "timers fired: {}, parks: {}, driver waits: {}",
        total.timers_fired, total.parks, total.driver_waits
    );
    Ok(())
}
