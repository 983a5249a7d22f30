//! Message tracing on the shard's path: nats-server 2.11's
//! `Nats-Trace-Dest` (the request and the event document are
//! `shoal_core::trace`).
//!
//! A traced message is routed by the same code as any other. While it is,
//! `Shard::tracing` is set and the delivery points record what they did:
//! `deliver` (a local subscription got it, or why not), `send_to_route` (a
//! route egress, with the hop header the next server needs), and every
//! batch entry for another shard carries the `TraceTag`. That shard records
//! its own deliveries and reports them to the shard the message entered on
//! (the origin), which publishes this server's one event once every report
//! is in — as nats-server publishes one event per server.
//!
//! Untraced messages pay one `Cell<bool>` load per delivery and batch entry
//! and, only when they carry headers, one substring search of the header
//! block (`shoal_core::trace::requested`).

use super::{refusal, Outgoing, RouteLink, Shard};
use crate::bus::{Control, TraceTag};
use crate::session::{Client, LocalSub};
use ahash::AHashMap;
use bytes::Bytes;
use shoal_core::auth::Via;
use shoal_core::proto::Publish;
use shoal_core::route::RouteMsg;
use shoal_core::trace::{
    self as tr, Entry, Event, Request, ServerInfo, TraceRequest, KIND_CLIENT, KIND_ROUTER,
};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::SystemTime;

/// The traced message being routed by this shard right now.
/// A shard's tracing state.
#[derive(Default)]
pub(super) struct Tracer {
    /// Whether a traced message is being routed right now: the one check
    /// the untraced path makes per delivery.
    pub on: Cell<bool>,
    /// The traced message being routed, and what happened to it so far.
    pub active: RefCell<Option<Active>>,
    /// Trace events of messages that entered here, waiting for the other
    /// shards' reports.
    pub pending: RefCell<AHashMap<u64, Pending>>,
    pub next: Cell<u64>,
}

pub(crate) struct Active {
    tag: Arc<TraceTag>,
    entries: Vec<Entry>,
    /// Batch entries sent to other shards with the tag: each is answered by
    /// one report.
    forwarded: u32,
    /// On the origin shard: where the event goes and what it describes.
    head: Option<Head>,
}

struct Head {
    /// The trace destination in the origin account's subject space.
    subject: Bytes,
    request: Request,
}

/// An event of a message that entered on this shard, waiting for reports.
pub(crate) struct Pending {
    tag: Arc<TraceTag>,
    head: Head,
    entries: Vec<Entry>,
    waiting: u32,
}

/// At most this many events wait for reports on one shard. Reports only
/// fail to come when a shard stopped (shutdown); past the bound an event is
/// published with what it has rather than held.
const MAX_PENDING: usize = 4096;

fn now() -> String {
    tr::timestamp(SystemTime::now())
}

fn account_name(c: &Client) -> String {
    c.state
        .borrow()
        .account()
        .map_or_else(|| tr::DEFAULT_ACCOUNT.to_owned(), |a| a.name.clone())
}

fn message_size(headers: Option<&Bytes>, payload: &Bytes) -> usize {
    headers.map_or(0, Bytes::len) + payload.len()
}

impl Shard {
    /// A client published a message whose headers ask for a trace: starts
    /// recording its path. Returns `Some(only)` (trace without delivering)
    /// when tracing started, `None` when the header block cannot be read.
    pub(crate) fn trace_begin_client(&self, from: &Rc<Client>, p: &Publish) -> Option<bool> {
        let req = TraceRequest::parse(p.headers.as_deref()?)?;
        let account = account_name(from);
        let prefix = from.state.borrow().prefix().to_vec();
        let ingress = Entry::Ingress {
            ts: now(),
            kind: KIND_CLIENT,
            cid: from.id,
            name: from.state.borrow().name().unwrap_or_default().to_owned(),
            acc: account.clone(),
            subj: String::from_utf8_lossy(&p.subject).into_owned(),
            error: None,
        };
        let size = message_size(p.headers.as_ref(), &p.payload);
        Some(self.trace_start(req, account, &prefix, ingress, size))
    }

    /// A message from a peer node asks for a trace: this server's event
    /// starts with the route ingress, on the hop the peer gave it. Returns
    /// whether tracing started.
    pub(crate) fn trace_begin_route(&self, link: &RouteLink, msg: &RouteMsg) -> bool {
        let Some(req) = msg.headers.as_deref().and_then(TraceRequest::parse) else {
            return false;
        };
        // With accounts, a route subject carries its account as a prefix.
        let (account, prefix_len) = match msg.subject.strip_prefix(b"$ACC:") {
            Some(rest) => match rest.iter().position(|&b| b == b'.') {
                Some(dot) => (String::from_utf8_lossy(&rest[..dot]).into_owned(), dot + 6),
                None => (tr::DEFAULT_ACCOUNT.to_owned(), 0),
            },
            None => (tr::DEFAULT_ACCOUNT.to_owned(), 0),
        };
        let ingress = Entry::Ingress {
            ts: now(),
            kind: KIND_ROUTER,
            cid: link.conn.id,
            name: link.peer.server_name.clone(),
            acc: account.clone(),
            subj: String::from_utf8_lossy(&msg.subject[prefix_len..]).into_owned(),
            error: None,
        };
        let size = message_size(msg.headers.as_ref(), &msg.payload);
        let prefix = msg.subject[..prefix_len].to_vec();
        self.trace_start(req, account, &prefix, ingress, size);
        true
    }

    fn trace_start(
        &self,
        req: TraceRequest,
        account: String,
        prefix: &[u8],
        ingress: Entry,
        msgsize: usize,
    ) -> bool {
        assert!(!self.tracer.on.get(), "trace events do not nest");
        let id = self.tracer.next.get();
        self.tracer.next.set(id + 1);
        let only = req.only;
        let tag = Arc::new(TraceTag {
            origin: self.id,
            id,
            only,
            hop: req.hop,
            hops: AtomicU32::new(0),
            account,
        });
        let subject = Bytes::from([prefix, req.dest.as_bytes()].concat());
        *self.tracer.active.borrow_mut() = Some(Active {
            tag,
            entries: vec![ingress],
            forwarded: 0,
            head: Some(Head {
                subject,
                request: Request {
                    header: req.header,
                    msgsize,
                },
            }),
        });
        self.tracer.on.set(true);
        only
    }

    /// A traced message crosses into another account (a stream export or a
    /// service import): nats-server's `se` and `si` entries. `to` is the
    /// subject in the other account's space (prefix included).
    pub(crate) fn trace_crossing(&self, via: &Via, from: &[u8], to: &[u8]) {
        let mut active = self.tracer.active.borrow_mut();
        let Some(a) = active.as_mut() else { return };
        let unprefixed = |s: &[u8]| {
            // `$ACC:<name>.` comes off: events show subjects as clients do.
            let s = match s.strip_prefix(b"$ACC:") {
                Some(rest) => rest
                    .iter()
                    .position(|&b| b == b'.')
                    .map_or(rest, |i| &rest[i + 1..]),
                None => s,
            };
            String::from_utf8_lossy(s).into_owned()
        };
        let entry = match via {
            Via::Own | Via::Reply => return,
            Via::StreamExport(acc) => Entry::StreamExport {
                ts: now(),
                acc: acc.to_string(),
                to: unprefixed(to),
            },
            Via::ServiceImport(acc) => Entry::ServiceImport {
                ts: now(),
                acc: acc.to_string(),
                from: String::from_utf8_lossy(from).into_owned(),
                to: unprefixed(to),
            },
        };
        a.entries.push(entry);
    }

    /// The publisher may not publish here: the event says so at ingress and
    /// goes out at once (nothing was routed).
    pub(crate) fn trace_refused(&self, error: String) {
        if let Some(a) = self.tracer.active.borrow_mut().as_mut() {
            if let Some(Entry::Ingress { error: e, .. }) = a.entries.first_mut() {
                *e = Some(error);
            }
        }
        self.trace_end();
    }

    /// Whether the message being traced is only traced, not delivered.
    fn trace_only(&self) -> bool {
        self.tracer
            .active
            .borrow()
            .as_ref()
            .is_some_and(|a| a.tag.only)
    }

    /// The routing of a traced message that entered here is done: its event
    /// goes out now, or once the shards it was forwarded to have reported.
    pub(crate) fn trace_end(&self) {
        self.tracer.on.set(false);
        let Some(a) = self.tracer.active.borrow_mut().take() else {
            return;
        };
        let head = a.head.expect("the origin shard holds the event head");
        if a.forwarded == 0 || self.tracer.pending.borrow().len() >= MAX_PENDING {
            self.trace_publish(&a.tag, head, a.entries);
            return;
        }
        self.tracer.pending.borrow_mut().insert(
            a.tag.id,
            Pending {
                tag: a.tag,
                head,
                entries: a.entries,
                waiting: a.forwarded,
            },
        );
    }

    /// The tag for a batch entry carrying the traced message to another
    /// shard (None when nothing is traced): that shard will report back.
    #[inline]
    pub(super) fn trace_tag(&self) -> Option<Arc<TraceTag>> {
        if !self.tracer.on.get() {
            return None;
        }
        let mut active = self.tracer.active.borrow_mut();
        let a = active.as_mut()?;
        a.forwarded += 1;
        Some(a.tag.clone())
    }

    /// Another shard's traced message arrived here: record what this shard
    /// does with it.
    pub(super) fn trace_enter(&self, tag: &Arc<TraceTag>) {
        assert!(!self.tracer.on.get(), "trace events do not nest");
        *self.tracer.active.borrow_mut() = Some(Active {
            tag: tag.clone(),
            entries: Vec::new(),
            forwarded: 0,
            head: None,
        });
        self.tracer.on.set(true);
    }

    /// Sends what this shard did with another shard's traced message to the
    /// origin shard.
    pub(super) fn trace_report(&self) {
        self.tracer.on.set(false);
        let Some(a) = self.tracer.active.borrow_mut().take() else {
            return;
        };
        let (id, origin) = (a.tag.id, a.tag.origin);
        if origin == self.id {
            // Passed back to the shard it entered on (a queue fallback).
            self.trace_reported(id, a.entries, a.forwarded);
            return;
        }
        // Err: the origin shard stopped (shutdown); its event is gone too.
        let _ = self.peers[origin as usize].send_control(Control::TraceReport {
            id,
            entries: a.entries,
            more: a.forwarded,
        });
    }

    /// One report for an event of this shard: published once none is due.
    pub(super) fn trace_reported(&self, id: u64, entries: Vec<Entry>, more: u32) {
        let done = {
            let mut traces = self.tracer.pending.borrow_mut();
            // Unknown: published early (`MAX_PENDING`).
            let Some(p) = traces.get_mut(&id) else { return };
            p.entries.extend(entries);
            let Some(left) = p.waiting.checked_sub(1) else {
                drop(traces);
                self.invariant_broken("a trace report nobody was waiting for");
                return;
            };
            p.waiting = left + more;
            if p.waiting > 0 {
                return;
            }
            traces.remove(&id)
        };
        if let Some(p) = done {
            self.trace_publish(&p.tag, p.head, p.entries);
        }
    }

    /// Records a local subscription's egress (`error`: why it did not get
    /// the message).
    pub(super) fn trace_local(&self, s: &LocalSub, error: Option<&'static str>) {
        let mut active = self.tracer.active.borrow_mut();
        let Some(a) = active.as_mut() else { return };
        let c = &s.client;
        let acc = account_name(c);
        a.entries.push(Entry::Egress {
            ts: now(),
            kind: KIND_CLIENT,
            cid: c.id,
            name: c.state.borrow().name().unwrap_or_default().to_owned(),
            hop: None,
            acc: (acc != a.tag.account).then_some(acc),
            sub: Some(String::from_utf8_lossy(&s.subject[s.prefix_len..]).into_owned()),
            queue: s
                .queue
                .as_ref()
                .map(|q| String::from_utf8_lossy(q).into_owned()),
            error: error.map(str::to_owned),
        });
    }

    /// Delivery while tracing: what happened is recorded; trace-only
    /// messages are recorded as delivered without being written.
    pub(super) fn deliver_traced(&self, s: &Rc<LocalSub>, p: &Publish) -> bool {
        if let Some(why) = refusal(s, &p.subject) {
            self.trace_local(s, Some(why));
            return false;
        }
        if self.trace_only() {
            self.trace_local(s, None);
            return true;
        }
        let ok = self.deliver_now(s, p);
        self.trace_local(s, (!ok).then_some(tr::NOT_DELIVERED_CLIENT_CLOSED));
        ok
    }

    /// A route egress of the traced message: numbered, recorded, and the
    /// copy for the link carries the hop so the next server's event can be
    /// linked to this one. Trace-only messages go too (the next server
    /// traces without delivering).
    pub(super) fn trace_route(&self, slot: u32, p: &Publish) -> Publish {
        let routes = self.routes.borrow();
        let mut active = self.tracer.active.borrow_mut();
        let (Some(link), Some(a)) = (routes.get(&slot), active.as_mut()) else {
            return p.clone();
        };
        let n = a.tag.hops.fetch_add(1, Relaxed) + 1;
        let hop = tr::hop_id(a.tag.hop.as_deref(), n);
        let headers = p
            .headers
            .as_deref()
            .and_then(|h| tr::with_hop(h, &hop))
            .or_else(|| p.headers.clone());
        a.entries.push(Entry::Egress {
            ts: now(),
            kind: KIND_ROUTER,
            cid: link.conn.id,
            name: link.peer.server_name.clone(),
            hop: Some(hop),
            acc: None,
            sub: None,
            queue: None,
            error: None,
        });
        Publish {
            subject: p.subject.clone(),
            reply: p.reply.clone(),
            headers,
            payload: p.payload.clone(),
        }
    }

    /// Publishes this server's event for a traced message, as the server
    /// (no client, nothing to echo-filter).
    fn trace_publish(&self, tag: &TraceTag, head: Head, entries: Vec<Entry>) {
        debug_assert!(!self.tracer.on.get(), "a trace event is not itself traced");
        let shared = &self.shared;
        let event = Event {
            server: ServerInfo {
                name: shared.server_name.clone(),
                host: shared.addr.ip().to_string(),
                id: shared.server_id.clone(),
                cluster: shared.config.cluster.name.clone(),
                ver: crate::NATS_VERSION.to_owned(),
                jetstream: false,
                flags: 0,
                seq: shared.trace_seq.fetch_add(1, Relaxed) + 1,
                time: now(),
            },
            request: head.request,
            hops: tag.hops.load(Relaxed),
            events: entries,
        };
        let p = Publish {
            subject: head.subject,
            reply: None,
            headers: None,
            payload: Bytes::from(event.to_json()),
        };
        let mut out = Outgoing::new(self.shards);
        self.publish(None, &p, &mut out);
        self.pass_on(&mut out);
    }
}
