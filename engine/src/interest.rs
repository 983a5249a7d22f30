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
//! Shards and routes reach it through one entry point,
//! [`Interest::apply_peer_delta`]. Each call returns what must be told to
//! whom; the glue sends it. A state that cannot happen (a removal of an
//! entry that is not there, a count gone below zero) is returned as
//! [`Broken`] so the glue can assert and count it.

use crate::ids::{RouteId, ShardId, SubHandle, Target};
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

/// What a local subscription change must be told.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Announce {
    /// Tell the other shards (the first plain subscriber of the subject
    /// here, or a queue member, came or went).
    pub shards: bool,
    /// Tell the route links this (the node's interest changed).
    pub routes: Option<InterestOp>,
}

/// A shard's subject index and interest counts.
#[derive(Debug)]
pub struct Interest<L: SubHandle + Clone> {
    index: SubjectIndex<Target<L>>,
    plain_refs: AHashMap<Bytes, u32>,
    node: NodeInterest,
    /// Whether this node has route links at all (without, `node` stays
    /// empty: nobody to announce to).
    clustered: bool,
}

impl<L: SubHandle + Clone> Interest<L> {
    pub fn new(clustered: bool) -> Self {
        Interest {
            index: SubjectIndex::new(),
            plain_refs: AHashMap::new(),
            node: NodeInterest::default(),
            clustered,
        }
    }

    /// Everything matching `subject` (cached by the index).
    #[inline]
    pub fn matches(&mut self, subject: &[u8]) -> Arc<Matches<Target<L>>> {
        self.index.matches(subject)
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
    ) -> Result<Announce, IndexError> {
        self.index
            .insert(subject, queue.map(|q| &q[..]), Target::Local(sub))?;
        let shards = match queue {
            Some(_) => true,
            None => {
                let n = self.plain_refs.entry(subject.clone()).or_insert(0);
                *n += 1;
                *n == 1
            }
        };
        let routes = if shards {
            self.node_change(true, subject, queue)
        } else {
            None
        };
        Ok(Announce { shards, routes })
    }

    /// The end of a subscription of a client of this shard. `Ok(None)`
    /// when it was not in the index (already removed).
    pub fn unsubscribe(
        &mut self,
        subject: &Bytes,
        queue: Option<&Bytes>,
        sub: &L,
    ) -> Result<Option<Announce>, Broken> {
        if !self
            .index
            .remove(subject, queue.map(|q| &q[..]), &Target::Local(sub.clone()))
        {
            return Ok(None);
        }
        let shards = match queue {
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
        let routes = if shards {
            self.node_change(false, subject, queue)
        } else {
            None
        };
        Ok(Some(Announce { shards, routes }))
    }

    /// The one entry point for what another shard or a route link
    /// announced: `delta` entries added (or removed when negative). A
    /// shard's change also changes this node's interest: the returned op
    /// is for this shard's route links.
    pub fn apply_peer_delta(
        &mut self,
        peer: Peer,
        subject: &Bytes,
        queue: Option<&Bytes>,
        delta: i32,
    ) -> Result<Option<InterestOp>, Broken> {
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
        if let Some(b) = broken {
            return Err(b);
        }
        Ok(match peer {
            Peer::Shard(_) => {
                let mut op = None;
                for _ in 0..delta.unsigned_abs() {
                    op = self.node_change(delta > 0, subject, queue).or(op);
                }
                op
            }
            // Never sent on: one hop.
            Peer::Route(_) => None,
        })
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
    pub fn snapshot(&self) -> Vec<InterestOp> {
        self.plain
            .keys()
            .map(|s| op(s, None, 1))
            .chain(self.queues.iter().map(|((s, q), n)| op(s, Some(q), *n)))
            .collect()
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
        let mut i: Interest<S> = Interest::new(true);
        let a = i.subscribe(&b("x"), None, S(1)).unwrap();
        assert!(a.shards && a.routes.is_some());
        let a = i.subscribe(&b("x"), None, S(2)).unwrap();
        assert_eq!(a, Announce::default());
        assert_eq!(
            i.unsubscribe(&b("x"), None, &S(1)),
            Ok(Some(Announce::default()))
        );
        let last = i.unsubscribe(&b("x"), None, &S(2)).unwrap().unwrap();
        assert!(last.shards);
        assert_eq!(last.routes.map(|o| o.weight), Some(0));
        // Gone already: nothing to tell.
        assert_eq!(i.unsubscribe(&b("x"), None, &S(2)), Ok(None));
    }

    #[test]
    fn peer_deltas_mirror_exactly_and_route_interest_is_never_sent_on() {
        let mut i: Interest<S> = Interest::new(true);
        let r = RouteId { shard: 0, slot: 3 };
        assert_eq!(
            i.apply_peer_delta(Peer::Route(r), &b("x"), Some(&b("q")), 3),
            Ok(None)
        );
        assert_eq!(i.count_for(Peer::Route(r), b"x", Some(b"q")), 3);
        let op = i
            .apply_peer_delta(Peer::Shard(1), &b("x"), None, 1)
            .unwrap();
        assert_eq!(op.map(|o| o.weight), Some(1), "the node gained interest");
        assert_eq!(
            i.apply_peer_delta(Peer::Route(r), &b("x"), Some(&b("q")), -4),
            Err(Broken("a route's interest removed that was not there"))
        );
        assert_eq!(
            i.apply_peer_delta(Peer::Shard(2), &b("y"), None, -1),
            Err(Broken("a shard retracted interest it never announced"))
        );
    }
}
