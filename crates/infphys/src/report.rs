//! HTML reports: tables and charts in one file that works offline.
//!
//! [`Report`] assembles sections; [`render_report`] builds the lab's report from its four
//! sections. plotly.js is embedded once per page, so the charts draw with no network access.

use plotly::Plot;
use polars::prelude::*;

use crate::calibration::Calibration;
use crate::charts;
use crate::display::{chart_div, escape_html, frame_to_html, plotly_js};
use crate::lab::LabResults;

/// An HTML report under construction.
#[derive(Debug, Clone, Default)]
pub struct Report {
    body: String,
    charts: usize,
}

impl Report {
    /// Starts a report with a title and the line that says which server was measured.
    pub fn new(title: &str, target: &str) -> Self {
        let mut report = Self::default();
        report.body.push_str(&format!(
            "<h1>{}</h1>\n<p class=\"target\">{}</p>\n",
            escape_html(title),
            escape_html(target)
        ));
        report
    }

    /// Adds the client's calibration, so a reader knows what differences the client resolves.
    pub fn calibration(&mut self, calibration: &Calibration) -> &mut Self {
        self.body.push_str(&format!(
            "<p class=\"calibration\">{}</p>\n",
            escape_html(&calibration.to_string())
        ));
        self
    }

    /// Adds a section heading, a sentence on what to look for, and a table.
    pub fn section(&mut self, title: &str, note: &str, table: &DataFrame) -> &mut Self {
        self.body.push_str(&format!(
            "<h2>{}</h2>\n<p>{}</p>\n{}\n",
            escape_html(title),
            escape_html(note),
            frame_to_html(table)
        ));
        self
    }

    /// Adds a paragraph of text.
    pub fn paragraph(&mut self, text: &str) -> &mut Self {
        self.body
            .push_str(&format!("<p>{}</p>\n", escape_html(text)));
        self
    }

    /// Adds a chart.
    pub fn chart(&mut self, plot: &Plot) -> &mut Self {
        self.charts += 1;
        self.body
            .push_str(&chart_div(plot, &format!("chart-{}", self.charts)));
        self
    }

    /// Renders the whole page.
    pub fn render(&self) -> String {
        format!(
            "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <title>Inference physics report</title>\n<style>{STYLE}</style>\n\
             <script type=\"text/javascript\">{js}</script>\n</head>\n<body>\n{body}</body>\n</html>\n",
            js = plotly_js(),
            body = self.body,
        )
    }
}

/// Renders the lab's report for `results`; `target` is the line that says which server was
/// measured. A lab cut short by a stop signal gets a note saying so, the sections it measured,
/// and tables whose `partial` column marks the run that was interrupted.
pub fn render_report(
    results: &LabResults,
    target: &str,
    calibration: Option<&Calibration>,
) -> PolarsResult<String> {
    let mut report = Report::new("Inference physics lab", target);
    if let Some(calibration) = calibration {
        report.calibration(calibration);
    }
    if results.is_partial() {
        let missing: Vec<&str> = [
            ("baseline", results.baseline.is_none()),
            ("concurrency sweep", results.sweep.is_none()),
            ("token budget", results.tokens.is_none()),
            ("overload", results.overload.is_none()),
        ]
        .into_iter()
        .filter_map(|(name, missing)| missing.then_some(name))
        .collect();
        let mut note = String::from(
            "Interrupted: the lab was stopped before it finished. Every request that finished \
             is here, and rows whose partial column is true come from a run that was cut short.",
        );
        if !missing.is_empty() {
            note.push_str(&format!(" Not measured: {}.", missing.join(", ")));
        }
        report.paragraph(&note);
    }

    if let Some(baseline) = &results.baseline {
        let baseline_requests = baseline.requests_frame()?;
        report
            .section(
                "Baseline: single-request latency",
                "Sequential requests, one at a time: the noise floor before any concurrency.",
                &baseline.latency_summary_frame()?,
            )
            .chart(&charts::latency_histogram(
                &baseline_requests,
                "Baseline latency histogram",
            )?)
            .chart(&charts::latency_box(
                &baseline_requests,
                "Baseline latency box plot",
            )?);
    }
    if let Some(sweep) = &results.sweep {
        let sweep_summary = sweep.summary_frame()?;
        report
            .section(
                "Concurrency sweep: the p95 cliff",
                "Throughput rises and then flattens; the tail percentiles climb once requests queue.",
                &sweep_summary,
            )
            .chart(&charts::latency_vs_concurrency(&sweep_summary)?)
            .chart(&charts::throughput_vs_concurrency(&sweep_summary)?)
            .chart(&charts::error_rate_bars(&sweep_summary)?);
    }
    if let Some(tokens) = &results.tokens {
        let tokens = tokens.frame()?;
        report
            .section(
                "Token budget: generation dominates",
                "p95 latency for each prompt size and max_tokens.",
                &tokens,
            )
            .chart(&charts::p95_vs_max_tokens(&tokens)?)
            .chart(&charts::p95_heatmap(&tokens)?);
    }
    if let Some(overload) = &results.overload {
        let overload_summary = overload.summary_frame()?;
        let overload_timeout_s = overload
            .runs
            .first()
            .map_or(0.0, |r| r.timeout.as_secs_f64());
        report
            .section(
                "Overload: backpressure and timeouts",
                "A short timeout and rising concurrency: queueing first, then failures. \
                 throughput_rps counts failed requests too, as the original lab does, so it rises \
                 with the error rate; ok divided by wall_s is the rate of successful requests.",
                &overload_summary,
            )
            .chart(&charts::overload_chart(
                &overload_summary,
                overload_timeout_s,
            )?);
    }
    Ok(report.render())
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;max-width:1100px}\
table{border-collapse:collapse;font-size:0.8rem;margin:0.5rem 0 1rem;display:block;overflow-x:auto}\
th,td{border:1px solid #ccc;padding:0.2rem 0.5rem;text-align:right}\
th{background:#f3f3f3}.target{font-weight:bold}.calibration{color:#555}";
