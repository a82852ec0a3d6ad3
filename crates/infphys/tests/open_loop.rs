//! The open loop, retries and coordinated omission, against purpose-built servers on
//! 127.0.0.1 and the simulator.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use infphys::open_loop::{Arrivals, OpenLoopSpec, rate_sweep, run_open_loop};
use infphys::retry::RetryPolicy;
use infphys::target::SimOptions;
use infphys::{ChatRequest, Client, ErrorKind, LoadSpec, Progress, Target, run_load, schema};

const REPLY: &str = r#"{"choices":[{"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;

async fn serve(app: Router) -> Client {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Client::new(
        Target::server(
            &format!("http://{address}"),
            "/v1/chat/completions",
            "m",
            None,
        )
        .unwrap(),
    )
    .unwrap()
}

/// Starts a server that responds 429 with `Retry-After` to 3 requests in every 10, in arrival
/// order.
async fn rate_limited_server() -> (Client, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let client = serve(Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if n % 10 < 3 {
                    (
                        StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", "0.05")],
                        r#"{"error":{"message":"slow down"}}"#,
                    )
                        .into_response()
                } else {
                    REPLY.into_response()
                }
            }
        }),
    ))
    .await;
    (client, calls)
}

#[tokio::test]
async fn rate_limited_rows_without_retry_policy() {
    let (client, calls) = rate_limited_server().await;
    let spec = LoadSpec {
        total_requests: 100,
        concurrency: 4,
        request: ChatRequest::new("hi", 4),
    };
    let run = run_load(&client, &spec, Progress::Silent).await.unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        100,
        "a request was retried without a policy"
    );
    assert_eq!(run.records.len(), 100);
    let limited = run
        .records
        .iter()
        .filter(|r| r.http_status == Some(429))
        .count();
    assert_eq!(limited, 30);
    assert!(run.records.iter().all(|r| r.attempt == 1));
    assert_eq!(run.summary().error_rate, 0.3);
}

#[tokio::test]
async fn retries_are_rows_of_their_own() {
    let (client, calls) = rate_limited_server().await;
    let client = client.with_retry(RetryPolicy::exponential(4));
    let spec = LoadSpec {
        total_requests: 50,
        concurrency: 1,
        request: ChatRequest::new("hi", 4),
    };
    let run = run_load(&client, &spec, Progress::Silent).await.unwrap();

    let sent = calls.load(Ordering::SeqCst);
    assert_eq!(run.records.len(), sent, "every attempt is a row");
    assert!(sent > 50, "nothing was retried");
    let failed: Vec<_> = run.records.iter().filter(|r| !r.ok()).collect();
    assert!(
        failed
            .iter()
            .all(|r| r.http_status == Some(429) && r.error_kind == Some(ErrorKind::HttpStatus))
    );
    assert!(run.records.iter().any(|r| r.attempt > 1));

    // Each request ends with exactly one success, after its failed attempts.
    for id in 0..50 {
        let attempts: Vec<_> = run.records.iter().filter(|r| r.request_id == id).collect();
        assert_eq!(
            attempts.iter().filter(|r| r.ok()).count(),
            1,
            "request {id}: {attempts:?}"
        );
        let mut numbers: Vec<u32> = attempts.iter().map(|r| r.attempt).collect();
        numbers.sort_unstable();
        assert_eq!(numbers, (1..=attempts.len() as u32).collect::<Vec<_>>());
    }

    // Retry-After (50 ms) was honoured: a retry is due no sooner than that after its failure.
    for retry in run.records.iter().filter(|r| r.attempt > 1) {
        let previous = run
            .records
            .iter()
            .find(|r| r.request_id == retry.request_id && r.attempt == retry.attempt - 1)
            .unwrap();
        let gap = retry
            .scheduled
            .saturating_sub(previous.sent + previous.latency);
        assert!(gap >= Duration::from_millis(45), "retried after {gap:?}");
    }
}

#[tokio::test]
async fn open_loop_counts_from_schedule() {
    let client = serve(Router::new().route(
        "/v1/chat/completions",
        post(|| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            REPLY
        }),
    ))
    .await;
    // 20 requests per second but only one in flight, each taking 100 ms: every request is sent
    // later than scheduled, and the lag grows by about 50 ms per request.
    let spec = OpenLoopSpec {
        rate_rps: 20.0,
        arrivals: Arrivals::Constant,
        max_requests: 10,
        duration: Duration::from_secs(60),
        max_in_flight: Some(1),
        request: ChatRequest::new("hi", 4),
    };
    let run = run_open_loop(&client, &spec, Progress::Silent)
        .await
        .unwrap();
    assert_eq!(run.records.len(), 10);
    let mut records = run.records.clone();
    records.sort_by_key(|r| r.request_id);

    let last = records.last().unwrap();
    let lag = last.dispatch_lag.unwrap();
    assert!(
        lag >= Duration::from_millis(350),
        "lag of the last request {lag:?}"
    );
    assert!(
        last.latency >= lag + Duration::from_millis(100),
        "latency must include the lag"
    );
    assert_eq!(last.scheduled, Duration::from_millis(450));
    assert!(records.iter().all(|r| r.concurrency == 1 && r.ok()));
    assert_eq!(run.summary().offered_rps, Some(20.0));
}

/// Starts a server that stops the world: every request that arrives during the stall, or is being
/// served when it starts, waits until it ends. Otherwise requests take 10 ms.
async fn stalling_server(stall_start: Duration, stall: Duration) -> Client {
    let started = Arc::new(Mutex::new(None::<Instant>));
    serve(Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let started = Arc::clone(&started);
            async move {
                let origin = *started.lock().unwrap().get_or_insert_with(Instant::now);
                tokio::time::sleep(Duration::from_millis(10)).await;
                let now = origin.elapsed();
                if now >= stall_start && now < stall_start + stall {
                    tokio::time::sleep(stall_start + stall - now).await;
                }
                Response::new(axum::body::Body::from(REPLY))
            }
        }),
    ))
    .await
}

#[tokio::test]
async fn closed_loop_hides_a_stall_open_loop_shows_it() {
    let stall = Duration::from_millis(1000);

    let closed = stalling_server(Duration::from_millis(500), stall).await;
    let spec = LoadSpec {
        total_requests: 200,
        concurrency: 1,
        request: ChatRequest::new("hi", 4),
    };
    let closed_run = run_load(&closed, &spec, Progress::Silent).await.unwrap();
    let closed_p90 = closed_run.summary().latency.p95.unwrap();

    let open = stalling_server(Duration::from_millis(500), stall).await;
    let spec = OpenLoopSpec {
        rate_rps: 50.0,
        arrivals: Arrivals::Constant,
        max_requests: 150,
        duration: Duration::from_secs(10),
        max_in_flight: None,
        request: ChatRequest::new("hi", 4),
    };
    let open_run = run_open_loop(&open, &spec, Progress::Silent).await.unwrap();
    let open_p90 = open_run.summary().latency.p95.unwrap();

    // The closed loop sent one request during the stall, so only 1 in 200 rows is slow; the open
    // loop kept sending, and about a third of its rows waited out the stall.
    assert!(
        closed_p90 < Duration::from_millis(300),
        "closed-loop p95 {closed_p90:?}"
    );
    assert!(
        open_p90 > Duration::from_millis(500),
        "open-loop p95 {open_p90:?}"
    );
    assert_eq!(open_run.records.len(), 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_grows_ttft_only_in_open_loop() {
    let options = SimOptions {
        time_scale: 20.0,
        ..SimOptions::default()
    };
    let client = Client::new(Target::simulator(&options, "m").unwrap()).unwrap();
    let request = ChatRequest::new("Explain batching.", 64)
        .streaming()
        .timeout(Duration::from_secs(600));
    let mean_ttft_by_thirds = |run: &infphys::LoadRun| {
        let mut rows: Vec<_> = run.records.iter().filter(|r| r.ok()).collect();
        rows.sort_by_key(|r| r.scheduled);
        let third = rows.len() / 3;
        let mean = |rows: &[&infphys::RequestRecord]| {
            rows.iter()
                .map(|r| r.ttft.unwrap().as_secs_f64())
                .sum::<f64>()
                / rows.len() as f64
        };
        (mean(&rows[..third]), mean(&rows[rows.len() - third..]))
    };

    // The classroom preset serves about 2 requests of 64 tokens per second; offer 3.
    let open = OpenLoopSpec {
        rate_rps: 3.0,
        arrivals: Arrivals::Poisson { seed: 1 },
        max_requests: 90,
        duration: Duration::from_secs(30),
        max_in_flight: None,
        request: request.clone(),
    };
    let open_run = run_open_loop(&client, &open, Progress::Silent)
        .await
        .unwrap();
    let (open_first, open_last) = mean_ttft_by_thirds(&open_run);
    assert!(
        open_last > 3.0 * open_first,
        "open loop TTFT {open_first:.2} s then {open_last:.2} s"
    );

    let closed = LoadSpec {
        total_requests: 60,
        concurrency: 4,
        request,
    };
    let closed_run = run_load(&client, &closed, Progress::Silent).await.unwrap();
    let (closed_first, closed_last) = mean_ttft_by_thirds(&closed_run);
    assert!(
        closed_last < 1.5 * closed_first.max(0.05),
        "closed loop TTFT {closed_first:.2} s then {closed_last:.2} s"
    );
}

#[tokio::test]
async fn rate_sweep_is_one_sorted_frame() {
    let client = serve(Router::new().route("/v1/chat/completions", post(|| async { REPLY }))).await;
    let template =
        OpenLoopSpec::poisson(1.0, 10, Duration::from_secs(1), ChatRequest::new("hi", 4));
    let sweep = rate_sweep(&client, &[40.0, 20.0], &template, Progress::Silent)
        .await
        .unwrap();
    let frame = sweep.summary_frame().unwrap();
    let rates = infphys::frames::column_f64(&frame, schema::OFFERED_RPS).unwrap();
    assert_eq!(rates, vec![20.0, 40.0]);
    let names: Vec<&str> = frame
        .get_column_names()
        .iter()
        .map(|n| n.as_str())
        .collect();
    assert_eq!(names, schema::LOAD_SUMMARY_COLUMNS);
}
