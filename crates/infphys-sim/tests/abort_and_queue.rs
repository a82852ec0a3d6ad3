//! Client disconnects abort engine work, and a full bounded queue returns 503.

mod common;

use std::time::{Duration, Instant};

use infphys_sim::{Preset, SimConfig};
use serde_json::{Value, json};

/// Classroom physics with replies as long as `max_tokens`, sped up `time_scale` times.
fn long_reply_config(time_scale: f64) -> SimConfig {
    let mut config = SimConfig {
        time_scale,
        ..SimConfig::new(Preset::Classroom)
    };
    config.physics.output_len_median = 1e6;
    config.physics.output_len_sigma = 0.0;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_frees_batch_slot() {
    const TIME_SCALE: f64 = 50.0;
    let server = infphys_sim::spawn(long_reply_config(TIME_SCALE)).unwrap();
    let base_url = server.base_url().to_string();
    let client = reqwest::Client::new();

    // Four 2000-token replies (about 62 virtual seconds each) fill every
    // batch slot; their clients give up after 5 virtual seconds.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let client = client.clone();
        let url = format!("{base_url}/v1/chat/completions");
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .json(&common::lab_body(2000))
                .timeout(Duration::from_secs(5).div_f64(TIME_SCALE))
                .send()
                .await
        }));
    }
    for task in tasks {
        let result = task.await.unwrap();
        assert!(result.unwrap_err().is_timeout());
    }

    let limit = Duration::from_secs(5);
    let running = common::wait_for_metric(
        &client,
        &base_url,
        "vllm:num_requests_running",
        limit,
        |value| value == 0.0,
    )
    .await;
    assert_eq!(running, 0.0, "aborted requests still hold batch slots");
    assert_eq!(
        common::metric(&client, &base_url, "vllm:num_requests_waiting").await,
        0.0
    );
    assert_eq!(
        common::metric(&client, &base_url, "vllm:gpu_cache_usage_perc").await,
        0.0
    );

    // Without the aborts this request would wait about 57 virtual seconds for a slot.
    let started = Instant::now();
    let response = client
        .post(format!("{base_url}/v1/chat/completions"))
        .json(&common::lab_body(8))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    let latency = started.elapsed().mul_f64(TIME_SCALE);
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["usage"]["completion_tokens"], 8);
    assert!(
        latency < Duration::from_secs(30),
        "follow-up request took {latency:?} of virtual time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_returns_503() {
    const TIME_SCALE: f64 = 10.0;
    let mut config = long_reply_config(TIME_SCALE);
    config.max_queue = Some(1);
    let server = infphys_sim::spawn(config).unwrap();
    let base_url = server.base_url().to_string();
    let client = reqwest::Client::new();
    let limit = Duration::from_secs(5);

    // Replies of 4000 tokens take about 2 minutes of virtual time, so none
    // finishes during the test; dropping the tasks at the end disconnects them.
    let spawn_long_request = || {
        let client = client.clone();
        let url = format!("{base_url}/v1/chat/completions");
        tokio::spawn(async move { client.post(url).json(&common::lab_body(4000)).send().await })
    };
    let mut tasks: Vec<_> = (0..4).map(|_| spawn_long_request()).collect();
    let running = common::wait_for_metric(
        &client,
        &base_url,
        "vllm:num_requests_running",
        limit,
        |value| value == 4.0,
    )
    .await;
    assert_eq!(running, 4.0);
    tasks.push(spawn_long_request());
    let waiting = common::wait_for_metric(
        &client,
        &base_url,
        "vllm:num_requests_waiting",
        limit,
        |value| value == 1.0,
    )
    .await;
    assert_eq!(waiting, 1.0);

    let response = client
        .post(format!("{base_url}/v1/chat/completions"))
        .json(&json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "server_error");
    assert!(body["error"]["param"].is_null());
    assert!(body["error"]["code"].is_null());
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("waiting queue is full (max_queue = 1)"),
        "{message}"
    );

    for task in &tasks {
        task.abort();
    }
    let running = common::wait_for_metric(
        &client,
        &base_url,
        "vllm:num_requests_running",
        limit,
        |value| value == 0.0,
    )
    .await;
    assert_eq!(running, 0.0, "disconnected clients still hold batch slots");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_disconnect_aborts_request() {
    use futures_util::StreamExt;

    const TIME_SCALE: f64 = 20.0;
    let server = infphys_sim::spawn(long_reply_config(TIME_SCALE)).unwrap();
    let base_url = server.base_url().to_string();
    let client = reqwest::Client::new();

    let mut body = common::lab_body(4000);
    body["stream"] = json!(true);
    let response = client
        .post(format!("{base_url}/v1/chat/completions"))
        .json(&body)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Read until a few tokens have arrived, then hang up.
    let mut chunks = response.bytes_stream();
    let mut received = String::new();
    while received.matches("data: ").count() < 4 {
        let chunk = chunks.next().await.expect("stream ended early").unwrap();
        received.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert_eq!(
        common::metric(&client, &base_url, "vllm:num_requests_running").await,
        1.0
    );
    drop(chunks);

    let limit = Duration::from_secs(5);
    let running = common::wait_for_metric(
        &client,
        &base_url,
        "vllm:num_requests_running",
        limit,
        |value| value == 0.0,
    )
    .await;
    assert_eq!(
        running, 0.0,
        "the streamed request still holds its batch slot"
    );
    assert_eq!(
        common::metric(&client, &base_url, "vllm:gpu_cache_usage_perc").await,
        0.0
    );
}
