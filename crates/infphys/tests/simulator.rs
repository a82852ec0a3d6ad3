//! The library against the built-in simulator over loopback HTTP.
//!
//! The simulator runs faster than real time; timeouts and reported durations are in server
//! time, so the assertions read as they would at full speed.

use std::time::Duration;

use infphys::analysis::littles_law;
use infphys::target::SimOptions;
use infphys::{ChatRequest, Client, LabParams, LoadSpec, Progress, Target, run_load};

fn classroom(time_scale: f64) -> Client {
    let options = SimOptions {
        time_scale,
        ..SimOptions::default()
    };
    Client::new(Target::simulator(&options, "meta/llama-3.1-8b-instruct").unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn littles_law_holds_on_closed_loop_sweep() {
    let client = classroom(50.0);
    let params = LabParams::default();
    let request = params.base_request(Duration::from_secs(60));

    // Completions in a closed loop come in bursts (a batch that started together finishes
    // together), and the steady window starts and ends on a burst, so it can count one burst
    // more than its share. With about 70 bursts in the window that error stays under 1.5%.
    for concurrency in [1, 4, 16] {
        let spec = LoadSpec {
            total_requests: if concurrency == 1 { 48 } else { 288 },
            concurrency,
            request: request.clone(),
        };
        let run = run_load(&client, &spec, Progress::Silent).await.unwrap();
        assert_eq!(run.summary().err, 0, "{:?}", run.summary().sample_error);
        let law = littles_law(&run).unwrap();
        let c = concurrency as f64;

        // L = λW inside the steady window: throughput times mean latency equals the number in
        // flight, which a closed loop holds at its concurrency.
        let predicted = law.predicted_in_flight();
        assert!(
            (predicted / c - 1.0).abs() <= 0.05,
            "c={c}: λW = {predicted:.3}, {law:?}"
        );
        assert!(
            (law.measured_in_flight / c - 1.0).abs() <= 0.05,
            "c={c}: measured L {law:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_and_usage_against_simulator() {
    let client = classroom(50.0);
    let report = infphys::preflight(&client).await.unwrap();
    assert_eq!(report.sample, "OK");

    let reply = client
        .chat_once(&ChatRequest::new("Say something long.", 16))
        .await
        .unwrap();
    let usage = reply.usage.unwrap();
    assert!(usage.prompt_tokens.unwrap() > 0);
    let completion = usage.completion_tokens.unwrap();
    assert!(
        (1..=16).contains(&completion),
        "max_tokens 16 gave {completion} tokens"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_rejects_oversized_request_as_row() {
    let client = classroom(50.0);
    let spec = LoadSpec {
        total_requests: 2,
        concurrency: 1,
        request: ChatRequest::new("hi", 1_000_000),
    };
    let run = run_load(&client, &spec, Progress::Silent).await.unwrap();
    for record in &run.records {
        assert_eq!(record.http_status, Some(400), "{record:?}");
        assert_eq!(record.error_kind, Some(infphys::ErrorKind::HttpStatus));
        assert!(
            record
                .error_message
                .as_deref()
                .unwrap()
                .contains("max_tokens"),
            "{record:?}"
        );
    }
}
