//! shoal-engine: the broker's decisions, free of I/O.
//!
//! What lives here decides; what lives in `shoal-net` carries out. No
//! executor, channels, sockets, clock or global RNG are reachable from this
//! crate (its `Cargo.toml` has none of them; `clippy.toml` bans the clock),
//! so every rule here runs the same in a shard and in the deterministic
//! simulator (`tests/sim.rs`), which drives many shards of many nodes in one
//! thread from a seed.
//!
//! - [`ids`]: who a message can go to ([`Target`]: a local subscription,
//!   another shard of this node, a peer node through a route link).
//! - [`fanout`]: the one fan-out of a message over its matches, with the
//!   eligibility rule (which origin may reach which target) written once.
//! - [`interest`]: a shard's index and the counts that decide what it
//!   announces, with one entry point for other shards' and routes' deltas.
//! - [`link`]: what a route link's peer announced, turned into deltas.
//! - [`sync`]: strict interest mode's barriers and syncs (what completes
//!   when).
//! - [`keepalive`]: the PING/PONG rule of client connections and route
//!   links.
//! - [`client`]: a client connection's protocol state and every decision on
//!   what it sends (CONNECT, PUB, SUB, UNSUB, keep-alive, reload), with
//!   nats-server's `-ERR` texts and log lines.

pub mod client;
pub mod fanout;
pub mod ids;
pub mod interest;
pub mod keepalive;
pub mod link;
pub mod sync;

pub use client::{Answer, ClientFlags, ClientState, CloseReason, Refusal, SubCheck};
pub use fanout::{Fallback, Origin, Router, Sink, Want};
pub use ids::{RouteId, ShardId, SubHandle, Target};
pub use interest::{Broken, Interest, NodeInterest, Outbox, Peer, ShardEvent};
pub use keepalive::{KeepAlive, Tick};
pub use link::{Delta, Learned};
