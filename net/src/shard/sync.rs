//! Strict interest mode (`cluster { sync_interest }`): a PONG that follows
//! a SUB waits until every peer node acknowledged the interest, through a
//! barrier across this node's shards and a sync on every route link.
//!
//! What completes when is the engine's (`shoal_engine::sync::Strict`);
//! this sends the `Sync` frames and the shard messages, and wakes the
//! client's PONG.

use super::Shard;
use crate::bus::{Control, ShardId};
use crate::route::RouteId;
use crate::runtime::LocalEvent;
use shoal_core::route as wire;
use shoal_engine::sync::SyncDone;
use std::cell::RefCell;
use std::rc::Rc;

/// Strict interest mode's state on a shard: the engine's counts, with the
/// event each barrier's PONG waits on.
#[derive(Default)]
pub(super) struct Strict(RefCell<shoal_engine::sync::Strict<Rc<LocalEvent>>>);

impl Strict {
    /// The syncs the closed link in `slot` no longer holds.
    pub(super) fn link_closed(&self, slot: u32) -> Vec<SyncDone> {
        self.0.borrow_mut().link_closed(slot)
    }
}

impl Shard {
    /// Strict interest mode: a barrier for a client of this shard. Every
    /// shard (this one included) sends a `Sync` on each of its links after
    /// the interest already sent there, and answers once all acknowledged.
    /// Returns the token (to cancel it) and the event set when it is done.
    pub(crate) fn barrier(&self) -> (u64, Rc<LocalEvent>) {
        let done = Rc::new(LocalEvent::default());
        let token = self
            .strict
            .0
            .borrow_mut()
            .open_barrier(self.shards, done.clone());
        let from = self.id;
        self.broadcast(|| Control::Barrier { from, token });
        self.start_sync(from, token);
        (token, done)
    }

    /// Forgets a barrier that timed out.
    pub(crate) fn cancel_barrier(&self, token: u64) {
        self.strict.0.borrow_mut().cancel_barrier(token);
    }

    pub(super) fn start_sync(&self, from: ShardId, token: u64) {
        let slots: Vec<u32> = self.routes.borrow().keys().copied().collect();
        let started = self.strict.0.borrow_mut().start_sync(from, token, slots);
        let local = match started {
            Ok(local) => local,
            Err(done) => return self.sync_complete(done),
        };
        for link in self.routes.borrow().values() {
            let res = link
                .conn
                .queue(|b| wire::write_token(b, wire::FrameKind::Sync, local));
            self.mark_dirty(&link.conn, res);
        }
        self.flush_dirty();
    }

    /// A link acknowledged a `Sync`.
    pub(crate) fn sync_acked(&self, route: RouteId, local: u64) {
        let done = self.strict.0.borrow_mut().sync_acked(route.slot, local);
        if let Some(done) = done {
            self.sync_complete(done);
        }
    }

    /// This shard's part of a barrier is done: tell the barrier's shard.
    pub(super) fn sync_complete(&self, done: SyncDone) {
        if done.from == self.id {
            self.barrier_done(done.token);
        } else {
            let _ = self.peers[done.from as usize]
                .send_control(Control::BarrierDone { token: done.token });
        }
    }

    /// One shard's part of a barrier of this shard is done.
    pub(super) fn barrier_done(&self, token: u64) {
        let done = self.strict.0.borrow_mut().barrier_done(token);
        match done {
            Ok(Some(event)) => event.set(),
            Ok(None) => {}
            Err(_) => self.invariant_broken("a barrier acknowledged more often than it waits"),
        }
    }
}
