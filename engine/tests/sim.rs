//! A deterministic simulator of the fan-out: N shards × M nodes in one
//! thread, driven by a seed.
//!
//! Every shard has a real `SubjectIndex` filled as the product fills it
//! (its own subscriptions, one entry per other shard's plain subject or
//! queue member, one per peer node's announced plain subject or queue
//! member, on the shard that owns the link to that node), and routes with
//! the engine's real `Router`. Messages between shards go through FIFO
//! channels (one per destination shard, as flume's); messages between
//! nodes go through the real route codec (`write_msg` → `next_frame` →
//! `decode_msg`) on one FIFO link per pair of nodes. Which channel moves
//! next is drawn from the seed, so each seed is one interleaving.
//!
//! Checked for every message, once everything is delivered:
//! - every matching plain subscription got it exactly once (the
//!   publisher's own not at all when it asked for no echo);
//! - every matching queue group got it at most once, and exactly once when
//!   one of its members could take it;
//! - it crossed at most one route link (no message makes two hops);
//! - per publisher, each plain subscription got its messages in order.
//!
//! A failure names its seed; `SHOAL_SIM_SEED=<seed>` replays that one, and
//! `SHOAL_SIM_SEEDS=<n>` runs more.

use bytes::{Bytes, BytesMut};
use shoal_core::index::SubjectIndex;
use shoal_core::route::{decode_msg, next_frame, write_msg, FrameKind, MsgFrame};
use shoal_core::subject::pattern_matches;
use shoal_engine::{Fallback, Origin, RouteId, Router, ShardId, Sink, SubHandle, Target, Want};
use std::collections::{BTreeMap, VecDeque};

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
    pattern: String,
    queue: Option<String>,
    /// False: closing, `UNSUB` max reached or a deny filter (never takes).
    takes: bool,
}

/// A message on its way between shards of one node.
#[derive(Debug, Clone)]
struct Forward {
    msg: u64,
    subject: Bytes,
    plain: bool,
    queues: Vec<Bytes>,
    /// Instead of local delivery: write it on this link of the receiver.
    route: Option<u32>,
    fallback: Fallback,
    hops: u32,
}

/// A message in flight on a route link.
#[derive(Debug, Clone)]
struct OnLink {
    bytes: BytesMut,
    /// Message ids of the frames in `bytes`, in order, with their hops.
    ids: VecDeque<(u64, u32)>,
}

struct World {
    nodes: usize,
    shards: usize,
    subs: Vec<SubSpec>,
    /// index[node][shard]
    index: Vec<Vec<SubjectIndex<Target<Sub>>>>,
    /// Inbox of each shard: FIFO, as one flume channel per shard.
    inbox: Vec<Vec<VecDeque<Forward>>>,
    /// links[(from, to)]: the route link from node `from` to node `to`.
    links: BTreeMap<(usize, usize), OnLink>,
    /// Deliveries: (message, subscription), in delivery order.
    got: Vec<(u64, usize)>,
    /// Route crossings per message.
    hops_seen: BTreeMap<u64, u32>,
    rng: fastrand::Rng,
    prefer_local: bool,
}

/// The shard of node `node` that owns its link to node `peer`.
fn link_owner(peer: usize, shards: usize) -> usize {
    peer % shards
}

impl World {
    fn new(seed: u64) -> World {
        let mut rng = fastrand::Rng::with_seed(seed);
        let nodes = rng.usize(1..=3);
        let shards = rng.usize(1..=3);
        let tokens = ["a", "b", "c"];
        let mut subs = Vec::new();
        for _ in 0..rng.usize(3..=16) {
            let depth = rng.usize(1..=3);
            let mut parts: Vec<String> = (0..depth)
                .map(|_| match rng.u8(0..10) {
                    0 => "*".to_owned(),
                    _ => tokens[rng.usize(..tokens.len())].to_owned(),
                })
                .collect();
            if rng.u8(0..6) == 0 {
                parts.push(">".into());
            }
            let node = rng.usize(..nodes);
            let shard = rng.usize(..shards);
            subs.push(SubSpec {
                node,
                shard,
                // Two connections per shard.
                conn: ((node * 8 + shard) * 2 + rng.usize(0..2)) as u64,
                pattern: parts.join("."),
                queue: match rng.u8(0..4) {
                    0 => Some("q1".into()),
                    1 => Some("q2".into()),
                    _ => None,
                },
                takes: rng.u8(0..8) != 0,
            });
        }
        let mut w = World {
            nodes,
            shards,
            subs,
            index: (0..nodes)
                .map(|_| (0..shards).map(|_| SubjectIndex::new()).collect())
                .collect(),
            inbox: (0..nodes)
                .map(|_| (0..shards).map(|_| VecDeque::new()).collect())
                .collect(),
            links: BTreeMap::new(),
            got: Vec::new(),
            hops_seen: BTreeMap::new(),
            prefer_local: rng.bool(),
            rng,
        };
        w.fill_indexes();
        w
    }

    /// The mirrors, as the product keeps them with stable membership.
    fn fill_indexes(&mut self) {
        for (i, s) in self.subs.iter().enumerate() {
            let q = s.queue.as_deref().map(str::as_bytes);
            let p = s.pattern.as_bytes();
            // Its own shard.
            self.index[s.node][s.shard]
                .insert(p, q, Target::Local(Sub(i)))
                .unwrap();
            // The other shards of its node: a queue member each, a plain
            // subject once per shard (the first subscriber announces).
            let first_plain_on_shard = s.queue.is_none()
                && !self.subs[..i].iter().any(|o| {
                    o.node == s.node
                        && o.shard == s.shard
                        && o.queue.is_none()
                        && o.pattern == s.pattern
                });
            if s.queue.is_some() || first_plain_on_shard {
                for j in (0..self.shards).filter(|&j| j != s.shard) {
                    self.index[s.node][j]
                        .insert(p, q, Target::Shard(s.shard as ShardId))
                        .unwrap();
                }
            }
            // Every other node, on all its shards, through its link to this
            // node: a queue member each, a plain subject once per node.
            let first_plain_on_node = s.queue.is_none()
                && !self.subs[..i]
                    .iter()
                    .any(|o| o.node == s.node && o.queue.is_none() && o.pattern == s.pattern);
            if s.queue.is_some() || first_plain_on_node {
                for n in (0..self.nodes).filter(|&n| n != s.node) {
                    let route = RouteId {
                        shard: link_owner(s.node, self.shards) as ShardId,
                        slot: s.node as u32,
                    };
                    for j in 0..self.shards {
                        self.index[n][j].insert(p, q, Target::Route(route)).unwrap();
                    }
                }
            }
        }
    }

    /// Routes one message on `node`/`shard` from `origin`.
    fn route(&mut self, node: usize, shard: usize, f: &Forward, origin: Origin) {
        let m = self.index[node][shard].matches(&f.subject);
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
                Dest::Shard(j) => self.inbox[node][j as usize].push_back(Forward {
                    msg: f.msg,
                    subject: f.subject.clone(),
                    plain,
                    queues,
                    route: None,
                    fallback,
                    hops: f.hops,
                }),
                Dest::Route(r) if r.shard as usize == shard => {
                    self.send_on_link(node, r.slot as usize, f, plain, &queues)
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

    /// Writes a message on the link from `node` to `peer`, in the route
    /// codec's frames.
    fn send_on_link(
        &mut self,
        node: usize,
        peer: usize,
        f: &Forward,
        plain: bool,
        queues: &[Bytes],
    ) {
        let link = self.links.entry((node, peer)).or_insert_with(|| OnLink {
            bytes: BytesMut::new(),
            ids: VecDeque::new(),
        });
        let frame = MsgFrame {
            subject: &f.subject,
            reply: None,
            headers: None,
            payload: &f.msg.to_le_bytes(),
            plain,
            queues: queues.iter().map(|q| &q[..]).collect(),
        };
        write_msg(&mut link.bytes, &frame);
        link.ids.push_back((f.msg, f.hops + 1));
    }

    /// Moves one thing, chosen by the seed. False when nothing moves.
    fn step(&mut self) -> bool {
        let mut ready: Vec<(usize, usize, bool)> = Vec::new();
        for n in 0..self.nodes {
            for j in 0..self.shards {
                if !self.inbox[n][j].is_empty() {
                    ready.push((n, j, false));
                }
            }
        }
        for (&(from, to), link) in &self.links {
            if !link.ids.is_empty() {
                ready.push((from, to, true));
            }
        }
        if ready.is_empty() {
            return false;
        }
        let (a, b, is_link) = ready[self.rng.usize(..ready.len())];
        if is_link {
            // The peer's end of the link is on the shard that owns it there.
            let link = self.links.get_mut(&(a, b)).expect("ready link");
            let frame = next_frame(&mut link.bytes, 1 << 20)
                .expect("a valid frame")
                .expect("a whole frame");
            assert_eq!(frame.kind, FrameKind::Msg);
            let (msg, hops) = link.ids.pop_front().expect("one id per frame");
            let m = decode_msg(&frame.body).expect("decodes");
            assert_eq!(
                u64::from_le_bytes(m.payload[..8].try_into().unwrap()),
                msg,
                "the link kept its order"
            );
            *self.hops_seen.entry(msg).or_default() = hops;
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
            self.route(b, receiver, &f, Origin::Route);
        } else {
            let f = self.inbox[a][b].pop_front().expect("ready inbox");
            match f.route {
                Some(peer) => {
                    let queues = f.queues.clone();
                    self.send_on_link(a, peer as usize, &f, f.plain, &queues)
                }
                None => self.route(a, b, &f, Origin::Shard(f.fallback)),
            }
        }
        true
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
        if !s.takes {
            return false;
        }
        self.world.got.push((self.msg, sub.0));
        true
    }

    fn can_take(&self, sub: &Sub) -> bool {
        self.world.subs[sub.0].takes
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
    subject: String,
}

fn run(seed: u64) -> Result<(String, usize), String> {
    let mut w = World::new(seed);
    let tokens = ["a", "b", "c"];
    let mut published = Vec::new();
    let count = w.rng.usize(1..=40);
    for id in 0..count as u64 {
        let node = w.rng.usize(..w.nodes);
        let shard = w.rng.usize(..w.shards);
        let conn = ((node * 8 + shard) * 2 + w.rng.usize(0..2)) as u64;
        let depth = w.rng.usize(1..=3);
        let subject: Vec<&str> = (0..depth)
            .map(|_| tokens[w.rng.usize(..tokens.len())])
            .collect();
        let subject = subject.join(".");
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
            subject: Bytes::from(subject),
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
        // Interleave: a few steps of whatever is in flight.
        for _ in 0..w.rng.usize(0..4) {
            w.step();
        }
    }
    let mut steps = 0;
    while w.step() {
        steps += 1;
        if steps > 100_000 {
            return Err(format!("seed {seed}: no quiescence after 100000 steps"));
        }
    }
    check(&w, &published).map_err(|e| {
        format!(
            "seed {seed} ({} nodes × {} shards, prefer_local {}): {e}\nsubs: {:#?}",
            w.nodes, w.shards, w.prefer_local, w.subs
        )
    })?;
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

fn check(w: &World, published: &[Published]) -> Result<(), String> {
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
        let matching = |s: &SubSpec| pattern_matches(s.pattern.as_bytes(), p.subject.as_bytes());
        for (i, s) in w.subs.iter().enumerate() {
            let n = got.iter().filter(|&&g| g == i).count();
            if !matching(s) {
                if n != 0 {
                    return Err(format!(
                        "message {} on {:?} reached non-matching sub {i}",
                        p.id, p.subject
                    ));
                }
                continue;
            }
            if s.queue.is_none() {
                let own = p.no_echo && s.conn == p.conn && s.node == p.node;
                let want = usize::from(s.takes && !own);
                if n != want {
                    return Err(format!(
                        "message {} on {:?}: plain sub {i} got it {n} times, expected {want}",
                        p.id, p.subject
                    ));
                }
            }
        }
        for q in ["q1", "q2"] {
            let members: Vec<usize> = (0..w.subs.len())
                .filter(|&i| w.subs[i].queue.as_deref() == Some(q) && matching(&w.subs[i]))
                .collect();
            let n = got.iter().filter(|g| members.contains(g)).count();
            let own = |i: usize| {
                let s = &w.subs[i];
                p.no_echo && s.conn == p.conn && s.node == p.node
            };
            // Stable: every member can take messages. (A member that cannot
            // may be picked across a route, where the one-hop rule lets the
            // message go no further: at most once then, as nats-server.)
            let stable = members.iter().all(|&i| w.subs[i].takes);
            let able = members.iter().any(|&i| !own(i));
            if n > 1 {
                return Err(format!(
                    "message {} on {:?}: group {q} got it {n} times",
                    p.id, p.subject
                ));
            }
            if stable && able && n == 0 {
                return Err(format!(
                    "message {} on {:?}: group {q}'s members are stable, none got it",
                    p.id, p.subject
                ));
            }
            if got.iter().any(|&g| members.contains(&g) && own(g)) {
                return Err(format!(
                    "message {}: the no-echo publisher got it through {q}",
                    p.id
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
            let key = (p.node, p.conn);
            if let Some(prev) = last.insert(key, *m) {
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

#[test]
fn fan_out_over_shards_and_nodes_keeps_its_promises() {
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
            Err(e) => {
                panic!("{e}\nreplay: SHOAL_SIM_SEED={seed} cargo test -p shoal-engine --test sim")
            }
        }
    }
    eprintln!(
        "simulator: {seeds} seeds in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(deliveries > 0);
}
