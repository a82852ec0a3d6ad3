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
//! - `driver`: the async task that runs the engine against the wall clock,
//!   with wall time equal to virtual time divided by [`SimConfig::time_scale`].
//! - `http`: the axum handlers, request validation and OpenAI-shaped errors.
//! - `server`: [`router`], [`serve`] and [`spawn`].
//!
//! # Endpoints
//!
//! - `POST /v1/chat/completions`, non-streaming or with `"stream": true`
//!   (server-sent events, one chunk per token at the time it is produced).
//! - `GET /v1/models`, `GET /v1/health/ready` (also `GET /health`).
//! - `GET /metrics`: Prometheus text with the vLLM gauge and counter names.
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
mod driver;
#[doc(hidden)]
pub mod engine;
mod http;
pub mod preset;
mod server;
mod text;

pub use config::{SimConfig, SimError};
pub use preset::{Physics, Preset};
pub use server::{SimHandle, router, serve, spawn};
