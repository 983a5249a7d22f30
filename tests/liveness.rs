//! Liveness across cores and nodes: many short exchanges (request-reply,
//! concurrent requesters, pub->sub, a queue group) on fresh connections, so
//! with two shards most pairs talk across shards; every one must complete
//! and no wait may exceed one second. This is a correctness check, not a
//! speed assertion: it fails when a shard parks with work waiting (glommio's
//! early-preempt park, a lost cross-core wake-up), which showed as exchanges
//! that never completed. Both CPUs are kept busy by two spinning threads
//! while it runs, since a descheduled shard thread is what opens the races.
//!
//! Rounds: `SHOAL_LIVENESS_ROUNDS` (default 40); `bench/stress.sh` runs the
//! same exchanges for as long as asked and reports stalls per 1,000.

mod common;

use common::*;
use shoal_bench::liveness::{self, LivenessParams};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Busy loops pinned to every CPU, stopped when dropped.
struct CpuHogs {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuHogs {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = (0..cpus)
            .map(|cpu| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    // SAFETY: a zeroed cpu_set_t is valid; one CPU is set.
                    unsafe {
                        let mut set: libc::cpu_set_t = std::mem::zeroed();
                        libc::CPU_SET(cpu, &mut set);
                        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
                    }
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        CpuHogs { stop, threads }
    }
}

impl Drop for CpuHogs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn rounds() -> u64 {
    std::env::var("SHOAL_LIVENESS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

fn check(url: &str, rounds: u64, label: &str) {
    let mut p = LivenessParams::new(url, rounds);
    p.msgs = 50;
    p.deadline = Duration::from_secs(1);
    let report = liveness::run(&p, &|| {}).unwrap_or_else(|e| panic!("{label}: {e}"));
    for (shape, c) in &report.shapes {
        assert_eq!(c.runs, rounds, "{label}: {shape} ran every round");
    }
    assert_eq!(
        report.total_stalls,
        0,
        "{label}: exchanges stalled (waited over 1 s):\n{}",
        report.summary()
    );
}

#[test]
fn every_exchange_completes_across_shards_with_busy_cpus() {
    let n = rounds();
    let two = Shoal::start(2, &[], None);
    let one = Shoal::start(1, &[], None);
    let _hogs = CpuHogs::start();
    check(&two.url(), n, "--shards 2");
    check(&one.url(), n / 2, "--shards 1");
}

#[test]
fn every_exchange_completes_across_nodes_with_busy_cpus() {
    let n = rounds();
    let (a, b) = two_node_cluster();
    let _hogs = CpuHogs::start();
    check(&format!("{},{}", a.url(), b.url()), n / 2, "two nodes");
}

/// Two nodes of two shards each, the second seeded with the first, ready
/// (both see the route).
fn two_node_cluster() -> (Shoal, Shoal) {
    let a = Shoal::start(
        2,
        &["--cluster", "nats://127.0.0.1:-1", "--cluster_name", "live"],
        None,
    );
    let seed = a.route_url();
    let b = Shoal::start(
        2,
        &[
            "--cluster",
            "nats://127.0.0.1:-1",
            "--cluster_name",
            "live",
            "--routes",
            &seed,
        ],
        None,
    );
    (a, b)
}

/// The watchdog: a shard whose inbox holds control messages and that gets
/// nothing done for over a second is reported (log line and `/varz`). The
/// test hook delays every control message by 2.5 s, so the subscription's
/// interest waits in the other shard's inbox while that shard does nothing.
#[test]
fn a_shard_without_progress_with_work_waiting_is_reported() {
    let s = Shoal::start_with_env(
        2,
        &["-m", "-1"],
        None,
        &[("SHOAL_TEST_CONTROL_DELAY_MS", "2500")],
    );
    assert_eq!(s.http_get("/varz").1["stalls"], 0);
    // Subscriptions from a few connections: at least one lands on each
    // shard, so both inboxes get interest to apply.
    let mut conns = Vec::new();
    for i in 0..6 {
        let mut c = shoal_bench::conn::Conn::connect(&s.url()).unwrap();
        c.subscribe(&format!("wd.{i}"), None, 1);
        c.ping().unwrap();
        conns.push(c);
    }
    eventually(Duration::from_secs(10), "a stall report", || {
        s.log_contains("has made no progress for")
    });
    let varz = s.http_get("/varz").1;
    assert!(varz["stalls"].as_u64().unwrap() >= 1, "{varz}");
    assert!(s.log_contains("control messages in its inbox"));
}

/// A connection storm (2,000 connections opened, handshaken and dropped
/// as fast as 8 tasks can) next to a healthy client on the same single
/// shard: the healthy client's round trips never wait over a second, and
/// every storm connection is served. (A storm once froze a healthy stream
/// for 26 s; the accept loop now returns to the reactor every turn slice.)
#[tokio::test]
async fn a_connection_storm_does_not_hold_back_healthy_clients() {
    let s = Shoal::start(1, &[], None);
    let mut healthy = s.raw().await;
    healthy.send(b"CONNECT {\"verbose\":false}\r\n").await;
    assert!(healthy.ping().await.is_empty());
    let addr = s.addr.clone();
    let storm: Vec<_> = (0..8)
        .map(|_| {
            let addr = addr.clone();
            tokio::spawn(async move {
                let mut served = 0;
                for _ in 0..250 {
                    let mut r = Raw::connect(&addr).await;
                    r.send(b"CONNECT {\"verbose\":false}\r\nPING\r\n").await;
                    if r.line().await.as_deref() == Some("PONG") {
                        served += 1;
                    }
                }
                served
            })
        })
        .collect();
    let mut worst = Duration::ZERO;
    while !storm.iter().all(|t| t.is_finished()) {
        let t = std::time::Instant::now();
        assert!(healthy.ping().await.is_empty());
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut served = 0;
    for t in storm {
        served += t.await.unwrap();
    }
    assert_eq!(served, 2000, "every storm connection is served");
    assert!(
        worst < Duration::from_secs(1),
        "a round trip waited {worst:?}"
    );
}
