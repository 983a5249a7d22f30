//! The names the engine routes by.

use std::hash::{Hash, Hasher};

/// A shard of this node (at most 64: fan-out keeps shard sets in a `u64`).
pub type ShardId = u16;

/// The most shards a node may run.
pub const MAX_SHARDS: usize = 64;

/// A route link: the shard of this node that owns it, and its slot there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteId {
    pub shard: ShardId,
    pub slot: u32,
}

impl std::fmt::Display for RouteId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rid:{}", self.slot)
    }
}

/// A handle on a local subscription, compared by identity (the glue's is a
/// pointer, the simulator's a number).
pub trait SubHandle {
    /// Equal for the same subscription, different for any other alive.
    fn identity(&self) -> usize;
}

/// The glue's handle: a shared pointer, by address.
impl<T> SubHandle for std::rc::Rc<T> {
    fn identity(&self) -> usize {
        std::rc::Rc::as_ptr(self) as *const () as usize
    }
}

/// What a subscription in a shard's index points at.
#[derive(Clone, Debug)]
pub enum Target<L> {
    /// A subscription of a client on this shard.
    Local(L),
    /// Interest of another shard of this node (one entry per plain
    /// subject, one per queue member: the multiplicity is the queue
    /// weight).
    Shard(ShardId),
    /// Interest of a peer node, through a route link (same multiplicity).
    Route(RouteId),
}

impl<L: SubHandle> PartialEq for Target<L> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Target::Local(a), Target::Local(b)) => a.identity() == b.identity(),
            (Target::Shard(a), Target::Shard(b)) => a == b,
            (Target::Route(a), Target::Route(b)) => a == b,
            _ => false,
        }
    }
}

impl<L: SubHandle> Eq for Target<L> {}

impl<L: SubHandle> Hash for Target<L> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Target::Local(s) => (0u8, s.identity()).hash(state),
            Target::Shard(id) => (1u8, *id).hash(state),
            Target::Route(r) => (2u8, r.shard, r.slot).hash(state),
        }
    }
}
