//! What other shards send a shard: control messages (interest, route
//! frames, reloads, lame duck, snapshots, trace reports) and batches of
//! messages, applied by the shard's inbox tasks, and synchronously on the
//! message path so interest and data already sent are never overtaken.

use super::{debug_report, lifecycle, link, snapshot, Outgoing, Shard};
use crate::bus::{Batch, Control, Inbox, Remote};
use crate::outbound::CloseReason;
use crate::runtime;
use shoal_engine::{Origin, Want};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;

/// The receiving ends of a shard's inboxes, set once when its tasks start.
#[derive(Default)]
pub(super) struct Receivers {
    /// The control inbox and its count of messages sent and not yet
    /// applied, also drained synchronously by `apply_pending_control` on
    /// the message path.
    pub control: std::cell::OnceCell<(
        flume::Receiver<Control>,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    )>,
    /// The data inbox and its count of batches sent and not yet taken,
    /// also drained synchronously by `deliver_pending_data` and at
    /// shutdown.
    pub data: std::cell::OnceCell<(
        flume::Receiver<crate::bus::Batch>,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    )>,
}

impl Shard {
    /// Starts the tasks that apply what other shards send.
    pub(crate) fn start_inbox(self: &Rc<Self>, inbox: Inbox) {
        let _ = self
            .inbox_rx
            .control
            .set((inbox.control.clone(), inbox.pending.clone()));
        let _ = self
            .inbox_rx
            .data
            .set((inbox.data.clone(), inbox.data_pending.clone()));
        let me = self.clone();
        let control = inbox.control;
        let pending = inbox.pending;
        let delay = self.shared.test_control_delay;
        runtime::spawn_detached(async move {
            let mut budget = runtime::TurnBudget::new();
            loop {
                if let Some(d) = delay {
                    // Test hook: a lagging inbox (see `Shared::test_control_delay`).
                    runtime::sleep(d).await;
                }
                let Ok(msg) = control.recv_async().await else {
                    break;
                };
                budget.begin();
                pending.fetch_sub(1, Relaxed);
                me.stats.progress.fetch_add(1, Relaxed);
                if !me.apply_control(msg) {
                    break;
                }
                // Interest changes queue frames on route links.
                if me.clustered {
                    me.flush_dirty();
                }
                budget.spend().await;
            }
        });
        let me = self.clone();
        let (data, data_pending) = (inbox.data, inbox.data_pending);
        runtime::spawn_detached(async move {
            let mut budget = runtime::TurnBudget::new();
            let mut out = Outgoing::new(me.shards);
            loop {
                let batch =
                    futures_lite::future::or(async { data.recv_async().await.ok() }, async {
                        me.life.stopped.wait().await;
                        None
                    })
                    .await;
                let Some(batch) = batch else { break };
                data_pending.fetch_sub(1, Relaxed);
                budget.begin();
                me.apply_batch(&batch, &mut out);
                me.flush_soon();
                budget.spend().await;
            }
        });
        if tracing::enabled!(tracing::Level::DEBUG) {
            runtime::spawn_detached(debug_report(self.clone()));
        }
    }

    /// Delivers one batch another shard sent.
    pub(super) fn apply_batch(self: &Rc<Self>, batch: &Batch, out: &mut Outgoing) {
        // Control sent before this batch applies first, as for a read
        // buffer: a `CloseRoute` for a link replaced by a duplicate is sent
        // before the new link is attached, so a message routed to both links
        // by another shard is never written on the old one (the peer would
        // get it twice).
        self.apply_pending_control();
        self.stats.batches_in.fetch_add(1, Relaxed);
        self.stats.progress.fetch_add(1, Relaxed);
        for r in batch {
            self.deliver_remote(r, out);
        }
        self.pass_on(out);
    }

    /// Delivers the batches other shards have already sent here before this
    /// shard handles a client's next read buffer. A publisher's PONG is
    /// written only after its read buffer's batches are in the other shards'
    /// channels, so once it has its PONG, an UNSUB or PING that a subscriber
    /// sends afterwards must not overtake those messages (nats-server queues
    /// a message to every subscriber while it handles the PUB; nats.py's
    /// drain lost messages without this). One atomic load when nothing waits.
    pub(crate) fn deliver_pending_data(self: &Rc<Self>) {
        let Some((rx, pending)) = self.inbox_rx.data.get() else {
            return;
        };
        if pending.load(std::sync::atomic::Ordering::Acquire) == 0 {
            return;
        }
        // Reused: no allocation per client read buffer. Nothing below
        // comes back here (`apply_batch` routes and passes on only).
        let mut out = self.passed_on.borrow_mut();
        while let Ok(batch) = rx.try_recv() {
            pending.fetch_sub(1, Relaxed);
            self.apply_batch(&batch, &mut out);
        }
    }

    /// Applies interest changes already sent to this shard before routing a
    /// read buffer. A subscription another shard has processed is then
    /// visible here even when this shard's inbox task has not run yet, which
    /// keeps the window in which a fresh subscription can miss a message as
    /// small as in a single-threaded server (the time to read the SUB).
    pub(crate) fn apply_pending_control(self: &Rc<Self>) {
        let Some((rx, pending)) = self.inbox_rx.control.get() else {
            return;
        };
        if pending.load(std::sync::atomic::Ordering::Acquire) == 0 {
            return;
        }
        while let Ok(msg) = rx.try_recv() {
            pending.fetch_sub(1, Relaxed);
            self.stats.progress.fetch_add(1, Relaxed);
            self.apply_control(msg);
        }
    }

    /// Returns false when the shard must stop.
    pub(super) fn apply_control(self: &Rc<Self>, msg: Control) -> bool {
        match msg {
            Control::Interest { from, event } => self.apply_interest_event(from, &event),
            Control::AttachRoute(attach) => {
                runtime::spawn_detached(link::serve(self.clone(), *attach));
            }
            Control::RouteFrame { route, frame } => {
                if let Some(link) = self.routes.borrow().get(&route.slot) {
                    let res = link.conn.queue(|b| b.extend_from_slice(&frame));
                    self.mark_dirty(&link.conn, res);
                }
                self.flush_dirty();
            }
            Control::CloseRoute { route } => {
                if let Some(link) = self.routes.borrow().get(&route.slot) {
                    link.conn.close_after_flush(CloseReason::DuplicateRoute);
                }
            }
            Control::Barrier { from, token } => self.start_sync(from, token),
            Control::BarrierDone { token } => self.barrier_done(token),
            Control::InfoChanged => self.send_info_to_clients(),
            Control::Reload(d) => self.reload(d),
            Control::Snapshot { subs, reply } => {
                let _ = reply.send(snapshot::take(self, subs));
            }
            Control::TraceReport { id, entries, more } => {
                self.trace_reported(id, entries, more);
                self.flush_soon();
            }
            Control::LameDuck => lifecycle::enter_lame_duck(self.clone()),
            Control::Wake => {}
            Control::Shutdown => {
                lifecycle::shutdown(self);
                return false;
            }
        }
        true
    }

    /// Delivers every batch already waiting in the data inbox (at shutdown,
    /// so messages other shards routed here before it are not dropped).
    pub(crate) fn drain_data(&self) {
        let Some((rx, pending)) = self.inbox_rx.data.get() else {
            return;
        };
        let mut out = Outgoing::new(self.shards);
        while let Ok(batch) = rx.try_recv() {
            pending.fetch_sub(1, Relaxed);
            for r in &batch {
                self.deliver_remote(r, &mut out);
            }
            self.pass_on(&mut out);
        }
        self.flush_dirty();
    }

    /// Delivers a message another shard sent: its plain subscribers here,
    /// and one member here of each queue group this shard was picked for.
    /// A group none of whose members here can take it is passed on (through
    /// `out`) to another member the original rules allow, never to a shard
    /// that already declined it.
    pub(super) fn deliver_remote(&self, r: &Remote, out: &mut Outgoing) {
        match &r.trace {
            None => self.deliver_remote_now(r, out),
            Some(tag) => {
                self.trace_enter(tag);
                self.deliver_remote_now(r, out);
                self.trace_report();
            }
        }
    }

    pub(super) fn deliver_remote_now(&self, r: &Remote, out: &mut Outgoing) {
        if let Some(slot) = r.route {
            self.send_to_route(slot, &r.publish, r.plain, &r.queues);
            return;
        }
        let want = Want {
            plain: r.plain,
            queues: Some(&r.queues),
        };
        self.fan_out(&r.publish, Origin::Shard(r.fallback), want, out);
    }

    /// Sends what delivering other shards' messages passed on, without
    /// waiting: an inbox task must never wait on another shard's data
    /// channel (two shards passing messages to each other could wait on each
    /// other forever). A full channel gets the batch from a task of its own.
    pub(super) fn pass_on(&self, out: &mut Outgoing) {
        for (j, batch) in out.batches.iter_mut().enumerate() {
            if batch.is_empty() {
                continue;
            }
            self.stats.batches_out.fetch_add(1, Relaxed);
            match self.peers[j].try_send_data(std::mem::take(batch)) {
                Ok(()) => {}
                Err(flume::TrySendError::Full(b)) => {
                    let peer = self.peers[j].clone();
                    runtime::spawn_detached(async move {
                        // Err: that shard has stopped.
                        let _ = peer.send_data(b).await;
                    });
                }
                // That shard has stopped (shutdown).
                Err(flume::TrySendError::Disconnected(_)) => {}
            }
        }
    }
}
