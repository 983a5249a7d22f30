//! The `shoal` server binary: command-line flags named like nats-server's, so
//! scripts that start `nats-server` can start `shoal` instead.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// Shoal: a NATS-protocol message broker for bare-metal Linux.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about)]
struct Flags {
    /// Bind to host address (default 0.0.0.0).
    #[arg(
        short = 'a',
        long = "addr",
        visible_alias = "net",
        default_value = "0.0.0.0"
    )]
    addr: String,
    /// Client port (default 4222; -1 picks a random free port).
    #[arg(
        short = 'p',
        long = "port",
        default_value_t = 4222,
        allow_negative_numbers = true
    )]
    port: i32,
    /// Server name (default: the server id).
    #[arg(short = 'n', long = "name", visible_alias = "server_name")]
    name: Option<String>,
    /// HTTP port for monitoring.
    #[arg(short = 'm', long = "http_port")]
    http_port: Option<u16>,
    /// User required for connections.
    #[arg(long)]
    user: Option<String>,
    /// Password required for connections.
    #[arg(long)]
    pass: Option<String>,
    /// Authorization token required for connections.
    #[arg(long)]
    auth: Option<String>,
    /// Configuration file (nats-server syntax).
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
    /// Enable debug output.
    #[arg(short = 'D', long = "debug")]
    debug: bool,
    /// Trace the raw protocol.
    #[arg(short = 'V', long = "trace")]
    trace: bool,
    /// File to redirect log output to.
    #[arg(short = 'l', long = "log")]
    log: Option<PathBuf>,
    /// File to store the process id in.
    #[arg(short = 'P', long = "pid")]
    pid: Option<PathBuf>,
    /// Cluster URL for solicited routes (nats://host:port).
    #[arg(long = "cluster", visible_alias = "cluster_listen")]
    cluster: Option<String>,
    /// Routes to solicit and connect (comma separated nats:// URLs).
    #[arg(long = "routes")]
    routes: Option<String>,
    /// Cluster name.
    #[arg(long = "cluster_name")]
    cluster_name: Option<String>,
    /// Number of shards (one executor per core; default: CPUs available).
    #[arg(long)]
    shards: Option<usize>,
    /// Microseconds an idle shard spins before parking (latency for CPU).
    #[arg(long = "spin_before_park")]
    spin_before_park: Option<u64>,
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    eprintln!(
        "shoal: the broker runtime is not built yet (it lands with the single-node broker issue); \
         flags parsed for {}:{}",
        flags.addr, flags.port
    );
    ExitCode::from(2)
}
