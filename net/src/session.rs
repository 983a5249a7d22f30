//! A client connection as its shard holds it: the I/O (`outbound::Conn`),
//! the protocol state the engine decides with (`shoal_engine::ClientState`),
//! its subscriptions, and the figures monitoring reads.
//!
//! Two halves on purpose: a route link has the same I/O and none of this
//! (its own state is `shard::link::RouteLink`); and every decision about
//! what the client sent is `ClientState`'s, so this module only keeps the
//! pieces together.

use crate::outbound::Conn;
use ahash::AHashMap;
use bytes::Bytes;
use shoal_engine::ClientState;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

/// A client connection on its shard.
pub(crate) struct Client {
    pub id: u64,
    pub addr: SocketAddr,
    pub conn: Rc<Conn>,
    /// Borrowed only for one decision or one delivery at a time, never
    /// across an await or a fan-out.
    pub state: RefCell<ClientState>,
    pub subs: RefCell<AHashMap<Bytes, Rc<LocalSub>>>,
    /// Monitoring (`/connz`): shard-local, never atomics.
    pub meta: ConnMeta,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Client(cid:{} {})", self.id, self.addr)
    }
}

impl Client {
    pub(crate) fn new(conn: Rc<Conn>, state: ClientState) -> Self {
        Client {
            id: conn.id,
            addr: conn.addr,
            conn,
            state: RefCell::new(state),
            subs: RefCell::new(AHashMap::new()),
            meta: ConnMeta::default(),
        }
    }
}

/// One subscription of a local client.
#[derive(Debug)]
pub(crate) struct LocalSub {
    pub client: Rc<Client>,
    pub subject: Bytes,
    pub queue: Option<Bytes>,
    pub sid: Bytes,
    /// Auto-unsubscribe after this many deliveries.
    pub max: Cell<Option<u64>>,
    pub delivered: Cell<u64>,
    /// Length of the account prefix at the front of `subject` (0 without
    /// accounts): what is taken off when a message is written.
    pub prefix_len: usize,
    /// A wildcard subscription of a client with permissions: denied
    /// subjects are filtered at delivery. Reset when a reload changes the
    /// client's permissions.
    pub deny_filter: Cell<bool>,
}

/// What monitoring reports about a connection, kept in `Cell`s by its shard.
#[derive(Debug)]
pub(crate) struct ConnMeta {
    pub start: SystemTime,
    pub last_activity: Cell<Instant>,
    pub in_msgs: Cell<u64>,
    pub in_bytes: Cell<u64>,
    pub out_msgs: Cell<u64>,
    pub out_bytes: Cell<u64>,
    /// When the last server PING was sent, and the round trip of the last
    /// answered one.
    pub ping_sent: Cell<Option<Instant>>,
    pub rtt: Cell<Option<Duration>>,
}

impl Default for ConnMeta {
    fn default() -> Self {
        ConnMeta {
            start: SystemTime::now(),
            last_activity: Cell::new(Instant::now()),
            in_msgs: Cell::new(0),
            in_bytes: Cell::new(0),
            out_msgs: Cell::new(0),
            out_bytes: Cell::new(0),
            ping_sent: Cell::new(None),
            rtt: Cell::new(None),
        }
    }
}

impl ConnMeta {
    pub(crate) fn add(cell: &Cell<u64>, n: u64) {
        cell.set(cell.get() + n);
    }
}
