//! A connection's I/O (`Conn`, a client's or a route link's): its outbound
//! buffer and how it gets written, and how the connection is closed from
//! anywhere on the shard. No protocol state and no decision lives here.
//!
//! Every frame for a connection is appended to ONE contiguous buffer (glommio's
//! `TcpStream` has no real vectored write). The shard flushes each connection
//! that got data once per processed read buffer or inbox batch, with a direct
//! non-blocking `send(2)` (no task switch on the fast path). Only when the
//! socket is full does a writer task take over; it waits for writability,
//! bounded by `write_deadline`. Pending bytes over `max_pending` or a write
//! stuck past the deadline close this connection only (slow consumer): a slow
//! subscriber never stalls the publisher or anyone else.
//!
//! The read side's one primitive is here too (`read_conn`: one read, plain
//! or through the connection's TLS session), shared by the client task and
//! route links, so `tls` needs nothing from a connection.

use crate::runtime::{self, TcpStream};
use crate::stats::ShardStats;
use bytes::{Buf, BytesMut};
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// Why a connection was closed: the engine decides it (most reasons are
/// protocol decisions); the I/O here closes for write errors and slow
/// consumers.
pub use shoal_engine::CloseReason;

/// A connection's I/O, shared by the tasks of its shard: the outbound
/// buffer, its flushing and closing. A client connection
/// (`session::Client`) and a route link (`shard::link::RouteLink`) each hold
/// one; neither's protocol state is here.
pub(crate) struct Conn {
    pub id: u64,
    pub addr: SocketAddr,
    fd: RawFd,
    stream: Rc<RefCell<TcpStream>>,
    out: RefCell<BytesMut>,
    /// TLS: the session, and the sealed bytes waiting for the socket (the
    /// send path writes these instead of `out`).
    pub tls: RefCell<Option<rustls::Connection>>,
    wire: RefCell<BytesMut>,
    dirty: Cell<bool>,
    /// A writer task is waiting for the socket to become writable.
    blocked: Cell<bool>,
    closing: Cell<Option<CloseReason>>,
    /// Shut the socket down once the outbound buffer drained.
    close_when_flushed: Cell<bool>,
    max_pending: usize,
    write_deadline: Duration,
    /// The owning shard's counters (blocked writers, for the watchdog).
    shard_stats: Arc<ShardStats>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Conn(cid:{} {})", self.id, self.addr)
    }
}

impl Conn {
    pub(crate) fn new(
        id: u64,
        addr: SocketAddr,
        stream: Rc<RefCell<TcpStream>>,
        max_pending: usize,
        write_deadline: Duration,
        shard_stats: Arc<ShardStats>,
    ) -> Self {
        let fd = stream.borrow().as_raw_fd();
        Conn {
            id,
            addr,
            fd,
            stream,
            out: RefCell::new(BytesMut::with_capacity(4096)),
            tls: RefCell::new(None),
            wire: RefCell::new(BytesMut::new()),
            dirty: Cell::new(false),
            blocked: Cell::new(false),
            closing: Cell::new(None),
            close_when_flushed: Cell::new(false),
            max_pending,
            write_deadline,
            shard_stats,
        }
    }

    pub(crate) fn stream(&self) -> &Rc<RefCell<TcpStream>> {
        &self.stream
    }

    /// Whether a writer task waits for the socket, and the bytes queued.
    pub(crate) fn pending(&self) -> (bool, usize) {
        (
            self.blocked.get(),
            self.out.borrow().len() + self.wire.borrow().len(),
        )
    }

    fn is_tls(&self) -> bool {
        self.tls.borrow().is_some()
    }

    /// TLS: encrypts what is queued into `wire`. The buffer the send path
    /// writes from: `wire` with TLS, `out` without.
    fn sendable(&self) -> &RefCell<BytesMut> {
        let mut tls = self.tls.borrow_mut();
        match tls.as_mut() {
            Some(conn) => {
                crate::tls::seal(
                    conn,
                    &mut self.out.borrow_mut(),
                    &mut self.wire.borrow_mut(),
                );
                &self.wire
            }
            None => &self.out,
        }
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.get().is_some()
    }

    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        self.closing.get()
    }

    /// The socket's descriptor (for a peek before the protocol starts).
    pub(crate) fn fd(&self) -> RawFd {
        self.fd
    }

    /// Pending bytes past which the client is cut as a slow consumer.
    pub fn max_pending(&self) -> usize {
        self.max_pending
    }

    /// How long a write may wait before the client is cut as slow.
    pub fn write_deadline(&self) -> Duration {
        self.write_deadline
    }

    /// Appends to the outbound buffer. `NewlyDirty` when this made the
    /// connection dirty (the caller adds it to the shard's flush list).
    /// Appending past `max_pending` closes the connection as a slow consumer.
    pub(crate) fn queue(&self, write: impl FnOnce(&mut BytesMut)) -> QueueResult {
        if self.is_closing() {
            return QueueResult::Closed;
        }
        let mut len = {
            let mut out = self.out.borrow_mut();
            write(&mut out);
            out.len()
        };
        if self.blocked.get() && self.is_tls() {
            len += self.wire.borrow().len();
        }
        if len > self.max_pending {
            self.out.borrow_mut().clear();
            self.close(CloseReason::SlowConsumerPendingBytes);
            return QueueResult::SlowConsumer;
        }
        if self.dirty.replace(true) {
            QueueResult::Queued
        } else {
            QueueResult::NewlyDirty
        }
    }

    /// Writes what is pending without blocking. When the socket is full, a
    /// writer task finishes the job.
    pub(crate) fn flush(self: &Rc<Self>) {
        self.dirty.set(false);
        if self.blocked.get() {
            return;
        }
        let buf = self.sendable();
        loop {
            let mut out = buf.borrow_mut();
            if out.is_empty() {
                break;
            }
            // SAFETY: `fd` stays open while `self` holds the stream; the
            // buffer pointer and length describe initialised bytes.
            let n = unsafe {
                libc::send(
                    self.fd,
                    out.as_ptr().cast(),
                    out.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                out.advance(n as usize);
                continue;
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => {
                    drop(out);
                    self.blocked.set(true);
                    self.shard_stats.blocked_writers.fetch_add(1, Relaxed);
                    runtime::spawn_detached(writer(self.clone()));
                    return;
                }
                _ => {
                    out.clear();
                    drop(out);
                    self.close(CloseReason::WriteError);
                    return;
                }
            }
        }
        if self.close_when_flushed.get() {
            self.shutdown_socket();
        }
    }

    /// Closes the connection now: the socket is shut down, which ends the
    /// connection task's read, and the task cleans up (subscriptions,
    /// interest, counters). Idempotent; the first reason wins.
    pub(crate) fn close(&self, reason: CloseReason) {
        if self.closing.get().is_some() {
            return;
        }
        self.closing.set(Some(reason));
        self.shutdown_socket();
    }

    /// Closes after what is already queued (an `-ERR`, a lame duck INFO, the
    /// messages of a graceful shutdown) has been written, bounded by the write
    /// deadline.
    pub(crate) fn close_after_flush(self: &Rc<Self>, reason: CloseReason) {
        if self.closing.get().is_some() {
            return;
        }
        self.closing.set(Some(reason));
        self.close_when_flushed.set(true);
        self.flush();
    }

    fn shutdown_socket(&self) {
        // SAFETY: see `flush`.
        unsafe {
            libc::shutdown(self.fd, libc::SHUT_RDWR);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueResult {
    NewlyDirty,
    Queued,
    SlowConsumer,
    Closed,
}

/// The slow path: wait for writability and write, until the buffer drains.
/// A write that makes no progress for `write_deadline` closes the connection
/// as a slow consumer.
async fn writer(client: Rc<Conn>) {
    let deadline = client.write_deadline;
    loop {
        let buf = client.sendable();
        if buf.borrow().is_empty() {
            break;
        }
        let write = futures_lite::future::poll_fn(|cx| {
            let out = buf.borrow();
            let mut stream = client.stream.borrow_mut();
            futures_lite::AsyncWrite::poll_write(std::pin::Pin::new(&mut *stream), cx, &out)
        });
        // One timer per wait for writability: a write that makes no
        // progress for the whole deadline closes the connection.
        let attempt = futures_lite::future::or(async { Some(write.await) }, async {
            runtime::sleep(deadline).await;
            None
        });
        match attempt.await {
            Some(Ok(n)) => {
                buf.borrow_mut().advance(n);
            }
            Some(Err(_)) => {
                buf.borrow_mut().clear();
                client.close(CloseReason::WriteError);
                break;
            }
            None => {
                buf.borrow_mut().clear();
                client.close(CloseReason::SlowConsumerWriteDeadline);
                break;
            }
        }
    }
    client.blocked.set(false);
    client.shard_stats.blocked_writers.fetch_sub(1, Relaxed);
    if client.close_when_flushed.get() {
        client.shutdown_socket();
    }
}

/// Smallest and largest read; the read size adapts between them (the buffer
/// is zero-filled before each read, so small reads stay cheap).
pub(crate) const MIN_READ: usize = 512;
pub(crate) const MAX_READ: usize = 64 * 1024;

/// Reads once from the connection into `plain`: straight from the socket
/// without TLS; with TLS through `cipher` and rustls (then writes whatever
/// rustls has to say, e.g. a key update). `held` (set after a TLS handshake)
/// first takes what rustls already decrypted without reading the socket.
/// At end of stream or on an error, the reason to close.
pub(crate) async fn read_conn(
    conn: &Rc<Conn>,
    plain: &mut BytesMut,
    cipher: &mut BytesMut,
    read_size: &Cell<usize>,
    held: &mut bool,
) -> Result<(), CloseReason> {
    let tls = conn.tls.borrow().is_some();
    if !std::mem::take(held) {
        let into = if tls { &mut *cipher } else { &mut *plain };
        match read_some(conn.stream(), into, read_size).await {
            Ok(0) => return Err(conn.close_reason().unwrap_or(CloseReason::ClientClosed)),
            Ok(_) => {}
            Err(_) => return Err(conn.close_reason().unwrap_or(CloseReason::ReadError)),
        }
    }
    if !tls {
        return Ok(());
    }
    let open = {
        let mut session = conn.tls.borrow_mut();
        let session = session
            .as_mut()
            .expect("a TLS connection keeps its session");
        crate::tls::read_plaintext(session, cipher, plain)
    };
    cipher.clear();
    conn.flush();
    match open {
        Ok(true) => Ok(()),
        Ok(false) => Err(conn.close_reason().unwrap_or(CloseReason::ClientClosed)),
        Err(e) => {
            tracing::debug!("{} - cid:{} - TLS error: {e}", conn.addr, conn.id);
            Err(CloseReason::TlsError)
        }
    }
}

/// Reads once from `stream`, appending to `buf`. The read size adapts to the
/// traffic between `MIN_READ` and `MAX_READ` (the buffer is zero-filled before
/// each read, so small reads stay cheap). Returns the bytes read; 0 at EOF.
pub(crate) async fn read_some(
    stream: &Rc<RefCell<TcpStream>>,
    buf: &mut BytesMut,
    read_size: &Cell<usize>,
) -> std::io::Result<usize> {
    let start = buf.len();
    let want = read_size.get();
    buf.resize(start + want, 0);
    let read = futures_lite::future::poll_fn(|cx| {
        let mut s = stream.borrow_mut();
        futures_lite::AsyncRead::poll_read(std::pin::Pin::new(&mut *s), cx, &mut buf[start..])
    })
    .await;
    let n = *read.as_ref().unwrap_or(&0);
    buf.truncate(start + n);
    if n > 0 {
        read_size.set(if n == want {
            (want * 2).min(MAX_READ)
        } else {
            (n * 2).clamp(MIN_READ, MAX_READ)
        });
    }
    read
}
