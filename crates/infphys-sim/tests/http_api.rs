//! HTTP endpoints: request validation, response shapes, usage and streaming.

mod common;

use std::time::Duration;

use infphys_sim::{Preset, SimConfig};
use serde_json::{Value, json};

fn fast_config() -> SimConfig {
    SimConfig {
        time_scale: 100.0,
        ..SimConfig::new(Preset::Classroom)
    }
}

#[tokio::test]
async fn completion_has_openai_shape() {
    let server = infphys_sim::spawn(fast_config()).unwrap();
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/v1/chat/completions", server.base_url()))
        .json(&common::lab_body(20))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["object"], "chat.completion");
    let _ = json!({});
}
