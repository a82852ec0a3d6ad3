//! infphys measures the physics of LLM inference on any OpenAI-compatible server: latency
//! distributions, the throughput knee, the p95 cliff, the cost of tokens and what overload does.
//!
//! # Layout
//!
//! - [`target`]: which server to measure, from `NIM_BASE_URL`, `NIM_CHAT_PATH`, `NIM_GEN_MODEL`
//!   and a bearer key, with the built-in simulator as a fallback.
//! - [`client`]: one chat completion at a time over a shared connection pool, timed from just
//!   before sending to the last byte; failures carry an [`ErrorKind`].
//! - [`stream`] and [`sse`]: streamed responses, timed per token: time to first token,
//!   time per output token, and the stream's own failure kinds.
//! - [`load`]: the closed loop ([`run_load`]), concurrency sweeps, the sequential baseline and the
//!   token-budget grid; every request becomes a [`RequestRecord`].
//! - [`open_loop`]: requests sent on a constant or Poisson schedule, with latency counted from
//!   the scheduled time; [`retry`]: retries with backoff, every attempt a row.
//! - [`journal`]: every finished request appended to a JSON Lines file as it arrives, so an
//!   interrupted run keeps its rows, and read back as a DataFrame.
//! - [`stats`]: percentiles (numpy's linear interpolation) and latency summaries.
//! - [`frames`] and [`schema`]: polars DataFrames with the column names of [`schema`].
//! - [`charts`]: one `plotly::Plot` builder per chart of the lab.
//! - [`display`] and [`report`]: HTML tables and charts, and the offline lab report.
//! - [`analysis`]: Little's law on a measured run.
//! - [`notebook`]: display in the evcxr Jupyter kernel: tables as HTML, charts drawn offline.
//! - [`calibration`]: the client's own overhead and ceiling on this machine, for reports.
//! - [`lab`]: the lab's parameters, its preflight and a run of all four sections.
//! - `virtual_lab` (feature `sim`): the simulator's engine driven in virtual time, for loads
//!   too large to drive over HTTP on a laptop.
//! - [`blocking`]: the same operations for code that is not async, such as notebook cells.
//! - `files` (feature `files`): CSV and Parquet writers.
//!
//! polars and plotly are re-exported, so a notebook needs a single dependency.
//!
//! ```
//! use infphys::stats::percentile;
//!
//! // numpy.percentile([1, 2, 3, 4], 95) == 3.85
//! let p95 = percentile(&[1.0, 2.0, 3.0, 4.0], 95.0).unwrap();
//! assert!((p95 - 3.85).abs() < 1e-12);
//! ```

#![deny(missing_docs)]

pub mod analysis;
pub mod blocking;
pub mod calibration;
pub mod charts;
pub mod client;
pub mod display;
mod error;
#[cfg(feature = "files")]
pub mod files;
pub mod frames;
pub mod journal;
pub mod lab;
pub mod load;
pub mod notebook;
pub mod open_loop;
mod progress;
pub mod report;
pub mod retry;
pub mod schema;
pub mod sse;
pub mod stats;
pub mod stop;
pub mod stream;
pub mod target;
#[cfg(feature = "sim")]
pub mod virtual_lab;

pub use client::{ChatReply, ChatRequest, Client, ErrorKind, RequestFailure, Usage};
pub use error::{Error, Result};
pub use lab::{LabParams, LabResults, PreflightReport, preflight, run_lab};
pub use load::{
    LoadRun, LoadSpec, LoadSummary, RequestRecord, Sweep, TokenBudget, baseline, make_prompt,
    run_load, sweep, token_budget,
};
pub use progress::Progress;
pub use stop::StopSignal;
pub use target::{ApiKey, Target, TargetKind, TargetSpec, resolve};

#[cfg(feature = "sim")]
pub use infphys_sim;
pub use plotly;
pub use polars;
