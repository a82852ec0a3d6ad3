//! The `infphys` virtual-time record on completions and streams, checked
//! against the client's own clock.

mod common;

use std::time::{Duration, Instant};

use infphys_sim::{Preset, SimConfig};
use serde_json::{Value, json};

/// Wall-clock limit of every request in these tests.
const REQUEST_LIMIT: Duration = Duration::from_secs(20);

/// Classroom physics with replies as long as `max_tokens`.
fn long_reply_config(time_scale: f64) -> SimConfig {
    let mut config = SimConfig {
        time_scale,
        ..SimConfig::new(Preset::Classroom)
    };
    config.physics.output_len_median = 1e6;
    config.physics.output_len_sigma = 0.0;
    config
}

/// Reads a server-sent-event stream and returns each `data:` payload with
/// its arrival time.
async fn read_events(response: reqwest::Response) -> Vec<(String, Instant)> {
    use futures_util::StreamExt;

    let mut events = Vec::new();
    let mut buffer = String::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        buffer.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let data = event
                .trim()
                .strip_prefix("data: ")
                .expect("every event is a data line");
            events.push((data.to_string(), Instant::now()));
        }
    }
    assert!(buffer.is_empty(), "stream ended mid-event: {buffer:?}");
    events
}

fn seconds_list(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|entry| entry.as_f64().unwrap())
        .collect()
}

#[tokio::test]
async fn completion_carries_timing_record() {
    let config = long_reply_config(100.0);
    let http_overhead = config.physics.http_overhead.as_secs_f64();
    let server = infphys_sim::spawn(config).unwrap();
    let body: Value = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.base_url()))
        .json(&common::lab_body(12))
        .timeout(REQUEST_LIMIT)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let record = &body["infphys"];
    let times = seconds_list(&record["token_times_s"]);
    assert_eq!(times.len(), 12, "{record}");
    assert_eq!(body["usage"]["completion_tokens"], 12);
    assert!(record["arrival_s"].as_f64().unwrap() >= 0.0, "{record}");
    assert!(record["queued_s"].as_f64().unwrap() >= 0.0, "{record}");
    assert_eq!(record["preemptions"], 0);
    assert_eq!(record["first_token_s"].as_f64().unwrap(), times[0]);
    assert_eq!(record["last_token_s"].as_f64().unwrap(), times[11]);
    assert!(
        times[0] > http_overhead,
        "the first token comes after the HTTP overhead: {record}"
    );
    for pair in times.windows(2) {
        assert!(pair[1] > pair[0], "token times must increase: {record}");
    }
}

#[tokio::test]
async fn stream_without_usage_puts_record_on_finish_chunk() {
    let server = infphys_sim::spawn(long_reply_config(100.0)).unwrap();
    let mut request = common::lab_body(5);
    request["stream"] = json!(true);
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.base_url()))
        .json(&request)
        .timeout(REQUEST_LIMIT)
        .send()
        .await
        .unwrap();
    let events = read_events(response).await;
    assert_eq!(events.last().unwrap().0, "[DONE]");
    // Role chunk, 5 content chunks, finish chunk.
    assert_eq!(events.len(), 8);
    let finish: Value = serde_json::from_str(&events[6].0).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    assert_eq!(seconds_list(&finish["infphys"]["token_times_s"]).len(), 5);
    for (data, _) in &events[..6] {
        let chunk: Value = serde_json::from_str(data).unwrap();
        assert!(chunk.get("infphys").is_none(), "{chunk}");
    }
}

/// At time scale 1 the chunk arrival times a client measures from just
/// before sending match the record: the client offset of each token is the
/// server offset plus the connection and parsing time before the server's
/// origin, which is small and the same for every token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_record_matches_client_clock() {
    const TOKENS: usize = 20;
    let server = infphys_sim::spawn(long_reply_config(1.0)).unwrap();
    let client = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", server.base_url());
    // Warm the connection pool so the measured request does not pay for a new connection.
    client
        .get(format!("{}/v1/health/ready", server.base_url()))
        .send()
        .await
        .unwrap();

    let mut request = common::lab_body(TOKENS as u64);
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let sent = Instant::now();
    let response = client
        .post(&url)
        .json(&request)
        .timeout(REQUEST_LIMIT)
        .send()
        .await
        .unwrap();
    let events = read_events(response).await;

    // Role chunk, content chunks, finish chunk, usage chunk, [DONE].
    assert_eq!(events.len(), TOKENS + 4);
    let usage: Value = serde_json::from_str(&events[TOKENS + 2].0).unwrap();
    let record = &usage["infphys"];
    let server_times = seconds_list(&record["token_times_s"]);
    assert_eq!(server_times.len(), TOKENS, "{record}");
    let client_times: Vec<f64> = events[1..=TOKENS]
        .iter()
        .map(|(_, at)| (*at - sent).as_secs_f64())
        .collect();

    let first_error = client_times[0] - record["first_token_s"].as_f64().unwrap();
    let gap_errors: Vec<f64> = (1..TOKENS)
        .map(|index| {
            let client_gap = client_times[index] - client_times[index - 1];
            let server_gap = server_times[index] - server_times[index - 1];
            client_gap - server_gap
        })
        .collect();
    let max_gap_error = gap_errors
        .iter()
        .fold(0.0f64, |max, error| max.max(error.abs()));
    let mean_gap_error =
        gap_errors.iter().map(|error| error.abs()).sum::<f64>() / gap_errors.len() as f64;
    eprintln!(
        "client minus record: first token {:+.2} ms, token gaps mean |error| {:.2} ms, max |error| {:.2} ms",
        first_error * 1e3,
        mean_gap_error * 1e3,
        max_gap_error * 1e3
    );

    // Generous bounds for a loaded 2-core machine; typical errors are about 1 ms.
    assert!(
        (-0.005..0.1).contains(&first_error),
        "first token: client {:.4} s, record {record}",
        client_times[0]
    );
    assert!(mean_gap_error < 0.02, "gap errors {gap_errors:?}");
    assert!(max_gap_error < 0.1, "gap errors {gap_errors:?}");
}
