//! Request-reply: C requesters, each waiting for its reply before sending
//! the next request (closed loop), against R responders in a queue group.
//! Latency is recorded per request in an HDR histogram.

use crate::conn::Conn;
use hdrhistogram::Histogram;
use shoal_core::proto::{self, ServerOp};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct ReqRepParams {
    pub url: String,
    pub subject: String,
    pub requesters: usize,
    pub responders: usize,
    pub size: usize,
    /// Requests per requester.
    pub requests: u64,
    /// Open loop: total requests per second, spread evenly over the
    /// requesters. Latency is then measured from when each request was due,
    /// not when it was sent, so a stalled server cannot hide its stall by
    /// delaying the next requests (no coordinated omission). `None`: closed
    /// loop, each requester sends as soon as it has its reply.
    pub rate: Option<f64>,
}

/// When each request of one requester is due.
struct Pace {
    start: Instant,
    interval: Option<Duration>,
    next: u32,
}

impl Pace {
    fn new(rate_per_requester: Option<f64>) -> Self {
        Pace {
            start: Instant::now(),
            interval: rate_per_requester.map(|r| Duration::from_secs_f64(1.0 / r)),
            next: 0,
        }
    }

    /// Waits until the next request is due and returns when it was due.
    fn wait_due(&mut self) -> Instant {
        let Some(iv) = self.interval else {
            return Instant::now();
        };
        let due = self.start + iv * self.next;
        self.next += 1;
        // Sleep most of the wait, spin the last 100 µs: a sleep overshoots
        // by tens of microseconds, which would count as latency.
        let now = Instant::now();
        if due > now + Duration::from_micros(200) {
            std::thread::sleep(due - now - Duration::from_micros(100));
        }
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        due
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ReqRepResult {
    pub requests: u64,
    pub requests_per_sec: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub server_version: String,
}

fn responder(
    url: &str,
    subject: &str,
    stop: Arc<AtomicBool>,
) -> io::Result<std::thread::JoinHandle<io::Result<()>>> {
    let mut c = Conn::connect(url)?;
    c.subscribe(subject, Some("responders"), 1);
    c.ping()?;
    c.set_read_timeout(Duration::from_millis(200))?;
    Ok(std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match c.next_op() {
                Ok(ServerOp::Msg(m)) => {
                    if let Some(reply) = m.reply {
                        proto::write_pub(&mut c.wbuf, &reply, None, None, &m.payload);
                        c.flush()?;
                    }
                }
                Ok(_) => {}
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }))
}

pub fn run(p: &ReqRepParams) -> io::Result<ReqRepResult> {
    if p.requesters == 1 && p.responders == 1 {
        return run_inline(p);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (req_url, resp_url) = crate::conn::endpoints(&p.url);
    let mut responders = Vec::new();
    for _ in 0..p.responders {
        responders.push(responder(&resp_url, &p.subject, stop.clone())?);
    }
    let ready = Arc::new(Barrier::new(p.requesters + 1));
    let mut requesters = Vec::new();
    let mut version = String::new();
    for i in 0..p.requesters {
        let mut c = Conn::connect(&req_url)?;
        version = c.server_version();
        let inbox = format!("_INBOX.bench.{i}");
        c.subscribe(&inbox, None, 1);
        c.ping()?;
        c.set_read_timeout(Duration::from_secs(5))?;
        let (ready, subject, size, n) = (ready.clone(), p.subject.clone(), p.size, p.requests);
        let rate = p.rate.map(|r| r / p.requesters as f64);
        requesters.push(std::thread::spawn(move || -> io::Result<Histogram<u64>> {
            let mut h =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let payload = vec![b'r'; size];
            let request = |c: &mut Conn| -> io::Result<()> {
                proto::write_pub(
                    &mut c.wbuf,
                    subject.as_bytes(),
                    Some(inbox.as_bytes()),
                    None,
                    &payload,
                );
                c.flush()?;
                wait_reply(c)
            };
            // Warm up the path (caches, interest) before measuring.
            for k in 0..100 {
                request(&mut c).map_err(|e| stalled(e, "warm-up request", k, 100))?;
            }
            ready.wait();
            let mut pace = Pace::new(rate);
            for k in 0..n {
                let t = pace.wait_due();
                request(&mut c).map_err(|e| stalled(e, &format!("requester {i}"), k, n))?;
                h.record(t.elapsed().as_nanos() as u64 / 1000 + 1)
                    .expect("in bounds");
            }
            Ok(h)
        }));
    }
    // Responders' and requesters' inbox subscriptions visible everywhere.
    crate::conn::settle(&p.url);
    ready.wait();
    let start = Instant::now();
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    for r in requesters {
        all.add(
            r.join()
                .map_err(|_| io::Error::other("requester panicked"))??,
        )
        .expect("same bounds");
    }
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for r in responders {
        r.join()
            .map_err(|_| io::Error::other("responder panicked"))??;
    }
    Ok(summarize(&all, secs, version))
}

/// Says what a read timeout means in a run: the server stopped answering
/// after `done` of `total` replies. Other errors pass unchanged.
pub fn stalled(e: io::Error, who: &str, done: u64, total: u64) -> io::Error {
    if matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{who}: no reply for 5 s after {done} of {total} replies"),
        )
    } else {
        e
    }
}

/// Rate and percentiles of latencies recorded in microseconds.
pub fn summarize(h: &Histogram<u64>, secs: f64, server_version: String) -> ReqRepResult {
    let q = |x: f64| h.value_at_quantile(x) as f64;
    ReqRepResult {
        requests: h.len(),
        requests_per_sec: h.len() as f64 / secs,
        p50_us: q(0.5),
        p90_us: q(0.9),
        p99_us: q(0.99),
        p999_us: q(0.999),
        max_us: h.max() as f64,
        server_version,
    }
}

fn wait_reply(c: &mut Conn) -> io::Result<()> {
    loop {
        match c.next_op()? {
            ServerOp::Msg(m) => {
                if let Some(h) = &m.headers {
                    if h.starts_with(b"NATS/1.0 503") {
                        return Err(io::Error::other("no responders"));
                    }
                }
                return Ok(());
            }
            ServerOp::Err(e) => {
                return Err(io::Error::other(String::from_utf8_lossy(&e).into_owned()))
            }
            _ => {}
        }
    }
}

/// One requester and one responder driven by the same thread: request out,
/// read it as the responder, reply, read the reply. The generator adds no
/// thread switch to the measured path, so the figures are the server's two
/// hops plus loopback, which is what a sequential RPC latency should show.
fn run_inline(p: &ReqRepParams) -> io::Result<ReqRepResult> {
    let (req_url, resp_url) = crate::conn::endpoints(&p.url);
    let mut resp = Conn::connect(&resp_url)?;
    resp.subscribe(&p.subject, Some("responders"), 1);
    resp.ping()?;
    resp.set_read_timeout(Duration::from_secs(5))?;
    let mut req = Conn::connect(&req_url)?;
    let inbox = "_INBOX.bench.inline";
    req.subscribe(inbox, None, 1);
    req.ping()?;
    req.set_read_timeout(Duration::from_secs(5))?;
    crate::conn::settle(&p.url);
    let version = req.server_version();
    let payload = vec![b'r'; p.size];
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let mut one = |t: Instant, record: bool, h: &mut Histogram<u64>| -> io::Result<()> {
        proto::write_pub(
            &mut req.wbuf,
            p.subject.as_bytes(),
            Some(inbox.as_bytes()),
            None,
            &payload,
        );
        req.flush()?;
        loop {
            match resp.next_op()? {
                ServerOp::Msg(m) => {
                    let reply = m
                        .reply
                        .ok_or_else(|| io::Error::other("request without reply subject"))?;
                    proto::write_pub(&mut resp.wbuf, &reply, None, None, &m.payload);
                    resp.flush()?;
                    break;
                }
                ServerOp::Err(e) => {
                    return Err(io::Error::other(String::from_utf8_lossy(&e).into_owned()))
                }
                _ => {}
            }
        }
        wait_reply(&mut req)?;
        if record {
            h.record(t.elapsed().as_nanos() as u64 / 1000 + 1)
                .expect("in bounds");
        }
        Ok(())
    };
    for k in 0..1000 {
        one(Instant::now(), false, &mut h).map_err(|e| stalled(e, "warm-up", k, 1000))?;
    }
    let start = Instant::now();
    let mut pace = Pace::new(p.rate);
    for k in 0..p.requests {
        let due = pace.wait_due();
        one(due, true, &mut h).map_err(|e| stalled(e, "requester", k, p.requests))?;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(summarize(&h, secs, version))
}

/// Draws latency percentiles (p50 … p99.9, log scale) for one or more
/// servers' results, so an operator can look rather than read.
pub fn plot(results: &[(String, ReqRepResult)], path: &str, title: &str) -> io::Result<()> {
    use plotters::prelude::*;
    let err = |e: String| crate::plot::err(e);
    let labels = ["p50", "p90", "p99", "p99.9", "max"];
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let max_us = results.iter().map(|(_, r)| r.max_us).fold(10.0, f64::max) * 1.5;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0usize..labels.len() - 1, (1.0..max_us).log_scale())
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_labels(labels.len())
        .x_label_formatter(&|i| labels.get(*i).copied().unwrap_or("").to_string())
        .x_desc("percentile")
        .y_desc("latency (µs, log scale)")
        .draw()
        .map_err(|e| err(e.to_string()))?;
    let series = results
        .iter()
        .map(|(name, r)| {
            let pts = [r.p50_us, r.p90_us, r.p99_us, r.p999_us, r.max_us];
            (name.clone(), pts.into_iter().enumerate().collect())
        })
        .collect();
    crate::plot::draw_series(&mut chart, series)?;
    root.present().map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_from_the_histogram() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for us in 1..=1000 {
            h.record(us).unwrap();
        }
        let r = summarize(&h, 2.0, "v".into());
        assert_eq!(r.requests, 1000);
        assert_eq!(r.requests_per_sec, 500.0);
        assert!((r.p50_us - 500.0).abs() <= 1.0, "{}", r.p50_us);
        assert!((r.p99_us - 990.0).abs() <= 1.0, "{}", r.p99_us);
        assert_eq!(r.max_us, 1000.0);
    }

    #[test]
    fn a_timeout_says_how_far_the_run_got() {
        let e = stalled(
            io::Error::from(io::ErrorKind::WouldBlock),
            "requester 3",
            4634,
            6000,
        );
        assert_eq!(
            e.to_string(),
            "requester 3: no reply for 5 s after 4634 of 6000 replies"
        );
        assert_eq!(
            stalled(io::Error::other("boom"), "r", 1, 2).to_string(),
            "boom"
        );
    }

    #[test]
    fn latency_plot_writes_an_svg() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for us in [40, 45, 50, 90, 400] {
            h.record(us).unwrap();
        }
        let r = summarize(&h, 1.0, "v".into());
        let path = std::env::temp_dir().join(format!("shoal-lat-{}.svg", std::process::id()));
        plot(&[("a".into(), r)], path.to_str().unwrap(), "t").unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("percentile"));
        let _ = std::fs::remove_file(path);
    }
}
