//! Each shard's stop signals, made before the shards start (shared by the
//! `graceful_shutdown` and `http_server` examples).

use std::io;

use ringshard::signal::unix::{signal, Signal, SignalKind};
use ringshard::ShardId;

/// Each shard's SIGTERM and SIGINT listeners, all made before any shard
/// starts: a signal that comes while the shards start is seen by all.
pub struct Stops(std::sync::Mutex<Vec<Option<(Signal, Signal)>>>);

impl Stops {
    pub fn new(shards: usize) -> io::Result<std::sync::Arc<Stops>> {
        let mut all = Vec::with_capacity(shards);
        for _ in 0..shards {
            let pair = (
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            );
            all.push(Some(pair));
        }
        Ok(std::sync::Arc::new(Stops(std::sync::Mutex::new(all))))
    }

    pub fn take(&self, shard: ShardId) -> (Signal, Signal) {
        self.0.lock().expect("not poisoned")[shard.index()]
            .take()
            .expect("one root future per shard")
    }
}
