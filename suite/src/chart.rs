//! The benchmark's chart: throughput and peak RSS against the number of distinct keys, drawn
//! as SVG from the end-to-end throughput rows of one run.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::bench::Throughput;

/// One point of a series: a run over `keys` distinct keys.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeysPoint {
    pub keys: f64,
    pub pipe_rate: f64,
    pub word_count_rate: f64,
    pub peak_rss_mib: f64,
}

/// The rows of one input shape (key distribution and partitions) ordered by keys, for each
/// shape measured at two key counts or more (unpinned runs only; a shape measured twice at one
/// key count keeps its first run).
pub fn series_by_keys(rows: &[Throughput]) -> BTreeMap<String, Vec<KeysPoint>> {
    let mut series: BTreeMap<String, BTreeMap<u64, KeysPoint>> = BTreeMap::new();
    for row in rows.iter().filter(|row| row.cpus.is_none()) {
        let label = format!(
            "{}, {} partitions",
            row.input.distribution.name(),
            row.partitions
        );
        series
            .entry(label)
            .or_default()
            .entry(row.input.keys)
            .or_insert(KeysPoint {
                keys: row.input.keys as f64,
                pipe_rate: row.pipe.rate(),
                word_count_rate: row.word_count.committed.rate(),
                peak_rss_mib: row.word_count.peak_rss_bytes as f64 / f64::from(1 << 20),
            });
    }
    series
        .into_iter()
        .filter(|(_, points)| points.len() >= 2)
        .map(|(label, points)| (label, points.into_values().collect()))
        .collect()
}

/// Draws throughput (word count solid, its plain pipe dashed) and the word count's peak RSS
/// against distinct keys (log scale) into an SVG at `path`. Returns false, drawing nothing,
/// when no input shape was measured at two key counts.
pub fn draw_keys_chart(rows: &[Throughput], path: &Path) -> Result<bool> {
    let series = series_by_keys(rows);
    let points = || series.values().flatten();
    let Some(min_keys) = points().map(|p| p.keys).reduce(f64::min) else {
        return Ok(false);
    };
    let max_keys = points().map(|p| p.keys).fold(min_keys, f64::max);
    let max_rate = points()
        .flat_map(|p| [p.pipe_rate, p.word_count_rate])
        .fold(1.0, f64::max);
    let max_rss = points().map(|p| p.peak_rss_mib).fold(1.0, f64::max);
    let keys_axis = (min_keys / 1.5..max_keys * 1.5).log_scale();

    let root = SVGBackend::new(path, (960, 1000)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let (upper, lower) = root.split_vertically(520);
    let mut throughput = chart(
        &upper,
        "Word count and plain pipe: records/s against distinct keys (1M records a run; each once: a record per key)",
        keys_axis.clone(),
        // Headroom above the lines for the legend (two entries per series).
        max_rate * 2.0,
        "records/s",
    )?;
    let mut memory = chart(
        &lower,
        "Word count: peak RSS (MiB) against distinct keys, default settings",
        keys_axis,
        max_rss * 1.3,
        "peak RSS MiB",
    )?;
    for (index, (label, points)) in series.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        let word_count = points.iter().map(|p| (p.keys, p.word_count_rate));
        throughput
            .draw_series(LineSeries::new(word_count.clone(), color.stroke_width(2)))
            .map_err(plot_error)?
            .label(format!("word count, {label}"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], color.stroke_width(2)));
        throughput
            .draw_series(word_count.map(|point| Circle::new(point, 3, color.filled())))
            .map_err(plot_error)?;
        throughput
            .draw_series(DashedLineSeries::new(
                points.iter().map(|p| (p.keys, p.pipe_rate)),
                6,
                4,
                color.stroke_width(1),
            ))
            .map_err(plot_error)?
            .label(format!("plain pipe, {label}"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], color.stroke_width(1)));
        let rss = points.iter().map(|p| (p.keys, p.peak_rss_mib));
        memory
            .draw_series(LineSeries::new(rss.clone(), color.stroke_width(2)))
            .map_err(plot_error)?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], color.stroke_width(2)));
        memory
            .draw_series(rss.map(|point| Circle::new(point, 3, color.filled())))
            .map_err(plot_error)?;
    }
    // Above the throughput lines (the headroom), and left of memory, which grows with keys.
    for (chart, corner) in [
        (&mut throughput, SeriesLabelPosition::UpperRight),
        (&mut memory, SeriesLabelPosition::UpperLeft),
    ] {
        chart
            .configure_series_labels()
            .position(corner)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(plot_error)?;
    }
    root.present().map_err(plot_error)?;
    Ok(true)
}

/// One panel: distinct keys (log scale) across, `y_label` from 0 to `y_max` up.
fn chart<'a, X>(
    area: &DrawingArea<SVGBackend<'a>, plotters::coord::Shift>,
    caption: &str,
    keys_axis: X,
    y_max: f64,
    y_label: &str,
) -> Result<ChartContext<'a, SVGBackend<'a>, Cartesian2d<X::CoordDescType, RangedCoordf64>>>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(keys_axis, 0.0..y_max)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("distinct keys")
        .y_desc(y_label)
        .x_label_formatter(&|keys| format!("{keys:.0}"))
        .y_label_formatter(&|value| format!("{value:.0}"))
        .draw()
        .map_err(plot_error)?;
    Ok(chart)
}

fn plot_error(error: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing the chart: {error}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{AppRun, Figure, Input, KeyDistribution};
    use crate::Storage;

    fn row(keys: u64, distribution: KeyDistribution, cpus: Option<&str>) -> Throughput {
        Throughput {
            input: Input {
                records: 1_000_000,
                keys,
                distribution,
            },
            partitions: 4,
            storage: Storage::Memory,
            cpus: cpus.map(str::to_string),
            produce: Figure::default(),
            pipe: Figure {
                records: 1_000_000,
                seconds: 2.0,
            },
            two_output_pipe: Figure {
                records: 1_000_000,
                seconds: 3.0,
            },
            word_count: AppRun {
                committed: Figure {
                    records: 1_000_000,
                    seconds: 4.0 + (keys as f64).log10(),
                },
                peak_rss_bytes: keys * 100 + (50 << 20),
                ..AppRun::default()
            },
            counts_exact: true,
        }
    }

    #[test]
    fn series_group_by_shape_ordered_by_keys_keeping_shapes_with_two_key_counts() {
        let rows = [
            row(1_000_000, KeyDistribution::Uniform, None),
            row(10_000, KeyDistribution::Uniform, None),
            row(10_000, KeyDistribution::Uniform, Some("0-3")),
            row(10_000, KeyDistribution::Zipf, None),
        ];
        let series = series_by_keys(&rows);
        assert_eq!(series.keys().collect::<Vec<_>>(), ["uniform, 4 partitions"]);
        let points = &series["uniform, 4 partitions"];
        assert_eq!(
            points.iter().map(|p| p.keys).collect::<Vec<_>>(),
            [10_000.0, 1_000_000.0]
        );
        assert_eq!(points[0].pipe_rate, 500_000.0);
        assert_eq!(points[1].word_count_rate, 100_000.0);
    }

    #[test]
    fn the_chart_is_an_svg_naming_every_series() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.svg");
        let rows = [
            row(10_000, KeyDistribution::Uniform, None),
            row(1_000_000, KeyDistribution::Uniform, None),
            row(1_000_000, KeyDistribution::Sequential, None),
            row(10_000_000, KeyDistribution::Sequential, None),
        ];
        assert!(draw_keys_chart(&rows, &path).unwrap());
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        for label in [
            "word count, uniform, 4 partitions",
            "plain pipe, each once, 4 partitions",
            "peak RSS MiB",
            "distinct keys",
        ] {
            assert!(svg.contains(label), "{label} missing");
        }
        assert!(!draw_keys_chart(&rows[..1], &path).unwrap());
    }
}
