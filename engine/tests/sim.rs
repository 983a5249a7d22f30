//! A deterministic simulator of the broker's decisions: N shards × M nodes
//! in one thread, driven by a seed.
//!
//! Every shard is the engine's real `Interest` (index, refcounts, node
//! interest) and routes with the real `Router`. Between shards of a node:
//! FIFO control channels (interest deltas) and FIFO data inboxes (messages),
//! one each per destination shard, as the glue's flume channels. Between
//! nodes: one link per ordered pair of nodes, owned at each end by one
//! shard, carrying the real route codec's frames (`write_interest` /
//! `write_msg` → `next_frame` → `decode_*`). Which channel or link moves
//! next is drawn from the seed, so each seed is one interleaving.
//!
//! A run has two phases:
//! 1. interest: subscriptions come and go on random shards, links drop and
//!    come back (the peer's interest removed everywhere, the snapshot sent
//!    again), interleaved with deliveries of what is in flight; once
//!    everything is delivered, **every shard's mirror of every other shard
//!    and of every route is exact** (an entry per plain subject a shard or
//!    node holds, one per queue member; nothing that no client holds);
//! 2. messages: published from random connections, delivered to
//!    quiescence; then **every matching plain subscription got each
//!    message exactly once** (never the no-echo publisher's own), **each
//!    queue group at most once, exactly once when all its members can take
//!    it**, **no message crossed two links**, and **per publisher, each
//!    plain subscription got its messages in order**.
//!
//! A failure names its seed; `SHOAL_SIM_SEED=<seed>` replays that one and
//! `SHOAL_SIM_SEEDS=<n>` runs more.

use bytes::{Bytes, BytesMut};
use shoal_core::route::{
    decode_interest, decode_msg, next_frame, write_empty, write_interest, write_msg, FrameKind,
    InterestBatch, InterestOp, MsgFrame,
};
use shoal_core::subject::pattern_matches;
use shoal_engine::{
    Fallback, Interest, KeepAlive, Learned, Origin, Outbox, Peer, RouteId, Router, ShardEvent,
    ShardId, Sink, SubHandle, Tick, Want,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// The virtual clock's keep-alive period (ms) and `ping_max`.
const PING_INTERVAL_MS: u64 = 2_000;
const PING_MAX: u32 = 2;

/// A subscription in the simulated world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sub(usize);

impl SubHandle for Sub {
    fn identity(&self) -> usize {
        self.0
    }
}

#[derive(Debug, Clone)]
struct SubSpec {
    node: usize,
    shard: usize,
    conn: u64,
    pattern: Bytes,
    queue: Option<Bytes>,
    /// False: closing, `UNSUB` max reached or a deny filter (never takes).
    takes: bool,
    live: bool,
    /// `UNSUB <sid> <max>`: it ends itself after this many deliveries
    /// (the engine call happens during the fan-out, as in the glue).
    max: Option<u64>,
    delivered: u64,
    /// Ended by reaching `max` (its deliveries before that count).
    ended_at_max: bool,
}

/// An interest event on a shard's control channel, from shard `from`.
#[derive(Debug, Clone)]
struct Ctl {
    from: ShardId,
    event: ShardEvent,
}

/// A message on its way between shards of one node.
#[derive(Debug, Clone)]
struct Forward {
    msg: u64,
    subject: Bytes,
    plain: bool,
    queues: Vec<Bytes>,
    /// Instead of local delivery: write it on this shard's link to node
    /// `route`.
    route: Option<u32>,
    fallback: Fallback,
    hops: u32,
}

/// One direction of a link between two nodes.
#[derive(Debug, Default)]
struct Link {
    bytes: BytesMut,
    /// Per message frame in `bytes`, in order: its id and hops.
    msgs: VecDeque<(u64, u32)>,
    frames: usize,
}

struct World {
    seed: u64,
    /// Record everything that moves (`moved`), for the replay test.
    recording: bool,
    moved: Vec<String>,
    nodes: usize,
    shards: usize,
    subs: Vec<SubSpec>,
    /// interest[node][shard]
    interest: Vec<Vec<Interest<Sub>>>,
    control: Vec<Vec<VecDeque<Ctl>>>,
    inbox: Vec<Vec<VecDeque<Forward>>>,
    /// links[(from, to)]
    links: BTreeMap<(usize, usize), Link>,
    /// What node `n` learned from node `p` on its link (the engine's
    /// `Learned`, as the receiving owner's `RouteLink` holds it).
    learned: BTreeMap<(usize, usize), Learned>,
    got: Vec<(u64, usize)>,
    hops_seen: BTreeMap<u64, u32>,
    rng: fastrand::Rng,
    prefer_local: bool,
    log: Vec<String>,
    /// The virtual clock (ms): only keep-alive ticks advance it.
    clock: u64,
    /// Each link end's keep-alive (the engine's rule), by (node, peer).
    keepalive: BTreeMap<(usize, usize), KeepAlive>,
    /// Node pairs (lower first) whose link is partitioned: nothing moves
    /// either way until keep-alive finds it stale and it reconnects.
    cut: BTreeSet<(usize, usize)>,
}

/// The shard of a node that owns its link to node `peer`.
fn link_owner(peer: usize, shards: usize) -> usize {
    peer % shards
}

fn tokens(rng: &mut fastrand::Rng, wild: bool) -> Bytes {
    let words = ["a", "b", "c"];
    let depth = rng.usize(1..=3);
    let mut parts: Vec<&str> = (0..depth)
        .map(|_| {
            if wild && rng.u8(0..10) == 0 {
                "*"
            } else {
                words[rng.usize(..words.len())]
            }
        })
        .collect();
    if wild && rng.u8(0..6) == 0 {
        parts.push(">");
    }
    Bytes::from(parts.join("."))
}

impl World {
    fn new(seed: u64) -> World {
        let rng = fastrand::Rng::with_seed(seed);
        let mut w = World {
            seed,
            recording: false,
            moved: Vec::new(),
            nodes: 0,
            shards: 0,
            subs: Vec::new(),
            interest: Vec::new(),
            control: Vec::new(),
            inbox: Vec::new(),
            links: BTreeMap::new(),
            learned: BTreeMap::new(),
            got: Vec::new(),
            hops_seen: BTreeMap::new(),
            prefer_local: false,
            rng,
            log: Vec::new(),
            clock: 0,
            keepalive: BTreeMap::new(),
            cut: BTreeSet::new(),
        };
        w.nodes = w.rng.usize(1..=3);
        w.shards = w.rng.usize(1..=3);
        w.prefer_local = w.rng.bool();
        let clustered = w.nodes > 1;
        w.interest = (0..w.nodes)
            .map(|_| {
                (0..w.shards)
                    .map(|j| Interest::new(j as ShardId, w.shards, clustered))
                    .collect()
            })
            .collect();
        w.control = (0..w.nodes)
            .map(|_| (0..w.shards).map(|_| VecDeque::new()).collect())
            .collect();
        w.inbox = (0..w.nodes)
            .map(|_| (0..w.shards).map(|_| VecDeque::new()).collect())
            .collect();
        for a in 0..w.nodes {
            for b in (0..w.nodes).filter(|&b| b != a) {
                w.links.insert((a, b), Link::default());
                w.learned.insert((a, b), Learned::default());
                w.keepalive.insert((a, b), KeepAlive::default());
            }
        }
        w
    }

    // ----- interest: the engine's calls; the transport is the simulator's -----

    fn subscribe(&mut self) {
        let node = self.rng.usize(..self.nodes);
        let shard = self.rng.usize(..self.shards);
        let spec = SubSpec {
            node,
            shard,
            conn: ((node * 8 + shard) * 2 + self.rng.usize(0..2)) as u64,
            pattern: tokens(&mut self.rng, true),
            queue: match self.rng.u8(0..4) {
                0 => Some(Bytes::from_static(b"q1")),
                1 => Some(Bytes::from_static(b"q2")),
                _ => None,
            },
            takes: self.rng.u8(0..8) != 0,
            live: true,
            max: (self.rng.u8(0..6) == 0).then(|| self.rng.u64(1..=3)),
            delivered: 0,
            ended_at_max: false,
        };
        let id = self.subs.len();
        self.log.push(format!(
            "sub {id} on {node}/{shard} {:?} {:?}",
            spec.pattern, spec.queue
        ));
        let mut out = Outbox::default();
        self.interest[node][shard]
            .subscribe(&spec.pattern, spec.queue.as_ref(), Sub(id), &mut out)
            .expect("a valid pattern");
        self.subs.push(spec);
        self.carry_out(node, shard, out);
    }

    fn unsubscribe(&mut self) {
        let live: Vec<usize> = (0..self.subs.len())
            .filter(|&i| self.subs[i].live)
            .collect();
        if live.is_empty() {
            return;
        }
        let id = live[self.rng.usize(..live.len())];
        self.log.push(format!("unsub {id}"));
        self.end_subscription(id);
    }

    /// `Shard::unsubscribe`: subscription `id` leaves its shard's index.
    fn end_subscription(&mut self, id: usize) {
        let s = self.subs[id].clone();
        self.subs[id].live = false;
        let mut out = Outbox::default();
        let was = self.interest[s.node][s.shard]
            .unsubscribe(&s.pattern, s.queue.as_ref(), &Sub(id), &mut out)
            .expect("no impossible state");
        assert!(was, "it was in the index");
        self.carry_out(s.node, s.shard, out);
    }

    /// A connection closes: every subscription it still holds goes, in
    /// one go (as the glue's cleanup unsubscribes them one after another).
    fn close_connection(&mut self) {
        let live: Vec<usize> = (0..self.subs.len())
            .filter(|&i| self.subs[i].live)
            .collect();
        if live.is_empty() {
            return;
        }
        let s = &self.subs[live[self.rng.usize(..live.len())]];
        let (node, conn) = (s.node, s.conn);
        self.log.push(format!("close conn {conn} on node {node}"));
        for id in live {
            if self.subs[id].node == node && self.subs[id].conn == conn {
                self.end_subscription(id);
            }
        }
    }

    /// The link between `a` and `b` stops carrying anything (a network
    /// partition: no FIN, so only keep-alive can notice).
    fn partition(&mut self, a: usize, b: usize) {
        self.log.push(format!("partition {a}-{b}"));
        self.cut.insert((a.min(b), a.max(b)));
    }

    fn is_cut(&self, a: usize, b: usize) -> bool {
        self.cut.contains(&(a.min(b), a.max(b)))
    }

    /// The virtual clock moves one keep-alive period: every link end's
    /// owner asks the engine's `KeepAlive`; a PING frame goes on the link,
    /// or, with `PING_MAX` unanswered, the link is stale: it closes and
    /// reconnects (`bounce_link`), which also ends its partition.
    fn tick(&mut self) {
        self.clock += PING_INTERVAL_MS;
        let ends: Vec<(usize, usize)> = self.keepalive.keys().copied().collect();
        for (n, p) in ends {
            let Some(k) = self.keepalive.get_mut(&(n, p)) else {
                continue;
            };
            match k.tick(PING_MAX) {
                Tick::Ping => {
                    let link = self.links.get_mut(&(n, p)).expect("a link");
                    write_empty(&mut link.bytes, FrameKind::Ping);
                    link.frames += 1;
                }
                Tick::Stale => {
                    self.log
                        .push(format!("t={} ms: link {n}-{p} stale", self.clock));
                    self.cut.remove(&(n.min(p), n.max(p)));
                    self.bounce_link(n, p);
                }
            }
        }
    }

    /// `Shard::carry_out`: the links this shard owns, then the other
    /// shards' control channels.
    fn carry_out(&mut self, node: usize, shard: usize, out: Outbox) {
        for op in out.to_links {
            self.tell_links(node, shard, op);
        }
        for event in out.to_shards {
            for j in (0..self.shards).filter(|&j| j != shard) {
                self.control[node][j].push_back(Ctl {
                    from: shard as ShardId,
                    event: event.clone(),
                });
            }
        }
    }

    /// An interest op on every link `shard` of `node` owns.
    fn tell_links(&mut self, node: usize, shard: usize, op: InterestOp) {
        for peer in (0..self.nodes).filter(|&p| p != node) {
            if link_owner(peer, self.shards) == shard {
                let link = self.links.get_mut(&(node, peer)).expect("a link");
                write_interest(
                    &mut link.bytes,
                    &InterestBatch {
                        ops: vec![op.clone()],
                    },
                );
                link.frames += 1;
            }
        }
    }

    fn apply_control(&mut self, node: usize, shard: usize, c: Ctl) {
        if self.recording {
            self.moved.push(format!("{node}/{shard} applies {c:?}"));
        }
        let mut out = Outbox::default();
        self.interest[node][shard]
            .apply_event(c.from, &c.event, &mut out)
            .unwrap_or_else(|b| panic!("{}: {c:?} on {node}/{shard}", b.0));
        assert!(
            out.to_shards.is_empty(),
            "an applied event is not passed on"
        );
        self.carry_out(node, shard, out);
    }

    /// `Shard::route_interest` on the owner of `node`'s link to `peer`.
    fn route_interest(&mut self, node: usize, peer: usize, op: InterestOp) {
        let owner = link_owner(peer, self.shards);
        let route = RouteId {
            shard: owner as ShardId,
            slot: peer as u32,
        };
        let mut out = Outbox::default();
        let learned = self.learned.get_mut(&(node, peer)).expect("learned");
        self.interest[node][owner]
            .route_announced(route, learned, op, &mut out)
            .unwrap_or_else(|b| panic!("{} on {node}/{owner}", b.0));
        assert!(out.to_links.is_empty(), "route interest is never sent on");
        self.carry_out(node, owner, out);
    }

    /// The link between `a` and `b` drops (what is in flight is lost; each
    /// end removes what it learned from the other, everywhere) and comes
    /// back (each end's owner sends its node's snapshot first).
    fn bounce_link(&mut self, a: usize, b: usize) {
        self.log.push(format!("bounce {a}-{b}"));
        for (n, p) in [(a, b), (b, a)] {
            self.keepalive.insert((n, p), KeepAlive::default());
            *self.links.get_mut(&(p, n)).expect("a link") = Link::default();
            let owner = link_owner(p, self.shards);
            let route = RouteId {
                shard: owner as ShardId,
                slot: p as u32,
            };
            let mut out = Outbox::default();
            let learned = self.learned.get_mut(&(n, p)).expect("learned");
            self.interest[n][owner]
                .route_down(route, learned, &mut out)
                .unwrap_or_else(|b| panic!("{} on {n}/{owner}", b.0));
            self.carry_out(n, owner, out);
        }
        for (n, p) in [(a, b), (b, a)] {
            let owner = link_owner(p, self.shards);
            let ops = self.interest[n][owner].node_snapshot();
            let link = self.links.get_mut(&(n, p)).expect("a link");
            if !ops.is_empty() {
                write_interest(&mut link.bytes, &InterestBatch { ops });
                link.frames += 1;
            }
        }
    }

    // ----- messages -----

    /// Routes one message on `node`/`shard` from `origin`.
    fn route(&mut self, node: usize, shard: usize, f: &Forward, origin: Origin) {
        let m = self.interest[node][shard].matches(&f.subject);
        let router = Router {
            shard: shard as ShardId,
            prefer_local: self.prefer_local,
        };
        let want = match origin {
            Origin::Client { .. } => Want::ALL,
            _ => Want {
                plain: f.plain,
                queues: Some(&f.queues),
            },
        };
        let draws = std::cell::RefCell::new(fastrand::Rng::with_seed(self.rng.u64(..)));
        let mut sink = SimSink {
            world: self,
            node,
            msg: f.msg,
            sends: Vec::new(),
            draws,
        };
        router.route(&m, origin, want, &mut sink);
        let sends = std::mem::take(&mut sink.sends);
        let fallback = origin.forward_fallback(shard as ShardId);
        // One send per destination, as the glue gathers them.
        let mut by_dest: BTreeMap<Dest, (bool, Vec<Bytes>)> = BTreeMap::new();
        for (dest, plain, queue) in sends {
            let e = by_dest.entry(dest).or_default();
            e.0 |= plain;
            e.1.extend(queue);
        }
        for (dest, (plain, queues)) in by_dest {
            match dest {
                Dest::Shard(j) => {
                    assert_ne!(j as usize, shard, "a shard forwards to itself");
                    self.inbox[node][j as usize].push_back(Forward {
                        msg: f.msg,
                        subject: f.subject.clone(),
                        plain,
                        queues,
                        route: None,
                        fallback,
                        hops: f.hops,
                    })
                }
                Dest::Route(r) if r.shard as usize == shard => {
                    self.send_msg(node, r.slot as usize, f, plain, &queues)
                }
                Dest::Route(r) => self.inbox[node][r.shard as usize].push_back(Forward {
                    msg: f.msg,
                    subject: f.subject.clone(),
                    plain,
                    queues,
                    route: Some(r.slot),
                    fallback: Fallback::default(),
                    hops: f.hops,
                }),
            }
        }
    }

    fn send_msg(&mut self, node: usize, peer: usize, f: &Forward, plain: bool, queues: &[Bytes]) {
        let link = self.links.get_mut(&(node, peer)).expect("a link");
        let frame = MsgFrame {
            subject: &f.subject,
            reply: None,
            headers: None,
            payload: &f.msg.to_le_bytes(),
            plain,
            queues: queues.iter().map(|q| &q[..]).collect(),
        };
        write_msg(&mut link.bytes, &frame);
        link.frames += 1;
        link.msgs.push_back((f.msg, f.hops + 1));
    }

    /// Moves one thing, chosen by the seed: a control event, a data batch
    /// entry, or a frame on a link. False when nothing moves.
    fn step(&mut self) -> bool {
        #[derive(Clone, Copy)]
        enum Ready {
            Control(usize, usize),
            Data(usize, usize),
            Link(usize, usize),
        }
        let mut ready = Vec::new();
        for n in 0..self.nodes {
            for j in 0..self.shards {
                if !self.control[n][j].is_empty() {
                    ready.push(Ready::Control(n, j));
                }
                if !self.inbox[n][j].is_empty() {
                    ready.push(Ready::Data(n, j));
                }
            }
        }
        for (&(a, b), link) in &self.links {
            if link.frames > 0 && !self.is_cut(a, b) {
                ready.push(Ready::Link(a, b));
            }
        }
        if ready.is_empty() {
            return false;
        }
        match ready[self.rng.usize(..ready.len())] {
            Ready::Control(n, j) => {
                let c = self.control[n][j].pop_front().expect("ready");
                self.apply_control(n, j, c);
            }
            Ready::Data(n, j) => {
                // The call contract: interest already sent to a shard is
                // applied before it routes data.
                while let Some(c) = self.control[n][j].pop_front() {
                    self.apply_control(n, j, c);
                }
                let f = self.inbox[n][j].pop_front().expect("ready");
                match f.route {
                    Some(peer) => {
                        let queues = f.queues.clone();
                        self.send_msg(n, peer as usize, &f, f.plain, &queues)
                    }
                    None => self.route(n, j, &f, Origin::Shard(f.fallback)),
                }
            }
            Ready::Link(a, b) => {
                let link = self.links.get_mut(&(a, b)).expect("ready");
                let frame = next_frame(&mut link.bytes, 1 << 20)
                    .expect("a valid frame")
                    .expect("a whole frame");
                link.frames -= 1;
                if self.recording {
                    self.moved
                        .push(format!("{a}->{b} {:?} {:?}", frame.kind, &frame.body[..]));
                }
                match frame.kind {
                    FrameKind::Interest => {
                        let batch = decode_interest(&frame.body).expect("decodes");
                        for op in batch.ops {
                            self.route_interest(b, a, op);
                        }
                    }
                    FrameKind::Msg => {
                        let (msg, hops) = link.msgs.pop_front().expect("one id per frame");
                        let m = decode_msg(&frame.body).expect("decodes");
                        assert_eq!(
                            u64::from_le_bytes(m.payload[..8].try_into().unwrap()),
                            msg,
                            "the link kept its order"
                        );
                        let h = self.hops_seen.entry(msg).or_default();
                        *h = (*h).max(hops);
                        let f = Forward {
                            msg,
                            subject: m.subject,
                            plain: m.plain,
                            queues: m.queues,
                            route: None,
                            fallback: Fallback::default(),
                            hops,
                        };
                        let receiver = link_owner(a, self.shards);
                        // Interest first, as on any shard.
                        while let Some(c) = self.control[b][receiver].pop_front() {
                            self.apply_control(b, receiver, c);
                        }
                        self.route(b, receiver, &f, Origin::Route);
                    }
                    FrameKind::Ping => {
                        let back = self.links.get_mut(&(b, a)).expect("a link");
                        write_empty(&mut back.bytes, FrameKind::Pong);
                        back.frames += 1;
                    }
                    FrameKind::Pong => {
                        self.keepalive.get_mut(&(b, a)).expect("an end").pong();
                    }
                    other => panic!("unexpected frame {other:?}"),
                }
            }
        }
        true
    }

    /// Every checker that holds at every step: each shard's
    /// `check_invariants`, and the mirrors counting what is in flight.
    fn check_now(&self) -> Result<(), String> {
        self.check_invariants()?;
        self.check_mirrors_in_flight()
    }

    /// One step, then every checker.
    fn checked_step(&mut self) -> Result<bool, String> {
        let moved = self.step();
        self.check_now()?;
        Ok(moved)
    }

    /// Steps (each checked) until nothing moves.
    fn quiesce(&mut self) -> Result<(), String> {
        let mut steps = 0;
        while self.checked_step()? {
            steps += 1;
            if steps > 1_000_000 {
                return Err("no quiescence after 1,000,000 steps".into());
            }
        }
        Ok(())
    }

    /// Every shard's `check_invariants`: after every event and step.
    fn check_invariants(&self) -> Result<(), String> {
        for n in 0..self.nodes {
            for j in 0..self.shards {
                self.interest[n][j]
                    .check_invariants()
                    .map_err(|b| format!("node {n} shard {j}: {}", b.0))?;
            }
        }
        Ok(())
    }

    /// The distinct (pattern, queue) keys ever subscribed.
    fn keys(&self) -> Vec<(Bytes, Option<Bytes>)> {
        let mut keys: Vec<(Bytes, Option<Bytes>)> = self
            .subs
            .iter()
            .map(|s| (s.pattern.clone(), s.queue.clone()))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Live subscriptions of (p, q) that `on` selects, as a mirror counts
    /// them: a plain subject once, every queue member.
    fn held(&self, on: impl Fn(&SubSpec) -> bool, p: &Bytes, q: &Option<Bytes>) -> usize {
        let members = self
            .subs
            .iter()
            .filter(|s| s.live && on(s) && s.pattern == *p && s.queue == *q)
            .count();
        if q.is_none() {
            members.min(1)
        } else {
            members
        }
    }

    /// The mirrors are exact at every step, counting what is in flight:
    /// - shard j's mirror of shard k, plus k's events still in j's
    ///   control channel, is what k's clients hold;
    /// - every shard's mirror of a route, plus the owner's deltas still in
    ///   its control channel, is what the owner learned from the peer;
    /// - what the owner learned, plus the announcements still on the link,
    ///   is what the peer's owning shard holds as its node's interest (which
    ///   `check_invariants` ties to that node's shards and their applied
    ///   events).
    ///
    /// So nothing is ever announced that no client holds, except what is
    /// on its way to being retracted.
    fn check_mirrors_in_flight(&self) -> Result<(), String> {
        let keys = self.keys();
        for n in 0..self.nodes {
            for j in 0..self.shards {
                let i = &self.interest[n][j];
                for (p, q) in &keys {
                    for k in (0..self.shards).filter(|&k| k != j) {
                        let pending: i64 = self.control[n][j]
                            .iter()
                            .filter(|c| c.from as usize == k)
                            .map(|c| match &c.event {
                                ShardEvent::Interest {
                                    subject,
                                    queue,
                                    add,
                                } if subject == p && queue == q => {
                                    if *add {
                                        1
                                    } else {
                                        -1
                                    }
                                }
                                _ => 0,
                            })
                            .sum();
                        let got = i.count_for(Peer::Shard(k as ShardId), p, q.as_deref()) as i64;
                        let want = self.held(|s| s.node == n && s.shard == k, p, q) as i64;
                        if got + pending != want {
                            return Err(format!(
                                "node {n} shard {j} mirrors shard {k} for {p:?} {q:?}: {got} entries and {pending} in flight, expected {want}"
                            ));
                        }
                    }
                    for peer in (0..self.nodes).filter(|&x| x != n) {
                        let owner = link_owner(peer, self.shards);
                        let route = RouteId {
                            shard: owner as ShardId,
                            slot: peer as u32,
                        };
                        let learned = &self.learned[&(n, peer)];
                        let pending: i64 = if j == owner {
                            0
                        } else {
                            self.control[n][j]
                                .iter()
                                .filter(|c| c.from as usize == owner)
                                .map(|c| match &c.event {
                                    ShardEvent::RouteDelta { route: r, delta }
                                        if *r == route
                                            && delta.subject == p
                                            && delta.queue == *q =>
                                    {
                                        delta.delta as i64
                                    }
                                    ShardEvent::RouteDown { route: r, removals } if *r == route => {
                                        removals
                                            .iter()
                                            .filter(|d| d.subject == p && d.queue == *q)
                                            .map(|d| d.delta as i64)
                                            .sum()
                                    }
                                    _ => 0,
                                })
                                .sum()
                        };
                        let got = i.count_for(Peer::Route(route), p, q.as_deref()) as i64;
                        let want = learned.weight(p, q.as_deref()) as i64;
                        if got + pending != want {
                            return Err(format!(
                                "node {n} shard {j} mirrors node {peer} for {p:?} {q:?}: {got} entries and {pending} in flight, its link's owner learned {want}"
                            ));
                        }
                    }
                }
            }
            // What each link's owner learned, with the link's contents
            // applied, is what the peer's owning shard announces.
            for peer in (0..self.nodes).filter(|&x| x != n) {
                let mut learned = self.learned[&(n, peer)].clone();
                let mut wire = self.links[&(peer, n)].bytes.clone();
                while let Some(frame) = next_frame(&mut wire, 1 << 20).expect("a valid frame") {
                    if frame.kind == FrameKind::Interest {
                        for op in decode_interest(&frame.body).expect("decodes").ops {
                            learned.apply(op);
                        }
                    }
                }
                let announced = self.interest[peer][link_owner(n, self.shards)].node_snapshot();
                for (p, q) in &keys {
                    let want = announced
                        .iter()
                        .find(|op| op.subject == p[..] && op.queue.as_deref() == q.as_deref())
                        .map_or(0, |op| {
                            if q.is_none() {
                                op.weight.min(1)
                            } else {
                                op.weight
                            }
                        });
                    let got = learned.weight(p, q.as_deref());
                    if got != want {
                        return Err(format!(
                            "node {n} learned {got} from node {peer} for {p:?} {q:?} (link included), which announces {want}"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Every shard's mirror of every other shard and route is exact (at
    /// quiescence: nothing in flight).
    fn check_mirrors(&self) -> Result<(), String> {
        for n in 0..self.nodes {
            for j in 0..self.shards {
                let i = &self.interest[n][j];
                for (p, q) in &self.keys() {
                    for k in (0..self.shards).filter(|&k| k != j) {
                        let want = self.held(|s| s.node == n && s.shard == k, p, q);
                        let got = i.count_for(Peer::Shard(k as ShardId), p, q.as_deref());
                        if got != want {
                            return Err(format!(
                                "node {n} shard {j} mirrors shard {k} for {p:?} {q:?}: {got} entries, expected {want}"
                            ));
                        }
                    }
                    for peer in (0..self.nodes).filter(|&x| x != n) {
                        let route = RouteId {
                            shard: link_owner(peer, self.shards) as ShardId,
                            slot: peer as u32,
                        };
                        let want = self.held(|s| s.node == peer, p, q);
                        let got = i.count_for(Peer::Route(route), p, q.as_deref());
                        if got != want {
                            return Err(format!(
                                "node {n} shard {j} mirrors node {peer} for {p:?} {q:?}: {got} entries, expected {want}"
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Dest {
    Shard(ShardId),
    Route(RouteId),
}

struct SimSink<'w> {
    world: &'w mut World,
    node: usize,
    msg: u64,
    sends: Vec<(Dest, bool, Option<Bytes>)>,
    /// The queue picks' draws, seeded from the world's RNG.
    draws: std::cell::RefCell<fastrand::Rng>,
}

impl Sink for SimSink<'_> {
    type Local = Sub;

    fn deliver(&mut self, sub: &Sub) -> bool {
        let s = &self.world.subs[sub.0];
        assert_eq!(s.node, self.node, "a local sub of another node");
        assert!(s.live, "a delivery to a subscription that ended");
        if !s.takes {
            return false;
        }
        self.world.got.push((self.msg, sub.0));
        let s = &mut self.world.subs[sub.0];
        s.delivered += 1;
        if s.max == Some(s.delivered) {
            // `Shard::deliver_now`: the index changes while the fan-out
            // runs (on its snapshot of the matches).
            s.ended_at_max = true;
            self.world
                .log
                .push(format!("sub {} reached its max", sub.0));
            self.world.end_subscription(sub.0);
        }
        true
    }

    fn can_take(&self, sub: &Sub) -> bool {
        let s = &self.world.subs[sub.0];
        s.takes && s.live
    }

    fn connection(&self, sub: &Sub) -> u64 {
        self.world.subs[sub.0].conn
    }

    fn skipped_echo(&mut self, _sub: &Sub) {}

    fn to_shard(&mut self, shard: ShardId, plain: bool, queue: Option<&Bytes>) {
        self.sends.push((Dest::Shard(shard), plain, queue.cloned()));
    }

    fn to_route(&mut self, route: RouteId, plain: bool, queue: Option<&Bytes>) {
        self.sends.push((Dest::Route(route), plain, queue.cloned()));
    }

    fn draw(&self, n: u64) -> u64 {
        self.draws.borrow_mut().u64(..n)
    }
}

/// One published message, for the checkers.
struct Published {
    id: u64,
    node: usize,
    conn: u64,
    no_echo: bool,
    subject: Bytes,
}

fn run(seed: u64) -> Result<(String, usize), String> {
    run_world(&mut World::new(seed))
}

/// One seed's run on a fresh world: the phases and every check.
fn run_world(w: &mut World) -> Result<(String, usize), String> {
    let seed = w.seed;
    let describe = |w: &World, e: String| {
        format!(
            "seed {seed} ({} nodes × {} shards, prefer_local {}): {e}\nevents: {:#?}",
            w.nodes, w.shards, w.prefer_local, w.log
        )
    };
    // Phase 1: interest comes and goes, links bounce.
    for _ in 0..w.rng.usize(2..=30) {
        let pair = |w: &mut World| {
            let a = w.rng.usize(..w.nodes);
            let b = (a + 1 + w.rng.usize(..w.nodes - 1)) % w.nodes;
            (a, b)
        };
        match w.rng.u8(0..16) {
            0..=8 => w.subscribe(),
            9..=10 => w.unsubscribe(),
            11 => w.close_connection(),
            12 | 13 => w.tick(),
            14 if w.nodes > 1 => {
                let (a, b) = pair(w);
                w.bounce_link(a, b);
            }
            15 if w.nodes > 1 => {
                let (a, b) = pair(w);
                w.partition(a, b);
            }
            _ => w.subscribe(),
        }
        w.check_now().map_err(|e| describe(w, e))?;
        for _ in 0..w.rng.usize(0..6) {
            w.checked_step().map_err(|e| describe(w, e))?;
        }
    }
    // Partitions end only when keep-alive finds the link stale: the
    // clock runs until none is left, everything in flight moving
    // meanwhile.
    let mut ticks = 0;
    loop {
        w.quiesce().map_err(|e| describe(w, e))?;
        if w.cut.is_empty() {
            break;
        }
        w.tick();
        w.check_now().map_err(|e| describe(w, e))?;
        ticks += 1;
        if ticks > u64::from(PING_MAX) + 2 {
            return Err(describe(
                w,
                format!("a partitioned link not found stale after {ticks} keep-alive periods"),
            ));
        }
    }
    w.check_mirrors().map_err(|e| describe(w, e))?;

    // Phase 2: messages.
    let mut published = Vec::new();
    for id in 0..w.rng.usize(1..=40) as u64 {
        let node = w.rng.usize(..w.nodes);
        let shard = w.rng.usize(..w.shards);
        let conn = ((node * 8 + shard) * 2 + w.rng.usize(0..2)) as u64;
        let subject = tokens(&mut w.rng, false);
        let no_echo = w.rng.u8(0..4) == 0;
        published.push(Published {
            id,
            node,
            conn,
            no_echo,
            subject: subject.clone(),
        });
        let f = Forward {
            msg: id,
            subject,
            plain: true,
            queues: Vec::new(),
            route: None,
            fallback: Fallback::default(),
            hops: 0,
        };
        let origin = Origin::Client {
            no_echo: no_echo.then_some(conn),
        };
        w.route(node, shard, &f, origin);
        w.check_now().map_err(|e| describe(w, e))?;
        for _ in 0..w.rng.usize(0..4) {
            w.checked_step().map_err(|e| describe(w, e))?;
        }
    }
    w.quiesce().map_err(|e| describe(w, e))?;
    check_deliveries(w, &published).map_err(|e| describe(w, e))?;
    // Subscriptions that reached their max are retracted everywhere.
    w.check_mirrors().map_err(|e| describe(w, e))?;
    Ok((
        format!(
            "{} nodes × {} shards, {} subs, {} messages, {} deliveries",
            w.nodes,
            w.shards,
            w.subs.len(),
            published.len(),
            w.got.len()
        ),
        w.got.len(),
    ))
}

/// What a run did, to compare two runs of one seed: its event log, every
/// control event and frame in the order they moved, every delivery.
fn trace_of(seed: u64) -> (Vec<String>, Vec<String>, Vec<(u64, usize)>) {
    let mut w = World::new(seed);
    w.recording = true;
    run_world(&mut w).unwrap_or_else(|e| panic!("{e}"));
    (w.log, w.moved, w.got)
}

fn check_deliveries(w: &World, published: &[Published]) -> Result<(), String> {
    for p in published {
        let hops = w.hops_seen.get(&p.id).copied().unwrap_or(0);
        if hops > 1 {
            return Err(format!("message {} made {hops} hops", p.id));
        }
        let got: Vec<usize> = w
            .got
            .iter()
            .filter(|(m, _)| *m == p.id)
            .map(|(_, s)| *s)
            .collect();
        let matching =
            |s: &SubSpec| (s.live || s.ended_at_max) && pattern_matches(&s.pattern, &p.subject);
        let own = |s: &SubSpec| p.no_echo && s.conn == p.conn && s.node == p.node;
        for (i, s) in w.subs.iter().enumerate() {
            let n = got.iter().filter(|&&g| g == i).count();
            if !matching(s) {
                if n != 0 {
                    return Err(format!(
                        "message {} on {:?} reached sub {i}, which does not match or has ended",
                        p.id, p.subject
                    ));
                }
                continue;
            }
            if s.max.is_some() {
                // Once per message at most, never the publisher's own; its
                // total is checked below.
                if n > usize::from(!own(s)) {
                    return Err(format!(
                        "message {} on {:?}: sub {i} with a max got it {n} times",
                        p.id, p.subject
                    ));
                }
                continue;
            }
            if s.queue.is_none() {
                let want = usize::from(s.takes && !own(s));
                if n != want {
                    return Err(format!(
                        "message {} on {:?}: plain sub {i} got it {n} times, expected {want}",
                        p.id, p.subject
                    ));
                }
            }
        }
        for q in [&b"q1"[..], b"q2"] {
            let members: Vec<usize> = (0..w.subs.len())
                .filter(|&i| w.subs[i].queue.as_deref() == Some(q) && matching(&w.subs[i]))
                .collect();
            let n = got.iter().filter(|g| members.contains(g)).count();
            // Stable: every member can take messages. (A member that cannot
            // may be picked across a route, where the one-hop rule lets the
            // message go no further: at most once then, as nats-server.)
            let stable = members
                .iter()
                .all(|&i| w.subs[i].takes && w.subs[i].max.is_none());
            let able = members.iter().any(|&i| !own(&w.subs[i]));
            if n > 1 {
                return Err(format!(
                    "message {} on {:?}: a queue group got it {n} times",
                    p.id, p.subject
                ));
            }
            if stable && able && n == 0 {
                return Err(format!(
                    "message {} on {:?}: a queue group's members are stable, none got it",
                    p.id, p.subject
                ));
            }
            if got.iter().any(|&g| members.contains(&g) && own(&w.subs[g])) {
                return Err(format!("message {}: the no-echo publisher got it", p.id));
            }
        }
    }
    // A subscription with a max never gets more than its max.
    for (i, s) in w.subs.iter().enumerate() {
        let n = w.got.iter().filter(|(_, g)| *g == i).count() as u64;
        if let Some(max) = s.max {
            if n > max {
                return Err(format!("sub {i} with max {max} got {n} messages"));
            }
            if s.ended_at_max != (n == max) {
                return Err(format!(
                    "sub {i} got {n} of its max {max}; ended at max: {}",
                    s.ended_at_max
                ));
            }
        }
    }
    // Per publisher, plain subscriptions get messages in publish order.
    for (i, s) in w.subs.iter().enumerate() {
        if s.queue.is_some() {
            continue;
        }
        let mut last: BTreeMap<(usize, u64), u64> = BTreeMap::new();
        for (m, sub) in &w.got {
            if *sub != i {
                continue;
            }
            let p = &published[*m as usize];
            if let Some(prev) = last.insert((p.node, p.conn), *m) {
                if prev > *m {
                    return Err(format!(
                        "sub {i} got message {m} after {prev} from one publisher"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A seed replays exactly: the same events, steps and deliveries, although
/// every hash map in the engine is seeded differently each time (ahash
/// draws per map), so nothing the engine sends may depend on a map's
/// iteration order.
#[test]
fn a_seed_replays_exactly() {
    for seed in 0..300 {
        let (first, second) = (trace_of(seed), trace_of(seed));
        if first != second {
            let at = first
                .1
                .iter()
                .zip(&second.1)
                .position(|(a, b)| a != b)
                .unwrap_or(first.1.len().min(second.1.len()));
            panic!(
                "seed {seed} ran twice differently; the first difference, at move {at}:\n{:?}\n{:?}",
                first.1.get(at),
                second.1.get(at)
            );
        }
    }
}

#[test]
fn shards_and_nodes_keep_every_promise() {
    if let Ok(seed) = std::env::var("SHOAL_SIM_SEED") {
        let seed: u64 = seed.parse().expect("SHOAL_SIM_SEED is a number");
        match run(seed) {
            Ok((summary, _)) => eprintln!("seed {seed}: {summary}"),
            Err(e) => panic!("{e}"),
        }
        return;
    }
    let seeds: u64 = std::env::var("SHOAL_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000);
    // The test's own run time, for the report (not the engine's clock).
    #[allow(clippy::disallowed_methods)]
    let started = std::time::Instant::now();
    let mut deliveries = 0usize;
    for seed in 0..seeds {
        match run(seed) {
            Ok((_, n)) => deliveries += n,
            Err(e) => panic!(
                "{e}\nreplay: SHOAL_SIM_SEED={seed} cargo test --release -p shoal-engine --test sim"
            ),
        }
    }
    eprintln!(
        "simulator: {seeds} seeds, {deliveries} deliveries checked, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(deliveries > 0);
}
