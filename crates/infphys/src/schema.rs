//! Column names of every DataFrame the library builds.
//!
//! The unit is part of the name: `_s` columns hold seconds as `f64`, `_rps` requests per second.
//! Durations measured against the built-in simulator are reported in server time (wall time
//! multiplied by the simulator's time scale), so a run at a time scale of 20 reads like a run at
//! full speed; see [`crate::Target::time_scale`].

/// Sequence number of a request within one run, from 0.
pub const REQUEST_ID: &str = "request_id";
/// Maximum number of requests in flight while the row was measured.
pub const CONCURRENCY: &str = "concurrency";
/// When the request was due to be sent, seconds since the run started.
pub const SCHEDULED_S: &str = "scheduled_s";
/// When the request was handed to the HTTP client, seconds since the run started.
pub const SENT_S: &str = "sent_s";
/// Seconds from just before the request was sent to the last byte of the response or the error.
pub const LATENCY_S: &str = "latency_s";
/// Seconds to the first token; null for non-streaming requests, which cannot observe it.
pub const TTFT_S: &str = "ttft_s";
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
];

/// Columns of a latency summary (the baseline table), in order.
pub const LATENCY_SUMMARY_COLUMNS: &[&str] =
    &[N, MEAN_S, P50_S, P95_S, P99_S, MIN_S, MAX_S, ERR, TARGET];

/// Columns of a load summary (one row per concurrency level), in order.
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
];

/// Columns of the token-budget grid (one row per prompt size and `max_tokens`), in order.
pub const TOKEN_BUDGET_COLUMNS: &[&str] =
    &[PROMPT_CHARS, MAX_TOKENS, P95_S, P50_S, OK, ERR, TARGET];
