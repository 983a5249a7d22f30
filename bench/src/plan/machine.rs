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
    pub fn logical_cpus() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
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
        assert_eq!(m.server_cpus.len(), 1);
    }
}
