//! Replays the committed fuzz corpus of the `sim_request` target on stable Rust, and checks the
//! limits that keep hostile request bodies from exhausting the simulator.
//!
//! Each file under `fuzz/corpus/sim_request/` goes through the same check the fuzz target runs
//! (`fuzz/checks/sim.rs`). A file named `ok--<description>` must be accepted and one named
//! `reject--<description>` rejected; other names are checked for the invariants only.

#[path = "../../../fuzz/checks/sim.rs"]
mod checks;

use std::path::{Path, PathBuf};
use std::time::Duration;

use infphys_sim::{Preset, SimConfig};

/// axum's default request body limit, which applies to the simulator's JSON extractor because
/// the router does not change it.
const AXUM_BODY_LIMIT: usize = 2 * 1024 * 1024;

fn corpus() -> Vec<(PathBuf, String, Vec<u8>)> {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/sim_request");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
        .unwrap_or_else(|error| panic!("failed to read {}: {error}", folder.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "{} holds only {} files",
        folder.display(),
        files.len()
    );
    files
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let expected = name
                .split_once("--")
                .map_or("any", |(expected, _)| expected)
                .to_owned();
            let bytes = std::fs::read(&path).unwrap();
            (path, expected, bytes)
        })
        .collect()
}

#[test]
fn sim_request_corpus_replays() {
    let mut accepted = 0;
    let mut rejected = 0;
    for (path, expected, bytes) in corpus() {
        let result = checks::check_sim_request(&bytes);
        let outcome = if result.is_ok() { "ok" } else { "reject" };
        if expected != "any" {
            assert_eq!(outcome, expected, "{}: {result:?}", path.display());
        }
        match result {
            Ok(()) => accepted += 1,
            Err(_) => rejected += 1,
        }
    }
    assert!(accepted >= 5, "only {accepted} seeds accepted");
    assert!(rejected >= 5, "only {rejected} seeds rejected");
}

#[test]
fn rejection_names_the_field() {
    let cases: &[(&str, &str)] = &[
        ("reject--unknown-role", "robot"),
        ("reject--max-tokens-zero", "max_tokens"),
        ("reject--max-tokens-over-context", "maximum context length"),
        ("reject--temperature-too-high", "temperature"),
        ("reject--invalid-utf8", "not valid JSON"),
        ("reject--image-part", "text parts only"),
    ];
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/sim_request");
    for (name, expected) in cases {
        let bytes = std::fs::read(folder.join(name)).unwrap();
        let message = checks::check_sim_request(&bytes).unwrap_err();
        assert!(message.contains(expected), "{name}: {message}");
    }
}

#[test]
fn deep_json_hits_recursion_limit() {
    // serde_json stops at its recursion limit of 128 instead of overflowing the stack.
    let depth = 100_000;
    let body = format!(
        r#"{{"messages":[{{"role":"user","content":"a"}}],"n":{}{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let message = checks::check_sim_request(body.as_bytes()).unwrap_err();
    assert!(message.contains("recursion limit exceeded"), "{message}");
}

#[test]
fn long_prompt_is_rejected_by_context() {
    // Just under axum's body limit: the parser reads it, and the context check rejects it.
    let content = "word ".repeat((AXUM_BODY_LIMIT - 1024) / 5);
    let body = format!(r#"{{"messages":[{{"role":"user","content":"{content}"}}]}}"#);
    let message = checks::check_sim_request(body.as_bytes()).unwrap_err();
    assert!(message.contains("maximum context length"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_gets_413() {
    let server = infphys_sim::spawn(SimConfig::new(Preset::Classroom)).unwrap();
    let content = "a".repeat(AXUM_BODY_LIMIT + 1024);
    let body = format!(r#"{{"messages":[{{"role":"user","content":"{content}"}}]}}"#);
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.base_url()))
        .header("content-type", "application/json")
        .body(body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    let json: serde_json::Value = response.json().await.unwrap();
    let message = json["error"]["message"].as_str().unwrap();
    assert!(message.contains("--max-body-bytes"), "{message}");
    assert_eq!(json["error"]["code"], 413);
}
