/// Counters of one shard since the runtime started. A shard publishes them
/// before it parks, when `block_on` returns, and every 64 turns while it is
/// busy, so a busy shard's figures may lag by that much.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardStats {
    /// Tasks spawned on this shard.
    pub tasks_spawned: u64,
    /// Task polls.
    pub polls: u64,
    /// Tasks that arrived through the inbox (woken or spawned from another thread).
    pub remote_wakes: u64,
    /// Tasks stolen from other shards.
    pub steals: u64,
    /// I/O ops (SQEs) submitted.
    pub ops_submitted: u64,
    /// I/O ops completed.
    pub ops_completed: u64,
    /// Calls into the kernel's driver: `io_uring_enter` or `epoll_wait`.
    pub driver_waits: u64,
    /// Times the shard blocked because it had nothing to do.
    pub parks: u64,
    /// Timers fired.
    pub timers_fired: u64,
    /// Times the completion queue overflowed into the kernel's backlog.
    pub cq_overflows: u64,
    /// Buffered reads (io_uring) that found the shard's buffer ring empty
    /// and read unbuffered instead. See `Builder::buffered_reads`.
    pub recv_buffer_shortages: u64,
    /// Times a socket's buffered receive was paused because it held its cap
    /// of unread buffers.
    pub recv_pauses: u64,
    /// Unexpected errors from the kernel's driver call (`io_uring_enter`
    /// failing with `EBADR`, `ENOMEM`, ...): each is logged once per errno
    /// and the shard carries on.
    pub driver_errors: u64,
    /// A gauge, not a counter: the I/O ops the shard's driver holds now
    /// (io_uring: submitted and not yet completed, multishot receives and
    /// accepts included; epoll: ops waiting for readiness). Summed by
    /// [`RuntimeStats::total`] like the rest.
    pub ops_in_flight: u64,
}

/// Per-shard counters, from [`crate::Runtime::stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeStats {
    shards: Vec<ShardStats>,
}

impl RuntimeStats {
    pub(crate) fn new(shards: Vec<ShardStats>) -> RuntimeStats {
        RuntimeStats { shards }
    }

    /// The counters of each shard, in shard order.
    pub fn shards(&self) -> &[ShardStats] {
        &self.shards
    }

    /// The counters summed over all shards.
    pub fn total(&self) -> ShardStats {
        self.shards
            .iter()
            .fold(ShardStats::default(), |a, b| ShardStats {
                tasks_spawned: a.tasks_spawned + b.tasks_spawned,
                polls: a.polls + b.polls,
                remote_wakes: a.remote_wakes + b.remote_wakes,
                steals: a.steals + b.steals,
                ops_submitted: a.ops_submitted + b.ops_submitted,
                ops_completed: a.ops_completed + b.ops_completed,
                driver_waits: a.driver_waits + b.driver_waits,
                parks: a.parks + b.parks,
                timers_fired: a.timers_fired + b.timers_fired,
                cq_overflows: a.cq_overflows + b.cq_overflows,
                recv_buffer_shortages: a.recv_buffer_shortages + b.recv_buffer_shortages,
                recv_pauses: a.recv_pauses + b.recv_pauses,
                driver_errors: a.driver_errors + b.driver_errors,
                ops_in_flight: a.ops_in_flight + b.ops_in_flight,
            })
    }
}
