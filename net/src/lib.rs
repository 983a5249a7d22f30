//! shoal-net: the runtime (one glommio executor per shard, listeners, client
//! connections, the cross-shard bus). It depends on `shoal-core` only.
//!
//! This crate is intentionally empty until the single-node broker issue lands;
//! see `docs/ARCHITECTURE.md` for what it will own.
