//! Streamed responses from purpose-built SSE servers on 127.0.0.1: time to first token, reasoning,
//! truncation, error events, empty streams and overload.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use infphys::stream::ItlBasis;
use infphys::{ChatRequest, Client, ErrorKind, LoadSpec, Progress, Target, run_load};

/// One piece of a scripted stream: wait, then send the bytes.
type Step = (Duration, String);

fn sse_response(script: Vec<Step>) -> Response {
    let stream = futures_util::stream::unfold(script.into_iter(), |mut steps| async move {
        let (delay, text) = steps.next()?;
        tokio::time::sleep(delay).await;
        Some((Ok::<_, std::io::Error>(Bytes::from(text)), steps))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn data(json: &str) -> String {
    format!("data: {json}\n\n")
}

fn role_chunk() -> String {
    data(
        r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
    )
}

fn content_chunk(text: &str) -> String {
    data(&format!(
        r#"{{"choices":[{{"index":0,"delta":{{"content":"{text}"}},"finish_reason":null}}]}}"#
    ))
}

fn finish_chunk() -> String {
    data(r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#)
}

const DONE: &str = "data: [DONE]\n\n";
const NOW: Duration = Duration::ZERO;

async fn serve(app: Router) -> Client {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let target = Target::server(
        &format!("http://{address}"),
        "/v1/chat/completions",
        "m",
        None,
    )
    .unwrap();
    Client::new(target).unwrap()
}

async fn serve_script(script: impl Fn() -> Vec<Step> + Clone + Send + Sync + 'static) -> Client {
    serve(Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let script = script.clone();
            async move { sse_response(script()) }
        }),
    ))
    .await
}

fn streaming(max_tokens: u32) -> ChatRequest {
    ChatRequest::new("hi", max_tokens)
        .streaming()
        .timeout(Duration::from_secs(30))
}

#[tokio::test]
async fn ttft_ignores_role_only_chunk() {
    let client = serve_script(|| {
        vec![
            (NOW, role_chunk()),
            (Duration::from_millis(500), content_chunk("Hello")),
            (Duration::from_millis(20), content_chunk(" world")),
            (NOW, finish_chunk()),
            (NOW, DONE.to_owned()),
        ]
    })
    .await;

    let reply = client.chat_once(&streaming(16)).await.unwrap();
    let timing = reply.stream.unwrap();
    let ttft = timing.ttft.unwrap();
    assert!(
        ttft >= Duration::from_millis(500),
        "TTFT {ttft:?} is before the first content"
    );
    assert!(ttft < Duration::from_millis(1500), "TTFT {ttft:?}");
    assert_eq!(timing.ttfc, timing.ttft);
    assert_eq!(timing.token_chunks, 2);
    assert_eq!(reply.text, "Hello world");
    assert_eq!(timing.itl_basis, ItlBasis::Chunk);
    assert!(
        reply.latency >= ttft + Duration::from_millis(20),
        "latency ends at the last token"
    );
}

#[tokio::test]
async fn reasoning_counts_for_ttft_not_ttfc() {
    let client = serve_script(|| {
        let mut script = vec![(NOW, role_chunk())];
        for i in 0..10 {
            // Reasoning arrives with content null in some chunks and "" in others.
            let content = if i % 2 == 0 { "null" } else { "\"\"" };
            let chunk = format!(
                r#"{{"choices":[{{"index":0,"delta":{{"content":{content},"reasoning_content":"step {i} "}},"finish_reason":null}}]}}"#
            );
            script.push((Duration::from_millis(200), data(&chunk)));
        }
        script.push((NOW, content_chunk("Answer")));
        script.push((NOW, finish_chunk()));
        script.push((NOW, DONE.to_owned()));
        script
    })
    .await;

    let reply = client.chat_once(&streaming(64)).await.unwrap();
    let timing = reply.stream.unwrap();
    let (ttft, ttfc) = (timing.ttft.unwrap(), timing.ttfc.unwrap());
    assert!(
        ttft >= Duration::from_millis(200) && ttft < Duration::from_millis(1000),
        "TTFT {ttft:?}"
    );
    assert!(
        ttfc >= Duration::from_millis(2000),
        "time to first content {ttfc:?}"
    );
    assert!(
        ttfc < Duration::from_millis(3500),
        "time to first content {ttfc:?}"
    );
    assert_eq!(timing.token_chunks, 11);
    assert_eq!(reply.text, "Answer");
}

#[tokio::test]
async fn tokens_counted_from_chunks_without_usage() {
    let client = serve_script(|| {
        let mut script = vec![(NOW, role_chunk())];
        script
            .extend((0..24).map(|i| (Duration::from_millis(2), content_chunk(&format!("t{i} ")))));
        script.push((NOW, finish_chunk()));
        script.push((NOW, DONE.to_owned()));
        script
    })
    .await;

    let run = run_load(
        &client,
        &LoadSpec {
            total_requests: 3,
            concurrency: 3,
            request: streaming(512),
        },
        Progress::Silent,
    )
    .await
    .unwrap();
    for record in &run.records {
        assert!(record.ok(), "{record:?}");
        assert_eq!(
            record.output_tokens,
            Some(24),
            "counted from max_tokens instead of the stream"
        );
        assert_eq!(record.completion_tokens, None);
        assert_eq!(record.itl_basis, Some(ItlBasis::Chunk));
    }
    assert!(run.summary().output_tokens_per_s.unwrap() > 0.0);
}

#[tokio::test]
async fn usage_chunk_sets_token_basis() {
    let client = serve_script(|| {
        vec![
            (NOW, role_chunk()),
            (NOW, content_chunk("two tokens")),
            (Duration::from_millis(50), content_chunk(" and two")),
            (NOW, finish_chunk()),
            (
                NOW,
                data(r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":4}}"#),
            ),
            (NOW, DONE.to_owned()),
        ]
    })
    .await;
    let reply = client.chat_once(&streaming(8)).await.unwrap();
    let timing = reply.stream.unwrap();
    assert_eq!(timing.output_tokens, 4);
    assert_eq!(timing.itl_basis, ItlBasis::Token);
    // (last − first) / (4 − 1) with ~50 ms between the two chunks.
    let tpot = timing.tpot.unwrap();
    assert!(
        tpot >= Duration::from_millis(15) && tpot < Duration::from_millis(200),
        "TPOT {tpot:?}"
    );
    assert_eq!(reply.usage.unwrap().prompt_tokens, Some(5));
}

#[tokio::test]
async fn stream_without_end_is_truncated() {
    let client = serve_script(|| {
        let mut script = vec![(NOW, role_chunk())];
        script.extend((0..24).map(|i| (NOW, content_chunk(&format!("t{i} ")))));
        script
    })
    .await;
    let failure = client.chat_once(&streaming(512)).await.unwrap_err();
    assert_eq!(failure.kind, ErrorKind::StreamTruncated, "{failure}");
    assert_eq!(failure.stream.unwrap().output_tokens, 24);
    assert!(
        failure.message.contains("after 24 tokens"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn error_event_after_tokens_is_error_row() {
    let client = serve_script(|| {
        let mut script = vec![(NOW, role_chunk())];
        script.extend((0..10).map(|i| (NOW, content_chunk(&format!("t{i} ")))));
        script.push((
            NOW,
            data(r#"{"error":{"message":"engine crashed","type":"server_error"}}"#),
        ));
        script.push((NOW, DONE.to_owned()));
        script
    })
    .await;
    let run = run_load(
        &client,
        &LoadSpec {
            total_requests: 2,
            concurrency: 1,
            request: streaming(64),
        },
        Progress::Silent,
    )
    .await
    .unwrap();
    for record in &run.records {
        assert_eq!(
            record.error_kind,
            Some(ErrorKind::StreamError),
            "{record:?}"
        );
        assert_eq!(record.http_status, Some(200));
        assert_eq!(record.token_chunks, Some(10));
        assert!(
            record
                .error_message
                .as_deref()
                .unwrap()
                .contains("engine crashed")
        );
    }
    assert_eq!(run.summary().ok, 0);
}

#[tokio::test]
async fn named_error_event_is_error_row() {
    let client = serve_script(|| {
        vec![
            (NOW, content_chunk("a")),
            (NOW, "event: error\ndata: overloaded\n\n".to_owned()),
        ]
    })
    .await;
    let failure = client.chat_once(&streaming(8)).await.unwrap_err();
    assert_eq!(failure.kind, ErrorKind::StreamError);
}

#[tokio::test]
async fn done_only_streams_are_empty_rows() {
    let client = serve_script(|| vec![(NOW, DONE.to_owned())]).await;
    let run = run_load(
        &client,
        &LoadSpec {
            total_requests: 256,
            concurrency: 128,
            request: streaming(32),
        },
        Progress::Silent,
    )
    .await
    .unwrap();
    assert_eq!(run.records.len(), 256);
    assert!(
        run.records
            .iter()
            .all(|r| r.error_kind == Some(ErrorKind::Empty)),
        "not all empty"
    );
    assert!(run.records.iter().all(|r| r.ttft.is_none()));

    let summary = run.summary();
    assert_eq!(summary.error_rate, 1.0);
    assert_eq!(summary.ttft.p50, None);
    assert_eq!(summary.with_failures_s[1], Some(f64::INFINITY));
    let frame = run.summary_frame().unwrap();
    assert_eq!(frame.height(), 1);
}

#[tokio::test]
async fn mostly_503_gives_unbounded_p95() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let client = serve(Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if n % 10 == 0 {
                    sse_response(vec![
                        (NOW, content_chunk("ok")),
                        (NOW, finish_chunk()),
                        (NOW, DONE.to_owned()),
                    ])
                } else {
                    Response::builder()
                        .status(StatusCode::SERVICE_UNAVAILABLE)
                        .body(Body::from(r#"{"error":{"message":"busy"}}"#))
                        .unwrap()
                }
            }
        }),
    ))
    .await;

    let run = run_load(
        &client,
        &LoadSpec {
            total_requests: 100,
            concurrency: 1,
            request: streaming(8),
        },
        Progress::Silent,
    )
    .await
    .unwrap();
    let summary = run.summary();
    assert_eq!(summary.error_rate, 0.9);
    assert_eq!(summary.ok, 10);
    // The lab's percentiles cover the 10 successes only; the failure-aware ones are unbounded.
    assert!(summary.latency.p95.is_some());
    assert_eq!(summary.with_failures_s[1], Some(f64::INFINITY));
    assert_eq!(summary.with_failures_s[0], Some(f64::INFINITY));
    let failed: Vec<_> = run.records.iter().filter(|r| !r.ok()).collect();
    assert!(
        failed
            .iter()
            .all(|r| r.http_status == Some(503) && r.error_kind == Some(ErrorKind::HttpStatus))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_stream_matches_its_schedule() {
    // The classroom preset at real time: 30 ms per decode step, so a 12-token reply spans about
    // 11 steps after the first token.
    let options = infphys::target::SimOptions::default();
    let target = Target::simulator(&options, "m").unwrap();
    let client = Client::new(target).unwrap();
    let reply = client.chat_once(&streaming(12)).await.unwrap();
    let timing = reply.stream.unwrap();
    assert_eq!(timing.output_tokens, 12);
    assert_eq!(timing.itl_basis, ItlBasis::Token);
    let tpot = timing.tpot.unwrap();
    assert!(
        tpot >= Duration::from_millis(25) && tpot <= Duration::from_millis(60),
        "TPOT {tpot:?}"
    );
    assert!(timing.ttft.unwrap() < timing.last_token.unwrap());
}
