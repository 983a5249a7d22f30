//! The plan's pictures, one SVG per chart: latency against offered load
//! (the hockey stick, with objectives and knees marked), each step's
//! percentile spectrum, and the per-second series of the whole plan.

use super::{Plan, ServerPlan};
use crate::plot::err;
use plotters::prelude::*;
use std::io;
use std::path::Path;

/// Every chart file `draw` writes, relative to the output folder.
pub fn files(p: &Plan) -> Vec<String> {
    let mut out = vec!["latency-vs-load.svg".to_string()];
    for sp in &p.servers {
        for c in classes(sp) {
            out.push(format!("{}-spectrum-{c}.svg", sp.server.slug()));
        }
        for c in classes(sp) {
            out.push(format!("{}-timeseries-{c}.svg", sp.server.slug()));
        }
    }
    out
}

fn classes(sp: &ServerPlan) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for st in &sp.steps {
        for c in &st.classes {
            if !names.contains(&c.name) {
                names.push(c.name.clone());
            }
        }
    }
    names
}

pub fn draw(p: &Plan, dir: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    let f = "latency-vs-load.svg".to_string();
    latency_vs_load(p, &dir.join(&f))?;
    out.push(f);
    for sp in &p.servers {
        for c in classes(sp) {
            let f = format!("{}-spectrum-{c}.svg", sp.server.slug());
            spectrum(sp, &c, &dir.join(&f))?;
            out.push(f);
        }
        for c in classes(sp) {
            let f = format!("{}-timeseries-{c}.svg", sp.server.slug());
            timeseries(sp, &c, &dir.join(&f))?;
            out.push(f);
        }
    }
    Ok(out)
}

/// The chart's y range (µs, log scale) covering `values` with margin.
fn y_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| *v > 0.0)
        .fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi == 0.0 {
        return 1.0..1000.0;
    }
    (lo / 2.0).max(1.0)..hi * 2.0
}

/// The objective's quantile of each class against offered load, per
/// server; the objective as a dashed line, each server's knee (highest
/// sustainable load) as a vertical line, failing loads as crosses.
pub fn latency_vs_load(p: &Plan, path: &Path) -> io::Result<()> {
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let x_max = p
        .servers
        .iter()
        .flat_map(|s| s.steps.iter().map(|st| st.offered_msgs_per_sec))
        .fold(1.0, f64::max)
        * 1.05;
    let objectives: Vec<f64> = p
        .workload
        .rpc
        .iter()
        .filter_map(|c| c.objective())
        .chain(p.workload.events.iter().filter_map(|c| c.objective()))
        .map(|o| o.max_us)
        .collect();
    let ys = y_range(
        p.servers
            .iter()
            .flat_map(|s| s.steps.iter())
            .flat_map(|st| st.classes.iter())
            .map(|c| c.latency.at(c.objective.map_or(0.99, |o| o.quantile)))
            .chain(objectives.iter().copied()),
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{}: latency vs offered load ({} CPUs)",
                p.workload.name, p.machine.logical_cpus
            ),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(75)
        .build_cartesian_2d(0.0..x_max, ys.clone().log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("offered load (msgs/s sent by clients, all classes)")
        .y_desc("latency at the objective's quantile (µs, log)")
        .draw()
        .map_err(err)?;
    let mut series = Vec::new();
    let mut fails = Vec::new();
    for sp in &p.servers {
        for name in classes(sp) {
            let mut pts: Vec<(f64, f64)> = Vec::new();
            let mut q_name = "p99";
            for st in &sp.steps {
                if let Some(c) = st.classes.iter().find(|c| c.name == name) {
                    let q = c.objective.map_or(0.99, |o| o.quantile);
                    q_name = super::workload::quantile_name(q);
                    let y = c.latency.at(q).max(ys.start);
                    pts.push((st.offered_msgs_per_sec, y));
                    if !c.passed {
                        fails.push((st.offered_msgs_per_sec, y));
                    }
                }
            }
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            series.push((format!("{} {name} {q_name}", sp.server.label()), pts));
        }
    }
    let n_series = series.len();
    crate::plot::draw_series(&mut chart, series)?;
    chart
        .draw_series(
            fails
                .into_iter()
                .map(|p| Cross::new(p, 7, RED.stroke_width(2))),
        )
        .map_err(err)?;
    for o in objectives {
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, o), (x_max, o)],
                8,
                5,
                BLACK.stroke_width(1),
            ))
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!("objective {}", super::workload::fmt_us(o)),
                (x_max * 0.01, o * 1.15),
                ("sans-serif", 14),
            )))
            .map_err(err)?;
    }
    for (i, sp) in p.servers.iter().enumerate() {
        if let Some(f) = sp.knee.max_factor {
            let x = p.workload.offered(f);
            let color = Palette99::pick(i * n_series.max(1) / p.servers.len().max(1)).to_rgba();
            chart
                .draw_series(DashedLineSeries::new(
                    [(x, ys.start), (x, ys.end)],
                    6,
                    4,
                    color.stroke_width(2),
                ))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("knee {}: {:.0}/s", sp.server.label(), x),
                    (x, ys.end / 1.6_f64.powi(i as i32 + 1)),
                    ("sans-serif", 14),
                )))
                .map_err(err)?;
        }
    }
    root.present().map_err(err)
}

/// `log10(1/(1-q))` → a percentile label: 1 → 90%, 2 → 99%, 3 → 99.9%.
pub fn nines_label(x: f64) -> String {
    let x = x.round() as i32;
    if x <= 0 {
        return "0%".into();
    }
    let pct = 100.0 - 100.0 / 10f64.powi(x);
    let s = format!("{pct:.*}", (x - 2).max(0) as usize);
    format!("{s}%")
}

/// Latency by percentile (x: 1/(1-q), log) for each step of one class.
pub fn spectrum(sp: &ServerPlan, class: &str, path: &Path) -> io::Result<()> {
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let mut steps: Vec<_> = sp.steps.iter().collect();
    steps.sort_by(|a, b| a.factor.total_cmp(&b.factor));
    for st in steps {
        let Some(c) = st.classes.iter().find(|c| c.name == class) else {
            continue;
        };
        if c.hist.is_empty() {
            continue;
        }
        let pts: Vec<(f64, f64)> = c
            .hist
            .iter_quantiles(2)
            .map(|v| (v.quantile_iterated_to(), v.value_iterated_to() as f64))
            .filter(|(q, _)| *q < 0.99999)
            .map(|(q, v)| ((1.0 / (1.0 - q)).log10(), v.max(1.0)))
            .collect();
        series.push((
            format!(
                "step {} {:.3}× {}{}",
                st.index,
                st.factor,
                c.offered_rate.round(),
                if c.passed { "/s" } else { "/s (failed)" }
            ),
            pts,
        ));
    }
    let ys = y_range(series.iter().flat_map(|s| s.1.iter().map(|p| p.1)));
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{} — {class}: latency by percentile, per step",
                sp.server.label()
            ),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(75)
        .build_cartesian_2d(0.0..5.0, ys.log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_labels(6)
        .x_label_formatter(&|x| nines_label(*x))
        .x_desc("percentile")
        .y_desc("latency (µs, log)")
        .draw()
        .map_err(err)?;
    // Lines only: the spectra are dense.
    for (i, (name, pts)) in series.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// Every run of every step of one class, one after another: p50 and p99
/// per second above, messages arrived per second below. A stall is a gap
/// in the rate; a drift, a rising p99 within a step.
pub fn timeseries(sp: &ServerPlan, class: &str, path: &Path) -> io::Result<()> {
    let root = SVGBackend::new(path, (1100, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (mut p50, mut p99, mut rate, mut starts) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut t = 0usize;
    for st in &sp.steps {
        let Some(c) = st.classes.iter().find(|c| c.name == class) else {
            continue;
        };
        starts.push((t, st.index));
        for r in &c.repeats {
            for iv in &r.series {
                let x = (t + iv.second) as f64;
                rate.push((x, iv.count as f64));
                if iv.count > 0 {
                    p50.push((x, iv.p50_us));
                    p99.push((x, iv.p99_us));
                }
            }
            t += r.series.len().max(1);
        }
    }
    let x_max = (t.max(1)) as f64;
    let (top, bottom) = root.split_vertically(400);
    let ys = y_range(p50.iter().chain(&p99).map(|p| p.1));
    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!(
                "{} — {class}: per second over the plan (steps in the order run)",
                sp.server.label()
            ),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(75)
        .build_cartesian_2d(0.0..x_max, ys.clone().log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .y_desc("latency (µs, log)")
        .draw()
        .map_err(err)?;
    for (s, _) in &starts {
        chart
            .draw_series(LineSeries::new(
                [(*s as f64, ys.start), (*s as f64, ys.end)],
                BLACK.mix(0.25),
            ))
            .map_err(err)?;
    }
    for (s, idx) in &starts {
        chart
            .draw_series(std::iter::once(Text::new(
                format!("step {idx}"),
                (*s as f64 + 0.2, ys.end / 1.5),
                ("sans-serif", 12),
            )))
            .map_err(err)?;
    }
    crate::plot::draw_series(&mut chart, vec![("p50".into(), p50), ("p99".into(), p99)])?;
    let r_max = rate.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&bottom)
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(75)
        .build_cartesian_2d(0.0..x_max, 0.0..r_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds of measurement")
        .y_desc("arrived msgs/s")
        .draw()
        .map_err(err)?;
    crate::plot::draw_series(&mut chart, vec![("rate".into(), rate)])?;
    root.present().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis_labels() {
        assert_eq!(nines_label(0.0), "0%");
        assert_eq!(nines_label(1.0), "90%");
        assert_eq!(nines_label(2.0), "99%");
        assert_eq!(nines_label(3.0), "99.9%");
        assert_eq!(nines_label(4.0), "99.99%");
    }

    #[test]
    fn y_range_has_margin_and_a_default() {
        assert_eq!(y_range([100.0, 1000.0].into_iter()), 50.0..2000.0);
        assert_eq!(y_range([0.0].into_iter()), 1.0..1000.0);
        assert_eq!(y_range([1.0].into_iter()), 1.0..2.0);
    }
}
