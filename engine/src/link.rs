//! What a route link's peer announced, and the rule that turns each
//! announcement into a change of this node's mirrors.
//!
//! A peer announces absolute values (a plain subject 1 or 0, a queue group
//! with its node-wide member count); the shards mirror entries, so the
//! link's owner keeps what it learned and hands on the difference. A peer
//! cannot make this node hold more than [`MAX_ROUTE_WEIGHT`] entries per
//! queue group.

use ahash::AHashMap;
use bytes::Bytes;
use shoal_core::route::InterestOp;

/// Most queue members one peer may announce for a group (bounds the index
/// entries a peer can make this node hold).
pub const MAX_ROUTE_WEIGHT: u32 = 1 << 16;

/// What one link's peer announced: (subject, queue) → weight.
#[derive(Debug, Default, Clone)]
pub struct Learned {
    map: AHashMap<(Bytes, Option<Bytes>), u32>,
}

/// A change of the mirrors: `delta` entries for (subject, queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    pub subject: Bytes,
    pub queue: Option<Bytes>,
    pub delta: i32,
}

impl Learned {
    /// One announcement of the peer; `None` when it changes nothing.
    pub fn apply(&mut self, op: InterestOp) -> Option<Delta> {
        let subject = Bytes::from(op.subject);
        let queue = op.queue.map(Bytes::from);
        let weight = match queue {
            None => op.weight.min(1),
            Some(_) => op.weight.min(MAX_ROUTE_WEIGHT),
        };
        let key = (subject.clone(), queue.clone());
        let old = if weight == 0 {
            self.map.remove(&key).unwrap_or(0)
        } else {
            self.map.insert(key, weight).unwrap_or(0)
        };
        let delta = weight as i32 - old as i32;
        (delta != 0).then_some(Delta {
            subject,
            queue,
            delta,
        })
    }

    /// What the peer announces now for (subject, queue): 0 when nothing.
    pub fn weight(&self, subject: &[u8], queue: Option<&[u8]>) -> u32 {
        let key = (
            Bytes::copy_from_slice(subject),
            queue.map(Bytes::copy_from_slice),
        );
        self.map.get(&key).copied().unwrap_or(0)
    }

    /// Everything the peer announced, as removals, when the link goes.
    /// Sorted: the order every shard applies them in (and so the order of
    /// its index's entries) never depends on a hash map's iteration order,
    /// which differs per process. Once per link down.
    pub fn take(&mut self) -> Vec<Delta> {
        let mut gone: Vec<Delta> = self
            .map
            .drain()
            .map(|((subject, queue), w)| Delta {
                subject,
                queue,
                delta: -(w as i32),
            })
            .collect();
        gone.sort_unstable_by(|a, b| (&a.subject, &a.queue).cmp(&(&b.subject, &b.queue)));
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(s: &str, q: Option<&str>, weight: u32) -> InterestOp {
        InterestOp {
            subject: s.as_bytes().to_vec(),
            queue: q.map(|q| q.as_bytes().to_vec()),
            weight,
        }
    }

    #[test]
    fn absolute_announcements_become_deltas() {
        let mut l = Learned::default();
        assert_eq!(l.apply(op("a", None, 1)).map(|d| d.delta), Some(1));
        assert_eq!(l.apply(op("a", None, 1)), None, "a repeat changes nothing");
        assert_eq!(l.apply(op("a", None, 7)), None, "a plain subject is 0 or 1");
        assert_eq!(l.apply(op("a", Some("q"), 3)).map(|d| d.delta), Some(3));
        assert_eq!(l.apply(op("a", Some("q"), 1)).map(|d| d.delta), Some(-2));
        assert_eq!(
            l.apply(op("b", Some("q"), u32::MAX)).map(|d| d.delta),
            Some(MAX_ROUTE_WEIGHT as i32),
            "capped"
        );
        let mut gone = l.take();
        gone.sort_by_key(|d| (d.subject.clone(), d.queue.clone()));
        let deltas: Vec<i32> = gone.iter().map(|d| d.delta).collect();
        assert_eq!(deltas, [-1, -1, -(MAX_ROUTE_WEIGHT as i32)]);
        assert!(l.take().is_empty());
    }
}
