//! Route links: the data plane between cluster nodes.
//!
//! Membership (who to dial, handshakes, gossip, duplicate links) is
//! shoal-cluster's; it hands the server authenticated connections
//! (`ServerControl::attach_route`). Each link is owned by one shard (chosen
//! round-robin), whose link task (`shard::link`) reads and writes it like a
//! client connection. What crosses a link:
//!
//! - interest of this node's own clients, as the engine's `NodeInterest` on
//!   the owning shard computes it (a snapshot at link up, then increments); interest
//!   learned from a route is never sent on;
//! - messages published by this node's clients that the peer has interest in,
//!   once per peer; a message that came from a route goes to local
//!   subscribers only (one hop, no loops).
//!
//! The peer's interest is entered into every shard's index as
//! `Target::Route(id)` (the owner broadcasts it), so any shard's publish path
//! finds it with the same lookup as local interest.
//!
//! This module holds what every layer may name about a route (its id, who
//! the peer is, the attach request, events for membership, monitoring's
//! view); the rule for what this node announces is the engine's
//! (`shoal_engine::interest`). It is plain data and imports nothing from this crate, so the
//! bus, the shared state and monitoring name a link without knowing shards;
//! the link's task lives with the shard that owns it (`shard::link`).

use shoal_core::route::RouteInfo;
use std::sync::atomic::AtomicU64;

/// A route link: the shard that owns it and its slot there.
pub use shoal_engine::RouteId;

/// Who is at the other end of a link (from its INFO).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerMeta {
    pub server_id: String,
    pub server_name: String,
    pub route_url: String,
    /// This node dialed the link (nats-server's "solicited").
    pub solicited: bool,
}

/// An authenticated route connection handed to a shard (with its TLS
/// session when the cluster uses TLS).
#[derive(Debug)]
pub struct RouteAttach {
    pub id: RouteId,
    pub stream: std::net::TcpStream,
    pub peer: PeerMeta,
    pub tls: Option<rustls::Connection>,
}

/// What route links report to the membership layer.
#[derive(Debug, Clone)]
pub enum RouteEvent {
    /// The peer sent a new INFO (its view of the cluster changed).
    Info {
        route: RouteId,
        info: RouteInfo,
    },
    /// The peer's interest snapshot has been applied on every shard's path.
    SnapshotDone {
        route: RouteId,
    },
    Closed {
        route: RouteId,
        reason: String,
    },
}

/// Per-link counters for monitoring (`/routez`), written by the owning shard.
#[derive(Debug, Default)]
pub struct RouteStats {
    pub in_msgs: AtomicU64,
    pub out_msgs: AtomicU64,
    pub in_bytes: AtomicU64,
    pub out_bytes: AtomicU64,
    /// Subjects and queue members the peer announced.
    pub subscriptions: AtomicU64,
    /// Messages not exchanged because their content breaks the route rule
    /// (`is_routable`): refused from the peer, or never sent to it.
    pub refused_msgs: AtomicU64,
}

/// A live link as monitoring sees it.
#[derive(Debug, Clone)]
pub struct RouteView {
    pub id: RouteId,
    pub peer: PeerMeta,
    pub addr: std::net::SocketAddr,
    pub stats: std::sync::Arc<RouteStats>,
    pub since: std::time::SystemTime,
}
