//! What a result ran on: CPU model, cores, kernel, and which CPUs the load
//! generator and the server were allowed to use (pinning).

use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Machine {
    pub hostname: String,
    pub cpu_model: String,
    /// Logical CPUs online.
    pub logical_cpus: usize,
    pub kernel: String,
    /// CPUs this load generator may run on (`Cpus_allowed_list`).
    pub bench_cpus: String,
    /// Per server PID given: the CPUs it may run on.
    pub server_cpus: Vec<(u32, String)>,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The `model name` of /proc/cpuinfo (first CPU).
pub fn cpu_model(cpuinfo: &str) -> String {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// `Cpus_allowed_list` of a /proc/PID/status.
pub fn allowed_list(status: &str) -> Option<String> {
    status
        .lines()
        .find(|l| l.starts_with("Cpus_allowed_list:"))
        .map(|l| l["Cpus_allowed_list:".len()..].trim().to_string())
}

/// How many CPUs a list like `0-3,6,8-9` names.
pub fn count_cpus(list: &str) -> usize {
    list.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| match p.trim().split_once('-') {
            Some((a, b)) => match (a.parse::<usize>(), b.parse::<usize>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 0,
            },
            None => usize::from(p.trim().parse::<usize>().is_ok()),
        })
        .sum()
}

impl Machine {
    /// The machine's online CPUs, not this process's affinity: a
    /// generator pinned with `taskset` still reports the whole machine.
    pub fn logical_cpus() -> usize {
        match count_cpus(read("/sys/devices/system/cpu/online").trim()) {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    pub fn this(server_pids: &[u32]) -> Machine {
        Machine {
            hostname: read("/proc/sys/kernel/hostname"),
            cpu_model: cpu_model(&read("/proc/cpuinfo")),
            logical_cpus: Self::logical_cpus(),
            kernel: read("/proc/sys/kernel/osrelease"),
            bench_cpus: allowed_list(&read("/proc/self/status")).unwrap_or_default(),
            server_cpus: server_pids
                .iter()
                .map(|&pid| {
                    (
                        pid,
                        allowed_list(&read(&format!("/proc/{pid}/status")))
                            .unwrap_or_else(|| "unknown (no such process here)".into()),
                    )
                })
                .collect(),
        }
    }
}

/// The cores the server had, and where that figure comes from: given, the
/// affinity of its PID, or (unpinned) every CPU of this machine.
pub fn server_cores(given: Option<f64>, pid: Option<u32>) -> (f64, String) {
    if let Some(c) = given {
        return (c, format!("{c} (--server-cores)"));
    }
    if let Some(pid) = pid {
        if let Some(list) = allowed_list(&read(&format!("/proc/{pid}/status"))) {
            let n = count_cpus(&list);
            if n > 0 {
                return (
                    n as f64,
                    format!("{n} (affinity of PID {pid}: CPUs {list})"),
                );
            }
        }
    }
    let n = Machine::logical_cpus();
    (
        n as f64,
        format!("{n} (unpinned: every CPU of this machine, shared with the load generator)"),
    )
}

/// The ports of a URL (`nats://host:port`, or `A,B` for two endpoints).
pub fn url_ports(url: &str) -> Vec<u16> {
    url.split(',')
        .filter_map(|u| {
            let hostport = u.trim().trim_start_matches("nats://");
            let hostport = hostport.rsplit('@').next().unwrap_or(hostport);
            hostport.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
        })
        .collect()
}

/// Socket inodes listening on `port` in a `/proc/net/tcp` or `tcp6` table
/// (state `0A` is LISTEN; the local address is `HEXIP:HEXPORT`).
pub fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local = f.get(1)?;
            let p = u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()?;
            (p == port && *f.get(3)? == "0A")
                .then(|| f.get(9)?.parse().ok())
                .flatten()
        })
        .collect()
}

/// The socket inodes a process holds, or why they cannot be read.
fn socket_inodes(pid: u32) -> std::io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(e) = e else { continue };
        if let Ok(target) = std::fs::read_link(e.path()) {
            let t = target.to_string_lossy();
            if let Some(n) = t
                .strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse().ok())
            {
                out.push(n);
            }
        }
    }
    Ok(out)
}

/// Which process holds one of these socket inodes (for the error message).
fn holder(inodes: &[u64]) -> Option<(u32, String)> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if socket_inodes(pid).is_ok_and(|s| s.iter().any(|i| inodes.contains(i))) {
            return Some((pid, read(&format!("/proc/{pid}/comm"))));
        }
    }
    None
}

/// Checks that `--server-pid` names the process serving `url` here: it
/// exists and holds the socket listening on the URL's port. A wrong PID
/// would record another process's pinning and count its cores, silently.
/// `Ok(Some(warning))` when the check could not be made (another user's
/// process), so the run goes on and says so.
pub fn check_server_pid(pid: u32, url: &str) -> Result<Option<String>, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|_| format!("--server-pid {pid}: no such process on this machine"))?;
    let name = status
        .lines()
        .find_map(|l| l.strip_prefix("Name:"))
        .map_or_else(String::new, |n| n.trim().to_string());
    let ports = url_ports(url);
    if ports.is_empty() {
        return Err(format!("--server-pid {pid}: cannot tell the port of {url}"));
    }
    let tables = read("/proc/net/tcp") + "\n" + &read("/proc/net/tcp6");
    let listening: Vec<u64> = ports
        .iter()
        .flat_map(|p| listening_inodes(&tables, *p))
        .collect();
    let ports_s = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(" or ");
    if listening.is_empty() {
        return Err(format!(
            "--server-pid {pid} ({name}): nothing on this machine listens on port {ports_s} of {url}; --server-pid is for a server running here"
        ));
    }
    match socket_inodes(pid) {
        Ok(held) if held.iter().any(|i| listening.contains(i)) => Ok(None),
        Ok(_) => Err(format!(
            "--server-pid {pid} ({name}) is not the server at {url}: it does not hold the socket listening on port {ports_s}{}",
            holder(&listening)
                .map(|(p, n)| format!(" (PID {p}, {n}, does)"))
                .unwrap_or_default()
        )),
        Err(e) => Ok(Some(format!(
            "warning: could not check that --server-pid {pid} ({name}) listens on port {ports_s} ({e} reading /proc/{pid}/fd); taking it on trust"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_formats() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n";
        assert_eq!(cpu_model(cpuinfo), "Intel(R) Xeon(R) CPU @ 2.20GHz");
        assert_eq!(cpu_model(""), "unknown");
        let status = "Name:\tshoal\nCpus_allowed:\t3\nCpus_allowed_list:\t0-1\n";
        assert_eq!(allowed_list(status).as_deref(), Some("0-1"));
        assert_eq!(count_cpus("0-3,6,8-9"), 7);
        assert_eq!(count_cpus("1"), 1);
        assert_eq!(count_cpus(""), 0);
    }

    #[test]
    fn server_cores_sources() {
        assert_eq!(server_cores(Some(4.0), None).0, 4.0);
        assert!(server_cores(Some(4.0), None).1.contains("--server-cores"));
        // This process's own affinity stands in for a server's.
        let (n, why) = server_cores(None, Some(std::process::id()));
        assert!(n >= 1.0 && why.contains("affinity of PID"), "{why}");
        let (n, why) = server_cores(None, None);
        assert_eq!(n, Machine::logical_cpus() as f64);
        assert!(why.contains("unpinned"));
        let m = Machine::this(&[std::process::id()]);
        assert!(m.logical_cpus >= 1 && !m.kernel.is_empty());
        // The machine's CPUs, however this process is pinned.
        let allowed = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert!(m.logical_cpus >= allowed);
        assert_eq!(m.server_cpus.len(), 1);
    }

    #[test]
    fn reads_listening_sockets() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 4343 1 0000000000000000 20 4 30 10 -1
   2: 00000000:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4444 1 0000000000000000 100 0 0 10 0
";
        // 0x1F90 = 8080: only the LISTEN row, not the connection.
        assert_eq!(listening_inodes(table, 8080), [4242]);
        assert_eq!(listening_inodes(table, 8081), [4444]);
        assert!(listening_inodes(table, 9).is_empty());
        assert_eq!(url_ports("nats://127.0.0.1:4222"), [4222]);
        assert_eq!(url_ports("nats://a:1,nats://b:2"), [1, 2]);
        assert_eq!(url_ports("nats://u:p@h:7"), [7]);
        assert!(url_ports("nats://h").is_empty());
    }

    #[test]
    fn a_wrong_server_pid_is_refused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("nats://{}", l.local_addr().unwrap());
        // This process listens there: accepted.
        assert_eq!(check_server_pid(std::process::id(), &url), Ok(None));
        // No such process.
        let e = check_server_pid(u32::MAX - 7, &url).unwrap_err();
        assert!(e.contains("no such process"), "{e}");
        // A process that exists but is not the one listening (PID 1 holds
        // no socket on this port; unreadable fds only give a warning).
        match check_server_pid(1, &url) {
            Err(e) => assert!(
                e.contains("is not the server")
                    && e.contains(&format!("PID {}", std::process::id())),
                "{e}"
            ),
            Ok(w) => assert!(w.unwrap().contains("could not check")),
        }
        let port = l.local_addr().unwrap().port();
        drop(l);
        let e =
            check_server_pid(std::process::id(), &format!("nats://127.0.0.1:{port}")).unwrap_err();
        assert!(e.contains("nothing on this machine listens"), "{e}");
    }
}
