//! The route handshake, on a blocking socket before the link is handed to a
//! shard: each side sends its INFO; the accepting side checks the dialer's
//! credentials and cluster name before it answers. Everything is bounded by
//! a timeout and a frame size, so a peer that says nothing or sends garbage
//! only costs one short-lived thread.

use bytes::BytesMut;
use shoal_core::auth::Secret;
use shoal_core::config::ClusterConfig;
use shoal_core::route::{self as wire, FrameKind, RouteInfo, ROUTE_PROTO};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
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

/// Bounds every read and write of the handshake (cleared after).
pub(crate) fn set_timeouts(stream: &TcpStream, t: Option<Duration>) -> std::io::Result<()> {
    stream.set_read_timeout(t)?;
    stream.set_write_timeout(t)
}

/// Reads exactly one INFO frame (nothing after it: what follows belongs to
/// the shard that serves the link). The caller bounds it with socket
/// timeouts (`set_timeouts`).
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
