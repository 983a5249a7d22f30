//! Strict interest mode's bookkeeping (`cluster { sync_interest }`): a
//! client's PONG after a SUB waits until every peer node acknowledged the
//! interest sent before it.
//!
//! Two counts, both here: a **barrier** on the client's shard waits for
//! every shard of the node (itself included) to report that its links
//! acknowledged; a **sync** on each shard waits for every link it owns to
//! answer one `Sync` frame. A link that closes no longer holds a sync; a
//! shard with no links answers at once. The glue sends the frames and the
//! shard messages and wakes the client; what completes when is decided
//! here, so the rules are unit-tested without a runtime.

use crate::ids::ShardId;
use ahash::AHashMap;

/// An acknowledgement that matches nothing waiting: a barrier answered
/// more often than the node has shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverAcked;

/// One shard's barriers and syncs. `W` is what the glue wakes when a
/// barrier completes (an event a client's PONG waits on).
#[derive(Debug)]
pub struct Strict<W> {
    /// Barriers of this shard's clients: shards still to answer, and the
    /// waiter.
    barriers: AHashMap<u64, (usize, W)>,
    /// Syncs sent on this shard's links, by local token: for which
    /// shard's barrier, and the link slots still to answer.
    syncs: AHashMap<u64, PendingSync>,
    next_token: u64,
}

#[derive(Debug)]
struct PendingSync {
    from: ShardId,
    token: u64,
    waiting: Vec<u32>,
}

/// What a sync's completion asks the glue to do: tell shard `from` that
/// this shard's part of barrier `token` is done (itself, when `from` is
/// this shard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncDone {
    pub from: ShardId,
    pub token: u64,
}

impl<W> Default for Strict<W> {
    fn default() -> Self {
        Strict {
            barriers: AHashMap::new(),
            syncs: AHashMap::new(),
            next_token: 0,
        }
    }
}

impl<W> Strict<W> {
    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// A client's barrier over `shards` shards; the glue then asks every
    /// shard, this one included, to `start_sync` for the returned token.
    pub fn open_barrier(&mut self, shards: usize, waiter: W) -> u64 {
        debug_assert!(shards > 0, "a node has at least this shard");
        let token = self.token();
        self.barriers.insert(token, (shards, waiter));
        token
    }

    /// A barrier that timed out: forgotten (later answers find nothing).
    pub fn cancel_barrier(&mut self, token: u64) {
        self.barriers.remove(&token);
    }

    /// One shard's part of barrier `token` is done. Returns the waiter to
    /// wake when it was the last; `Err` when the barrier had no answer
    /// left to wait for (an impossible state: the glue asserts and counts
    /// it).
    pub fn barrier_done(&mut self, token: u64) -> Result<Option<W>, OverAcked> {
        let Some((left, _)) = self.barriers.get_mut(&token) else {
            // Cancelled (timed out) meanwhile.
            return Ok(None);
        };
        *left = left.checked_sub(1).ok_or(OverAcked)?;
        if *left > 0 {
            return Ok(None);
        }
        Ok(self.barriers.remove(&token).map(|(_, w)| w))
    }

    /// Barrier `token` of shard `from` asks this shard to sync its links
    /// (`slots`). `Ok(local)`: send a `Sync` with token `local` on every
    /// link; `Err(done)`: no link, this shard's part is done now.
    pub fn start_sync(
        &mut self,
        from: ShardId,
        token: u64,
        slots: Vec<u32>,
    ) -> Result<u64, SyncDone> {
        if slots.is_empty() {
            return Err(SyncDone { from, token });
        }
        let local = self.token();
        self.syncs.insert(
            local,
            PendingSync {
                from,
                token,
                waiting: slots,
            },
        );
        Ok(local)
    }

    /// The link in `slot` acknowledged sync `local`.
    pub fn sync_acked(&mut self, slot: u32, local: u64) -> Option<SyncDone> {
        let s = self.syncs.get_mut(&local)?;
        s.waiting.retain(|w| *w != slot);
        if !s.waiting.is_empty() {
            return None;
        }
        self.syncs.remove(&local).map(|s| SyncDone {
            from: s.from,
            token: s.token,
        })
    }

    /// The link in `slot` closed: no sync waits for it any more; the syncs
    /// it was the last to hold are done.
    pub fn link_closed(&mut self, slot: u32) -> Vec<SyncDone> {
        let mut done = Vec::new();
        self.syncs.retain(|_, s| {
            s.waiting.retain(|w| *w != slot);
            if s.waiting.is_empty() {
                done.push(SyncDone {
                    from: s.from,
                    token: s.token,
                });
            }
            !s.waiting.is_empty()
        });
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_barrier_completes_when_every_shard_answered_once() {
        let mut s: Strict<&str> = Strict::default();
        let t = s.open_barrier(2, "pong");
        assert_eq!(s.barrier_done(t), Ok(None));
        assert_eq!(s.barrier_done(t), Ok(Some("pong")));
        // Gone: a late answer finds nothing (as after a timeout).
        assert_eq!(s.barrier_done(t), Ok(None));
        let t2 = s.open_barrier(1, "again");
        assert_ne!(t, t2, "tokens are never reused");
        s.cancel_barrier(t2);
        assert_eq!(s.barrier_done(t2), Ok(None));
    }

    #[test]
    fn a_sync_waits_for_every_link_and_a_closed_link_no_longer_holds_it() {
        let mut s: Strict<()> = Strict::default();
        assert_eq!(
            s.start_sync(1, 7, vec![]),
            Err(SyncDone { from: 1, token: 7 }),
            "no link: done at once"
        );
        let local = s.start_sync(1, 7, vec![10, 11, 12]).unwrap();
        assert_eq!(s.sync_acked(10, local), None);
        assert_eq!(s.sync_acked(10, local), None, "a repeat counts once");
        assert_eq!(s.link_closed(12), vec![]);
        assert_eq!(
            s.sync_acked(11, local),
            Some(SyncDone { from: 1, token: 7 })
        );
        assert_eq!(s.sync_acked(11, local), None, "done once");
        let other = s.start_sync(0, 8, vec![3]).unwrap();
        assert_eq!(s.link_closed(3), vec![SyncDone { from: 0, token: 8 }]);
        assert_eq!(s.sync_acked(3, other), None);
    }
}
