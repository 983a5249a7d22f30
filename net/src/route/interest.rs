//! The node's own interest, as one shard sees it: what its route links
//! announce to peers.
//!
//! Every shard already learns of every other shard's first plain subscriber
//! of a subject and of every queue member (the shard bus); counting those
//! per subject gives the node-wide view without any coordinator. A plain
//! subject is announced when the first shard gains interest and retracted
//! when the last loses it; a queue group is announced with its node-wide
//! member count on every change. Interest learned from routes never enters
//! here, so it is never sent on.

use ahash::AHashMap;
use bytes::Bytes;
use shoal_core::route::InterestOp;

#[derive(Default, Debug)]
pub(crate) struct NodeInterest {
    /// Shards with at least one plain subscriber of the subject.
    plain: AHashMap<Bytes, u32>,
    /// Members of the queue group on this node.
    queues: AHashMap<(Bytes, Bytes), u32>,
}

impl NodeInterest {
    /// One more shard with plain interest, or one more queue member. Returns
    /// what peers must be told, if anything.
    pub(crate) fn add(&mut self, subject: &Bytes, queue: Option<&Bytes>) -> Option<InterestOp> {
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
    pub(crate) fn remove(&mut self, subject: &Bytes, queue: Option<&Bytes>) -> Option<InterestOp> {
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
    pub(crate) fn snapshot(&self) -> Vec<InterestOp> {
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
}
