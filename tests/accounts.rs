//! Accounts: separate subject spaces, users bound to accounts, `no_auth_user`
//! in an account, stream and service exports/imports (a request crossing
//! into another account gets its reply back), on one and two shards and
//! across two clustered nodes.

mod common;

use bytes::Bytes;
use common::*;
use std::time::Duration;

#[tokio::test]
async fn accounts_are_isolated_and_share_only_what_they_export() {
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], Some(SHARING_ACCOUNTS));
        let (a, b, c) = (
            login_same(&s.url(), "a").await,
            login_same(&s.url(), "b").await,
            login_same(&s.url(), "c").await,
        );
        // Isolation: C's `>` sees only C's own messages, with their subject.
        let mut c_all = c.subscribe(">").await.unwrap();
        let mut b_from_a = b.subscribe("from_a.events.>").await.unwrap();
        let mut b_plain = b.subscribe("events.>").await.unwrap();
        let mut responder = a.subscribe("svc.echo").await.unwrap();
        // async-nats' flush does not wait for the server: a round trip on
        // each connection makes sure its SUBs were taken.
        for cl in [&a, &b, &c] {
            sync_interest(cl, cl).await;
        }
        a.publish("events.1", "e1".into()).await.unwrap();
        b.publish("x", "from b".into()).await.unwrap();
        c.publish("mine", "from c".into()).await.unwrap();
        for cl in [&a, &b, &c] {
            cl.flush().await.unwrap();
        }
        // C's `>` also saw its own round-trip probes (`_SYNC.…`).
        let mut m = next_msg(&mut c_all).await;
        while m.subject.starts_with("_SYNC.") {
            m = next_msg(&mut c_all).await;
        }
        assert_eq!(
            (m.subject.as_str(), &m.payload[..]),
            ("mine", &b"from c"[..])
        );
        no_msg(&mut c_all, Duration::from_millis(200)).await;
        // The stream import: A's events arrive in B under the prefix only.
        let m = next_msg(&mut b_from_a).await;
        assert_eq!(m.subject.as_str(), "from_a.events.1", "shards={shards}");
        no_msg(&mut b_plain, Duration::from_millis(100)).await;

        // The service import: B's request on `echo` reaches A's responder,
        // the reply finds its way back into B.
        let server = tokio::spawn(async move {
            use futures::StreamExt;
            let req = responder.next().await.unwrap();
            assert_eq!(req.subject.as_str(), "svc.echo");
            let reply = req.reply.clone().unwrap();
            a.publish(
                reply,
                Bytes::from([&b"echo: "[..], &req.payload[..]].concat()),
            )
            .await
            .unwrap();
            a.flush().await.unwrap();
            a
        });
        let answer = tokio::time::timeout(Duration::from_secs(5), b.request("echo", "hi".into()))
            .await
            .expect("a reply in time")
            .expect("a reply");
        assert_eq!(&answer.payload[..], b"echo: hi");
        server.await.unwrap();
        // C imports nothing: the same request has no responders (once C's
        // own `>` is gone).
        drop(c_all);
        c.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let err = c.request("echo", "hi".into()).await.unwrap_err();
        assert_eq!(err.kind(), async_nats::RequestErrorKind::NoResponders);
    }
}

/// A forged service reply (`_R_.<account>.<mac>.<subject>`) from another
/// account reaches nobody outside the forger's own space.
#[tokio::test]
async fn a_forged_service_reply_does_not_cross_accounts() {
    let s = Shoal::start(1, &[], Some(SHARING_ACCOUNTS));
    let b = login_same(&s.url(), "b").await;
    let c = login_same(&s.url(), "c").await;
    let mut inbox = b.subscribe("_INBOX.target").await.unwrap();
    sync_interest(&b, &b).await;
    c.publish("_R_.B.0123456789abcdef._INBOX.target", "forged".into())
        .await
        .unwrap();
    c.flush().await.unwrap();
    no_msg(&mut inbox, Duration::from_millis(300)).await;
}

/// nats.py's own `no_auth_user` configuration: the user lives in an account.
#[tokio::test]
async fn no_auth_user_in_an_account() {
    let conf = r#"
accounts {
  a {
    users = [ { user: 'foo', pass: 'foo',
      permissions: {
        subscribe: { allow: ["foo", "_INBOX.>"], deny: ["bar"] },
        publish: { allow: ["foo", "_INBOX.>"], deny: ["bar"] }
      }
    }]
  }
  b {
    users = [ { user: 'bar', pass: 'bar',
      permissions: {
        subscribe: { allow: ["bar"], deny: [">"] },
        publish: { allow: ["bar"], deny: [">"] }
      }
    }]
  }
}
no_auth_user = "foo"
"#;
    let s = Shoal::start(2, &[], Some(conf));
    let anon = async_nats::connect(s.url()).await.unwrap();
    let mut sub = anon.subscribe("foo").await.unwrap();
    anon.flush().await.unwrap();
    anon.publish("foo", "hi".into()).await.unwrap();
    assert_eq!(&next_msg(&mut sub).await.payload[..], b"hi");
    // bar is in account b: its publish to foo cannot reach a's subscriber
    // (and its permissions deny it anyway).
    let mut raw = s.raw().await;
    raw.send(b"CONNECT {\"verbose\":false,\"user\":\"bar\",\"pass\":\"bar\"}\r\nSUB foo 1\r\n")
        .await;
    assert_eq!(
        raw.ping().await,
        vec!["-ERR 'Permissions Violation for Subscription to \"foo\"'"]
    );
}

/// Two clustered nodes with the same accounts: a service request from B on
/// one node reaches A's responder on the other and the reply comes back;
/// isolation holds across the route.
#[tokio::test]
async fn accounts_across_a_cluster() {
    let (n1, n2) = linked_pair(Some(SHARING_ACCOUNTS), |_| vec![]);
    let a = login_same(&n1.url(), "a").await;
    let b = login_same(&n2.url(), "b").await;
    let c = login_same(&n2.url(), "c").await;
    let mut c_all = c.subscribe(">").await.unwrap();
    let mut responder = a.subscribe("svc.echo").await.unwrap();
    a.flush().await.unwrap();
    c.flush().await.unwrap();
    let server = tokio::spawn(async move {
        use futures::StreamExt;
        while let Some(req) = responder.next().await {
            if let Some(reply) = req.reply {
                a.publish(reply, req.payload).await.unwrap();
                a.flush().await.unwrap();
            }
        }
    });
    let mut answered = false;
    for _ in 0..50 {
        // The responder's interest needs a moment to reach the other node.
        match b.request("echo", "ping".into()).await {
            Ok(m) => {
                assert_eq!(&m.payload[..], b"ping");
                answered = true;
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(answered, "no reply across the cluster");
    no_msg(&mut c_all, Duration::from_millis(200)).await;
    server.abort();
}
