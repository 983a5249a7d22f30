//! The route handshake, on a blocking socket before the link is handed to a
//! shard: each side sends its INFO; the accepting side checks the dialer's
//! credentials and cluster name before it answers. The whole exchange (TLS
//! included) has one deadline and the INFO a size limit, so a peer that says
//! nothing, sends garbage or dribbles a byte at a time only costs one
//! short-lived thread; the listener caps how many such threads there are.

use bytes::BytesMut;
use shoal_core::auth::Secret;
use shoal_core::config::ClusterConfig;
use shoal_core::route::{self as wire, FrameKind, RouteInfo, ROUTE_PROTO};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Largest INFO accepted during the handshake.
const MAX_INFO: usize = 256 * 1024;

#[derive(Debug, Error)]
pub enum HandshakeError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("connected to itself")]
    SelfRoute,
}

pub(crate) fn send_info(stream: &mut impl Write, info: &RouteInfo) -> std::io::Result<()> {
    let mut buf = BytesMut::new();
    wire::write_info(&mut buf, info);
    stream.write_all(&buf)?;
    stream.flush()
}

/// Clears the handshake's socket timeouts (the shard takes it from there).
pub(crate) fn set_timeouts(stream: &TcpStream, t: Option<Duration>) -> std::io::Result<()> {
    stream.set_read_timeout(t)?;
    stream.set_write_timeout(t)
}

/// The handshake's socket under one deadline for the whole exchange: each
/// read or write may take only what is left of it. A timeout per read is
/// not enough: a peer sending a byte just inside it would hold the thread
/// forever.
pub(crate) struct Deadlined<'a> {
    stream: &'a TcpStream,
    deadline: Instant,
}

impl<'a> Deadlined<'a> {
    pub(crate) fn new(stream: &'a TcpStream, within: Duration) -> Self {
        Deadlined {
            stream,
            deadline: Instant::now() + within,
        }
    }

    fn left(&self) -> std::io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        Ok(left)
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "route handshake took too long",
    )
}

/// A socket timeout shows as `WouldBlock` on Unix: name it for the log.
fn named(e: std::io::Error) -> std::io::Error {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => timed_out(),
        _ => e,
    }
}

impl Read for Deadlined<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.stream.set_read_timeout(Some(self.left()?))?;
        let mut s = self.stream;
        s.read(buf).map_err(named)
    }
}

impl Write for Deadlined<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stream.set_write_timeout(Some(self.left()?))?;
        let mut s = self.stream;
        s.write(buf).map_err(named)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let mut s = self.stream;
        s.flush()
    }
}

/// Reads exactly one INFO frame (nothing after it: what follows belongs to
/// the shard that serves the link). The caller bounds it in time
/// ([`Deadlined`]).
pub(crate) fn read_info(stream: &mut impl Read) -> Result<RouteInfo, HandshakeError> {
    let mut header = [0u8; wire::FRAME_HEADER];
    stream.read_exact(&mut header)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if header[4] != FrameKind::Info as u8 {
        return Err(HandshakeError::Protocol(format!(
            "expected INFO, got frame kind {}",
            header[4]
        )));
    }
    if len > MAX_INFO {
        return Err(HandshakeError::Protocol(format!("INFO of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    wire::decode_info(&body).map_err(|e| HandshakeError::Protocol(e.to_string()))
}

/// Checks a peer's INFO against ours: protocol version, not ourselves, the
/// same cluster (a node without a name joins any).
pub(crate) fn check_peer(ours: &RouteInfo, theirs: &RouteInfo) -> Result<(), HandshakeError> {
    if theirs.proto != ROUTE_PROTO {
        return Err(HandshakeError::Refused(format!(
            "route protocol {} (ours is {ROUTE_PROTO})",
            theirs.proto
        )));
    }
    if theirs.server_id == ours.server_id {
        return Err(HandshakeError::SelfRoute);
    }
    if !ours.cluster.is_empty() && !theirs.cluster.is_empty() && ours.cluster != theirs.cluster {
        return Err(HandshakeError::Refused(format!(
            "cluster name mismatch: ours is {:?}, the peer's is {:?}",
            ours.cluster, theirs.cluster
        )));
    }
    Ok(())
}

/// The accepting side: the dialer's credentials, when the cluster requires
/// them (`cluster { authorization { user, password } }`).
pub(crate) fn check_auth(cfg: &ClusterConfig, theirs: &RouteInfo) -> Result<(), HandshakeError> {
    let Some(user) = &cfg.user else { return Ok(()) };
    let secret = Secret::new(cfg.password.as_deref().unwrap_or(""));
    let user_ok = theirs.user.as_deref() == Some(user.as_str());
    let pass_ok = secret.verify(theirs.pass.as_deref().unwrap_or(""));
    if user_ok && pass_ok {
        Ok(())
    } else {
        Err(HandshakeError::Refused("Authorization Violation".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dribbled_info_is_cut_at_the_deadline_not_read_forever() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (stream, _) = l.accept().unwrap();
        // A byte every 100 ms, for 10 s unless the reader gives up.
        let dribbler = std::thread::spawn(move || {
            let mut header = 100u32.to_le_bytes().to_vec();
            header.push(FrameKind::Info as u8);
            for b in header.into_iter().chain([0u8; 95]) {
                if peer.write_all(&[b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let start = Instant::now();
        let mut s = Deadlined::new(&stream, Duration::from_millis(500));
        match read_info(&mut s) {
            Err(HandshakeError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::TimedOut),
            other => panic!("{other:?}"),
        }
        // Liveness only: cut long before the dribble would have ended.
        assert!(start.elapsed() < Duration::from_secs(5));
        drop(stream);
        dribbler.join().unwrap();
    }

    fn info(id: &str, cluster: &str) -> RouteInfo {
        RouteInfo {
            proto: ROUTE_PROTO,
            server_id: id.into(),
            cluster: cluster.into(),
            ..Default::default()
        }
    }

    #[test]
    fn peers_are_checked() {
        assert!(check_peer(&info("A", "c"), &info("B", "c")).is_ok());
        assert!(check_peer(&info("A", ""), &info("B", "c")).is_ok());
        assert!(matches!(
            check_peer(&info("A", "c"), &info("B", "d")),
            Err(HandshakeError::Refused(_))
        ));
        assert!(matches!(
            check_peer(&info("A", "c"), &info("A", "c")),
            Err(HandshakeError::SelfRoute)
        ));
        let mut old = info("B", "c");
        old.proto = 99;
        assert!(check_peer(&info("A", "c"), &old).is_err());
    }

    #[test]
    fn credentials_are_required_when_configured() {
        let open = ClusterConfig::default();
        assert!(check_auth(&open, &info("B", "c")).is_ok());
        let cfg = ClusterConfig {
            user: Some("ruser".into()),
            password: Some("pw".into()),
            ..Default::default()
        };
        let mut i = info("B", "c");
        assert!(check_auth(&cfg, &i).is_err());
        i.user = Some("ruser".into());
        i.pass = Some("nope".into());
        assert!(check_auth(&cfg, &i).is_err());
        i.pass = Some("pw".into());
        assert!(check_auth(&cfg, &i).is_ok());
    }
}
