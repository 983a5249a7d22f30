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
    let (good, bad) = peers_with_and_without_the_password(&a, "sec");
    // Monitoring shows the route URL without its password.
    let varz = good.http_get("/varz").1;
    assert_eq!(
        varz["cluster"]["urls"][0],
        format!("nats://ruser:xxxxx@{seed}"),
        "{varz}"
    );
    assert!(!varz.to_string().contains("s3cret"));
    assert_eq!(num_routes(&bad), 0);
    assert_eq!(num_routes(&a), 1);
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

/// A node with fixed ports, so it can be restarted in place.
struct Fixed {
    client: u16,
    route: u16,
    http: u16,
}

impl Fixed {
    fn new() -> Fixed {
        Fixed {
            client: free_port(),
            route: free_port(),
            http: free_port(),
        }
    }

    fn start(&self, seed: &str) -> Shoal {
        self.start_with_seed(Some(seed))
    }

    /// Without a seed: the node other nodes were seeded with.
    fn start_with_seed(&self, seed: Option<&str>) -> Shoal {
        let (c, r, h) = (
            self.client.to_string(),
            format!("nats://127.0.0.1:{}", self.route),
            self.http.to_string(),
        );
        let mut args = vec![
            "-a",
            "127.0.0.1",
            "-p",
            &c,
            "--shards",
            "2",
            "--cluster",
            &r,
            "-m",
            &h,
            "--cluster_name",
            "test",
        ];
        if let Some(seed) = seed {
            args.extend(["--routes", seed]);
        }
        Shoal::launch(&args, None, &[])
    }
}

/// Publishes numbered messages, `burst` every `every`, until told to stop;
/// returns how many it sent, failing on any publish error.
fn steady_publisher(
    client: async_nats::Client,
    subject: &'static str,
    every: Duration,
    burst: usize,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<usize>,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let mut i = 0usize;
        while !*stop_rx.borrow() {
            for _ in 0..burst {
                client
                    .publish(subject, i.to_string().into())
                    .await
                    .expect("a publisher saw an error");
                i += 1;
            }
            tokio::time::sleep(every).await;
        }
        client.flush().await.expect("flush");
        i
    });
    (stop_tx, task)
}

#[tokio::test]
async fn a_killed_node_loses_no_subscriptions_and_rejoins_with_full_interest() {
    let n1 = node(2, None, &[]);
    let seed = n1.route_url();
    let n2 = node(2, Some(&seed), &[]);
    let spot = Fixed::new();
    let mut n3 = spot.start(&seed);
    full_mesh(&[&n1, &n2, &n3]);

    // A subscriber on node 3 (it learns the other nodes from INFO), a
    // publisher on node 1 that keeps publishing through everything.
    let sub_client = n3.client().await;
    let mut sub = sub_client.subscribe("steady").await.unwrap();
    let publisher = n1.client().await;
    sync_interest(&sub_client, &publisher).await;
    let (stop, task) = steady_publisher(publisher.clone(), "steady", Duration::from_millis(2), 1);
    let seq =
        |m: &async_nats::Message| -> usize { String::from_utf8_lossy(&m.payload).parse().unwrap() };
    let before = seq(&next_msg(&mut sub).await);

    // Kill node 3 without warning.
    n3.signal(SIGKILL);
    n3.wait_exit(Duration::from_secs(5));
    eventually(SETTLE, "the survivors to drop the dead link", || {
        num_routes(&n1) == 1 && num_routes(&n2) == 1
    });
    // The subscriber reconnects to a survivor and resubscribes by itself:
    // messages published after the kill arrive again.
    let deadline = tokio::time::Instant::now() + SETTLE;
    let mut resumed = false;
    while tokio::time::Instant::now() < deadline && !resumed {
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(1), sub.next()).await {
            resumed = seq(&m) > before + 500;
        }
    }
    assert!(
        resumed,
        "the subscription never worked again after the kill"
    );

    // Interest that lives on node 1 while node 3 restarts.
    let watcher = n1.client().await;
    let mut check = watcher.subscribe("rejoin.check").await.unwrap();
    watcher.flush().await.unwrap();

    // Restarted in place: it rejoins, and once it reports healthy it already
    // has the cluster's interest (no probe, no sleep).
    let n3 = spot.start(&seed);
    eventually(SETTLE, "the restarted node to be healthy", || healthy(&n3));
    let late = n3.client().await;
    late.publish("rejoin.check", "hello".into()).await.unwrap();
    late.flush().await.unwrap();
    assert_eq!(&next_msg(&mut check).await.payload[..], b"hello");
    full_mesh(&[&n1, &n2, &n3]);

    stop.send(true).unwrap();
    let sent = task.await.expect("the publisher never saw an error");
    assert!(sent > 0);
}

#[tokio::test]
async fn lame_duck_moves_clients_without_losing_a_message() {
    let conf = "lame_duck_duration: \"2s\"\nlame_duck_grace_period: \"500ms\"\n";
    let n1 = Shoal::start(
        2,
        &[
            "--cluster",
            "nats://127.0.0.1:-1",
            "-m",
            "-1",
            "--cluster_name",
            "test",
        ],
        Some(conf),
    );
    let seed = n1.route_url();
    let n2 = node(2, Some(&seed), &[]);
    let n3 = node(2, Some(&seed), &[]);
    full_mesh(&[&n1, &n2, &n3]);

    // The steady subscriber is on node 2; the publisher is on node 1, which
    // goes into lame duck mode and closes it.
    let sub_client = n2.client().await;
    let mut sub = sub_client.subscribe("ldm.seq").await.unwrap();
    let publisher = n1.client().await;
    sync_interest(&sub_client, &publisher).await;
    let (stop, task) = steady_publisher(publisher.clone(), "ldm.seq", Duration::from_millis(1), 50);
    next_msg(&mut sub).await;
    n1.signal(SIGUSR2);
    // Until the publisher has moved and published from its new node.
    eventually(SETTLE, "node 1 to leave the mesh", || {
        num_routes(&n2) == 1 && num_routes(&n3) == 1
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send(true).unwrap();
    let sent = task.await.unwrap();
    let mut got = vec![String::from_utf8_lossy(&next_msg(&mut sub).await.payload).into_owned()];
    got.extend(
        drain(&mut sub, Duration::from_millis(500))
            .await
            .iter()
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned()),
    );
    let got: Vec<usize> = got.iter().map(|s| s.parse().unwrap()).collect();
    let first = got[0];
    let want: Vec<usize> = (first..sent).collect();
    let missing: Vec<usize> = want.iter().filter(|i| !got.contains(i)).copied().collect();
    assert!(
        missing.is_empty(),
        "{} of {} lost: {:?}",
        missing.len(),
        want.len(),
        &missing[..missing.len().min(20)]
    );
    assert_eq!(got.len(), want.len(), "duplicates");
}

/// Strict interest mode: two nodes, the second slow to apply what arrives
/// on its routes (test hook). Returns the subscriber's raw connection on
/// node 1 and a publisher's on node 2.
async fn strict_pair(sync_timeout: &str) -> (Shoal, Shoal, Raw, Raw) {
    let conf = format!(
        "cluster {{ name: strict, listen: \"127.0.0.1:-1\", sync_interest: true, sync_timeout: \"{sync_timeout}\" }}"
    );
    let n1 = Shoal::start(2, &["-m", "-1"], Some(&conf));
    let seed = n1.route_url();
    let n2 = Shoal::start_with_env(
        2,
        &["-m", "-1", "--routes", &seed],
        Some(&conf),
        &[("SHOAL_TEST_ROUTE_DELAY_MS", "300")],
    );
    full_mesh(&[&n1, &n2]);
    let (sub, publ) = (n1.raw().await, n2.raw().await);
    (n1, n2, sub, publ)
}

#[tokio::test]
async fn strict_interest_pong_means_every_peer_has_the_subscription() {
    let (_n1, _n2, mut sub, mut publ) = strict_pair("5s").await;
    sub.send(b"CONNECT {\"verbose\":false}\r\nSUB strict.x 1\r\nPING\r\n")
        .await;
    let started = std::time::Instant::now();
    assert_eq!(sub.line().await.as_deref(), Some("PONG"));
    // The PONG waited for the slow peer...
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "PONG did not wait for the peer"
    );
    // ...so a publish there right after it reaches the subscriber.
    publ.send(b"CONNECT {\"verbose\":false}\r\nPUB strict.x 2\r\nhi\r\n")
        .await;
    assert_eq!(sub.line().await.as_deref(), Some("MSG strict.x 1 2"));
    assert_eq!(sub.line().await.as_deref(), Some("hi"));
}

/// Peers that do not acknowledge in time: the PONG comes anyway (an `-ERR`
/// text nats.go does not know would close its connection for good), and
/// the operator sees it in the log and `/varz`.
#[tokio::test]
async fn strict_interest_timeout_answers_pong_and_tells_the_operator() {
    let (n1, _n2, mut sub, _publ) = strict_pair("50ms").await;
    sub.send(b"CONNECT {\"verbose\":false}\r\nSUB strict.y 1\r\nPING\r\n")
        .await;
    assert_eq!(sub.line().await.as_deref(), Some("PONG"));
    // The connection stays usable.
    sub.send(b"PING\r\n").await;
    assert_eq!(sub.line().await.as_deref(), Some("PONG"));
    eventually(Duration::from_secs(5), "the timeout logged", || {
        n1.log_contains("[WRN]") && n1.log_contains("Interest Sync Timeout")
    });
    assert_eq!(n1.http_get("/varz").1["interest_sync_timeouts"], 1);
}

/// PONGs answer PINGs in order: a PING right after the one that waits for
/// the peers is answered after it, never before (a client matches PONGs to
/// its PINGs by order).
#[tokio::test]
async fn strict_interest_pongs_keep_their_order() {
    let (_n1, _n2, mut sub, mut publ) = strict_pair("5s").await;
    sub.send(b"CONNECT {\"verbose\":false}\r\nSUB strict.z 1\r\nPING\r\nPING\r\n")
        .await;
    assert_eq!(sub.line().await.as_deref(), Some("PONG"));
    // Had the second PONG overtaken the first, this first PONG came before
    // the peer had the subscription, and the message below would be lost.
    publ.send(b"CONNECT {\"verbose\":false}\r\nPUB strict.z 2\r\nhi\r\n")
        .await;
    assert_eq!(sub.line().await.as_deref(), Some("PONG"));
    assert_eq!(sub.line().await.as_deref(), Some("MSG strict.z 1 2"));
    assert_eq!(sub.line().await.as_deref(), Some("hi"));
}

fn link_subscriptions(n: &Shoal) -> Vec<u64> {
    let routes = n.http_get("/routez").1["routes"].clone();
    routes
        .as_array()
        .map(|r| {
            r.iter()
                .map(|l| l["subscriptions"].as_u64().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_subject_is_announced_once_per_node_and_retracted_by_the_last() {
    let nodes = cluster(2, 2);
    let watcher = nodes[1].client().await;
    let mut clients = Vec::new();
    let mut subs = Vec::new();
    for _ in 0..3 {
        let c = nodes[0].client().await;
        subs.push(c.subscribe("dup.subject").await.unwrap());
        sync_interest(&c, &watcher).await;
        clients.push(c);
    }
    // Node 2 learned one subject from node 1, not three.
    eventually(SETTLE, "one announced subject", || {
        link_subscriptions(&nodes[1]) == [1]
    });
    for (i, s) in subs.iter_mut().enumerate().take(2) {
        s.unsubscribe().await.unwrap();
        clients[i].flush().await.unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        link_subscriptions(&nodes[1]),
        [1],
        "retracted while a subscriber remains"
    );
    subs[2].unsubscribe().await.unwrap();
    clients[2].flush().await.unwrap();
    eventually(SETTLE, "the last removal to retract it", || {
        link_subscriptions(&nodes[1]) == [0]
    });
}

#[tokio::test]
async fn clients_learn_the_cluster_in_info_and_hear_of_new_nodes() {
    let a = node(1, None, &[]);
    let b = node(1, Some(&a.route_url()), &[]);
    full_mesh(&[&a, &b]);
    let urls = |line: &str| -> Vec<String> {
        let json: serde_json::Value =
            serde_json::from_str(line.trim_start_matches("INFO ")).unwrap();
        let mut u: Vec<String> = json["connect_urls"]
            .as_array()
            .map(|v| v.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        u.sort();
        u
    };
    let mut raw = Raw::connect(&a.addr).await;
    let mut want = vec![a.addr.clone(), b.addr.clone()];
    want.sort();
    assert_eq!(urls(&info_line(&a.addr).await), want);

    // A third node joins: the connected client gets a fresh INFO.
    raw.send(b"CONNECT {\"verbose\":false}\r\n").await;
    let c = node(1, Some(&a.route_url()), &[]);
    full_mesh(&[&a, &b, &c]);
    let mut want = vec![a.addr.clone(), b.addr.clone(), c.addr.clone()];
    want.sort();
    let mut seen = false;
    while let Some(line) = raw.line().await {
        if line.starts_with("INFO ") && urls(&line) == want {
            seen = true;
            break;
        }
    }
    assert!(seen, "no INFO with the new node's URL");
}

#[tokio::test]
async fn queue_groups_spread_over_nodes_when_local_preference_is_off() {
    let conf = "cluster { queue_prefer_local: false }";
    let args = |seed: Option<&str>| -> Vec<String> {
        let mut a: Vec<String> = [
            "--cluster",
            "nats://127.0.0.1:-1",
            "-m",
            "-1",
            "--cluster_name",
            "spread",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(s) = seed {
            a.extend(["--routes".to_string(), s.to_string()]);
        }
        a
    };
    let start = |seed: Option<&str>| {
        let a = args(seed);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        Shoal::start(1, &refs, Some(conf))
    };
    let n1 = start(None);
    let n2 = start(Some(&n1.route_url()));
    full_mesh(&[&n1, &n2]);
    let (c1, c2) = (n1.client().await, n2.client().await);
    let mut local = c1.queue_subscribe("spread", "g".into()).await.unwrap();
    let mut remote = c2.queue_subscribe("spread", "g".into()).await.unwrap();
    sync_interest(&c1, &c1).await;
    sync_interest(&c2, &c1).await;
    for i in 0..1000 {
        c1.publish("spread", i.to_string().into()).await.unwrap();
    }
    c1.flush().await.unwrap();
    let (a, b) = (
        drain(&mut local, Duration::from_millis(300)).await.len(),
        drain(&mut remote, Duration::from_millis(300)).await.len(),
    );
    assert_eq!(a + b, 1000, "exactly once in total");
    // Weighted by member count (1 and 1): both get a fair share.
    assert!(a > 300 && b > 300, "local {a}, remote {b}");
}

/// One message's content never closes a route link (issue 11, item 1): a
/// non-pedantic client may publish with an empty token in the reply subject
/// or in the subject, which crosses the route as it is (as it reaches local
/// subscribers); a subject with a control byte is not forwarded (counted on
/// the link). Either way the next, valid message arrives over the same link.
#[tokio::test]
async fn a_bad_message_does_not_cut_the_route() {
    let nodes = cluster(2, 1);
    let (a, b) = (&nodes[0], &nodes[1]);
    let rb = b.client().await;
    let mut sub = rb.subscribe(">").await.unwrap();
    rb.flush().await.unwrap();
    let mut pub_a = a.raw().await;
    pub_a
        .send(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n")
        .await;
    let ra = a.client().await;
    sync_interest_via(&rb, &ra, "probe").await;
    // Skip the probe traffic the helper made.
    while let Ok(Some(_)) = tokio::time::timeout(
        Duration::from_millis(200),
        futures::StreamExt::next(&mut sub),
    )
    .await
    {}
    pub_a
        .send(b"PUB foo bad..reply 3\r\nabc\r\nPUB orders..created 1\r\nx\r\nPUB bad\x01subject 1\r\ny\r\nPUB foo 4\r\ngood\r\n")
        .await;
    pub_a.ping().await;
    let first = next_msg(&mut sub).await;
    assert_eq!(first.subject.as_str(), "foo");
    assert_eq!(first.reply.as_deref(), Some("bad..reply"));
    let second = next_msg(&mut sub).await;
    assert_eq!(second.subject.as_str(), "orders..created");
    let third = next_msg(&mut sub).await;
    assert_eq!(
        (third.subject.as_str(), &third.payload[..]),
        ("foo", &b"good"[..])
    );
    let routez = a.http_get("/routez").1;
    assert_eq!(routez["num_routes"], 1, "{routez}");
    assert_eq!(routez["routes"][0]["refused_msgs"], 1, "{routez}");
    // Still the same link: nothing was redialled.
    assert!(!a.log_contains("Route protocol error"));
    assert!(!b.log_contains("Route protocol error"));
}

/// `--cluster nats://user:pass@host:port` (issue 11, item 3): the node
/// starts, the credentials are what peers must present, and they appear in
/// no log line.
#[test]
fn cluster_flag_credentials_are_the_authorization() {
    let a = Shoal::start(
        1,
        &[
            "--cluster",
            "nats://ruser:s3cret@127.0.0.1:-1",
            "--cluster_name",
            "cred",
            "-m",
            "-1",
        ],
        None,
    );
    let (_good, _bad) = peers_with_and_without_the_password(&a, "cred");
    assert!(!a.log_contains("s3cret"));
}

/// Two nodes seeded with `a` (cluster `name`, user `ruser`): one with the
/// password `s3cret`, linked; one with a wrong one, refused and logged.
fn peers_with_and_without_the_password(a: &Shoal, name: &str) -> (Shoal, Shoal) {
    let seed = a.route_addr.clone().unwrap();
    let bad = node(
        1,
        Some(&format!("nats://ruser:wrong@{seed}")),
        &["--cluster_name", name],
    );
    let good = node(
        1,
        Some(&format!("nats://ruser:s3cret@{seed}")),
        &["--cluster_name", name],
    );
    eventually(SETTLE, "the node with the password to link", || {
        num_routes(&good) == 1
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(num_routes(&bad), 0);
    assert!(a.log_contains("Authorization Violation"));
    (good, bad)
}

/// A seed restarted in place has no routes of its own; its peers redial it.
/// It must not call itself healthy before they are back: at the first
/// healthy answer it already has its routes and their interest.
#[tokio::test]
async fn a_restarted_seed_is_healthy_only_with_its_peers() {
    let spot = Fixed::new();
    let mut seed = spot.start_with_seed(None);
    let seed_url = seed.route_url();
    let b = node(2, Some(&seed_url), &[]);
    let c = node(2, Some(&seed_url), &[]);
    full_mesh(&[&seed, &b, &c]);
    let on_b = b.client().await;
    let mut sub = on_b.subscribe("restart.check").await.unwrap();
    on_b.flush().await.unwrap();

    seed.signal(libc::SIGTERM);
    assert!(seed.wait_exit(Duration::from_secs(20)).is_some());
    let seed = spot.start_with_seed(None);
    let deadline = std::time::Instant::now() + SETTLE;
    while !healthy(&seed) {
        assert!(std::time::Instant::now() < deadline, "never healthy");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Its peers' redials race each other; the first link brings the rest by
    // gossip, so at least one is up (the old rule said ready with none).
    assert!(num_routes(&seed) >= 1, "healthy without its peers");
    // Healthy means usable: a publish on the seed reaches b's subscriber.
    let on_seed = seed.client().await;
    on_seed.publish("restart.check", "hi".into()).await.unwrap();
    on_seed.flush().await.unwrap();
    assert_eq!(&next_msg(&mut sub).await.payload[..], b"hi");
    full_mesh(&[&seed, &b, &c]);
}

// ----- hostile and oversized peers (the hostile peers issue, items 10 and 13) -----

/// A subject (or queue name) of about 4 KB: long, yet within the default
/// `max_control_line` (4096) of a `SUB` line.
fn long_name(prefix: &str, i: usize) -> String {
    format!("{prefix}.{i}.{}", "x".repeat(4000))
}

/// Publishes `payload` on `subject` from `from` until `sub` receives it
/// (interest travels asynchronously), failing after `within`.
async fn publish_until_received(
    from: &async_nats::Client,
    subject: &str,
    sub: &mut async_nats::Subscriber,
    within: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        from.publish(subject.to_string(), "hello".into())
            .await
            .unwrap();
        from.flush().await.unwrap();
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
            assert_eq!(&m.payload[..], b"hello");
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a message published on the other node never arrived on {}...",
            &subject[..subject.len().min(20)]
        );
    }
}

/// Item 10: ~300 subscriptions with 4 KB subjects make a snapshot of about
/// 1.2 MB. It used to go out as one frame (cut every 1024 operations, not by
/// bytes) over the peer's frame limit, so every (re)link was cut and the
/// nodes redialed forever. Now a node started, and restarted, next to them
/// gets the interest.
#[tokio::test]
async fn a_large_interest_snapshot_reaches_a_new_and_a_restarted_node() {
    let b = node(2, None, &[]);
    let cb = b.client().await;
    let mut subs = Vec::new();
    for i in 0..300 {
        subs.push(cb.subscribe(long_name("big", i)).await.unwrap());
    }
    cb.flush().await.unwrap();
    let seed = b.route_url();
    for round in ["started", "restarted"] {
        let a = node(2, Some(&seed), &[]);
        let ca = a.client().await;
        for i in [0, 150, 299] {
            publish_until_received(&ca, &long_name("big", i), &mut subs[i], SETTLE).await;
        }
        eventually(SETTLE, "the node to be healthy", || healthy(&a));
        assert!(
            !a.log_contains("Route protocol error") && !b.log_contains("Route protocol error"),
            "{round}: a link was cut"
        );
        drop(a);
        eventually(SETTLE, "the link to go", || num_routes(&b) == 0);
    }
}

/// Item 10: a message for which the sender picked the receiver in ~300 queue
/// groups with 4 KB names (1.2 MB of names in its frame) used to exceed the
/// receiver's frame limit and cut the link. Each group now gets it once.
#[tokio::test]
async fn a_message_for_many_long_queue_groups_crosses_the_route() {
    let nodes = cluster(2, 1);
    let (a, b) = (&nodes[0], &nodes[1]);
    let (ca, cb) = (a.client().await, b.client().await);
    let mut members = Vec::new();
    for i in 0..300 {
        members.push(
            cb.queue_subscribe("work", long_name("group", i))
                .await
                .unwrap(),
        );
    }
    sync_interest(&cb, &ca).await;
    ca.publish("work", "job".into()).await.unwrap();
    ca.flush().await.unwrap();
    for (i, m) in members.iter_mut().enumerate() {
        let msg = tokio::time::timeout(SETTLE, m.next())
            .await
            .unwrap_or_else(|_| panic!("group {i} never got the message"))
            .unwrap();
        assert_eq!(&msg.payload[..], b"job");
    }
    assert!(!a.log_contains("Route protocol error") && !b.log_contains("Route protocol error"));
    assert_eq!(num_routes(a), 1);
}

/// Item 10: nodes with different `max_payload`. A route carries any message
/// its sender accepted, as nats-server's routes do: `max_payload` limits
/// what a node's own clients may publish, not what its peers forward (a
/// subscriber on the smaller node gets the large message). The link is never
/// cut for it.
#[tokio::test]
async fn a_message_within_the_senders_max_payload_reaches_a_node_with_a_smaller_one() {
    let b = node(1, None, &[]);
    let a = Shoal::start(
        1,
        &[
            "--cluster",
            "nats://127.0.0.1:-1",
            "--cluster_name",
            "test",
            "-m",
            "-1",
            "--routes",
            &b.route_url(),
        ],
        Some("max_payload: 8MB"),
    );
    full_mesh(&[&a, &b]);
    let mut sub = b.raw().await;
    sub.send(b"CONNECT {\"verbose\":false}\r\nSUB big 1\r\n")
        .await;
    sub.ping().await;
    let probe = a.client().await;
    let watcher = b.client().await;
    sync_interest(&watcher, &probe).await;
    let mut publisher = a.raw().await;
    publisher.send(b"CONNECT {\"verbose\":false}\r\n").await;
    // `a` now knows of `SUB big` too: it crossed the same link before the
    // probe's interest did.
    let size = 4 << 20;
    let mut msg = format!("PUB big {size}\r\n").into_bytes();
    msg.extend(std::iter::repeat_n(b'z', size));
    msg.extend_from_slice(b"\r\nPUB big 5\r\nsmall\r\n");
    publisher.send(&msg).await;
    let seen = publisher.ping().await;
    assert!(seen.iter().all(|l| !l.starts_with("-ERR")), "{seen:?}");
    assert_eq!(next_msg_line(&mut sub).await, format!("MSG big 1 {size}"));
    let body = sub.bytes(size + 2).await;
    assert!(body[..size].iter().all(|&c| c == b'z'));
    assert_eq!(next_msg_line(&mut sub).await, "MSG big 1 5");
    assert_eq!(sub.bytes(7).await, b"small\r\n");
    assert!(!a.log_contains("Route protocol error") && !b.log_contains("Route protocol error"));
    assert_eq!(num_routes(&a), 1);
}

/// The next line that is not the server's INFO update or keep-alive.
async fn next_msg_line(raw: &mut Raw) -> String {
    loop {
        let line = raw.line_within(SETTLE).await.expect("a message");
        if line == "PING" {
            raw.send(b"PONG\r\n").await;
        } else if !line.starts_with("INFO ") {
            return line;
        }
    }
}

/// A node whose route handshake gives up after `timeout` seconds.
fn node_with_route_timeout(timeout: u32) -> Shoal {
    let conf = format!(
        "cluster {{ name: test, listen: \"127.0.0.1:-1\", authorization {{ timeout: {timeout} }} }}"
    );
    Shoal::start(1, &["-m", "-1"], Some(&conf))
}

/// Whether the server closed `s` (EOF or reset), looking for `wait`.
fn closed(s: &mut std::net::TcpStream, wait: Duration) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
}

/// Item 13: each read of the handshake was bounded by the timeout, not the
/// whole of it, so a peer dribbling one byte per half timeout held its
/// thread forever. The whole handshake now has the timeout as its deadline.
#[test]
fn a_route_handshake_dribbled_byte_by_byte_is_cut_by_its_deadline() {
    use std::io::Write;
    let n = node_with_route_timeout(1);
    let mut s = std::net::TcpStream::connect(n.route_addr.as_ref().unwrap()).unwrap();
    // An INFO frame header promising 1000 bytes, then its body, a byte
    // every half timeout: 20 s of dribble if nothing cuts it.
    let mut bytes = 1000u32.to_le_bytes().to_vec();
    bytes.push(shoal_core::route::FrameKind::Info as u8);
    bytes.extend([0u8; 40]);
    let start = std::time::Instant::now();
    for b in bytes {
        if s.write_all(&[b]).is_err() || closed(&mut s, Duration::from_millis(500)) {
            // Liveness bound only: well before the dribble would end.
            assert!(start.elapsed() < Duration::from_secs(10));
            return;
        }
    }
    panic!(
        "a dribbling peer held the handshake for {:?}",
        start.elapsed()
    );
}

/// Item 13: inbound handshakes in progress are capped (64); connections
/// beyond the cap are closed at once (logged once per burst) instead of each
/// taking a thread, and a legitimate peer links once the flood is over.
#[test]
fn route_connections_beyond_the_handshake_cap_are_refused_and_a_peer_links_after() {
    let n = node_with_route_timeout(30);
    let addr = n.route_addr.clone().unwrap();
    let flood: Vec<_> = (0..64)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    let mut extra: Vec<_> = (0..20)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    for (i, s) in extra.iter_mut().enumerate() {
        assert!(
            closed(s, Duration::from_secs(5)),
            "connection {i} beyond the cap was kept"
        );
    }
    // The first 64 are still waiting in their handshakes (30 s timeout).
    let mut first = flood[0].try_clone().unwrap();
    assert!(!closed(&mut first, Duration::from_millis(100)));
    eventually(SETTLE, "the refusals to be logged", || {
        n.log_contains("route handshakes in progress")
    });
    let lines = |n: &Shoal| {
        n.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("route handshakes in progress"))
            .count()
    };
    assert_eq!(lines(&n), 1, "logged once per burst");
    drop(first);
    drop(flood);
    let peer = node(1, Some(&n.route_url()), &[]);
    full_mesh(&[&n, &peer]);
}
