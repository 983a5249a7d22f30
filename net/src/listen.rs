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
///
/// A listener of a process that just died can outlive it: sockets
/// registered with an io_uring instance are released by the kernel after
/// the exit, asynchronously (measured: up to ~20 ms). A supervisor or a test
/// harness restarting at once would then fail with "address in use". Unless
/// a live process holds a listener on the port, the bind is retried for up
/// to [`ORPHAN_WAIT`]; a port another live process listens on fails at
/// once. (Asking "is it held by an orphan?" instead raced: the orphan could
/// vanish between the failed bind and the look at `/proc/net/tcp`, which
/// then showed no listener at all, and the start failed on a free port.)
pub(crate) fn bind_all(addr: SocketAddr, shards: usize) -> io::Result<(Vec<Socket>, SocketAddr)> {
    let probe = socket_for(&addr)?;
    probe.set_reuse_address(true)?;
    let give_up = std::time::Instant::now() + ORPHAN_WAIT;
    loop {
        match probe.bind(&SockAddr::from(addr)) {
            Ok(()) => break,
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < give_up
                    && !listened_on_by_a_process(addr.port()) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
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

/// How long a bind waits for a dead process's listener to go away.
const ORPHAN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether a live process holds a TCP socket listening on `port`. False
/// when the only listeners are orphans (the kernel is still tearing down a
/// dead process's io_uring) or when there is none (any more).
fn listened_on_by_a_process(port: u16) -> bool {
    listening_inodes(port).iter().any(|i| held_by_a_process(*i))
}

/// The inodes of the sockets in LISTEN state on `port` (`/proc/net/tcp`,
/// `/proc/net/tcp6`: local address `hex-ip:HEX-PORT`, state `0A`).
fn listening_inodes(port: u16) -> Vec<u64> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let on_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                == Some(port);
            if on_port && *state == "0A" {
                if let Ok(i) = inode.parse() {
                    out.push(i);
                }
            }
        }
    }
    out
}

/// Whether some process has the socket with this inode open. Processes
/// whose descriptors cannot be read (another user's, without root) count
/// as not holding it: the wait is bounded anyway.
fn held_by_a_process(inode: u64) -> bool {
    let want = format!("socket:[{inode}]");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return true;
    };
    for p in procs.flatten() {
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == want.as_str()) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_listener_is_not_an_orphan() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(!listening_inodes(port).is_empty());
        assert!(listened_on_by_a_process(port), "this process holds it");
        drop(l);
        assert!(!listened_on_by_a_process(port), "no listener at all");
        // And a bind on a live listener's port fails at once.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let started = std::time::Instant::now();
        assert!(bind_all(addr, 1).is_err());
        assert!(started.elapsed() < ORPHAN_WAIT);
    }
}
