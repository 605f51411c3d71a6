//! `--plot FILE.svg`: the distributions behind a report's percentiles, drawn as cumulative
//! curves with `plotters` (its SVG backend only: no fonts, no bitmap, no system libraries).
//!
//! A table says p50 and p99; a curve says where the rest lies, whether two stacks differ
//! everywhere or only in the tail, and (with a count on the y axis) how a crowd of peers came
//! back over time. A report that can be plotted carries its samples in [`Report::plot`]
//! (not serialized: the JSON stays the table).

use std::path::Path;
use std::time::Duration;

use plotters::prelude::*;

use crate::Report;

/// What the y axis of a [`Plot`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YAxis {
    /// The fraction of each series' samples at or below x (a CDF, 0 to 1).
    Fraction,
    /// The number of each series' samples at or below x (peers back by then).
    Count,
}

/// One curve: a label and its samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The legend's text.
    pub label: String,
    /// The samples, in any order.
    pub values: Vec<Duration>,
}

/// The samples of a report, and how to draw them.
#[derive(Debug, Clone, PartialEq)]
pub struct Plot {
    /// The chart's caption.
    pub title: String,
    /// What x is (milliseconds of what).
    pub x_label: String,
    /// What y counts.
    pub y_axis: YAxis,
    /// The curves.
    pub series: Vec<Series>,
}

impl Plot {
    /// A plot with no series yet.
    pub fn new(title: impl Into<String>, x_label: impl Into<String>, y_axis: YAxis) -> Self {
        Self {
            title: title.into(),
            x_label: x_label.into(),
            y_axis,
            series: Vec::new(),
        }
    }

    /// Adds a curve (empty ones are kept out of the chart but not out of the legend's order).
    pub fn series(&mut self, label: impl Into<String>, values: Vec<Duration>) {
        self.series.push(Series {
            label: label.into(),
            values,
        });
    }
}

/// Why a plot was not written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlotError {
    /// The report has nothing to plot (no samples were collected, or it has no plot at all).
    #[error("nothing to plot: {0}")]
    Empty(&'static str),
    /// Drawing or writing the file failed.
    #[error("cannot draw {path}: {reason}")]
    Draw {
        /// The file.
        path: String,
        /// What plotters said.
        reason: String,
    },
}

/// Writes the report's plot to `path` as SVG.
pub fn write_svg(report: &Report, path: &Path) -> Result<(), PlotError> {
    let plot = report
        .plot
        .as_ref()
        .ok_or(PlotError::Empty("this benchmark draws no plot"))?;
    draw(plot, path).map_err(|e| PlotError::Draw {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The curve's points: (ms, y) after each sample, starting at (first, 0), as a step function.
fn steps(values: &[Duration], y_axis: YAxis) -> Vec<(f64, f64)> {
    let mut ms: Vec<f64> = values.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let n = ms.len() as f64;
    let mut points = Vec::with_capacity(ms.len() * 2 + 1);
    let mut previous = 0.0;
    if let Some(first) = ms.first() {
        points.push((*first, 0.0));
    }
    for (i, x) in ms.iter().enumerate() {
        let y = match y_axis {
            YAxis::Fraction => (i + 1) as f64 / n,
            YAxis::Count => (i + 1) as f64,
        };
        points.push((*x, previous));
        points.push((*x, y));
        previous = y;
    }
    points
}

fn draw(plot: &Plot, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let curves: Vec<(&str, Vec<(f64, f64)>)> = (plot.series.iter())
        .filter(|s| !s.values.is_empty())
        .map(|s| (s.label.as_str(), steps(&s.values, plot.y_axis)))
        .collect();
    if curves.is_empty() {
        return Err(Box::new(PlotError::Empty("no samples")));
    }
    let points = || curves.iter().flat_map(|(_, p)| p.iter());
    // A logarithmic x axis: restart times span a loopback round trip to an idle timeout, and
    // the stacks compared differ by orders of magnitude.
    let x_max = (points().map(|p| p.0).fold(0.0, f64::max) * 1.25).max(1.0);
    let x_min =
        (points().map(|p| p.0).fold(f64::INFINITY, f64::min) * 0.8).clamp(0.01, x_max / 2.0);
    let y_max = match plot.y_axis {
        YAxis::Fraction => 1.0,
        YAxis::Count => points().map(|p| p.1).fold(0.0, f64::max) * 1.05,
    };
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&plot.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((x_min..x_max).log_scale(), 0.0..y_max.max(1.0))?;
    chart
        .configure_mesh()
        .x_desc(format!("{} (log scale)", plot.x_label))
        .y_desc(match plot.y_axis {
            YAxis::Fraction => "fraction at or below",
            YAxis::Count => "count at or below",
        })
        .draw()?;
    for (i, (label, points)) in curves.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(*label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cdf_steps_up_at_each_sample_to_one() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|m| Duration::from_millis(*m))
                .collect::<Vec<_>>()
        };
        let points = steps(&ms(&[30, 10, 20]), YAxis::Fraction);
        let ys: Vec<f64> = points.iter().map(|p| p.1).collect();
        assert_eq!(points.first(), Some(&(10.0, 0.0)));
        assert_eq!(points.last(), Some(&(30.0, 1.0)));
        assert!(ys.windows(2).all(|w| w[0] <= w[1]), "{points:?}");
        let count = steps(&ms(&[5, 5]), YAxis::Count);
        assert_eq!(count.last(), Some(&(5.0, 2.0)));
    }

    #[test]
    fn a_report_with_samples_becomes_an_svg_and_one_without_is_an_error() {
        let dir = std::env::temp_dir().join(format!("quicpeer-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("cdf.svg");
        let mut report = Report::new("test", &["a"]);
        assert!(matches!(
            write_svg(&report, &path),
            Err(PlotError::Empty(_))
        ));
        let mut plot = Plot::new("restart", "ms after the restart", YAxis::Fraction);
        plot.series(
            "first ping",
            vec![Duration::from_millis(12), Duration::from_millis(30)],
        );
        plot.series("never", Vec::new());
        report.plot = Some(plot);
        write_svg(&report, &path).expect("drawn");
        let svg = std::fs::read_to_string(&path).expect("written");
        assert!(
            svg.starts_with("<svg") || svg.starts_with("<?xml"),
            "{svg:.80}"
        );
        assert!(svg.contains("first ping"));
        assert!(svg.contains("<polyline") || svg.contains("<path"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
