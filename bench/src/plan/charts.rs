//! The plan's pictures, one SVG per chart: latency against offered load
//! (the hockey stick, with objectives and knees marked), each step's
//! percentile spectrum, and the per-second series of the whole plan.

use super::{Plan, ServerPlan};
use crate::plot::err;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
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

/// Estimated width in pixels of `text` drawn at plotters font size
/// `size`. The SVG gets `size / 1.24` as its font-size and the viewer
/// picks the font, so this is deliberately generous: 0.65 em a character
/// is wider than the average of DejaVu Sans and Arial (digits are 0.64
/// and 0.56 em).
pub fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * 0.65 * size / 1.24
}

/// `text` cut (with "…") so it is at most `width` pixels at `size`.
pub fn fit(text: &str, size: f64, width: f64) -> String {
    if text_width(text, size) <= width {
        return text.to_string();
    }
    let per = 0.65 * size / 1.24;
    let keep = ((width / per).floor() as usize).saturating_sub(1);
    let mut out: String = text.chars().take(keep).collect();
    out.push('…');
    out
}

/// One legend line: a colour sample (solid or dashed) and its label.
pub struct LegendEntry {
    pub label: String,
    pub color: RGBAColor,
    pub dashed: bool,
}

const TITLE_SIZE: f64 = 20.0;
const LEGEND_SIZE: f64 = 14.0;
const LABEL_SIZE: f64 = 12.0;
const LEGEND_ROW: i32 = 20;
const SAMPLE_W: i32 = 24;

/// Width of the legend column for these entries: the widest label, within
/// 15-40 % of the chart (longer labels are cut to fit).
pub fn legend_width(entries: &[LegendEntry], total: u32) -> u32 {
    let widest = entries
        .iter()
        .map(|e| text_width(&e.label, LEGEND_SIZE))
        .fold(0.0, f64::max);
    let want = widest + f64::from(SAMPLE_W) + 30.0;
    want.clamp(total as f64 * 0.15, total as f64 * 0.4) as u32
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// A chart's frame: the title across the top (cut to fit), the legend in
/// its own column on the right, and the area left for the plot. The legend
/// sits outside the plot so it can cover no line and no other label.
fn frame<'a>(
    path: &'a Path,
    size: (u32, u32),
    title: &str,
    legend: &[LegendEntry],
) -> io::Result<(Area<'a>, Area<'a>)> {
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (top, body) = root.split_vertically(40);
    let style = TextStyle::from(("sans-serif", TITLE_SIZE).into_font())
        .pos(Pos::new(HPos::Center, VPos::Center));
    top.draw(&Text::new(
        fit(title, TITLE_SIZE, f64::from(size.0) - 20.0),
        (size.0 as i32 / 2, 22),
        style,
    ))
    .map_err(err)?;
    let lw = legend_width(legend, size.0);
    let (plot, panel) = body.split_horizontally(size.0 - lw);
    draw_legend(&panel, legend, lw)?;
    Ok((root, plot))
}

/// The legend column: one row per entry from the top, with a frame; rows
/// that do not fit become "… N more".
fn draw_legend(panel: &Area<'_>, entries: &[LegendEntry], width: u32) -> io::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let (_, h) = panel.dim_in_pixel();
    let rows_fit = ((h as i32 - 40) / LEGEND_ROW).max(1) as usize;
    let shown = if entries.len() > rows_fit {
        rows_fit - 1
    } else {
        entries.len()
    };
    let rows = shown + usize::from(shown < entries.len());
    let (x0, y0) = (8, 15);
    panel
        .draw(&Rectangle::new(
            [
                (x0, y0),
                (width as i32 - 8, y0 + 10 + rows as i32 * LEGEND_ROW),
            ],
            BLACK.mix(0.6),
        ))
        .map_err(err)?;
    let text_x = x0 + 8 + SAMPLE_W + 6;
    let room = f64::from(width as i32 - 8 - text_x - 4);
    let style = TextStyle::from(("sans-serif", LEGEND_SIZE).into_font())
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (i, e) in entries.iter().take(shown).enumerate() {
        let y = y0 + 5 + LEGEND_ROW / 2 + i as i32 * LEGEND_ROW;
        let sx = x0 + 8;
        if e.dashed {
            for k in 0..3 {
                let a = sx + k * 9;
                panel
                    .draw(&Rectangle::new(
                        [(a, y - 1), (a + 5, y + 1)],
                        e.color.filled(),
                    ))
                    .map_err(err)?;
            }
        } else {
            panel
                .draw(&Rectangle::new(
                    [(sx, y - 1), (sx + SAMPLE_W, y + 1)],
                    e.color.filled(),
                ))
                .map_err(err)?;
        }
        panel
            .draw(&Text::new(
                fit(&e.label, LEGEND_SIZE, room),
                (text_x, y),
                style.clone(),
            ))
            .map_err(err)?;
    }
    if shown < entries.len() {
        let y = y0 + 5 + LEGEND_ROW / 2 + shown as i32 * LEGEND_ROW;
        panel
            .draw(&Text::new(
                format!("… {} more", entries.len() - shown),
                (text_x, y),
                style,
            ))
            .map_err(err)?;
    }
    Ok(())
}

/// Series as lines (with dots when `dots`), each in its palette colour;
/// their legend entries.
fn draw_lines<'a, CT>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    series: Vec<(String, Vec<(f64, f64)>)>,
    dots: bool,
    first_colour: usize,
) -> io::Result<()>
where
    CT: plotters::coord::CoordTranslate<From = (f64, f64)>,
{
    for (i, (_, pts)) in series.into_iter().enumerate() {
        let color = Palette99::pick(first_colour + i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(err)?;
        if dots {
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))
                .map_err(err)?;
        }
    }
    Ok(())
}

fn entries(names: &[String], first_colour: usize) -> Vec<LegendEntry> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| LegendEntry {
            label: n.clone(),
            color: Palette99::pick(first_colour + i).to_rgba(),
            dashed: false,
        })
        .collect()
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
/// server; each objective as a dashed black line, each server's knee
/// (highest sustainable load) as a dashed vertical line, failing loads as
/// red crosses. Every line is named in the legend column beside the plot.
pub fn latency_vs_load(p: &Plan, path: &Path) -> io::Result<()> {
    let x_max = p
        .servers
        .iter()
        .flat_map(|s| s.steps.iter().map(|st| st.offered_msgs_per_sec))
        .fold(1.0, f64::max)
        * 1.05;
    let mut objectives: Vec<(String, f64)> = Vec::new();
    for (name, o) in p
        .workload
        .rpc
        .iter()
        .filter_map(|c| c.objective().map(|o| (&c.name, o)))
        .chain(
            p.workload
                .events
                .iter()
                .filter_map(|c| c.objective().map(|o| (&c.name, o))),
        )
    {
        objectives.push((format!("objective {name}: {}", o.label()), o.max_us));
    }
    let ys = y_range(
        p.servers
            .iter()
            .flat_map(|s| s.steps.iter())
            .flat_map(|st| st.classes.iter())
            .map(|c| c.latency.at(c.objective.map_or(0.99, |o| o.quantile)))
            .chain(objectives.iter().map(|o| o.1)),
    );
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
    let mut legend = entries(&series.iter().map(|s| s.0.clone()).collect::<Vec<_>>(), 0);
    for (label, _) in &objectives {
        legend.push(LegendEntry {
            label: label.clone(),
            color: BLACK.to_rgba(),
            dashed: true,
        });
    }
    let knee_colour =
        |i: usize| Palette99::pick(i * n_series.max(1) / p.servers.len().max(1)).to_rgba();
    let knees: Vec<(usize, f64)> = p
        .servers
        .iter()
        .enumerate()
        .filter_map(|(i, sp)| sp.knee.max_factor.map(|f| (i, p.workload.offered(f))))
        .collect();
    for (i, x) in &knees {
        legend.push(LegendEntry {
            label: format!("knee {}: {:.0} msgs/s", p.servers[*i].server.label(), x),
            color: knee_colour(*i),
            dashed: true,
        });
    }
    if !fails.is_empty() {
        legend.push(LegendEntry {
            label: "× a load that failed".into(),
            color: RED.to_rgba(),
            dashed: false,
        });
    }
    let title = format!(
        "{}: latency vs offered load ({} CPUs)",
        p.workload.name, p.machine.logical_cpus
    );
    let (root, plot) = frame(path, (1100, 600), &title, &legend)?;
    let mut chart = ChartBuilder::on(&plot)
        .margin(15)
        .margin_right(25)
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
    draw_lines(&mut chart, series, true, 0)?;
    chart
        .draw_series(
            fails
                .into_iter()
                .map(|p| Cross::new(p, 7, RED.stroke_width(2))),
        )
        .map_err(err)?;
    for (_, o) in objectives {
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, o), (x_max, o)],
                8,
                5,
                BLACK.stroke_width(1),
            ))
            .map_err(err)?;
    }
    for (i, x) in knees {
        chart
            .draw_series(DashedLineSeries::new(
                [(x, ys.start), (x, ys.end)],
                6,
                4,
                knee_colour(i).stroke_width(2),
            ))
            .map_err(err)?;
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
                "step {} {}× {}{}",
                st.index,
                trim_factor(st.factor),
                c.offered_rate.round(),
                if c.passed { "/s" } else { "/s (failed)" }
            ),
            pts,
        ));
    }
    let ys = y_range(series.iter().flat_map(|s| s.1.iter().map(|p| p.1)));
    let legend = entries(&series.iter().map(|s| s.0.clone()).collect::<Vec<_>>(), 0);
    let title = format!(
        "{} — {class}: latency by percentile, per step",
        sp.server.label()
    );
    let (root, plot) = frame(path, (1100, 600), &title, &legend)?;
    let mut chart = ChartBuilder::on(&plot)
        .margin(15)
        .margin_right(30)
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
    draw_lines(&mut chart, series, false, 0)?;
    root.present().map_err(err)
}

/// `0.375` → `0.375`, `2` → `2`.
fn trim_factor(f: f64) -> String {
    let s = format!("{f:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Every run of every step of one class, one after another: p50 and p99
/// per second above, messages arrived per second below. A stall is a gap
/// in the rate; a drift, a rising p99 within a step.
pub fn timeseries(sp: &ServerPlan, class: &str, path: &Path) -> io::Result<()> {
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
    let mut legend = entries(&["p50 latency".to_string(), "p99 latency".to_string()], 0);
    legend.push(LegendEntry {
        label: "arrived msgs/s".into(),
        color: Palette99::pick(2).to_rgba(),
        dashed: false,
    });
    legend.push(LegendEntry {
        label: "step start".into(),
        color: BLACK.mix(0.25),
        dashed: false,
    });
    let title = format!(
        "{} — {class}: per second over the plan (steps in the order run)",
        sp.server.label()
    );
    let (root, plot) = frame(path, (1100, 640), &title, &legend)?;
    let (top, bottom) = plot.split_vertically(360);
    let ys = y_range(p50.iter().chain(&p99).map(|p| p.1));
    let mut chart = ChartBuilder::on(&top)
        .margin(10)
        .margin_right(25)
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
    // Step numbers along the top, skipping those that would run into the
    // previous one or past the plot.
    let right = chart.plotting_area().get_pixel_range().0.end;
    let style = TextStyle::from(("sans-serif", LABEL_SIZE).into_font())
        .pos(Pos::new(HPos::Left, VPos::Top));
    let mut free_from = i32::MIN;
    for (s, idx) in &starts {
        let (px, _) = chart.backend_coord(&(*s as f64, ys.end));
        let long = format!("step {idx}");
        let label = [long, idx.to_string()]
            .into_iter()
            .find(|l| px + 3 + text_width(l, LABEL_SIZE).ceil() as i32 <= right);
        let Some(label) = label else { continue };
        let w = text_width(&label, LABEL_SIZE).ceil() as i32;
        if px + 3 < free_from {
            continue;
        }
        free_from = px + 3 + w + 6;
        chart
            .plotting_area()
            .draw(&Text::new(label, (*s as f64 + 0.0, ys.end), style.clone()))
            .map_err(err)?;
    }
    draw_lines(
        &mut chart,
        vec![("p50".into(), p50), ("p99".into(), p99)],
        true,
        0,
    )?;
    let r_max = rate.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&bottom)
        .margin(10)
        .margin_right(25)
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
    draw_lines(&mut chart, vec![("rate".into(), rate)], true, 2)?;
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

    use crate::plan::{
        machine::Machine, step, workload::Workload, ClassRepeat, ClassStep, Interval, Knee,
        Quantiles, Schedule, ServerId, ServerPlan, StepResult,
    };

    /// A plan with long names, many steps and two servers: what pushes
    /// legends and labels to the edges.
    fn crowded_plan() -> Plan {
        let w = Workload::parse(
            "name = 'a workload whose name is far too long to fit on one line of any chart title at all, really'\n\
             [[rpc]]\nname='checkout-service-request-with-a-long-name'\nrate=1000\np99_ms=5\n\
             [[events]]\nname='orders'\nrate=2000\nfanout=3\np999_ms=20\n",
        )
        .unwrap();
        let server = |i: usize| {
            let steps = (1..=12)
                .map(|k| {
                    let factor = 0.25 * 1.37f64.powi(k);
                    let classes = ["checkout-service-request-with-a-long-name", "orders"]
                        .iter()
                        .map(|name| {
                            let mut hist = step::histogram();
                            for v in 1..2000u64 {
                                hist.record(v * k as u64 * 3 + 40).unwrap();
                            }
                            let series = (0..3)
                                .map(|second| Interval {
                                    second,
                                    count: 1000 * k as u64,
                                    p50_us: 100.0 * k as f64,
                                    p99_us: 900.0 * k as f64,
                                })
                                .collect();
                            ClassStep {
                                name: name.to_string(),
                                kind: "rpc",
                                offered_rate: 1000.0 * factor,
                                objective: w.rpc[0].objective(),
                                latency: Quantiles::of(&hist),
                                objective_quantile_us: vec![],
                                merged_failure: None,
                                repeats: vec![ClassRepeat {
                                    sent: 1,
                                    expected: 1,
                                    received: 1,
                                    lost: 0,
                                    latency: Quantiles::of(&hist),
                                    send_lag_p99_us: 1.0,
                                    stalls: vec![],
                                    errors: vec![],
                                    series,
                                    failures: vec![],
                                    hard_failure: false,
                                    workers: vec![],
                                }],
                                passed: k < 9,
                                send_lag_p99_us: 1.0,
                                hist,
                            }
                        })
                        .collect();
                    StepResult {
                        index: k as usize,
                        factor,
                        started_unix_ms: 0.0,
                        offered_msgs_per_sec: w.offered(factor),
                        server_msgs_per_sec: w.server_msgs(factor),
                        classes,
                        setup_errors: vec![],
                        discarded: vec![],
                        worker_failure: None,
                        passed: k < 9,
                    }
                })
                .collect();
            ServerPlan {
                server: ServerId {
                    url: format!("nats://127.0.0.1:{}", 4222 + i),
                    server_name: "n".into(),
                    version: "2.10.22".into(),
                    shoal_version: (i == 0).then(|| "0.1.0".into()),
                },
                cores_source: "2".into(),
                steps,
                // The knee at the highest load: its line at the plot's edge.
                knee: Knee {
                    max_factor: Some(0.25 * 1.37f64.powi(12)),
                    first_fail: None,
                },
                sizing: None,
                stopped: None,
            }
        };
        let servers = vec![server(0), server(1)];
        Plan {
            tool: "t".into(),
            started_unix: 0,
            command: "c".into(),
            machine: Machine::this(&[]),
            workload: w.clone(),
            schedule: Schedule::default(),
            target_util: 0.7,
            workers: vec![],
            order: vec![],
            servers,
        }
    }

    fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
        let key = format!(" {name}=\"");
        let at = tag.find(&key)? + key.len();
        tag[at..].split('"').next()
    }

    /// (x0, y0, x1, y1) of each `<text>`, estimated as generously as
    /// `text_width` (0.65 em a character, 0.8 em above the baseline and
    /// 0.25 below), turned by its rotation; with its text.
    fn text_boxes(svg: &str) -> Vec<((f64, f64, f64, f64), String)> {
        let mut out = Vec::new();
        for part in svg.split("<text").skip(1) {
            let (tag, rest) = part.split_once('>').unwrap();
            // SVG drops leading and trailing white space (xml:space default).
            let content = rest.split("</text>").next().unwrap().trim();
            let content = content
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&amp;", "&");
            let num = |n: &str| attr(tag, n).unwrap().parse::<f64>().unwrap();
            let (x, y, fs) = (num("x"), num("y"), num("font-size"));
            let w = content.chars().count() as f64 * 0.65 * fs;
            let (l, r) = match attr(tag, "text-anchor").unwrap() {
                "start" => (0.0, w),
                "middle" => (-w / 2.0, w / 2.0),
                "end" => (-w, 0.0),
                a => panic!("anchor {a}"),
            };
            let base = match attr(tag, "dy").unwrap() {
                "0.76em" => 0.76 * fs,
                "0.5ex" => 0.25 * fs,
                "-0.5ex" => -0.25 * fs,
                d => panic!("dy {d}"),
            };
            let (t, b) = (base - 0.8 * fs, base + 0.25 * fs);
            let angle = attr(tag, "transform").map_or(0.0, |t| {
                t.trim_start_matches("rotate(")
                    .split(',')
                    .next()
                    .unwrap()
                    .trim()
                    .parse::<f64>()
                    .unwrap()
            });
            let (sin, cos) = angle.to_radians().sin_cos();
            let corners = [(l, t), (r, t), (l, b), (r, b)]
                .map(|(dx, dy)| (x + dx * cos - dy * sin, y + dx * sin + dy * cos));
            let xs = corners.map(|c| c.0);
            let ys = corners.map(|c| c.1);
            let min = |v: [f64; 4]| v.into_iter().fold(f64::MAX, f64::min);
            let max = |v: [f64; 4]| v.into_iter().fold(f64::MIN, f64::max);
            out.push(((min(xs), min(ys), max(xs), max(ys)), content));
        }
        out
    }

    /// Every point of every polyline and circle (the plotted data).
    fn plotted_points(svg: &str) -> Vec<(f64, f64)> {
        let mut out = Vec::new();
        for part in svg.split("<polyline").skip(1) {
            let tag = part.split('>').next().unwrap();
            for p in attr(tag, "points").unwrap().split_whitespace() {
                let (x, y) = p.split_once(',').unwrap();
                out.push((x.parse().unwrap(), y.parse().unwrap()));
            }
        }
        for part in svg.split("<circle").skip(1) {
            let tag = part.split('>').next().unwrap();
            let n = |k| attr(tag, k).unwrap().parse::<f64>().unwrap();
            out.push((n("cx"), n("cy")));
        }
        out
    }

    /// The legend frames: the only rectangles drawn at 0.6 opacity.
    fn legend_frames(svg: &str) -> Vec<(f64, f64, f64, f64)> {
        svg.split("<rect")
            .skip(1)
            .map(|p| p.split('>').next().unwrap())
            .filter(|t| attr(t, "opacity") == Some("0.6") && attr(t, "fill") == Some("none"))
            .map(|t| {
                let n = |k| attr(t, k).unwrap().parse::<f64>().unwrap();
                (n("x"), n("y"), n("x") + n("width"), n("y") + n("height"))
            })
            .collect()
    }

    fn overlap(a: (f64, f64, f64, f64), b: (f64, f64, f64, f64)) -> bool {
        a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3
    }

    #[test]
    fn no_label_leaves_the_picture_and_no_legend_covers_a_line() {
        let plan = crowded_plan();
        let dir = std::env::temp_dir().join(format!("charts-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = draw(&plan, &dir).unwrap();
        assert_eq!(files.len(), 1 + 2 * 2 * 2);
        for f in &files {
            let svg = std::fs::read_to_string(dir.join(f)).unwrap();
            let head = svg.split('>').next().unwrap();
            let num = |n: &str| attr(head, n).unwrap().parse::<f64>().unwrap();
            let (w, h) = (num("width"), num("height"));
            let view: Vec<f64> = attr(head, "viewBox")
                .unwrap()
                .split_whitespace()
                .map(|v| v.parse().unwrap())
                .collect();
            assert_eq!(view, [0.0, 0.0, w, h], "{f}");
            let texts = text_boxes(&svg);
            assert!(texts.len() > 10, "{f}");
            for (b, t) in &texts {
                assert!(
                    b.0 >= 0.0 && b.1 >= 0.0 && b.2 <= w && b.3 <= h,
                    "{f}: {t:?} at {b:?} leaves the {w}×{h} picture"
                );
            }
            let frames = legend_frames(&svg);
            assert_eq!(frames.len(), 1, "{f}: one legend");
            let legend: Vec<_> = texts
                .iter()
                .filter(|(b, _)| overlap(*b, frames[0]))
                .collect();
            assert!(legend.len() >= 2, "{f}");
            for (b, t) in &legend {
                // Inside its frame, and clear of every other label.
                let fr = frames[0];
                assert!(
                    b.0 >= fr.0 && b.2 <= fr.2 && b.1 >= fr.1 && b.3 <= fr.3,
                    "{f}: legend {t:?} {b:?} outside its frame {fr:?}"
                );
                for (c, u) in &texts {
                    assert!(
                        std::ptr::eq(b, c) || !overlap(*b, *c),
                        "{f}: legend {t:?} overlaps {u:?}"
                    );
                }
            }
            for p in plotted_points(&svg) {
                let fr = frames[0];
                assert!(
                    !(p.0 >= fr.0 && p.0 <= fr.2 && p.1 >= fr.1 && p.1 <= fr.3),
                    "{f}: a plotted point {p:?} is under the legend {fr:?}"
                );
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn long_labels_are_cut_to_fit() {
        let long = "x".repeat(200);
        let cut = fit(&long, 14.0, 300.0);
        assert!(
            text_width(&cut, 14.0) <= 300.0 && cut.ends_with('…'),
            "{cut}"
        );
        assert_eq!(fit("short", 14.0, 300.0), "short");
    }

    #[test]
    fn y_range_has_margin_and_a_default() {
        assert_eq!(y_range([100.0, 1000.0].into_iter()), 50.0..2000.0);
        assert_eq!(y_range([0.0].into_iter()), 1.0..1000.0);
        assert_eq!(y_range([1.0].into_iter()), 1.0..2.0);
    }
}
