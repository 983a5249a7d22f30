//! State shared by every shard of one server: the configuration it started
//! with, the reloadable part (`Dynamic`), identity, counters, and what
//! monitoring and membership read (`connect_urls`, live route links).
//!
//! Plain data below every task module: the shards, the client and route
//! tasks and the server's start-up all read it; it names no shard, task or
//! channel, so it imports only leaf modules (`route`'s ids and views,
//! `stats`, `auth_pool`).

use crate::auth_pool::AuthPool;
use crate::route::{RouteEvent, RouteId, RouteView};
use crate::stats::ShardStats;
use shoal_core::auth::Authenticator;
use shoal_core::config::ServerConfig;
use shoal_core::proto::ServerInfo;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Immutable state shared by every shard (plus counters).
pub(crate) struct Shared {
    /// The configuration the server started with: what cannot change while
    /// it runs (addresses, shards, cluster) is read from here.
    pub config: ServerConfig,
    /// What a reload can change (users, permissions, limits): shards keep
    /// their own copy (`Shard::current`), replaced by `Control::Reload`.
    pub dynamic: std::sync::RwLock<Arc<Dynamic>>,
    pub server_id: String,
    pub server_name: String,
    pub addr: SocketAddr,
    pub next_client_id: AtomicU64,
    /// Sequence of the trace events this server published (their
    /// `server.seq`).
    pub trace_seq: AtomicU64,
    /// Client connections on all shards (for `max_connections`).
    pub connections: AtomicUsize,
    pub shard_stats: Vec<Arc<ShardStats>>,
    pub lame_duck: AtomicBool,
    pub started: Instant,
    /// Test hook (environment variable `SHOAL_TEST_CONTROL_DELAY_MS`): each
    /// shard's control inbox task waits this long before taking each
    /// message, simulating a shard too busy to run its inbox. Tests use it to
    /// prove that subscriptions are visible without the inbox task's help.
    pub test_control_delay: Option<std::time::Duration>,
    /// Test hook (`SHOAL_TEST_ROUTE_DELAY_MS`): route links wait this long
    /// before applying each read buffer, simulating a slow peer, so tests can
    /// show what strict interest mode waits for.
    pub test_route_delay: Option<std::time::Duration>,
    /// Client TLS, when configured: every client must use it.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The cluster's client URLs (this node's and its peers'), for INFO.
    pub connect_urls: Mutex<Vec<String>>,
    /// Live route links, for monitoring.
    pub routes: Mutex<BTreeMap<RouteId, RouteView>>,
    /// What route links report to the membership layer.
    pub route_events: flume::Sender<RouteEvent>,
    /// The next route link's slot, and the shard it goes to (round-robin):
    /// taken by `ServerControl::attach_route` only.
    pub next_route_slot: AtomicU32,
    pub next_route_shard: AtomicUsize,
    /// Ready to serve (`/healthz`): set by the binary, or by the membership
    /// layer once the cluster's interest has arrived.
    pub ready: AtomicBool,
    /// Shards whose clients are all gone at shutdown: route links close when
    /// every shard got there, so what clients sent is forwarded first.
    pub shards_without_clients: AtomicUsize,
    /// Where bcrypt checks run (never on a shard).
    pub auth_pool: AuthPool,
}

/// The reloadable part of the configuration, with the authenticator built
/// from it.
pub(crate) struct Dynamic {
    pub config: ServerConfig,
    pub auth: Authenticator,
}

impl std::fmt::Debug for Dynamic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print credentials.
        f.write_str("Dynamic { .. }")
    }
}

impl Shared {
    pub(crate) fn current(&self) -> Arc<Dynamic> {
        self.dynamic
            .read()
            .map(|d| d.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// The INFO a client gets.
    /// The INFO for one client; `nonce` is the one it was sent first (nkey
    /// users and operator mode).
    pub(crate) fn info_for(
        &self,
        client_id: u64,
        addr: SocketAddr,
        nonce: Option<&str>,
    ) -> ServerInfo {
        let d = self.current();
        ServerInfo {
            server_id: self.server_id.clone(),
            server_name: self.server_name.clone(),
            version: crate::NATS_VERSION.into(),
            shoal_version: Some(crate::VERSION.into()),
            proto: 1,
            host: self.addr.ip().to_string(),
            port: self.addr.port(),
            headers: true,
            max_payload: d.config.max_payload,
            client_id: Some(client_id),
            client_ip: Some(addr.ip().to_string()),
            auth_required: d.auth.required(),
            ldm: self.lame_duck.load(Relaxed),
            tls_required: self.tls.is_some(),
            tls_verify: self.config.tls.as_ref().is_some_and(|t| t.verify),
            connect_urls: self
                .connect_urls
                .lock()
                .map(|u| u.clone())
                .unwrap_or_default(),
            nonce: nonce.map(str::to_owned),
            ..Default::default()
        }
    }
}
