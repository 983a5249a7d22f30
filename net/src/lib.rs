//! shoal-net: the runtime. One glommio executor per shard, pinned to a CPU;
//! every shard binds the client port (SO_REUSEPORT), owns the connections it
//! accepts for their whole life, keeps its partition of the subject index and
//! the interest of the other shards, and exchanges interest and message
//! batches with them over flume channels. No locks on the message path.
//!
//! Modules, each owning one thing:
//! - `auth_pool`: threads that run bcrypt checks (never a shard);
//! - `server`: start (bind, executors, channels) and the stop handle;
//! - `shard`: a shard's index, interest, routing and inbox;
//! - `client`: a connection's protocol handling;
//! - `outbound`: a connection's outbound buffer, flushing, closing;
//! - `bus`: what shards send each other;
//! - `lifecycle`: accepting, lame duck, shutdown;
//! - `listen`: binding the port once per shard;
//! - `route`: route links to peer nodes (the cluster's data plane);
//! - `runtime`: the seam to glommio;
//! - `stats`: per-shard counters;
//! - `tls`: TLS (rustls): the client handshake, and sealing and decrypting
//!   for clients and route links;
//! - `snapshot`: what a shard reports to monitoring on request;
//! - `watchdog`: a thread that reports a shard making no progress with work
//!   waiting.

mod auth_pool;
mod bus;
mod client;
mod listen;
mod outbound;
pub mod route;
pub mod runtime;
mod server;
mod shard;
mod shared;
pub mod snapshot;
pub mod stats;
pub mod tls;
mod watchdog;

pub use outbound::CloseReason;
pub use server::{Server, ServerControl, StartError, MAX_SHARDS};

/// Shoal's own version (INFO `shoal_version`, `/varz`, `--version`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The nats-server release whose client-visible protocol Shoal implements,
/// reported as INFO `version`: clients read it to decide which features the
/// server has (headers, no-responders; nats.py's suite asserts major 2), so
/// it must not be Shoal's own 0.x.
pub const NATS_VERSION: &str = "2.9.10";
