//! A shard's interest: its subject index and the counts that decide what it
//! tells others.
//!
//! The index holds three kinds of entries (`Target`): this shard's own
//! subscriptions; one entry per plain subject or queue member another shard
//! of this node announced (its mirror); one per plain subject or queue
//! member a peer node announced through a route link (that link's mirror,
//! with the queue weight). Around it:
//! - `plain_refs`: this shard's plain subscribers per subject: only the
//!   first announces the subject to the other shards, only the last
//!   retracts it;
//! - `node` ([`NodeInterest`]): this node's own interest as this shard
//!   sees it (its own announcements and the other shards'), what its route
//!   links announce to peers. Interest learned from routes never enters it,
//!   so it is never sent on (one hop).
//!
//! Every change goes through a method here and leaves what others must be
//! told in an [`Outbox`] the glue carries out: changes of this node's
//! interest for this shard's route links, then [`ShardEvent`]s for every
//! other shard of the node. A shard receiving an event applies it with
//! [`Interest::apply_event`], the one entry point for what shards and
//! routes announce. A state that cannot happen (a removal of an entry that
//! is not there, a count gone below zero) is returned as [`Broken`] so the
//! glue can assert and count it.

use crate::ids::{RouteId, ShardId, SubHandle, Target};
use crate::link::{Delta, Learned};
use ahash::AHashMap;
use bytes::Bytes;
use shoal_core::index::{CacheStats, IndexError, Matches, SubjectIndex};
use shoal_core::route::InterestOp;
use std::sync::Arc;

/// Who announced interest to this shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// Another shard of this node (its first plain subscriber of a subject,
    /// or one queue member).
    Shard(ShardId),
    /// A peer node through a route link (a plain subject once, a queue
    /// group with its weight).
    Route(RouteId),
}

/// An impossible state, for the glue to assert on and count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Broken(pub &'static str);

/// What one shard tells the other shards of its node about interest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardEvent {
    /// This shard's first plain subscriber of the subject came (or its last
    /// went), or one queue member came (or went).
    Interest {
        subject: Bytes,
        queue: Option<Bytes>,
        add: bool,
    },
    /// The peer of a route link this shard owns changed what it announced.
    RouteDelta { route: RouteId, delta: Delta },
    /// A route link this shard owns went: everything its peer announced
    /// goes.
    RouteDown {
        route: RouteId,
        removals: Arc<Vec<Delta>>,
    },
}

/// What the glue must carry out after an interest call, in this order:
/// `to_links` on every route link this shard owns, then `to_shards` to every
/// other shard of the node. Reused: the glue drains both after each call.
#[derive(Debug, Default)]
pub struct Outbox {
    pub to_links: Vec<InterestOp>,
    pub to_shards: Vec<ShardEvent>,
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.to_links.is_empty() && self.to_shards.is_empty()
    }
}

/// A shard's subject index and interest counts.
#[derive(Debug)]
pub struct Interest<L: SubHandle + Clone> {
    /// The shard this is.
    me: ShardId,
    index: SubjectIndex<Target<L>>,
    plain_refs: AHashMap<Bytes, u32>,
    node: NodeInterest,
    /// Whether this node has route links at all (without, `node` stays
    /// empty: nobody to announce to).
    clustered: bool,
    /// Whether the node has other shards to tell.
    other_shards: bool,
}

impl<L: SubHandle + Clone> Interest<L> {
    /// Shard `me` of a node of `shards` shards.
    pub fn new(me: ShardId, shards: usize, clustered: bool) -> Self {
        Interest {
            me,
            index: SubjectIndex::new(),
            plain_refs: AHashMap::new(),
            node: NodeInterest::default(),
            clustered,
            other_shards: shards > 1,
        }
    }

    /// Everything matching `subject` (cached by the index).
    #[inline]
    pub fn matches(&mut self, subject: &[u8]) -> Arc<Matches<Target<L>>> {
        self.index.matches(subject)
    }

    /// The first local subscription matching `subject` that `mine` picks
    /// (a requester's own reply subscription, for a no-responders status).
    pub fn local_match(&mut self, subject: &[u8], mut mine: impl FnMut(&L) -> bool) -> Option<L>
    where
        L: Clone,
    {
        let m = self.index.matches(subject);
        let found = m
            .plain
            .iter()
            .chain(m.queues.iter().flat_map(|g| g.values()))
            .find_map(|t| match t {
                Target::Local(l) if mine(l) => Some(l.clone()),
                _ => None,
            });
        found
    }

    /// Entries in the index, and its cache's figures (monitoring).
    pub fn stats(&self) -> (usize, CacheStats) {
        (self.index.len(), self.index.cache_stats())
    }

    /// This node's interest, for a new route link's first announcement.
    pub fn node_snapshot(&self) -> Vec<InterestOp> {
        self.node.snapshot()
    }

    /// A subscription of a client of this shard.
    pub fn subscribe(
        &mut self,
        subject: &Bytes,
        queue: Option<&Bytes>,
        sub: L,
        out: &mut Outbox,
    ) -> Result<(), IndexError> {
        self.index
            .insert(subject, queue.map(|q| &q[..]), Target::Local(sub))?;
        let tell = match queue {
            Some(_) => true,
            None => {
                let n = self.plain_refs.entry(subject.clone()).or_insert(0);
                *n += 1;
                *n == 1
            }
        };
        if tell {
            self.tell(true, subject, queue, out);
        }
        Ok(())
    }

    /// The end of a subscription of a client of this shard. `Ok(false)`
    /// when it was not in the index (already removed).
    pub fn unsubscribe(
        &mut self,
        subject: &Bytes,
        queue: Option<&Bytes>,
        sub: &L,
        out: &mut Outbox,
    ) -> Result<bool, Broken> {
        if !self
            .index
            .remove(subject, queue.map(|q| &q[..]), &Target::Local(sub.clone()))
        {
            return Ok(false);
        }
        let tell = match queue {
            Some(_) => true,
            None => match self.plain_refs.get_mut(subject) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    self.plain_refs.remove(subject);
                    true
                }
                None => return Err(Broken("a plain subscription without a refcount")),
            },
        };
        if tell {
            self.tell(false, subject, queue, out);
        }
        Ok(true)
    }

    /// This shard's own interest changed: the node's interest for the
    /// links, the event for the other shards.
    fn tell(&mut self, add: bool, subject: &Bytes, queue: Option<&Bytes>, out: &mut Outbox) {
        if let Some(op) = self.node_change(add, subject, queue) {
            out.to_links.push(op);
        }
        if self.other_shards {
            out.to_shards.push(ShardEvent::Interest {
                subject: subject.clone(),
                queue: queue.cloned(),
                add,
            });
        }
    }

    /// The peer of route link `route` (owned by this shard) announced
    /// `op`: applied here, and the delta for the other shards. Returns the
    /// delta (`None`: nothing changed).
    pub fn route_announced(
        &mut self,
        route: RouteId,
        learned: &mut Learned,
        op: InterestOp,
        out: &mut Outbox,
    ) -> Result<Option<i32>, Broken> {
        let Some(delta) = learned.apply(op) else {
            return Ok(None);
        };
        let d = delta.delta;
        let applied =
            self.apply_peer_delta(Peer::Route(route), &delta.subject, delta.queue.as_ref(), d);
        if self.other_shards {
            out.to_shards.push(ShardEvent::RouteDelta { route, delta });
        }
        applied.map(|()| Some(d))
    }

    /// Route link `route` (owned by this shard) went: everything its peer
    /// announced goes, here and on the other shards.
    pub fn route_down(
        &mut self,
        route: RouteId,
        learned: &mut Learned,
        out: &mut Outbox,
    ) -> Result<(), Broken> {
        let removals = Arc::new(learned.take());
        let applied = self.remove_all(route, &removals);
        if self.other_shards {
            out.to_shards
                .push(ShardEvent::RouteDown { route, removals });
        }
        applied
    }

    fn remove_all(&mut self, route: RouteId, removals: &[Delta]) -> Result<(), Broken> {
        let mut applied = Ok(());
        for d in removals {
            let r =
                self.apply_peer_delta(Peer::Route(route), &d.subject, d.queue.as_ref(), d.delta);
            if r.is_err() {
                applied = r;
            }
        }
        applied
    }

    /// The one entry point for what another shard of this node sent: its
    /// own interest, or a route link's it owns. A change of the node's
    /// interest goes to `out.to_links`.
    pub fn apply_event(
        &mut self,
        from: ShardId,
        ev: &ShardEvent,
        out: &mut Outbox,
    ) -> Result<(), Broken> {
        match ev {
            ShardEvent::Interest {
                subject,
                queue,
                add,
            } => {
                let delta = if *add { 1 } else { -1 };
                self.apply_peer_delta(Peer::Shard(from), subject, queue.as_ref(), delta)?;
                if let Some(op) = self.node_change(*add, subject, queue.as_ref()) {
                    out.to_links.push(op);
                }
                Ok(())
            }
            ShardEvent::RouteDelta { route, delta } => self.apply_peer_delta(
                Peer::Route(*route),
                &delta.subject,
                delta.queue.as_ref(),
                delta.delta,
            ),
            ShardEvent::RouteDown { route, removals } => self.remove_all(*route, removals),
        }
    }

    /// `delta` index entries for `peer` (added, or removed when negative).
    fn apply_peer_delta(
        &mut self,
        peer: Peer,
        subject: &Bytes,
        queue: Option<&Bytes>,
        delta: i32,
    ) -> Result<(), Broken> {
        let target = match peer {
            Peer::Shard(j) => Target::Shard(j),
            Peer::Route(r) => Target::Route(r),
        };
        let q = queue.map(|q| &q[..]);
        let mut broken = None;
        for _ in 0..delta.unsigned_abs() {
            if delta > 0 {
                // Validated where it was announced or decoded.
                if self.index.insert(subject, q, target.clone()).is_err() {
                    broken = Some(Broken("announced interest does not fit the index"));
                }
            } else if !self.index.remove(subject, q, &target) {
                broken = Some(match peer {
                    Peer::Shard(_) => Broken("a shard retracted interest it never announced"),
                    Peer::Route(_) => Broken("a route's interest removed that was not there"),
                });
            }
        }
        match broken {
            Some(b) => Err(b),
            None => Ok(()),
        }
    }

    fn node_change(
        &mut self,
        add: bool,
        subject: &Bytes,
        queue: Option<&Bytes>,
    ) -> Option<InterestOp> {
        if !self.clustered {
            return None;
        }
        if add {
            self.node.add(subject, queue)
        } else {
            self.node.remove(subject, queue)
        }
    }

    /// Checks what must hold between the index and the counts after every
    /// call (it walks the whole index: debug builds and the simulator):
    /// the plain refcounts are exactly this shard's plain subscriptions; no
    /// entry names this shard as another; another shard's plain subject is
    /// mirrored once, a route's plain subject once and a route's queue
    /// weight within the cap; and the node's interest is exactly this
    /// shard's own plus the other shards' (never a route's).
    pub fn check_invariants(&self) -> Result<(), Broken> {
        type Key = (Bytes, Option<Bytes>);
        let mut local_plain: AHashMap<Bytes, u32> = AHashMap::new();
        let mut shard_plain: AHashMap<Bytes, u32> = AHashMap::new();
        let mut members: AHashMap<Key, u32> = AHashMap::new();
        let mut broken = None;
        self.index.for_each(|pattern, queue, target, n| {
            let n = n as u32;
            let key = || {
                (
                    Bytes::copy_from_slice(pattern),
                    queue.map(Bytes::copy_from_slice),
                )
            };
            match (target, queue) {
                (Target::Local(_), None) => {
                    *local_plain
                        .entry(Bytes::copy_from_slice(pattern))
                        .or_insert(0) += n
                }
                (Target::Local(_), Some(_)) => *members.entry(key()).or_insert(0) += n,
                (Target::Shard(j), _) if *j == self.me => {
                    broken = Some(Broken("an entry names this shard as another"))
                }
                (Target::Shard(_), None) if n > 1 => {
                    broken = Some(Broken("another shard's plain subject mirrored twice"))
                }
                (Target::Shard(_), None) => {
                    *shard_plain
                        .entry(Bytes::copy_from_slice(pattern))
                        .or_insert(0) += 1
                }
                (Target::Shard(_), Some(_)) => *members.entry(key()).or_insert(0) += n,
                (Target::Route(_), None) if n > 1 => {
                    broken = Some(Broken("a route's plain subject mirrored twice"))
                }
                (Target::Route(_), Some(_)) if n > crate::link::MAX_ROUTE_WEIGHT => {
                    broken = Some(Broken("a route's queue weight over the cap"))
                }
                (Target::Route(_), _) => {}
            }
        });
        if let Some(b) = broken {
            return Err(b);
        }
        if local_plain
            != self
                .plain_refs
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect()
        {
            return Err(Broken(
                "the plain refcounts differ from the plain subscriptions",
            ));
        }
        if self.clustered {
            let mut node_plain = shard_plain;
            for s in self.plain_refs.keys() {
                *node_plain.entry(s.clone()).or_insert(0) += 1;
            }
            if node_plain != self.node.plain {
                return Err(Broken("the node's plain interest differs from the shards'"));
            }
            let node_queues: AHashMap<Key, u32> = self
                .node
                .queues
                .iter()
                .map(|((s, q), n)| ((s.clone(), Some(q.clone())), *n))
                .collect();
            if node_queues != members {
                return Err(Broken("the node's queue members differ from the shards'"));
            }
        }
        Ok(())
    }

    /// Every index entry for `subject`/`queue` held for `peer` (the
    /// simulator's mirror check).
    pub fn count_for(&self, peer: Peer, subject: &[u8], queue: Option<&[u8]>) -> usize {
        let target = match peer {
            Peer::Shard(j) => Target::Shard(j),
            Peer::Route(r) => Target::Route(r),
        };
        self.index.count(subject, queue, &target)
    }
}

/// The node's own interest, as one shard sees it: what its route links
/// announce to peers.
///
/// Every shard learns of every other shard's first plain subscriber of a
/// subject and of every queue member (the shard bus); counting those per
/// subject gives the node-wide view without any coordinator. A plain
/// subject is announced when the first shard gains interest and retracted
/// when the last loses it; a queue group is announced with its node-wide
/// member count on every change.
#[derive(Default, Debug)]
pub struct NodeInterest {
    /// Shards with at least one plain subscriber of the subject.
    plain: AHashMap<Bytes, u32>,
    /// Members of the queue group on this node.
    queues: AHashMap<(Bytes, Bytes), u32>,
}

impl NodeInterest {
    /// One more shard with plain interest, or one more queue member. Returns
    /// what peers must be told, if anything.
    pub fn add(&mut self, subject: &Bytes, queue: Option<&Bytes>) -> Option<InterestOp> {
        match queue {
            None => {
                let n = self.plain.entry(subject.clone()).or_insert(0);
                *n += 1;
                (*n == 1).then(|| op(subject, None, 1))
            }
            Some(q) => {
                let n = self.queues.entry((subject.clone(), q.clone())).or_insert(0);
                *n += 1;
                Some(op(subject, Some(q), *n))
            }
        }
    }

    /// The reverse of `add`.
    pub fn remove(&mut self, subject: &Bytes, queue: Option<&Bytes>) -> Option<InterestOp> {
        match queue {
            None => {
                let n = self.plain.get_mut(subject)?;
                *n -= 1;
                if *n > 0 {
                    return None;
                }
                self.plain.remove(subject);
                Some(op(subject, None, 0))
            }
            Some(q) => {
                let key = (subject.clone(), q.clone());
                let n = self.queues.get_mut(&key)?;
                *n -= 1;
                let w = *n;
                if w == 0 {
                    self.queues.remove(&key);
                }
                Some(op(subject, Some(q), w))
            }
        }
    }

    /// Everything to announce to a new peer.
    ///
    /// Sorted, so what a link announces never depends on a hash map's
    /// iteration order (which differs per process): the same calls give
    /// the same frames, and a simulator seed replays exactly. Once per
    /// link up, never on the message path.
    pub fn snapshot(&self) -> Vec<InterestOp> {
        let mut ops: Vec<InterestOp> = self
            .plain
            .keys()
            .map(|s| op(s, None, 1))
            .chain(self.queues.iter().map(|((s, q), n)| op(s, Some(q), *n)))
            .collect();
        ops.sort_unstable_by(|a, b| (&a.subject, &a.queue).cmp(&(&b.subject, &b.queue)));
        ops
    }
}

fn op(subject: &Bytes, queue: Option<&Bytes>, weight: u32) -> InterestOp {
    InterestOp {
        subject: subject.to_vec(),
        queue: queue.map(|q| q.to_vec()),
        weight,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn plain_interest_is_announced_by_the_first_shard_and_retracted_by_the_last() {
        let mut n = NodeInterest::default();
        assert_eq!(n.add(&b("a"), None).map(|o| o.weight), Some(1));
        assert_eq!(n.add(&b("a"), None), None);
        assert_eq!(n.remove(&b("a"), None), None);
        assert_eq!(n.remove(&b("a"), None).map(|o| o.weight), Some(0));
        assert!(n.snapshot().is_empty());
        // A removal never announced (unknown subject) says nothing.
        assert_eq!(n.remove(&b("a"), None), None);
    }

    #[test]
    fn queue_groups_carry_their_member_count() {
        let mut n = NodeInterest::default();
        let q = b("workers");
        assert_eq!(n.add(&b("s"), Some(&q)).unwrap().weight, 1);
        assert_eq!(n.add(&b("s"), Some(&q)).unwrap().weight, 2);
        let snap = n.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].weight, 2);
        assert_eq!(n.remove(&b("s"), Some(&q)).unwrap().weight, 1);
        assert_eq!(n.remove(&b("s"), Some(&q)).unwrap().weight, 0);
        assert!(n.snapshot().is_empty());
    }

    #[derive(Clone, Debug)]
    struct S(usize);
    impl SubHandle for S {
        fn identity(&self) -> usize {
            self.0
        }
    }

    #[test]
    fn local_plain_subscribers_announce_once_per_subject() {
        let mut i: Interest<S> = Interest::new(0, 2, true);
        let mut out = Outbox::default();
        i.subscribe(&b("x"), None, S(1), &mut out).unwrap();
        assert_eq!(out.to_links.len(), 1);
        assert_eq!(out.to_shards.len(), 1);
        let mut out = Outbox::default();
        i.subscribe(&b("x"), None, S(2), &mut out).unwrap();
        assert!(out.is_empty(), "the second plain subscriber tells nobody");
        assert_eq!(i.unsubscribe(&b("x"), None, &S(1), &mut out), Ok(true));
        assert!(out.is_empty());
        assert_eq!(i.unsubscribe(&b("x"), None, &S(2), &mut out), Ok(true));
        assert_eq!(out.to_links.pop().map(|o| o.weight), Some(0));
        assert_eq!(
            out.to_shards.pop(),
            Some(ShardEvent::Interest {
                subject: b("x"),
                queue: None,
                add: false
            })
        );
        // Gone already: nothing to tell.
        assert_eq!(i.unsubscribe(&b("x"), None, &S(2), &mut out), Ok(false));
        assert!(out.is_empty());
        assert_eq!(i.check_invariants(), Ok(()));
    }

    #[test]
    fn peer_events_mirror_exactly_and_route_interest_is_never_sent_on() {
        let mut i: Interest<S> = Interest::new(0, 2, true);
        let mut out = Outbox::default();
        let r = RouteId { shard: 0, slot: 3 };
        let mut learned = Learned::default();
        let op = |s: &str, q: Option<&str>, weight| InterestOp {
            subject: s.as_bytes().to_vec(),
            queue: q.map(|q| q.as_bytes().to_vec()),
            weight,
        };
        let announced = i.route_announced(r, &mut learned, op("x", Some("q"), 3), &mut out);
        assert_eq!(announced, Ok(Some(3)));
        assert_eq!(i.count_for(Peer::Route(r), b"x", Some(b"q")), 3);
        assert!(
            out.to_links.is_empty(),
            "a route's interest is never sent on"
        );
        assert_eq!(out.to_shards.len(), 1, "the other shards mirror it");
        out.to_shards.clear();
        let add = ShardEvent::Interest {
            subject: b("x"),
            queue: None,
            add: true,
        };
        i.apply_event(1, &add, &mut out).unwrap();
        assert_eq!(
            out.to_links.pop().map(|o| o.weight),
            Some(1),
            "the node gained interest"
        );
        assert_eq!(i.check_invariants(), Ok(()));
        i.route_down(r, &mut learned, &mut out).unwrap();
        assert_eq!(i.count_for(Peer::Route(r), b"x", Some(b"q")), 0);
        let remove = ShardEvent::Interest {
            subject: b("y"),
            queue: None,
            add: false,
        };
        assert_eq!(
            i.apply_event(2, &remove, &mut out),
            Err(Broken("a shard retracted interest it never announced"))
        );
        // A shard naming this one as another is caught by the check.
        i.apply_event(0, &add, &mut out).unwrap();
        assert_eq!(
            i.check_invariants(),
            Err(Broken("an entry names this shard as another"))
        );
    }
}
