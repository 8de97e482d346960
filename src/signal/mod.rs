//! Signals: [`ctrl_c`] and [`unix::signal`] (SPEC §7).
//!
//! Every listener, on any shard or plain thread, sees every delivery of its
//! signal: deliveries are counted per signal, and each listener remembers
//! how many it has seen. Several deliveries between two `recv`s coalesce
//! into one, as with tokio (the kernel itself merges a signal that arrives
//! while one is pending).
//!
//! The process keeps its default disposition for a signal until the first
//! listener for it is made; from then on ringshard handles it for the rest
//! of the process (also as tokio does), so a SIGINT no longer kills the
//! process by itself.
//!
//! How: the handler (async-signal-safe) sets the signal's pending flag and
//! writes a byte to a self-pipe; one dispatcher thread, started with the
//! first listener, reads the pipe, counts the pending signals and wakes
//! their listeners. A full pipe loses no signal: the flag is set before the
//! write, and any byte in the pipe makes the dispatcher look at every flag.

pub mod unix;

use std::io;

/// Resolves at the next Ctrl-C (SIGINT) after its first poll.
///
/// # Cancel safety
///
/// Cancel safe: dropping it only removes its listener; a later `ctrl_c()`
/// waits for the next delivery.
///
/// ```no_run
/// # let rt = ringshard::Runtime::builder().worker_threads(1).build()?;
/// rt.block_on(async {
///     ringshard::signal::ctrl_c().await.expect("a SIGINT listener");
///     println!("Ctrl-C: shutting down");
/// });
/// # Ok::<(), std::io::Error>(())
/// ```
pub async fn ctrl_c() -> io::Result<()> {
    let mut interrupt = unix::signal(unix::SignalKind::interrupt())?;
    interrupt.recv().await;
    Ok(())
}
