//! The `shoal` server binary: flags named like nats-server's, so scripts and
//! client test suites that start `nats-server` can start `shoal` instead;
//! nats-server's configuration file syntax; nats-server's log line shape.

// `/varz` is one `json!` literal with more fields than the default limit.
#![recursion_limit = "256"]

mod cli;
mod logging;
mod monitor;
mod ports_file;

use clap::Parser;
use shoal_core::auth::{Secret, User};
use shoal_core::config::ServerConfig;
use shoal_net::Server;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tracing::{error, warn};

/// Shoal: a NATS-protocol message broker for bare-metal Linux.
///
/// Deliberately not `Debug`: the flags carry passwords and tokens.
#[derive(Parser)]
#[command(
    name = "shoal",
    version = concat!(env!("CARGO_PKG_VERSION"), " (NATS protocol of nats-server 2.9.10)"),
    about,
    // clap's own version flag takes `-V`, which is `--trace` here (as in
    // nats-server); debug builds refuse the clash at startup.
    disable_version_flag = true
)]
struct Flags {
    /// Print the version and exit (`-v`, as nats-server).
    #[arg(short = 'v', long = "version", action = clap::ArgAction::Version)]
    version: Option<bool>,
    /// Bind to host address (default 0.0.0.0).
    #[arg(short = 'a', long = "addr", visible_alias = "net")]
    addr: Option<String>,
    /// Client port (default 4222; -1 picks a random free port).
    #[arg(short = 'p', long = "port", allow_negative_numbers = true)]
    port: Option<i32>,
    /// Server name (default: the server id).
    #[arg(short = 'n', long = "name", visible_alias = "server_name")]
    name: Option<String>,
    /// HTTP port for monitoring (/varz, /routez, /healthz).
    #[arg(short = 'm', long = "http_port", allow_negative_numbers = true)]
    http_port: Option<i32>,
    /// User required for connections.
    #[arg(long)]
    user: Option<String>,
    /// Password required for connections (plain or bcrypt).
    #[arg(long)]
    pass: Option<String>,
    /// Authorization token required for connections.
    #[arg(long)]
    auth: Option<String>,
    /// Require TLS for client connections (with --tlscert and --tlskey).
    #[arg(long)]
    tls: bool,
    /// Server certificate chain (PEM).
    #[arg(long)]
    tlscert: Option<String>,
    /// Server private key (PEM).
    #[arg(long)]
    tlskey: Option<String>,
    /// Require and verify client certificates (mutual TLS).
    #[arg(long)]
    tlsverify: bool,
    /// CA certificates client certificates must chain to (PEM).
    #[arg(long)]
    tlscacert: Option<String>,
    /// Configuration file (nats-server syntax).
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
    /// Enable debug output (connection open/close lines).
    #[arg(short = 'D', long = "debug")]
    debug: bool,
    /// Trace the protocol.
    #[arg(short = 'V', long = "trace")]
    trace: bool,
    /// File to redirect log output to.
    #[arg(short = 'l', long = "log")]
    log: Option<PathBuf>,
    /// File to store the process id in.
    #[arg(short = 'P', long = "pid")]
    pid: Option<PathBuf>,
    /// Cluster URL to listen for routes on (nats://host:port; with clustering).
    #[arg(long = "cluster", visible_alias = "cluster_listen")]
    cluster: Option<String>,
    /// Routes to solicit and connect (comma separated nats:// URLs; with clustering).
    #[arg(long = "routes")]
    routes: Option<String>,
    /// Cluster name (with clustering).
    #[arg(long = "cluster_name")]
    cluster_name: Option<String>,
    /// Number of shards, one executor pinned per CPU (default: CPUs available).
    #[arg(long)]
    shards: Option<usize>,
    /// How long an idle shard spins before parking, e.g. 50us (trades CPU for latency).
    #[arg(long = "spin_before_park", value_parser = humantime::parse_duration)]
    spin_before_park: Option<Duration>,
    /// Send a signal to a running server and exit: ldm, stop, quit, reload,
    /// reopen or term, optionally =PID or =PIDFILE (as nats-server's -sl).
    #[arg(
        long = "signal",
        visible_alias = "sl",
        value_name = "CMD[=PID|PIDFILE]"
    )]
    signal: Option<String>,
    /// Write <program>_<pid>.ports (the client, monitoring and cluster URLs)
    /// in this directory; removed at exit.
    #[arg(long = "ports_file_dir", value_name = "DIR")]
    ports_file_dir: Option<PathBuf>,
    /// Test the configuration and exit.
    #[arg(short = 't')]
    check_config: bool,
    /// Timestamp log lines (default true; --logtime=false to leave them out).
    #[arg(
        short = 'T',
        long = "logtime",
        visible_alias = "log_time",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    logtime: Option<bool>,
    /// JetStream: not supported (refused with a clear error).
    #[arg(long = "jetstream", visible_alias = "js", hide = true)]
    jetstream: bool,
    /// JetStream storage directory: ignored (with a notice) unless `-js`
    /// asks for JetStream, which is refused.
    #[arg(long = "store_dir", visible_alias = "sd", hide = true)]
    store_dir: Option<String>,
}

/// Builds the configuration: the file first, then flags override it (as in
/// nats-server).
fn configure(flags: &Flags) -> Result<ServerConfig, String> {
    let mut c = match &flags.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            ServerConfig::from_conf(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => ServerConfig::default(),
    };
    if let Some(a) = &flags.addr {
        c.host = a.clone();
    }
    if let Some(p) = flags.port {
        c.port = p;
    }
    if let Some(n) = &flags.name {
        c.server_name = Some(n.clone());
    }
    if let Some(p) = flags.http_port {
        // -1 picks a free port, as for the client port.
        c.http_port = Some(match p {
            -1 => 0,
            p => u16::try_from(p).map_err(|_| format!("invalid monitoring port {p}"))?,
        });
    }
    if let Some(user) = &flags.user {
        c.auth.users.retain(|u| &u.name != user);
        c.auth.users.push(User {
            name: user.clone(),
            account: None,
            password: Secret::new(flags.pass.as_deref().unwrap_or("")),
            permissions: None,
        });
    } else if flags.pass.is_some() {
        return Err("--pass needs --user".into());
    }
    if let Some(token) = &flags.auth {
        c.auth.token = Some(Secret::new(token));
    }
    c.debug |= flags.debug;
    c.trace |= flags.trace;
    if let Some(l) = &flags.log {
        c.log_file = Some(l.display().to_string());
    }
    if let Some(p) = &flags.pid {
        c.pid_file = Some(p.display().to_string());
    }
    if let Some(url) = &flags.cluster {
        // `--cluster nats://user:pass@host:port`: as with nats-server, the
        // credentials are the cluster's authorization (what peers must
        // present) and are kept out of the listen address (logs, errors).
        let (listen, creds) = split_credentials(url);
        c.cluster.listen = Some(listen);
        if let Some((user, pass)) = creds {
            c.cluster.user = Some(user);
            c.cluster.password = pass;
        }
    }
    if let Some(routes) = &flags.routes {
        c.cluster.routes = routes
            .split(',')
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty())
            .collect();
    }
    if let Some(n) = &flags.cluster_name {
        c.cluster.name = Some(n.clone());
    }
    if flags.tls || flags.tlsverify || flags.tlscert.is_some() || flags.tlskey.is_some() {
        let mut t = c.tls.clone().unwrap_or_default();
        if let Some(v) = &flags.tlscert {
            t.cert_file = v.clone();
        }
        if let Some(v) = &flags.tlskey {
            t.key_file = v.clone();
        }
        if let Some(v) = &flags.tlscacert {
            t.ca_file = Some(v.clone());
        }
        t.verify |= flags.tlsverify;
        if t.cert_file.is_empty() || t.key_file.is_empty() {
            return Err("TLS needs --tlscert and --tlskey".into());
        }
        c.tls = Some(t);
    }
    if let Some(s) = flags.shards {
        c.shards = Some(s.max(1));
    }
    if let Some(s) = flags.spin_before_park {
        c.spin_before_park = Some(s);
    }
    if let Some(t) = flags.logtime {
        c.logtime = t;
    }
    if let Some(d) = &flags.ports_file_dir {
        c.ports_file_dir = Some(d.display().to_string());
    }
    if flags.jetstream {
        return Err(shoal_core::config::JETSTREAM_UNSUPPORTED.into());
    }
    // nats-server starts without JetStream when given only a store
    // directory, and client test harnesses always pass one.
    if flags.store_dir.is_some() {
        c.notices
            .push("--store_dir is ignored: Shoal has no JetStream".into());
    }
    // What `Server::start` would refuse, found now (for `-t` and a clearer
    // start error).
    let auth = shoal_core::auth::Authenticator::new(&c.auth).map_err(|e| e.to_string())?;
    c.notices.extend(auth.notices().iter().cloned());
    let no_route_credentials = c.cluster.user.is_none() || c.cluster.password.is_none();
    if c.cluster.enabled()
        && no_route_credentials
        && !c.auth.operator.enabled()
        && !c.auth.accounts.is_empty()
        && c.auth.users.is_empty()
        && c.auth.token.is_none()
    {
        c.notices.push(
            "accounts in a cluster with nkey users only and no route credentials: the service-reply key is derived from public keys; set cluster authorization".into(),
        );
    }
    if c.auth.operator.enabled() && c.cluster.enabled() && no_route_credentials {
        c.notices.push(
            "operator mode in a cluster without route credentials: a reply to a service import is accepted only on the node the request entered (set cluster authorization to share the reply key)".into(),
        );
    }
    Ok(c)
}

/// SIGHUP: re-reads the configuration file (command-line flags still win,
/// as at start) and applies what may change while running; an invalid file
/// changes nothing.
fn reload(flags: &Flags, control: &shoal_net::ServerControl, set_level: &logging::SetLevel) {
    if flags.config.is_none() {
        warn!("Failed to reload server configuration: no configuration file (-c)");
        return;
    }
    let config = match configure(flags) {
        Ok(c) => c,
        Err(e) => {
            error!("Failed to reload server configuration: {e}");
            return;
        }
    };
    // The log level changes only with a reload that is taken as a whole.
    let level_config = config.clone();
    match control.reload(config) {
        Ok(kept) => {
            if let Err(e) = set_level(&level_config) {
                warn!("cannot change the log level: {e}");
            }
            for key in kept {
                warn!("Reload: {key} cannot change while the server runs; restart to apply it");
            }
            tracing::info!("Reloaded server configuration");
        }
        Err(e) => error!("Failed to reload server configuration: {e}"),
    }
}

fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let args = cli::normalize(std::env::args_os().collect(), &Flags::command());
    let flags = match Flags::command()
        .try_get_matches_from(args)
        .and_then(|m| Flags::from_arg_matches(&m))
    {
        Ok(f) => f,
        Err(e) => e.exit(),
    };
    if let Some(spec) = &flags.signal {
        return match cli::send_signal(spec) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("shoal: {e}");
                ExitCode::from(1)
            }
        };
    }
    let config = match configure(&flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shoal: {e}");
            return ExitCode::from(1);
        }
    };
    if flags.check_config {
        let file = flags
            .config
            .as_ref()
            .map_or_else(|| "(none)".into(), |p| p.display().to_string());
        for notice in &config.notices {
            eprintln!("shoal: {notice}");
        }
        eprintln!("shoal: configuration file {file} is valid");
        return ExitCode::SUCCESS;
    }
    let (set_level, reopen_log) = match logging::init(&config) {
        Ok(set) => set,
        Err(e) => {
            eprintln!("shoal: {e}");
            return ExitCode::from(1);
        }
    };
    // A panic on a shard thread would leave that shard's clients hanging
    // while the rest of the server runs on: log it and stop the process, so
    // clients reconnect elsewhere and the supervisor restarts it.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        error!("fatal: {info}");
        default_hook(info);
        std::process::abort();
    }));
    if let Some(pid) = &config.pid_file {
        if let Err(e) = std::fs::write(pid, std::process::id().to_string()) {
            error!("cannot write pid file {pid}: {e}");
            return ExitCode::from(1);
        }
    }
    let http = config.http_port.map(|p| {
        let host = config
            .http_host
            .clone()
            .unwrap_or_else(|| config.host.clone());
        (host, p)
    });
    let mut server = match Server::start(config) {
        Ok(s) => s,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(1);
        }
    };
    let control = server.control();
    let mut http_addr = None;
    if let Some((host, port)) = http {
        match monitor::start(control.clone(), &host, port) {
            Ok(addr) => http_addr = Some(addr),
            Err(e) => {
                error!("cannot listen for monitoring on {host}:{port}: {e}");
                control.shutdown();
                server.wait();
                return ExitCode::from(1);
            }
        }
    }
    let events = server.take_route_events().expect("route events taken once");
    let cluster = match shoal_cluster::Cluster::start(control.clone(), events) {
        Ok(c) => c,
        Err(e) => {
            error!("{e}");
            control.shutdown();
            server.wait();
            return ExitCode::from(1);
        }
    };
    // Signals are caught before "Server is ready": a supervisor or test
    // that sends SIGTERM the moment it reads that line must get a clean
    // shutdown, not the default action (death by signal).
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGUSR2,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGUSR1,
    ]) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    for notice in &control.config().notices {
        warn!("{notice}");
    }
    let _ports_file = match &control.config().ports_file_dir {
        Some(dir) => {
            let ports =
                ports_file::contents(control.client_addr(), http_addr, cluster.route_addr());
            match ports_file::write(std::path::Path::new(dir), &ports) {
                Ok(f) => Some(f),
                Err(e) => {
                    error!("cannot write the ports file in {dir}: {e}");
                    None
                }
            }
        }
        None => None,
    };
    tracing::info!("Server is ready");
    let signal_handle = signals.handle();
    let handler = control.clone();
    let spawned = std::thread::Builder::new()
        .name("shoal-signals".into())
        .spawn(move || {
            let control = handler;
            let mut stopping = false;
            for sig in signals.forever() {
                match sig {
                    signal_hook::consts::SIGUSR2 => control.lame_duck(),
                    signal_hook::consts::SIGHUP => reload(&flags, &control, &set_level),
                    signal_hook::consts::SIGUSR1 => match reopen_log() {
                        Ok(()) => tracing::info!("File log re-opened"),
                        Err(e) => error!("cannot reopen the log file: {e}"),
                    },
                    _ if stopping => {
                        // A second TERM/INT: the operator wants out now.
                        std::process::exit(1);
                    }
                    _ => {
                        stopping = true;
                        tracing::info!(
                            "Trapped \"{}\" signal",
                            if sig == signal_hook::consts::SIGINT {
                                "interrupt"
                            } else {
                                "terminated"
                            }
                        );
                        control.shutdown();
                        // Backstop: a shutdown is bounded by design (flush
                        // budgets, then cuts); should a shard still not
                        // finish (a bug, a thread the OS does not schedule),
                        // the operator's SIGTERM still ends the process.
                        let limit = control.shutdown_limit();
                        let backstop = std::thread::Builder::new()
                            .name("shoal-shutdown-backstop".into())
                            .spawn(move || {
                                std::thread::sleep(limit);
                                error!("Shutdown did not finish within {limit:?}, exiting");
                                std::process::exit(1);
                            });
                        if backstop.is_err() {
                            error!("cannot start the shutdown backstop thread");
                        }
                    }
                }
            }
        });
    if let Err(e) = spawned {
        // Without it the process could not be stopped cleanly: stop now.
        error!("cannot start the signal handler thread: {e}");
        control.shutdown();
        server.wait();
        cluster.stop();
        return ExitCode::from(1);
    }
    server.wait();
    cluster.stop();
    signal_handle.close();
    ExitCode::SUCCESS
}

/// Splits `scheme://user[:pass]@host:port` into the URL without the
/// credentials and the credentials.
fn split_credentials(url: &str) -> (String, Option<(String, Option<String>)>) {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (format!("{s}://"), r),
        None => (String::new(), url),
    };
    match rest.rsplit_once('@') {
        None => (url.to_owned(), None),
        Some((auth, hostport)) => {
            let creds = match auth.split_once(':') {
                Some((u, p)) => (u.to_owned(), Some(p.to_owned())),
                None => (auth.to_owned(), None),
            };
            (format!("{scheme}{hostport}"), Some(creds))
        }
    }
}

#[cfg(test)]
mod cluster_flag_tests {
    use super::split_credentials;

    #[test]
    fn cluster_url_credentials_become_the_authorization() {
        assert_eq!(
            split_credentials("nats://ruser:pw@127.0.0.1:6222"),
            (
                "nats://127.0.0.1:6222".to_string(),
                Some(("ruser".to_string(), Some("pw".to_string())))
            )
        );
        assert_eq!(
            split_credentials("nats://127.0.0.1:-1"),
            ("nats://127.0.0.1:-1".to_string(), None)
        );
        assert_eq!(
            split_credentials("u@0.0.0.0:6222"),
            ("0.0.0.0:6222".to_string(), Some(("u".to_string(), None)))
        );
    }
}
