//! Notebook display for the evcxr Jupyter kernel: DataFrames as HTML tables, charts drawn with
//! no network access, and the lab's parameters from the environment.
//!
//! # How evcxr displays a value
//!
//! When the last expression of a cell has a method named `evcxr_display`, evcxr calls it; with
//! [`NotebookDisplay`] in scope, a [`DataFrame`], a [`Chart`] and [`PlotlyJs`] have one. The
//! method prints one block per MIME type to stdout:
//!
//! ```text
//! EVCXR_BEGIN_CONTENT text/html
//! <table>...</table>
//! EVCXR_END_CONTENT
//! ```
//!
//! evcxr 0.22.0 collects every block that a cell prints into one map from MIME type to content
//! and sends that map as the cell's single result once the cell finishes, after the stdout it
//! streamed while running (`run_and_capture_output` in its `eval_context.rs`). Blocks printed back
//! to back therefore become one output with several representations, which is what a chart
//! needs. It also means that a cell shows at most one table or chart, because a second block of
//! the same MIME type replaces the first. Content of a MIME type whose name contains `json` is
//! parsed as JSON.
//!
//! # Charts with no network
//!
//! A plotly chart can reach the page in three ways, and each fails somewhere:
//!
//! - The Plotly MIME type `application/vnd.plotly.v1+json`, which `plotly::Plot::evcxr_display`
//!   emits. JupyterLab draws it with the plotly.js that the Python `plotly` package's extension
//!   ships, offline and even in a notebook that is not trusted. nbconvert has no renderer for it,
//!   so an exported HTML page drops the chart.
//! - HTML with plotly.js inline: it works everywhere, but plotly.js is 4.6 MB, so the lab's eight
//!   charts would save a notebook of about 37 MB.
//! - HTML that loads plotly.js from a CDN (`plotly::Plot::notebook_display`): blank offline.
//!
//! This module combines the first two. [`PlotlyJs`], displayed once near the top of a notebook,
//! emits plotly.js in a `<script>` element. Every [`Chart`] emits the Plotly MIME type together
//! with a small HTML fallback: a `<div>` and a script that draws the figure into it when
//! `window.Plotly` exists. JupyterLab prefers the Plotly MIME type; an exported HTML page runs
//! the loader's script first and then each chart's. A notebook therefore carries plotly.js once,
//! plus a few kilobytes per chart. JupyterLab runs the scripts of HTML outputs only in trusted
//! notebooks (those executed in the browser session), so where neither renderer can draw, the
//! fallback `<div>` shows a sentence that says what to do.
//!
//! The functions that build the payloads ([`MimeBundle::to_evcxr_protocol`], [`chart_bundle`],
//! [`table_bundle`], [`plotly_js_bundle`]) return strings and print nothing; only
//! [`NotebookDisplay::evcxr_display`] prints.

use std::collections::HashMap;
use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use plotly::common::{Marker, Mode, Title};
use plotly::histogram::Bins;
use plotly::layout::themes::BuiltinTheme;
use plotly::layout::{Axis, Layout};
use plotly::{Histogram, Plot, Scatter};
use polars::prelude::{Column, DataFrame, PolarsResult};

use crate::display::{escape_html, frame_to_html, plotly_js, script_safe_json};
use crate::frames::column_f64;
use crate::lab::{Estimate, LabParams};
use crate::load::LoadRun;
use crate::target::Target;

/// The MIME type of a plotly figure (`{"data": [...], "layout": {...}}`) in Jupyter.
pub const PLOTLY_MIME: &str = "application/vnd.plotly.v1+json";
/// The MIME type of HTML output.
pub const HTML_MIME: &str = "text/html";
/// The MIME type of plain-text output.
pub const TEXT_MIME: &str = "text/plain";

/// The environment variable that selects [`LabParams::quick`] when set to `1`, `true` or `yes`.
pub const QUICK_ENV: &str = "INFPHYS_QUICK";

/// The line that opens a block of evcxr's display protocol, before the MIME type.
const BEGIN_CONTENT: &str = "EVCXR_BEGIN_CONTENT";
/// The line that closes a block of evcxr's display protocol.
const END_CONTENT: &str = "EVCXR_END_CONTENT";

/// The sentence a chart's HTML fallback shows until plotly.js draws over it.
const CHART_MISSING_NOTE: &str = "This chart is drawn by plotly.js, which has not run here. \
     Run the notebook's first cell, which loads plotly.js, and then this cell again; or trust \
     the notebook in JupyterLab.";

/// One output with several representations of the same value, keyed by MIME type, in the
/// order a front end should prefer them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MimeBundle {
    entries: Vec<(String, String)>,
}

impl MimeBundle {
    /// An empty bundle.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a representation; a later one of the same MIME type replaces the earlier one, as
    /// evcxr does.
    pub fn with(mut self, mime: &str, content: impl Into<String>) -> Self {
        let content = content.into();
        match self.entries.iter_mut().find(|(m, _)| m == mime) {
            Some(entry) => entry.1 = content,
            None => self.entries.push((mime.to_owned(), content)),
        }
        self
    }

    /// The content of `mime`, if the bundle has it.
    pub fn get(&self, mime: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(m, _)| m == mime)
            .map(|(_, content)| content.as_str())
    }

    /// The MIME types in the bundle, in order.
    pub fn mime_types(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(mime, _)| mime.as_str())
    }

    /// Renders the bundle in evcxr's display protocol: one `EVCXR_BEGIN_CONTENT` block per MIME
    /// type, each closed by an `EVCXR_END_CONTENT` line.
    ///
    /// evcxr ends a block at the first line that is exactly `EVCXR_END_CONTENT`, so such a line
    /// inside the content gets a trailing space.
    pub fn to_evcxr_protocol(&self) -> String {
        let mut out = String::new();
        for (mime, content) in &self.entries {
            out.push_str(BEGIN_CONTENT);
            out.push(' ');
            out.push_str(mime);
            out.push('\n');
            for line in content.lines() {
                out.push_str(line);
                if line == END_CONTENT {
                    out.push(' ');
                }
                out.push('\n');
            }
            out.push_str(END_CONTENT);
            out.push('\n');
        }
        out
    }
}

/// A value that a Jupyter front end can show richly.
///
/// Bring the trait into scope (`use infphys::notebook::NotebookDisplay;`) and evcxr shows a
/// cell's last expression through [`NotebookDisplay::evcxr_display`].
pub trait NotebookDisplay {
    /// The representations of `self`.
    fn mime_bundle(&self) -> MimeBundle;

    /// Prints [`NotebookDisplay::mime_bundle`] in evcxr's display protocol.
    fn evcxr_display(&self) {
        let payload = self.mime_bundle().to_evcxr_protocol();
        let mut out = std::io::stdout().lock();
        // Write errors are ignored, because a closed stdout means no front end is reading.
        let _ = out.write_all(payload.as_bytes());
        let _ = out.flush();
    }
}

/// Builds a table's bundle: the HTML table of [`frame_to_html`] and polars' text rendering.
pub fn table_bundle(df: &DataFrame) -> MimeBundle {
    let html = format!(
        "<div class=\"infphys-table-wrap\" style=\"overflow-x:auto\">\n{}\n</div>",
        frame_to_html(df)
    );
    MimeBundle::new()
        .with(HTML_MIME, html)
        .with(TEXT_MIME, df.to_string())
}

impl NotebookDisplay for DataFrame {
    fn mime_bundle(&self) -> MimeBundle {
        table_bundle(self)
    }
}

/// A plotly chart to show in a notebook, with a fallback for pages without the Plotly renderer;
/// see the module documentation.
///
/// `plotly::Plot` has an `evcxr_display` method of its own, which emits only the Plotly MIME
/// type, so a chart is wrapped before it is shown: `Chart(charts::latency_box(&df, "...")?)`.
#[derive(Clone)]
pub struct Chart(pub Plot);

impl From<Plot> for Chart {
    fn from(plot: Plot) -> Self {
        Self(plot)
    }
}

impl NotebookDisplay for Chart {
    fn mime_bundle(&self) -> MimeBundle {
        chart_bundle(&self.0, &next_chart_id())
    }
}

/// Builds a chart's bundle: the figure as Plotly JSON, and HTML that draws the same figure into
/// a `<div id="{id}">` with the page's plotly.js, or shows a sentence saying how to get it.
pub fn chart_bundle(plot: &Plot, id: &str) -> MimeBundle {
    let json = plot.to_json();
    let id = escape_html(id);
    let html = format!(
        "<div id=\"{id}\" class=\"infphys-chart\" style=\"min-height:420px;width:100%\">\
         <p style=\"color:#888\">{CHART_MISSING_NOTE}</p></div>\n\
         <script type=\"text/javascript\">\n\
         (function () {{\n\
         var div = document.getElementById(\"{id}\");\n\
         if (!div || !window.Plotly) {{ return; }}\n\
         div.innerHTML = \"\";\n\
         window.Plotly.newPlot(div, {figure});\n\
         }})();\n\
         </script>",
        figure = script_safe_json(&json),
    );
    MimeBundle::new()
        .with(PLOTLY_MIME, json)
        .with(HTML_MIME, html)
        .with(TEXT_MIME, format!("chart {}", chart_title(plot)))
}

/// The chart's title, or `(untitled)`.
fn chart_title(plot: &Plot) -> String {
    let figure: serde_json::Value = serde_json::from_str(&plot.to_json()).unwrap_or_default();
    let title = &figure["layout"]["title"];
    title["text"]
        .as_str()
        .or_else(|| title.as_str())
        .unwrap_or("(untitled)")
        .to_owned()
}

/// A fresh `id` for a chart's `<div>`, unique within this process and, through the process's
/// start time, across the kernel sessions whose outputs share one saved notebook.
fn next_chart_id() -> String {
    static SESSION: OnceLock<u128> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let session = SESSION.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos())
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("infphys-chart-{session:x}-{n}")
}

/// plotly.js, loaded once per notebook so that every [`Chart`]'s HTML fallback can draw; see the
/// module documentation. Display it as the last expression of the notebook's first cell.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlotlyJs;

impl NotebookDisplay for PlotlyJs {
    fn mime_bundle(&self) -> MimeBundle {
        plotly_js_bundle()
    }
}

/// Builds the loader's bundle: plotly.js in a `<script>` element, and a sentence stating that it
/// is loaded, as HTML and as text.
pub fn plotly_js_bundle() -> MimeBundle {
    let js = plotly_js();
    let note = format!(
        "plotly.js {} is loaded for this notebook's charts, with no network access.",
        plotly_js_version(js)
    );
    let html = format!(
        "<script type=\"text/javascript\">\n{}\n</script>\n<p class=\"infphys-plotly-loaded\">{}</p>",
        js.replace("</script", "<\\/script"),
        escape_html(&note)
    );
    MimeBundle::new()
        .with(HTML_MIME, html)
        .with(TEXT_MIME, note)
}

/// The version in plotly.js's banner comment (`plotly.js v3.0.1`), or `(unknown version)`.
fn plotly_js_version(js: &str) -> &str {
    js.find("plotly.js v")
        .map(|start| &js[start + "plotly.js ".len()..])
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("(unknown version)")
}

/// The lab's parameters: [`LabParams::quick`] when `INFPHYS_QUICK` is `1`, `true` or `yes`,
/// otherwise [`LabParams::default`], the original lab's values.
pub fn lab_params() -> LabParams {
    lab_params_for(std::env::var(QUICK_ENV).ok().as_deref())
}

/// The lab's parameters for a value of `INFPHYS_QUICK`; see [`lab_params`].
pub fn lab_params_for(quick: Option<&str>) -> LabParams {
    let quick = quick.map(|v| v.trim().to_ascii_lowercase());
    match quick.as_deref() {
        Some("1" | "true" | "yes") => LabParams::quick(),
        _ => LabParams::default(),
    }
}

/// Formats the line a long cell prints before it starts: how long the section should take, from
/// `estimate` in server time (see [`LabParams::estimate_sweep`]), and, against a sped-up
/// simulator, how long that is here in wall-clock time.
pub fn expected_duration(estimate: Estimate, target: &Target) -> String {
    expected_duration_at(estimate, target.time_scale())
}

fn expected_duration_at(estimate: Estimate, time_scale: f64) -> String {
    if time_scale == 1.0 {
        return format!("This section should take {estimate}.");
    }
    let wall = Estimate {
        low: estimate.low.div_f64(time_scale),
        high: estimate.high.div_f64(time_scale),
    };
    format!(
        "This section should take {estimate} of server time, {wall} here at the simulator's \
         time scale of {time_scale}."
    )
}

/// Returns whether `INFPHYS_QUICK` selects quick mode, read as [`lab_params`] reads it, for
/// notebooks that size their own measurements.
pub fn quick_mode() -> bool {
    lab_params() == LabParams::quick()
}

/// Builds a line chart of each of `y_columns` against `x_column` of `frame`, for the summary
/// columns that [`crate::charts`] has no builder for (time to first token, goodput, Little's
/// law). A missing or non-finite value leaves a gap in its line.
pub fn line_chart(
    frame: &DataFrame,
    x_column: &str,
    y_columns: &[&str],
    title: &str,
    y_title: &str,
) -> PolarsResult<Plot> {
    let x = column_f64(frame, x_column)?;
    let mut plot = Plot::new();
    for &name in y_columns {
        let (xs, ys) = finite_points(&x, &column_f64(frame, name)?);
        plot.add_trace(Scatter::new(xs, ys).name(name).mode(Mode::LinesMarkers));
    }
    plot.set_layout(xy_layout(title, x_column, y_title));
    Ok(plot)
}

/// Builds a scatter chart of `y_column` against `x_column`, one trace of markers per named
/// frame, such as time to first token against send time for two runs.
pub fn scatter_chart(
    frames: &[(&str, &DataFrame)],
    x_column: &str,
    y_column: &str,
    title: &str,
    y_title: &str,
) -> PolarsResult<Plot> {
    let mut plot = Plot::new();
    for &(name, frame) in frames {
        let (xs, ys) = finite_points(&column_f64(frame, x_column)?, &column_f64(frame, y_column)?);
        plot.add_trace(
            Scatter::new(xs, ys)
                .name(name)
                .mode(Mode::Markers)
                .marker(Marker::new().size(4)),
        );
    }
    plot.set_layout(xy_layout(title, x_column, y_title));
    Ok(plot)
}

/// Builds overlaid histograms of `column` over every row of each named frame, failures
/// included, in bins of `bin_width`: for example attempts per second of `sent_s`, the load a
/// client puts on the server.
pub fn count_histogram(
    frames: &[(&str, &DataFrame)],
    column: &str,
    bin_width: f64,
    title: &str,
) -> PolarsResult<Plot> {
    let mut plot = Plot::new();
    for &(name, frame) in frames {
        let values: Vec<f64> = column_f64(frame, column)?
            .into_iter()
            .filter(|v| v.is_finite())
            .collect();
        let end = values.iter().copied().fold(0.0, f64::max) + bin_width;
        plot.add_trace(
            Histogram::new(values)
                .name(name)
                .opacity(0.6)
                .x_bins(Bins::new(0.0, end, bin_width)),
        );
    }
    plot.set_layout(
        xy_layout(title, column, "rows per bin").bar_mode(plotly::layout::BarMode::Overlay),
    );
    Ok(plot)
}

fn xy_layout(title: &str, x_title: &str, y_title: &str) -> Layout {
    Layout::new()
        .title(Title::with_text(title))
        .template(BuiltinTheme::PlotlyWhite.build())
        .height(420)
        .x_axis(Axis::new().title(x_title))
        .y_axis(Axis::new().title(y_title))
}

fn finite_points(x: &[f64], y: &[f64]) -> (Vec<f64>, Vec<f64>) {
    x.iter()
        .zip(y)
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|(x, y)| (*x, *y))
        .unzip()
}

/// Summarizes runs whose client retried, one row per named run: `requests` sent, `attempts` in
/// all, `attempts_per_request`, `failed_requests` (no attempt succeeded) and their
/// `request_error_rate`, the `attempt_error_rate` the server returned, and `attempts_per_s`, the
/// rate of attempts over the run's wall time.
pub fn retry_frame(runs: &[(&str, &LoadRun)]) -> PolarsResult<DataFrame> {
    let mut requests = Vec::new();
    let mut attempts = Vec::new();
    let mut failed = Vec::new();
    let mut failed_attempts = Vec::new();
    let mut wall_s = Vec::new();
    for (_, run) in runs {
        let mut succeeded: HashMap<u64, bool> = HashMap::new();
        for record in &run.records {
            *succeeded.entry(record.request_id).or_default() |= record.ok();
        }
        requests.push(succeeded.len() as u64);
        attempts.push(run.records.len() as u64);
        failed.push(succeeded.values().filter(|ok| !**ok).count() as u64);
        failed_attempts.push(run.records.iter().filter(|r| !r.ok()).count() as u64);
        wall_s.push(run.wall.as_secs_f64());
    }
    let ratio = |a: &[u64], b: &[u64]| -> Vec<f64> {
        a.iter()
            .zip(b)
            .map(|(&a, &b)| if b > 0 { a as f64 / b as f64 } else { f64::NAN })
            .collect()
    };
    let per_second: Vec<f64> = attempts
        .iter()
        .zip(&wall_s)
        .map(|(&n, &s)| if s > 0.0 { n as f64 / s } else { f64::NAN })
        .collect();
    DataFrame::new_infer_height(vec![
        Column::new(
            "run".into(),
            runs.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
        ),
        Column::new("requests".into(), requests.clone()),
        Column::new("attempts".into(), attempts.clone()),
        Column::new("attempts_per_request".into(), ratio(&attempts, &requests)),
        Column::new("failed_requests".into(), failed.clone()),
        Column::new("request_error_rate".into(), ratio(&failed, &requests)),
        Column::new(
            "attempt_error_rate".into(),
            ratio(&failed_attempts, &attempts),
        ),
        Column::new("wall_s".into(), wall_s),
        Column::new("attempts_per_s".into(), per_second),
    ])
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use plotly::{Layout, Scatter};
    use polars::prelude::*;

    use super::*;

    fn sample_plot() -> Plot {
        let mut plot = Plot::new();
        plot.add_trace(Scatter::new(vec![1, 2, 4], vec![0.5, 0.7, 1.9]).name("p95_s"));
        plot.set_layout(Layout::new().title("Latency </script> vs concurrency"));
        plot
    }

    fn traces_of(plot: &Plot) -> Vec<serde_json::Value> {
        let json: serde_json::Value = serde_json::from_str(&plot.to_json()).unwrap();
        json["data"].as_array().unwrap().clone()
    }

    #[test]
    fn line_chart_skips_missing_points() {
        let frame = df!(
            "concurrency" => [1.0, 2.0, 4.0],
            "ttft_p50_s" => [Some(0.1), None, Some(0.4)],
            "ttft_p95_s" => [0.2, 0.3, f64::NAN],
        )
        .unwrap();
        let plot = line_chart(
            &frame,
            "concurrency",
            &["ttft_p50_s", "ttft_p95_s"],
            "t",
            "s",
        )
        .unwrap();
        let traces = traces_of(&plot);
        assert_eq!(traces.len(), 2);
        assert_eq!(traces[0]["name"], "ttft_p50_s");
        assert_eq!(traces[0]["x"], serde_json::json!([1.0, 4.0]));
        assert_eq!(traces[1]["y"], serde_json::json!([0.2, 0.3]));
        assert!(line_chart(&frame, "concurrency", &["absent"], "t", "s").is_err());
    }

    #[test]
    fn scatter_and_histogram_have_one_trace_per_frame() {
        let open = df!("sent_s" => [0.0, 0.5, 1.5], "ttft_s" => [0.1, 0.2, 0.3]).unwrap();
        let closed = df!("sent_s" => [0.0, 2.0], "ttft_s" => [0.1, f64::INFINITY]).unwrap();
        let frames = [("open", &open), ("closed", &closed)];

        let scatter = traces_of(&scatter_chart(&frames, "sent_s", "ttft_s", "t", "s").unwrap());
        assert_eq!(scatter.len(), 2);
        assert_eq!(
            scatter[1]["x"],
            serde_json::json!([0.0]),
            "non-finite points are left out"
        );

        let histogram = traces_of(&count_histogram(&frames, "sent_s", 1.0, "t").unwrap());
        assert_eq!(histogram.len(), 2);
        assert_eq!(histogram[0]["name"], "open");
        assert_eq!(histogram[0]["xbins"]["size"], 1.0);
        assert_eq!(histogram[0]["xbins"]["end"], 2.5);
    }

    #[test]
    fn retry_frame_counts_requests_and_attempts() {
        use crate::client::ErrorKind;
        use crate::load::RequestRecord;

        let attempt = |request_id, attempt, ok: bool| RequestRecord {
            request_id,
            attempt,
            http_status: Some(if ok { 200 } else { 429 }),
            error_kind: (!ok).then_some(ErrorKind::HttpStatus),
            ..RequestRecord::default()
        };
        // Request 0 succeeds at once, request 1 on its second attempt, request 2 never.
        let run = LoadRun {
            concurrency: 2,
            total_requests: 3,
            timeout: Duration::from_secs(5),
            wall: Duration::from_secs(2),
            records: vec![
                attempt(0, 1, true),
                attempt(1, 1, false),
                attempt(1, 2, true),
                attempt(2, 1, false),
                attempt(2, 2, false),
            ],
            target: "sim".into(),
            offered_rps: None,
            interrupted: false,
        };
        let frame = retry_frame(&[("with retries", &run)]).unwrap();
        let value = |name: &str| frame.column(name).unwrap().as_materialized_series().clone();
        assert_eq!(value("requests").u64().unwrap().get(0), Some(3));
        assert_eq!(value("attempts").u64().unwrap().get(0), Some(5));
        assert_eq!(value("failed_requests").u64().unwrap().get(0), Some(1));
        assert_eq!(value("attempt_error_rate").f64().unwrap().get(0), Some(0.6));
        assert_eq!(value("attempts_per_s").f64().unwrap().get(0), Some(2.5));
    }

    #[test]
    fn protocol_wraps_each_mime_type() {
        let bundle = MimeBundle::new()
            .with(HTML_MIME, "<b>x</b>\n<i>y</i>")
            .with(TEXT_MIME, "x y");
        assert_eq!(
            bundle.to_evcxr_protocol(),
            "EVCXR_BEGIN_CONTENT text/html\n<b>x</b>\n<i>y</i>\nEVCXR_END_CONTENT\n\
             EVCXR_BEGIN_CONTENT text/plain\nx y\nEVCXR_END_CONTENT\n"
        );
    }

    #[test]
    fn protocol_escapes_end_marker_in_content() {
        let bundle = MimeBundle::new().with(TEXT_MIME, "a\nEVCXR_END_CONTENT\nb");
        let protocol = bundle.to_evcxr_protocol();
        let bare_markers = protocol
            .lines()
            .filter(|line| *line == "EVCXR_END_CONTENT")
            .count();
        assert_eq!(bare_markers, 1, "{protocol}");
        assert!(protocol.contains("\nEVCXR_END_CONTENT \nb\n"), "{protocol}");
    }

    #[test]
    fn bundle_replaces_same_mime_type() {
        let bundle = MimeBundle::new()
            .with(TEXT_MIME, "first")
            .with(HTML_MIME, "<p>")
            .with(TEXT_MIME, "second");
        assert_eq!(bundle.get(TEXT_MIME), Some("second"));
        assert_eq!(
            bundle.mime_types().collect::<Vec<_>>(),
            [TEXT_MIME, HTML_MIME]
        );
    }

    #[test]
    fn table_bundle_has_html_and_text() {
        let df = df!("concurrency" => [1u32, 8], "p95_s" => [0.51, 2.25]).unwrap();
        let bundle = table_bundle(&df);
        let html = bundle.get(HTML_MIME).unwrap();
        assert!(
            html.contains("<th>concurrency</th><th>p95_s</th>"),
            "{html}"
        );
        assert!(html.contains("<td>8</td><td>2.2500</td>"), "{html}");
        assert!(bundle.get(TEXT_MIME).unwrap().contains("p95_s"));
        assert_eq!(bundle.get(PLOTLY_MIME), None);
    }

    #[test]
    fn chart_bundle_carries_json_and_fallback() {
        let plot = sample_plot();
        let bundle = chart_bundle(&plot, "chart-7");

        let json: serde_json::Value =
            serde_json::from_str(bundle.get(PLOTLY_MIME).unwrap()).unwrap();
        assert_eq!(json["data"][0]["name"], "p95_s");
        assert_eq!(json["data"][0]["x"], serde_json::json!([1, 2, 4]));

        let html = bundle.get(HTML_MIME).unwrap();
        assert!(html.contains("<div id=\"chart-7\""), "{html}");
        assert!(html.contains("getElementById(\"chart-7\")"), "{html}");
        assert!(html.contains("if (!div || !window.Plotly)"), "{html}");
        assert!(html.contains("Plotly.newPlot(div, {\"data\""), "{html}");
        assert!(html.contains(CHART_MISSING_NOTE), "{html}");
        assert_eq!(
            bundle.get(TEXT_MIME),
            Some("chart Latency </script> vs concurrency")
        );
    }

    #[test]
    fn chart_html_cannot_close_its_script() {
        let bundle = chart_bundle(&sample_plot(), "c");
        let html = bundle.get(HTML_MIME).unwrap();
        assert_eq!(html.matches("</script>").count(), 1, "{html}");
        assert!(
            html.contains("Latency <\\/script> vs concurrency"),
            "{html}"
        );
    }

    #[test]
    fn chart_html_loads_nothing_from_network() {
        let html = chart_bundle(&sample_plot(), "c")
            .get(HTML_MIME)
            .unwrap()
            .to_owned();
        assert!(!html.contains("src="), "{html}");
        assert!(!html.contains("http"), "{html}");
    }

    #[test]
    fn chart_ids_differ() {
        assert_ne!(next_chart_id(), next_chart_id());
    }

    #[test]
    fn plotly_js_bundle_embeds_library_once() {
        let bundle = plotly_js_bundle();
        let html = bundle.get(HTML_MIME).unwrap();
        assert!(html.starts_with("<script type=\"text/javascript\">\n"));
        assert_eq!(html.matches("</script>").count(), 1);
        assert!(!html.contains("<script src"), "the loader must not fetch");
        assert!(html.len() > plotly_js().len());
        assert!(html.len() < plotly_js().len() + 1_000);
        let text = bundle.get(TEXT_MIME).unwrap();
        assert!(text.starts_with("plotly.js v3."), "{text}");
    }

    #[test]
    fn version_read_from_banner() {
        assert_eq!(
            plotly_js_version("/**\n* plotly.js v3.0.1\n* Copyright"),
            "v3.0.1"
        );
        assert_eq!(plotly_js_version("var x;"), "(unknown version)");
    }

    #[test]
    fn duration_line_at_full_speed() {
        let estimate = Estimate {
            low: Duration::from_secs(120),
            high: Duration::from_secs(600),
        };
        assert_eq!(
            expected_duration_at(estimate, 1.0),
            format!("This section should take {estimate}.")
        );
    }

    #[test]
    fn duration_line_converts_scaled_time() {
        let estimate = Estimate {
            low: Duration::from_secs(100),
            high: Duration::from_secs(500),
        };
        let wall = Estimate {
            low: Duration::from_secs(2),
            high: Duration::from_secs(10),
        };
        let line = expected_duration_at(estimate, 50.0);
        assert!(
            line.starts_with(&format!(
                "This section should take {estimate} of server time"
            )),
            "{line}"
        );
        assert!(
            line.ends_with(&format!("{wall} here at the simulator's time scale of 50.")),
            "{line}"
        );
    }

    #[test]
    fn quick_params_selected_by_env_value() {
        assert_eq!(lab_params_for(None), LabParams::default());
        assert_eq!(lab_params_for(Some("0")), LabParams::default());
        assert_eq!(lab_params_for(Some("")), LabParams::default());
        for yes in ["1", "true", "YES", " yes "] {
            assert_eq!(lab_params_for(Some(yes)), LabParams::quick(), "{yes:?}");
        }
    }
}

/// Environment variable naming the folder where measuring cells journal their rows.
pub const JOURNAL_DIR_ENV: &str = "INFPHYS_JOURNAL_DIR";

/// The journal file of this kernel: `measured-rows/kernel-PID.jsonl` beside the notebook, or
/// in the folder `INFPHYS_JOURNAL_DIR` names.
///
/// An interrupted cell kills the kernel's process and every variable in it; the rows it had
/// measured are still in this file, and [`recover`] loads them in the next cell. A new process
/// has a new id, so it starts a new file instead of mixing runs.
pub fn journal_path() -> std::path::PathBuf {
    journal_dir().join(format!("kernel-{}.jsonl", std::process::id()))
}

fn journal_dir() -> std::path::PathBuf {
    std::env::var_os(JOURNAL_DIR_ENV)
        .map_or_else(|| "measured-rows".into(), std::path::PathBuf::from)
}

/// Rows recovered from the journal of an earlier kernel process.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The journal the rows come from.
    pub path: std::path::PathBuf,
    /// Its rows and runs; the runs cut short are marked partial.
    pub contents: crate::journal::JournalContents,
}

impl Recovered {
    /// Returns one line that names the file, the row count and each partial run.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "recovered {} rows of {} runs from {}",
            self.contents.requests.height(),
            self.contents.runs.height(),
            self.path.display()
        );
        let partial = self.contents.partial_runs();
        if partial.is_empty() {
            text.push_str("; every run in it finished");
        } else {
            let runs: Vec<String> = partial
                .iter()
                .map(|(label, done, planned)| match planned {
                    Some(planned) => format!("{label} ({done} of {planned} requests)"),
                    None => format!("{label} ({done} requests)"),
                })
                .collect();
            text.push_str(&format!("; partial: {}", runs.join(", ")));
        }
        text
    }
}

impl NotebookDisplay for Recovered {
    fn mime_bundle(&self) -> MimeBundle {
        let table = table_bundle(&self.contents.runs);
        let html = format!(
            "<p>{}</p>\n{}",
            crate::display::escape_html(&self.describe()),
            table.get("text/html").unwrap_or_default()
        );
        MimeBundle::new().with("text/html", html).with(
            "text/plain",
            format!("{}\n{}", self.describe(), self.contents.runs),
        )
    }
}

/// Loads the rows measured by the kernel process before this one: after an interrupted cell
/// (which ends the process), the next cell calls this to get every finished request back, with
/// the run that was cut short marked partial.
///
/// It reads the most recently written journal under `measured-rows/` (or the folder
/// `INFPHYS_JOURNAL_DIR` names) other than this process's own.
pub fn recover() -> crate::Result<Recovered> {
    recover_from(&journal_dir(), &journal_path())
}

fn recover_from(dir: &std::path::Path, own: &std::path::Path) -> crate::Result<Recovered> {
    let entries = std::fs::read_dir(dir).map_err(|source| crate::Error::Io {
        action: "failed to list the journal folder",
        path: dir.display().to_string(),
        source,
    })?;
    let newest = entries
        .filter_map(std::result::Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl") && path != own)
        .filter_map(|path| Some((std::fs::metadata(&path).ok()?.modified().ok()?, path)))
        .max_by_key(|(modified, _)| *modified);
    let Some((_, path)) = newest else {
        return Err(crate::error::invalid(
            "journal folder",
            dir.display(),
            "expected a journal from an earlier kernel there; run a measuring cell first, or \
             set INFPHYS_JOURNAL_DIR to the folder that has one",
        ));
    };
    let contents = crate::journal::read_journal(&path)?;
    Ok(Recovered { path, contents })
}

/// Builds a client for a measuring cell: [`crate::blocking::client`] with every finished request
/// appended to [`journal_path`] as it arrives.
pub fn client(target: &Target) -> crate::Result<crate::Client> {
    let journal = crate::journal::Journal::open(journal_path())?;
    Ok(crate::blocking::client(target.clone())?.with_journal(journal))
}

#[cfg(test)]
mod journal_tests {
    use super::*;

    #[test]
    fn recover_reads_newest_other_journal() {
        let dir = std::env::temp_dir().join(format!("infphys-recover-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let own = dir.join("kernel-own.jsonl");

        let message = recover_from(&dir, &own).unwrap_err().to_string();
        assert!(message.contains("run a measuring cell first"), "{message}");

        let older = crate::journal::Journal::open(dir.join("kernel-1.jsonl")).unwrap();
        let id = older.start_run("baseline", "sim", 1).unwrap();
        older.finish_run(id, "baseline", false).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let newer = crate::journal::Journal::open(dir.join("kernel-2.jsonl")).unwrap();
        let id = newer.start_run("c=8", "sim", 80).unwrap();
        let row = crate::load::RequestRecord {
            http_status: Some(200),
            ..Default::default()
        };
        newer.append(id, "c=8", "sim", &[row]).unwrap();
        // This process's own journal is newest, and is never the one recovered.
        std::thread::sleep(std::time::Duration::from_millis(20));
        crate::journal::Journal::open(&own).unwrap();

        let recovered = recover_from(&dir, &own).unwrap();
        assert_eq!(recovered.path, dir.join("kernel-2.jsonl"));
        let description = recovered.describe();
        assert!(
            description.contains("recovered 1 rows of 1 runs"),
            "{description}"
        );
        assert!(
            description.contains("partial: c=8 (1 of 80 requests)"),
            "{description}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn journal_path_is_per_kernel_process() {
        let path = journal_path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(name, format!("kernel-{}.jsonl", std::process::id()));
    }
}
