//! `shoal-bench`: measures any NATS-protocol server.

use clap::{Parser, Subcommand};
use shoal_bench::{pubsub, reqrep};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "shoal-bench",
    version,
    about = "Load generator for NATS-protocol servers"
)]
struct Cli {
    /// Server URL.
    #[arg(long, default_value = "nats://127.0.0.1:4222", global = true)]
    url: String,
    /// Print results as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// One publisher to S subscribers on one subject.
    Pubsub {
        #[arg(long, default_value_t = 1)]
        subs: usize,
        #[arg(long, default_value_t = 16)]
        size: usize,
        #[arg(long, default_value_t = 1_000_000)]
        msgs: u64,
    },
    /// C requesters (closed loop) against R responders in a queue group.
    Reqrep {
        #[arg(long, default_value_t = 1)]
        requesters: usize,
        #[arg(long, default_value_t = 1)]
        responders: usize,
        #[arg(long, default_value_t = 16)]
        size: usize,
        /// Requests per requester.
        #[arg(long, default_value_t = 20_000)]
        requests: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let outcome = match cli.scenario {
        Scenario::Pubsub { subs, size, msgs } => pubsub::run(&pubsub::PubSubParams {
            url: cli.url.clone(),
            subject: "bench.pubsub".into(),
            subscribers: subs,
            size,
            msgs,
        })
        .map(|r| {
            if cli.json {
                serde_json::to_string(&r).expect("plain struct")
            } else {
                format!(
                    "pubsub 1->{subs} size={size} msgs={msgs} server={} cpus={cpus}: published {:.0} msgs/s, delivered {:.0} msgs/s ({:.1} MB/s), lost {}, out of order {}",
                    r.server_version, r.published_per_sec, r.delivered_per_sec, r.delivered_mb_per_sec, r.lost, r.out_of_order
                )
            }
        }),
        Scenario::Reqrep { requesters, responders, size, requests } => reqrep::run(&reqrep::ReqRepParams {
            url: cli.url.clone(),
            subject: "bench.rpc".into(),
            requesters,
            responders,
            size,
            requests,
        })
        .map(|r| {
            if cli.json {
                serde_json::to_string(&r).expect("plain struct")
            } else {
                format!(
                    "reqrep {requesters} requesters, {responders} responders, size={size} server={} cpus={cpus}: {:.0} req/s, p50 {:.0} us, p90 {:.0} us, p99 {:.0} us, p99.9 {:.0} us, max {:.0} us",
                    r.server_version, r.requests_per_sec, r.p50_us, r.p90_us, r.p99_us, r.p999_us, r.max_us
                )
            }
        }),
    };
    match outcome {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shoal-bench: {e}");
            ExitCode::from(1)
        }
    }
}
