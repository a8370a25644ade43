//! Percentiles, the markdown report and the latency histogram picture.

use std::{fmt::Write as _, path::Path};

use plotters::prelude::*;

/// Median, p99 and max of `values` (ns), as microseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    /// Median, µs.
    pub median: f64,
    /// 99th percentile, µs.
    pub p99: f64,
    /// Maximum, µs.
    pub max: f64,
}

impl Summary {
    /// Summarises nanosecond values.
    pub fn of(values: &[u64]) -> Self {
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        let at = |q: f64| {
            let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
            sorted.get(index).copied().unwrap_or(0) as f64 / 1000.0
        };
        Self {
            median: at(0.5),
            p99: at(0.99),
            max: at(1.0),
        }
    }

    /// `median / p99 / max` in µs.
    pub fn cells(&self) -> String {
        format!("{:.0} | {:.0} | {:.0}", self.median, self.p99, self.max)
    }
}

/// Median of plain numbers.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// A markdown document built section by section.
#[derive(Default)]
pub struct Markdown(pub String);

impl Markdown {
    /// Appends a line.
    pub fn line(&mut self, text: impl AsRef<str>) {
        let _ = writeln!(self.0, "{}", text.as_ref());
    }
}

/// One histogram series: a label and nanosecond values.
pub struct Series<'a> {
    /// Legend text.
    pub label: String,
    /// Values, ns.
    pub values: &'a [u64],
}

/// Draws the distributions as log-binned histograms (one line per series),
/// microseconds on a log axis, to an SVG file.
pub fn histogram(path: &Path, title: &str, series: &[Series<'_>]) -> anyhow::Result<()> {
    const BINS: usize = 40;
    let (lo, hi) = (1.0f64, 1_000_000.0f64); // 1 µs .. 1 s
    let edge = |i: usize| lo * (hi / lo).powf(i as f64 / BINS as f64);
    let counts: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| {
            let mut bins = vec![0usize; BINS];
            for &ns in s.values {
                let us = (ns as f64 / 1000.0).clamp(lo, hi * 0.999);
                let bin = ((us / lo).ln() / (hi / lo).ln() * BINS as f64) as usize;
                bins[bin.min(BINS - 1)] += 1;
            }
            let total = s.values.len().max(1) as f64;
            (0..BINS)
                .map(|i| {
                    (
                        (edge(i) * edge(i + 1)).sqrt(),
                        bins[i] as f64 * 100.0 / total,
                    )
                })
                .collect()
        })
        .collect();
    let top = counts.iter().flatten().map(|(_, y)| *y).fold(1.0, f64::max) * 1.1;
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("latency (µs, log scale)")
        .y_desc("% of triggers")
        .draw()?;
    for (index, (s, points)) in series.iter().zip(counts).enumerate() {
        let color = Palette99::pick(index).to_rgba();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()?;
    root.present()?;
    Ok(())
}

/// Draws requests per second against concurrent clients, both on log axes,
/// one line per series (each value is the rate at the matching `clients`),
/// to an SVG file.
pub fn throughput(
    path: &Path,
    title: &str,
    clients: &[usize],
    series: &[(String, Vec<f64>)],
) -> anyhow::Result<()> {
    let values = || series.iter().flat_map(|(_, rates)| rates.iter().copied());
    let low = values().fold(f64::MAX, f64::min).max(1.0) / 2.0;
    let high = values().fold(1.0, f64::max) * 2.0;
    let most = clients.iter().copied().max().unwrap_or(1) as f64 * 1.5;
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d((0.8..most).log_scale(), (low..high).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients (log scale)")
        .y_desc("requests per second (log scale)")
        .draw()?;
    for (index, (label, rates)) in series.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        let points: Vec<(f64, f64)> = clients
            .iter()
            .zip(rates)
            .map(|(&n, &rate)| (n as f64, rate))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart.draw_series(
            points
                .into_iter()
                .map(|point| Circle::new(point, 4, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_set() {
        let values: Vec<u64> = (1..=100).map(|v| v * 1000).collect();
        let summary = Summary::of(&values);
        assert_eq!(
            (summary.median, summary.p99, summary.max),
            (51.0, 99.0, 100.0)
        );
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    }
}
