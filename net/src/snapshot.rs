//! What a shard reports to monitoring on request (`/connz`, `/subsz`,
//! `/varz` per-shard figures). Monitoring asks every shard over its control
//! channel and each answers from its own thread, so the message path keeps
//! plain `Cell` counters and never shares a cache line with a scraper.
//!
//! Only the answer's types live here (plain data, part of the public API);
//! the shard builds them (`shard::snapshot::take`).

use std::time::{Duration, SystemTime};

/// One client connection.
#[derive(Debug, Clone)]
pub struct ConnSnapshot {
    pub cid: u64,
    pub shard: u16,
    pub addr: std::net::SocketAddr,
    pub start: SystemTime,
    pub last_activity: SystemTime,
    pub rtt: Option<Duration>,
    pub pending_bytes: usize,
    pub in_msgs: u64,
    pub out_msgs: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
    pub subscriptions: usize,
    /// Subjects (with ` queue` for queue subscriptions), when asked for.
    pub subscriptions_list: Vec<String>,
    pub name: Option<String>,
    pub lang: Option<String>,
    pub version: Option<String>,
    pub user: Option<String>,
}

/// One shard's answer.
#[derive(Debug, Clone, Default)]
pub struct ShardSnapshot {
    pub id: u16,
    pub conns: Vec<ConnSnapshot>,
    /// Entries in this shard's subject index (its own subscriptions, other
    /// shards' and peers' interest).
    pub index_entries: usize,
    pub cache_entries: usize,
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Bytes queued on each route link this shard owns.
    pub route_pending: Vec<(crate::route::RouteId, usize)>,
}
