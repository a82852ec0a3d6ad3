//! The lab's HTML report: every table and chart in one file that works offline.

use polars::prelude::*;

use crate::charts;
use crate::display::{chart_div, escape_html, frame_to_html, plotly_js};
use crate::lab::LabResults;

/// Renders the report for `results`; `target` is the line that says which server was measured.
///
/// plotly.js is embedded once, so the page draws its charts with no network access.
pub fn render_report(results: &LabResults, target: &str) -> PolarsResult<String> {
    let baseline_requests = results.baseline.requests_frame()?;
    let sweep_summary = results.sweep.summary_frame()?;
    let tokens = results.tokens.frame()?;
    let overload_summary = results.overload.summary_frame()?;
    let overload_timeout_s = results
        .overload
        .runs
        .first()
        .map_or(0.0, |r| r.timeout.as_secs_f64());

    let mut body = String::new();
    body.push_str(&format!(
        "<h1>Inference physics lab</h1>\n<p class=\"target\">{}</p>\n",
        escape_html(target)
    ));

    section(
        &mut body,
        "Baseline: single-request latency",
        "Sequential requests, one at a time: the noise floor before any concurrency.",
        &results.baseline.latency_summary_frame()?,
    );
    body.push_str(&chart_div(
        &charts::latency_histogram(&baseline_requests, "Baseline latency histogram")?,
        "baseline-histogram",
    ));
    body.push_str(&chart_div(
        &charts::latency_box(&baseline_requests, "Baseline latency box plot")?,
        "baseline-box",
    ));

    section(
        &mut body,
        "Concurrency sweep: the p95 cliff",
        "Throughput rises and then flattens; the tail percentiles climb once requests queue.",
        &sweep_summary,
    );
    body.push_str(&chart_div(
        &charts::latency_vs_concurrency(&sweep_summary)?,
        "sweep-latency",
    ));
    body.push_str(&chart_div(
        &charts::throughput_vs_concurrency(&sweep_summary)?,
        "sweep-throughput",
    ));
    body.push_str(&chart_div(
        &charts::error_rate_bars(&sweep_summary)?,
        "sweep-errors",
    ));

    section(
        &mut body,
        "Token budget: generation dominates",
        "p95 latency for each prompt size and max_tokens.",
        &tokens,
    );
    body.push_str(&chart_div(
        &charts::p95_vs_max_tokens(&tokens)?,
        "tokens-lines",
    ));
    body.push_str(&chart_div(&charts::p95_heatmap(&tokens)?, "tokens-heatmap"));

    section(
        &mut body,
        "Overload: backpressure and timeouts",
        "A short timeout and rising concurrency: queueing first, then failures.",
        &overload_summary,
    );
    body.push_str(&chart_div(
        &charts::overload_chart(&overload_summary, overload_timeout_s)?,
        "overload",
    ));

    Ok(format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>Inference physics lab report</title>\n<style>{STYLE}</style>\n\
         <script type=\"text/javascript\">{js}</script>\n</head>\n<body>\n{body}</body>\n</html>\n",
        js = plotly_js(),
    ))
}

fn section(body: &mut String, title: &str, note: &str, table: &DataFrame) {
    body.push_str(&format!(
        "<h2>{}</h2>\n<p>{}</p>\n{}\n",
        escape_html(title),
        escape_html(note),
        frame_to_html(table)
    ));
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;max-width:1100px}\
table{border-collapse:collapse;font-size:0.85rem;margin:0.5rem 0 1rem}\
th,td{border:1px solid #ccc;padding:0.2rem 0.5rem;text-align:right}\
th{background:#f3f3f3}.target{font-weight:bold}";
