//! `GET /metrics`: every line parses as Prometheus text, and the counters
//! and histograms agree with the completions served.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use infphys_sim::{Preset, SimConfig};
use serde_json::Value;

/// One sample line: metric name, labels and value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_' || first == ':')
        && chars.all(|rest| rest.is_ascii_alphanumeric() || rest == '_' || rest == ':')
}

/// Parses `k="v",k2="v2"`; the values here contain no escaped quotes.
fn parse_labels(text: &str, line: &str) -> HashMap<String, String> {
    let mut labels = HashMap::new();
    for pair in text.split(',') {
        let (key, value) = pair
            .split_once('=')
            .unwrap_or_else(|| panic!("label without `=` in {line:?}"));
        let value = value
            .strip_prefix('"')
            .and_then(|value| value.strip_suffix('"'))
            .unwrap_or_else(|| panic!("unquoted label value in {line:?}"));
        labels.insert(key.to_string(), value.to_string());
    }
    labels
}

/// Parses the exposition text line by line, checking comments and samples;
/// returns the samples and the declared type of each metric family.
fn parse_exposition(text: &str) -> (Vec<Sample>, HashMap<String, String>) {
    let mut samples = Vec::new();
    let mut types = HashMap::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let keyword = parts.next().unwrap();
            let name = parts
                .next()
                .unwrap_or_else(|| panic!("bare comment {line:?}"));
            let rest = parts
                .next()
                .unwrap_or_else(|| panic!("empty {keyword} in {line:?}"));
            assert!(is_metric_name(name), "invalid name in {line:?}");
            match keyword {
                "HELP" => assert!(!rest.is_empty(), "{line:?}"),
                "TYPE" => {
                    assert!(
                        ["gauge", "counter", "histogram"].contains(&rest),
                        "unknown type in {line:?}"
                    );
                    types.insert(name.to_string(), rest.to_string());
                }
                other => panic!("unknown comment keyword {other:?} in {line:?}"),
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value is not a number in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                (name, parse_labels(labels, line))
            }
            None => (series, HashMap::new()),
        };
        assert!(is_metric_name(name), "invalid name in {line:?}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|family| types.get(*family).map(String::as_str) == Some("histogram"))
            .unwrap_or(name);
        assert!(
            types.contains_key(family),
            "sample before its TYPE: {line:?}"
        );
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    (samples, types)
}

fn value_of(samples: &[Sample], name: &str) -> f64 {
    samples
        .iter()
        .find(|sample| sample.name == name)
        .unwrap_or_else(|| panic!("{name} missing"))
        .value
}

#[tokio::test]
async fn metrics_text_parses_and_counts() {
    const REQUESTS: usize = 6;
    let config = SimConfig {
        time_scale: 100.0,
        ..SimConfig::new(Preset::Classroom)
    };
    let server = infphys_sim::spawn(config).unwrap();
    let client = reqwest::Client::new();

    let mut completion_tokens = 0.0;
    let mut prompt_tokens = 0.0;
    let mut token_gaps = 0.0;
    for _ in 0..REQUESTS {
        let body: Value = client
            .post(format!("{}/v1/chat/completions", server.base_url()))
            .json(&common::lab_body(24))
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let tokens = body["usage"]["completion_tokens"].as_f64().unwrap();
        completion_tokens += tokens;
        prompt_tokens += body["usage"]["prompt_tokens"].as_f64().unwrap();
        token_gaps += tokens - 1.0;
    }

    let response = client
        .get(format!("{}/metrics", server.base_url()))
        .send()
        .await
        .unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = response.text().await.unwrap();
    let (samples, types) = parse_exposition(&text);

    for (name, kind) in [
        ("vllm:num_requests_running", "gauge"),
        ("vllm:num_requests_waiting", "gauge"),
        ("vllm:gpu_cache_usage_perc", "gauge"),
        ("vllm:num_preemptions_total", "counter"),
        ("vllm:prompt_tokens_total", "counter"),
        ("vllm:generation_tokens_total", "counter"),
        ("vllm:time_to_first_token_seconds", "histogram"),
        ("vllm:time_per_output_token_seconds", "histogram"),
        ("vllm:e2e_request_latency_seconds", "histogram"),
    ] {
        assert_eq!(types.get(name).map(String::as_str), Some(kind), "{name}");
    }
    for sample in &samples {
        assert_eq!(
            sample.labels.get("model_name").map(String::as_str),
            Some("meta/llama-3.1-8b-instruct"),
            "{sample:?}"
        );
    }
    assert_eq!(value_of(&samples, "vllm:num_requests_running"), 0.0);
    assert_eq!(
        value_of(&samples, "vllm:generation_tokens_total"),
        completion_tokens
    );
    assert_eq!(
        value_of(&samples, "vllm:prompt_tokens_total"),
        prompt_tokens
    );

    for (name, observations) in [
        ("vllm:time_to_first_token_seconds", REQUESTS as f64),
        ("vllm:time_per_output_token_seconds", token_gaps),
        ("vllm:e2e_request_latency_seconds", REQUESTS as f64),
    ] {
        let buckets: Vec<&Sample> = samples
            .iter()
            .filter(|sample| sample.name == format!("{name}_bucket"))
            .collect();
        assert!(buckets.len() > 5, "{name} has {} buckets", buckets.len());
        for pair in buckets.windows(2) {
            assert!(pair[1].value >= pair[0].value, "{name} buckets decrease");
        }
        let last = buckets.last().unwrap();
        assert_eq!(last.labels["le"], "+Inf", "{name}");
        assert_eq!(last.value, observations, "{name} +Inf bucket");
        assert_eq!(value_of(&samples, &format!("{name}_count")), observations);
        assert!(
            value_of(&samples, &format!("{name}_sum")) > 0.0,
            "{name}_sum"
        );
    }
    // A lone classroom request takes about 0.1 s to its first token and 30 ms per token.
    let ttft_mean = value_of(&samples, "vllm:time_to_first_token_seconds_sum") / REQUESTS as f64;
    assert!((0.03..1.0).contains(&ttft_mean), "mean TTFT {ttft_mean} s");
    let tpot_mean = value_of(&samples, "vllm:time_per_output_token_seconds_sum") / token_gaps;
    assert!((0.02..0.1).contains(&tpot_mean), "mean TPOT {tpot_mean} s");
}

#[tokio::test]
async fn streamed_tokens_count_in_emit_lateness() {
    let config = SimConfig {
        time_scale: 100.0,
        ..SimConfig::new(Preset::Classroom)
    };
    let server = infphys_sim::spawn(config).unwrap();
    let client = reqwest::Client::new();
    let metrics = || async {
        let text = client
            .get(format!("{}/metrics", server.base_url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        parse_exposition(&text)
    };
    let name = "infphys:token_emit_lateness_seconds";

    // A non-streamed reply has no chunks to time.
    let (samples, types) = metrics().await;
    assert_eq!(types.get(name).map(String::as_str), Some("histogram"));
    assert_eq!(value_of(&samples, &format!("{name}_count")), 0.0);

    let mut body = common::lab_body(24);
    body["stream"] = serde_json::json!(true);
    body["stream_options"] = serde_json::json!({"include_usage": true});
    let text = client
        .post(format!("{}/v1/chat/completions", server.base_url()))
        .json(&body)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let usage: Value = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .find_map(|event| event.get("usage").filter(|u| !u.is_null()).cloned())
        .expect("the stream ends with usage");
    let tokens = usage["completion_tokens"].as_f64().unwrap();

    // One observation per token chunk, each in a bucket no lower than the one before.
    let (samples, _) = metrics().await;
    assert_eq!(value_of(&samples, &format!("{name}_count")), tokens);
    let buckets: Vec<&Sample> = samples
        .iter()
        .filter(|sample| sample.name == format!("{name}_bucket"))
        .collect();
    assert!(buckets.len() > 5);
    assert!(
        buckets
            .windows(2)
            .all(|pair| pair[1].value >= pair[0].value)
    );
    assert_eq!(buckets.last().unwrap().value, tokens);
}
