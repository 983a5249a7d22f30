//! Liveness: many short exchanges on fresh connections, each of which must
//! complete with no wait longer than a deadline (1 s by default). This is a
//! correctness check, not a benchmark: a server that is slow but always
//! answers passes; a server that stops answering (a shard that parked with
//! work waiting, a lost cross-core wake-up) fails, and the report says which
//! exchange stalled after how many of its messages.
//!
//! Every round opens new connections, so on a sharded server they land on
//! shards at random (SO_REUSEPORT): with two shards, about half the pairs
//! talk across shards, which is the path that used to stall.

use crate::conn::Conn;
use shoal_core::proto::{self, ServerOp};
use std::fmt;
use std::io;
use std::time::{Duration, Instant};

/// The exchanges a round runs, each on its own fresh connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Shape {
    /// One requester, one responder, sequential requests.
    RequestReply,
    /// Four requesters at once against two responders in a queue group.
    ConcurrentRequests,
    /// One publisher, one subscriber.
    PubSub,
    /// One publisher, a queue group of two: every message exactly once.
    Queue,
}

impl Shape {
    pub const ALL: [Shape; 4] = [
        Shape::RequestReply,
        Shape::ConcurrentRequests,
        Shape::PubSub,
        Shape::Queue,
    ];
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Shape::RequestReply => "request-reply",
            Shape::ConcurrentRequests => "4 concurrent requesters",
            Shape::PubSub => "pub->sub",
            Shape::Queue => "queue group",
        })
    }
}

#[derive(Debug, Clone)]
pub struct LivenessParams {
    pub url: String,
    pub rounds: u64,
    /// Messages (or requests) per exchange.
    pub msgs: u64,
    /// The longest any single wait may last.
    pub deadline: Duration,
    pub shapes: Vec<Shape>,
}

impl LivenessParams {
    pub fn new(url: &str, rounds: u64) -> Self {
        LivenessParams {
            url: url.to_owned(),
            rounds,
            msgs: 200,
            deadline: Duration::from_secs(1),
            shapes: Shape::ALL.to_vec(),
        }
    }
}

/// One exchange that did not complete.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stall {
    pub round: u64,
    pub shape: Shape,
    pub what: String,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ShapeCount {
    pub runs: u64,
    pub stalls: u64,
    /// The longest wait seen in a completed exchange, in microseconds.
    pub max_wait_us: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LivenessReport {
    /// Per shape, in `Shape::ALL` order of the shapes run.
    pub shapes: Vec<(String, ShapeCount)>,
    /// The first stalls (at most 20), for the message.
    pub stalls: Vec<Stall>,
    pub total_stalls: u64,
}

impl LivenessReport {
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for (name, c) in &self.shapes {
            s.push_str(&format!(
                "{name}: {} runs, {} stalled ({:.1} per 1,000), longest wait {:.1} ms\n",
                c.runs,
                c.stalls,
                c.stalls as f64 * 1000.0 / c.runs.max(1) as f64,
                c.max_wait_us as f64 / 1000.0
            ));
        }
        for st in &self.stalls {
            s.push_str(&format!("  round {} {}: {}\n", st.round, st.shape, st.what));
        }
        s
    }
}

/// Calls `progress` after every round.
pub fn run(p: &LivenessParams, progress: &dyn Fn()) -> io::Result<LivenessReport> {
    let mut counts: Vec<ShapeCount> = p.shapes.iter().map(|_| ShapeCount::default()).collect();
    let mut report = LivenessReport::default();
    for round in 0..p.rounds {
        for (i, shape) in p.shapes.iter().enumerate() {
            let outcome = match shape {
                Shape::RequestReply => request_reply(p, round),
                Shape::ConcurrentRequests => concurrent_requests(p, round),
                Shape::PubSub => pub_sub(p, round),
                Shape::Queue => queue(p, round),
            };
            counts[i].runs += 1;
            match outcome {
                Ok(max_wait) => {
                    counts[i].max_wait_us = counts[i].max_wait_us.max(max_wait.as_micros() as u64)
                }
                Err(Failure::Stalled(what)) => {
                    counts[i].stalls += 1;
                    report.total_stalls += 1;
                    if report.stalls.len() < 20 {
                        report.stalls.push(Stall {
                            round,
                            shape: *shape,
                            what,
                        });
                    }
                }
                Err(Failure::Io(e)) => {
                    return Err(io::Error::other(format!(
                        "round {round} {shape}: {e} (not a stall: the exchange could not be set up)"
                    )))
                }
            }
        }
        progress();
    }
    report.shapes = p
        .shapes
        .iter()
        .zip(counts)
        .map(|(s, c)| (s.to_string(), c))
        .collect();
    Ok(report)
}

/// With `--url A,B`, publishers and requesters connect to A, subscribers
/// and responders to B.
#[derive(Clone, Copy)]
enum Side {
    Sender,
    Receiver,
}

/// Payload of the messages that wait for interest to cross a route; every
/// receiver skips them.
const PROBE: &[u8] = b"probe";

/// Across two nodes a subscription reaches the other node asynchronously
/// (as with nats-server): publish probes until one arrives, so the exchange
/// measures delivery, not interest propagation. On one server the PONG of
/// the subscriber's PING already guarantees it.
fn await_interest(
    p: &LivenessParams,
    sender: &mut Conn,
    receiver: &mut Conn,
    subject: &str,
    reply: Option<&str>,
) -> Result<(), Failure> {
    let (a, b) = crate::conn::endpoints(&p.url);
    if a == b {
        return Ok(());
    }
    receiver.set_read_timeout(Duration::from_millis(20))?;
    let result = probe_until(
        &format!("interest in {subject} did not reach the other node within 5 s"),
        || {
            publish_probe(sender, subject, reply)?;
            poll_msg(receiver)
        },
    );
    receiver.set_read_timeout(p.deadline)?;
    result
}

/// Runs `step` (publish a probe, look once for a message; true when one
/// came) until a message came, for at most 5 s; `what` is the stall.
fn probe_until(what: &str, mut step: impl FnMut() -> Result<bool, Failure>) -> Result<(), Failure> {
    let start = Instant::now();
    while !step()? {
        if start.elapsed() > Duration::from_secs(5) {
            return Err(Failure::Stalled(what.to_owned()));
        }
    }
    Ok(())
}

fn publish_probe(c: &mut Conn, subject: &str, reply: Option<&str>) -> Result<(), Failure> {
    proto::write_pub(
        &mut c.wbuf,
        subject.as_bytes(),
        reply.map(str::as_bytes),
        None,
        PROBE,
    );
    Ok(c.flush()?)
}

/// Publishes one request (payload `ping`) with `inbox` as its reply subject.
fn send_request(c: &mut Conn, subject: &str, inbox: &str) -> io::Result<()> {
    proto::write_pub(
        &mut c.wbuf,
        subject.as_bytes(),
        Some(inbox.as_bytes()),
        None,
        b"ping",
    );
    c.flush()
}

/// One read (bounded by `c`'s read timeout): whether a message came.
fn poll_msg(c: &mut Conn) -> Result<bool, Failure> {
    match c.next_op() {
        Ok(ServerOp::Msg(_)) => Ok(true),
        Ok(_) => Ok(false),
        Err(e) if is_timeout(&e) => Ok(false),
        Err(e) => Err(Failure::Io(e)),
    }
}

enum Failure {
    /// A wait longer than the deadline: what was waited for, after what.
    Stalled(String),
    /// Anything else (connecting, a server error).
    Io(io::Error),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Connects with reads bounded by the deadline: a read that times out is a
/// stall. Connecting itself is bounded too (a shard that stopped accepting
/// leaves new connections hanging in its listen queue).
fn connect(p: &LivenessParams, side: Side) -> Result<Conn, Failure> {
    let (a, b) = crate::conn::endpoints(&p.url);
    let url = match side {
        Side::Sender => a,
        Side::Receiver => b,
    };
    let c = Conn::connect_within(&url, p.deadline).map_err(|e| {
        if is_timeout(&e) {
            Failure::Stalled(format!("connecting: no INFO/PONG within {:?}", p.deadline))
        } else {
            Failure::Io(e)
        }
    })?;
    c.set_read_timeout(p.deadline)?;
    Ok(c)
}

/// Waits for the next MSG (probes skipped), mapping a timeout to a stall
/// described by `what`.
fn next_msg(c: &mut Conn, what: impl FnOnce() -> String) -> Result<ServerOp, Failure> {
    loop {
        match c.next_op() {
            Ok(ServerOp::Msg(m)) if &m.payload[..] == PROBE => {}
            Ok(op @ ServerOp::Msg(_)) => return Ok(op),
            Ok(ServerOp::Err(e)) => {
                return Err(Failure::Io(io::Error::other(format!(
                    "server error: {}",
                    String::from_utf8_lossy(&e)
                ))))
            }
            Ok(_) => {}
            Err(e) if is_timeout(&e) => return Err(Failure::Stalled(what())),
            Err(e) => return Err(Failure::Io(e)),
        }
    }
}

/// Sends PING and waits for its PONG, as a stall check on `c` itself.
fn sync(c: &mut Conn, what: &str) -> Result<(), Failure> {
    c.ping().map_err(|e| {
        if is_timeout(&e) {
            Failure::Stalled(format!("no PONG for {what}"))
        } else {
            Failure::Io(e)
        }
    })
}

fn request_reply(p: &LivenessParams, round: u64) -> Result<Duration, Failure> {
    let subject = format!("live.rpc.{round}");
    let inbox = format!("_INBOX.live.{round}");
    let mut resp = connect(p, Side::Receiver)?;
    resp.subscribe(&subject, Some("svc"), 1);
    sync(&mut resp, "the responder's SUB")?;
    let mut req = connect(p, Side::Sender)?;
    req.subscribe(&inbox, None, 1);
    sync(&mut req, "the requester's SUB")?;
    // Both directions: the request's subject on the responder's node, the
    // inbox on the requester's.
    await_interest(p, &mut req, &mut resp, &subject, None)?;
    await_interest(p, &mut resp, &mut req, &inbox, None)?;
    let mut longest = Duration::ZERO;
    for i in 0..p.msgs {
        let t = Instant::now();
        send_request(&mut req, &subject, &inbox)?;
        let ServerOp::Msg(m) = next_msg(&mut resp, || {
            format!(
                "request {} of {} never reached the responder",
                i + 1,
                p.msgs
            )
        })?
        else {
            unreachable!("next_msg returns messages only")
        };
        let reply = m.reply.ok_or_else(|| {
            Failure::Io(io::Error::other(
                "request delivered without its reply subject",
            ))
        })?;
        proto::write_pub(&mut resp.wbuf, &reply, None, None, b"pong");
        resp.flush()?;
        next_msg(&mut req, || {
            format!("no reply to request {} of {}", i + 1, p.msgs)
        })?;
        longest = longest.max(t.elapsed());
    }
    Ok(longest)
}

fn concurrent_requests(p: &LivenessParams, round: u64) -> Result<Duration, Failure> {
    const REQUESTERS: usize = 4;
    let subject = format!("live.crpc.{round}");
    let mut responders = Vec::new();
    for _ in 0..2 {
        let mut r = connect(p, Side::Receiver)?;
        r.subscribe(&subject, Some("svc"), 1);
        sync(&mut r, "a responder's SUB")?;
        responders.push(r);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut threads = Vec::new();
    for mut r in responders {
        let stop = stop.clone();
        r.set_read_timeout(Duration::from_millis(50))?;
        threads.push(std::thread::spawn(move || -> io::Result<()> {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match r.next_op() {
                    Ok(ServerOp::Msg(m)) => {
                        if let Some(reply) = m.reply {
                            // Echo probes so they stay recognisable.
                            let answer: &[u8] = if &m.payload[..] == PROBE {
                                PROBE
                            } else {
                                b"pong"
                            };
                            proto::write_pub(&mut r.wbuf, &reply, None, None, answer);
                            r.flush()?;
                        }
                    }
                    Ok(_) => {}
                    Err(e) if is_timeout(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }));
    }
    let mut requesters = Vec::new();
    for k in 0..REQUESTERS {
        let mut c = connect(p, Side::Sender)?;
        let inbox = format!("_INBOX.live.{round}.{k}");
        c.subscribe(&inbox, None, 1);
        sync(&mut c, "a requester's SUB")?;
        if crate::conn::endpoints(&p.url).0 != crate::conn::endpoints(&p.url).1 {
            // A probe request answered by a responder proves both directions.
            await_reply_path(p, &mut c, &subject, &inbox)?;
        }
        let (subject, n) = (subject.clone(), p.msgs);
        requesters.push(std::thread::spawn(move || -> Result<Duration, Failure> {
            let mut longest = Duration::ZERO;
            for i in 0..n {
                let t = Instant::now();
                send_request(&mut c, &subject, &inbox)?;
                next_msg(&mut c, || {
                    format!("requester {k}: no reply to request {} of {n}", i + 1)
                })?;
                longest = longest.max(t.elapsed());
            }
            Ok(longest)
        }));
    }
    let mut result = Ok(Duration::ZERO);
    for r in requesters {
        let got = r
            .join()
            .unwrap_or_else(|_| Err(Failure::Io(io::Error::other("requester panicked"))));
        result = match (result, got) {
            (Ok(a), Ok(b)) => Ok(a.max(b)),
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
        };
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        t.join()
            .map_err(|_| io::Error::other("responder panicked"))??;
    }
    result
}

/// Sends probe requests from `c` until one is answered (responders echo
/// probes), so the request subject and the inbox both crossed the route.
fn await_reply_path(
    p: &LivenessParams,
    c: &mut Conn,
    subject: &str,
    inbox: &str,
) -> Result<(), Failure> {
    c.set_read_timeout(Duration::from_millis(20))?;
    let result = probe_until(
        "no probe request answered across the route within 5 s",
        || {
            publish_probe(c, subject, Some(inbox))?;
            poll_msg(c)
        },
    );
    c.set_read_timeout(p.deadline)?;
    result
}

fn pub_sub(p: &LivenessParams, round: u64) -> Result<Duration, Failure> {
    let subject = format!("live.ps.{round}");
    let mut sub = connect(p, Side::Receiver)?;
    sub.subscribe(&subject, None, 1);
    sync(&mut sub, "the subscriber's SUB")?;
    let mut publisher = connect(p, Side::Sender)?;
    await_interest(p, &mut publisher, &mut sub, &subject, None)?;
    for _ in 0..p.msgs {
        proto::write_pub(&mut publisher.wbuf, subject.as_bytes(), None, None, b"m");
    }
    publisher.flush()?;
    sync(&mut publisher, "the publisher")?;
    let mut longest = Duration::ZERO;
    for i in 0..p.msgs {
        let t = Instant::now();
        next_msg(&mut sub, || {
            format!("subscriber got {i} of {} messages, then nothing", p.msgs)
        })?;
        longest = longest.max(t.elapsed());
    }
    Ok(longest)
}

fn queue(p: &LivenessParams, round: u64) -> Result<Duration, Failure> {
    let subject = format!("live.q.{round}");
    let mut members = Vec::new();
    for i in 0..2 {
        let mut m = connect(p, Side::Receiver)?;
        m.subscribe(&subject, Some("workers"), 1);
        sync(&mut m, &format!("member {i}'s SUB"))?;
        // Short polls: the two members are read in turn.
        m.set_read_timeout(Duration::from_millis(20))?;
        members.push(m);
    }
    let mut publisher = connect(p, Side::Sender)?;
    if crate::conn::endpoints(&p.url).0 != crate::conn::endpoints(&p.url).1 {
        // Either member receiving a probe shows the group's interest arrived.
        probe_until(
            "the group's interest did not reach the other node within 5 s",
            || {
                publish_probe(&mut publisher, &subject, None)?;
                for m in &mut members {
                    if poll_msg(m)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            },
        )?;
    }
    for _ in 0..p.msgs {
        proto::write_pub(&mut publisher.wbuf, subject.as_bytes(), None, None, b"m");
    }
    publisher.flush()?;
    sync(&mut publisher, "the publisher")?;
    let mut got = 0u64;
    let mut last = Instant::now();
    let mut longest = Duration::ZERO;
    while got < p.msgs {
        let mut progressed = false;
        for m in &mut members {
            match m.next_op() {
                Ok(ServerOp::Msg(msg)) if &msg.payload[..] == PROBE => {}
                Ok(ServerOp::Msg(_)) => {
                    got += 1;
                    progressed = true;
                }
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                Err(e) => return Err(Failure::Io(e)),
            }
        }
        if progressed {
            longest = longest.max(last.elapsed());
            last = Instant::now();
        } else if last.elapsed() > p.deadline {
            return Err(Failure::Stalled(format!(
                "the group got {got} of {} messages, then nothing for {:?}",
                p.msgs, p.deadline
            )));
        }
    }
    // The members still answer after the last message.
    for m in &mut members {
        sync(m, "a member after the last message")?;
    }
    Ok(longest)
}
