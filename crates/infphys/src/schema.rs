//! Column names of every DataFrame the library builds.
//!
//! The unit is part of the name: `_s` columns hold seconds as `f64`, `_rps` requests per second.
//! Durations measured against the built-in simulator are reported in server time (wall time
//! multiplied by the simulator's time scale), so a run at a time scale of 20 reads like a run at
//! full speed; see [`crate::Target::time_scale`].

/// Sequence number of a request within one run, from 0.
pub const REQUEST_ID: &str = "request_id";
/// Maximum number of requests in flight while the row was measured; 0 for an open loop without
/// a cap.
pub const CONCURRENCY: &str = "concurrency";
/// When the request was due to be sent, seconds since the run started.
pub const SCHEDULED_S: &str = "scheduled_s";
/// When the request was handed to the HTTP client, seconds since the run started.
pub const SENT_S: &str = "sent_s";
/// Seconds from just before the request was sent to the last byte of the response or the error.
pub const LATENCY_S: &str = "latency_s";
/// Seconds to the first token; null for non-streaming requests, which cannot observe it.
pub const TTFT_S: &str = "ttft_s";
/// Seconds to the first content token (after any reasoning); null for non-streaming requests.
pub const TTFC_S: &str = "ttfc_s";
/// Mean seconds per output token after the first, (last − first token) / (tokens − 1); null
/// for non-streaming requests.
pub const TPOT_S: &str = "tpot_s";
/// `token` when `tpot_s` divides by the token count the server reported, `chunk` when it
/// divides by the number of text chunks because no usage arrived.
pub const ITL_BASIS: &str = "itl_basis";
/// Stream chunks that carried text; null for non-streaming requests.
pub const TOKEN_CHUNKS: &str = "token_chunks";
/// Tokens received: the server's completion-token count, or the chunks counted in a stream
/// without usage.
pub const OUTPUT_TOKENS: &str = "output_tokens";
/// Seconds until the stream closed, which may follow the last token; null for non-streaming
/// requests.
pub const CLOSE_S: &str = "close_s";
/// Attempt number of the row, from 1; rows with the same `request_id` and a higher attempt are
/// retries.
pub const ATTEMPT: &str = "attempt";
/// Seconds between a request's scheduled send time and its actual send, for open-loop runs;
/// their `latency_s` and `ttft_s` count from the scheduled time and include it.
pub const DISPATCH_LAG_S: &str = "dispatch_lag_s";
/// Whether the request produced a complete response with content.
pub const OK: &str = "ok";
/// Why a request failed: `connect`, `timeout`, `http_status`, `decode`, `stream_error`,
/// `stream_truncated`, `empty`; null when it succeeded.
pub const ERROR_KIND: &str = "error_kind";
/// The error's message, with the URL and any status code; null when the request succeeded.
pub const ERROR_MESSAGE: &str = "error_message";
/// HTTP status code of the response; null when no response arrived.
pub const HTTP_STATUS: &str = "http_status";
/// Prompt tokens reported by the server in `usage`; null when it reported none.
pub const PROMPT_TOKENS: &str = "prompt_tokens";
/// Completion tokens reported by the server in `usage`; null when it reported none.
pub const COMPLETION_TOKENS: &str = "completion_tokens";
/// Characters of generated text received.
pub const OUTPUT_CHARS: &str = "output_chars";
/// Which server produced the row: its URL and model, or the simulator preset and time scale.
pub const TARGET: &str = "target";

/// Number of successful requests a summary covers.
pub const N: &str = "n";
/// Mean latency of successful requests, in seconds.
pub const MEAN_S: &str = "mean_s";
/// Median latency of successful requests, in seconds.
pub const P50_S: &str = "p50_s";
/// 95th-percentile latency of successful requests, in seconds.
pub const P95_S: &str = "p95_s";
/// 99th-percentile latency of successful requests, in seconds.
pub const P99_S: &str = "p99_s";
/// Fastest successful request, in seconds.
pub const MIN_S: &str = "min_s";
/// Slowest successful request, in seconds.
pub const MAX_S: &str = "max_s";
/// Number of failed requests.
pub const ERR: &str = "err";

/// Requests issued at one concurrency level.
pub const TOTAL_REQUESTS: &str = "total_requests";
/// Client timeout per request, in seconds.
pub const TIMEOUT_S: &str = "timeout_s";
/// Seconds from the first send to the last completion of a level.
pub const WALL_S: &str = "wall_s";
/// Finished requests (successful or failed) per second of `wall_s`, as the original lab counts them.
pub const THROUGHPUT_RPS: &str = "throughput_rps";
/// Failed requests divided by all requests of the level.
pub const ERROR_RATE: &str = "error_rate";
/// Message of the first failure of the level; null when none failed.
pub const SAMPLE_ERROR: &str = "sample_error";

/// Median latency with every failure counted as infinitely slow, in seconds; `inf` when more
/// than half the requests failed.
pub const P50_WITH_FAILURES_S: &str = "p50_with_failures_s";
/// 95th-percentile latency with every failure counted as infinitely slow, in seconds; `inf` when
/// the percentile falls among the failures.
pub const P95_WITH_FAILURES_S: &str = "p95_with_failures_s";
/// 99th-percentile latency with every failure counted as infinitely slow, in seconds.
pub const P99_WITH_FAILURES_S: &str = "p99_with_failures_s";
/// Median time to first token of successful streamed requests, in seconds.
pub const TTFT_P50_S: &str = "ttft_p50_s";
/// 95th-percentile time to first token of successful streamed requests, in seconds.
pub const TTFT_P95_S: &str = "ttft_p95_s";
/// Median over successful streamed requests of each one's time per output token, in seconds.
pub const ITL_P50_S: &str = "itl_p50_s";
/// Output tokens of successful requests per second of `wall_s`.
pub const OUTPUT_TOK_PER_S: &str = "output_tok_per_s";

/// Requests per second the open-loop schedule offered; null for a closed loop, whose
/// `concurrency` sets the load instead.
pub const OFFERED_RPS: &str = "offered_rps";

/// Characters in the prompt sent, instruction included.
pub const PROMPT_CHARS: &str = "prompt_chars";
/// The `max_tokens` sent with each request.
pub const MAX_TOKENS: &str = "max_tokens";

/// Which lab section a request belongs to (`baseline`, `sweep`, `tokens`, `overload`), in the
/// per-request frame of a whole lab run.
pub const SECTION: &str = "section";

/// Columns of a per-request frame, in order.
pub const REQUEST_COLUMNS: &[&str] = &[
    REQUEST_ID,
    CONCURRENCY,
    SCHEDULED_S,
    SENT_S,
    LATENCY_S,
    TTFT_S,
    OK,
    ERROR_KIND,
    HTTP_STATUS,
    PROMPT_TOKENS,
    COMPLETION_TOKENS,
    OUTPUT_CHARS,
    TARGET,
    ERROR_MESSAGE,
    TTFC_S,
    TPOT_S,
    ITL_BASIS,
    TOKEN_CHUNKS,
    OUTPUT_TOKENS,
    CLOSE_S,
    ATTEMPT,
    DISPATCH_LAG_S,
];

/// Whether a run was stopped before it sent all its requests, by Ctrl-C or by a process that
/// died mid-run. Its rows are real but cover only part of the run.
pub const PARTIAL: &str = "partial";
/// Number of a run inside a journal, shared by its rows.
pub const RUN_ID: &str = "run_id";
/// Requests a run was meant to send.
pub const PLANNED_REQUESTS: &str = "planned_requests";

/// Columns of a latency summary (the baseline table), in order.
pub const LATENCY_SUMMARY_COLUMNS: &[&str] = &[
    N, MEAN_S, P50_S, P95_S, P99_S, MIN_S, MAX_S, ERR, TARGET, PARTIAL,
];

/// Columns of a load summary (one row per concurrency level), in order: the original lab's
/// columns and `target`, then the failure-aware percentiles and the streaming metrics.
pub const LOAD_SUMMARY_COLUMNS: &[&str] = &[
    CONCURRENCY,
    TOTAL_REQUESTS,
    TIMEOUT_S,
    WALL_S,
    THROUGHPUT_RPS,
    ERROR_RATE,
    P50_S,
    P95_S,
    P99_S,
    MEAN_S,
    OK,
    ERR,
    SAMPLE_ERROR,
    TARGET,
    P50_WITH_FAILURES_S,
    P95_WITH_FAILURES_S,
    P99_WITH_FAILURES_S,
    TTFT_P50_S,
    TTFT_P95_S,
    ITL_P50_S,
    OUTPUT_TOK_PER_S,
    OFFERED_RPS,
    PARTIAL,
];

/// Columns of the token-budget grid (one row per prompt size and `max_tokens`), in order.
pub const TOKEN_BUDGET_COLUMNS: &[&str] = &[
    PROMPT_CHARS,
    MAX_TOKENS,
    P95_S,
    P50_S,
    OK,
    ERR,
    TARGET,
    PARTIAL,
];
