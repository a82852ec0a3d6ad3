//! Helpers shared by the HTTP integration tests: a lab-style request and a
//! closed-loop load generator that measures in virtual seconds.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Semaphore;

/// System prompt of the lab's requests.
pub const SYSTEM_PROMPT: &str = "You are a helpful assistant.";
/// User prompt of the lab's requests.
pub const USER_PROMPT: &str = "Summarize why batching affects throughput in one short paragraph.";

/// Returns the lab's chat-completion request body.
pub fn lab_body(max_tokens: u64) -> Value {
    json!({
        "model": "meta/llama-3.1-8b-instruct",
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": USER_PROMPT},
        ],
        "max_tokens": max_tokens,
        "temperature": 0.2,
    })
}

/// Client measurements of one concurrency level, converted to virtual time.
#[derive(Debug, Clone)]
pub struct LevelResult {
    pub concurrency: usize,
    /// Latencies of the successful requests.
    pub latencies: Vec<Duration>,
    pub errors: usize,
    pub requests: usize,
    /// Time from the first request sent to the last response.
    pub elapsed: Duration,
}

impl LevelResult {
    /// Returns successful requests per virtual second.
    pub fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// Returns the nearest-rank 95th percentile latency.
    pub fn p95(&self) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let rank = ((sorted.len() as f64) * 0.95).ceil() as usize;
        sorted[rank.saturating_sub(1)]
    }

    /// Returns the mean latency of the successful requests.
    pub fn mean(&self) -> Duration {
        self.latencies.iter().sum::<Duration>() / self.latencies.len() as u32
    }

    /// Returns the fraction of requests that failed or timed out.
    pub fn error_rate(&self) -> f64 {
        self.errors as f64 / self.requests as f64
    }
}

/// Sends `requests` lab requests with at most `concurrency` in flight,
/// starting the next as soon as one ends, and measures in virtual time
/// (wall time multiplied by `time_scale`).
///
/// `timeout` is the client timeout in virtual time; a timed-out request
/// counts as an error.
pub async fn closed_loop(
    base_url: &str,
    time_scale: f64,
    concurrency: usize,
    requests: usize,
    timeout: Duration,
) -> LevelResult {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let url = format!("{base_url}/v1/chat/completions");
    let wall_timeout = timeout.div_f64(time_scale);
    let body = Arc::new(lab_body(96));
    let semaphore = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();

    let mut tasks = Vec::with_capacity(requests);
    for _ in 0..requests {
        let permit = Arc::clone(&semaphore).acquire_owned().await.unwrap();
        let client = client.clone();
        let url = url.clone();
        let body = Arc::clone(&body);
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let response = client
                .post(&url)
                .json(&*body)
                .timeout(wall_timeout)
                .send()
                .await;
            let ok = match response {
                Ok(response) if response.status().is_success() => {
                    response.json::<Value>().await.is_ok()
                }
                _ => false,
            };
            let latency = sent.elapsed();
            drop(permit);
            (ok, latency)
        }));
    }

    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (ok, latency) = task.await.unwrap();
        if ok {
            latencies.push(latency.mul_f64(time_scale));
        } else {
            errors += 1;
        }
    }
    LevelResult {
        concurrency,
        latencies,
        errors,
        requests,
        elapsed: started.elapsed().mul_f64(time_scale),
    }
}

/// Returns the value of a vLLM metric from the server's `/metrics` text.
pub async fn metric(client: &reqwest::Client, base_url: &str, name: &str) -> f64 {
    let text = client
        .get(format!("{base_url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|line| line.starts_with(&format!("{name}{{")))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing from:\n{text}"))
}

/// Polls a metric every 10 ms until `accept` holds, for at most `limit` of wall time.
pub async fn wait_for_metric(
    client: &reqwest::Client,
    base_url: &str,
    name: &str,
    limit: Duration,
    accept: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = Instant::now() + limit;
    loop {
        let value = metric(client, base_url, name).await;
        if accept(value) || Instant::now() >= deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
