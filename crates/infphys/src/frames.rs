//! DataFrame builders for runs, sweeps and the token-budget grid.
//!
//! Column names come from [`crate::schema`]; seconds are `f64`, and statistics that do not exist
//! (the percentiles of a run in which every request failed) are null.

use polars::prelude::*;

use crate::load::{LoadRun, LoadSummary, RequestRecord, Sweep, TokenBudget};
use crate::schema::*;
use crate::stats::LatencyStats;

fn seconds(d: Option<std::time::Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64())
}

fn frame(columns: Vec<Column>) -> PolarsResult<DataFrame> {
    DataFrame::new_infer_height(columns)
}

/// Builds the per-request frame of `records`, labelled with `target`.
pub fn requests_frame(records: &[RequestRecord], target: &str) -> PolarsResult<DataFrame> {
    let column = |name: &str, values: Series| -> Column { values.with_name(name.into()).into() };
    let series_f64 = |f: &dyn Fn(&RequestRecord) -> f64| {
        Series::new("".into(), records.iter().map(f).collect::<Vec<_>>())
    };
    let series_opt_f64 = |f: &dyn Fn(&RequestRecord) -> Option<f64>| {
        Series::new("".into(), records.iter().map(f).collect::<Vec<_>>())
    };
    let series_opt_u32 = |f: &dyn Fn(&RequestRecord) -> Option<u32>| {
        Series::new("".into(), records.iter().map(f).collect::<Vec<_>>())
    };
    let series_opt_str = |f: &dyn Fn(&RequestRecord) -> Option<String>| {
        Series::new("".into(), records.iter().map(f).collect::<Vec<_>>())
    };

    frame(vec![
        column(
            REQUEST_ID,
            Series::new(
                "".into(),
                records.iter().map(|r| r.request_id).collect::<Vec<u64>>(),
            ),
        ),
        column(
            CONCURRENCY,
            Series::new(
                "".into(),
                records.iter().map(|r| r.concurrency).collect::<Vec<u32>>(),
            ),
        ),
        column(SCHEDULED_S, series_f64(&|r| r.scheduled.as_secs_f64())),
        column(SENT_S, series_f64(&|r| r.sent.as_secs_f64())),
        column(LATENCY_S, series_f64(&|r| r.latency.as_secs_f64())),
        column(TTFT_S, series_opt_f64(&|r| seconds(r.ttft))),
        column(
            OK,
            Series::new(
                "".into(),
                records.iter().map(RequestRecord::ok).collect::<Vec<bool>>(),
            ),
        ),
        column(
            ERROR_KIND,
            series_opt_str(&|r| r.error_kind.map(|k| k.as_str().to_owned())),
        ),
        column(
            HTTP_STATUS,
            series_opt_u32(&|r| r.http_status.map(u32::from)),
        ),
        column(PROMPT_TOKENS, series_opt_u32(&|r| r.prompt_tokens)),
        column(COMPLETION_TOKENS, series_opt_u32(&|r| r.completion_tokens)),
        column(
            OUTPUT_CHARS,
            Series::new(
                "".into(),
                records
                    .iter()
                    .map(|r| r.output_chars as u64)
                    .collect::<Vec<u64>>(),
            ),
        ),
        column(TARGET, Series::new("".into(), vec![target; records.len()])),
        column(ERROR_MESSAGE, series_opt_str(&|r| r.error_message.clone())),
        column(TTFC_S, series_opt_f64(&|r| seconds(r.ttfc))),
        column(TPOT_S, series_opt_f64(&|r| seconds(r.tpot))),
        column(
            ITL_BASIS,
            series_opt_str(&|r| r.itl_basis.map(|b| b.as_str().to_owned())),
        ),
        column(TOKEN_CHUNKS, series_opt_u32(&|r| r.token_chunks)),
        column(OUTPUT_TOKENS, series_opt_u32(&|r| r.output_tokens)),
        column(CLOSE_S, series_opt_f64(&|r| seconds(r.close))),
        column(
            ATTEMPT,
            Series::new(
                "".into(),
                records.iter().map(|r| r.attempt).collect::<Vec<u32>>(),
            ),
        ),
        column(DISPATCH_LAG_S, series_opt_f64(&|r| seconds(r.dispatch_lag))),
    ])
}

/// Builds the one-row latency summary (the baseline table) of `run`'s successful requests.
pub fn latency_summary_frame(run: &LoadRun) -> PolarsResult<DataFrame> {
    let stats = LatencyStats::from_latencies(&run.ok_latencies());
    let err = run.records.len() - stats.n;
    frame(vec![
        Column::new(N.into(), [stats.n as u64]),
        Column::new(MEAN_S.into(), [seconds(stats.mean)]),
        Column::new(P50_S.into(), [seconds(stats.p50)]),
        Column::new(P95_S.into(), [seconds(stats.p95)]),
        Column::new(P99_S.into(), [seconds(stats.p99)]),
        Column::new(MIN_S.into(), [seconds(stats.min)]),
        Column::new(MAX_S.into(), [seconds(stats.max)]),
        Column::new(ERR.into(), [err as u64]),
        Column::new(TARGET.into(), [run.target.as_str()]),
        Column::new(PARTIAL.into(), [run.interrupted]),
    ])
}

/// Builds the load summary frame: one row per summary, in the order given.
pub fn load_summary_frame(summaries: &[LoadSummary], target: &str) -> PolarsResult<DataFrame> {
    let get = |f: &dyn Fn(&LoadSummary) -> Option<f64>| summaries.iter().map(f).collect::<Vec<_>>();
    frame(vec![
        Column::new(
            CONCURRENCY.into(),
            summaries
                .iter()
                .map(|s| s.concurrency as u32)
                .collect::<Vec<_>>(),
        ),
        Column::new(
            TOTAL_REQUESTS.into(),
            summaries
                .iter()
                .map(|s| s.total_requests as u64)
                .collect::<Vec<_>>(),
        ),
        Column::new(
            TIMEOUT_S.into(),
            summaries
                .iter()
                .map(|s| s.timeout.as_secs_f64())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            WALL_S.into(),
            summaries
                .iter()
                .map(|s| s.wall.as_secs_f64())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            THROUGHPUT_RPS.into(),
            summaries
                .iter()
                .map(|s| s.throughput_rps)
                .collect::<Vec<_>>(),
        ),
        Column::new(
            ERROR_RATE.into(),
            summaries.iter().map(|s| s.error_rate).collect::<Vec<_>>(),
        ),
        Column::new(P50_S.into(), get(&|s| seconds(s.latency.p50))),
        Column::new(P95_S.into(), get(&|s| seconds(s.latency.p95))),
        Column::new(P99_S.into(), get(&|s| seconds(s.latency.p99))),
        Column::new(MEAN_S.into(), get(&|s| seconds(s.latency.mean))),
        Column::new(
            OK.into(),
            summaries.iter().map(|s| s.ok as u64).collect::<Vec<_>>(),
        ),
        Column::new(
            ERR.into(),
            summaries.iter().map(|s| s.err as u64).collect::<Vec<_>>(),
        ),
        Column::new(
            SAMPLE_ERROR.into(),
            summaries
                .iter()
                .map(|s| s.sample_error.clone())
                .collect::<Vec<_>>(),
        ),
        Column::new(TARGET.into(), vec![target; summaries.len()]),
        Column::new(P50_WITH_FAILURES_S.into(), get(&|s| s.with_failures_s[0])),
        Column::new(P95_WITH_FAILURES_S.into(), get(&|s| s.with_failures_s[1])),
        Column::new(P99_WITH_FAILURES_S.into(), get(&|s| s.with_failures_s[2])),
        Column::new(TTFT_P50_S.into(), get(&|s| seconds(s.ttft.p50))),
        Column::new(TTFT_P95_S.into(), get(&|s| seconds(s.ttft.p95))),
        Column::new(ITL_P50_S.into(), get(&|s| seconds(s.tpot.p50))),
        Column::new(OUTPUT_TOK_PER_S.into(), get(&|s| s.output_tokens_per_s)),
        Column::new(OFFERED_RPS.into(), get(&|s| s.offered_rps)),
        Column::new(
            PARTIAL.into(),
            summaries.iter().map(|s| s.interrupted).collect::<Vec<_>>(),
        ),
    ])
}

/// Builds the token-budget frame: one row per cell, with p50 and p95 of the successful requests.
pub fn token_budget_frame(budget: &TokenBudget) -> PolarsResult<DataFrame> {
    let stats: Vec<LatencyStats> = budget
        .cells
        .iter()
        .map(|c| LatencyStats::from_latencies(&c.run.ok_latencies()))
        .collect();
    frame(vec![
        Column::new(
            PROMPT_CHARS.into(),
            budget
                .cells
                .iter()
                .map(|c| c.prompt_chars as u64)
                .collect::<Vec<_>>(),
        ),
        Column::new(
            MAX_TOKENS.into(),
            budget
                .cells
                .iter()
                .map(|c| c.max_tokens)
                .collect::<Vec<_>>(),
        ),
        Column::new(
            P95_S.into(),
            stats.iter().map(|s| seconds(s.p95)).collect::<Vec<_>>(),
        ),
        Column::new(
            P50_S.into(),
            stats.iter().map(|s| seconds(s.p50)).collect::<Vec<_>>(),
        ),
        Column::new(
            OK.into(),
            stats.iter().map(|s| s.n as u64).collect::<Vec<_>>(),
        ),
        Column::new(
            ERR.into(),
            budget
                .cells
                .iter()
                .zip(&stats)
                .map(|(c, s)| (c.run.records.len() - s.n) as u64)
                .collect::<Vec<_>>(),
        ),
        Column::new(
            TARGET.into(),
            budget
                .cells
                .iter()
                .map(|c| c.run.target.clone())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            PARTIAL.into(),
            budget
                .cells
                .iter()
                .map(|c| c.run.interrupted)
                .collect::<Vec<_>>(),
        ),
    ])
}

impl LoadRun {
    /// Builds the per-request frame of this run.
    pub fn requests_frame(&self) -> PolarsResult<DataFrame> {
        requests_frame(&self.records, &self.target)
    }

    /// Builds the one-row latency summary of this run's successful requests (the baseline table).
    pub fn latency_summary_frame(&self) -> PolarsResult<DataFrame> {
        latency_summary_frame(self)
    }

    /// Builds the one-row load summary of this run.
    pub fn summary_frame(&self) -> PolarsResult<DataFrame> {
        load_summary_frame(&[self.summary()], &self.target)
    }
}

impl Sweep {
    /// Builds one summary row per level, sorted by concurrency.
    pub fn summary_frame(&self) -> PolarsResult<DataFrame> {
        let target = self.runs.first().map_or("", |r| r.target.as_str());
        load_summary_frame(&self.summaries(), target)
    }

    /// Builds the frame of every request of every level.
    pub fn requests_frame(&self) -> PolarsResult<DataFrame> {
        concat_frames(self.runs.iter().map(LoadRun::requests_frame))
    }
}

impl TokenBudget {
    /// Builds one row per cell.
    pub fn frame(&self) -> PolarsResult<DataFrame> {
        token_budget_frame(self)
    }

    /// Builds the frame of every request of every cell.
    pub fn requests_frame(&self) -> PolarsResult<DataFrame> {
        concat_frames(self.cells.iter().map(|c| c.run.requests_frame()))
    }
}

impl crate::lab::LabResults {
    /// Builds the frame of every request of the sections measured, with a [`SECTION`] column
    /// first.
    pub fn requests_frame(&self) -> PolarsResult<DataFrame> {
        let mut sections = Vec::with_capacity(4);
        if let Some(baseline) = &self.baseline {
            sections.push(("baseline", baseline.requests_frame()?));
        }
        if let Some(sweep) = &self.sweep {
            sections.push(("sweep", sweep.requests_frame()?));
        }
        if let Some(tokens) = &self.tokens {
            sections.push(("tokens", tokens.requests_frame()?));
        }
        if let Some(overload) = &self.overload {
            sections.push(("overload", overload.requests_frame()?));
        }
        if sections.is_empty() {
            let mut empty = requests_frame(&[], "")?;
            empty.insert_column(0, Column::new(SECTION.into(), Vec::<String>::new()))?;
            return Ok(empty);
        }
        concat_frames(sections.into_iter().map(|(name, mut df)| {
            let labels = Column::new(SECTION.into(), vec![name; df.height()]);
            df.insert_column(0, labels)?;
            Ok(df)
        }))
    }
}

/// Stacks frames with the same columns; an empty input gives an empty per-request frame.
pub fn concat_frames(
    frames: impl IntoIterator<Item = PolarsResult<DataFrame>>,
) -> PolarsResult<DataFrame> {
    let mut stacked: Option<DataFrame> = None;
    for frame in frames {
        let frame = frame?;
        match stacked.as_mut() {
            Some(all) => {
                all.vstack_mut_owned(frame)?;
            }
            None => stacked = Some(frame),
        }
    }
    match stacked {
        Some(all) => Ok(all),
        None => requests_frame(&[], ""),
    }
}

/// Reads an `f64` column, with nulls as NaN; integer columns are converted.
pub fn column_f64(df: &DataFrame, name: &str) -> PolarsResult<Vec<f64>> {
    let column = df.column(name)?.cast(&DataType::Float64)?;
    Ok(column
        .f64()?
        .iter()
        .map(|v| v.unwrap_or(f64::NAN))
        .collect())
}
