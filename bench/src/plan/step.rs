//! One step of a plan: every class of the workload at `factor` × its stated
//! rate, open loop, for a fixed time.
//!
//! Each sender sends on a schedule (message `k` is due at `start + k ×
//! interval`) whatever the server does; the sequence number travels in the
//! payload (a responder echoes it), so the receiver computes each message's
//! latency from when it was *due*, not when it was sent: a server that
//! stalls cannot hide the stall by slowing the sender (no coordinated
//! omission). Senders write all messages due so far in one batch, so the
//! generator falls behind only when it is itself out of CPU, and its lag is
//! recorded so the report can say so.
//!
//! A receiver that hears nothing for longer than the stall threshold while
//! messages are due records a stall (when, how long); messages still
//! missing after the drain are lost, and the stall is reported as not
//! resumed. Connection errors become part of the result, never a bare OS
//! error.

use super::workload::Workload;
use crate::conn::{endpoints, Conn};
use bytes::BytesMut;
use hdrhistogram::Histogram;
use shoal_core::proto::{self, ServerOp, ServerParser};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Highest latency recorded (larger values count as this): 60 s.
pub const MAX_US: u64 = 60_000_000;

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("histogram bounds")
}

/// Coarser, for the per-second series.
pub fn interval_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 2).expect("histogram bounds")
}

#[derive(Debug, Clone)]
pub struct StepConfig {
    /// `URL` or `URL_A,URL_B` (senders on A, receivers on B).
    pub url: String,
    pub factor: f64,
    pub secs: f64,
    /// How long to wait after the last send for messages still in flight.
    pub drain: Duration,
    /// Silence while messages are due that counts as a stall.
    pub stall: Duration,
    /// Makes this step's subjects unique.
    pub tag: String,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stall {
    /// Seconds from the step's start when the last message before the
    /// silence arrived.
    pub at_s: f64,
    pub secs: f64,
    /// False when nothing came again before the step gave up.
    pub resumed: bool,
}

/// One class's outcome in one run of a step.
#[derive(Debug, Clone)]
pub struct ClassRun {
    pub name: String,
    pub kind: &'static str,
    pub offered_rate: f64,
    pub sent: u64,
    pub expected: u64,
    pub received: u64,
    /// Latency from due time, µs.
    pub hist: Histogram<u64>,
    /// One histogram per second of the step (by arrival).
    pub series: Vec<Histogram<u64>>,
    pub stalls: Vec<Stall>,
    pub errors: Vec<String>,
    /// How late the senders sent, µs (the generator's own delay).
    pub send_lag: Histogram<u64>,
    /// With workers: what each one sent and received (empty when this
    /// process generated the load alone).
    pub per_worker: Vec<super::worker::WorkerCounts>,
}

impl ClassRun {
    pub fn quantile_us(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64
    }

    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.received)
    }
}

#[derive(Debug, Clone)]
pub struct StepRun {
    pub classes: Vec<ClassRun>,
    /// Wall time of the step, sending and draining.
    pub secs: f64,
}

/// Joins overlapping or touching silences (several receivers of one class
/// see the same stall).
pub fn merge_stalls(mut v: Vec<Stall>) -> Vec<Stall> {
    v.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    let mut out: Vec<Stall> = Vec::new();
    for s in v {
        if let Some(last) = out.last_mut() {
            let end = last.at_s + last.secs;
            if s.at_s <= end {
                let new_end = end.max(s.at_s + s.secs);
                last.secs = new_end - last.at_s;
                last.resumed = if s.at_s + s.secs >= end {
                    s.resumed
                } else {
                    last.resumed
                };
                continue;
            }
        }
        out.push(s);
    }
    out
}

/// What each receiving thread hands back.
struct Received {
    hist: Histogram<u64>,
    series: Vec<Histogram<u64>>,
    gaps: Vec<Stall>,
    last: Instant,
    error: Option<String>,
}

/// The write half of a connection, shared with its reader (PONGs).
type Writer = Arc<Mutex<TcpStream>>;

/// Reads messages carrying a sequence number, due at `start + seq ×
/// interval` (the sender's schedule), until `stop`; records latency, the
/// per-second series and silences longer than `stall` (and than 20 × `gap`,
/// the mean time between this receiver's messages).
#[allow(clippy::too_many_arguments)]
fn receive(
    mut stream: TcpStream,
    mut parser: ServerParser,
    mut rbuf: BytesMut,
    writer: Writer,
    start: Instant,
    interval: Duration,
    gap: Duration,
    stall: Duration,
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    who: String,
) -> Received {
    let mut r = Received {
        hist: histogram(),
        series: Vec::new(),
        gaps: Vec::new(),
        last: start,
        error: None,
    };
    // A receiver's messages come every `gap` on average (a queue member
    // gets one in N); a silence is a stall only if it is long against that
    // too.
    let threshold = stall.max(gap * 20);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let fail = |r: &mut Received, e: String| {
        if r.error.is_none() {
            r.error = Some(format!(
                "{who}: {e} at {:.1} s into the step",
                start.elapsed().as_secs_f64()
            ));
        }
    };
    loop {
        // Parse everything buffered, then read more.
        let now = Instant::now();
        let mut n = 0u64;
        loop {
            match parser.next(&mut rbuf) {
                Ok(Some(ServerOp::Msg(m))) => {
                    if m.payload.len() < 8 {
                        continue;
                    }
                    let seq = u64::from_le_bytes(m.payload[..8].try_into().expect("8 bytes"));
                    let due = start + interval.mul_f64(seq as f64);
                    let us = (now.saturating_duration_since(due).as_micros() as u64).max(1);
                    r.hist.saturating_record(us);
                    let sec = now.saturating_duration_since(start).as_secs() as usize;
                    while r.series.len() <= sec {
                        r.series.push(interval_histogram());
                    }
                    r.series[sec].saturating_record(us);
                    n += 1;
                }
                Ok(Some(ServerOp::Ping)) => {
                    let _ = writer.lock().expect("writer").write_all(proto::PONG);
                }
                Ok(Some(ServerOp::Err(e))) => fail(
                    &mut r,
                    format!("server error {}", String::from_utf8_lossy(&e)),
                ),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    fail(&mut r, format!("protocol error from server: {e}"));
                    return r;
                }
            }
        }
        if n > 0 {
            let gap = now.saturating_duration_since(r.last);
            if gap > threshold {
                r.gaps.push(Stall {
                    at_s: r.last.saturating_duration_since(start).as_secs_f64(),
                    secs: gap.as_secs_f64(),
                    resumed: true,
                });
            }
            r.last = now;
            count.fetch_add(n, Ordering::Relaxed);
        }
        if stop.load(Ordering::Relaxed) {
            return r;
        }
        match read_more(&mut stream, &mut rbuf) {
            Ok(Some(_)) => {}
            Ok(None) => {
                fail(&mut r, "the server closed the connection".into());
                return r;
            }
            Err(e) => {
                fail(&mut r, format!("read failed ({e})"));
                return r;
            }
        }
    }
}

/// Answers every request on its connection with the request's payload
/// until `stop`, writing each read's replies in one batch.
fn respond(conn: Conn, stop: Arc<AtomicBool>) -> Option<String> {
    let (mut stream, mut parser, mut rbuf) = conn.into_parts();
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut out = BytesMut::with_capacity(256 * 1024);
    loop {
        loop {
            match parser.next(&mut rbuf) {
                Ok(Some(ServerOp::Msg(m))) => {
                    if let Some(reply) = m.reply {
                        proto::write_pub(&mut out, &reply, None, None, &m.payload);
                    }
                }
                Ok(Some(ServerOp::Ping)) => out.extend_from_slice(proto::PONG),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => return Some(format!("responder: protocol error from server: {e}")),
            }
        }
        if !out.is_empty() {
            if let Err(e) = stream.write_all(&out) {
                return Some(format!("responder: write failed ({e})"));
            }
            out.clear();
        }
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        match read_more(&mut stream, &mut rbuf) {
            Ok(Some(_)) => {}
            Ok(None) => return Some("responder: the server closed the connection".into()),
            Err(e) => return Some(format!("responder: read failed ({e})")),
        }
    }
}

/// Appends what the socket has to `rbuf`: `Some(bytes)` (0 when a read
/// timeout passed with nothing), `None` at end of stream.
fn read_more(stream: &mut impl Read, rbuf: &mut BytesMut) -> io::Result<Option<usize>> {
    if rbuf.capacity() - rbuf.len() < 64 * 1024 {
        rbuf.reserve(256 * 1024);
    }
    let at = rbuf.len();
    rbuf.resize(rbuf.capacity(), 0);
    let res = stream.read(&mut rbuf[at..]);
    match res {
        Ok(0) => {
            rbuf.truncate(at);
            Ok(None)
        }
        Ok(k) => {
            rbuf.truncate(at + k);
            Ok(Some(k))
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            rbuf.truncate(at);
            Ok(Some(0))
        }
        Err(e) => {
            rbuf.truncate(at);
            Err(e)
        }
    }
}

/// What a sender hands back: messages sent, its lag, and why it stopped
/// early if it did.
struct Sent {
    sent: u64,
    lag: Histogram<u64>,
    error: Option<String>,
}

/// Sends `n` messages of `size` bytes to `subject`, message `k` due at
/// `start + k × interval`, writing all that are due in one batch.
#[allow(clippy::too_many_arguments)]
fn send(
    writer: Writer,
    subject: String,
    reply: Option<String>,
    size: usize,
    start: Instant,
    interval: Duration,
    n: u64,
    who: String,
) -> Sent {
    let mut payload = vec![b'x'; size.max(8)];
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let mut s = Sent {
        sent: 0,
        lag: histogram(),
        error: None,
    };
    let due = |k: u64| start + interval.mul_f64(k as f64);
    while s.sent < n {
        let now = Instant::now();
        let next = due(s.sent);
        if next > now {
            std::thread::sleep(next - now);
            continue;
        }
        s.lag
            .saturating_record((now.duration_since(next).as_micros() as u64).max(1));
        buf.clear();
        let mut k = s.sent;
        while k < n && due(k) <= now && buf.len() < 256 * 1024 {
            payload[..8].copy_from_slice(&k.to_le_bytes());
            proto::write_pub(
                &mut buf,
                subject.as_bytes(),
                reply.as_deref().map(str::as_bytes),
                None,
                &payload,
            );
            k += 1;
        }
        if let Err(e) = writer.lock().expect("writer").write_all(&buf) {
            s.error = Some(format!(
                "{who}: could not send after {} of {n} messages, {:.1} s into the step ({e})",
                s.sent,
                start.elapsed().as_secs_f64()
            ));
            return s;
        }
        s.sent = k;
    }
    s
}

/// A connection ready for traffic: subscribed where asked and confirmed
/// by a PING, with its handshake bounded so a stalled server cannot hang
/// the step.
fn connect(url: &str, subs: &[(String, Option<String>)]) -> Result<Conn, String> {
    let mut c = Conn::connect_within(url, Duration::from_secs(5))
        .map_err(|e| format!("could not connect to {url}: {e}"))?;
    for (i, (subject, queue)) in subs.iter().enumerate() {
        c.subscribe(subject, queue.as_deref(), i as u64 + 1);
    }
    c.ping()
        .map_err(|e| format!("{url} did not confirm the subscriptions: {e}"))?;
    Ok(c)
}

struct ClassThreads {
    name: String,
    kind: &'static str,
    offered_rate: f64,
    deliveries_per_msg: u64,
    senders: Vec<std::thread::JoinHandle<Sent>>,
    receivers: Vec<std::thread::JoinHandle<Received>>,
    count: Arc<AtomicU64>,
}

/// Server `name version` as INFO gives it, from a fresh connection.
pub fn server_info(url: &str) -> Result<proto::ServerInfo, String> {
    let (a, _) = endpoints(url);
    Conn::connect_within(&a, Duration::from_secs(5))
        .map(|c| c.info.clone())
        .map_err(|e| format!("could not connect to {a}: {e}"))
}

/// A thread's start signal: the common instant message 0 is due, or the
/// channel closing when setup failed.
type Go = std::sync::mpsc::Receiver<Instant>;

/// Runs one step. Setup failures (cannot connect) are an `Err` with the
/// reason; failures during the step are in the result.
pub fn run(w: &Workload, cfg: &StepConfig) -> Result<StepRun, String> {
    let ready = prepare(w, cfg)?;
    // Interest visible where messages are published.
    crate::conn::settle(&cfg.url);
    ready.go(Instant::now() + Duration::from_millis(10))
}

/// A step set up and waiting for its start: every connection made and
/// subscribed, every thread waiting for the instant message 0 is due. Split
/// from the start so a coordinator can set up all its workers first and
/// start them together; dropped without `go`, its threads stop.
pub struct Prepared {
    stop: Arc<AtomicBool>,
    gos: Vec<std::sync::mpsc::Sender<Instant>>,
    classes: Vec<ClassThreads>,
    responders: Vec<std::thread::JoinHandle<Option<String>>>,
    drain: Duration,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        // Never started (or already finished): release the waiting threads.
        self.gos.clear();
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Sets up one step (connections, subscriptions, waiting threads). Setup
/// failures (cannot connect) are an `Err` with the reason.
pub fn prepare(w: &Workload, cfg: &StepConfig) -> Result<Prepared, String> {
    let (send_url, recv_url) = endpoints(&cfg.url);
    let stop = Arc::new(AtomicBool::new(false));
    let mut gos: Vec<std::sync::mpsc::Sender<Instant>> = Vec::new();
    let mut go = || {
        let (tx, rx) = std::sync::mpsc::channel();
        gos.push(tx);
        rx
    };
    let mut classes: Vec<ClassThreads> = Vec::new();
    let mut responders: Vec<std::thread::JoinHandle<Option<String>>> = Vec::new();
    let spawn_receiver = |conn: Conn,
                          writer: Option<Writer>,
                          rx: Go,
                          interval: Duration,
                          gap: Duration,
                          count: Arc<AtomicU64>,
                          who: String|
     -> Result<std::thread::JoinHandle<Received>, String> {
        let (stream, parser, rbuf) = conn.into_parts();
        let writer = match writer {
            Some(w) => w,
            None => Arc::new(Mutex::new(
                stream
                    .try_clone()
                    .map_err(|e| format!("{who}: socket: {e}"))?,
            )),
        };
        let (stall, stop) = (cfg.stall, stop.clone());
        Ok(std::thread::spawn(move || {
            let Ok(start) = rx.recv() else {
                return Received {
                    hist: histogram(),
                    series: Vec::new(),
                    gaps: Vec::new(),
                    last: Instant::now(),
                    error: None,
                };
            };
            receive(
                stream, parser, rbuf, writer, start, interval, gap, stall, count, stop, who,
            )
        }))
    };
    let spawn_sender = |writer: Writer,
                        rx: Go,
                        subject: String,
                        reply: Option<String>,
                        size: usize,
                        interval: Duration,
                        n: u64,
                        who: String| {
        std::thread::spawn(move || {
            let Ok(start) = rx.recv() else {
                return Sent {
                    sent: 0,
                    lag: histogram(),
                    error: None,
                };
            };
            send(writer, subject, reply, size, start, interval, n, who)
        })
    };
    let setup = (|| -> Result<(), String> {
        for c in &w.rpc {
            let rate = c.rate * cfg.factor;
            let subject = format!("plan.{}.{}", cfg.tag, c.name);
            for _ in 0..c.responders {
                let conn = connect(&recv_url, &[(subject.clone(), Some("responders".into()))])?;
                let stop = stop.clone();
                responders.push(std::thread::spawn(move || respond(conn, stop)));
            }
            let per = rate / c.requesters as f64;
            let interval = Duration::from_secs_f64(1.0 / per);
            let n = ((per * cfg.secs).round() as u64).max(1);
            let mut t = ClassThreads {
                name: c.name.clone(),
                kind: "rpc",
                offered_rate: rate,
                deliveries_per_msg: 1,
                senders: Vec::new(),
                receivers: Vec::new(),
                count: Arc::new(AtomicU64::new(0)),
            };
            for i in 0..c.requesters {
                let inbox = format!("_INBOX.plan.{}.{}.{i}", cfg.tag, c.name);
                let conn = connect(&send_url, &[(inbox.clone(), None)])?;
                let writer = Arc::new(Mutex::new(
                    conn.try_clone_stream()
                        .map_err(|e| format!("requester {i}: socket: {e}"))?,
                ));
                let who = format!("{} requester {i}", c.name);
                t.receivers.push(spawn_receiver(
                    conn,
                    Some(writer.clone()),
                    go(),
                    interval,
                    interval,
                    t.count.clone(),
                    who.clone(),
                )?);
                t.senders.push(spawn_sender(
                    writer,
                    go(),
                    subject.clone(),
                    Some(inbox),
                    c.size,
                    interval,
                    n,
                    who,
                ));
            }
            classes.push(t);
        }
        for c in &w.events {
            let rate = c.rate * cfg.factor;
            let subject = format!("plan.{}.{}", cfg.tag, c.name);
            let mut t = ClassThreads {
                name: c.name.clone(),
                kind: "events",
                offered_rate: rate,
                deliveries_per_msg: c.deliveries_per_msg() as u64,
                senders: Vec::new(),
                receivers: Vec::new(),
                count: Arc::new(AtomicU64::new(0)),
            };
            let queue = c.queue.map(|_| "members".to_string());
            // A fan-out subscriber sees every message; a queue member one
            // in `members` on average.
            let per_receiver = match c.queue {
                Some(q) => rate / q as f64,
                None => rate,
            };
            // Messages are due on the publishers' schedule.
            let per = rate / c.publishers as f64;
            let interval = Duration::from_secs_f64(1.0 / per);
            for i in 0..c.receivers() {
                let conn = connect(&recv_url, &[(subject.clone(), queue.clone())])?;
                t.receivers.push(spawn_receiver(
                    conn,
                    None,
                    go(),
                    interval,
                    Duration::from_secs_f64(1.0 / per_receiver),
                    t.count.clone(),
                    format!("{} subscriber {i}", c.name),
                )?);
            }
            let n = ((per * cfg.secs).round() as u64).max(1);
            for i in 0..c.publishers {
                let conn = connect(&send_url, &[])?;
                let writer = Arc::new(Mutex::new(
                    conn.try_clone_stream()
                        .map_err(|e| format!("publisher {i}: socket: {e}"))?,
                ));
                // The publisher's own reader answers PINGs.
                let (stream, parser, rbuf) = conn.into_parts();
                let (stop, w2) = (stop.clone(), writer.clone());
                responders.push(std::thread::spawn(move || {
                    drain_pings(stream, parser, rbuf, w2, stop)
                }));
                t.senders.push(spawn_sender(
                    writer,
                    go(),
                    subject.clone(),
                    None,
                    c.size,
                    interval,
                    n,
                    format!("{} publisher {i}", c.name),
                ));
            }
            classes.push(t);
        }
        Ok(())
    })();
    if let Err(e) = setup {
        drop(gos);
        stop.store(true, Ordering::Relaxed);
        for c in classes {
            c.senders.into_iter().for_each(|h| drop(h.join()));
            c.receivers.into_iter().for_each(|h| drop(h.join()));
        }
        responders.into_iter().for_each(|h| drop(h.join()));
        return Err(e);
    }
    Ok(Prepared {
        stop,
        gos,
        classes,
        responders,
        drain: cfg.drain,
    })
}

impl Prepared {
    /// Starts every thread with message 0 due at `start`, waits for the
    /// senders, drains, and collects what the receivers saw. Failures
    /// during the step are in the result.
    pub fn go(mut self, start: Instant) -> Result<StepRun, String> {
        let stop = self.stop.clone();
        let mut classes = std::mem::take(&mut self.classes);
        let responders = std::mem::take(&mut self.responders);
        for g in self.gos.drain(..) {
            let _ = g.send(start);
        }
        let mut sent: Vec<(u64, Histogram<u64>, Vec<String>)> = Vec::new();
        for c in &mut classes {
            let (mut total, mut lag, mut errors) = (0, histogram(), Vec::new());
            for h in c.senders.drain(..) {
                let s = h.join().map_err(|_| "a sender panicked".to_string())?;
                total += s.sent;
                lag.add(&s.lag).expect("same bounds");
                errors.extend(s.error);
            }
            sent.push((total, lag, errors));
        }
        // Drain: wait for what is in flight, up to the limit.
        let deadline = Instant::now() + self.drain;
        while Instant::now() < deadline
            && classes
                .iter()
                .zip(&sent)
                .any(|(c, (n, _, _))| c.count.load(Ordering::Relaxed) < n * c.deliveries_per_msg)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let end = Instant::now();
        stop.store(true, Ordering::Relaxed);
        let mut out = Vec::new();
        for (c, (total, lag, mut errors)) in classes.into_iter().zip(sent) {
            let mut hist = histogram();
            let mut series: Vec<Histogram<u64>> = Vec::new();
            let mut gaps = Vec::new();
            let mut last = start;
            for h in c.receivers {
                let r = h.join().map_err(|_| "a receiver panicked".to_string())?;
                hist.add(&r.hist).expect("same bounds");
                for (i, s) in r.series.iter().enumerate() {
                    if series.len() <= i {
                        series.push(interval_histogram());
                    }
                    series[i].add(s).expect("same bounds");
                }
                gaps.extend(r.gaps);
                last = last.max(r.last);
                errors.extend(r.error);
            }
            let expected = total * c.deliveries_per_msg;
            let received = c.count.load(Ordering::Relaxed);
            if received < expected {
                gaps.push(Stall {
                    at_s: last.saturating_duration_since(start).as_secs_f64(),
                    secs: end.saturating_duration_since(last).as_secs_f64(),
                    resumed: false,
                });
            }
            out.push(ClassRun {
                name: c.name,
                kind: c.kind,
                offered_rate: c.offered_rate,
                sent: total,
                expected,
                received,
                hist,
                series,
                stalls: merge_stalls(gaps),
                errors,
                send_lag: lag,
                per_worker: Vec::new(),
            });
        }
        for h in responders {
            if let Ok(Some(e)) = h.join() {
                if let Some(c) = out.first_mut() {
                    // Responders belong to rpc classes, which come first.
                    c.errors.push(e);
                }
            }
        }
        Ok(StepRun {
            classes: out,
            secs: end.duration_since(start).as_secs_f64(),
        })
    }
}

/// A publisher's read side: answers PINGs until `stop`.
fn drain_pings(
    mut stream: TcpStream,
    mut parser: ServerParser,
    mut rbuf: BytesMut,
    writer: Writer,
    stop: Arc<AtomicBool>,
) -> Option<String> {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        while let Ok(Some(op)) = parser.next(&mut rbuf) {
            match op {
                ServerOp::Ping => {
                    let _ = writer.lock().expect("writer").write_all(proto::PONG);
                }
                ServerOp::Err(e) => {
                    return Some(format!(
                        "publisher: server error {}",
                        String::from_utf8_lossy(&e)
                    ))
                }
                _ => {}
            }
        }
        match stream.read(&mut buf) {
            Ok(0) => return None,
            Ok(k) => rbuf.extend_from_slice(&buf[..k]),
            Err(_) => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalls_seen_by_several_receivers_are_one() {
        let s = |at_s, secs, resumed| Stall {
            at_s,
            secs,
            resumed,
        };
        let merged = merge_stalls(vec![
            s(5.0, 1.0, true),
            s(1.0, 2.0, true),
            s(1.5, 2.0, true),
            s(5.5, 3.0, false),
        ]);
        assert_eq!(merged, vec![s(1.0, 2.5, true), s(5.0, 3.5, false)]);
        assert_eq!(merge_stalls(vec![]), vec![]);
    }
}
