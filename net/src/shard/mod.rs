//! One shard: the connections it accepted, its partition of the subject
//! index, the interest of the other shards, and the inbox tasks that apply
//! what the other shards send.
//!
//! Everything here is touched by this shard's thread only (`Rc`, `RefCell`,
//! `Cell`); other shards are reached through channels. Borrows of the
//! `RefCell`s never live across an `.await`.

mod fan;
mod inbox;
pub(crate) mod lifecycle;
mod link;
use fan::Fan;
mod reload;
mod snapshot;
mod sync;
mod trace;

use link::RouteLink;

use crate::bus::{Batch, Control, Fallback, PeerLink, Remote, ShardId};
use crate::outbound::{Conn, QueueResult};
use crate::route::RouteId;
use crate::runtime;
use crate::session::{Client, LocalSub};
use crate::shared::{Dynamic, Shared};
use crate::stats::ShardStats;
use ahash::AHashMap;
use bytes::Bytes;
use shoal_core::index::IndexError;
use shoal_core::proto::{self as proto, headers::NO_RESPONDERS, write_msg, Publish};
use shoal_core::route::{self as wire, InterestOp, MsgFrame, RouteMsg};
use shoal_engine::client::{Level, Refusal};
use shoal_engine::{Interest, Origin, Outbox, Router, ShardEvent, Want};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

/// Counters kept in `Cell`s on the hot path and published to the shared
/// atomics once per processed batch.
#[derive(Default)]
struct LocalCounters {
    in_msgs: Cell<u64>,
    in_bytes: Cell<u64>,
    out_msgs: Cell<u64>,
    out_bytes: Cell<u64>,
}

/// Messages for other shards gathered while processing one read buffer.
pub(crate) struct Outgoing {
    batches: Vec<Batch>,
}

impl Outgoing {
    pub(crate) fn new(shards: usize) -> Self {
        Outgoing {
            batches: (0..shards).map(|_| Vec::new()).collect(),
        }
    }

    fn push(&mut self, shard: ShardId, remote: Remote) {
        self.batches[shard as usize].push(remote);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.batches.iter().all(Vec::is_empty)
    }
}

/// The connections a shard must flush, and a spare list so neither loses
/// its capacity (no allocation per processed read buffer).
#[derive(Default)]
struct Flush {
    dirty: RefCell<Vec<Rc<Conn>>>,
    /// The other half of `dirty` while it is being flushed.
    spare: RefCell<Vec<Rc<Conn>>>,
    /// A `flush_soon` task is queued.
    scheduled: Cell<bool>,
}

pub(crate) struct Shard {
    pub id: ShardId,
    pub shards: usize,
    pub shared: Arc<Shared>,
    pub stats: Arc<ShardStats>,
    /// The index and the counts deciding what this shard announces (the
    /// engine's `Interest`: own subscriptions, mirrors of the other shards
    /// and of route links, this node's interest for its links).
    interest: RefCell<Interest<Rc<LocalSub>>>,
    /// What interest calls leave for the links and the other shards
    /// (reused; emptied by `carry_out` after each call).
    outbox: RefCell<Outbox>,
    peers: Vec<PeerLink>,
    /// Connections that got data since the last flush.
    flush: Flush,
    pub clients: RefCell<AHashMap<u64, Rc<Client>>>,
    counters: LocalCounters,
    /// Where the shard is in its life (`lifecycle`).
    pub life: lifecycle::Life,
    /// Message tracing (`trace`).
    tracer: trace::Tracer,
    /// What delivering other shards' batches from a client's task passes
    /// on (`deliver_pending_data`); emptied by `pass_on` every batch.
    passed_on: RefCell<Outgoing>,
    /// The receiving ends of this shard's inboxes (`inbox`).
    inbox_rx: inbox::Receivers,
    /// Whether this node is part of a cluster (it has route links to tell).
    clustered: bool,
    /// The route links this shard owns, by slot.
    routes: RefCell<AHashMap<u32, Rc<RouteLink>>>,
    /// Strict interest mode's barriers and syncs (`sync`).
    strict: sync::Strict,
    /// This shard's copy of the reloadable configuration.
    dynamic: RefCell<Arc<Dynamic>>,
}

impl Shard {
    pub(crate) fn new(id: ShardId, shared: Arc<Shared>, peers: Vec<PeerLink>) -> Self {
        let stats = shared.shard_stats[id as usize].clone();
        let clustered = shared.config.cluster.enabled();
        let dynamic = RefCell::new(shared.current());
        let shards = peers.len();
        Shard {
            id,
            shards,
            shared,
            stats,
            interest: RefCell::new(Interest::new(id, peers.len(), clustered)),
            outbox: RefCell::new(Outbox::default()),
            peers,
            flush: Flush::default(),
            clients: RefCell::new(AHashMap::new()),
            counters: LocalCounters::default(),
            life: lifecycle::Life::default(),
            tracer: trace::Tracer::default(),
            passed_on: RefCell::new(Outgoing::new(shards)),
            inbox_rx: inbox::Receivers::default(),
            clustered,
            routes: RefCell::new(AHashMap::new()),
            strict: sync::Strict::default(),
            dynamic,
        }
    }

    fn other_shards(&self) -> impl Iterator<Item = (ShardId, &PeerLink)> {
        self.peers
            .iter()
            .enumerate()
            .filter(move |(i, _)| *i != self.id as usize)
            .map(|(i, p)| (i as ShardId, p))
    }

    /// An impossible state was met (a mirror entry missing or present
    /// twice, a refcount or barrier count gone): a debug build stops here;
    /// a release build logs it, counts it (`/varz`
    /// `invariant_violations`) and goes on, as the code used to tolerate
    /// it silently.
    #[track_caller]
    pub(super) fn invariant_broken(&self, what: &str) {
        debug_assert!(false, "shard {}: invariant broken: {what}", self.id);
        self.stats.invariant_violations.fetch_add(1, Relaxed);
        tracing::error!("shard {}: invariant broken: {what}", self.id);
    }

    /// Debug builds: the engine's `check_invariants` after every change of
    /// the interest (it walks the whole index, so not in release builds).
    #[inline]
    fn check_interest(&self) {
        #[cfg(debug_assertions)]
        if let Err(b) = self.interest.borrow().check_invariants() {
            self.invariant_broken(b.0);
        }
    }

    fn broadcast(&self, make: impl Fn() -> Control) {
        for (_, peer) in self.other_shards() {
            // Unbounded: never blocks. A closed channel means that shard has
            // stopped, when nothing needs its interest any more.
            let _ = peer.send_control(make());
        }
    }

    // ----- subscriptions -----

    /// Adds a client's subscription and announces the interest.
    pub(crate) fn subscribe(&self, sub: Rc<LocalSub>) -> Result<(), IndexError> {
        self.interest.borrow_mut().subscribe(
            &sub.subject,
            sub.queue.as_ref(),
            sub.clone(),
            &mut self.outbox.borrow_mut(),
        )?;
        let client = sub.client.clone();
        client.subs.borrow_mut().insert(sub.sid.clone(), sub);
        self.stats.subscriptions.fetch_add(1, Relaxed);
        self.check_interest();
        self.carry_out();
        Ok(())
    }

    /// Removes a subscription (from the index and its client) and retracts
    /// the interest when it was the last of its kind here.
    pub(crate) fn unsubscribe(&self, sub: &Rc<LocalSub>) {
        let removed = self.interest.borrow_mut().unsubscribe(
            &sub.subject,
            sub.queue.as_ref(),
            sub,
            &mut self.outbox.borrow_mut(),
        );
        match removed {
            Ok(false) => return,
            Ok(true) => {}
            // Out of the index all the same.
            Err(broken) => self.invariant_broken(broken.0),
        }
        {
            let mut subs = sub.client.subs.borrow_mut();
            if subs.get(&sub.sid).is_some_and(|s| Rc::ptr_eq(s, sub)) {
                subs.remove(&sub.sid);
            }
        }
        self.stats.subscriptions.fetch_sub(1, Relaxed);
        self.check_interest();
        self.carry_out();
    }

    /// Carries out what the last interest call left in the outbox: the
    /// node's interest changes on this shard's route links, then the
    /// events for the other shards.
    pub(super) fn carry_out(&self) {
        let mut out = self.outbox.borrow_mut();
        for op in out.to_links.drain(..) {
            self.tell_links(op);
        }
        let from = self.id;
        for event in out.to_shards.drain(..) {
            self.broadcast(|| Control::Interest {
                from,
                event: event.clone(),
            });
        }
    }

    /// A change of this node's interest, for every link of this shard.
    fn tell_links(&self, op: InterestOp) {
        for link in self.routes.borrow().values() {
            let res = link.send_interest(op.clone());
            self.mark_dirty(&link.conn, res);
        }
    }

    // ----- the publish path -----

    /// Routes one message published by a local client (`None`: by the
    /// server itself, a trace event): local subscribers get it now, other
    /// shards through `out`, peer nodes through their route links (once
    /// each). Returns whether anyone got it.
    pub(crate) fn publish(
        &self,
        from: Option<&Rc<Client>>,
        p: &Publish,
        out: &mut Outgoing,
    ) -> bool {
        self.count_in(p);
        let no_echo = from
            .filter(|f| !f.state.borrow().flags().echo)
            .map(|f| f.id);
        self.fan_out(p, Origin::Client { no_echo }, Want::ALL, out)
    }

    /// The one fan-out of a message on this shard (the engine's
    /// `Router::route` decides; this carries out): local subscribers get
    /// it now, other shards and route links through `out`.
    fn fan_out(&self, p: &Publish, origin: Origin, want: Want<'_>, out: &mut Outgoing) -> bool {
        let m = self.interest.borrow_mut().matches(&p.subject);
        let router = Router {
            shard: self.id,
            prefer_local: self.shared.config.cluster.queue_prefer_local,
        };
        let mut fan = Fan {
            shard: self,
            p,
            shard_plain: 0,
            shard_queues: Vec::new(),
            routes: RouteSends::default(),
        };
        let delivered = router.route(&m, origin, want, &mut fan);
        let Fan {
            shard_plain,
            shard_queues,
            routes,
            ..
        } = fan;
        if shard_plain != 0 || !shard_queues.is_empty() {
            let fallback = origin.forward_fallback(self.id);
            self.forward_to_shards(p, shard_plain, &shard_queues, fallback, out);
        }
        if !routes.0.is_empty() {
            self.send_to_routes(p, routes, out);
        }
        delivered
    }

    fn count_in(&self, p: &Publish) {
        self.counters.in_msgs.set(self.counters.in_msgs.get() + 1);
        self.counters.in_bytes.set(
            self.counters.in_bytes.get()
                + p.payload.len() as u64
                + p.headers.as_ref().map_or(0, |h| h.len() as u64),
        );
    }

    /// Queues one batch entry per other shard that has plain interest
    /// (`remote_plain`, a bit per shard) or was picked for a queue group.
    fn forward_to_shards(
        &self,
        p: &Publish,
        remote_plain: u64,
        remote_queues: &[(ShardId, Bytes)],
        fallback: Fallback,
        out: &mut Outgoing,
    ) {
        for (j, _) in self.other_shards() {
            let plain = remote_plain & (1 << j) != 0;
            let queues: Vec<Bytes> = remote_queues
                .iter()
                .filter(|(s, _)| *s == j)
                .map(|(_, q)| q.clone())
                .collect();
            if plain || !queues.is_empty() {
                out.push(
                    j,
                    Remote {
                        publish: p.clone(),
                        plain,
                        queues,
                        route: None,
                        fallback,
                        trace: self.trace_tag(),
                    },
                );
            }
        }
    }

    /// Sends a message to the route links picked for it: written here on
    /// this shard's links, through `out` for the other shards' links.
    fn send_to_routes(&self, p: &Publish, routes: RouteSends, out: &mut Outgoing) {
        for (r, plain, queues) in routes.0 {
            if r.shard == self.id {
                self.send_to_route(r.slot, p, plain, &queues);
            } else {
                out.push(
                    r.shard,
                    Remote {
                        publish: p.clone(),
                        plain,
                        queues,
                        route: Some(r.slot),
                        fallback: Fallback::default(),
                        trace: self.trace_tag(),
                    },
                );
            }
        }
    }

    /// Routes one message that arrived from a peer node: to this node's
    /// subscribers only (local now, other shards through `out`), never to
    /// another route. `plain` and `queues` say what the peer picked this node
    /// for.
    pub(crate) fn publish_from_route(&self, link: &RouteLink, msg: &RouteMsg, out: &mut Outgoing) {
        if msg
            .headers
            .as_deref()
            .is_some_and(shoal_core::trace::requested)
            && self.trace_begin_route(link, msg)
        {
            self.publish_from_route_now(msg, out);
            self.trace_end();
            return;
        }
        self.publish_from_route_now(msg, out);
    }

    fn publish_from_route_now(&self, msg: &RouteMsg, out: &mut Outgoing) {
        let p = Publish {
            subject: msg.subject.clone(),
            reply: msg.reply.clone(),
            headers: msg.headers.clone(),
            payload: msg.payload.clone(),
        };
        self.count_in(&p);
        let want = Want {
            plain: msg.plain,
            queues: Some(&msg.queues),
        };
        self.fan_out(&p, Origin::Route, want, out);
    }

    /// Writes a message on one of this shard's route links.
    fn send_to_route(&self, slot: u32, p: &Publish, plain: bool, queues: &[Bytes]) {
        if self.tracer.on.get() {
            // The next server needs the hop this egress is.
            let traced = self.trace_route(slot, p);
            return self.send_to_route_now(slot, &traced, plain, queues);
        }
        self.send_to_route_now(slot, p, plain, queues)
    }

    fn send_to_route_now(&self, slot: u32, p: &Publish, plain: bool, queues: &[Bytes]) {
        let routes = self.routes.borrow();
        let Some(link) = routes.get(&slot) else {
            // The link went down after the publisher picked it.
            return;
        };
        // The peer would refuse it (and a link must not carry what its far
        // end drops): same rule as the decoder's.
        if !shoal_core::subject::is_routable(&p.subject)
            || p.reply
                .as_deref()
                .is_some_and(|r| !shoal_core::subject::is_routable(r))
        {
            link.stats.refused_msgs.fetch_add(1, Relaxed);
            return;
        }
        let frame = MsgFrame {
            subject: &p.subject,
            reply: p.reply.as_deref(),
            headers: p.headers.as_deref(),
            payload: &p.payload,
            plain,
            queues: queues.iter().map(|q| &q[..]).collect(),
        };
        // Every frame within the protocol's limit: the queue groups the
        // peer was picked for are named over as many frames as it takes
        // (each group still gets the message once). A message that cannot
        // fit at all (only possible with a subject or payload larger than
        // any node may accept) is refused here like an unroutable one.
        let newly_dirty = if frame.encoded_bound() <= wire::MAX_FRAME {
            link.conn.queue(|b| wire::write_msg(b, &frame)) == QueueResult::NewlyDirty
        } else {
            let Some(runs) = wire::msg_queue_runs(&frame, wire::MAX_FRAME) else {
                link.stats.refused_msgs.fetch_add(1, Relaxed);
                return;
            };
            let mut newly_dirty = false;
            for (i, run) in runs.into_iter().enumerate() {
                let part = MsgFrame {
                    plain: plain && i == 0,
                    queues: frame.queues[run].to_vec(),
                    ..frame
                };
                if !part.plain && part.queues.is_empty() {
                    continue;
                }
                match link.conn.queue(|b| wire::write_msg(b, &part)) {
                    QueueResult::NewlyDirty => newly_dirty = true,
                    QueueResult::Queued => {}
                    QueueResult::SlowConsumer | QueueResult::Closed => break,
                }
            }
            newly_dirty
        };
        link.stats.out_msgs.fetch_add(1, Relaxed);
        link.stats.out_bytes.fetch_add(
            (p.payload.len() + p.headers.as_ref().map_or(0, |h| h.len())) as u64,
            Relaxed,
        );
        if newly_dirty {
            self.flush.dirty.borrow_mut().push(link.conn.clone());
        }
    }

    /// A request nobody can answer: tell a client that asked for it with a
    /// `503` status on its reply subject, as nats-server does. `prefix` is
    /// the client's account prefix (its subscriptions are indexed under it).
    pub(crate) fn no_responders(&self, from: &Rc<Client>, reply: &[u8], prefix: &[u8]) {
        if !from.state.borrow().wants_no_responders() {
            return;
        }
        let indexed;
        let key = if prefix.is_empty() {
            reply
        } else {
            indexed = [prefix, reply].concat();
            &indexed[..]
        };
        let own = self
            .interest
            .borrow_mut()
            .local_match(key, |s| Rc::ptr_eq(&s.client, from));
        if let Some(sub) = own {
            let res = from
                .conn
                .queue(|buf| write_msg(buf, reply, &sub.sid, None, Some(NO_RESPONDERS), b""));
            self.mark_dirty(&from.conn, res);
        }
    }

    /// Delivers to one local subscription. False if it could not take it.
    #[inline]
    fn deliver(&self, s: &Rc<LocalSub>, p: &Publish) -> bool {
        if self.tracer.on.get() {
            return self.deliver_traced(s, p);
        }
        self.deliver_now(s, p)
    }

    fn deliver_now(&self, s: &Rc<LocalSub>, p: &Publish) -> bool {
        let c = &s.client;
        if !can_take(s, &p.subject) {
            return false;
        }
        // A client that did not announce header support gets the payload
        // only, as from nats-server.
        let headers = p
            .headers
            .as_deref()
            .filter(|_| c.state.borrow().flags().headers);
        let res = c.conn.queue(|buf| {
            write_msg(
                buf,
                &p.subject[s.prefix_len..],
                &s.sid,
                p.reply.as_deref(),
                headers,
                &p.payload,
            )
        });
        match res {
            QueueResult::NewlyDirty => self.flush.dirty.borrow_mut().push(c.conn.clone()),
            QueueResult::Queued => {}
            QueueResult::SlowConsumer | QueueResult::Closed => return false,
        }
        let bytes = p.payload.len() as u64 + headers.map_or(0, |h| h.len() as u64);
        self.counters.out_msgs.set(self.counters.out_msgs.get() + 1);
        self.counters
            .out_bytes
            .set(self.counters.out_bytes.get() + bytes);
        c.meta.out_msgs.set(c.meta.out_msgs.get() + 1);
        c.meta.out_bytes.set(c.meta.out_bytes.get() + bytes);
        if let Some(reply) = &p.reply {
            c.state.borrow_mut().delivered_request(reply, Instant::now);
        }
        let n = s.delivered.get() + 1;
        s.delivered.set(n);
        if s.max.get() == Some(n) {
            self.unsubscribe(s);
        }
        true
    }

    /// Flushes the dirty connections once the tasks already runnable on
    /// this shard have run: when several connections' reads complete in one
    /// turn of the reactor (eight requesters writing to one responder), the
    /// responder gets one `send` for all of them instead of one each. With a
    /// single runnable task the flusher runs right after it.
    pub(crate) fn flush_soon(self: &Rc<Self>) {
        if self.flush.dirty.borrow().is_empty() {
            self.publish_counters();
            return;
        }
        if self.flush.scheduled.replace(true) {
            return;
        }
        let me = self.clone();
        runtime::spawn_detached(async move {
            me.flush.scheduled.set(false);
            me.flush_dirty();
        });
    }

    /// Writes every connection that got data since the last flush and
    /// publishes the counters.
    pub(crate) fn flush_dirty(&self) {
        // Swap with a spare list so neither loses its capacity: no
        // allocation per processed read buffer.
        let mut batch = std::mem::take(&mut *self.flush.spare.borrow_mut());
        loop {
            std::mem::swap(&mut batch, &mut *self.flush.dirty.borrow_mut());
            if batch.is_empty() {
                break;
            }
            for c in batch.drain(..) {
                c.flush();
            }
        }
        *self.flush.spare.borrow_mut() = batch;
        self.publish_counters();
    }

    fn publish_counters(&self) {
        let c = &self.counters;
        for (cell, atomic) in [
            (&c.in_msgs, &self.stats.in_msgs),
            (&c.in_bytes, &self.stats.in_bytes),
            (&c.out_msgs, &self.stats.out_msgs),
            (&c.out_bytes, &self.stats.out_bytes),
        ] {
            let v = cell.replace(0);
            if v != 0 {
                atomic.fetch_add(v, Relaxed);
            }
        }
    }

    /// Carries out a refusal the engine decided for a client: the log line
    /// as nats-server logs it (`<addr> - cid:<id> - ` in front),
    /// `-ERR '<text>'`, and the close once that is flushed when the
    /// refusal is fatal.
    pub(crate) fn refuse(&self, client: &Client, r: &Refusal) {
        if let Some(log) = &r.log {
            let (addr, id, text) = (client.addr, client.id, &log.text);
            match log.level {
                Level::Error => tracing::error!("{addr} - cid:{id} - {text}"),
                Level::Info => tracing::info!("{addr} - cid:{id} - {text}"),
            }
        }
        let res = client.conn.queue(|b| proto::write_err(b, &r.err));
        self.mark_dirty(&client.conn, res);
        if let Some(reason) = r.close {
            client.conn.close_after_flush(reason);
        }
    }

    /// Marks a client as needing a flush (for frames queued outside the
    /// delivery path: PONG, +OK, -ERR, INFO).
    pub(crate) fn mark_dirty(&self, c: &Rc<Conn>, res: QueueResult) {
        if res == QueueResult::NewlyDirty {
            self.flush.dirty.borrow_mut().push(c.clone());
        }
    }

    /// Sends the batches gathered for other shards: one channel send per
    /// shard. Waits when a shard's channel is full (backpressure).
    pub(crate) async fn send_batches(&self, out: &mut Outgoing) {
        for (j, batch) in out.batches.iter_mut().enumerate() {
            if batch.is_empty() {
                continue;
            }
            let b = std::mem::take(batch);
            self.stats.batches_out.fetch_add(1, Relaxed);
            if self.peers[j].send_data(b).await.is_err() {
                // That shard has stopped (shutdown): nobody there to deliver to.
            }
        }
    }

    // ----- routes -----

    /// A new link on this shard: it gets this node's interest snapshot, then
    /// every change after it.
    pub(crate) fn add_route(&self, link: Rc<RouteLink>) {
        let ops = self.interest.borrow().node_snapshot();
        link::queue_snapshot(&link, ops);
        link.conn.flush();
        self.routes.borrow_mut().insert(link.id.slot, link);
    }

    /// A link of this shard closed: everything it announced goes, on every
    /// shard, and syncs no longer wait for it.
    pub(crate) fn remove_route(&self, link: &Rc<RouteLink>) {
        self.routes.borrow_mut().remove(&link.id.slot);
        let route = link.id;
        let removed = self.interest.borrow_mut().route_down(
            route,
            &mut link.interest.borrow_mut(),
            &mut self.outbox.borrow_mut(),
        );
        if let Err(broken) = removed {
            self.invariant_broken(broken.0);
        }
        self.check_interest();
        self.carry_out();
        for done in self.strict.link_closed(route.slot) {
            self.sync_complete(done);
        }
    }

    /// An interest change announced by the peer of one of this shard's links:
    /// applied here and broadcast to the other shards as a delta.
    pub(crate) fn route_interest(&self, link: &RouteLink, op: InterestOp) {
        let announced = self.interest.borrow_mut().route_announced(
            link.id,
            &mut link.interest.borrow_mut(),
            op,
            &mut self.outbox.borrow_mut(),
        );
        match announced {
            Ok(None) => return,
            Ok(Some(delta)) if delta > 0 => {
                link.stats.subscriptions.fetch_add(delta as u64, Relaxed);
            }
            Ok(Some(delta)) => {
                link.stats
                    .subscriptions
                    .fetch_sub(delta.unsigned_abs() as u64, Relaxed);
            }
            Err(broken) => self.invariant_broken(broken.0),
        }
        self.check_interest();
        self.carry_out();
    }

    /// Another shard's interest event: mirrored here, and this node's
    /// interest told to this shard's links when it changed.
    pub(super) fn apply_interest_event(&self, from: ShardId, event: &ShardEvent) {
        let applied =
            self.interest
                .borrow_mut()
                .apply_event(from, event, &mut self.outbox.borrow_mut());
        if let Err(broken) = applied {
            self.invariant_broken(broken.0);
        }
        self.check_interest();
        self.carry_out();
    }

    /// Whether accounts are configured (without cloning the configuration:
    /// asked for every PUB).
    pub(crate) fn accounts_enabled(&self) -> bool {
        self.dynamic.borrow().auth.accounts().enabled()
    }

    /// The reloadable configuration as this shard applies it.
    pub(crate) fn current(&self) -> Arc<Dynamic> {
        self.dynamic.borrow().clone()
    }

    /// Entries in the index and its cache figures (monitoring).
    pub(crate) fn index_stats(&self) -> (usize, shoal_core::index::CacheStats) {
        self.interest.borrow().stats()
    }

    /// The links this shard owns (lifecycle: closing them last).
    pub(crate) fn route_links(&self) -> Vec<Rc<RouteLink>> {
        self.routes.borrow().values().cloned().collect()
    }

    /// The cluster's client URLs changed: every client gets a fresh INFO
    /// (`connect_urls`), as nats-server sends.
    fn send_info_to_clients(&self) {
        let clients: Vec<_> = self.clients.borrow().values().cloned().collect();
        for c in &clients {
            let state = c.state.borrow();
            if !state.is_authenticated() && self.current().auth.required() {
                continue;
            }
            let info = self.shared.info_for(c.id, c.addr, state.nonce());
            let res = c.conn.queue(|b| proto::write_info(b, &info));
            self.mark_dirty(&c.conn, res);
        }
        self.flush_dirty();
    }
}

/// Whether a local subscription can take a message on `subject` now: its
/// connection is not closing, it has not reached its `UNSUB` max, and its
/// permissions do not deny the subject (a wildcard subscription overlapping
/// the deny list). Checked on delivery and, before committing, by every
/// queue pick, so a member that cannot take a message is passed over as by
/// nats-server.
#[inline]
fn can_take(s: &LocalSub, subject: &[u8]) -> bool {
    refusal(s, subject).is_none()
}

/// Why a subscription cannot take a message now (in nats-server's words,
/// for message traces), or None when it can.
#[inline]
fn refusal(s: &LocalSub, subject: &[u8]) -> Option<&'static str> {
    use shoal_core::trace::{
        NOT_DELIVERED_AUTO_UNSUB, NOT_DELIVERED_CLIENT_CLOSED, NOT_DELIVERED_SUB_DENY,
    };
    let c = &s.client;
    let subject = &subject[s.prefix_len.min(subject.len())..];
    if c.conn.is_closing() {
        Some(NOT_DELIVERED_CLIENT_CLOSED)
    } else if s.max.get().is_some_and(|max| s.delivered.get() >= max) {
        Some(NOT_DELIVERED_AUTO_UNSUB)
    } else if s.deny_filter.get() && c.state.borrow().denies_delivery(subject) {
        Some(NOT_DELIVERED_SUB_DENY)
    } else {
        None
    }
}

/// The route links one message goes to: each once, with whether the peer
/// has plain interest and which of its queue groups were picked.
#[derive(Default)]
struct RouteSends(Vec<(RouteId, bool, Vec<Bytes>)>);

impl RouteSends {
    fn entry(&mut self, r: RouteId) -> &mut (RouteId, bool, Vec<Bytes>) {
        match self.0.iter().position(|e| e.0 == r) {
            Some(i) => &mut self.0[i],
            None => {
                self.0.push((r, false, Vec::new()));
                self.0.last_mut().expect("just pushed")
            }
        }
    }

    fn plain(&mut self, r: RouteId) {
        self.entry(r).1 = true;
    }

    fn queue(&mut self, r: RouteId, name: Bytes) {
        self.entry(r).2.push(name);
    }
}

/// With `-D`: once a second, a line per shard with its traffic and anything
/// waiting (channel depth, connections whose socket is full, bytes queued),
/// so a stall is visible in the log.
async fn debug_report(shard: Rc<Shard>) {
    let mut last = (0, 0, 0, 0);
    loop {
        runtime::sleep(std::time::Duration::from_secs(1)).await;
        let st = &shard.stats;
        let now = (
            st.in_msgs.load(Relaxed),
            st.out_msgs.load(Relaxed),
            st.batches_in.load(Relaxed),
            st.batches_out.load(Relaxed),
        );
        let (blocked, queued) = shard.clients.borrow().values().fold((0, 0), |(b, q), c| {
            let (is_blocked, bytes) = c.conn.pending();
            (b + usize::from(is_blocked), q + bytes)
        });
        let depth = shard.inbox_rx.data.get().map_or(0, |(r, _)| r.len());
        if now != last || blocked > 0 || queued > 0 || depth > 0 {
            tracing::debug!(
                "shard {}: in {} out {} batches in {} out {}; data inbox depth {depth}, blocked writers {blocked}, queued bytes {queued}",
                shard.id,
                now.0 - last.0,
                now.1 - last.1,
                now.2 - last.2,
                now.3 - last.3
            );
        }
        last = now;
    }
}
