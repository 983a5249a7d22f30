//! `shoal-bench plan`: steps a workload's offered load open loop from low to
//! the knee (where an objective breaks, messages are lost or the server
//! stalls), repeats each step, and turns the highest sustainable load into
//! headroom, per-core capacity, and the cores and nodes the stated load needs.
//!
//! The pure parts (judging a step, finding the knee, choosing the next
//! load, sizing) are functions of plain data, tested here; `step` runs the
//! traffic; `report` and `charts` write what a planner keeps.

pub mod charts;
pub mod machine;
pub mod report;
pub mod step;
pub mod worker;
pub mod workload;

use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::Duration;
use workload::{Objective, Workload};

/// How loads are chosen and each step is run.
#[derive(Debug, Clone, Serialize)]
pub struct Schedule {
    /// Explicit loads (× the stated load), run in this order; else a search.
    pub loads: Option<Vec<f64>>,
    /// The search's first load (× stated).
    pub start: f64,
    /// Each load is the previous × this until one fails.
    pub growth: f64,
    /// Never offer more than this × stated.
    pub max_factor: f64,
    /// Bisections between the last passing and first failing load.
    pub refine: usize,
    /// Loads tried at most.
    pub max_steps: usize,
    /// Runs of each load; a load passes only if no run lost, stalled or
    /// erred and all runs merged meet the objectives.
    pub repeats: usize,
    pub step_secs: f64,
    pub drain_ms: u64,
    pub stall_ms: u64,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            loads: None,
            start: 0.25,
            growth: 2.0,
            max_factor: 64.0,
            refine: 2,
            max_steps: 12,
            repeats: 3,
            step_secs: 5.0,
            drain_ms: 2000,
            stall_ms: 1000,
        }
    }
}

/// The next load to try given `(factor, passed)` of the loads tried so far,
/// or `None` when the knee is found (to `refine` bisections) or the limits
/// are reached.
pub fn next_factor(done: &[(f64, bool)], s: &Schedule) -> Option<f64> {
    if done.len() >= s.max_steps {
        return None;
    }
    if let Some(loads) = &s.loads {
        return loads.get(done.len()).copied();
    }
    let lowest_fail = done
        .iter()
        .filter(|d| !d.1)
        .map(|d| d.0)
        .min_by(f64::total_cmp);
    let highest_pass_below = |limit: f64| {
        done.iter()
            .filter(|d| d.1 && d.0 < limit)
            .map(|d| d.0)
            .max_by(f64::total_cmp)
    };
    match lowest_fail {
        None => {
            let last = done.iter().map(|d| d.0).max_by(f64::total_cmp);
            match last {
                None => Some(s.start),
                Some(l) if l * s.growth <= s.max_factor * (1.0 + 1e-9) => Some(l * s.growth),
                Some(_) => None,
            }
        }
        Some(fail) => match highest_pass_below(fail) {
            // Even the lowest load failed: go lower, down to 1/64 of start.
            None => {
                let lower = fail / s.growth;
                (lower >= s.start / 64.0).then_some(lower)
            }
            Some(pass) => {
                let bisections = done.len() - search_steps(done, s);
                let mid = (pass + fail) / 2.0;
                (bisections < s.refine && (fail - pass) / pass > 0.05).then_some(mid)
            }
        },
    }
}

/// How many of the loads tried were the geometric search (start × growth^k
/// up to the first failure, or below it), the rest being bisections.
fn search_steps(done: &[(f64, bool)], s: &Schedule) -> usize {
    done.iter()
        .filter(|d| {
            let k = (d.0 / s.start).ln() / s.growth.ln();
            (k - k.round()).abs() < 1e-6
        })
        .count()
}

/// The knee: the highest load that passed below the lowest that failed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Knee {
    /// Highest sustainable load (× stated); `None` if nothing passed.
    pub max_factor: Option<f64>,
    /// Lowest load that failed; `None` if none did (then `max_factor` is
    /// only a lower bound).
    pub first_fail: Option<f64>,
}

impl Knee {
    pub fn reached(&self) -> bool {
        self.first_fail.is_some()
    }
}

pub fn knee(done: &[(f64, bool)]) -> Knee {
    let first_fail = done
        .iter()
        .filter(|d| !d.1)
        .map(|d| d.0)
        .min_by(f64::total_cmp);
    let max_factor = done
        .iter()
        .filter(|d| d.1 && first_fail.is_none_or(|f| d.0 < f))
        .map(|d| d.0)
        .max_by(f64::total_cmp);
    Knee {
        max_factor,
        first_fail,
    }
}

/// Headroom and the cores and nodes the stated load needs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sizing {
    /// Cores the server had when measured.
    pub server_cores: f64,
    /// Highest sustainable load (× stated).
    pub max_factor: f64,
    /// The stated load as a share of that, in percent.
    pub used_pct: f64,
    /// How much the stated load can grow before the knee, in percent.
    pub headroom_pct: f64,
    /// Sustainable load per core (× stated).
    pub per_core_factor: f64,
    /// Planned utilisation: cores are sized so the stated load is this
    /// fraction of their measured capacity.
    pub target_util: f64,
    pub cores_needed: u64,
    pub node_cores: u64,
    pub nodes_needed: u64,
}

/// Sizing from the measured knee, assuming capacity scales linearly with
/// cores (the report says so).
pub fn sizing(max_factor: f64, server_cores: f64, node_cores: u64, target_util: f64) -> Sizing {
    let per_core_factor = max_factor / server_cores;
    let cores_needed = (1.0 / (per_core_factor * target_util) - 1e-9)
        .ceil()
        .max(1.0) as u64;
    let node_cores = node_cores.max(1);
    Sizing {
        server_cores,
        max_factor,
        used_pct: 100.0 / max_factor,
        headroom_pct: (max_factor - 1.0) * 100.0,
        per_core_factor,
        target_util,
        cores_needed,
        node_cores,
        nodes_needed: cores_needed.div_ceil(node_cores),
    }
}

/// Latency figures of a histogram (µs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Quantiles {
    pub count: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Quantiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Quantiles::default();
        }
        let q = |x| h.value_at_quantile(x) as f64;
        Quantiles {
            count: h.len(),
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: h.max() as f64,
        }
    }

    pub fn at(&self, quantile: f64) -> f64 {
        if quantile >= 0.999 {
            self.p999_us
        } else {
            self.p99_us
        }
    }
}

/// One second of a run: messages that arrived in it and their latency.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub second: usize,
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
}

pub fn intervals(series: &[Histogram<u64>]) -> Vec<Interval> {
    series
        .iter()
        .enumerate()
        .map(|(second, h)| Interval {
            second,
            count: h.len(),
            p50_us: if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(0.5) as f64
            },
            p99_us: if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(0.99) as f64
            },
        })
        .collect()
}

/// One class in one run of a step, as kept.
#[derive(Debug, Clone, Serialize)]
pub struct ClassRepeat {
    pub sent: u64,
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub latency: Quantiles,
    pub send_lag_p99_us: f64,
    pub stalls: Vec<step::Stall>,
    pub errors: Vec<String>,
    pub series: Vec<Interval>,
    /// Why this run failed the class (empty: it passed).
    pub failures: Vec<String>,
    /// Lost, stalled, errors or nothing sent: fails the load whatever the
    /// other runs did. (An objective missed in one run does not; the
    /// merged runs decide, `ClassStep::passed`.)
    #[serde(skip)]
    pub hard_failure: bool,
    /// With `--workers`: each worker's part (the counts above are their
    /// sums, the latency their merged histograms).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<worker::WorkerCounts>,
}

/// Why a class failed one run: objective, loss, stalls, errors. Empty when
/// it passed.
pub fn judge(r: &step::ClassRun, objective: Option<Objective>) -> Vec<String> {
    let mut why = Vec::new();
    for e in &r.errors {
        why.push(e.clone());
    }
    for s in &r.stalls {
        why.push(if s.resumed {
            format!(
                "stall: nothing arrived for {:.2} s from {:.1} s into the step",
                s.secs, s.at_s
            )
        } else {
            format!(
                "stall: nothing arrived from {:.1} s into the step until it gave up {:.2} s later",
                s.at_s, s.secs
            )
        });
    }
    if r.lost() > 0 {
        why.push(format!("lost {} of {} messages", r.lost(), r.expected));
    }
    if r.sent == 0 {
        why.push("nothing was sent".into());
    }
    if let Some(o) = objective {
        if !r.hist.is_empty() {
            let got = r.quantile_us(o.quantile);
            if got > o.max_us {
                why.push(format!(
                    "{} {} over the objective {}",
                    workload::quantile_name(o.quantile),
                    workload::fmt_us(got),
                    workload::fmt_us(o.max_us)
                ));
            }
        }
    }
    why
}

/// A class across the runs of one step.
#[derive(Debug, Clone, Serialize)]
pub struct ClassStep {
    pub name: String,
    pub kind: &'static str,
    pub offered_rate: f64,
    pub objective: Option<Objective>,
    /// All runs' latencies merged (exactly: HDR histograms add).
    pub latency: Quantiles,
    /// The objective's quantile in each run, for the spread.
    pub objective_quantile_us: Vec<f64>,
    pub repeats: Vec<ClassRepeat>,
    /// No run lost a message, stalled or erred, and the objective's quantile
    /// of all runs merged meets it. One run's quantile over a few seconds
    /// swings with the machine (measured here: p99 5.03-5.16 ms in one run
    /// against 3.2-4.2 ms merged, at loads a run four minutes earlier passed
    /// 64 times over), so a single run's tail no longer sets the knee; the
    /// per-run quantiles are reported as the spread.
    pub passed: bool,
    /// Why the merged runs missed the objective.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged_failure: Option<String>,
    /// Generator lag (µs, p99 over runs): when it nears the objective the
    /// tool, not the server, is the limit.
    pub send_lag_p99_us: f64,
    #[serde(skip)]
    pub hist: Histogram<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    pub index: usize,
    pub factor: f64,
    /// When the step began (ms since 1970): with `--compare` the steps of
    /// the two servers alternate, and this shows it.
    pub started_unix_ms: f64,
    /// Messages/s the clients sent (requests and publishes).
    pub offered_msgs_per_sec: f64,
    /// Messages/s through the server (in + out).
    pub server_msgs_per_sec: f64,
    pub classes: Vec<ClassStep>,
    /// A run that could not start (the server did not accept connections).
    pub setup_errors: Vec<String>,
    /// Runs thrown away and run again because the load generator itself
    /// was late (at most `repeats` per load; past that a late run counts).
    pub discarded: Vec<String>,
    /// A load-generating worker failed (unreachable, disconnected, silent):
    /// the generator's failure, so the load is counted neither for nor
    /// against the server, and stepping stops.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_failure: Option<String>,
    pub passed: bool,
}

/// Who answered: from INFO.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServerId {
    pub url: String,
    pub server_name: String,
    pub version: String,
    pub shoal_version: Option<String>,
}

impl ServerId {
    /// `shoal 0.1.0` or `nats-server 2.9.10`.
    pub fn label(&self) -> String {
        match &self.shoal_version {
            Some(v) => format!("shoal {v}"),
            None => format!("nats-server {}", self.version),
        }
    }

    /// For file names: `shoal-0.1.0`.
    pub fn slug(&self) -> String {
        self.label()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerPlan {
    pub server: ServerId,
    /// Where the server's cores figure came from.
    pub cores_source: String,
    pub steps: Vec<StepResult>,
    pub knee: Knee,
    pub sizing: Option<Sizing>,
    /// Why stepping stopped early, if it did.
    pub stopped: Option<String>,
}

impl ServerPlan {
    pub fn stalls(&self) -> Vec<(usize, f64, String, step::Stall)> {
        let mut out = Vec::new();
        for s in &self.steps {
            for c in &s.classes {
                for r in &c.repeats {
                    for st in &r.stalls {
                        out.push((s.index, s.factor, c.name.clone(), *st));
                    }
                }
            }
        }
        out
    }
}

/// Everything a plan measured, with what it ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub tool: String,
    pub started_unix: u64,
    pub command: String,
    pub machine: machine::Machine,
    pub workload: Workload,
    pub schedule: Schedule,
    pub target_util: f64,
    /// Workers that generated the load (`host:port` and their tool
    /// version); empty when this process did it alone.
    pub workers: Vec<String>,
    /// Every step in the order run: with `--compare`, server A's step k,
    /// then B's step k, then A's step k+1, so drift of the machine over the
    /// plan hits both servers alike.
    pub order: Vec<StepRef>,
    pub servers: Vec<ServerPlan>,
}

/// One step of one server, in the order run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StepRef {
    /// Index into `servers`.
    pub server: usize,
    pub url: String,
    /// The step's `index` within its server.
    pub step: usize,
    pub factor: f64,
}

/// What the caller decides besides the workload.
#[derive(Debug, Clone)]
pub struct PlanParams {
    pub urls: Vec<String>,
    pub workload: Workload,
    pub schedule: Schedule,
    /// Cores the server may use, per URL (else `server_pids` affinity,
    /// else every core of this machine).
    pub server_cores: Option<f64>,
    pub server_pids: Vec<u32>,
    pub node_cores: Option<u64>,
    pub target_util: f64,
    pub command: String,
    /// `host:port` of `shoal-bench worker`s to generate the load; empty:
    /// this process generates it.
    pub workers: Vec<String>,
}

/// Progress lines as the plan goes.
pub type Progress<'a> = &'a dyn Fn(&str);

/// Runs one load: `repeats` runs, each class judged in each.
pub fn run_step(
    w: &Workload,
    url: &str,
    index: usize,
    factor: f64,
    s: &Schedule,
    workers: &[String],
    progress: Progress,
) -> StepResult {
    let started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    let mut classes: Vec<ClassStep> = Vec::new();
    let mut setup_errors = Vec::new();
    let mut worker_failure = None;
    let mut discarded: Vec<String> = Vec::new();
    let mut rep = 0;
    while rep < s.repeats.max(1) {
        let cfg = step::StepConfig {
            url: url.into(),
            factor,
            secs: s.step_secs,
            drain: Duration::from_millis(s.drain_ms),
            stall: Duration::from_millis(s.stall_ms),
            tag: format!("{}.{index}.{rep}", std::process::id()),
        };
        let outcome = if workers.is_empty() {
            step::run(w, &cfg).map_err(worker::RunError::Setup)
        } else {
            worker::run(workers, w, &cfg)
        };
        match outcome {
            Err(worker::RunError::Worker(e)) => {
                progress(&format!("  run {}: a worker failed: {e}", rep + 1));
                worker_failure = Some(e);
                break;
            }
            Err(worker::RunError::Setup(e)) => {
                progress(&format!("  run {}: could not start: {e}", rep + 1));
                setup_errors.push(e);
                // The server is not taking connections; more runs of
                // this load tell nothing new.
                break;
            }
            Ok(run) if discarded.len() < s.repeats.max(1) && generator_late(w, &run).is_some() => {
                let why = generator_late(w, &run).expect("checked");
                progress(&format!("  run {}: discarded, run again: {why}", rep + 1));
                discarded.push(why);
                continue;
            }
            Ok(run) => {
                let mut line = format!("  run {}:", rep + 1);
                for r in run.classes {
                    let objective = w
                        .rpc
                        .iter()
                        .find(|c| c.name == r.name)
                        .and_then(|c| c.objective())
                        .or_else(|| {
                            w.events
                                .iter()
                                .find(|c| c.name == r.name)
                                .and_then(|c| c.objective())
                        });
                    let failures = judge(&r, objective);
                    let hard_failure = !judge(&r, None).is_empty();
                    let lat = Quantiles::of(&r.hist);
                    line.push_str(&format!(
                        " {} p99 {} ({})",
                        r.name,
                        workload::fmt_us(lat.p99_us),
                        if failures.is_empty() {
                            "ok".to_string()
                        } else {
                            failures.join("; ")
                        }
                    ));
                    let kept = ClassRepeat {
                        sent: r.sent,
                        expected: r.expected,
                        received: r.received,
                        lost: r.lost(),
                        latency: lat,
                        send_lag_p99_us: r.send_lag.value_at_quantile(0.99) as f64,
                        stalls: r.stalls.clone(),
                        errors: r.errors.clone(),
                        series: intervals(&r.series),
                        failures,
                        hard_failure,
                        workers: r.per_worker.clone(),
                    };
                    match classes.iter_mut().find(|c| c.name == r.name) {
                        Some(c) => {
                            c.hist.add(&r.hist).expect("same bounds");
                            c.repeats.push(kept);
                        }
                        None => classes.push(ClassStep {
                            name: r.name.clone(),
                            kind: r.kind,
                            offered_rate: r.offered_rate,
                            objective,
                            latency: Quantiles::default(),
                            objective_quantile_us: Vec::new(),
                            merged_failure: None,
                            repeats: vec![kept],
                            passed: false,
                            send_lag_p99_us: 0.0,
                            hist: r.hist.clone(),
                        }),
                    }
                }
                progress(&line);
            }
        }
        rep += 1;
    }
    for c in &mut classes {
        c.latency = Quantiles::of(&c.hist);
        let q = c.objective.map_or(0.99, |o| o.quantile);
        c.objective_quantile_us = c.repeats.iter().map(|r| r.latency.at(q)).collect();
        decide(c);
        c.send_lag_p99_us = c
            .repeats
            .iter()
            .map(|r| r.send_lag_p99_us)
            .fold(0.0, f64::max);
    }
    let passed = setup_errors.is_empty()
        && worker_failure.is_none()
        && !classes.is_empty()
        && classes.iter().all(|c| c.passed);
    StepResult {
        index,
        factor,
        started_unix_ms,
        offered_msgs_per_sec: w.offered(factor),
        server_msgs_per_sec: w.server_msgs(factor),
        classes,
        setup_errors,
        discarded,
        worker_failure,
        passed,
    }
}

/// A class passes a load when no run lost a message, stalled or erred and
/// its runs merged (`c.latency`) meet the objective.
fn decide(c: &mut ClassStep) {
    c.merged_failure = c.objective.and_then(|o| {
        let got = c.latency.at(o.quantile);
        (got > o.max_us).then(|| {
            format!(
                "{} {} over the objective {} (all runs merged)",
                workload::quantile_name(o.quantile),
                workload::fmt_us(got),
                workload::fmt_us(o.max_us)
            )
        })
    });
    c.passed = c.merged_failure.is_none() && c.repeats.iter().all(|r| !r.hard_failure);
}

/// Whether the load generator itself was too late for a run to say
/// anything about the server: a class with an objective failed it while
/// the senders' p99 lag was over half the objective (this machine was out
/// of CPU for the generator). Says which class and how late.
pub fn generator_late(w: &Workload, run: &step::StepRun) -> Option<String> {
    run.classes.iter().find_map(|r| {
        let o = w
            .rpc
            .iter()
            .find(|c| c.name == r.name)
            .and_then(|c| c.objective())
            .or_else(|| w.events.iter().find(|c| c.name == r.name).and_then(|c| c.objective()))?;
        let lag = r.send_lag.value_at_quantile(0.99) as f64;
        let failed = !r.hist.is_empty() && r.quantile_us(o.quantile) > o.max_us;
        (failed && lag > o.max_us / 2.0).then(|| {
            format!(
                "`{}` missed its objective while the load generator sent {} late (p99 lag), over half the objective",
                r.name,
                workload::fmt_us(lag)
            )
        })
    })
}

/// One server's plan in progress: the steps run so far and the search's
/// state, so the steps of two servers can alternate.
pub struct ServerRun {
    server: ServerId,
    cores: f64,
    cores_source: String,
    steps: Vec<StepResult>,
    done: Vec<(f64, bool)>,
    stopped: Option<String>,
}

impl ServerRun {
    /// Asks the server who it is and where its cores figure comes from.
    pub fn start(p: &PlanParams, url: &str, pid: Option<u32>) -> Result<ServerRun, String> {
        let info = step::server_info(url)?;
        let (cores, cores_source) = machine::server_cores(p.server_cores, pid);
        Ok(ServerRun {
            server: ServerId {
                url: url.into(),
                server_name: info.server_name.clone(),
                version: info.version.clone(),
                shoal_version: info.shoal_version.clone(),
            },
            cores,
            cores_source,
            steps: Vec::new(),
            done: Vec::new(),
            stopped: None,
        })
    }

    /// Runs this server's next load, if the search has one; returns the
    /// step's reference, or `None` when this server is done.
    pub fn step(&mut self, p: &PlanParams, label: &str, progress: Progress) -> Option<StepRef> {
        if self.stopped.is_some() {
            return None;
        }
        let factor = next_factor(&self.done, &p.schedule)?;
        let url = self.server.url.clone();
        let index = self.steps.len() + 1;
        progress(&format!(
            "{label}step {index}: {factor:.3}× stated load, {:.0} msgs/s offered",
            p.workload.offered(factor)
        ));
        let r = run_step(
            &p.workload,
            &url,
            index,
            factor,
            &p.schedule,
            &p.workers,
            progress,
        );
        if let Some(e) = &r.worker_failure {
            // Not the server's result: neither a pass nor a failure.
            self.stopped = Some(format!(
                "a load-generating worker failed ({e}); stepping stopped, and this load counts neither for nor against the server"
            ));
        } else {
            self.done.push((factor, r.passed));
        }
        let refused = !r.setup_errors.is_empty() && r.classes.is_empty();
        self.steps.push(r);
        let n = self.steps.len();
        if self.stopped.is_none() && refused && n >= 2 && self.steps[n - 2].classes.is_empty() {
            self.stopped = Some(format!(
                "the server did not accept connections for two loads in a row ({}); stopped stepping",
                self.steps[n - 1].setup_errors.join("; ")
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
        Some(StepRef {
            server: 0,
            url,
            step: index,
            factor,
        })
    }

    /// The knee and the sizing from the steps run.
    pub fn finish(self, p: &PlanParams) -> ServerPlan {
        let k = knee(&self.done);
        let node_cores = p
            .node_cores
            .unwrap_or(machine::Machine::logical_cpus() as u64);
        let sizing = k
            .max_factor
            .map(|f| sizing(f, self.cores, node_cores, p.target_util));
        ServerPlan {
            server: self.server,
            cores_source: self.cores_source,
            steps: self.steps,
            knee: k,
            sizing,
            stopped: self.stopped,
        }
    }
}

/// Steps one server's load to the knee and sizes it.
pub fn run_server(
    p: &PlanParams,
    url: &str,
    pid: Option<u32>,
    progress: Progress,
) -> Result<ServerPlan, String> {
    let mut r = ServerRun::start(p, url, pid)?;
    progress(&format!("{} at {url}", r.server.label()));
    while r.step(p, "", progress).is_some() {}
    Ok(r.finish(p))
}

/// The whole plan. With two servers their steps alternate (A's step k, B's
/// step k, A's step k+1, ...) rather than all of A then all of B, so a
/// change of the machine over the plan (a neighbour, thermal limits) hits
/// both alike; `Plan::order` records the order.
pub fn run(p: &PlanParams, progress: Progress) -> Result<Plan, String> {
    p.workload.validate()?;
    if p.server_pids.len() > p.urls.len() {
        return Err(format!(
            "--server-pid gives {} PIDs for {} server(s)",
            p.server_pids.len(),
            p.urls.len()
        ));
    }
    for (i, pid) in p.server_pids.iter().enumerate() {
        if let Some(warning) = machine::check_server_pid(*pid, &p.urls[i])? {
            progress(&warning);
        }
    }
    let workers = if p.workers.is_empty() {
        Vec::new()
    } else {
        let tools = worker::hello(&p.workers)?;
        progress(&format!(
            "{} workers generate the load, each a 1/{} share: {}",
            p.workers.len(),
            p.workers.len(),
            p.workers.join(", ")
        ));
        p.workers
            .iter()
            .zip(tools)
            .map(|(a, t)| format!("{a} ({t})"))
            .collect()
    };
    let mut runs = Vec::new();
    for (i, url) in p.urls.iter().enumerate() {
        let r = ServerRun::start(p, url, p.server_pids.get(i).copied())?;
        progress(&format!("{} at {url}", r.server.label()));
        runs.push(r);
    }
    let many = runs.len() > 1;
    let mut order = Vec::new();
    loop {
        let mut any = false;
        for i in 0..runs.len() {
            let label = if many {
                format!("[{} {}] ", runs[i].server.label(), runs[i].server.url)
            } else {
                String::new()
            };
            if let Some(mut r) = runs[i].step(p, &label, progress) {
                r.server = i;
                order.push(r);
                any = true;
            }
            if let Some(failed) = runs[i].steps.last().and_then(|s| s.worker_failure.clone()) {
                // The generator is broken: no server's figures can be
                // trusted from here.
                for (j, other) in runs.iter_mut().enumerate() {
                    if j != i && other.stopped.is_none() {
                        other.stopped = Some(format!(
                            "stopped because a load-generating worker failed while measuring {} ({failed})",
                            p.urls[i]
                        ));
                    }
                }
            }
        }
        if !any {
            break;
        }
    }
    let servers = runs.into_iter().map(|r| r.finish(p)).collect();
    Ok(Plan {
        tool: format!("shoal-bench {}", env!("CARGO_PKG_VERSION")),
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        command: p.command.clone(),
        machine: machine::Machine::this(&p.server_pids),
        workload: p.workload.clone(),
        schedule: p.schedule.clone(),
        target_util: p.target_util,
        workers,
        order,
        servers,
    })
}

/// Whether a plan could not be trusted because a worker failed: the
/// message to exit with.
pub fn worker_failure(p: &Plan) -> Option<String> {
    p.servers
        .iter()
        .flat_map(|s| s.steps.iter())
        .find_map(|st| st.worker_failure.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(s: &Schedule, capacity: f64) -> Vec<f64> {
        let mut done = Vec::new();
        while let Some(f) = next_factor(&done, s) {
            done.push((f, f <= capacity));
        }
        done.into_iter().map(|d| d.0).collect()
    }

    #[test]
    fn search_doubles_then_bisects() {
        let s = Schedule::default(); // start 0.25, ×2, 2 bisections
        assert_eq!(walk(&s, 3.0), [0.25, 0.5, 1.0, 2.0, 4.0, 3.0, 3.5]);
        let k = knee(&[
            (0.25, true),
            (0.5, true),
            (1.0, true),
            (2.0, true),
            (4.0, false),
            (3.0, true),
            (3.5, false),
        ]);
        assert_eq!(k.max_factor, Some(3.0));
        assert_eq!(k.first_fail, Some(3.5));
        assert!(k.reached());
    }

    #[test]
    fn search_stops_at_the_ceiling_and_goes_below_the_start() {
        let s = Schedule {
            max_factor: 4.0,
            ..Schedule::default()
        };
        assert_eq!(walk(&s, 100.0), [0.25, 0.5, 1.0, 2.0, 4.0]);
        let k = knee(&[(0.25, true), (4.0, true)]);
        assert_eq!(
            k,
            Knee {
                max_factor: Some(4.0),
                first_fail: None
            }
        );
        assert!(!k.reached());
        // Everything fails: halve down to start/64, then give up.
        let all_fail = walk(&s, 0.0);
        assert_eq!(all_fail.len(), 7, "{all_fail:?}");
        assert_eq!(*all_fail.last().unwrap(), 0.25 / 64.0);
        assert_eq!(knee(&[(0.25, false), (0.125, false)]).max_factor, None);
        // Failing lowest, passing below: bisect between.
        assert_eq!(walk(&s, 0.2), [0.25, 0.125, 0.1875, 0.21875]);
    }

    #[test]
    fn explicit_loads_and_step_limit() {
        let s = Schedule {
            loads: Some(vec![1.0, 0.5, 2.0]),
            ..Schedule::default()
        };
        assert_eq!(walk(&s, 0.0), [1.0, 0.5, 2.0]);
        let s = Schedule {
            max_steps: 3,
            ..Schedule::default()
        };
        assert_eq!(walk(&s, 100.0), [0.25, 0.5, 1.0]);
    }

    #[test]
    fn a_pass_above_a_failure_is_not_capacity() {
        // Noise: 2× passed after 1× failed. The knee is below the failure.
        let k = knee(&[(0.5, true), (1.0, false), (2.0, true)]);
        assert_eq!(k.max_factor, Some(0.5));
    }

    #[test]
    fn sizing_arithmetic() {
        // Sustains 4× the stated load on 2 cores, planned at 70 %.
        let s = sizing(4.0, 2.0, 8, 0.7);
        assert_eq!(s.used_pct, 25.0);
        assert_eq!(s.headroom_pct, 300.0);
        assert_eq!(s.per_core_factor, 2.0);
        // 1 / (2 × 0.7) = 0.71 → 1 core.
        assert_eq!((s.cores_needed, s.nodes_needed), (1, 1));
        // Sustains only 0.5× on 2 cores: per core 0.25; 1/(0.25×0.7) = 5.7 → 6
        // cores, 2 nodes of 4.
        let s = sizing(0.5, 2.0, 4, 0.7);
        assert_eq!(s.headroom_pct, -50.0);
        assert_eq!((s.cores_needed, s.nodes_needed), (6, 2));
        // Exactly 4 cores at 100 %: no rounding up past it.
        assert_eq!(sizing(0.5, 2.0, 4, 1.0).cores_needed, 4);
    }

    /// Runs whose p99 each miss a 2 ms objective in one of three runs pass
    /// when the three merged meet it; a loss in any run fails the load; a
    /// merged miss fails it with the merged quantile named.
    #[test]
    fn the_merged_runs_decide_the_objective_and_any_loss_fails() {
        let objective = Some(Objective {
            quantile: 0.99,
            max_us: 2_000.0,
        });
        // Run 0: 2 % of its latencies at 3 ms (its p99 misses); runs 1-2
        // all at 1 ms: merged, under 1 % are slow.
        let hists: Vec<Histogram<u64>> = (0..3)
            .map(|i| {
                let mut h = step::histogram();
                for k in 0..1000 {
                    h.record(if i == 0 && k < 20 { 3_000 } else { 1_000 })
                        .unwrap();
                }
                h
            })
            .collect();
        let step_of = |hists: &[Histogram<u64>], lost_in: Option<usize>| {
            let mut merged = step::histogram();
            let repeats = hists
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    merged.add(h).unwrap();
                    let slow = Quantiles::of(h).at(0.99) > 2_000.0;
                    ClassRepeat {
                        sent: 1000,
                        expected: 1000,
                        received: 1000,
                        lost: u64::from(lost_in == Some(i)),
                        latency: Quantiles::of(h),
                        send_lag_p99_us: 0.0,
                        stalls: vec![],
                        errors: vec![],
                        series: vec![],
                        failures: if slow {
                            vec!["p99 over".into()]
                        } else {
                            vec![]
                        },
                        hard_failure: lost_in == Some(i),
                        workers: vec![],
                    }
                })
                .collect();
            let mut c = ClassStep {
                name: "rpc".into(),
                kind: "rpc",
                offered_rate: 1000.0,
                objective,
                latency: Quantiles::of(&merged),
                objective_quantile_us: vec![],
                repeats,
                passed: false,
                merged_failure: None,
                send_lag_p99_us: 0.0,
                hist: merged,
            };
            decide(&mut c);
            c
        };
        assert!(
            Quantiles::of(&hists[0]).at(0.99) > 2_000.0,
            "run 0 misses alone"
        );
        let c = step_of(&hists, None);
        assert!(c.passed, "{:?}", c.merged_failure);
        assert!(
            !step_of(&hists, Some(2)).passed,
            "a loss in one run fails the load"
        );
        let slow: Vec<Histogram<u64>> = (0..3).map(|_| hists[0].clone()).collect();
        let c = step_of(&slow, None);
        assert!(!c.passed);
        assert!(c
            .merged_failure
            .unwrap()
            .ends_with("over the objective 2 ms (all runs merged)"));
    }

    fn run_with(
        lost: u64,
        stalls: Vec<step::Stall>,
        p99_us: u64,
        errors: Vec<String>,
    ) -> step::ClassRun {
        let mut hist = step::histogram();
        for _ in 0..100 {
            hist.record(p99_us).unwrap();
        }
        step::ClassRun {
            name: "rpc".into(),
            kind: "rpc",
            offered_rate: 100.0,
            sent: 100,
            expected: 100,
            received: 100 - lost,
            hist,
            series: Vec::new(),
            stalls,
            errors,
            send_lag: step::histogram(),
            per_worker: Vec::new(),
        }
    }

    #[test]
    fn judging_a_run() {
        let o = Some(Objective {
            quantile: 0.99,
            max_us: 2000.0,
        });
        assert!(judge(&run_with(0, vec![], 1500, vec![]), o).is_empty());
        let slow = judge(&run_with(0, vec![], 2500, vec![]), o);
        assert_eq!(slow.len(), 1);
        assert!(
            slow[0].starts_with("p99 2.5") && slow[0].ends_with("over the objective 2 ms"),
            "{slow:?}"
        );
        assert_eq!(
            judge(&run_with(3, vec![], 10, vec![]), o),
            ["lost 3 of 100 messages"]
        );
        let stalled = judge(
            &run_with(
                0,
                vec![step::Stall {
                    at_s: 1.0,
                    secs: 2.5,
                    resumed: true,
                }],
                10,
                vec![],
            ),
            o,
        );
        assert_eq!(
            stalled,
            ["stall: nothing arrived for 2.50 s from 1.0 s into the step"]
        );
        let gone = judge(
            &run_with(
                0,
                vec![step::Stall {
                    at_s: 1.0,
                    secs: 3.0,
                    resumed: false,
                }],
                10,
                vec!["rpc requester 0: the server closed the connection".into()],
            ),
            None,
        );
        assert_eq!(gone.len(), 2);
        assert!(gone[1].contains("until it gave up"));
        // Events without an objective: only loss, stalls and errors count.
        assert!(judge(&run_with(0, vec![], 10_000_000, vec![]), None).is_empty());
    }

    #[test]
    fn a_late_generator_voids_a_failed_run() {
        let w = Workload::parse("[[rpc]]\nname='rpc'\nrate=100\np99_ms=2\n").unwrap();
        let run = |p99_us, lag_us| {
            let mut r = run_with(0, vec![], p99_us, vec![]);
            r.send_lag.record(lag_us).unwrap();
            step::StepRun {
                classes: vec![r],
                secs: 1.0,
            }
        };
        // Failed, and the generator was 1.5 ms late against a 2 ms objective.
        let why = generator_late(&w, &run(3000, 1500)).unwrap();
        assert!(
            why.contains("`rpc`") && why.contains("1.5 ms late"),
            "{why}"
        );
        // Failed with the generator on time: the server's result.
        assert_eq!(generator_late(&w, &run(3000, 200)), None);
        // Passed: nothing to void however late the generator was.
        assert_eq!(generator_late(&w, &run(1000, 1500)), None);
    }

    #[test]
    fn quantiles_and_intervals() {
        let mut h = step::histogram();
        for us in 1..=1000 {
            h.record(us).unwrap();
        }
        let q = Quantiles::of(&h);
        assert_eq!(q.count, 1000);
        assert!((q.p99_us - 990.0).abs() <= 1.0);
        assert_eq!(q.at(0.999), q.p999_us);
        assert_eq!(Quantiles::of(&step::histogram()), Quantiles::default());
        let iv = intervals(&[h, step::histogram()]);
        assert_eq!(iv[0].count, 1000);
        assert_eq!(
            iv[1],
            Interval {
                second: 1,
                count: 0,
                p50_us: 0.0,
                p99_us: 0.0
            }
        );
    }

    #[test]
    fn server_labels() {
        let mut id = ServerId {
            url: "nats://x".into(),
            server_name: "n".into(),
            version: "2.9.10".into(),
            shoal_version: None,
        };
        assert_eq!(id.label(), "nats-server 2.9.10");
        assert_eq!(id.slug(), "nats-server-2.9.10");
        id.shoal_version = Some("0.1.0".into());
        assert_eq!(id.slug(), "shoal-0.1.0");
    }
}
