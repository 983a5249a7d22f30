//! What shards send each other. Two channels per shard: an unbounded control
//! channel (interest and lifecycle; FIFO per sender, never blocks, so an
//! inbox task can never deadlock on another shard) and a bounded data channel
//! (message batches; a full channel makes the publishing connection wait,
//! which is the backpressure).

use crate::route::{RouteAttach, RouteId};
use bytes::Bytes;
use shoal_core::proto::Publish;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

pub(crate) use shoal_engine::ShardId;

/// A control message between shards.
#[derive(Debug)]
pub(crate) enum Control {
    /// An interest change on shard `from` (its own, or a route link's it
    /// owns), applied by `shoal_engine::Interest::apply_event`.
    Interest {
        from: ShardId,
        event: shoal_engine::ShardEvent,
    },
    /// Take over an authenticated route connection (to the owning shard).
    AttachRoute(Box<RouteAttach>),
    /// Write this pre-encoded frame on a route link (gossip INFO).
    RouteFrame {
        route: RouteId,
        frame: Bytes,
    },
    /// Close a route link (a duplicate, or the cluster is going away).
    CloseRoute {
        route: RouteId,
    },
    /// Strict interest mode: once every route link this shard owns has
    /// acknowledged everything sent before this, answer `BarrierDone`.
    Barrier {
        from: ShardId,
        token: u64,
    },
    BarrierDone {
        token: u64,
    },
    /// The cluster's client URLs changed: send clients a fresh INFO.
    InfoChanged,
    /// A reloaded configuration (users, permissions, limits).
    Reload(Arc<crate::shared::Dynamic>),
    /// Monitoring asks for this shard's connections and index figures.
    Snapshot {
        subs: bool,
        reply: flume::Sender<crate::snapshot::ShardSnapshot>,
    },
    /// Enter lame duck mode (sent by the server to every shard).
    LameDuck,
    /// Flush and close every connection, stop accepting, end the shard.
    Shutdown,
    /// What a shard did with a traced message the origin shard sent it
    /// (`shard/trace.rs`): its egress entries, and how many more batch
    /// entries it passed the message on in (each reports in turn).
    TraceReport {
        id: u64,
        entries: Vec<shoal_core::trace::Entry>,
        more: u32,
    },
    /// Nothing to do: the watchdog's wake-up for a shard that made no
    /// progress with work waiting (the message's arrival is the wake-up).
    Wake,
}

/// One message forwarded to another shard.
#[derive(Debug)]
pub(crate) struct Remote {
    pub publish: Publish,
    /// Deliver to the shard's plain subscribers.
    pub plain: bool,
    /// Deliver to one local member of each of these queue groups (the
    /// publishing shard already picked this shard for them).
    pub queues: Vec<Bytes>,
    /// Instead of local subscribers: write it on this route link (a slot of
    /// the receiving shard), with `plain` and `queues` for the peer.
    pub route: Option<u32>,
    /// What the receiving shard needs to pass a group of `queues` on when
    /// none of its members can take the message.
    pub fallback: Fallback,
    /// The message is traced (`Nats-Trace-Dest`): the receiving shard
    /// reports what it did with it to the origin shard.
    pub trace: Option<Arc<TraceTag>>,
}

/// What travels with a traced message between shards. One server publishes
/// one trace event per message, so the shard the message entered on (the
/// origin) assembles it from the other shards' reports.
#[derive(Debug)]
pub(crate) struct TraceTag {
    pub origin: ShardId,
    /// The event's key on the origin shard.
    pub id: u64,
    /// Trace without delivering (`Nats-Trace-Only`).
    pub only: bool,
    /// The hop this server is on, from `Nats-Trace-Hop` (None on the first
    /// server): route egresses are numbered under it.
    pub hop: Option<String>,
    /// Route egresses so far on every shard: numbers each new hop, and is
    /// the event's `hops` once every shard has reported.
    pub hops: AtomicU32,
    /// The ingress account: an egress to a client of another account says
    /// which.
    pub account: String,
}

/// A shard picked for a queue group may find that none of its members can
/// take the message after all (permissions deny the subject, `UNSUB` max
/// reached, closing, or they left since): it then passes the message on to
/// another member of the group, as nats-server re-picks, instead of dropping
/// it. The rule is the engine's (`shoal_engine::fanout`).
pub(crate) use shoal_engine::Fallback;

/// All messages for one shard from one processed read buffer.
pub(crate) type Batch = Vec<Remote>;

/// The sending ends to one shard.
#[derive(Clone)]
pub(crate) struct PeerLink {
    control: flume::Sender<Control>,
    data: flume::Sender<Batch>,
    /// Control messages sent to that shard and not yet applied by it: lets
    /// the shard check, with one atomic load, whether interest is in flight
    /// to it before it routes a read buffer of messages.
    pending: Arc<AtomicUsize>,
    /// Batches sent (or being sent) to that shard and not yet taken by it:
    /// lets it check, with one atomic load, whether messages routed to it
    /// must be delivered before it handles a client's next read buffer.
    data_pending: Arc<AtomicUsize>,
}

impl PeerLink {
    /// Control messages sent to that shard and not yet applied.
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Sends a batch, waiting while that shard's data channel is full (the
    /// backpressure). Err when that shard stopped.
    pub(crate) async fn send_data(&self, batch: Batch) -> Result<(), ()> {
        self.data_pending.fetch_add(1, Ordering::Release);
        self.data.send_async(batch).await.map_err(|_| {
            self.data_pending.fetch_sub(1, Ordering::Release);
        })
    }

    /// Sends a batch if the channel has room.
    pub(crate) fn try_send_data(&self, batch: Batch) -> Result<(), flume::TrySendError<Batch>> {
        self.data_pending.fetch_add(1, Ordering::Release);
        self.data.try_send(batch).inspect_err(|_| {
            self.data_pending.fetch_sub(1, Ordering::Release);
        })
    }

    /// Sends a control message (never blocks). Err when that shard stopped.
    pub(crate) fn send_control(&self, msg: Control) -> Result<(), ()> {
        self.pending.fetch_add(1, Ordering::Release);
        self.control.send(msg).map_err(|_| {
            self.pending.fetch_sub(1, Ordering::Release);
        })
    }
}

/// The receiving ends of one shard.
pub(crate) struct Inbox {
    pub control: flume::Receiver<Control>,
    pub data: flume::Receiver<Batch>,
    pub pending: Arc<AtomicUsize>,
    /// Batches sent and not yet taken: whoever takes one decrements it.
    pub data_pending: Arc<AtomicUsize>,
}

/// Capacity of each shard's data channel, in batches.
pub(crate) const DATA_CHANNEL_BATCHES: usize = 1024;

pub(crate) fn channels(shards: usize) -> (Vec<PeerLink>, Vec<Inbox>) {
    let mut links = Vec::with_capacity(shards);
    let mut inboxes = Vec::with_capacity(shards);
    for _ in 0..shards {
        let (ctx, crx) = flume::unbounded();
        let (dtx, drx) = flume::bounded(DATA_CHANNEL_BATCHES);
        let pending = Arc::new(AtomicUsize::new(0));
        let data_pending = Arc::new(AtomicUsize::new(0));
        links.push(PeerLink {
            control: ctx,
            data: dtx,
            pending: pending.clone(),
            data_pending: data_pending.clone(),
        });
        inboxes.push(Inbox {
            control: crx,
            data: drx,
            pending,
            data_pending,
        });
    }
    (links, inboxes)
}
