//! `--ports_file_dir`: the addresses the server listens on, in
//! `<program>_<pid>.ports` as nats-server writes it (client test harnesses
//! start servers on random ports, `-p -1`, and read this file). Removed at
//! exit.

use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The written file; removes it when dropped (at a clean exit).
pub struct PortsFile(PathBuf);

impl Drop for PortsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// How clients reach a socket bound to `addr`: the address itself, or for a
/// wildcard bind this machine's reachable address.
fn url(scheme: &str, addr: SocketAddr) -> String {
    let host = shoal_cluster::url::reachable_host(addr.ip());
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    format!("{scheme}://{host}:{}", addr.port())
}

/// The file's JSON: nats-server's `Ports` (lists, empty ones left out).
pub fn contents(
    client: SocketAddr,
    monitoring: Option<SocketAddr>,
    cluster: Option<SocketAddr>,
) -> serde_json::Value {
    let mut v = json!({ "nats": [url("nats", client)] });
    if let Some(m) = monitoring {
        v["monitoring"] = json!([url("http", m)]);
    }
    if let Some(c) = cluster {
        v["cluster"] = json!([url("nats", c)]);
    }
    v
}

/// Writes `<dir>/<program>_<pid>.ports`.
pub fn write(dir: &Path, ports: &serde_json::Value) -> std::io::Result<PortsFile> {
    let program = std::env::args()
        .next()
        .and_then(|a| {
            Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "shoal".into());
    let path = dir.join(format!("{program}_{}.ports", std::process::id()));
    std::fs::write(&path, serde_json::to_vec(ports).unwrap_or_default())?;
    Ok(PortsFile(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_what_listens() {
        let c: SocketAddr = "127.0.0.1:4222".parse().unwrap();
        let m: SocketAddr = "127.0.0.1:8222".parse().unwrap();
        let v = contents(c, Some(m), None);
        assert_eq!(v["nats"][0], "nats://127.0.0.1:4222");
        assert_eq!(v["monitoring"][0], "http://127.0.0.1:8222");
        assert!(v.get("cluster").is_none());
    }
}
