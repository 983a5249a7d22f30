//! What the SVG charts share: one line with dots and a legend entry per
//! series, and the error mapping.

use plotters::coord::CoordTranslate;
use plotters::prelude::*;
use std::io;

pub(crate) fn err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("plot: {e}"))
}

/// Draws each `(name, points)` series in its own colour, then the legend.
pub(crate) fn draw_series<'a, DB, CT, X>(
    chart: &mut ChartContext<'a, DB, CT>,
    series: Vec<(String, Vec<(X, f64)>)>,
) -> io::Result<()>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    CT: CoordTranslate<From = (X, f64)>,
    X: Clone + 'static,
{
    for (i, (name, points)) in series.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, color.filled())),
            )
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}
