//! shoal-net: the runtime. One glommio executor per shard, pinned to a CPU;
//! every shard binds the client port (SO_REUSEPORT), owns the connections it
//! accepts for their whole life, keeps its partition of the subject index and
//! the interest of the other shards, and exchanges interest and message
//! batches with them over flume channels. No locks on the message path.
//!
//! Modules, each owning one thing, from the bottom layer up; a module
//! imports only from the layers below it (docs/ARCHITECTURE.md has the code
//! map; `tests/layering.rs` fails on an import cycle):
//! - leaves: `runtime` (the seam to glommio), `stats` (per-shard counters),
//!   `listen` (binding the port once per shard), `auth_pool` (threads that
//!   run bcrypt checks, never a shard), `watchdog` (a thread that reports a
//!   shard making no progress with work waiting), `route` (what every layer
//!   may name about a route link, and what this node announces on links);
//! - plain shared data: `snapshot` (what a shard reports to monitoring),
//!   `shared` (state shared by every shard, and the reloadable part);
//! - `tls`: TLS sessions (rustls): the client handshake, sealing and
//!   decrypting for clients and route links;
//! - `outbound`: a connection's socket I/O: its outbound buffer, flushing,
//!   closing, and the one read primitive;
//! - `bus`: what shards send each other;
//! - `shard`: a shard's index, interest, routing and inbox, with what its
//!   inbox starts: route link tasks (`shard::link`), lame duck and shutdown
//!   (`shard::lifecycle`), monitoring answers (`shard::snapshot`), message
//!   tracing (`shard::trace`);
//! - `client`: the accept loop and a client connection's protocol task;
//! - `server`: start (bind, executors, channels) and the control handle;
//!   nothing imports it.

mod auth_pool;
mod bus;
mod client;
mod listen;
mod outbound;
pub mod route;
pub mod runtime;
mod server;
mod session;
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
