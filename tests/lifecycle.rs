//! Start-up, shutdown, lame duck mode, configuration errors, and the
//! visibility barrier across shards.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn unknown_config_key_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.conf");
    std::fs::write(&path, "port: 4222\nmax_paylod: 1MB\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2") && err.contains("max_paylod"),
        "{err}"
    );
}

#[test]
fn help_documents_the_nats_server_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--addr",
        "--port",
        "--name",
        "--http_port",
        "--user",
        "--pass",
        "--auth",
        "--config",
        "--debug",
        "--trace",
        "--log",
        "--pid",
        "--cluster",
        "--routes",
        "--cluster_name",
        "--shards",
        "--spin_before_park",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["-a", "127.0.0.1", "-p", &port])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot listen for client connections"),
        "{err}"
    );
}

#[tokio::test]
async fn sigterm_flushes_and_exits_cleanly() {
    for shards in SHARDS {
        let mut s = Shoal::start(shards, &["-D"], None);
        let mut sub = s.raw().await;
        sub.send(b"CONNECT {\"verbose\":false}\r\nSUB q 1\r\n")
            .await;
        sub.ping().await;
        let mut p = s.raw().await;
        // Same connection as the subscriber's? No: another one, after the barrier.
        p.send(b"CONNECT {\"verbose\":false}\r\n").await;
        for _ in 0..100 {
            p.send(b"PUB q 2\r\nhi\r\n").await;
        }
        p.ping().await;
        s.signal(SIGTERM);
        let mut got = 0;
        while let Some(line) = sub.line().await {
            if line.starts_with("MSG q 1 2") {
                got += 1;
            }
        }
        assert_eq!(
            got, 100,
            "every message published before the signal was delivered"
        );
        assert_eq!(s.wait_exit(Duration::from_secs(5)), Some(0));
        assert!(s.log_contains("Server Exiting"));
    }
}

#[tokio::test]
async fn lame_duck_mode_moves_clients_off() {
    let conf = "lame_duck_duration: \"1s\"\nlame_duck_grace_period: \"200ms\"";
    for shards in SHARDS {
        let mut s = Shoal::start(shards, &[], Some(conf));
        let mut clients = Vec::new();
        for _ in 0..4 {
            let mut r = s.raw().await;
            r.send(b"CONNECT {\"verbose\":false}\r\n").await;
            r.ping().await;
            clients.push(r);
        }
        s.signal(SIGUSR2);
        for r in clients.iter_mut() {
            let info = r.line().await.expect("INFO with ldm");
            assert!(
                info.starts_with("INFO ") && info.contains("\"ldm\":true"),
                "{info}"
            );
        }
        // No new connections once in lame duck mode.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let refused = tokio::time::timeout(Duration::from_secs(1), async {
            match tokio::net::TcpStream::connect(&s.addr).await {
                Err(_) => true,
                Ok(mut stream) => {
                    use tokio::io::AsyncReadExt;
                    let mut b = [0u8; 16];
                    matches!(stream.read(&mut b).await, Ok(0) | Err(_))
                }
            }
        })
        .await
        .unwrap_or(false);
        assert!(refused, "lame duck server still accepts clients");
        for r in clients.iter_mut() {
            assert!(
                r.closed_within(Duration::from_secs(3)).await,
                "client closed within the duration"
            );
        }
        assert_eq!(s.wait_exit(Duration::from_secs(5)), Some(0));
    }
}

/// SUB then PING on one connection; once the PONG is back, a publish from
/// any other connection, on any shard, must reach the subscription — while
/// both shards are busy with other traffic, and with every shard's inbox
/// task lagging 100 ms behind (the test hook), so that only the guarantee
/// itself, not a fast inbox, can make it pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visibility_barrier_with_busy_shards() {
    let s = Shoal::start_with_env(2, &[], None, &[("SHOAL_TEST_CONTROL_DELAY_MS", "100")]);
    // Background load on both shards: publishers and a subscriber.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let c = s.client().await;
        let _sink = c.subscribe("load").await.unwrap();
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let _keep = _sink;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for _ in 0..100 {
                    c.publish("load", "x".into()).await.unwrap();
                }
                c.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut publishers = Vec::new();
    for _ in 0..6 {
        let mut p = s.raw().await;
        p.send(b"CONNECT {\"verbose\":false}\r\n").await;
        p.ping().await;
        publishers.push(p);
    }
    for round in 0..30 {
        let mut sub = s.raw().await;
        let subject = format!("barrier.{round}");
        sub.send(format!("CONNECT {{\"verbose\":false}}\r\nSUB {subject} 1\r\n").as_bytes())
            .await;
        sub.ping().await;
        // Immediately publish from every other connection.
        for p in publishers.iter_mut() {
            p.send(format!("PUB {subject} 1\r\nx\r\n").as_bytes()).await;
        }
        let mut got = 0;
        while got < publishers.len() {
            let line = sub
                .line()
                .await
                .unwrap_or_else(|| panic!("round {round}: only {got} arrived"));
            if line.starts_with("MSG ") {
                got += 1;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in load {
        let _ = l.await;
    }
}

/// Lame duck with nats-server's default duration (2 min) and a 10 s grace
/// (issue 11, item 5): six idle clients are kept through the grace, then
/// closed at most about a second apart, and the server exits soon after
/// (nats-server 2.9 spaces them the same way) instead of after the whole
/// duration or never. Both shard counts at once; SIGTERM during lame duck
/// (the second server) still ends it, once.
#[test]
fn lame_duck_with_the_default_duration_ends_soon_after_the_grace() {
    let run = |shards: usize, then_term: bool| {
        std::thread::spawn(move || {
            let mut s = Shoal::start(shards, &[], Some("lame_duck_grace_period: \"10s\""));
            let mut clients = Vec::new();
            for _ in 0..6 {
                let mut c = shoal_bench::conn::Conn::connect(&s.url()).unwrap();
                c.ping().unwrap();
                clients.push(c);
            }
            let t0 = std::time::Instant::now();
            s.signal(SIGUSR2);
            if then_term {
                std::thread::sleep(Duration::from_secs(2));
                s.signal(SIGTERM);
            }
            let code = s.wait_exit(Duration::from_secs(40));
            (code, t0.elapsed(), s.log_contains("Server Exiting"))
        })
    };
    let one = run(1, false);
    let two = run(2, false);
    let termed = run(2, true);
    for (label, h) in [("--shards 1", one), ("--shards 2", two)] {
        let (code, took, _) = h.join().unwrap();
        assert_eq!(code, Some(0), "{label}: exit code");
        // The grace period is honoured, then six closes ~1 s apart.
        assert!(
            took >= Duration::from_secs(10),
            "{label}: exited after {took:?}"
        );
        assert!(
            took < Duration::from_secs(30),
            "{label}: exited after {took:?}"
        );
    }
    let (code, took, exiting) = termed.join().unwrap();
    assert_eq!(code, Some(0), "SIGTERM during lame duck");
    assert!(
        took < Duration::from_secs(15),
        "SIGTERM during lame duck: {took:?}"
    );
    assert!(exiting);
}

/// INFO reports the nats-server version whose protocol Shoal speaks (clients
/// gate features on it; nats.py's suite asserts major 2) and Shoal's own
/// in `shoal_version`; the first PING comes about 2 s after connecting, as
/// from nats-server, not a whole `ping_interval` later (issue 12, items 2
/// and 3).
#[tokio::test]
async fn info_version_and_the_first_ping_are_nats_servers() {
    let s = Shoal::start(1, &[], None);
    let info = info_line(&s.addr).await;
    let json: serde_json::Value = serde_json::from_str(info.trim_start_matches("INFO ")).unwrap();
    assert_eq!(json["version"], shoal_net::NATS_VERSION, "{info}");
    assert!(json["version"].as_str().unwrap().starts_with("2."));
    assert_eq!(json["shoal_version"], env!("CARGO_PKG_VERSION"));
    let mut r = s.raw().await;
    r.send(b"CONNECT {\"verbose\":false}\r\n").await;
    let t0 = std::time::Instant::now();
    let first = r.line_within(Duration::from_secs(5)).await;
    assert_eq!(first.as_deref(), Some("PING"), "no early PING");
    let after = t0.elapsed();
    assert!(
        after >= Duration::from_millis(1500) && after < Duration::from_secs(4),
        "first PING after {after:?}"
    );
}

/// SIGTERM ends the process promptly whatever the clients do: a subscriber
/// that stopped reading (its socket full, megabytes queued for it) does not
/// hold the shutdown for its write deadline (10 s by default).
#[tokio::test]
async fn sigterm_is_not_held_by_a_client_that_stopped_reading() {
    for shards in SHARDS {
        let mut s = Shoal::start(shards, &[], None);
        let mut stuck = s.raw().await;
        stuck
            .send(b"CONNECT {\"verbose\":false}\r\nSUB big 1\r\n")
            .await;
        assert!(stuck.ping().await.is_empty());
        // Never read again: fill its socket and the server's buffer for it.
        let mut publisher = s.raw().await;
        publisher.send(b"CONNECT {\"verbose\":false}\r\n").await;
        let payload = vec![b'x'; 60_000];
        let mut batch = Vec::new();
        for _ in 0..100 {
            batch.extend_from_slice(b"PUB big 60000\r\n");
            batch.extend_from_slice(&payload);
            batch.extend_from_slice(b"\r\n");
        }
        for _ in 0..5 {
            publisher.send(&batch).await;
        }
        assert!(publisher.ping().await.is_empty());
        // A healthy client too: it must be flushed and closed, not cut.
        let healthy = s.client().await;
        healthy.flush().await.unwrap();

        let started = std::time::Instant::now();
        s.signal(libc::SIGTERM);
        let code = s.wait_exit(Duration::from_secs(30));
        let took = started.elapsed();
        assert!(code.is_some(), "shards={shards}: still running after 30 s");
        // Liveness, not speed: the default write deadline is 10 s; the
        // shutdown's bound (two 2 s flush phases and clean-up) is well under.
        assert!(
            took < Duration::from_secs(8),
            "shards={shards}: SIGTERM took {took:?}"
        );
        assert_eq!(
            code,
            Some(0),
            "shards={shards}: a bounded shutdown is a clean exit"
        );
        drop(stuck);
    }
}

/// Test harnesses and supervisors restart a server on the same port the
/// moment the old one was SIGKILLed: the old listener (registered with
/// io_uring) is released by the kernel only after the exit, and the restart
/// must wait for it rather than fail with "address in use" (it did 20 times
/// out of 20) or share the port with it.
#[tokio::test]
async fn restart_on_the_same_port_right_after_sigkill() {
    let port = free_port().to_string();
    let args = ["-a", "127.0.0.1", "-p", &port, "--shards", "2"];
    let mut s = Shoal::launch(&args, None, &[]);
    for round in 0..20 {
        let _client = s.raw().await;
        s.signal(SIGKILL);
        assert!(s.wait_exit(Duration::from_secs(5)).is_some());
        s = Shoal::launch(&args, None, &[]);
        let mut r = s.raw().await;
        assert!(r.ping().await.is_empty(), "round {round}");
    }
}

fn shoal_cmd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .output()
        .unwrap()
}

/// `-v`/`--version` as nats-server (its `-V` is `--trace`).
#[test]
fn version_flags_are_nats_servers() {
    for flag in ["-v", "--version"] {
        let out = shoal_cmd(&[flag]);
        assert!(out.status.success(), "{flag}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("2.9.10") && text.contains("shoal"),
            "{flag}: {text}"
        );
    }
}

/// `-js`/`--jetstream` and a `jetstream {}` block are refused at start with
/// one clear line (not "unexpected argument"); a store directory alone (as
/// client test harnesses pass) and `jetstream: disabled` start, as on
/// nats-server.
#[test]
fn jetstream_is_refused_clearly() {
    for args in [&["-js"][..], &["--jetstream"], &["-sd", "/tmp/js", "-js"]] {
        let out = shoal_cmd(args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("JetStream is not supported"),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = shoal_cmd(&["--store_dir", "/tmp/js", "-t"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--store_dir is ignored"));
    let conf = dir.path().join("js.conf");
    for off in [
        "jetstream: disabled",
        "jetstream: false",
        "jetstream { enabled: false }",
        "store_dir: /tmp/js",
    ] {
        std::fs::write(&conf, off).unwrap();
        let out = shoal_cmd(&["-t", "-c", conf.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{off}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::write(&conf, "jetstream {\n  max_mem: 1G\n}\n").unwrap();
    let out = shoal_cmd(&["-c", conf.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("line 1") && err.contains("JetStream is not supported"),
        "{err}"
    );
}

/// `-t` checks the configuration and exits: 0 and "is valid", or 1 with the
/// error (including what only start-up would find, e.g. a `no_auth_user`
/// that is not a user).
#[test]
fn dash_t_tests_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.conf");
    std::fs::write(&good, "port: 4333\n").unwrap();
    let out = shoal_cmd(&["-t", "-c", good.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is valid"));
    let bad = dir.path().join("bad.conf");
    std::fs::write(
        &bad,
        "no_auth_user: ghost\nauthorization { users: [ {user: a, password: b} ] }\n",
    )
    .unwrap();
    let out = shoal_cmd(&["-t", "-c", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ghost"));
    // An import the export's `accounts` list does not name stops the
    // server, as nats-server's "stream import not authorized".
    let unauthorized = dir.path().join("unauthorized.conf");
    let accounts = |importer: &str| {
        format!(
            "accounts {{\n  A: {{ exports: [ {{stream: \"ev.>\", accounts: [B]}} ] }}\n  {importer}: {{ imports: [ {{stream: {{account: A, subject: \"ev.>\"}}}} ] }}\n}}\n"
        )
    };
    std::fs::write(&unauthorized, accounts("D")).unwrap();
    let out = shoal_cmd(&["-t", "-c", unauthorized.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stream import not authorized"), "{stderr}");
    std::fs::write(&unauthorized, accounts("B")).unwrap();
    let out = shoal_cmd(&["-t", "-c", unauthorized.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--signal ldm=PID`, `-sl reload=PIDFILE` (nats-server's single-dash
/// spelling) reach the running server.
#[test]
fn signal_flag_reaches_the_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("shoal.pid");
    let pid_arg = pid_file.to_str().unwrap().to_string();
    let s = Shoal::start(1, &["-P", &pid_arg], Some("max_payload: 1024"));
    let out = shoal_cmd(&["-sl", &format!("reload={pid_arg}")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(Duration::from_secs(5), "reloaded", || {
        s.log_contains("Reloaded server configuration")
    });
    let out = shoal_cmd(&["--signal", &format!("ldm={}", s.pid())]);
    assert!(out.status.success());
    eventually(Duration::from_secs(5), "lame duck", || {
        s.log_contains("Entering lame duck mode")
    });
    assert!(!shoal_cmd(&["--signal", "bogus=1"]).status.success());
}

/// `--ports_file_dir`: `shoal_<pid>.ports` lists the client, monitoring and
/// cluster URLs while the server runs, and is gone after it exits.
#[tokio::test]
async fn ports_file_lists_the_urls_and_is_removed_at_exit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let mut s = Shoal::start(
        1,
        &[
            "-m",
            "-1",
            "--cluster",
            "nats://127.0.0.1:-1",
            "--ports_file_dir",
            &d,
        ],
        None,
    );
    let path = dir.path().join(format!("shoal_{}.ports", s.pid()));
    let ports: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("ports file")).unwrap();
    assert_eq!(ports["nats"][0], format!("nats://{}", s.addr));
    assert_eq!(
        ports["monitoring"][0],
        format!("http://{}", s.http_addr.as_ref().unwrap())
    );
    assert_eq!(ports["cluster"][0], s.route_url());
    s.signal(SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(20)), Some(0));
    assert!(!path.exists(), "removed at exit");
}

/// `--logtime=false` (and `logtime: false`) leave the timestamp out, as
/// nats-server's `-T=false`; SIGUSR1 reopens the log file (log rotation).
#[test]
fn logtime_and_log_reopen() {
    let s = Shoal::start(1, &["--logtime=false"], None);
    let pid = s.pid();
    assert!(
        s.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with(&format!("[{pid}] [INF] "))),
        "{:?}",
        s.log.lock().unwrap()
    );
    drop(s);

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("shoal.log");
    let log_arg = log.to_str().unwrap().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["-a", "127.0.0.1", "-p", "-1", "-l", &log_arg])
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(10), "logging to the file", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("Server is ready"))
    });
    let rotated = dir.path().join("shoal.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) };
    eventually(Duration::from_secs(10), "a fresh log file", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("File log re-opened"))
    });
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}
