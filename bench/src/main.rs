//! `shoal-bench`: measures any NATS-protocol server, or two side by side.

use clap::{Args, Parser, Subcommand};
use shoal_bench::{conns, publish, pubsub, queue, reqrep};
use std::io;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "shoal-bench",
    version,
    about = "Load generator for NATS-protocol servers"
)]
struct Cli {
    /// Server URL; `URL_A,URL_B` puts publishers/requesters on A and
    /// subscribers/responders on B (two nodes of a cluster).
    #[arg(long, default_value = "nats://127.0.0.1:4222", global = true)]
    url: String,
    /// A second server: run the same scenario against both, alternately,
    /// and print the ratio (url / compare).
    #[arg(long, global = true)]
    compare: Option<String>,
    /// Alternating rounds with --compare (medians are compared).
    #[arg(long, default_value_t = 3, global = true)]
    rounds: usize,
    /// Print results as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Clone)]
enum Scenario {
    /// P publishers, no subscribers: the rate the server absorbs.
    Pub {
        #[arg(long, default_value_t = 1)]
        publishers: usize,
        #[arg(long, default_value_t = 16)]
        size: usize,
        /// Messages per publisher.
        #[arg(long, default_value_t = 1_000_000)]
        msgs: u64,
    },
    /// Many subscribed connections, each receiving every message.
    Conns {
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        #[arg(long, default_value_t = 16)]
        size: usize,
        #[arg(long, default_value_t = 100)]
        msgs: u64,
    },
    /// P publishers to S subscribers on one subject.
    Pubsub {
        #[arg(long, default_value_t = 1)]
        pubs: usize,
        #[arg(long, default_value_t = 1)]
        subs: usize,
        #[arg(long, default_value_t = 16)]
        size: usize,
        #[arg(long, default_value_t = 1_000_000)]
        msgs: u64,
    },
    /// pub->sub over a range of message sizes: a capacity table (--csv for
    /// CSV, --plot FILE.svg for a chart). With --compare, both servers.
    Sweep {
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "16,64,256,1024,4096,16384"
        )]
        sizes: Vec<usize>,
        /// Subscriber counts to sweep too, e.g. 1,10.
        #[arg(long, value_delimiter = ',', default_value = "1")]
        subs: Vec<usize>,
        /// Bytes published per run (message count = bytes / size, at least 10,000).
        #[arg(long, default_value_t = 64 << 20)]
        bytes: u64,
        #[arg(long)]
        csv: bool,
        #[arg(long)]
        plot: Option<String>,
    },
    /// A trivial server that discards everything (answers PING): run `pub`
    /// against it to measure this tool's own ceiling.
    Sink {
        #[arg(long, default_value = "127.0.0.1:4299")]
        listen: String,
    },
    /// P publishers to a queue group of Q members: exactly-once check.
    Queue {
        #[arg(long, default_value_t = 1)]
        pubs: usize,
        #[arg(long, default_value_t = 4)]
        members: usize,
        #[arg(long, default_value_t = 16)]
        size: usize,
        #[arg(long, default_value_t = 500_000)]
        msgs: u64,
    },
    /// Liveness, not speed: RUNS rounds of short exchanges (request-reply,
    /// 4 concurrent requesters, pub->sub, queue group) on fresh connections;
    /// an exchange that waits longer than --deadline-ms for anything is a
    /// stall. Prints stalls per 1,000 runs of each shape; exits 1 on any.
    Liveness {
        #[arg(long, default_value_t = 100)]
        runs: u64,
        /// Messages or requests per exchange.
        #[arg(long, default_value_t = 200)]
        msgs: u64,
        #[arg(long, default_value_t = 1000)]
        deadline_ms: u64,
    },
    /// Capacity plan: steps a workload's offered load open loop up to the
    /// knee (an objective broken, a message lost, a stall), repeating each
    /// load; reports the maximum sustainable load per server and per core,
    /// the headroom of the stated load and the cores and nodes it needs, and
    /// writes plan.json, plan.md, .hgrm files and SVG charts to --out. With
    /// --compare, both servers.
    Plan(Box<PlanArgs>),
    /// Generates a share of a plan's load for a coordinator (`plan
    /// --workers HOST:PORT,...`): listens for it on --listen, sets up its
    /// share when asked, starts when every worker is ready, and sends back
    /// its counts and raw HDR histograms. Runs until stopped.
    Worker {
        #[arg(long, default_value = "127.0.0.1:4300")]
        listen: String,
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
        /// Open loop at this many requests/s in total (latency measured from
        /// when each request was due); default closed loop.
        #[arg(long)]
        rate: Option<f64>,
        /// Draw the latency percentiles to this SVG file (both servers with
        /// --compare).
        #[arg(long)]
        plot: Option<String>,
    },
}

#[derive(Args, Clone, Debug)]
struct PlanArgs {
    /// Workload file (TOML: [[rpc]] and [[events]] classes); without it,
    /// one request-reply class from --rate, --size, --p99-ms and friends.
    #[arg(long)]
    workload: Option<String>,
    /// Stated requests/s of the request-reply class.
    #[arg(long)]
    rate: Option<f64>,
    /// Request and reply payload, bytes.
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Objective: p99 latency at or under this many milliseconds.
    #[arg(long)]
    p99_ms: Option<f64>,
    /// Objective: p99.9 latency at or under this many milliseconds.
    #[arg(long)]
    p999_ms: Option<f64>,
    /// Queue group members answering requests.
    #[arg(long, default_value_t = 1)]
    responders: usize,
    /// Connections sending requests.
    #[arg(long, default_value_t = 1)]
    requesters: usize,
    /// An events class too: messages/s published at the stated load.
    #[arg(long)]
    events_rate: Option<f64>,
    #[arg(long, default_value_t = 128)]
    events_size: usize,
    /// Events go to this many subscribers, each receiving every message.
    #[arg(long)]
    fanout: Option<usize>,
    /// Events go to a queue group of this many members instead.
    #[arg(long)]
    queue: Option<usize>,
    /// Run exactly these loads (× the stated load), e.g. 0.5,1,2, instead
    /// of searching for the knee.
    #[arg(long, value_delimiter = ',')]
    loads: Option<Vec<f64>>,
    /// The search's first load, × stated.
    #[arg(long, default_value_t = 0.25)]
    start: f64,
    /// Each load is the previous one × this until one fails.
    #[arg(long, default_value_t = 2.0)]
    growth: f64,
    /// Highest load offered, × stated.
    #[arg(long, default_value_t = 64.0)]
    max_factor: f64,
    /// Bisections between the last passing and the first failing load.
    #[arg(long, default_value_t = 2)]
    refine: usize,
    /// Loads tried at most.
    #[arg(long, default_value_t = 12)]
    max_steps: usize,
    /// Runs of each load (a load is sustainable only if all pass).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Seconds each run sends for.
    #[arg(long, default_value_t = 5.0)]
    step_secs: f64,
    /// After sending, how long to wait for messages in flight before the
    /// rest count as lost.
    #[arg(long, default_value_t = 2000)]
    drain_ms: u64,
    /// Silence while messages are due longer than this is a stall.
    #[arg(long, default_value_t = 1000)]
    stall_ms: u64,
    /// Cores the server may use (for per-core figures); default: the
    /// affinity of --server-pid, else every CPU of this machine.
    #[arg(long)]
    server_cores: Option<f64>,
    /// The server's PID (with --compare: PID_A,PID_B), to record its
    /// pinning and count its cores.
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Cores of a production node (for nodes needed); default this
    /// machine's.
    #[arg(long)]
    node_cores: Option<u64>,
    /// Size cores so the stated load is this fraction of capacity.
    #[arg(long, default_value_t = 0.7)]
    target_util: f64,
    /// Folder for plan.json, plan.md, hgrm/ and the SVG charts.
    #[arg(long, default_value = "plan-out")]
    out: String,
    /// Generate the load on these `shoal-bench worker`s (HOST:PORT,...)
    /// instead of here: each runs a 1/N share of every class, all start
    /// together, and their histograms are merged exactly.
    #[arg(long, value_delimiter = ',')]
    workers: Vec<String>,
}

/// The plan's parameters from the command line: the workload file or the
/// flags (not both), the schedule, the servers.
fn plan_params(
    a: &PlanArgs,
    url: &str,
    compare: Option<&str>,
    command: String,
) -> Result<shoal_bench::plan::PlanParams, String> {
    use shoal_bench::plan::workload::{EventClass, RpcClass, Workload};
    let flags_used = a.rate.is_some() || a.events_rate.is_some();
    let workload = match (&a.workload, flags_used) {
        (Some(_), true) => return Err("give --workload or --rate/--events-rate, not both".into()),
        (Some(path), false) => Workload::load(path)?,
        (None, false) => {
            return Err(
                "say what to plan for: --workload FILE, or --rate REQ_PER_S --p99-ms MS".into(),
            )
        }
        (None, true) => {
            let mut w = Workload {
                name: "flags".into(),
                rpc: Vec::new(),
                events: Vec::new(),
            };
            if let Some(rate) = a.rate {
                w.rpc.push(RpcClass {
                    name: "rpc".into(),
                    rate,
                    size: a.size,
                    p99_ms: a.p99_ms,
                    p999_ms: a.p999_ms,
                    responders: a.responders,
                    requesters: a.requesters,
                });
            }
            if let Some(rate) = a.events_rate {
                w.events.push(EventClass {
                    name: "events".into(),
                    rate,
                    size: a.events_size,
                    fanout: a.fanout,
                    queue: a.queue,
                    publishers: 1,
                    p99_ms: if a.rate.is_none() { a.p99_ms } else { None },
                    p999_ms: if a.rate.is_none() { a.p999_ms } else { None },
                });
            }
            w.validate()?;
            w
        }
    };
    let positive = |name: &str, x: f64| {
        if x.is_finite() && x > 0.0 {
            Ok(())
        } else {
            Err(format!("--{name} must be positive"))
        }
    };
    positive("start", a.start)?;
    positive("max-factor", a.max_factor)?;
    positive("step-secs", a.step_secs)?;
    if a.growth <= 1.0 {
        return Err("--growth must be more than 1".into());
    }
    if !(a.target_util > 0.0 && a.target_util <= 1.0) {
        return Err("--target-util must be in (0, 1]".into());
    }
    if let Some(l) = &a.loads {
        if l.is_empty() || l.iter().any(|f| !(f.is_finite() && *f > 0.0)) {
            return Err("--loads must be positive factors, e.g. 0.5,1,2".into());
        }
    }
    let mut urls = vec![url.to_string()];
    urls.extend(compare.map(str::to_string));
    Ok(shoal_bench::plan::PlanParams {
        urls,
        workload,
        schedule: shoal_bench::plan::Schedule {
            loads: a.loads.clone(),
            start: a.start,
            growth: a.growth,
            max_factor: a.max_factor,
            refine: a.refine,
            max_steps: a.max_steps.max(1),
            repeats: a.repeats.max(1),
            step_secs: a.step_secs,
            drain_ms: a.drain_ms,
            stall_ms: a.stall_ms,
        },
        server_cores: a.server_cores,
        server_pids: a.server_pid.clone(),
        node_cores: a.node_cores,
        target_util: a.target_util,
        command,
        workers: a.workers.iter().map(|w| w.trim().to_string()).collect(),
    })
}

fn plan(cli: &Cli, a: &PlanArgs) -> ExitCode {
    let command = std::env::args()
        .map(|s| if s.contains(' ') { format!("'{s}'") } else { s })
        .collect::<Vec<_>>()
        .join(" ");
    let params = match plan_params(a, &cli.url, cli.compare.as_deref(), command) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("shoal-bench plan: {e}");
            return ExitCode::from(2);
        }
    };
    let result = shoal_bench::plan::run(&params, &|line| eprintln!("{line}"));
    let p = match result {
        Ok(p) => p,
        Err(e) => {
            eprintln!("shoal-bench plan: {e}");
            return ExitCode::from(1);
        }
    };
    let dir = std::path::Path::new(&a.out);
    match shoal_bench::plan::report::write(&p, dir) {
        Ok(files) => eprintln!("wrote {} files to {}", files.len(), dir.display()),
        Err(e) => {
            eprintln!("shoal-bench plan: writing {}: {e}", dir.display());
            return ExitCode::from(1);
        }
    }
    if cli.json {
        println!("{}", serde_json::to_string(&p).expect("plain data"));
    } else {
        print!("{}", shoal_bench::plan::report::markdown(&p));
    }
    if let Some(e) = shoal_bench::plan::worker_failure(&p) {
        eprintln!("shoal-bench plan: a worker failed, the plan is incomplete: {e}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// One run's outcome: the human line, the JSON, and the figure compared
/// across servers (higher is better).
struct Outcome {
    line: String,
    json: String,
    primary: f64,
    primary_name: &'static str,
    /// For latency plots.
    latency: Option<reqrep::ReqRepResult>,
}

impl Outcome {
    fn of<T: serde::Serialize>(
        line: String,
        result: &T,
        primary: f64,
        primary_name: &'static str,
    ) -> Self {
        Outcome {
            line,
            json: serde_json::to_string(result).expect("plain struct"),
            primary,
            primary_name,
            latency: None,
        }
    }
}

fn run(scenario: &Scenario, url: &str) -> io::Result<Outcome> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    match scenario.clone() {
        Scenario::Sweep { .. }
        | Scenario::Sink { .. }
        | Scenario::Worker { .. }
        | Scenario::Liveness { .. }
        | Scenario::Plan(_) => Err(io::Error::other("runs on its own")),
        Scenario::Pubsub {
            pubs,
            subs,
            size,
            msgs,
        } => {
            let r = pubsub::run(&pubsub::PubSubParams {
                url: url.into(),
                subject: "bench.pubsub".into(),
                publishers: pubs,
                subscribers: subs,
                size,
                msgs,
            })?;
            if r.lost > 0 {
                return Err(io::Error::other(format!(
                    "{url}: {} of {} deliveries never arrived (waited 5 s after the last one)",
                    r.lost,
                    msgs * pubs as u64 * subs as u64
                )));
            }
            Ok(Outcome::of(
                format!(
                    "pubsub {pubs}->{subs} size={size} msgs={msgs}/publisher url={url} server={} cpus={cpus}: published {:.0} msgs/s, delivered {:.0} msgs/s ({:.1} MB/s), lost {}, out of order {}",
                    r.server_version, r.published_per_sec, r.delivered_per_sec, r.delivered_mb_per_sec, r.lost, r.out_of_order
                ),
                &r,
                r.delivered_per_sec,
                "delivered msgs/s",
            ))
        }
        Scenario::Pub {
            publishers,
            size,
            msgs,
        } => {
            let r = publish::run(&publish::PubParams {
                url: url.into(),
                subject: "bench.pub".into(),
                publishers,
                size,
                msgs,
            })?;
            Ok(Outcome::of(
                format!(
                    "pub {publishers} publishers size={size} msgs={msgs} url={url} server={} cpus={cpus}: {:.0} msgs/s ({:.1} MB/s)",
                    r.server_version, r.msgs_per_sec, r.mb_per_sec
                ),
                &r,
                r.msgs_per_sec,
                "msgs/s",
            ))
        }
        Scenario::Conns {
            connections,
            size,
            msgs,
        } => {
            let r = conns::run(&conns::ConnsParams {
                url: url.into(),
                subject: "bench.conns".into(),
                connections,
                size,
                msgs,
            })?;
            if r.lost > 0 {
                return Err(io::Error::other(format!(
                    "{url}: {} deliveries lost",
                    r.lost
                )));
            }
            Ok(Outcome::of(
                format!(
                    "conns {connections} connections size={size} msgs={msgs} url={url} server={} cpus={cpus}: connected+subscribed in {:.2} s, delivered {:.0} msgs/s, lost 0",
                    r.server_version, r.connect_secs, r.delivered_per_sec
                ),
                &r,
                r.delivered_per_sec,
                "delivered msgs/s",
            ))
        }
        Scenario::Queue {
            pubs,
            members,
            size,
            msgs,
        } => {
            let r = queue::run(&queue::QueueParams {
                url: url.into(),
                subject: "bench.queue".into(),
                publishers: pubs,
                members,
                size,
                msgs,
            })?;
            if r.duplicates > 0 || r.missing > 0 {
                return Err(io::Error::other(format!(
                    "{url}: queue group delivery was not exactly once: {} duplicated, {} missing (first..last missing {:?}), per member {:?}",
                    r.duplicates, r.missing, r.missing_range, r.per_member
                )));
            }
            Ok(Outcome::of(
                format!(
                    "queue {pubs}->{members} size={size} msgs={msgs}/publisher url={url} server={} cpus={cpus}: delivered {:.0} msgs/s, exactly once, per member {:?}",
                    r.server_version, r.delivered_per_sec, r.per_member
                ),
                &r,
                r.delivered_per_sec,
                "delivered msgs/s",
            ))
        }
        Scenario::Reqrep {
            requesters,
            responders,
            size,
            requests,
            rate,
            plot: _,
        } => {
            let r = reqrep::run(&reqrep::ReqRepParams {
                url: url.into(),
                subject: "bench.rpc".into(),
                requesters,
                responders,
                size,
                requests,
                rate,
            })?;
            Ok(Outcome {
                latency: Some(r.clone()),
                ..Outcome::of(
                format!(
                    "reqrep {requesters} requesters, {responders} responders, size={size} rate={} url={url} server={} cpus={cpus}: {:.0} req/s, p50 {:.0} us, p90 {:.0} us, p99 {:.0} us, p99.9 {:.0} us, max {:.0} us",
                    rate.map_or("closed-loop".to_string(), |r| format!("{r}/s")),
                    r.server_version, r.requests_per_sec, r.p50_us, r.p90_us, r.p99_us, r.p999_us, r.max_us
                ),
                &r,
                r.requests_per_sec,
                "req/s",
            )
            })
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn sweep(
    cli: &Cli,
    sizes: &[usize],
    subs: &[usize],
    bytes: u64,
    csv: bool,
    plot: Option<&str>,
) -> io::Result<()> {
    let mut urls = vec![cli.url.clone()];
    urls.extend(cli.compare.clone());
    let bar = indicatif::ProgressBar::new((sizes.len() * subs.len() * urls.len()) as u64);
    if cli.json || csv {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let rows = shoal_bench::sweep::run(&urls, sizes, subs, bytes, &|| bar.inc(1))?;
    bar.finish_and_clear();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cli.json {
        println!("{}", serde_json::to_string(&rows).expect("plain struct"));
    } else if csv {
        print!("{}", shoal_bench::sweep::csv(&rows));
    } else {
        println!("sweep pub->{subs:?} subscribers, {bytes} bytes per run, cpus={cpus}");
        print!("{}", shoal_bench::sweep::table(&rows));
    }
    if let Some(path) = plot {
        let title = format!("pub->sub throughput by message size ({cpus} CPUs)");
        shoal_bench::sweep::plot(&rows, path, &title)?;
        eprintln!("wrote {path}");
    }
    Ok(())
}

fn liveness(cli: &Cli, rounds: u64, msgs: u64, deadline_ms: u64) -> ExitCode {
    let mut urls = vec![cli.url.clone()];
    urls.extend(cli.compare.clone());
    let mut failed = false;
    for url in &urls {
        let mut p = shoal_bench::liveness::LivenessParams::new(url, rounds);
        p.msgs = msgs;
        p.deadline = std::time::Duration::from_millis(deadline_ms);
        let bar = indicatif::ProgressBar::new(rounds);
        if cli.json {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let report = shoal_bench::liveness::run(&p, &|| bar.inc(1));
        bar.finish_and_clear();
        match report {
            Ok(r) => {
                failed |= r.total_stalls > 0;
                if cli.json {
                    println!("{}", serde_json::to_string(&r).expect("plain struct"));
                } else {
                    println!("liveness {url}, {rounds} rounds, {msgs} messages per exchange, deadline {deadline_ms} ms:");
                    print!("{}", r.summary());
                }
            }
            Err(e) => {
                eprintln!("shoal-bench: {url}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Scenario::Sink { listen } = &cli.scenario {
        if let Err(e) = shoal_bench::sink::serve(listen) {
            eprintln!("shoal-bench: {e}");
            return ExitCode::from(1);
        }
        return ExitCode::SUCCESS;
    }
    if let Scenario::Sweep {
        sizes,
        subs,
        bytes,
        csv,
        plot,
    } = &cli.scenario
    {
        return match sweep(&cli, sizes, subs, *bytes, *csv, plot.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("shoal-bench: {e}");
                ExitCode::from(1)
            }
        };
    }
    if let Scenario::Plan(a) = &cli.scenario {
        return plan(&cli, a);
    }
    if let Scenario::Worker { listen } = &cli.scenario {
        let ready = |addr: &str| {
            // Tests and scripts wait for this line to know the port.
            eprintln!("shoal-bench worker listening on {addr}");
        };
        if let Err(e) = shoal_bench::plan::worker::serve(listen, &ready) {
            eprintln!("shoal-bench worker: {listen}: {e}");
            return ExitCode::from(1);
        }
        return ExitCode::SUCCESS;
    }
    if let Scenario::Liveness {
        runs,
        msgs,
        deadline_ms,
    } = &cli.scenario
    {
        return liveness(&cli, *runs, *msgs, *deadline_ms);
    }
    let print = |o: &Outcome| println!("{}", if cli.json { &o.json } else { &o.line });
    let plot_path = match &cli.scenario {
        Scenario::Reqrep { plot, .. } => plot.clone(),
        _ => None,
    };
    let result = (|| -> io::Result<()> {
        // Latency results to plot, labelled by server.
        let mut latencies: Vec<(String, reqrep::ReqRepResult)> = Vec::new();
        let mut keep = |url: &str, o: &Outcome| {
            if let Some(r) = &o.latency {
                latencies.retain(|(u, _)| !u.starts_with(url));
                latencies.push((format!("{url} ({})", r.server_version), r.clone()));
            }
        };
        match &cli.compare {
            None => {
                let o = run(&cli.scenario, &cli.url)?;
                print(&o);
                keep(&cli.url, &o);
            }
            Some(other) => {
                let rounds = cli.rounds.max(1);
                let bar = indicatif::ProgressBar::new(2 * rounds as u64);
                if cli.json {
                    bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
                }
                let (mut a, mut b) = (Vec::new(), Vec::new());
                let mut name = "";
                for round in 0..rounds {
                    // Which server goes first alternates (A B, B A, ...): the
                    // first run of a round was measured 5-13 % slower here,
                    // whichever server it was (same binary on both ports
                    // too), which a fixed order charges to one server.
                    let one = |url: &str| -> io::Result<Outcome> {
                        let o = run(&cli.scenario, url)?;
                        bar.suspend(|| print(&o));
                        bar.inc(1);
                        Ok(o)
                    };
                    let (oa, ob) = if round % 2 == 0 {
                        let oa = one(&cli.url)?;
                        (oa, one(other)?)
                    } else {
                        let ob = one(other)?;
                        (one(&cli.url)?, ob)
                    };
                    keep(&cli.url, &oa);
                    keep(other, &ob);
                    name = oa.primary_name;
                    a.push(oa.primary);
                    b.push(ob.primary);
                }
                bar.finish_and_clear();
                let (ma, mb) = (median(a), median(b));
                if !cli.json {
                    println!(
                        "compare: {name} median {ma:.0} ({}) vs {mb:.0} ({other}): {:.2}x",
                        cli.url,
                        ma / mb
                    );
                }
            }
        }
        if let Some(path) = &plot_path {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            reqrep::plot(
                &latencies,
                path,
                &format!("request-reply latency ({cpus} CPUs)"),
            )?;
            eprintln!("wrote {path}");
        }
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shoal-bench: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Result<shoal_bench::plan::PlanParams, String> {
        let cli = Cli::try_parse_from(line.split_whitespace()).map_err(|e| e.to_string())?;
        let Scenario::Plan(a) = &cli.scenario else {
            panic!("not plan")
        };
        plan_params(a, &cli.url, cli.compare.as_deref(), "cmd".into())
    }

    #[test]
    fn plan_flags_make_the_workload() {
        let p = args(
            "b --url nats://a:1 --compare nats://b:2 plan --rate 500 --size 64 --p99-ms 2.5 \
             --responders 3 --requesters 2 --events-rate 900 --events-size 32 --fanout 4",
        )
        .unwrap();
        assert_eq!(p.urls, ["nats://a:1", "nats://b:2"]);
        let r = &p.workload.rpc[0];
        assert_eq!(
            (r.rate, r.size, r.p99_ms, r.responders, r.requesters),
            (500.0, 64, Some(2.5), 3, 2)
        );
        let e = &p.workload.events[0];
        assert_eq!(
            (e.rate, e.size, e.fanout, e.queue),
            (900.0, 32, Some(4), None)
        );
        // The p99.9 objective and a queue group instead of fan-out.
        let p = args("b plan --rate 10 --p999-ms 9 --events-rate 5 --queue 3").unwrap();
        assert_eq!(p.workload.rpc[0].p999_ms, Some(9.0));
        assert_eq!(p.workload.events[0].queue, Some(3));
        // Events alone take the objective flags.
        let p = args("b plan --events-rate 5 --p99-ms 7").unwrap();
        assert!(p.workload.rpc.is_empty());
        assert_eq!(p.workload.events[0].p99_ms, Some(7.0));
    }

    #[test]
    fn plan_schedule_and_sizing_flags() {
        let p = args(
            "b plan --rate 10 --p99-ms 1 --loads 0.5,1,2 --start 0.1 --growth 3 --max-factor 9 \
             --refine 4 --max-steps 7 --repeats 5 --step-secs 1.5 --drain-ms 300 --stall-ms 250 \
             --server-cores 2 --server-pid 11,12 --node-cores 16 --target-util 0.5 --out /tmp/x",
        )
        .unwrap();
        let s = &p.schedule;
        assert_eq!(s.loads.as_deref(), Some(&[0.5, 1.0, 2.0][..]));
        assert_eq!((s.start, s.growth, s.max_factor), (0.1, 3.0, 9.0));
        assert_eq!((s.refine, s.max_steps, s.repeats), (4, 7, 5));
        assert_eq!((s.step_secs, s.drain_ms, s.stall_ms), (1.5, 300, 250));
        assert_eq!(p.server_cores, Some(2.0));
        assert_eq!(p.server_pids, [11, 12]);
        assert_eq!((p.node_cores, p.target_util), (Some(16), 0.5));
        assert!(p.workers.is_empty());
        let p = args("b plan --rate 10 --p99-ms 1 --workers 127.0.0.1:1,h:2").unwrap();
        assert_eq!(p.workers, ["127.0.0.1:1", "h:2"]);
        let cli = Cli::try_parse_from([
            "b", "plan", "--rate", "1", "--p99-ms", "1", "--out", "/tmp/x",
        ])
        .unwrap();
        let Scenario::Plan(a) = cli.scenario else {
            panic!()
        };
        assert_eq!(a.out, "/tmp/x");
        // Defaults: a search from 0.25× doubling, 3 runs of 5 s.
        let p = args("b plan --rate 10 --p99-ms 1").unwrap();
        assert_eq!(p.schedule.loads, None);
        assert_eq!(
            (p.schedule.start, p.schedule.repeats, p.schedule.step_secs),
            (0.25, 3, 5.0)
        );
    }

    #[test]
    fn plan_workload_file_and_refusals() {
        let path = std::env::temp_dir().join(format!("plan-w-{}.toml", std::process::id()));
        std::fs::write(&path, "[[rpc]]\nname='x'\nrate=5\np99_ms=1\n").unwrap();
        let p = args(&format!("b plan --workload {}", path.display())).unwrap();
        assert_eq!(p.workload.rpc[0].name, "x");
        let both = args(&format!("b plan --workload {} --rate 5", path.display()));
        assert!(both.unwrap_err().contains("not both"));
        let _ = std::fs::remove_file(&path);
        for (line, want) in [
            ("b plan", "--workload FILE, or --rate"),
            ("b plan --rate 5", "p99_ms or p999_ms"),
            (
                "b plan --rate 5 --p99-ms 1 --growth 1",
                "--growth must be more than 1",
            ),
            (
                "b plan --rate 5 --p99-ms 1 --target-util 1.5",
                "--target-util",
            ),
            (
                "b plan --rate 5 --p99-ms 1 --loads 1,0",
                "--loads must be positive",
            ),
            (
                "b plan --rate 5 --p99-ms 1 --step-secs 0",
                "--step-secs must be positive",
            ),
            ("b plan --workload /nonexistent.toml", "/nonexistent.toml"),
        ] {
            let e = args(line).unwrap_err();
            assert!(e.contains(want), "{line}: {e}");
        }
    }
}
