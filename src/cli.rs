//! What the command line needs beyond clap: nats-server's single-dash long
//! flags (`-sl`, `-js`, `-cluster`: Go's flag package takes either dash),
//! and `--signal`, which sends a signal to a running server and exits.

use std::ffi::OsString;

/// Rewrites `-name[=value]` to `--name[=value]` when `name` (two or more
/// characters) is one of `cmd`'s long flags or aliases, as nats-server's
/// flag parsing accepts both. Clusters of short flags (`-DV`) and values
/// (`-p -1`) are left alone; nothing after `--` is touched.
pub fn normalize(args: Vec<OsString>, cmd: &clap::Command) -> Vec<OsString> {
    let longs: Vec<String> = cmd
        .get_arguments()
        .flat_map(|a| {
            a.get_long()
                .into_iter()
                .chain(a.get_all_aliases().into_iter().flatten())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    let mut out = Vec::with_capacity(args.len());
    let mut rest = false;
    for (i, arg) in args.into_iter().enumerate() {
        let Some(s) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if i == 0 || rest || s.starts_with("--") || !s.starts_with('-') || s.len() <= 2 {
            rest |= s == "--";
            out.push(arg);
            continue;
        }
        let name = s[1..].split('=').next().unwrap_or("");
        if longs.iter().any(|l| l == name) {
            out.push(OsString::from(format!("-{s}")));
        } else {
            out.push(arg);
        }
    }
    out
}

/// `--signal CMD[=PID|=PIDFILE]`: the signal nats-server sends for CMD.
fn signal_of(cmd: &str) -> Option<i32> {
    Some(match cmd {
        "stop" => libc::SIGKILL,
        "quit" => libc::SIGINT,
        "term" => libc::SIGTERM,
        "reopen" => libc::SIGUSR1,
        "reload" => libc::SIGHUP,
        "ldm" => libc::SIGUSR2,
        _ => return None,
    })
}

/// Sends `--signal`'s signal to the process it names: `=PID`, `=PIDFILE`,
/// or the one running process with this program's name.
pub fn send_signal(spec: &str) -> Result<(), String> {
    let (cmd, target) = match spec.split_once('=') {
        Some((c, t)) => (c, Some(t)),
        None => (spec, None),
    };
    let sig = signal_of(cmd)
        .ok_or_else(|| format!("unknown signal {cmd:?} (stop, quit, term, reopen, reload, ldm)"))?;
    let pid: i32 = match target {
        Some(t) if t.chars().all(|c| c.is_ascii_digit()) => {
            t.parse().map_err(|_| format!("invalid pid {t:?}"))?
        }
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read pid file {path}: {e}"))?
            .trim()
            .parse()
            .map_err(|_| format!("pid file {path} does not hold a pid"))?,
        None => only_running_instance()?,
    };
    // SAFETY: kill(2) with a pid and a valid signal number.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(format!(
            "cannot signal process {pid}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// The single other running process named like this one.
fn only_running_instance() -> Result<i32, String> {
    let me = std::process::id() as i32;
    let name = std::fs::read_to_string("/proc/self/comm").unwrap_or_else(|_| "shoal".into());
    let name = name.trim();
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .map_err(|e| format!("cannot list processes: {e}"))?
        .flatten()
        .filter_map(|d| d.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .collect();
    pids.sort_unstable();
    match pids.as_slice() {
        [] => Err(format!("no {name} processes running")),
        [pid] => Ok(*pid),
        many => Err(format!(
            "multiple {name} processes running:\n{}",
            many.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction, Command};

    fn cmd() -> Command {
        Command::new("t")
            .arg(Arg::new("signal").long("signal").alias("sl"))
            .arg(Arg::new("cluster").long("cluster"))
            .arg(Arg::new("d").short('D').action(ArgAction::SetTrue))
            .arg(Arg::new("v").short('V').action(ArgAction::SetTrue))
            .arg(Arg::new("p").short('p').allow_negative_numbers(true))
    }

    #[test]
    fn single_dash_long_flags_become_double_dash() {
        let args = [
            "shoal",
            "-sl",
            "ldm=12",
            "-cluster=nats://h:1",
            "-DV",
            "-p",
            "-1",
            "--",
            "-sl",
        ];
        let out = normalize(args.iter().map(OsString::from).collect(), &cmd());
        let out: Vec<_> = out.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            out,
            [
                "shoal",
                "--sl",
                "ldm=12",
                "--cluster=nats://h:1",
                "-DV",
                "-p",
                "-1",
                "--",
                "-sl"
            ]
        );
    }

    #[test]
    fn signals_are_nats_servers() {
        assert_eq!(signal_of("ldm"), Some(libc::SIGUSR2));
        assert_eq!(signal_of("reload"), Some(libc::SIGHUP));
        assert_eq!(signal_of("stop"), Some(libc::SIGKILL));
        assert_eq!(signal_of("quit"), Some(libc::SIGINT));
        assert_eq!(signal_of("term"), Some(libc::SIGTERM));
        assert_eq!(signal_of("reopen"), Some(libc::SIGUSR1));
        assert!(send_signal("nope=1").is_err());
        assert!(send_signal("ldm=/nonexistent/pidfile").is_err());
    }
}
