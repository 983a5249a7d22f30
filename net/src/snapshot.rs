//! What a shard reports to monitoring on request (`/connz`, `/subsz`,
//! `/varz` per-shard figures). Monitoring asks every shard over its control
//! channel and each answers from its own thread, so the message path keeps
//! plain `Cell` counters and never shares a cache line with a scraper.

use crate::shard::Shard;
use std::time::{Duration, Instant, SystemTime};

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

/// As nats-server: a client library (it sent `lang`) whose round trip is not
/// known yet gets a PING now, so the next look at `/connz` has an `rtt`.
fn measure_rtt(shard: &Shard) {
    let clients: Vec<_> = shard.clients.borrow().values().cloned().collect();
    for c in clients {
        let m = &c.meta;
        let is_library = m
            .connect
            .borrow()
            .as_ref()
            .is_some_and(|o| o.lang.is_some());
        if is_library && m.rtt.get().is_none() && m.ping_sent.get().is_none() {
            m.ping_sent.set(Some(Instant::now()));
            let res = c.queue(|b| b.extend_from_slice(shoal_core::proto::PING));
            shard.mark_dirty(&c, res);
        }
    }
    shard.flush_dirty();
}

/// Builds this shard's answer (on the shard's thread).
pub(crate) fn take(shard: &Shard, with_subs: bool) -> ShardSnapshot {
    measure_rtt(shard);
    let now = (Instant::now(), SystemTime::now());
    let conns = shard
        .clients
        .borrow()
        .values()
        .map(|c| {
            let m = &c.meta;
            let idle = now.0.saturating_duration_since(m.last_activity.get());
            let connect = m.connect.borrow();
            let subs = c.subs.borrow();
            ConnSnapshot {
                cid: c.id,
                shard: shard.id,
                addr: c.addr,
                start: m.start,
                last_activity: now.1.checked_sub(idle).unwrap_or(m.start),
                rtt: m.rtt.get(),
                pending_bytes: c.pending().1,
                in_msgs: m.in_msgs.get(),
                out_msgs: m.out_msgs.get(),
                in_bytes: m.in_bytes.get(),
                out_bytes: m.out_bytes.get(),
                subscriptions: subs.len(),
                subscriptions_list: if with_subs {
                    subs.values()
                        .map(|s| {
                            let subject = String::from_utf8_lossy(&s.subject[s.prefix_len..]);
                            match &s.queue {
                                Some(q) => format!("{subject} {}", String::from_utf8_lossy(q)),
                                None => subject.into_owned(),
                            }
                        })
                        .collect()
                } else {
                    Vec::new()
                },
                name: c.name.borrow().clone(),
                lang: connect.as_ref().and_then(|o| o.lang.clone()),
                version: connect.as_ref().and_then(|o| o.version.clone()),
                user: connect.as_ref().and_then(|o| o.user.clone()),
            }
        })
        .collect();
    let (index_entries, cache) = shard.index_stats();
    ShardSnapshot {
        id: shard.id,
        conns,
        index_entries,
        cache_entries: cache.entries,
        cache_hits: cache.hits,
        cache_misses: cache.misses,
        route_pending: shard
            .route_links()
            .iter()
            .map(|l| (l.id, l.conn.pending().1))
            .collect(),
    }
}
