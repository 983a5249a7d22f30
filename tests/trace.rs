//! Message tracing (nats-server 2.11 `Nats-Trace-Dest`): each server on a
//! traced message's path publishes one event in nats-server's format, on
//! one and two shards and across two nodes; `Nats-Trace-Only` traces
//! without delivering; a refused publish is traced at ingress; events stay
//! in the publisher's account.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

/// Every event on `sub` until none came for `quiet`.
async fn events(sub: &mut async_nats::Subscriber, quiet: Duration) -> Vec<Value> {
    use futures::StreamExt;
    let mut out = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(quiet, sub.next()).await {
        out.push(serde_json::from_slice(&m.payload).expect("an event is JSON"));
    }
    out
}

fn traced(dest: &str, only: bool) -> async_nats::HeaderMap {
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Trace-Dest", dest);
    h.insert("X-App", "checkout");
    if only {
        h.insert("Nats-Trace-Only", "true");
    }
    h
}

fn egresses(event: &Value) -> Vec<&Value> {
    event["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "eg")
        .collect()
}

/// One event per message on one server, whichever shards the subscribers
/// are on: the ingress names the publisher, one egress per plain
/// subscription, one for the queue group, and the publisher's own
/// subscription refused for no echo.
#[tokio::test]
async fn one_event_per_server_with_every_egress() {
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], None);
        let tool = s.client().await;
        let mut trace = tool.subscribe("trace.inbox").await.unwrap();
        let plain = s.client().await;
        let mut s1 = plain.subscribe("orders.>").await.unwrap();
        let q1 = s.client().await;
        let q2 = s.client().await;
        let mut w1 = q1
            .queue_subscribe("orders.new", "workers".into())
            .await
            .unwrap();
        let mut w2 = q2
            .queue_subscribe("orders.new", "workers".into())
            .await
            .unwrap();
        let publisher = async_nats::ConnectOptions::new()
            .name("checkout-api")
            .no_echo()
            .connect(s.url())
            .await
            .unwrap();
        let _own = publisher.subscribe("orders.new").await.unwrap();
        for c in [&tool, &plain, &q1, &q2] {
            sync_interest(c, &publisher).await;
        }
        let cid = publisher.server_info().client_id;

        publisher
            .publish_with_headers("orders.new", traced("trace.inbox", false), "o1".into())
            .await
            .unwrap();
        publisher.flush().await.unwrap();
        let m = next_msg(&mut s1).await;
        assert_eq!(&m.payload[..], b"o1");
        assert!(
            m.headers.unwrap().get("Nats-Trace-Dest").is_some(),
            "subscribers get the message as published"
        );
        let got = events(&mut trace, Duration::from_millis(700)).await;
        assert_eq!(
            got.len(),
            1,
            "one event per server ({shards} shards): {got:?}"
        );
        let e = &got[0];
        assert_eq!(
            e["server"]["ver"].as_str().unwrap().split('.').next(),
            Some("2")
        );
        assert_eq!(e["request"]["header"]["Nats-Trace-Dest"][0], "trace.inbox");
        assert_eq!(e["request"]["header"]["X-App"][0], "checkout");
        assert!(e["request"]["msgsize"].as_u64().unwrap() > 2);
        assert!(e.get("hops").is_none(), "no route egress: {e}");
        let ingress = &e["events"][0];
        assert_eq!(ingress["type"], "in");
        assert_eq!(ingress["kind"], 0);
        assert_eq!(ingress["cid"], cid);
        assert_eq!(ingress["name"], "checkout-api");
        assert_eq!(ingress["acc"], "$G");
        assert_eq!(ingress["subj"], "orders.new");
        let eg = egresses(e);
        assert_eq!(eg.len(), 3, "{eg:?}");
        let plain_eg: Vec<_> = eg.iter().filter(|x| x["sub"] == "orders.>").collect();
        assert_eq!(plain_eg.len(), 1);
        assert!(plain_eg[0].get("error").is_none());
        assert_eq!(plain_eg[0]["kind"], 0);
        let queue_eg: Vec<_> = eg.iter().filter(|x| x["queue"] == "workers").collect();
        assert_eq!(queue_eg.len(), 1, "one member of the group: {eg:?}");
        let own: Vec<_> = eg.iter().filter(|x| x["cid"] == cid).collect();
        assert_eq!(own.len(), 1);
        assert_eq!(own[0]["error"], "Not delivered because of no echo");
        // The queue member named in the event is the one that got it.
        let got_w1 = tokio::time::timeout(Duration::from_millis(300), {
            use futures::StreamExt;
            w1.next()
        })
        .await
        .is_ok();
        if !got_w1 {
            next_msg(&mut w2).await;
        }

        // Trace only: the same event, nobody gets the message.
        publisher
            .publish_with_headers("orders.new", traced("trace.inbox", true), "o2".into())
            .await
            .unwrap();
        publisher.flush().await.unwrap();
        let got = events(&mut trace, Duration::from_millis(700)).await;
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(egresses(&got[0]).len(), 3);
        no_msg(&mut s1, Duration::from_millis(200)).await;
        no_msg(&mut w1, Duration::from_millis(100)).await;
        no_msg(&mut w2, Duration::from_millis(100)).await;

        // Without the header: delivered, no event.
        publisher.publish("orders.new", "o3".into()).await.unwrap();
        publisher.flush().await.unwrap();
        assert_eq!(&next_msg(&mut s1).await.payload[..], b"o3");
        assert!(events(&mut trace, Duration::from_millis(300))
            .await
            .is_empty());
    }
}

/// Two nodes: the first node's event has a route egress on hop 1, the
/// second's starts with a route ingress on that hop and names its own
/// subscriber; trace-only crosses the route without delivering.
#[tokio::test]
async fn events_from_both_nodes_of_a_route() {
    let (n1, n2) = linked_pair(None, |i| vec!["--name".into(), format!("n{}", i + 1)]);
    let tool = n1.client().await;
    let mut trace = tool.subscribe("trace.inbox").await.unwrap();
    let far = n2.client().await;
    let mut sub = far.subscribe("orders.*").await.unwrap();
    let publisher = n1.client().await;
    tool.flush().await.unwrap();
    far.flush().await.unwrap();
    // Wait until n1 routes to n2's subscriber.
    let mut ready = false;
    for i in 0..100 {
        publisher
            .publish(format!("orders.warmup{i}"), "w".into())
            .await
            .unwrap();
        publisher.flush().await.unwrap();
        if tokio::time::timeout(Duration::from_millis(100), {
            use futures::StreamExt;
            sub.next()
        })
        .await
        .is_ok()
        {
            ready = true;
            break;
        }
    }
    assert!(ready, "interest never crossed the route");
    while tokio::time::timeout(Duration::from_millis(200), {
        use futures::StreamExt;
        sub.next()
    })
    .await
    .is_ok()
    {}

    for only in [false, true] {
        publisher
            .publish_with_headers("orders.new", traced("trace.inbox", only), "o".into())
            .await
            .unwrap();
        publisher.flush().await.unwrap();
        let got = events(&mut trace, Duration::from_millis(1000)).await;
        assert_eq!(got.len(), 2, "one event per node (only={only}): {got:?}");
        let first = got
            .iter()
            .find(|e| e["server"]["name"] == "n1")
            .expect("n1's event");
        let second = got
            .iter()
            .find(|e| e["server"]["name"] == "n2")
            .expect("n2's event");
        assert_eq!(first["hops"], 1);
        assert_eq!(first["events"][0]["kind"], 0);
        let eg = egresses(first);
        assert_eq!(eg.len(), 1, "{eg:?}");
        assert_eq!(eg[0]["kind"], 1);
        assert_eq!(eg[0]["name"], "n2");
        assert_eq!(eg[0]["hop"], "1");
        assert_eq!(second["request"]["header"]["Nats-Trace-Hop"][0], "1");
        assert!(second.get("hops").is_none());
        let ingress = &second["events"][0];
        assert_eq!(ingress["type"], "in");
        assert_eq!(ingress["kind"], 1);
        assert_eq!(ingress["name"], "n1");
        assert_eq!(ingress["subj"], "orders.new");
        let eg = egresses(second);
        assert_eq!(eg.len(), 1, "{eg:?}");
        assert_eq!(eg[0]["kind"], 0);
        assert_eq!(eg[0]["sub"], "orders.*");
        if only {
            no_msg(&mut sub, Duration::from_millis(300)).await;
        } else {
            let m = next_msg(&mut sub).await;
            assert_eq!(&m.payload[..], b"o");
        }
    }
}

const ACCOUNTS: &str = r#"
accounts {
  A: {
    users: [
      {user: a, password: a, permissions: {publish: {deny: "secret.>"}}}
      {user: t, password: t}
    ]
  }
  B: { users: [ {user: b, password: b} ] }
}
"#;

/// A publish the permissions refuse is traced at ingress with the
/// violation and goes nowhere; the event is published in the publisher's
/// account only.
#[tokio::test]
async fn refused_publish_is_traced_in_its_account() {
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], Some(ACCOUNTS));
        let a = login_same(&s.url(), "a").await;
        let t = login_same(&s.url(), "t").await;
        let b = login_same(&s.url(), "b").await;
        let mut trace = t.subscribe("trace.inbox").await.unwrap();
        let mut other_account = b.subscribe("trace.inbox").await.unwrap();
        let mut secret = t.subscribe("secret.>").await.unwrap();
        sync_interest(&t, &a).await;
        sync_interest(&b, &b).await;
        a.publish_with_headers("secret.plans", traced("trace.inbox", false), "x".into())
            .await
            .unwrap();
        a.flush().await.unwrap();
        let got = events(&mut trace, Duration::from_millis(700)).await;
        assert_eq!(got.len(), 1, "{got:?}");
        let ingress = &got[0]["events"][0];
        assert_eq!(ingress["acc"], "A");
        assert_eq!(ingress["subj"], "secret.plans");
        assert_eq!(
            ingress["error"],
            "Permissions Violation for Publish to \"secret.plans\""
        );
        assert!(egresses(&got[0]).is_empty());
        no_msg(&mut secret, Duration::from_millis(200)).await;
        no_msg(&mut other_account, Duration::from_millis(200)).await;

        // Allowed: delivered in A, traced in A.
        let mut orders = t.subscribe("orders").await.unwrap();
        sync_interest(&t, &a).await;
        a.publish_with_headers("orders", traced("trace.inbox", false), "y".into())
            .await
            .unwrap();
        a.flush().await.unwrap();
        assert_eq!(&next_msg(&mut orders).await.payload[..], b"y");
        let got = events(&mut trace, Duration::from_millis(700)).await;
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0]["events"][0]["acc"], "A");
        let eg = egresses(&got[0]);
        assert_eq!(eg.len(), 1, "{eg:?}");
        assert_eq!(eg[0]["sub"], "orders");
        assert!(eg[0].get("acc").is_none(), "same account as the ingress");
        no_msg(&mut other_account, Duration::from_millis(200)).await;
    }
}

/// Crossing accounts is traced as nats-server does: a service import is an
/// `si` entry (the exporting account, the subject as published and as the
/// exporter sees it), a stream export an `se` entry (the importing account
/// and the subject there), each followed by the egress in that account.
#[tokio::test]
async fn service_imports_and_stream_exports_are_traced() {
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], Some(SHARING_ACCOUNTS));
        let a = login_same(&s.url(), "a").await;
        let b = login_same(&s.url(), "b").await;
        let mut b_trace = b.subscribe("trace.b").await.unwrap();
        let mut a_trace = a.subscribe("trace.a").await.unwrap();
        let mut responder = a.subscribe("svc.echo").await.unwrap();
        let mut imported = b.subscribe("from_a.events.>").await.unwrap();
        sync_interest(&a, &a).await;
        sync_interest(&b, &b).await;

        // B calls A's service under its local name.
        let mut headers = traced("trace.b", false);
        headers.insert("x", "1");
        b.publish_with_reply_and_headers("echo", "inbox.1", headers, "req".into())
            .await
            .unwrap();
        b.flush().await.unwrap();
        let got = events(&mut b_trace, Duration::from_millis(700)).await;
        assert_eq!(got.len(), 1, "{got:?}");
        let entries = got[0]["events"].as_array().unwrap();
        assert_eq!(entries[0]["type"], "in");
        assert_eq!(entries[0]["acc"], "B");
        let si = entries
            .iter()
            .find(|e| e["type"] == "si")
            .unwrap_or_else(|| panic!("no si entry: {got:?}"));
        assert_eq!(si["acc"], "A");
        assert_eq!(si["from"], "echo");
        assert_eq!(si["to"], "svc.echo");
        let eg = egresses(&got[0]);
        assert_eq!(eg.len(), 1, "{got:?}");
        assert_eq!(eg[0]["acc"], "A");
        assert_eq!(eg[0]["sub"], "svc.echo");
        let req = next_msg(&mut responder).await;
        assert_eq!(&req.payload[..], b"req");

        // A's stream reaches B under its prefix.
        a.publish_with_headers("events.1", traced("trace.a", false), "e".into())
            .await
            .unwrap();
        a.flush().await.unwrap();
        let got = events(&mut a_trace, Duration::from_millis(700)).await;
        assert_eq!(got.len(), 1, "{got:?}");
        let entries = got[0]["events"].as_array().unwrap();
        let se = entries
            .iter()
            .find(|e| e["type"] == "se")
            .unwrap_or_else(|| panic!("no se entry: {got:?}"));
        assert_eq!(se["acc"], "B");
        assert_eq!(se["to"], "from_a.events.1");
        let eg = egresses(&got[0]);
        assert_eq!(eg.len(), 1, "{got:?}");
        assert_eq!(eg[0]["acc"], "B");
        assert_eq!(eg[0]["sub"], "from_a.events.>");
        let m = next_msg(&mut imported).await;
        assert_eq!(m.subject.as_str(), "from_a.events.1");
    }
}
