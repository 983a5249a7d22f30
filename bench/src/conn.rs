//! A blocking NATS connection for load generation.

use bytes::BytesMut;
use shoal_core::proto::{self, ConnectOptions, Limits, ServerInfo, ServerOp, ServerParser};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub struct Conn {
    stream: TcpStream,
    parser: ServerParser,
    rbuf: BytesMut,
    pub wbuf: BytesMut,
    pub info: ServerInfo,
}

/// The two ends of a scenario: `--url A,B` puts publishers and requesters on
/// A and subscribers and responders on B (two nodes of a cluster); a single
/// URL is both.
pub fn endpoints(url: &str) -> (String, String) {
    match url.split_once(',') {
        Some((a, b)) => (a.trim().to_owned(), b.trim().to_owned()),
        None => (url.to_owned(), url.to_owned()),
    }
}

/// Waits for subscriptions made on other connections to be visible where
/// messages are published: a moment on one server; across two cluster nodes
/// long enough for the interest to cross the route (loopback takes about a
/// millisecond; this leaves a wide margin).
pub fn settle(url: &str) {
    let (a, b) = endpoints(url);
    std::thread::sleep(Duration::from_millis(if a == b { 50 } else { 500 }));
}

/// A read that timed out says so, with the limit, instead of the bare
/// "Resource temporarily unavailable" the OS reports. The kind stays
/// `TimedOut` so callers that poll with short timeouts can tell.
fn explain_timeout(e: io::Error, stream: &TcpStream) -> io::Error {
    if !matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        return e;
    }
    let limit = stream
        .read_timeout()
        .ok()
        .flatten()
        .map_or("the read timeout".to_string(), |t| format!("{t:?}"));
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("the server sent nothing for {limit}"),
    )
}

fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

impl Conn {
    /// Connects, reads INFO, sends CONNECT (verbose off, headers on) and
    /// waits for the PONG of a PING, so the connection is ready.
    pub fn connect(url: &str) -> io::Result<Conn> {
        Self::connect_within(url, Duration::from_secs(30))
    }

    /// As `connect`, with the TCP connect and every read of the handshake
    /// bounded by `limit` (a timed-out read is `WouldBlock`/`TimedOut`).
    pub fn connect_within(url: &str, limit: Duration) -> io::Result<Conn> {
        use std::net::ToSocketAddrs;
        let addr = url.trim_start_matches("nats://");
        let sock = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| err(format!("{addr}: no address")))?;
        let stream = TcpStream::connect_timeout(&sock, limit)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(limit))?;
        let mut c = Conn {
            stream,
            parser: ServerParser::new(Limits {
                max_control_line: 64 * 1024,
                max_payload: 64 << 20,
            }),
            rbuf: BytesMut::with_capacity(256 * 1024),
            wbuf: BytesMut::with_capacity(256 * 1024),
            info: ServerInfo::default(),
        };
        match c.next_op()? {
            ServerOp::Info(json) => {
                c.info =
                    serde_json::from_slice(&json).map_err(|e| err(format!("bad INFO: {e}")))?;
            }
            other => return Err(err(format!("expected INFO, got {other:?}"))),
        }
        let opts = ConnectOptions {
            verbose: false,
            pedantic: false,
            headers: true,
            no_responders: true,
            protocol: 1,
            name: Some("shoal-bench".into()),
            ..Default::default()
        };
        proto::write_connect(&mut c.wbuf, &opts);
        c.ping()?;
        Ok(c)
    }

    /// The server as results name it: `shoal X.Y.Z` for Shoal (which
    /// reports nats-server's version in INFO `version`), else `version`.
    pub fn server_version(&self) -> String {
        match &self.info.shoal_version {
            Some(v) => format!("shoal {v}"),
            None => self.info.version.clone(),
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf)?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Sends PING and waits for PONG (everything sent before was processed).
    pub fn ping(&mut self) -> io::Result<()> {
        self.wbuf.extend_from_slice(proto::PING);
        self.flush()?;
        loop {
            match self.next_op()? {
                ServerOp::Pong => return Ok(()),
                ServerOp::Ping => {
                    self.wbuf.extend_from_slice(proto::PONG);
                    self.flush()?;
                }
                ServerOp::Err(e) => {
                    return Err(err(format!(
                        "server error: {}",
                        String::from_utf8_lossy(&e)
                    )))
                }
                _ => {}
            }
        }
    }

    /// The next operation from the server (answers server PINGs itself).
    pub fn next_op(&mut self) -> io::Result<ServerOp> {
        loop {
            match self.parser.next(&mut self.rbuf) {
                Ok(Some(ServerOp::Ping)) => {
                    self.wbuf.extend_from_slice(proto::PONG);
                    self.flush()?;
                }
                Ok(Some(op)) => return Ok(op),
                Ok(None) => {
                    if self.rbuf.capacity() - self.rbuf.len() < 64 * 1024 {
                        self.rbuf.reserve(256 * 1024);
                    }
                    let start = self.rbuf.len();
                    let cap = self.rbuf.capacity();
                    self.rbuf.resize(cap, 0);
                    let n = match self.stream.read(&mut self.rbuf[start..]) {
                        Ok(n) => n,
                        Err(e) => {
                            self.rbuf.truncate(start);
                            return Err(explain_timeout(e, &self.stream));
                        }
                    };
                    self.rbuf.truncate(start + n);
                    if n == 0 {
                        return Err(err("server closed the connection"));
                    }
                }
                Err(e) => return Err(err(format!("protocol error from server: {e}"))),
            }
        }
    }

    /// A second handle on the socket, for writing from another thread.
    pub fn try_clone_stream(&self) -> io::Result<TcpStream> {
        self.stream.try_clone()
    }

    /// The socket, the parser and whatever was read past the last operation,
    /// for a caller that reads and writes on separate threads.
    pub fn into_parts(self) -> (TcpStream, ServerParser, BytesMut) {
        (self.stream, self.parser, self.rbuf)
    }

    /// How long a read may wait before the run is declared stuck.
    pub fn set_read_timeout(&self, t: Duration) -> io::Result<()> {
        self.stream.set_read_timeout(Some(t))
    }

    pub fn subscribe(&mut self, subject: &str, queue: Option<&str>, sid: u64) {
        proto::write_sub(
            &mut self.wbuf,
            subject.as_bytes(),
            queue.map(str::as_bytes),
            sid.to_string().as_bytes(),
        );
    }
}
