//! Replicas behind one server: a second engine doubles saturated throughput.

mod common;

use std::sync::Arc;
use std::time::Duration;

use infphys_sim::{Preset, Routing, SimConfig};
use serde_json::Value;
use tokio::sync::Semaphore;

const TIME_SCALE: f64 = 25.0;
const CONCURRENCY: usize = 16;
const REQUESTS: usize = 48;

/// Runs a closed loop of lab requests and returns the throughput in requests
/// per virtual second, from the server's own records: requests divided by
/// the span from the first arrival to the last token.
async fn saturated_throughput(replicas: usize, routing: Routing) -> f64 {
    let config = SimConfig {
        time_scale: TIME_SCALE,
        seed: 4,
        ..SimConfig::new(Preset::Classroom)
    }
    .with_replicas(replicas, routing);
    let server = infphys_sim::spawn(config).unwrap();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .unwrap();
    let url = format!("{}/v1/chat/completions", server.base_url());
    let semaphore = Arc::new(Semaphore::new(CONCURRENCY));

    let mut tasks = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        let permit = Arc::clone(&semaphore).acquire_owned().await.unwrap();
        let client = client.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let body: Value = client
                .post(&url)
                .json(&common::lab_body(96))
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            drop(permit);
            let record = &body["infphys"];
            let arrival = record["arrival_s"].as_f64().unwrap();
            (arrival, arrival + record["last_token_s"].as_f64().unwrap())
        }));
    }
    let mut first_arrival = f64::INFINITY;
    let mut last_token = 0.0f64;
    for task in tasks {
        let (arrival, done) = task.await.unwrap();
        first_arrival = first_arrival.min(arrival);
        last_token = last_token.max(done);
    }
    REQUESTS as f64 / (last_token - first_arrival)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_replica_doubles_throughput() {
    let single = saturated_throughput(1, Routing::RoundRobin).await;
    let round_robin = saturated_throughput(2, Routing::RoundRobin).await;
    let least_loaded = saturated_throughput(2, Routing::LeastLoaded).await;
    eprintln!(
        "saturated throughput at concurrency {CONCURRENCY}: 1 replica {single:.3} req/s, \
         2 round robin {round_robin:.3} req/s, 2 least loaded {least_loaded:.3} req/s"
    );
    for (name, two) in [("round robin", round_robin), ("least loaded", least_loaded)] {
        let ratio = two / single;
        assert!(
            (1.6..2.4).contains(&ratio),
            "{name}: 2 replicas give {ratio:.2} times the throughput of 1"
        );
    }
}

#[tokio::test]
async fn replicas_share_metrics() {
    let config = SimConfig {
        time_scale: 100.0,
        ..SimConfig::new(Preset::Classroom)
    }
    .with_replicas(3, Routing::RoundRobin);
    let server = infphys_sim::spawn(config).unwrap();
    let client = reqwest::Client::new();
    let mut tokens = 0.0;
    for _ in 0..6 {
        let body: Value = client
            .post(format!("{}/v1/chat/completions", server.base_url()))
            .json(&common::lab_body(8))
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        tokens += body["usage"]["completion_tokens"].as_f64().unwrap();
    }
    let base_url = server.base_url();
    assert_eq!(
        common::metric(&client, base_url, "vllm:generation_tokens_total").await,
        tokens
    );
    assert_eq!(
        common::metric(&client, base_url, "vllm:e2e_request_latency_seconds_count").await,
        6.0
    );
    assert_eq!(
        common::metric(&client, base_url, "vllm:gpu_cache_usage_perc").await,
        0.0
    );
}

#[test]
fn zero_replicas_is_invalid() {
    let config = SimConfig::default().with_replicas(0, Routing::LeastLoaded);
    let message = config.validate().unwrap_err().to_string();
    assert!(message.contains("replicas is 0"), "{message}");
}
