//! The glue of the engine's fan-out on a shard: what `Router::route`
//! decides for one message, carried out (a local delivery now; the sends to
//! other shards and route links gathered for `Shard::fan_out`).

use super::{can_take, RouteSends, Shard};
use crate::bus::ShardId;
use crate::route::RouteId;
use crate::session::LocalSub;
use bytes::Bytes;
use shoal_core::proto::Publish;
use std::rc::Rc;

/// What the engine's fan-out decides for one message, carried out on this
/// shard: a local delivery now, the sends to other shards and route links
/// gathered for `fan_out` to hand to `out` (each shard and link once).
pub(super) struct Fan<'a> {
    pub(super) shard: &'a Shard,
    pub(super) p: &'a Publish,
    /// Other shards with plain interest (a bit per shard).
    pub(super) shard_plain: u64,
    /// Other shards picked for a queue group.
    pub(super) shard_queues: Vec<(ShardId, Bytes)>,
    pub(super) routes: RouteSends,
}

impl shoal_engine::Sink for Fan<'_> {
    type Local = Rc<LocalSub>;

    #[inline]
    fn deliver(&mut self, sub: &Rc<LocalSub>) -> bool {
        self.shard.deliver(sub, self.p)
    }

    #[inline]
    fn can_take(&self, sub: &Rc<LocalSub>) -> bool {
        can_take(sub, &self.p.subject)
    }

    #[inline]
    fn connection(&self, sub: &Rc<LocalSub>) -> u64 {
        sub.client.id
    }

    fn skipped_echo(&mut self, sub: &Rc<LocalSub>) {
        if self.shard.tracer.on.get() {
            self.shard
                .trace_local(sub, Some(shoal_core::trace::NOT_DELIVERED_NO_ECHO));
        }
    }

    #[inline]
    fn to_shard(&mut self, shard: ShardId, plain: bool, queue: Option<&Bytes>) {
        if plain {
            self.shard_plain |= 1 << shard;
        }
        if let Some(q) = queue {
            self.shard_queues.push((shard, q.clone()));
        }
    }

    #[inline]
    fn to_route(&mut self, route: RouteId, plain: bool, queue: Option<&Bytes>) {
        if plain {
            self.routes.plain(route);
        }
        if let Some(q) = queue {
            self.routes.queue(route, q.clone());
        }
    }

    #[inline]
    fn draw(&self, n: u64) -> u64 {
        fastrand::u64(..n)
    }
}
