//! Chart builders: one function per chart of the lab, each returning a [`plotly::Plot`].
//!
//! Every builder takes the DataFrame the lab displays beside the chart, reads columns by their
//! [`crate::schema`] names, and uses the `plotly_white` theme.

use plotly::common::{AxisSide, DashType, Mode, Title};
use plotly::layout::themes::BuiltinTheme;
use plotly::layout::{Axis, Layout, Shape, ShapeLine, ShapeType};
use plotly::{Bar, BoxPlot, HeatMap, Histogram, Plot, Scatter};
use polars::prelude::*;

use crate::frames::column_f64;
use crate::schema::*;

/// The percentile lines of latency charts, each dashed differently: on a quiet server p50, p95
/// and p99 nearly coincide, and solid lines would hide all but the last.
const PERCENTILE_LINES: [(&str, DashType); 3] = [
    (P50_S, DashType::Solid),
    (P95_S, DashType::Dash),
    (P99_S, DashType::Dot),
];

fn layout(title: &str) -> Layout {
    Layout::new()
        .title(Title::with_text(title))
        .template(BuiltinTheme::PlotlyWhite.build())
        .height(420)
}

fn plot(traces: Vec<Box<dyn plotly::Trace>>, layout: Layout) -> Plot {
    let mut plot = Plot::new();
    plot.add_traces(traces);
    plot.set_layout(layout);
    plot
}

/// Keeps the x and y pairs where y is a number, so missing statistics leave gaps in lines
/// instead of NaN values that plotly cannot serialize.
fn finite_pairs(x: &[f64], y: &[f64]) -> (Vec<f64>, Vec<f64>) {
    x.iter()
        .zip(y)
        .filter(|(_, y)| y.is_finite())
        .map(|(x, y)| (*x, *y))
        .unzip()
}

/// Histogram of the successful requests' latencies in a per-request frame, in 12 bins.
pub fn latency_histogram(requests: &DataFrame, title: &str) -> PolarsResult<Plot> {
    let latencies = ok_latencies(requests)?;
    let trace = Histogram::new(latencies).name("latency_s").n_bins_x(12);
    Ok(plot(
        vec![trace],
        layout(title)
            .x_axis(Axis::new().title("seconds"))
            .y_axis(Axis::new().title("requests")),
    ))
}

/// Box plot of the successful requests' latencies in a per-request frame.
pub fn latency_box(requests: &DataFrame, title: &str) -> PolarsResult<Plot> {
    let latencies = ok_latencies(requests)?;
    let trace = BoxPlot::new(latencies).name("latency_s");
    Ok(plot(
        vec![trace],
        layout(title).y_axis(Axis::new().title("seconds")),
    ))
}

fn ok_latencies(requests: &DataFrame) -> PolarsResult<Vec<f64>> {
    let latencies = column_f64(requests, LATENCY_S)?;
    let ok = requests.column(OK)?.bool()?;
    Ok(latencies
        .into_iter()
        .zip(ok.iter())
        .filter(|(_, ok)| ok.unwrap_or(false))
        .map(|(latency, _)| latency)
        .collect())
}

/// p50, p95 and p99 latency against concurrency, from a load summary frame.
pub fn latency_vs_concurrency(summary: &DataFrame) -> PolarsResult<Plot> {
    let x = column_f64(summary, CONCURRENCY)?;
    let mut traces: Vec<Box<dyn plotly::Trace>> = Vec::new();
    for (name, dash) in PERCENTILE_LINES {
        let (xs, ys) = finite_pairs(&x, &column_f64(summary, name)?);
        let line = plotly::common::Line::new().dash(dash);
        traces.push(
            Scatter::new(xs, ys)
                .name(name)
                .mode(Mode::LinesMarkers)
                .line(line),
        );
    }
    Ok(plot(
        traces,
        layout("Latency vs concurrency (p50/p95/p99)")
            .x_axis(Axis::new().title("concurrency"))
            .y_axis(Axis::new().title("seconds")),
    ))
}

/// Throughput against concurrency, from a load summary frame.
pub fn throughput_vs_concurrency(summary: &DataFrame) -> PolarsResult<Plot> {
    let (xs, ys) = finite_pairs(
        &column_f64(summary, CONCURRENCY)?,
        &column_f64(summary, THROUGHPUT_RPS)?,
    );
    let trace = Scatter::new(xs, ys)
        .name(THROUGHPUT_RPS)
        .mode(Mode::LinesMarkers);
    Ok(plot(
        vec![trace],
        layout("Throughput vs concurrency")
            .x_axis(Axis::new().title("concurrency"))
            .y_axis(Axis::new().title("req/s")),
    ))
}

/// The upper end of the error-rate axis: at least 0.05, else 1.2 times the largest rate, so a
/// run without errors still shows a readable empty axis.
pub fn error_rate_axis_max(rates: &[f64]) -> f64 {
    let largest = rates
        .iter()
        .copied()
        .filter(|r| r.is_finite())
        .fold(0.0, f64::max);
    f64::max(0.05, largest * 1.2)
}

/// Error rate per concurrency level as bars, from a load summary frame.
pub fn error_rate_bars(summary: &DataFrame) -> PolarsResult<Plot> {
    let (xs, rates) = finite_pairs(
        &column_f64(summary, CONCURRENCY)?,
        &column_f64(summary, ERROR_RATE)?,
    );
    let top = error_rate_axis_max(&rates);
    let trace = Bar::new(xs, rates).name(ERROR_RATE);
    Ok(plot(
        vec![trace],
        layout("Error rate vs concurrency")
            .x_axis(Axis::new().title("concurrency"))
            .y_axis(Axis::new().title("error rate").range(vec![0.0, top])),
    ))
}

/// p95 latency against `max_tokens`, one line per prompt size, from a token-budget frame.
pub fn p95_vs_max_tokens(budget: &DataFrame) -> PolarsResult<Plot> {
    let sizes = column_f64(budget, PROMPT_CHARS)?;
    let tokens = column_f64(budget, MAX_TOKENS)?;
    let p95 = column_f64(budget, P95_S)?;

    let mut distinct: Vec<f64> = sizes.clone();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();

    let mut traces: Vec<Box<dyn plotly::Trace>> = Vec::new();
    for size in distinct {
        let rows: Vec<usize> = (0..sizes.len()).filter(|&i| sizes[i] == size).collect();
        let x: Vec<f64> = rows.iter().map(|&i| tokens[i]).collect();
        let y: Vec<f64> = rows.iter().map(|&i| p95[i]).collect();
        let (xs, ys) = finite_pairs(&x, &y);
        traces.push(
            Scatter::new(xs, ys)
                .name(format!("{size} chars"))
                .mode(Mode::LinesMarkers),
        );
    }
    Ok(plot(
        traces,
        layout("p95 latency vs max_tokens, one line per prompt size")
            .x_axis(Axis::new().title("max_tokens"))
            .y_axis(Axis::new().title("p95 seconds")),
    ))
}

/// Heatmap of p95 latency over prompt size and `max_tokens`, from a token-budget frame.
/// Cells measured more than once show their mean; cells never measured are empty.
pub fn p95_heatmap(budget: &DataFrame) -> PolarsResult<Plot> {
    let sizes = column_f64(budget, PROMPT_CHARS)?;
    let tokens = column_f64(budget, MAX_TOKENS)?;
    let p95 = column_f64(budget, P95_S)?;
    let axis_values = |values: &[f64]| {
        let mut distinct = values.to_vec();
        distinct.sort_by(f64::total_cmp);
        distinct.dedup();
        distinct
    };
    let (rows, columns) = (axis_values(&sizes), axis_values(&tokens));

    let z: Vec<Vec<Option<f64>>> = rows
        .iter()
        .map(|&size| {
            columns
                .iter()
                .map(|&max_tokens| {
                    let cell: Vec<f64> = (0..p95.len())
                        .filter(|&i| {
                            sizes[i] == size && tokens[i] == max_tokens && p95[i].is_finite()
                        })
                        .map(|i| p95[i])
                        .collect();
                    (!cell.is_empty()).then(|| cell.iter().sum::<f64>() / cell.len() as f64)
                })
                .collect()
        })
        .collect();

    let x: Vec<String> = columns.iter().map(|v| v.to_string()).collect();
    let y: Vec<String> = rows.iter().map(|v| v.to_string()).collect();
    let trace = HeatMap::new(x, y, z).name(P95_S);
    Ok(plot(
        vec![trace],
        layout("Heatmap: p95 latency (seconds)")
            .x_axis(
                Axis::new()
                    .title("max_tokens")
                    .type_(plotly::layout::AxisType::Category),
            )
            .y_axis(
                Axis::new()
                    .title("prompt_chars")
                    .type_(plotly::layout::AxisType::Category),
            ),
    ))
}

/// The overload chart: p95 latency (left axis) and error rate (right axis) against concurrency,
/// from a load summary frame; `timeout_s` goes in the title.
pub fn overload_chart(summary: &DataFrame, timeout_s: f64) -> PolarsResult<Plot> {
    let x = column_f64(summary, CONCURRENCY)?;
    let (p95_x, p95) = finite_pairs(&x, &column_f64(summary, P95_S)?);
    let (rate_x, rates) = finite_pairs(&x, &column_f64(summary, ERROR_RATE)?);
    let top = error_rate_axis_max(&rates).max(1.0);

    let traces: Vec<Box<dyn plotly::Trace>> = vec![
        Scatter::new(p95_x, p95)
            .name(P95_S)
            .mode(Mode::LinesMarkers),
        Scatter::new(rate_x, rates)
            .name(ERROR_RATE)
            .mode(Mode::LinesMarkers)
            .y_axis("y2"),
    ];
    Ok(plot(
        traces,
        layout(&format!("Overload demo (timeout={timeout_s}s)"))
            .x_axis(Axis::new().title("concurrency"))
            .y_axis(Axis::new().title("p95 seconds"))
            .y_axis2(
                Axis::new()
                    .title("error rate")
                    .overlaying("y")
                    .side(AxisSide::Right)
                    .range(vec![0.0, top]),
            ),
    ))
}

/// Histogram of a per-request duration column (such as `ttft_s` or `tpot_s`) over successful
/// requests that measured it, in 30 bins.
pub fn duration_histogram(requests: &DataFrame, column: &str, title: &str) -> PolarsResult<Plot> {
    let values = column_f64(requests, column)?;
    let ok = requests.column(OK)?.bool()?;
    let measured: Vec<f64> = values
        .into_iter()
        .zip(ok.iter())
        .filter(|(v, ok)| ok.unwrap_or(false) && v.is_finite())
        .map(|(v, _)| v)
        .collect();
    let trace = Histogram::new(measured).name(column).n_bins_x(30);
    Ok(plot(
        vec![trace],
        layout(title)
            .x_axis(Axis::new().title("seconds"))
            .y_axis(Axis::new().title("requests")),
    ))
}

/// p50, p95 and p99 latency against `load_column` (`concurrency` or `offered_rps`) from a load
/// summary frame, with the objective as a horizontal line and the knee as a vertical one when
/// given.
pub fn latency_vs_load(
    summary: &DataFrame,
    load_column: &str,
    knee: Option<&crate::analysis::Knee>,
) -> PolarsResult<Plot> {
    let x = column_f64(summary, load_column)?;
    let mut traces: Vec<Box<dyn plotly::Trace>> = Vec::new();
    for (name, dash) in PERCENTILE_LINES {
        let (xs, ys) = finite_pairs(&x, &column_f64(summary, name)?);
        let line = plotly::common::Line::new().dash(dash);
        traces.push(
            Scatter::new(xs, ys)
                .name(name)
                .mode(Mode::LinesMarkers)
                .line(line),
        );
    }

    let mut chart_layout = layout(&format!("Latency vs {load_column}"))
        .x_axis(Axis::new().title(load_column))
        .y_axis(Axis::new().title("seconds"));
    if let Some(knee) = knee {
        let dashed = |color: &str| {
            ShapeLine::new()
                .color(color.to_owned())
                .dash(DashType::Dash)
                .width(2.0)
        };
        chart_layout = chart_layout.shapes(vec![
            Shape::new()
                .shape_type(ShapeType::Line)
                .x_ref("paper")
                .x0(0.0)
                .x1(1.0)
                .y0(knee.slo_s)
                .y1(knee.slo_s)
                .line(dashed("gray"))
                .name("SLO"),
            Shape::new()
                .shape_type(ShapeType::Line)
                .y_ref("paper")
                .x0(knee.load)
                .x1(knee.load)
                .y0(0.0)
                .y1(1.0)
                .line(dashed("firebrick"))
                .name("knee"),
        ]);
        chart_layout = chart_layout.title(Title::with_text(format!(
            "Latency vs {load_column}; knee at {:.3} for a {} s objective",
            knee.load, knee.slo_s
        )));
    }
    Ok(plot(traces, chart_layout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_axis_keeps_a_floor() {
        assert_eq!(error_rate_axis_max(&[0.0, 0.0]), 0.05);
        assert_eq!(error_rate_axis_max(&[]), 0.05);
        assert!((error_rate_axis_max(&[0.1, 0.5]) - 0.6).abs() < 1e-12);
        assert!((error_rate_axis_max(&[f64::NAN, 0.5]) - 0.6).abs() < 1e-12);
    }
}
