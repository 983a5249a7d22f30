//! Counters. Each shard writes only its own `ShardStats` (no cache-line
//! sharing on the hot path); readers sum over shards.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct ShardStats {
    pub connections: AtomicU64,
    pub total_connections: AtomicU64,
    pub in_msgs: AtomicU64,
    pub in_bytes: AtomicU64,
    pub out_msgs: AtomicU64,
    pub out_bytes: AtomicU64,
    pub slow_consumers: AtomicU64,
    pub subscriptions: AtomicU64,
    /// Message batches sent to other shards.
    pub batches_out: AtomicU64,
    /// Message batches received from other shards.
    pub batches_in: AtomicU64,
    /// Bumped whenever the shard gets something done (a read buffer
    /// processed, an inbox batch or control message applied, a connection
    /// accepted): the watchdog's evidence that its loop turns.
    pub progress: AtomicU64,
    /// Writers waiting for a full socket (context for a stall report).
    pub blocked_writers: AtomicU64,
    /// Whether the accept loop still runs (its listen queue is watched).
    pub accepting: std::sync::atomic::AtomicBool,
    /// Times the watchdog saw work waiting and no progress for a second.
    pub stalls: AtomicU64,
    /// Strict interest mode: PONGs sent without every peer's acknowledgement
    /// (the peers did not answer within `sync_timeout`).
    pub interest_sync_timeouts: AtomicU64,
    /// Impossible states met and survived (`Shard::invariant_broken`): a
    /// debug build stops on the first; a release build counts them here
    /// (`/varz` `invariant_violations`, which tests check is 0).
    pub invariant_violations: AtomicU64,
}

/// A point-in-time sum over all shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub connections: u64,
    pub total_connections: u64,
    pub in_msgs: u64,
    pub in_bytes: u64,
    pub out_msgs: u64,
    pub out_bytes: u64,
    pub slow_consumers: u64,
    pub subscriptions: u64,
    pub batches_out: u64,
    pub batches_in: u64,
    pub stalls: u64,
    pub interest_sync_timeouts: u64,
    pub invariant_violations: u64,
}

impl StatsSnapshot {
    pub fn sum(shards: &[std::sync::Arc<ShardStats>]) -> Self {
        let mut s = StatsSnapshot::default();
        for st in shards {
            s.connections += st.connections.load(Relaxed);
            s.total_connections += st.total_connections.load(Relaxed);
            s.in_msgs += st.in_msgs.load(Relaxed);
            s.in_bytes += st.in_bytes.load(Relaxed);
            s.out_msgs += st.out_msgs.load(Relaxed);
            s.out_bytes += st.out_bytes.load(Relaxed);
            s.slow_consumers += st.slow_consumers.load(Relaxed);
            s.subscriptions += st.subscriptions.load(Relaxed);
            s.batches_out += st.batches_out.load(Relaxed);
            s.batches_in += st.batches_in.load(Relaxed);
            s.stalls += st.stalls.load(Relaxed);
            s.interest_sync_timeouts += st.interest_sync_timeouts.load(Relaxed);
            s.invariant_violations += st.invariant_violations.load(Relaxed);
        }
        s
    }
}
