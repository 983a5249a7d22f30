//! The monitoring endpoints against live state: 5 connections with 3
//! subscriptions each, checked field by field on every endpoint.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

async fn five_clients(s: &Shoal) -> (Vec<async_nats::Client>, Vec<async_nats::Subscriber>) {
    let mut clients = Vec::new();
    let mut subs = Vec::new();
    for i in 0..5 {
        let c = async_nats::ConnectOptions::new()
            .name(format!("client-{i}"))
            .connect(s.url())
            .await
            .unwrap();
        for j in 0..3 {
            subs.push(c.subscribe(format!("mon.{i}.{j}")).await.unwrap());
        }
        c.flush().await.unwrap();
        clients.push(c);
    }
    (clients, subs)
}

fn get(s: &Shoal, path: &str) -> Value {
    let (status, body) = s.http_get(path);
    assert_eq!(status, 200, "{path}: {body}");
    body
}

#[tokio::test]
async fn every_endpoint_reports_the_live_state() {
    for shards in SHARDS {
        let s = Shoal::start(shards, &["-m", "-1"], None);
        let (clients, subs) = five_clients(&s).await;
        // One message from client 0 to client 1's first subject.
        let mut probe = clients[1].subscribe("mon.probe").await.unwrap();
        sync_interest(&clients[1], &clients[0]).await;
        clients[0].publish("mon.1.0", "hello".into()).await.unwrap();
        clients[0].publish("mon.probe", "x".into()).await.unwrap();
        clients[0].flush().await.unwrap();
        next_msg(&mut probe).await;

        let varz = get(&s, "/varz");
        assert_eq!(varz["connections"], 5, "shards={shards}");
        assert_eq!(varz["subscriptions"], 16);
        assert!(varz["in_msgs"].as_u64().unwrap() >= 2);
        assert!(varz["out_msgs"].as_u64().unwrap() >= 2);
        assert!(varz["mem"].as_u64().unwrap() > 0);
        assert_eq!(
            varz["port"].as_u64().unwrap().to_string(),
            s.addr.rsplit(':').next().unwrap()
        );
        assert!(varz["server_id"].as_str().unwrap().starts_with('N'));
        // Per-shard figures add up to the totals.
        let per = varz["shards"].as_array().unwrap();
        assert_eq!(per.len(), shards);
        let sum = |k: &str| per.iter().map(|x| x[k].as_u64().unwrap()).sum::<u64>();
        assert_eq!(sum("connections"), 5);
        assert_eq!(sum("subscriptions"), 16);

        let connz = get(&s, "/connz?subs=1");
        assert_eq!(connz["num_connections"], 5);
        assert_eq!(connz["total"], 5);
        let conns = connz["connections"].as_array().unwrap();
        let mut names: Vec<&str> = conns.iter().map(|c| c["name"].as_str().unwrap()).collect();
        names.sort();
        assert_eq!(
            names,
            ["client-0", "client-1", "client-2", "client-3", "client-4"]
        );
        for c in conns {
            let name = c["name"].as_str().unwrap();
            let i: usize = name.trim_start_matches("client-").parse().unwrap();
            let want_subs = if i == 1 { 4 } else { 3 };
            assert_eq!(c["subscriptions"], want_subs, "{name}");
            let list = c["subscriptions_list"].as_array().unwrap();
            assert_eq!(list.len(), want_subs);
            assert!(list.iter().any(|s| s == &Value::from(format!("mon.{i}.0"))));
            assert_eq!(c["pending_bytes"], 0);
            assert_eq!(c["lang"], "rust");
        }
        let by_name = |n: &str| conns.iter().find(|c| c["name"] == n).unwrap();
        // hello, the probe, and the visibility probes of sync_interest.
        assert!(by_name("client-1")["out_msgs"].as_u64().unwrap() >= 3);
        assert_eq!(by_name("client-2")["out_msgs"], 0);
        assert!(by_name("client-0")["in_msgs"].as_u64().unwrap() >= 2);
        // Client libraries get an RTT ping on the first look, as from
        // nats-server; the next look has the round trip.
        let mut rtts = 0;
        for _ in 0..100 {
            let c = get(&s, "/connz");
            rtts = c["connections"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["rtt"].as_str().is_some_and(|r| !r.is_empty()))
                .count();
            if rtts == 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(rtts, 5, "every client has an rtt");
        // Paging and sorting.
        let page = get(&s, "/connz?limit=2&offset=1");
        assert_eq!(page["num_connections"], 2);
        assert_eq!(page["offset"], 1);
        let cids: Vec<u64> = page["connections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["cid"].as_u64().unwrap())
            .collect();
        let all: Vec<u64> = get(&s, "/connz")["connections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["cid"].as_u64().unwrap())
            .collect();
        assert_eq!(cids, all[1..3]);
        let by_subs = get(&s, "/connz?sort=subs&limit=1");
        assert_eq!(by_subs["connections"][0]["name"], "client-1");
        assert_eq!(s.http_get("/connz?sort=nonsense").0, 400);

        let subsz = get(&s, "/subsz?subs=1");
        assert_eq!(subsz["num_subscriptions"], 16);
        assert_eq!(subsz["subscriptions_list"].as_array().unwrap().len(), 16);

        let routez = get(&s, "/routez");
        assert_eq!(routez["num_routes"], 0);
        assert_eq!(get(&s, "/healthz")["status"], "ok");

        assert_eq!(s.http_get("/metrics").0, 200);
        let text = metrics_text(s.http_addr.as_ref().unwrap());
        assert!(text.contains("gnatsd_varz_connections 5\n"), "{text}");
        assert!(text.contains("gnatsd_varz_subscriptions 16\n"));
        for i in 0..shards {
            assert!(text.contains(&format!("shoal_shard_connections{{shard=\"{i}\"}}")));
        }

        // A closed connection leaves every view.
        drop((clients, subs, probe));
        // (An async wait: the clients' tasks must run to close.)
        for _ in 0..500 {
            if s.http_get("/varz").1["connections"] == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(get(&s, "/varz")["connections"], 0);
        assert_eq!(get(&s, "/connz")["num_connections"], 0);
        assert_eq!(get(&s, "/subsz")["num_subscriptions"], 0);
    }
}

/// The raw body of `/metrics`.
fn metrics_text(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned()
}

#[tokio::test]
async fn healthz_is_unavailable_until_the_cluster_interest_arrived() {
    // A "peer" that accepts the route connection and never answers the
    // handshake: the node's first attempt lasts the route auth timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let seed = format!("nats://{}", silent.local_addr().unwrap());
    let held = std::thread::spawn(move || silent.accept().map(|(s, _)| s));
    let conf = format!(
        "cluster {{ name: h, listen: \"127.0.0.1:-1\", routes: [\"{seed}\"], authorization {{ timeout: 2s }} }}"
    );
    let s = Shoal::start(1, &["-m", "-1"], Some(&conf));
    let (status, body) = s.http_get("/healthz");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    // Once the attempt is over (the seed may simply be down), it is ready.
    eventually(
        Duration::from_secs(10),
        "healthy after the first attempt",
        || s.http_get("/healthz").0 == 200,
    );
    drop(held);
}

/// `http_req_stats` counts the endpoints only: a scanner asking for
/// thousands of made-up paths must not grow the server's memory.
#[tokio::test]
async fn request_stats_count_only_the_endpoints() {
    let s = Shoal::start(1, &["-m", "-1"], None);
    for i in 0..50 {
        let (status, _) = s.http_get(&format!("/scan-{i}"));
        assert_eq!(status, 404);
    }
    let varz = get(&s, "/varz");
    let stats = varz["http_req_stats"].as_object().unwrap();
    assert!(
        stats.keys().all(|k| !k.starts_with("/scan")),
        "unknown paths counted: {stats:?}"
    );
    assert_eq!(stats["/varz"], 1, "{stats:?}");
}
