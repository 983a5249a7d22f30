//! Runs the pub→sub scenario over a range of message sizes and subscriber
//! counts (and optionally against a second server) and turns the results into a capacity table, a
//! CSV, or an SVG plot of throughput against message size.

use crate::pubsub::{self, PubSubParams};
use plotters::prelude::*;
use std::io;

#[derive(Debug, Clone, serde::Serialize)]
pub struct SweepRow {
    pub server: String,
    pub subscribers: usize,
    pub size: usize,
    pub msgs_per_sec: f64,
    pub mb_per_sec: f64,
    pub lost: u64,
}

/// One row per (subscriber count, size, server); `done` is called after
/// each run (progress).
pub fn run(
    urls: &[String],
    sizes: &[usize],
    subscriber_counts: &[usize],
    bytes_per_run: u64,
    done: &dyn Fn(),
) -> io::Result<Vec<SweepRow>> {
    let mut rows = Vec::new();
    for (&subscribers, &size) in subscriber_counts
        .iter()
        .flat_map(|s| sizes.iter().map(move |z| (s, z)))
    {
        for url in urls {
            // Same volume of bytes per run, at least 10,000 messages.
            let msgs = (bytes_per_run / size.max(1) as u64).max(10_000);
            let r = pubsub::run(&PubSubParams {
                url: url.clone(),
                subject: "bench.sweep".into(),
                publishers: 1,
                subscribers,
                size,
                msgs,
            })?;
            rows.push(SweepRow {
                server: format!("{url} ({})", r.server_version),
                subscribers,
                size,
                msgs_per_sec: r.delivered_per_sec,
                mb_per_sec: r.delivered_mb_per_sec,
                lost: r.lost,
            });
            done();
        }
    }
    Ok(rows)
}

pub fn csv(rows: &[SweepRow]) -> String {
    let mut out = String::from("server,subscribers,size,msgs_per_sec,mb_per_sec,lost\n");
    for r in rows {
        out.push_str(&format!(
            "\"{}\",{},{},{:.0},{:.1},{}\n",
            r.server, r.subscribers, r.size, r.msgs_per_sec, r.mb_per_sec, r.lost
        ));
    }
    out
}

pub fn table(rows: &[SweepRow]) -> String {
    let mut out = format!(
        "{:<45} {:>5} {:>8} {:>14} {:>10} {:>6}\n",
        "server", "subs", "size B", "msgs/s", "MB/s", "lost"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<45} {:>5} {:>8} {:>14.0} {:>10.1} {:>6}\n",
            r.server, r.subscribers, r.size, r.msgs_per_sec, r.mb_per_sec, r.lost
        ));
    }
    out
}

/// Draws msgs/s (left) against message size (log scale), one line per
/// server.
pub fn plot(rows: &[SweepRow], path: &str, title: &str) -> io::Result<()> {
    let err = |e: String| crate::plot::err(e);
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let max_size = rows.iter().map(|r| r.size).max().unwrap_or(1) as f64;
    let min_size = rows.iter().map(|r| r.size).min().unwrap_or(1).max(1) as f64;
    let max_rate = rows.iter().map(|r| r.msgs_per_sec).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d((min_size..max_size).log_scale(), 0.0..max_rate)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("message size (bytes, log scale)")
        .y_desc("delivered messages/s")
        .y_label_formatter(&|v| format!("{:.1}M", v / 1e6))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    let mut series: Vec<(&str, usize)> = rows
        .iter()
        .map(|r| (r.server.as_str(), r.subscribers))
        .collect();
    series.sort();
    series.dedup();
    let lines = series
        .iter()
        .map(|(server, subs)| {
            let points = rows
                .iter()
                .filter(|r| r.server == *server && r.subscribers == *subs)
                .map(|r| (r.size as f64, r.msgs_per_sec))
                .collect();
            (format!("{server}, 1->{subs}"), points)
        })
        .collect();
    crate::plot::draw_series(&mut chart, lines)?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<SweepRow> {
        [(16, 4e6), (1024, 1e6)]
            .into_iter()
            .map(|(size, rate)| SweepRow {
                server: "a".into(),
                subscribers: 1,
                size,
                msgs_per_sec: rate,
                mb_per_sec: rate * size as f64 / 1e6,
                lost: 0,
            })
            .collect()
    }

    #[test]
    fn csv_has_a_header_and_a_line_per_row() {
        let c = csv(&rows());
        let lines: Vec<&str> = c.lines().collect();
        assert_eq!(
            lines[0],
            "server,subscribers,size,msgs_per_sec,mb_per_sec,lost"
        );
        assert_eq!(lines[1], "\"a\",1,16,4000000,64.0,0");
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn plot_writes_an_svg() {
        let dir = std::env::temp_dir().join(format!("shoal-sweep-{}.svg", std::process::id()));
        plot(&rows(), dir.to_str().unwrap(), "test").unwrap();
        let svg = std::fs::read_to_string(&dir).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("message size"));
        let _ = std::fs::remove_file(dir);
    }
}
