//! Blocking versions of the async API, for notebook cells and scripts.
//!
//! Each function runs its async counterpart on one runtime that starts the first time it is
//! needed and lives for the rest of the process, the way `reqwest::blocking` works. Do not call
//! these from inside an async context; use the async functions there.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::runtime::Runtime;

use crate::client::{ChatReply, ChatRequest, Client, RequestFailure};
use crate::error::Result;
use crate::lab::{LabParams, LabResults, PreflightReport};
use crate::load::{LoadRun, LoadSpec, Sweep, TokenBudget};
use crate::progress::Progress;
use crate::target::{Target, TargetSpec};

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("infphys-blocking")
            .enable_all()
            .build()
            .expect("the tokio runtime of infphys::blocking failed to start")
    })
}

/// Runs `future` to completion on the shared runtime.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    runtime().block_on(future)
}

/// Reads the target from the environment and resolves it; see [`crate::resolve`].
pub fn target_from_env() -> Result<Target> {
    let spec = TargetSpec::from_env()?;
    block_on(crate::target::resolve(&spec))
}

/// Resolves `spec`; see [`crate::resolve`].
pub fn resolve(spec: &TargetSpec) -> Result<Target> {
    block_on(crate::target::resolve(spec))
}

/// Builds a client for `target`. The client's connection pool runs on the shared runtime.
pub fn client(target: Target) -> Result<Client> {
    let _guard = runtime().enter();
    Client::new(target)
}

/// Sends one chat completion; see [`Client::chat_once`].
pub fn chat_once(client: &Client, request: &ChatRequest) -> Result<ChatReply, RequestFailure> {
    block_on(client.chat_once(request))
}

/// Sends one chat completion with the lab's arguments and returns the text and the latency.
pub fn chat(
    client: &Client,
    prompt: &str,
    max_tokens: u32,
    temperature: f64,
    timeout: Duration,
) -> Result<ChatReply, RequestFailure> {
    let request = ChatRequest::new(prompt, max_tokens)
        .temperature(temperature)
        .timeout(timeout);
    chat_once(client, &request)
}

/// Runs the lab's preflight; see [`crate::preflight`].
pub fn preflight(client: &Client) -> Result<PreflightReport> {
    block_on(crate::lab::preflight(client))
}

/// Runs a closed loop; see [`crate::run_load`].
pub fn run_load(client: &Client, spec: &LoadSpec, progress: Progress) -> Result<LoadRun> {
    block_on(crate::load::run_load(client, spec, progress))
}

/// Runs a closed loop per concurrency level; see [`crate::sweep`].
pub fn sweep(
    client: &Client,
    levels: &[usize],
    total_requests: usize,
    request: &ChatRequest,
    progress: Progress,
) -> Result<Sweep> {
    block_on(crate::load::sweep(
        client,
        levels,
        total_requests,
        request,
        progress,
    ))
}

/// Sends sequential requests; see [`crate::baseline`].
pub fn baseline(
    client: &Client,
    n: usize,
    request: &ChatRequest,
    progress: Progress,
) -> Result<LoadRun> {
    block_on(crate::load::baseline(client, n, request, progress))
}

/// Measures the token-budget grid; see [`crate::token_budget`].
pub fn token_budget(
    client: &Client,
    prompt_sizes: &[usize],
    max_tokens: &[u32],
    repeats: usize,
    template: &ChatRequest,
    progress: Progress,
) -> Result<TokenBudget> {
    block_on(crate::load::token_budget(
        client,
        prompt_sizes,
        max_tokens,
        repeats,
        template,
        progress,
    ))
}

/// Runs all four measurement sections; see [`crate::run_lab`].
pub fn run_lab(client: &Client, params: &LabParams, progress: Progress) -> Result<LabResults> {
    block_on(crate::lab::run_lab(client, params, progress))
}
