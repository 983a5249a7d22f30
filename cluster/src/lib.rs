//! shoal-cluster: cluster membership, the control plane of clustering.
//!
//! It listens for routes, dials seeds and gossiped peers (backoff with
//! jitter, forever for seeds, bounded for gossiped peers), runs the
//! handshake (INFO both ways, cluster name, credentials), keeps one link per
//! pair of nodes (`registry::new_link_wins`), hands each authenticated link
//! to the data plane (`shoal_net::route`, `ServerControl::attach_route`),
//! tells peers about new members (INFO updates), keeps clients' `connect_urls`
//! current and decides when the node is ready (`/healthz`).
//!
//! None of this is on the message path, so it runs on ordinary threads with
//! blocking sockets and one mutex; the shards never wait for it.
//!
//! Modules: `url` (route URLs, announced addresses), `handshake` (the
//! blocking INFO exchange and its checks), `registry` (membership state and
//! rules).

mod handshake;
mod registry;
pub mod url;

pub use handshake::HandshakeError;
pub use url::RouteUrl;

use handshake::{check_auth, check_peer, read_info, send_info, set_timeouts, Deadlined};
use registry::{backoff, Decision, Link, Registry, GOSSIP_ATTEMPTS};
use shoal_core::config::ClusterConfig;
use shoal_core::route::{RouteInfo, ROUTE_PROTO};
use shoal_net::route::{PeerMeta, RouteEvent, RouteId};
use shoal_net::ServerControl;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use thiserror::Error;
use tracing::{debug, error, info, warn};

#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("invalid cluster listen address {0:?}")]
    Listen(String),
    #[error("cannot listen for route connections on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("invalid route URL: {0}")]
    Route(String),
    #[error("route TLS: {0}")]
    Tls(String),
}

/// A running membership layer.
pub struct Cluster {
    inner: Option<Arc<Inner>>,
    route_addr: Option<SocketAddr>,
}

struct Inner {
    control: ServerControl,
    cfg: ClusterConfig,
    reg: Mutex<Registry>,
    route_url: String,
    client_urls: Vec<String>,
    seeds: Vec<RouteUrl>,
    /// Deadline of a whole handshake, each way (`authorization { timeout }`).
    timeout: Duration,
    stopping: AtomicBool,
    /// Inbound handshakes in progress (each holds a thread).
    handshakes: AtomicUsize,
    /// Connections refused since the cap was last reached.
    refused: AtomicUsize,
    /// Route TLS (`cluster { tls { } }`): both sides of every link.
    tls_server: Option<Arc<rustls::ServerConfig>>,
    tls_client: Option<Arc<rustls::ClientConfig>>,
}

/// How long a dial may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a seed's dialer checks that its link is still up.
const WATCH_INTERVAL: Duration = Duration::from_millis(100);
/// Inbound route handshakes in progress at once; connections beyond are
/// closed at once. Each handshake holds a thread until its deadline, so
/// without a cap a flood of silent connections would exhaust threads. A real
/// cluster has a handful of peers dialing at a time.
const MAX_HANDSHAKES: usize = 64;

/// How long a clustered node with no link yet waits for peers before it
/// calls itself ready (`/healthz`): longer than the capped redial delay
/// (`registry::backoff`, 2 s), so a restarted seed — which has no routes of
/// its own — hears from every peer that redials it before it takes traffic
/// it would otherwise answer with no-responders. A new cluster's first node
/// is ready after this grace, alone.
const PEER_GRACE: Duration = Duration::from_secs(3);

impl Cluster {
    /// Starts membership for a running server. Without cluster settings the
    /// node is standalone and ready at once.
    pub fn start(
        control: ServerControl,
        events: flume::Receiver<RouteEvent>,
    ) -> Result<Cluster, ClusterError> {
        let cfg = control.config().cluster.clone();
        if !cfg.enabled() {
            control.set_ready(true);
            return Ok(Cluster {
                inner: None,
                route_addr: None,
            });
        }
        let seeds = cfg
            .routes
            .iter()
            .map(|r| RouteUrl::parse(r).map_err(ClusterError::Route))
            .collect::<Result<Vec<_>, _>>()?;
        let listener = match &cfg.listen {
            Some(l) => Some(bind(l)?),
            None => None,
        };
        let route_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        let route_url = match (&cfg.advertise, route_addr) {
            (Some(a), _) => RouteUrl::parse(a).map_err(ClusterError::Route)?.display(),
            (None, Some(a)) => format!("nats://{}:{}", url::reachable_host(a.ip()), a.port()),
            (None, None) => String::new(),
        };
        let client = control.client_addr();
        let client_urls = vec![control
            .config()
            .client_advertise
            .clone()
            .unwrap_or_else(|| format!("{}:{}", url::reachable_host(client.ip()), client.port()))];
        let reg = Registry {
            cluster: cfg.name.clone().unwrap_or_default(),
            first_attempts: seeds.iter().map(|s| s.display()).collect(),
            peer_grace_until: Some(std::time::Instant::now() + PEER_GRACE),
            dialing: seeds.iter().map(|s| s.display()).collect(),
            ..Default::default()
        };
        let (tls_server, tls_client) = match &cfg.tls {
            Some(t) => (
                Some(shoal_net::tls::server_config(t).map_err(ClusterError::Tls)?),
                Some(shoal_net::tls::client_config(t).map_err(ClusterError::Tls)?),
            ),
            None => (None, None),
        };
        let inner = Arc::new(Inner {
            tls_server,
            tls_client,
            timeout: cfg.auth_timeout.unwrap_or(Duration::from_secs(2)),
            control,
            cfg,
            reg: Mutex::new(reg),
            route_url,
            client_urls,
            seeds,
            stopping: AtomicBool::new(false),
            handshakes: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
        });
        inner.control.set_connect_urls(inner.client_urls.clone());
        if let (Some(l), Some(addr)) = (listener, route_addr) {
            info!("Listening for route connections on {addr}");
            let me = inner.clone();
            spawn("shoal-routes-accept", move || accept_loop(me, l));
        }
        let me = inner.clone();
        spawn("shoal-routes-events", move || event_loop(me, events));
        for seed in inner.seeds.clone() {
            let me = inner.clone();
            spawn("shoal-route-dial", move || dial_loop(me, seed, true));
        }
        inner.update_ready(&mut inner.lock());
        Ok(Cluster {
            inner: Some(inner),
            route_addr,
        })
    }

    /// Where this node accepts routes (with the real port when `-1`).
    pub fn route_addr(&self) -> Option<SocketAddr> {
        self.route_addr
    }

    /// Stops dialing (at shutdown).
    pub fn stop(&self) {
        if let Some(i) = &self.inner {
            i.stopping.store(true, Relaxed);
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().name(name.into()).spawn(f) {
        error!("cannot start thread {name}: {e}");
    }
}

/// Binds the route listener: `nats://host:port` or `host:port`; port -1
/// picks a free port.
fn bind(listen: &str) -> Result<TcpListener, ClusterError> {
    let rest = listen
        .strip_prefix("nats://")
        .or_else(|| listen.strip_prefix("nats-route://"))
        .unwrap_or(listen);
    // Credentials in a listen URL are the cluster's authorization (taken
    // from `--cluster` by the binary); they never appear in an error.
    let rest = rest.rsplit_once('@').map_or(rest, |(_, hostport)| hostport);
    let shown = || ClusterError::Listen(shoal_core::config::redact_url(listen));
    let (host, port) = rest.rsplit_once(':').ok_or_else(shown)?;
    let port: i32 = port.parse().map_err(|_| shown())?;
    let port = match port {
        -1 => 0,
        p if (0..=65535).contains(&p) => p as u16,
        _ => return Err(shown()),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    TcpListener::bind((host, port)).map_err(|source| ClusterError::Bind {
        addr: format!("{host}:{port}"),
        source,
    })
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock aborts the process (panic hook), so
        // a poisoned lock is never observed in practice; recover anyway.
        self.reg.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Relaxed)
    }

    /// This node's INFO, with its current view of the cluster.
    fn info(&self, reg: &Registry) -> RouteInfo {
        RouteInfo {
            proto: ROUTE_PROTO,
            server_id: self.control.server_id().into(),
            server_name: self.control.server_name().into(),
            version: shoal_net::VERSION.into(),
            cluster: reg.cluster.clone(),
            route_url: self.route_url.clone(),
            client_urls: self.client_urls.clone(),
            peers: reg.peer_urls(),
            user: None,
            pass: None,
            lame_duck: reg.lame_duck,
        }
    }

    /// Tells every peer this node's current view (new members to dial, lame
    /// duck mode).
    fn gossip(&self, reg: &Registry) {
        let info = self.info(reg);
        for id in reg.links.keys() {
            self.control.send_route_info(*id, &info);
        }
    }

    fn update_connect_urls(&self, reg: &Registry) {
        self.control
            .set_connect_urls(reg.connect_urls(&self.client_urls));
    }

    fn update_ready(&self, reg: &mut Registry) {
        if reg.check_ready(std::time::Instant::now()) {
            info!(
                "Cluster interest complete ({} route(s)): ready",
                reg.links.len()
            );
            self.control.set_ready(true);
        }
    }

    /// Starts a dialer for each URL in a peer's gossip not known yet.
    fn learn_peers(self: &Arc<Self>, reg: &mut Registry, peers: &[String]) {
        if reg.lame_duck || self.stopping() {
            return;
        }
        for p in peers {
            let Ok(url) = RouteUrl::parse(p) else {
                continue;
            };
            let key = url.display();
            if key == self.route_url || reg.self_urls.contains(&key) || reg.dialing.contains(&key) {
                continue;
            }
            if reg.connected_to(&url.resolve()) {
                continue;
            }
            debug!("Learned route {key} from gossip");
            reg.dialing.insert(key.clone());
            if !reg.ready {
                reg.first_attempts.insert(key);
            }
            let me = self.clone();
            spawn("shoal-route-dial", move || dial_loop(me, url, false));
        }
    }

    /// A handshaken link: keep it (handing it to a shard) or drop it as a
    /// duplicate, then tell the cluster.
    fn register(
        self: &Arc<Self>,
        stream: TcpStream,
        tls: Option<rustls::Connection>,
        theirs: RouteInfo,
        solicited: bool,
        dialed: Vec<SocketAddr>,
    ) -> Result<RouteId, HandshakeError> {
        let mut reg = self.lock();
        if reg.lame_duck || self.stopping() {
            return Err(HandshakeError::Refused("shutting down".into()));
        }
        let dialer = if solicited {
            self.control.server_id().to_owned()
        } else {
            theirs.server_id.clone()
        };
        match reg.decide(&theirs.server_id, &dialer) {
            Decision::Reject => {
                return Err(HandshakeError::Refused(format!(
                    "duplicate route to {}",
                    theirs.server_id
                )))
            }
            Decision::Replace(old) => {
                debug!("Replacing duplicate route {old} to {}", theirs.server_id);
                reg.links.remove(&old);
                self.control.close_route(old);
            }
            Decision::Attach => {}
        }
        if reg.cluster.is_empty() && !theirs.cluster.is_empty() {
            reg.cluster = theirs.cluster.clone();
        }
        let mut addrs = dialed;
        if let Ok(u) = RouteUrl::parse(&theirs.route_url) {
            addrs.extend(u.resolve());
        }
        let id = self.control.attach_route(
            stream,
            tls,
            PeerMeta {
                server_id: theirs.server_id.clone(),
                server_name: theirs.server_name.clone(),
                route_url: theirs.route_url.clone(),
                solicited,
            },
        );
        reg.links.insert(
            id,
            Link {
                server_id: theirs.server_id.clone(),
                route_url: theirs.route_url.clone(),
                addrs,
                client_urls: theirs.client_urls.clone(),
                dialer,
                snapshot_done: false,
                lame_duck: theirs.lame_duck,
            },
        );
        self.gossip(&reg);
        self.learn_peers(&mut reg, &theirs.peers);
        self.update_connect_urls(&reg);
        Ok(id)
    }

    fn dial(self: &Arc<Self>, url: &RouteUrl) -> Result<RouteId, HandshakeError> {
        let addrs = url.resolve();
        let addr = addrs.first().ok_or_else(|| {
            HandshakeError::Io(std::io::Error::other(format!(
                "cannot resolve {}",
                url.host
            )))
        })?;
        let stream = TcpStream::connect_timeout(addr, CONNECT_TIMEOUT)?;
        stream.set_nodelay(true)?;
        let mut ours = self.info(&self.lock());
        // Credentials from the URL, as nats-server; else this node's own
        // cluster credentials (same user on every node).
        ours.user = url.user.clone().or_else(|| self.cfg.user.clone());
        ours.pass = url
            .pass
            .clone()
            .or_else(|| self.cfg.password.clone().filter(|p| !p.starts_with("$2")));
        let deadlined = Deadlined::new(&stream, self.timeout);
        let (theirs, tls) = match &self.tls_client {
            None => {
                let mut s = deadlined;
                send_info(&mut s, &ours)?;
                (read_info(&mut s)?, None)
            }
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(url.host.clone())
                    .map_err(|e| HandshakeError::Protocol(e.to_string()))?;
                let conn = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(|e| HandshakeError::Protocol(e.to_string()))?;
                let mut s = rustls::StreamOwned::new(conn, deadlined);
                send_info(&mut s, &ours)?;
                let theirs = read_info(&mut s)?;
                (theirs, Some(rustls::Connection::from(s.conn)))
            }
        };
        set_timeouts(&stream, None)?;
        check_peer(&ours, &theirs)?;
        self.register(stream, tls, theirs, true, addrs)
    }

    fn accept(self: &Arc<Self>, stream: TcpStream) -> Result<RouteId, HandshakeError> {
        stream.set_nodelay(true)?;
        let deadlined = Deadlined::new(&stream, self.timeout);
        let ours = self.info(&self.lock());
        let check = |theirs: &RouteInfo| -> Result<(), HandshakeError> {
            check_peer(&ours, theirs)?;
            check_auth(&self.cfg, theirs)
        };
        let (theirs, tls) = match &self.tls_server {
            None => {
                let mut s = deadlined;
                let theirs = read_info(&mut s)?;
                check(&theirs)?;
                send_info(&mut s, &ours)?;
                (theirs, None)
            }
            Some(config) => {
                let conn = rustls::ServerConnection::new(config.clone())
                    .map_err(|e| HandshakeError::Protocol(e.to_string()))?;
                let mut s = rustls::StreamOwned::new(conn, deadlined);
                let theirs = read_info(&mut s)?;
                check(&theirs)?;
                send_info(&mut s, &ours)?;
                (theirs, Some(rustls::Connection::from(s.conn)))
            }
        };
        set_timeouts(&stream, None)?;
        self.register(stream, tls, theirs, false, Vec::new())
    }
}

/// One inbound handshake in progress, counted until dropped (however its
/// thread ends, or if the thread could not be started).
struct HandshakeSlot(Arc<Inner>);

impl HandshakeSlot {
    /// A slot, or `None` when `MAX_HANDSHAKES` are in progress (logged once
    /// per burst of refusals, and counted).
    fn take(inner: &Arc<Inner>) -> Option<HandshakeSlot> {
        if inner.handshakes.fetch_add(1, Relaxed) >= MAX_HANDSHAKES {
            inner.handshakes.fetch_sub(1, Relaxed);
            if inner.refused.fetch_add(1, Relaxed) == 0 {
                warn!(
                    "{MAX_HANDSHAKES} route handshakes in progress: refusing route \
                     connections until some finish"
                );
            }
            return None;
        }
        let refused = inner.refused.swap(0, Relaxed);
        if refused > 0 {
            info!("Accepting route connections again ({refused} refused)");
        }
        Some(HandshakeSlot(inner.clone()))
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.0.handshakes.fetch_sub(1, Relaxed);
    }
}

fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    for stream in listener.incoming() {
        if inner.stopping() {
            return;
        }
        match stream {
            Ok(s) => {
                let Some(slot) = HandshakeSlot::take(&inner) else {
                    drop(s);
                    continue;
                };
                let me = inner.clone();
                spawn("shoal-route-accept", move || {
                    let _slot = slot;
                    let peer = s.peer_addr().ok();
                    match me.accept(s) {
                        Ok(id) => debug!("Route {id} accepted from {peer:?}"),
                        Err(HandshakeError::SelfRoute) => {}
                        Err(e) => warn!("Route connection from {peer:?} refused: {e}"),
                    }
                });
            }
            Err(e) => {
                error!("Error accepting route connection: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// A link that lived this long was healthy: its loss resets the backoff.
const STABLE_LINK: Duration = Duration::from_secs(10);

/// Keeps a link to `url`: dials with backoff until connected; for a seed,
/// watches the link and redials when it drops, forever; for a gossiped peer,
/// ends once connected or after `GOSSIP_ATTEMPTS` failures.
fn dial_loop(inner: Arc<Inner>, url: RouteUrl, seed: bool) {
    let key = url.display();
    let mut attempt = 0u32;
    // When our last link to this peer came up: a link that drops soon after
    // the handshake counts as a failed attempt (backoff grows), so a peer
    // that accepts and then closes is not redialled in a tight loop.
    let mut linked_at: Option<std::time::Instant> = None;
    let finish_first = |inner: &Inner| {
        let mut reg = inner.lock();
        if reg.first_attempts.remove(&key) {
            inner.update_ready(&mut reg);
        }
    };
    loop {
        if inner.stopping() || inner.lock().lame_duck {
            break;
        }
        let addrs = url.resolve();
        if inner.lock().connected_to(&addrs) {
            finish_first(&inner);
            if !seed {
                break;
            }
            std::thread::sleep(WATCH_INTERVAL);
            continue;
        }
        if let Some(t) = linked_at.take() {
            if t.elapsed() < STABLE_LINK {
                attempt += 1;
                debug!(
                    "Route to {key} dropped {:?} after it came up (attempt {attempt})",
                    t.elapsed()
                );
                std::thread::sleep(backoff(attempt));
                continue;
            }
            attempt = 0;
        }
        match inner.dial(&url) {
            Ok(id) => {
                debug!("Route {id} connected to {key}");
                linked_at = Some(std::time::Instant::now());
                finish_first(&inner);
                if !seed {
                    break;
                }
            }
            Err(HandshakeError::SelfRoute) => {
                debug!("Route {key} is this node");
                inner.lock().self_urls.insert(key.clone());
                finish_first(&inner);
                break;
            }
            Err(e) => {
                attempt += 1;
                if attempt == 1 {
                    info!("Error trying to connect to route {key}: {e}");
                } else {
                    debug!("Error trying to connect to route {key} (attempt {attempt}): {e}");
                }
                finish_first(&inner);
                if !seed && attempt >= GOSSIP_ATTEMPTS {
                    info!("Giving up on route {key} after {attempt} attempts");
                    break;
                }
                std::thread::sleep(backoff(attempt));
            }
        }
    }
    inner.lock().dialing.remove(&key);
}

fn event_loop(inner: Arc<Inner>, events: flume::Receiver<RouteEvent>) {
    loop {
        let event = match events.recv_timeout(Duration::from_millis(100)) {
            Ok(e) => Some(e),
            Err(flume::RecvTimeoutError::Timeout) => None,
            Err(flume::RecvTimeoutError::Disconnected) => return,
        };
        let mut reg = inner.lock();
        match event {
            Some(RouteEvent::Info { route, info }) => {
                if let Some(l) = reg.links.get_mut(&route) {
                    l.client_urls = info.client_urls.clone();
                    l.lame_duck = info.lame_duck;
                }
                inner.learn_peers(&mut reg, &info.peers);
                inner.update_connect_urls(&reg);
            }
            Some(RouteEvent::SnapshotDone { route }) => {
                if let Some(l) = reg.links.get_mut(&route) {
                    l.snapshot_done = true;
                }
            }
            Some(RouteEvent::Closed { route, reason }) => {
                if let Some(l) = reg.links.remove(&route) {
                    info!("Route {route} to {} closed: {reason}", l.route_url);
                    inner.update_connect_urls(&reg);
                    // A seed has its own dialer; a gossiped peer gets one
                    // (bounded) so the mesh heals if it comes back.
                    let is_seed = inner
                        .seeds
                        .iter()
                        .any(|s| s.resolve().iter().any(|a| l.addrs.contains(a)));
                    if !is_seed {
                        inner.learn_peers(&mut reg, std::slice::from_ref(&l.route_url));
                    }
                }
            }
            None => {}
        }
        if inner.control.is_lame_duck() && !reg.lame_duck {
            reg.lame_duck = true;
            inner.gossip(&reg);
            inner.update_connect_urls(&reg);
        }
        inner.update_ready(&mut reg);
    }
}
