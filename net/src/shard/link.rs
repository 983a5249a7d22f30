//! One route link's task on its owning shard: the snapshot at link up,
//! reading and applying the peer's frames, keep-alive, and cleanup.
//!
//! It is part of `shard` rather than a module above it (as `client` is)
//! because the shard starts it: `Control::AttachRoute` arrives on the
//! shard's control inbox, whose handler spawns `serve`, and the read loop
//! then calls the shard's routing methods (`publish_from_route`,
//! `route_interest`, `apply_pending_control`) and holds its `RouteLink`s.
//! The link's plain types (`RouteId`, `PeerMeta`, `RouteAttach`, events,
//! stats) are in `crate::route`, below the shard.

use super::{Outgoing, Shard};
use crate::outbound::{read_conn, CloseReason, Conn};
use crate::route::{PeerMeta, RouteAttach, RouteEvent, RouteId, RouteStats, RouteView};
use crate::runtime::{self, TcpStream};
use bytes::BytesMut;
use shoal_core::route::{self as wire, Frame, FrameKind, InterestBatch, InterestOp};
use shoal_engine::{KeepAlive, Learned, Tick};
use std::cell::{Cell, RefCell};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tracing::{debug, info, warn};

/// A route's outbound buffer may hold this much before the link is cut as a
/// slow consumer (a peer must absorb bursts from every client of this node).
const ROUTE_MAX_PENDING: usize = 256 * 1024 * 1024;

/// A link as its owning shard keeps it.
pub(crate) struct RouteLink {
    pub id: RouteId,
    pub peer: PeerMeta,
    /// The connection's outbound half (buffering, flushing, closing are the
    /// same as a client's).
    pub conn: Rc<Conn>,
    /// What the peer announced (the engine's rule turns announcements
    /// into deltas).
    pub interest: RefCell<Learned>,
    pub stats: Arc<RouteStats>,
    /// PINGs sent and not answered (the engine's rule).
    keepalive: RefCell<KeepAlive>,
}

impl RouteLink {
    /// Queues one interest change of this node for the peer.
    pub(crate) fn send_interest(&self, op: InterestOp) -> crate::outbound::QueueResult {
        self.queue_interest(InterestBatch { ops: vec![op] })
    }

    /// Queues one batch (at most one frame's worth, `wire::interest_batches`).
    /// A batch over the frame limit can only be one operation whose subject
    /// is longer than any peer accepts (a `max_control_line` of tens of
    /// megabytes): it is left out and logged rather than cut the link.
    fn queue_interest(&self, batch: InterestBatch) -> crate::outbound::QueueResult {
        if batch.encoded_bound() > wire::MAX_FRAME {
            warn!(
                "{} - {} - Interest of {} bytes not announced: over the route frame limit",
                self.conn.addr,
                self.id,
                batch.encoded_bound()
            );
            return crate::outbound::QueueResult::Queued;
        }
        self.conn.queue(|b| wire::write_interest(b, &batch))
    }
}

/// Serves one authenticated route connection until it closes.
pub(crate) async fn serve(shard: Rc<Shard>, attach: RouteAttach) {
    let RouteAttach {
        id,
        stream,
        peer,
        tls,
    } = attach;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_nonblocking(true);
    // SAFETY: the fd comes from a std stream this function owns.
    let stream = unsafe { TcpStream::from_raw_fd(stream.into_raw_fd()) };
    let Ok(addr) = stream.peer_addr() else {
        report(
            &shard,
            RouteEvent::Closed {
                route: id,
                reason: "no peer address".into(),
            },
        );
        return;
    };
    let cfg = &shard.shared.config;
    let conn = Rc::new(Conn::new(
        shard.shared.next_client_id.fetch_add(1, Relaxed),
        addr,
        Rc::new(RefCell::new(stream)),
        ROUTE_MAX_PENDING.max(cfg.max_pending),
        // `cluster { write_deadline }` when set, as nats-server 2.10+.
        cfg.cluster.write_deadline.unwrap_or(cfg.write_deadline),
        shard.stats.clone(),
    ));
    if let Some(mut session) = tls {
        // Sealed frames are bounded by the link's max_pending, not rustls.
        session.set_buffer_limit(None);
        *conn.tls.borrow_mut() = Some(session);
    }
    let link = Rc::new(RouteLink {
        id,
        peer,
        conn,
        interest: RefCell::new(Learned::default()),
        stats: Arc::new(RouteStats::default()),
        keepalive: RefCell::new(KeepAlive::default()),
    });
    info!(
        "{addr} - {id} - Route connection created ({} {})",
        link.peer.server_name, link.peer.server_id
    );
    shard.shared.routes.lock().unwrap().insert(
        id,
        RouteView {
            id,
            peer: link.peer.clone(),
            addr,
            stats: link.stats.clone(),
            since: std::time::SystemTime::now(),
        },
    );
    // Registering and queueing the snapshot happen in one step, so every
    // later interest change is queued after the snapshot.
    shard.add_route(link.clone());
    runtime::spawn_detached(ping_timer(shard.clone(), Rc::downgrade(&link)));

    let reason = read_loop(&shard, &link).await;
    link.conn.close(reason);
    let reason = link.conn.close_reason().unwrap_or(reason);
    shard.remove_route(&link);
    shard.shared.routes.lock().unwrap().remove(&id);
    info!("{addr} - {id} - Route connection closed: {reason}");
    report(
        &shard,
        RouteEvent::Closed {
            route: id,
            reason: reason.to_string(),
        },
    );
}

fn report(shard: &Shard, event: RouteEvent) {
    // Nobody listening means the membership layer has stopped: nothing to do.
    let _ = shard.shared.route_events.send(event);
}

async fn read_loop(shard: &Rc<Shard>, link: &Rc<RouteLink>) -> CloseReason {
    // The protocol's limit, not this node's max_payload: a peer forwards
    // what its own clients may publish (see `wire::MAX_FRAME`).
    let max_frame = wire::MAX_FRAME;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let read_size = Cell::new(64 * 1024);
    let mut out = Outgoing::new(shard.shards);
    let mut cipher = BytesMut::new();
    // With TLS, the handshake thread's reads may have left the peer's first
    // frames decrypted inside the session.
    let mut held = link.conn.tls.borrow().is_some();
    let mut budget = runtime::TurnBudget::new();
    loop {
        if let Err(reason) =
            read_conn(&link.conn, &mut buf, &mut cipher, &read_size, &mut held).await
        {
            return reason;
        }
        if let Some(d) = shard.shared.test_route_delay {
            runtime::sleep(d).await;
        }
        shard.stats.progress.fetch_add(1, Relaxed);
        budget.begin();
        shard.apply_pending_control();
        let step = loop {
            match wire::next_frame(&mut buf, max_frame) {
                Ok(Some(frame)) => {
                    if let Err(e) = handle(shard, link, frame, &mut out) {
                        break Err(e);
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        if !out.is_empty() {
            shard.send_batches(&mut out).await;
        }
        shard.flush_dirty();
        if let Err(e) = step {
            warn!(
                "{} - {} - Route protocol error, closing the link: {e}",
                link.conn.addr, link.id
            );
            return CloseReason::ParseError;
        }
        if let Some(reason) = link.conn.close_reason() {
            return reason;
        }
        budget.spend().await;
    }
}

fn handle(
    shard: &Rc<Shard>,
    link: &Rc<RouteLink>,
    frame: Frame,
    out: &mut Outgoing,
) -> Result<(), wire::FrameError> {
    match frame.kind {
        FrameKind::Msg => {
            let m = match wire::decode_msg(&frame.body) {
                Ok(m) => m,
                // One message's content never closes the link.
                Err(e) if e.is_refused_message() => {
                    link.stats.refused_msgs.fetch_add(1, Relaxed);
                    tracing::debug!("{} - {} - {e}, message dropped", link.conn.addr, link.id);
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            link.stats.in_msgs.fetch_add(1, Relaxed);
            link.stats.in_bytes.fetch_add(
                (m.payload.len() + m.headers.as_ref().map_or(0, |h| h.len())) as u64,
                Relaxed,
            );
            shard.publish_from_route(link, &m, out);
        }
        FrameKind::Interest => {
            let batch = wire::decode_interest(&frame.body)?;
            for op in batch.ops {
                shard.route_interest(link, op);
            }
        }
        FrameKind::Info => {
            let info = wire::decode_info(&frame.body)?;
            debug!("{} - {} - Route INFO update", link.conn.addr, link.id);
            report(
                shard,
                RouteEvent::Info {
                    route: link.id,
                    info,
                },
            );
        }
        FrameKind::Ping => {
            wire::expect_empty(&frame)?;
            let res = link.conn.queue(|b| wire::write_empty(b, FrameKind::Pong));
            shard.mark_dirty(&link.conn, res);
        }
        FrameKind::Pong => {
            wire::expect_empty(&frame)?;
            link.keepalive.borrow_mut().pong();
        }
        FrameKind::Sync => {
            // Everything the peer sent before this was applied above (and
            // broadcast to this node's other shards, which apply it before
            // routing their next read buffer).
            let token = wire::decode_token(frame.kind, &frame.body)?;
            let res = link
                .conn
                .queue(|b| wire::write_token(b, FrameKind::SyncAck, token));
            shard.mark_dirty(&link.conn, res);
        }
        FrameKind::SyncAck => {
            let token = wire::decode_token(frame.kind, &frame.body)?;
            shard.sync_acked(link.id, token);
        }
        FrameKind::SnapshotDone => {
            wire::expect_empty(&frame)?;
            report(shard, RouteEvent::SnapshotDone { route: link.id });
        }
    }
    Ok(())
}

/// Queues this node's interest snapshot for a new link, in frames cut by
/// bytes (subjects may be long: a count of operations says nothing of a
/// frame's size), then the end marker.
pub(crate) fn queue_snapshot(link: &RouteLink, ops: Vec<InterestOp>) {
    for batch in wire::interest_batches(ops, wire::INTEREST_FRAME_TARGET) {
        let _ = link.queue_interest(batch);
    }
    let _ = link
        .conn
        .queue(|b| wire::write_empty(b, FrameKind::SnapshotDone));
}

/// Pings the peer every `ping_interval`; `ping_max` unanswered closes the
/// link as stale (a peer that vanished without a FIN).
async fn ping_timer(shard: Rc<Shard>, link: std::rc::Weak<RouteLink>) {
    let cfg = &shard.shared.config;
    let (interval, max) = (
        cfg.ping_interval.min(std::time::Duration::from_secs(10)),
        cfg.ping_max,
    );
    loop {
        runtime::sleep(interval).await;
        let Some(link) = link.upgrade() else { return };
        if link.conn.is_closing() {
            return;
        }
        let tick = link.keepalive.borrow_mut().tick(max);
        if tick == Tick::Stale {
            link.conn.close(CloseReason::StaleConnection);
            return;
        }
        let res = link.conn.queue(|b| wire::write_empty(b, FrameKind::Ping));
        shard.mark_dirty(&link.conn, res);
        shard.flush_dirty();
    }
}
