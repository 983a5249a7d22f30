//! What a plan leaves behind: `plan.json` for machines, `plan.md` for
//! people, one `.hgrm` percentile distribution per step and class, and the
//! charts.

use super::workload::{fmt_us, quantile_name};
use super::{Plan, ServerPlan, StepResult};
use hdrhistogram::Histogram;
use std::fmt::Write as _;
use std::io;
use std::path::Path;

/// A histogram of microseconds in HdrHistogram's percentile distribution
/// text format (values in milliseconds, 5 ticks per half distance), which
/// HdrHistogram's plotting tools read.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if h.is_empty() {
        out.push_str("#[Mean    =        0.000, StdDeviation   =        0.000]\n");
        out.push_str("#[Max     =        0.000, Total count    =            0]\n");
        return out;
    }
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let ms = v.value_iterated_to() as f64 / 1000.0;
        let q = v.quantile_iterated_to();
        if q < 1.0 {
            let _ = writeln!(
                out,
                "{ms:12.3} {q:2.12} {total:10} {:14.2}",
                1.0 / (1.0 - q)
            );
        } else {
            let _ = writeln!(out, "{ms:12.3} {q:2.12} {total:10}");
        }
    }
    let sub_buckets = (2.0 * 10f64.powi(h.sigfig() as i32)).log2().ceil().exp2() as u64;
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0
    );
    let _ = writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64 / 1000.0,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets
    );
    out
}

fn thousands(x: f64) -> String {
    let n = x.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn factor(f: f64) -> String {
    let s = format!("{f:.3}");
    format!("{}×", s.trim_end_matches('0').trim_end_matches('.'))
}

/// The `hgrm/` file of one step and class.
pub fn hgrm_path(server: &ServerPlan, step: &StepResult, class: &str) -> String {
    format!(
        "hgrm/{}/step{:02}-{class}.hgrm",
        server.server.slug(),
        step.index
    )
}

/// The summary table's rows for one server.
fn summary_column(p: &Plan, s: &ServerPlan) -> Vec<String> {
    let w = &p.workload;
    let mut rows = Vec::new();
    match (s.knee.max_factor, &s.sizing) {
        (Some(f), Some(z)) => {
            let bound = if s.knee.reached() { "" } else { "≥ " };
            rows.push(format!(
                "{bound}{} stated: {} msgs/s offered, {} msgs/s through the server",
                factor(f),
                thousands(w.offered(f)),
                thousands(w.server_msgs(f))
            ));
            rows.push(format!(
                "{bound}{} msgs/s through the server per core ({} cores)",
                thousands(w.server_msgs(f) / z.server_cores),
                z.server_cores
            ));
            rows.push(format!("{:.0} %", z.used_pct));
            rows.push(format!("{bound}{:+.0} %", z.headroom_pct));
            rows.push(format!("{}", z.cores_needed));
            rows.push(format!("{} ({} cores each)", z.nodes_needed, z.node_cores));
        }
        _ => {
            rows.push("none: the lowest load tried already failed".into());
            for _ in 0..5 {
                rows.push("—".into());
            }
        }
    }
    rows.push(match s.knee.first_fail {
        Some(f) => {
            let step = s.steps.iter().find(|st| st.factor == f);
            let why = step.map(first_failures).unwrap_or_default();
            format!("{} ({})", factor(f), why)
        }
        None => "not reached: raise --max-factor".into(),
    });
    let stalls = s.stalls();
    rows.push(if stalls.is_empty() {
        "none".into()
    } else {
        format!("{} (see below)", stalls.len())
    });
    rows
}

/// The reasons a step failed, shortened for a table cell.
fn first_failures(s: &StepResult) -> String {
    let mut why: Vec<String> = s.setup_errors.clone();
    for c in &s.classes {
        let merged = c.merged_failure.iter();
        let hard = c
            .repeats
            .iter()
            .filter(|r| r.hard_failure)
            .flat_map(|r| r.failures.iter());
        for f in merged.chain(hard) {
            {
                let f = format!("{}: {f}", c.name);
                if !why.contains(&f) {
                    why.push(f);
                }
            }
        }
    }
    let n = why.len();
    let mut out = why.into_iter().take(2).collect::<Vec<_>>().join("; ");
    if n > 2 {
        let _ = write!(out, "; {} more", n - 2);
    }
    out.replace('|', "/")
}

/// The Markdown summary.
pub fn markdown(p: &Plan) -> String {
    let mut o = String::new();
    let w = &p.workload;
    let _ = writeln!(o, "# Capacity plan: {}\n", w.name);
    let _ = writeln!(o, "Command: `{}`  ", p.command);
    let _ = writeln!(o, "Tool: {}\n", p.tool);
    let m = &p.machine;
    let _ = writeln!(
        o,
        "Machine: {} — {} logical CPUs, kernel {}, host `{}`; load generator on CPUs {}{}.\n",
        m.cpu_model,
        m.logical_cpus,
        m.kernel,
        m.hostname,
        m.bench_cpus,
        m.server_cpus
            .iter()
            .map(|(pid, l)| format!(", server PID {pid} on CPUs {l}"))
            .collect::<String>()
    );
    let _ = writeln!(o, "Workload (the stated load, 1×):\n");
    for l in w.describe() {
        let _ = writeln!(o, "- {l}");
    }
    let s = &p.schedule;
    let _ = writeln!(
        o,
        "\nSchedule: {}; each load run {} time(s) for {} s, open loop (latency from each message's scheduled send time), {} ms drain; silence over {} ms while messages are due is a stall. A load is sustainable when no run loses a message, stalls or errs and all its runs merged meet every objective (each run's quantile is listed as the spread).\n",
        match &s.loads {
            Some(l) => format!("loads {}", l.iter().map(|f| factor(*f)).collect::<Vec<_>>().join(", ")),
            None => format!(
                "from {} ×{} up to {} until a load fails, then {} bisection(s)",
                factor(s.start), s.growth, factor(s.max_factor), s.refine
            ),
        },
        s.repeats, s.step_secs, s.drain_ms, s.stall_ms
    );
    if !p.workers.is_empty() {
        let _ = writeln!(
            o,
            "Load generated by {} workers, each running a 1/{} share of every class, started together after all were set up; their HDR histograms are added (exact), their counts summed: {}.\n",
            p.workers.len(),
            p.workers.len(),
            p.workers.join(", ")
        );
    }
    if p.servers.len() > 1 && !p.order.is_empty() {
        let _ = writeln!(
            o,
            "Steps alternated between the servers, so a change of the machine during the plan hits both alike: {}.\n",
            p.order
                .iter()
                .map(|r| format!("{}{}", (b'A' + (r.server % 26) as u8) as char, r.step))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    // Summary table: one column per server.
    let _ = writeln!(o, "## Summary\n");
    let _ = write!(o, "| |");
    for sp in &p.servers {
        let _ = write!(o, " {} |", sp.server.label());
    }
    let _ = write!(o, "\n|---|");
    for _ in &p.servers {
        let _ = write!(o, "---|");
    }
    o.push('\n');
    let labels = [
        "maximum sustainable load",
        "per core",
        "the stated load uses",
        "headroom of the stated load",
        &format!(
            "cores needed for the stated load at {:.0} % use",
            p.target_util * 100.0
        ),
        "nodes needed",
        "knee (first failing load)",
        "stalls",
    ];
    let cols: Vec<Vec<String>> = p.servers.iter().map(|sp| summary_column(p, sp)).collect();
    for (i, l) in labels.iter().enumerate() {
        let _ = write!(o, "| {l} |");
        for c in &cols {
            let _ = write!(o, " {} |", c[i]);
        }
        o.push('\n');
    }
    let _ = writeln!(
        o,
        "\nAssumptions: capacity grows linearly with cores (optimistic past a few cores: measure on the target core count before buying); the production CPU, message sizes and mix are the ones measured; clients and server shared this machine over loopback (no NIC, no cluster routes: a cluster adds route traffic this plan did not measure); cores needed keep the stated load at {:.0} % of measured capacity; nodes needed are for load only — add one for redundancy.\n",
        p.target_util * 100.0
    );
    for sp in &p.servers {
        let _ = writeln!(o, "## {} ({})\n", sp.server.label(), sp.server.url);
        let _ = writeln!(
            o,
            "INFO: server_name `{}`, version `{}`{}. Server cores: {}.\n",
            sp.server.server_name,
            sp.server.version,
            sp.server
                .shoal_version
                .as_ref()
                .map(|v| format!(", shoal_version `{v}`"))
                .unwrap_or_default(),
            sp.cores_source
        );
        if let Some(why) = &sp.stopped {
            let _ = writeln!(o, "**Stopped early:** {why}\n");
        }
        let _ = writeln!(
            o,
            "| step | load | offered msgs/s | class | p50 | p99 | p99.9 | max | objective quantile per run | lost | generator lag p99 | result |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        let mut sorted: Vec<&StepResult> = sp.steps.iter().collect();
        sorted.sort_by(|a, b| a.factor.total_cmp(&b.factor));
        for st in sorted {
            if st.classes.is_empty() {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | — | | | | | | | | could not start: {} |",
                    st.index,
                    factor(st.factor),
                    thousands(st.offered_msgs_per_sec),
                    st.setup_errors.join("; ").replace('|', "/")
                );
            }
            for c in &st.classes {
                let lost: u64 = c.repeats.iter().map(|r| r.lost).sum();
                let per_run = match c.objective {
                    Some(ob) => format!(
                        "{} {}",
                        quantile_name(ob.quantile),
                        c.objective_quantile_us
                            .iter()
                            .map(|u| fmt_us(*u))
                            .collect::<Vec<_>>()
                            .join(" / ")
                    ),
                    None => "—".into(),
                };
                let mut fails: Vec<String> = c.merged_failure.iter().cloned().collect();
                for r in c.repeats.iter().filter(|r| r.hard_failure) {
                    for f in &r.failures {
                        if !fails.contains(f) {
                            fails.push(f.clone());
                        }
                    }
                }
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    st.index,
                    factor(st.factor),
                    thousands(st.offered_msgs_per_sec),
                    c.name,
                    fmt_us(c.latency.p50_us),
                    fmt_us(c.latency.p99_us),
                    fmt_us(c.latency.p999_us),
                    fmt_us(c.latency.max_us),
                    per_run,
                    lost,
                    fmt_us(c.send_lag_p99_us),
                    if c.passed {
                        "ok".to_string()
                    } else {
                        fails.join("; ").replace('|', "/")
                    }
                );
            }
        }
        for st in &sp.steps {
            for c in &st.classes {
                if let Some(ob) = c.objective {
                    if c.send_lag_p99_us > ob.max_us / 2.0 {
                        let _ = writeln!(
                            o,
                            "\nNote: at step {} ({}) the load generator itself sent `{}` late by {} (p99), over half the objective: this machine, not only the server, set that result.",
                            st.index,
                            factor(st.factor),
                            c.name,
                            fmt_us(c.send_lag_p99_us)
                        );
                    }
                }
            }
        }
        for st in &sp.steps {
            for d in &st.discarded {
                let _ = writeln!(
                    o,
                    "\nStep {} ({}): a run was discarded and run again: {d}.",
                    st.index,
                    factor(st.factor)
                );
            }
        }
        let stalls = sp.stalls();
        if !stalls.is_empty() {
            let _ = writeln!(o, "\nStalls (each makes its load unsustainable):\n");
            for (idx, f, class, s) in stalls {
                let _ = writeln!(
                    o,
                    "- step {idx} ({}), class `{class}`: nothing arrived from {:.1} s into the step for {:.2} s{}",
                    factor(f),
                    s.at_s,
                    s.secs,
                    if s.resumed { ", then traffic resumed" } else { ", and it had not resumed when the step gave up" }
                );
            }
        }
        o.push('\n');
    }
    let _ = writeln!(o, "## Files\n");
    let _ = writeln!(
        o,
        "- `plan.json`: everything above, with per-second series (rate, p50, p99) of every run"
    );
    let _ = writeln!(o, "- `hgrm/<server>/stepNN-<class>.hgrm`: each step's latency distribution (all runs merged; ms)");
    for f in super::charts::files(p) {
        let _ = writeln!(o, "- `{f}`");
    }
    o
}

/// Writes `plan.json`, `plan.md`, the `.hgrm` files and the charts into
/// `dir`; returns the files written.
pub fn write(p: &Plan, dir: &Path) -> io::Result<Vec<String>> {
    let mut files = Vec::new();
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(p).map_err(io::Error::other)?;
    std::fs::write(dir.join("plan.json"), json)?;
    files.push("plan.json".to_string());
    for sp in &p.servers {
        for st in &sp.steps {
            for c in &st.classes {
                let rel = hgrm_path(sp, st, &c.name);
                let path = dir.join(&rel);
                std::fs::create_dir_all(path.parent().expect("in a folder"))?;
                std::fs::write(&path, hgrm(&c.hist))?;
                files.push(rel);
            }
        }
    }
    files.extend(super::charts::draw(p, dir)?);
    std::fs::write(dir.join("plan.md"), markdown(p))?;
    files.push("plan.md".to_string());
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hgrm_lists_percentiles_in_milliseconds() {
        let mut h = super::super::step::histogram();
        for us in 1..=10_000u64 {
            h.record(us).unwrap();
        }
        let t = hgrm(&h);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].contains("Value") && lines[0].contains("1/(1-Percentile)"));
        assert_eq!(lines[1], "");
        // First row: the lowest value, quantile 0.
        let first: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(first[0], "0.001");
        assert_eq!(first[2], "1");
        // Last data row: quantile 1, every value counted, no last column.
        let last = lines.iter().rev().find(|l| !l.starts_with('#')).unwrap();
        let cols: Vec<&str> = last.split_whitespace().collect();
        assert_eq!(cols.len(), 3, "{last}");
        assert_eq!(cols[1], "1.000000000000");
        assert_eq!(cols[2], "10000");
        // Median near 5 ms; max at the resolution of 3 significant digits.
        let median = lines[2..]
            .iter()
            .filter(|l| !l.starts_with('#') && l.split_whitespace().count() == 4)
            .find(|l| l.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() >= 0.5)
            .unwrap();
        let v: f64 = median.split_whitespace().next().unwrap().parse().unwrap();
        assert!((v - 5.0).abs() < 0.01, "{median}");
        assert!(
            t.contains("#[Max     =       10.007, Total count    =        10000]"),
            "{t}"
        );
        assert!(t.contains("SubBuckets     =         2048"), "{t}");
        assert!(hgrm(&super::super::step::histogram()).contains("Total count    =            0"));
    }

    #[test]
    fn numbers_for_people() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(factor(0.25), "0.25×");
        assert_eq!(factor(3.0), "3×");
    }
}
