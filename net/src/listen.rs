//! Binding the client port once per shard with SO_REUSEPORT (the kernel then
//! spreads new connections over the shards).

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

/// Resolves `host:port` (`port` may be 0 for "pick one").
pub(crate) fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("cannot resolve {host}")))
}

fn socket_for(addr: &SocketAddr) -> io::Result<Socket> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    Socket::new(domain, Type::STREAM, Some(Protocol::TCP))
}

/// Binds `shards` listening sockets to the same address. The port must not be
/// in use by anyone, including another Shoal: SO_REUSEPORT would otherwise let
/// two servers silently share it, so a plain bind (without REUSEPORT) is tried
/// first and must succeed.
pub(crate) fn bind_all(addr: SocketAddr, shards: usize) -> io::Result<(Vec<Socket>, SocketAddr)> {
    let probe = socket_for(&addr)?;
    probe.set_reuse_address(true)?;
    probe.bind(&SockAddr::from(addr))?;
    let bound = probe
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("not an IP socket"))?;
    drop(probe);
    let mut sockets = Vec::with_capacity(shards);
    for _ in 0..shards {
        let s = socket_for(&bound)?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.bind(&SockAddr::from(bound))?;
        s.listen(1024)?;
        sockets.push(s);
    }
    Ok((sockets, bound))
}
