//! shoal-core: the I/O-free heart of the Shoal broker.
//!
//! - [`proto`]: the NATS client protocol (streaming zero-copy parser for both
//!   directions, encoders, headers, INFO/CONNECT documents).
//! - [`subject`]: subject tokens, validation, the reference wildcard matcher.
//! - [`index`]: the subject index with its match cache, generic over what a
//!   subscription points at.
//! - [`auth`]: users, passwords, tokens and per-user permissions.
//! - [`route`]: the route wire format between cluster nodes (framing, rkyv
//!   payloads, validation).
//! - [`trace`]: message tracing requests and events (nats-server 2.11).
//!
//! Nothing here does I/O, spawns, locks or reads the clock: the runtime
//! (`shoal-net`) drives it, which keeps it testable and shard-local.

pub mod auth;
pub mod config;
pub mod index;
pub mod proto;
pub mod route;
pub mod subject;
pub mod trace;
