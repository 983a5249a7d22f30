//! Test harness: spawns a real `shoal` process on a random loopback port,
//! waits for its readiness line, and kills it when dropped. Plus a raw
//! protocol client for checking exact bytes and error texts.

#![allow(dead_code)]

use bytes::Bytes;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Shard counts every behaviour is tested with.
pub const SHARDS: [usize; 2] = [1, 2];

pub struct Shoal {
    child: Child,
    pub addr: String,
    /// Where it accepts routes (with `--cluster`).
    pub route_addr: Option<String>,
    /// Its monitoring address (with `-m`).
    pub http_addr: Option<String>,
    pub log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Shoal {
    /// Starts `shoal -a 127.0.0.1 -p -1 --shards N [args]`, with `conf` as its
    /// configuration file when given.
    pub fn start(shards: usize, args: &[&str], conf: Option<&str>) -> Shoal {
        Self::start_with_env(shards, args, conf, &[])
    }

    pub fn start_with_env(
        shards: usize,
        args: &[&str],
        conf: Option<&str>,
        env: &[(&str, &str)],
    ) -> Shoal {
        let shards = shards.to_string();
        let mut all = vec!["-a", "127.0.0.1", "-p", "-1", "--shards", &shards];
        all.extend_from_slice(args);
        Self::launch(&all, conf, env)
    }

    /// Starts `shoal` with exactly these arguments (plus `-c` when `conf`).
    pub fn launch(args: &[&str], conf: Option<&str>, env: &[(&str, &str)]) -> Shoal {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
        cmd.envs(env.iter().copied());
        if let Some(conf) = conf {
            let path = dir.path().join("shoal.conf");
            std::fs::write(&path, conf).unwrap();
            cmd.arg("-c").arg(path);
        }
        cmd.args(args).stderr(Stdio::piped()).stdout(Stdio::null());
        let mut child = cmd.spawn().expect("spawn shoal");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            let (mut addr, mut route, mut http) = (None, None, None);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let after = |marker: &str| line.split(marker).nth(1).map(|a| a.trim().to_string());
                if let Some(a) = after("Listening for client connections on ") {
                    addr = Some(a);
                }
                if let Some(a) = after("Listening for route connections on ") {
                    route = Some(a);
                }
                if let Some(a) = after("Starting http monitor on http://") {
                    http = Some(a);
                }
                if line.contains("Server is ready") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr.clone().map(|a| (a, route.clone(), http.clone())));
                    }
                }
                sink.lock().unwrap().push(line);
            }
            if let Some(tx) = tx.take() {
                let _ = tx.send(None);
            }
        });
        let (addr, route_addr, http_addr) = rx
            .recv_timeout(Duration::from_secs(10))
            .ok()
            .flatten()
            .unwrap_or_else(|| {
                panic!("shoal did not become ready; log: {:?}", log.lock().unwrap())
            });
        Shoal {
            child,
            addr,
            route_addr,
            http_addr,
            log,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// `nats://host:port` of its route listener.
    pub fn route_url(&self) -> String {
        format!(
            "nats://{}",
            self.route_addr.as_ref().expect("started with --cluster")
        )
    }

    /// GET on the monitoring port: status code and JSON body.
    pub fn http_get(&self, path: &str) -> (u16, serde_json::Value) {
        http_get(self.http_addr.as_ref().expect("started with -m"), path)
    }

    /// The configuration file it was started with (to rewrite before SIGHUP).
    pub fn conf_path(&self) -> std::path::PathBuf {
        self._dir.path().join("shoal.conf")
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    pub fn log_contains(&self, text: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(text))
    }

    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(self.url()).await.expect("connect")
    }

    pub async fn raw(&self) -> Raw {
        Raw::connect(&self.addr).await
    }
}

#[allow(unused_imports)]
pub use libc::{SIGHUP, SIGKILL, SIGTERM, SIGUSR2};

impl Drop for Shoal {
    fn drop(&mut self) {
        // Every test with monitoring also checks that the server met no
        // impossible state (a release build counts them instead of
        // stopping: net/src/shard `invariant_broken`).
        if self.http_addr.is_some() && !std::thread::panicking() {
            if let (200, varz) = self.http_get("/varz") {
                assert_eq!(
                    varz["invariant_violations"], 0,
                    "the server counted broken invariants (see its log)"
                );
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw protocol connection for exact-bytes assertions.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    /// A raw connection whose INFO the caller has already read.
    pub fn from_stream(stream: TcpStream) -> Raw {
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn connect(addr: &str) -> Raw {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut raw = Raw {
            stream,
            buf: Vec::new(),
        };
        let info = raw.line().await.expect("INFO");
        assert!(info.starts_with("INFO {"), "{info}");
        raw
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Next CRLF-terminated line (without CRLF); None on EOF or after 5 s.
    pub async fn line(&mut self) -> Option<String> {
        self.line_within(Duration::from_secs(5)).await
    }

    pub async fn line_within(&mut self, within: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Some(line);
            }
            let mut chunk = [0u8; 65536];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads exactly `n` bytes (a message payload plus CRLF).
    pub async fn bytes(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            let mut chunk = [0u8; 65536];
            let r = tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk))
                .await
                .expect("timed out")
                .unwrap();
            assert!(r > 0, "EOF");
            self.buf.extend_from_slice(&chunk[..r]);
        }
        self.buf.drain(..n).collect()
    }

    /// Whether the server closed the connection (EOF) within `within`.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next line is exactly `err` (an `-ERR`) and the server then closes
    /// the connection (within 5 s), as nats-server does for fatal errors.
    pub async fn expect_closed_after(&mut self, err: &str) {
        assert_eq!(self.line().await.as_deref(), Some(err));
        assert!(
            self.closed_within(Duration::from_secs(5)).await,
            "still open after {err}"
        );
    }

    /// Sends PING and waits for PONG, returning the lines seen before it.
    pub async fn ping(&mut self) -> Vec<String> {
        self.send(b"PING\r\n").await;
        let mut seen = Vec::new();
        loop {
            let l = self.line().await.expect("PONG");
            if l == "PONG" {
                return seen;
            }
            seen.push(l);
        }
    }
}

/// Two linked nodes with 2 shards each (monitoring on): the second seeded
/// with the first, returned once the link is up and both are healthy.
/// `extra(i)` adds flags to node `i` (0 or 1).
pub fn linked_pair(conf: Option<&str>, extra: impl Fn(usize) -> Vec<String>) -> (Shoal, Shoal) {
    let flags = |i: usize, seed: Option<String>| {
        let mut f: Vec<String> = ["--cluster", "nats://127.0.0.1:-1", "-m", "-1"]
            .map(String::from)
            .to_vec();
        if let Some(seed) = seed {
            f.extend(["--routes".to_string(), seed]);
        }
        f.extend(extra(i));
        f
    };
    let start = |f: Vec<String>| {
        let args: Vec<&str> = f.iter().map(String::as_str).collect();
        Shoal::start(2, &args, conf)
    };
    let n1 = start(flags(0, None));
    let n2 = start(flags(1, Some(n1.route_url())));
    eventually(Duration::from_secs(15), "the link", || {
        n1.http_get("/routez").1["num_routes"] == 1
            && n1.http_get("/healthz").0 == 200
            && n2.http_get("/healthz").0 == 200
    });
    (n1, n2)
}

/// A client logged in as `user`, whose password is its name (the
/// convention of the tests' account configurations).
pub async fn login_same(url: &str, user: &str) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password(user.into(), user.into())
        .connect(url)
        .await
        .unwrap()
}

/// Receives the next message or fails after 5 s.
pub async fn next_msg(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    use futures::StreamExt;
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("timed out waiting for a message")
        .expect("subscription ended")
}

/// Asserts no message arrives within `within`.
pub async fn no_msg(sub: &mut async_nats::Subscriber, within: Duration) {
    use futures::StreamExt;
    if let Ok(Some(m)) = tokio::time::timeout(within, sub.next()).await {
        panic!("unexpected message on {}: {:?}", m.subject, m.payload);
    }
}

/// Waits until `publisher`'s shard sees every subscription `subscriber` made
/// so far.
///
/// Shoal guarantees cross-shard visibility of a subscription after the
/// subscriber's next PING/PONG (what `Flush` does in nats.go, nats.py and
/// most clients). async-nats' `flush()` only flushes its socket, so tests
/// that publish from another connection right after subscribing use this:
/// the subscriber subscribes to a probe subject, which travels to the other
/// shards behind its earlier subscriptions (interest is FIFO per shard
/// pair); once the publisher's probe arrives, the earlier interest has too.
pub async fn sync_interest(subscriber: &async_nats::Client, publisher: &async_nats::Client) {
    sync_interest_via(subscriber, publisher, "_SYNC").await
}

/// As [`sync_interest`], with probe subjects under `prefix` (for users whose
/// permissions allow only some subjects).
pub async fn sync_interest_via(
    subscriber: &async_nats::Client,
    publisher: &async_nats::Client,
    prefix: &str,
) {
    use futures::StreamExt;
    let probe = format!("{prefix}.{}", fastrand_u64());
    let mut s = subscriber.subscribe(probe.clone()).await.unwrap();
    subscriber.flush().await.unwrap();
    for _ in 0..500 {
        publisher
            .publish(probe.clone(), Bytes::new())
            .await
            .unwrap();
        publisher.flush().await.unwrap();
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(10), s.next()).await {
            s.unsubscribe().await.unwrap();
            // Sent now, not whenever the client next flushes: the probe's
            // interest must not linger (tests count announced subjects).
            subscriber.flush().await.unwrap();
            return;
        }
    }
    panic!("subscription never became visible to the publisher");
}

fn fastrand_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed) ^ (std::process::id() as u64) << 32
}

/// The INFO line a server sends on a fresh connection (without CRLF).
pub async fn info_line(addr: &str) -> String {
    let stream = TcpStream::connect(addr).await.unwrap();
    Raw::from_stream(stream).line().await.expect("INFO")
}

/// A minimal HTTP/1.0 GET for the monitoring endpoints: status and JSON body
/// (Null when the server is unreachable, status 0).
pub fn http_get(addr: &str, path: &str) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return (0, serde_json::Value::Null);
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// A free loopback port (bound, then released), for nodes that must know
/// each other's ports before they start.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` every 20 ms until it holds; panics with `what` after `within`.
pub fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Three accounts: A exports a stream (`events.>`) and a service
/// (`svc.echo`), B imports both (the stream under `from_a`, the service as
/// `echo`), C shares nothing. Each user's password is its name.
pub const SHARING_ACCOUNTS: &str = r#"
accounts {
  A: {
    users: [ {user: a, password: a} ]
    exports: [ {stream: "events.>"}, {service: "svc.echo"} ]
  }
  B: {
    users: [ {user: b, password: b} ]
    imports: [
      {stream: {account: A, subject: "events.>"}, prefix: "from_a"}
      {service: {account: A, subject: "svc.echo"}, to: "echo"}
    ]
  }
  C: { users: [ {user: c, password: c} ] }
}
"#;
