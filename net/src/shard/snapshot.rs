//! Builds a shard's answer to monitoring (`Control::Snapshot`), on the
//! shard's own thread, from the shard's `Cell`s (see `crate::snapshot` for
//! the types and why).

use super::Shard;
use crate::snapshot::{ConnSnapshot, ShardSnapshot};
use std::time::{Instant, SystemTime};

/// As nats-server: a client library (it sent `lang`) whose round trip is not
/// known yet gets a PING now, so the next look at `/connz` has an `rtt`.
fn measure_rtt(shard: &Shard) {
    let clients: Vec<_> = shard.clients.borrow().values().cloned().collect();
    for c in clients {
        let m = &c.meta;
        let is_library = c
            .state
            .borrow()
            .connect_options()
            .is_some_and(|o| o.lang.is_some());
        if is_library && m.rtt.get().is_none() && m.ping_sent.get().is_none() {
            m.ping_sent.set(Some(Instant::now()));
            let res = c
                .conn
                .queue(|b| b.extend_from_slice(shoal_core::proto::PING));
            shard.mark_dirty(&c.conn, res);
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
            let state = c.state.borrow();
            let connect = state.connect_options();
            let subs = c.subs.borrow();
            ConnSnapshot {
                cid: c.id,
                shard: shard.id,
                addr: c.addr,
                start: m.start,
                last_activity: now.1.checked_sub(idle).unwrap_or(m.start),
                rtt: m.rtt.get(),
                pending_bytes: c.conn.pending().1,
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
                name: state.name().map(str::to_owned),
                lang: connect.and_then(|o| o.lang.clone()),
                version: connect.and_then(|o| o.version.clone()),
                user: state.auth_user().map(str::to_owned),
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
