//! Clustering: real `shoal` processes on loopback forming a cluster from one
//! seed, async-nats clients on different nodes. Every delivery is counted.

mod common;

use bytes::Bytes;
use common::*;
use futures::StreamExt;
use std::collections::HashMap;
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(15);

/// A cluster node: route listener and monitoring on free ports, joined
/// through `seed` when given.
fn node(shards: usize, seed: Option<&str>, extra: &[&str]) -> Shoal {
    let mut args = vec!["--cluster", "nats://127.0.0.1:-1", "-m", "-1"];
    if !extra.contains(&"--cluster_name") {
        args.extend(["--cluster_name", "test"]);
    }
    if let Some(seed) = seed {
        args.extend(["--routes", seed]);
    }
    args.extend_from_slice(extra);
    Shoal::start(shards, &args, None)
}

fn num_routes(n: &Shoal) -> usize {
    n.http_get("/routez").1["num_routes"].as_u64().unwrap_or(0) as usize
}

fn healthy(n: &Shoal) -> bool {
    n.http_get("/healthz").0 == 200
}

/// Waits until every node has a link to every other one and is healthy.
fn full_mesh(nodes: &[&Shoal]) {
    eventually(SETTLE, "a full mesh", || {
        nodes
            .iter()
            .all(|n| num_routes(n) == nodes.len() - 1 && healthy(n))
    });
}

/// `n` nodes: the first is the seed of all the others.
fn cluster(n: usize, shards: usize) -> Vec<Shoal> {
    let first = node(shards, None, &[]);
    let seed = first.route_url();
    let mut nodes = vec![first];
    for _ in 1..n {
        nodes.push(node(shards, Some(&seed), &[]));
    }
    full_mesh(&nodes.iter().collect::<Vec<_>>());
    nodes
}

/// Receives everything that arrives until `quiet` passes without a message.
async fn drain(sub: &mut async_nats::Subscriber, quiet: Duration) -> Vec<async_nats::Message> {
    let mut got = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(quiet, sub.next()).await {
        got.push(m);
    }
    got
}

async fn wait_no_responders(client: &async_nats::Client, subject: &str) {
    for _ in 0..500 {
        match client.request(subject.to_string(), Bytes::new()).await {
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => return,
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    panic!("interest in {subject} was never retracted");
}

#[tokio::test]
async fn three_nodes_from_one_seed_deliver_exactly_once() {
    for shards in SHARDS {
        let nodes = cluster(3, shards);
        let (c1, c2, c3) = (
            nodes[0].client().await,
            nodes[1].client().await,
            nodes[2].client().await,
        );

        // Sub on node 1, pub on node 2: exactly once.
        let mut s1 = c1.subscribe("orders.*").await.unwrap();
        sync_interest(&c1, &c2).await;
        for i in 0..100 {
            c2.publish("orders.new", i.to_string().into())
                .await
                .unwrap();
        }
        c2.flush().await.unwrap();
        let got = drain(&mut s1, Duration::from_millis(300)).await;
        let seqs: Vec<String> = got
            .iter()
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
            .collect();
        let want: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        assert_eq!(
            seqs, want,
            "shards={shards}: node 2 -> node 1, in order, once"
        );

        // Subs on nodes 1 and 3: each exactly once.
        let mut s3 = c3.subscribe("orders.new").await.unwrap();
        sync_interest(&c3, &c2).await;
        for _ in 0..50 {
            c2.publish("orders.new", "x".into()).await.unwrap();
        }
        c2.flush().await.unwrap();
        assert_eq!(drain(&mut s1, Duration::from_millis(300)).await.len(), 50);
        assert_eq!(drain(&mut s3, Duration::from_millis(300)).await.len(), 50);

        // A queue group spread over three nodes: exactly once in total.
        let clients = [&c1, &c2, &c3];
        let mut members = Vec::new();
        for c in clients {
            for _ in 0..2 {
                members.push(c.queue_subscribe("jobs", "workers".into()).await.unwrap());
            }
        }
        for c in clients {
            sync_interest(c, &c1).await;
            sync_interest(c, &c2).await;
            sync_interest(c, &c3).await;
        }
        for (i, c) in clients.iter().enumerate() {
            for j in 0..100 {
                c.publish("jobs", format!("{i}.{j}").into()).await.unwrap();
            }
            c.flush().await.unwrap();
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut per_node = [0usize; 3];
        for (k, m) in members.iter_mut().enumerate() {
            for msg in drain(m, Duration::from_millis(300)).await {
                *seen
                    .entry(String::from_utf8_lossy(&msg.payload).into())
                    .or_default() += 1;
                per_node[k / 2] += 1;
            }
        }
        assert_eq!(seen.len(), 300, "shards={shards}: every job delivered");
        assert!(seen.values().all(|&n| n == 1), "a job delivered twice");
        // Local members are preferred: each node's publisher fed its own.
        assert_eq!(per_node, [100, 100, 100], "local members preferred");

        // Request on node 3, responder on node 1.
        let responder = nodes[0].client().await;
        let mut service = responder.subscribe("svc.echo").await.unwrap();
        let r = responder.clone();
        let task = tokio::spawn(async move {
            while let Some(m) = service.next().await {
                if let Some(reply) = m.reply {
                    r.publish(reply, m.payload).await.unwrap();
                    r.flush().await.unwrap();
                }
            }
        });
        sync_interest(&responder, &c3).await;
        let answer = c3.request("svc.echo", "ping".into()).await.unwrap();
        assert_eq!(&answer.payload[..], b"ping");

        // Unsubscribe propagates: the request finds nobody.
        let mut gone = c1.subscribe("gone.soon").await.unwrap();
        sync_interest(&c1, &c3).await;
        gone.unsubscribe().await.unwrap();
        c1.flush().await.unwrap();
        wait_no_responders(&c3, "gone.soon").await;

        // A client's disconnect retracts all its interest cluster-wide.
        drop(responder);
        task.abort();
        wait_no_responders(&c3, "svc.echo").await;
    }
}

/// Every node has subscribers with overlapping wildcards and a publisher;
/// all publish at once. Each subscription must get every message exactly
/// once: no loop, no duplicate, whatever the mesh.
async fn storm(nodes: &[Shoal], per_publisher: usize) {
    let mut clients = Vec::new();
    for n in nodes {
        clients.push(n.client().await);
    }
    let mut subs = Vec::new();
    for c in &clients {
        subs.push(c.subscribe("storm.>").await.unwrap());
        subs.push(c.subscribe("storm.*").await.unwrap());
        subs.push(c.subscribe("storm.data").await.unwrap());
    }
    for a in &clients {
        for b in &clients {
            sync_interest(a, b).await;
        }
    }
    let mut tasks = Vec::new();
    for (p, c) in clients.iter().enumerate() {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_publisher {
                c.publish("storm.data", format!("{p}:{i}").into())
                    .await
                    .unwrap();
            }
            c.flush().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = nodes.len() * per_publisher;
    for (k, s) in subs.iter_mut().enumerate() {
        let got = drain(s, Duration::from_millis(500)).await;
        let mut seen: HashMap<Bytes, usize> = HashMap::new();
        for m in &got {
            *seen.entry(m.payload.clone()).or_default() += 1;
        }
        assert_eq!(
            got.len(),
            total,
            "subscription {k} got {} of {total} deliveries",
            got.len()
        );
        assert_eq!(seen.len(), total, "subscription {k}: duplicates");
    }
}

#[tokio::test]
async fn no_loops_or_duplicates_in_full_meshes_of_3_and_5() {
    let three = cluster(3, 2);
    storm(&three, 2000).await;
    drop(three);
    let five = cluster(5, 1);
    storm(&five, 1000).await;
}

#[tokio::test]
async fn simultaneous_dial_ends_with_one_link() {
    for _ in 0..3 {
        let (pa, pb) = (free_port(), free_port());
        let (ua, ub) = (
            format!("nats://127.0.0.1:{pa}"),
            format!("nats://127.0.0.1:{pb}"),
        );
        let (la, lb) = (format!("127.0.0.1:{pa}"), format!("127.0.0.1:{pb}"));
        // Both start at once, each with the other as its seed.
        let (a, b) = std::thread::scope(|s| {
            let a =
                s.spawn(|| Shoal::start(1, &["--cluster", &la, "--routes", &ub, "-m", "-1"], None));
            let b =
                s.spawn(|| Shoal::start(1, &["--cluster", &lb, "--routes", &ua, "-m", "-1"], None));
            (a.join().unwrap(), b.join().unwrap())
        });
        full_mesh(&[&a, &b]);
        // Still one link each once any redial would have happened.
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(num_routes(&a), 1);
        assert_eq!(num_routes(&b), 1);
        let (ca, cb) = (a.client().await, b.client().await);
        let mut s = cb.subscribe("x").await.unwrap();
        sync_interest(&cb, &ca).await;
        for _ in 0..10 {
            ca.publish("x", "y".into()).await.unwrap();
        }
        ca.flush().await.unwrap();
        assert_eq!(drain(&mut s, Duration::from_millis(300)).await.len(), 10);
    }
}

#[tokio::test]
async fn garbage_on_a_route_is_rejected_and_the_node_keeps_serving() {
    use std::io::{Read, Write};
    let nodes = cluster(2, 2);
    let route_addr = nodes[0].route_addr.clone().unwrap();

    // Garbage instead of a handshake.
    let mut s = std::net::TcpStream::connect(&route_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"\xff\xff\xff\x7f\x01garbage garbage").unwrap();
    let mut buf = [0u8; 64];
    assert!(
        matches!(s.read(&mut buf), Ok(0) | Err(_)),
        "connection kept"
    );

    // A valid handshake, then a malformed frame on the established link.
    let mut s = std::net::TcpStream::connect(&route_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = bytes::BytesMut::new();
    shoal_core::route::write_info(
        &mut out,
        &shoal_core::route::RouteInfo {
            proto: shoal_core::route::ROUTE_PROTO,
            server_id: "NFAKEPEER".into(),
            cluster: "test".into(),
            ..Default::default()
        },
    );
    // A Msg frame whose payload is not a valid archive.
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&[shoal_core::route::FrameKind::Msg as u8]);
    out.extend_from_slice(&[0xee; 8]);
    s.write_all(&out).unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    eventually(SETTLE, "the bad link's close to be logged", || {
        nodes[0].log_contains("Route protocol error")
    });

    // The node still serves its clients and its real peer.
    let (c1, c2) = (nodes[0].client().await, nodes[1].client().await);
    let mut sub = c1.subscribe("still.up").await.unwrap();
    sync_interest(&c1, &c2).await;
    c2.publish("still.up", "yes".into()).await.unwrap();
    c2.flush().await.unwrap();
    assert_eq!(&next_msg(&mut sub).await.payload[..], b"yes");
    assert_eq!(num_routes(&nodes[0]), 1);
}

#[tokio::test]
async fn routes_need_the_cluster_credentials() {
    let conf = "cluster { name: sec, listen: \"127.0.0.1:-1\", authorization { user: ruser, password: s3cret } }";
    let a = Shoal::start(1, &["-m", "-1"], Some(conf));
    let seed = a.route_addr.clone().unwrap();
    // Wrong password: refused, never linked.
    let bad = node(
        1,
        Some(&format!("nats://ruser:wrong@{seed}")),
        &["--cluster_name", "sec"],
    );
    // Right credentials: linked.
    let good = node(
        1,
        Some(&format!("nats://ruser:s3cret@{seed}")),
        &["--cluster_name", "sec"],
    );
    eventually(SETTLE, "the good node to link", || num_routes(&good) == 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(num_routes(&bad), 0);
    assert_eq!(num_routes(&a), 1);
    assert!(a.log_contains("Authorization Violation"));
    // Another cluster name: refused too.
    let other = node(
        1,
        Some(&format!("nats://ruser:s3cret@{seed}")),
        &["--cluster_name", "other"],
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(num_routes(&other), 0);
    assert!(a.log_contains("cluster name mismatch"));
}
