//! shoal-bench: the capacity-planning load generator. It may reuse
//! `shoal-core`'s codec but depends on nothing of the server runtime.
//!
//! Intentionally empty until the shoal-bench issue lands; see
//! `docs/ARCHITECTURE.md`.
