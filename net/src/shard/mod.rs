//! One shard: the connections it accepted, its partition of the subject
//! index, the interest of the other shards, and the inbox tasks that apply
//! what the other shards send.
//!
//! Everything here is touched by this shard's thread only (`Rc`, `RefCell`,
//! `Cell`); other shards are reached through channels. Borrows of the
//! `RefCell`s never live across an `.await`.

pub(crate) mod lifecycle;
mod link;
mod snapshot;
mod trace;

use link::RouteLink;

use crate::bus::{Batch, Control, Fallback, Inbox, PeerLink, Remote, ShardId};
use crate::outbound::{Client, CloseReason, LocalSub, QueueResult};
use crate::route::RouteId;
use crate::runtime::{self, LocalEvent};
use crate::shared::{Dynamic, Shared};
use crate::stats::ShardStats;
use ahash::AHashMap;
use bytes::Bytes;
use shoal_core::auth::{ConnectContext, FastCheck};
use shoal_core::index::{IndexError, Matches};
use shoal_core::proto::{self as proto, headers::NO_RESPONDERS, write_msg, Publish};
use shoal_core::route::{self as wire, InterestOp, MsgFrame, RouteMsg};
use shoal_engine::{Announce, Delta, Interest, Origin, Peer, Router, Want};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

/// What a subscription in a shard's index points at (the engine's type;
/// a local subscription is held by its `Rc`, compared by address).
pub(crate) type Target = shoal_engine::Target<Rc<LocalSub>>;

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

pub(crate) struct Shard {
    pub id: ShardId,
    pub shards: usize,
    pub shared: Arc<Shared>,
    pub stats: Arc<ShardStats>,
    /// The index and the counts deciding what this shard announces (the
    /// engine's `Interest`: own subscriptions, mirrors of the other shards
    /// and of route links, this node's interest for its links).
    interest: RefCell<Interest<Rc<LocalSub>>>,
    peers: Vec<PeerLink>,
    dirty: RefCell<Vec<Rc<Client>>>,
    /// The other half of `dirty` while it is being flushed.
    flushing: RefCell<Vec<Rc<Client>>>,
    /// A `flush_soon` task is queued.
    flush_scheduled: Cell<bool>,
    pub clients: RefCell<AHashMap<u64, Rc<Client>>>,
    counters: LocalCounters,
    /// Set when the shard stops accepting (lame duck or shutdown).
    pub stop_accepting: LocalEvent,
    /// Set when the shard must end.
    pub stopped: LocalEvent,
    /// The shard's final wind-down (`lifecycle::finish`) has started.
    pub finishing: Cell<bool>,
    /// Whether a traced message is being routed right now (`trace`): the
    /// one check the untraced path makes per delivery.
    tracing: Cell<bool>,
    /// The traced message being routed, and what happened to it so far.
    trace: RefCell<Option<trace::Active>>,
    /// Trace events of messages that entered here, waiting for the other
    /// shards' reports.
    traces: RefCell<AHashMap<u64, trace::Pending>>,
    next_trace: Cell<u64>,
    /// What delivering other shards' batches from a client's task passes
    /// on (`deliver_pending_data`); emptied by `pass_on` every batch.
    passed_on: RefCell<Outgoing>,
    /// This shard's control inbox, also drained synchronously by
    /// `apply_pending_control` on the message path.
    control_rx: std::cell::OnceCell<(
        flume::Receiver<Control>,
        Arc<std::sync::atomic::AtomicUsize>,
    )>,
    /// This shard's data inbox, drained synchronously at shutdown.
    /// This shard's data inbox and its count of batches sent and not yet
    /// taken, also drained synchronously by `deliver_pending_data`.
    data_rx: std::cell::OnceCell<(flume::Receiver<Batch>, Arc<std::sync::atomic::AtomicUsize>)>,
    /// Whether this node is part of a cluster (it has route links to tell).
    clustered: bool,
    /// The route links this shard owns, by slot.
    routes: RefCell<AHashMap<u32, Rc<RouteLink>>>,
    /// Strict interest mode: syncs sent on this shard's links, by token.
    syncs: RefCell<AHashMap<u64, PendingSync>>,
    /// Strict interest mode: barriers clients of this shard wait for.
    barriers: RefCell<AHashMap<u64, Rc<BarrierWait>>>,
    next_token: Cell<u64>,
    /// This shard's copy of the reloadable configuration.
    dynamic: RefCell<Arc<Dynamic>>,
}

/// A `Sync` sent on every link of this shard for a barrier of shard `from`.
struct PendingSync {
    from: ShardId,
    token: u64,
    /// Slots of the links that have not acknowledged yet.
    waiting: Vec<u32>,
}

/// A client's barrier: every shard answers once all its links acknowledged.
pub(crate) struct BarrierWait {
    remaining: Cell<usize>,
    pub done: LocalEvent,
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
            interest: RefCell::new(Interest::new(clustered)),
            peers,
            dirty: RefCell::new(Vec::new()),
            flushing: RefCell::new(Vec::new()),
            flush_scheduled: Cell::new(false),
            clients: RefCell::new(AHashMap::new()),
            counters: LocalCounters::default(),
            stop_accepting: LocalEvent::default(),
            stopped: LocalEvent::default(),
            finishing: Cell::new(false),
            tracing: Cell::new(false),
            trace: RefCell::new(None),
            traces: RefCell::new(AHashMap::new()),
            next_trace: Cell::new(0),
            passed_on: RefCell::new(Outgoing::new(shards)),
            control_rx: std::cell::OnceCell::new(),
            data_rx: std::cell::OnceCell::new(),
            clustered,
            routes: RefCell::new(AHashMap::new()),
            syncs: RefCell::new(AHashMap::new()),
            barriers: RefCell::new(AHashMap::new()),
            next_token: Cell::new(0),
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
        let announce =
            self.interest
                .borrow_mut()
                .subscribe(&sub.subject, sub.queue.as_ref(), sub.clone())?;
        let subject = sub.subject.clone();
        let queue = sub.queue.clone();
        let client = sub.client.clone();
        client.subs.borrow_mut().insert(sub.sid.clone(), sub);
        self.stats.subscriptions.fetch_add(1, Relaxed);
        self.announce(true, announce, &subject, queue.as_ref());
        Ok(())
    }

    /// Removes a subscription (from the index and its client) and retracts
    /// the interest when it was the last of its kind here.
    pub(crate) fn unsubscribe(&self, sub: &Rc<LocalSub>) {
        let removed = self
            .interest
            .borrow_mut()
            .unsubscribe(&sub.subject, sub.queue.as_ref(), sub);
        let announce = match removed {
            Ok(None) => return,
            Ok(Some(a)) => a,
            Err(broken) => {
                // Out of the index all the same.
                self.invariant_broken(broken.0);
                Announce::default()
            }
        };
        {
            let mut subs = sub.client.subs.borrow_mut();
            if subs.get(&sub.sid).is_some_and(|s| Rc::ptr_eq(s, sub)) {
                subs.remove(&sub.sid);
            }
        }
        self.stats.subscriptions.fetch_sub(1, Relaxed);
        self.announce(false, announce, &sub.subject, sub.queue.as_ref());
    }

    /// Tells what a local subscription change changed: this shard's route
    /// links (the node's interest), then the other shards.
    fn announce(&self, add: bool, a: Announce, subject: &Bytes, queue: Option<&Bytes>) {
        if let Some(op) = a.routes {
            self.tell_links(op);
        }
        if a.shards && self.shards > 1 {
            let from = self.id;
            if add {
                self.broadcast(|| Control::InterestAdd {
                    from,
                    subject: subject.clone(),
                    queue: queue.cloned(),
                });
            } else {
                self.broadcast(|| Control::InterestRemove {
                    from,
                    subject: subject.clone(),
                    queue: queue.cloned(),
                });
            }
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
        let no_echo = from.filter(|f| !f.flags.get().echo).map(|f| f.id);
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
        if self.tracing.get() {
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
            self.dirty.borrow_mut().push(link.conn.clone());
        }
    }

    /// A request nobody can answer: tell a client that asked for it with a
    /// `503` status on its reply subject, as nats-server does. `prefix` is
    /// the client's account prefix (its subscriptions are indexed under it).
    pub(crate) fn no_responders(&self, from: &Rc<Client>, reply: &[u8], prefix: &[u8]) {
        let flags = from.flags.get();
        if !(flags.no_responders && flags.headers) {
            return;
        }
        let indexed;
        let key = if prefix.is_empty() {
            reply
        } else {
            indexed = [prefix, reply].concat();
            &indexed[..]
        };
        let m = self.interest.borrow_mut().matches(key);
        let own = all_targets(&m).find_map(|t| match t {
            Target::Local(s) if Rc::ptr_eq(&s.client, from) => Some(s.clone()),
            _ => None,
        });
        if let Some(sub) = own {
            let res =
                from.queue(|buf| write_msg(buf, reply, &sub.sid, None, Some(NO_RESPONDERS), b""));
            if res == QueueResult::NewlyDirty {
                self.dirty.borrow_mut().push(from.clone());
            }
        }
    }

    /// Delivers to one local subscription. False if it could not take it.
    #[inline]
    fn deliver(&self, s: &Rc<LocalSub>, p: &Publish) -> bool {
        if self.tracing.get() {
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
        let headers = if c.flags.get().headers {
            p.headers.as_deref()
        } else {
            None
        };
        let res = c.queue(|buf| {
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
            QueueResult::NewlyDirty => self.dirty.borrow_mut().push(c.clone()),
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
            if let Some(perms) = c.perms.borrow_mut().as_mut() {
                if perms.compiled().allows_responses().is_some() {
                    perms.note_request(reply, Instant::now());
                }
            }
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
        if self.dirty.borrow().is_empty() {
            self.publish_counters();
            return;
        }
        if self.flush_scheduled.replace(true) {
            return;
        }
        let me = self.clone();
        runtime::spawn_detached(async move {
            me.flush_scheduled.set(false);
            me.flush_dirty();
        });
    }

    /// Writes every connection that got data since the last flush and
    /// publishes the counters.
    pub(crate) fn flush_dirty(&self) {
        // Swap with a spare list so neither loses its capacity: no
        // allocation per processed read buffer.
        let mut batch = std::mem::take(&mut *self.flushing.borrow_mut());
        loop {
            std::mem::swap(&mut batch, &mut *self.dirty.borrow_mut());
            if batch.is_empty() {
                break;
            }
            for c in batch.drain(..) {
                c.flush();
            }
        }
        *self.flushing.borrow_mut() = batch;
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

    /// Marks a client as needing a flush (for frames queued outside the
    /// delivery path: PONG, +OK, -ERR, INFO).
    pub(crate) fn mark_dirty(&self, c: &Rc<Client>, res: QueueResult) {
        if res == QueueResult::NewlyDirty {
            self.dirty.borrow_mut().push(c.clone());
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
        let interest = Arc::new(link.take_interest());
        self.remove_route_entries(link.id, &interest);
        let route = link.id;
        self.broadcast(|| Control::RouteDown {
            route,
            interest: interest.clone(),
        });
        let done: Vec<(ShardId, u64)> = {
            let mut syncs = self.syncs.borrow_mut();
            let mut done = Vec::new();
            syncs.retain(|_, s| {
                s.waiting.retain(|slot| *slot != route.slot);
                if s.waiting.is_empty() {
                    done.push((s.from, s.token));
                }
                !s.waiting.is_empty()
            });
            done
        };
        for (from, token) in done {
            self.sync_complete(from, token);
        }
    }

    /// An interest change announced by the peer of one of this shard's links:
    /// applied here and broadcast to the other shards as a delta.
    pub(crate) fn route_interest(&self, link: &RouteLink, op: InterestOp) {
        let Some(Delta {
            subject,
            queue,
            delta,
        }) = link.interest.borrow_mut().apply(op)
        else {
            return;
        };
        if delta > 0 {
            link.stats.subscriptions.fetch_add(delta as u64, Relaxed);
        } else {
            link.stats
                .subscriptions
                .fetch_sub(delta.unsigned_abs() as u64, Relaxed);
        }
        self.apply_route_delta(link.id, &subject, queue.as_ref(), delta);
        let route = link.id;
        self.broadcast(|| Control::RouteInterest {
            route,
            subject: subject.clone(),
            queue: queue.clone(),
            delta,
        });
    }

    fn apply_route_delta(
        &self,
        route: RouteId,
        subject: &Bytes,
        queue: Option<&Bytes>,
        delta: i32,
    ) {
        let applied =
            self.interest
                .borrow_mut()
                .apply_peer_delta(Peer::Route(route), subject, queue, delta);
        if let Err(broken) = applied {
            self.invariant_broken(broken.0);
        }
    }

    /// Another shard's interest change: mirrored here, and this node's
    /// interest told to this shard's links when it changed.
    fn apply_shard_delta(&self, from: ShardId, subject: &Bytes, queue: Option<&Bytes>, delta: i32) {
        let applied =
            self.interest
                .borrow_mut()
                .apply_peer_delta(Peer::Shard(from), subject, queue, delta);
        match applied {
            Ok(Some(op)) => self.tell_links(op),
            Ok(None) => {}
            Err(broken) => self.invariant_broken(broken.0),
        }
    }

    fn remove_route_entries(&self, route: RouteId, removals: &[Delta]) {
        for d in removals {
            self.apply_route_delta(route, &d.subject, d.queue.as_ref(), d.delta);
        }
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

    /// A reloaded configuration: every client's credentials are checked
    /// again (closed with `Authorization Violation` when they no longer
    /// pass), its permissions replaced, and subscriptions the new permissions
    /// forbid are removed with the subscription violation error; wildcard
    /// subscriptions kept filter what the new deny list forbids. A client
    /// that never sent CONNECT (allowed while no authentication was
    /// required) is closed when the new configuration requires it. New
    /// limits apply to new connections and new subscriptions.
    ///
    /// Checks that need bcrypt run on the auth pool, not here: a user whose
    /// password did not change is known to the new authenticator already
    /// (`Authenticator::keep_verified_from`), so only changed users cost one.
    fn reload(self: &Rc<Self>, d: Arc<Dynamic>) {
        let old = std::mem::replace(&mut *self.dynamic.borrow_mut(), d.clone());
        let clients: Vec<_> = self.clients.borrow().values().cloned().collect();
        for c in clients {
            if c.is_closing() {
                continue;
            }
            if !c.authenticated.get() {
                if !old.auth.required() && d.auth.required() {
                    self.apply_recheck(&c, Err(shoal_core::auth::AuthError));
                } else {
                    self.rebind_account(&c, d.auth.accounts().get(None));
                }
                continue;
            }
            let opts = c.meta.connect.borrow().clone().unwrap_or_default();
            let ctx = ConnectContext::now(c.meta.nonce.borrow().clone(), Some(c.addr.ip()));
            match d.auth.check_fast(&opts, &ctx) {
                FastCheck::Done(verdict) => self.apply_recheck(&c, verdict),
                FastCheck::NeedsSlowCheck => runtime::spawn_detached(recheck_off_shard(
                    self.clone(),
                    c,
                    opts,
                    ctx,
                    d.clone(),
                )),
            }
        }
        self.flush_dirty();
    }

    /// A client's credentials checked against a reloaded configuration.
    fn apply_recheck(
        &self,
        c: &Rc<Client>,
        verdict: Result<shoal_core::auth::Session, shoal_core::auth::AuthError>,
    ) {
        match verdict {
            Err(e) => {
                tracing::error!(
                    "{} - cid:{} - authentication error (configuration reloaded)",
                    c.addr,
                    c.id
                );
                let res = c.queue(|b| proto::write_err(b, e.err_text()));
                self.mark_dirty(c, res);
                c.close_after_flush(CloseReason::AuthenticationViolation);
            }
            Ok(session) => {
                let account = self
                    .current()
                    .auth
                    .accounts()
                    .get(session.account.as_deref());
                if !self.rebind_account(c, account) {
                    return;
                }
                *c.perms.borrow_mut() = session
                    .permissions
                    .map(shoal_core::auth::ClientPermissions::new);
                let restricted = c.perms.borrow().is_some();
                let subs: Vec<Rc<LocalSub>> = c.subs.borrow().values().cloned().collect();
                for s in subs {
                    let allowed = c
                        .perms
                        .borrow_mut()
                        .as_mut()
                        .is_none_or(|p| p.may_subscribe(&s.subject[s.prefix_len..]));
                    if !allowed {
                        let text = format!(
                            "Permissions Violation for Subscription to \"{}\"",
                            String::from_utf8_lossy(&s.subject[s.prefix_len..])
                        );
                        let res = c.queue(|b| proto::write_err(b, &text));
                        self.mark_dirty(c, res);
                        self.unsubscribe(&s);
                    } else {
                        // The filter is decided by the permissions in force,
                        // not those at SUB time.
                        s.deny_filter
                            .set(restricted && shoal_core::subject::has_wildcard(&s.subject));
                    }
                }
            }
        }
    }

    /// Gives a client its account as the reloaded configuration defines it
    /// (its imports and exports may have changed). A client whose account
    /// is now another one (or whose space changed because accounts were
    /// turned on or off) is closed instead: its subscriptions are indexed
    /// in the old account's subject space, and a reconnect puts it in the
    /// new one. Returns whether the client stays.
    fn rebind_account(
        &self,
        c: &Rc<Client>,
        account: Option<Arc<shoal_core::auth::Account>>,
    ) -> bool {
        let prefix = |a: &Option<Arc<shoal_core::auth::Account>>| {
            a.as_ref().map(|a| a.prefix.clone()).unwrap_or_default()
        };
        if prefix(&c.account.borrow()) != prefix(&account) {
            tracing::info!(
                "{} - cid:{} - account changed by a configuration reload, closing the connection so the client reconnects into it",
                c.addr,
                c.id
            );
            c.close_after_flush(CloseReason::AccountChanged);
            return false;
        }
        *c.account.borrow_mut() = account;
        true
    }

    /// Entries in the index and its cache figures (monitoring).
    pub(crate) fn index_stats(&self) -> (usize, shoal_core::index::CacheStats) {
        self.interest.borrow().stats()
    }

    /// The links this shard owns (lifecycle: closing them last).
    pub(crate) fn route_links(&self) -> Vec<Rc<RouteLink>> {
        self.routes.borrow().values().cloned().collect()
    }

    fn token(&self) -> u64 {
        let t = self.next_token.get() + 1;
        self.next_token.set(t);
        t
    }

    /// Strict interest mode: a barrier for a client of this shard. Every
    /// shard (this one included) sends a `Sync` on each of its links after
    /// the interest already sent there, and answers once all acknowledged.
    pub(crate) fn barrier(&self) -> (u64, Rc<BarrierWait>) {
        let token = self.token();
        let wait = Rc::new(BarrierWait {
            remaining: Cell::new(self.shards),
            done: LocalEvent::default(),
        });
        self.barriers.borrow_mut().insert(token, wait.clone());
        let from = self.id;
        self.broadcast(|| Control::Barrier { from, token });
        self.start_sync(from, token);
        (token, wait)
    }

    /// Forgets a barrier that timed out.
    pub(crate) fn cancel_barrier(&self, token: u64) {
        self.barriers.borrow_mut().remove(&token);
    }

    fn start_sync(&self, from: ShardId, token: u64) {
        let slots: Vec<u32> = self.routes.borrow().keys().copied().collect();
        if slots.is_empty() {
            self.sync_complete(from, token);
            return;
        }
        let local = self.token();
        for link in self.routes.borrow().values() {
            let res = link
                .conn
                .queue(|b| wire::write_token(b, wire::FrameKind::Sync, local));
            self.mark_dirty(&link.conn, res);
        }
        self.syncs.borrow_mut().insert(
            local,
            PendingSync {
                from,
                token,
                waiting: slots,
            },
        );
        self.flush_dirty();
    }

    /// A link acknowledged a `Sync`.
    pub(crate) fn sync_acked(&self, route: RouteId, local: u64) {
        let done = {
            let mut syncs = self.syncs.borrow_mut();
            let Some(s) = syncs.get_mut(&local) else {
                return;
            };
            s.waiting.retain(|slot| *slot != route.slot);
            if s.waiting.is_empty() {
                syncs.remove(&local).map(|s| (s.from, s.token))
            } else {
                None
            }
        };
        if let Some((from, token)) = done {
            self.sync_complete(from, token);
        }
    }

    fn sync_complete(&self, from: ShardId, token: u64) {
        if from == self.id {
            self.barrier_done(token);
        } else {
            let _ = self.peers[from as usize].send_control(Control::BarrierDone { token });
        }
    }

    fn barrier_done(&self, token: u64) {
        let mut barriers = self.barriers.borrow_mut();
        let Some(w) = barriers.get(&token) else {
            return;
        };
        let Some(left) = w.remaining.get().checked_sub(1) else {
            drop(barriers);
            self.invariant_broken("a barrier acknowledged more often than it waits");
            return;
        };
        w.remaining.set(left);
        if left == 0 {
            if let Some(w) = barriers.remove(&token) {
                w.done.set();
            }
        }
    }

    /// The cluster's client URLs changed: every client gets a fresh INFO
    /// (`connect_urls`), as nats-server sends.
    fn send_info_to_clients(&self) {
        let clients: Vec<_> = self.clients.borrow().values().cloned().collect();
        for c in &clients {
            if !c.authenticated.get() && self.current().auth.required() {
                continue;
            }
            let info = self
                .shared
                .info_for(c.id, c.addr, c.meta.nonce.borrow().as_deref());
            let res = c.queue(|b| proto::write_info(b, &info));
            self.mark_dirty(c, res);
        }
        self.flush_dirty();
    }

    // ----- the inbox -----

    /// Starts the tasks that apply what other shards send.
    pub(crate) fn start_inbox(self: &Rc<Self>, inbox: Inbox) {
        let _ = self
            .control_rx
            .set((inbox.control.clone(), inbox.pending.clone()));
        let _ = self
            .data_rx
            .set((inbox.data.clone(), inbox.data_pending.clone()));
        let me = self.clone();
        let control = inbox.control;
        let pending = inbox.pending;
        let delay = self.shared.test_control_delay;
        runtime::spawn_detached(async move {
            let mut budget = runtime::TurnBudget::new();
            loop {
                if let Some(d) = delay {
                    // Test hook: a lagging inbox (see `Shared::test_control_delay`).
                    runtime::sleep(d).await;
                }
                let Ok(msg) = control.recv_async().await else {
                    break;
                };
                budget.begin();
                pending.fetch_sub(1, Relaxed);
                me.stats.progress.fetch_add(1, Relaxed);
                if !me.apply_control(msg) {
                    break;
                }
                // Interest changes queue frames on route links.
                if me.clustered {
                    me.flush_dirty();
                }
                budget.spend().await;
            }
        });
        let me = self.clone();
        let (data, data_pending) = (inbox.data, inbox.data_pending);
        runtime::spawn_detached(async move {
            let mut budget = runtime::TurnBudget::new();
            let mut out = Outgoing::new(me.shards);
            loop {
                let batch =
                    futures_lite::future::or(async { data.recv_async().await.ok() }, async {
                        me.stopped.wait().await;
                        None
                    })
                    .await;
                let Some(batch) = batch else { break };
                data_pending.fetch_sub(1, Relaxed);
                budget.begin();
                me.apply_batch(&batch, &mut out);
                me.flush_soon();
                budget.spend().await;
            }
        });
        if tracing::enabled!(tracing::Level::DEBUG) {
            runtime::spawn_detached(debug_report(self.clone()));
        }
    }

    /// Delivers one batch another shard sent.
    fn apply_batch(self: &Rc<Self>, batch: &Batch, out: &mut Outgoing) {
        // Control sent before this batch applies first, as for a read
        // buffer: a `CloseRoute` for a link replaced by a duplicate is sent
        // before the new link is attached, so a message routed to both links
        // by another shard is never written on the old one (the peer would
        // get it twice).
        self.apply_pending_control();
        self.stats.batches_in.fetch_add(1, Relaxed);
        self.stats.progress.fetch_add(1, Relaxed);
        for r in batch {
            self.deliver_remote(r, out);
        }
        self.pass_on(out);
    }

    /// Delivers the batches other shards have already sent here before this
    /// shard handles a client's next read buffer. A publisher's PONG is
    /// written only after its read buffer's batches are in the other shards'
    /// channels, so once it has its PONG, an UNSUB or PING that a subscriber
    /// sends afterwards must not overtake those messages (nats-server queues
    /// a message to every subscriber while it handles the PUB; nats.py's
    /// drain lost messages without this). One atomic load when nothing waits.
    pub(crate) fn deliver_pending_data(self: &Rc<Self>) {
        let Some((rx, pending)) = self.data_rx.get() else {
            return;
        };
        if pending.load(std::sync::atomic::Ordering::Acquire) == 0 {
            return;
        }
        // Reused: no allocation per client read buffer. Nothing below
        // comes back here (`apply_batch` routes and passes on only).
        let mut out = self.passed_on.borrow_mut();
        while let Ok(batch) = rx.try_recv() {
            pending.fetch_sub(1, Relaxed);
            self.apply_batch(&batch, &mut out);
        }
    }

    /// Applies interest changes already sent to this shard before routing a
    /// read buffer. A subscription another shard has processed is then
    /// visible here even when this shard's inbox task has not run yet, which
    /// keeps the window in which a fresh subscription can miss a message as
    /// small as in a single-threaded server (the time to read the SUB).
    pub(crate) fn apply_pending_control(self: &Rc<Self>) {
        let Some((rx, pending)) = self.control_rx.get() else {
            return;
        };
        if pending.load(std::sync::atomic::Ordering::Acquire) == 0 {
            return;
        }
        while let Ok(msg) = rx.try_recv() {
            pending.fetch_sub(1, Relaxed);
            self.stats.progress.fetch_add(1, Relaxed);
            self.apply_control(msg);
        }
    }

    /// Returns false when the shard must stop.
    fn apply_control(self: &Rc<Self>, msg: Control) -> bool {
        match msg {
            Control::InterestAdd {
                from,
                subject,
                queue,
            } => self.apply_shard_delta(from, &subject, queue.as_ref(), 1),
            Control::InterestRemove {
                from,
                subject,
                queue,
            } => self.apply_shard_delta(from, &subject, queue.as_ref(), -1),
            Control::RouteInterest {
                route,
                subject,
                queue,
                delta,
            } => self.apply_route_delta(route, &subject, queue.as_ref(), delta),
            Control::RouteDown { route, interest } => self.remove_route_entries(route, &interest),
            Control::AttachRoute(attach) => {
                runtime::spawn_detached(link::serve(self.clone(), *attach));
            }
            Control::RouteFrame { route, frame } => {
                if let Some(link) = self.routes.borrow().get(&route.slot) {
                    let res = link.conn.queue(|b| b.extend_from_slice(&frame));
                    self.mark_dirty(&link.conn, res);
                }
                self.flush_dirty();
            }
            Control::CloseRoute { route } => {
                if let Some(link) = self.routes.borrow().get(&route.slot) {
                    link.conn.close_after_flush(CloseReason::DuplicateRoute);
                }
            }
            Control::Barrier { from, token } => self.start_sync(from, token),
            Control::BarrierDone { token } => self.barrier_done(token),
            Control::InfoChanged => self.send_info_to_clients(),
            Control::Reload(d) => self.reload(d),
            Control::Snapshot { subs, reply } => {
                let _ = reply.send(snapshot::take(self, subs));
            }
            Control::TraceReport { id, entries, more } => {
                self.trace_reported(id, entries, more);
                self.flush_soon();
            }
            Control::LameDuck => lifecycle::enter_lame_duck(self.clone()),
            Control::Wake => {}
            Control::Shutdown => {
                lifecycle::shutdown(self);
                return false;
            }
        }
        true
    }

    /// Delivers every batch already waiting in the data inbox (at shutdown,
    /// so messages other shards routed here before it are not dropped).
    pub(crate) fn drain_data(&self) {
        let Some((rx, pending)) = self.data_rx.get() else {
            return;
        };
        let mut out = Outgoing::new(self.shards);
        while let Ok(batch) = rx.try_recv() {
            pending.fetch_sub(1, Relaxed);
            for r in &batch {
                self.deliver_remote(r, &mut out);
            }
            self.pass_on(&mut out);
        }
        self.flush_dirty();
    }

    /// Delivers a message another shard sent: its plain subscribers here,
    /// and one member here of each queue group this shard was picked for.
    /// A group none of whose members here can take it is passed on (through
    /// `out`) to another member the original rules allow, never to a shard
    /// that already declined it.
    fn deliver_remote(&self, r: &Remote, out: &mut Outgoing) {
        match &r.trace {
            None => self.deliver_remote_now(r, out),
            Some(tag) => {
                self.trace_enter(tag);
                self.deliver_remote_now(r, out);
                self.trace_report();
            }
        }
    }

    fn deliver_remote_now(&self, r: &Remote, out: &mut Outgoing) {
        if let Some(slot) = r.route {
            self.send_to_route(slot, &r.publish, r.plain, &r.queues);
            return;
        }
        let want = Want {
            plain: r.plain,
            queues: Some(&r.queues),
        };
        self.fan_out(&r.publish, Origin::Shard(r.fallback), want, out);
    }

    /// Sends what delivering other shards' messages passed on, without
    /// waiting: an inbox task must never wait on another shard's data
    /// channel (two shards passing messages to each other could wait on each
    /// other forever). A full channel gets the batch from a task of its own.
    fn pass_on(&self, out: &mut Outgoing) {
        for (j, batch) in out.batches.iter_mut().enumerate() {
            if batch.is_empty() {
                continue;
            }
            self.stats.batches_out.fetch_add(1, Relaxed);
            match self.peers[j].try_send_data(std::mem::take(batch)) {
                Ok(()) => {}
                Err(flume::TrySendError::Full(b)) => {
                    let peer = self.peers[j].clone();
                    runtime::spawn_detached(async move {
                        // Err: that shard has stopped.
                        let _ = peer.send_data(b).await;
                    });
                }
                // That shard has stopped (shutdown).
                Err(flume::TrySendError::Disconnected(_)) => {}
            }
        }
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
    if c.is_closing() {
        Some(NOT_DELIVERED_CLIENT_CLOSED)
    } else if s.max.get().is_some_and(|max| s.delivered.get() >= max) {
        Some(NOT_DELIVERED_AUTO_UNSUB)
    } else if s.deny_filter.get()
        && c.perms
            .borrow()
            .as_ref()
            .is_some_and(|perms| perms.compiled().deny_delivery(subject))
    {
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

fn all_targets<T>(m: &Matches<T>) -> impl Iterator<Item = &T> {
    m.plain
        .iter()
        .chain(m.queues.iter().flat_map(|g| g.values()))
}

/// What the engine's fan-out decides for one message, carried out on this
/// shard: a local delivery now, the sends to other shards and route links
/// gathered for `fan_out` to hand to `out` (each shard and link once).
struct Fan<'a> {
    shard: &'a Shard,
    p: &'a Publish,
    /// Other shards with plain interest (a bit per shard).
    shard_plain: u64,
    /// Other shards picked for a queue group.
    shard_queues: Vec<(ShardId, Bytes)>,
    routes: RouteSends,
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
        if self.shard.tracing.get() {
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
            let (is_blocked, bytes) = c.pending();
            (b + usize::from(is_blocked), q + bytes)
        });
        let depth = shard.data_rx.get().map_or(0, |(r, _)| r.len());
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

/// A reload's re-check of one client that needs bcrypt, on the auth pool.
/// Dropped when a newer reload came meanwhile (it re-checks on its own) or
/// the client is gone.
async fn recheck_off_shard(
    shard: Rc<Shard>,
    c: Rc<Client>,
    opts: shoal_core::proto::ConnectOptions,
    ctx: ConnectContext,
    d: Arc<Dynamic>,
) {
    // A connected client whose credentials were valid must not be cut
    // because the pool is busy: wait for room (a reload of many clients
    // whose user changed can fill the queue).
    let verdict = loop {
        let checked_by = d.clone();
        let given = opts.clone();
        let ctx = ctx.clone();
        match shard
            .shared
            .auth_pool
            .run(move || checked_by.auth.authenticate(&given, &ctx))
            .await
        {
            Some(v) => break v,
            None => runtime::sleep(std::time::Duration::from_millis(50)).await,
        }
        if c.is_closing() || !Arc::ptr_eq(&shard.current(), &d) {
            return;
        }
    };
    if c.is_closing() || !Arc::ptr_eq(&shard.current(), &d) {
        return;
    }
    shard.apply_recheck(&c, verdict);
    shard.flush_dirty();
}
