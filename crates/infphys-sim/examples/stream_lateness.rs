//! Measures how late streamed tokens reach many concurrent clients compared
//! with the simulator's own virtual-time record.
//!
//! Each client sends streaming chat completions in a closed loop to a
//! running simulator and notes when each token chunk arrives. The finish
//! chunk carries the `infphys` record, whose `token_times_s` are offsets
//! from the handler's receipt of the request. The lateness of a token is its
//! client offset, measured from just before the request was sent, minus
//! its record offset, so it includes the loopback hop and request parsing.
//! At time scale 1 the two clocks tick at the same rate, and any other
//! scale makes the comparison meaningless.
//!
//! ```text
//! cargo run --release -p infphys-sim --example stream_lateness -- \
//!     --url http://127.0.0.1:8000 --clients 1024 --duration-s 20
//! ```
//!
//! Only loopback URLs are accepted. The output is a Markdown table.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

/// Settings read from the command line.
#[derive(Debug, Clone)]
struct Settings {
    url: String,
    clients: usize,
    /// Wall time during which clients start new requests.
    duration: Duration,
    /// Wall time at the start whose requests are not measured, while connections open.
    warmup: Duration,
    max_tokens: usize,
    /// Wall-clock limit of one request.
    request_timeout: Duration,
}

const USAGE: &str = "usage: stream_lateness --url http://127.0.0.1:PORT [--clients N] \
[--duration-s S] [--warmup-s S] [--max-tokens N]";

fn parse_settings() -> Result<Settings, String> {
    let mut settings = Settings {
        url: String::new(),
        clients: 1024,
        duration: Duration::from_secs(20),
        warmup: Duration::from_secs(3),
        max_tokens: 64,
        request_timeout: Duration::from_secs(60),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("missing value after {flag}. {USAGE}"))?;
        let number = || {
            value
                .parse::<f64>()
                .ok()
                .filter(|number| number.is_finite() && *number >= 0.0)
                .ok_or_else(|| format!("{flag} must be a non-negative number, got {value:?}"))
        };
        match flag.as_str() {
            "--url" => settings.url = value.trim_end_matches('/').to_string(),
            "--clients" => settings.clients = number()?.max(1.0) as usize,
            "--duration-s" => settings.duration = Duration::from_secs_f64(number()?),
            "--warmup-s" => settings.warmup = Duration::from_secs_f64(number()?),
            "--max-tokens" => settings.max_tokens = number()?.max(1.0) as usize,
            _ => return Err(format!("unknown option {flag}. {USAGE}")),
        }
    }
    let loopback = ["http://127.0.0.1:", "http://localhost:", "http://[::1]:"];
    if !loopback
        .iter()
        .any(|prefix| settings.url.starts_with(prefix))
    {
        return Err(format!(
            "--url must be a loopback address such as http://127.0.0.1:8000, got {:?}. {USAGE}",
            settings.url
        ));
    }
    Ok(settings)
}

/// Measurements of the requests that finished, in seconds.
#[derive(Debug, Default)]
struct Samples {
    first_token: Vec<f64>,
    tokens: Vec<f64>,
    /// Lateness of each token after the first relative to the first token's
    /// lateness, which removes the connection and parsing time.
    after_first: Vec<f64>,
    requests: usize,
    errors: usize,
}

/// Arrival times of one streamed reply and its record.
struct Reply {
    sent: Instant,
    /// Arrival time of every `data:` event, in order.
    arrivals: Vec<Instant>,
    /// The `infphys` object of the finish chunk.
    record: Value,
}

async fn stream_one(
    client: &reqwest::Client,
    settings: &Settings,
    body: &Value,
) -> Result<Reply, String> {
    let sent = Instant::now();
    let response = client
        .post(format!("{}/v1/chat/completions", settings.url))
        .json(body)
        .timeout(settings.request_timeout)
        .send()
        .await
        .map_err(|error| format!("request failed: {error}"))?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }

    let mut arrivals = Vec::new();
    let mut events = Vec::new();
    let mut buffer = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let arrived = Instant::now();
        let chunk = chunk.map_err(|error| format!("stream failed: {error}"))?;
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.windows(2).position(|pair| pair == b"\n\n") {
            let event: Vec<u8> = buffer.drain(..end + 2).collect();
            arrivals.push(arrived);
            events.push(event);
        }
    }

    // Role chunk, one chunk per token, finish chunk with the record, [DONE].
    if events.len() < 4 {
        return Err(format!("stream ended after {} events", events.len()));
    }
    let finish = &events[events.len() - 2];
    let finish = finish
        .strip_prefix(b"data: ")
        .ok_or("finish event is not a data line")?;
    let finish: Value =
        serde_json::from_slice(finish).map_err(|error| format!("invalid finish chunk: {error}"))?;
    Ok(Reply {
        sent,
        arrivals,
        record: finish["infphys"].clone(),
    })
}

/// Adds the lateness of each token of `reply` to `samples`.
fn record_reply(reply: &Reply, samples: &mut Samples) -> Result<(), String> {
    let record_times: Vec<f64> = reply.record["token_times_s"]
        .as_array()
        .ok_or("the finish chunk has no infphys.token_times_s")?
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    // Events 1..=n are the token chunks.
    let client_times: Vec<f64> = reply.arrivals[1..reply.arrivals.len() - 2]
        .iter()
        .map(|arrived| (*arrived - reply.sent).as_secs_f64())
        .collect();
    if client_times.len() != record_times.len() || client_times.is_empty() {
        return Err(format!(
            "{} token chunks but {} record times",
            client_times.len(),
            record_times.len()
        ));
    }
    let lateness: Vec<f64> = client_times
        .iter()
        .zip(&record_times)
        .map(|(client, record)| client - record)
        .collect();
    samples.first_token.push(lateness[0]);
    samples.tokens.extend(&lateness);
    samples
        .after_first
        .extend(lateness[1..].iter().map(|late| late - lateness[0]));
    samples.requests += 1;
    Ok(())
}

async fn run_client(
    client: reqwest::Client,
    settings: Arc<Settings>,
    started: Instant,
    samples: Arc<Mutex<Samples>>,
) {
    let mut body = json!({
        "model": "meta/llama-3.1-8b-instruct",
        "messages": [{"role": "user", "content": "Reply with a long paragraph about batching."}],
        "max_tokens": settings.max_tokens,
        "stream": true,
    });
    body["temperature"] = json!(0.2);
    while started.elapsed() < settings.duration {
        let measured = started.elapsed() >= settings.warmup;
        let outcome = stream_one(&client, &settings, &body).await;
        let failed = outcome.is_err();
        record_outcome(outcome, measured, &mut samples.lock().unwrap());
        if failed {
            // Back off so a stopped server does not turn the loop into a busy loop.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn record_outcome(outcome: Result<Reply, String>, measured: bool, samples: &mut Samples) {
    match outcome {
        Ok(reply) if measured => {
            if let Err(error) = record_reply(&reply, samples) {
                eprintln!("invalid reply: {error}");
                samples.errors += 1;
            }
        }
        Ok(_) => {}
        Err(error) => {
            if samples.errors < 5 {
                eprintln!("request failed: {error}");
            }
            samples.errors += 1;
        }
    }
}

/// Returns the nearest-rank quantile `q` of `values` in milliseconds.
fn quantile_ms(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted[rank.saturating_sub(1).min(sorted.len() - 1)] * 1e3
}

fn table_row(name: &str, values: &[f64]) -> String {
    format!(
        "| {name} | {} | {:.3} | {:.3} | {:.3} |",
        values.len(),
        quantile_ms(values, 0.5),
        quantile_ms(values, 0.99),
        quantile_ms(values, 1.0)
    )
}

/// Cumulative bucket counts (upper bound in seconds, count) and the sum of the server's
/// `infphys:token_emit_lateness_seconds` histogram.
#[derive(Debug, Clone, Default)]
struct EmitHistogram {
    buckets: Vec<(f64, f64)>,
    sum: f64,
}

/// Reads the emit-lateness histogram from the server's `/metrics`.
async fn emit_histogram(client: &reqwest::Client, url: &str) -> Result<EmitHistogram, String> {
    let name = "infphys:token_emit_lateness_seconds";
    let text = client
        .get(format!("{url}/metrics"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|error| format!("failed to read {url}/metrics: {error}"))?
        .text()
        .await
        .map_err(|error| format!("failed to read {url}/metrics: {error}"))?;
    let mut histogram = EmitHistogram::default();
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        if series.starts_with(&format!("{name}_bucket")) {
            let bound = series
                .split("le=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .map(|le| {
                    if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().unwrap_or(f64::NAN)
                    }
                })
                .unwrap_or(f64::NAN);
            histogram.buckets.push((bound, value));
        } else if series.starts_with(&format!("{name}_sum")) {
            histogram.sum = value;
        }
    }
    if histogram.buckets.is_empty() {
        return Err(format!(
            "{url}/metrics has no {name}; is it an infphys simulator?"
        ));
    }
    Ok(histogram)
}

/// Prints the server-side row: the counts between `before` and `after`, with each quantile as
/// the upper bound of the bucket it falls in.
fn print_emit_row(before: &EmitHistogram, after: &EmitHistogram) {
    let buckets: Vec<(f64, f64)> = after
        .buckets
        .iter()
        .zip(&before.buckets)
        .map(|(&(bound, late), &(_, early))| (bound, late - early))
        .collect();
    let count = buckets.last().map_or(0.0, |&(_, cumulative)| cumulative);
    if count == 0.0 {
        println!("| Token chunk handed to its connection | 0 | - | - | - |");
        return;
    }
    let bound_at = |q: f64| {
        let bound = buckets
            .iter()
            .find(|&&(_, cumulative)| cumulative >= q * count)
            .map_or(f64::INFINITY, |&(bound, _)| bound);
        if bound.is_finite() {
            format!("≤ {:.3}", bound * 1e3)
        } else {
            "> 1000".to_string()
        }
    };
    let mean_ms = (after.sum - before.sum) / count * 1e3;
    println!(
        "| Token chunk handed to its connection | {count:.0} | {} | {} | mean {mean_ms:.3} |",
        bound_at(0.5),
        bound_at(0.99)
    );
}

#[tokio::main]
async fn main() {
    let settings = match parse_settings() {
        Ok(settings) => Arc::new(settings),
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(settings.clients)
        .tcp_nodelay(true)
        .build()
        .expect("the HTTP client builds with static settings");

    let samples = Arc::new(Mutex::new(Samples::default()));
    let started = Instant::now();
    // The server's own histogram, read when the warm-up ends and after the last request.
    let emit_before = {
        let client = client.clone();
        let settings = Arc::clone(&settings);
        tokio::spawn(async move {
            tokio::time::sleep(settings.warmup).await;
            emit_histogram(&client, &settings.url).await
        })
    };
    let tasks: Vec<_> = (0..settings.clients)
        .map(|_| {
            tokio::spawn(run_client(
                client.clone(),
                Arc::clone(&settings),
                started,
                Arc::clone(&samples),
            ))
        })
        .collect();
    for task in tasks {
        task.await.expect("client task panicked");
    }
    let elapsed = started.elapsed();
    let emit_before = emit_before.await.expect("the metrics task panicked");
    let emit_after = emit_histogram(&client, &settings.url).await;

    let samples = samples.lock().unwrap();
    println!(
        "{} client(s), {:.1} s of requests ({:.1} s warm-up not measured), {:.1} s wall in all, \
         {} measured requests, {} failed requests",
        settings.clients,
        settings.duration.as_secs_f64(),
        settings.warmup.as_secs_f64(),
        elapsed.as_secs_f64(),
        samples.requests,
        samples.errors
    );
    println!();
    println!("| Lateness, client minus record | Samples | p50 (ms) | p99 (ms) | max (ms) |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "{}",
        table_row("First token, from send", &samples.first_token)
    );
    println!("{}", table_row("Every token, from send", &samples.tokens));
    println!(
        "{}",
        table_row("Later tokens, from first token", &samples.after_first)
    );

    // The same tokens seen by the server: from each chunk's scheduled wall time to the moment
    // its stream hands it to the connection, so the client's scheduling is left out.
    println!();
    println!(
        "| Lateness at the server, handed over minus scheduled | Chunks | p50 (ms) | p99 (ms) | mean (ms) |"
    );
    println!("|---|---:|---:|---:|---:|");
    match (emit_before, emit_after) {
        (Ok(before), Ok(after)) => print_emit_row(&before, &after),
        (Err(error), _) | (_, Err(error)) => println!("| (not measured: {error}) | | | | |"),
    }
}
