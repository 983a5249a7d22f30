//! Authentication and permissions: who may connect, publish and subscribe,
//! with nats-server's error texts and close/keep-open behaviour.

mod common;

use bytes::Bytes;
use common::*;
use futures::StreamExt;
use std::time::Duration;

#[tokio::test]
async fn user_and_password_from_flags() {
    for shards in SHARDS {
        let s = Shoal::start(shards, &["--user", "alice", "--pass", "s3cret"], None);
        let ok =
            async_nats::ConnectOptions::with_user_and_password("alice".into(), "s3cret".into())
                .connect(s.url())
                .await;
        assert!(ok.is_ok(), "right password accepted");
        let bad =
            async_nats::ConnectOptions::with_user_and_password("alice".into(), "wrong".into())
                .connect(s.url())
                .await;
        assert!(bad.is_err(), "wrong password refused");

        let mut r = s.raw().await;
        r.send(b"CONNECT {\"verbose\":false,\"user\":\"alice\",\"pass\":\"nope\"}\r\n")
            .await;
        r.expect_closed_after("-ERR 'Authorization Violation'")
            .await;
    }
}

#[tokio::test]
async fn info_says_auth_required_and_ops_before_connect_are_refused() {
    let s = Shoal::start(1, &["--auth", "tok"], None);
    let mut stream = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    let info = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(info.contains("\"auth_required\":true"), "{info}");
    stream.write_all(b"PUB x 1\r\na\r\n").await.unwrap();
    let n = stream.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"-ERR 'Authorization Violation'\r\n");
}

#[tokio::test]
async fn token_auth() {
    for shards in SHARDS {
        let s = Shoal::start(shards, &["--auth", "t0k3n"], None);
        assert!(async_nats::ConnectOptions::with_token("t0k3n".into())
            .connect(s.url())
            .await
            .is_ok());
        assert!(async_nats::ConnectOptions::with_token("other".into())
            .connect(s.url())
            .await
            .is_err());
        assert!(
            async_nats::connect(s.url()).await.is_err(),
            "no token refused"
        );
    }
}

#[tokio::test]
async fn bcrypt_password_in_config() {
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let conf = format!("authorization {{ users: [ {{user: bob, password: \"{hash}\"}} ] }}");
    let s = Shoal::start(1, &[], Some(&conf));
    assert!(
        async_nats::ConnectOptions::with_user_and_password("bob".into(), "s3cret".into())
            .connect(s.url())
            .await
            .is_ok()
    );
    assert!(
        async_nats::ConnectOptions::with_user_and_password("bob".into(), hash.clone())
            .connect(s.url())
            .await
            .is_err()
    );
}

const PERMS: &str = r#"
authorization {
  users: [
    {user: admin, password: a}
    {user: app, password: b, permissions: {
        publish: {allow: ["orders.>", "_INBOX.>"], deny: ["orders.secret"]}
        subscribe: {allow: ["orders.*", "_INBOX.>"], deny: ["orders.hidden"]}
    }}
    {user: svc, password: c, permissions: {
        publish: {deny: [">"]}
        subscribe: "rpc.>"
        allow_responses: true
    }}
  ]
}
"#;

async fn raw_login(s: &Shoal, user: &str, pass: &str) -> Raw {
    let mut r = s.raw().await;
    r.send(
        format!("CONNECT {{\"verbose\":false,\"user\":\"{user}\",\"pass\":\"{pass}\"}}\r\n")
            .as_bytes(),
    )
    .await;
    assert!(r.ping().await.is_empty());
    r
}

#[tokio::test]
async fn publish_and_subscribe_permissions() {
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], Some(PERMS));
        let mut admin = raw_login(&s, "admin", "a").await;
        admin.send(b"SUB orders.> 1\r\n").await;
        admin.ping().await;
        let mut app = raw_login(&s, "app", "b").await;

        app.send(b"PUB orders.secret 1\r\nx\r\n").await;
        assert_eq!(
            app.ping().await,
            vec!["-ERR 'Permissions Violation for Publish to \"orders.secret\"'"],
            "denied publish, connection kept"
        );
        app.send(b"PUB billing.x 1\r\nx\r\n").await;
        assert_eq!(
            app.ping().await,
            vec!["-ERR 'Permissions Violation for Publish to \"billing.x\"'"]
        );
        app.send(b"SUB billing.* 5\r\n").await;
        assert_eq!(
            app.ping().await,
            vec!["-ERR 'Permissions Violation for Subscription to \"billing.*\"'"]
        );
        app.send(b"SUB orders.hidden q 6\r\n").await;
        assert_eq!(
            app.ping().await,
            vec!["-ERR 'Permissions Violation for Subscription to \"orders.hidden\" using queue \"q\"'"]
        );
        app.send(b"SUB orders.> 7\r\n").await;
        assert_eq!(
            app.ping().await,
            vec!["-ERR 'Permissions Violation for Subscription to \"orders.>\"'"],
            "orders.* does not cover orders.>"
        );
        // Allowed: subscribe to orders.*, publish orders.new.
        app.send(b"SUB orders.* 8\r\nPUB orders.new 2\r\nok\r\n")
            .await;
        let lines = app.ping().await;
        assert_eq!(lines, vec!["MSG orders.new 8 2", "ok"]);
        // The admin got only the allowed publish.
        assert_eq!(admin.line().await.unwrap(), "MSG orders.new 1 2");
        assert_eq!(admin.line().await.unwrap(), "ok");
        assert!(
            admin.ping().await.is_empty(),
            "denied publishes were not delivered"
        );
    }
}

#[tokio::test]
async fn wildcard_subscription_does_not_leak_denied_subjects() {
    let conf = r#"authorization { users: [
        {user: pub, password: p}
        {user: sub, password: s, permissions: {subscribe: {allow: [">"], deny: ["secret.>"]}}}
    ] }"#;
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], Some(conf));
        let mut sub = raw_login(&s, "sub", "s").await;
        sub.send(b"SUB > 1\r\n").await;
        assert!(
            sub.ping().await.is_empty(),
            "overlapping wildcard is accepted"
        );
        let mut p = raw_login(&s, "pub", "p").await;
        // Make sure the interest reached the publisher's shard.
        sub.send(b"SUB sync 2\r\n").await;
        sub.ping().await;
        p.send(b"PUB secret.plan 1\r\nx\r\nPUB public.news 1\r\ny\r\n")
            .await;
        p.ping().await;
        assert_eq!(
            sub.line().await.unwrap(),
            "MSG public.news 1 1",
            "secret.plan filtered at delivery"
        );
    }
}

#[tokio::test]
async fn allow_responses_lets_a_service_reply_once() {
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], Some(PERMS));
        let svc = async_nats::ConnectOptions::with_user_and_password("svc".into(), "c".into())
            .connect(s.url())
            .await
            .unwrap();
        let mut requests = svc.subscribe("rpc.add").await.unwrap();
        let client = async_nats::ConnectOptions::with_user_and_password("admin".into(), "a".into())
            .connect(s.url())
            .await
            .unwrap();
        sync_interest_via(&svc, &client, "rpc.sync").await;
        let svc2 = svc.clone();
        tokio::spawn(async move {
            while let Some(m) = requests.next().await {
                let reply = m.reply.unwrap();
                svc2.publish(reply.clone(), "first".into()).await.unwrap();
                // A second response to the same request is not allowed.
                svc2.publish(reply, "second".into()).await.unwrap();
                svc2.flush().await.unwrap();
            }
        });
        let resp = client.request("rpc.add", "1+1".into()).await.unwrap();
        assert_eq!(resp.payload, Bytes::from("first"));

        // The service may not publish anywhere else.
        let mut r = raw_login(&s, "svc", "c").await;
        r.send(b"PUB rpc.other 1\r\nx\r\n").await;
        assert_eq!(
            r.ping().await,
            vec!["-ERR 'Permissions Violation for Publish to \"rpc.other\"'"]
        );
    }
}

#[tokio::test]
async fn authentication_timeout() {
    let conf = "authorization { token: t, timeout: 0.3 }";
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], Some(conf));
        let mut r = s.raw().await;
        assert_eq!(
            r.line_within(Duration::from_secs(3)).await.as_deref(),
            Some("-ERR 'Authentication Timeout'")
        );
        assert!(r.closed_within(Duration::from_secs(2)).await);
    }
}

#[tokio::test]
async fn trace_never_logs_passwords() {
    let s = Shoal::start(
        1,
        &["-V", "--user", "alice", "--pass", "hunter2-secret"],
        None,
    );
    let mut r = s.raw().await;
    r.send(b"CONNECT {\"verbose\":false,\"user\":\"alice\",\"pass\":\"hunter2-secret\"}\r\n")
        .await;
    assert!(r.ping().await.is_empty());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(s.log_contains("<<- CONNECT"), "CONNECT is traced");
    assert!(!s.log_contains("hunter2-secret"), "the password is not");
}

/// Authentication failures and permission violations are logged at `[ERR]`
/// as nats-server logs them (user named, password never).
#[tokio::test]
async fn violations_are_logged_without_secrets() {
    let s = Shoal::start(1, &[], Some(PERMS));
    let mut r = s.raw().await;
    r.send(b"CONNECT {\"verbose\":false,\"user\":\"app\",\"pass\":\"wrong-s3cret\"}\r\n")
        .await;
    r.expect_closed_after("-ERR 'Authorization Violation'")
        .await;
    let mut app = raw_login(&s, "app", "b").await;
    app.send(b"PUB orders.secret 1\r\nx\r\nSUB billing.* q 5\r\n")
        .await;
    app.ping().await;
    for (what, text) in [
        ("auth", r#"authentication error - User "app""#),
        (
            "publish",
            r#"Publish Violation - User "app", Subject "orders.secret""#,
        ),
        (
            "subscribe",
            r#"Subscription Violation - User "app", Subject "billing.*", Queue: "q", SID 5"#,
        ),
    ] {
        eventually(Duration::from_secs(5), what, || {
            s.log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("[ERR]") && l.contains(text))
        });
    }
    assert!(!s.log_contains("wrong-s3cret"));
}

/// bcrypt (cost 15: ~2 s per check here) never runs on a shard: CONNECTs
/// with wrong passwords for a bcrypt user do not hold back a healthy
/// client's round trips on the same single shard (on the shard, each check
/// held them for its whole 2 s).
#[tokio::test]
async fn bcrypt_checks_do_not_freeze_the_shard() {
    let hash = bcrypt::hash("s3cret", 15).unwrap();
    let conf = format!("authorization {{ users: [ {{user: bob, password: \"{hash}\"}}, {{user: ann, password: plain}} ], timeout: 20 }}");
    let s = Shoal::start(1, &[], Some(&conf));
    let mut healthy = s.raw().await;
    healthy
        .send(b"CONNECT {\"verbose\":false,\"user\":\"ann\",\"pass\":\"plain\"}\r\n")
        .await;
    assert!(healthy.ping().await.is_empty());
    let mut attackers = Vec::new();
    for _ in 0..2 {
        let mut r = s.raw().await;
        r.send(b"CONNECT {\"verbose\":false,\"user\":\"bob\",\"pass\":\"guess\"}\r\nPING\r\n")
            .await;
        attackers.push(r);
    }
    // On the shard these checks would take seconds in a row; no round trip
    // may wait over a second (liveness, not speed).
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let t = std::time::Instant::now();
        assert!(healthy.ping().await.is_empty());
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        worst < Duration::from_secs(1),
        "a round trip waited {worst:?}"
    );
    for mut r in attackers {
        r.expect_closed_after("-ERR 'Authorization Violation'")
            .await;
    }
    // The right password still works, and the second time needs no bcrypt.
    for _ in 0..2 {
        let c = async_nats::ConnectOptions::with_user_and_password("bob".into(), "s3cret".into())
            .connect(s.url())
            .await;
        assert!(c.is_ok());
    }
}

/// `no_auth_user`: a client without credentials is that user, with its
/// permissions; credentials given are still checked.
#[tokio::test]
async fn no_auth_user_applies_to_clients_without_credentials() {
    let conf = r#"
no_auth_user: guest
authorization { users: [
  {user: guest, password: unused, permissions: { publish: "public.>", subscribe: "public.>" }}
  {user: admin, password: a}
] }
"#;
    let s = Shoal::start(1, &[], Some(conf));
    let mut anon = s.raw().await;
    anon.send(b"CONNECT {\"verbose\":false}\r\nSUB public.x 1\r\nPUB public.x 2\r\nhi\r\nPUB private.x 1\r\nx\r\n")
        .await;
    assert_eq!(
        anon.ping().await,
        vec![
            "MSG public.x 1 2",
            "hi",
            "-ERR 'Permissions Violation for Publish to \"private.x\"'"
        ]
    );
    let mut wrong = s.raw().await;
    wrong
        .send(b"CONNECT {\"verbose\":false,\"user\":\"admin\",\"pass\":\"nope\"}\r\n")
        .await;
    wrong
        .expect_closed_after("-ERR 'Authorization Violation'")
        .await;
    raw_login(&s, "admin", "a").await;
}
