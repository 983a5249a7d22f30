//! Starting the server: bind the client port once per shard, start one
//! pinned executor per shard, connect the shards with channels; and the
//! handle used to stop it.

use crate::bus::{self, Control, PeerLink};
use crate::client;
use crate::listen;
use crate::route::{PeerMeta, RouteAttach, RouteEvent, RouteId, RouteView};
use crate::runtime::{self, ExecutorSpec, TcpListener};
use crate::shard::Shard;
use crate::shared::{Dynamic, Shared};
use crate::stats::{ShardStats, StatsSnapshot};
use shoal_core::auth::{AuthConfigError, Authenticator};
use shoal_core::config::ServerConfig;
use shoal_core::route::RouteInfo;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::FromRawFd;
use std::os::fd::IntoRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use thiserror::Error;
use tracing::info;

/// Most shards supported (a shard set is a 64-bit mask on the hot path).
pub const MAX_SHARDS: usize = 64;

#[derive(Debug, Error)]
pub enum StartError {
    #[error("invalid authorization configuration: {0}")]
    Auth(#[from] AuthConfigError),
    #[error("cannot listen for client connections on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Executor(std::io::Error),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("TLS: {0}")]
    Tls(String),
}

/// A running server.
pub struct Server {
    shared: Arc<Shared>,
    links: Vec<PeerLink>,
    threads: Vec<std::thread::JoinHandle<()>>,
    route_events: Option<flume::Receiver<RouteEvent>>,
    /// Ends the watchdog thread once the shards have stopped.
    watchdog_stop: Arc<AtomicBool>,
}

fn server_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..56)
        .map(|i| {
            if i == 0 {
                'N'
            } else {
                ALPHABET[fastrand::usize(..32)] as char
            }
        })
        .collect()
}

/// The authentication configuration plus the secret the service-reply
/// MAC key needs in operator mode, where every JWT is public: the cluster's
/// route credentials (which every node has and no client), else a random
/// key of this process (kept across reloads). Without route credentials a
/// reply to a service import that crosses to another node fails its MAC
/// check there (a start notice says so).
fn auth_config(config: &ServerConfig) -> shoal_core::auth::AuthConfig {
    static PROCESS_KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    let process_key = || {
        PROCESS_KEY
            .get_or_init(|| {
                use ring::rand::SecureRandom;
                let mut k = [0u8; 32];
                ring::rand::SystemRandom::new()
                    .fill(&mut k)
                    .expect("the system random generator failed");
                k
            })
            .to_vec()
    };
    let mut auth = config.auth.clone();
    let secret = match (&config.cluster.user, &config.cluster.password) {
        // Every node has these and no client does.
        (Some(u), Some(p)) => [u.as_bytes(), b"\0", p.as_bytes()].concat(),
        // One node: nobody else needs the key.
        _ if !config.cluster.enabled() => process_key(),
        // A cluster without route credentials: in operator mode nothing in
        // the configuration is secret, so the key is this process's (a
        // start notice says what that costs); otherwise the configured
        // passwords key it, the same on every node.
        _ if auth.operator.enabled() => process_key(),
        _ => Vec::new(),
    };
    auth.reply_secret = shoal_core::auth::ReplySecret(secret);
    auth
}

impl Server {
    /// Binds, starts every shard, and returns once all accept connections.
    pub fn start(config: ServerConfig) -> Result<Server, StartError> {
        let auth = Authenticator::new(&auth_config(&config))?;
        let tls = match &config.tls {
            Some(t) => Some(crate::tls::server_config(t).map_err(StartError::Tls)?),
            None => None,
        };
        let cpus = runtime::allowed_cpus();
        let shards = config.shards.unwrap_or(cpus.len()).max(1);
        if shards > MAX_SHARDS {
            return Err(StartError::Config(format!(
                "at most {MAX_SHARDS} shards are supported"
            )));
        }
        let port = match config.port {
            -1 => 0,
            p if (0..=65535).contains(&p) => p as u16,
            p => return Err(StartError::Config(format!("invalid port {p}"))),
        };
        let listen_err = |source| StartError::Listen {
            addr: format!("{}:{}", config.host, config.port),
            source,
        };
        let addr = listen::resolve(&config.host, port).map_err(listen_err)?;
        let (sockets, bound) = listen::bind_all(addr, shards).map_err(listen_err)?;
        let id = server_id();
        let (events_tx, events_rx) = flume::unbounded();
        let shared = Arc::new(Shared {
            server_name: config.server_name.clone().unwrap_or_else(|| id.clone()),
            server_id: id,
            dynamic: std::sync::RwLock::new(Arc::new(Dynamic {
                config: config.clone(),
                auth,
            })),
            addr: bound,
            next_client_id: AtomicU64::new(1),
            trace_seq: AtomicU64::new(0),
            connections: AtomicUsize::new(0),
            shard_stats: (0..shards)
                .map(|_| Arc::new(ShardStats::default()))
                .collect(),
            lame_duck: AtomicBool::new(false),
            started: Instant::now(),
            test_control_delay: std::env::var("SHOAL_TEST_CONTROL_DELAY_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .map(std::time::Duration::from_millis),
            test_route_delay: std::env::var("SHOAL_TEST_ROUTE_DELAY_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .map(std::time::Duration::from_millis),
            tls,
            connect_urls: Mutex::new(Vec::new()),
            routes: Mutex::new(BTreeMap::new()),
            route_events: events_tx,
            next_route_slot: AtomicU32::new(1),
            next_route_shard: AtomicUsize::new(0),
            ready: AtomicBool::new(false),
            shards_without_clients: AtomicUsize::new(0),
            auth_pool: crate::auth_pool::AuthPool::start(),
            config,
        });
        let (links, inboxes) = bus::channels(shards);
        let mut threads = Vec::with_capacity(shards);
        let mut watched = Vec::with_capacity(shards);
        for (i, (socket, inbox)) in sockets.into_iter().zip(inboxes).enumerate() {
            let shared = shared.clone();
            let peers = links.clone();
            let fd = socket.into_raw_fd();
            let (data, pending, wake) = (inbox.data.clone(), links[i].clone(), links[i].clone());
            watched.push(crate::watchdog::Watched {
                stats: shared.shard_stats[i].clone(),
                inbox_depth: Box::new(move || data.len()),
                control_pending: Box::new(move || pending.pending()),
                wake: Box::new(move || {
                    let _ = wake.send_control(Control::Wake);
                }),
                listen_fd: fd,
            });
            let spec = ExecutorSpec {
                name: format!("shoal-shard-{i}"),
                cpu: Some(cpus[i % cpus.len()]),
                spin_before_park: shared.config.spin_before_park,
            };
            let handle = runtime::start_executor(spec, move || async move {
                // SAFETY: `fd` is a bound, listening socket this closure owns.
                let listener = unsafe { TcpListener::from_raw_fd(fd) };
                let shard = Rc::new(Shard::new(i as u16, shared, peers));
                shard.start_inbox(inbox);
                runtime::spawn_detached(client::accept_loop(shard.clone(), listener));
                shard.life.stopped.wait().await;
            });
            match handle {
                Ok(h) => threads.push(h),
                Err(e) => {
                    for l in &links {
                        let _ = l.send_control(Control::Shutdown);
                    }
                    return Err(StartError::Executor(e));
                }
            }
        }
        let watchdog_stop = Arc::new(AtomicBool::new(false));
        crate::watchdog::start(watched, watchdog_stop.clone());
        info!("Listening for client connections on {bound}");
        Ok(Server {
            shared,
            links,
            threads,
            route_events: Some(events_rx),
            watchdog_stop,
        })
    }

    /// The handle everything else goes through (signals, membership,
    /// monitoring): usable from any thread.
    pub fn control(&self) -> ServerControl {
        ServerControl {
            shared: self.shared.clone(),
            links: self.links.clone(),
        }
    }

    /// What route links report (taken once, by the membership layer).
    pub fn take_route_events(&mut self) -> Option<flume::Receiver<RouteEvent>> {
        self.route_events.take()
    }

    /// Waits for every shard to stop.
    pub fn wait(self) {
        for t in self.threads {
            let _ = t.join();
        }
        self.watchdog_stop.store(true, Relaxed);
    }
}

/// A running server's handle: its identity, figures, route links, reload
/// and stop; cheap to clone and usable from any thread.
#[derive(Clone)]
pub struct ServerControl {
    shared: Arc<Shared>,
    links: Vec<PeerLink>,
}

impl ServerControl {
    pub fn server_id(&self) -> &str {
        &self.shared.server_id
    }

    pub fn server_name(&self) -> &str {
        &self.shared.server_name
    }

    /// The address clients connect to.
    pub fn client_addr(&self) -> SocketAddr {
        self.shared.addr
    }

    pub fn config(&self) -> &ServerConfig {
        &self.shared.config
    }

    pub fn is_lame_duck(&self) -> bool {
        self.shared.lame_duck.load(Relaxed)
    }

    /// Hands an authenticated route connection to a shard (round-robin),
    /// which serves it from now on.
    pub fn attach_route(
        &self,
        stream: std::net::TcpStream,
        tls: Option<rustls::Connection>,
        peer: PeerMeta,
    ) -> RouteId {
        let shards = self.links.len();
        let shard = self.shared.next_route_shard.fetch_add(1, Relaxed) % shards;
        let id = RouteId {
            shard: shard as u16,
            slot: self.shared.next_route_slot.fetch_add(1, Relaxed),
        };
        let attach = Box::new(RouteAttach {
            id,
            stream,
            peer,
            tls,
        });
        if self.links[shard]
            .send_control(Control::AttachRoute(attach))
            .is_err()
        {
            // The shard has stopped; the connection was dropped with the
            // message. Report it like any closed link.
            let _ = self.shared.route_events.send(RouteEvent::Closed {
                route: id,
                reason: "Server Shutdown".into(),
            });
        }
        id
    }

    /// Sends a new INFO on a route link (gossip).
    pub fn send_route_info(&self, route: RouteId, info: &RouteInfo) {
        let mut buf = bytes::BytesMut::new();
        shoal_core::route::write_info(&mut buf, info);
        let _ = self.links[route.shard as usize].send_control(Control::RouteFrame {
            route,
            frame: buf.freeze(),
        });
    }

    /// Closes a route link after what is queued on it.
    pub fn close_route(&self, route: RouteId) {
        let _ = self.links[route.shard as usize].send_control(Control::CloseRoute { route });
    }

    /// The live route links.
    pub fn routes(&self) -> Vec<RouteView> {
        self.shared
            .routes
            .lock()
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The cluster's client URLs changed: clients get a fresh INFO.
    pub fn set_connect_urls(&self, urls: Vec<String>) {
        if let Ok(mut u) = self.shared.connect_urls.lock() {
            if *u == urls {
                return;
            }
            *u = urls;
        }
        for l in &self.links {
            let _ = l.send_control(Control::InfoChanged);
        }
    }

    /// Applies a reloaded configuration: users, passwords, permissions and
    /// limits change for every shard; connections whose credentials no longer
    /// pass are closed with `Authorization Violation`, subscriptions no
    /// longer permitted are removed. Settings that cannot change while the
    /// server runs are kept and named in the returned list. An invalid
    /// configuration changes nothing.
    pub fn reload(&self, new: ServerConfig) -> Result<Vec<&'static str>, StartError> {
        let auth = Authenticator::new(&auth_config(&new))?;
        let old = &self.shared.config;
        let mut kept = Vec::new();
        let mut config = new;
        macro_rules! keep {
            ($($field:ident),*) => {$(
                if config.$field != old.$field {
                    kept.push(stringify!($field));
                    config.$field = old.$field.clone();
                }
            )*};
        }
        keep!(
            host,
            port,
            server_name,
            http_port,
            http_host,
            shards,
            cluster,
            client_advertise,
            spin_before_park,
            pid_file,
            log_file,
            tls,
            // Read once, at start, by the shards' lame duck and shutdown.
            lame_duck_duration,
            lame_duck_grace_period,
            logtime,
            ports_file_dir
        );
        if let Ok(d) = self.shared.dynamic.read() {
            // Clients whose user did not change are re-checked without bcrypt.
            auth.keep_verified_from(&d.auth);
        }
        let dynamic = Arc::new(Dynamic { config, auth });
        if let Ok(mut d) = self.shared.dynamic.write() {
            *d = dynamic.clone();
        }
        for l in &self.links {
            let _ = l.send_control(Control::Reload(dynamic.clone()));
        }
        Ok(kept)
    }

    /// Marks the server ready (or not) for `/healthz`.
    pub fn set_ready(&self, ready: bool) {
        self.shared.ready.store(ready, Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Relaxed)
    }

    /// Counters summed over shards.
    pub fn stats(&self) -> StatsSnapshot {
        StatsSnapshot::sum(&self.shared.shard_stats)
    }

    /// Time since the server started.
    pub fn uptime(&self) -> std::time::Duration {
        self.shared.started.elapsed()
    }

    /// Every shard's connections and index figures, asked over the control
    /// channels (each shard answers from its own thread). A shard that does
    /// not answer within `timeout` (stopping, or stalled) is left out.
    pub fn snapshot(
        &self,
        subs: bool,
        timeout: std::time::Duration,
    ) -> Vec<crate::snapshot::ShardSnapshot> {
        let (tx, rx) = flume::unbounded();
        let mut asked = 0;
        for l in &self.links {
            if l.send_control(Control::Snapshot {
                subs,
                reply: tx.clone(),
            })
            .is_ok()
            {
                asked += 1;
            }
        }
        drop(tx);
        let deadline = std::time::Instant::now() + timeout;
        let mut out: Vec<_> = (0..asked)
            .map_while(|_| rx.recv_deadline(deadline).ok())
            .collect();
        out.sort_by_key(|s| s.id);
        out
    }

    /// Per-shard counters (no round trip to the shards).
    pub fn shard_stats(&self) -> Vec<crate::stats::StatsSnapshot> {
        self.shared
            .shard_stats
            .iter()
            .map(|s| crate::stats::StatsSnapshot::sum(std::slice::from_ref(s)))
            .collect()
    }

    /// The clients' view of the cluster (INFO `connect_urls`).
    pub fn connect_urls(&self) -> Vec<String> {
        self.shared
            .connect_urls
            .lock()
            .map(|u| u.clone())
            .unwrap_or_default()
    }

    /// The longest [`ServerControl::shutdown`] takes, whatever clients and
    /// peers do (flush budgets, then connections are cut).
    pub fn shutdown_limit(&self) -> std::time::Duration {
        crate::shard::lifecycle::shutdown_limit(self.shared.config.write_deadline)
    }

    /// Flushes and closes every connection, then stops every shard.
    pub fn shutdown(&self) {
        info!("Initiating Shutdown...");
        for l in &self.links {
            let _ = l.send_control(Control::Shutdown);
        }
    }

    /// Lame duck mode: stop accepting, tell clients (`ldm` in INFO), close
    /// them spread over `lame_duck_duration`, then stop.
    pub fn lame_duck(&self) {
        info!("Entering lame duck mode, stop accepting new clients");
        self.shared.lame_duck.store(true, Relaxed);
        for l in &self.links {
            let _ = l.send_control(Control::LameDuck);
        }
    }
}
