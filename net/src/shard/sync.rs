//! Strict interest mode (`cluster { sync_interest }`): a PONG that follows
//! a SUB waits until every peer node acknowledged the interest, through a
//! barrier across this node's shards and a sync on every route link.

use super::Shard;
use crate::bus::{Control, ShardId};
use crate::route::RouteId;
use crate::runtime::LocalEvent;
use ahash::AHashMap;
use shoal_core::route as wire;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// Strict interest mode's state on a shard.
#[derive(Default)]
pub(super) struct Strict {
    /// Syncs sent on this shard's links, by token.
    pub syncs: RefCell<AHashMap<u64, PendingSync>>,
    /// Barriers clients of this shard wait for.
    pub barriers: RefCell<AHashMap<u64, Rc<BarrierWait>>>,
    pub next_token: Cell<u64>,
}

/// A `Sync` sent on every link of this shard for a barrier of shard `from`.
pub(super) struct PendingSync {
    pub(super) from: ShardId,
    pub(super) token: u64,
    /// Slots of the links that have not acknowledged yet.
    pub(super) waiting: Vec<u32>,
}

/// A client's barrier: every shard answers once all its links acknowledged.
pub(crate) struct BarrierWait {
    pub(super) remaining: Cell<usize>,
    pub done: LocalEvent,
}

impl Shard {
    pub(super) fn token(&self) -> u64 {
        let t = self.strict.next_token.get() + 1;
        self.strict.next_token.set(t);
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
        self.strict
            .barriers
            .borrow_mut()
            .insert(token, wait.clone());
        let from = self.id;
        self.broadcast(|| Control::Barrier { from, token });
        self.start_sync(from, token);
        (token, wait)
    }

    /// Forgets a barrier that timed out.
    pub(crate) fn cancel_barrier(&self, token: u64) {
        self.strict.barriers.borrow_mut().remove(&token);
    }

    pub(super) fn start_sync(&self, from: ShardId, token: u64) {
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
        self.strict.syncs.borrow_mut().insert(
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
            let mut syncs = self.strict.syncs.borrow_mut();
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

    pub(super) fn sync_complete(&self, from: ShardId, token: u64) {
        if from == self.id {
            self.barrier_done(token);
        } else {
            let _ = self.peers[from as usize].send_control(Control::BarrierDone { token });
        }
    }

    pub(super) fn barrier_done(&self, token: u64) {
        let mut barriers = self.strict.barriers.borrow_mut();
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
}
