//! HTTP endpoints: request validation, response shapes, usage and streaming.

mod common;

use std::time::{Duration, Instant};

use infphys_sim::{Preset, SimConfig};
use serde_json::{Value, json};

const TIME_SCALE: f64 = 100.0;
/// Wall-clock limit of every request in these tests.
const REQUEST_LIMIT: Duration = Duration::from_secs(20);

fn fast_config() -> SimConfig {
    SimConfig {
        time_scale: TIME_SCALE,
        ..SimConfig::new(Preset::Classroom)
    }
}

/// Returns a configuration whose natural replies are longer than any `max_tokens`.
fn long_reply_config() -> SimConfig {
    let mut config = fast_config();
    config.physics.output_len_median = 1e6;
    config.physics.output_len_sigma = 0.0;
    config
}

async fn post_raw(base_url: &str, body: impl Into<reqwest::Body>) -> (u16, String, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base_url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body)
        .timeout(REQUEST_LIMIT)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("body is not JSON ({error}): {text}"));
    (status, content_type, body)
}

async fn post(base_url: &str, body: &Value) -> (u16, Value) {
    let (status, _, body) = post_raw(base_url, body.to_string()).await;
    (status, body)
}

fn user_message(content: &str) -> Value {
    json!([{"role": "user", "content": content}])
}

#[tokio::test]
async fn completion_has_openai_shape() {
    let server = infphys_sim::spawn(fast_config()).unwrap();
    let (status, body) = post(server.base_url(), &common::lab_body(20)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(body["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(body["model"], "meta/llama-3.1-8b-instruct");
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(!choice["message"]["content"].as_str().unwrap().is_empty());
    let reason = choice["finish_reason"].as_str().unwrap();
    assert!(reason == "stop" || reason == "length", "{reason}");
}

#[tokio::test]
async fn usage_counts_match_reply() {
    let server = infphys_sim::spawn(fast_config()).unwrap();
    let (status, body) = post(server.base_url(), &common::lab_body(40)).await;
    assert_eq!(status, 200, "{body}");

    let usage = &body["usage"];
    let expected_prompt = [common::SYSTEM_PROMPT, common::USER_PROMPT]
        .iter()
        .map(|content| content.chars().count().div_ceil(4) + 4)
        .sum::<usize>() as u64;
    assert_eq!(usage["prompt_tokens"], expected_prompt);
    let completion = usage["completion_tokens"].as_u64().unwrap();
    assert!((1..=40).contains(&completion), "{completion}");
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        expected_prompt + completion
    );

    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(
        content.split_whitespace().count() as u64,
        completion,
        "one word per token: {content}"
    );
    let reason = &body["choices"][0]["finish_reason"];
    assert_eq!(
        *reason == "length",
        completion == 40,
        "finish_reason {reason} with {completion} tokens"
    );
}

#[tokio::test]
async fn max_tokens_is_honored() {
    let server = infphys_sim::spawn(long_reply_config()).unwrap();
    for max_tokens in [1, 7, 33] {
        let (status, body) = post(server.base_url(), &common::lab_body(max_tokens)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["usage"]["completion_tokens"], max_tokens);
        assert_eq!(body["choices"][0]["finish_reason"], "length");
    }

    let alias = json!({"messages": user_message("hi"), "max_completion_tokens": 5});
    let (status, body) = post(server.base_url(), &alias).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 5);
}

#[tokio::test]
async fn ignore_eos_generates_exactly_max_tokens() {
    // Natural replies of the classroom preset have a median of 180 tokens, so without
    // `ignore_eos` a 2,000-token cap is almost never reached.
    let server = infphys_sim::spawn(fast_config()).unwrap();
    for seed_request in 0..3 {
        let body = json!({
            "messages": user_message(&format!("Benchmark request {seed_request}.")),
            "max_tokens": 2000,
            "ignore_eos": true,
        });
        let (status, body) = post(server.base_url(), &body).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["usage"]["completion_tokens"], 2000, "{body}");
        assert_eq!(body["choices"][0]["finish_reason"], "length");
    }
}

#[tokio::test]
async fn unknown_model_gets_404() {
    let server = infphys_sim::spawn(fast_config()).unwrap();
    let mut body = common::lab_body(8);
    body["model"] = json!("meta/llama-3.1-8b-instruc");
    let (status, _, reply) = post_raw(server.base_url(), body.to_string()).await;
    assert_eq!(status, 404, "{reply}");
    let error = &reply["error"];
    assert_eq!(error["type"], "NotFoundError");
    assert_eq!(error["param"], "model");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("`meta/llama-3.1-8b-instruc` does not exist"),
        "{message}"
    );
    assert!(message.contains("meta/llama-3.1-8b-instruct"), "{message}");

    // Leaving the model out is accepted, as vLLM accepts it for its only model.
    body.as_object_mut().unwrap().remove("model");
    let (status, reply) = post(server.base_url(), &body).await;
    assert_eq!(status, 200, "{reply}");
}

#[tokio::test]
async fn reply_with_only_returns_text() {
    let server = infphys_sim::spawn(long_reply_config()).unwrap();
    let request = json!({"messages": user_message("Ping check. Reply with only: pong")});
    let (status, body) = post(server.base_url(), &request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "pong");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["completion_tokens"], 1);

    let truncated =
        json!({"messages": user_message("Reply with only: one two three"), "max_tokens": 2});
    let (status, body) = post(server.base_url(), &truncated).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "one two");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn invalid_requests_get_openai_errors() {
    let server = infphys_sim::spawn(fast_config()).unwrap();
    let messages = user_message("hi");
    let long_prompt = "word ".repeat(8000);
    // (case, body, expected param, text the message must contain)
    let cases: Vec<(&str, String, Option<&str>, &str)> = vec![
        (
            "invalid JSON",
            "{\"messages\": [".into(),
            None,
            "not valid JSON",
        ),
        ("empty body", String::new(), None, "not valid JSON"),
        ("array body", "[1, 2]".into(), None, "JSON object"),
        (
            "missing messages",
            json!({"model": "m"}).to_string(),
            Some("messages"),
            "Missing required field `messages`",
        ),
        (
            "null messages",
            json!({"messages": null}).to_string(),
            Some("messages"),
            "Missing required field",
        ),
        (
            "empty messages",
            json!({"messages": []}).to_string(),
            Some("messages"),
            "empty array",
        ),
        (
            "messages string",
            json!({"messages": "hi"}).to_string(),
            Some("messages"),
            "got a string",
        ),
        (
            "message not object",
            json!({"messages": ["hi"]}).to_string(),
            Some("messages"),
            "messages[0]",
        ),
        (
            "missing role",
            json!({"messages": [{"content": "hi"}]}).to_string(),
            Some("messages"),
            "no `role`",
        ),
        (
            "bad role",
            json!({"messages": [{"role": "robot", "content": "hi"}]}).to_string(),
            Some("messages"),
            "\"robot\"",
        ),
        (
            "missing content",
            json!({"messages": [{"role": "user"}]}).to_string(),
            Some("messages"),
            "no `content`",
        ),
        (
            "number content",
            json!({"messages": [{"role": "user", "content": 5}]}).to_string(),
            Some("messages"),
            "got a number",
        ),
        (
            "image part",
            json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}).to_string(),
            Some("messages"),
            "text parts only",
        ),
        (
            "zero max_tokens",
            json!({"messages": messages, "max_tokens": 0}).to_string(),
            Some("max_tokens"),
            "got 0",
        ),
        (
            "negative max_tokens",
            json!({"messages": messages, "max_tokens": -5}).to_string(),
            Some("max_tokens"),
            "got -5",
        ),
        (
            "fractional max_tokens",
            json!({"messages": messages, "max_tokens": 1.5}).to_string(),
            Some("max_tokens"),
            "got 1.5",
        ),
        (
            "string max_tokens",
            json!({"messages": messages, "max_tokens": "10"}).to_string(),
            Some("max_tokens"),
            "positive integer",
        ),
        (
            "zero max_completion_tokens",
            json!({"messages": messages, "max_completion_tokens": 0}).to_string(),
            Some("max_completion_tokens"),
            "got 0",
        ),
        (
            "conflicting max_tokens",
            json!({"messages": messages, "max_tokens": 5, "max_completion_tokens": 6}).to_string(),
            Some("max_tokens"),
            "only one",
        ),
        (
            "hot temperature",
            json!({"messages": messages, "temperature": 3}).to_string(),
            Some("temperature"),
            "got 3",
        ),
        (
            "string temperature",
            json!({"messages": messages, "temperature": "warm"}).to_string(),
            Some("temperature"),
            "from 0 to 2",
        ),
        (
            "string stream",
            json!({"messages": messages, "stream": "yes"}).to_string(),
            Some("stream"),
            "true or false",
        ),
        (
            "stream options without stream",
            json!({"messages": messages, "stream_options": {"include_usage": true}}).to_string(),
            Some("stream_options"),
            "only allowed",
        ),
        (
            "number model",
            json!({"messages": messages, "model": 5}).to_string(),
            Some("model"),
            "must be a string",
        ),
        (
            "string ignore_eos",
            json!({"messages": messages, "ignore_eos": "yes"}).to_string(),
            Some("ignore_eos"),
            "true or false",
        ),
        (
            "two choices",
            json!({"messages": messages, "n": 2}).to_string(),
            Some("n"),
            "`n` is 2",
        ),
        (
            "context overflow",
            json!({"messages": messages, "max_tokens": 8190}).to_string(),
            Some("max_tokens"),
            "maximum context length is 8192",
        ),
        (
            "prompt overflow",
            json!({"messages": user_message(&long_prompt)}).to_string(),
            Some("messages"),
            "maximum context length is 8192",
        ),
    ];

    for (case, body, param, needle) in cases {
        let (status, content_type, body) = post_raw(server.base_url(), body).await;
        assert_eq!(status, 400, "{case}: {body}");
        assert!(
            content_type.starts_with("application/json"),
            "{case}: content type {content_type}"
        );
        let error = &body["error"];
        assert_eq!(error["type"], "invalid_request_error", "{case}: {body}");
        assert_eq!(error["param"], json!(param), "{case}: {body}");
        assert!(error["code"].is_null(), "{case}: {body}");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{case}: message {message:?} lacks {needle:?}"
        );
    }
}

#[tokio::test]
async fn models_health_and_metrics_respond() {
    let mut config = fast_config();
    config.model = "test/model".to_string();
    let server = infphys_sim::spawn(config).unwrap();
    let client = reqwest::Client::new();

    let models: Value = client
        .get(format!("{}/v1/models", server.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "test/model");
    assert_eq!(models["data"][0]["object"], "model");
    assert_eq!(models["data"][0]["max_model_len"], 8192);

    let health = client
        .get(format!("{}/v1/health/ready", server.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let health: Value = health.json().await.unwrap();
    assert!(health["message"].is_string());

    let metrics = client
        .get(format!("{}/metrics", server.base_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:gpu_cache_usage_perc",
        "vllm:num_preemptions_total",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {name} ")),
            "{name} missing:\n{metrics}"
        );
        assert!(
            metrics.contains(&format!("{name}{{model_name=\"test/model\"}} 0")),
            "{name} not 0:\n{metrics}"
        );
    }

    let missing = client
        .get(format!("{}/v1/completions", server.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let missing: Value = missing.json().await.unwrap();
    assert!(
        missing["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v1/completions")
    );

    let wrong_method = client
        .get(format!("{}/v1/chat/completions", server.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);
    let wrong_method: Value = wrong_method.json().await.unwrap();
    assert!(wrong_method["error"]["message"].is_string());
}

/// Reads a server-sent-event stream and returns each `data:` payload with its arrival time.
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

#[tokio::test]
async fn streaming_sends_token_chunks() {
    let server = infphys_sim::spawn(long_reply_config()).unwrap();
    let mut request = common::lab_body(30);
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.base_url()))
        .json(&request)
        .timeout(REQUEST_LIMIT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = read_events(response).await;

    let (last, _) = events.last().unwrap();
    assert_eq!(last, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(data, _)| serde_json::from_str(data).unwrap())
        .collect();
    // Role chunk, 30 content chunks, finish chunk, usage chunk.
    assert_eq!(chunks.len(), 33);
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks[1..31]
        .iter()
        .map(|chunk| {
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(content.split_whitespace().count(), 30, "{content}");
    assert_eq!(chunks[31]["choices"][0]["finish_reason"], "length");
    assert_eq!(chunks[32]["choices"], json!([]));
    assert_eq!(chunks[32]["usage"]["completion_tokens"], 30);

    // Tokens arrive one decode step apart: 29 steps of at least 30 ms of
    // virtual time. Allow half of that, since the engine may run up to
    // 1 ms of wall time ahead per step.
    let first_token = events[1].1;
    let last_token = events[30].1;
    let minimum = Duration::from_millis(29 * 30).div_f64(TIME_SCALE) / 2;
    assert!(
        last_token - first_token >= minimum,
        "tokens arrived within {:?}",
        last_token - first_token
    );
}
