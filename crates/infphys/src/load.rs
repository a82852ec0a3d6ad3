//! Closed-loop load generation: a fixed number of requests with at most `concurrency` in flight.
//!
//! A spawner task acquires a semaphore permit per request and spawns a tokio task for it, so
//! exactly `concurrency` requests are in flight until the tail of the run. Each task sends its
//! record over a channel to one collector, which counts progress and keeps every row, failures
//! included.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};

use crate::client::{Attempt, ChatRequest, Client, ErrorKind, PreparedBody, validate_timeout};
use crate::error::{Result, invalid};
use crate::progress::{Meter, Progress};
use crate::stats::LatencyStats;
use crate::stream::{ItlBasis, StreamTiming};

/// One request's measurement, a row of the per-request frame.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RequestRecord {
    /// Sequence number within its run, from 0.
    pub request_id: u64,
    /// Maximum requests in flight during the run.
    pub concurrency: u32,
    /// When the request became due (its permit was granted), since the run started.
    pub scheduled: Duration,
    /// When the request was handed to the HTTP client, since the run started.
    pub sent: Duration,
    /// From just before sending to the last byte of the response or the error.
    pub latency: Duration,
    /// Time to the first token, for streaming requests.
    pub ttft: Option<Duration>,
    /// Time to the first content token, for streaming requests; later than `ttft` when the
    /// model streams reasoning first.
    pub ttfc: Option<Duration>,
    /// Mean time per output token after the first, for streaming requests.
    pub tpot: Option<Duration>,
    /// Whether `tpot` counts tokens (from `usage`) or chunks, for streaming requests.
    pub itl_basis: Option<ItlBasis>,
    /// Chunks that carried text, for streaming requests.
    pub token_chunks: Option<u32>,
    /// Tokens received: `usage.completion_tokens` when reported, else the chunks counted.
    pub output_tokens: Option<u32>,
    /// Time until the stream closed, for streaming requests.
    pub close: Option<Duration>,
    /// Attempt number of this row, from 1; later attempts are retries of the same request.
    pub attempt: u32,
    /// How late the request was sent after its scheduled time, for open-loop runs. Their
    /// latency and first-token times count from the scheduled time, so they include it.
    pub dispatch_lag: Option<Duration>,
    /// The kind of failure; `None` when the request succeeded.
    pub error_kind: Option<ErrorKind>,
    /// The failure's message; `None` when it succeeded.
    pub error_message: Option<String>,
    /// HTTP status code, when a response arrived.
    pub http_status: Option<u16>,
    /// Prompt tokens the server reported.
    pub prompt_tokens: Option<u32>,
    /// Completion tokens the server reported.
    pub completion_tokens: Option<u32>,
    /// Characters of generated text received.
    pub output_chars: usize,
}

impl RequestRecord {
    /// Returns whether the request succeeded.
    pub fn ok(&self) -> bool {
        self.error_kind.is_none()
    }

    fn from_attempt(
        id: u64,
        concurrency: u32,
        scheduled: Duration,
        sent: Duration,
        attempt: Attempt,
    ) -> Self {
        let mut record = Self {
            request_id: id,
            concurrency,
            scheduled,
            sent,
            attempt: 1,
            ..Self::default()
        };
        match attempt.result {
            Ok(reply) => {
                record.latency = reply.latency;
                record.http_status = Some(reply.status);
                record.output_chars = reply.text.chars().count();
                if let Some(usage) = reply.usage {
                    record.prompt_tokens = usage.prompt_tokens;
                    record.completion_tokens = usage.completion_tokens;
                }
                record.output_tokens = record.completion_tokens;
                if let Some(timing) = reply.stream {
                    record.set_stream(&timing);
                }
            }
            Err(failure) => {
                record.latency = failure.latency;
                record.http_status = failure.status;
                record.error_kind = Some(failure.kind);
                record.error_message = Some(failure.message);
                if let Some(timing) = failure.stream {
                    record.set_stream(&timing);
                }
            }
        }
        record
    }

    /// Moves the origin of every duration measured from the send back to the scheduled time,
    /// `lag` earlier, as an open loop reports them.
    fn count_from_schedule(&mut self, lag: Duration) {
        self.dispatch_lag = Some(lag);
        self.latency += lag;
        for time in [&mut self.ttft, &mut self.ttfc, &mut self.close]
            .into_iter()
            .flatten()
        {
            *time += lag;
        }
    }

    fn set_stream(&mut self, timing: &StreamTiming) {
        self.ttft = timing.ttft;
        self.ttfc = timing.ttfc;
        self.tpot = timing.tpot;
        self.itl_basis = Some(timing.itl_basis);
        self.token_chunks = Some(timing.token_chunks);
        self.output_tokens = Some(timing.output_tokens);
        self.close = Some(timing.close);
    }
}

/// A closed-loop run to perform.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSpec {
    /// Requests to send in all.
    pub total_requests: usize,
    /// Maximum requests in flight.
    pub concurrency: usize,
    /// The request sent each time; its timeout applies to each request.
    pub request: ChatRequest,
}

impl LoadSpec {
    fn validate(&self) -> Result<()> {
        if self.total_requests == 0 {
            return Err(invalid("total_requests", 0, "expected at least 1 request"));
        }
        if self.concurrency == 0 {
            return Err(invalid(
                "concurrency",
                0,
                "expected at least 1 request in flight",
            ));
        }
        if u32::try_from(self.concurrency).is_err() {
            return Err(invalid(
                "concurrency",
                self.concurrency,
                "expected at most 4294967295",
            ));
        }
        self.request.validate()
    }
}

/// The result of one closed-loop run.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadRun {
    /// Maximum requests in flight.
    pub concurrency: usize,
    /// Requests sent; for an interrupted run, the requests that finished before the stop.
    pub total_requests: usize,
    /// Client timeout per request.
    pub timeout: Duration,
    /// From the first send to the last completion.
    pub wall: Duration,
    /// Every attempt's row, in completion order.
    pub records: Vec<RequestRecord>,
    /// Label of the target that produced the rows.
    pub target: String,
    /// Requests per second the schedule offered, for open-loop runs; `None` for a closed loop.
    pub offered_rps: Option<f64>,
    /// Whether the client's stop signal ended the run early: the rows are every request that
    /// finished, and the requests still in flight then were abandoned.
    pub interrupted: bool,
}

/// The lab's summary of one run: throughput, error rate and latency percentiles.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSummary {
    /// Maximum requests in flight.
    pub concurrency: usize,
    /// Requests sent.
    pub total_requests: usize,
    /// Client timeout per request.
    pub timeout: Duration,
    /// From the first send to the last completion.
    pub wall: Duration,
    /// Finished requests, successful or failed, per second of `wall`, as the original lab counts.
    pub throughput_rps: f64,
    /// Failed requests divided by all requests.
    pub error_rate: f64,
    /// Latency statistics of the successful requests only.
    pub latency: LatencyStats,
    /// Successful requests.
    pub ok: usize,
    /// Failed requests.
    pub err: usize,
    /// The first failure's kind and message.
    pub sample_error: Option<String>,
    /// p50, p95 and p99 latency with every failure counted as infinitely slow, in seconds;
    /// `f64::INFINITY` when the percentile falls among the failures.
    pub with_failures_s: [Option<f64>; 3],
    /// Time to first token of the successful streamed requests.
    pub ttft: LatencyStats,
    /// Time per output token of the successful streamed requests (one value per request).
    pub tpot: LatencyStats,
    /// Output tokens of the successful requests per second of `wall`; tokens come from
    /// `usage`, or from the chunks of a stream without usage.
    pub output_tokens_per_s: Option<f64>,
    /// Requests per second the schedule offered, for open-loop runs.
    pub offered_rps: Option<f64>,
    /// Whether the run was stopped early; see [`LoadRun::interrupted`].
    pub interrupted: bool,
}

impl LoadRun {
    /// Latencies of the successful requests.
    pub fn ok_latencies(&self) -> Vec<Duration> {
        self.records
            .iter()
            .filter(|r| r.ok())
            .map(|r| r.latency)
            .collect()
    }

    /// Summarizes the run the way the original lab does: percentiles over successful requests,
    /// and failures counted beside them.
    pub fn summary(&self) -> LoadSummary {
        let latencies = self.ok_latencies();
        let finished = self.records.len();
        let err = finished - latencies.len();
        let wall_s = self.wall.as_secs_f64();
        let sample_error = self
            .records
            .iter()
            .filter(|r| !r.ok())
            .min_by_key(|r| r.request_id)
            .map(|r| {
                let kind = r.error_kind.map_or("error", ErrorKind::as_str);
                format!("{kind}: {}", r.error_message.as_deref().unwrap_or(""))
            });

        let mut ok_sorted: Vec<f64> = latencies.iter().map(Duration::as_secs_f64).collect();
        ok_sorted.sort_by(f64::total_cmp);
        let with_failures = |p: f64| crate::stats::percentile_with_failures(&ok_sorted, err, p);
        let ok_records = || self.records.iter().filter(|r| r.ok());
        let ttfts: Vec<Duration> = ok_records().filter_map(|r| r.ttft).collect();
        let tpots: Vec<Duration> = ok_records().filter_map(|r| r.tpot).collect();
        let tokens: Vec<u32> = ok_records().filter_map(|r| r.output_tokens).collect();
        let output_tokens_per_s = (!tokens.is_empty() && wall_s > 0.0)
            .then(|| tokens.iter().map(|&t| f64::from(t)).sum::<f64>() / wall_s);

        LoadSummary {
            concurrency: self.concurrency,
            total_requests: self.total_requests,
            timeout: self.timeout,
            wall: self.wall,
            throughput_rps: if wall_s > 0.0 {
                finished as f64 / wall_s
            } else {
                f64::NAN
            },
            error_rate: if finished > 0 {
                err as f64 / finished as f64
            } else {
                f64::NAN
            },
            latency: LatencyStats::from_latencies(&latencies),
            ok: latencies.len(),
            err,
            sample_error,
            with_failures_s: [
                with_failures(50.0),
                with_failures(95.0),
                with_failures(99.0),
            ],
            ttft: LatencyStats::from_latencies(&ttfts),
            tpot: LatencyStats::from_latencies(&tpots),
            output_tokens_per_s,
            offered_rps: self.offered_rps,
            interrupted: self.interrupted,
        }
    }
}

/// Runs a closed loop: `spec.total_requests` requests with at most `spec.concurrency` in flight.
///
/// Failed requests are rows with an error kind; only an invalid spec returns an error.
pub async fn run_load(client: &Client, spec: &LoadSpec, progress: Progress) -> Result<LoadRun> {
    let label = format!("c={}", spec.concurrency);
    run_load_labelled(client, spec, progress, &label).await
}

pub(crate) async fn run_load_labelled(
    client: &Client,
    spec: &LoadSpec,
    progress: Progress,
    label: &str,
) -> Result<LoadRun> {
    spec.validate()?;
    let concurrency = spec.concurrency as u32;
    let total = spec.total_requests;
    let (sender, receiver) = mpsc::unbounded_channel::<Vec<RequestRecord>>();
    let started = Instant::now();

    // The spawner waits for a free permit before each spawn, so the number of requests in flight
    // never exceeds the concurrency, however many requests the run has. A request keeps its
    // permit through its retries.
    let permits = Arc::new(Semaphore::new(spec.concurrency));
    let request = Arc::new(spec.request.clone());
    let prepared = Arc::new(client.prepare(&spec.request));
    let spawner_client = client.clone();
    tokio::spawn(async move {
        for id in 0..total as u64 {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            // A dropped run (an interrupted cell, Ctrl-C) stops sending.
            if sender.is_closed() {
                break;
            }
            let client = spawner_client.clone();
            let request = Arc::clone(&request);
            let prepared = Arc::clone(&prepared);
            let sender = sender.clone();
            tokio::spawn(async move {
                let origin = Origin {
                    started,
                    due: Instant::now(),
                    open_loop: false,
                };
                let records = execute(&client, &request, &prepared, id, concurrency, origin).await;
                drop(permit);
                // The collector only goes away when the run itself was dropped.
                let _ = sender.send(records);
            });
        }
    });

    let collected = collect(
        receiver,
        Meter::new(progress, label.to_owned(), total),
        client,
        label,
    )
    .await;
    Ok(LoadRun {
        concurrency: spec.concurrency,
        total_requests: collected.total_requests(total),
        timeout: spec.request.timeout,
        wall: client.target().to_server_time(started.elapsed()),
        records: collected.records,
        target: client.target().label(),
        offered_rps: None,
        interrupted: collected.interrupted,
    })
}

/// The origin of a request's clock.
#[derive(Clone, Copy)]
pub(crate) struct Origin {
    /// When the run started.
    pub started: Instant,
    /// When the request became due: its permit was granted (closed loop) or its scheduled send
    /// time came (open loop).
    pub due: Instant,
    /// Whether durations count from `due` rather than from the actual send.
    pub open_loop: bool,
}

/// Sends one request, and retries it as the client's policy says; returns one row per attempt.
pub(crate) async fn execute(
    client: &Client,
    request: &ChatRequest,
    prepared: &PreparedBody,
    id: u64,
    concurrency: u32,
    origin: Origin,
) -> Vec<RequestRecord> {
    let target = client.target();
    let policy = client.retry_policy();
    let mut rng = policy.rng_for(id);
    let mut records = Vec::with_capacity(1);
    let mut due = origin.due;

    for attempt in 1.. {
        let outcome = client.attempt_prepared(request, prepared).await;
        let retry = match &outcome.result {
            Err(failure) => policy.next_delay(attempt, failure, &mut rng),
            Ok(_) => None,
        };

        let since_start =
            |at: Instant| target.to_server_time(at.saturating_duration_since(origin.started));
        let sent_at = outcome.sent_at;
        let mut record = RequestRecord::from_attempt(
            id,
            concurrency,
            since_start(due),
            since_start(sent_at),
            outcome,
        );
        record.attempt = attempt;
        if origin.open_loop {
            record
                .count_from_schedule(target.to_server_time(sent_at.saturating_duration_since(due)));
        }
        records.push(record);

        let Some(wait) = retry else { break };
        tokio::time::sleep(target.to_wall_time(wait)).await;
        due = Instant::now();
    }
    records
}

/// The rows a run collected, and whether its client's stop signal ended it early.
pub(crate) struct Collected {
    pub records: Vec<RequestRecord>,
    pub interrupted: bool,
}

impl Collected {
    /// Returns the requests the run sent: `planned`, or for an interrupted run the requests
    /// that have rows, so a partial summary's total matches its `ok` plus `err`.
    pub fn total_requests(&self, planned: usize) -> usize {
        if self.interrupted {
            distinct_requests(&self.records)
        } else {
            planned
        }
    }
}

/// Returns how many requests `records` come from; a retried request has one row per attempt.
pub(crate) fn distinct_requests(records: &[RequestRecord]) -> usize {
    let ids: std::collections::HashSet<u64> = records.iter().map(|r| r.request_id).collect();
    ids.len()
}

/// Receives every request's rows until all senders are gone or the client's stop signal is
/// raised, counting progress per request and appending each batch to the client's journal, if
/// it has one, between a start and a finish marker.
///
/// On a stop, the rows already received are kept and the receiver is dropped, so the sender
/// stops dispatching and the requests still in flight are abandoned.
pub(crate) async fn collect(
    mut receiver: mpsc::UnboundedReceiver<Vec<RequestRecord>>,
    mut meter: Meter,
    client: &Client,
    run: &str,
) -> Collected {
    let target = client.target().label();
    let mut journal = client.journal().and_then(|journal| {
        match journal.start_run(run, &target, meter.total()) {
            Ok(id) => Some((journal, id)),
            Err(error) => {
                tracing::warn!(%error, run, "journal write failed; rows are kept in memory only");
                None
            }
        }
    });
    let stop = client.stop_signal().cloned();
    let stopped = async {
        match &stop {
            Some(stop) => stop.stopped().await,
            None => std::future::pending().await,
        }
    };
    let mut stopped = std::pin::pin!(stopped);

    let mut records = Vec::new();
    let mut interrupted = false;
    loop {
        let batch = tokio::select! {
            biased;
            batch = receiver.recv() => batch,
            () = &mut stopped => {
                interrupted = true;
                None
            }
        };
        let Some(batch) = batch else { break };
        keep(&mut records, &mut meter, &mut journal, run, &target, batch);
    }
    if interrupted {
        // Rows that arrived together with the stop are finished requests too.
        while let Ok(batch) = receiver.try_recv() {
            keep(&mut records, &mut meter, &mut journal, run, &target, batch);
        }
    }
    if let Some((journal, id)) = journal
        && let Err(error) = journal.finish_run(id, run, interrupted)
    {
        tracing::warn!(%error, run, "failed to mark the run finished in the journal");
    }
    Collected {
        records,
        interrupted,
    }
}

/// Adds one request's rows to `records`, the meter and the journal. A failed journal write
/// stops the on-disk copy for the rest of the run; the rows stay in memory.
fn keep(
    records: &mut Vec<RequestRecord>,
    meter: &mut Meter,
    journal: &mut Option<(&crate::journal::Journal, crate::journal::RunId)>,
    run: &str,
    target: &str,
    batch: Vec<RequestRecord>,
) {
    meter.tick(batch.last().is_some_and(RequestRecord::ok));
    if let Some((file, id)) = journal
        && let Err(error) = file.append(*id, run, target, &batch)
    {
        tracing::warn!(%error, run, "journal write failed; later rows are kept in memory only");
        *journal = None;
    }
    records.extend(batch);
}

/// Runs [`run_load`] once per concurrency level, in the order given.
///
/// A level whose requests all fail still yields its rows, and the next level still runs. Once
/// the client's stop signal is raised, the interrupted level is the last one.
pub async fn sweep(
    client: &Client,
    levels: &[usize],
    total_requests: usize,
    request: &ChatRequest,
    progress: Progress,
) -> Result<Sweep> {
    validate_levels(levels)?;
    validate_timeout(request.timeout)?;

    let mut runs = Vec::with_capacity(levels.len());
    for &concurrency in levels {
        let spec = LoadSpec {
            total_requests,
            concurrency,
            request: request.clone(),
        };
        let run = run_load(client, &spec, progress).await?;
        let interrupted = run.interrupted;
        runs.push(run);
        if interrupted || client.is_stopped() {
            break;
        }
    }
    runs.sort_by_key(|run| run.concurrency);
    Ok(Sweep { runs })
}

fn validate_levels(levels: &[usize]) -> Result<()> {
    if levels.is_empty() {
        return Err(invalid(
            "concurrency levels",
            "[]",
            "expected at least one level, for example 1,2,4,8,16",
        ));
    }
    if let Some(zero) = levels.iter().find(|&&c| c == 0) {
        return Err(invalid(
            "concurrency level",
            zero,
            "every level must be at least 1",
        ));
    }
    Ok(())
}

/// Runs at several concurrency levels, sorted by concurrency.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    /// One run per level.
    pub runs: Vec<LoadRun>,
}

impl Sweep {
    /// Returns whether a stop signal cut the sweep short: its last run is partial and the
    /// levels after it did not run.
    pub fn is_partial(&self) -> bool {
        self.runs.iter().any(|run| run.interrupted)
    }

    /// The lab's summary of each run, sorted by concurrency.
    pub fn summaries(&self) -> Vec<LoadSummary> {
        self.runs.iter().map(LoadRun::summary).collect()
    }
}

/// Sends `n` identical requests one after another to estimate the noise floor.
pub async fn baseline(
    client: &Client,
    n: usize,
    request: &ChatRequest,
    progress: Progress,
) -> Result<LoadRun> {
    let spec = LoadSpec {
        total_requests: n,
        concurrency: 1,
        request: request.clone(),
    };
    run_load_labelled(client, &spec, progress, "baseline").await
}

/// Builds a prompt of `chars` characters of filler text after a short instruction, for
/// measuring how input size changes latency.
pub fn make_prompt(chars: usize) -> String {
    const INSTRUCTION: &str = "Give a one-sentence summary of the text below.\n\n";
    const FILLER: &str = "the quick brown fox jumps over the lazy dog ";

    let filler: String = FILLER.chars().cycle().take(chars).collect();
    format!("{INSTRUCTION}{filler}")
}

/// One cell of the token-budget grid.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenCell {
    /// Characters in the prompt sent, instruction included.
    pub prompt_chars: usize,
    /// `max_tokens` sent.
    pub max_tokens: u32,
    /// The cell's sequential run.
    pub run: LoadRun,
}

/// The token-budget grid: every prompt size with every `max_tokens`.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBudget {
    /// Cells in the order measured: prompt sizes outer, `max_tokens` inner.
    pub cells: Vec<TokenCell>,
}

/// Measures `repeats` sequential requests for every combination of prompt size (in filler
/// characters, see [`make_prompt`]) and `max_tokens`. Once the client's stop signal is raised,
/// the interrupted cell is the last one.
pub async fn token_budget(
    client: &Client,
    prompt_sizes: &[usize],
    max_tokens: &[u32],
    repeats: usize,
    template: &ChatRequest,
    progress: Progress,
) -> Result<TokenBudget> {
    if prompt_sizes.is_empty() || max_tokens.is_empty() {
        return Err(invalid(
            "token-budget grid",
            format!(
                "{} prompt sizes x {} max_tokens",
                prompt_sizes.len(),
                max_tokens.len()
            ),
            "expected at least one prompt size and one max_tokens value",
        ));
    }

    let mut cells = Vec::with_capacity(prompt_sizes.len() * max_tokens.len());
    for &size in prompt_sizes {
        let prompt = make_prompt(size);
        for &tokens in max_tokens {
            let spec = LoadSpec {
                total_requests: repeats,
                concurrency: 1,
                request: ChatRequest {
                    prompt: prompt.clone(),
                    max_tokens: tokens,
                    ..template.clone()
                },
            };
            let label = format!("prompt {size} chars, max_tokens {tokens}");
            let run = run_load_labelled(client, &spec, progress, &label).await?;
            cells.push(TokenCell {
                prompt_chars: prompt.chars().count(),
                max_tokens: tokens,
                run,
            });
            if client.is_stopped() {
                return Ok(TokenBudget { cells });
            }
        }
    }
    Ok(TokenBudget { cells })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_has_requested_filler_length() {
        let short = make_prompt(0);
        let long = make_prompt(2000);
        assert_eq!(long.chars().count() - short.chars().count(), 2000);
    }

    #[test]
    fn levels_must_be_positive_and_present() {
        assert!(
            validate_levels(&[])
                .unwrap_err()
                .to_string()
                .contains("1,2,4,8,16")
        );
        assert!(validate_levels(&[1, 0]).is_err());
        assert!(validate_levels(&[1, 2]).is_ok());
    }
}
