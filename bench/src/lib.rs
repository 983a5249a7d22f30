//! shoal-bench: a NATS-protocol load generator that measures any server
//! (Shoal, nats-server, ...). It reuses `shoal-core`'s codec and nothing of
//! the server runtime.
//!
//! Connections are blocking sockets on plain threads: a load generator's job
//! is to be simple and not the bottleneck, and one thread per connection with
//! large batched writes does that on a few cores.

pub mod conn;
pub mod conns;
pub mod liveness;
pub mod plan;
mod plot;
pub mod publish;
pub mod pubsub;
pub mod queue;
pub mod reqrep;
pub mod sink;
pub mod sweep;
