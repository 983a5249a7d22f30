//! More load than one machine makes: `shoal-bench worker --listen
//! HOST:PORT` generates a share of a plan's load for a coordinator
//! (`shoal-bench plan --workers HOST:PORT,...`).
//!
//! The control protocol is line-delimited JSON over TCP, one connection per
//! run of a step:
//!
//! 1. the coordinator sends `setup` (the worker's share of the workload, the
//!    server URL, the step's length); the worker connects and subscribes
//!    everything, waits for interest to settle, and answers `ready` (or
//!    `error`);
//! 2. when **every** worker is ready (a barrier), the coordinator sends `go`
//!    to each; a worker starts its senders a fixed delay after `go`
//!    arrives. A barrier rather than an agreed wall-clock time because setup
//!    takes as long as the server and the connection count make it (an
//!    agreed time would be a guess), and the start then depends on no
//!    clock being synchronised: workers start within the spread of the `go`
//!    messages' delivery (sub-millisecond on a LAN). Each worker reports
//!    its wall-clock start so the spread can be checked where clocks agree;
//! 3. the worker runs the step and answers `result`: counts, stalls,
//!    errors, and its raw HDR histograms (V2 serialized, base64), which the
//!    coordinator adds (HDR merge is exact; percentiles are never averaged).
//!
//! Every worker sends *and* receives its own share (its own subjects and
//! inboxes), so a message's latency is measured on one machine's clock and
//! never across two.
//!
//! Every timeout is explicit and a worker that disconnects, errors or goes
//! silent fails the run with a message naming it; a worker answers a
//! request it cannot read or accept with an `error` and carries on.

use super::step::{self, ClassRun, StepConfig, StepRun};
use super::workload::Workload;
use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Bumped when the messages change: a coordinator refuses a worker that
/// speaks another version instead of misreading it.
pub const PROTOCOL: u32 = 1;

/// Longest control line accepted (a result with a few classes' histograms
/// is tens of KiB; a workload a few KiB).
const MAX_LINE: usize = 64 << 20;

/// How long a worker may take to connect and subscribe its share.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long after the step's sending and draining a worker may take to
/// answer with its result.
const RESULT_MARGIN: Duration = Duration::from_secs(30);

/// A worker starts this long after `go` arrives, so the coordinator has
/// sent every `go` before anyone starts.
const GO_DELAY: Duration = Duration::from_millis(50);

/// Limits a worker accepts, so a mistaken or hostile request is refused
/// with a reason rather than exhausting the machine.
const MAX_SECS: f64 = 3600.0;
const MAX_CONNECTIONS: usize = 10_000;

/// What a coordinator asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    Hello,
    Setup(Box<RunSpec>),
    Go,
}

/// One run of a step on one worker: its share of the workload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSpec {
    pub workload: Workload,
    pub url: String,
    pub factor: f64,
    pub secs: f64,
    pub drain_ms: u64,
    pub stall_ms: u64,
    pub tag: String,
}

/// What a worker answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    Hello { tool: String, protocol: u32 },
    Ready,
    Result(Box<WireRun>),
    Error { message: String },
}

/// A worker's run as sent back: `StepRun` with histograms serialized.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireRun {
    /// When message 0 was due, by the worker's wall clock (ms since 1970).
    pub start_unix_ms: f64,
    pub secs: f64,
    pub classes: Vec<WireClass>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireClass {
    pub name: String,
    pub kind: String,
    pub offered_rate: f64,
    pub sent: u64,
    pub expected: u64,
    pub received: u64,
    /// Latency from due time, µs: HDR V2, base64.
    pub hist: String,
    /// One V2 histogram per second of the step.
    pub series: Vec<String>,
    pub stalls: Vec<step::Stall>,
    pub errors: Vec<String>,
    pub send_lag: String,
}

/// One worker's part of one class in one run, kept in the plan so a
/// reader sees that every worker took part and what each did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerCounts {
    pub worker: String,
    pub sent: u64,
    pub expected: u64,
    pub received: u64,
    /// Messages in this worker's latency histogram.
    pub latency_count: u64,
    pub p99_us: f64,
    /// When this worker's message 0 was due (its wall clock, ms since 1970).
    pub start_unix_ms: f64,
}

/// Why a distributed run did not produce a result.
#[derive(Debug, Clone, PartialEq)]
pub enum RunError {
    /// A worker could not set up against the server (the server's doing,
    /// as when this process cannot connect).
    Setup(String),
    /// A worker failed: unreachable, disconnected, silent or broken. The
    /// load generator's failure, not the server's.
    Worker(String),
}

pub fn encode(h: &Histogram<u64>) -> Result<String, String> {
    let mut buf = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut buf)
        .map_err(|e| format!("serializing a histogram: {e:?}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(buf))
}

/// A histogram from `encode`, refused unless it has the bounds and
/// precision `like` has (so adding it is exact and cannot fail).
pub fn decode(text: &str, like: &Histogram<u64>) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("histogram is not base64: {e}"))?;
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| format!("histogram does not deserialize: {e:?}"))?;
    if (h.low(), h.high(), h.sigfig()) != (like.low(), like.high(), like.sigfig()) {
        return Err(format!(
            "histogram has bounds {}..{} at {} digits, expected {}..{} at {}",
            h.low(),
            h.high(),
            h.sigfig(),
            like.low(),
            like.high(),
            like.sigfig()
        ));
    }
    Ok(h)
}

impl WireRun {
    pub fn of(run: &StepRun, start_unix_ms: f64) -> Result<WireRun, String> {
        let classes = run
            .classes
            .iter()
            .map(|c| {
                Ok(WireClass {
                    name: c.name.clone(),
                    kind: c.kind.to_string(),
                    offered_rate: c.offered_rate,
                    sent: c.sent,
                    expected: c.expected,
                    received: c.received,
                    hist: encode(&c.hist)?,
                    series: c.series.iter().map(encode).collect::<Result<_, _>>()?,
                    stalls: c.stalls.clone(),
                    errors: c.errors.clone(),
                    send_lag: encode(&c.send_lag)?,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(WireRun {
            start_unix_ms,
            secs: run.secs,
            classes,
        })
    }
}

/// Adds `b` into `a` second by second.
fn add_series(a: &mut Vec<Histogram<u64>>, b: &[Histogram<u64>]) -> Result<(), String> {
    for (i, s) in b.iter().enumerate() {
        if a.len() <= i {
            a.push(step::interval_histogram());
        }
        a[i].add(s)
            .map_err(|e| format!("adding second {i}: {e:?}"))?;
    }
    Ok(())
}

/// The workers' runs as one: histograms added (exact), counts summed,
/// series added second by second, stalls joined, errors kept with the
/// worker named. Each class keeps each worker's counts.
pub fn merge(parts: &[(String, WireRun)]) -> Result<StepRun, String> {
    let mut out: Vec<ClassRun> = Vec::new();
    let mut secs = 0.0f64;
    let (like, like_s) = (step::histogram(), step::interval_histogram());
    for (worker, run) in parts {
        secs = secs.max(run.secs);
        for c in &run.classes {
            let bad = |e: String| format!("worker {worker}, class `{}`: {e}", c.name);
            let hist = decode(&c.hist, &like).map_err(bad)?;
            let send_lag = decode(&c.send_lag, &like).map_err(bad)?;
            let series = c
                .series
                .iter()
                .map(|s| decode(s, &like_s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(bad)?;
            let kind = match c.kind.as_str() {
                "rpc" => "rpc",
                "events" => "events",
                other => return Err(bad(format!("unknown kind {other:?}"))),
            };
            let counts = WorkerCounts {
                worker: worker.clone(),
                sent: c.sent,
                expected: c.expected,
                received: c.received,
                latency_count: hist.len(),
                p99_us: if hist.is_empty() {
                    0.0
                } else {
                    hist.value_at_quantile(0.99) as f64
                },
                start_unix_ms: run.start_unix_ms,
            };
            let errors = c.errors.iter().map(|e| format!("worker {worker}: {e}"));
            match out.iter_mut().find(|o| o.name == c.name) {
                Some(o) => {
                    o.offered_rate += c.offered_rate;
                    o.sent += c.sent;
                    o.expected += c.expected;
                    o.received += c.received;
                    o.hist.add(&hist).map_err(|e| bad(format!("{e:?}")))?;
                    o.send_lag
                        .add(&send_lag)
                        .map_err(|e| bad(format!("{e:?}")))?;
                    add_series(&mut o.series, &series).map_err(bad)?;
                    o.stalls.extend(c.stalls.iter().copied());
                    o.errors.extend(errors);
                    o.per_worker.push(counts);
                }
                None => out.push(ClassRun {
                    name: c.name.clone(),
                    kind,
                    offered_rate: c.offered_rate,
                    sent: c.sent,
                    expected: c.expected,
                    received: c.received,
                    hist,
                    series,
                    stalls: c.stalls.clone(),
                    errors: errors.collect(),
                    send_lag,
                    per_worker: vec![counts],
                }),
            }
        }
    }
    for c in &mut out {
        // The workers started together, so their stalls share a time axis;
        // one silence seen by several workers is one stall.
        c.stalls = step::merge_stalls(std::mem::take(&mut c.stalls));
    }
    Ok(StepRun { classes: out, secs })
}

/// `count` connections shared by `n` workers: as even as possible, at
/// least one each (a worker needs a sender and a receiver of every class
/// to measure it on its own clock).
pub fn split(count: usize, i: usize, n: usize) -> usize {
    let n = n.max(1);
    (count / n + usize::from(i < count % n)).max(1)
}

/// Worker `i` of `n`'s share of the workload: every rate divided by `n`;
/// requesters, responders, publishers and queue members divided (at least
/// one each); fan-out kept, since every message must still reach that many
/// subscribers and a worker's subscribers hear only its own publishers.
pub fn share(w: &Workload, i: usize, n: usize) -> Workload {
    let mut s = w.clone();
    let nf = n.max(1) as f64;
    for c in &mut s.rpc {
        c.rate /= nf;
        c.requesters = split(c.requesters, i, n);
        c.responders = split(c.responders, i, n);
    }
    for c in &mut s.events {
        c.rate /= nf;
        c.publishers = split(c.publishers, i, n);
        c.queue = c.queue.map(|q| split(q, i, n));
    }
    s
}

/// What a worker refuses to run, with the reason.
pub fn check(spec: &RunSpec) -> Result<(), String> {
    spec.workload.validate()?;
    let ok = |x: f64, lo: f64, hi: f64| x.is_finite() && x >= lo && x <= hi;
    if !ok(spec.factor, 1e-9, 1e9) {
        return Err(format!("factor {} is out of range", spec.factor));
    }
    if !ok(spec.secs, 0.001, MAX_SECS) {
        return Err(format!(
            "step length {} s is out of range (up to {MAX_SECS} s)",
            spec.secs
        ));
    }
    if spec.drain_ms > 600_000 || spec.stall_ms > 600_000 {
        return Err("drain and stall times must be at most 600 s".into());
    }
    let w = &spec.workload;
    let conns: usize = w
        .rpc
        .iter()
        .map(|c| c.requesters.saturating_add(c.responders))
        .chain(
            w.events
                .iter()
                .map(|c| c.publishers.saturating_add(c.receivers())),
        )
        .fold(0, usize::saturating_add);
    if conns > MAX_CONNECTIONS {
        return Err(format!(
            "{conns} connections asked for, at most {MAX_CONNECTIONS} per worker"
        ));
    }
    // Each sender's interval (1 / its rate) must be a representable time
    // and its message count a number.
    for (name, rate, senders) in w
        .rpc
        .iter()
        .map(|c| (&c.name, c.rate, c.requesters))
        .chain(w.events.iter().map(|c| (&c.name, c.rate, c.publishers)))
    {
        let per = rate * spec.factor / senders as f64;
        if !ok(per, 1e-6, 1e9) {
            return Err(format!(
                "{name}: {per} messages/s per sender is out of range"
            ));
        }
    }
    if !spec.url.starts_with("nats://") && spec.url.contains("://") {
        return Err(format!("{}: only nats:// URLs", spec.url));
    }
    Ok(())
}

fn now_unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// The wall-clock time (ms since 1970) of a monotonic instant.
fn unix_ms_of(t: Instant) -> f64 {
    let now = Instant::now();
    if t >= now {
        now_unix_ms() + (t - now).as_secs_f64() * 1000.0
    } else {
        now_unix_ms() - (now - t).as_secs_f64() * 1000.0
    }
}

/// Reads one line of at most `MAX_LINE` bytes: `Ok(None)` at end of
/// stream, an error for a longer line or one that is not UTF-8.
fn read_line(r: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = r.take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') && buf.len() > MAX_LINE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("line longer than {MAX_LINE} bytes"),
        ));
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "line is not UTF-8"))
}

fn write_json(w: &mut impl Write, v: &impl Serialize) -> io::Result<()> {
    let mut line = serde_json::to_vec(v).map_err(io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)?;
    w.flush()
}

// ---------------------------------------------------------------- worker

/// Serves coordinators on `listen` until the process is stopped. Each
/// connection gets its own thread, so a stray or stuck client cannot block
/// the next coordinator. `ready` is told the bound address (for
/// `--listen 127.0.0.1:0`).
pub fn serve(listen: &str, ready: &dyn Fn(&str)) -> io::Result<()> {
    let listener = TcpListener::bind(listen)?;
    let addr = listener.local_addr()?.to_string();
    ready(&addr);
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "?".to_string(), |a| a.to_string());
        std::thread::spawn(move || {
            if let Err(e) = handle(stream) {
                eprintln!("shoal-bench worker: coordinator {peer}: {e}");
            }
        });
    }
    Ok(())
}

/// Answers one coordinator connection until it closes.
pub fn handle(stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut out = stream.try_clone()?;
    let mut input = BufReader::new(stream);
    let mut prepared: Option<step::Prepared> = None;
    loop {
        let line = match read_line(&mut input) {
            Ok(Some(l)) => l,
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                write_json(
                    &mut out,
                    &Reply::Error {
                        message: format!("bad request: {e}"),
                    },
                )?;
                // A line too long cannot be resynchronised; one that is
                // not UTF-8 was read whole.
                if e.to_string().contains("longer") {
                    return Ok(());
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        if line.trim().is_empty() {
            continue;
        }
        // A panic in a step is a bug, but it must not cost the coordinator
        // its answer nor the worker its other connections.
        let reply = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            answer(&line, &mut prepared)
        }))
        .unwrap_or_else(|_| Reply::Error {
            message: "the worker failed internally (panicked) on this request".into(),
        });
        write_json(&mut out, &reply)?;
    }
}

/// One request's answer; `prepared` holds a set-up step between `setup`
/// and `go`.
fn answer(line: &str, prepared: &mut Option<step::Prepared>) -> Reply {
    let err = |message: String| Reply::Error { message };
    let req: Request = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => return err(format!("bad request: {e}")),
    };
    match req {
        Request::Hello => Reply::Hello {
            tool: format!("shoal-bench {}", env!("CARGO_PKG_VERSION")),
            protocol: PROTOCOL,
        },
        Request::Setup(spec) => {
            // A new setup replaces one never started.
            *prepared = None;
            if let Err(e) = check(&spec) {
                return err(format!("refused: {e}"));
            }
            let cfg = StepConfig {
                url: spec.url.clone(),
                factor: spec.factor,
                secs: spec.secs,
                drain: Duration::from_millis(spec.drain_ms),
                stall: Duration::from_millis(spec.stall_ms),
                tag: spec.tag.clone(),
            };
            match step::prepare(&spec.workload, &cfg) {
                Ok(p) => {
                    crate::conn::settle(&cfg.url);
                    *prepared = Some(p);
                    Reply::Ready
                }
                Err(e) => err(format!("setup: {e}")),
            }
        }
        Request::Go => {
            let Some(p) = prepared.take() else {
                return err("go without a setup".into());
            };
            let start = Instant::now() + GO_DELAY;
            let start_ms = unix_ms_of(start);
            match p.go(start).and_then(|run| WireRun::of(&run, start_ms)) {
                Ok(w) => Reply::Result(Box::new(w)),
                Err(e) => err(format!("run: {e}")),
            }
        }
    }
}

// ----------------------------------------------------------- coordinator

/// A control connection to one worker.
struct Link {
    addr: String,
    out: TcpStream,
    input: BufReader<TcpStream>,
}

impl Link {
    fn open(addr: &str) -> Result<Link, String> {
        let sock = addr
            .to_socket_addrs()
            .map_err(|e| format!("worker {addr}: bad address ({e})"))?
            .next()
            .ok_or_else(|| format!("worker {addr}: no address"))?;
        let out = TcpStream::connect_timeout(&sock, Duration::from_secs(5))
            .map_err(|e| format!("worker {addr}: could not connect ({e}); is `shoal-bench worker --listen {addr}` running?"))?;
        let _ = out.set_nodelay(true);
        let input = BufReader::new(
            out.try_clone()
                .map_err(|e| format!("worker {addr}: socket: {e}"))?,
        );
        Ok(Link {
            addr: addr.to_string(),
            out,
            input,
        })
    }

    fn send(&mut self, r: &Request) -> Result<(), String> {
        write_json(&mut self.out, r).map_err(|e| {
            format!(
                "worker {}: could not send (connection lost: {e}); did the worker stop?",
                self.addr
            )
        })
    }

    /// The next reply, waiting until `deadline` at most. `what` says what
    /// was awaited, for the message.
    fn recv(&mut self, deadline: Instant, what: &str) -> Result<Reply, String> {
        let left = deadline.saturating_duration_since(Instant::now());
        let left = left.max(Duration::from_millis(1));
        let _ = self.input.get_ref().set_read_timeout(Some(left));
        let addr = &self.addr;
        match read_line(&mut self.input) {
            Ok(Some(l)) => serde_json::from_str(&l)
                .map_err(|e| format!("worker {addr}: unreadable answer while {what} ({e})")),
            Ok(None) => Err(format!(
                "worker {addr}: closed the connection while {what} (the worker process died or was stopped)"
            )),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                Err(format!(
                    "worker {addr}: no answer within {:.0} s while {what}",
                    left.as_secs_f64()
                ))
            }
            Err(e) => Err(format!("worker {addr}: connection lost while {what} ({e})")),
        }
    }
}

/// Checks that every worker answers and speaks this protocol: at the
/// plan's start, so a wrong address fails at once and not at step one.
pub fn hello(addrs: &[String]) -> Result<Vec<String>, String> {
    addrs
        .iter()
        .map(|a| {
            let mut l = Link::open(a)?;
            l.send(&Request::Hello)?;
            match l.recv(Instant::now() + Duration::from_secs(5), "greeting")? {
                Reply::Hello { tool, protocol } if protocol == PROTOCOL => Ok(tool),
                Reply::Hello { tool, protocol } => Err(format!(
                    "worker {a}: {tool} speaks protocol {protocol}, this coordinator {PROTOCOL}"
                )),
                other => Err(format!("worker {a}: unexpected greeting {other:?}")),
            }
        })
        .collect()
}

/// One run of a step on every worker, each with its share, started
/// together, merged exactly.
pub fn run(addrs: &[String], w: &Workload, cfg: &StepConfig) -> Result<StepRun, RunError> {
    let n = addrs.len();
    let mut links = Vec::with_capacity(n);
    for (i, a) in addrs.iter().enumerate() {
        let mut l = Link::open(a).map_err(RunError::Worker)?;
        l.send(&Request::Setup(Box::new(RunSpec {
            workload: share(w, i, n),
            url: cfg.url.clone(),
            factor: cfg.factor,
            secs: cfg.secs,
            drain_ms: cfg.drain.as_millis() as u64,
            stall_ms: cfg.stall.as_millis() as u64,
            tag: format!("{}.w{i}", cfg.tag),
        })))
        .map_err(RunError::Worker)?;
        links.push(l);
    }
    // The barrier: every worker set up before any starts. Dropping the
    // links on an error closes them, and the workers drop their setup.
    let deadline = Instant::now() + SETUP_TIMEOUT;
    let mut setup_errors = Vec::new();
    for l in &mut links {
        match l.recv(deadline, "setting up").map_err(RunError::Worker)? {
            Reply::Ready => {}
            Reply::Error { message } => {
                setup_errors.push(format!("worker {}: {message}", l.addr));
            }
            other => {
                return Err(RunError::Worker(format!(
                    "worker {}: unexpected answer to setup {other:?}",
                    l.addr
                )))
            }
        }
    }
    if !setup_errors.is_empty() {
        // The server's refusal, as seen by the workers, or a refused
        // request (which is this tool's fault and says so).
        return Err(if setup_errors.iter().any(|e| e.contains("refused:")) {
            RunError::Worker(setup_errors.join("; "))
        } else {
            RunError::Setup(setup_errors.join("; "))
        });
    }
    for l in &mut links {
        l.send(&Request::Go).map_err(RunError::Worker)?;
    }
    let deadline =
        Instant::now() + GO_DELAY + Duration::from_secs_f64(cfg.secs) + cfg.drain + RESULT_MARGIN;
    let mut parts = Vec::with_capacity(n);
    for l in &mut links {
        match l
            .recv(deadline, "running the step")
            .map_err(RunError::Worker)?
        {
            Reply::Result(r) => parts.push((l.addr.clone(), *r)),
            Reply::Error { message } => {
                return Err(RunError::Worker(format!("worker {}: {message}", l.addr)))
            }
            other => {
                return Err(RunError::Worker(format!(
                    "worker {}: unexpected answer to go {other:?}",
                    l.addr
                )))
            }
        }
    }
    merge(&parts).map_err(RunError::Worker)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Quantiles;

    /// A worker's run of one class with these latencies, through the wire.
    fn wire(values: &[u64], seconds: &[Vec<u64>], start_ms: f64) -> WireRun {
        let mut hist = step::histogram();
        for v in values {
            hist.record(*v).unwrap();
        }
        let series = seconds
            .iter()
            .map(|vs| {
                let mut h = step::interval_histogram();
                for v in vs {
                    h.record(*v).unwrap();
                }
                h
            })
            .collect();
        let mut lag = step::histogram();
        lag.record(3).unwrap();
        let run = StepRun {
            classes: vec![ClassRun {
                name: "rpc".into(),
                kind: "rpc",
                offered_rate: 50.0,
                sent: values.len() as u64,
                expected: values.len() as u64,
                received: values.len() as u64,
                hist,
                series,
                stalls: Vec::new(),
                errors: Vec::new(),
                send_lag: lag,
                per_worker: Vec::new(),
            }],
            secs: 1.0,
        };
        // Through JSON, as on the socket.
        let text = serde_json::to_string(&Reply::Result(Box::new(
            WireRun::of(&run, start_ms).unwrap(),
        )))
        .unwrap();
        match serde_json::from_str(&text).unwrap() {
            Reply::Result(r) => *r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn merged_histograms_equal_one_histogram_of_every_value() {
        // Two workers with very different distributions: a fast one and
        // one with a slow tail, so averaging their percentiles would be
        // visibly wrong.
        let a: Vec<u64> = (0..9_000).map(|i| 20 + (i * 7919) % 400).collect();
        let b: Vec<u64> = (0..1_000)
            .map(|i| {
                if i % 10 == 0 {
                    50_000 + i * 97
                } else {
                    300 + (i * 31) % 2000
                }
            })
            .collect();
        let (sa, sb) = (
            vec![a[..5000].to_vec(), a[5000..].to_vec()],
            vec![b[..100].to_vec(), b[100..600].to_vec(), b[600..].to_vec()],
        );
        let merged = merge(&[
            ("w0:1".into(), wire(&a, &sa, 1000.0)),
            ("w1:2".into(), wire(&b, &sb, 1000.5)),
        ])
        .unwrap();
        let c = &merged.classes[0];

        let mut reference = step::histogram();
        for v in a.iter().chain(&b) {
            reference.record(*v).unwrap();
        }
        assert_eq!(c.hist, reference, "bucket by bucket");
        assert_eq!(c.hist.len(), 10_000);
        assert_eq!(Quantiles::of(&c.hist), Quantiles::of(&reference));
        for q in [
            0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 1.0,
        ] {
            assert_eq!(
                c.hist.value_at_quantile(q),
                reference.value_at_quantile(q),
                "q {q}"
            );
        }
        assert_eq!(c.hist.max(), reference.max());
        assert_eq!(c.hist.min(), reference.min());
        // What averaging would have said is not the merged answer.
        let (qa, qb) = (
            wire(&a, &[], 0.0).classes[0].hist.clone(),
            wire(&b, &[], 0.0).classes[0].hist.clone(),
        );
        let qa = decode(&qa, &step::histogram())
            .unwrap()
            .value_at_quantile(0.99);
        let qb = decode(&qb, &step::histogram())
            .unwrap()
            .value_at_quantile(0.99);
        assert_ne!((qa + qb) / 2, reference.value_at_quantile(0.99));

        // Counts summed, each worker's kept.
        assert_eq!((c.sent, c.expected, c.received), (10_000, 10_000, 10_000));
        assert_eq!(c.offered_rate, 100.0);
        assert_eq!(c.per_worker.len(), 2);
        assert_eq!(c.per_worker[0].latency_count, 9_000);
        assert_eq!(c.per_worker[1].latency_count, 1_000);
        assert_eq!(c.per_worker[1].start_unix_ms, 1000.5);
        assert_eq!(c.send_lag.len(), 2);
        // Series merged by second: second 0 holds both workers' second 0.
        assert_eq!(c.series.len(), 3);
        let mut s0 = step::interval_histogram();
        for v in sa[0].iter().chain(&sb[0]) {
            s0.record(*v).unwrap();
        }
        assert_eq!(c.series[0], s0);
        assert_eq!(c.series[2].len(), 400);
        assert_eq!(
            c.series.iter().map(|s| s.len()).sum::<u64>(),
            10_000,
            "every message in one second"
        );
    }

    #[test]
    fn stalls_and_errors_are_kept_per_worker() {
        let mut a = wire(&[10], &[], 0.0);
        let mut b = wire(&[10], &[], 0.0);
        a.classes[0].stalls = vec![step::Stall {
            at_s: 1.0,
            secs: 1.0,
            resumed: true,
        }];
        b.classes[0].stalls = vec![step::Stall {
            at_s: 1.5,
            secs: 1.0,
            resumed: true,
        }];
        b.classes[0].errors = vec!["rpc requester 0: read failed".into()];
        b.classes[0].expected = 3;
        let m = merge(&[("a:1".into(), a), ("b:2".into(), b)]).unwrap();
        let c = &m.classes[0];
        assert_eq!(c.stalls.len(), 1, "one silence seen by both");
        assert_eq!(c.stalls[0].secs, 1.5);
        assert_eq!(c.errors, ["worker b:2: rpc requester 0: read failed"]);
        assert_eq!(c.lost(), 2);
    }

    #[test]
    fn bad_histograms_are_refused() {
        let mut w = wire(&[10], &[], 0.0);
        w.classes[0].hist = "not base64!".into();
        let e = merge(&[("a:1".into(), w.clone())]).unwrap_err();
        assert!(e.contains("worker a:1") && e.contains("base64"), "{e}");
        w.classes[0].hist = base64::engine::general_purpose::STANDARD.encode(b"garbage");
        assert!(merge(&[("a:1".into(), w.clone())]).is_err());
        let other = Histogram::<u64>::new_with_bounds(1, 1000, 2).unwrap();
        w.classes[0].hist = encode(&other).unwrap();
        let e = merge(&[("a:1".into(), w)]).unwrap_err();
        assert!(e.contains("bounds"), "{e}");
    }

    #[test]
    fn the_load_is_shared() {
        let w = Workload::parse(
            "[[rpc]]\nname='r'\nrate=900\np99_ms=1\nrequesters=3\nresponders=1\n\
             [[events]]\nname='f'\nrate=100\nfanout=3\npublishers=2\n\
             [[events]]\nname='q'\nrate=10\nqueue=5\n",
        )
        .unwrap();
        let parts: Vec<Workload> = (0..2).map(|i| share(&w, i, 2)).collect();
        assert_eq!(parts[0].rpc[0].rate + parts[1].rpc[0].rate, 900.0);
        assert_eq!(
            (parts[0].rpc[0].requesters, parts[1].rpc[0].requesters),
            (2, 1)
        );
        // One responder cannot be halved: each worker has one.
        assert_eq!(
            (parts[0].rpc[0].responders, parts[1].rpc[0].responders),
            (1, 1)
        );
        assert_eq!(parts[1].events[0].publishers, 1);
        assert_eq!(parts[1].events[0].fanout, Some(3), "fan-out kept");
        assert_eq!(
            (parts[0].events[1].queue, parts[1].events[1].queue),
            (Some(3), Some(2))
        );
        let total: f64 = parts.iter().map(|p| p.offered(1.0)).sum();
        assert_eq!(total, w.offered(1.0));
        assert_eq!(split(0, 0, 3), 1);
        assert_eq!(
            (0..3).map(|i| split(7, i, 3)).collect::<Vec<_>>(),
            [3, 2, 2]
        );
    }

    /// A worker on a loopback port, served by a thread of this test.
    fn worker() -> String {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = serve("127.0.0.1:0", &|a| {
                let _ = tx.send(a.to_string());
            });
        });
        rx.recv().unwrap()
    }

    fn ask(link: &mut Link, raw: &str) -> Reply {
        link.out.write_all(raw.as_bytes()).unwrap();
        link.recv(Instant::now() + Duration::from_secs(10), "test")
            .unwrap()
    }

    #[test]
    fn a_worker_survives_bad_requests() {
        let addr = worker();
        let mut l = Link::open(&addr).unwrap();
        let bad = [
            "not json\n",
            "{\"type\":\"launch\"}\n",
            "{\"type\":\"go\"}\n",
            "\u{0}\u{1}[[[\n",
        ];
        for raw in bad {
            match ask(&mut l, raw) {
                Reply::Error { message } => assert!(!message.is_empty()),
                other => panic!("{raw:?}: {other:?}"),
            }
        }
        l.out.write_all(b"\xff\xfe\n").unwrap();
        assert!(matches!(
            l.recv(Instant::now() + Duration::from_secs(5), "t").unwrap(),
            Reply::Error { message } if message.contains("UTF-8")
        ));
        // Requests it must refuse rather than attempt.
        let w = Workload::parse("[[rpc]]\nname='r'\nrate=10\np99_ms=1\n").unwrap();
        let spec = |f: &dyn Fn(&mut RunSpec)| {
            let mut s = RunSpec {
                workload: w.clone(),
                url: "nats://127.0.0.1:1".into(),
                factor: 1.0,
                secs: 1.0,
                drain_ms: 10,
                stall_ms: 10,
                tag: "t".into(),
            };
            f(&mut s);
            format!(
                "{}\n",
                serde_json::to_string(&Request::Setup(Box::new(s))).unwrap()
            )
        };
        for (raw, want) in [
            (spec(&|s| s.factor = -1.0), "factor"),
            (spec(&|s| s.secs = -1.0), "step length"),
            (spec(&|s| s.workload.rpc[0].rate = 1e-300), "per sender"),
            (
                spec(&|s| s.workload.rpc[0].requesters = 1_000_000),
                "connections",
            ),
            (spec(&|s| s.workload.rpc[0].p99_ms = None), "p99_ms"),
            // A server that is not there: the setup fails, saying so.
            (spec(&|_| {}), "could not connect"),
        ] {
            match ask(&mut l, &raw) {
                Reply::Error { message } => assert!(message.contains(want), "{message}"),
                other => panic!("{want}: {other:?}"),
            }
        }
        // Still answering, on this connection and a new one.
        assert!(matches!(
            ask(&mut l, "{\"type\":\"hello\"}\n"),
            Reply::Hello {
                protocol: PROTOCOL,
                ..
            }
        ));
        assert_eq!(hello(&[addr]).unwrap().len(), 1);
    }

    #[test]
    fn an_unreachable_or_silent_worker_is_named_not_waited_for() {
        // Nothing listens on a port just freed.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let e = hello(std::slice::from_ref(&port)).unwrap_err();
        assert!(e.contains(&port) && e.contains("could not connect"), "{e}");
        // A listener that accepts and never answers: a timeout, named.
        let mute = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = mute.local_addr().unwrap().to_string();
        let t = Instant::now();
        let e = hello(std::slice::from_ref(&addr)).unwrap_err();
        assert!(e.contains(&addr) && e.contains("no answer within"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(8));
        drop(mute);
    }
}
