//! Wall-clock precision of streamed tokens at time scale 1: each chunk
//! reaches a client close to the time the `infphys` record states.
//!
//! The always-on test allows 10 ms, enough to pass on a loaded machine and
//! tight enough to catch a delayed-ACK stall (40 ms) or a timer that sleeps
//! whole milliseconds per step. The 1 ms target is a benchmark: it depends
//! on the machine's load, so its test is ignored by default and
//! `scripts/bench-sim.sh` runs it.
//!
//! The record's offsets start when the handler receives the request, and
//! the client's offsets start just before it sends, so the measured
//! lateness includes the loopback hop and request parsing (about 0.1 to
//! 0.3 ms). The test asserts on medians over several requests, because a
//! single late wake-up on a loaded machine shows little about the schedule.

mod common;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use infphys_sim::{Preset, SimConfig};
use serde_json::{Value, json};

/// Wall-clock limit of every request.
const REQUEST_LIMIT: Duration = Duration::from_secs(20);
/// Sequential streaming requests measured.
const REQUESTS: usize = 9;
/// Output tokens per request.
const TOKENS: usize = 24;
/// Largest median lateness the always-on test allows, in seconds.
const MAX_MEDIAN_LATENESS: f64 = 0.010;
/// The simulator's precision target, in seconds.
const TARGET_MEDIAN_LATENESS: f64 = 0.001;

/// H100 physics (steps of about 4.6 ms) with replies as long as `max_tokens`.
fn config() -> SimConfig {
    let mut config = SimConfig {
        time_scale: 1.0,
        ..SimConfig::new(Preset::H100)
    };
    config.physics.output_len_median = 1e6;
    config.physics.output_len_sigma = 0.0;
    config
}

/// Reads a server-sent-event stream and returns each `data:` payload with
/// its arrival time.
async fn read_events(response: reqwest::Response) -> Vec<(String, Instant)> {
    let mut events = Vec::new();
    let mut buffer = String::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let arrived = Instant::now();
        buffer.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let data = event
                .trim()
                .strip_prefix("data: ")
                .expect("every event is a data line");
            events.push((data.to_string(), arrived));
        }
    }
    assert!(buffer.is_empty(), "stream ended mid-event: {buffer:?}");
    events
}

/// Lateness of one request: client offset minus record offset, in seconds.
struct Lateness {
    first_token: f64,
    tokens: Vec<f64>,
}

/// Sends one streaming request and compares the client's arrival times
/// with the record's `first_token_s` and `token_times_s`.
async fn measure_request(client: &reqwest::Client, url: &str) -> Lateness {
    let mut request = common::lab_body(TOKENS as u64);
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let sent = Instant::now();
    let response = client
        .post(url)
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
    let record_times: Vec<f64> = record["token_times_s"]
        .as_array()
        .unwrap_or_else(|| panic!("token_times_s is not an array: {record}"))
        .iter()
        .map(|time| time.as_f64().unwrap())
        .collect();
    assert_eq!(record_times.len(), TOKENS, "{record}");

    let client_times: Vec<f64> = events[1..=TOKENS]
        .iter()
        .map(|(_, arrived)| (*arrived - sent).as_secs_f64())
        .collect();
    let first_token = client_times[0] - record["first_token_s"].as_f64().unwrap();
    let tokens = client_times
        .iter()
        .zip(&record_times)
        .map(|(client, record)| client - record)
        .collect();
    Lateness {
        first_token,
        tokens,
    }
}

fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted[rank.saturating_sub(1).min(sorted.len() - 1)]
}

/// Lateness of the first tokens and of every token of one round of
/// requests, in seconds.
struct Round {
    first_tokens: Vec<f64>,
    tokens: Vec<f64>,
}

impl Round {
    fn passes(&self, max_median: f64) -> bool {
        quantile(&self.first_tokens, 0.5) < max_median && quantile(&self.tokens, 0.5) < max_median
    }
}

async fn measure_round(client: &reqwest::Client, url: &str) -> Round {
    let mut round = Round {
        first_tokens: Vec::new(),
        tokens: Vec::new(),
    };
    for _ in 0..REQUESTS {
        let lateness = measure_request(client, url).await;
        round.first_tokens.push(lateness.first_token);
        round.tokens.extend(lateness.tokens);
    }
    let ms = |seconds: f64| seconds * 1e3;
    eprintln!(
        "client minus record over {REQUESTS} requests: first token median {:.3} ms, max {:.3} ms; \
         every token median {:.3} ms, p90 {:.3} ms, max {:.3} ms",
        ms(quantile(&round.first_tokens, 0.5)),
        ms(quantile(&round.first_tokens, 1.0)),
        ms(quantile(&round.tokens, 0.5)),
        ms(quantile(&round.tokens, 0.9)),
        ms(quantile(&round.tokens, 1.0)),
    );
    round
}

/// Rounds of requests measured before the test fails. Other processes on a
/// busy machine can delay a whole round, so one passing round is enough.
const ROUNDS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_tokens_arrive_on_schedule() {
    check_lateness(MAX_MEDIAN_LATENESS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a precision benchmark that needs a quiet machine; scripts/bench-sim.sh runs it"]
async fn stream_tokens_within_one_millisecond() {
    check_lateness(TARGET_MEDIAN_LATENESS).await;
}

async fn check_lateness(max_median: f64) {
    let server = infphys_sim::spawn(config()).unwrap();
    let client = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", server.base_url());
    // Warm the connection pool and the server so no measured request pays for a new connection.
    client
        .get(format!("{}/v1/health/ready", server.base_url()))
        .send()
        .await
        .unwrap();
    measure_request(&client, &url).await;

    let mut round = measure_round(&client, &url).await;
    for _ in 1..ROUNDS {
        if round.passes(max_median) {
            break;
        }
        round = measure_round(&client, &url).await;
    }

    let ms = |seconds: f64| seconds * 1e3;
    let first_median = quantile(&round.first_tokens, 0.5);
    let token_median = quantile(&round.tokens, 0.5);
    assert!(
        first_median < max_median,
        "median first-token lateness {:.3} ms is above {:.0} ms in every round: {:?}",
        ms(first_median),
        ms(max_median),
        round.first_tokens
    );
    assert!(
        token_median < max_median,
        "median token lateness {:.3} ms is above {:.0} ms in every round",
        ms(token_median),
        ms(max_median)
    );
    // The client's clock starts before the handler's, so no token may arrive before its record time.
    assert!(
        quantile(&round.tokens, 0.0) > -1e-4,
        "a token arrived {:.3} ms before its record time",
        ms(-quantile(&round.tokens, 0.0))
    );
}
