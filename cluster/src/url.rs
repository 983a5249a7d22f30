//! Route URLs (`nats://[user:pass@]host:port`) and the addresses a node
//! announces for itself.

use shoal_core::config::redact_url;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// A parsed route URL. `Debug` shows it redacted (never the password).
#[derive(Clone, PartialEq, Eq)]
pub struct RouteUrl {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub pass: Option<String>,
}

impl std::fmt::Debug for RouteUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RouteUrl({})", self.redacted())
    }
}

impl RouteUrl {
    /// Parses `nats://[user[:pass]@]host:port` (the scheme is optional;
    /// `nats-route://` is accepted as nats-server does).
    pub fn parse(s: &str) -> Result<RouteUrl, String> {
        let rest = s
            .trim()
            .strip_prefix("nats://")
            .or_else(|| s.trim().strip_prefix("nats-route://"))
            .unwrap_or(s.trim());
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let hostport = hostport.trim_end_matches('/');
        let (host, port) = hostport
            .rsplit_once(':')
            .ok_or_else(|| format!("route URL {:?} has no port", redact_url(s)))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("route URL {:?} has an invalid port", redact_url(s)))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("route URL {:?} has no host", redact_url(s)));
        }
        let (user, pass) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some((u, p)) => (Some(u.to_owned()), Some(p.to_owned())),
                None => (Some(a.to_owned()), None),
            },
        };
        Ok(RouteUrl {
            host: host.to_owned(),
            port,
            user,
            pass,
        })
    }

    /// The URL without credentials (for logs and gossip).
    pub fn display(&self) -> String {
        if self.host.contains(':') {
            format!("nats://[{}]:{}", self.host, self.port)
        } else {
            format!("nats://{}:{}", self.host, self.port)
        }
    }

    /// The URL as monitoring shows it: the user kept, the password replaced
    /// by `xxxxx` (as nats-server redacts route URLs in `/varz`).
    pub fn redacted(&self) -> String {
        let plain = self.display();
        match (&self.user, &self.pass) {
            (None, _) => plain,
            (Some(u), None) => plain.replacen("nats://", &format!("nats://{u}@"), 1),
            (Some(u), Some(_)) => plain.replacen("nats://", &format!("nats://{u}:xxxxx@"), 1),
        }
    }

    /// Resolves the address (DNS for names).
    pub fn resolve(&self) -> Vec<SocketAddr> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map(|a| a.collect())
            .unwrap_or_default()
    }
}

/// The host others should use to reach a socket bound to `ip`: the address
/// itself, or for a wildcard bind this machine's first non-loopback address
/// (loopback when it has none), as nats-server announces.
pub fn reachable_host(ip: IpAddr) -> String {
    if !ip.is_unspecified() {
        return ip.to_string();
    }
    interface_addrs()
        .into_iter()
        .find(|a| a.is_ipv4() && !a.is_loopback())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
        .to_string()
}

/// This machine's interface addresses.
fn interface_addrs() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `ifap` with a list we walk read-only and free
    // with freeifaddrs; each sockaddr is read according to its family.
    unsafe {
        if libc::getifaddrs(&mut ifap) != 0 {
            return out;
        }
        let mut cur = ifap;
        while !cur.is_null() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() {
                match (*addr).sa_family as i32 {
                    libc::AF_INET => {
                        let sin = &*(addr as *const libc::sockaddr_in);
                        out.push(IpAddr::from(
                            u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                        ));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(addr as *const libc::sockaddr_in6);
                        out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(ifap);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_urls_keep_the_user_and_hide_the_password() {
        let r = |s: &str| RouteUrl::parse(s).unwrap().redacted();
        assert_eq!(
            r("nats://ruser:s3cret@10.0.0.1:6222"),
            "nats://ruser:xxxxx@10.0.0.1:6222"
        );
        assert_eq!(r("nats://ruser@h:6222"), "nats://ruser@h:6222");
        assert_eq!(r("nats://h:6222"), "nats://h:6222");
        assert!(!r("nats://u:p%40ss@h:1").contains("p%40ss"));
        let err = RouteUrl::parse("nats://u:s3cret@host").unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
        let debug = format!("{:?}", RouteUrl::parse("nats://ruser:s3cret@h:1").unwrap());
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn parses_route_urls_like_nats_server() {
        let u = RouteUrl::parse("nats://ruser:T0p@127.0.0.1:6222").unwrap();
        assert_eq!(u.host, "127.0.0.1");
        assert_eq!(u.port, 6222);
        assert_eq!(u.user.as_deref(), Some("ruser"));
        assert_eq!(u.pass.as_deref(), Some("T0p"));
        assert_eq!(u.display(), "nats://127.0.0.1:6222");
        let u = RouteUrl::parse("nats-route://[::1]:7000").unwrap();
        assert_eq!(u.host, "::1");
        assert_eq!(u.display(), "nats://[::1]:7000");
        assert_eq!(RouteUrl::parse("localhost:1").unwrap().port, 1);
        assert!(RouteUrl::parse("nats://host").is_err());
        assert!(RouteUrl::parse("nats://:5").is_err());
        assert!(RouteUrl::parse("nats://h:99999").is_err());
    }

    #[test]
    fn wildcard_binds_announce_a_real_address() {
        assert_eq!(reachable_host("10.1.2.3".parse().unwrap()), "10.1.2.3");
        let h = reachable_host("0.0.0.0".parse().unwrap());
        let ip: IpAddr = h.parse().unwrap();
        assert!(!ip.is_unspecified());
    }
}
