//! Live reload (SIGHUP): users, passwords, permissions, limits and the log
//! level change without dropping healthy connections; a connection that lost
//! its authorization is closed with nats-server's error; an invalid file
//! changes nothing.

mod common;

use common::*;
use std::time::Duration;

const BEFORE: &str = r#"
max_payload: 1024
authorization {
  users: [
    { user: alice, password: apw, permissions: { subscribe: { allow: ["a.>", "_INBOX.>"] } } }
    { user: bob, password: bpw }
  ]
}
"#;

const AFTER: &str = r#"
max_payload: 2048
debug: true
authorization {
  users: [
    { user: alice, password: apw, permissions: { subscribe: { allow: ["b.>", "_INBOX.>"] } } }
  ]
}
"#;

async fn login(s: &Shoal, user: &str, pass: &str) -> Raw {
    let mut r = s.raw().await;
    r.send(
        format!(
            "CONNECT {{\"verbose\":false,\"user\":\"{user}\",\"pass\":\"{pass}\"}}\r\nPING\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(r.line().await.as_deref(), Some("PONG"), "{user} logs in");
    r
}

fn wait_log(s: &Shoal, text: &str) {
    eventually(Duration::from_secs(10), text, || s.log_contains(text));
}

#[tokio::test]
async fn reload_applies_users_permissions_limits_and_log_level() {
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], Some(BEFORE));
        let mut alice = login(&s, "alice", "apw").await;
        alice.send(b"SUB a.> 1\r\nSUB b.> 2\r\nPING\r\n").await;
        // b.> is not allowed yet.
        assert_eq!(
            alice.line().await.as_deref(),
            Some("-ERR 'Permissions Violation for Subscription to \"b.>\"'")
        );
        assert_eq!(alice.line().await.as_deref(), Some("PONG"));
        let mut bob = login(&s, "bob", "bpw").await;
        assert!(!s.log_contains("Client connection created"), "debug is off");

        std::fs::write(s.conf_path(), AFTER).unwrap();
        s.signal(SIGHUP);
        wait_log(&s, "Reloaded server configuration");

        // Bob's user is gone: closed with nats-server's error.
        bob.expect_closed_after("-ERR 'Authorization Violation'")
            .await;
        // Alice stays connected; her a.> subscription is no longer allowed.
        assert_eq!(
            alice.line().await.as_deref(),
            Some("-ERR 'Permissions Violation for Subscription to \"a.>\"'")
        );
        alice.send(b"SUB b.> 3\r\nPING\r\n").await;
        assert_eq!(
            alice.line().await.as_deref(),
            Some("PONG"),
            "b.> now allowed"
        );
        let mut pubr = login(&s, "alice", "apw").await;
        pubr.send(b"PUB a.x 1\r\n1\r\nPUB b.x 1\r\n2\r\nPING\r\n")
            .await;
        assert_eq!(pubr.line().await.as_deref(), Some("PONG"));
        assert_eq!(
            alice.line().await.as_deref(),
            Some("MSG b.x 3 1"),
            "a.> was removed"
        );
        assert_eq!(alice.line().await.as_deref(), Some("2"));

        // New limits for new connections, and the new log level.
        let info = info_line(&s.addr).await;
        assert!(info.contains("\"max_payload\":2048"), "{info}");
        wait_log(&s, "Client connection created");
        // Bob cannot log in any more.
        let mut r = s.raw().await;
        r.send(b"CONNECT {\"verbose\":false,\"user\":\"bob\",\"pass\":\"bpw\"}\r\n")
            .await;
        assert_eq!(
            r.line().await.as_deref(),
            Some("-ERR 'Authorization Violation'")
        );
    }
}

#[tokio::test]
async fn an_invalid_file_is_rejected_and_the_old_config_stays() {
    let s = Shoal::start(1, &[], Some(BEFORE));
    let mut bob = login(&s, "bob", "bpw").await;
    std::fs::write(
        s.conf_path(),
        "authorization { users: [ { user: x, nonsense_key: 1 } ] }",
    )
    .unwrap();
    s.signal(SIGHUP);
    wait_log(&s, "Failed to reload server configuration");
    assert!(!s.log_contains("Reloaded server configuration"));
    // Nothing changed: bob is still connected and can still log in.
    bob.send(b"PING\r\n").await;
    assert_eq!(bob.line().await.as_deref(), Some("PONG"));
    login(&s, "bob", "bpw").await;
}

/// A wildcard subscription made while the user had no permissions obeys the
/// deny list a reload gives it (the filter follows the permissions in force,
/// not those at SUB time); a client that never sent CONNECT (allowed while
/// no authentication was configured) is closed once a reload requires it.
#[tokio::test]
async fn reload_closes_the_holes_left_by_earlier_subscriptions_and_connections() {
    const OPEN: &str = "authorization { users: [ { user: carl, password: cpw } ] }";
    const DENY: &str = r#"authorization { users: [
        { user: carl, password: cpw, permissions: { subscribe: { allow: ">", deny: "x.secret" } } }
    ] }"#;
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], Some(OPEN));
        let mut carl = login(&s, "carl", "cpw").await;
        carl.send(b"SUB x.* 1\r\nPING\r\n").await;
        assert_eq!(carl.line().await.as_deref(), Some("PONG"));
        std::fs::write(s.conf_path(), DENY).unwrap();
        s.signal(SIGHUP);
        wait_log(&s, "Reloaded server configuration");
        let mut pubr = login(&s, "carl", "cpw").await;
        pubr.send(b"PUB x.secret 1\r\n1\r\nPUB x.open 1\r\n2\r\nPING\r\n")
            .await;
        assert_eq!(pubr.line().await.as_deref(), Some("PONG"));
        assert_eq!(
            carl.line().await.as_deref(),
            Some("MSG x.open 1 1"),
            "x.secret is denied now and must be filtered"
        );
        assert_eq!(carl.line().await.as_deref(), Some("2"));
    }

    let s = Shoal::start(1, &[], Some("max_payload: 1024"));
    // Connected and publishing without CONNECT: fine while no auth is set.
    let mut anon = s.raw().await;
    anon.send(b"PING\r\n").await;
    assert_eq!(anon.line().await.as_deref(), Some("PONG"));
    std::fs::write(s.conf_path(), OPEN).unwrap();
    s.signal(SIGHUP);
    anon.expect_closed_after("-ERR 'Authorization Violation'")
        .await;
}

const ACCOUNTS_BEFORE: &str = r#"
accounts {
  A: {
    users: [ {user: mover, password: m}, {user: stayer, password: s} ]
    exports: [ {stream: "ev.>"} ]
  }
  B: { users: [ {user: other, password: o} ] }
}
"#;

/// After: `mover` belongs to B, and B imports A's events.
const ACCOUNTS_AFTER: &str = r#"
accounts {
  A: {
    users: [ {user: stayer, password: s} ]
    exports: [ {stream: "ev.>"} ]
  }
  B: {
    users: [ {user: other, password: o}, {user: mover, password: m} ]
    imports: [ {stream: {account: A, subject: "ev.>"}} ]
  }
}
"#;

/// A reload that moves a user to another account closes that user's
/// connections (their subscriptions live in the old account's space) and a
/// reconnect lands in the new account; connections whose account stays get
/// the account's new imports and exports without a reconnect.
#[tokio::test]
async fn reload_moves_users_between_accounts() {
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], Some(ACCOUNTS_BEFORE));
        let mut mover = login(&s, "mover", "m").await;
        let mut stayer = login(&s, "stayer", "s").await;
        let mut other = login(&s, "other", "o").await;
        other.send(b"SUB ev.> 1\r\nPING\r\n").await;
        assert_eq!(other.line().await.as_deref(), Some("PONG"));
        std::fs::write(s.conf_path(), ACCOUNTS_AFTER).unwrap();
        s.signal(SIGHUP);
        wait_log(&s, "Reloaded server configuration");
        assert!(
            mover.closed_within(Duration::from_secs(5)).await,
            "a client moved to another account is closed"
        );
        assert!(s.log_contains("account changed by a configuration reload"));
        // The stayer is still connected, and what it publishes in A now
        // reaches B through the new import (other's subscription, made
        // before the reload, sees it).
        stayer.send(b"PUB ev.1 2\r\nhi\r\nPING\r\n").await;
        assert_eq!(stayer.line().await.as_deref(), Some("PONG"));
        assert_eq!(other.line().await.as_deref(), Some("MSG ev.1 1 2"));
        assert_eq!(other.line().await.as_deref(), Some("hi"));
        // The mover reconnects into B: it sees B's traffic, not A's.
        let mut moved = login(&s, "mover", "m").await;
        moved.send(b"SUB only.b 1\r\nPING\r\n").await;
        assert_eq!(moved.line().await.as_deref(), Some("PONG"));
        stayer.send(b"PUB only.b 1\r\na\r\nPING\r\n").await;
        assert_eq!(stayer.line().await.as_deref(), Some("PONG"));
        other.send(b"PUB only.b 1\r\nb\r\nPING\r\n").await;
        assert_eq!(other.line().await.as_deref(), Some("PONG"));
        assert_eq!(moved.line().await.as_deref(), Some("MSG only.b 1 1"));
        assert_eq!(moved.line().await.as_deref(), Some("b"));
        moved.send(b"PING\r\n").await;
        assert_eq!(moved.line().await.as_deref(), Some("PONG"));
    }
}
