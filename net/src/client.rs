//! A client connection's task: the NATS client protocol as nats-server
//! speaks it (INFO/CONNECT handshake, PUB/HPUB, SUB/UNSUB, PING/PONG), its
//! limits and its error texts.
//!
//! The task owns the read side: it reads into one buffer, parses every
//! complete operation in it, routes each message (local subscribers get it
//! queued at once, other shards get one batch each), then flushes every
//! connection that got data and sends the batches: one write per connection
//! and one channel send per shard per read.

use crate::outbound::{self, CloseReason, Conn, MAX_READ};
use crate::runtime::{self, LocalEvent, TcpListener, TcpStream};
use crate::session::{Client, ConnMeta, LocalSub};
use crate::shard::{Outgoing, Shard};
use bytes::{Bytes, BytesMut};
use shoal_core::auth::{AuthError, FastCheck, Session};
use shoal_core::proto::{self, ClientOp, ClientParser, ConnectOptions, Limits, Publish};
use shoal_engine::client::{
    Answer, ClientState, PingTick, PubCheck, Refusal, SubCheck, Unsub, Verdict,
};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, error, info, trace};

/// Accepts connections until the shard stops accepting.
///
/// A connection storm must not hold the shard's other connections back:
/// glommio's accept completes at once while the listen queue is full, so
/// the loop returns to the reactor after every `TurnBudget` slice of
/// accepting, as the read loops do; each connection's handshake (INFO,
/// TLS, CONNECT, bcrypt off the shard) runs in its own task.
pub(crate) async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    shard.stats.accepting.store(true, Relaxed);
    let mut budget = runtime::TurnBudget::new();
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            shard.life.stop_accepting.wait().await;
            None
        })
        .await;
        if shard.life.stop_accepting.is_set() {
            break;
        }
        budget.begin();
        match accepted {
            None => break,
            Some(Ok(stream)) => {
                shard.stats.progress.fetch_add(1, Relaxed);
                runtime::spawn_detached(serve(shard.clone(), stream))
            }
            Some(Err(e)) => {
                // Out of file descriptors and similar: back off, keep serving.
                error!("error accepting client connection: {e}");
                runtime::sleep(Duration::from_millis(50)).await;
            }
        }
        budget.spend().await;
    }
    // Before the socket closes: the watchdog reads its queue only while set.
    shard.stats.accepting.store(false, Relaxed);
    drop(listener);
}

/// Serves one accepted connection until it closes.
pub(crate) async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let shared = shard.shared.clone();
    let Ok(addr) = stream.peer_addr() else { return };
    // Small messages must not wait for Nagle: request-reply latency.
    {
        use std::os::fd::{AsRawFd, BorrowedFd};
        // SAFETY: the fd belongs to `stream`, which outlives this borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
        let _ = socket2::SockRef::from(&fd).set_nodelay(true);
    }
    let id = shared.next_client_id.fetch_add(1, Relaxed);
    let dynamic = shard.current();
    let cfg = &dynamic.config;
    let stream = Rc::new(RefCell::new(stream));
    let conn = Rc::new(Conn::new(
        id,
        addr,
        stream,
        cfg.max_pending,
        cfg.write_deadline,
        shard.stats.clone(),
    ));
    debug!("{addr} - cid:{id} - Client connection created");
    // TLS first (`handshake_first`): the INFO waits for the handshake and
    // goes out encrypted.
    let tls_first = tls_comes_first(&shard, &conn).await;
    let nonce = dynamic.auth.nonce_required().then(new_nonce);
    // nats-server's flags before CONNECT; the default account until (and
    // unless) authentication names another.
    let state = ClientState::new(dynamic.auth.accounts().get(None), nonce);
    let client = Rc::new(Client::new(conn, state));
    if !tls_first {
        write_info(&shard, &client);
    }

    let total = shared.connections.fetch_add(1, Relaxed) + 1;
    if total > cfg.max_connections {
        shared.connections.fetch_sub(1, Relaxed);
        shard.refuse(&client, &ClientState::too_many_connections());
        shard.flush_dirty();
        return;
    }
    shard.stats.connections.fetch_add(1, Relaxed);
    shard.stats.total_connections.fetch_add(1, Relaxed);
    shard.clients.borrow_mut().insert(id, client.clone());
    shard.flush_dirty();

    if dynamic.auth.required() {
        runtime::spawn_detached(auth_timer(shard.clone(), client.clone(), cfg.auth_timeout));
    }
    runtime::spawn_detached(ping_timer(shard.clone(), Rc::downgrade(&client)));

    let reason = match start_tls(&shard, &client).await {
        Ok(()) => {
            if tls_first {
                write_info(&shard, &client);
                shard.flush_dirty();
            }
            Connection::new(shard.clone(), client.clone()).run().await
        }
        Err(reason) => reason,
    };
    client.conn.close(reason);
    let reason = client.conn.close_reason().unwrap_or(reason);

    // Clean up: every subscription goes, with its interest.
    let subs: Vec<Rc<LocalSub>> = client.subs.borrow().values().cloned().collect();
    for s in &subs {
        shard.unsubscribe(s);
    }
    shard.clients.borrow_mut().remove(&id);
    shard.stats.connections.fetch_sub(1, Relaxed);
    shared.connections.fetch_sub(1, Relaxed);
    if matches!(
        reason,
        CloseReason::SlowConsumerPendingBytes | CloseReason::SlowConsumerWriteDeadline
    ) {
        shard.stats.slow_consumers.fetch_add(1, Relaxed);
        // nats-server logs a slow consumer at INF with what was exceeded.
        match reason {
            CloseReason::SlowConsumerPendingBytes => info!(
                "{addr} - cid:{id} - Slow Consumer Detected: MaxPending of {} Exceeded",
                client.conn.max_pending()
            ),
            _ => info!(
                "{addr} - cid:{id} - Slow Consumer Detected: WriteDeadline of {:?} exceeded",
                client.conn.write_deadline()
            ),
        }
    }
    debug!("{addr} - cid:{id} - Client connection closed: {reason}");
}

/// Closes a connection that did not authenticate in time.
async fn auth_timer(shard: Rc<Shard>, client: Rc<Client>, timeout: Duration) {
    runtime::sleep(timeout).await;
    if client.conn.is_closing() {
        return;
    }
    let refusal = client.state.borrow().auth_timeout();
    if let Some(refusal) = refusal {
        shard.refuse(&client, &refusal);
    }
}

/// Queues the INFO for this client (with its nonce, when it must sign one).
fn write_info(shard: &Shard, client: &Client) {
    let info = shard
        .shared
        .info_for(client.id, client.addr, client.state.borrow().nonce());
    let res = client.conn.queue(|b| proto::write_info(b, &info));
    shard.mark_dirty(&client.conn, res);
}

/// Unix seconds now (JWT validity is judged in them).
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A nonce for a client to sign (nkey users, operator mode): 11 random
/// bytes as unpadded base64url, nats-server's length.
fn new_nonce() -> String {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut raw = [0u8; 11];
    // The system's generator; failing it is a broken host, and a nonce
    // nobody can predict is the whole point.
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .expect("the system random generator failed");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// Closes a connection when its user JWT expires (nats-server's
/// `User Authentication Expired`). Holds the client weakly.
async fn expiry_timer(shard: Rc<Shard>, client: std::rc::Weak<Client>, at: i64) {
    runtime::sleep(Duration::from_secs(
        at.saturating_sub(unix_now()).max(0) as u64
    ))
    .await;
    let Some(client) = client.upgrade() else {
        return;
    };
    if client.conn.is_closing() {
        return;
    }
    shard.refuse(&client, &ClientState::expired());
    shard.flush_dirty();
}

/// When nats-server sends a client its first PING (then one every
/// `ping_interval`): clients rely on it; async-nats up to 0.38 finishes a
/// `drain()` only on the next inbound operation.
const FIRST_PING: Duration = Duration::from_secs(2);

/// Sends a PING after `FIRST_PING` (or `ping_interval` if shorter), then
/// every `ping_interval`; after `ping_max` unanswered, the connection is
/// stale. Holds the client weakly: a closed connection's socket is released
/// when its task ends, not when this timer next fires.
async fn ping_timer(shard: Rc<Shard>, client: std::rc::Weak<Client>) {
    let mut first = true;
    loop {
        // Read each time: a reload may change them.
        let (interval, max) = {
            let d = shard.current();
            (d.config.ping_interval, d.config.ping_max)
        };
        let wait = if std::mem::take(&mut first) {
            interval.min(FIRST_PING)
        } else {
            interval
        };
        runtime::sleep(wait).await;
        let Some(client) = client.upgrade() else {
            return;
        };
        if client.conn.is_closing() {
            return;
        }
        let required = shard.current().auth.required();
        let tick = client.state.borrow_mut().ping_tick(required, max);
        match tick {
            // Not logged in yet (its bcrypt check may be under way).
            PingTick::Wait => continue,
            PingTick::Stale(refusal) => {
                shard.refuse(&client, &refusal);
                return;
            }
            PingTick::Ping => {}
        }
        client.meta.ping_sent.set(Some(std::time::Instant::now()));
        let res = client.conn.queue(|b| b.extend_from_slice(proto::PING));
        shard.mark_dirty(&client.conn, res);
        shard.flush_dirty();
    }
}

/// Whether this connection starts with the TLS handshake, before any INFO
/// (`tls { handshake_first }`): always, or (`auto`/a delay) when the
/// client's first bytes, within the delay, are a TLS record (0x16). Waiting
/// peeks at the socket without taking anything from it.
async fn tls_comes_first(shard: &Rc<Shard>, conn: &Conn) -> bool {
    use shoal_core::config::HandshakeFirst;
    let Some(t) = shard.shared.config.tls.as_ref() else {
        return false;
    };
    let delay = match t.handshake_first {
        HandshakeFirst::Off => return false,
        HandshakeFirst::Always => return true,
        HandshakeFirst::Auto(d) => d,
    };
    let until = std::time::Instant::now() + delay;
    loop {
        let mut first = 0u8;
        // SAFETY: a non-blocking peek of one byte into a local.
        let n = unsafe {
            libc::recv(
                conn.fd(),
                (&mut first as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n == 1 {
            return first == 0x16;
        }
        if n == 0 || std::time::Instant::now() >= until {
            return false;
        }
        runtime::sleep(Duration::from_millis(1)).await;
    }
}

/// TLS (when configured): the handshake after the plain INFO, as
/// nats-server (or before it, `handshake_first`). A client that answers in plain text gets nats-server's
/// `-ERR 'Secure Connection - TLS Required'`.
async fn start_tls(shard: &Rc<Shard>, client: &Rc<Client>) -> Result<(), CloseReason> {
    let Some(config) = shard.shared.tls.clone() else {
        return Ok(());
    };
    let timeout = shard
        .shared
        .config
        .tls
        .as_ref()
        .map_or(Duration::from_secs(2), |t| t.timeout);
    match crate::tls::accept(client.conn.stream(), config, timeout).await {
        Ok(session) => {
            *client.conn.tls.borrow_mut() = Some(session.into());
            Ok(())
        }
        Err(e) => {
            error!(
                "{} - cid:{} - TLS handshake error: {e}",
                client.addr, client.id
            );
            if matches!(e, crate::tls::HandshakeError::Plaintext) {
                shard.refuse(client, &ClientState::tls_required());
                shard.flush_dirty();
            }
            Err(CloseReason::TlsError)
        }
    }
}

/// Strict interest mode: the PONG once every peer node acknowledged the
/// interest sent before it, or after `timeout` when they do not.
///
/// A timeout still answers PONG: clients treat any `-ERR` text they do not
/// know as fatal (nats.go closes the connection for good), and the PONG
/// only promised more than usual. The operator learns of it instead: a
/// `[WRN]` line and `/varz` `interest_sync_timeouts`.
///
/// PONGs leave in the order of their PINGs: this one is written only after
/// `before` (the previous deferred PONG) and sets `done` once written.
async fn pong_after_barrier(
    shard: Rc<Shard>,
    client: Rc<Client>,
    timeout: Duration,
    before: Option<Rc<LocalEvent>>,
    done: Rc<LocalEvent>,
) {
    let (token, wait) = shard.barrier();
    let synced = futures_lite::future::or(
        async {
            wait.wait().await;
            true
        },
        async {
            runtime::sleep(timeout).await;
            false
        },
    )
    .await;
    if !synced {
        shard.cancel_barrier(token);
        shard.stats.interest_sync_timeouts.fetch_add(1, Relaxed);
        tracing::warn!(
            "{} - cid:{} - Interest Sync Timeout: peers did not acknowledge within {timeout:?}",
            client.addr,
            client.id
        );
    }
    write_pong_after(&shard, &client, before, done).await;
}

/// Writes a PONG once `before` (a PONG still deferred) has been written.
async fn write_pong_after(
    shard: &Rc<Shard>,
    client: &Rc<Client>,
    before: Option<Rc<LocalEvent>>,
    done: Rc<LocalEvent>,
) {
    if let Some(before) = before {
        before.wait().await;
    }
    let res = client.conn.queue(|b| b.extend_from_slice(proto::PONG));
    shard.mark_dirty(&client.conn, res);
    shard.flush_dirty();
    done.set();
}

/// An operation's outcome: keep going, or close for this reason.
type Step = Result<(), CloseReason>;

struct Connection {
    shard: Rc<Shard>,
    client: Rc<Client>,
    parser: ClientParser,
    out: Outgoing,
    read_size: Cell<usize>,
    /// Strict interest mode: a SUB since the last PING, so the next PONG
    /// waits for the cluster's peers.
    unsynced: bool,
    /// Set once the last deferred PONG (strict mode) has been written; a
    /// PING answered while it is unset waits for it, so PONGs never
    /// overtake each other.
    last_pong: Option<Rc<LocalEvent>>,
    /// A CONNECT whose password only bcrypt can check: parsing stops until
    /// the answer comes back from the auth pool (nothing after a CONNECT may
    /// run before it is accepted).
    pending_auth: Option<ConnectOptions>,
    /// A PING read after messages for other shards: answered once they are
    /// in those shards' channels (`process`).
    ping_due: bool,
}

impl Connection {
    fn new(shard: Rc<Shard>, client: Rc<Client>) -> Self {
        let dynamic = shard.current();
        let cfg = &dynamic.config;
        let parser = ClientParser::new(Limits {
            max_control_line: cfg.max_control_line,
            max_payload: cfg.max_payload,
        });
        let out = Outgoing::new(shard.shards);
        Connection {
            shard,
            client,
            parser,
            out,
            read_size: Cell::new(4096),
            unsynced: false,
            last_pong: None,
            pending_auth: None,
            ping_due: false,
        }
    }

    async fn run(mut self) -> CloseReason {
        let mut buf = BytesMut::with_capacity(MAX_READ);
        let mut cipher = BytesMut::new();
        // After a TLS handshake the client's first records may already be
        // decrypted (TLS 1.3 sends application data right after Finished).
        let mut held = self.client.conn.tls.borrow().is_some();
        let mut budget = runtime::TurnBudget::new();
        loop {
            if let Err(reason) = outbound::read_conn(
                &self.client.conn,
                &mut buf,
                &mut cipher,
                &self.read_size,
                &mut held,
            )
            .await
            {
                return reason;
            }
            budget.begin();
            self.client
                .meta
                .last_activity
                .set(std::time::Instant::now());
            self.shard.stats.progress.fetch_add(1, Relaxed);
            if let Err(reason) = self.process(&mut buf) {
                self.finish_batch().await;
                return reason;
            }
            self.finish_batch().await;
            if let Some(reason) = self.client.conn.close_reason() {
                return reason;
            }
            // `process` stops early for a CONNECT waiting for bcrypt, and
            // for a PING that must follow the messages routed before it;
            // the rest of the read buffer is processed here once they are
            // done.
            loop {
                let step = if let Some(opts) = self.pending_auth.take() {
                    let verdict = self.check_off_shard(&opts).await;
                    if let Some(reason) = self.client.conn.close_reason() {
                        // The auth timer (or a shutdown) closed it meanwhile.
                        return reason;
                    }
                    self.finish_connect(opts, verdict)
                        .and_then(|()| self.process(&mut buf))
                } else if std::mem::take(&mut self.ping_due) {
                    self.handle(ClientOp::Ping)
                        .and_then(|()| self.process(&mut buf))
                } else {
                    break;
                };
                self.finish_batch().await;
                if let Err(reason) = step {
                    return reason;
                }
            }
            budget.spend().await;
        }
    }

    async fn finish_batch(&mut self) {
        if !self.out.is_empty() {
            self.shard.send_batches(&mut self.out).await;
        }
        self.shard.flush_soon();
    }

    fn process(&mut self, buf: &mut BytesMut) -> Step {
        self.shard.apply_pending_control();
        self.shard.deliver_pending_data();
        loop {
            let op = match self.parser.next(buf) {
                Ok(Some(op)) => op,
                Ok(None) => return Ok(()),
                Err(e) => return self.refused(&ClientState::protocol_error(&e, buf)),
            };
            if matches!(op, ClientOp::Ping) && !self.out.is_empty() {
                // Once the client has its PONG, everything it published
                // before must be in the other shards' channels (they deliver
                // it before handling anything read later,
                // `Shard::deliver_pending_data`). Sending them can wait for
                // room, and other tasks may flush this connection meanwhile:
                // the PONG is queued after they are sent (`run`).
                self.ping_due = true;
                return Ok(());
            }
            self.handle(op)?;
            if let Some(reason) = self.client.conn.close_reason() {
                return Err(reason);
            }
            if self.pending_auth.is_some() {
                return Ok(());
            }
        }
    }

    /// Carries out a refusal; a fatal one ends the connection's loop.
    fn refused(&self, r: &Refusal) -> Step {
        self.shard.refuse(&self.client, r);
        match r.close {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }

    fn answer(&self, a: Answer) {
        if a == Answer::Ok {
            let res = self.client.conn.queue(|b| b.extend_from_slice(proto::OK));
            self.shard.mark_dirty(&self.client.conn, res);
        }
    }

    fn ok(&self) {
        let a = self.client.state.borrow().ok();
        self.answer(a);
    }

    fn trace_op(&self, op: &ClientOp) {
        let (addr, id) = (self.client.addr, self.client.id);
        match op {
            // Never log credentials, as nats-server's trace does not.
            ClientOp::Connect(json) => {
                trace!(
                    "{addr} - cid:{id} - <<- CONNECT {}",
                    ClientState::redacted_connect(json)
                );
            }
            // nats-server's shape: the operation, then the payload,
            // cut at `max_traced_msg_len` when set.
            ClientOp::Pub(p) => {
                let max = self.shard.current().config.max_traced_msg_len;
                let shown = if max > 0 && p.payload.len() > max {
                    format!("{:?}...", String::from_utf8_lossy(&p.payload[..max]))
                } else {
                    format!("{:?}", String::from_utf8_lossy(&p.payload))
                };
                trace!(
                    "{addr} - cid:{id} - <<- [{} {} {}{}]",
                    if p.headers.is_some() { "HPUB" } else { "PUB" },
                    String::from_utf8_lossy(&p.subject),
                    p.reply
                        .as_ref()
                        .map(|r| format!("{} ", String::from_utf8_lossy(r)))
                        .unwrap_or_default(),
                    p.payload.len() + p.headers.as_ref().map_or(0, |h| h.len())
                );
                trace!("{addr} - cid:{id} - <<- MSG_PAYLOAD: [{shown}]");
            }
            _ => trace!("{addr} - cid:{id} - <<- {op:?}"),
        }
    }

    fn handle(&mut self, op: ClientOp) -> Step {
        if tracing::enabled!(tracing::Level::TRACE) {
            self.trace_op(&op);
        }
        let admitted = self
            .client
            .state
            .borrow()
            .admit(&op, || self.shard.current().auth.required());
        if let Err(r) = admitted {
            return self.refused(&r);
        }
        match op {
            ClientOp::Pub(p) => {
                self.publish(p);
                Ok(())
            }
            ClientOp::Ping => {
                // No cross-shard barrier is needed before the PONG: every
                // shard applies the interest already sent to it before it
                // routes the next read buffer (`apply_pending_control`), and
                // this connection's SUBs were sent before this point.
                // Peer nodes are another matter: in strict interest mode the
                // PONG waits until every peer acknowledged.
                let cluster = &self.shard.shared.config.cluster;
                let before = self.last_pong.take().filter(|e| !e.is_set());
                if self.unsynced && cluster.sync_interest && cluster.enabled() {
                    self.unsynced = false;
                    let done = Rc::new(LocalEvent::default());
                    self.last_pong = Some(done.clone());
                    runtime::spawn_detached(pong_after_barrier(
                        self.shard.clone(),
                        self.client.clone(),
                        cluster.sync_timeout,
                        before,
                        done,
                    ));
                    return Ok(());
                }
                if let Some(before) = before {
                    let done = Rc::new(LocalEvent::default());
                    self.last_pong = Some(done.clone());
                    let (shard, client) = (self.shard.clone(), self.client.clone());
                    runtime::spawn_detached(async move {
                        write_pong_after(&shard, &client, Some(before), done).await;
                    });
                    return Ok(());
                }
                let res = self.client.conn.queue(|b| b.extend_from_slice(proto::PONG));
                self.shard.mark_dirty(&self.client.conn, res);
                Ok(())
            }
            ClientOp::Pong => {
                self.client.state.borrow_mut().pong();
                let meta = &self.client.meta;
                if let Some(sent) = meta.ping_sent.take() {
                    meta.rtt.set(Some(sent.elapsed()));
                }
                Ok(())
            }
            ClientOp::Sub {
                subject,
                queue,
                sid,
            } => {
                self.subscribe(&subject, queue.as_deref(), &sid);
                Ok(())
            }
            ClientOp::Unsub { sid, max } => {
                self.unsubscribe(&sid, max);
                Ok(())
            }
            ClientOp::Connect(json) => self.connect(&json),
        }
    }

    fn connect(&mut self, json: &[u8]) -> Step {
        let opts = match ClientState::parse_connect(json) {
            Ok(o) => o,
            Err(r) => return self.refused(&r),
        };
        if self.client.state.borrow().is_authenticated() {
            let a = self.client.state.borrow_mut().accept_connect(opts);
            self.answer(a);
            return Ok(());
        }
        let ctx = self
            .client
            .state
            .borrow()
            .connect_context(Some(self.client.addr.ip()), unix_now());
        match self.shard.current().auth.check_fast(&opts, &ctx) {
            FastCheck::Done(verdict) => self.finish_connect(opts, verdict),
            FastCheck::NeedsSlowCheck => {
                self.pending_auth = Some(opts);
                Ok(())
            }
        }
    }

    /// Runs the bcrypt or signature check on the auth pool (never on this shard); a full
    /// pool refuses, as a wrong password would (a flood of CONNECTs). A
    /// reload while the check ran means it is judged again by the new users.
    async fn check_off_shard(&self, opts: &ConnectOptions) -> Result<Session, AuthError> {
        loop {
            let dynamic = self.shard.current();
            let checked_by = dynamic.clone();
            let given = opts.clone();
            let ctx = self
                .client
                .state
                .borrow()
                .connect_context(Some(self.client.addr.ip()), unix_now());
            let verdict = self
                .shard
                .shared
                .auth_pool
                .run(move || checked_by.auth.authenticate(&given, &ctx))
                .await
                .unwrap_or(Err(AuthError));
            if Arc::ptr_eq(&dynamic, &self.shard.current()) {
                return verdict;
            }
        }
    }

    /// The verdict on a first CONNECT's credentials.
    fn finish_connect(
        &mut self,
        opts: ConnectOptions,
        verdict: Result<Session, AuthError>,
    ) -> Step {
        let dynamic = self.shard.current();
        let verdict =
            self.client
                .state
                .borrow_mut()
                .authenticate(&opts, verdict, dynamic.auth.accounts());
        match verdict {
            Verdict::Accepted { expires } => {
                if let Some(at) = expires {
                    runtime::spawn_detached(expiry_timer(
                        self.shard.clone(),
                        Rc::downgrade(&self.client),
                        at,
                    ));
                }
                let a = self.client.state.borrow_mut().accept_connect(opts);
                self.answer(a);
                Ok(())
            }
            Verdict::Refused(r) => self.refused(&r),
        }
    }

    fn publish(&mut self, p: Publish) {
        let checked = self
            .client
            .state
            .borrow_mut()
            .check_publish(&p.subject, std::time::Instant::now);
        if let PubCheck::Invalid(r) = &checked {
            return self.shard.refuse(&self.client, r);
        }
        // A message asking for a trace (nats-server 2.11 `Nats-Trace-Dest`):
        // `Some(only)` while its path is recorded (shard/trace.rs).
        let trace = match &p.headers {
            Some(h) if shoal_core::trace::requested(h) => {
                self.shard.trace_begin_client(&self.client, &p)
            }
            _ => None,
        };
        match checked {
            PubCheck::Allowed(a) => self.answer(a),
            PubCheck::Invalid(r) | PubCheck::Denied(r) => {
                if trace.is_some() {
                    self.shard.trace_refused(r.err.to_string());
                }
                self.shard.refuse(&self.client, &r);
                return;
            }
        }
        let trace_only = trace == Some(true);
        let meta = &self.client.meta;
        ConnMeta::add(&meta.in_msgs, 1);
        ConnMeta::add(
            &meta.in_bytes,
            (p.payload.len() + p.headers.as_ref().map_or(0, |h| h.len())) as u64,
        );
        // Without accounts (the common case) the hot path takes no reference
        // counts and copies nothing.
        let account = if self.shard.accounts_enabled() {
            self.client.state.borrow().account().cloned()
        } else {
            None
        };
        match account {
            None => {
                if !self.shard.publish(Some(&self.client), &p, &mut self.out) && !trace_only {
                    if let Some(reply) = &p.reply {
                        self.shard.no_responders(&self.client, reply, b"");
                    }
                }
            }
            Some(account) => {
                let dynamic = self.shard.current();
                let accounts = dynamic.auth.accounts();
                // Its own account's space, plus what exports and imports
                // add (accounts.rs); a request is answered with 503 only
                // when none of them reached anyone.
                let mut delivered = false;
                for d in accounts.deliveries(&account, &p.subject, p.reply.as_deref()) {
                    if trace.is_some() {
                        self.shard.trace_crossing(&d.via, &p.subject, &d.subject);
                    }
                    let routed = Publish {
                        subject: Bytes::from(d.subject),
                        reply: d.reply.map(Bytes::from),
                        headers: p.headers.clone(),
                        payload: p.payload.clone(),
                    };
                    delivered |= self
                        .shard
                        .publish(Some(&self.client), &routed, &mut self.out);
                }
                if !delivered && !trace_only {
                    if let Some(reply) = &p.reply {
                        self.shard
                            .no_responders(&self.client, reply, &account.prefix);
                    }
                }
            }
        }
        if trace.is_some() {
            self.shard.trace_end();
        }
    }

    /// The parser hands out slices of the 64 KiB read buffer; a
    /// subscription outlives that buffer (and is mirrored into other
    /// shards), so it keeps compact copies (`check_subscribe` makes the
    /// subject's), never a pin on the whole buffer.
    fn subscribe(&mut self, subject: &[u8], queue: Option<&[u8]>, sid: &[u8]) {
        let check = {
            let subs = self.client.subs.borrow();
            self.client.state.borrow().check_subscribe(
                subject,
                queue,
                sid,
                subs.contains_key(sid),
                subs.len(),
                self.shard.current().config.max_subscriptions,
            )
        };
        let (subject, prefix_len, deny_filter) = match check {
            SubCheck::New {
                subject,
                prefix_len,
                deny_filter,
            } => (subject, prefix_len, deny_filter),
            SubCheck::Duplicate => return self.ok(),
            SubCheck::Refused(r) => return self.shard.refuse(&self.client, &r),
        };
        let sub = Rc::new(LocalSub {
            client: self.client.clone(),
            prefix_len,
            subject,
            queue: queue.map(Bytes::copy_from_slice),
            sid: Bytes::copy_from_slice(sid),
            max: Cell::new(None),
            delivered: Cell::new(0),
            deny_filter: Cell::new(deny_filter),
        });
        if self.shard.subscribe(sub).is_err() {
            // The index's rules and the engine's subject check agree; a
            // refusal here is reported as nats-server reports a bad subject.
            return self
                .shard
                .refuse(&self.client, &ClientState::invalid_subject());
        }
        self.unsynced = true;
        self.ok();
    }

    fn unsubscribe(&mut self, sid: &[u8], max: Option<u64>) {
        let sub = self.client.subs.borrow().get(sid).cloned();
        if let Some(sub) = sub {
            match ClientState::unsubscribe(max, sub.delivered.get()) {
                Unsub::AtMax(max) => sub.max.set(Some(max)),
                Unsub::Now => self.shard.unsubscribe(&sub),
            }
        }
        self.ok();
    }
}
