//! A client connection's task: the NATS client protocol as nats-server
//! speaks it (INFO/CONNECT handshake, PUB/HPUB, SUB/UNSUB, PING/PONG), its
//! limits and its error texts.
//!
//! The task owns the read side: it reads into one buffer, parses every
//! complete operation in it, routes each message (local subscribers get it
//! queued at once, other shards get one batch each), then flushes every
//! connection that got data and sends the batches: one write per connection
//! and one channel send per shard per read.

use crate::outbound::{self, Client, ClientFlags, CloseReason, ConnMeta, LocalSub, MAX_READ};
use crate::runtime::{self, LocalEvent, TcpListener, TcpStream};
use crate::shard::{Outgoing, Shard};
use bytes::{Bytes, BytesMut};
use shoal_core::auth::{AuthError, ClientPermissions, ConnectContext, FastCheck, Session};
use shoal_core::proto::{
    self, ClientOp, ClientParser, ConnectOptions, Limits, ProtoError, Publish,
};
use shoal_core::subject::{has_wildcard, is_valid_pattern, is_valid_publish, is_valid_queue};
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
            shard.stop_accepting.wait().await;
            None
        })
        .await;
        if shard.stop_accepting.is_set() {
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
    let client = Rc::new(Client::new(
        id,
        addr,
        stream,
        cfg.max_pending,
        cfg.write_deadline,
        shard.stats.clone(),
    ));
    client.flags.set(ClientFlags {
        // nats-server's defaults before CONNECT.
        verbose: true,
        pedantic: true,
        ..ClientFlags::default()
    });
    debug!("{addr} - cid:{id} - Client connection created");
    // TLS first (`handshake_first`): the INFO waits for the handshake and
    // goes out encrypted.
    let tls_first = tls_comes_first(&shard, &client).await;
    if dynamic.auth.nonce_required() {
        *client.meta.nonce.borrow_mut() = Some(new_nonce());
    }
    if !tls_first {
        let info = shared.info_for(id, addr, client.meta.nonce.borrow().as_deref());
        let res = client.queue(|b| proto::write_info(b, &info));
        shard.mark_dirty(&client, res);
    }

    let total = shared.connections.fetch_add(1, Relaxed) + 1;
    if total > cfg.max_connections {
        shared.connections.fetch_sub(1, Relaxed);
        let _ = client.queue(|b| proto::write_err(b, "maximum connections exceeded"));
        client.close_after_flush(CloseReason::MaxConnectionsExceeded);
        shard.flush_dirty();
        error!("{addr} - cid:{id} - maximum connections exceeded");
        return;
    }
    // The default account until (and unless) authentication names another.
    *client.account.borrow_mut() = dynamic.auth.accounts().get(None);
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
                let info = shared.info_for(id, addr, client.meta.nonce.borrow().as_deref());
                let res = client.queue(|b| proto::write_info(b, &info));
                shard.mark_dirty(&client, res);
                shard.flush_dirty();
            }
            Connection::new(shard.clone(), client.clone()).run().await
        }
        Err(reason) => reason,
    };
    client.close(reason);
    let reason = client.close_reason().unwrap_or(reason);

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
                client.max_pending()
            ),
            _ => info!(
                "{addr} - cid:{id} - Slow Consumer Detected: WriteDeadline of {:?} exceeded",
                client.write_deadline()
            ),
        }
    }
    debug!("{addr} - cid:{id} - Client connection closed: {reason}");
}

/// Closes a connection that did not authenticate in time.
async fn auth_timer(shard: Rc<Shard>, client: Rc<Client>, timeout: Duration) {
    runtime::sleep(timeout).await;
    if !client.authenticated.get() && !client.is_closing() {
        error!(
            "{} - cid:{} - Authentication Timeout",
            client.addr, client.id
        );
        close_with_err(
            &shard,
            &client,
            "Authentication Timeout",
            CloseReason::AuthenticationTimeout,
        );
    }
}

/// Sends `-ERR '<text>'` and closes once it is flushed.
fn close_with_err(shard: &Shard, client: &Rc<Client>, text: &str, reason: CloseReason) {
    let res = client.queue(|b| proto::write_err(b, text));
    shard.mark_dirty(client, res);
    client.close_after_flush(reason);
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
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    runtime::sleep(Duration::from_secs(at.saturating_sub(now).max(0) as u64)).await;
    let Some(client) = client.upgrade() else {
        return;
    };
    if client.is_closing() {
        return;
    }
    info!(
        "{} - cid:{} - User Authentication Expired",
        client.addr, client.id
    );
    close_with_err(
        &shard,
        &client,
        "User Authentication Expired",
        CloseReason::AuthenticationExpired,
    );
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
        if client.is_closing() {
            return;
        }
        if !client.authenticated.get() && shard.current().auth.required() {
            // Not logged in yet (its bcrypt check may be under way): the
            // auth timer, not keep-alive, decides its fate, and a PING must
            // not come before the verdict on its CONNECT.
            continue;
        }
        if client.pings_out.get() >= max {
            let res = client.queue(|b| proto::write_err(b, "Stale Connection"));
            shard.mark_dirty(&client, res);
            client.close_after_flush(CloseReason::StaleConnection);
            return;
        }
        client.pings_out.set(client.pings_out.get() + 1);
        client.meta.ping_sent.set(Some(std::time::Instant::now()));
        let res = client.queue(|b| b.extend_from_slice(proto::PING));
        shard.mark_dirty(&client, res);
        shard.flush_dirty();
    }
}

/// Whether this connection starts with the TLS handshake, before any INFO
/// (`tls { handshake_first }`): always, or (`auto`/a delay) when the
/// client's first bytes, within the delay, are a TLS record (0x16). Waiting
/// peeks at the socket without taking anything from it.
async fn tls_comes_first(shard: &Rc<Shard>, client: &Rc<Client>) -> bool {
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
                client.fd(),
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
    match crate::tls::accept(client.stream(), config, timeout).await {
        Ok(conn) => {
            *client.tls.borrow_mut() = Some(conn.into());
            Ok(())
        }
        Err(e) => {
            error!(
                "{} - cid:{} - TLS handshake error: {e}",
                client.addr, client.id
            );
            if matches!(e, crate::tls::HandshakeError::Plaintext) {
                let res = client.queue(|b| proto::write_err(b, crate::tls::TLS_REQUIRED));
                shard.mark_dirty(client, res);
                client.close_after_flush(CloseReason::TlsError);
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
            wait.done.wait().await;
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
    let res = client.queue(|b| b.extend_from_slice(proto::PONG));
    shard.mark_dirty(client, res);
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
        let mut held = self.client.tls.borrow().is_some();
        let mut budget = runtime::TurnBudget::new();
        loop {
            if let Err(reason) = outbound::read_conn(
                &self.client,
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
            if let Some(reason) = self.client.close_reason() {
                return reason;
            }
            // `process` stops early for a CONNECT waiting for bcrypt, and
            // for a PING that must follow the messages routed before it;
            // the rest of the read buffer is processed here once they are
            // done.
            loop {
                let step = if let Some(opts) = self.pending_auth.take() {
                    let verdict = self.check_off_shard(&opts).await;
                    if let Some(reason) = self.client.close_reason() {
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
                Err(e) => return Err(self.protocol_error(&e, buf)),
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
            if let Some(reason) = self.client.close_reason() {
                return Err(reason);
            }
            if self.pending_auth.is_some() {
                return Ok(());
            }
        }
    }

    /// `line` is what the parser could not take (the front of the read
    /// buffer), shown in the log line as nats-server shows a snippet.
    fn protocol_error(&self, e: &ProtoError, line: &[u8]) -> CloseReason {
        error!(
            "{} - cid:{} - {}",
            self.client.addr,
            self.client.id,
            e.log_text(line)
        );
        let reason = match e {
            ProtoError::MaxPayload { .. } => CloseReason::MaxPayloadExceeded,
            _ => CloseReason::ParseError,
        };
        self.send_err(e.err_text());
        self.client.close_after_flush(reason);
        reason
    }

    /// Who the client authenticated as, for log lines (nats-server's
    /// `User "name"`; never a password or token).
    fn auth_user(&self) -> String {
        match self.client.meta.auth_user.borrow().as_deref() {
            Some(user) => format!("User {user:?}"),
            None => "User \"N/A\"".to_string(),
        }
    }

    fn send_err(&self, text: &str) {
        let res = self.client.queue(|b| proto::write_err(b, text));
        self.shard.mark_dirty(&self.client, res);
    }

    fn ok(&self) {
        if self.client.flags.get().verbose {
            let res = self.client.queue(|b| b.extend_from_slice(proto::OK));
            self.shard.mark_dirty(&self.client, res);
        }
    }

    fn handle(&mut self, op: ClientOp) -> Step {
        if tracing::enabled!(tracing::Level::TRACE) {
            match &op {
                // Never log credentials, as nats-server's trace does not.
                ClientOp::Connect(json) => {
                    let redacted = ConnectOptions::from_json(json).map(|mut o| {
                        for secret in [&mut o.pass, &mut o.auth_token] {
                            if secret.is_some() {
                                *secret = Some("[REDACTED]".into());
                            }
                        }
                        o
                    });
                    trace!(
                        "{} - cid:{} - <<- CONNECT {redacted:?}",
                        self.client.addr,
                        self.client.id
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
                        "{} - cid:{} - <<- [{} {} {}{}]",
                        self.client.addr,
                        self.client.id,
                        if p.headers.is_some() { "HPUB" } else { "PUB" },
                        String::from_utf8_lossy(&p.subject),
                        p.reply
                            .as_ref()
                            .map(|r| format!("{} ", String::from_utf8_lossy(r)))
                            .unwrap_or_default(),
                        p.payload.len() + p.headers.as_ref().map_or(0, |h| h.len())
                    );
                    trace!(
                        "{} - cid:{} - <<- MSG_PAYLOAD: [{shown}]",
                        self.client.addr,
                        self.client.id
                    );
                }
                _ => trace!("{} - cid:{} - <<- {op:?}", self.client.addr, self.client.id),
            }
        }
        if !self.client.authenticated.get()
            && self.shard.current().auth.required()
            && !matches!(op, ClientOp::Connect(_))
        {
            self.send_err(shoal_core::auth::AUTHORIZATION_VIOLATION);
            self.client
                .close_after_flush(CloseReason::AuthenticationViolation);
            return Err(CloseReason::AuthenticationViolation);
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
                let res = self.client.queue(|b| b.extend_from_slice(proto::PONG));
                self.shard.mark_dirty(&self.client, res);
                Ok(())
            }
            ClientOp::Pong => {
                self.client.pings_out.set(0);
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
                // The parser hands out slices of the 64 KiB read buffer; a
                // subscription outlives that buffer (and is mirrored into
                // other shards), so it keeps compact copies, never a pin on
                // the whole buffer.
                let own = |b: Bytes| Bytes::copy_from_slice(&b);
                self.subscribe(own(subject), queue.map(own), own(sid));
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
        let opts = match ConnectOptions::from_json(json) {
            Ok(o) => o,
            Err(e) => {
                error!(
                    "{} - cid:{} - processConnect: bad CONNECT: {e}",
                    self.client.addr, self.client.id
                );
                self.send_err("Unknown Protocol Operation");
                self.client.close_after_flush(CloseReason::ParseError);
                return Err(CloseReason::ParseError);
            }
        };
        if self.client.authenticated.get() {
            return self.accept_connect(opts);
        }
        let ctx = self.connect_context();
        match self.shard.current().auth.check_fast(&opts, &ctx) {
            FastCheck::Done(verdict) => self.finish_connect(opts, verdict),
            FastCheck::NeedsSlowCheck => {
                self.pending_auth = Some(opts);
                Ok(())
            }
        }
    }

    /// What the server knows of this connection for checking its CONNECT.
    fn connect_context(&self) -> ConnectContext {
        ConnectContext::now(
            self.client.meta.nonce.borrow().clone(),
            Some(self.client.addr.ip()),
        )
    }

    /// Runs the bcrypt or signature check on the auth pool (never on this shard); a full
    /// pool refuses, as a wrong password would (a flood of CONNECTs). A
    /// reload while the check ran means it is judged again by the new users.
    async fn check_off_shard(&self, opts: &ConnectOptions) -> Result<Session, AuthError> {
        loop {
            let dynamic = self.shard.current();
            let checked_by = dynamic.clone();
            let given = opts.clone();
            let ctx = self.connect_context();
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
        {
            match verdict {
                Ok(session) => {
                    if let Some(at) = session.expires {
                        runtime::spawn_detached(expiry_timer(
                            self.shard.clone(),
                            Rc::downgrade(&self.client),
                            at,
                        ));
                    }
                    self.client.meta.auth_user.replace(session.user);
                    *self.client.perms.borrow_mut() =
                        session.permissions.map(ClientPermissions::new);
                    *self.client.account.borrow_mut() = self
                        .shard
                        .current()
                        .auth
                        .accounts()
                        .get(session.account.as_deref());
                    self.client.authenticated.set(true);
                }
                Err(e) => {
                    // nats-server: "authentication error - User \"bob\"" (never
                    // the password, token or JWT).
                    match (&opts.user, &opts.nkey) {
                        (Some(user), _) => error!(
                            "{} - cid:{} - authentication error - User {user:?}",
                            self.client.addr, self.client.id
                        ),
                        // nats-server names the key of an nkey user (a
                        // public key, no secret).
                        (None, Some(nkey)) => error!(
                            "{} - cid:{} - authentication error - Nkey {nkey:?}",
                            self.client.addr, self.client.id
                        ),
                        (None, None) => error!(
                            "{} - cid:{} - authentication error",
                            self.client.addr, self.client.id
                        ),
                    }
                    self.send_err(e.err_text());
                    self.client
                        .close_after_flush(CloseReason::AuthenticationViolation);
                    return Err(CloseReason::AuthenticationViolation);
                }
            }
        }
        self.accept_connect(opts)
    }

    /// An accepted CONNECT: its options take effect.
    fn accept_connect(&mut self, opts: ConnectOptions) -> Step {
        self.client.flags.set(ClientFlags {
            verbose: opts.verbose,
            pedantic: opts.pedantic,
            echo: opts.echo,
            headers: opts.headers,
            no_responders: opts.no_responders,
        });
        *self.client.name.borrow_mut() = opts.name.clone();
        // Kept for monitoring (lang, version, user) and for re-checking the
        // credentials when the configuration is reloaded. A later CONNECT may
        // change the options but not who the client is: the credentials stay
        // those that were checked (else a client could show, and be
        // re-checked at reload as, a user it never proved to be).
        let mut opts = opts;
        if let Some(first) = self.client.meta.connect.borrow().as_ref() {
            opts.user.clone_from(&first.user);
            opts.pass.clone_from(&first.pass);
            opts.auth_token.clone_from(&first.auth_token);
            opts.jwt.clone_from(&first.jwt);
            opts.nkey.clone_from(&first.nkey);
            opts.sig.clone_from(&first.sig);
        }
        *self.client.meta.connect.borrow_mut() = Some(opts);
        self.ok();
        Ok(())
    }

    fn publish(&mut self, p: Publish) {
        let flags = self.client.flags.get();
        if flags.pedantic && !is_valid_publish(&p.subject) {
            self.send_err("Invalid Publish Subject");
            return;
        }
        // A message asking for a trace (nats-server 2.11 `Nats-Trace-Dest`):
        // `Some(only)` while its path is recorded (shard/trace.rs).
        let trace = match &p.headers {
            Some(h) if shoal_core::trace::requested(h) => {
                self.shard.trace_begin_client(&self.client, &p)
            }
            _ => None,
        };
        let allowed = match self.client.perms.borrow_mut().as_mut() {
            Some(perms) => perms.may_publish(&p.subject, std::time::Instant::now()),
            None => true,
        };
        if !allowed {
            let text = format!(
                "Permissions Violation for Publish to \"{}\"",
                String::from_utf8_lossy(&p.subject)
            );
            error!(
                "{} - cid:{} - Publish Violation - {}, Subject {:?}",
                self.client.addr,
                self.client.id,
                self.auth_user(),
                String::from_utf8_lossy(&p.subject)
            );
            if trace.is_some() {
                self.shard.trace_refused(text.clone());
            }
            self.send_err(&text);
            return;
        }
        self.ok();
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
            self.client.account.borrow().clone()
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

    fn subscribe(&mut self, subject: Bytes, queue: Option<Bytes>, sid: Bytes) {
        if !is_valid_pattern(&subject) || queue.as_deref().is_some_and(|q| !is_valid_queue(q)) {
            self.send_err("Invalid Subject");
            return;
        }
        let deny_filter = {
            let perms = self.client.perms.borrow();
            if let Some(perms) = perms.as_ref() {
                if !perms.may_subscribe(&subject) {
                    let subject = String::from_utf8_lossy(&subject);
                    let text = match &queue {
                        Some(q) => format!(
                            "Permissions Violation for Subscription to \"{subject}\" using queue \"{}\"",
                            String::from_utf8_lossy(q)
                        ),
                        None => format!("Permissions Violation for Subscription to \"{subject}\""),
                    };
                    let queue = match &queue {
                        Some(q) => format!(", Queue: {:?}", String::from_utf8_lossy(q)),
                        None => String::new(),
                    };
                    error!(
                        "{} - cid:{} - Subscription Violation - {}, Subject {subject:?}{queue}, SID {}",
                        self.client.addr,
                        self.client.id,
                        self.auth_user(),
                        String::from_utf8_lossy(&sid)
                    );
                    self.send_err(&text);
                    return;
                }
                has_wildcard(&subject)
            } else {
                false
            }
        };
        if self.client.subs.borrow().contains_key(&sid) {
            // nats-server ignores a SUB whose sid is already in use.
            self.ok();
            return;
        }
        let max = self.shard.current().config.max_subscriptions;
        if max > 0 && self.client.subs.borrow().len() >= max {
            error!(
                "{} - cid:{} - maximum subscriptions exceeded",
                self.client.addr, self.client.id
            );
            self.send_err("maximum subscriptions exceeded");
            return;
        }
        // Indexed (and announced to other shards and nodes) in its
        // account's space.
        let prefix = self
            .client
            .account
            .borrow()
            .as_ref()
            .map(|a| a.prefix.clone())
            .unwrap_or_default();
        let prefix_len = prefix.len();
        let subject = if prefix.is_empty() {
            subject
        } else {
            Bytes::from([&prefix[..], &subject[..]].concat())
        };
        let sub = Rc::new(LocalSub {
            client: self.client.clone(),
            prefix_len,
            subject,
            queue,
            sid,
            max: Cell::new(None),
            delivered: Cell::new(0),
            deny_filter: Cell::new(deny_filter),
        });
        if self.shard.subscribe(sub).is_err() {
            self.send_err("Invalid Subject");
            return;
        }
        self.unsynced = true;
        self.ok();
    }

    fn unsubscribe(&mut self, sid: &[u8], max: Option<u64>) {
        let sub = self.client.subs.borrow().get(sid).cloned();
        if let Some(sub) = sub {
            match max {
                Some(max) if sub.delivered.get() < max => sub.max.set(Some(max)),
                _ => self.shard.unsubscribe(&sub),
            }
        }
        self.ok();
    }
}
