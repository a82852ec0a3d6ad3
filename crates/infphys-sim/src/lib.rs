//! Simulated OpenAI-compatible LLM inference server whose latency follows
//! the physics of continuous batching on one GPU.
//!
//! Learners without a GPU point their load generators at this server and
//! see the effects of a real one. Streaming the weights sets a latency
//! floor, and throughput grows with batch size until it saturates. Once the
//! batch is full, requests queue, tail latency climbs, and overload ends in
//! timeouts.
//!
//! # Modules
//!
//! - [`preset`]: [`Preset`] and [`Physics`], the constants of the step-time model.
//! - `config`: [`SimConfig`] and [`SimError`].
//! - [`engine`] (hidden from the docs): the virtual-time discrete-event
//!   model, a synchronous state machine that tests and notebooks can drive
//!   directly.
//! - `driver`: the engine thread, one OS thread per replica that runs the
//!   engine against the wall clock, with wall time equal to virtual time
//!   divided by [`SimConfig::time_scale`]. It waits for each step's end
//!   with a thread sleep and a short yield loop rather than a tokio timer,
//!   which rounds up to whole milliseconds. Handlers send it commands over
//!   a `std::sync::mpsc` channel and receive events over tokio channels.
//! - `http`: the axum handlers, request validation and OpenAI-shaped errors.
//! - `server`: [`router`], [`serve`] and [`spawn`].
//! - `connections`: the accept loop of [`serve`] and [`spawn`], with the
//!   connection cap ([`SimConfig::max_connections`]), the header-read and idle
//!   timeouts, and graceful shutdown.
//! - `fd_limit`: the process's open-file limit, which caps the connections.
//!
//! # Endpoints
//!
//! - `POST /v1/chat/completions`, non-streaming or with `"stream": true`
//!   (server-sent events, one chunk per token at the time it is produced).
//! - `GET /v1/models`, `GET /v1/health/ready` (also `GET /health`).
//! - `GET /metrics`: Prometheus text with vLLM's metric names: the gauges
//!   `vllm:num_requests_running`, `vllm:num_requests_waiting` and
//!   `vllm:gpu_cache_usage_perc`, the counters `vllm:num_preemptions_total`,
//!   `vllm:prompt_tokens_total` and `vllm:generation_tokens_total`, and the
//!   histograms `vllm:time_to_first_token_seconds`,
//!   `vllm:time_per_output_token_seconds` (one observation per token gap)
//!   and `vllm:e2e_request_latency_seconds`. Latencies are virtual seconds
//!   from the handler's receipt of the request to the engine's tokens, so
//!   injected delivery stalls do not show in them. The bucket bounds are
//!   this crate's choice, from 1 ms to 2560 s.
//!
//! # Virtual-time record
//!
//! Every completion carries an extra top-level object `infphys` with the
//! server's own schedule of the request, in virtual seconds rounded to
//! microseconds. A non-streaming response has it next to `usage`. A stream
//! carries it on the usage chunk when `stream_options.include_usage` is
//! true, and otherwise on the chunk with the `finish_reason`. Clients that
//! do not know the field ignore it.
//!
//! - `arrival_s`: virtual time since the server started at which the
//!   handler received the request. It is the origin of the offsets below.
//! - `queued_s`: time the request spent in the engine's waiting queue, from
//!   the end of its HTTP overhead to the start of its first step.
//! - `first_token_s`, `last_token_s`: offsets from `arrival_s` at which the
//!   server sent the first and last token, including injected stalls.
//! - `token_times_s`: the offset of every token, at most the first 4096.
//! - `preemptions`: how many times the engine preempted the request.
//!
//! At time scale 1, a client that starts its clock just before sending
//! receives each token at its offset plus the loopback hop, the request
//! parsing and the wake-ups on both sides. The test
//! `stream_tokens_arrive_on_schedule` requires a median below 1 ms for the
//! first token and for every token. Debug builds measured 0.3 to 0.9 ms on
//! a shared 2-core machine. `docs/benchmarks-sim.md` gives the tails with
//! many concurrent clients.
//!
//! # Faults
//!
//! [`SimConfig::faults`] injects error statuses, stalls, dropped
//! connections and mid-stream error events into a share of the requests,
//! and the `x-infphys-fault` request header injects them into one request,
//! as [`Faults`] describes.
//!
//! [`SimConfig::stall`] pauses the whole engine periodically, so a notebook
//! can show coordinated omission: a closed-loop client sends nothing during
//! a pause and hides it, and an open-loop client
//! ([`engine::run_open_loop`]) sees the queue it builds.
//!
//! # Replicas
//!
//! [`SimConfig::replicas`] runs several engines, each one simulated GPU,
//! behind one server, and [`SimConfig::routing`] picks one per request
//! ([`Routing::RoundRobin`] or [`Routing::LeastLoaded`]). Adding a replica
//! moves the saturation knee: with the classroom preset at concurrency 16,
//! two replicas give twice the throughput of one. `/metrics` sums the
//! replicas, except the KV-cache usage, which it averages.
//!
//! Replies are filler words, one per token. If the last user message
//! contains `Reply with only: X`, the reply is X. Prompt tokens are
//! estimated as `ceil(chars / 4) + 4` per message.
//!
//! # Example
//!
//! ```no_run
//! let mut config = infphys_sim::SimConfig::new(infphys_sim::Preset::Classroom);
//! config.time_scale = 10.0;
//! let server = infphys_sim::spawn(config)?;
//! println!("OpenAI base URL: {}/v1", server.base_url());
//! # Ok::<(), infphys_sim::SimError>(())
//! ```
#![deny(missing_docs)]

mod config;
mod connections;
mod driver;
#[doc(hidden)]
pub mod engine;
mod faults;
mod fd_limit;
mod http;
mod metrics;
pub mod preset;
mod record;
mod replicas;
mod server;
mod text;

pub use config::{
    DEFAULT_BODY_READ_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONNECTIONS, DEFAULT_WRITE_TIMEOUT, Routing, SimConfig,
    SimError, Stall,
};
pub use faults::Faults;
pub use fd_limit::{
    FD_MARGIN, OpenFileLimit, fd_limit_warning, open_file_limit, raise_open_file_limit,
};
pub use preset::{Physics, Preset};
pub use server::{SimHandle, router, serve, spawn};

/// Parses and validates a chat-completion request body as `POST /v1/chat/completions` does
/// with the default configuration, without a server: for fuzz targets and tests. Returns the
/// rejection, with the message the server would send, in its `Debug` form. The server's body limit,
/// [`SimConfig::max_body_bytes`], is not applied here.
#[doc(hidden)]
pub fn parse_request_for_fuzzing(body: &[u8]) -> Result<(), String> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|error| format!("The request body is not valid JSON: {error}"))?;
    http::parse_chat_request(&value, &SimConfig::default())
        .map(|_| ())
        .map_err(|error| format!("{error:?}"))
}
