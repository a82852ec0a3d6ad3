//! Injected faults over HTTP: error statuses, stalls, dropped connections
//! and error events, per request by header and for the whole server.

mod common;

use std::time::Duration;

use infphys_sim::{Faults, Preset, SimConfig};
use serde_json::{Value, json};

const TIME_SCALE: f64 = 100.0;
/// Wall-clock limit of every request in these tests.
const REQUEST_LIMIT: Duration = Duration::from_secs(20);

/// Classroom physics at `TIME_SCALE` with replies as long as `max_tokens`.
fn long_reply_config() -> SimConfig {
    let mut config = SimConfig {
        time_scale: TIME_SCALE,
        ..SimConfig::new(Preset::Classroom)
    };
    config.physics.output_len_median = 1e6;
    config.physics.output_len_sigma = 0.0;
    config
}

async fn send(
    base_url: &str,
    fault: Option<&str>,
    body: &Value,
) -> reqwest::Result<reqwest::Response> {
    let mut request = reqwest::Client::new()
        .post(format!("{base_url}/v1/chat/completions"))
        .json(body)
        .timeout(REQUEST_LIMIT);
    if let Some(fault) = fault {
        request = request.header("x-infphys-fault", fault);
    }
    request.send().await
}

fn stream_body(max_tokens: u64) -> Value {
    let mut body = common::lab_body(max_tokens);
    body["stream"] = json!(true);
    body
}

/// Reads a stream to its end; returns the `data:` payloads and whether the body ended with an error.
async fn read_stream(response: reqwest::Response) -> (Vec<String>, bool) {
    use futures_util::StreamExt;

    let mut events = Vec::new();
    let mut buffer = String::new();
    let mut chunks = response.bytes_stream();
    let mut failed = false;
    while let Some(chunk) = chunks.next().await {
        let Ok(chunk) = chunk else {
            failed = true;
            break;
        };
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let data = event.trim().strip_prefix("data: ").unwrap().to_string();
            events.push(data);
        }
    }
    (events, failed)
}

fn token_times(record: &Value) -> Vec<f64> {
    record["token_times_s"]
        .as_array()
        .unwrap_or_else(|| panic!("no token_times_s in {record}"))
        .iter()
        .map(|time| time.as_f64().unwrap())
        .collect()
}

#[tokio::test]
async fn header_status_returns_openai_error() {
    let server = infphys_sim::spawn(long_reply_config()).unwrap();
    let response = send(server.base_url(), Some("status=503"), &common::lab_body(5))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("retry-after").is_none());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "server_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("503"));
}

#[tokio::test]
async fn header_429_carries_retry_after() {
    let server = infphys_sim::spawn(long_reply_config()).unwrap();
    let response = send(
        server.base_url(),
        Some("status=429;retry_after=2"),
        &common::lab_body(5),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 429);
    // 2 virtual seconds at time scale 100 are 20 ms of wall time, rounded up to 1 s.
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(response.headers()["retry-after-ms"], "20.000");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn invalid_header_is_rejected() {
    let server = infphys_sim::spawn(long_reply_config()).unwrap();
    for value in ["status=200", "stall_first=soon", "explode=1"] {
        let response = send(server.base_url(), Some(value), &common::lab_body(5))
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{value}");
        let body: Value = response.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(value), "{value}: {message}");
        assert!(message.contains("x-infphys-fault"), "{message}");
    }
}

#[tokio::test]
async fn header_stalls_shift_token_times() {
    let server = infphys_sim::spawn(long_reply_config()).unwrap();

    let plain: Value = send(server.base_url(), None, &common::lab_body(10))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let plain_times = token_times(&plain["infphys"]);

    let stalled: Value = send(
        server.base_url(),
        Some("stall_first=1.5; stall_mid=2"),
        &common::lab_body(10),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let stalled_times = token_times(&stalled["infphys"]);

    assert_eq!(stalled_times.len(), 10);
    // Jitter changes step times by a few percent; the stalls are seconds.
    let first_shift = stalled_times[0] - plain_times[0];
    assert!(
        (1.4..1.6).contains(&first_shift),
        "first token moved by {first_shift} s"
    );
    let mid_gap = stalled_times[5] - stalled_times[4];
    assert!(
        (2.0..2.2).contains(&mid_gap),
        "token 5 came {mid_gap} s after token 4"
    );
    let other_gap = stalled_times[4] - stalled_times[3];
    assert!(other_gap < 0.2, "token 4 came {other_gap} s after token 3");
}

#[tokio::test]
async fn stream_drop_closes_connection() {
    let server = infphys_sim::spawn(long_reply_config()).unwrap();
    let response = send(server.base_url(), Some("drop_after=3"), &stream_body(10))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (events, failed) = read_stream(response).await;
    assert!(failed, "the body must end with an error, got {events:?}");
    // Role chunk and 3 content chunks, no finish chunk and no [DONE].
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(!events.iter().any(|event| event == "[DONE]"));

    let client = reqwest::Client::new();
    let running = common::wait_for_metric(
        &client,
        server.base_url(),
        "vllm:num_requests_running",
        Duration::from_secs(5),
        |value| value == 0.0,
    )
    .await;
    assert_eq!(running, 0.0, "the dropped request still holds a batch slot");
}

#[tokio::test]
async fn stream_error_event_then_done() {
    let server = infphys_sim::spawn(long_reply_config()).unwrap();
    let response = send(
        server.base_url(),
        Some("error_event_after=2"),
        &stream_body(10),
    )
    .await
    .unwrap();
    let (events, failed) = read_stream(response).await;
    assert!(!failed);
    // Role chunk, 2 content chunks, error event, [DONE].
    assert_eq!(events.len(), 5, "{events:?}");
    let error: Value = serde_json::from_str(&events[3]).unwrap();
    assert_eq!(error["error"]["type"], "server_error");
    assert!(error["error"]["message"].is_string());
    assert_eq!(events[4], "[DONE]");
}

#[tokio::test]
async fn short_reply_skips_late_faults() {
    let server = infphys_sim::spawn(long_reply_config()).unwrap();
    let response = send(
        server.base_url(),
        Some("drop_after=5;error_event_after=5"),
        &stream_body(5),
    )
    .await
    .unwrap();
    let (events, failed) = read_stream(response).await;
    assert!(!failed);
    assert_eq!(events.len(), 8, "{events:?}");
    assert_eq!(events.last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn server_drop_truncates_json_body() {
    let faults = Faults {
        drop_connection: 1.0,
        ..Faults::default()
    };
    let server = infphys_sim::spawn(long_reply_config().with_faults(faults)).unwrap();
    let response = send(server.base_url(), None, &common::lab_body(6))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.json::<Value>().await.is_err());
}

#[tokio::test]
async fn server_stall_delays_first_token() {
    let faults = Faults {
        stall_before_first_token: Duration::from_secs(3),
        ..Faults::default()
    };
    let server = infphys_sim::spawn(long_reply_config().with_faults(faults)).unwrap();
    let body: Value = send(server.base_url(), None, &common::lab_body(4))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let first = body["infphys"]["first_token_s"].as_f64().unwrap();
    assert!((3.0..3.5).contains(&first), "first token at {first} s");
}

/// Returns the status of each of `count` requests sent one after another.
async fn status_sequence(config: SimConfig, count: usize) -> Vec<u16> {
    let server = infphys_sim::spawn(config).unwrap();
    let mut statuses = Vec::with_capacity(count);
    for _ in 0..count {
        let response = send(server.base_url(), None, &common::lab_body(1))
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    statuses
}

#[tokio::test]
async fn server_errors_follow_seed() {
    let faults = Faults {
        error_rate: 0.5,
        error_statuses: vec![429, 503],
        ..Faults::default()
    };
    let config = long_reply_config().with_faults(faults);
    let first = status_sequence(config.clone(), 30).await;
    let again = status_sequence(config.clone(), 30).await;
    assert_eq!(first, again, "the same seed gives the same faults");

    let errors = first.iter().filter(|status| **status != 200).count();
    assert!((5..=25).contains(&errors), "{errors} errors in {first:?}");
    for status in &first {
        assert!([200, 429, 503].contains(status), "{first:?}");
    }

    let other_seed = SimConfig { seed: 1, ..config };
    assert_ne!(first, status_sequence(other_seed, 30).await);
}
