//! shoal-cluster: route links between nodes, the rkyv route protocol,
//! interest sync, gossip discovery and one-hop forwarding. Depends on
//! `shoal-net` and `shoal-core`.
//!
//! Intentionally empty until the clustering issue lands; see
//! `docs/ARCHITECTURE.md`.
