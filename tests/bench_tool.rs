//! The load generator against a real server: every scenario briefly, with
//! its own loss and order checks, so the numbers it prints can be trusted.

mod common;

use common::*;
use shoal_bench::{pubsub, reqrep};

#[test]
fn pubsub_scenario_counts_every_message() {
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], None);
        for (publishers, subscribers) in [(1, 1), (1, 3), (3, 2)] {
            let r = pubsub::run(&pubsub::PubSubParams {
                url: s.url(),
                subject: "bench.t".into(),
                publishers,
                subscribers,
                size: 64,
                msgs: 20_000,
            })
            .unwrap();
            assert_eq!(r.lost, 0, "shards={shards}");
            assert_eq!(r.out_of_order, 0);
            assert!(r.delivered_per_sec > 0.0);
            assert_eq!(
                r.server_version,
                concat!("shoal ", env!("CARGO_PKG_VERSION"))
            );
        }
    }
}

#[test]
fn reqrep_scenarios_complete() {
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], None);
        for (requesters, responders) in [(1, 1), (4, 2)] {
            let r = reqrep::run(&reqrep::ReqRepParams {
                url: s.url(),
                subject: format!("bench.rpc.{requesters}"),
                requesters,
                responders,
                size: 16,
                requests: 500,
                rate: None,
            })
            .unwrap();
            assert_eq!(r.requests, 500 * requesters as u64);
            assert!(r.p50_us > 0.0 && r.p50_us <= r.p99_us && r.p99_us <= r.max_us);
        }
    }
}

#[test]
fn queue_scenario_checks_exactly_once() {
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], None);
        let r = shoal_bench::queue::run(&shoal_bench::queue::QueueParams {
            url: s.url(),
            subject: "bench.q".into(),
            publishers: 2,
            members: 4,
            size: 16,
            msgs: 10_000,
        })
        .unwrap();
        assert_eq!((r.duplicates, r.missing), (0, 0), "shards={shards}");
        assert_eq!(r.per_member.iter().sum::<u64>(), 20_000);
        assert!(r.per_member.iter().all(|&n| n > 0), "{:?}", r.per_member);
    }
}

#[test]
fn reqrep_open_loop_paces_requests() {
    let s = Shoal::start(1, &[], None);
    let t = std::time::Instant::now();
    let r = reqrep::run(&reqrep::ReqRepParams {
        url: s.url(),
        subject: "bench.paced".into(),
        requesters: 2,
        responders: 1,
        size: 16,
        requests: 200,
        rate: Some(1000.0),
    })
    .unwrap();
    assert_eq!(r.requests, 400);
    // 400 requests at 1,000/s take at least 0.4 s: the rate was honoured.
    assert!(t.elapsed() >= std::time::Duration::from_millis(400));
    assert!(r.requests_per_sec <= 1100.0, "{}", r.requests_per_sec);
}

#[test]
fn sweep_covers_every_size() {
    let s = Shoal::start(2, &[], None);
    let rows = shoal_bench::sweep::run(&[s.url()], &[16, 1024], &[1, 3], 1 << 20, &|| {}).unwrap();
    let points: Vec<(usize, usize)> = rows.iter().map(|r| (r.subscribers, r.size)).collect();
    assert_eq!(points, [(1, 16), (1, 1024), (3, 16), (3, 1024)]);
    assert!(rows.iter().all(|r| r.lost == 0 && r.msgs_per_sec > 0.0));
}

/// The sink answers every PING (the publisher's final flush included) and
/// swallows the rest, so `pub` against it measures the tool itself.
#[test]
fn pub_against_the_sink() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("nats://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || shoal_bench::sink::serve_on(listener));
    let r = shoal_bench::publish::run(&shoal_bench::publish::PubParams {
        url,
        subject: "s".into(),
        publishers: 2,
        size: 16,
        msgs: 100_000,
    })
    .unwrap();
    assert_eq!(r.server_version, "sink");
    assert!(r.msgs_per_sec > 0.0);
}

#[test]
fn pub_and_conns_scenarios() {
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], None);
        let r = shoal_bench::publish::run(&shoal_bench::publish::PubParams {
            url: s.url(),
            subject: "bench.pub".into(),
            publishers: 2,
            size: 16,
            msgs: 50_000,
        })
        .unwrap();
        assert!(r.msgs_per_sec > 0.0);
        let r = shoal_bench::conns::run(&shoal_bench::conns::ConnsParams {
            url: s.url(),
            subject: "bench.conns".into(),
            connections: 200,
            size: 16,
            msgs: 20,
        })
        .unwrap();
        assert_eq!(r.lost, 0, "shards={shards}");
    }
}
