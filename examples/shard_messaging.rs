//! A sharded in-memory key-value counter: each key belongs to one shard
//! (hash of the key modulo the number of shards), which alone holds its
//! count in a plain `HashMap` (no lock). Client tasks on every shard route
//! each increment to the owning shard's channel and await the new count on a
//! oneshot channel.
//!
//! ```text
//! cargo run --release --example shard_messaging -- --shards 2 --requests 200000 --keys 1000
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::Instant;

use ringshard::channel::{mpsc, oneshot};
use ringshard::{Runtime, ShardId};

/// One increment, sent to the shard that owns `key`.
struct Increment {
    key: u64,
    reply: oneshot::Sender<u64>,
}

/// The shard that owns `key` (a multiplicative hash).
fn owner(key: u64, shards: usize) -> usize {
    ((key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) % shards as u64) as usize
}

/// Client tasks per shard, each with one request in flight.
const CLIENTS: usize = 32;

fn main() -> io::Result<()> {
    let mut shards = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut requests: u64 = 200_000;
    let mut keys: u64 = 1_000;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad {flag}: {value:?}"),
            )
        };
        match flag.as_str() {
            "--shards" => shards = value.parse().map_err(|_| bad())?,
            "--requests" => requests = value.parse().map_err(|_| bad())?,
            "--keys" => keys = value.parse().map_err(|_| bad())?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("unknown flag {flag}; use --shards N --requests N --keys N"),
                ))
            }
        }
    }
    if keys == 0 || requests == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--keys and --requests must be at least 1",
        ));
    }
    let rt = Runtime::builder().worker_threads(shards).build()?;
    let shards = rt.shards();

    // One inbox channel per shard; every shard gets its inbox and a copy of
    // all the senders. A server ends once every shard's clients are done
    // and have dropped their senders.
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..shards)
        .map(|_| mpsc::bounded::<Increment>(1024))
        .unzip();
    let parts: Vec<_> = receivers
        .into_iter()
        .map(|inbox| Some((inbox, senders.clone())))
        .collect();
    drop(senders);
    let parts = Mutex::new(parts);
    let per_client = requests / (shards * CLIENTS) as u64;

    let start = Instant::now();
    let results = rt.block_on_all(move |shard: ShardId| {
        let (inbox, senders) = parts.lock().unwrap()[shard.index()]
            .take()
            .expect("one root future per shard");
        async move {
            // The server: the only code that touches this shard's keys.
            let server = ringshard::spawn(async move {
                let mut inbox = inbox;
                let mut counts: HashMap<u64, u64> = HashMap::new();
                while let Some(Increment { key, reply }) = inbox.recv().await {
                    let count = counts.entry(key).or_insert(0);
                    *count += 1;
                    let _ = reply.send(*count);
                }
                (counts.values().sum::<u64>(), counts.len())
            });
            // The clients: route each increment to its key's owner.
            let senders = Rc::new(senders);
            let remote = Rc::new(RefCell::new(0u64));
            let clients: Vec<_> = (0..CLIENTS as u64)
                .map(|client| {
                    let senders = senders.clone();
                    let remote = remote.clone();
                    ringshard::spawn(async move {
                        let mut state =
                            (client + 1).wrapping_mul(0x9e37_79b9) ^ shard.index() as u64;
                        for _ in 0..per_client {
                            state = state
                                .wrapping_mul(6_364_136_223_846_793_005)
                                .wrapping_add(1_442_695_040_888_963_407);
                            let key = (state >> 33) % keys;
                            let target = owner(key, shards);
                            if target != shard.index() {
                                *remote.borrow_mut() += 1;
                            }
                            let (reply, count) = oneshot::channel();
                            senders[target]
                                .send(Increment { key, reply })
                                .await
                                .expect("the owner shard is running");
                            count.await.expect("the owner replied");
                        }
                        per_client
                    })
                })
                .collect();
            drop(senders);
            let mut sent = 0;
            for client in clients {
                sent += client.await.expect("client task");
            }
            let remote = *remote.borrow();
            let (counted, held) = server.await.expect("server task");
            (shard, sent, remote, counted, held)
        }
    });
    let elapsed = start.elapsed();
    let sent: u64 = results.iter().map(|r| r.1).sum();
    let counted: u64 = results.iter().map(|r| r.3).sum();
    println!(
        "{sent} increments over {shards} shards in {:.3} s: {:.0} increments/s",
        elapsed.as_secs_f64(),
        sent as f64 / elapsed.as_secs_f64()
    );
    for (shard, sent, remote, counted, held) in &results {
        println!(
            "  {shard}: sent {sent} ({:.0}% to another shard), owns {held} keys counting {counted}",
            100.0 * *remote as f64 / (*sent).max(1) as f64
        );
    }
    if counted != sent {
        return Err(io::Error::other(format!(
            "lost increments: sent {sent}, counted {counted}"
        )));
    }
    println!("every increment counted once by its key's owner");
    let stats = rt.stats();
    for (index, s) in stats.shards().iter().enumerate() {
        println!(
            "  shard {index}: remote wakes {}, parks {}, polls {}",
            s.remote_wakes, s.parks, s.polls
        );
    }
    Ok(())
}
