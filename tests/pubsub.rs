//! Pub/sub, wildcards, queue groups, request-reply, headers, auto-unsubscribe
//! and echo, through a real client (async-nats) against a spawned `shoal`,
//! with one shard and with two.

mod common;

use bytes::Bytes;
use common::*;
use futures::StreamExt;
use std::collections::HashMap;
use std::time::Duration;

#[tokio::test]
async fn publish_reaches_subscriber() {
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], None);
        let sub_client = s.client().await;
        let pub_client = s.client().await;
        let mut sub = sub_client.subscribe("greet.joe").await.unwrap();
        sync_interest(&sub_client, &pub_client).await;
        for i in 0..100 {
            pub_client
                .publish("greet.joe", format!("hello {i}").into())
                .await
                .unwrap();
        }
        pub_client.flush().await.unwrap();
        for i in 0..100 {
            let m = next_msg(&mut sub).await;
            assert_eq!(
                m.payload,
                Bytes::from(format!("hello {i}")),
                "in order, shards={shards}"
            );
        }
        no_msg(&mut sub, Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn wildcards_match_like_nats_server() {
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], None);
        let c = s.client().await;
        let p = s.client().await;
        let mut star = c.subscribe("a.*.c").await.unwrap();
        let mut full = c.subscribe("a.>").await.unwrap();
        sync_interest(&c, &p).await;
        for subj in ["a.b.c", "a.x.c", "a.b", "a.b.c.d", "a", "b.b.c"] {
            p.publish(subj, subj.into()).await.unwrap();
        }
        p.flush().await.unwrap();
        let mut got_star = vec![];
        for _ in 0..2 {
            got_star.push(next_msg(&mut star).await.subject.to_string());
        }
        assert_eq!(got_star, ["a.b.c", "a.x.c"]);
        no_msg(&mut star, Duration::from_millis(100)).await;
        let mut got_full = vec![];
        for _ in 0..4 {
            got_full.push(next_msg(&mut full).await.subject.to_string());
        }
        assert_eq!(
            got_full,
            ["a.b.c", "a.x.c", "a.b", "a.b.c.d"],
            "a.> does not match a"
        );
        no_msg(&mut full, Duration::from_millis(100)).await;
    }
}

/// Exactly one member of a queue group gets each message, whatever shard the
/// members and the publisher are on; plain subscribers all get it.
#[tokio::test]
async fn queue_group_exactly_once_across_shards() {
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], None);
        // Many connections so that, with two shards, members land on both.
        let publisher = s.client().await;
        let mut members = Vec::new();
        for _ in 0..8 {
            let c = s.client().await;
            let sub = c.queue_subscribe("work", "workers".into()).await.unwrap();
            sync_interest(&c, &publisher).await;
            members.push((c, sub));
        }
        let watcher_client = s.client().await;
        let mut watcher = watcher_client.subscribe("work").await.unwrap();
        sync_interest(&watcher_client, &publisher).await;
        let n = 2000;
        for i in 0..n {
            publisher
                .publish("work", i.to_string().into())
                .await
                .unwrap();
        }
        publisher.flush().await.unwrap();
        for _ in 0..n {
            next_msg(&mut watcher).await;
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut per_member = Vec::new();
        for (_, sub) in members.iter_mut() {
            let mut count = 0;
            while let Ok(Some(m)) =
                tokio::time::timeout(Duration::from_millis(300), sub.next()).await
            {
                *seen
                    .entry(String::from_utf8(m.payload.to_vec()).unwrap())
                    .or_default() += 1;
                count += 1;
            }
            per_member.push(count);
        }
        assert_eq!(
            seen.len(),
            n,
            "every message delivered to the group (shards={shards})"
        );
        assert!(
            seen.values().all(|&c| c == 1),
            "exactly once (shards={shards})"
        );
        assert!(
            per_member.iter().filter(|&&c| c > 0).count() >= 6,
            "spread over the members: {per_member:?}"
        );
    }
}

#[tokio::test]
async fn request_reply_and_no_responders() {
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], None);
        let responder = s.client().await;
        let mut service = responder.subscribe("svc.echo").await.unwrap();
        let r2 = responder.clone();
        tokio::spawn(async move {
            while let Some(m) = service.next().await {
                if let Some(reply) = m.reply {
                    r2.publish(reply, m.payload).await.unwrap();
                }
            }
        });
        let requesters: Vec<_> = futures::future::join_all((0..4).map(|_| s.client())).await;
        for c in &requesters {
            sync_interest(&responder, c).await;
        }
        for (i, c) in requesters.iter().enumerate() {
            for j in 0..20 {
                let body = format!("{i}-{j}");
                let resp = c.request("svc.echo", body.clone().into()).await.unwrap();
                assert_eq!(resp.payload, Bytes::from(body));
            }
        }
        let err = requesters[0]
            .request("svc.nobody", "x".into())
            .await
            .unwrap_err();
        assert_eq!(
            err.kind(),
            async_nats::RequestErrorKind::NoResponders,
            "shards={shards}: {err}"
        );
    }
}

#[tokio::test]
async fn headers_round_trip() {
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], None);
        let c = s.client().await;
        let p = s.client().await;
        let mut sub = c.subscribe("h").await.unwrap();
        sync_interest(&c, &p).await;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Trace-Id", "abc123");
        headers.append("Multi", "one");
        headers.append("Multi", "two");
        p.publish_with_headers("h", headers, "body".into())
            .await
            .unwrap();
        p.flush().await.unwrap();
        let m = next_msg(&mut sub).await;
        let h = m.headers.expect("headers delivered");
        assert_eq!(h.get("Trace-Id").map(|v| v.as_str()), Some("abc123"));
        let multi: Vec<&str> = h.get_all("Multi").map(|v| v.as_str()).collect();
        assert_eq!(multi, ["one", "two"]);
        assert_eq!(m.payload, Bytes::from("body"));
    }
}

#[tokio::test]
async fn auto_unsubscribe_after_max() {
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], None);
        let c = s.client().await;
        let p = s.client().await;
        let mut sub = c.subscribe("limited").await.unwrap();
        sub.unsubscribe_after(3).await.unwrap();
        sync_interest(&c, &p).await;
        for i in 0..10 {
            p.publish("limited", i.to_string().into()).await.unwrap();
        }
        p.flush().await.unwrap();
        let mut got = vec![];
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
            got.push(m.payload);
        }
        assert_eq!(
            got,
            vec![Bytes::from("0"), Bytes::from("1"), Bytes::from("2")]
        );
    }
}

#[tokio::test]
async fn raw_unsub_with_max_and_dup_sid() {
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], None);
        let mut r = s.raw().await;
        r.send(b"CONNECT {\"verbose\":false}\r\nSUB x 1\r\nSUB y 1\r\nUNSUB 1 2\r\n")
            .await;
        r.ping().await;
        let mut p = s.raw().await;
        p.send(b"CONNECT {\"verbose\":false}\r\nPUB y 1\r\nY\r\nPUB x 1\r\na\r\nPUB x 1\r\nb\r\nPUB x 1\r\nc\r\n").await;
        p.ping().await;
        // The second SUB with sid 1 was ignored: nothing for y.
        assert_eq!(r.line().await.unwrap(), "MSG x 1 1");
        assert_eq!(r.bytes(3).await, b"a\r\n");
        assert_eq!(r.line().await.unwrap(), "MSG x 1 1");
        assert_eq!(r.bytes(3).await, b"b\r\n");
        assert!(
            r.ping().await.is_empty(),
            "no third message after UNSUB 1 2"
        );
    }
}

#[tokio::test]
async fn echo_false_skips_own_messages() {
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], None);
        let quiet = async_nats::ConnectOptions::new()
            .no_echo()
            .connect(s.url())
            .await
            .unwrap();
        let other = s.client().await;
        let mut own = quiet.subscribe("e").await.unwrap();
        let mut theirs = other.subscribe("e").await.unwrap();
        sync_interest(&other, &quiet).await;
        sync_interest(&quiet, &other).await;
        quiet.publish("e", "from-quiet".into()).await.unwrap();
        quiet.flush().await.unwrap();
        assert_eq!(
            next_msg(&mut theirs).await.payload,
            Bytes::from("from-quiet")
        );
        no_msg(&mut own, Duration::from_millis(200)).await;
        other.publish("e", "from-other".into()).await.unwrap();
        other.flush().await.unwrap();
        assert_eq!(next_msg(&mut own).await.payload, Bytes::from("from-other"));
    }
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], None);
        let c = s.client().await;
        let p = s.client().await;
        let mut sub = c.subscribe("u").await.unwrap();
        sync_interest(&c, &p).await;
        p.publish("u", "1".into()).await.unwrap();
        p.flush().await.unwrap();
        next_msg(&mut sub).await;
        sub.unsubscribe().await.unwrap();
        let mut fresh = c.subscribe("u.check").await.unwrap();
        sync_interest(&c, &p).await;
        p.publish("u", "2".into()).await.unwrap();
        p.publish("u.check", "after".into()).await.unwrap();
        p.flush().await.unwrap();
        assert_eq!(next_msg(&mut fresh).await.payload, Bytes::from("after"));
        assert!(
            sub.next().await.is_none(),
            "unsubscribed stream ends without the message"
        );
    }
}

/// A raw connection named `name` (logged in as `user` when given) that the
/// kernel placed on shard `shard` of `s` (started with `-m -1`): reconnects
/// until it lands there, as /connz tells.
async fn raw_on_shard(s: &Shoal, shard: u64, name: &str, user: Option<(&str, &str)>) -> Raw {
    for attempt in 0..100 {
        let name = format!("{name}-{attempt}");
        let mut r = s.raw().await;
        let login = user.map_or(String::new(), |(u, p)| {
            format!(",\"user\":\"{u}\",\"pass\":\"{p}\"")
        });
        r.send(format!("CONNECT {{\"verbose\":false,\"name\":\"{name}\"{login}}}\r\n").as_bytes())
            .await;
        assert!(r.ping().await.is_empty());
        let (_, connz) = s.http_get("/connz?limit=4096");
        let on = connz["connections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name.as_str())
            .map(|c| c["shard"].as_u64().unwrap());
        if on == Some(shard) {
            return r;
        }
    }
    panic!("no connection landed on shard {shard}");
}

/// Reads messages (of one-line payloads) until `want` arrived or none came
/// for 5 s; returns how many arrived.
async fn count_msgs(r: &mut Raw, want: usize) -> usize {
    let mut n = 0;
    while n < want {
        match r.line().await {
            Some(l) if l.starts_with("MSG ") => {
                // The payload line ("x").
                r.line().await;
                n += 1;
            }
            Some(_) => {}
            None => break,
        }
    }
    n
}

/// Shard placements of (publisher, ineligible member, eligible member) worth
/// testing: all on one shard; with two shards, the ineligible member alone
/// on the other shard (that shard must hand the message back) or alone with
/// the publisher (the publisher's pick must skip it).
fn placements(shards: usize) -> &'static [(u64, u64, u64)] {
    if shards == 1 {
        &[(0, 0, 0)]
    } else {
        &[(0, 1, 0), (0, 0, 1)]
    }
}

/// A queue member whose permissions deny the subject (a wildcard
/// subscription filtered at delivery) is not picked: every message goes to
/// a member that may receive it, as with nats-server.
#[tokio::test]
async fn queue_member_denied_the_subject_is_passed_over() {
    for shards in SHARDS {
        for &placed in placements(shards) {
            // Boxed: the raw connections' read buffers make a large future.
            Box::pin(denied_member_case(shards, placed)).await;
        }
    }
}

async fn denied_member_case(shards: usize, (p_on, d_on, e_on): (u64, u64, u64)) {
    let conf = r#"authorization { users: [
        {user: pub, password: p}
        {user: ok, password: o}
        {user: nosecret, password: n, permissions: {subscribe: {allow: [">"], deny: ["foo.secret"]}}}
    ] }"#;
    let n = 200;
    let s = Shoal::start(shards, &["-m", "-1"], Some(conf));
    let mut denied = raw_on_shard(&s, d_on, "denied", Some(("nosecret", "n"))).await;
    denied.send(b"SUB foo.* q 1\r\n").await;
    assert!(denied.ping().await.is_empty(), "foo.* is allowed");
    let mut eligible = raw_on_shard(&s, e_on, "eligible", Some(("ok", "o"))).await;
    eligible.send(b"SUB foo.* q 1\r\n").await;
    eligible.ping().await;
    let mut p = raw_on_shard(&s, p_on, "pub", Some(("pub", "p"))).await;
    p.send(&b"PUB foo.secret 1\r\nx\r\n".repeat(n)).await;
    assert!(p.ping().await.is_empty());
    let placed = format!("shards={shards} pub/denied/eligible on {p_on}/{d_on}/{e_on}");
    assert_eq!(
        count_msgs(&mut eligible, n).await,
        n,
        "every message reaches the member that may receive it ({placed})"
    );
    assert!(denied.ping().await.is_empty(), "denied got none ({placed})");
    assert!(eligible.ping().await.is_empty(), "exactly once ({placed})");
}

/// A queue member that reached its `UNSUB <sid> <max>` is not picked again,
/// including by a shard that has not yet heard it left: the message goes to
/// another member instead of being dropped.
#[tokio::test]
async fn queue_member_past_its_max_is_passed_over() {
    for shards in SHARDS {
        for &placed in placements(shards) {
            Box::pin(max_member_case(shards, placed)).await;
        }
    }
}

async fn max_member_case(shards: usize, (p_on, m_on, e_on): (u64, u64, u64)) {
    let n = 200;
    let s = Shoal::start(shards, &["-m", "-1"], None);
    let mut once = raw_on_shard(&s, m_on, "once", None).await;
    once.send(b"SUB foo.* q 1\r\nUNSUB 1 1\r\n").await;
    once.ping().await;
    let mut other = raw_on_shard(&s, e_on, "other", None).await;
    other.send(b"SUB foo.* q 1\r\n").await;
    other.ping().await;
    let mut p = raw_on_shard(&s, p_on, "pub", None).await;
    p.send(&b"PUB foo.x 1\r\nx\r\n".repeat(n)).await;
    assert!(p.ping().await.is_empty());
    let placed = format!("shards={shards} pub/max/other on {p_on}/{m_on}/{e_on}");
    let got_once = count_msgs(&mut once, 1).await;
    assert!(once.ping().await.is_empty(), "max 1 ({placed})");
    assert_eq!(
        count_msgs(&mut other, n - got_once).await,
        n - got_once,
        "every message reaches a member ({placed})"
    );
    assert!(other.ping().await.is_empty(), "exactly once ({placed})");
}

/// Once a publisher's PING is answered, everything it published before it
/// has reached every subscriber: a subscriber that then unsubscribes and
/// pings gets all of it before its PONG, as from nats-server, whichever
/// shards the two are on. (nats.py's `test_drain_connection` lost messages
/// here: the subscriber's shard applied its UNSUB before the batch the
/// publisher's shard had already sent it.)
#[tokio::test]
async fn a_pong_covers_messages_routed_to_other_shards() {
    const N: usize = 2000;
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], None);
        let mut burst = Vec::new();
        for _ in 0..N {
            burst.extend_from_slice(b"PUB c 1\r\nx\r\n");
        }
        for trial in 0..20 {
            let mut subs = Vec::new();
            for _ in 0..3 {
                let mut r = s.raw().await;
                r.send(b"CONNECT {\"verbose\":false}\r\nSUB c 1\r\n").await;
                r.ping().await;
                subs.push(r);
            }
            let mut p = s.raw().await;
            p.send(b"CONNECT {\"verbose\":false}\r\n").await;
            p.send(&burst).await;
            p.ping().await;
            for sub in &mut subs {
                sub.send(b"UNSUB 1\r\nPING\r\n").await;
            }
            for (i, sub) in subs.iter_mut().enumerate() {
                let mut got = 0;
                loop {
                    let l = sub.line().await.expect("PONG");
                    if l == "PONG" {
                        break;
                    }
                    got += usize::from(l.starts_with("MSG "));
                }
                assert_eq!(got, N, "subscriber {i}, trial {trial}, {shards} shards");
            }
        }
    }
}
