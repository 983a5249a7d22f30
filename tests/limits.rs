//! Limits and faults: each with nats-server's `-ERR` text and close/keep-open
//! behaviour, and a bad client never disturbs the others.

mod common;

use common::*;
use std::time::Duration;

#[tokio::test]
async fn maximum_payload_violation_closes() {
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], Some("max_payload: 16"));
        let mut r = s.raw().await;
        r.send(b"CONNECT {\"verbose\":false}\r\nPUB a 16\r\n0123456789abcdef\r\n")
            .await;
        assert!(r.ping().await.is_empty(), "16 bytes is fine");
        r.send(b"PUB a 17\r\n0123456789abcdefg\r\n").await;
        r.expect_closed_after("-ERR 'Maximum Payload Violation'")
            .await;
    }
}

#[tokio::test]
async fn info_advertises_max_payload() {
    let s = Shoal::start(1, &[], Some("max_payload: 1KB"));
    let info = info_line(&s.addr).await;
    assert!(info.contains("\"max_payload\":1024"), "{info}");
    assert!(info.contains("\"headers\":true"));
    assert!(info.contains("\"proto\":1"));
    assert!(info.contains("\"client_ip\":\"127.0.0.1\""));
}

#[tokio::test]
async fn unknown_protocol_operation_closes() {
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], None);
        let mut r = s.raw().await;
        r.send(b"CONNECT {\"verbose\":false}\r\nHELLO there\r\n")
            .await;
        r.expect_closed_after("-ERR 'Unknown Protocol Operation'")
            .await;
        // A size that is not a number: closed the same way.
        let mut r = s.raw().await;
        r.send(b"PUB a x\r\n").await;
        r.expect_closed_after("-ERR 'Unknown Protocol Operation'")
            .await;
    }
}

#[tokio::test]
async fn maximum_control_line_exceeded_closes() {
    let s = Shoal::start(1, &[], Some("max_control_line: 64"));
    let mut r = s.raw().await;
    let long = format!("SUB {} 1\r\n", "a".repeat(100));
    r.send(long.as_bytes()).await;
    r.expect_closed_after("-ERR 'maximum control line exceeded'")
        .await;
}

#[tokio::test]
async fn maximum_connections_exceeded() {
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], Some("max_connections: 2"));
        let mut a = s.raw().await;
        let mut b = s.raw().await;
        let mut c = s.raw().await;
        c.expect_closed_after("-ERR 'maximum connections exceeded'")
            .await;
        a.ping().await;
        b.ping().await;
        drop(a);
        // The freed slot can be used again.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut d = s.raw().await;
        assert!(d.ping().await.is_empty());
    }
}

#[tokio::test]
async fn maximum_subscriptions_exceeded_keeps_connection() {
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], Some("max_subscriptions: 2"));
        let mut r = s.raw().await;
        r.send(b"CONNECT {\"verbose\":false}\r\nSUB a 1\r\nSUB b 2\r\nSUB c 3\r\n")
            .await;
        assert_eq!(
            r.ping().await,
            vec!["-ERR 'maximum subscriptions exceeded'"]
        );
        r.send(b"UNSUB 1\r\nSUB c 3\r\n").await;
        assert!(r.ping().await.is_empty(), "room again after UNSUB");
    }
}

#[tokio::test]
async fn invalid_subjects() {
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], None);
        let mut r = s.raw().await;
        r.send(b"CONNECT {\"verbose\":false,\"pedantic\":true}\r\nSUB foo..bar 1\r\n")
            .await;
        assert_eq!(
            r.ping().await,
            vec!["-ERR 'Invalid Subject'"],
            "connection stays open"
        );
        r.send(b"SUB foo.>.bar 1\r\n").await;
        assert_eq!(r.ping().await, vec!["-ERR 'Invalid Subject'"]);
        r.send(b"SUB foo.* 1\r\nPUB foo.* 1\r\nx\r\n").await;
        assert_eq!(
            r.ping().await,
            vec!["-ERR 'Invalid Publish Subject'"],
            "pedantic rejects a wildcard publish; nothing delivered"
        );
        r.send(b"PUB foo.ok 1\r\ny\r\n").await;
        assert_eq!(r.ping().await, vec!["MSG foo.ok 1 1", "y"]);
    }
}

#[tokio::test]
async fn verbose_acks_every_operation() {
    let s = Shoal::start(1, &[], None);
    let mut r = s.raw().await;
    r.send(b"CONNECT {\"verbose\":true}\r\nSUB a 1\r\nPUB a 1\r\nx\r\nUNSUB 1\r\n")
        .await;
    assert_eq!(
        r.ping().await,
        vec!["+OK", "+OK", "+OK", "MSG a 1 1", "x", "+OK"]
    );
}

#[tokio::test]
async fn stale_connection_is_closed() {
    let conf = "ping_interval: \"150ms\"\nping_max: 2";
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], Some(conf));
        let mut silent = s.raw().await;
        let mut polite = s.raw().await;
        let silent_side = async {
            assert_eq!(silent.line().await.as_deref(), Some("PING"));
            assert_eq!(silent.line().await.as_deref(), Some("PING"));
            silent.expect_closed_after("-ERR 'Stale Connection'").await;
        };
        // A client answering PONG stays.
        let polite_side = async {
            for _ in 0..5 {
                assert_eq!(polite.line().await.as_deref(), Some("PING"));
                polite.send(b"PONG\r\n").await;
            }
            assert!(polite.ping().await.is_empty());
        };
        tokio::join!(silent_side, polite_side);
    }
}

/// A subscriber that stops reading is cut once its pending bytes pass
/// `max_pending`; a healthy subscriber gets everything; the publisher never
/// notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_isolated() {
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], Some("max_pending: 8MB"));
        let healthy = s.client().await;
        let mut good = healthy.subscribe("flood").await.unwrap();
        let mut stuck = s.raw().await;
        stuck
            .send(b"CONNECT {\"verbose\":false}\r\nSUB flood 1\r\n")
            .await;
        stuck.ping().await;
        let publisher = s.client().await;
        sync_interest(&healthy, &publisher).await;
        let payload = bytes::Bytes::from(vec![b'x'; 1024]);
        let n = 20_000; // 20 MB: far past socket buffers and max_pending.
        let consumer = tokio::spawn(async move {
            use futures::StreamExt;
            let mut got = 0;
            while got < n {
                match tokio::time::timeout(Duration::from_secs(5), good.next()).await {
                    Ok(Some(_)) => got += 1,
                    _ => break,
                }
            }
            got
        });
        for chunk in 0..n / 500 {
            for _ in 0..500 {
                publisher.publish("flood", payload.clone()).await.unwrap();
            }
            publisher.flush().await.unwrap();
            // Paced so the healthy subscriber keeps up; the stuck one cannot.
            tokio::time::sleep(Duration::from_millis(if chunk % 4 == 0 { 2 } else { 0 })).await;
        }
        let got = tokio::time::timeout(Duration::from_secs(60), consumer)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            got,
            n,
            "healthy subscriber got every message (shards={shards}); log: {:?}",
            s.log.lock().unwrap()
        );
        // The stuck one was closed: reading now drains what the kernel held,
        // then EOF.
        assert!(
            stuck.closed_within(Duration::from_secs(10)).await,
            "stuck subscriber closed"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !s.log_contains("Slow Consumer") && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(s.log_contains("Slow Consumer Detected"));
        assert!(publisher.connection_state() == async_nats::connection::State::Connected);
    }
}

/// A write stuck past `write_deadline` closes the connection too.
#[tokio::test]
async fn write_deadline_closes_stuck_writer() {
    let s = Shoal::start(1, &[], Some("write_deadline: \"300ms\"\nmax_pending: 64MB"));
    let mut stuck = s.raw().await;
    stuck
        .send(b"CONNECT {\"verbose\":false}\r\nSUB flood 1\r\n")
        .await;
    stuck.ping().await;
    let publisher = s.client().await;
    let payload = bytes::Bytes::from(vec![b'x'; 4096]);
    for _ in 0..4000 {
        publisher.publish("flood", payload.clone()).await.unwrap();
    }
    publisher.flush().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !s.log_contains("Slow Consumer") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        s.log_contains("Slow Consumer Detected"),
        "closed by the write deadline"
    );
    assert!(stuck.closed_within(Duration::from_secs(10)).await);
}

/// Garbage on one connection disturbs nobody else.
#[tokio::test]
async fn bad_client_does_not_disturb_others() {
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], None);
        let c = s.client().await;
        let mut sub = c.subscribe("steady").await.unwrap();
        let p = s.client().await;
        sync_interest(&c, &p).await;
        for i in 0..50 {
            let mut bad = s.raw().await;
            bad.send(&[0xff, 0x00, b'\r', b'\n', i]).await;
            p.publish("steady", i.to_string().into()).await.unwrap();
        }
        p.flush().await.unwrap();
        for i in 0..50 {
            assert_eq!(
                next_msg(&mut sub).await.payload,
                bytes::Bytes::from(i.to_string())
            );
        }
    }
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A subscription keeps copies of its subject and sid, not the read buffer
/// they arrived in (issue 11, item 4): 2,000 SUBs, each sharing a read
/// buffer with a 60 KB publish, used to pin 2,000 buffers (+168 MiB RSS).
#[test]
fn subscriptions_do_not_pin_read_buffers() {
    let s = Shoal::start(1, &[], None);
    let mut c = shoal_bench::conn::Conn::connect(&s.url()).unwrap();
    c.ping().unwrap();
    let before = rss_kib(s.pid());
    let big = vec![b'x'; 60_000];
    for i in 0..2000 {
        shoal_core::proto::write_pub(&mut c.wbuf, b"nobody.listens", None, None, &big);
        c.subscribe(&format!("pinned.{i}"), None, i + 1);
        c.flush().unwrap();
        if i % 100 == 99 {
            c.ping().unwrap();
        }
    }
    c.ping().unwrap();
    let grown_mib = rss_kib(s.pid()).saturating_sub(before) / 1024;
    assert!(
        grown_mib < 40,
        "RSS grew by {grown_mib} MiB for 2,000 subscriptions"
    );
}

/// Every bad client leaves a trace an operator can find, in nats-server's
/// words, at the default log level (nats-server logs these at `[ERR]`).
#[tokio::test]
async fn protocol_errors_are_logged_as_nats_server_logs_them() {
    let s = Shoal::start(1, &[], Some("max_payload: 16"));
    let mut r = s.raw().await;
    r.send(b"PUB x 999999999999999999999\r\n").await;
    r.expect_closed_after("-ERR 'Unknown Protocol Operation'")
        .await;
    let mut r = s.raw().await;
    r.send(b"CONNECT {\"verbose\":false}\r\nPUB a 17\r\n0123456789abcdefg\r\n")
        .await;
    r.expect_closed_after("-ERR 'Maximum Payload Violation'")
        .await;
    let mut r = s.raw().await;
    r.send(b"HELLO there\r\n").await;
    r.expect_closed_after("-ERR 'Unknown Protocol Operation'")
        .await;
    for (what, text) in [
        (
            "bad size",
            r#"processPub Bad or Missing Size: "x 999999999999999999999""#,
        ),
        ("max payload", "maximum payload exceeded: 17 vs 16"),
        ("unknown op", r#"Client parser ERROR: proto="HELLO there""#),
    ] {
        eventually(Duration::from_secs(5), what, || {
            s.log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("[ERR]") && l.contains(text) && l.contains("127.0.0.1:"))
        });
    }
}

/// Trace (`-V`) shows each PUB and its payload as nats-server does, cut at
/// `max_traced_msg_len`.
#[tokio::test]
async fn trace_cuts_payloads_at_max_traced_msg_len() {
    let s = Shoal::start(1, &["-V"], Some("max_traced_msg_len: 4"));
    let mut r = s.raw().await;
    r.send(b"CONNECT {\"verbose\":false}\r\nPUB t.x 10\r\n0123456789\r\n")
        .await;
    assert!(r.ping().await.is_empty());
    eventually(Duration::from_secs(5), "the traced PUB", || {
        s.log_contains("<<- [PUB t.x 10]") && s.log_contains("MSG_PAYLOAD: [\"0123\"...]")
    });
    assert!(!s.log_contains("0123456789"));
}
